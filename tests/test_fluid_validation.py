"""validation.strouhal (audit 2026-12 F5): a number only for a regular oscillation, NaN with a
warning for a steady flow's round-off or an irregular signal."""

import warnings

import numpy as np
import pytest
import torch

from lawful.fluids import run, scenes
from lawful.fluids.validation import strouhal

L, U = 0.125, 1.0
T = np.arange(4000) * 0.01          # 40 time units sampled every 0.01


def _shedding(st=0.156, amp=0.02, growth=None):
    f = st * U / L
    a = amp if growth is None else amp / (1 + np.exp(-(T - growth) * 1.5))       # grows from ~1e-12 to amp
    return 0.1 + a * np.sin(2 * np.pi * f * T + 0.3)


rng = np.random.default_rng(0)
CASES = [
    # label, signal, kwargs, expected St (None: NaN), words in the warning
    ("regular shedding", _shedding(), {}, 0.156, None),
    ("shedding after a transient from round-off", _shedding(growth=15.0), {}, 0.156, None),
    ("cl (coefficient) with scale=1", _shedding(amp=0.3) / (0.5 * U ** 2 * L), {"scale": 1.0}, 0.156, None),
    ("steady flow at round-off", 0.1 + 1e-7 * rng.standard_normal(T.size), {}, None, "peak-to-peak"),
    ("round-off sine", 0.1 + 1e-8 * np.sin(2 * np.pi * 3.0 * T), {}, None, "peak-to-peak"),
    ("round-off cl with scale=1", 1e-6 * rng.standard_normal(T.size), {"scale": 1.0}, None, "peak-to-peak"),
    ("noise of shedding amplitude", 0.1 + 0.02 * rng.standard_normal(T.size), {}, None, "scatter"),
]


@pytest.mark.parametrize("label, signal, kw, expected, words", CASES, ids=[c[0] for c in CASES])
def test_strouhal_only_for_a_regular_oscillation(label, signal, kw, expected, words):
    if expected is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert strouhal(T, signal, L, U, **kw) == pytest.approx(expected, rel=2e-3)
    else:
        with pytest.warns(UserWarning, match=words):
            assert np.isnan(strouhal(T, signal, L, U, **kw))


def test_a_karman_flow_that_does_not_shed_has_no_strouhal_number():
    """karman(re=100, n=16) stays steady (lift peak-to-peak ~5e-7): before, strouhal returned 0.53
    from its round-off crossings (0.61 over 2500 steps)."""
    torch.set_num_threads(1)
    sc = scenes.karman(100, 16, aspect=4)
    rec = run(sc, 1200, keep="all")
    t = [r["t"] for r in rec]
    lift = [r["lift"] for r in rec]
    assert max(lift) - min(lift) < 1e-5
    with pytest.warns(UserWarning, match="no oscillation"):
        assert np.isnan(strouhal(t, lift, 0.125, 1.0))
    with pytest.warns(UserWarning):
        assert np.isnan(strouhal(t, [r["cl"] for r in rec], 0.125, 1.0))      # cl with the default scale: scatter

"""The corrected step's guard reductions (kernels.mac_checks) against torch, in both dtypes."""

import math

import pytest
import torch

from lawful.kernels.mac_checks import change_stats, snapshot_stats

N = 12


def _faces(dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    u = torch.randn((N + 1, N), generator=g, dtype=torch.float64).to(dtype)
    v = torch.randn((N, N + 1), generator=g, dtype=torch.float64).to(dtype)
    return u, v


def _torch_div_max(u, v, fluid):
    d = (u.double()[1:] - u.double()[:-1]) + (v.double()[:, 1:] - v.double()[:, :-1])
    return float(d[fluid[0] > 0].abs().max()) if bool((fluid > 0).any()) else 0.0


def _speed(u, v):
    return max(float(u.abs().max()), float(v.abs().max()))


# (name, edit of (u, v) before the check, whether the figures must be NaN)
CASES = [
    ("finite", lambda u, v: None, False),
    ("largest finite value", lambda u, v: u.__setitem__((3, 4), torch.finfo(u.dtype).max), False),
    ("subnormal", lambda u, v: v.__setitem__((2, 2), torch.finfo(v.dtype).tiny / 4), False),
    ("NaN in u", lambda u, v: u.__setitem__((0, 0), math.nan), True),
    ("+inf in v", lambda u, v: v.__setitem__((N - 1, N), math.inf), True),
    ("-inf in u's last face", lambda u, v: u.__setitem__((N, N - 1), -math.inf), True),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name,edit,nan", CASES, ids=[c[0] for c in CASES])
def test_snapshot_stats_match_torch(dtype, name, edit, nan):
    u, v = _faces(dtype)
    edit(u, v)
    fluid = torch.ones((1, N, N), dtype=dtype)
    fluid[0, 5:8, 5:8] = 0.0                       # an obstacle: its cells' divergence is not counted
    u[6, 6] += 100.0                               # a face inside it with a large divergence beside it
    u0, v0 = torch.zeros_like(u), torch.zeros_like(v)
    div_max, speed = snapshot_stats(u, v, u0, v0, fluid)
    assert torch.equal(u0, u) or nan                # the copy (NaN != NaN)
    assert torch.equal(torch.isnan(u0), torch.isnan(u)) and torch.equal(torch.isnan(v0), torch.isnan(v))
    if nan:
        assert math.isnan(div_max) and math.isnan(speed)
        return
    with torch.no_grad():
        want = _torch_div_max(u, v, fluid)
    assert div_max == pytest.approx(want, rel=1e-14, abs=0.0)
    assert speed == _speed(u, v)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name,edit,nan", CASES, ids=[c[0] for c in CASES])
def test_change_stats_match_torch(dtype, name, edit, nan):
    u0, v0 = _faces(dtype, 1)
    u, v = u0.clone(), v0.clone()
    u[2, 3] += 0.25
    v[4, 1] -= 0.5
    edit(u, v)
    change, speed = change_stats(u, v, u0, v0)
    if nan:
        assert math.isnan(change) and math.isnan(speed)
        return
    assert change == max(float((u - u0).abs().max()), float((v - v0).abs().max()))
    assert speed == _speed(u, v)


def test_all_solid_and_zero_flow():
    u, v = torch.zeros((N + 1, N)), torch.zeros((N, N + 1))
    assert snapshot_stats(u, v, torch.empty_like(u), torch.empty_like(v), torch.zeros((1, N, N))) == (0.0, 0.0)


@pytest.mark.parametrize("bad", ["u0 shape", "v0 dtype", "fluid shape", "non-contiguous v"])
def test_mismatched_arrays_are_refused(bad):
    from lawful.kernels.errors import ShapeError

    u, v = _faces(torch.float32)
    u0, v0, fluid = torch.empty_like(u), torch.empty_like(v), torch.ones((1, N, N))
    if bad == "u0 shape":
        u0 = torch.empty((N, N))
    elif bad == "v0 dtype":
        v0 = v0.double()
    elif bad == "fluid shape":
        fluid = torch.ones((N, N))
    else:
        v = torch.empty((N + 1, N)).t()
    with pytest.raises(ShapeError, match="need a contiguous"):
        snapshot_stats(u, v, u0, v0, fluid)


def _mask(n=8, at=(2, 3)):
    m = torch.zeros((n, n), dtype=torch.bool)
    m[at] = True
    return m


# (name, a, b, equal): same_mask must answer torch.equal's question whichever path it takes
MASKS = [
    ("same content, two tensors", _mask(), _mask(), True),
    ("one cell differs", _mask(), _mask(at=(3, 3)), False),
    ("other shape", _mask(8), _mask(9), False),
    ("same bytes, other shape", torch.zeros((4, 16), dtype=torch.bool), torch.zeros((8, 8), dtype=torch.bool), False),
    ("non-contiguous view", _mask().t(), _mask().t().contiguous(), True),
    ("uint8 against bool (torch.equal compares values)", _mask().to(torch.uint8), _mask(), True),
]


@pytest.mark.parametrize("name,a,b,equal", MASKS, ids=[m[0] for m in MASKS])
def test_same_mask_answers_torch_equal(name, a, b, equal):
    from lawful.kernels.mac_grid import same_mask

    assert torch.equal(a, b) is equal
    assert same_mask(a, b) is equal
    assert same_mask(b, a) is equal

"""Audit 2026-12-04 of the fluid metrics and force figures against independent recomputation.

* ``metrics.analytic_kinetic_energy`` (the exact curve of the metrics plot) now uses the discrete
  definition ``state_metrics`` records: the faces of a non-periodic side at half weight (the
  trapezoid rule), those inside a solid body left out. It summed every face at weight 1, so on a
  scene with inflow/outflow sides or a body the exact curve read high against the simulated one
  with no error (a uniform channel by ``1/nx``: 33/32 at nx = 32).
* ``validation.strouhal`` warns when the series holds fewer than two full periods (3 upward mean
  crossings), as its docstring says; it returned NaN without a word.
"""

import math
import warnings

import numpy as np
import pytest
import torch

from lawful.fluids import scenes
from lawful.fluids.metrics import analytic_kinetic_energy, state_metrics
from lawful.fluids.scenes import Circle, Scene, flow_scene
from lawful.fluids.validation import strouhal
from lawful.kernels.mac_grid import Boundary


def _frozen(scene):
    """``scene`` with ``analytic(t)`` = its own face velocities: the exact curve must then read
    what ``state_metrics`` records for the state."""
    u, v = scene.state.u.clone(), scene.state.v.clone()
    return Scene(scene.name, scene.state, scene.config, analytic=lambda t: (u, v), obstacles=scene.obstacles,
                 masks=scene.masks, body_velocity=scene.body_velocity, reference=scene.reference)


def _channel():
    """A uniform flow U = 1 through a 32 x 16 inflow/outflow channel (free-slip walls): the
    trapezoid rule gives 1/2 U^2 (area) = 1/2 * 2 * 1 = 1 exactly."""
    return flow_scene((2.0, 1.0), 16, Boundary.channel(1.0, "free_slip"), dtype=torch.float64)


def _spinning_disc():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")    # the scene warns that a spinning body passes fluid
        return flow_scene((1.0, 1.0), 24, Boundary.box("no_slip"), obstacles=[Circle((0.5, 0.5), 0.2, omega=2.0)],
                          viscosity=0.01, dtype=torch.float64)


# label, scene, the kinetic energy both must read (None: only their agreement), the old exact curve / it
KE_CASES = [
    ("taylor-green (periodic: no change)", lambda: scenes.taylor_green(n=16, dtype=torch.float64), math.pi ** 2, 1.0),
    ("uniform inflow/outflow channel 32x16", _channel, 1.0, 33 / 32),
    ("spinning disc in a box (faces inside the body)", _spinning_disc, None, None),
]


@pytest.mark.parametrize("label, make, expected, old_ratio", KE_CASES, ids=[c[0] for c in KE_CASES])
def test_analytic_kinetic_energy_uses_the_recorded_definition(label, make, expected, old_ratio):
    sc = make()
    recorded = state_metrics(sc.state)["kinetic_energy"]
    exact = analytic_kinetic_energy(_frozen(sc))(0.0)
    assert exact == pytest.approx(recorded, rel=1e-13)
    if expected is not None:
        assert recorded == pytest.approx(expected, rel=1e-12)
    # what the old definition (every face, weight 1) read: the size of the error fixed here
    px, py = sc.state.boundary.periodic_axes
    u = sc.state.u.double()[:-1] if px else sc.state.u.double()
    v = sc.state.v.double()[:, :-1] if py else sc.state.v.double()
    old = 0.5 * sc.state.dx ** 2 * float((u * u).sum() + (v * v).sum())
    if old_ratio is not None:
        assert old / recorded == pytest.approx(old_ratio, rel=1e-12)
    else:
        assert old / recorded > 1.2        # the body's rigid rotation inside it: 1.26x here


L, U = 0.125, 1.0
F = 0.165 * U / L                          # St 0.165


# label, duration (time units), St expected (None: NaN with a warning naming the crossings)
STROUHAL_CASES = [
    ("0.66 periods", 0.5, None),
    ("1.98 periods", 1.5, None),
    ("2.64 periods (2 upward crossings)", 2.0, None),
    ("6.6 periods", 5.0, 0.165),
    ("39.6 periods", 30.0, 0.165),
]


@pytest.mark.parametrize("label, duration, expected", STROUHAL_CASES, ids=[c[0] for c in STROUHAL_CASES])
def test_strouhal_too_short_a_series_warns(label, duration, expected):
    t = np.arange(0.0, duration, 0.01)
    cl = 0.3 * np.sin(2 * np.pi * F * t + 0.3)
    if expected is None:
        with pytest.warns(UserWarning, match="upward mean crossing"):
            assert np.isnan(strouhal(t, cl, L, U, scale=1.0))
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert strouhal(t, cl, L, U, scale=1.0) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("overrides, drawn", [({}, True), ({"viscosity": 0.1}, False), ({"drag": 0.5}, False)])
def test_the_exact_curve_is_drawn_only_for_the_physics_it_solves(tmp_path, monkeypatch, overrides, drawn):
    """run(tg, solver=tg.make_solver(viscosity=0.1), plot=...) overlaid the exact kinetic energy of
    the scene's nu = 0.01 (8.43 "exact" beside 2.01 simulated): the exact curve now comes only with
    a solver of the scene's viscosity and drag, else a warning says it is left out."""
    import warnings

    from lawful.fluids import solver as solver_module
    from lawful.fluids import run

    seen = []
    monkeypatch.setattr(solver_module, "plot_metrics", lambda src, path, title=None, scene=None: seen.append(scene))
    tg = scenes.taylor_green(n=8, dtype=torch.float64)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run(tg, 2, solver=tg.make_solver(**overrides), plot=tmp_path / "m.png")
    said = [str(w.message) for w in caught if "exact solution" in str(w.message)]
    assert (seen == [tg]) if drawn else (seen == [None])
    assert bool(said) != drawn
    if not drawn:
        key = next(iter(overrides))
        assert f"{key} " in said[0] and "this run's solver" in said[0]

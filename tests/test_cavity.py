"""The lid-driven cavity (scenes.lid_driven_cavity) against Ghia, Ghia & Shin (1982) at a test-sized
grid; the full 64^2-256^2 tables at Re 100 and 1000 are in benchmarks/bench_cfd.py."""

import pytest
import torch

from lawful.fluids import scenes
from lawful.fluids.validation import GHIA_U, GHIA_V, GHIA_Y, cavity_centrelines, ghia_errors
from lawful.kernels.errors import InputError


def test_cavity_re100_matches_ghia_centre_lines_at_24_cells():
    sc = scenes.lid_driven_cavity(100, 24, cfl=0.9, dtype=torch.float64)
    solver = sc.make_solver()
    while sc.state.t < 12.0:
        solver.step(sc.state)
    err = ghia_errors(sc.state, 100)
    # measured 0.0066 (u) / 0.0044 (v) at 24^2; the goal is 0.02 at 128^2
    assert err["max_abs_error_u"] < 0.012 and err["max_abs_error_v"] < 0.012
    # the primary vortex turns the right way: u < 0 below the centre, v > 0 left of it
    y, uy, x, vx = cavity_centrelines(sc.state)
    assert uy[len(uy) // 2 - 2] < -0.15 and vx[len(vx) // 4] > 0.1


def _lid_pair():
    """Re 100 cavities driven at lid speed 1 (dt 0.02) and 2 (dt 0.01), 20 steps each: the same
    flow at twice the speed, half the time."""
    pair = (scenes.lid_driven_cavity(100, 16, lid_velocity=1.0, dt=0.02, dtype=torch.float64),
            scenes.lid_driven_cavity(100, 16, lid_velocity=2.0, dt=0.01, dtype=torch.float64))
    for sc in pair:
        solver = sc.make_solver()
        for _ in range(20):
            solver.step(sc.state)
    return pair


def test_cavity_settings_and_lid_speed_scaling_at_fixed_re():
    sc = scenes.lid_driven_cavity(100, 16, dtype=torch.float64)
    b = sc.state.boundary
    assert b.wall_velocity == (0.0, 0.0, 0.0, 1.0) and b.y_hi == "no_slip"
    assert sc.config.viscosity == pytest.approx(0.01)
    # Re fixed, lid speed doubled: the same flow twice as fast at half the time (Stokes-free scaling)
    a, c = _lid_pair()
    assert torch.allclose(c.state.u, 2 * a.state.u, rtol=0, atol=1e-9)


def test_ghia_table_shapes_and_end_points():
    for re in (100, 1000):
        assert len(GHIA_U[re]) == len(GHIA_Y) == len(GHIA_V[re]) == 17
        assert GHIA_U[re][0] == 1.0 and GHIA_U[re][-1] == 0.0 and GHIA_V[re][0] == GHIA_V[re][-1] == 0.0
    with pytest.raises(InputError, match="17x17"):
        cavity_centrelines(scenes.lid_driven_cavity(100, 17).state)


def test_ghia_errors_normalise_by_the_states_own_lid_and_refuse_another_set_up():
    """ghia_errors took lid_velocity=1 whatever the state's lid: a cavity driven at 2 was compared
    unnormalised, and a lid moving in -x compared unmirrored."""
    a, c = _lid_pair()
    ea, ec = ghia_errors(a.state, 100), ghia_errors(c.state, 100)
    assert ec["max_abs_error"] == pytest.approx(ea["max_abs_error"], abs=1e-8)     # the same flow, scaled
    with pytest.raises(InputError, match="lid_velocity=1.0 but the state's lid moves at 2"):
        ghia_errors(c.state, 100, lid_velocity=1.0)
    reverse = scenes.lid_driven_cavity(100, 16, lid_velocity=-1.0, dtype=torch.float64)
    with pytest.raises(InputError, match="moving in \\+x"):
        ghia_errors(reverse.state, 100)


def _cavity_like(size, n, boundary, obstacles=()):
    from lawful.fluids.scenes import flow_scene

    return flow_scene(size, n, boundary, obstacles=obstacles, viscosity=0.01, dtype=torch.float64)


def _not_ghia():
    from lawful.fluids.scenes import Box
    from lawful.kernels.mac_grid import Boundary

    return [
        # label, scene, words the refusal must hold (what differs and the fix)
        ("2:1 box", _cavity_like((2.0, 1.0), 16, Boundary.box("no_slip", 1.0)),
         ["32x16", "square", "lid_driven_cavity"]),
        ("free-slip floor and sides", _cavity_like((1.0, 1.0), 16, Boundary(
            "free_slip", "free_slip", "free_slip", "no_slip", wall_velocity=(0, 0, 0, 1.0))),
         ["x_lo='free_slip'", "y_lo='free_slip'", "no-slip walls on all four sides"]),
        ("a moving side wall", _cavity_like((1.0, 1.0), 16, Boundary(
            "no_slip", "no_slip", "no_slip", "no_slip", wall_velocity=(0.5, 0, 0, 1.0))),
         ["x_lo at 0.5", "only the top lid"]),
        ("an obstacle inside", _cavity_like((1.0, 1.0), 16, Boundary.box("no_slip", 1.0),
                                            obstacles=[Box((0.4, 0.4), (0.6, 0.6))]), ["16 solid cell(s)", "empty"]),
    ]


def test_ghia_errors_refuse_set_ups_that_are_not_ghias_cavity():
    """Before: a 2:1 box (u 0.107 / v 0.246) and a cavity with free-slip floor and sides (0.418 /
    0.671) came back as Ghia comparisons without a word (the real cavity: 0.012 / 0.010)."""
    for label, sc, words in _not_ghia():
        with pytest.raises(InputError) as exc:
            ghia_errors(sc.state, 100)
        for w in words:
            assert w in str(exc.value), (label, w, str(exc.value))


@pytest.mark.parametrize("re, scene_re, words", [
    (100, 100, None),
    (1000, 1000, None),
    (100, 400, ["Reynolds number is 400", "re=100"]),
    (1000, 100, ["Reynolds number is 100", "re=1000"]),
    (400, 400, ["re=400", "[100, 1000]"]),
])
def test_ghia_errors_check_the_scenes_reynolds_number(re, scene_re, words):
    sc = scenes.lid_driven_cavity(scene_re, 16, dtype=torch.float64)
    if words is None:
        assert ghia_errors(sc.state, re, scene=sc) == ghia_errors(sc.state, re)       # accepted, same numbers
    else:
        with pytest.raises(InputError) as exc:
            ghia_errors(sc.state, re, scene=sc)
        for w in words:
            assert w in str(exc.value), (w, str(exc.value))

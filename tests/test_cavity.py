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

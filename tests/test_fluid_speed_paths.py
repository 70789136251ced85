"""The fused / serialized fast paths of the MAC step give the same numbers as the plain ones."""

import pytest
import torch

from lawful.fluids import scenes
from lawful.kernels import mac_grid, mac_pressure
from lawful.kernels.mac_forces import buoyancy_and_bc, viscosity, viscosity_buoyancy_and_bc

F64 = torch.float64


@pytest.mark.parametrize("make", [lambda: scenes.smoke_plume(n=24, dtype=F64),
                                  lambda: scenes.lid_driven_cavity(n=16, dtype=F64),
                                  lambda: scenes.karman(n=16, dtype=F64)])
@pytest.mark.parametrize("nu", [0.0, 0.01, 3.0])
def test_fused_viscosity_and_bc_is_bit_identical_to_the_two_calls(make, nu):
    sc = make()
    solver, st = sc.make_solver(), sc.state
    solver.step(st)
    st.u.add_(1e-2 * torch.randn(st.u.shape, generator=torch.Generator().manual_seed(1), dtype=F64))
    a, b = (st.u.clone(), st.v.clone()), (st.u.clone(), st.v.clone())
    h = solver.config.dt
    viscosity(a[0], a[1], solver.uw, solver.vw, nu, h, solver.dx, solver.boundary, solver.ghost, True)
    buoyancy_and_bc(a[0], a[1], solver.uw, solver.vw, st.scalars, solver.boundary, solver.buoyancy_index, 0.7, h)
    n = viscosity_buoyancy_and_bc(b[0], b[1], solver.uw, solver.vw, st.scalars, solver.boundary, nu, h, solver.dx,
                                  solver.ghost, True, solver.buoyancy_index, 0.7)
    assert (n == 0) == (nu == 0)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    if nu > 0:
        assert not torch.equal(b[0], st.u)          # the viscous step did act


def test_serialized_multigrid_levels_give_the_same_projection(monkeypatch):
    """Levels run on the calling thread (at most mac_grid.SERIAL_CELLS cells) or by the thread
    pool: the same preconditioner up to rounding (the two compilations may round differently), so both
    projections converge and agree to the solve's tolerance, within one CG iteration."""
    sc = scenes.karman(n=32, dtype=F64)
    st = sc.state
    out = []
    for cells in (0, 10 ** 9):
        monkeypatch.setattr(mac_grid, "SERIAL_CELLS", cells)
        ps = mac_pressure.PressureSolver(st.boundary, st.solid, F64)
        assert ps.nserial == (0 if cells == 0 else len(ps.dims))
        u, v = st.u.clone(), st.v.clone()
        stats = ps.project(u, v, warm_start=False)
        assert stats.converged and stats.residual <= 1e-10
        out.append((stats.iterations, u, v))
    assert abs(out[0][0] - out[1][0]) <= 1 and out[0][0] > 0
    scale = float(st.u.abs().max())
    assert float((out[0][1] - out[1][1]).abs().max()) <= 1e-8 * scale
    assert float((out[0][2] - out[1][2]).abs().max()) <= 1e-8 * scale


@pytest.mark.parametrize("make", [lambda: scenes.kolmogorov(n=16),                        # serial loops
                                  lambda: scenes.kolmogorov(n=80),                        # thread pool
                                  lambda: scenes.karman(n=16, dtype=F64),
                                  lambda: scenes.lid_driven_cavity(n=16)])
def test_predictor_in_the_advection_launch_is_bit_identical_to_the_three_steps(make):
    """advect_velocity(..., gradient=ps): u - G phi formed in the advection's launch, the numbers of
    copying u, v into uw[4], vw[4], subtract_phi_gradient there, and advecting with quantity_ready."""
    from lawful.kernels.mac_advection import advect_velocity

    sc = make()
    solver, st = sc.make_solver(), sc.state
    for _ in range(2):
        solver.step(st)
    ps, h = solver.pressure, solver.config.dt
    ps.phi.copy_(st.p * solver._phi_scale(h))
    a = [t.clone() for t in (st.u, st.v, solver.uw, solver.vw)]
    b = [t.clone() for t in (st.u, st.v, solver.uw, solver.vw)]
    a[2][4].copy_(a[0])
    a[3][4].copy_(a[1])
    ps.subtract_phi_gradient(a[2][4], a[3][4])
    advect_velocity(a[0], a[1], a[2], a[3], h, solver.dx, solver.periodic, quantity_ready=True, ghost=solver.ghost)
    advect_velocity(b[0], b[1], b[2], b[3], h, solver.dx, solver.periodic, ghost=solver.ghost, gradient=ps)
    for x, y in zip(a, b):
        assert torch.equal(x, y)
    assert not torch.equal(b[2][4], st.u)           # the gradient did act
    with pytest.raises(Exception, match="not both"):
        advect_velocity(b[0], b[1], b[2], b[3], h, solver.dx, solver.periodic, quantity_ready=True, gradient=ps)


@pytest.mark.parametrize("predictor", [True, False])
def test_stored_pressure_into_out_gives_the_same_numbers(predictor):
    from lawful.fluids.solver import stored_pressure

    g = torch.Generator().manual_seed(3)
    p = torch.randn((9, 7), generator=g)                       # float32, as a state's
    solved = torch.randn((9, 7), generator=g, dtype=F64) * 1e3
    want = p.clone().copy_(stored_pressure(p, solved, predictor))
    got = p.clone()
    assert stored_pressure(got, solved.clone(), predictor, out=got) is got
    assert torch.equal(got, want)


def test_a_step_runs_a_trained_correctors_domain_check_once():
    """Solver.step checks a corrector against its dt and viscosity (check_solver with its config);
    the corrector's own in-loop call then does not check the same state again."""
    from lawful.fluids.correctors import DivergenceFreeCorrector

    sc = scenes.kolmogorov(n=16)
    corr = DivergenceFreeCorrector.for_scene(sc)
    calls = []
    real = corr.check_solver
    corr.__dict__["check_solver"] = lambda state, config=None: calls.append(config) or real(state, config)
    solver = sc.make_solver()
    for _ in range(3):
        solver.step(sc.state, corr)
    assert calls == [solver.config] * 3
    corr(sc.state.clone())                           # called on its own it still checks
    assert len(calls) == 4 and calls[-1] is None
    assert "_solver_checked" not in corr.__dict__

"""The fused / serialized fast paths of the MAC step give the same numbers as the plain ones."""

import pytest
import torch
from conftest import count_calls  # a counting wrapper of a function or method

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
    if n > 1 and solver.buoyancy_index >= 0:
        # buoyancy rides every viscous substep in the fused call (the torch twin's numbers, tested
        # in test_the_body_forces_and_the_pressure_in_every_viscous_substep_match_the_torch_twin)
        assert not torch.equal(a[1], b[1])
        return
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    if nu > 0:
        assert not torch.equal(b[0], st.u)          # the viscous step did act


def test_serialized_multigrid_levels_give_the_same_projection(monkeypatch):
    """Levels run on the calling thread (at most mac_grid.serial_cells() cells) or by the thread
    pool: the same preconditioner up to rounding (the two compilations may round differently), so both
    projections converge and agree to the solve's tolerance, within one CG iteration."""
    sc = scenes.karman(n=32, dtype=F64)
    st = sc.state
    out = []
    for cells in (0, 10 ** 9):
        monkeypatch.setenv(mac_grid.ENV_SERIAL_CELLS, str(cells))
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


def _thread_pool(monkeypatch):
    """Grids above mac_grid.SERIAL_CELLS cells run their loops on Taichi's thread pool, whatever
    the machine (by default a pool of at most two threads serializes grids up to 512^2)."""
    monkeypatch.setenv(mac_grid.ENV_SERIAL_CELLS, str(mac_grid.SERIAL_CELLS))


@pytest.mark.parametrize("make, pool", [(lambda: scenes.kolmogorov(n=16), False),          # serial loops
                                        (lambda: scenes.kolmogorov(n=80), True),           # thread pool
                                        (lambda: scenes.karman(n=16, dtype=F64), False),
                                        (lambda: scenes.lid_driven_cavity(n=16), False)])
def test_predictor_in_the_advection_launch_is_bit_identical_to_the_three_steps(make, pool, monkeypatch):
    """advect_velocity(..., gradient=ps): u - G phi formed in the advection's launch, the numbers of
    copying u, v into uw[4], vw[4], subtract_phi_gradient there, and advecting with quantity_ready."""
    from lawful.kernels.mac_advection import advect_velocity

    if pool:
        _thread_pool(monkeypatch)
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


# --- torch work folded into the kernels: phi from p, the stored pressure, forcing and drag ------

def _torch_store_path(monkeypatch):
    """Make the solver store its pressure with torch (:meth:`Solver._store_pressure`): the step
    folds it into the projection only for the module's own rule, so an equal (counting) wrapper
    opts out."""
    from lawful.fluids import solver as solver_module

    count_calls(monkeypatch, solver_module, "stored_pressure")


def _count_torch_stores(monkeypatch):
    from lawful.fluids.solver import Solver

    return count_calls(monkeypatch, Solver, "_store_pressure")


def _on_both_store_paths(monkeypatch, body):
    """``body(torch_path, stores)`` run with the pressure stored in the kernels, then through
    torch (``stores``: the torch stores made, a list counting them); both results (tensors),
    checked equal bit for bit."""
    runs = []
    for torch_path in (False, True):
        with monkeypatch.context() as m:
            stores = _count_torch_stores(m)
            if torch_path:
                _torch_store_path(m)
            runs.append(body(torch_path, stores))
    for a, b in zip(*runs):
        assert torch.equal(a, b)
    return runs


@pytest.mark.parametrize("predictor", [True, False])
@pytest.mark.parametrize("make, pool", [(lambda **kw: scenes.kolmogorov(n=16, **kw), False),   # serial loops
                                        (lambda **kw: scenes.kolmogorov(n=80, **kw), True),    # thread pool
                                        (lambda **kw: scenes.karman(n=16, dtype=F64, **kw), False),   # outflow
                                        (lambda **kw: scenes.lid_driven_cavity(n=16, **kw), False)])
def test_the_pressure_stored_in_the_projections_launch_is_the_torch_rules(make, pool, predictor, monkeypatch):
    """The step stores state.p in the projection's last launch (finish) and sets the predictor's
    phi = p * scale in the advection's launch: bit for bit the numbers of the torch rule
    (stored_pressure, _set_phi), and torch did not run (the fused path was taken)."""
    if pool:
        _thread_pool(monkeypatch)
    def body(torch_path, stores):
        sc = make()
        solver, st = sc.make_solver(pressure_predictor=predictor), sc.state
        for _ in range(12):
            solver.step(st)
        assert (len(stores) == 12) == torch_path          # fused: never through torch
        return st.u, st.v, st.p

    assert float(_on_both_store_paths(monkeypatch, body)[0][2].abs().max()) > 0


@pytest.mark.parametrize("case", ["re-solve", "capped"])
def test_the_pressure_after_a_re_solve_or_a_capped_solve_is_the_torch_rules(case, monkeypatch):
    """A projection that re-solves the shrunken field (phi then sums the solves) stores its
    pressure with torch after the last solve; a capped solve out of iterations stores it in its
    launch. Both agree bit for bit with the torch rule."""
    overrides = {"pressure_capped": True, "pressure_max_iter": 1} if case == "capped" else {}

    def body(torch_path, stores):
        sc = scenes.kolmogorov(n=16, dtype=F64)
        solver, st = sc.make_solver(**overrides), sc.state
        solver.step(st)
        # a large gradient field on top: the projection removes almost all of the field
        g = torch.Generator().manual_seed(5)
        phi = 50.0 * torch.randn((16, 16), generator=g, dtype=F64)
        st.u[:-1] += phi - torch.roll(phi, 1, 0)
        st.u[-1] = st.u[0]
        st.v[:, :-1] += phi - torch.roll(phi, 1, 1)
        st.v[:, -1] = st.v[:, 0]
        before = len(stores)
        stats = solver.project(st, True, solver.config.dt)
        if case == "re-solve":
            assert stats.converged and len(stores) == before + 1     # re-solved: stored through torch
        else:
            assert not stats.converged and len(stores) == before + int(torch_path)
        return st.u, st.v, st.p

    assert float(_on_both_store_paths(monkeypatch, body)[0][2].abs().max()) > 1.0


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_phi_from_sets_the_gradients_phi_in_the_advection_launch(dtype):
    from lawful.kernels.mac_advection import advect_velocity

    sc = scenes.kolmogorov(n=24, dtype=dtype)
    solver, st = sc.make_solver(), sc.state
    for _ in range(3):
        solver.step(st)
    ps, h = solver.pressure, solver.config.dt
    scale = solver._phi_scale(h)
    a = [t.clone() for t in (st.u, st.v, solver.uw, solver.vw)]
    b = [t.clone() for t in (st.u, st.v, solver.uw, solver.vw)]
    torch.mul(st.p, scale, out=ps.phi)
    want_phi = ps.phi.clone()
    advect_velocity(a[0], a[1], a[2], a[3], h, solver.dx, solver.periodic, ghost=solver.ghost, gradient=ps)
    ps.phi.fill_(123.0)                                    # overwritten in the launch, before it is read
    advect_velocity(b[0], b[1], b[2], b[3], h, solver.dx, solver.periodic, ghost=solver.ghost, gradient=ps,
                    phi_from=(st.p, scale))
    assert torch.equal(ps.phi, want_phi)
    for x, y in zip(a, b):
        assert torch.equal(x, y)


def _random_faces(st, seed, dtype):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(st.u.shape, generator=g, dtype=F64).to(dtype),
            torch.randn(st.v.shape, generator=g, dtype=F64).to(dtype))


@pytest.mark.parametrize("what", ["forcing", "drag", "both", "predictor", "no predictor", "all"])
@pytest.mark.parametrize("nu", [0.01, 3.0])                # one viscous launch; several substeps
@pytest.mark.parametrize("make", [lambda: scenes.kolmogorov(n=16),
                                  lambda: scenes.kolmogorov(n=16, dtype=F64),
                                  lambda: scenes.lid_driven_cavity(n=16),               # fixed faces
                                  lambda: scenes.karman(n=16, dtype=F64),
                                  lambda: scenes.smoke_plume(n=24, dtype=F64)])        # buoyancy
def test_the_body_forces_and_the_pressure_in_every_viscous_substep_match_the_torch_twin(make, nu, what):
    """viscosity_buoyancy_and_bc(forcing=, drag_keep=, pressure=) gives, substep k of n,
    ``q' = q + c (stencil of r) - (1 - keep) r + h f (+ h b s)`` on the free faces, with
    ``r = q + (carried - k/n) dt W G p``: the numbers of the torch twin's viscous substeps
    (lawful.fluids.torch_step) within a few ulp of the scale, where applying the forcing or drag
    once before the substeps, or not at all, or reading the faces without the pressure, is off by
    far more."""
    from lawful.fluids.torch_step import TorchStep, _buoyancy_and_bc, _viscosity_once
    from lawful.kernels.mac_grid import VISCOUS_NUMBER_MAX, substeps

    sc = make()
    solver, st = sc.make_solver(), sc.state
    solver.step(st)
    dtype, h = st.u.dtype, solver.config.dt
    du, dv = _random_faces(st, 8, dtype)
    st.u.add_(0.1 * du)
    st.v.add_(0.1 * dv)
    st.p.add_(torch.randn(st.p.shape, generator=torch.Generator().manual_seed(9), dtype=F64).to(dtype))
    fu, fv = _random_faces(st, 7, dtype)
    px, py = solver.boundary.periodic_axes
    for x, y in ((st.u, st.v), (fu, fv)):        # a periodic axis' last face is its first (the twin reads that)
        if px:
            x[-1] = x[0]
        if py:
            y[:, -1] = y[:, 0]
    forcing = (fu, fv) if what in ("forcing", "both", "all") else None
    keep = 0.9 if what in ("drag", "both", "all") else None
    carried = {"predictor": 0.5, "all": 0.5, "no predictor": 0.0}.get(what)
    pressure = (solver.pressure, st.p.contiguous(), carried) if carried is not None else None
    args = (solver.uw, solver.vw, st.scalars, solver.boundary, nu, h, solver.dx, solver.ghost, True,
            solver.buoyancy_index, 0.7)
    b = (st.u.clone(), st.v.clone())
    n = viscosity_buoyancy_and_bc(*b, *args, forcing=forcing, forcing_dt=h, drag_keep=keep, pressure=pressure)
    assert n == substeps(nu * h / solver.dx ** 2, VISCOUS_NUMBER_MAX) and (n > 1) == (nu > 1)
    # the twin's substeps, in float64 from the same faces
    gp = TorchStep(solver).pressure_gradient(st.p.double())
    k = keep if keep is None or n == 1 else 1.0 - (1.0 - keep) / n
    f64 = None if forcing is None else (fu.double(), fv.double())
    s64 = st.scalars.double()
    buoy = (s64, solver.buoyancy_index, 0.7 * h / n) if solver.buoyancy_index >= 0 else None
    a = (st.u.double(), st.v.double())
    for sub in range(n):
        g = None if carried is None else tuple(h / solver.dx * (carried - sub / n) * x for x in gp)
        a = _viscosity_once(*a, solver.ubc.double(), solver.vbc.double(), nu * h / solver.dx ** 2 / n,
                            solver.boundary, True, g, k, f64, h / n, buoy)
    a = _buoyancy_and_bc(*a, solver.ubc.double(), solver.vbc.double(), s64, solver.boundary, -1, 0.0)
    top = max(float(a[0].abs().max()), float(a[1].abs().max()))
    eps = torch.finfo(dtype).eps
    for x, y in zip(a, b):
        assert float((x - y.double()).abs().max()) <= 64 * eps * top
    if what != "no predictor" or n > 1:
        plain = (st.u.clone(), st.v.clone())
        viscosity_buoyancy_and_bc(*plain, *args)
        assert max(float((p - q).abs().max()) for p, q in zip(plain, b)) > 1e3 * eps * top     # they did act


@pytest.mark.parametrize("dt", [0.02, 0.005])
@pytest.mark.parametrize("drag", [0.0, 3.0])
def test_a_body_force_driven_channel_reaches_its_discrete_steady_state_at_any_dt(dt, drag):
    """Plane Poiseuille flow driven by a body force f (periodic x, no-slip walls, nu = 1, H = 1)
    ends in the steady state of the discrete balance ``nu L u - drag u + f = 0``, whatever dt:
    a forcing applied once before the viscous substeps left it 8 % slow at nu dt / H^2 = 0.02."""
    import numpy as np

    from lawful.fluids import run
    from lawful.fluids.scenes import flow_scene
    from lawful.kernels.mac_grid import Boundary

    n, f, nu = 16, 8.0, 1.0
    h = 1.0 / n
    lap = np.diag(-2.0 * np.ones(n)) + np.diag(np.ones(n - 1), 1) + np.diag(np.ones(n - 1), -1)
    lap[0, 0] = lap[-1, -1] = -3.0                      # the no-slip ghost -q beyond each wall
    exact = np.linalg.solve(-nu * lap / h ** 2 + drag * np.eye(n), f * np.ones(n))
    s = flow_scene((0.25, 1.0), n, Boundary("periodic", "periodic", "no_slip", "no_slip"), viscosity=nu, dt=dt,
                   dtype=F64)
    s.forcing = (torch.full_like(s.state.u, f), torch.zeros_like(s.state.v))
    s.config = type(s.config)(**{**vars(s.config), "drag": drag})
    run(s, int(round(3.0 / dt)))                         # three diffusion times: steady to ~1e-12
    got = s.state.u[0].numpy()
    assert np.abs(got - exact).max() <= 1e-9 * exact.max()
    assert float(s.state.v.abs().max()) <= 1e-12


@pytest.mark.parametrize("call, error, match", [
    ("phi_from_without_gradient", "InputError", "give gradient= too"),
    ("phi_from_wrong_shape", "ShapeError", "phi_from's p is"),
    ("forcing_without_viscosity", "InputError", "nu == 0 makes none"),
    ("forcing_wrong_shape", "ShapeError", r"forcing\[1\] is"),
    ("forcing_wrong_dtype", "ShapeError", r"forcing\[0\] is"),
])
def test_fused_inputs_are_checked(call, error, match):
    from lawful.kernels import errors
    from lawful.kernels.mac_advection import advect_velocity

    sc = scenes.kolmogorov(n=16)
    solver, st = sc.make_solver(), sc.state
    h, dx = solver.config.dt, solver.dx
    u, v = st.u.clone(), st.v.clone()
    calls = {
        "phi_from_without_gradient": lambda: advect_velocity(u, v, solver.uw, solver.vw, h, dx, phi_from=(st.p, 1.0)),
        "phi_from_wrong_shape": lambda: advect_velocity(u, v, solver.uw, solver.vw, h, dx, gradient=solver.pressure,
                                                        phi_from=(st.p[:-1], 1.0)),
        "forcing_without_viscosity": lambda: viscosity_buoyancy_and_bc(
            u, v, solver.uw, solver.vw, st.scalars, solver.boundary, 0.0, h, dx, drag_keep=0.9),
        "forcing_wrong_shape": lambda: viscosity_buoyancy_and_bc(
            u, v, solver.uw, solver.vw, st.scalars, solver.boundary, 0.01, h, dx, forcing=(u, u)),
        "forcing_wrong_dtype": lambda: viscosity_buoyancy_and_bc(
            u, v, solver.uw, solver.vw, st.scalars, solver.boundary, 0.01, h, dx, forcing=(u.double(), v)),
    }
    before = (u.clone(), v.clone())
    with pytest.raises(getattr(errors, error), match=match):
        calls[call]()
    assert torch.equal(u, before[0]) and torch.equal(v, before[1])       # refused before touching them


@pytest.mark.parametrize("make", [lambda: scenes.kolmogorov(n=16),
                                  lambda: scenes.smoke_plume(n=24, dtype=F64),
                                  lambda: scenes.karman(n=16),
                                  lambda: scenes.lid_driven_cavity(n=16, dtype=F64)])
def test_no_launch_takes_one_array_twice(make, monkeypatch):
    """Every array argument of every kernel launch of a step (plain, with the predictor off, with
    several viscous substeps, and the bare viscosity call) is a distinct array: Taichi's own launch
    path (tensors on another device than its arch) copies each argument back after the kernel, so
    an unread stand-in that is the array the kernel writes could undo its writes. The slots a
    launch does not read take mac_grid.unread_array."""
    from lawful.kernels import fast_launch
    from lawful.kernels.mac_grid import unread_array

    seen = []
    call = fast_launch.FastKernel.__call__

    def recorded(self, *args, **kwargs):
        # (an unread stand-in may fill two slots: neither is read nor written)
        ptrs = [a.data_ptr() for a in args if isinstance(a, torch.Tensor)
                and a is not unread_array(a.dtype, a.device, a.dim())]
        seen.append((self.__name__, ptrs))
        return call(self, *args, **kwargs)

    monkeypatch.setattr(fast_launch.FastKernel, "__call__", recorded)
    sc = make()
    st = sc.state
    for overrides in ({}, {"pressure_predictor": False}, {"viscosity": 0.4}):
        solver = sc.make_solver(**overrides)
        for _ in range(3):
            solver.step(st)
    # a pressure the kernels cannot take in place (not contiguous): phi and p go through torch,
    # and the launches' p slots take stand-ins
    solver = sc.make_solver()
    st.p = torch.empty(tuple(st.p.shape)[::-1], dtype=st.p.dtype).t().copy_(st.p)
    assert not st.p.is_contiguous()
    solver.step(st)
    viscosity(st.u, st.v, solver.uw, solver.vw, 0.4, solver.config.dt, solver.dx, solver.boundary)
    names = {name for name, _ in seen}
    assert {"predict_advect", "advect", "start", "finish", "visc", "visc_buoy_bc"} <= names, names
    for name, ptrs in seen:
        assert len(set(ptrs)) == len(ptrs), f"{name} takes one array twice"


@pytest.mark.parametrize("field", ["u", "v", "p", "scalars"])
def test_a_graph_that_saved_a_field_the_step_writes_refuses_its_backward(field):
    """The kernels write u, v, p and the scalars in place behind autograd's back; the step records
    it as a torch in-place op would, so a graph that saved one of them raises on backward rather
    than silently differentiating with the new values."""
    sc = scenes.smoke_plume(n=24)
    solver, st = sc.make_solver(), sc.state
    for _ in range(2):
        solver.step(st)
    t = getattr(st, field)
    w = torch.ones_like(t, requires_grad=True)
    y = (w * t).sum()                   # saves t for w's gradient
    solver.step(st)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.backward()


def _kernel_write(call, st, solver):
    """Run one public kernel-level call of the table below on ``st`` (smoke plume, after a step)."""
    from lawful.kernels.mac_advection import advect_scalars, advect_velocity, ghost_tensor
    from lawful.kernels.mac_operators import curl, divergence

    h, dx, b = solver.config.dt, solver.dx, solver.boundary
    ghost = ghost_tensor(b, st.u.dtype)
    if call == "advect_velocity":
        advect_velocity(st.u, st.v, solver.uw, solver.vw, h, dx, (False, False), ghost=ghost)
    elif call == "advect_velocity(gradient)":
        advect_velocity(st.u, st.v, solver.uw, solver.vw, h, dx, (False, False), ghost=ghost,
                        gradient=solver.pressure, phi_from=(st.p, 0.5))
    elif call == "advect_scalars":
        ns, nx, ny = st.scalars.shape
        fx, fy = st.scalars.new_zeros((ns, nx + 1, ny)), st.scalars.new_zeros((ns, nx, ny + 1))
        advect_scalars(st.scalars, fx, fy, st.u, st.v, h, dx, (False, False), comp=st.extra["comp"])
    elif call == "viscosity":
        viscosity(st.u, st.v, solver.uw, solver.vw, 0.01, h, dx, b)
    elif call == "buoyancy_and_bc":
        buoyancy_and_bc(st.u, st.v, solver.uw, solver.vw, st.scalars, b, 0, 1.0, h)
    elif call == "viscosity_buoyancy_and_bc":
        viscosity_buoyancy_and_bc(st.u, st.v, solver.uw, solver.vw, st.scalars, b, 0.01, h, dx)
    elif call == "divergence":
        divergence(st.u, st.v, dx, out=st.extra["div"])
    elif call == "curl":
        psi = torch.rand(st.v.shape[0] + 1, st.u.shape[1] + 1, dtype=st.u.dtype, generator=torch.Generator().manual_seed(1))
        curl(psi, st.u, st.v, dx, (False, False), alpha=1e-3, accumulate=True)
    elif call == "subtract_phi_gradient":
        solver.pressure.subtract_phi_gradient(st.u, st.v)


@pytest.mark.parametrize("call, field", [
    ("advect_velocity", "u"), ("advect_velocity", "v"), ("advect_velocity(gradient)", "u"),
    ("advect_velocity(gradient)", "v"), ("advect_scalars", "scalars"), ("advect_scalars", "comp"),
    ("viscosity", "u"), ("viscosity", "v"), ("buoyancy_and_bc", "u"), ("buoyancy_and_bc", "v"),
    ("viscosity_buoyancy_and_bc", "u"), ("viscosity_buoyancy_and_bc", "v"), ("divergence", "div"),
    ("curl", "u"), ("curl", "v"), ("subtract_phi_gradient", "u"), ("subtract_phi_gradient", "v"),
])
def test_a_graph_that_saved_what_a_kernel_function_writes_refuses_its_backward(call, field):
    """Every public kernel-level function records its in-place writes (not only Solver.step): a
    graph that saved a tensor one of them wrote raises on backward instead of differentiating with
    the new values. Control: the same graph without the call differentiates."""
    sc = scenes.smoke_plume(n=24)
    solver, st = sc.make_solver(), sc.state
    solver.step(st)
    st.extra = {"comp": torch.zeros_like(st.scalars), "div": st.p.new_zeros(st.p.shape)}
    t = st.extra[field] if field in st.extra else getattr(st, field)
    for run_call in (False, True):
        w = torch.ones_like(t, requires_grad=True)
        y = (w * t).sum()                   # saves t for w's gradient
        if not run_call:
            y.backward()
            continue
        _kernel_write(call, st, solver)
        with pytest.raises(RuntimeError, match="modified by an inplace operation"):
            y.backward()


@pytest.mark.parametrize("bad, where", [(float("nan"), "u"), (float("inf"), "v"), (-float("inf"), "u")])
@pytest.mark.parametrize("entry", ["PressureSolver.project", "Solver.project"])
def test_a_non_finite_face_is_refused_by_the_projection(entry, bad, where):
    """A NaN/inf face handed to a projection used to come back as a converged solve (the solve's
    maxima pass a NaN over), the NaN kept and state.p halved; now NumericalError names the face,
    before anything is touched."""
    from lawful.kernels.errors import NumericalError

    sc = scenes.kolmogorov(n=16, dtype=F64)
    solver, st = sc.make_solver(), sc.state
    solver.step(st)
    getattr(st, where)[3, 5] = bad
    before = [t.clone() for t in (st.u, st.v, st.p)]
    name = rf"{where}\[3, 5\]" if entry == "PressureSolver.project" else rf"{where} \(.*\) at face \[3, 5\]"
    with pytest.raises(NumericalError, match=name):
        if entry == "Solver.project":
            solver.project(st, True, solver.config.dt)
        else:
            solver.pressure.project(st.u, st.v)
    for a, b in zip(before, (st.u, st.v, st.p)):
        assert torch.equal(a.nan_to_num(), b.nan_to_num())


def test_a_state_made_and_stepped_in_inference_mode_takes_the_kernel_path(monkeypatch):
    """Inside torch.inference_mode a state made there (inference tensors) is written by the
    kernels like any other, bit for bit the numbers of a normal run; stepped outside inference
    mode it is refused by torch, as before the kernels wrote p."""
    stores = _count_torch_stores(monkeypatch)
    runs = []
    for inference in (False, True):
        with torch.inference_mode(inference):
            sc = scenes.kolmogorov(n=16)
            solver, st = sc.make_solver(), sc.state
            assert st.p.is_inference() == inference
            for _ in range(5):
                solver.step(st)
        runs.append((st.u, st.v, st.p))
    assert not stores
    for a, b in zip(*runs):
        assert torch.equal(a, b)
    with pytest.raises(RuntimeError, match="inference tensor"):
        solver.step(st)


@pytest.mark.parametrize("field", ["u", "v", "p"])
@pytest.mark.parametrize("entry", ["PressureSolver.project", "Solver.project"])
def test_a_graph_that_saved_a_field_a_projection_writes_refuses_its_backward(entry, field):
    """The public projections record their kernels' in-place writes too (u, v; p when the step's
    projection stores it in its launch)."""
    sc = scenes.kolmogorov(n=16)
    solver, st = sc.make_solver(), sc.state
    solver.step(st)
    st.u.add_(0.1 * torch.randn(st.u.shape, generator=torch.Generator().manual_seed(2)))   # something to project
    t = getattr(st, field)
    w = torch.ones_like(t, requires_grad=True)
    y = (w * t).sum()
    if entry == "Solver.project":
        solver.project(st, True, solver.config.dt)
    else:
        solver.pressure.project(st.u, st.v)
    if entry == "PressureSolver.project" and field == "p":
        y.backward()                    # p is the state's, untouched by a bare projection
        return
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.backward()


@pytest.mark.parametrize("env, threads, expected", [
    (None, 1, 512 * 512), (None, 2, 512 * 512),          # a pool of at most two threads: up to 512^2 serialized
    (None, 8, mac_grid.SERIAL_CELLS), (None, None, mac_grid.SERIAL_CELLS),      # 8 threads; CUDA
    ("4096", 2, 4096), ("0", 1, 0), ("1000000", 8, 1000000),
    ("-1", 2, "InputError"), ("many", 2, "InputError"), ("1.5", 2, "InputError"),
])
def test_the_serialization_threshold_follows_the_thread_pool_and_the_environment(env, threads, expected, monkeypatch):
    """mac_grid.serial_cells(): LAWFUL_TI_SERIAL_CELLS when set (a bad value names the variable and the
    fix), else 512^2 for a Taichi CPU pool of at most SERIAL_THREADS threads, else SERIAL_CELLS."""
    from lawful.kernels import runtime
    from lawful.kernels.errors import InputError

    if env is None:
        monkeypatch.delenv(mac_grid.ENV_SERIAL_CELLS, raising=False)
    else:
        monkeypatch.setenv(mac_grid.ENV_SERIAL_CELLS, env)
    monkeypatch.setattr(runtime, "taichi_cpu_threads", lambda: threads)
    if expected == "InputError":
        with pytest.raises(InputError, match=mac_grid.ENV_SERIAL_CELLS):
            mac_grid.serial_cells()
        return
    assert mac_grid.serial_cells() == expected
    assert mac_grid.serial_grid(64, 64) == (64 * 64 <= expected)


def test_the_running_taichi_pool_decides_and_both_ways_step_alike(monkeypatch):
    """On this machine's Taichi runtime the policy reads the real pool size; a step serialized
    everywhere and one on the thread pool agree to float32 rounding over 20 steps (80^2)."""
    from lawful.kernels import runtime

    monkeypatch.delenv(mac_grid.ENV_SERIAL_CELLS, raising=False)
    runtime.ensure_taichi()
    threads = runtime.taichi_cpu_threads()
    assert threads is None or threads >= 1
    runs = []
    for cells in ("1000000000", str(mac_grid.SERIAL_CELLS)):
        monkeypatch.setenv(mac_grid.ENV_SERIAL_CELLS, cells)
        sc = scenes.kolmogorov(n=80)
        solver, st = sc.make_solver(), sc.state
        assert solver.pressure.nserial == (len(solver.pressure.dims) if cells != "4096"
                                           else sum(1 for d in solver.pressure.dims if d[0] * d[1] <= 4096))
        for _ in range(20):
            solver.step(st)
        runs.append((st.u.clone(), st.v.clone()))
    scale = float(runs[0][0].abs().max())
    for a, b in zip(*runs):
        assert float((a - b).abs().max()) <= 1e-5 * scale

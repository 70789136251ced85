"""The differentiable torch twin of the solver step (lawful.fluids.torch_step): it matches the
Taichi step to round-off (float64), its projection adjoint is the exact transpose, and gradients
through unrolled corrected steps pass torch.autograd.gradcheck."""

from dataclasses import replace

import pytest
import torch

from conftest import twin_matches  # the Taichi step and its torch twin side by side
from lawful.fluids import scenes
from lawful.fluids.correctors import DivergenceFreeCorrector, UnconstrainedCorrector, corner_geometry
from lawful.fluids.torch_step import Projector, TorchStep, project_differentiable

F64 = torch.float64


def _scene(name):
    if name == "taylor_green":
        return scenes.taylor_green(n=12, dtype=F64)
    if name == "taylor_green_sl":
        return scenes.taylor_green(n=12, dtype=F64, advection="semi_lagrangian")
    if name == "kolmogorov":
        return scenes.kolmogorov(n=12, dtype=F64, viscosity=0.05, wavenumber=2)
    if name == "smoke_plume":
        return scenes.smoke_plume(n=18, dtype=F64, viscosity=1e-3)
    if name == "smoke_free_slip":
        return scenes.smoke_plume(n=12, dtype=F64, walls="free_slip", source=False)
    if name == "karman":
        return scenes.karman(re=100, n=16, aspect=2, dtype=F64)
    raise KeyError(name)


@pytest.mark.parametrize("name", ["taylor_green", "taylor_green_sl", "kolmogorov", "smoke_plume",
                                  "smoke_free_slip", "karman"])
def test_torch_step_matches_taichi_step_to_round_off(name):
    twin_matches(_scene(name), warm=4)


def _transpose_checked(st, solid, seed, **projector):
    """``(proj, x, y, jx, jty)``: random ``x`` (zero on fixed faces, which the step resets before
    projecting; consistent periodic copies, since the projection reads the canonical faces only)
    and ``y``; asserts <J x, y> == <x, J^T y> and that J x is divergence-free on fluid cells."""
    proj = Projector(st.boundary, solid, F64, rtol=1e-13, **projector)
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(st.u.shape, generator=g, dtype=F64) * proj.wu, torch.randn(st.v.shape, generator=g, dtype=F64) * proj.wv)
    y = (torch.randn(st.u.shape, generator=g, dtype=F64), torch.randn(st.v.shape, generator=g, dtype=F64))
    px, py = st.boundary.periodic_axes
    if px:
        x[0][-1] = x[0][0]
    if py:
        x[1][:, -1] = x[1][:, 0]
    jx = proj.forward(*x)
    jty = proj.adjoint(*y)
    lhs = float((jx[0] * y[0]).sum() + (jx[1] * y[1]).sum())
    rhs = float((x[0] * jty[0]).sum() + (x[1] * jty[1]).sum())
    assert lhs == pytest.approx(rhs, rel=1e-10, abs=1e-10)
    d = (jx[0][1:] - jx[0][:-1]) + (jx[1][:, 1:] - jx[1][:, :-1])
    assert float(d[~solid].abs().max()) <= 1e-11 * float(max(jx[0].abs().max(), jx[1].abs().max()))
    return proj, x, y, jx, jty


@pytest.mark.parametrize("name", ["kolmogorov", "smoke_plume", "karman"])
def test_projection_adjoint_is_the_transpose(name):
    """<J x, y> == <x, J^T y> for the Taichi projection and its hand-written adjoint, and the
    projected field is divergence-free."""
    st = _scene(name).state
    _transpose_checked(st, st.solid, seed=1)


@pytest.mark.parametrize("name", ["smoke_free_slip", "taylor_green"])
def test_projection_adjoint_with_an_enclosed_fluid_pocket(name):
    """A solid ring enclosing a pocket of fluid makes the Poisson problem singular once per fluid
    region, while the adjoint removes one mean of its potential over all fluid cells: J^T y still
    equals the explicit columns of J (unit inputs on pocket and outside faces) and the
    transpose identity holds, in a walled box and a periodic domain; both regions come out
    divergence-free."""
    st = _scene(name).state
    solid = st.solid.clone().bool()
    solid[4:10, 4:5] = True
    solid[4:10, 9:10] = True
    solid[4:5, 4:10] = True
    solid[9:10, 4:10] = True             # a ring; cells 5..8 x 5..8 inside are fluid
    proj, x, y, jx, jty = _transpose_checked(st, solid, seed=2, max_iter=2000)
    px = st.boundary.periodic_axes[0]
    assert float(jx[0][6:8, 6].abs().max()) > 0.1      # the pocket keeps a flow of its own
    for face in [(6, 6), (7, 7), (8, 5), (2, 2), (10, 1)]:      # u faces: inside the pocket, outside
        assert float(proj.wu[face]) == 1.0
        e = (torch.zeros_like(x[0]), torch.zeros_like(x[1]))
        e[0][face] = 1.0
        if px and face[0] == 0:
            e[0][-1] = 1.0
        je = proj.forward(*e)
        column = float((je[0] * y[0]).sum() + (je[1] * y[1]).sum())
        assert float(jty[0][face]) == pytest.approx(column, rel=1e-9, abs=1e-11), face


def _noisy_start(sc, seed=0):
    """One solver step, then a small random smooth perturbation (projected): no face velocity is
    exactly 0, so no semi-Lagrangian trace lands exactly on a grid node (where bilinear
    interpolation has a kink and the step is not differentiable)."""
    sc.config = replace(sc.config, pressure_rtol=1e-13)
    solver = sc.make_solver()
    st = sc.state
    solver.step(st)
    g = torch.Generator().manual_seed(seed)
    st.u.add_(0.05 * torch.rand(st.u.shape, generator=g, dtype=F64) * solver.ubc[0])
    st.v.add_(0.05 * torch.rand(st.v.shape, generator=g, dtype=F64) * solver.vbc[0])
    px, py = st.boundary.periodic_axes
    if px:
        st.u[-1] = st.u[0]
    if py:
        st.v[:, -1] = st.v[:, 0]
    solver.project(st, warm_start=False)
    return solver, st


def _scalar_fn(ts, st, geom, corrector, steps, seed=1):
    # Fixed faces (walls, obstacle, inflow) are constants of the step (reset before use) and hold
    # exact zeros where traces land on grid nodes; the function reads the free faces only.
    g = torch.Generator().manual_seed(seed)
    ru = torch.randn(st.u.shape, generator=g, dtype=F64)
    rv = torch.randn(st.v.shape, generator=g, dtype=F64)
    gp0 = tuple(t.detach() for t in ts.pressure_gradient(st.p))
    s0 = st.scalars.clone() if st.scalars.numel() else None

    wu, wv = ts.ubc, ts.vbc

    def fn(u0, v0, w):
        u = wu[0] * u0 + (1 - wu[0]) * wu[1]
        v = wv[0] * v0 + (1 - wv[0]) * wv[1]
        s, gp = s0, gp0
        for _ in range(steps):
            u, v, s, gp = ts(u, v, s, gp)
            du, dv = corrector.correction(u, v, geom, st.dx)
            u, v = u + w * du, v + w * dv
        return (u * ru).sum() + (v * rv).sum(), u[1:3, 1:3].sum()

    return fn


@pytest.mark.parametrize("name", ["kolmogorov", "karman"])
def test_gradcheck_through_two_unrolled_corrected_steps(name):
    """float64 gradcheck of 2 solver steps (MacCormack advection, viscosity, forcing, projection)
    each followed by a divergence-free correction, wrt the initial velocity and a scale on the
    correction: gradients flow through advection, projection and the network."""
    sc = scenes.kolmogorov(n=6, dtype=F64, viscosity=0.05, wavenumber=1) if name == "kolmogorov" else \
        scenes.karman(re=50, n=8, aspect=2, diameter=0.25, dtype=F64)
    solver, st = _noisy_start(sc)
    ts = TorchStep(solver)
    torch.manual_seed(0)
    corr = DivergenceFreeCorrector(hidden=4, layers=2, dtype=F64, init_gain=1.0)
    geom = corner_geometry(st.boundary, st.solid, F64)
    fn = _scalar_fn(ts, st, geom, corr, steps=2)
    u0 = st.u.clone().requires_grad_(True)
    v0 = st.v.clone().requires_grad_(True)
    w = torch.tensor(0.5, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(fn, (u0, v0, w), eps=1e-6, atol=1e-6, rtol=1e-5, fast_mode=True)


def test_gradcheck_wrt_network_weights_through_projected_corrections():
    """The weights of an unconstrained corrector followed by the differentiable projection (the
    'projected' baseline) get exact gradients through 2 steps (float64)."""
    sc = scenes.kolmogorov(n=6, dtype=F64, viscosity=0.05, wavenumber=1)
    solver, st = _noisy_start(sc)
    ts = TorchStep(solver)
    torch.manual_seed(0)
    corr = UnconstrainedCorrector(hidden=3, layers=2, dtype=F64, init_gain=1.0)
    geom = corner_geometry(st.boundary, st.solid, F64)
    names = ("net.out.weight", "net.out.bias")
    base = {k: p.detach() for k, p in corr.named_parameters()}

    class _Wrap(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, u, v):
            return self.m.correction(u, v, geom, st.dx)

    wrapped = _Wrap(corr)
    g = torch.Generator().manual_seed(3)
    ru = torch.randn(st.u.shape, generator=g, dtype=F64)

    def fn(wt, bs):
        params = {"m." + k: t for k, t in base.items()}
        params["m." + names[0]], params["m." + names[1]] = wt, bs
        u, v, gp = st.u, st.v, None
        for _ in range(2):
            u, v, _, gp = ts(u, v, None, gp)
            du, dv = torch.func.functional_call(wrapped, params, (u, v))
            u, v = project_differentiable(u + du, v + dv, ts.projector)
        return (u * ru).sum()

    wt = base[names[0]].clone().requires_grad_(True)
    bs = base[names[1]].clone().requires_grad_(True)
    assert torch.autograd.gradcheck(fn, (wt, bs), eps=1e-6, atol=1e-6, rtol=1e-5, fast_mode=True)


@pytest.mark.parametrize("what", ["force", "advect", "project", "pressure_capped"])
def test_torch_step_refuses_a_solver_it_cannot_mirror(what):
    """A Solver given its own step part: the twin mirrored the built-in one (a custom body force:
    21 % off the Taichi step, no error); a capped projection has no exact adjoint and failed with
    advice to set pressure_capped=True (corrector audit S4, M3)."""
    from lawful.fluids.solver import Solver
    from lawful.kernels.errors import InputError

    sc = scenes.lid_driven_cavity(100, 12, dtype=torch.float64)
    if what == "pressure_capped":
        solver = Solver(sc.state, replace(sc.config, pressure_capped=True, pressure_max_iter=3))
        match = "pressure_capped=True"
    else:
        solver = Solver(sc.state, sc.config, **{what: lambda *args: None})
        match = f"was given its own {what}"
    with pytest.raises(InputError, match=match):
        TorchStep(solver)


def _box_solver(cls=None, names=(), buoyancy=0.0, **cfg):
    from lawful.fluids.scenes import flow_scene
    from lawful.fluids.solver import Solver
    from lawful.kernels.mac_grid import Boundary

    sc = flow_scene((1.0, 1.0), 10, Boundary.box("no_slip", lid_velocity=1.0), viscosity=0.01, dt=0.02,
                    scalar_names=names, dtype=F64)
    sc.config = replace(sc.config, pressure_rtol=1e-13, buoyancy=buoyancy, **cfg)
    st = sc.state
    if names:
        x = (torch.arange(10, dtype=F64) + 0.5) / 10
        blob = torch.exp(-((x[:, None] - 0.4) ** 2 + (x[None, :] - 0.35) ** 2) / 0.02)
        for k in range(len(names)):
            st.scalars[k].copy_((k + 1) * blob)
    return (cls or Solver)(st, sc.config), st


@pytest.mark.parametrize("how", ["subclass force_step", "subclass advect_step", "subclass step", "instance force_step"])
def test_torch_step_refuses_a_solver_whose_step_parts_are_replaced_by_a_subclass(how):
    """A Solver subclass (or instance) replacing a part of the step ran that part in the Taichi step
    while the twin mirrored the built-in one, without error (a force_step adding a shear force
    u += y dt: 6.0 % of max|u| off after one step; an advect_step over dt/2: 0.66 %). Refused like
    an injected part; a subclass that replaces nothing is still mirrored."""
    from lawful.fluids.solver import Solver
    from lawful.kernels.errors import InputError

    def shear(state, dt):
        state.u.add_(dt * torch.linspace(-1, 1, state.ny, dtype=F64)[None, :])

    class Forced(Solver):
        def force_step(self, state, dt):
            super().force_step(state, dt)
            shear(state, dt)

    class Slow(Solver):
        def advect_step(self, state, dt):
            super().advect_step(state, 0.5 * dt)

    class Logged(Solver):
        def step(self, state, corrector=None):
            return super().step(state, corrector)

    cls = {"subclass force_step": Forced, "subclass advect_step": Slow, "subclass step": Logged}.get(how)
    solver, st = _box_solver(cls)
    if how == "instance force_step":
        base = solver.force_step
        solver.force_step = lambda state, dt: (base(state, dt), shear(state, dt))[0]
    with pytest.raises(InputError, match=how.split()[1]):
        TorchStep(solver)

    class Plain(Solver):
        pass

    solver, st = _box_solver(Plain)
    for _ in range(2):
        solver.step(st)
    ts = TorchStep(solver)
    u, v, _, _ = ts(st.u.clone(), st.v.clone(), None, ts.pressure_gradient(st.p))
    solver.step(st)
    assert float((u - st.u).abs().max()) <= 1e-11 * float(st.u.abs().max())


def test_torch_step_refuses_no_scalars_when_buoyancy_needs_them():
    """s=None on a buoyant solver: the twin skipped the buoyancy (no scalar to read) and returned a
    velocity 4.8 % of max|u| off the Taichi step's after one step, without error. Refused now;
    with the scalars it matches, and s=None on passive scalars (no buoyancy) still runs."""
    from lawful.kernels.errors import InputError

    solver, st = _box_solver(names=("a",), buoyancy=1.0)
    for _ in range(2):
        solver.step(st)
    ts = TorchStep(solver)
    gp = ts.pressure_gradient(st.p)
    with pytest.raises(InputError, match="buoyancy=1.0 from scalar 'a'"):
        ts(st.u.clone(), st.v.clone(), None, gp)
    u, v, s, _ = ts(st.u.clone(), st.v.clone(), st.scalars.clone(), gp)
    solver.step(st)
    scale = float(st.u.abs().max())
    assert float((u - st.u).abs().max()) <= 1e-11 * scale and float((v - st.v).abs().max()) <= 1e-11 * scale
    assert float((s - st.scalars).abs().max()) <= 1e-11 * float(st.scalars.abs().max())
    solver, st = _box_solver(names=("a",))
    ts = TorchStep(solver)
    u, v, s, _ = ts(st.u.clone(), st.v.clone(), None, None)
    assert s is None


@pytest.mark.parametrize("what", ["s count", "s dtype", "v dtype", "gp shape"])
def test_torch_step_refuses_inputs_that_do_not_fit_its_solver(what):
    """Scalars of another count than the solver's ran silently (the buoyancy index of the solver's
    list then read another scalar: 'b' for 'a'); another dtype was promoted (float32 scalars in a
    float64 step). Each is refused, naming the input and the expected shape or dtype."""
    from lawful.kernels.errors import InputError

    solver, st = _box_solver(names=("a", "b"), buoyancy=1.0, buoyancy_scalar="a")
    ts = TorchStep(solver)
    u, v, s, gp = st.u.clone(), st.v.clone(), st.scalars.clone(), ts.pressure_gradient(st.p)
    if what == "s count":
        s, match = s[1:], r"s has shape \(1, 10, 10\); it must be \(2, 10, 10\)"
    elif what == "s dtype":
        s, match = s.float(), "s is torch.float32 but the solver runs in torch.float64"
    elif what == "v dtype":
        v, match = v.float(), "v is torch.float32"
    else:
        gp, match = (gp[0], gp[1][:, :-1]), r"gp\[1\] has shape"
    with pytest.raises(InputError, match=match):
        ts(u, v, s, gp)


@pytest.mark.parametrize("case", ["no predictor, viscous substeps", "y inflow, buoyancy, drag, CFL substeps",
                                  "non-square, dx != 1, periodic x"])
def test_torch_step_matches_taichi_step_in_less_common_configurations(case):
    """Configurations the scene tests do not reach (audit 2027-01): the projection without the
    pressure predictor with several viscous substeps; an inflow along y with buoyancy, drag, a box
    and CFL substeps; a non-square periodic-x channel with moving walls and dx = 0.125."""
    from lawful.fluids.scenes import Box, flow_scene
    from lawful.kernels.mac_grid import Boundary

    if case.startswith("no predictor"):
        sc = flow_scene((1.0, 1.0), 10, Boundary.box("no_slip", lid_velocity=1.0), viscosity=1.0, dt=0.02, dtype=F64)
        sc.config = replace(sc.config, pressure_predictor=False, drag=0.3)
    elif case.startswith("y inflow"):
        b = Boundary("no_slip", "free_slip", "inflow", "outflow", inflow_velocity=1.0, inflow_profile="parabolic")
        sc = flow_scene((1.0, 2.0), 24, b, obstacles=[Box((0.3, 0.8), (0.7, 1.0))], viscosity=0.01, dt=0.3,
                        scalar_names=("a",), dtype=F64)
        sc.config = replace(sc.config, buoyancy=1.0, drag=0.5, max_substeps=20)
        x = (torch.arange(12, dtype=F64)[:, None] + 0.5) / 12
        y = (torch.arange(24, dtype=F64)[None, :] + 0.5) / 12
        sc.state.scalars[0].copy_(torch.exp(-((x - 0.5) ** 2 + (y - 0.4) ** 2) / 0.05) * ~sc.state.solid)
    else:
        b = Boundary("periodic", "periodic", "no_slip", "no_slip", wall_velocity=(0.0, 0.0, 0.7, -0.4))
        sc = flow_scene((3.0, 1.5), 12, b, viscosity=0.02, dt=0.1, scalar_names=("a",), dtype=F64)
        sc.config = replace(sc.config, buoyancy=0.5)
        sc.state.scalars[0, 4:8, 2:5] = 1.0
    twin_matches(sc, warm=2, steps=2)

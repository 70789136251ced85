"""Boundary conditions: moving walls (ghost 2 U_wall - q in advection and viscosity), rotating
obstacles (body velocity on their faces), inflow profiles, the general flow scene, and the torch
twin matching the Taichi step on all of them."""

from dataclasses import replace

import pytest
import torch

from conftest import twin_matches  # the Taichi step and its torch twin side by side
from lawful.fluids import scenes
from lawful.fluids.scenes import Box, Circle, flow_scene
from lawful.kernels.errors import InputError
from lawful.kernels.mac_advection import advect_velocity, ghost_tensor, velocity_workspace
from lawful.kernels.mac_forces import viscosity
from lawful.kernels.mac_grid import Boundary, face_bc, inflow_profile

F64 = torch.float64


def test_viscosity_ghost_is_two_u_wall_minus_q_at_a_moving_lid():
    """One explicit viscous step of a fluid at rest under a lid moving at U: the top row of u
    faces gains exactly c * (2U - 0 - 0) (the ghost), every other face stays 0."""
    n, U, nu, dt, dx = 8, 0.7, 0.01, 0.05, 1.0 / 8
    b = Boundary.box("no_slip", lid_velocity=U)
    solid = torch.zeros((n, n), dtype=torch.bool)
    ubc, vbc = face_bc(b, solid, F64)
    uw, vw = velocity_workspace(ubc, vbc)
    u = torch.zeros((n + 1, n), dtype=F64)
    v = torch.zeros((n, n + 1), dtype=F64)
    viscosity(u, v, uw, vw, nu, dt, dx, b)
    c = nu * dt / dx ** 2
    expect = torch.zeros_like(u)
    expect[1:n, n - 1] = c * 2 * U
    assert torch.allclose(u, expect, rtol=0, atol=1e-15)
    assert float(v.abs().max()) == 0.0


def test_linear_drag_leaves_the_prescribed_inflow_for_the_viscous_stencil():
    """A uniform flow U in an inflow/outflow channel (free-slip walls) with linear drag c = drag dt
    and viscosity: one force step is the explicit step of du/dt = -drag u + nu lap u from a uniform
    field whose inflow value is U too (lap u = 0), so every free face goes to U (1 - c), the face
    next to the inflow included, and the inflow face keeps U. Drag used to scale the inflow face
    too: the stencil then read U (1 - c) there and the face next to it lost lambda c U (lambda =
    nu dt / dx^2); and when drag was applied before the viscous stencil, that face gained lambda c U."""
    from lawful.fluids import Solver, SolverConfig
    from lawful.fluids.state import FluidState

    n, U, nu, drag, dt = 8, 0.6, 0.02, 0.5, 0.05
    b = Boundary("inflow", "outflow", "free_slip", "free_slip", inflow_velocity=U)
    state = FluidState.zeros(2 * n, n, 1.0 / n, b, dtype=F64)
    state.u.fill_(U)
    solver = Solver(state, SolverConfig(dt=dt, viscosity=nu, drag=drag))
    solver.force_step(state, dt)
    c, lam = drag * dt, nu * dt * n ** 2
    assert torch.allclose(state.u[0], torch.full((n,), U, dtype=F64), rtol=0, atol=1e-15)
    assert lam * c * U > 1e-4                                    # what the two old errors moved that face by
    assert torch.allclose(state.u[1:2 * n], torch.full((2 * n - 1, n), U * (1 - c), dtype=F64), rtol=0, atol=1e-13)


def test_advection_reads_the_wall_velocity_beyond_a_moving_lid():
    """A uniform downward flow v = -W advects u from above the top row: the top u row takes the
    ghost interpolated half a cell above it, i.e. between q and 2U - q; at rest it stays 0."""
    n, U, W = 8, 1.0, 0.5
    b = Boundary("periodic", "periodic", "no_slip", "no_slip", wall_velocity=(0, 0, 0, U))
    solid = torch.zeros((n, n), dtype=torch.bool)
    ubc, vbc = face_bc(b, solid, F64)
    uw, vw = velocity_workspace(ubc, vbc)
    u = torch.zeros((n + 1, n), dtype=F64)
    v = torch.full((n, n + 1), -W, dtype=F64)
    v[:, 0] = v[:, n] = 0.0
    dx, dt = 1.0, 0.5   # departure point W dt = 0.25 cells above the top u row
    advect_velocity(u, v, uw, vw, dt, dx, (True, False), scheme="semi_lagrangian", ghost=ghost_tensor(b, F64))
    # the trace reaches y = top + 0.25 (v is interpolated towards 0 at the wall, so a bit less):
    top = u[:, n - 1]
    assert float(top.min()) > 0.0 and float(top.max()) < U
    assert float(u[:, : n - 2].abs().max()) == 0.0
    # a static wall (ghost -q of q = 0) keeps everything 0
    u2 = torch.zeros_like(u)
    b0 = Boundary("periodic", "periodic", "no_slip", "no_slip")
    advect_velocity(u2, v.clone(), uw, vw, dt, dx, (True, False), scheme="semi_lagrangian", ghost=ghost_tensor(b0, F64))
    assert float(u2.abs().max()) == 0.0


@pytest.mark.parametrize("profile", ["uniform", "parabolic"])
def test_inflow_profile_has_the_mean_velocity_and_vanishes_at_the_walls(profile):
    prof = inflow_profile(40, 0.2, profile)
    assert float(prof.mean()) == pytest.approx(0.2, rel=1e-14)
    if profile == "parabolic":
        assert float(prof.max()) == pytest.approx(0.3, rel=2e-3)     # peak 1.5 U (cell averages)
        assert float(prof[0]) < 0.03 and torch.allclose(prof, prof.flip(0))
    b = Boundary.channel(0.2, "no_slip", profile)
    ubc, _ = face_bc(b, torch.zeros((10, 40), dtype=torch.bool), F64)
    assert torch.allclose(ubc[1, 0], prof) and float(ubc[0, 0].max()) == 0.0


def test_rotating_cylinder_faces_carry_the_rigid_rotation():
    om = 2.0
    sc = flow_scene((1.0, 1.0), 32, Boundary.box("no_slip"), obstacles=[Circle((0.5, 0.5), 0.2, omega=om)],
                    viscosity=0.01, dtype=F64)
    solver = sc.make_solver()
    fixed_u = (solver.ubc[0] == 0)
    dx = sc.state.dx
    i, j = torch.nonzero(fixed_u[1:-1, 1:-1] & sc.masks[0][1:, 1:-1])[0].tolist()
    i, j = i + 1, j + 1
    assert float(solver.ubc[1, i, j]) == pytest.approx(-om * ((j + 0.5) * dx - 0.5), rel=1e-12)
    solver.step(sc.state)
    assert float(sc.state.u[i, j]) == pytest.approx(float(solver.ubc[1, i, j]), rel=1e-12)
    # the rotation drives the fluid: it moves, and the flow is divergence-free
    assert float(sc.state.u.abs().max()) > 0.1 * om * 0.2


@pytest.mark.parametrize("case", ["cavity", "parabolic_rotating", "moving_side_walls", "obstacle_ghost", "drag_channel"])
def test_torch_twin_matches_the_taichi_step_with_moving_boundaries(case):
    if case == "cavity":
        sc = scenes.lid_driven_cavity(100, 12, dtype=F64)
    elif case == "drag_channel":      # linear drag next to inflow and body faces
        sc = flow_scene((2.0, 0.5), 12, Boundary.channel(1.0, "no_slip", "parabolic"),
                        obstacles=[Circle((0.5, 0.25), 0.1, omega=3.0)], viscosity=0.01, dtype=F64)
        sc.config = replace(sc.config, drag=0.8)
    elif case == "parabolic_rotating":
        sc = flow_scene((2.0, 0.5), 12, Boundary.channel(1.0, "no_slip", "parabolic"),
                        obstacles=[Circle((0.5, 0.25), 0.1, omega=3.0), Box((1.2, 0.1), (1.4, 0.3))],
                        viscosity=0.01, dtype=F64)
    elif case == "obstacle_ghost":
        sc = flow_scene((2.0, 0.5), 12, Boundary.channel(1.0, "no_slip", "parabolic"),
                        obstacles=[Circle((0.5, 0.25), 0.1, omega=3.0), Box((1.2, 0.1), (1.4, 0.3))],
                        viscosity=0.01, dtype=F64)
        sc.config = replace(sc.config, obstacle_ghost=True)
    else:
        b = Boundary("no_slip", "no_slip", "no_slip", "free_slip", wall_velocity=(0.5, -0.3, 0.2, 0.0))
        sc = flow_scene((1.0, 1.0), 10, b, viscosity=0.02, dtype=F64)
    twin_matches(sc)


BAD = [
    ("free-slip wall moving", lambda: Boundary.box("free_slip", lid_velocity=1.0), ["y_hi", "1.0", "no_slip"]),
    ("wall_velocity 3 values", lambda: Boundary(wall_velocity=(1, 2, 3)), ["(1, 2, 3)"]),
    ("wall_velocity nan", lambda: Boundary.box(lid_velocity=float("nan")), ["nan"]),
    ("unknown profile", lambda: Boundary.channel(1.0, profile="plug"), ["'plug'"]),
    ("parabolic across periodic", lambda: Boundary("inflow", "outflow", "periodic", "periodic", 1.0, "parabolic"),
     ["parabolic", "periodic"]),
    ("inflow velocity inf", lambda: Boundary.channel(float("inf")), ["inf"]),
    ("size not whole cells", lambda: flow_scene((1.05, 1.0), 10, dt=0.1), ["1.05", "n=10"]),
    ("circle too small", lambda: flow_scene((1.0, 1.0), 8, obstacles=[Circle((0.5, 0.5), 0.05)], dt=0.1),
     ["n=8", "n >= 20"]),
    ("not a shape", lambda: flow_scene((1.0, 1.0), 8, obstacles=["disc"], dt=0.1), ["str"]),
    ("negative radius", lambda: Circle((0.5, 0.5), -0.1), ["-0.1"]),
    ("box hi < lo", lambda: Box((0.5, 0.5), (0.4, 0.6)), ["(0.5, 0.5)", "(0.4, 0.6)"]),
    ("no velocity scale", lambda: flow_scene((1.0, 1.0), 8), ["dt"]),
    ("cavity re=0", lambda: scenes.lid_driven_cavity(0, 16), ["re=0"]),
    ("reference bad", lambda: flow_scene((1.0, 1.0), 8, dt=0.1, reference=(1.0, -2.0)), ["-2.0"]),
    ("inflow start without inflow", lambda: flow_scene((1.0, 1.0), 8, dt=0.1, initial="inflow"), ["inflow"]),
]


@pytest.mark.parametrize("label, make, words", BAD, ids=[b[0] for b in BAD])
def test_bad_boundaries_and_scenes_are_refused_naming_the_value(label, make, words):
    with pytest.raises(InputError) as exc:
        make()
    for w in words:
        assert w in str(exc.value), (w, str(exc.value))


def test_stream_function_correction_keeps_moving_body_and_lid_faces():
    """A random psi through the solver's slot: fixed faces (the rotating body's rigid velocity, the
    inflow profile) keep their values and the divergence stays at the projection's level."""
    sc = flow_scene((2.0, 0.5), 16, Boundary.channel(1.0, "no_slip", "parabolic"),
                    obstacles=[Circle((0.5, 0.25), 0.1, omega=3.0)], viscosity=0.01, dtype=F64)
    solver = sc.make_solver()
    solver.step(sc.state)
    g = torch.Generator().manual_seed(0)
    psi = torch.randn((sc.state.nx + 1, sc.state.ny + 1), generator=g, dtype=F64) * 1e-2
    u0 = sc.state.u.clone()

    def div():
        d = (sc.state.u[1:] - sc.state.u[:-1]) + (sc.state.v[:, 1:] - sc.state.v[:, :-1])
        return float(d[~sc.state.solid].abs().max())

    d0 = div()
    solver.apply_correction(sc.state, psi)
    fixed = solver.ubc[0] == 0
    assert torch.equal(sc.state.u[fixed], solver.ubc[1][fixed])
    assert float((sc.state.u - u0).abs().max()) > 1e-3
    assert div() <= d0 + 1e-14


@pytest.mark.parametrize("sides", [("free_slip", "outflow"), ("no_slip", "free_slip"), ("inflow", "outflow"),
                                   ("outflow", "outflow")])
@pytest.mark.parametrize("axis", [0, 1])
@pytest.mark.parametrize("scheme, limiter", [("semi_lagrangian", False), ("maccormack", False), ("maccormack", True)])
def test_advection_is_mirror_symmetric_when_traces_leave_the_domain(sides, axis, scheme, limiter):
    """One advection of a random field at dt/dx = 3 (traces leave through the sides) equals the
    mirror image of the mirrored problem, on x and on y. A departure point clamped to the last row
    used to read that row twice, so its MacCormack limiter bounds held one value where the first
    row's held two: 0.06-0.32 apart on |u| ~ 0.5 next to the sides."""
    g = torch.Generator().manual_seed(5)
    nx, ny = (13, 8) if axis == 0 else (8, 13)
    other = ("free_slip", "free_slip")

    def boundary(s):
        return (Boundary(s[0], s[1], *other, inflow_velocity=0.6) if axis == 0
                else Boundary(*other, s[0], s[1], inflow_velocity=0.6))

    def mirror(u, v):
        if axis == 0:
            return -u.flip(0).contiguous(), v.flip(0).contiguous()
        return u.flip(1).contiguous(), -v.flip(1).contiguous()

    u = 0.5 * torch.randn((nx + 1, ny), generator=g, dtype=torch.float64)
    v = 0.5 * torch.randn((nx, ny + 1), generator=g, dtype=torch.float64)
    solid = torch.zeros((nx, ny), dtype=torch.bool)
    out = []
    for b, (uu, vv) in ((boundary(sides), (u.clone(), v.clone())), (boundary(sides[::-1]), mirror(u, v))):
        ubc, vbc = face_bc(b, solid, torch.float64)
        uw, vw = velocity_workspace(ubc, vbc)
        advect_velocity(uu, vv, uw, vw, 0.3, 0.1, (False, False), scheme=scheme, limiter=limiter,
                        ghost=ghost_tensor(b, torch.float64))
        out.append((uu, vv))
    mu, mv = mirror(*out[1])
    assert float((mu - out[0][0]).abs().max()) < 1e-12 and float((mv - out[0][1]).abs().max()) < 1e-12


def test_a_closed_fluid_pocket_away_from_the_inflow_is_allowed():
    """The inflow-to-outflow path check refuses a closed channel (tests/test_failure_paths_fluids.py)
    but not fluid enclosed by obstacles elsewhere: four boxes around a pocket in a channel run, and
    what enters leaves (the audit's ring: div 3e-7 / 2e-11)."""
    from lawful.fluids import run
    from lawful.fluids.scenes import Box

    ring = [Box((1.0, 0.25), (1.5, 0.375)), Box((1.0, 0.625), (1.5, 0.75)),
            Box((1.0, 0.375), (1.125, 0.625)), Box((1.375, 0.375), (1.5, 0.625))]
    sc = flow_scene((3.0, 1.0), 16, Boundary.channel(1.0, "free_slip"), obstacles=ring, viscosity=0.01,
                    dtype=torch.float64)
    rec = run(sc, 5)
    assert rec[-1]["div_max_rel"] < 1e-9
    assert float(sc.state.u[-1].sum()) == pytest.approx(float(sc.state.u[0].sum()), rel=1e-9)


@pytest.mark.parametrize("periodic", [False, True])
def test_kinetic_energy_and_enstrophy_are_the_fluids_not_a_spinning_bodys(periodic):
    """A body spinning in fluid at rest (its inner faces carry the rigid rotation): the metrics'
    kinetic energy is 0, and neither it nor the enstrophy changes when the faces deep inside the
    body change (its own vorticity 2 omega was 99 % of the recorded enstrophy, fluid audit F6);
    the fluid's motion counts as before (a uniform u = 1 outside the body: dx^2/2 per face)."""
    from lawful.fluids.metrics import state_metrics

    om, r, c = 4.0, 0.2, 0.5
    boundary = Boundary("periodic", "periodic", "no_slip", "no_slip") if periodic else Boundary.box("no_slip")
    sc = flow_scene((1.0, 1.0), 32, boundary, obstacles=[Circle((c, c), r, omega=om)], viscosity=0.01, dtype=F64)
    st = sc.state
    dx = st.dx
    solid = st.solid
    # faces with the body on both sides (beyond a wall counts as solid)
    inner_u = torch.cat([torch.ones_like(solid[:1]), solid]) & torch.cat([solid, torch.ones_like(solid[:1])])
    inner_v = torch.cat([torch.ones_like(solid[:, :1]), solid], 1) & torch.cat([solid, torch.ones_like(solid[:, :1])], 1)
    xu, yu = torch.meshgrid(torch.arange(33, dtype=F64) * dx, (torch.arange(32, dtype=F64) + 0.5) * dx, indexing="ij")
    xv, yv = torch.meshgrid((torch.arange(32, dtype=F64) + 0.5) * dx, torch.arange(33, dtype=F64) * dx, indexing="ij")
    st.u.copy_(torch.where(inner_u, -om * (yu - c), torch.zeros_like(xu)))
    st.v.copy_(torch.where(inner_v, om * (xv - c), torch.zeros_like(xv)))
    m = state_metrics(st)
    assert m["kinetic_energy"] == 0.0
    deep_u = (xu - c) ** 2 + (yu - c) ** 2 < (r - 3 * dx) ** 2
    deep_v = (xv - c) ** 2 + (yv - c) ** 2 < (r - 3 * dx) ** 2
    assert bool(deep_u.any()) and bool(deep_v.any())
    st.u[deep_u] *= 10.0
    st.v[deep_v] *= 10.0
    again = state_metrics(st)
    assert again["kinetic_energy"] == 0.0 and again["enstrophy"] == m["enstrophy"]
    # the fluid's own motion: u = 1 on every face outside the body
    st.u.copy_((~inner_u).to(F64))
    st.v.zero_()
    weight = torch.ones(33, 32, dtype=F64)
    if periodic:
        weight[32] = 0.0                 # the periodic duplicate counts once
    else:
        weight[0] = weight[32] = 0.5     # the trapezoid rule's half faces on the x sides
    n_faces = float((weight * (~inner_u).to(F64)).sum())
    assert state_metrics(st)["kinetic_energy"] == pytest.approx(0.5 * dx ** 2 * n_faces, rel=1e-12)



@pytest.mark.parametrize("lx, n", [(2.0, 16), (4.0, 16), (1.0, 32)])
def test_a_uniform_channel_has_the_kinetic_energy_of_its_area(lx, n):
    """kinetic_energy is the trapezoid rule for 1/2 int u^2 dA: the inflow and outflow faces count
    half (counted whole, a uniform channel read 1/nx high, +3.1 % at nx = 32: units audit F5)."""
    from lawful.fluids.metrics import state_metrics

    sc = flow_scene((lx, 1.0), n, Boundary.channel(1.0, "free_slip"), dtype=F64)
    assert state_metrics(sc.state)["kinetic_energy"] == pytest.approx(0.5 * lx * 1.0, rel=1e-12)

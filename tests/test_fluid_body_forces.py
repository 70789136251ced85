"""Body forces in the force balance and periodic duplicate faces: the control-volume drag and lift
include the forcing, drag and buoyancy the step applies to the fluid in the box (without them a
body in a fluid at rest under gravity felt the box's Archimedes force, 3-4x its own), over exactly
the fluid in the box (the half cells against the body too: without them Archimedes read 6-15 %
too large); the acceleration :func:`body_acceleration` reports is the one the force kernel
applies; a periodic axis's duplicate last face always equals its first (forcing, a corrector's
du/dv, the rollout's error masks)."""

from dataclasses import replace

import pytest
import torch

from lawful.fluids import Solver, SolverConfig, run
from lawful.fluids.fine_reference import ReferenceCase, generate_reference
from lawful.fluids.corrector_training import rollout_errors
from lawful.fluids.forces import box_integral, fluid_integral, obstacle_forces
from lawful.fluids.metrics import divergence_metrics
from lawful.fluids.scenes import Box, Circle, flow_scene
from lawful.fluids.solver import body_acceleration
from lawful.fluids.state import FluidState
from lawful.kernels.mac_grid import Boundary, face_bc, faces_touching

F64 = torch.float64


@pytest.mark.parametrize("boundary", [Boundary.box("no_slip"), Boundary("periodic", "periodic", "free_slip", "free_slip"),
                                      Boundary("no_slip", "no_slip", "periodic", "periodic")],
                         ids=["box", "periodic-x", "periodic-y"])
@pytest.mark.parametrize("forcing, drag, buoyancy", [(True, 0.0, 0.0), (False, 0.7, 0.0), (False, 0.0, 1.3),
                                                     (True, 0.4, -0.8)])
def test_body_acceleration_is_what_the_force_step_applies(boundary, forcing, drag, buoyancy):
    """One force step without viscosity changes every free face by dt times body_acceleration of
    the state before it (forcing, -drag u, buoyancy s averaged to the v face), up to the step's
    own O(dt) coupling of forcing and drag ((u + f dt)(1 - drag dt))."""
    g = torch.Generator().manual_seed(3)
    solid = torch.zeros(12, 10, dtype=torch.bool)
    solid[5:7, 4:6] = True
    state = FluidState.zeros(12, 10, 0.1, boundary, solid=solid, scalar_names=("s",), dtype=F64)
    state.u.copy_(torch.randn(state.u.shape, generator=g, dtype=F64))
    state.v.copy_(torch.randn(state.v.shape, generator=g, dtype=F64))
    state.scalars.copy_(torch.rand(state.scalars.shape, generator=g, dtype=F64))
    f = None
    if forcing:
        fu = torch.randn(state.u.shape, generator=g, dtype=F64)
        fv = torch.randn(state.v.shape, generator=g, dtype=F64)
        fu[-1], fv[:, -1] = fu[0], fv[:, 0]                  # periodic where the axis is
        f = (fu, fv)
    config = SolverConfig(dt=0.01, viscosity=0.0, drag=drag, buoyancy=buoyancy, buoyancy_scalar="s")
    solver = Solver(state, config, forcing=f)
    solver.force_step(state, 0.0)                            # the boundary values, nothing else
    acc = solver.body_force(state)
    assert acc is not None
    u0, v0 = state.u.clone(), state.v.clone()
    solver.force_step(state, 0.01)
    for new, old, a, free in ((state.u, u0, acc[0], solver.ubc[0]), (state.v, v0, acc[1], solver.vbc[0])):
        m = free.bool()
        coupling = drag * 0.01 * (max(float(f[0].abs().max()), float(f[1].abs().max())) if f is not None else 0.0)
        assert torch.allclose(((new - old) / 0.01)[m], a[m], rtol=0, atol=1.01 * coupling + 1e-10)
        assert float(a[~m].abs().max()) == 0.0                # nothing on fixed faces
    # the scene-level function gives the same without the solver's masks
    other = body_acceleration(state, config, f)
    assert torch.equal(other[0], solver.body_force(state)[0]) and torch.equal(other[1], solver.body_force(state)[1])


@pytest.mark.parametrize("kind", ["forcing", "buoyancy"])
def test_control_volume_force_of_a_body_in_fluid_at_rest_is_archimedes(kind):
    """A box obstacle in a closed no-slip box of fluid under a uniform body force f (x forcing, or
    buoyancy on a uniform scalar in y): hydrostatic pressure, and the force on the body is -f times
    the area of its cells. The control volume counted the box's area instead before it included
    the body force on the fluid in the box (3.3x too large), then left out the half cells of fluid
    against the body (their faces are fixed and carry no body force): a face wider along the force
    (12 x 9 v faces for 12 x 8 cells: 12.5 % too large for buoyancy, 6.5 % for x forcing). The fluid
    starts with the pressure that balances the force and stays at rest: Archimedes to rounding. (At
    this viscous number, 0.2, the step takes two viscous substeps; until 2026-12-03 they read the
    forcing added in the first as velocity, and the x forcing left a flow of 2e-3 along the no-slip
    walls and read 1.8 % low.)"""
    sc = flow_scene((2.0, 1.0), 32, Boundary.box("no_slip"), obstacles=[Box((0.75, 0.375), (1.125, 0.625))],
                    dt=0.02, viscosity=0.01, scalar_names=("s",), dtype=F64)
    area = float(sc.state.solid.sum()) * sc.state.dx ** 2
    st = sc.state
    x = (torch.arange(st.p.shape[0], dtype=F64)[:, None] + 0.5) * st.dx
    y = (torch.arange(st.p.shape[1], dtype=F64)[None, :] + 0.5) * st.dx
    if kind == "forcing":
        fu = torch.full(sc.state.u.shape, 0.5, dtype=F64)
        sc = replace(sc, forcing=(fu, torch.zeros(sc.state.v.shape, dtype=F64)))
        expected, col = -0.5 * area, "drag"
        st.p.copy_((0.5 * x).expand_as(st.p))                  # the hydrostatic pressure, grad p = f
    else:
        sc.state.scalars.fill_(1.0)
        sc = replace(sc, config=replace(sc.config, buoyancy=0.5, buoyancy_scalar="s"))
        expected, col = -0.5 * area, "lift"
        st.p.copy_((0.5 * y).expand_as(st.p))
    assert sc.config.viscosity * sc.config.dt / st.dx ** 2 > 0.2      # two viscous substeps
    rel = 1e-10
    rec = run(sc, 20)
    assert rec[-1]["max_velocity"] < 1e-12                 # still at rest
    assert rec[-1][col] == pytest.approx(expected, rel=rel)
    # the scene computes the same body force itself when called outside run()
    assert sc.forces()[col] == pytest.approx(expected, rel=rel)


def _at_rest(shape, n, buoyancy=0.0, stratification=0.0, forcing=(0.0, 0.0), steps=3):
    """A body in the closed no-slip unit box of fluid at rest (density 1), under buoyancy on a
    scalar ``s = 1 + stratification * y`` (0 in the body's cells) and a uniform forcing; inviscid,
    so the step keeps the fluid exactly at rest (hydrostatic pressure). Returns the scene and the
    run's last record (the control volume, the default force method)."""
    sc = flow_scene((1.0, 1.0), n, Boundary.box("no_slip"), obstacles=[shape], viscosity=0.0, dt=1 / 64,
                    scalar_names=("s",), dtype=F64)
    y = (torch.arange(n, dtype=F64)[None, :] + 0.5) / n
    sc.state.scalars[0].copy_((1.0 + stratification * y).expand(n, n))
    sc.state.scalars[0][sc.state.solid] = 0.0
    sc = replace(sc, config=replace(sc.config, buoyancy=buoyancy, buoyancy_scalar="s", pressure_predictor=False))
    if any(forcing):
        sc = replace(sc, forcing=(torch.full(sc.state.u.shape, float(forcing[0]), dtype=F64),
                                  torch.full(sc.state.v.shape, float(forcing[1]), dtype=F64)))
    rec = run(sc, steps)[-1]
    assert rec["max_velocity"] < 1e-15                     # at rest
    assert rec["force_method"] == 0                        # the control volume, not the surface fallback
    return sc, rec


SQUARE = Box((0.375, 0.375), (0.625, 0.625))               # 8 x 8 cells at n = 32, 16 x 16 at n = 64
DISC = Circle((0.5, 0.5), 0.125)                           # 8 cells across at n = 32, 16 at n = 64
ARCHIMEDES = [
    # label, shape, n, buoyancy coefficient b: the force on the body is -b * (area of its cells) in y
    ("square 8x8 cells, b=2", SQUARE, 32, 2.0),              # read -0.140625 for -0.125 (+12.5 %)
    ("square 16x16 cells, b=-0.7", SQUARE, 64, -0.7),        # +6.3 %
    ("box 6x4 cells off-centre, b=1.3", Box((0.3, 0.45), (0.45, 0.55)), 40, 1.3),
    ("disc 8 cells across, b=2", DISC, 32, 2.0),             # read -0.117188 for -0.101563 (+15.4 %)
    ("disc 16 cells across, b=-0.7", DISC, 64, -0.7),        # +7.7 %
    ("disc off-centre, b=1.3", Circle((0.43, 0.56), 0.17), 48, 1.3),
]


@pytest.mark.parametrize("label, shape, n, b", ARCHIMEDES, ids=[c[0] for c in ARCHIMEDES])
def test_control_volume_gives_archimedes_force_to_rounding(label, shape, n, b):
    """Buoyancy b on a uniform scalar, the fluid at rest: the control-volume force (run's record,
    and scene.forces() with the scene's own body force) is Archimedes' -b A on the body's cells
    (the area the solver excludes from the fluid), to rounding. Before, the half cells of fluid
    against the body's top and bottom carried no body force: 6-15 % too large."""
    sc, rec = _at_rest(shape, n, buoyancy=b)
    area = float(sc.state.solid.sum()) * sc.state.dx ** 2
    assert rec["fy"] == pytest.approx(-b * area, rel=1e-10)
    assert abs(rec["fx"]) < 1e-12 * abs(b * area)
    assert sc.forces()["fy"] == pytest.approx(-b * area, rel=1e-10)


AT_REST = [
    # label, shape, n, buoyancy, stratification of the scalar, uniform forcing (fx, fy)
    ("square, buoyancy", SQUARE, 32, 2.0, 0.0, (0.0, 0.0)),
    ("disc, stratified buoyancy", DISC, 32, 1.0, 0.8, (0.0, 0.0)),
    ("disc off-centre, stratified buoyancy", Circle((0.43, 0.56), 0.17), 48, -1.5, 2.0, (0.0, 0.0)),
    ("box off-centre, x forcing", Box((0.3, 0.45), (0.45, 0.55)), 40, 0.0, 0.0, (0.5, 0.0)),
    ("disc, oblique forcing and buoyancy", DISC, 64, 1.3, 0.0, (-0.4, 0.3)),
]


@pytest.mark.parametrize("label, shape, n, b, strat, forcing", AT_REST, ids=[c[0] for c in AT_REST])
def test_control_volume_and_surface_integral_agree_at_rest(label, shape, n, b, strat, forcing):
    """Fluid at rest under body forces, a stratified scalar included: the two force methods
    give one force, to rounding (the control volume's half cells of fluid against the body take
    the body force of the cell's other face, as the surface integral extrapolates the pressure
    across them); with uniform body forces it is -f A on the body's cells. Before, the control
    volume read 6-15 % more along each force."""
    sc, rec = _at_rest(shape, n, buoyancy=b, stratification=strat, forcing=forcing)
    (sx, sy), = obstacle_forces(sc.state, 0.0, sc.obstacles, sc.masks)
    scale = abs(sx) + abs(sy)
    assert abs(rec["fx"] - sx) < 1e-10 * scale and abs(rec["fy"] - sy) < 1e-10 * scale, (rec["fx"], rec["fy"], sx, sy)
    if not strat:
        area = float(sc.state.solid.sum()) * sc.state.dx ** 2
        assert rec["fx"] == pytest.approx(-forcing[0] * area, rel=1e-10, abs=1e-12 * scale)
        assert rec["fy"] == pytest.approx(-(forcing[1] + b) * area, rel=1e-10, abs=1e-12 * scale)


def _mask(rows):
    """A solid mask from strings of '#' (solid) and '.' (fluid), the first string the top row."""
    return torch.tensor([[c == "#" for c in row] for row in reversed(rows)]).T.contiguous()


FLUID_VOLUMES = [
    # label, mask, box (i0, i1, j0, j1) with its border cells fluid and one cell of fluid outside
    ("2x2 body", [".......", ".......", "...##..", "...##..", ".......", "......."], (1, 6, 1, 5)),
    ("L-shaped body", ["........", "........", "...#....", "...#....", "...###..", "........", "........"],
     (1, 7, 1, 6)),
    ("staircase disc", ["........", "........", "...##...", "..####..", "..####..", "...##...", "........",
                        "........"], (1, 7, 1, 7)),
]


@pytest.mark.parametrize("label, rows, box", FLUID_VOLUMES, ids=[c[0] for c in FLUID_VOLUMES])
@pytest.mark.parametrize("f", [(1.0, 0.0), (0.0, -2.5), (0.7, 0.3)])
def test_a_uniform_body_force_integrates_to_the_fluid_area_of_the_box(label, rows, box, f):
    """fluid_integral of a uniform body force given on the free faces (zero on those touching the
    body, as body_acceleration gives it) is f times the fluid area in the box: a face between
    fluid cells counts one cell, one on the box border half, one on the body's surface half (its
    fluid side), one inside the body nothing. box_integral of the free faces (the control
    volume's sum before) was short by half a cell per surface face along the force."""
    solid = _mask(rows)
    dx = 0.25
    free_u, free_v = (bc[0].bool() for bc in face_bc(Boundary.box("no_slip"), solid, F64))
    fu, fv = f[0] * free_u.double(), f[1] * free_v.double()
    i0, i1, j0, j1 = box
    around = solid[i0 - 1:i1 + 1, j0 - 1:j1 + 1]
    assert int(around.sum()) == int(around[2:-2, 2:-2].sum()) == int(solid.sum())   # the box's contract
    fluid_area = float((~solid[i0:i1, j0:j1]).sum()) * dx ** 2
    gx, gy = fluid_integral(fu, fv, box, dx, solid)
    assert gx == pytest.approx(f[0] * fluid_area, rel=1e-14, abs=1e-15)
    assert gy == pytest.approx(f[1] * fluid_area, rel=1e-14, abs=1e-15)
    # before: each face on the body's surface normal to the force was left out (half a cell each)
    bx, by = box_integral(fu, fv, box, dx)
    n_u, n_v = (int((s & fl).sum()) for s, fl in zip(faces_touching(solid), faces_touching(~solid)))  # surface faces
    assert bx == pytest.approx(f[0] * (fluid_area - 0.5 * n_u * dx ** 2), rel=1e-14, abs=1e-15)
    assert by == pytest.approx(f[1] * (fluid_area - 0.5 * n_v * dx ** 2), rel=1e-14, abs=1e-15)


def test_periodic_duplicate_faces_stay_the_first_face():
    """Forcing equal on u[nx] and u[0] up to rounding is accepted and made exactly equal; a
    corrector's du with another duplicate face is applied as face 0's, so a uniform correction
    stays divergence-free and the step keeps u[nx] == u[0]."""
    sc_state = FluidState.zeros(16, 8, 1.0 / 16, Boundary("periodic", "periodic", "no_slip", "no_slip"), dtype=F64)
    fu = torch.full(sc_state.u.shape, 0.3, dtype=F64)
    fu[-1] += 1e-12
    solver = Solver(sc_state, SolverConfig(dt=0.05, viscosity=0.0), forcing=(fu, torch.zeros(sc_state.v.shape, dtype=F64)))
    assert torch.equal(solver.forcing[0][-1], solver.forcing[0][0])

    def corrector(state):
        du = torch.full_like(state.u, 0.01)                   # a uniform flow: divergence-free...
        du[-1] = 0.05                                          # ...once the duplicate takes face 0's
        return du, torch.zeros_like(state.v)

    for _ in range(3):
        solver.step(sc_state, corrector)
        assert torch.equal(sc_state.u[-1], sc_state.u[0])
        assert divergence_metrics(sc_state)[0] < 1e-9


def test_a_float64_rollout_leaves_the_solvers_face_masks_alone():
    """rollout_errors(dtype=float64) on a periodic reference: its error masks are copies, so a
    corrector's mean flow still reaches the duplicate face (u[nx] == u[0] after every step; the
    aliased mask left them 0.05 apart)."""
    traj = generate_reference(ReferenceCase("kolmogorov", n=16, factor=2, steps=3, warmup=1), dtype=F64)
    gaps = []

    def mean_flow(state):
        return {"mean_flow": (0.05, 0.0)}

    rollout_errors(traj, mean_flow, steps=3, dtype=F64,
                   callback=lambda state, rec: gaps.append(float((state.u[-1] - state.u[0]).abs().max())))
    assert gaps == [0.0, 0.0, 0.0]

"""Body forces in the force balance and periodic duplicate faces: the control-volume drag and lift
include the forcing, drag and buoyancy the step applies to the fluid in the box (without them a
body in a fluid at rest under gravity felt the box's Archimedes force, 3-4x its own); the
acceleration :func:`body_acceleration` reports is the one the force kernel applies; a periodic
axis's duplicate last face always equals its first (forcing, a corrector's du/dv, the rollout's
error masks)."""

from dataclasses import replace

import pytest
import torch

from lawful.fluids import Solver, SolverConfig, run
from lawful.fluids.fine_reference import ReferenceCase, generate_reference
from lawful.fluids.corrector_training import rollout_errors
from lawful.fluids.metrics import divergence_metrics
from lawful.fluids.scenes import Box, flow_scene
from lawful.fluids.solver import body_acceleration
from lawful.fluids.state import FluidState
from lawful.kernels.mac_grid import Boundary

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
    """A box obstacle in a closed no-slip box of fluid at rest under a uniform body force f (x
    forcing, or buoyancy on a uniform scalar in y): hydrostatic pressure, and the force on the body
    is -f times its area. The control volume counted the box's area instead before it included
    the body force on the fluid in the box (3.3x too large). What remains is the staircase: the
    faces on the body's surface are fixed and carry no body force, so the discrete body is a face
    wider along the force (12 x 9 v faces for 12 x 8 cells: 12 % for buoyancy, 5 % for x forcing
    here), first order in dx like the surface integral."""
    sc = flow_scene((2.0, 1.0), 32, Boundary.box("no_slip"), obstacles=[Box((0.75, 0.375), (1.125, 0.625))],
                    dt=0.02, viscosity=0.01, scalar_names=("s",), dtype=F64)
    area = float(sc.state.solid.sum()) * sc.state.dx ** 2
    if kind == "forcing":
        fu = torch.full(sc.state.u.shape, 0.5, dtype=F64)
        sc = replace(sc, forcing=(fu, torch.zeros(sc.state.v.shape, dtype=F64)))
        expected, col = -0.5 * area, "drag"
    else:
        sc.state.scalars.fill_(1.0)
        sc = replace(sc, config=replace(sc.config, buoyancy=0.5, buoyancy_scalar="s"))
        expected, col = -0.5 * area, "lift"
    rec = run(sc, 20)
    assert rec[-1]["max_velocity"] < 0.02                  # still (nearly) at rest
    assert rec[-1][col] == pytest.approx(expected, rel=0.15)
    # the scene computes the same body force itself when called outside run()
    assert sc.forces()[col] == pytest.approx(expected, rel=0.15)


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

"""Physics checks of the fluid metrics beside walls (fluid audit, 2026-12): the enstrophy column
is ``1/2 int omega^2 dA`` with the wall vorticity counted, so a viscous decay obeys the discrete
energy budget ``dKE/dt = -2 nu enstrophy`` in a box as on a periodic domain."""

import math

import pytest
import torch

from lawful.fluids.metrics import state_metrics
from lawful.fluids.solver import Solver, SolverConfig
from lawful.fluids.state import FluidState
from lawful.kernels.mac_grid import Boundary
from lawful.kernels.mac_operators import curl_torch

F64 = torch.float64


def _mode(boundary, n, amplitude):
    """A slow divergence-free mode fitting ``boundary`` on the unit square: the curl of
    ``psi = A f(x) g(y)`` (sin(2 pi s) on periodic axes, sin^2(pi s) beside no-slip walls (psi and
    its normal derivative 0), sin(pi s) beside free-slip ones)."""
    dx = 1.0 / n
    s = torch.arange(n + 1, dtype=F64) * dx

    def shape(periodic, side):
        if periodic:
            return torch.sin(2 * math.pi * s)
        return torch.sin(math.pi * s) ** 2 if side == "no_slip" else torch.sin(math.pi * s)

    px, py = boundary.periodic_axes
    psi = amplitude * shape(px, boundary.x_lo)[:, None] * shape(py, boundary.y_lo)[None, :]
    st = FluidState.zeros(n, n, dx, boundary, dtype=F64)
    du, dv = curl_torch(psi, dx, (px, py))
    st.u.copy_(du)
    st.v.copy_(dv)
    return st


# (boundary, -dKE/dt / (2 nu enstrophy) of the old interior-corner enstrophy, measured)
BUDGET_CASES = [
    ("no-slip box", Boundary.box("no_slip"), 1.0498),
    ("periodic x, no-slip y", Boundary("periodic", "periodic", "no_slip", "no_slip"), 1.0111),
    ("free-slip box", Boundary.box("free_slip"), 1.0001),
    ("periodic", Boundary.periodic(), 1.0004),
]


@pytest.mark.parametrize("name, boundary, old_ratio", BUDGET_CASES, ids=[c[0] for c in BUDGET_CASES])
def test_viscous_decay_obeys_dke_dt_equals_minus_two_nu_enstrophy(name, boundary, old_ratio):
    """A Stokes-regime mode (A = 1e-4, so advection is 1e-4 of the viscous term) decaying for one
    step at 32^2: -dKE/dt over 2 nu times the step's mean enstrophy is 1 to 1e-3 whatever the walls.
    The interior corners alone (the column before) gave 1.0498 in the no-slip box (the wall
    vorticity, 5 % of the whole, left out) and 1.0111 in the periodic channel."""
    nu, dt = 0.01, 1e-3
    st = _mode(boundary, 32, 1e-4)
    solver = Solver(st, SolverConfig(dt=dt, viscosity=nu))
    for _ in range(3):           # past the first step's start-up of the pressure predictor
        solver.step(st)
    m0 = state_metrics(st)
    solver.step(st)
    m1 = state_metrics(st)
    ratio = -(m1["kinetic_energy"] - m0["kinetic_energy"]) / dt / (nu * (m0["enstrophy"] + m1["enstrophy"]))
    assert ratio == pytest.approx(1.0, abs=1e-3), f"{name}: {ratio:.5f} (interior corners only: {old_ratio})"


@pytest.mark.parametrize("n", [8, 32])
@pytest.mark.parametrize("lid", [1.0, -2.5])
def test_couette_enstrophy_counts_the_wall_vorticity(n, lid):
    """Plane Couette flow u = U y between a wall at rest (y = 0) and one sliding at U (y = 1),
    periodic in x: omega = -U everywhere, so 1/2 int omega^2 dA = U^2/2 exactly on the MAC samples
    (the wall corners read it through the no-slip ghost). The interior corners alone gave
    (n-1)/n of it: -12.5 % at n = 8."""
    b = Boundary("periodic", "periodic", "no_slip", "no_slip", wall_velocity=(0.0, 0.0, 0.0, lid))
    st = FluidState.zeros(n, n, 1.0 / n, b, dtype=F64)
    y = (torch.arange(n, dtype=F64) + 0.5) / n
    st.u.copy_((lid * y)[None, :].expand(n + 1, n))
    m = state_metrics(st)
    assert m["enstrophy"] == pytest.approx(0.5 * lid * lid, rel=1e-13)
    assert m["kinetic_energy"] == pytest.approx(lid * lid / 6 * (1 - 0.25 / n ** 2), rel=1e-13)   # midpoint rule


def test_cavity_enstrophy_includes_the_lid_and_walls():
    """A resting no-slip box under its lid (the cavity's first instant, u = 0 inside): the only
    vorticity is the lid's shear, 2 U / dx on the n-1 lid corners between free faces (the two corners
    where the lid meets the side walls weigh 0: no free face's stencil reaches them), weight 1/2:
    enstrophy = 1/2 dx^2 (n-1)/2 (2U/dx)^2 = (n-1) U^2. The interior corners alone gave 0."""
    n, lid = 16, 1.5
    st = FluidState.zeros(n, n, 1.0 / n, Boundary.box("no_slip", lid_velocity=lid), dtype=F64)
    assert state_metrics(st)["enstrophy"] == pytest.approx((n - 1) * lid * lid, rel=1e-13)


# -- the fine reference: the coarse step's pressure --------------------------------------------

REFERENCE_CASES = [
    ("kolmogorov", dict(scene="kolmogorov", n=16, factor=2, steps=3, warmup=3)),
    ("karman", dict(scene="karman", n=8, factor=2, steps=3, warmup=3, re=80.0)),
    ("karman f3", dict(scene="karman", n=8, factor=3, steps=2, warmup=2, re=80.0)),
]


@pytest.mark.parametrize("name, kw", REFERENCE_CASES, ids=[c[0] for c in REFERENCE_CASES])
def test_reference_pressure_is_the_coarse_steps_mean_of_the_fine_steps(name, kw):
    """A coarse step of dt_c = f dt_f applies dt_c grad P; the f fine steps it stands for apply
    sum dt_f grad p_k, so the coarse record's pressure is the mean of the f fine steps' (time-centred)
    pressures, centred at t - dt_c/2 as the coarse state's own (FluidState.p). The velocities are the
    fine state at the same time t. The last fine step's pressure alone (the record before) sits at
    t - dt_c/(2f): here 1e-3 - 1e-2 of the pressure's range away."""
    from lawful.fluids.fine_reference import ReferenceCase, coarse_scene, downsample_cells, downsample_faces, \
        generate_reference

    case = ReferenceCase(**kw)
    traj = generate_reference(case, dtype=F64, progress=False)
    f = case.factor
    fine = coarse_scene(case, n=case.n * f, dtype=F64)
    solver = fine.make_solver()
    st = fine.state
    fluid = ~st.solid
    ps = []
    for k in range((case.warmup + case.steps) * f):
        solver.step(st)
        ps.append(downsample_cells(st.p, f, fluid))
        j, r = divmod(k + 1 - case.warmup * f, f)
        if r == 0 and j >= 0:
            mean = torch.stack(ps[-f:]).mean(0)
            u, v = downsample_faces(st.u, st.v, f)
            assert torch.equal(traj.u[j], u) and torch.equal(traj.v[j], v)       # same physical time
            torch.testing.assert_close(traj.p[j], mean, rtol=0, atol=1e-13)
            spread = float(mean.max() - mean.min())
            assert float((ps[-1] - mean).abs().max()) > 1e-4 * spread          # the last one alone differs


# -- a trained corrector outside the velocities it learned -------------------------------------

def _scene(name, **kw):
    from lawful.fluids import scenes

    return getattr(scenes, name)(**kw)


# (case, training scene, run scene, the parameter the warning names; None: inside the domain)
VELOCITY_SCALE_CASES = [
    ("cavity, same", ("lid_driven_cavity", dict(n=16)), ("lid_driven_cavity", dict(n=16)), None),
    ("cavity lid x2 at the same Re and dt", ("lid_driven_cavity", dict(n=16)),
     ("lid_driven_cavity", dict(n=16, lid_velocity=2.0, dt=1 / 32)), "lid_velocity"),
    ("taylor-green amplitude x2 at the same dt", ("taylor_green", dict(n=16)),
     ("taylor_green", dict(n=16, amplitude=2.0, dt=0.5 * 2 * math.pi / 16)), "amplitude"),
    ("plume, same", ("smoke_plume", dict(n=24)), ("smoke_plume", dict(n=24)), None),
    ("plume buoyancy x8", ("smoke_plume", dict(n=24)), ("smoke_plume", dict(n=24, buoyancy=8.0)), "buoyancy"),
    # buoyancy switched off: recorded only when non-zero, it went uncompared
    ("plume buoyancy off", ("smoke_plume", dict(n=24)), ("smoke_plume", dict(n=24, buoyancy=0.0)), "buoyancy"),
    ("plume release x8", ("smoke_plume", dict(n=24)), ("smoke_plume", dict(n=24, source_rate=8.0)), "source_rate"),
]


@pytest.mark.parametrize("case, trained, here, named", VELOCITY_SCALE_CASES, ids=[c[0] for c in VELOCITY_SCALE_CASES])
def test_trained_corrector_warns_at_another_velocity_scale(tmp_path, case, trained, here, named):
    """The network reads velocities in absolute units. Scenes without a reference velocity (the
    cavity, Taylor-Green, the plume) set their velocity scale by the lid speed, the amplitude, the
    buoyancy or the release rate: a corrector trained on one and run at another (a cavity at twice
    the lid speed, same Re and dt; a plume at 8x buoyancy: max|u| 0.43 for 0.07) ran without a
    word. Each is now named in the OutOfDomainWarning, and the same scene stays silent."""
    import warnings

    from lawful.fluids import run
    from lawful.fluids.correctors import DivergenceFreeCorrector, load_corrector, scene_domain
    from lawful.kernels.errors import OutOfDomainWarning

    train = _scene(trained[0], **trained[1])
    dom = scene_domain(train)
    if dom["re"] is not None:
        dom["re"] = [dom["re"]]
    DivergenceFreeCorrector.for_scene(train).save(tmp_path / "c.lawful", metadata={"trained_on": dom})
    corr = load_corrector(tmp_path / "c.lawful")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run(_scene(here[0], **here[1]), 1, corrector=corr)
    msgs = [str(w.message) for w in caught if issubclass(w.category, OutOfDomainWarning)]
    if named is None:
        assert msgs == []
    else:
        assert len(msgs) == 1 and f"{named} " in msgs[0], msgs

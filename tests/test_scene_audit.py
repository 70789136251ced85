"""Scene set-up audit (2026-12-04): the physics the built-in scenes set up, checked against
independent arithmetic, and the one silent wrong answer it found -- a boundary's inflow velocity
or parabolic profile with no side of kind ``"inflow"`` was accepted and never used (the channel
stayed at rest, max velocity 0 for an inflow of 1, and ``flow_scene`` took its dt from the other
speeds); it is now refused by ``Boundary.check_flow`` (``flow_scene`` and ``Solver``)."""

import math

import pytest
import torch

from lawful.fluids import FluidState, Solver, SolverConfig, run, scenes
from lawful.kernels.errors import InputError
from lawful.kernels.mac_grid import Boundary, face_bc, inflow_profile

F64 = torch.float64


# -- the refusal (fails on the old code: it built and ran these flows without a word) --------------

@pytest.mark.parametrize("boundary, named", [
    (Boundary("no_slip", "outflow", "no_slip", "no_slip", inflow_velocity=1.0), ["inflow_velocity=1"]),
    (Boundary("no_slip", "outflow", "no_slip", "no_slip", inflow_velocity=1.0, inflow_profile="parabolic"),
     ["inflow_velocity=1", "inflow_profile='parabolic'"]),
    (Boundary("no_slip", "outflow", "no_slip", "no_slip", inflow_profile="parabolic"), ["inflow_profile='parabolic'"]),
    (Boundary("no_slip", "no_slip", "no_slip", "no_slip", inflow_velocity=0.5, wall_velocity=(0, 0, 0, 0.1)),
     ["inflow_velocity=0.5"]),
])
def test_inflow_settings_without_an_inflow_side_are_refused(boundary, named):
    with pytest.raises(InputError) as err:
        scenes.flow_scene((2.0, 1.0), 8, boundary, viscosity=0.01, dt=0.05, dtype=F64)
    msg = str(err.value)
    assert all(s in msg for s in named) and "no side is 'inflow'" in msg
    with pytest.raises(InputError, match="no side is 'inflow'"):
        Solver(FluidState.zeros(16, 8, 1.0 / 8, boundary, dtype=F64), SolverConfig(dt=0.05))


def test_the_same_channel_with_its_inlet_marked_carries_the_inflow():
    """Positive control: the refused boundary with ``x_lo`` made ``"inflow"`` runs, and the flux
    through the inlet and the outlet is ``U H`` (it was 0: the flow stayed at rest)."""
    b = Boundary("inflow", "outflow", "no_slip", "no_slip", inflow_velocity=1.0, inflow_profile="parabolic")
    sc = scenes.flow_scene((2.0, 1.0), 8, b, viscosity=0.01, dt=0.05, dtype=F64)
    rec = run(sc, 3)
    st = sc.state
    assert rec[-1]["max_velocity"] > 1.0
    assert float(st.u[0].sum()) * st.dx == pytest.approx(1.0, abs=1e-12)
    assert float(st.u[-1].sum()) * st.dx == pytest.approx(1.0, abs=1e-9)


def test_a_closed_box_and_a_periodic_flow_still_build():
    """The check leaves every boundary without inflow settings alone."""
    scenes.lid_driven_cavity(re=100, n=8, dtype=F64)
    scenes.flow_scene((1.0, 1.0), 8, Boundary("periodic", "periodic", "no_slip", "no_slip"), dt=0.1, dtype=F64)
    Boundary.box("no_slip").check_flow(torch.zeros((4, 4), dtype=torch.bool))


# -- the scenes' physics, by independent arithmetic (regression checks; they held) ------------------

@pytest.mark.parametrize("n", [4, 7, 41])
def test_parabolic_inflow_faces_carry_the_mean_exactly_and_peak_below_one_and_a_half(n):
    """Each face holds the average of ``6 U s (1 - s)`` over its extent: the sum of the exact
    integrals ``6 U [s^2/2 - s^3/3]`` over the faces is ``U`` (Schaefer-Turek's U_mean = 2/3 U_max),
    the peak is ``1.5 U (1 - 4 / (3 n^2))`` for even ``n`` (the middle faces' average) and below 1.5 U."""
    U = 0.2
    p = inflow_profile(n, U, "parabolic")
    assert float(p.sum()) / n == pytest.approx(U, rel=1e-14)
    for j in range(n):
        a, b = j / n, (j + 1) / n
        assert float(p[j]) == pytest.approx(6 * U * ((b * b - a * a) / 2 - (b ** 3 - a ** 3) / 3) * n, rel=1e-13)
    assert float(p.max()) < 1.5 * U
    if n % 2 == 0:
        assert float(p.max()) == pytest.approx(1.5 * U * (1 - 4 / (3 * n ** 2)), rel=1e-13)


def test_schaefer_turek_2d1_set_up():
    """The 2.2 x 0.41 channel at 10 cells per diameter: Re = U_mean D / nu = 20, the cylinder's
    mask spans 10 cells (0.1) across and along, the inflow faces carry U_mean H = 0.082 and the
    dt is cfl dx / (1.5 U_mean)."""
    from lawful.fluids.scenes import Circle, flow_scene

    sc = flow_scene((2.2, 0.41), 41, Boundary.channel(0.2, "no_slip", "parabolic"),
                    obstacles=[Circle((0.2, 0.2), 0.05)], viscosity=1e-3, reference=(0.2, 0.1), dtype=F64)
    st = sc.state
    assert (st.nx, st.ny) == (220, 41) and st.dx == pytest.approx(0.01, rel=1e-12)
    assert sc.reference[0] * sc.reference[1] / sc.config.viscosity == pytest.approx(20.0, rel=1e-12)
    m = sc.masks[0]
    assert int(m.any(1).sum()) == 10 and int(m.any(0).sum()) == 10
    ubc, _ = face_bc(st.boundary, st.solid, F64)
    assert float(ubc[1, 0].sum()) * st.dx == pytest.approx(0.2 * 0.41, rel=1e-13)
    assert sc.config.dt == pytest.approx(0.5 * 0.01 / 0.3, rel=1e-12)


def test_karman_and_cavity_viscosity_from_their_reynolds_numbers():
    sc = scenes.karman(re=150.0, n=32, inflow=2.0, diameter=0.125, dtype=F64)
    assert sc.config.viscosity == pytest.approx(2.0 * 0.125 / 150.0, rel=1e-14)
    assert sc.reference == (2.0, 0.125) and sc.params["re"] == 150.0
    assert sc.config.dt == pytest.approx(0.5 / 32 / 2.0, rel=1e-14)
    cav = scenes.lid_driven_cavity(re=400.0, n=8, lid_velocity=-2.0, dtype=F64)
    assert cav.config.viscosity == pytest.approx(2.0 / 400.0, rel=1e-14)
    assert cav.state.boundary.wall_velocity == (0.0, 0.0, 0.0, -2.0)


def test_kolmogorov_discrete_laminar_flow_is_steady():
    """``u = F sin(k y) / (nu (2 - 2 cos(k dx)) / dx^2 + drag)``, the laminar balance of the
    scene's forcing, drag and 5-point viscosity (``F / (nu k^2 + drag)`` as dx -> 0), stays put."""
    n, k, F, nu, drag = 16, 2, 1.0, 0.05, 0.1
    sc = scenes.kolmogorov(n=n, dtype=F64, viscosity=nu, wavenumber=k, forcing=F, drag=drag, perturbation=0.0)
    dx = sc.state.dx
    amp = F / (nu * (2 - 2 * math.cos(k * dx)) / dx ** 2 + drag)
    yu = (torch.arange(n, dtype=F64) + 0.5) * dx
    sc.state.u.copy_((amp * torch.sin(k * yu))[None, :].expand(n + 1, n))
    sc.state.v.zero_()
    u0 = sc.state.u.clone()
    solver = sc.make_solver()
    for _ in range(3):
        solver.step(sc.state)
    assert float((sc.state.u - u0).abs().max()) < 1e-12 * amp


def test_taylor_green_pressure_balances_advection_and_velocity_decays_at_two_nu():
    """``p = A^2 / 4 (cos 2x + cos 2y)`` is the pressure of ``u = A sin x cos y``: ``-dp/dx =
    u du/dx + v du/dy = A^2 sin x cos x``; and the analytic field decays as ``exp(-2 nu t)``."""
    A, nu = 1.3, 0.02
    sc = scenes.taylor_green(n=8, dtype=F64, amplitude=A, viscosity=nu)
    dx = sc.state.dx
    dpdx = (sc.state.p[1:, 0] - sc.state.p[:-1, 0]) / dx            # at x = i dx, y = yc[0]
    x = torch.arange(1, 8, dtype=F64) * dx
    exact = -A * A * 0.5 * torch.sin(2 * x) * math.sin(dx) / dx       # the centred difference of A^2/4 cos 2x
    assert float((dpdx - exact).abs().max()) < 1e-13
    u0, _ = sc.analytic(0.0)
    u1, _ = sc.analytic(3.0)
    assert float((u1 - u0 * math.exp(-2 * nu * 3.0)).abs().max()) < 1e-14


# -- a round obstacle whose mask is one cell (fails on the old code: it built and ran) -------------

def test_a_cylinder_rasterised_to_one_cell_is_refused():
    """A cylinder two cells across centred on a cell centre covers one cell centre: a square body
    of half its diameter, for which karman recorded Re 100 and cd with the nominal diameter (it
    ran; cd 0.74 after 5 steps). Refused, naming the span and the smallest n that works."""
    n = 17
    with pytest.raises(InputError) as err:
        scenes.karman(re=100, n=n, diameter=2 / n, centre_y=8.5 / n, aspect=2, dtype=F64)
    msg = str(err.value)
    assert "n=17" in msg and "spans only 1 x 1 cells" in msg and "n >= 18" in msg
    sc = scenes.karman(re=100, n=18, diameter=2 / n, centre_y=8.5 / n, aspect=2, dtype=F64)
    cols, rows = (int(sc.masks[0].any(a).sum()) for a in (1, 0))
    assert min(cols, rows) >= scenes.MIN_CELLS_PER_DIAMETER


def test_a_flow_scene_circle_rasterised_to_one_cell_is_refused():
    from lawful.fluids.scenes import Circle, flow_scene

    def build(radius):
        return flow_scene((2.0, 1.0), 20, Boundary.channel(1.0), obstacles=[Circle((0.525, 0.525), radius)],
                          viscosity=0.01, reference=(1.0, 2 * radius), dtype=F64)

    with pytest.raises(InputError) as err:
        build(0.05)                                  # two cells across, centred on cell (10, 10): one cell
    assert "spans only 1 x 1 cells" in str(err.value) and "n >= 21" in str(err.value)
    sc = build(0.0501)                               # a hair larger: 5 cells, 3 x 3
    assert int(sc.masks[0].sum()) == 5


@pytest.mark.parametrize("diameter, n", [(0.125, 16), (0.125, 18), (0.2, 10), (0.25, 8), (0.0625, 32)])
def test_the_default_placed_cylinders_keep_their_smallest_grids(diameter, n):
    """The quarter-cell offset of the default centre gives every grid with ``diameter * n >= 2`` a
    mask at least 2 x 2 cells: the smallest n of each scene is unchanged."""
    sc = scenes.karman(re=100, n=n, diameter=diameter, aspect=1, dtype=F64)
    cols, rows = (int(sc.masks[0].any(a).sum()) for a in (1, 0))
    assert min(cols, rows) >= 2

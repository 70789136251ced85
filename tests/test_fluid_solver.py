"""The MAC-grid solver, scenes, metrics and run loop: physics checks in real loops."""

import math

import pytest
import torch

from lawful.fluids import FluidState, Solver, SolverConfig, read_metrics_csv, run, scenes
from lawful.kernels.errors import InputError, LawfulError, NumericalError, ShapeError
from lawful.kernels.mac_grid import Boundary, solid_corner_mask

TOL = {torch.float32: 1e-6, torch.float64: 1e-10}


def _tg_error(n, cfl=0.25, t_end=1.0, dt=None, limiter=True):
    step = dt if dt is not None else cfl * 2 * math.pi / n
    steps = round(t_end / step)
    sc = scenes.taylor_green(n=n, dtype=torch.float64, dt=t_end / steps)
    records = run(sc, steps, solver=sc.make_solver(limiter=limiter))
    ue, ve = sc.analytic(sc.state.t)
    err = math.sqrt(float(((sc.state.u - ue) ** 2).mean() + ((sc.state.v - ve) ** 2).mean()) / 2)
    return err, records


def test_taylor_green_converges_second_order():
    """Velocity error vs the analytic decaying vortex over 32^2 -> 64^2 -> 128^2 (dt = CFL 0.25)."""
    errs = []
    for n in (32, 64, 128):
        err, records = _tg_error(n)
        errs.append(err)
        assert max(r["div_max_rel"] for r in records) <= TOL[torch.float64]
    orders = [math.log2(errs[k] / errs[k + 1]) for k in range(2)]
    assert errs[2] < 2e-4, errs
    assert orders[1] >= 1.8 and orders[0] >= 1.4, (errs, orders)


def test_taylor_green_second_order_in_space_at_small_dt():
    """Fixed small dt (0.005, t=1), MacCormack without its limiter: the spatial error is O(dx^2)
    (measured 2.0, 1.7; with the limiter, which clips the correction at the vortex extrema, ~1)."""
    errs = [_tg_error(n, t_end=1.0, dt=0.005, limiter=False)[0] for n in (32, 64, 128)]
    orders = [math.log2(errs[k] / errs[k + 1]) for k in range(2)]
    assert min(orders) >= 1.6, (errs, orders)


def test_taylor_green_energy_decay():
    """Inviscid: kinetic energy kept to 1 % (numerical dissipation of the limited MacCormack);
    viscous / inviscid energy ratio = exp(-4 nu t) to 0.5 %."""
    e0 = math.pi ** 2  # KE of the unit vortex on [0, 2pi]^2 (exact on the MAC samples too)
    inviscid = run(scenes.taylor_green(n=32, dtype=torch.float64, viscosity=0.0), 20)
    assert inviscid[-1]["kinetic_energy"] / e0 == pytest.approx(1.0, abs=1e-2)
    viscous = run(scenes.taylor_green(n=32, dtype=torch.float64, viscosity=0.05), 20)
    ratio = viscous[-1]["kinetic_energy"] / inviscid[-1]["kinetic_energy"]
    assert ratio == pytest.approx(math.exp(-4 * 0.05 * viscous[-1]["t"]), rel=5e-3)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name,kw", [("smoke_plume", dict(n=32)), ("karman", dict(n=16, re=150.0)),
                                     ("kolmogorov", dict(n=32))])
def test_divergence_after_every_projection(name, kw, dtype):
    """Walls (plume), an obstacle with inflow/outflow (Karman), periodic forcing (Kolmogorov)."""
    sc = scenes.make(name, dtype=dtype, **kw)
    records = run(sc, 25)
    assert max(r["div_max_rel"] for r in records) <= TOL[dtype]
    assert all(r["pressure_iters"] >= 1 and r["pressure_residual"] <= TOL[dtype] for r in records[1:])
    assert records[-1]["kinetic_energy"] > 0
    st = sc.state
    # fixed faces keep their values: no flow into walls or the cylinder
    solver = sc.make_solver()
    fixed_u = solver.ubc[0] == 0
    assert torch.equal(st.u[fixed_u], solver.ubc[1][fixed_u])


def test_scalar_mass_constant_in_closed_box_float32():
    """Buoyant blob in a closed no-slip box, full solver loop, float32: smoke mass constant."""
    sc = scenes.smoke_plume(n=16, source=False, dtype=torch.float32)
    m0 = float(sc.state.scalars.double().sum()) * sc.state.dx ** 2
    records = run(sc, 1000)
    masses = [r["scalar_mass"] for r in records]
    assert max(abs(m - m0) for m in masses) / m0 <= 1e-6
    assert records[-1]["max_velocity"] > 0.05  # the blob really rose and stirred the box
    assert max(r["div_max_rel"] for r in records) <= 1e-6


def test_plume_source_adds_mass_at_its_rate():
    sc = scenes.smoke_plume(n=20, source=True, source_rate=2.0, dtype=torch.float64)
    records = run(sc, 10)
    area = float(sc.sources.sum()) * sc.state.dx ** 2 / 2.0
    assert records[-1]["scalar_mass"] == pytest.approx(2.0 * area * records[-1]["t"], rel=1e-10)


def test_corrector_slot_curl_keeps_incompressibility_unconstrained_shows_divergence(tmp_path):
    sc = scenes.karman(n=16, re=100.0, dtype=torch.float64)
    solver = sc.make_solver()
    g = torch.Generator().manual_seed(0)
    calls = []

    def hard(state):
        calls.append(state.step)
        return torch.randn((state.nx + 1, state.ny + 1), generator=g, dtype=torch.float64) * 1e-3

    recs = run(sc, 5, corrector=hard, solver=solver)
    assert calls == [0, 1, 2, 3, 4]
    # the curl correction adds no divergence beyond round-off
    assert all(r["div_max_rel"] <= r["div_max_rel_projected"] * 1.01 + 1e-14 for r in recs)
    assert max(r["div_max_rel"] for r in recs) <= 1e-10
    # the correction really changed the flow, but not the walls/cylinder/inflow faces
    fixed = solver.ubc[0] == 0
    assert torch.equal(sc.state.u[fixed], solver.ubc[1][fixed])

    def soft(state):
        return (torch.randn(state.u.shape, generator=g, dtype=torch.float64) * 1e-3,
                torch.randn(state.v.shape, generator=g, dtype=torch.float64) * 1e-3)

    recs = run(sc, 3, corrector=soft, solver=solver)
    assert min(r["div_max_rel"] for r in recs) > 1e-5
    reproj = sc.make_solver(reproject_after_correction=True)
    recs = run(sc, 3, corrector=soft, solver=reproj)
    assert max(r["div_max_rel"] for r in recs) <= 1e-10


def test_mean_flow_correction_periodic_only():
    sc = scenes.taylor_green(n=16, dtype=torch.float64)
    solver = sc.make_solver()
    u0 = sc.state.u.clone()
    solver.apply_correction(sc.state, {"mean_flow": (0.25, 0.0)})
    torch.testing.assert_close(sc.state.u, u0 + 0.25)
    box = scenes.smoke_plume(n=8, dtype=torch.float64, source=False)
    with pytest.raises(InputError, match="periodic"):
        box.make_solver().apply_correction(box.state, {"mean_flow": (0.1, 0.0)})
    with pytest.raises(ShapeError):
        solver.apply_correction(sc.state, torch.zeros(3, 3, dtype=torch.float64))


def test_metrics_csv_streamed_and_plotted(tmp_path):
    sc = scenes.smoke_plume(n=20)
    csv_path, png = tmp_path / "m.csv", tmp_path / "m.png"
    seen = []

    def cb(state, rec):
        seen.append(len(read_metrics_csv(csv_path)))  # rows are on disk while the run goes

    records = run(sc, 4, csv=csv_path, plot=png, callback=cb)
    assert seen == [1, 2, 3, 4]
    rows = read_metrics_csv(csv_path)
    for key in ("div_max_rel", "div_l2", "kinetic_energy", "enstrophy", "scalar_mass", "pressure_iters",
                "pressure_residual", "wall_s"):
        assert key in records[-1] and rows[-1][key] == pytest.approx(records[-1][key])
    assert png.stat().st_size > 1000


def test_cfl_substeps_and_error():
    sc = scenes.taylor_green(n=16, dtype=torch.float64, cfl=2.5)
    rec = run(sc, 1)[0]
    assert rec["substeps"] == 3 and 2.0 < rec["cfl"] <= 2.5
    sc = scenes.taylor_green(n=16, dtype=torch.float64, cfl=20.0)
    with pytest.raises(NumericalError, match="CFL number .* needs 20 substeps"):
        run(sc, 1)


def test_nan_detection_names_step_and_cell():
    sc = scenes.taylor_green(n=16, dtype=torch.float64)

    def poisoned_force(solver, state, dt):
        solver.force_step(state, dt)
        if state.step == 2:
            state.u[5, 7] = float("nan")

    solver = Solver(sc.state, sc.config, force=poisoned_force)
    run(sc, 2, solver=solver)
    with pytest.raises(NumericalError, match=r"non-finite u .* face \[5, 7\] in step 2"):
        solver.step(sc.state)


@pytest.mark.parametrize("output", ["psi", "faces", "nan", "in_place"])
def test_corrector_blow_up_is_reported_as_such_not_as_cfl(output):
    """Issue 12: a corrector that outputs 1e30 (or NaN) on a stable flow is a corrector blow-up
    naming the step and the correction's magnitude, and the fix is not "lower dt"."""
    sc = scenes.taylor_green(n=16, dtype=torch.float64)
    solver = sc.make_solver()
    run(sc, 2, solver=solver)

    def bad(state):
        if output == "psi":
            return torch.full((state.nx + 1, state.ny + 1), 0.0, dtype=state.dtype).index_fill_(0, torch.tensor([3]), 1e30)
        if output == "faces":
            d = torch.zeros_like(state.u)
            d[4, 4] = 1e30
            return (d, torch.zeros_like(state.v))
        if output == "nan":
            d = torch.zeros_like(state.u)
            d[5, 7] = float("nan")
            return (d, torch.zeros_like(state.v))
        state.v.mul_(1e30)

    with pytest.raises(NumericalError, match=r"corrector blow-up at step 2\b.*changed a face velocity by "
                                             r"(nan|\d\.?\d*e\+\d+).*weights and its input scaling") as err:
        solver.step(sc.state, corrector=bad)
    assert "lower dt" not in str(err.value).replace("lowering dt will not help", "")
    # a flow that blows up by itself (no corrector) is still a CFL error telling to lower dt
    fast = scenes.taylor_green(n=16, dtype=torch.float64, cfl=20.0)
    with pytest.raises(NumericalError, match="CFL number .* lower dt") as err:
        run(fast, 1)
    assert "corrector" not in str(err.value)


def test_bad_input_raises_clear_errors():
    with pytest.raises(InputError, match="dx=-0.1"):
        FluidState.zeros(8, 8, -0.1)
    with pytest.raises(InputError, match="dt=-0.01"):
        SolverConfig(dt=-0.01)
    with pytest.raises(InputError, match="unknown scene 'vortex'"):
        scenes.make("vortex")
    st = FluidState.zeros(8, 8, 0.1)
    with pytest.raises(ShapeError, match=r"u has shape \(8, 8\).*\(9, 8\)"):
        FluidState(u=torch.zeros(8, 8), v=st.v, p=st.p, scalars=st.scalars, solid=st.solid, dx=0.1)
    u = st.u.clone()
    u[3, 2] = float("nan")
    with pytest.raises(InputError, match=r"non-finite.*\(3, 2\)"):
        FluidState(u=u, v=st.v, p=st.p, scalars=st.scalars, solid=st.solid, dx=0.1)
    with pytest.raises(InputError, match="advection"):
        SolverConfig(dt=0.1, advection="upwind")
    other = FluidState.zeros(16, 16, 0.1)
    solver = Solver(st, SolverConfig(dt=0.1))
    with pytest.raises(ShapeError, match="does not match"):
        solver.step(other)
    with pytest.raises(LawfulError):
        Solver(st, SolverConfig(dt=0.1, buoyancy=1.0))  # no scalar to be buoyant


def test_injected_parts_are_used():
    sc = scenes.taylor_green(n=16, dtype=torch.float64)
    used = []

    def project(solver, state, warm_start):
        used.append("project")
        return solver.project(state, warm_start)

    solver = Solver(sc.state, sc.config, project=project)
    run(sc, 2, solver=solver)
    assert used == ["project", "project"]


def test_pinned_corners_cover_walls_and_obstacle():
    sc = scenes.karman(n=16)
    m = solid_corner_mask(sc.state.boundary, sc.state.solid)
    assert m[:, 0].all() and m[:, -1].all() and m[0].all()
    assert int(m.sum()) > int(sc.state.solid.sum())
    assert isinstance(sc.state.boundary, Boundary)


@pytest.mark.parametrize("name,kw,coarse,smallest", [
    ("karman", dict(), 8, 16),                              # default cylinder D = 0.125: n=8 had 0 solid cells
    ("karman", dict(diameter=0.2, aspect=2), 9, 10),
    ("smoke_plume", dict(), 8, 17),                         # source disc D = 0.12: n=8 had an empty source
    ("kolmogorov", dict(), 8, 16),                          # sin(4y) on 8 cells is the Nyquist mode
    ("kolmogorov", dict(wavenumber=2), 6, 8),               # k=2 on 6 cells aliases
])
def test_every_scene_refuses_a_grid_without_its_geometry(name, kw, coarse, smallest):
    """Too coarse: InputError naming n, the minimum resolution and the smallest n that works; that
    n builds the geometry (a non-empty obstacle/source mask, a forcing with 4+ cells per wave)."""
    with pytest.raises(InputError, match=rf"n={coarse}\b.*at least .*n >= {smallest}\b"):
        scenes.make(name, n=coarse, **kw)
    sc = scenes.make(name, n=smallest, **kw)
    if name == "karman":
        d = kw.get("diameter", 0.125)
        assert int(sc.state.solid.sum()) >= 1 and d * smallest >= scenes.MIN_CELLS_PER_DIAMETER
        with pytest.raises(InputError, match=rf"n={smallest - 1}\b"):
            scenes.make(name, n=smallest - 1, **kw)
    elif name == "smoke_plume":
        assert int((sc.sources > 0).sum()) >= 1
        scenes.smoke_plume(n=coarse, source=False)           # the blob exists on any grid
    else:
        fu = sc.forcing[0][0]
        k = kw.get("wavenumber", 4)
        # the sampled forcing is the k-th Fourier mode, not an alias
        spec = torch.fft.rfft(fu.double()).abs()
        assert int(spec.argmax()) == k


def test_karman_reynolds_number_changes_the_flow_on_the_smallest_grid():
    """The reported bug: with no cylinder, Re had no effect. On the smallest accepted grid the
    cylinder exists and two Reynolds numbers give different flows after a few steps."""
    a, b = scenes.karman(n=16, re=50.0, dtype=torch.float64), scenes.karman(n=16, re=400.0, dtype=torch.float64)
    run(a, 5)
    run(b, 5)
    assert float((a.state.u - b.state.u).abs().max()) > 1e-4


def _bare_solver(sc):
    """A solver whose parts do nothing (a step is metrics + bookkeeping): isolates run()'s memory."""
    from lawful.kernels.mac_pressure import ProjectionStats

    def noop(solver, state, dt):
        return None

    return Solver(sc.state, sc.config, advect=noop, force=noop,
                  project=lambda solver, state, warm: ProjectionStats(0, 0.0, 0.0, 0.0, True))


def _run_memory(steps, keep):
    """(bytes still held by lawful.fluids after run(), peak bytes during it) for ``steps`` steps."""
    import gc
    import tracemalloc

    sc = scenes.taylor_green(n=4, dtype=torch.float64)
    solver = _bare_solver(sc)
    run(sc, 5, solver=solver, keep=keep)
    gc.collect()
    only = [tracemalloc.Filter(True, "*/fluids/*")]
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot().filter_traces(only)
        base = tracemalloc.get_traced_memory()[0]
        records = run(sc, steps, solver=solver, keep=keep)
        peak = tracemalloc.get_traced_memory()[1] - base
        gc.collect()
        after = tracemalloc.take_snapshot().filter_traces(only)
    finally:
        tracemalloc.stop()
    held = sum(s.size_diff for s in after.compare_to(before, "filename"))
    return held, peak, records


def test_run_memory_is_bounded_in_steps():
    """Issue 12 (long runs): run() holds a bounded window of records; the memory it keeps and its
    peak do not grow with the number of steps (keep="all", the old behaviour, is the positive
    control: ~0.7 KB per step)."""
    held_500, peak_500, r500 = _run_memory(500, 10)
    held_2000, peak_2000, r2000 = _run_memory(2000, 10)
    all_500, _, _ = _run_memory(500, "all")
    all_2000, _, rall = _run_memory(2000, "all")
    assert len(r2000) == 10 and r2000.total == 2000 and r2000.dropped == 1990
    assert r2000[-1]["step"] == r2000.total + 5 and [r["step"] for r in r2000] == list(range(1996, 2006))
    assert held_2000 <= held_500 + 4096, (held_500, held_2000)
    assert peak_2000 <= peak_500 + 16384, (peak_500, peak_2000)
    assert all_2000 - all_500 >= 1500 * 300, (all_500, all_2000)          # the control does grow
    assert len(rall) == 2000


def test_run_records_default_window_last_and_whole_run_extrema(tmp_path):
    sc = scenes.taylor_green(n=4, dtype=torch.float64)
    solver = _bare_solver(sc)
    from lawful.fluids.records import DEFAULT_KEEP

    records = run(sc, DEFAULT_KEEP + 50, solver=solver, csv=tmp_path / "m.csv")
    assert len(records) == DEFAULT_KEEP and records.total == DEFAULT_KEEP + 50
    assert records[0]["step"] == 51 and records[-1]["step"] == DEFAULT_KEEP + 50
    assert len(read_metrics_csv(tmp_path / "m.csv")) == DEFAULT_KEEP + 50     # every step on disk
    assert records.max("step") == DEFAULT_KEEP + 50 and records.min("step") == 1  # over dropped steps too
    last = run(sc, 3, solver=solver, keep="last")
    assert len(last) == 1 and last[-1]["step"] == DEFAULT_KEEP + 53 and last.max("t") == last[-1]["t"]
    with pytest.raises(IndexError, match="1 kept of 3 steps"):
        last[1]
    with pytest.raises(InputError, match="keep=0"):
        run(sc, 1, solver=solver, keep=0)
    with pytest.raises(InputError, match="'nope'"):
        last.max("nope")

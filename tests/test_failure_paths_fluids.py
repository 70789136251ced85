"""Failure paths of lawful.fluids (issue 12): a table of bad inputs to the scenes, the solver and
its config, ``run``, the correctors and ``load_corrector``. Each case asserts the error class,
that the message names the bad value, and that nothing already written was lost (a previous
run's metrics CSV and every other file in the output folder are unchanged, and no file appears)."""

import math
from pathlib import Path

import pytest
import torch

from lawful.fluids import FluidState, Solver, SolverConfig, run, scenes
from lawful.fluids.correctors import DivergenceFreeCorrector, UnconstrainedCorrector, load_corrector
from lawful.kernels.errors import InputError, ModelFileError, NumericalError, ShapeError

F64 = torch.float64
OLD = "step,kinetic_energy\n1,0.5\n2,0.25\n"          # a previous run's metrics, to be kept


def _tg():
    return scenes.taylor_green(n=8, dtype=F64)


def _run_into_old_csv(out, **kw):
    """run() on a fresh small vortex, streaming to the previous run's CSV."""
    sc = _tg()
    return run(sc, kw.pop("steps", 3), csv=out / "metrics.csv", **kw)


def _source_under_a_cylinder():
    """A unit source on a 0.5 x 0.5 square half under a cylinder (fluid audit F10: half the stated
    release silently vanished)."""
    sc = scenes.flow_scene((2.0, 1.0), 32, scenes.Boundary.channel(1.0), obstacles=[scenes.Circle((1.0, 0.5), 0.25)],
                           viscosity=0.01, scalar_names=("c",), dtype=F64)
    st = sc.state
    x = (torch.arange(st.nx, dtype=F64) + 0.5) * st.dx
    y = (torch.arange(st.ny, dtype=F64) + 0.5) * st.dx
    src = ((x[:, None] - 0.875).abs() < 0.25) & ((y[None, :] - 0.5).abs() < 0.25)
    return Solver(st, sc.config, sources=src[None].to(F64))


def _psi_of_wrong_shape(state):
    return torch.zeros(state.nx, state.ny, dtype=state.dtype)        # corners need (nx+1, ny+1)


def _nan_corrector(state):
    d = torch.zeros_like(state.u)
    d[3, 2] = math.nan
    return d, torch.zeros_like(state.v)


def _foreign_model_file(out):
    from lawful.kernels.modelfile import save_model_file

    path = out / "potential.lawful"
    save_model_file(path, kind="NeuralPotential", config={}, tensors={"w": torch.zeros(2)})
    return load_corrector(path)


CASES = [
    # -- scenes: grids without their geometry, bad physical parameters, bad dtype ------------------
    ("karman n=8: no cylinder cell", lambda out: scenes.karman(n=8), InputError, ["n=8", "n >= 16"]),
    ("karman re<0", lambda out: scenes.karman(n=16, re=-5.0), InputError, ["re=-5.0"]),
    ("karman re=nan", lambda out: scenes.karman(n=16, re=math.nan), InputError, ["re=nan"]),
    ("karman diameter>1", lambda out: scenes.karman(n=16, diameter=1.5), InputError, ["diameter=1.5"]),
    ("karman inflow<0", lambda out: scenes.karman(n=16, inflow=-1.0), InputError, ["inflow=-1.0", "positive"]),
    ("kolmogorov aliased forcing", lambda out: scenes.kolmogorov(n=12), InputError, ["n=12", "n >= 16"]),
    ("plume empty source", lambda out: scenes.smoke_plume(n=8), InputError, ["n=8", "n >= 17"]),
    ("taylor_green n=3.5", lambda out: scenes.taylor_green(n=3.5), InputError, ["n=3.5"]),
    ("taylor_green int dtype", lambda out: scenes.taylor_green(n=8, dtype=torch.int32), InputError, ["int32"]),
    ("taylor_green amplitude 0", lambda out: scenes.taylor_green(n=8, amplitude=0.0), InputError,
     ["amplitude=0.0", "dt="]),       # was a bare ZeroDivisionError
    ("taylor_green amplitude nan", lambda out: scenes.taylor_green(n=8, amplitude=float("nan")), InputError,
     ["amplitude=nan"]),
    ("unknown scene", lambda out: scenes.make("vortex"), InputError, ["'vortex'"]),
    # -- SolverConfig / Solver ----------------------------------------------------------------
    ("dt=0", lambda out: SolverConfig(dt=0.0), InputError, ["dt=0.0"]),
    ("pressure_max_iter=0", lambda out: SolverConfig(dt=0.1, pressure_max_iter=0), InputError,
     ["pressure_max_iter=0"]),
    ("pressure_rtol=2", lambda out: SolverConfig(dt=0.1, pressure_rtol=2.0), InputError, ["pressure_rtol=2.0"]),
    ("viscosity<0", lambda out: SolverConfig(dt=0.1, viscosity=-1e-3), InputError, ["viscosity=-0.001"]),
    ("config not a SolverConfig", lambda out: Solver(_tg().state, {"dt": 0.1}), InputError, ["dict"]),
    ("forcing with NaN", lambda out: Solver(_tg().state, SolverConfig(dt=0.1),
                                            forcing=(torch.full((9, 8), math.nan, dtype=F64),
                                                     torch.zeros(8, 9, dtype=F64))), InputError, ["nan"]),
    ("periodic forcing whose duplicate face differs", lambda out: Solver(_tg().state, SolverConfig(dt=0.1),
        forcing=(torch.cat([torch.ones(8, 8, dtype=F64), torch.zeros(1, 8, dtype=F64)]), torch.zeros(8, 9, dtype=F64))),
     InputError, ["forcing[0]", "u[nx]", "u[0]"]),
    ("two obstacles named alike", lambda out: scenes.flow_scene(
        (2.0, 1.0), 16, obstacles=[scenes.Circle((0.5, 0.5), 0.2, name="cyl"), scenes.Circle((1.5, 0.5), 0.2, name="cyl")],
        viscosity=0.01), InputError, ["obstacles 0 and 1", "drag_cyl"]),
    ("an obstacle named like another's index", lambda out: scenes.flow_scene(
        (2.0, 1.0), 16, obstacles=[scenes.Circle((0.5, 0.5), 0.2), scenes.Circle((1.5, 0.5), 0.2, name="0")],
        viscosity=0.01), InputError, ["obstacles 0 and 1", "drag_0"]),
    # -- scene construction the solver could not honour (scene audit: each ran with exit 0) ------
    ("inflow without an outflow side", lambda out: scenes.flow_scene(
        (2.0, 1.0), 16, scenes.Boundary("inflow", "no_slip", "no_slip", "no_slip", inflow_velocity=1.0),
        viscosity=0.01), InputError, ["x_lo is an inflow", "no side is 'outflow'"]),
    ("two inflows facing each other", lambda out: scenes.flow_scene(
        (2.0, 1.0), 16, scenes.Boundary("inflow", "inflow", "free_slip", "free_slip", inflow_velocity=1.0),
        viscosity=0.01), InputError, ["x_lo, x_hi are inflows"]),
    ("inflow without outflow, solver on a state", lambda out: Solver(FluidState.zeros(
        8, 8, 0.125, scenes.Boundary("inflow", "no_slip", "periodic", "periodic", inflow_velocity=1.0), dtype=F64),
        SolverConfig(dt=0.01)), InputError, ["no side is 'outflow'"]),
    ("negative inflow", lambda out: scenes.flow_scene(
        (2.0, 1.0), 16, scenes.Boundary.channel(-1.0), viscosity=0.01), InputError, ["inflow_velocity=-1 < 0"]),
    ("parabolic inflow behind a step", lambda out: scenes.flow_scene(
        (3.0, 1.0), 12, scenes.Boundary.channel(1.0, "no_slip", "parabolic"),
        obstacles=[scenes.Box((0.0, 0.0), (1.0, 0.5))], viscosity=0.01), InputError,
     ["inflow_profile='parabolic' on x_lo", "6 of its cells"]),
    ("an obstacle across the channel", lambda out: scenes.flow_scene(
        (3.0, 1.0), 16, scenes.Boundary.channel(1.0), obstacles=[scenes.Box((1.0, -0.1), (1.25, 1.1))],
        viscosity=0.01), InputError, ["x_lo (rows 0-15", "no path of fluid cells to an outflow side"]),
    ("part of the inlet walled into a dead end", lambda out: scenes.flow_scene(
        (3.0, 1.0), 16, scenes.Boundary.channel(1.0), obstacles=[
            scenes.Box((-0.1, 0.5), (1.0, 0.5625)), scenes.Box((0.9375, 0.5625), (1.0, 1.1))],
        viscosity=0.01), InputError, ["x_lo (rows 9-15", "no path of fluid cells"]),
    ("a scalar source on an obstacle", lambda out: _source_under_a_cylinder(), InputError,
     ["non-zero on", "solid cell(s)", "% of its stated rate", "Move the source off the obstacles"]),
    ("overlapping obstacles", lambda out: scenes.flow_scene(
        (2.0, 1.0), 16, scenes.Boundary.channel(1.0), obstacles=[
            scenes.Box((0.6, 0.3), (0.8, 0.7)), scenes.Box((0.4, 0.6), (1.0, 0.7))], viscosity=0.01), InputError,
     ["obstacles 0 and 1 overlap"]),
    ("obstacle at a periodic seam", lambda out: scenes.flow_scene(
        (2.0, 1.0), 16, scenes.Boundary("periodic", "periodic", "no_slip", "no_slip"),
        obstacles=[scenes.Circle((0.05, 0.5), 0.15)], viscosity=0.01, dt=0.01), InputError,
     ["obstacle 0", "periodic seam of x"]),
    ("misspelled config override", lambda out: _tg().make_solver(pressure_maxiter=5), InputError,
     ["pressure_maxiter"]),
    ("state of another grid", lambda out: _tg().make_solver().step(FluidState.zeros(4, 4, 0.5, dtype=F64)),
     ShapeError, ["4x4"]),
    # -- run(): bad steps/keep, bad CSV paths (checked before the first step), no clobbering ---------
    ("steps=-1", lambda out: _run_into_old_csv(out, steps=-1), InputError, ["steps=-1"]),
    ("steps=2.5", lambda out: _run_into_old_csv(out, steps=2.5), InputError, ["steps=2.5"]),
    ("keep=0", lambda out: _run_into_old_csv(out, keep=0), InputError, ["keep=0"]),
    ("csv is a directory", lambda out: run(_tg(), 3, csv=out), InputError, ["is a directory"]),
    ("csv unwritable", lambda out: run(_tg(), 3, csv="/proc/lawful-nope/metrics.csv"), InputError,
     ["/proc/lawful-nope/metrics.csv"]),
    ("plot is a directory", lambda out: run(_tg(), 3, csv=out / "metrics.csv", plot=out), InputError,
     ["plot", "is a directory"]),
    ("corrector not callable", lambda out: _run_into_old_csv(out, corrector="random"), InputError, ["str"]),
    # -- correctors ---------------------------------------------------------------------------
    ("psi of the wrong shape", lambda out: _run_into_old_csv(out, corrector=_psi_of_wrong_shape), ShapeError,
     ["(8, 8)", "(9, 9)"]),
    ("corrector for another scene", lambda out: _run_into_old_csv(out, corrector=DivergenceFreeCorrector(
        n_scalars=2, dtype=F64)), ShapeError, ["n_scalars=2", "(0, 8, 8)"]),
    ("corrector outputs NaN", lambda out: _run_into_old_csv(out, corrector=_nan_corrector), NumericalError,
     ["corrector blow-up", "nan"]),
    ("corrector int dtype", lambda out: UnconstrainedCorrector(dtype=torch.int64), InputError, ["torch.int64"]),
    # -- load_corrector -----------------------------------------------------------------------
    ("load missing file", lambda out: load_corrector(out / "missing.lawful"), ModelFileError, ["missing.lawful"]),
    ("load a directory", lambda out: load_corrector(out), ModelFileError, ["directory"]),
    ("load a foreign kind", _foreign_model_file, ModelFileError, ["NeuralPotential"]),
]


def _snapshot(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("make,error,names", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_a_clear_error_and_loses_nothing(tmp_path, make, error, names):
    out = tmp_path / "out"
    out.mkdir()
    (out / "metrics.csv").write_text(OLD)
    (out / "notes.txt").write_text("kept")
    before = _snapshot(out)
    with pytest.raises(error) as info:
        make(out)
    msg = str(info.value)
    for name in names:
        assert name in msg, (name, msg)
    after = _snapshot(out)
    after.pop(Path("potential.lawful"), None)                         # the foreign file that case wrote
    assert after == before                                            # nothing lost, nothing half-written
    assert (out / "metrics.csv").read_text() == OLD


def test_the_table_is_large_enough():
    assert len(CASES) >= 15

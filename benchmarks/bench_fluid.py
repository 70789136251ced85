"""Fluid solver benchmark: lawful's MAC-grid solver vs Taichi's own stable_fluid example.

Side by side in one run on this machine (same Taichi, same CPU):

* Taichi's ``examples/simulation/stable_fluid.py`` (shipped inside the taichi package; imported,
  not copied, in a subprocess with ``ti.init`` forced to the CPU and no GUI): its ``step`` at
  512^2 (collocated grid, 500 Jacobi sweeps) driven by a constant impulse, then steps/s and its
  final relative divergence ``max|div u| dx / max|u|`` measured with its own divergence kernel;
* lawful at 512^2 (Kolmogorov flow from a random divergence-free start, velocities O(1); and the
  buoyant smoke plume in a closed box), float32, MGPCG to rtol 1e-6: steps/s and final relative
  divergence (its MAC divergence);
* both on comparable forcing (:func:`comparable_forcing`): a closed 512^2 box from rest driven by
  stable_fluid's own Gaussian impulse (strength lowered so lawful needs no substeps, no dye),
  same dt and units; steps/s, divergence, max velocity and kinetic energy of each, and what
  differs between the two methods;
* lawful's steps/s at 128^2, 256^2, 512^2 and the fitted growth exponent (cost ~ N^a per step
  for N cells);
* a closed-box float32 run of 10^4 full solver steps (16^2): passive-scalar mass drift;
* Taylor-Green convergence: velocity error (RMS over the faces, each periodic face once) vs the
  analytic solution at t=1 over 32^2, 64^2, 128^2 (float64, dt at CFL 0.25, and a fixed small
  dt) and the observed orders.

* the speed table (issue 15): the machine's streaming bandwidth measured in the same run (a large
  float32 array copy), then per grid 128^2 .. 1024^2 (Kolmogorov, float32): Taichi kernel launches
  per step (:func:`lawful.fluids.profiling.count_launches`), ms per step (medians over
  ``SPEED_ROUNDS`` blocks of steps, each block's figures kept), the Python/launch
  overhead share, estimated (per-launch cost measured on a 16^2 grid, where the arithmetic is
  small, times the launches: an upper bound, since the 16^2 step's multigrid work counts as
  overhead) and measured (``outside_kernels_share``: the share of the step's wall time spent
  outside Taichi's native kernel calls, i.e. Python, argument handling and torch reductions),
  and the ratio of the step time to a memory-traffic lower bound (the
  bytes model is written into the JSON), beside the ceiling Taichi's own code reaches on the
  simplest pass over a grid of that size (:func:`taichi_one_pass`: ``y = a x``, serialized and
  parallel loops) and the ratio with that ceiling taken out; the corrected step (a random-init
  DivergenceFreeCorrector) over the plain step at 128^2;
* a projection anchor: one Poisson solve of the Kármán channel at 128^2 (the same grid,
  boundaries -- Neumann walls/obstacle/inflow, Dirichlet outflow --, right-hand side and relative
  L2 residual) by lawful's MGPCG, PyAMG smoothed aggregation (CG-accelerated) and SciPy CG with
  an incomplete-LU preconditioner (``pip install lawful[bench]``).

Writes ``benchmarks/results/bench_fluid.json`` and, from the same run, the speed table and the
anchor to ``bench_fluid_speed.json`` and the compile times to ``bench_fluid_compile.json``
(``--speed-only``: only the speed table and anchor, to ``bench_fluid_speed.json``;
``--taylor-green-only``: the four-variant Taylor-Green study to ``bench_fluid_taylor_green.json``,
not a committed result; ``--compile-only``: a new user's first step, compiling every kernel with
an empty kernel cache in a fresh process, with Taichi's control-flow-graph passes off (lawful's
runtime) and on, to ``bench_fluid_compile.json``). Run: ``python benchmarks/bench_fluid.py [--quick]``.
``LAWFUL_BENCH_TINY=1`` (CI smoke, not a result): 16^2-64^2 grids in place of 128^2-512^2 (the keys
keep their names), one stable_fluid step, 20 closed-box steps, Taylor-Green on 8^2-32^2.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from lawful.integrations.benchmarking import quick_requested, tiny_requested

_TAICHI_DRIVER = r"""
import importlib.util, json, sys, time
import numpy as np
import taichi as ti
_init = ti.init
def _cpu_init(*a, **k):
    k["arch"] = ti.cpu
    k.setdefault("log_level", ti.WARN)
    return _init(*a, **k)
ti.init = _cpu_init
sys.argv = ["stable_fluid"]
path = sys.argv_path if hasattr(sys, "argv_path") else None
spec = importlib.util.spec_from_file_location("stable_fluid", PATH)
sf = importlib.util.module_from_spec(spec)
spec.loader.exec_module(sf)
if STRENGTH is not None:
    sf.f_strength = STRENGTH             # read when its kernels compile, at the first step
res = sf.res
mouse = np.zeros(8, dtype=np.float32)
mouse[0], mouse[1] = 1.0, 0.0            # impulse direction
mouse[2], mouse[3] = res * 0.3, res * 0.5  # impulse position (cells)
mouse[4:7] = DYE                         # dye colour (0: no dye, so no dye-driven gravity either)
for _ in range(WARM):
    sf.step(mouse)
ti.sync()
t0 = time.perf_counter()
for _ in range(STEPS):
    sf.step(mouse)
ti.sync()
wall = time.perf_counter() - t0
sf.divergence(sf.velocities_pair.cur)
div = np.abs(sf.velocity_divs.to_numpy()).max()
velf = sf.velocities_pair.cur.to_numpy()
vel = np.abs(velf).max()
print(json.dumps({"res": res, "steps": STEPS, "wall_s": wall, "steps_per_s": STEPS / wall,
                  "div_max_rel": float(div / vel), "max_velocity": float(vel),
                  "kinetic_energy": float(0.5 * (velf.astype(np.float64) ** 2).sum()),
                  "jacobi_iters": sf.p_jacobi_iters, "f_strength": float(sf.f_strength), "dt": float(sf.dt),
                  "force_radius": float(sf.force_radius)}))
"""


def stable_fluid_path() -> Path:
    import taichi

    path = Path(taichi.__file__).parent / "examples" / "simulation" / "stable_fluid.py"
    if not path.exists():
        raise FileNotFoundError(f"Taichi's stable_fluid example is not at {path}")
    return path


def run_taichi_example(steps: int, warm: int, strength: float | None = None, dye: float = 1.0) -> dict:
    """Taichi's stable_fluid at 512^2 in a subprocess: ``steps`` timed steps after ``warm``, its
    constant mouse impulse (``strength``: its ``f_strength``, default its own 1e4; ``dye``: the
    dye colour injected, whose density also drives its gravity term)."""
    code = (_TAICHI_DRIVER.replace("PATH", repr(str(stable_fluid_path()))).replace("WARM", str(warm))
            .replace("STEPS", str(steps)).replace("STRENGTH", repr(strength)).replace("DYE", repr(float(dye))))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=1800)
    if out.returncode != 0:
        raise RuntimeError(f"stable_fluid subprocess failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_lawful(n: int, steps: int, warm: int, dtype=torch.float32, scene: str = "kolmogorov",
               advection: str = "maccormack") -> dict:
    from lawful.fluids import scenes
    from lawful.fluids.metrics import divergence_metrics

    sc = scenes.make(scene, n=n, dtype=dtype)
    solver = sc.make_solver(advection=advection)
    for _ in range(warm):
        solver.step(sc.state)
    iters = []
    t0 = time.perf_counter()
    for _ in range(steps):
        iters.append(solver.step(sc.state)["pressure_iters"])
    wall = time.perf_counter() - t0
    div_max, div_l2 = divergence_metrics(sc.state)
    return {"scene": scene, "advection": advection, "n": n, "steps": steps, "wall_s": wall, "steps_per_s": steps / wall, "div_max_rel": div_max,
            "div_l2": div_l2, "mean_pressure_iters": sum(iters) / len(iters),
            "max_velocity": float(max(sc.state.u.abs().max(), sc.state.v.abs().max()))}


#: the comparable-forcing comparison: stable_fluid's impulse with its strength lowered so that a
#: 512^2 run stays below one cell per step for lawful (stable_fluid's own 1e4 moves the fluid ~9
#: cells in a step; semi-Lagrangian + Jacobi does not mind, a CFL-substepping solver would need
#: ~10 substeps), no dye (its dye-driven gravity off), from rest
COMPARABLE = dict(strength=50.0, warm=3)


def comparable_forcing(steps: int, tiny: bool = False) -> dict:
    """stable_fluid and lawful on the same problem: a closed 512^2 box (dx = 1 cell, stable_fluid's
    units) from rest, inviscid, dt = 0.03, driven by stable_fluid's Gaussian impulse
    ``f_strength exp(-d^2 / force_radius)`` along +x at (0.3, 0.5) of the box, ``f_strength`` =
    COMPARABLE's, no dye. Both run ``warm + steps`` steps; steps/s of the timed ones, relative
    divergence, max velocity and kinetic energy ``sum |u|^2 / 2`` (cells, per unit density) at the end."""
    from lawful.fluids.metrics import divergence_metrics
    from lawful.fluids.scenes import Scene
    from lawful.fluids.solver import SolverConfig
    from lawful.fluids.state import FluidState
    from lawful.kernels.mac_grid import Boundary

    theirs = run_taichi_example(steps, COMPARABLE["warm"], strength=COMPARABLE["strength"], dye=0.0)
    n = 16 if tiny else theirs["res"]
    f0, radius, dt = theirs["f_strength"], theirs["force_radius"] * (n / theirs["res"]) ** 2, theirs["dt"]
    ox, oy = 0.3 * n, 0.5 * n
    xu = torch.arange(n + 1, dtype=torch.float64)[:, None]
    yu = torch.arange(n, dtype=torch.float64)[None, :] + 0.5
    fu = (f0 * torch.exp(-((xu - ox) ** 2 + (yu - oy) ** 2) / radius)).float()
    fv = torch.zeros((n, n + 1), dtype=torch.float32)
    state = FluidState.zeros(n, n, dx=1.0, boundary=Boundary.box("free_slip"), dtype=torch.float32)
    scene = Scene("stable_fluid_impulse", state, SolverConfig(dt=dt), forcing=(fu, fv))
    solver = scene.make_solver()
    for _ in range(COMPARABLE["warm"]):
        solver.step(state)
    t0 = time.perf_counter()
    for _ in range(steps):
        rec = solver.step(state)
    wall = time.perf_counter() - t0
    div_max, _ = divergence_metrics(state)
    ke = 0.5 * float((state.u.double() ** 2).sum() + (state.v.double() ** 2).sum())
    ours = {"n": n, "steps": steps, "wall_s": wall, "steps_per_s": steps / wall, "div_max_rel": div_max,
            "max_velocity": float(max(state.u.abs().max(), state.v.abs().max())), "kinetic_energy": ke,
            "pressure_iters_last": rec["pressure_iters"], "substeps_last": rec.get("substeps")}
    return {"stable_fluid": theirs, "lawful": ours, "speed_ratio": ours["steps_per_s"] / theirs["steps_per_s"],
            "kinetic_energy_ratio": ke / theirs["kinetic_energy"] if theirs["kinetic_energy"] else None,
            "setup": {**COMPARABLE, "dt": dt, "box": "closed; lawful free-slip walls, stable_fluid clamped "
                      "sampling and Neumann pressure", "start": "rest", "viscosity": 0.0},
            "differs": "stable_fluid: collocated grid, semi-Lagrangian advection (RK3 trace) of velocity and 3 dye "
                       "channels, 500 Jacobi sweeps (no tolerance), float32 fields; lawful: MAC grid, MacCormack "
                       "velocity with limiter and CFL substeps, no scalars here, float64 MGPCG to relative "
                       "divergence 1e-6, a pressure predictor; the force is sampled at cell centres there and at "
                       "u faces here"}


def closed_box_mass(steps: int, n: int = 16) -> dict:
    from lawful.fluids import scenes
    from lawful.fluids.metrics import divergence_metrics

    sc = scenes.smoke_plume(n=n, source=False, dtype=torch.float32)
    solver = sc.make_solver()
    m0 = float(sc.state.scalars.double().sum())
    drift, div = 0.0, 0.0
    t0 = time.perf_counter()
    for k in range(steps):
        solver.step(sc.state)
        if k % 50 == 0 or k == steps - 1:
            drift = max(drift, abs(float(sc.state.scalars.double().sum()) - m0) / m0)
            div = max(div, divergence_metrics(sc.state)[0])
    return {"n": n, "steps": steps, "dtype": "float32", "max_relative_mass_drift": drift,
            "max_div_max_rel_sampled": div, "sampled_every_steps": 50, "wall_s": time.perf_counter() - t0}


def taylor_green_orders(cfl: float | None = 0.25, dt: float | None = None, limiter: bool = True,
                        ns=(32, 64, 128)) -> dict:
    from lawful.fluids import run, scenes

    errs = []
    for n in ns:
        step = dt if dt is not None else cfl * 2 * math.pi / n
        steps = round(1.0 / step)
        sc = scenes.taylor_green(n=n, dtype=torch.float64, dt=1.0 / steps)
        run(sc, steps, solver=sc.make_solver(limiter=limiter))
        ue, ve = sc.analytic(sc.state.t)
        du, dv = sc.state.u - ue, sc.state.v - ve
        px, py = sc.state.boundary.periodic_axes   # each periodic face once (u[n] is u[0]: +1.6 % at n = 32)
        du, dv = (du[:-1] if px else du), (dv[:, :-1] if py else dv)
        errs.append(math.sqrt(float((du ** 2).mean() + (dv ** 2).mean()) / 2))
    return {"n": list(ns), "dtype": "float64", "cfl": cfl, "dt": dt, "limiter": limiter, "rms_velocity_error_t1": errs,
            "observed_orders": [math.log2(errs[k] / errs[k + 1]) for k in range(2)]}


def stream_bandwidth(mbytes: int = 256, repeat: int = 5, threads=None) -> dict:
    """Streaming bandwidth of this machine: best of ``repeat`` copies of a ``mbytes`` float32 array
    (bytes read + bytes written over the time) with each torch thread count in ``threads``
    (default: 1 and as many as Taichi's CPU backend uses, one per core); ``gbytes_per_s`` is the
    best of them. The solver runs on Taichi's threads, so a one-thread copy understated the
    bandwidth it can draw on and flattered the ratio to the bound (about 92x for 100-109x at 512^2)."""
    import os

    n = mbytes * 2 ** 20 // 4
    a = torch.ones(n, dtype=torch.float32)
    b = torch.empty_like(a)
    counts = sorted(set(threads or (1, os.cpu_count() or 1)))
    before = torch.get_num_threads()
    by_threads = {}
    try:
        for t in counts:
            torch.set_num_threads(t)
            b.copy_(a)
            best = float("inf")
            for _ in range(repeat):
                t0 = time.perf_counter()
                b.copy_(a)
                best = min(best, time.perf_counter() - t0)
            by_threads[str(t)] = 2 * 4 * n / best / 1e9
    finally:
        torch.set_num_threads(before)
    top = max(by_threads, key=by_threads.get)
    return {"array_mbytes": mbytes, "gbytes_per_s": by_threads[top], "threads": int(top),
            "gbytes_per_s_by_threads": by_threads,
            "method": f"torch copy_ of a float32 array, read + write bytes, best of {repeat}, with "
                      f"{' and '.join(map(str, counts))} threads; the bound uses the best"}


_ONE_PASS_KERNELS = None


def _one_pass_kernels():
    """Two Taichi kernels making the simplest pass over a float32 2D array, ``y = a x``: its loops
    serialized on the calling thread (as lawful's kernels run them on grids up to
    :func:`~lawful.kernels.mac_grid.serial_cells`) and parallel over Taichi's CPU threads. Both
    through :func:`~lawful.kernels.fast_launch.fast_kernel`, as lawful's kernels are launched."""
    global _ONE_PASS_KERNELS
    if _ONE_PASS_KERNELS is None:
        from lawful.kernels.fast_launch import fast_kernel
        from lawful.kernels.runtime import ensure_taichi

        ensure_taichi()
        ti = __import__("taichi")
        A2 = ti.types.ndarray(dtype=ti.f32, ndim=2)

        def scale_serialized(x, y, a):
            ti.loop_config(serialize=True)
            for i in range(x.shape[0]):
                for j in range(x.shape[1]):
                    y[i, j] = a * x[i, j]

        def scale_parallel(x, y, a):
            for i in range(x.shape[0]):
                for j in range(x.shape[1]):
                    y[i, j] = a * x[i, j]

        kernels = {}
        for name, body in (("serialized", scale_serialized), ("parallel", scale_parallel)):
            # the argument types as objects (this module's annotations are strings, which Taichi
            # cannot read)
            body.__annotations__ = {"x": A2, "y": A2, "a": ti.f32}
            kernels[name] = fast_kernel(ti.kernel(body))
        _ONE_PASS_KERNELS = kernels
    return _ONE_PASS_KERNELS


def taichi_one_pass(sizes, repeat: int = 5, block_s: float = 0.02) -> dict:
    """What Taichi's CPU code reaches on one pass of the simplest kernel, ``y = a x`` over an
    ``n x n`` float32 array (4 bytes read and 4 written per cell), per grid ``n`` of ``sizes``:
    GB/s of the serialized and the parallel loop (best of ``repeat`` blocks of launches about
    ``block_s`` long) and the best of the two. The ceiling the solver's kernels stand under: a
    step's ratio to the stream bound cannot fall below the bound's bandwidth over this one (a
    step makes several such passes, each doing more per cell). Raises ``RuntimeError`` if a
    kernel did not compute ``a x`` (a pass that skipped its work would flatter the ceiling)."""
    kernels = _one_pass_kernels()
    out = {}
    for n in sizes:
        x = torch.rand(n, n, dtype=torch.float32)
        row = {}
        for name, kernel in kernels.items():
            y = torch.zeros_like(x)
            kernel(x, y, 0.5)
            t0 = time.perf_counter()
            kernel(x, y, 0.5)
            once = max(time.perf_counter() - t0, 1e-7)
            if not torch.equal(y, 0.5 * x):
                raise RuntimeError(f"the {name} one-pass kernel at {n}^2 did not compute y = 0.5 x")
            k = max(1, min(1000, int(block_s / once)))
            best = float("inf")
            for _ in range(repeat):
                t0 = time.perf_counter()
                for _ in range(k):
                    kernel(x, y, 0.5)
                best = min(best, (time.perf_counter() - t0) / k)
            row[f"{name}_gbytes_per_s"] = 8 * n * n / best / 1e9
        top = max(kernels, key=lambda name: row[f"{name}_gbytes_per_s"])
        row["best_gbytes_per_s"], row["best_loop"] = row[f"{top}_gbytes_per_s"], top
        out[str(n)] = row
    return out


def step_traffic_bytes(state, cg_iterations: float) -> dict:
    """A lower bound on the bytes one solver step must move: every state field (u, v, p, scalars)
    read once and written once, plus for each CG iteration the three float64 vectors CG cannot do
    without (solution, residual, search direction) read and written once. Everything else the
    step does (the V-cycle, the advection's stencils, viscosity, the fixed-face reset) is extra."""
    s = state.u.element_size()
    cells = state.nx * state.ny
    state_b = 2 * s * (state.u.numel() + state.v.numel() + state.p.numel() + state.scalars.numel())
    cg_b = cg_iterations * 3 * 2 * 8 * cells
    return {"state_rw_bytes": state_b, "cg_vector_bytes": cg_b, "total_bytes": state_b + cg_b,
            "model": "u, v, p, scalars read+written once (state dtype) + per CG iteration x, r, p read+written "
                     "once (float64)"}


#: Rounds of alternating plain / corrected timing blocks for the corrected-step ratio.
CORRECTED_ROUNDS = 5
#: Timing blocks per grid of the speed table (its ms per step and time-outside-kernels share are
#: the medians over the blocks; every block's figures are kept beside them).
SPEED_ROUNDS = 5


def _timed_steps(solver, state, steps, corrector=None):
    from lawful.fluids.profiling import count_launches

    iters = []
    with count_launches(timed=True) as c:
        t0 = time.perf_counter()
        for _ in range(steps):
            iters.append(solver.step(state, corrector)["pressure_iters"])
        wall = time.perf_counter() - t0
    by_kernel = {name: {"launches": n / steps, "ms": 1e3 * c.kernel_s_by_kernel.get(name, 0.0) / steps}
                 for name, n in c.by_kernel.items()}
    return wall / steps, c.launches / steps, sum(iters) / len(iters), by_kernel, 1.0 - c.kernel_s / wall


def per_launch_cost(solver, state, steps: int = 50, rounds: int = SPEED_ROUNDS) -> tuple:
    """Seconds per kernel launch of ``solver``'s step (step time / launches per step): the median
    over ``rounds`` timed blocks of ``steps`` steps, after one discarded block, and every kept
    block's figure. The first block after a few warm-up steps carries one-off costs: at 16^2 the
    ``residual`` kernel is first launched (and compiled, ~0.1 s) at step 8, which, charged to a
    single block of 50 steps, read as 325 us per launch for ~50-130 us (audit)."""
    _timed_steps(solver, state, steps)                     # discarded: one-off compiles land here
    blocks = []
    for _ in range(rounds):
        t, launches, _, _, _ = _timed_steps(solver, state, steps)
        blocks.append(t / launches)
    return statistics.median(blocks), blocks


def speed_table(sizes=(128, 256, 512, 1024), steps=None, bandwidth=None) -> dict:
    """Launches, ms per step, overhead share and ratio to the traffic bound per grid (Kolmogorov,
    float32); the corrected/plain step ratio at the first size."""
    from lawful.fluids import scenes
    from lawful.fluids.correctors import DivergenceFreeCorrector

    bw = bandwidth or stream_bandwidth()
    one_pass = taichi_one_pass(sizes)
    # per-launch cost (Python argument handling + launch + tiny kernels) on a 16^2 grid
    small = scenes.kolmogorov(n=16)
    sv = small.make_solver()
    for _ in range(3):
        sv.step(small.state)
    per_launch, per_launch_blocks = per_launch_cost(sv, small.state)
    rows = {}
    for n in sizes:
        sc = scenes.kolmogorov(n=n)
        solver = sc.make_solver()
        for _ in range(2):
            solver.step(sc.state)
        k = steps or max(3, min(30, int(3e6 // (n * n))))
        # SPEED_ROUNDS blocks of k steps, medians: one block's figures move by tens of per cent on
        # a shared machine (a compile or a neighbour's burst lands in one block, not in all)
        blocks = [_timed_steps(solver, sc.state, k) for _ in range(SPEED_ROUNDS)]
        t = statistics.median(b[0] for b in blocks)
        outside = statistics.median(b[4] for b in blocks)
        launches = sum(b[1] for b in blocks) / len(blocks)
        iters = sum(b[2] for b in blocks) / len(blocks)
        by_kernel = {name: {key: sum(b[3].get(name, {}).get(key, 0.0) for b in blocks) / len(blocks)
                            for key in ("launches", "ms")} for name in blocks[0][3]}
        traffic = step_traffic_bytes(sc.state, iters)
        bound_s = traffic["total_bytes"] / (bw["gbytes_per_s"] * 1e9)
        rows[str(n)] = {"n": n, "steps": k, "ms_per_step": 1e3 * t, "launches_per_step": launches,
                        "launches_by_kernel": {kk: v["launches"] for kk, v in by_kernel.items()},
                        # ms per step inside each kernel's native launch (count_launches(timed=True))
                        "kernel_ms_by_kernel": {kk: v["ms"] for kk, v in by_kernel.items()},
                        "mean_pressure_iters": iters, "overhead_share_est": min(1.0, per_launch * launches / t),
                        "outside_kernels_share": outside,
                        "outside_kernels_share_blocks": [b[4] for b in blocks],
                        "ms_per_step_blocks": [1e3 * b[0] for b in blocks],
                        "traffic": traffic, "bound_ms": 1e3 * bound_s, "ratio_to_bound": t / bound_s,
                        # the same bytes at the speed of Taichi's own simplest pass on this grid
                        # (taichi_one_pass): what is left of the ratio once the one-pass ceiling is
                        # taken out, and the ratio's floor on this machine with this code generator
                        "ratio_to_taichi_one_pass": t / (traffic["total_bytes"] / (one_pass[str(n)]["best_gbytes_per_s"]
                                                                                   * 1e9)),
                        "taichi_one_pass_floor": bw["gbytes_per_s"] / one_pass[str(n)]["best_gbytes_per_s"],
                        "ns_per_cell": 1e9 * t / (n * n)}
        print(f"speed {n}^2: {1e3 * t:.2f} ms/step, {launches:.1f} launches, {iters:.1f} CG its, "
              f"bound {1e3 * bound_s:.3f} ms (x{t / bound_s:.0f}; Taichi's one-pass floor "
              f"x{rows[str(n)]['taichi_one_pass_floor']:.1f}), overhead ~{100 * per_launch * launches / t:.0f}% "
              f"(measured outside kernels {100 * outside:.0f}%)",
              flush=True)
    n0 = sizes[0]
    sc = scenes.kolmogorov(n=n0)
    solver = sc.make_solver()
    corr = DivergenceFreeCorrector.for_scene(sc)
    for _ in range(2):
        solver.step(sc.state, corr)
    k = rows[str(n0)]["steps"]
    # the corrector's convolutions run in torch: with one torch thread the second core idles while
    # they run, though the Taichi part of the step uses every core; matched = as many torch threads
    # as Taichi's CPU threads (they alternate within a step, never run at once). Plain and
    # corrected blocks of k steps alternate over CORRECTED_ROUNDS rounds (medians), so that a
    # change in the machine's load hits both.
    threads = torch.get_num_threads()
    ti_threads = os.cpu_count() or 1
    times: dict = {"plain": [], "corr": [], "plain_m": [], "corr_m": []}
    l_corr = None
    for _ in range(CORRECTED_ROUNDS):
        times["plain"].append(_timed_steps(solver, sc.state, k)[0])
        t, l_corr, _, _, _ = _timed_steps(solver, sc.state, k, corr)
        times["corr"].append(t)
        torch.set_num_threads(ti_threads)
        try:
            times["corr_m"].append(_timed_steps(solver, sc.state, k, corr)[0])
            times["plain_m"].append(_timed_steps(solver, sc.state, k)[0])
        finally:
            torch.set_num_threads(threads)
    t_plain, t_corr, t_plain_matched, t_corr_matched = (statistics.median(times[key])
                                                        for key in ("plain", "corr", "plain_m", "corr_m"))
    cells = [n * n for n in sizes]
    ts = [rows[str(n)]["ms_per_step"] for n in sizes]
    growth = (math.log(ts[-1]) - math.log(ts[0])) / (math.log(cells[-1]) - math.log(cells[0])) if len(sizes) > 1 else None
    from lawful.kernels.mac_grid import serial_cells
    from lawful.kernels.runtime import taichi_cpu_threads

    cells_serial = serial_cells()
    return {"bandwidth": bw, "taichi_one_pass": one_pass, "per_launch_us_16": 1e6 * per_launch,
            "per_launch_us_16_blocks": [1e6 * b for b in per_launch_blocks], "by_n": rows,
            # the loops' threading in force (mac_grid.serial_cells): grids of at most this many
            # cells ran serialized on the calling thread
            "taichi_cpu_threads": taichi_cpu_threads(),
            "serial_cells": cells_serial,
            "cost_growth_exponent_vs_cells": growth,
            "corrected_step": {"n": n0, "plain_ms": 1e3 * t_plain, "corrected_ms": 1e3 * t_corr,
                               "ratio": t_corr / t_plain, "launches_per_step": l_corr,
                               "torch_threads": threads,
                               "torch_threads_matched": ti_threads,
                               "plain_ms_matched": 1e3 * t_plain_matched,
                               "corrected_ms_matched": 1e3 * t_corr_matched,
                               "ratio_matched": t_corr_matched / t_plain_matched,
                               # the best corrected step over the fastest plain one (a user runs the
                               # plain solver in its fastest setting; the matched plain step ran ~15 %
                               # slower than with one torch thread: audit)
                               "ratio_best_over_fastest_plain": min(t_corr, t_corr_matched) / min(t_plain,
                                                                                                   t_plain_matched),
                               "rounds": CORRECTED_ROUNDS,
                               "corrector": "DivergenceFreeCorrector (random init, default size)"}}


#: timed solves per method in the Poisson anchor (the best is reported, setup timed once)
ANCHOR_REPEATS = 3


def poisson_anchor(n: int = 128) -> dict:
    """One projection of the Kármán channel (``scenes.karman(n, aspect=1)``, float64, from rest
    with the cylinder's faces zeroed: a divergent start) by lawful's MGPCG, then the same
    Poisson matrix and right-hand side by PyAMG smoothed aggregation and SciPy CG + ILU to the
    relative L2 residual lawful reached. Each method: ``setup_s`` (lawful: building its
    ``PressureSolver``, kernels compiled beforehand; PyAMG: the hierarchy; SciPy: the ILU),
    ``solve_s`` (best of :data:`ANCHOR_REPEATS` solves: what a time step pays once the matrix is
    set up) and ``total_s``. lawful runs on ``lawful_threads``: Taichi's pool, or one thread when
    the grid is small enough to run serialized (``lawful_serialized``; 128^2 on a machine of at
    most two threads); the peers on one. (lawful's setup was left out of its time, the peers'
    included: audit.)"""
    import os

    import numpy as np
    import scipy.sparse as sp
    import scipy.sparse.linalg as spla

    from lawful.fluids import scenes
    from lawful.kernels.mac_grid import face_bc, serial_grid
    from lawful.kernels.mac_pressure import PressureSolver
    from lawful.kernels.runtime import taichi_cpu_threads

    sc = scenes.karman(re=100, n=n, aspect=1, dtype=torch.float64)
    st = sc.state
    u, v = st.u.clone(), st.v.clone()

    def best_of(solve, fresh=tuple):
        """Best time of :data:`ANCHOR_REPEATS` calls ``solve(*fresh())`` (``fresh`` untimed) and
        the last call's result."""
        best, result = float("inf"), None
        for _ in range(ANCHOR_REPEATS):
            args = fresh()
            t0 = time.perf_counter()
            result = solve(*args)
            best = min(best, time.perf_counter() - t0)
        return best, result

    PressureSolver(st.boundary, st.solid, torch.float64).project(u.clone(), v.clone(), warm_start=False)  # compile
    t0 = time.perf_counter()
    ps = PressureSolver(st.boundary, st.solid, torch.float64)
    t_setup_lawful = time.perf_counter() - t0
    t_lawful, stats = best_of(lambda uu, vv: ps.project(uu, vv, warm_start=False), lambda: (u.clone(), v.clone()))
    rel = max(stats.residual_l2, 1e-14)
    # the same matrix: sum_f w_f (phi_c - phi_nb) over fluid cells, neighbours outside a
    # non-periodic side = 0 (outflow Dirichlet; other sides have w = 0)
    ubc, vbc = face_bc(st.boundary, st.solid, torch.float64)
    wx, wy = ubc[0].numpy(), vbc[0].numpy()
    nx, ny = st.nx, st.ny
    diag = wx[:-1] + wx[1:] + wy[:, :-1] + wy[:, 1:]
    fluid = diag > 0
    idx = -np.ones((nx, ny), dtype=np.int64)
    idx[fluid] = np.arange(int(fluid.sum()))
    rows, cols, vals = [idx[fluid]], [idx[fluid]], [diag[fluid]]
    for w, a, b in ((wx[1:-1], idx[:-1], idx[1:]), (wy[:, 1:-1], idx[:, :-1], idx[:, 1:])):
        m = (w > 0) & (a >= 0) & (b >= 0)
        rows += [a[m], b[m]]
        cols += [b[m], a[m]]
        vals += [-w[m], -w[m]]
    A = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))))
    d = ((st.u[1:] - st.u[:-1]) + (st.v[:, 1:] - st.v[:, :-1])).numpy()
    b = -d[fluid]
    # the threads lawful's loops really ran on: a grid of at most serial_cells() cells runs
    # serialized on the calling thread (512^2 when Taichi's pool has at most two threads), so on
    # the 2-core machine the 128^2 anchor ran on one thread like the peers; os.cpu_count() said 2
    lawful_threads = 1 if serial_grid(nx, ny) else (taichi_cpu_threads() or os.cpu_count())
    out = {"grid": [nx, ny], "cells": int(fluid.sum()), "relative_l2_residual": rel, "dtype": "float64",
           "lawful_threads": lawful_threads, "lawful_serialized": bool(serial_grid(nx, ny)), "peer_threads": 1,
           "solve_repeats": ANCHOR_REPEATS,
           "lawful_mgpcg": {"setup_s": t_setup_lawful, "solve_s": t_lawful, "total_s": t_setup_lawful + t_lawful,
                            "iterations": stats.iterations}}

    try:
        import pyamg

        t0 = time.perf_counter()
        ml = pyamg.smoothed_aggregation_solver(A, symmetry="symmetric")
        t_setup = time.perf_counter() - t0
        res = []

        def amg():
            res.clear()
            return ml.solve(b, tol=rel, accel="cg", maxiter=500, residuals=res)

        t_solve, x = best_of(amg)
        out["pyamg_sa_cg"] = {"setup_s": t_setup, "solve_s": t_solve, "total_s": t_setup + t_solve,
                              "iterations": len(res) - 1,
                              "achieved_rel_l2": float(np.linalg.norm(b - A @ x) / np.linalg.norm(b))}
    except ImportError as exc:
        out["pyamg_sa_cg"] = {"skipped": f"pyamg not installed ({exc}); pip install lawful[bench]"}
    t0 = time.perf_counter()
    # an incomplete LU that CG can use: a symmetric ordering (minimum degree on A^T + A) and no
    # pivoting keep it close to symmetric; with SuperLU's defaults (COLAMD, partial pivoting,
    # drop_tol 1e-4) the preconditioner was too unsymmetric and CG stalled at residual ~1 after
    # 2000 iterations. drop_tol 1e-5 keeps ~8x the matrix's non-zeros (a near-direct solve here).
    ilu = spla.spilu(A.tocsc(), drop_tol=1e-5, fill_factor=20, permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.0)
    t_setup = time.perf_counter() - t0
    M = spla.LinearOperator(A.shape, ilu.solve)
    count = [0]

    def cb(_x):
        count[0] += 1

    def cg():
        count[0] = 0
        try:
            return spla.cg(A, b, rtol=rel, maxiter=2000, M=M, callback=cb)
        except TypeError:                           # SciPy < 1.12 names it tol
            return spla.cg(A, b, tol=rel, maxiter=2000, M=M, callback=cb)

    t_solve, (x, info) = best_of(cg)
    out["scipy_cg_ilu"] = {"setup_s": t_setup, "solve_s": t_solve, "total_s": t_setup + t_solve,
                           "iterations": count[0], "info": int(info), "ilu": "spilu drop_tol=1e-5 fill_factor=20 permc MMD_AT_PLUS_A no pivoting", "ilu_nnz": int(ilu.nnz),
                           "matrix_nnz": int(A.nnz),
                           "achieved_rel_l2": float(np.linalg.norm(b - A @ x) / np.linalg.norm(b))}
    print(f"Poisson anchor {nx}x{ny} (solve / setup + solve): lawful {t_lawful * 1e3:.1f} / "
          f"{(t_setup_lawful + t_lawful) * 1e3:.1f} ms ({stats.iterations} its), pyamg "
          f"{out['pyamg_sa_cg'].get('solve_s', float('nan')) * 1e3:.1f} / "
          f"{out['pyamg_sa_cg'].get('total_s', float('nan')) * 1e3:.1f} ms, scipy cg+ilu "
          f"{out['scipy_cg_ilu']['solve_s'] * 1e3:.1f} / {out['scipy_cg_ilu']['total_s'] * 1e3:.1f} ms, "
          f"rel l2 {rel:.2e}", flush=True)
    return out


#: What one fresh process runs for :func:`compile_times`: the first and a later Kolmogorov step,
#: with Taichi's control-flow-graph passes as argv[2] says (kernels.runtime.TAICHI_INIT_OPTIONS).
_FIRST_STEP = """
import json, sys, time, torch
torch.set_num_threads(1)
import lawful.kernels.runtime as rt
rt.TAICHI_INIT_OPTIONS["cfg_optimization"] = sys.argv[2] == "1"
from lawful.fluids import scenes
sc = scenes.kolmogorov(n=int(sys.argv[1])); solver = sc.make_solver()
t0 = time.perf_counter(); solver.step(sc.state); first = time.perf_counter() - t0
for _ in range(5):
    solver.step(sc.state)
k = 20; t0 = time.perf_counter()
for _ in range(k):
    solver.step(sc.state)
print(json.dumps({"first_step_s": first, "later_step_ms": 1e3 * (time.perf_counter() - t0) / k}))
"""


def compile_times(n: int = 128, rounds: int = 2) -> dict:
    """The first Kolmogorov float32 step at ``n``^2 of a fresh process with an empty Taichi kernel
    cache (a new user's first run: it compiles every kernel of the step) and the mean of 20 later
    steps, with Taichi's control-flow-graph passes off (lawful's runtime) and on (Taichi's
    default), alternating over ``rounds`` rounds; each process gets its own empty cache folder."""
    import tempfile

    runs: dict = {"passes_off": [], "passes_on": []}
    for _ in range(rounds):
        for key, flag in (("passes_off", "0"), ("passes_on", "1")):
            with tempfile.TemporaryDirectory() as cache:
                env = dict(os.environ, TI_OFFLINE_CACHE_FILE_PATH=cache, OMP_NUM_THREADS="1")
                r = subprocess.run([sys.executable, "-c", _FIRST_STEP, str(n), flag], capture_output=True,
                                   text=True, env=env, check=True)
            runs[key].append(json.loads(r.stdout.strip().splitlines()[-1]))
            print(f"compile {n}^2 {key}: {runs[key][-1]}", flush=True)
    out = {"n": n, "rounds": rounds, "runs": runs,
           "method": "fresh process, empty TI_OFFLINE_CACHE_FILE_PATH, Kolmogorov float32; first_step_s includes "
                     "compiling every kernel of the step; later_step_ms: mean of 20 steps after 5"}
    for key in runs:
        out[key] = {"first_step_s_median": statistics.median(r["first_step_s"] for r in runs[key]),
                    "later_step_ms_median": statistics.median(r["later_step_ms"] for r in runs[key])}
    out["first_step_ratio_on_over_off"] = (out["passes_on"]["first_step_s_median"]
                                           / out["passes_off"]["first_step_s_median"])
    return out


def _write_compile_times(tiny: bool, out_dir) -> Path:
    """:func:`compile_times` (16^2, one round when ``tiny``) into ``bench_fluid_compile.json``."""
    from lawful.integrations.benchmarking import write_result

    figures = {"compile": compile_times(16 if tiny else 128, 1 if tiny else 2)}
    # (the Kolmogorov scene's random start has its default seed, 0)
    return write_result("bench_fluid_compile", figures, dtype="float32", device="cpu",
                        params={"scene": "kolmogorov (periodic, forced)", "tiny": tiny}, seeds=[0], out_dir=out_dir)


def main(argv=None) -> Path:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", default=quick_requested(), help="fewer steps (smoke test of the benchmark)")
    ap.add_argument("--out", default=None, help="results folder (default benchmarks/results)")
    ap.add_argument("--speed-only", action="store_true",
                    help="only the speed table (128^2-1024^2) and the Poisson anchor -> bench_fluid_speed.json")
    ap.add_argument("--compile-only", action="store_true",
                    help="only the first-step compile time with an empty kernel cache, Taichi's CFG passes off "
                         "and on -> bench_fluid_compile.json")
    ap.add_argument("--taylor-green-only", action="store_true",
                    help="only the Taylor-Green convergence study -> bench_fluid_taylor_green.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    if args.speed_only:
        from lawful.integrations.benchmarking import write_result

        tiny = tiny_requested()
        figures = {"speed": speed_table((16, 32) if tiny else (128, 256, 512, 1024)),
                   "poisson_anchor": poisson_anchor(32 if tiny else 128)}
        out = write_result("bench_fluid_speed", figures, dtype="float32", device="cpu",
                           params={"scene": "kolmogorov (periodic, forced)", "tiny": tiny}, out_dir=args.out)
        print(f"wrote {out}")
        return out
    if args.compile_only:
        from lawful.integrations.benchmarking import write_result

        tiny = tiny_requested()
        out = _write_compile_times(tiny, args.out)
        print(f"wrote {out}")
        return out
    if args.taylor_green_only:
        from lawful.integrations.benchmarking import write_result

        figures = {"cfl_0.25_limiter": taylor_green_orders(cfl=0.25),
                   "dt_0.005_limiter": taylor_green_orders(cfl=None, dt=0.005),
                   "dt_0.005_no_limiter": taylor_green_orders(cfl=None, dt=0.005, limiter=False),
                   "cfl_0.25_no_limiter": taylor_green_orders(cfl=0.25, limiter=False)}
        out = write_result("bench_fluid_taylor_green", figures, dtype="float64", device="cpu",
                           params={"scene": "taylor_green nu=0.01, t_end=1", "advection": "maccormack"},
                           out_dir=args.out)
        print(json.dumps(figures, indent=1))
        return out
    tiny = tiny_requested()
    sizes = (16, 32, 64) if tiny else (128, 256, 512)
    tg_sizes = (8, 16, 32) if tiny else (32, 64, 128)
    big = sizes[-1]
    steps512 = 1 if tiny else 3 if args.quick else 10
    theirs = run_taichi_example(steps512, 0 if tiny else 2)
    same_forcing = comparable_forcing(steps512, tiny)
    ours = {n: run_lawful(n, steps512 if n == big else (10 if args.quick else 30), 2) for n in sizes}
    ours[512] = ours[big]
    plume = run_lawful(big, steps512, 2, scene="smoke_plume")
    ours_sl = run_lawful(big, steps512, 2, advection="semi_lagrangian")
    mass = closed_box_mass(20 if tiny else 200 if args.quick else 10_000)
    cells = [n * n for n in sizes]
    sps = [ours[n]["steps_per_s"] for n in sizes]
    slope = (math.log(1 / sps[-1]) - math.log(1 / sps[0])) / (math.log(cells[-1]) - math.log(cells[0]))
    figures = {
        "stable_fluid_512": theirs,
        "comparable_forcing_512": same_forcing,
        "lawful_512": ours[512],
        "lawful_512_smoke_plume": plume,
        "lawful_512_semi_lagrangian": ours_sl,
        "speed_ratio_512_semi_lagrangian": ours_sl["steps_per_s"] / theirs["steps_per_s"],
        "lawful_by_n": {str(n): ours[n] for n in sizes},
        "speed_ratio_512": ours[512]["steps_per_s"] / theirs["steps_per_s"],
        "divergence_ratio_512": theirs["div_max_rel"] / max(ours[512]["div_max_rel"], 1e-300),
        "cost_growth_exponent_vs_cells": slope,
        "closed_box_mass_1e4_steps": mass,
        "taylor_green_cfl": taylor_green_orders(cfl=0.25, ns=tg_sizes),
        "taylor_green_small_dt": taylor_green_orders(cfl=None, dt=0.005, ns=tg_sizes),
        "speed": speed_table((16, 32) if tiny else (128, 256, 512, 1024)),
        "poisson_anchor": poisson_anchor(32 if tiny else 128),
    }
    from lawful.integrations.benchmarking import write_result

    out = write_result("bench_fluid", figures, dtype="float32", device="cpu",
                       params={"scene": "kolmogorov (periodic, forced; random divergence-free start)", "quick": args.quick,
                               "steps_512": steps512, "sizes": list(sizes), "taylor_green_sizes": list(tg_sizes),
                               "taichi_example": str(stable_fluid_path())},
                       seeds=[0], out_dir=args.out)
    # the speed table and Poisson anchor also go to their own file, the one ``--speed-only`` writes
    # (so the plain run regenerates bench_fluid_speed.json too)
    speed_out = write_result("bench_fluid_speed", {k: figures[k] for k in ("speed", "poisson_anchor")},
                             dtype="float32", device="cpu",
                             params={"scene": "kolmogorov (periodic, forced)", "tiny": tiny}, seeds=[0],
                             out_dir=args.out)
    print(f"wrote {speed_out}")
    print(f"wrote {_write_compile_times(tiny, args.out)}")
    print(json.dumps({k: v for k, v in figures.items() if not isinstance(v, dict)}, indent=1))
    print(f"lawful 512^2: {ours[512]['steps_per_s']:.2f} steps/s, div {ours[512]['div_max_rel']:.2e}; "
          f"stable_fluid: {theirs['steps_per_s']:.2f} steps/s, div {theirs['div_max_rel']:.2e}")
    print(f"wrote {out}")
    return out


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()

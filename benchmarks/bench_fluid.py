"""Fluid solver benchmark: lawful's MAC-grid solver vs Taichi's own stable_fluid example.

Side by side in one run on this machine (same Taichi, same CPU):

* Taichi's ``examples/simulation/stable_fluid.py`` (shipped inside the taichi package; imported,
  not copied, in a subprocess with ``ti.init`` forced to the CPU and no GUI): its ``step`` at
  512^2 (collocated grid, 500 Jacobi sweeps) driven by a constant impulse, then steps/s and its
  final relative divergence ``max|div u| dx / max|u|`` measured with its own divergence kernel;
* lawful at 512^2 (Kolmogorov flow from a random divergence-free start, velocities O(1); and the
  buoyant smoke plume in a closed box), float32, MGPCG to rtol 1e-6: steps/s and final relative
  divergence (its MAC divergence);
* lawful's steps/s at 128^2, 256^2, 512^2 and the fitted growth exponent (cost ~ N^a per step
  for N cells);
* a closed-box float32 run of 10^4 full solver steps (16^2): passive-scalar mass drift;
* Taylor-Green convergence: velocity error vs the analytic solution at t=1 over 32^2, 64^2,
  128^2 (float64, dt at CFL 0.25, and a fixed small dt) and the observed orders.

Writes ``benchmarks/results/bench_fluid.json``. Run: ``python benchmarks/bench_fluid.py [--quick]``.
``LAWFUL_BENCH_TINY=1`` (CI smoke, not a result): 16^2-64^2 grids in place of 128^2-512^2 (the keys
keep their names), one stable_fluid step, 20 closed-box steps, Taylor-Green on 8^2-32^2.
"""

from __future__ import annotations

import argparse
import json
import math
import os
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
res = sf.res
mouse = np.zeros(8, dtype=np.float32)
mouse[0], mouse[1] = 1.0, 0.0            # impulse direction
mouse[2], mouse[3] = res * 0.3, res * 0.5  # impulse position (cells)
mouse[4:7] = 1.0                         # dye colour
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
vel = np.abs(sf.velocities_pair.cur.to_numpy()).max()
print(json.dumps({"res": res, "steps": STEPS, "wall_s": wall, "steps_per_s": STEPS / wall,
                  "div_max_rel": float(div / vel), "max_velocity": float(vel),
                  "jacobi_iters": sf.p_jacobi_iters}))
"""


def stable_fluid_path() -> Path:
    import taichi

    path = Path(taichi.__file__).parent / "examples" / "simulation" / "stable_fluid.py"
    if not path.exists():
        raise FileNotFoundError(f"Taichi's stable_fluid example is not at {path}")
    return path


def run_taichi_example(steps: int, warm: int) -> dict:
    code = _TAICHI_DRIVER.replace("PATH", repr(str(stable_fluid_path()))).replace("WARM", str(warm)).replace(
        "STEPS", str(steps))
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
            "max_div_max_rel_sampled": div, "wall_s": time.perf_counter() - t0}


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
        errs.append(math.sqrt(float(((sc.state.u - ue) ** 2).mean() + ((sc.state.v - ve) ** 2).mean()) / 2))
    return {"n": list(ns), "cfl": cfl, "dt": dt, "limiter": limiter, "rms_velocity_error_t1": errs,
            "observed_orders": [math.log2(errs[k] / errs[k + 1]) for k in range(2)]}


def main(argv=None) -> Path:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", default=quick_requested(), help="fewer steps (smoke test of the benchmark)")
    ap.add_argument("--out", default=None, help="results folder (default benchmarks/results)")
    ap.add_argument("--taylor-green-only", action="store_true",
                    help="only the Taylor-Green convergence study -> bench_fluid_taylor_green.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
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
    }
    from lawful.integrations.benchmarking import write_result

    out = write_result("bench_fluid", figures, dtype="float32", device="cpu",
                       params={"scene": "kolmogorov (periodic, forced; random divergence-free start)", "quick": args.quick,
                               "steps_512": steps512, "sizes": list(sizes), "taylor_green_sizes": list(tg_sizes),
                               "taichi_example": str(stable_fluid_path())},
                       seeds=[0], out_dir=args.out)
    print(json.dumps({k: v for k, v in figures.items() if not isinstance(v, dict)}, indent=1))
    print(f"lawful 512^2: {ours[512]['steps_per_s']:.2f} steps/s, div {ours[512]['div_max_rel']:.2e}; "
          f"stable_fluid: {theirs['steps_per_s']:.2f} steps/s, div {theirs['div_max_rel']:.2e}")
    print(f"wrote {out}")
    return out


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()

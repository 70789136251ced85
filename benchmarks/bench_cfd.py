"""CFD validation tables: lawful's MAC solver against published benchmark results.

* **Lid-driven cavity** at Re 100 and 1000 (``scenes.lid_driven_cavity``, float32, MacCormack) run
  to a steady state; centre-line ``u(y)`` and ``v(x)`` against Ghia, Ghia & Shin (1982), J. Comput.
  Phys. 48, 387-411, Tables I-II (the typed values are in :mod:`lawful.fluids.validation`); the
  largest absolute error in units of the lid velocity at 64^2, 128^2, 256^2 (goal: <= 0.02 at 128^2).
* **Taylor-Green** kinetic-energy decay against ``exp(-4 nu t)`` (float64, dt at CFL 0.25), the
  error at ``t = 1`` over 32^2 .. 128^2 and its observed order.
* **Schäfer-Turek 2D-1** (steady cylinder, Re 20, parabolic inflow, no-slip channel walls):
  drag and lift coefficients from the surface-integrated pressure + viscous force
  (:mod:`lawful.fluids.forces`) against the reference intervals (Schäfer & Turek 1996).
* **Kármán shedding at Re 100**: Strouhal number from the lift signal of ``scenes.karman`` (uniform
  inflow, free-slip walls) against the unconfined St = 0.164-0.166 (Williamson 1996); the blockage
  ``D / H`` is stated with each run.

Writes ``benchmarks/results/cfd.json`` after every case (a partial run keeps what it finished).
Run: ``nice -n 10 python benchmarks/bench_cfd.py [--cases cavity100,cavity1000,tg,st,strouhal]
[--cavity-sizes 64,128,256] [--budget-s S]``; ``LAWFUL_BENCH_QUICK=1`` (``lawful bench --quick``):
cavity 32² and 64², Taylor-Green 16²-64², one Schäfer-Turek and one Strouhal run;
``LAWFUL_BENCH_TINY=1``: tiny grids (a smoke test, not a result).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time

import torch

from lawful.integrations.benchmarking import quick_requested, tiny_requested, write_result

CASES = ("cavity100", "cavity1000", "tg", "st", "strouhal")
#: untimed steps of a throwaway cavity of the same grid before a timed one (kernel compiles)
WARM_STEPS = 10


def cavity(re: int, n: int, t_max: float, steady_tol: float = 1e-4, cfl: float = 0.9, dtype=torch.float32) -> dict:
    """Run the cavity until ``max|du/dt| < steady_tol`` (lid units, sampled every 0.5 time units)
    or ``t_max``; return the Ghia errors and the run's figures."""
    from lawful.fluids import scenes
    from lawful.fluids.validation import ghia_errors

    # compile this grid's kernels on a throwaway copy first (Taichi compiles per grid depth and
    # dtype, some kernels only at a later step): the timed run's ms_per_step held the compile,
    # 9.1 ms at Re 100 64^2 (the first case of its process) against 2.2 ms at Re 1000 64^2 (audit)
    warm = scenes.lid_driven_cavity(re, n, cfl=cfl, dtype=dtype)
    warm_solver = warm.make_solver()
    for _ in range(WARM_STEPS):
        warm_solver.step(warm.state)
    sc = scenes.lid_driven_cavity(re, n, cfl=cfl, dtype=dtype)
    solver = sc.make_solver()
    st = sc.state
    every = max(1, round(0.5 / sc.config.dt))
    prev = st.u.clone()
    rate = float("inf")
    t0 = time.perf_counter()
    steps = 0
    while st.t < t_max:
        solver.step(st)
        steps += 1
        if steps % every == 0:
            rate = float((st.u - prev).abs().max()) / (every * sc.config.dt)
            prev.copy_(st.u)
            if rate < steady_tol:
                break
    wall = time.perf_counter() - t0
    err = ghia_errors(st, re)
    out = {"re": re, "n": n, "t": st.t, "steps": steps, "dt": sc.config.dt, "wall_s": wall,
           "ms_per_step": 1e3 * wall / steps, "steady_rate_max_du_dt": rate, "steady": rate < steady_tol}
    out.update(err)
    print(f"cavity Re {re} {n}^2: t={st.t:.1f} ({steps} steps, {wall:.0f} s) max|du/dt|={rate:.1e} "
          f"error u {err['max_abs_error_u']:.4f} v {err['max_abs_error_v']:.4f}", flush=True)
    return out


def taylor_green_energy(ns=(32, 64, 128), t_end: float = 1.0, viscosity: float = 0.01) -> dict:
    """Kinetic energy ratio KE(t)/KE(0) against exp(-4 nu t) at t_end; observed orders."""
    from lawful.fluids import scenes
    from lawful.fluids.metrics import state_metrics

    errs, ratios = [], []
    for n in ns:
        dt0 = 0.25 * 2 * math.pi / n
        steps = math.ceil(t_end / dt0)
        sc = scenes.taylor_green(n=n, dtype=torch.float64, dt=t_end / steps, viscosity=viscosity)
        solver = sc.make_solver()
        ke0 = state_metrics(sc.state)["kinetic_energy"]
        for _ in range(steps):
            solver.step(sc.state)
        r = state_metrics(sc.state)["kinetic_energy"] / ke0
        ratios.append(r)
        errs.append(abs(r - math.exp(-4 * viscosity * t_end)))
    orders = [math.log2(errs[k] / errs[k + 1]) for k in range(len(ns) - 1)]
    print(f"Taylor-Green KE decay errors {errs}, orders {orders}", flush=True)
    return {"n": list(ns), "dtype": "float64", "t_end": t_end, "viscosity": viscosity,
            "exact_ratio": math.exp(-4 * viscosity * t_end),
            "ke_ratio": ratios, "abs_error": errs, "observed_orders": orders}


def schaefer_turek(n: int, t_end: float = 10.0, obstacle_ghost: bool = True) -> dict:
    """Schäfer-Turek 2D-1 at ``n`` cells across the 0.41 channel (n a multiple of 41); cd/cl as
    recorded by run() (control-volume momentum balance, time-centred pressure) and from the
    staircase surface integral; ``obstacle_ghost=False`` is the older viscous treatment of
    obstacle walls (a whole cell away), kept for comparison."""
    from lawful.fluids import run
    from lawful.fluids.scenes import Circle, flow_scene
    from lawful.fluids.validation import SCHAEFER_TUREK_2D1
    from lawful.kernels.mac_grid import Boundary

    sc = flow_scene((2.2, 0.41), n, Boundary.channel(0.2, "no_slip", "parabolic"), obstacles=[Circle((0.2, 0.2), 0.05)],
                    viscosity=1e-3, reference=(0.2, 0.1), name="schaefer_turek_2d1", obstacle_ghost=obstacle_ghost,
                    dtype=torch.float32)
    steps = round(t_end / sc.config.dt)
    t0 = time.perf_counter()
    rec = run(sc, steps, keep=100)
    wall = time.perf_counter() - t0
    from lawful.fluids.forces import control_volume_force, force_record

    surface = force_record(sc.state, 1e-3, sc.obstacles, sc.masks, sc.reference)

    q = 0.5 * 0.2 ** 2 * 0.1
    cv = {}
    for half in (0.08, 0.1, 0.12):           # square boxes around the cylinder, inside the channel
        dx = sc.state.dx
        box = (round((0.2 - half) / dx), round((0.2 + half) / dx), round((0.2 - half) / dx), round((0.2 + half) / dx))
        fx, fy = control_volume_force(sc.state, 1e-3, box)
        cv[f"half_width_{half}"] = {"cd": fx / q, "cl": fy / q}
    last = list(rec)[-100:]
    cd = sum(r["cd"] for r in last) / len(last)
    cl = sum(r["cl"] for r in last) / len(last)
    drift = abs(last[-1]["cd"] - last[0]["cd"])
    ref = SCHAEFER_TUREK_2D1
    mid = 0.5 * sum(ref["cd"])
    print(f"Schaefer-Turek 2D-1 n={n} obstacle_ghost={obstacle_ghost}: cd {cd:.4f} (ref {ref['cd']}), cl {cl:.4f} "
          f"(ref {ref['cl']}), surface cd {surface['cd']:.4f}, {wall:.0f} s", flush=True)
    return {"n_across_0.41": n, "cells_per_diameter": 0.1 * n / 0.41, "t_end": t_end, "steps": steps, "wall_s": wall,
            "cd": cd, "cl": cl, "cd_drift_last_100_steps": drift, "cd_reference": ref["cd"], "cl_reference": ref["cl"],
            "cd_relative_error": (cd - mid) / mid, "blockage_D_over_H": 0.1 / 0.41,
            "control_volume_steady": cv, "surface_cd": surface["cd"], "surface_cl": surface["cl"],
            "obstacle_ghost": obstacle_ghost,
            "method": "cd/cl: as run() records them (control-volume momentum balance around the body, time-centred "
                      "pressure, box momentum change); surface_*: staircase surface integral (pressure extrapolated "
                      "to the wall + wall shear); control_volume_steady: the balance on square boxes of three sizes"}


def karman_strouhal(n: int, diameter: float, t_end: float, t_skip: float) -> dict:
    """Strouhal number of ``scenes.karman(re=100)`` from the lift after ``t_skip``."""
    from lawful.fluids import scenes
    from lawful.fluids.validation import STROUHAL_RE100, strouhal

    sc = scenes.karman(re=100, n=n, diameter=diameter, aspect=4, dtype=torch.float32)
    solver = sc.make_solver()
    steps = round(t_end / sc.config.dt)
    ts, cls, cds = [], [], []
    t0 = time.perf_counter()
    for _ in range(steps):
        if not ts:
            sc.start_forces()   # the box momentum before the step: the first sample's d/dt is over the step
        solver.step(sc.state)
        if sc.state.t >= t_skip:
            f = sc.forces()
            ts.append(sc.state.t)
            cls.append(f["cl"])
            cds.append(f["cd"])
    wall = time.perf_counter() - t0
    st = strouhal(ts, cls, diameter, 1.0, scale=1.0)   # a coefficient: NaN below 1e-4 peak-to-peak
    print(f"Karman Re 100 n={n} D={diameter}: St {st:.4f} (unconfined {STROUHAL_RE100}), blockage {diameter:.4f}, "
          f"{wall:.0f} s", flush=True)
    amp = (max(cls) - min(cls)) / 2 if cls else float("nan")
    return {"re": 100, "n": n, "diameter": diameter, "cells_per_diameter": diameter * n, "blockage_D_over_H": diameter,
            "walls": "free_slip", "inflow": "uniform", "t_end": t_end, "t_skip": t_skip, "steps": steps, "wall_s": wall,
            "strouhal": st, "reference_unconfined": STROUHAL_RE100, "cl_amplitude": amp,
            "cd_mean": sum(cds) / len(cds) if cds else float("nan")}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--cavity-sizes", default="64,128,256")
    ap.add_argument("--budget-s", type=float, default=float("inf"),
                    help="skip further cavity sizes once this much wall time is spent (reported)")
    ap.add_argument("--out", default=None)
    ap.add_argument("--merge", action="store_true",
                    help="keep the other cases' figures of an existing cfd.json (rerun some cases only)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    tiny = tiny_requested()
    quick = quick_requested() and not tiny    # lawful bench --quick: it ran full size and said "quick"
    cases = args.cases.split(",")
    sizes = [16] if tiny else [32, 64] if quick else [int(s) for s in args.cavity_sizes.split(",")]
    figures, skipped, merged_from = {}, [], None
    if args.merge:
        from lawful.integrations.benchmarking import default_results_dir
        from pathlib import Path

        old = Path(args.out or default_results_dir()) / "cfd.json"
        if old.is_file():
            old_doc = json.loads(old.read_text())
            figures = old_doc.get("figures", {})
            # the kept figures were made by an earlier run: say which, and how (its own
            # provenance, params with their skipped list, and any merge it carried)
            merged_from = {"date": old_doc.get("date"), "figures_kept": sorted(figures),
                           "provenance": old_doc.get("provenance"), "params": old_doc.get("params")}
    start = time.perf_counter()

    def save():
        params = {"cases": cases, "cavity_sizes": sizes, "tiny": tiny, "quick": quick, "skipped": skipped,
                  "cavity_steady_tol": 1e-4, "advection": "maccormack (limiter on)"}
        if merged_from is not None:
            params["merged_from"] = {**merged_from, "figures_kept": [k for k in merged_from["figures_kept"]
                                                                     if k not in rerun]}
        write_result("cfd", figures, dtype="float32", device="cpu", params=params, out_dir=args.out)

    keys = {"tg": "taylor_green_energy", "st": "schaefer_turek_2d1", "cavity100": "cavity_re100",
            "strouhal": "strouhal_re100", "cavity1000": "cavity_re1000"}
    rerun = {keys[c] for c in cases if c in keys}

    if "tg" in cases:
        figures["taylor_green_energy"] = taylor_green_energy((8, 16, 32) if tiny else (16, 32, 64) if quick
                                                             else (32, 64, 128))
        save()

    def cavity_table(re: int) -> None:
        """Ghia cavity at ``re`` on every size that fits the time budget (the rest listed as skipped)."""
        if f"cavity{re}" not in cases:
            return
        key = f"cavity_re{re}"
        figures[key] = {}
        for n in sizes:
            if time.perf_counter() - start > args.budget_s:
                skipped.append(f"cavity Re {re} {n}^2 (time budget)")
                continue
            t_max = 2.0 if tiny else (40.0 if re == 100 else 120.0)
            figures[key][str(n)] = cavity(re, n, t_max)
            save()

    if "st" in cases:
        figures["schaefer_turek_2d1"] = [schaefer_turek(41, 2.0 if tiny else 10.0)]
        save()
        if not (tiny or quick):
            figures["schaefer_turek_2d1"].append(schaefer_turek(82, 10.0))
            save()
            figures["schaefer_turek_2d1"].append(schaefer_turek(41, 10.0, obstacle_ghost=False))
            save()
    cavity_table(100)
    if "strouhal" in cases:
        if tiny:
            figures["strouhal_re100"] = [karman_strouhal(16, 0.125, 2.0, 1.0)]
        else:
            figures["strouhal_re100"] = [karman_strouhal(64, 0.125, 30.0, 15.0)]
            save()
            if quick:
                pass
            elif time.perf_counter() - start < args.budget_s:
                figures["strouhal_re100"].append(karman_strouhal(128, 0.0625, 20.0, 10.0))
            else:
                skipped.append("Strouhal n=128 D=0.0625 (time budget)")
        save()
    cavity_table(1000)
    save()
    print(json.dumps({k: (v if not isinstance(v, dict) else list(v)) for k, v in figures.items()}, default=str)[:2000])


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()

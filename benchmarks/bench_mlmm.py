"""Alanine dipeptide in TIP3P water, lawful's organic model as the ML region (openmm-ml's
``createMixedSystem``, mechanical embedding; amber14 + rigid TIP3P for the rest), in OpenMM's
own loops. Result: ``mlmm.json`` plus, beside it, per-run energy series and the Ramachandran plot.

NVE (``VerletIntegrator``, 0.5 fs, 10 ps; total energy recorded at every step by lawful's
``DriftReporter``, drift = slope of a linear fit, meV per atom per ps with every atom of the box
counted; the series written every ``CSV_EVERY`` steps to ``mlmm_nve_<run>.csv``):

- ``conservative``: ML/MM with ``organic-xtb`` (NeuralPotential: forces are -dE/dR);
- ``conservative_interpolate``: the same through ``createMixedSystem(interpolate=True)`` at
  ``lambda_interpolate = 1`` (same physics, openmm-ml's interpolating System);
- ``direct``: ML/MM with ``organic-xtb-direct`` (DirectForceModel control trained on the same data);
- ``all_mm``: amber14 for the solute too (the classical floor of this box, platform and step).

NVT (``LangevinMiddleIntegrator``, 1 fs, 300 K, friction 1/ps, 100 ps): ML/MM ``organic-xtb`` and
all-MM; φ/ψ every 100 fs -> ``mlmm_ramachandran.png`` and ``mlmm_nvt_phi_psi.csv``; an
out-of-domain structure stops the strict ML/MM run (counted, with the step and the atoms).

Every run starts from the same all-MM-minimised box with the same seeded Maxwell-Boltzmann
velocities at 300 K. Platform: OpenMM CPU, one thread (MM forces in single precision, the lawful
force in float64; the all-MM run on the same platform is the floor to compare with); torch one
thread. Times per step: wall and this process's CPU (NVE steps include the per-step energy
evaluation of the drift report, so the ML model runs twice per step there; NVT steps once).

Sizes: full (the issue's): padding 1.2 nm (a 2.4 nm cube, ~1400 atoms), 20 000 NVE steps, 100 000
NVT steps. ``LAWFUL_BENCH_QUICK=1``: padding 1.0 nm (2 nm cube, 727 atoms), 1 ps NVE, 5 ps NVT.
``LAWFUL_BENCH_TINY=1``: the quick box, 100 NVE and 200 NVT steps (seconds; not a result). A
quick or tiny run prints (and records) its estimate of the full run's CPU time.
"""

from __future__ import annotations

import csv
import time

import torch
from openmm import unit as u

torch.set_num_threads(1)

from lawful.integrations import mlmm  # noqa: E402
from lawful.integrations.benchmarking import (default_results_dir, quick_requested, tiny_requested,  # noqa: E402
                                              write_result)

QUICK, TINY = quick_requested(), tiny_requested()
SIZES = {
    "full": dict(padding_nm=1.2, nve_steps=20000, nvt_steps=100000, frame_every=100, minimize=500),
    "quick": dict(padding_nm=1.0, nve_steps=2000, nvt_steps=5000, frame_every=50, minimize=200),
    "tiny": dict(padding_nm=1.0, nve_steps=100, nvt_steps=200, frame_every=10, minimize=50),
}
SIZE = "tiny" if TINY else "quick" if QUICK else "full"
Z = SIZES[SIZE]
NVE_DT_FS, NVT_DT_FS = 0.5, 1.0
TEMPERATURE_K, FRICTION_PER_PS = 300.0, 1.0
CUTOFF_NM = 1.0
CSV_EVERY = 20  # steps between rows of the NVE series files (0.01 ps)
SEED = 0
PLATFORM = "CPU"  # --platform Reference: double precision everywhere (its PME is ~10x slower)
MODELS = {"conservative": "organic-xtb", "direct": "organic-xtb-direct"}


def _nve_runs(top, pos, mm, out):
    import copy

    runs = {}
    plan = [("all_mm", None, False), ("conservative", MODELS["conservative"], False),
            ("conservative_interpolate", MODELS["conservative"], True), ("direct", MODELS["direct"], False)]
    for name, model, interpolate in plan:
        system = copy.deepcopy(mm) if model is None else mlmm.mixed_system(
            top, model=model, interpolate=interpolate, mm=copy.deepcopy(mm), strict=True, cutoff_nm=CUTOFF_NM)
        t0 = time.perf_counter()
        res = mlmm.run_nve(system, top, pos, steps=Z["nve_steps"], timestep_fs=NVE_DT_FS, temperature_K=TEMPERATURE_K,
                           seed=SEED, csv=out / f"mlmm_nve_{name}.csv", csv_interval=CSV_EVERY, platform=PLATFORM,
                           threads=1)
        d = res.as_dict()
        d.update(model=model or "amber14", interpolate=interpolate, run_s=time.perf_counter() - t0,
                 csv=f"mlmm_nve_{name}.csv")
        runs[name] = d
        s = res.summary
        print(f"NVE {name:26s} steps {res.steps_done:6d}/{res.steps}  drift "
              f"{'%.4g' % s.drift_mev_per_atom_per_ps if s else '-':>10s} meV/atom/ps  max|dE| "
              f"{'%.4g' % s.max_abs_deviation_mev_per_atom if s else '-':>9s} meV/atom  "
              f"{1e3 * res.cpu_s_per_step:.2f} ms CPU/step"
              + (f"  STOPPED ({res.stopped['kind']} at step {res.stopped['step']})" if res.stopped else ""),
              flush=True)
    return runs


def _nvt_runs(top, pos, mm, out):
    import copy

    runs, angles = {}, {}
    for name, model in (("conservative", MODELS["conservative"]), ("all_mm", None)):
        system = copy.deepcopy(mm) if model is None else mlmm.mixed_system(
            top, model=model, mm=copy.deepcopy(mm), strict=True, cutoff_nm=CUTOFF_NM)
        t0 = time.perf_counter()
        res = mlmm.run_nvt(system, top, pos, steps=Z["nvt_steps"], timestep_fs=NVT_DT_FS, temperature_K=TEMPERATURE_K,
                           friction_per_ps=FRICTION_PER_PS, frame_interval=Z["frame_every"], seed=SEED,
                           platform=PLATFORM, threads=1)
        d = res.as_dict()
        d.update(model=model or "amber14", run_s=time.perf_counter() - t0)
        if res.phi.size:
            d["basins"] = mlmm.basin_populations(res.phi, res.psi)
        runs[name] = d
        angles[name] = res
        print(f"NVT {name:26s} steps {res.steps_done:6d}/{res.steps}  frames {res.phi.size:5d}  "
              f"T {d['mean_temperature_K'] or float('nan'):.1f} K  out-of-domain events {res.out_of_domain_events}  "
              f"{1e3 * res.cpu_s_per_step:.2f} ms CPU/step", flush=True)
    labels = {"conservative": "ML/MM (organic-xtb + amber14/TIP3P)", "all_mm": "all-MM (amber14/TIP3P)"}
    # each panel says how long its run really went (a strict run stops when it leaves the domain)
    png = mlmm.ramachandran_plot({f"{labels[k]}, {r.steps_done * NVT_DT_FS / 1000:g} ps"
                                  + (" (stopped: out of domain)" if r.steps_done < r.steps else ""): (r.phi, r.psi)
                                  for k, r in angles.items()},
                                 out / "mlmm_ramachandran.png",
                                 title=f"alanine dipeptide in water, NVT {TEMPERATURE_K:g} K, "
                                       f"{Z['nvt_steps'] * NVT_DT_FS / 1000:g} ps planned")
    with open(out / "mlmm_nvt_phi_psi.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["run", "time_ps", "phi_deg", "psi_deg", "temperature_K"])
        for k, r in angles.items():
            for row in zip(r.time_ps, r.phi, r.psi, r.temperature_K):
                w.writerow([k] + [f"{x:.6g}" for x in row])
    return runs, png.name


def _estimate_full_cpu_s(nve, nvt, n_atoms, n_atoms_full) -> dict:
    """CPU seconds of the full run from this run's per-step CPU times: the all-MM part scaled by
    the atom count (PME ~ N), the ML part (ML/MM minus all-MM per step) as measured."""
    scale = n_atoms_full / n_atoms
    full = SIZES["full"]
    mm_nve, mm_nvt = nve["all_mm"]["cpu_s_per_step"], nvt["all_mm"]["cpu_s_per_step"]
    out = {}
    for name, r in nve.items():
        ml = max(r["cpu_s_per_step"] - mm_nve, 0.0) if name != "all_mm" else 0.0
        out[f"nve_{name}"] = full["nve_steps"] * (mm_nve * scale + ml)
    for name, r in nvt.items():
        ml = max(r["cpu_s_per_step"] - mm_nvt, 0.0) if name != "all_mm" else 0.0
        out[f"nvt_{name}"] = full["nvt_steps"] * (mm_nvt * scale + ml)
    out["total"] = sum(out.values())
    return out


def main(argv=None):
    import argparse

    global PLATFORM
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--platform", choices=mlmm.PLATFORMS, default=PLATFORM,
                        help="OpenMM platform of every run (default CPU, one thread)")
    PLATFORM = parser.parse_args(argv).platform
    out = default_results_dir()
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    top22, pos22 = mlmm.alanine_dipeptide_topology()
    top, pos = mlmm.solvate(top22, pos22, padding_nm=Z["padding_nm"], cutoff_nm=CUTOFF_NM)
    mm = mlmm.mm_system(top, CUTOFF_NM)
    n_atoms = top.getNumAtoms()
    n_water = sum(1 for r in top.residues() if r.name == "HOH")
    box_nm = top.getPeriodicBoxVectors()[0][0].value_in_unit(u.nanometer)
    print(f"[{SIZE}] alanine dipeptide + {n_water} TIP3P waters: {n_atoms} atoms, {box_nm:.3g} nm cube", flush=True)
    import copy

    start = mlmm.minimized(copy.deepcopy(mm), top, pos, iterations=Z["minimize"], platform=PLATFORM, threads=1)
    phi0, psi0 = mlmm.phi_psi(start, top)
    nve = _nve_runs(top, start, mm, out)
    nvt, png = _nvt_runs(top, start, mm, out)

    figures = {"nve": nve, "nvt": nvt}
    drift = {k: (r["drift"] or {}).get("drift_mev_per_atom_per_ps") for k, r in nve.items()}
    for k, v in drift.items():
        figures[f"nve_{k}_drift_mev_per_atom_per_ps"] = v
        figures[f"nve_{k}_complete"] = nve[k]["stopped"] is None
    if drift["conservative"] and drift["direct"] is not None:
        figures["direct_over_conservative_abs_drift_ratio"] = abs(drift["direct"]) / abs(drift["conservative"])
    if drift["conservative"] is not None and drift["all_mm"]:
        figures["conservative_over_all_mm_abs_drift_ratio"] = abs(drift["conservative"]) / abs(drift["all_mm"])
    figures["out_of_domain_events"] = {f"nve_{k}": int((r["stopped"] or {}).get("kind") == "out_of_domain")
                                       for k, r in nve.items()} | {
        f"nvt_{k}": r["out_of_domain_events"] for k, r in nvt.items()}
    figures["nvt_conservative_complete_without_out_of_domain"] = nvt["conservative"]["stopped"] is None
    for k in ("conservative", "all_mm"):
        figures[f"nvt_{k}_cpu_ms_per_step"] = 1e3 * nvt[k]["cpu_s_per_step"]
        figures[f"nve_{k}_cpu_ms_per_step"] = 1e3 * nve[k]["cpu_s_per_step"]
    figures["ml_over_mm_nvt_cost_ratio"] = nvt["conservative"]["cpu_s_per_step"] / nvt["all_mm"]["cpu_s_per_step"]
    figures["ramachandran_png"] = png
    figures["nvt_phi_psi_csv"] = "mlmm_nvt_phi_psi.csv"
    figures["start_phi_psi_deg"] = [float(phi0), float(psi0)]
    figures["wall_s_total"] = time.perf_counter() - t_start
    if SIZE != "full":
        full_top, _ = mlmm.solvate(top22, pos22, padding_nm=SIZES["full"]["padding_nm"], cutoff_nm=CUTOFF_NM)
        est = _estimate_full_cpu_s(nve, nvt, n_atoms, full_top.getNumAtoms())
        figures["estimated_full_run_cpu_s"] = est
        figures["full_n_atoms"] = full_top.getNumAtoms()
        print(f"estimated CPU time of the full run ({full_top.getNumAtoms()} atoms, "
              f"{SIZES['full']['nve_steps']} NVE steps x 4 runs, {SIZES['full']['nvt_steps']} NVT steps x 2 runs) "
              f"from this {SIZE} run: {est['total'] / 60:.0f} min "
              + ", ".join(f"{k} {v / 60:.1f} min" for k, v in est.items() if k != "total"), flush=True)
    path = write_result(
        "mlmm", figures, dtype=torch.float64, device="cpu", seeds=[SEED],
        params={"size": SIZE, **Z, "n_atoms": n_atoms, "n_water": n_water, "box_nm": box_nm, "cutoff_nm": CUTOFF_NM,
                "nve_dt_fs": NVE_DT_FS, "nvt_dt_fs": NVT_DT_FS, "temperature_K": TEMPERATURE_K,
                "friction_per_ps": FRICTION_PER_PS, "csv_every_steps": CSV_EVERY, "platform": PLATFORM,
                "openmm_threads": 1, "torch_threads": 1, "forcefield": list(mlmm.AMBER_FILES),
                "constraints": "rigid water (SETTLE) only; no CMMotionRemover", "ml_atoms": "the solute (22)",
                "embedding": "openmm-ml mechanical", "models": MODELS, "strict": True,
                "start": "all-MM minimised box, Maxwell-Boltzmann velocities at 300 K (seed)"})
    print(path)


if __name__ == "__main__":
    main()

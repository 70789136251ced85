"""NVE energy drift inside the engines' own loops: ASE ``VelocityVerlet`` and OpenMM
``VerletIntegrator`` (Reference platform), for

- ``conservative``: the trained ``NeuralPotential`` (shipped ``cu-emt``),
- ``direct``: the ``DirectForceModel`` control trained on the same data with the same budget
  (shipped ``cu-emt-direct``),
- ``emt``: ASE's EMT itself, the reference the models were trained on (in OpenMM through openmm-ml's
  ``"ase"`` potential),

from the same starts: fcc Cu, 108 atoms, rattled and given Maxwell-Boltzmann velocities at
2 x 300 K (so each run equilibrates near 300 K) with one seed per start, ``SEEDS`` (5) independent
starts, 5 ps per run at a 4 fs time step. Every model runs every start in ASE; OpenMM runs the
first start of each model (the engine cross-check: same start, same integrator, same figures).
Every run is measured by lawful's one drift accumulator (ASE: ``DriftObserver``; OpenMM:
``DriftReporter``). Figures are per start and, over the starts, mean ± spread (``spread``: mean,
sample std, min, max, n) of the drift and of the per-start ratios model / EMT (same start), the
ratio of the mean |drift| over the starts, and the paired drift difference model - EMT in units of
its standard error (EMT's own drift is noise about zero at some starts). The
models' validation/test MAEs are read from the model files' training summaries. Float64, CPU, one
torch thread. ``LAWFUL_BENCH_QUICK=1`` shortens the runs and uses 3 starts;
``LAWFUL_BENCH_TINY=1`` runs 2 starts of 10 steps (CI smoke, not a result).
"""

from __future__ import annotations

import time

import numpy as np
import torch

torch.set_num_threads(1)

import openmm  # noqa: E402
from ase import units as ase_units  # noqa: E402
from ase.build import bulk  # noqa: E402
from ase.calculators.emt import EMT  # noqa: E402
from ase.md.velocitydistribution import Stationary, thermalize_momenta  # noqa: E402
from ase.md.verlet import VelocityVerlet  # noqa: E402
from openmm import app  # noqa: E402
from openmm import unit as u  # noqa: E402

from lawful.forcefields import load_model  # noqa: E402
from lawful.forcefields.shipped import shipped_model_path  # noqa: E402
from lawful.integrations.ase import LawfulCalculator  # noqa: E402
from lawful.integrations.benchmarking import quick_requested, spread, tiny_requested, write_result  # noqa: E402
from lawful.integrations.monitors import DriftObserver  # noqa: E402
from lawful.integrations.openmm import (DriftReporter, set_on_step_velocities, system_from_atoms,  # noqa: E402
                                        topology_from_atoms, velocities_from_ase)

QUICK, TINY = quick_requested(), tiny_requested()
DT_FS = 4.0
SEEDS = (0, 1) if TINY else (0, 1, 2) if QUICK else (0, 1, 2, 3, 4)  # independent starts
DURATION_FS = 40.0 if TINY else 1000.0 if QUICK else 5000.0  # 5 ps per run
INTERVAL = 2 if TINY else 10
TEMPERATURE_K = 300.0
SUMMARY_KEYS = ("val_force_mae_eV_per_A", "val_energy_mae_per_atom_eV", "test_force_mae_eV_per_A",
                "test_energy_mae_per_atom_eV", "epochs_run", "train_time_s", "n_train", "stop_reason")

#: ASE velocities (Å per ASE time unit) -> OpenMM velocities (nm/ps).


def start_atoms(seed: int):
    """Start ``seed``: fcc Cu 3x3x3 (108 atoms) rattled by 0.01 Å, velocities at 2 x 300 K."""
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((3, 3, 3))
    atoms.rattle(0.01, seed=1000 + seed)
    thermalize_momenta(atoms, temperature_K=2 * TEMPERATURE_K, rng=np.random.default_rng(7 + seed))
    Stationary(atoms)
    return atoms


def run_ase(calc, dt_fs, seed):
    atoms = start_atoms(seed)
    atoms.calc = calc
    dyn = VelocityVerlet(atoms, timestep=dt_fs * ase_units.fs)
    obs = DriftObserver(dyn)
    dyn.attach(obs, interval=INTERVAL)
    t0 = time.perf_counter()
    dyn.run(int(round(DURATION_FS / dt_fs)))
    wall = time.perf_counter() - t0
    return obs.summary().as_dict() | {"wall_s": wall, "final_temperature_K": float(atoms.get_temperature())}


def run_openmm(system, topology, positions, atoms, dt_fs):
    integ = openmm.VerletIntegrator(dt_fs * u.femtosecond)
    sim = app.Simulation(topology, system, integ, openmm.Platform.getPlatformByName("Reference"))
    sim.context.setPositions(positions)
    # the same on-step start as ASE's VelocityVerlet: v(-dt/2) for OpenMM's leapfrog
    set_on_step_velocities(sim.context, velocities_from_ase(atoms))
    reporter = DriftReporter(None, INTERVAL)
    sim.reporters.append(reporter)
    reporter.record(sim)
    t0 = time.perf_counter()
    sim.step(int(round(DURATION_FS / dt_fs)))
    wall = time.perf_counter() - t0
    return reporter.summary().as_dict() | {"wall_s": wall}


def main():
    results, maes = {}, {}
    from openmmml import MLPotential

    for name in ("emt", "conservative", "direct"):
        if name == "emt":
            make_calc = EMT
        else:
            model = load_model(shipped_model_path({"conservative": "cu-emt", "direct": "cu-emt-direct"}[name]))
            maes[name] = {k: model.training_summary.get(k) for k in SUMMARY_KEYS} | {"kind": type(model).__name__}
            make_calc = (lambda m=model: LawfulCalculator(m))
        for seed in SEEDS:
            key = f"{name}_seed{seed}"
            results[f"{key}_ase"] = run_ase(make_calc(), DT_FS, seed)
            print(key, "ase", results[f"{key}_ase"], flush=True)
        atoms = start_atoms(SEEDS[0])
        if name == "emt":
            top, positions = topology_from_atoms(atoms)
            system = MLPotential("ase").createSystem(top, calculator=EMT(), removeCMMotion=False)
        else:
            system, top, positions = system_from_atoms(atoms, model, backend="python")
        key = f"{name}_seed{SEEDS[0]}_openmm"
        results[key] = run_openmm(system, top, positions, atoms, DT_FS)
        print(key, results[key], flush=True)

    figures = {"runs": results, "models": maes}
    for name in ("emt", "conservative", "direct"):
        drifts = [results[f"{name}_seed{s}_ase"]["drift_mev_per_atom_per_ps"] for s in SEEDS]
        figures[f"{name}_ase_drift_mev_per_atom_per_ps"] = spread(drifts)
        figures[f"{name}_ase_abs_drift_mev_per_atom_per_ps"] = spread([abs(d) for d in drifts])
        figures[f"{name}_ase_max_dev_mev_per_atom"] = spread(
            [results[f"{name}_seed{s}_ase"]["max_abs_deviation_mev_per_atom"] for s in SEEDS])
        a, o = results[f"{name}_seed{SEEDS[0]}_ase"], results[f"{name}_seed{SEEDS[0]}_openmm"]
        figures[f"{name}_openmm_over_ase_drift_ratio_seed{SEEDS[0]}"] = (
            o["drift_mev_per_atom_per_ps"] / a["drift_mev_per_atom_per_ps"]
            if a["drift_mev_per_atom_per_ps"] != 0 else None)
    for name in ("conservative", "direct"):
        per_seed = {"abs_drift": [], "max_dev": [], "rms": []}
        for s in SEEDS:
            r, emt = results[f"{name}_seed{s}_ase"], results[f"emt_seed{s}_ase"]
            per_seed["abs_drift"].append(abs(r["drift_mev_per_atom_per_ps"])
                                         / max(abs(emt["drift_mev_per_atom_per_ps"]), 1e-12))
            per_seed["max_dev"].append(r["max_abs_deviation_mev_per_atom"] / emt["max_abs_deviation_mev_per_atom"])
            per_seed["rms"].append(r["rms_fluctuation_mev_per_atom"] / emt["rms_fluctuation_mev_per_atom"])
        for k, v in per_seed.items():
            figures[f"{name}_over_emt_ase_{k}_ratio"] = spread(v)
        # EMT's own drift is noise about zero at some starts, which makes per-start ratios of
        # |drift| ill-conditioned: also the ratio of the mean |drift| over the starts, and the
        # paired (same start) drift difference in units of its standard error
        model_abs = figures[f"{name}_ase_abs_drift_mev_per_atom_per_ps"]["mean"]
        emt_abs = figures["emt_ase_abs_drift_mev_per_atom_per_ps"]["mean"]
        figures[f"{name}_over_emt_ase_mean_abs_drift_ratio"] = model_abs / max(emt_abs, 1e-12)
        diff = spread([results[f"{name}_seed{s}_ase"]["drift_mev_per_atom_per_ps"]
                       - results[f"emt_seed{s}_ase"]["drift_mev_per_atom_per_ps"] for s in SEEDS])
        figures[f"{name}_minus_emt_ase_drift_mev_per_atom_per_ps"] = diff
        figures[f"{name}_minus_emt_ase_drift_over_standard_error"] = (
            diff["mean"] / (diff["std"] / len(SEEDS) ** 0.5) if diff["std"] > 0 else None)
    figures["goal"] = ("conservative |drift| within 2x of EMT's at the same dt and start: the per-start ratio's "
                       "mean + spread over the starts, ASE; OpenMM checked on the first start")
    path = write_result("drift", figures, dtype=torch.float64, device="cpu",
                        params={"n_atoms": 108, "dt_fs": DT_FS, "duration_fs": DURATION_FS, "starts": len(SEEDS),
                                "report_interval_steps": INTERVAL, "engines": {"ase": "every start",
                                                                               "openmm": "first start"},
                                "start_temperature_K": 2 * TEMPERATURE_K, "openmm_platform": "Reference",
                                "torch_threads": 1,
                                "structure": "fcc Cu 3x3x3 cubic, a=3.6 A, rattle 0.01 A (seed 1000+s), "
                                             "velocities rng 7+s"},
                        seeds=list(SEEDS))
    print(f"{'run':30s} {'drift meV/atom/ps':>18s} {'rms meV/atom':>13s} {'max|dE| meV/atom':>17s} {'drift/sKE':>10s}")
    for k, r in results.items():
        print(f"{k:30s} {r['drift_mev_per_atom_per_ps']:18.3e} {r['rms_fluctuation_mev_per_atom']:13.4f} "
              f"{r['max_abs_deviation_mev_per_atom']:17.4f} {r['drift_over_sigma_ke']:10.4f}")
    for name in ("conservative", "direct"):
        sp = figures[f"{name}_over_emt_ase_abs_drift_ratio"]
        print(f"{name} |drift| / EMT's, over {sp['n']} starts: {sp['mean']:.3g} +- {sp['std']:.2g} "
              f"(min {sp['min']:.3g}, max {sp['max']:.3g}); mean |drift| / EMT's mean |drift| "
              f"{figures[f'{name}_over_emt_ase_mean_abs_drift_ratio']:.3g}; paired difference / s.e. "
              f"{figures[f'{name}_minus_emt_ase_drift_over_standard_error']}")
    print(path)


if __name__ == "__main__":
    main()

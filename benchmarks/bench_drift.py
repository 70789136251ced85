"""NVE energy drift inside the engines' own loops: ASE ``VelocityVerlet`` and OpenMM
``VerletIntegrator`` (Reference platform), for

- ``conservative``: the trained ``NeuralPotential`` (shipped ``cu-emt``),
- ``direct``: the ``DirectForceModel`` control trained on the same data with the same budget
  (shipped ``cu-emt-direct``),
- ``emt``: ASE's EMT itself, the reference the models were trained on (in OpenMM through openmm-ml's
  ``"ase"`` potential),

from the same start (fcc Cu, 108 atoms, Maxwell-Boltzmann velocities at 2 x 300 K, so the run
equilibrates near 300 K), at the same time steps (2 and 4 fs). Every run is measured by lawful's one drift
accumulator (ASE: ``DriftObserver``; OpenMM: ``DriftReporter``). The models' validation/test MAEs are
read from the model files' training summaries. Float64, CPU, one torch thread.
``LAWFUL_BENCH_QUICK=1`` shortens the runs.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

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
from lawful.integrations import units  # noqa: E402
from lawful.integrations.ase import LawfulCalculator  # noqa: E402
from lawful.integrations.benchmarking import write_result  # noqa: E402
from lawful.integrations.monitors import DriftObserver  # noqa: E402
from lawful.integrations.openmm import DriftReporter, system_from_atoms, topology_from_atoms  # noqa: E402

QUICK = os.environ.get("LAWFUL_BENCH_QUICK") == "1"
DTS_FS = (2.0, 4.0)  # every model and engine at each time step
DURATION_FS = 500.0 if QUICK else 2500.0  # 2.5 ps per run
INTERVAL = 10
TEMPERATURE_K = 300.0
SUMMARY_KEYS = ("val_force_mae_eV_per_A", "val_energy_mae_per_atom_eV", "test_force_mae_eV_per_A",
                "test_energy_mae_per_atom_eV", "epochs_run", "train_time_s", "n_train", "stop_reason")

#: ASE velocities (Å per ASE time unit) -> OpenMM velocities (nm/ps).
_NM_PS_PER_ASE_VELOCITY = units.NM_PER_ANGSTROM * ase_units.fs * units.FS_PER_PS


def start_atoms():
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((3, 3, 3))
    atoms.rattle(0.01, seed=1)
    thermalize_momenta(atoms, temperature_K=2 * TEMPERATURE_K, rng=np.random.default_rng(7))
    Stationary(atoms)
    return atoms


def run_ase(calc, dt_fs):
    atoms = start_atoms()
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
    sim.context.setVelocities(atoms.get_velocities() * _NM_PS_PER_ASE_VELOCITY)
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
        atoms = start_atoms()
        if name == "emt":
            make_calc = EMT
            top, positions = topology_from_atoms(atoms)
            system = MLPotential("ase").createSystem(top, calculator=EMT(), removeCMMotion=False)
        else:
            model = load_model(shipped_model_path({"conservative": "cu-emt", "direct": "cu-emt-direct"}[name]))
            maes[name] = {k: model.training_summary.get(k) for k in SUMMARY_KEYS} | {"kind": type(model).__name__}
            make_calc = (lambda m=model: LawfulCalculator(m))
            system, top, positions = system_from_atoms(atoms, model, backend="python")
        for dt in DTS_FS:
            key = f"{name}_dt{dt:g}fs"
            results[f"{key}_ase"] = run_ase(make_calc(), dt)
            print(key, "ase", results[f"{key}_ase"], flush=True)
            results[f"{key}_openmm"] = run_openmm(system, top, positions, atoms, dt)
            print(key, "openmm", results[f"{key}_openmm"], flush=True)

    figures = {"runs": results, "models": maes}
    for dt in DTS_FS:
        for engine in ("ase", "openmm"):
            emt = results[f"emt_dt{dt:g}fs_{engine}"]
            for name in ("conservative", "direct"):
                r = results[f"{name}_dt{dt:g}fs_{engine}"]
                tag = f"{name}_over_emt_{engine}_dt{dt:g}fs"
                figures[f"{tag}_abs_drift_ratio"] = (
                    abs(r["drift_mev_per_atom_per_ps"]) / max(abs(emt["drift_mev_per_atom_per_ps"]), 1e-12))
                figures[f"{tag}_max_dev_ratio"] = (
                    r["max_abs_deviation_mev_per_atom"] / emt["max_abs_deviation_mev_per_atom"])
                figures[f"{tag}_rms_ratio"] = r["rms_fluctuation_mev_per_atom"] / emt["rms_fluctuation_mev_per_atom"]
    figures["goal"] = "conservative |drift| within 2x of EMT's at the same dt, in both engines"
    path = write_result("drift", figures, dtype=torch.float64, device="cpu",
                        params={"n_atoms": 108, "dts_fs": list(DTS_FS), "duration_fs": DURATION_FS,
                                "report_interval_steps": INTERVAL,
                                "start_temperature_K": 2 * TEMPERATURE_K, "openmm_platform": "Reference",
                                "torch_threads": 1, "structure": "fcc Cu 3x3x3 cubic, a=3.6 A, rattle 0.01 A"})
    print(f"{'run':30s} {'drift meV/atom/ps':>18s} {'rms meV/atom':>13s} {'max|dE| meV/atom':>17s} {'drift/sKE':>10s}")
    for k, r in results.items():
        print(f"{k:30s} {r['drift_mev_per_atom_per_ps']:18.3e} {r['rms_fluctuation_mev_per_atom']:13.4f} "
              f"{r['max_abs_deviation_mev_per_atom']:17.4f} {r['drift_over_sigma_ke']:10.4f}")
    print(path)


if __name__ == "__main__":
    main()

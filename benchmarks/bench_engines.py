"""Engine overhead at N ~ 1000 atoms (fcc Cu, float64, CPU, one torch thread), side by side in one run:

- bare model energy+forces: ``model.evaluate`` with prebuilt neighbour pairs (the model's own work
  only) and with its own neighbour search per call;
- one ASE ``VelocityVerlet`` step with :class:`LawfulCalculator`;
- one OpenMM ``VerletIntegrator`` step (Reference platform) with ``create_force(backend="python")``
  (and ``backend="torch"`` when openmmtorch is installed);
- one OpenMM step with openmm-ml's ``"ase"`` potential wrapping the same ``LawfulCalculator``.

Ratios are against the bare model with prebuilt pairs (the strictest baseline: every adapter also
maintains its Verlet list). The measurements are interleaved in rounds so machine-load drifts hit
every engine alike; each sample averages STEPS calls or steps; medians are reported. The ratios
use the process CPU time (one torch thread; OpenMM's Reference platform and ASE run in the same
process), because on a shared machine wall time mostly measures waiting for a core; wall-time
ratios are written beside them (``*_wall_ratio``). Uses the shipped model ``cu-emt`` when present,
else a freshly initialised NeuralPotential of the same default architecture (timing does not depend
on the weights). Each ratio is also given per round (the same round's bare-model sample as the
denominator) with its spread across rounds (``ratio_spread``: mean, std, min, max, n).
``LAWFUL_BENCH_QUICK=1`` shrinks the sizes; ``LAWFUL_BENCH_TINY=1`` to the smallest (CI smoke).
"""

from __future__ import annotations

import statistics
import time

import numpy as np
import torch

torch.set_num_threads(1)

import openmm  # noqa: E402
from ase import units as ase_units  # noqa: E402
from ase.build import bulk  # noqa: E402
from ase.md.velocitydistribution import thermalize_momenta  # noqa: E402
from ase.md.verlet import VelocityVerlet  # noqa: E402
from openmm import unit as u  # noqa: E402

from lawful.forcefields import NeuralPotential, load_model  # noqa: E402
from lawful.forcefields.shipped import shipped_model_path  # noqa: E402
from lawful.integrations.ase import LawfulCalculator  # noqa: E402
from lawful.integrations.benchmarking import quick_requested, spread, tiny_requested, write_result  # noqa: E402
from lawful.integrations.openmm import available_backends, system_from_atoms, topology_from_atoms  # noqa: E402
from lawful.kernels.neighbors import neighbor_list  # noqa: E402

QUICK, TINY = quick_requested(), tiny_requested()
MODEL_FILE = shipped_model_path("cu-emt")
REPEATS = 2 if TINY else 3 if QUICK else 9
STEPS = 1 if TINY else 3 if QUICK else 5  # MD steps per timed sample (per-step time = sample / STEPS)
DT_FS = 2.0


def _model():
    if MODEL_FILE.is_file():
        return load_model(MODEL_FILE), str(MODEL_FILE.name)
    return NeuralPotential(species=["Cu"], cutoff=4.5, dtype=torch.float64), "NeuralPotential(random init)"


def _atoms(size):
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(size)
    atoms.rattle(0.05, seed=0)
    thermalize_momenta(atoms, temperature_K=300, rng=np.random.default_rng(0))
    return atoms


def _timer(fn, steps):
    """A sample: (CPU seconds of this process, wall seconds) per call/step, averaged over ``steps``."""
    def run():
        c0, t0 = time.process_time(), time.perf_counter()
        fn()
        return (time.process_time() - c0) / steps, (time.perf_counter() - t0) / steps
    return run


def main():
    size = (2, 2, 2) if TINY else (4, 4, 4) if QUICK else (6, 6, 7)  # 32 / 256 / 1008 atoms
    model, model_name = _model()
    atoms = _atoms(size)
    n = len(atoms)
    pos = torch.tensor(atoms.positions, dtype=torch.float64)
    cell = torch.tensor(atoms.cell.array, dtype=torch.float64)
    pairs = neighbor_list(pos, model.cutoff, cell, True)

    cases = {}

    def repeat(fn):
        def run():
            for _ in range(STEPS):
                fn()
        return run

    # every sample runs STEPS calls / MD steps, so all cases are averaged alike
    cases["bare_prebuilt_pairs"] = _timer(
        repeat(lambda: model.evaluate(pos, atoms.numbers, cell=cell, pbc=True, pairs=pairs)), STEPS)
    cases["bare_own_neighbor_search"] = _timer(
        repeat(lambda: model.evaluate(pos, atoms.numbers, cell=cell, pbc=True)), STEPS)

    ase_atoms = atoms.copy()
    ase_atoms.calc = LawfulCalculator(model)
    dyn = VelocityVerlet(ase_atoms, timestep=DT_FS * ase_units.fs)
    cases["ase_md_step"] = _timer(lambda: dyn.run(STEPS), STEPS)

    platform = openmm.Platform.getPlatformByName("Reference")

    def openmm_case(system, positions):
        integ = openmm.VerletIntegrator(DT_FS * u.femtosecond)
        ctx = openmm.Context(system, integ, platform)
        ctx.setPositions(positions)
        ctx.setVelocitiesToTemperature(300 * u.kelvin, 1)
        return _timer(lambda: integ.step(STEPS), STEPS), ctx

    keep = []
    system, _, positions = system_from_atoms(atoms, model, backend="python")
    cases["openmm_step_python"], c = openmm_case(system, positions)
    keep.append(c)
    if "torch" in available_backends():
        system_t, _, _ = system_from_atoms(atoms, model, backend="torch")
        cases["openmm_step_torch"], c = openmm_case(system_t, positions)
        keep.append(c)
    try:
        from openmmml import MLPotential

        top, positions = topology_from_atoms(atoms)
        sys_ase = MLPotential("ase").createSystem(top, calculator=LawfulCalculator(model), removeCMMotion=False)
        cases["openmmml_ase_step"], c = openmm_case(sys_ase, positions)
        keep.append(c)
    except ImportError:
        pass

    for fn in cases.values():  # warm-up (first neighbour list builds, allocations)
        fn()
    samples = {k: [] for k in cases}
    names = list(cases)
    for r in range(REPEATS):  # interleaved rounds, the order rotated each round
        for k in names[r % len(names):] + names[:r % len(names)]:
            samples[k].append(cases[k]())
    cpu = {k: statistics.median(c for c, _ in v) for k, v in samples.items()}
    wall = {k: statistics.median(w for _, w in v) for k, v in samples.items()}
    base = cpu["bare_prebuilt_pairs"]
    figures = {f"{k}_cpu_s": v for k, v in cpu.items()}
    figures.update({f"{k}_wall_s": v for k, v in wall.items()})
    # ratios of process CPU time: on a shared machine wall time mostly measures waiting for a core
    figures.update({f"{k}_ratio": v / base for k, v in cpu.items() if k != "bare_prebuilt_pairs"})
    figures.update({f"{k}_wall_ratio": v / wall["bare_prebuilt_pairs"] for k, v in wall.items()
                    if k != "bare_prebuilt_pairs"})
    figures["ase_over_bare_own_search_ratio"] = cpu["ase_md_step"] / cpu["bare_own_neighbor_search"]
    figures["openmm_python_over_bare_own_search_ratio"] = (cpu["openmm_step_python"]
                                                           / cpu["bare_own_neighbor_search"])
    figures["goals"] = {"openmm_step_python_ratio<=": 1.05, "ase_md_step_ratio<=": 1.10}
    # the same ratios round by round (numerator and denominator from one round), and their spread
    figures["ratio_spread"] = {
        k: spread([samples[k][r][0] / samples["bare_prebuilt_pairs"][r][0] for r in range(REPEATS)])
        for k in names if k != "bare_prebuilt_pairs"}
    figures["samples_s"] = samples
    path = write_result("engines", figures, dtype=torch.float64, device="cpu",
                        params={"n_atoms": n, "model": model_name, "repeats": REPEATS, "steps_per_sample": STEPS,
                                "dt_fs": DT_FS, "torch_threads": 1, "openmm_platform": "Reference",
                                "baseline": "bare_prebuilt_pairs"}, seeds=[0])
    for k in cases:
        sp = figures["ratio_spread"].get(k)
        band = f" (rounds {sp['mean']:.3f} +- {sp['std']:.3f})" if sp else ""
        print(f"{k:28s} cpu {cpu[k] * 1e3:8.2f} ms  x{cpu[k] / base:5.3f}{band}   "
              f"wall {wall[k] * 1e3:8.2f} ms  x{wall[k] / wall['bare_prebuilt_pairs']:5.3f}")
    print(path)


if __name__ == "__main__":
    main()

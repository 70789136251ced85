"""Soak: do memory and time per step stay flat over long runs? (issue 12; a benchmark, not a test)

Three long runs in one process, one after the other, each sampled every SAMPLE steps:

- ASE ``VelocityVerlet`` NVE, 108 Cu atoms (3x3x3 fcc), the shipped model ``cu-emt`` through
  :class:`LawfulCalculator`, 2 fs;
- OpenMM ``VerletIntegrator`` NVE (Reference platform), the same atoms and model through
  ``create_force(backend="python")`` (:func:`system_from_atoms`), 2 fs;
- ``lawful.fluids.run`` on the Kolmogorov-flow scene at 64 x 64 with a random-init
  :class:`DivergenceFreeCorrector` (seeded), keeping only the last record (``keep="last"``).

At every sample: the resident set size (``VmRSS`` from ``/proc/self/status``, MiB; no psutil) and
the wall and CPU (process) time of the steps since the previous sample, given per 1000 steps.
Figures per run: the samples themselves, the RSS at the first and last sample and its growth in
between (the first interval holds one-off allocations: compilation, neighbour lists, buffers), the
time per 1000 steps (spread), and the ratio of the last fifth's median to the first fifth's. Nothing
is asserted. ``LAWFUL_BENCH_QUICK=1``: 2000 steps per run sampled every 200;
``LAWFUL_BENCH_TINY=1``: 100 steps sampled every 20. Full: 10^5 steps sampled every 1000 (~15
minutes or more on one idle core, about two hours on a busy one; run it alone, e.g.
``nice -n 10 python benchmarks/bench_soak.py``, or one part at a time with ``--only ase``;
``--steps`` / ``--sample`` change the sizes). Writes one result per part, ``soak_ase.json``,
``soak_openmm.json`` and ``soak_fluid.json``, each as soon as its part ends (the same files with or
without ``--only``).
"""

from __future__ import annotations

import gc
import statistics
import time

import numpy as np
import torch

torch.set_num_threads(1)

from lawful.integrations.benchmarking import quick_requested, spread, tiny_requested, write_result  # noqa: E402

QUICK, TINY = quick_requested(), tiny_requested()
STEPS = 100 if TINY else 2000 if QUICK else 100_000
SAMPLE = 20 if TINY else 200 if QUICK else 1000
MODEL = "cu-emt"
DT_FS = 2.0
TEMPERATURE_K = 300.0
FLUID_N = 64
SEED = 0


def rss_mib() -> float:
    """This process's resident set size in MiB, from /proc/self/status (Linux)."""
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0  # kB
    return float("nan")


class Sampler:
    """Records (step, RSS MiB, wall s and CPU s per 1000 steps since the last sample)."""

    def __init__(self):
        self.samples = []
        self._last = None

    def start(self, step: int = 0) -> None:
        gc.collect()
        self._last = (step, time.perf_counter(), time.process_time())

    def __call__(self, step: int) -> None:
        wall, cpu = time.perf_counter(), time.process_time()
        step0, wall0, cpu0 = self._last
        per = 1000.0 / max(step - step0, 1)
        self.samples.append({"step": int(step), "rss_mib": rss_mib(), "wall_s_per_1000": (wall - wall0) * per,
                             "cpu_s_per_1000": (cpu - cpu0) * per})
        self._last = (step, time.perf_counter(), time.process_time())

    def figures(self) -> dict:
        s = self.samples
        rss = [x["rss_mib"] for x in s]
        wall = [x["wall_s_per_1000"] for x in s]
        cpu = [x["cpu_s_per_1000"] for x in s]
        fifth = max(len(s) // 5, 1)
        return {
            "steps": s[-1]["step"] if s else 0,
            "rss_first_mib": rss[0],
            "rss_last_mib": rss[-1],
            "rss_max_mib": max(rss),
            "rss_growth_mib": rss[-1] - rss[0],
            "rss_growth_kib_per_1000_steps": (rss[-1] - rss[0]) * 1024.0
            / max((s[-1]["step"] - s[0]["step"]) / 1000.0, 1e-9),
            "wall_s_per_1000_steps": spread(wall),
            "cpu_s_per_1000_steps": spread(cpu),
            "cpu_last_over_first_fifth_ratio": statistics.median(cpu[-fifth:]) / statistics.median(cpu[:fifth]),
            "samples": s,
        }


def _atoms():
    from ase.build import bulk
    from ase.md.velocitydistribution import Stationary, thermalize_momenta

    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(3)  # 108 atoms
    thermalize_momenta(atoms, TEMPERATURE_K, rng=np.random.default_rng(SEED))
    Stationary(atoms)
    return atoms


def soak_ase() -> dict:
    from ase import units as ase_units
    from ase.md.verlet import VelocityVerlet

    from lawful.integrations.ase import LawfulCalculator
    from lawful.integrations.monitors import DriftObserver

    atoms = _atoms()
    atoms.calc = LawfulCalculator(MODEL)
    dyn = VelocityVerlet(atoms, timestep=DT_FS * ase_units.fs)
    drift = DriftObserver(dyn)
    dyn.attach(drift, interval=SAMPLE)
    sampler = Sampler()
    sampler.start()
    dyn.attach(lambda: sampler(dyn.nsteps) if dyn.nsteps else None, interval=SAMPLE)
    dyn.run(STEPS)
    out = sampler.figures()
    out["drift_mev_per_atom_per_ps"] = drift.summary().drift_mev_per_atom_per_ps
    out["n_atoms"] = len(atoms)
    return out


def soak_openmm() -> dict:
    import openmm
    from openmm import app

    from lawful.integrations import units
    from lawful.integrations.openmm import (DriftReporter, lawful_errors, set_on_step_velocities, system_from_atoms,
                                            velocities_from_ase)

    atoms = _atoms()
    system, top, positions = system_from_atoms(atoms, MODEL, backend="python")
    sim = app.Simulation(top, system, openmm.VerletIntegrator(DT_FS * units.PS_PER_FS),
                         openmm.Platform.getPlatformByName("Reference"))
    sim.context.setPositions(positions)
    reporter = DriftReporter(None, SAMPLE, n_atoms=len(atoms))
    sim.reporters.append(reporter)
    sampler = Sampler()
    with lawful_errors():
        # the same on-step start as the ASE soak: v(-dt/2) for OpenMM's leapfrog
        set_on_step_velocities(sim.context, velocities_from_ase(atoms))
        reporter.record(sim)
        sampler.start()
        for done in range(SAMPLE, STEPS + 1, SAMPLE):
            sim.step(SAMPLE)
            sampler(done)
    out = sampler.figures()
    out["drift_mev_per_atom_per_ps"] = reporter.summary().drift_mev_per_atom_per_ps
    out["n_atoms"] = len(atoms)
    return out


def soak_fluid() -> dict:
    from lawful.fluids import DivergenceFreeCorrector, run, scenes

    torch.manual_seed(SEED)
    scene = scenes.kolmogorov(n=FLUID_N)
    corrector = DivergenceFreeCorrector.for_scene(scene)
    sampler = Sampler()
    last = {}

    def callback(state, record):
        step = int(record["step"])
        if step % SAMPLE == 0:
            sampler(step)
            last.update(div_max_rel=float(record["div_max_rel"]), kinetic_energy=float(record["kinetic_energy"]))

    sampler.start()
    records = run(scene, steps=STEPS, corrector=corrector, callback=callback, keep="last")
    out = sampler.figures()
    out["records_kept"] = len(records)
    out["last"] = last
    out["grid"] = [FLUID_N, FLUID_N]
    return out


RUNS = {"ase": soak_ase, "openmm": soak_openmm, "fluid": soak_fluid}


def main(argv=None) -> None:
    import argparse

    global STEPS, SAMPLE
    parser = argparse.ArgumentParser(description="Soak benchmark: RSS and time per 1000 steps over long runs.")
    parser.add_argument("--only", choices=sorted(RUNS), action="append",
                        help="run only this part (repeatable; default: all three); writes soak_<part>.json")
    parser.add_argument("--steps", type=int, default=None, help=f"steps per run (default {STEPS})")
    parser.add_argument("--sample", type=int, default=None, help=f"steps between samples (default {SAMPLE})")
    args = parser.parse_args(argv)
    if args.steps is not None:
        STEPS = args.steps
    if args.sample is not None:
        SAMPLE = args.sample
    if STEPS <= 0 or SAMPLE <= 0 or STEPS % SAMPLE:
        parser.error(f"--steps {STEPS} must be a positive multiple of --sample {SAMPLE}")
    parts = args.only or list(RUNS)
    rss_start = rss_mib()
    for name in parts:
        # one file per part (soak_ase.json, soak_openmm.json, soak_fluid.json), written as soon as
        # the part ends: the plain run and ``--only PART`` write the same files, and a run stopped
        # part-way keeps the parts it finished
        figures = {"rss_start_mib": rss_start}
        fn = RUNS[name]
        t0 = time.perf_counter()
        figures[name] = fn()
        figures[name]["seconds"] = time.perf_counter() - t0
        f = figures[name]
        print(f"{name}: {f['steps']} steps in {f['seconds']:.0f} s; RSS {f['rss_first_mib']:.0f} -> "
              f"{f['rss_last_mib']:.0f} MiB; CPU s/1000 steps median "
              f"{statistics.median(f['cpu_s_per_1000_steps']['samples']):.3g}, last/first fifth "
              f"{f['cpu_last_over_first_fifth_ratio']:.3g}", flush=True)
        path = write_result("soak_" + name, figures, dtype="float64 (MD), fluid scene default", device="cpu",
                            params={"steps": STEPS, "sample_every": SAMPLE, "model": MODEL, "dt_fs": DT_FS,
                                    "temperature_K": TEMPERATURE_K, "n_atoms": 108, "fluid_scene": "kolmogorov",
                                    "fluid_n": FLUID_N, "quick": QUICK, "tiny": TINY},
                            seeds=[SEED])
        print(f"wrote {path}", flush=True)


if __name__ == "__main__":
    main()

"""Batched evaluation: structures per second of ``lawful.forcefields.evaluate_batch`` (one
neighbour search and one model call per chunk of about 1000 atoms, the default) against a loop of
single ``model.evaluate`` calls, for 32, 256 and 1000 structures; the CPU time of the same batch
in one chunk is reported too (``batch_one_chunk_*``).

The structures are a screening-like mix of copper: fcc cells of 4 to 32 atoms (cubic and
primitive repeats, rattled by 0.05 Å, fully periodic, 3/4 of them) and 6- to 13-atom clusters
without a cell (1/4), energies + forces + stress (periodic ones). NeuralPotential with its default
architecture, cutoff 4.5 Å, float64, CPU, one torch thread. Times are the best of a few repeats
(wall and CPU time of this process; the machine may be shared). The batched results are checked
against the loop (largest force difference reported).

``LAWFUL_BENCH_QUICK=1``: 32 and 256 structures; ``LAWFUL_BENCH_TINY=1``: 8 and 32 (CI smoke).
Run:  .venv/bin/python benchmarks/bench_batch.py
"""

from __future__ import annotations

import time

import numpy as np
import torch
from ase.build import bulk
from ase.cluster import Icosahedron

from lawful.forcefields import NeuralPotential, evaluate_batch
from lawful.integrations.benchmarking import quick_requested, tiny_requested, write_result

SEED = 0
CUTOFF = 4.5


def structures(n: int, seed: int = SEED) -> list:
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        if k % 4 == 3:
            a = Icosahedron("Cu", 2) if k % 8 == 3 else Icosahedron("Cu", 2)[:6 + int(rng.integers(0, 7))]
            a.pbc = False
        else:
            cubic = bool(rng.integers(0, 2))
            reps = tuple(int(r) for r in rng.integers(1, 3 if cubic else 4, 3))
            a = bulk("Cu", "fcc", a=3.61 * (1 + 0.02 * rng.normal()), cubic=cubic).repeat(reps)
        a.rattle(0.05, seed=int(rng.integers(1 << 30)))
        out.append(a)
    return out


def loop_eval(model, structs):
    return [model.evaluate(a.positions, a.numbers, a.cell[:] if any(a.pbc) else None, a.pbc, stress=all(a.pbc))
            for a in structs]


def best_of(fn, repeat):
    walls, cpus, res = [], [], None
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        res = fn()
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    return min(walls), min(cpus), res


def main() -> int:
    torch.set_num_threads(1)
    tiny, quick = tiny_requested(), quick_requested()
    sizes = [8, 32] if tiny else ([32, 256] if quick else [32, 256, 1000])
    repeat = 1 if tiny else (2 if quick else 3)
    model = NeuralPotential(["Cu"], cutoff=CUTOFF, seed=SEED)
    with torch.no_grad():
        model.energy_scale.fill_(0.5)
    loop_eval(model, structures(4))                 # warm-up
    evaluate_batch(model, structures(4))
    figures = {}
    for n in sizes:
        structs = structures(n)
        atoms = sum(len(a) for a in structs)
        w_loop, c_loop, ref = best_of(lambda: loop_eval(model, structs), repeat)
        w_batch, c_batch, got = best_of(lambda: evaluate_batch(model, structs), repeat)
        w_one, c_one, _ = best_of(lambda: evaluate_batch(model, structs, chunk_atoms=None), repeat)
        diff = max(float((r["forces"] - g["forces"]).abs().max()) for r, g in zip(ref, got))
        figures[str(n)] = {
            "structures": n, "atoms": atoms,
            "loop_structures_per_s": n / w_loop, "batch_structures_per_s": n / w_batch,
            "loop_wall_s": w_loop, "batch_wall_s": w_batch, "loop_cpu_s": c_loop, "batch_cpu_s": c_batch,
            "speedup_wall_ratio": w_loop / w_batch, "speedup_cpu_ratio": c_loop / c_batch,
            "batch_one_chunk_structures_per_s": n / w_one, "batch_one_chunk_cpu_s": c_one,
            "max_force_difference_eV_per_A": diff,
        }
        print(f"{n:5d} structures ({atoms} atoms): loop {n / w_loop:8.1f}/s, batch {n / w_batch:8.1f}/s "
              f"(x{w_loop / w_batch:.1f} wall, x{c_loop / c_batch:.1f} CPU; one chunk x{c_loop / c_one:.1f} CPU), "
              f"max |dF| {diff:.1e} eV/A", flush=True)
    path = write_result("bench_batch", figures, dtype=torch.float64, device="cpu", seeds=[SEED],
                        params={"sizes": sizes, "repeat": repeat, "cutoff": CUTOFF, "model": model.config,
                                "chunk_atoms": 1000,
                                "mix": "3/4 periodic fcc Cu cells of 4-32 atoms, 1/4 clusters of 6-13 atoms"})
    print(f"written {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

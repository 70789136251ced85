"""Neighbour-list build time: O(N) cell list vs the O(N^2) all-images brute force.

fcc copper (a = 3.61 Å, thermally rattled by 0.05 Å), cutoff 5 Å, fully periodic, float64, CPU,
one torch thread. For N = 256, 500, 1000, 4000 atoms it times one build of ``neighbor_list``
(the cell list, eager and TorchScript-scripted) and of ``brute_force_neighbor_list`` (all pairs
over the 27 images, in blocks of a million distances), checks that both find the same pairs, and
writes ``benchmarks/results/bench_neighbors.json`` with the times and brute-force/cell-list
ratios. Times are the best of several calls, as CPU time of the calling thread (robust when other
processes share the cores) and as wall time. A Verlet list (skin 0.5 Å) reports its average cost
per step over a 40-step random walk (rebuilds included) and the cost of a step reusing the list.

Run:  .venv/bin/python benchmarks/bench_neighbors.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import warnings

import numpy as np
import torch

from lawful.integrations.benchmarking import write_result
from lawful.kernels.neighbors import VerletList, brute_force_neighbor_list, neighbor_list

A_CU = 3.61
CUTOFF = 5.0
SIZES = {256: (4, 4, 4), 500: (5, 5, 5), 1000: (5, 5, 10), 4000: (10, 10, 10)}


def fcc_copper(reps, rattle=0.05, seed=0):
    """fcc Cu supercell: positions (N, 3) Å float64 and the (3, 3) cell."""
    basis = np.array([[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])
    grid = np.array(np.meshgrid(*[np.arange(r) for r in reps], indexing="ij")).reshape(3, -1).T
    pos = (grid[:, None, :] + basis[None]).reshape(-1, 3) * A_CU
    pos += np.random.default_rng(seed).normal(0.0, rattle, pos.shape)
    return torch.tensor(pos), torch.diag(torch.tensor(reps, dtype=torch.float64) * A_CU)


def timed(fn, repeat, warmup=1):
    """Best wall time and best CPU time of this thread (ms) over ``repeat`` calls.

    With one torch thread, thread CPU time is all the work done and is not inflated when other
    processes share the cores (the wall time is reported as well)."""
    for _ in range(warmup):
        fn()
    wall, cpu = [], []
    for _ in range(repeat):
        w0, c0 = time.perf_counter(), time.thread_time()
        fn()
        cpu.append(time.thread_time() - c0)
        wall.append(time.perf_counter() - w0)
    return {"wall_ms": 1e3 * min(wall), "wall_median_ms": 1e3 * statistics.median(wall),
            "cpu_ms": 1e3 * min(cpu)}


def pair_set(nl):
    return set(zip(nl.i.tolist(), nl.j.tolist(), *nl.shifts.to(torch.int64).T.tolist()))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    parser.add_argument("--out", default=None, help="results directory")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    quick = args.quick or os.environ.get("LAWFUL_BENCH_QUICK") == "1"  # set by `lawful bench --quick`
    repeat = 5 if quick else 15
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        scripted = torch.jit.script(neighbor_list)
    figures = {}
    for n, reps in SIZES.items():
        pos, cell = fcc_copper(reps)
        assert len(pos) == n
        cl = timed(lambda: neighbor_list(pos, CUTOFF, cell, True), repeat)
        sc = timed(lambda: scripted(pos, CUTOFF, cell, True), repeat)
        bf = timed(lambda: brute_force_neighbor_list(pos, CUTOFF, cell, True),
                   repeat=1 if n > 1000 else max(2, repeat // 3), warmup=0 if n > 1000 else 1)
        nl = neighbor_list(pos, CUTOFF, cell, True)
        assert pair_set(brute_force_neighbor_list(pos, CUTOFF, cell, True)) == pair_set(nl)
        row = {
            "pairs": int(len(nl.i)),
            "cell_list_cpu_ms": cl["cpu_ms"],
            "cell_list_wall_ms": cl["wall_ms"],
            "cell_list_wall_median_ms": cl["wall_median_ms"],
            "cell_list_scripted_cpu_ms": sc["cpu_ms"],
            "brute_force_cpu_ms": bf["cpu_ms"],
            "brute_force_wall_ms": bf["wall_ms"],
            "brute_force_over_cell_list_ratio": bf["cpu_ms"] / cl["cpu_ms"],
        }
        # Verlet list: a random walk of 0.02 Å rms per step, 40 steps
        rng = np.random.default_rng(1)
        moves = [torch.tensor(rng.normal(0, 0.02, pos.shape)) for _ in range(40)]
        builds = []

        def verlet_run():
            vl = VerletList(CUTOFF, skin=0.5)
            walk = pos.clone()
            for d in moves:
                walk = walk + d
                vl.get(walk, cell, True)
            builds.append(vl.rebuilds)

        vt = timed(verlet_run, repeat=max(2, repeat // 5), warmup=0)
        row["verlet_cpu_ms_per_step_with_rebuilds"] = vt["cpu_ms"] / len(moves)
        row["verlet_builds_per_40_steps"] = builds[-1]
        vl = VerletList(CUTOFF, skin=0.5)
        vl.get(pos, cell, True)
        nudged = pos + 0.01
        row["verlet_cpu_ms_reused_list"] = timed(lambda: vl.get(nudged, cell, True), repeat)["cpu_ms"]
        assert vl.rebuilds == 1
        figures[f"N{n}"] = row
        print(n, {k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()},
              flush=True)
    path = write_result("bench_neighbors", figures, dtype=torch.float64, device="cpu",
                        params={"lattice": "fcc Cu", "a_angstrom": A_CU, "cutoff_angstrom": CUTOFF,
                                "rattle_angstrom": 0.05, "pbc": True, "torch_threads": 1,
                                "repeat": repeat,
                                "timing": "best of repeats; cpu = this thread's CPU time, wall too",
                                "verlet_skin_angstrom": 0.5, "verlet_step_rms_angstrom": 0.02},
                        out_dir=args.out)
    print("wrote", path)


if __name__ == "__main__":
    main()

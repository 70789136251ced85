"""Neighbour-list build time: lawful's O(N) cell list against real peers and the O(N^2) reference.

fcc copper (a = 3.61 Å, thermally rattled by 0.05 Å), cutoff 5 Å, fully periodic, float64, CPU,
one thread everywhere. For N = 256, 500, 1000, 4000 atoms it times one build of

* ``lawful``: ``kernels.neighbors.neighbor_list`` (the cell list, eager and TorchScript-scripted);
* ``vesin``: ``vesin.NeighborList(full_list=True).compute(..., "ijS")`` (C++ cell list, one thread),
  timed with the tensor -> numpy -> tensor conversions a drop-in replacement would need;
* ``ase``: ``ase.neighborlist.neighbor_list("ijS", ...)`` (numpy);
* ``brute_force_neighbor_list`` (all pairs over the 27 images, in blocks of a million distances),

checks that all four find exactly the same (i, j, shift) pairs, and reports the times and the
ratios ``*_over_lawful``. The same for the cases a replacement must not lose (``features``): a
4-atom cell smaller than the cutoff (many images), a thin sheared triclinic cell, a slab periodic
in two directions only, and a molecule without a cell. Times are the best of several calls, as
CPU time of the calling thread (robust when other processes share the cores) and as wall time. A
Verlet list (skin 0.5 Å) reports its average cost per step over a 40-step random walk (rebuilds
included) and the cost of a step reusing the list. vesin is an optional peer (``pip install
'lawful[bench]'``); without it its columns are None.

``LAWFUL_BENCH_QUICK=1``: fewer repeats; ``LAWFUL_BENCH_TINY=1``: 256 atoms only (CI smoke).
Run:  .venv/bin/python benchmarks/bench_neighbors.py [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import numpy as np
import torch

from lawful.integrations.benchmarking import quick_requested, tiny_requested, write_result
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


def _triple_set(i, j, shifts):
    i, j, shifts = np.asarray(i, dtype=np.int64), np.asarray(j, dtype=np.int64), np.asarray(shifts, dtype=np.int64)
    return set(zip(i.tolist(), j.tolist(), *shifts.T.tolist()))


def _vesin():
    try:
        import vesin
    except ImportError:
        return None
    return vesin


def vesin_build(vesin, pos, cutoff, cell, pbc):
    """vesin's full list as lawful's (i, j, shifts) tensors (conversions included)."""
    box = np.zeros((3, 3)) if cell is None else cell.numpy()
    i, j, s = vesin.NeighborList(cutoff=cutoff, full_list=True).compute(pos.numpy(), box, pbc, "ijS")
    return (torch.from_numpy(i.astype(np.int64)), torch.from_numpy(j.astype(np.int64)),
            torch.from_numpy(s.astype(np.float64)))


def ase_build(pos, cutoff, cell, pbc):
    from ase import Atoms
    from ase.neighborlist import neighbor_list as ase_neighbor_list

    atoms = Atoms(numbers=np.full(len(pos), 29), positions=pos.numpy(),
                  cell=np.zeros((3, 3)) if cell is None else cell.numpy(), pbc=pbc)
    return ase_neighbor_list("ijS", atoms, cutoff)


def feature_cases():
    """The systems a neighbour-list replacement must handle: (name, positions, cell or None, pbc)."""
    rng = np.random.default_rng(5)
    cases = []
    # 4-atom fcc cell (3.61 Å) with a 5 Å cutoff: every atom sees many images of itself
    basis = np.array([[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]]) * A_CU
    cases.append(("tiny_cell_4_atoms", basis + rng.normal(0, 0.05, basis.shape), np.eye(3) * A_CU, True))
    # thin, strongly sheared triclinic cell: 2.2 Å high along c, tilted a and b
    cell = np.array([[7.0, 0.0, 0.0], [4.5, 6.5, 0.0], [3.0, -2.5, 2.2]])
    frac = rng.uniform(0, 1, (24, 3))
    cases.append(("thin_triclinic_24_atoms", frac @ cell, cell, True))
    # slab: periodic in x and y, open along z
    slab, _ = fcc_copper((4, 4, 3))
    cases.append(("slab_pbc_TTF_192_atoms", slab.numpy(), np.diag([4 * A_CU, 4 * A_CU, 0.0]), [True, True, False]))
    # molecule-like cluster without any cell
    cluster = rng.normal(0, 4.0, (60, 3))
    cases.append(("cluster_no_cell_60_atoms", cluster, None, False))
    return cases


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    parser.add_argument("--out", default=None, help="results directory")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    tiny = tiny_requested()
    quick = args.quick or quick_requested()  # set by `lawful bench --quick`
    repeat = 2 if tiny else 5 if quick else 15
    sizes = {256: SIZES[256]} if tiny else SIZES
    vesin = _vesin()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        scripted = torch.jit.script(neighbor_list)
    figures = {}
    for n, reps in sizes.items():
        pos, cell = fcc_copper(reps)
        assert len(pos) == n
        cl = timed(lambda: neighbor_list(pos, CUTOFF, cell, True), repeat)
        sc = timed(lambda: scripted(pos, CUTOFF, cell, True), repeat)
        bf = timed(lambda: brute_force_neighbor_list(pos, CUTOFF, cell, True),
                   repeat=1 if n > 1000 else max(2, repeat // 3), warmup=0 if n > 1000 else 1)
        asn = timed(lambda: ase_build(pos, CUTOFF, cell, True), repeat)   # as many calls as lawful's (was a third)
        nl = neighbor_list(pos, CUTOFF, cell, True)
        reference = pair_set(nl)
        assert pair_set(brute_force_neighbor_list(pos, CUTOFF, cell, True)) == reference
        assert _triple_set(*ase_build(pos, CUTOFF, cell, True)) == reference
        row = {
            "pairs": int(len(nl.i)),
            "cell_list_cpu_ms": cl["cpu_ms"],
            "cell_list_wall_ms": cl["wall_ms"],
            "cell_list_wall_median_ms": cl["wall_median_ms"],
            "cell_list_scripted_cpu_ms": sc["cpu_ms"],
            "brute_force_cpu_ms": bf["cpu_ms"],
            "brute_force_wall_ms": bf["wall_ms"],
            "brute_force_over_cell_list_ratio": bf["cpu_ms"] / cl["cpu_ms"],
            "ase_cpu_ms": asn["cpu_ms"],
            "ase_over_lawful_ratio": asn["cpu_ms"] / cl["cpu_ms"],
            "ase_same_pairs": True,
            "vesin_cpu_ms": None, "vesin_over_lawful_ratio": None, "vesin_same_pairs": None,
        }
        if vesin is not None:
            vs = timed(lambda: vesin_build(vesin, pos, CUTOFF, cell, True), repeat)
            row["vesin_cpu_ms"] = vs["cpu_ms"]
            row["vesin_wall_ms"] = vs["wall_ms"]
            row["vesin_over_lawful_ratio"] = vs["cpu_ms"] / cl["cpu_ms"]
            row["vesin_same_pairs"] = _triple_set(*vesin_build(vesin, pos, CUTOFF, cell, True)) == reference
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
    features = {}
    for name, p, c, pbc in feature_cases():
        pos = torch.tensor(p, dtype=torch.float64)
        cell = None if c is None else torch.tensor(c, dtype=torch.float64)
        nl = neighbor_list(pos, CUTOFF, cell, pbc)
        reference = pair_set(brute_force_neighbor_list(pos, CUTOFF, cell, pbc))
        row = {"atoms": len(p), "pbc": pbc if isinstance(pbc, bool) else list(pbc), "pairs": int(len(nl.i)),
               "lawful_same_as_brute_force": pair_set(nl) == reference,
               "lawful_cpu_ms": timed(lambda: neighbor_list(pos, CUTOFF, cell, pbc), repeat)["cpu_ms"],
               "ase_same_pairs": _triple_set(*ase_build(pos, CUTOFF, cell, pbc)) == reference,
               "ase_cpu_ms": timed(lambda: ase_build(pos, CUTOFF, cell, pbc), repeat)["cpu_ms"]}
        row["ase_over_lawful_ratio"] = row["ase_cpu_ms"] / row["lawful_cpu_ms"]
        if vesin is not None:
            try:
                row["vesin_same_pairs"] = _triple_set(*vesin_build(vesin, pos, CUTOFF, cell, pbc)) == reference
                row["vesin_cpu_ms"] = timed(lambda: vesin_build(vesin, pos, CUTOFF, cell, pbc), repeat)["cpu_ms"]
                row["vesin_over_lawful_ratio"] = row["vesin_cpu_ms"] / row["lawful_cpu_ms"]
            except Exception as exc:  # a case vesin refuses is a finding, not a crash
                row["vesin_error"] = f"{type(exc).__name__}: {exc}"
        features[name] = row
        print(name, row, flush=True)
    figures["features"] = features
    figures["torchscript"] = {"lawful": True, "vesin_numpy": False,
                              "note": "vesin's numpy API cannot be scripted; vesin-torch (a separate package "
                                      "built per torch version) would be needed for openmm-torch export"}
    path = write_result("bench_neighbors", figures, dtype=torch.float64, device="cpu",
                        params={"lattice": "fcc Cu", "a_angstrom": A_CU, "cutoff_angstrom": CUTOFF,
                                "rattle_angstrom": 0.05, "pbc": True, "torch_threads": 1,
                                "repeat": repeat, "sizes": list(sizes),
                                "peers": {"vesin": getattr(vesin, "__version__", None), "ase": "ase.neighborlist"},
                                "timing": "best of repeats; cpu = this thread's CPU time, wall too",
                                "verlet_skin_angstrom": 0.5, "verlet_step_rms_angstrom": 0.02},
                        seeds=[0, 1, 5], out_dir=args.out)
    print("wrote", path)


if __name__ == "__main__":
    main()

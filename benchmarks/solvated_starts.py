"""Starting structures of alanine dipeptide as it looks in water, for the xTB data set that the
ML/MM runs need (issue 14): the shipped model was trained on vacuum MD from three minima and left
its domain after 7.9 ps of ML/MM NVT in TIP3P (a carbonyl O-O contact closer than any training
frame, and a drift into the left-handed basin).

Writes ``benchmarks/data/xtb/alanine-dipeptide-solvated/starts.extxyz`` (positions Å, lawful's
atom order of :func:`lawful.forcefields.molecules.alanine_dipeptide`), two kinds of start:

* **solvated**: the solute of all-MM (amber14 + TIP3P, PME 1 nm) Langevin NVT runs at 300 K
  (1 fs, friction 1/ps), one snapshot every ``--every-ps``, from three backbone starts (C7eq, αR,
  PII), each after ``--equilibrate-ps``; ``info["minimise"] = "none"`` (the geometry water gave
  it is the point);
* **basin**: ideal geometries at αR, PII, αL and C7ax, minimised by the data pipeline with φ/ψ
  held (``info["minimise"] = "backbone"``): αR and αL are not vacuum minima of GFN2-xTB.

Then ``lawful data --calc xtb --molecule <starts.extxyz> ...`` samples short vacuum xTB MD
segments from every start and labels them (the command is in the folder's README and card).
Runs on the OpenMM CPU platform, one thread: about 4 minutes for the defaults.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
#: backbone torsions (φ, ψ in degrees) of the all-MM runs' starts
MM_STARTS = {"C7eq": (-83.0, 73.0), "alphaR": (-65.0, -40.0), "PII": (-75.0, 145.0)}
#: backbone torsions of the restrained-minimum starts
#: backbone torsions of the restrained-minimum starts: a small grid over αR (28 % of the all-MM run
#: in water, but no vacuum minimum), the αR-C7eq bridge, αL and C7ax (where the first ML/MM run
#: drifted), and PII
BASIN_STARTS = {
    **{f"alphaR{phi:+.0f}{psi:+.0f}": (phi, psi) for phi in (-90.0, -75.0, -60.0) for psi in (-55.0, -40.0, -25.0)},
    "bridge-90-5": (-90.0, -5.0), "bridge-100+20": (-100.0, 20.0),
    **{f"alphaL{phi:+.0f}{psi:+.0f}": (phi, psi) for phi in (50.0, 65.0) for psi in (30.0, 50.0)},
    "C7ax": (75.0, -65.0), "C7ax+65-45": (65.0, -45.0),
    "PII": (-75.0, 145.0), "PII-65+130": (-65.0, 130.0),
}


#: backbone torsions of the barrier set's restrained starts: the φ ≈ 0 region between the right- and
#: left-handed basins, where the two carbonyl oxygens meet (the second ML/MM run stopped there, O-O
#: 2.12 Å, on its way from αR towards φ = 0); high in energy, so MD never samples it, but ML/MM
#: in water visits its edge
BARRIER_STARTS = {f"phi{phi:+.0f}psi{psi:+.0f}": (phi, psi)
                  for phi in (-45.0, -20.0, 0.0, 25.0) for psi in (-150.0, -100.0, -70.0, -40.0, 0.0, 60.0, 150.0)}
#: backbone torsions of the beta-alpha set's restrained starts: the right-handed region at more
#: negative φ than αR (φ -165…-105°, ψ -95…-20°), between the extended and helical basins, where the
#: v4 model's 100 ps ML/MM run in TIP3P sat and a restrained check put it ~2 kcal/mol below GFN2-xTB.
#: The grid is offset from the restrained check points of bench_conformers (conformers.MAP_POINTS)
#: so that the check stays out of sample.
BETA_ALPHA_STARTS = {f"phi{phi:+.0f}psi{psi:+.0f}": (phi, psi)
                     for phi in (-165.0, -145.0, -125.0, -105.0) for psi in (-95.0, -70.0, -45.0, -20.0)}
#: closest distance (Å) of two atoms that are not bonded in an ideal-geometry start
CLASH_A = 1.6
SETS = {"solvated": HERE / "data" / "xtb" / "alanine-dipeptide-solvated" / "starts.extxyz",
        "barrier": HERE / "data" / "xtb" / "alanine-dipeptide-barrier" / "starts.extxyz",
        "beta-alpha": HERE / "data" / "xtb" / "alanine-dipeptide-beta-alpha" / "starts.extxyz"}
#: the restrained grid of each set (the solvated set adds the all-MM snapshots)
GRIDS = {"solvated": BASIN_STARTS, "barrier": BARRIER_STARTS, "beta-alpha": BETA_ALPHA_STARTS}
#: the start label prefix of each set's restrained starts
PREFIXES = {"solvated": "basin", "barrier": "barrier", "beta-alpha": "beta-alpha"}


def restrained_starts(grid: dict, prefix: str) -> list:
    """Ideal geometries at each (φ, ψ) of ``grid``, to be minimised by the pipeline with φ/ψ held;
    a grid point whose ideal geometry puts two atoms that are not bonded closer than
    ``CLASH_A`` is left out (e.g. φ = ψ = 0: an amide H on a carbonyl O)."""
    from lawful.forcefields.molecules import alanine_dipeptide

    ref = alanine_dipeptide().get_all_distances()
    far = ref > 1.7                                   # pairs that are not bonded (nor geminal H-H)
    out = []
    for label, (phi, psi) in grid.items():
        a = alanine_dipeptide(phi, psi)
        if (a.get_all_distances()[far] < CLASH_A).any():
            continue
        a.info.update(start=f"{prefix}-{label}", minimise="backbone", molecule="alanine-dipeptide")
        out.append(a)
    return out


def lawful_order(topology) -> np.ndarray:
    """For each atom of lawful's alanine dipeptide, its index in ``topology`` (the solute first)."""
    from lawful.integrations import mlmm

    where = {(a.residue.name, a.name): a.index for a in topology.atoms() if a.residue.name in ("ACE", "ALA", "NME")}
    return np.array([where[key] for key in mlmm._ALADI_NAMES])


def mm_snapshots(phi: float, psi: float, equilibrate_ps: float, run_ps: float, every_ps: float, seed: int,
                 padding_nm: float = 1.0) -> list:
    """Solute geometries (lawful order, Å) from all-MM NVT of alanine dipeptide in TIP3P."""
    import openmm
    import openmm.app as app
    import openmm.unit as u
    from ase import Atoms

    from lawful.forcefields.molecules import alanine_dipeptide
    from lawful.integrations import mlmm

    top, pos = mlmm.alanine_dipeptide_topology(phi, psi)
    top, pos = mlmm.solvate(top, pos, padding_nm=padding_nm)
    system = mlmm.mm_system(top)
    integ = openmm.LangevinMiddleIntegrator(300 * u.kelvin, 1.0 / u.picosecond, 1.0 * u.femtosecond)
    integ.setRandomNumberSeed(seed)
    sim = app.Simulation(top, system, integ, openmm.Platform.getPlatformByName("CPU"), {"Threads": "1"})
    sim.context.setPositions(pos)
    openmm.LocalEnergyMinimizer.minimize(sim.context, 10.0, 500)
    sim.context.setVelocitiesToTemperature(300 * u.kelvin, seed)
    sim.step(int(round(equilibrate_ps * 1000)))
    order = lawful_order(top)
    numbers = alanine_dipeptide().numbers
    every = int(round(every_ps * 1000))
    out = []
    for k in range(int(round(run_ps / every_ps))):
        sim.step(every)
        xyz = sim.context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(u.angstrom)
        solute = np.asarray(xyz)[order]
        # whole molecule: unwrap each atom to the image nearest the first (PME wraps nothing here, but
        # be safe against a solute that straddles the box)
        box = np.diag(sim.context.getState().getPeriodicBoxVectors(asNumpy=True).value_in_unit(u.angstrom))
        solute = solute[0] + (solute - solute[0] + 0.5 * box) % box - 0.5 * box
        a = Atoms(numbers, positions=solute)
        a.info.update(start=f"mm-{k * every_ps + every_ps:g}ps", minimise="none", molecule="alanine-dipeptide")
        out.append(a)
    return out


def main(argv=None) -> Path:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--equilibrate-ps", type=float, default=5.0)
    ap.add_argument("--run-ps", type=float, default=20.0, help="per all-MM run, after equilibration")
    ap.add_argument("--every-ps", type=float, default=0.5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--set", choices=sorted(SETS), default="solvated",
                    help="solvated: all-MM snapshots + basin starts; barrier: the restrained phi ~ 0 grid only; "
                         "beta-alpha: the restrained grid at phi -165..-105, psi -95..-20 only")
    ap.add_argument("--out", default=None, help="starts file (default: the set's folder in data/xtb)")
    args = ap.parse_args(argv)
    out = Path(args.out or SETS[args.set])
    from ase.io import write

    from lawful.forcefields.conformers import backbone_torsions

    starts = []
    t0 = time.process_time()
    for g, (label, (phi, psi)) in enumerate(MM_STARTS.items() if args.set == "solvated" else ()):
        snaps = mm_snapshots(phi, psi, args.equilibrate_ps, args.run_ps, args.every_ps, args.seed + g)
        for a in snaps:
            a.info["start"] = f"solvated-{label}-{a.info['start'][3:]}"
            a.info["phi_psi_deg"] = list(backbone_torsions(a))
        starts += snaps
        print(f"all-MM from {label}: {len(snaps)} snapshots, {time.process_time() - t0:.0f} s CPU so far", flush=True)
    starts += restrained_starts(GRIDS[args.set], PREFIXES[args.set])
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    write(str(tmp), starts, format="extxyz")
    tmp.replace(out)
    print(f"wrote {len(starts)} starts to {out}")
    return out


if __name__ == "__main__":
    main()

"""Named alanine dipeptide conformers, minimised with any ASE calculator (xTB or a lawful model).

The issue-14 accuracy target on conformers: relative energies of C7eq, C5 and αR minimised with
GFN2-xTB, reproduced within 1 kcal/mol after re-minimisation with the model in ASE. This module
holds the one definition of those conformers and of how they are minimised, so the reference and
the model are treated alike.

Conformers (:data:`CONFORMERS`; backbone torsions φ = C(ACE)-N-Cα-C, ψ = N-Cα-C-N(NME), degrees,
the usual gas-phase values of ab initio studies of ACE-ALA-NME):

* ``C7eq`` (-83, 73): the seven-membered C=O···H-N ring, the global minimum in vacuum.
* ``C5`` (-155, 160): the extended five-membered ring.
* ``alphaR`` (-65, -40): the right-handed helix region. It is not a minimum of vacuum GFN2-xTB
  (an unrestrained BFGS minimisation from it ends in C7eq, at φ, ψ = -82°, 74°; checked with
  tblite 0.8), so it is minimised with φ and ψ held fixed, and the model is re-minimised under the
  same restraint.

The restraint is ASE's :class:`~ase.constraints.FixInternals` on the two dihedrals: a holonomic
constraint (positions are projected back onto the fixed φ, ψ after every step, forces along the
two torsions are removed), not a harmonic penalty. It holds φ, ψ at exactly the same values for
xTB and for the model, adds no restraint energy (the reported energy is the unbiased potential
energy of the constrained minimum), and has no stiffness to choose; a stiff harmonic restraint
would leave a stiffness-dependent offset in both the torsions and the energy, different for the
two potentials.

Minimisation: ASE BFGS until the largest per-atom force (after the constraint projection, ASE's
own convergence test) is at most ``fmax`` (default 0.01 eV/Å).

Atom order is that of :func:`lawful.forcefields.molecules.alanine_dipeptide`: ACE (CH3 0, C 1,
O 2), ALA (N 3, H 4, CA 5, HA 6, CB 7, HB 8-10, C 11, O 12), NME (N 13, H 14, CH3 15), methyl H.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

import numpy as np
from ase import Atoms

from lawful.forcefields.molecules import alanine_dipeptide
from lawful.kernels.errors import ConvergenceError, InputError, NumericalError
from lawful.kernels.units import KCALMOL_PER_EV

__all__ = ["Conformer", "CONFORMERS", "MAP_POINTS", "PHI_ATOMS", "PSI_ATOMS", "REFERENCE_CONFORMER", "backbone_torsions",
           "conformer_start", "restrain_backbone", "minimise_conformer", "minimise_conformers", "aligned_rmsd"]

#: φ = C(ACE)-N-Cα-C: atom indices in :func:`~lawful.forcefields.molecules.alanine_dipeptide`.
PHI_ATOMS = (1, 3, 5, 11)
#: ψ = N-Cα-C-N(NME).
PSI_ATOMS = (3, 5, 11, 13)
#: Relative energies are taken to this conformer (the vacuum global minimum).
REFERENCE_CONFORMER = "C7eq"


@dataclass(frozen=True)
class Conformer:
    """A named backbone conformer: starting torsions ``phi``, ``psi`` (degrees) and whether they are
    held fixed during minimisation (``restrained``: the conformer is not a minimum of the potential)."""

    phi: float
    psi: float
    restrained: bool = False


#: The conformers by name (see the module docstring for the values and the αR restraint).
CONFORMERS = {
    "C7eq": Conformer(-83.0, 73.0),
    "C5": Conformer(-155.0, 160.0),
    "alphaR": Conformer(-65.0, -40.0, restrained=True),
}


#: Restrained points of the φ/ψ map beyond the named conformers, minimised like αR: the right-handed
#: region at more negative φ (φ -150…-110°, ψ -80…-20°) where the v4 model's ML/MM run in TIP3P
#: spent most of its time, and where a restrained check put the v4 model ~2 kcal/mol below
#: GFN2-xTB. ``bench_conformers.py`` reports them beside the conformers (not part of the target).
MAP_POINTS = {f"map{phi:+.0f}{psi:+.0f}": Conformer(phi, psi, restrained=True)
              for phi, psi in ((-150.0, -50.0), (-130.0, -55.0), (-110.0, -50.0), (-150.0, -80.0), (-140.0, -25.0))}


def _conformer(name: str) -> Conformer:
    known = {**CONFORMERS, **MAP_POINTS}
    if name not in known:
        raise InputError(f"conformer {name!r} is not known: use one of {', '.join(known)} "
                         "(alanine dipeptide backbone conformers and restrained map points).")
    return known[name]


def _wrap(angle_deg: float) -> float:
    """An angle in degrees mapped to [-180, 180)."""
    return float((angle_deg + 180.0) % 360.0 - 180.0)


def _check_alanine_dipeptide(atoms: Atoms, what: str) -> None:
    ref = alanine_dipeptide().get_chemical_symbols()
    if atoms.get_chemical_symbols() != ref:
        raise InputError(f"{what} has atoms {atoms.get_chemical_formula()} in the order "
                         f"{''.join(atoms.get_chemical_symbols())!r}, not alanine dipeptide's {''.join(ref)!r}: "
                         "pass a structure in the atom order of lawful.forcefields.molecules.alanine_dipeptide.")


def backbone_torsions(atoms: Atoms) -> tuple[float, float]:
    """(φ, ψ) of an alanine dipeptide in degrees, in [-180, 180)."""
    _check_alanine_dipeptide(atoms, "backbone_torsions' structure")
    return _wrap(atoms.get_dihedral(*PHI_ATOMS)), _wrap(atoms.get_dihedral(*PSI_ATOMS))


def conformer_start(name: str) -> Atoms:
    """The ideal-geometry starting structure of conformer ``name`` (positions Å, 22 atoms), built at
    its φ, ψ; ``info["conformer"]`` holds the name. ``InputError`` for an unknown name."""
    c = _conformer(name)
    atoms = alanine_dipeptide(c.phi, c.psi)
    atoms.info.update(molecule="alanine-dipeptide", conformer=name)
    return atoms


def restrain_backbone(atoms: Atoms, phi: float, psi: float, tolerance_deg: float = 0.5) -> None:
    """Hold φ and ψ of ``atoms`` fixed at ``phi``, ``psi`` (degrees) with ASE's ``FixInternals``
    (replacing any constraint already set). The structure must already be within ``tolerance_deg``
    of them: the constraint keeps torsions, it is not meant to drive them far."""
    now = backbone_torsions(atoms)
    off = max(abs(_wrap(now[0] - phi)), abs(_wrap(now[1] - psi)))
    if off > tolerance_deg:
        raise InputError(f"the structure has φ, ψ = {now[0]:.2f}°, {now[1]:.2f}°, {off:.2f}° away from the "
                         f"restraint ({phi:.2f}°, {psi:.2f}°; tolerance {tolerance_deg}°): start from "
                         "conformer_start(name) or from a minimum restrained at the same torsions.")
    from ase.constraints import FixInternals

    atoms.set_constraint(FixInternals(dihedrals_deg=[[float(phi), list(PHI_ATOMS)],
                                                     [float(psi), list(PSI_ATOMS)]]))


def _largest_force(atoms: Atoms) -> float:
    """ASE's convergence measure: the largest per-atom force norm (constraint-projected), eV/Å."""
    return float(np.sqrt((atoms.get_forces() ** 2).sum(axis=1).max()))


#: Degrees φ or ψ may move during an unrestrained minimisation before the minimum is taken to have
#: left the named conformer's basin (``basin_kept`` False).
BASIN_TOLERANCE_DEG = 30.0


def minimise_conformer(atoms: Atoms, calculator, name: str, fmax: float = 0.01, steps: int = 2000) -> dict:
    """Minimise ``atoms`` (alanine dipeptide, Å) as conformer ``name`` with an ASE ``calculator``
    (ASE BFGS; φ, ψ held at the conformer's values by :func:`restrain_backbone` when it is
    restrained). ``atoms`` is not changed.

    Returns ``{"atoms": minimised copy (no calculator, no constraint), "energy_eV", "phi_deg",
    "psi_deg", "phi_start_deg", "psi_start_deg", "fmax_eV_A": final largest force, "steps",
    "converged": bool, "restrained": bool, "failure": None or the error that stopped BFGS,
    "torsion_shift_deg": the larger change of φ, ψ, "basin_kept": whether it stayed within
    :data:`BASIN_TOLERANCE_DEG` (always for a restrained one)}``: a minimum that left the basin is
    another conformer's, whatever its name. Not
    reaching ``fmax`` within ``steps``, a step the constraint could not project back onto the fixed
    φ, ψ (ASE's ``ValueError``) or a ``NumericalError`` of the calculator is reported (``converged``
    False, the last geometry; energy and force NaN where the calculator cannot evaluate it), not
    raised; :func:`minimise_conformers` decides.
    """
    c = _conformer(name)
    if not fmax > 0 or int(steps) < 1:
        raise InputError(f"fmax={fmax!r} eV/Å and steps={steps!r} must be positive: pass e.g. fmax=0.01, "
                         "steps=2000.")
    from ase.optimize import BFGS

    _check_alanine_dipeptide(atoms, f"conformer {name!r}'s start")
    a = Atoms(atoms.numbers, positions=atoms.positions)
    phi0, psi0 = backbone_torsions(a)
    if c.restrained:
        restrain_backbone(a, c.phi, c.psi)
    a.calc = calculator
    opt = BFGS(a, logfile=None)
    failure = None
    try:
        converged = bool(opt.run(fmax=fmax, steps=int(steps)))
    except (ValueError, NumericalError) as exc:   # FixInternals could not hold φ, ψ; the model blew up
        converged, failure = False, f"{type(exc).__name__}: {exc}"
    try:
        energy, largest = float(a.get_potential_energy()), _largest_force(a)
    except NumericalError:                        # the geometry it stopped on cannot be evaluated either
        energy = largest = float("nan")
    out = Atoms(a.numbers, positions=a.get_positions())
    out.info.update(molecule="alanine-dipeptide", conformer=name)
    phi, psi = backbone_torsions(out)
    shift = max(abs(_wrap(phi - phi0)), abs(_wrap(psi - psi0)))
    return {"atoms": out, "energy_eV": energy, "phi_deg": phi, "psi_deg": psi, "phi_start_deg": phi0,
            "psi_start_deg": psi0, "fmax_eV_A": largest, "steps": int(opt.nsteps), "converged": converged,
            "restrained": c.restrained, "failure": failure, "torsion_shift_deg": shift,
            "basin_kept": bool(c.restrained or shift <= BASIN_TOLERANCE_DEG)}


def aligned_rmsd(a, b) -> float:
    """RMSD in Å between two structures of the same atoms (``ase.Atoms`` or (N, 3) arrays in Å)
    after the optimal rigid superposition (centroids matched, best rotation by the Kabsch SVD,
    reflections excluded)."""
    p = np.asarray(getattr(a, "positions", a), dtype=np.float64)
    q = np.asarray(getattr(b, "positions", b), dtype=np.float64)
    if p.shape != q.shape or p.ndim != 2 or p.shape[1] != 3:
        raise InputError(f"aligned_rmsd needs two (N, 3) position sets of the same atoms; got shapes "
                         f"{p.shape} and {q.shape}: pass the same molecule twice.")
    p = p - p.mean(axis=0)
    q = q - q.mean(axis=0)
    u, _, vt = np.linalg.svd(p.T @ q)
    d = np.sign(np.linalg.det(u @ vt))                 # -1: the best orthogonal map is a reflection
    rot = u @ np.diag([1.0, 1.0, d]) @ vt              # p @ rot is p rotated onto q
    return float(np.sqrt(((p @ rot - q) ** 2).sum(axis=1).mean()))


def _calculator_source(calculator) -> Callable[[], object]:
    from ase.calculators.calculator import BaseCalculator

    if isinstance(calculator, BaseCalculator):
        return lambda: calculator
    if callable(calculator):
        return calculator
    raise InputError(f"calculator={calculator!r} is neither an ASE calculator nor a function returning one: "
                     "pass e.g. LawfulCalculator('organic-xtb') or xtb_calculator (a new one per conformer).")


def minimise_conformers(calculator, names: Iterable[str] | None = None, reference: dict | None = None,
                        fmax: float = 0.01, steps: int = 2000, require_convergence: bool = True) -> dict:
    """Minimise every named conformer (default all of :data:`CONFORMERS`; :data:`MAP_POINTS` by
    name) with one potential.

    ``calculator``: an ASE calculator used for all conformers, or a zero-argument function returning
    one, called once per conformer (e.g. :func:`lawful.forcefields.xtb_data.xtb_calculator`; a
    fresh tblite instance per conformer keeps each result independent of the others).

    ``reference``: the result of an earlier call (e.g. with xTB). Each conformer then starts from the
    reference's minimum instead of :func:`conformer_start`, and its entry gains ``"rmsd_A"`` (all
    atoms, after superposition, :func:`aligned_rmsd`), ``"reference_relative_kcal_mol"`` and
    ``"relative_error_kcal_mol"`` (this potential's relative energy minus the reference's).

    Returns ``{"conformers": {name: entry}, "reference_conformer": "C7eq", "fmax_eV_A": fmax}`` with
    each entry as :func:`minimise_conformer` returns it plus ``"relative_kcal_mol"``: its energy minus
    C7eq's, kcal/mol (C7eq is always minimised, first). ``ConvergenceError`` if a conformer does
    not reach ``fmax`` in ``steps`` BFGS steps, unless ``require_convergence`` is False (then the
    entry says ``converged: False``). ``InputError`` for unknown names.
    """
    wanted = list(CONFORMERS) if names is None else [str(n) for n in names]
    for n in wanted:
        _conformer(n)
    order = [REFERENCE_CONFORMER] + [n for n in dict.fromkeys(wanted) if n != REFERENCE_CONFORMER]
    ref = None
    if reference is not None:
        ref = reference.get("conformers") if isinstance(reference, dict) else None
        missing = [n for n in order if not isinstance(ref, dict) or n not in ref]
        if missing:
            raise InputError(f"reference lacks conformer(s) {missing}: pass the dict an earlier "
                             "minimise_conformers call returned for the same (or more) names.")
    make = _calculator_source(calculator)
    out = {}
    for n in order:
        start = ref[n]["atoms"] if ref is not None else conformer_start(n)
        entry = minimise_conformer(start, make(), n, fmax=fmax, steps=steps)
        if require_convergence and not entry["converged"]:
            why = f"; stopped by {entry['failure']}" if entry["failure"] else ""
            raise ConvergenceError(f"conformer {n!r} did not reach fmax={fmax} eV/Å in {steps} BFGS steps (largest "
                                   f"force {entry['fmax_eV_A']:.4f} eV/Å{why}): raise steps or check the "
                                   "potential, or pass require_convergence=False to record it unconverged.")
        if not entry["basin_kept"]:
            import warnings

            warnings.warn(f"conformer {n!r} left its basin while minimised: phi/psi moved from "
                          f"({entry['phi_start_deg']:.0f}, {entry['psi_start_deg']:.0f}) to ({entry['phi_deg']:.0f}, "
                          f"{entry['psi_deg']:.0f}) degrees, so its energy is another conformer's "
                          "(basin_kept False in its entry).", UserWarning, stacklevel=2)
        out[n] = entry
    e0 = out[REFERENCE_CONFORMER]["energy_eV"]
    for n, entry in out.items():
        entry["relative_kcal_mol"] = (entry["energy_eV"] - e0) * KCALMOL_PER_EV
        if ref is not None:
            entry["rmsd_A"] = aligned_rmsd(entry["atoms"], ref[n]["atoms"])
            entry["reference_relative_kcal_mol"] = float(ref[n]["relative_kcal_mol"])
            entry["relative_error_kcal_mol"] = entry["relative_kcal_mol"] - entry["reference_relative_kcal_mol"]
    return {"conformers": out, "reference_conformer": REFERENCE_CONFORMER, "fmax_eV_A": float(fmax)}

"""Alanine dipeptide in TIP3P water with lawful as the ML region of an OpenMM ML/MM System.

>>> from lawful.integrations import mlmm
>>> top, pos = mlmm.alanine_dipeptide_topology(phi=-80.0, psi=75.0)    # ACE-ALA-NME, nm
>>> top, pos = mlmm.solvate(top, pos, padding_nm=1.0)                   # TIP3P cube, neutral
>>> mixed = mlmm.mixed_system(top, model="organic-xtb")                  # ML = the solute
>>> nve = mlmm.run_nve(mixed, top, pos, steps=20000, timestep_fs=0.5)    # OpenMM's own loop
>>> nve.summary.drift_mev_per_atom_per_ps
>>> nvt = mlmm.run_nvt(mlmm.mixed_system(top, strict=True), top, pos, steps=100000)
>>> mlmm.ramachandran_plot({"ML/MM": (nvt.phi, nvt.psi)}, "rama.png")

Units: positions in nm (OpenMM's), times in fs (steps) and ps (series), temperatures in K,
friction in 1/ps, energies reported in eV (and drift in meV/atom/ps through
:class:`lawful.integrations.monitors.DriftSummary`), angles in degrees.

The classical part is amber14 (``amber14-all.xml``) with rigid TIP3P (``amber14/tip3p.xml``): PME
with a 1 nm cutoff in a periodic box (no cutoff in vacuum), OpenMM's defaults otherwise (Ewald
error tolerance 5e-4, long-range dispersion correction on, no switching function).
Constraints: the water molecules are rigid (SETTLE, analytic, so it adds no drift of its own;
TIP3P is parameterised rigid) and nothing else is constrained
(``constraints=None``): at 0.5 fs the fastest solute motion, an X-H stretch of about 10 fs
period, is resolved by some 20 steps, and in the ML/MM System the solute's bonds belong to the
ML potential (openmm-ml removes constraints inside the ML region anyway). No CMMotionRemover,
so NVE is Hamiltonian. The ML region is the solute (every atom outside water and ions),
embedded mechanically by openmm-ml: its intramolecular bonded and nonbonded MM terms are
removed and the lawful force (python backend, float64) replaces them; solute-water
interactions stay classical.
"""

from __future__ import annotations

import math
import numbers as _numbers
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import openmm
from openmm import app
from openmm import unit as u

from lawful.integrations import units
from lawful.kernels.errors import InputError, NumericalError, ShapeError

__all__ = ["AMBER_FILES", "alanine_dipeptide_topology", "solvate", "solute_atoms", "mm_system", "mixed_system",
           "phi_psi", "dihedral_deg", "ramachandran_plot", "NVEResult", "NVTResult", "run_nve", "run_nvt",
           "DihedralReporter", "PLATFORMS", "minimized", "basin_populations", "BASINS"]

#: The classical force field of the MM part: amber14 protein + its rigid TIP3P water.
AMBER_FILES = ("amber14-all.xml", "amber14/tip3p.xml")
#: The OpenMM platforms the benchmark compares (Reference: double precision everywhere, slow PME;
#: CPU: single-precision forces, one thread unless told); the runners take any platform OpenMM has
#: here (CUDA, OpenCL on a GPU machine).
PLATFORMS = ("Reference", "CPU")
#: kJ/mol/nm (about 52 eV/Å): a start with an atom under a larger force is far from any state at
#: temperature (a freshly solvated alanine dipeptide box: 1.5e5, its 99th percentile 2.4e4; after
#: 200 minimisation iterations 2.1e3, and thermal forces in TIP3P stay a few thousand); runs from
#: it measure a violent relaxation (311 K to 1105 K in 8 steps), which :func:`run_nve` and
#: :func:`run_nvt` warn about
START_FORCE_WARN_KJ_MOL_NM = 5.0e4
_R_KJ_PER_MOL_K = u.MOLAR_GAS_CONSTANT_R.value_in_unit(u.kilojoule_per_mole / u.kelvin)
#: Residues that are solvent, not solute (water and the ions Modeller adds).
_SOLVENT = {"HOH", "WAT", "NA", "CL", "K", "Na+", "Cl-"}

# (residue, amber14 atom name) of each atom of lawful.forcefields.molecules.alanine_dipeptide(),
# in that function's order: ACE (CH3, C, O), ALA (N .. O), NME (N, H, CH3), ACE and NME methyl H.
_ALADI_NAMES = (
    ("ACE", "CH3"), ("ACE", "C"), ("ACE", "O"),
    ("ALA", "N"), ("ALA", "H"), ("ALA", "CA"), ("ALA", "HA"), ("ALA", "CB"),
    ("ALA", "HB1"), ("ALA", "HB2"), ("ALA", "HB3"), ("ALA", "C"), ("ALA", "O"),
    ("NME", "N"), ("NME", "H"), ("NME", "CH3"),
    ("ACE", "HH31"), ("ACE", "HH32"), ("ACE", "HH33"),
    ("NME", "HH31"), ("NME", "HH32"), ("NME", "HH33"),
)
_ALADI_BONDS = (
    (("ACE", "CH3"), ("ACE", "C")), (("ACE", "C"), ("ACE", "O")),
    (("ACE", "CH3"), ("ACE", "HH31")), (("ACE", "CH3"), ("ACE", "HH32")), (("ACE", "CH3"), ("ACE", "HH33")),
    (("ACE", "C"), ("ALA", "N")),
    (("ALA", "N"), ("ALA", "H")), (("ALA", "N"), ("ALA", "CA")), (("ALA", "CA"), ("ALA", "HA")),
    (("ALA", "CA"), ("ALA", "CB")), (("ALA", "CB"), ("ALA", "HB1")), (("ALA", "CB"), ("ALA", "HB2")),
    (("ALA", "CB"), ("ALA", "HB3")), (("ALA", "CA"), ("ALA", "C")), (("ALA", "C"), ("ALA", "O")),
    (("ALA", "C"), ("NME", "N")),
    (("NME", "N"), ("NME", "H")), (("NME", "N"), ("NME", "CH3")),
    (("NME", "CH3"), ("NME", "HH31")), (("NME", "CH3"), ("NME", "HH32")), (("NME", "CH3"), ("NME", "HH33")),
)


def _forcefield():
    return app.ForceField(*AMBER_FILES)


def alanine_dipeptide_topology(phi: float = -80.0, psi: float = 75.0):
    """ACE-ALA-NME (22 atoms) as an OpenMM ``Topology`` with amber14 residue and atom names and
    all bonds, and its positions (``Quantity``, (22, 3), nm), built by
    :func:`lawful.forcefields.molecules.alanine_dipeptide` at backbone torsions ``phi``, ``psi``
    (degrees). Atoms are in residue order (ACE, ALA, NME), so amber14 assigns every one; the
    topology has no box (vacuum): :func:`solvate` adds water and the box."""
    from lawful.forcefields.molecules import alanine_dipeptide

    xyz_a = alanine_dipeptide(phi, psi).positions
    top = app.Topology()
    chain = top.addChain()
    where, order = {}, []
    for resname in ("ACE", "ALA", "NME"):
        residue = top.addResidue(resname, chain)
        for k, (res, name) in enumerate(_ALADI_NAMES):
            if res == resname:
                symbol = "H" if name.startswith("H") else name[0]
                where[(res, name)] = top.addAtom(name, app.Element.getBySymbol(symbol), residue)
                order.append(k)
    for a, b in _ALADI_BONDS:
        top.addBond(where[a], where[b])
    positions = u.Quantity(np.asarray(xyz_a)[order] * units.NM_PER_ANGSTROM, u.nanometer)
    return top, positions


def _length_nm(value, name: str) -> float:
    """``value`` (a number in nm or an OpenMM length Quantity) as a float in nm."""
    if isinstance(value, u.Quantity):
        if not value.unit.is_compatible(u.nanometer):
            raise InputError(f"{name}={value!r} is not a length: pass nm (a number) or a length Quantity.")
        value = value.value_in_unit(u.nanometer)
    if isinstance(value, bool) or not isinstance(value, _numbers.Real) or not math.isfinite(value) or value <= 0:
        raise InputError(f"{name}={value!r} must be a positive, finite length in nm (e.g. 1.0).")
    return float(value)


def _positions_nm(positions, name: str = "positions") -> np.ndarray:
    """positions (``Quantity``, list of Vec3 or array in nm) as a float64 array (..., 3) in nm."""
    if isinstance(positions, u.Quantity):
        positions = positions.value_in_unit(u.nanometer)
    arr = np.asarray(positions, dtype=np.float64)
    if arr.ndim < 2 or arr.shape[-1] != 3:
        raise ShapeError(f"{name} must have shape (N, 3) or (frames, N, 3) in nm, got {arr.shape}.")
    return arr


def _box_width_nm(xyz: np.ndarray, pad: float) -> float:
    """The cube edge (nm) ``Modeller.addSolvent(padding=pad)`` makes around ``xyz`` (nm): the
    diameter of the solute's bounding sphere (about its bounding-box centre) plus ``pad``, at
    least ``2 pad`` (OpenMM 8's rule)."""
    center = 0.5 * (xyz.min(axis=0) + xyz.max(axis=0))
    radius = float(np.max(np.linalg.norm(xyz - center, axis=1)))
    return max(2 * radius + pad, 2 * pad)


def solvate(topology, positions, padding_nm: float = 1.0, *, neutralize: bool = True,
            cutoff_nm: float = 1.0):
    """The solute in a cubic TIP3P box: ``(topology, positions)`` (positions a ``Quantity`` in nm).

    ``padding_nm``: OpenMM's ``Modeller.addSolvent(padding=...)`` in nm, the smallest distance
    between the solute and its periodic image (the cube's edge is the diameter of the solute's
    bounding sphere plus the padding); the box must be at least twice ``cutoff_nm`` (the PME
    cutoff of :func:`mm_system`), otherwise OpenMM could not use it, which is refused here before
    any water is placed. ``neutralize``: add Na+/Cl- to cancel the solute's net charge (none for
    alanine dipeptide). Solute atoms keep their indices (first in the new topology) and are moved
    rigidly so that the centre of their bounding box is the centre of the box.
    """
    pad = _length_nm(padding_nm, "padding_nm")
    cutoff = _length_nm(cutoff_nm, "cutoff_nm")
    xyz = _positions_nm(positions)
    if xyz.ndim != 2 or xyz.shape[0] != topology.getNumAtoms():
        raise ShapeError(f"positions have shape {xyz.shape} but the topology has {topology.getNumAtoms()} atoms: "
                         "pass one (x, y, z) per atom.")
    width = _box_width_nm(xyz, pad)
    if width < 2 * cutoff:
        radius = (width - pad) / 2
        raise InputError(
            f"padding_nm={pad:g} gives a {width:.3g} nm box, below twice the {cutoff:g} nm cutoff that PME needs: "
            f"pass padding_nm >= {min(2 * cutoff - 2 * radius, cutoff):.3g}.")
    # the solute moved rigidly to the box centre: every solute atom inside the primary cell (OpenMM
    # 8.x's Reference platform misses nonbonded pairs of atoms lying exactly on the plane z = 0,
    # where the internal-coordinate builder puts its first atoms)
    center = 0.5 * (xyz.min(axis=0) + xyz.max(axis=0))
    modeller = app.Modeller(topology, u.Quantity(xyz - center + 0.5 * width, u.nanometer))
    modeller.addSolvent(_forcefield(), model="tip3p", padding=pad * u.nanometer, neutralize=neutralize)
    return modeller.topology, modeller.positions


def solute_atoms(topology) -> list[int]:
    """Indices of the atoms outside water and ions: the ML region of :func:`mixed_system`."""
    return [a.index for a in topology.atoms() if a.residue.name not in _SOLVENT]


def mm_system(topology, cutoff_nm: float = 1.0):
    """The all-MM ``openmm.System`` (amber14 + rigid TIP3P; see the module doc for the choices):
    PME with ``cutoff_nm`` (nm) when the topology has a box, no cutoff otherwise; no constraints
    but rigid water; no CMMotionRemover (NVE is Hamiltonian). Every atom must match an amber14
    template (OpenMM raises ``ValueError`` naming the residue otherwise)."""
    cutoff = _length_nm(cutoff_nm, "cutoff_nm")
    periodic = topology.getPeriodicBoxVectors() is not None
    return _forcefield().createSystem(
        topology, nonbondedMethod=app.PME if periodic else app.NoCutoff, nonbondedCutoff=cutoff * u.nanometer,
        constraints=None, rigidWater=True, removeCMMotion=False)


def mixed_system(topology, model="organic-xtb", interpolate: bool = False, *, ml_atoms=None, mm=None,
                 cutoff_nm: float | None = None, force_group: int = 1, strict: bool = False, backend: str = "python",
                 precision: str = "double", device=None):
    """The ML/MM System: :func:`mm_system` with ``ml_atoms`` (default :func:`solute_atoms`) handed to
    ``MLPotential("lawful", model=model).createMixedSystem(...)`` (openmm-ml's mechanical
    embedding): the ML atoms' MM terms among themselves go, the lawful force (in ``force_group``)
    comes in. ``interpolate=True`` adds openmm-ml's global ``lambda_interpolate`` (1: ML/MM, 0:
    all-MM; the Context starts at 1). ``mm``: an all-MM System of this topology to start from
    (default: a new :func:`mm_system` with ``cutoff_nm``, default 1.0 nm; openmm-ml copies it,
    ``mm`` itself is not changed; a ``cutoff_nm`` beside ``mm`` must be the one ``mm`` was made with:
    another is refused, as it would not be applied).
    ``strict``: an out-of-domain structure stops the run (:class:`NumericalError` with an
    ``out_of_domain`` record) instead of warning once. ``model``: a shipped model's name, a
    ``.lawful`` path or a model object. ``precision``: "double" (float64) or "single";
    ``device``: the torch device of the model (None: its own, the CPU for shipped models).
    ``backend``: "python" by default, the one backend both shipped models have (the
    DirectForceModel control has no TorchScript export, and openmmtorch is optional), so their
    timings compare like with like. Positions are not needed: the System depends on the
    topology only (its box included)."""
    from openmmml import MLPotential

    potential = MLPotential("lawful", model=model, strict=strict, backend=backend, precision=precision,
                            device=device)
    if ml_atoms is None:
        ml_atoms = solute_atoms(topology)
        if not ml_atoms:
            raise InputError("the topology has no solute (only water and ions): pass ml_atoms=[...] explicitly.")
    if mm is not None and cutoff_nm is not None:
        # it was ignored: the System passed in keeps the cutoff it was made with
        have = [f.getCutoffDistance().value_in_unit(u.nanometer) for f in mm.getForces()
                if isinstance(f, openmm.NonbondedForce) and f.getNonbondedMethod() != openmm.NonbondedForce.NoCutoff]
        if any(abs(c - float(cutoff_nm)) > 1e-9 for c in have):
            raise InputError(f"cutoff_nm={cutoff_nm!r} applies to the MM System mixed_system builds, but mm= was given, "
                             f"made with a cutoff of {have[0]:g} nm: build mm with the cutoff you want "
                             "(mm_system(topology, cutoff_nm)), or drop cutoff_nm=.")
    system = mm if mm is not None else mm_system(topology, 1.0 if cutoff_nm is None else cutoff_nm)
    return potential.createMixedSystem(topology, system, ml_atoms, forceGroup=int(force_group),
                                       interpolate=bool(interpolate))


# -- backbone torsions -----------------------------------------------------------------------------

def dihedral_deg(p0, p1, p2, p3) -> np.ndarray:
    """The dihedral angle p0-p1-p2-p3 (IUPAC sign convention) in degrees, in (-180, 180];
    each argument (..., 3) (any length unit), broadcast over leading axes."""
    b1, b2, b3 = p1 - p0, p2 - p1, p3 - p2
    n1, n2 = np.cross(b1, b2), np.cross(b2, b3)
    y = np.linalg.norm(b2, axis=-1) * np.sum(b1 * n2, axis=-1)
    x = np.sum(n1 * n2, axis=-1)
    return np.degrees(np.arctan2(y, x))


def _backbone_indices(topology, residue: str = "ALA") -> tuple[list[int], list[int]]:
    """Atom indices of φ (C(prev)-N-CA-C) and ψ (N-CA-C-N(next)) of the one residue named ``residue``."""
    found = [r for r in topology.residues() if r.name == residue]
    if len(found) != 1:
        raise InputError(f"the topology has {len(found)} residues named {residue!r}: phi_psi needs exactly one "
                         "(pass residue= for another name).")
    res = found[0]
    own = {a.name: a.index for a in res.atoms()}
    missing = [n for n in ("N", "CA", "C") if n not in own]
    if missing:
        raise InputError(f"residue {residue!r} has no atom(s) {missing}: phi/psi need its backbone N, CA and C.")
    prev_c = next_n = None
    for a, b in topology.bonds():
        for x, y in ((a, b), (b, a)):
            if x.index == own["N"] and y.residue is not res and y.name == "C":
                prev_c = y.index
            if x.index == own["C"] and y.residue is not res and y.name == "N":
                next_n = y.index
    if prev_c is None or next_n is None:
        raise InputError(f"residue {residue!r} is not bonded to a C before and an N after it: phi/psi need both "
                         "neighbours (ACE-ALA-NME has them); build the topology with its bonds.")
    return [prev_c, own["N"], own["CA"], own["C"]], [own["N"], own["CA"], own["C"], next_n]


def phi_psi(positions, topology, residue: str = "ALA") -> tuple[np.ndarray, np.ndarray]:
    """Backbone torsions of ``residue`` in degrees, (-180, 180]: φ = C(prev)-N-CA-C and
    ψ = N-CA-C-N(next). ``positions``: (N, 3) or (frames, N, 3), nm (a ``Quantity``, a list of
    Vec3 or an array; the unit cancels). Returns two arrays of shape () or (frames,)."""
    xyz = _positions_nm(positions)
    if xyz.shape[-2] != topology.getNumAtoms():
        raise ShapeError(f"positions have {xyz.shape[-2]} atoms but the topology has {topology.getNumAtoms()}.")
    i_phi, i_psi = _backbone_indices(topology, residue)
    phi = dihedral_deg(*(xyz[..., k, :] for k in i_phi))
    psi = dihedral_deg(*(xyz[..., k, :] for k in i_psi))
    return phi, psi


def ramachandran_plot(runs: dict, path, title: str | None = None) -> Path:
    """φ/ψ scatter plots side by side, one panel per run: ``runs`` maps a label to ``(phi, psi)``
    arrays in degrees (e.g. ``{"ML/MM (organic-xtb)": ..., "all-MM (amber14)": ...}``). Writes a
    PNG to ``path`` (matplotlib, Agg) and returns the path."""
    if not runs:
        raise InputError("ramachandran_plot needs at least one run: pass {label: (phi, psi)}.")
    from lawful.integrations.report import figure, save_figure

    fig, axes = figure(len(runs), width=4.2, height=4.2, squeeze=False)
    colors = ("tab:blue", "tab:gray", "tab:red", "tab:green")
    for k, (ax, (label, (phi, psi))) in enumerate(zip(axes[0], runs.items())):
        phi, psi = np.atleast_1d(np.asarray(phi, float)), np.atleast_1d(np.asarray(psi, float))
        if phi.shape != psi.shape:
            raise ShapeError(f"run {label!r}: phi has shape {phi.shape} but psi {psi.shape}; pass one psi per phi.")
        ax.scatter(phi, psi, s=6, alpha=0.5, color=colors[k % len(colors)], edgecolors="none")
        if phi.size:
            ax.plot(phi[:1], psi[:1], "k*", markersize=10, label="start")
            ax.legend(loc="lower right", fontsize=8)
        ax.set_xlim(-180, 180)
        ax.set_ylim(-180, 180)
        ax.set_xticks(range(-180, 181, 90))
        ax.set_yticks(range(-180, 181, 90))
        ax.axhline(0, color="0.8", lw=0.8)
        ax.axvline(0, color="0.8", lw=0.8)
        ax.set_aspect("equal")
        ax.set_xlabel("φ (degrees)")
        ax.set_ylabel("ψ (degrees)")
        ax.set_title(f"{label}\n{phi.size} frames", fontsize=10)
    if title:
        fig.suptitle(title, fontsize=11)
    return save_figure(fig, path)


#: Rectangular φ/ψ regions (degrees) for a coarse basin census of alanine dipeptide: β/C5 and PII
#: (extended, φ < 0, ψ > 100 or ψ < -150), C7eq/αR side (φ < 0, -150 <= ψ <= 100) and the left-handed
#: side (φ >= 0: C7ax, αL).
BASINS = {"extended (beta, C5, PII)": "phi < 0 and (psi > 100 or psi < -150)",
          "right-handed (C7eq, alphaR)": "phi < 0 and -150 <= psi <= 100",
          "left-handed (C7ax, alphaL)": "phi >= 0"}


def basin_populations(phi, psi) -> dict:
    """Fractions of frames in each region of :data:`BASINS` (φ, ψ arrays in degrees); they sum to 1."""
    phi, psi = np.asarray(phi, float), np.asarray(psi, float)
    if phi.shape != psi.shape or phi.size == 0:
        raise ShapeError(f"phi {phi.shape} and psi {psi.shape} must be non-empty arrays of one shape.")
    ext = (phi < 0) & ((psi > 100) | (psi < -150))
    right = (phi < 0) & ~ext
    left = phi >= 0
    return {name: float(np.mean(m)) for name, m in zip(BASINS, (ext, right, left))}


# -- runs in OpenMM's own loop ---------------------------------------------------------------------

def _platform(name: str, threads: int | None):
    """The OpenMM platform ``name`` and its properties (CPU: ``threads``, default
    ``$OMP_NUM_THREADS`` or 1); InputError naming the platforms available here."""
    available = [openmm.Platform.getPlatform(k).getName() for k in range(openmm.Platform.getNumPlatforms())]
    if name not in available:
        raise InputError(f"platform={name!r} is not an OpenMM platform available here ({available}): use one of "
                         "them (Reference: double precision everywhere; CPU: fast, single-precision forces).")
    platform = openmm.Platform.getPlatformByName(name)
    props = {}
    if name == "CPU":
        props["Threads"] = str(int(threads) if threads else int(os.environ.get("OMP_NUM_THREADS", "1") or 1))
    return platform, props


def _check_steps(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, _numbers.Integral) or value <= 0:
        raise InputError(f"{name}={value!r} must be a positive integer number of steps.")
    return int(value)


def _check_positive(name: str, value, unit: str) -> float:
    if isinstance(value, bool) or not isinstance(value, _numbers.Real) or not math.isfinite(value) or value <= 0:
        raise InputError(f"{name}={value!r} must be a positive, finite number in {unit}.")
    return float(value)


def _simulation(system, topology, positions, integrator, platform, threads):
    """An ``app.Simulation`` on ``platform`` with ``positions`` set (no force evaluated yet)."""
    if system.getNumParticles() != topology.getNumAtoms():
        raise InputError(f"the System has {system.getNumParticles()} particles but the topology has "
                         f"{topology.getNumAtoms()} atoms: pass the System made from this topology.")
    plat, props = _platform(platform, threads)
    sim = app.Simulation(topology, system, integrator, plat, props)
    sim.context.setPositions(positions)
    return sim


def _stop_record(exc: NumericalError, sim) -> dict:
    """What stopped a run: ``{"kind": "out_of_domain" | "numerical", "step", "message", ...}``."""
    # the step is the Simulation's: a lawful force inside openmm-ml's interpolating CustomCVForce
    # runs in an inner Context whose own step count stays 0 (and so does the step its message quotes)
    record = getattr(exc, "out_of_domain", None)
    out = {"kind": "out_of_domain" if record is not None else "numerical",
           "step": int(sim.context.getStepCount()), "message": str(exc)}
    if record is not None:
        out.update({k: (list(v) if isinstance(v, tuple) else v) for k, v in record.items() if k != "step"})
    return out


def _guarded(sim, fn):
    """``fn()`` with lawful's errors restored; a :class:`NumericalError` (a lawful force out of
    its domain in strict mode, a blow-up, OpenMM's NaN) is returned as a :func:`_stop_record`
    instead of raised (None when ``fn`` finished)."""
    from lawful.integrations.openmm import lawful_errors

    try:
        with lawful_errors():
            fn()
    except NumericalError as exc:
        return _stop_record(exc, sim)
    return None


def _start(sim, minimize: int, seed: int, temperature_K: float):
    """Minimise (``minimize`` iterations, 0: none) and draw Maxwell-Boltzmann velocities (K,
    seeded; integrators that keep half-step velocities evaluate forces here): the stop record
    of a failure, or None."""
    def start():
        if minimize:
            from lawful.integrations.openmm import minimize as _minimize

            _minimize(sim, 10.0, int(minimize))
        _warn_far_from_minimum(sim, minimize)
        sim.context.setVelocitiesToTemperature(temperature_K * u.kelvin, int(seed))
    return _guarded(sim, start)


def _warn_far_from_minimum(sim, minimize: int) -> None:
    """Warn when an atom of the start carries a force over :data:`START_FORCE_WARN_KJ_MOL_NM`
    (one extra force evaluation): the run would begin with a relaxation that heats the system far
    above ``temperature_K``, and its drift or populations describe that, not the system at
    temperature."""
    import warnings

    forces = sim.context.getState(getForces=True).getForces(asNumpy=True).value_in_unit(
        u.kilojoule_per_mole / u.nanometer)
    norms = np.linalg.norm(np.asarray(forces), axis=1)
    if not norms.size or not float(norms.max()) > START_FORCE_WARN_KJ_MOL_NM:
        return
    k = int(np.argmax(norms))
    atom = list(sim.topology.atoms())[k]
    done = f"after {int(minimize)} minimisation iterations" if minimize else "with no minimisation (minimize=0)"
    warnings.warn(
        f"the start is far from a minimum {done}: atom {k} ({atom.name} of {atom.residue.name}"
        f"{atom.residue.id}) carries {float(norms[k]):.3g} kJ/mol/nm ({float(norms[k]) * units.FORCE_ASE_PER_OPENMM:.3g} "
        f"eV/Å; {int((norms > START_FORCE_WARN_KJ_MOL_NM).sum())} atom(s) above {START_FORCE_WARN_KJ_MOL_NM:.3g}): the "
        "run begins with a relaxation that heats the system far above its temperature (a freshly solvated box went "
        "from 311 K to 1105 K in 8 steps), so its drift and populations describe that relaxation. Minimise first: "
        "pass minimize=200 (or more), or start from mlmm.minimized(...).", RuntimeWarning, stacklevel=4)


def _advance(sim, steps: int):
    """``sim.step(steps)`` timed: ``(wall s, CPU s, stop record or None)``."""
    w0, c0 = time.perf_counter(), time.process_time()
    stopped = _guarded(sim, lambda: sim.step(steps))
    return time.perf_counter() - w0, time.process_time() - c0, stopped


def minimized(system, topology, positions, iterations: int = 500, platform: str = "CPU",
              threads: int | None = None, tolerance_kj_mol_nm: float = 10.0):
    """Positions (``Quantity``, nm) after OpenMM's ``LocalEnergyMinimizer`` (at most ``iterations``,
    force tolerance in kJ/mol/nm) on ``system``: the common start of runs that compare systems
    (use the all-MM System: a barely trained ML model's minimum can be unphysical)."""
    iterations = _check_steps("iterations", iterations)
    sim = _simulation(system, topology, positions, openmm.VerletIntegrator(1e-3), platform, threads)
    from lawful.integrations.openmm import lawful_errors

    with lawful_errors():
        openmm.LocalEnergyMinimizer.minimize(sim.context, float(tolerance_kj_mol_nm), iterations)
        return sim.context.getState(getPositions=True).getPositions(asNumpy=True)


@dataclass
class NVEResult:
    """What :func:`run_nve` returns. ``summary``: the drift of the total energy of all atoms of
    the System (:class:`DriftSummary`, meV/atom/ps, linear fit over every step; None when the
    run stopped before two samples); ``csv``: the per-step series file (every
    ``csv_interval``-th step) or None; times per step in s (wall: ``time.perf_counter``, CPU: this
    process's ``time.process_time``; every step includes the energy evaluation of the drift
    report); ``steps_done``: OpenMM's step count when the run ended (``steps`` unless stopped);
    ``stopped``: None, or what ended the run early (see :class:`NVTResult`); ``n_atoms``: the
    System's particles with mass, the atoms the drift is per (virtual sites are left out)."""

    steps: int
    steps_done: int
    timestep_fs: float
    n_atoms: int
    summary: object
    wall_s_per_step: float
    cpu_s_per_step: float
    csv: Path | None = None
    platform: str = "Reference"
    stopped: dict | None = None

    def as_dict(self) -> dict:
        """JSON-able form."""
        return {"steps": self.steps, "steps_done": self.steps_done, "timestep_fs": self.timestep_fs,
                "n_atoms": self.n_atoms, "drift": None if self.summary is None else self.summary.as_dict(),
                "wall_s_per_step": self.wall_s_per_step, "cpu_s_per_step": self.cpu_s_per_step,
                "csv": None if self.csv is None else str(self.csv), "platform": self.platform,
                "stopped": self.stopped}


def run_nve(system, topology, positions, steps: int, timestep_fs: float = 0.5, *, temperature_K: float = 300.0,
            seed: int = 0, csv=None, csv_interval: int = 10, platform: str = "Reference", threads: int | None = None,
            minimize: int = 0) -> NVEResult:
    """NVE (``VerletIntegrator``, ``timestep_fs`` fs) of ``system`` from ``positions`` (nm), in
    OpenMM's own loop, with the total energy recorded at every step by a
    :class:`lawful.integrations.openmm.DriftReporter` (every atom of the System counts in the
    per-atom drift). ``csv``: a file for the series, written every ``csv_interval`` steps by a
    second DriftReporter (same State, no extra evaluation). ``minimize``: local-minimisation
    iterations first (0: none; a start with an atom under more than
    :data:`START_FORCE_WARN_KJ_MOL_NM` is warned about, as a freshly solvated box is).
    Velocities: Maxwell-Boltzmann at ``temperature_K`` (K), ``seed``.
    A :class:`NumericalError` (out of domain in strict mode, blow-up), also while minimising or
    drawing velocities, ends the run and is returned in ``stopped`` with the drift up to it."""
    from lawful.integrations.openmm import DriftReporter, particle_masses

    steps = _check_steps("steps", steps)
    csv_interval = _check_steps("csv_interval", csv_interval)
    dt = _check_positive("timestep_fs", timestep_fs, "fs")
    temperature_K = _check_positive("temperature_K", temperature_K, "K")
    every = DriftReporter(None, 1)
    log = DriftReporter(csv, csv_interval) if csv is not None else None
    integrator = openmm.VerletIntegrator(dt * units.PS_PER_FS)
    sim = _simulation(system, topology, positions, integrator, platform, threads)
    if csv is not None:   # this run's series or none: a run stopped at step 0 handed back an earlier run's file
        Path(csv).unlink(missing_ok=True)
    wall = cpu = 0.0
    try:
        stopped = _start(sim, minimize, seed, temperature_K)
        if stopped is None:
            reporters = [rep for rep in (every, log) if rep is not None]
            sim.reporters.extend(reporters)
            stopped = _guarded(sim, lambda: [rep.record(sim) for rep in reporters])  # t = 0
        if stopped is None:
            wall, cpu, stopped = _advance(sim, steps)
    finally:
        if log is not None:
            log.close()
    done = int(sim.context.getStepCount())
    summary = every.summary() if every.accumulator is not None and every.accumulator.n >= 2 else None
    # the particles with mass, as the drift per atom counts them (a virtual site is no atom)
    n_atoms = int(np.count_nonzero(particle_masses(system) > 0.0))
    return NVEResult(steps=steps, steps_done=done, timestep_fs=dt, n_atoms=n_atoms,
                     summary=summary, wall_s_per_step=wall / max(done, 1), cpu_s_per_step=cpu / max(done, 1),
                     csv=None if csv is None or not Path(csv).is_file() else Path(csv), platform=platform,
                     stopped=stopped)


class DihedralReporter:
    """An OpenMM reporter recording φ/ψ (degrees) of one residue and the temperature (K) every
    ``reportInterval`` steps, in lists ``time_ps``, ``phi``, ``psi``, ``temperature_K``."""

    def __init__(self, topology, reportInterval: int, residue: str = "ALA"):
        self._interval = _check_steps("reportInterval", reportInterval)
        self._idx = _backbone_indices(topology, residue)
        self.time_ps, self.phi, self.psi, self.temperature_K = [], [], [], []
        self._dof = None

    def describeNextReport(self, simulation):
        """OpenMM reporter protocol: steps to the next report; positions and velocities (no
        energy, so a report costs no force evaluation)."""
        steps = self._interval - simulation.currentStep % self._interval
        return {"steps": steps, "periodic": False, "include": ["positions", "velocities"]}

    def report(self, simulation, state) -> None:
        """OpenMM reporter protocol: record φ, ψ and the instantaneous temperature
        (2 KE / (n_dof k_B), KE from the velocities, n_dof = 3 N - constraints)."""
        if self._dof is None:
            from lawful.integrations.openmm import particle_masses

            system = simulation.system
            self._mass = particle_masses(system)
            self._dof = max(3 * int(np.count_nonzero(self._mass)) - system.getNumConstraints(), 1)
        xyz = state.getPositions(asNumpy=True).value_in_unit(u.nanometer)
        v = state.getVelocities(asNumpy=True).value_in_unit(u.nanometer / u.picosecond)
        self.time_ps.append(state.getTime().value_in_unit(u.picosecond))
        self.phi.append(float(dihedral_deg(*(xyz[k] for k in self._idx[0]))))
        self.psi.append(float(dihedral_deg(*(xyz[k] for k in self._idx[1]))))
        ke = 0.5 * float(np.sum(self._mass[:, None] * v * v))  # dalton nm²/ps² = kJ/mol
        self.temperature_K.append(2.0 * ke / (self._dof * _R_KJ_PER_MOL_K))


@dataclass
class NVTResult:
    """What :func:`run_nvt` returns: φ/ψ (degrees) and temperature (K) per saved frame, the steps
    run, and ``stopped``: None, or what stopped the run (``{"kind": "out_of_domain" | "numerical",
    "step", "message", ...}``; an out-of-domain record names the atoms and their distance in Å)."""

    steps: int
    steps_done: int
    timestep_fs: float
    time_ps: np.ndarray
    phi: np.ndarray
    psi: np.ndarray
    temperature_K: np.ndarray
    wall_s_per_step: float
    cpu_s_per_step: float
    stopped: dict | None = None
    platform: str = "Reference"
    extra: dict = field(default_factory=dict)

    @property
    def out_of_domain_events(self) -> int:
        """1 when an out-of-domain structure stopped the run, else 0 (a strict run stops at the first)."""
        return int(self.stopped is not None and self.stopped.get("kind") == "out_of_domain")

    def as_dict(self) -> dict:
        """JSON-able form (the series as lists)."""
        return {"steps": self.steps, "steps_done": self.steps_done, "timestep_fs": self.timestep_fs,
                "frames": int(self.phi.size), "mean_temperature_K": float(np.mean(self.temperature_K))
                if self.temperature_K.size else None, "wall_s_per_step": self.wall_s_per_step,
                "cpu_s_per_step": self.cpu_s_per_step, "out_of_domain_events": self.out_of_domain_events,
                "stopped": self.stopped, "platform": self.platform}


def run_nvt(system, topology, positions, steps: int, timestep_fs: float = 1.0, *, temperature_K: float = 300.0,
            friction_per_ps: float = 1.0, frame_interval: int = 100, seed: int = 0, platform: str = "Reference",
            threads: int | None = None, minimize: int = 0, residue: str = "ALA") -> NVTResult:
    """NVT with OpenMM's ``LangevinMiddleIntegrator`` (``temperature_K`` K, ``friction_per_ps`` 1/ps,
    ``timestep_fs`` fs; seeded), φ/ψ of ``residue`` saved every ``frame_interval`` steps (and at
    step 0). ``minimize``: local-minimisation iterations first (0: none; a start far from a
    minimum is warned about, as in :func:`run_nve`). A lawful force made with ``strict=True``
    stops the run at the first out-of-domain
    structure; that, or a blow-up (:class:`NumericalError`), is returned in ``stopped`` with the
    frames up to it, not raised."""
    steps = _check_steps("steps", steps)
    frame_interval = _check_steps("frame_interval", frame_interval)
    dt = _check_positive("timestep_fs", timestep_fs, "fs")
    temperature_K = _check_positive("temperature_K", temperature_K, "K")
    friction = _check_positive("friction_per_ps", friction_per_ps, "1/ps")
    integrator = openmm.LangevinMiddleIntegrator(temperature_K * u.kelvin, friction / u.picosecond,
                                                 dt * units.PS_PER_FS * u.picosecond)
    integrator.setRandomNumberSeed(int(seed) + 1)
    rep = DihedralReporter(topology, frame_interval, residue)
    sim = _simulation(system, topology, positions, integrator, platform, threads)
    wall = cpu = 0.0
    stopped = _start(sim, minimize, seed, temperature_K)
    if stopped is None:
        sim.reporters.append(rep)
        rep.report(sim, sim.context.getState(getPositions=True, getVelocities=True))  # t = 0
        wall, cpu, stopped = _advance(sim, steps)
    done = int(sim.context.getStepCount())
    per = max(done, 1)
    return NVTResult(steps=steps, steps_done=done, timestep_fs=dt, time_ps=np.asarray(rep.time_ps),
                     phi=np.asarray(rep.phi), psi=np.asarray(rep.psi), temperature_K=np.asarray(rep.temperature_K),
                     wall_s_per_step=wall / per, cpu_s_per_step=cpu / per, stopped=stopped, platform=platform)

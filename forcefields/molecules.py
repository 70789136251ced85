"""Small organic molecules and water clusters (species H, C, N, O) for quantum-labelled data.

:func:`build_molecule` gives an isolated (non-periodic) ``ase.Atoms`` by name (:data:`MOLECULES`)
or from any file ``ase.io`` reads. Positions in Å. The built geometries are ideal-geometry starts
(standard bond lengths and angles), close to, but not exactly at, a GFN2-xTB minimum; the data
pipeline (:mod:`lawful.forcefields.xtb_data`) minimises them with xTB before sampling.

* ``ethanol``: ASE's G2 geometry (9 atoms).
* ``alanine-dipeptide``: ACE-ALA-NME (22 atoms) built from internal coordinates (peptide bond
  lengths/angles, trans peptide bonds, L-alanine) at chosen backbone torsions φ, ψ; the default is
  the C7eq region (φ = -80°, ψ = 75°), see :func:`alanine_dipeptide`.
* ``water``, ``water-dimer``, ``water-trimer``, ``water-hexamer``: the monomer, a linear
  hydrogen-bonded dimer and cyclic clusters (O-O 2.8-2.9 Å, one donated H per molecule).

A file's total charge and multiplicity are kept where it states them (:func:`stated_state`: extxyz
``charge=`` / ``multiplicity=``, per-atom initial charges, SDF ``M  CHG``, the Gaussian charge line),
so the data pipeline labels the ion the file describes, not its neutral form.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
from ase import Atoms

from lawful.kernels.errors import InputError

__all__ = ["MOLECULES", "SPECIES", "ALANINE_DIPEPTIDE_STARTS", "MINIMISE_MODES", "build_molecule", "start_structures",
           "alanine_dipeptide", "water_cluster", "stated_state"]

#: The elements the molecular data sets use.
SPECIES = ("H", "C", "N", "O")


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def _place(a, b, c, bond: float, angle_deg: float, torsion_deg: float) -> np.ndarray:
    """The position d bonded to c with |cd| = ``bond`` (Å), angle b-c-d = ``angle_deg`` and
    dihedral a-b-c-d = ``torsion_deg`` (the natural extension of reference frame, NeRF)."""
    a, b, c = (np.asarray(x, dtype=np.float64) for x in (a, b, c))
    bc = _unit(c - b)
    n = _unit(np.cross(b - a, bc))
    m = np.cross(n, bc)
    th, ph = np.radians(angle_deg), np.radians(torsion_deg)
    d_local = np.array([-bond * np.cos(th), bond * np.sin(th) * np.cos(ph), bond * np.sin(th) * np.sin(ph)])
    return c + d_local[0] * bc + d_local[1] * m + d_local[2] * n


def _trigonal(center, x, y, bond: float) -> np.ndarray:
    """The third in-plane substituent of an sp2 ``center`` bonded to ``x`` and ``y``: along the
    outer bisector, ``bond`` Å away (the C=O oxygen, the amide H)."""
    center = np.asarray(center, dtype=np.float64)
    return center + bond * _unit(-(_unit(x - center) + _unit(y - center)))


def alanine_dipeptide(phi: float = -80.0, psi: float = 75.0) -> Atoms:
    """ACE-ALA-NME (CH3-CO-NH-CαH(CH3)-CO-NH-CH3, 22 atoms, L-alanine) from internal coordinates.

    ``phi`` (C-N-Cα-C) and ``psi`` (N-Cα-C-N) in degrees; peptide bonds trans (ω = 180°).
    Bond lengths (Å): C-C 1.52, C=O 1.23, C-N(peptide) 1.33, N-Cα / N-CH3 1.46, N-H 1.01,
    C-H 1.09, Cα-Cβ 1.53. Atom order: ACE (CH3, C, O), ALA (N, H, CA, HA, CB, 3 HB, C, O),
    NME (N, H, CH3), then the 3 ACE and 3 NME methyl H.
    """
    c1 = np.zeros(3)
    c2 = np.array([1.52, 0.0, 0.0])
    n3 = c2 + 1.33 * np.array([np.cos(np.radians(180 - 116)), np.sin(np.radians(180 - 116)), 0.0])
    o2 = _trigonal(c2, c1, n3, 1.23)
    ca = _place(c1, c2, n3, 1.46, 122.0, 180.0)
    hn = _trigonal(n3, c2, ca, 1.01)
    c = _place(c2, n3, ca, 1.52, 111.0, phi)
    n_nme = _place(n3, ca, c, 1.33, 116.0, psi)
    o = _trigonal(c, ca, n_nme, 1.23)
    c_nme = _place(ca, c, n_nme, 1.46, 122.0, 180.0)
    h_nme = _trigonal(n_nme, c, c_nme, 1.01)
    cb = _place(c2, n3, ca, 1.53, 110.0, phi - 120.0)
    ha = _place(c2, n3, ca, 1.09, 109.0, phi + 120.0)
    if np.linalg.det(np.array([c - ca, cb - ca, n3 - ca])) < 0:   # L-alanine: det[C, CB, N] > 0 (CORN rule)
        cb, ha = _place(c2, n3, ca, 1.53, 110.0, phi + 120.0), _place(c2, n3, ca, 1.09, 109.0, phi - 120.0)
    hb = [_place(n3, ca, cb, 1.09, 109.5, t) for t in (60.0, 180.0, 300.0)]
    h_ace = [_place(n3, c2, c1, 1.09, 109.5, t) for t in (60.0, 180.0, 300.0)]
    h_me = [_place(c, n_nme, c_nme, 1.09, 109.5, t) for t in (60.0, 180.0, 300.0)]
    pos = [c1, c2, o2, n3, hn, ca, ha, cb, *hb, c, o, n_nme, h_nme, c_nme, *h_ace, *h_me]
    symbols = "CCONHCHC" + "HHH" + "CONHC" + "HHH" + "HHH"
    return Atoms(symbols, positions=np.array(pos))


def _water(o: np.ndarray, h1_dir: np.ndarray, plane_dir: np.ndarray) -> list[np.ndarray]:
    """O and two H (O-H 0.96 Å, H-O-H 104.5°): H1 along ``h1_dir``, H2 in the plane of
    ``h1_dir`` and ``plane_dir``."""
    u = _unit(h1_dir)
    v = _unit(plane_dir - np.dot(plane_dir, u) * u)
    th = np.radians(104.5)
    return [o, o + 0.96 * u, o + 0.96 * (np.cos(th) * u + np.sin(th) * v)]


def water_cluster(n: int) -> Atoms:
    """A water monomer (``n`` = 1), a linear hydrogen-bonded dimer (O-O 2.91 Å, 2) or a cyclic
    cluster of ``n`` >= 3 molecules (O-O 2.80 Å, each donating one H to the next; free H
    alternately above and below the ring). Positions in Å; 3·``n`` atoms."""
    if n < 1:
        raise InputError(f"water_cluster(n={n!r}): a cluster needs at least one molecule; pass n >= 1.")
    z = np.array([0.0, 0.0, 1.0])
    if n == 1:
        pos = _water(np.zeros(3), np.array([1.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0]))
    elif n == 2:
        o2 = np.array([2.91, 0.0, 0.0])
        donor = _water(np.zeros(3), np.array([1.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0]))
        bis = np.array([np.cos(np.radians(57.0)), 0.0, np.sin(np.radians(57.0))])  # acceptor tilted 57°
        y = np.array([0.0, 1.0, 0.0])
        half = np.radians(104.5 / 2)
        acceptor = [o2, o2 + 0.96 * (np.cos(half) * bis + np.sin(half) * y),
                    o2 + 0.96 * (np.cos(half) * bis - np.sin(half) * y)]
        pos = donor + acceptor
    else:
        radius = 2.80 / (2.0 * np.sin(np.pi / n))
        ox = [radius * np.array([np.cos(2 * np.pi * i / n), np.sin(2 * np.pi * i / n), 0.0]) for i in range(n)]
        pos = []
        for i in range(n):
            pos += _water(ox[i], ox[(i + 1) % n] - ox[i], z if i % 2 == 0 else -z)
    return Atoms("OHH" * n, positions=np.array(pos))


#: Names :func:`build_molecule` knows (each a zero-argument builder).
MOLECULES = {
    "ethanol": lambda: _g2("CH3CH2OH"),
    "alanine-dipeptide": alanine_dipeptide,
    "water": lambda: water_cluster(1),
    "water-dimer": lambda: water_cluster(2),
    "water-trimer": lambda: water_cluster(3),
    "water-hexamer": lambda: water_cluster(6),
}


def _g2(name: str) -> Atoms:
    from ase.build import molecule

    a = molecule(name)
    return Atoms(a.numbers, positions=a.positions)


#: Backbone torsions (φ, ψ in degrees) of the alanine dipeptide starts that the data pipeline samples
#: from, so MD covers several basins. αR (-65°, -40°) is left out: GFN2-xTB minimisation in vacuum
#: takes it to C7eq (checked), so it needs a torsion-restrained minimisation, not a start.
ALANINE_DIPEPTIDE_STARTS = {"C7eq": (-83.0, 73.0), "C5": (-157.0, 165.0), "C7ax": (75.0, -65.0)}


#: How the data pipeline prepares a start before sampling from it (``info["minimise"]`` of a start):
#: "free" -- xTB minimum (the default); "backbone" -- xTB minimum with alanine dipeptide's φ, ψ held
#: (:func:`lawful.forcefields.conformers.restrain_backbone`: αR and αL are not vacuum minima);
#: "none" -- used as given (e.g. a snapshot of the molecule in solvent).
MINIMISE_MODES = ("free", "backbone", "none")


def start_structures(name_or_file: str | os.PathLike) -> dict[str, Atoms]:
    """The starting geometries the data pipeline samples from, by label: the alanine dipeptide
    conformers of :data:`ALANINE_DIPEPTIDE_STARTS`; for any other molecule or one-structure file
    ``{"start": build_molecule(...)}``. A file of several structures (extxyz) gives one start per
    structure, labelled by its ``info["start"]`` (else ``frame<k>``), each checked like
    :func:`build_molecule` and all of one molecule; a structure's ``info["minimise"]`` (one of
    :data:`MINIMISE_MODES`, default "free") says how the pipeline prepares it. Positions in Å.
    A total charge or multiplicity the file states is kept in ``info`` (see :func:`stated_state`);
    :func:`lawful.forcefields.xtb_data.molecule_state` decides the state from it."""
    if os.fspath(name_or_file) == "alanine-dipeptide":
        out = {}
        for label, (phi, psi) in ALANINE_DIPEPTIDE_STARTS.items():
            out[label] = alanine_dipeptide(phi, psi)
            out[label].info["molecule"] = "alanine-dipeptide"
        return out
    path = Path(os.fspath(name_or_file))
    if not path.is_file():
        return {"start": build_molecule(name_or_file)}       # a name, or its error for a missing file
    try:
        frames = _read_file(path, ":")
    except InputError:
        raise
    except Exception:  # a format ase.io reads one structure from (or none): build_molecule's way and errors
        frames = []
    if len(frames) <= 1:
        first = build_molecule(name_or_file) if not frames else _checked_structure(
            frames[0], f"molecule file {os.fspath(path)!r}")
        first.info.update(molecule=path.stem, minimise=_minimise_mode(frames[0] if frames else None, path, 0))
        return {"start": first}
    first = _checked_structure(frames[0], f"{os.fspath(path)!r} structure 0")
    out = {}
    for k, frame in enumerate(frames):
        atoms = _checked_structure(frame, f"{os.fspath(path)!r} structure {k}")
        if atoms.get_chemical_symbols() != first.get_chemical_symbols():
            raise InputError(f"molecule file {os.fspath(path)!r}: structure {k} has atoms "
                             f"{atoms.get_chemical_formula()} in another order than structure 0 "
                             f"({first.get_chemical_formula()}); a file of starts holds one molecule, same atom order.")
        label = str(frame.info.get("start", f"frame{k}"))
        if label in out:
            raise InputError(f"molecule file {os.fspath(path)!r}: two structures are labelled start={label!r}; "
                             "give every structure its own info['start'] label.")
        atoms.info.update(molecule=str(frame.info.get("molecule", path.stem)), minimise=_minimise_mode(frame, path, k))
        out[label] = atoms
    return out


def _minimise_mode(frame, path, k: int) -> str:
    mode = "free" if frame is None else str(frame.info.get("minimise", "free"))
    if mode not in MINIMISE_MODES:
        raise InputError(f"molecule file {os.fspath(path)!r}: structure {k} has minimise={mode!r}; use one of "
                         f"{', '.join(MINIMISE_MODES)}.")
    return mode


def build_molecule(name_or_file: str | os.PathLike) -> Atoms:
    """An isolated molecule by name (one of :data:`MOLECULES`) or the first structure of a file
    ``ase.io`` reads (xyz, extxyz, pdb, sdf, Gaussian input, ...). Positions in Å, no cell, ``pbc`` False;
    ``info["charge"]`` / ``info["multiplicity"]`` where the file states them (:func:`stated_state`;
    SDF ``M  CHG`` and the Gaussian charge line, which ase.io drops, are read here). A PDB file's
    placeholder ``CRYST1`` unit cube (1 Å, 90°, written by many tools for molecules) is read as no
    cell, with a warning.

    Raises ``InputError`` for an unknown name, an unreadable or periodic file, elements other than
    H, C, N, O, atoms closer than 0.5 Å, or a charge that is not a whole number.
    """
    text = os.fspath(name_or_file)
    if text in MOLECULES:
        atoms = MOLECULES[text]()
        atoms.info["molecule"] = text
        return atoms
    path = Path(text)
    if not path.is_file():
        raise InputError(f"molecule {text!r} is neither a known name nor a file: use one of "
                         f"{', '.join(MOLECULES)} or a structure file ase.io can read.")
    try:
        atoms = _read_file(path, 0)[0]
    except InputError:
        raise
    except Exception as exc:  # ase.io raises many types for a bad file
        raise InputError(f"molecule file {text!r} could not be read by ase.io ({type(exc).__name__}: {exc}); "
                         "pass an xyz/extxyz/pdb file with one structure.") from None
    out = _checked_structure(atoms, f"molecule file {text!r}")
    out.info["molecule"] = path.stem
    return out


#: A PDB ``CRYST1`` that is no crystal: the 1 Å unit cube (a, b, c in Å; α, β, γ in degrees) that
#: PyMOL, RDKit, Open Babel and others write for a molecule without a box (OpenMM reads it as none).
PDB_PLACEHOLDER_CELL = (1.0, 1.0, 1.0, 90.0, 90.0, 90.0)

#: SDF/MOL V2000 atom-block charge codes (columns 37-39) -> formal charge (4 is a doublet radical).
_SDF_CHARGE_CODES = {0: 0, 1: 3, 2: 2, 3: 1, 4: 0, 5: -1, 6: -2, 7: -3}


def _read_file(path: Path, index) -> list[Atoms]:
    """The structures ``ase.io`` reads from ``path`` (``index`` 0 or ":"), with what ase.io drops
    put back: an SDF's total charge and a Gaussian input's charge and multiplicity in ``info``; a
    PDB's placeholder unit cell (:data:`PDB_PLACEHOLDER_CELL`) removed, with a warning."""
    from ase.io import read
    from ase.io.formats import filetype

    frames = read(str(path), index=index)
    frames = list(frames) if isinstance(frames, list) else [frames]
    try:
        fmt = filetype(str(path))
    except Exception:  # ase.io read it, so a format it cannot name is simply none of these
        fmt = None
    if fmt == "proteindatabank":
        for a in frames:
            if a.pbc.all() and np.allclose(a.cell.cellpar(), PDB_PLACEHOLDER_CELL, rtol=0, atol=1e-3):
                warnings.warn(f"molecule file {os.fspath(path)!r}: CRYST1 is the 1 Å placeholder cube that many tools "
                              "write for a molecule without a box; read as an isolated molecule (no cell).",
                              stacklevel=3)
                a.cell, a.pbc = np.zeros((3, 3)), False
    elif fmt == "sdf":
        charge = _sdf_charge(path)
        if charge is not None:
            for a in frames:
                a.info["charge"] = charge
    elif fmt == "gaussian-in":
        from ase.io.gaussian import read_gaussian_in

        with open(path) as fh:
            params = read_gaussian_in(fh, attach_calculator=True).calc.parameters
        for a in frames:
            a.info.update(charge=int(params["charge"]), multiplicity=int(params["mult"]))
    return frames


def _sdf_charge(path: Path) -> int | None:
    """The total formal charge of the first molecule of an SDF/MOL V2000 file: the ``M  CHG`` lines
    (which replace the atom block's charges when present), else the atom block's charge codes; None
    when neither gives an atom a charge (the file states none)."""
    lines = Path(path).read_text(errors="replace").splitlines()
    try:
        n_atoms = int(lines[3][0:3])
    except (IndexError, ValueError):
        return None
    block, props = lines[4:4 + n_atoms], []
    for line in lines[4 + n_atoms:]:
        if line.startswith("M  END"):
            break
        if line.startswith("M  CHG"):
            props.append(line)
    if props:
        return int(sum(int(v) for line in props for v in line.split()[3:][1::2]))
    codes = []
    for line in block:
        try:
            codes.append(int(line[36:39]))
        except ValueError:
            codes.append(0)
    if not any(_SDF_CHARGE_CODES.get(c, 0) for c in codes):
        return None
    return int(sum(_SDF_CHARGE_CODES.get(c, 0) for c in codes))


def _whole(value, what: str, name: str) -> int:
    try:
        v = float(value)
    except (TypeError, ValueError):
        v = float("nan")
    if not np.isfinite(v) or abs(v - round(v)) > 1e-6:
        raise InputError(f"{what} states {name}={value!r}, which is not a whole number; give the molecule's total "
                         f"{name} as an integer in the file (or remove it and pass it as an argument).")
    return int(round(v))


def stated_state(atoms: Atoms, what: str = "the structure") -> dict[str, int]:
    """The electronic state a structure states itself, as ``{"charge": Q, "multiplicity": M}`` with
    only the keys it states: the total charge (e) from ``info["charge"]`` (extxyz ``charge=``; the SDF
    and Gaussian readers of :func:`build_molecule` put theirs there) or, where some are non-zero, the
    sum of the per-atom initial charges (``atoms.get_initial_charges()``); the multiplicity 2S+1
    from ``info["multiplicity"]``. ``"spin"`` is returned as given in ``info["spin"]`` (S or 2S+1:
    ambiguous, so never used as the multiplicity). InputError when the two charges disagree or a
    value is not a whole number."""
    out = {}
    if "charge" in atoms.info:
        out["charge"] = _whole(atoms.info["charge"], what, "charge")
    if "initial_charges" in atoms.arrays and np.any(atoms.arrays["initial_charges"] != 0):
        total = _whole(float(np.sum(atoms.arrays["initial_charges"])), what, "a sum of initial charges")
        if out.get("charge", total) != total:
            raise InputError(f"{what} states charge={out['charge']} but its per-atom initial charges add up to "
                             f"{total}; make the file say one total charge.")
        out["charge"] = total
    if "multiplicity" in atoms.info:
        out["multiplicity"] = _whole(atoms.info["multiplicity"], what, "multiplicity")
    if "spin" in atoms.info:
        out["spin"] = atoms.info["spin"]
    return out


def _checked_structure(atoms: Atoms, what: str) -> Atoms:
    """A clean copy (numbers, positions and the charge/multiplicity it states, :func:`stated_state`)
    of a structure read from a file, or InputError: no atoms, periodic, elements outside
    :data:`SPECIES`, or atoms closer than 0.5 Å."""
    if len(atoms) == 0:
        raise InputError(f"{what} holds no atoms; pass a file with a structure.")
    if atoms.pbc.any():
        raise InputError(f"{what} is periodic (pbc={atoms.pbc.tolist()}); the molecular "
                         "pipeline labels isolated molecules: remove the cell/pbc from the file.")
    bad = sorted(set(atoms.get_chemical_symbols()) - set(SPECIES))
    if bad:
        raise InputError(f"{what} contains {', '.join(bad)}; the molecular data "
                         f"sets use only {', '.join(SPECIES)}: pass a molecule of those elements.")
    if len(atoms) > 1:
        d = atoms.get_all_distances()
        dmin = float(d[np.triu_indices(len(atoms), 1)].min())
        if dmin < 0.5:
            raise InputError(f"{what} has two atoms {dmin:.3f} Å apart (< 0.5 Å): the "
                             "coordinates are probably not in Å or atoms overlap; fix the file.")
    out = Atoms(atoms.numbers, positions=atoms.positions)
    out.info.update(stated_state(atoms, what))
    return out

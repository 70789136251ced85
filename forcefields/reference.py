"""Reference data for training and testing force fields: structures labelled by classical models.

* Labelling: any ASE calculator (:func:`label`) - EMT for Cu/Al/Ni/Ag/Au/Pd/Pt, Lennard-Jones, or
  an OpenMM classical force field through ``lawful.integrations.openmm_reference.OpenMMCalculator``
  (engine adapters live with the engines; this module imports no engine).
* Sampling: short Langevin MD at chosen temperatures (:func:`md_snapshots`), rattled cells
  (:func:`rattled`) and strained + rattled cells (:func:`strained`); ready-made sets
  :func:`emt_metal_dataset` (fcc EMT metal, default copper) and :func:`lennard_jones_dataset`
  (argon); TIP3P water clusters through OpenMM are ``lawful.integrations.openmm_reference``.
* Storage: extended XYZ (:func:`write_extxyz` / :func:`read_extxyz`, written atomically) and ASE
  databases (:func:`write_db` / :func:`read_db`, SQLite by default; any ``ase.db`` URL works).

Every labelled frame carries energy (eV), forces (eV/Å) and, for periodic cells, stress (eV/Å^3,
ASE sign) in a SinglePointCalculator, plus ``atoms.info["source"]`` saying how it was made.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator
from ase.calculators.singlepoint import SinglePointCalculator

from lawful.kernels.errors import InputError

__all__ = [
    "label", "md_snapshots", "rattled", "strained", "emt_metal_dataset", "lennard_jones_dataset",
    "write_extxyz", "read_extxyz", "write_db", "read_db", "refuse_filled_server_db",
]


# -- labelling ---------------------------------------------------------------------------------
def _bar(progress: bool, total: int, desc: str):
    """A tqdm progress bar (stderr) when ``progress``, else a no-op object with ``update``/``close``."""
    if progress:
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=desc, unit="frame", leave=True)

    class _Silent:
        def update(self, n=1):
            pass

        def close(self):
            pass

    return _Silent()


def label(frames: Iterable[Atoms], calculator: Calculator, source: str | None = None,
          stress: bool | None = None, progress: bool = False) -> list[Atoms]:
    """Copies of ``frames`` labelled by ``calculator``: energy (eV), forces (eV/Å) and (periodic
    frames, or if ``stress``) stress (eV/Å³), stored in a SinglePointCalculator so the labels survive
    I/O. The labels are the potential's own: a frame's ASE constraints (``FixAtoms`` of a slab's
    bottom layers, ``Hookean`` restraints from a relaxation) are dropped from the copy, as they
    zeroed the forces on fixed atoms (0 instead of 0.94 eV/Å for EMT copper) and added the
    restraint's energy to the label (12.5 eV instead of 0.60 eV).
    ``progress``: a tqdm bar on stderr."""
    frames = list(frames)
    bar = _bar(progress, len(frames), "labelling")
    out = []
    for atoms in frames:
        bar.update()
        a = atoms.copy()
        a.set_constraint()          # labels of the potential, not of a constrained optimisation
        a.calc = calculator
        results = {"energy": float(a.get_potential_energy()), "forces": np.array(a.get_forces())}
        want_stress = all(a.pbc) if stress is None else stress
        if want_stress and "stress" in calculator.implemented_properties:
            results["stress"] = np.array(a.get_stress(voigt=True))
        a.calc = SinglePointCalculator(a, **results)
        if source is not None:
            a.info["source"] = source
        out.append(a)
    bar.close()
    return out


# -- sampling ----------------------------------------------------------------------------------
def md_snapshots(atoms: Atoms, calculator: Calculator, temperatures: Sequence[float], n_per_temperature: int,
                 interval: int = 20, timestep_fs: float = 4.0, equilibration: int = 40,
                 friction: float = 0.02, seed: int = 0, progress: bool = False) -> list[Atoms]:
    """Langevin MD snapshots (unlabelled copies) at each temperature in K.

    For each temperature: Maxwell-Boltzmann velocities, ``equilibration`` steps, then a snapshot
    every ``interval`` steps. ``friction`` in 1/fs. Deterministic for a given ``seed``.
    ``progress``: a tqdm bar on stderr, one tick per snapshot.
    """
    import ase.units as au
    from ase.md.langevin import Langevin
    try:                                  # ase >= 3.28 (MaxwellBoltzmannDistribution deprecated)
        from ase.md.velocitydistribution import thermalize_momenta as _thermalize
    except ImportError:                   # pragma: no cover - older ase
        from ase.md.velocitydistribution import MaxwellBoltzmannDistribution as _thermalize

    frames = []
    bar = _bar(progress, len(temperatures) * n_per_temperature, "MD sampling")
    for k, temp in enumerate(temperatures):
        rng = np.random.default_rng(seed + 7919 * k)
        a = atoms.copy()
        a.calc = calculator
        _thermalize(a, temperature_K=temp, rng=rng)
        dyn = Langevin(a, timestep_fs * au.fs, temperature_K=temp, friction=friction / au.fs, rng=rng,
                       fixcm=False)
        dyn.run(equilibration)
        for n in range(n_per_temperature):
            dyn.run(interval)
            snap = Atoms(a.numbers, positions=a.positions, cell=a.cell, pbc=a.pbc)
            snap.info["source"] = f"md_{int(temp)}K"
            frames.append(snap)
            bar.update()
    bar.close()
    return frames


def rattled(atoms: Atoms, n: int, amplitude: float = 0.1, seed: int = 0) -> list[Atoms]:
    """``n`` copies with Gaussian displacements of standard deviation ``amplitude`` Å."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        a = Atoms(atoms.numbers, positions=atoms.positions + rng.normal(0.0, amplitude, (len(atoms), 3)),
                  cell=atoms.cell, pbc=atoms.pbc)
        a.info["source"] = f"rattled_{amplitude:g}"
        out.append(a)
    return out


def _affine(x: np.ndarray, f: np.ndarray) -> np.ndarray:
    """``x @ f`` for (n, 3) rows and a (3, 3) matrix, summed in a fixed order with elementwise
    operations. A BLAS matmul picks its kernel by CPU (FMA or not, block order), so the same seed
    gave positions differing in the last bit from machine to machine and the data fingerprint of
    the shipped models did not reproduce; elementwise IEEE products and sums are the same everywhere."""
    x = np.asarray(x, dtype=np.float64)
    return (x[:, 0:1] * f[0]) + (x[:, 1:2] * f[1]) + (x[:, 2:3] * f[2])


def strained(atoms: Atoms, n: int, max_strain: float = 0.04, amplitude: float = 0.05, seed: int = 0) -> list[Atoms]:
    """``n`` copies under random symmetric strains (components uniform in ±``max_strain``), atoms
    moved affinely with the cell, then rattled by ``amplitude`` Å."""
    if not all(atoms.pbc):
        raise InputError("strained() needs a periodic structure (pbc=True in all directions).")
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        e = rng.uniform(-max_strain, max_strain, (3, 3))
        e = 0.5 * (e + e.T)
        f = np.eye(3) + e
        pos = _affine(atoms.positions, f) + rng.normal(0.0, amplitude, (len(atoms), 3))
        a = Atoms(atoms.numbers, positions=pos, cell=_affine(np.asarray(atoms.cell), f), pbc=True)
        a.info["source"] = f"strained_{max_strain:g}"
        out.append(a)
    return out


def emt_metal_dataset(element: str = "Cu", repeat: int = 2, temperatures: Sequence[float] = (300, 600, 900, 1200),
                      n_md: int = 40, n_rattled: int = 30, n_strained: int = 40, lattice: float | None = None,
                      seed: int = 0, progress: bool = False) -> list[Atoms]:
    """EMT-labelled fcc ``element`` supercells (``repeat``³ conventional cells, 4·repeat³ atoms):
    MD snapshots at each temperature (``n_md`` each), rattled and strained cells.
    ``progress``: tqdm bars for the sampling and the labelling."""
    from ase.build import bulk
    from ase.calculators.emt import EMT

    calc = EMT()
    base = bulk(element, "fcc", a=lattice, cubic=True).repeat((repeat,) * 3)
    frames = md_snapshots(base, calc, temperatures, n_md, seed=seed, progress=progress)
    frames += rattled(base, n_rattled // 2, 0.05, seed=seed + 1) + rattled(base, n_rattled - n_rattled // 2, 0.15, seed=seed + 2)
    frames += strained(base, n_strained, 0.04, 0.08, seed=seed + 3)
    return label(frames, calc, progress=progress)


def lennard_jones_dataset(n_md: int = 20, temperatures: Sequence[float] = (30, 60), repeat: int = 2,
                          seed: int = 0, progress: bool = False) -> list[Atoms]:
    """Argon fcc supercells labelled by ASE's smooth Lennard-Jones (sigma 3.405 Å, epsilon
    0.0104 eV, r_c = 2.5 sigma, smooth cut-off): MD snapshots plus rattled and strained cells."""
    from ase.build import bulk
    from ase.calculators.lj import LennardJones

    sigma = 3.405
    calc = LennardJones(sigma=sigma, epsilon=0.0104, rc=2.5 * sigma, smooth=True)
    base = bulk("Ar", "fcc", a=5.26, cubic=True).repeat((repeat,) * 3)
    frames = md_snapshots(base, calc, temperatures, n_md, timestep_fs=5.0, seed=seed, progress=progress)
    frames += rattled(base, 10, 0.1, seed=seed + 1) + strained(base, 10, 0.03, 0.05, seed=seed + 2)
    return label(frames, calc, progress=progress)


# -- storage -----------------------------------------------------------------------------------
def write_extxyz(path: str | os.PathLike, frames: Sequence[Atoms]) -> Path:
    """Write labelled frames to an extended-XYZ file atomically: through a temporary file of its
    own (:func:`lawful.kernels.modelfile.atomic_write`), so a second writer of the same file never
    shares it, and ``path`` holds one writer's complete set of frames, never a mix or a torn file."""
    import io

    from ase.io import write

    from lawful.kernels.modelfile import atomic_write

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as fh:
        text = io.TextIOWrapper(fh, encoding="utf-8", newline="")
        write(text, list(frames), format="extxyz")
        text.flush()
        text.detach()   # atomic_write flushes, fsyncs and closes the file itself
    return path


def read_extxyz(path: str | os.PathLike) -> list[Atoms]:
    """Read every frame (with its energy/forces/stress labels) of an extended-XYZ file."""
    from ase.io import read

    if not Path(path).is_file():
        raise InputError(f"no such data file: {os.fspath(path)!r}.")
    return list(read(str(path), index=":", format="extxyz"))


def write_db(url: str | os.PathLike, frames: Sequence[Atoms], append: bool = False) -> str:
    """Store labelled frames in an ASE database (``ase.db`` URL or a path to a SQLite file).

    A plain file path (not ``append``) is replaced atomically: the database is built in a scratch
    folder of its own beside it, then moved into place through
    :func:`lawful.kernels.modelfile.atomic_write` (a unique temporary file and ``os.replace``), so
    two writers of one file leave one writer's complete set, never an empty or mixed database.
    ``append``: the frames are added to the existing database in one SQLite transaction (all or none;
    SQLite's locking serialises concurrent appenders). Other URLs (postgresql://...) are written row
    by row in one transaction; a server database cannot be replaced as a file is, so without
    ``append`` one that already holds rows is refused (:func:`refuse_filled_server_db`).
    """
    import shutil
    import tempfile

    import ase.db

    from lawful.kernels.modelfile import atomic_write

    url = os.fspath(url)
    is_file = "://" not in url
    if not is_file and not append:
        refuse_filled_server_db(url)
    if not is_file or append:
        with ase.db.connect(url, type="db" if is_file else "extract_from_name", append=True) as db:
            for a in frames:
                db.write(a, source=str(a.info.get("source", "")))
        return url
    path = Path(url)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent) as scratch:
        built = os.path.join(scratch, "frames.db")   # SQLite's journal and ASE's lock file stay in there
        with ase.db.connect(built, type="db", append=False) as db:
            for a in frames:
                db.write(a, source=str(a.info.get("source", "")))
        with open(built, "rb") as src, atomic_write(path) as fh:
            shutil.copyfileobj(src, fh, 1 << 20)
    return url


def _redacted(url: str) -> str:
    """``url`` with the password of ``scheme://user:password@host`` replaced by ``***``."""
    import re

    return re.sub(r"(://[^:/@]*):[^@/]*@", r"\1:***@", url)


def refuse_filled_server_db(url: str) -> None:
    """Raise :class:`InputError` if the server database ``url`` (postgresql://, mysql://, ...)
    already holds rows. A database file is replaced whole by :func:`write_db`; a server database
    can only be added to, so writing a data set into one that holds an earlier set (a rerun of
    ``lawful data --db URL``) silently made a set of both: twice the frames, and copies of one frame
    on both sides of a later train/test split. Call it before labelling (the slow part)."""
    import ase.db

    n = ase.db.connect(url, type="extract_from_name").count()
    if n:
        raise InputError(
            f"the database {_redacted(url)} already holds {n} rows: a database file is replaced by a new data set, "
            "but a server database can only be added to, and the new frames would sit beside the old ones (copies "
            "of a frame on both sides of a later train/test split). Empty it or name another database; to add to "
            "it on purpose, use lawful.forcefields.reference.write_db(url, frames, append=True).")


def read_db(url: str | os.PathLike, selection=None) -> list[Atoms]:
    """Read labelled frames (with ``info["source"]``) from an ASE database, optionally filtered by
    an ``ase.db`` selection string."""
    import ase.db

    url = os.fspath(url)
    if "://" not in url and not Path(url).is_file():
        raise InputError(f"no such database file: {url!r}.")
    out = []
    with ase.db.connect(url, type="db" if "://" not in url else "extract_from_name") as db:
        for row in db.select(selection):
            a = row.toatoms()
            a.info["source"] = row.get("source", "")
            out.append(a)
    return out

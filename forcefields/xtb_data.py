"""GFN2-xTB reference data for molecules: sampling, a resumable labelling cache, split and card.

Layering rule followed here: ``lawful.forcefields`` imports no simulation engine (OpenMM, Taichi;
those adapters live in ``lawful.integrations``). ASE is a core dependency, and an *ASE calculator*
from an optional wheel (tblite's ``TBLite``) may be imported lazily, inside the functions that
label or sample, as :mod:`lawful.forcefields.reference` does with EMT. Nothing imports tblite at
module import time; without the ``lawful[xtb]`` extra the functions raise ``BackendError``.

The pipeline (:func:`make_dataset`), each stage resumable from the files in ``out``:

1. the molecule's starting geometries (:func:`lawful.forcefields.molecules.start_structures`: one,
   three backbone conformers of alanine dipeptide, or every structure of a file of starts) are
   minimised with xTB (BFGS), with φ/ψ held, or not at all, as each start's ``info["minimise"]`` says;
2. sampling: ``segments_per_temperature`` independent Langevin trajectories per temperature
   (ASE ``Langevin``, xTB forces; the starts taken in turn), ``frames_per_segment`` snapshots each,
   plus rattled copies of the minima grouped into segments; every segment is appended to ``samples.extxyz`` when done
   (in one write; a rerun keeps each segment's first complete set and resamples an incomplete one once);
3. labelling (:func:`label_cached`): each frame's energy (eV) and forces (eV/Å) appended to
   ``labels.extxyz`` (one write + flush + fsync per frame) under a key (SHA-256 of numbers,
   positions and method, plus the cell and pbc of a periodic frame), so a rerun labels only frames
   not yet there; a tqdm bar shows ETA. Each label records the tblite version that made it, and a
   rerun with another version refuses to add labels to a data set made with the first;
4. split by segment (:func:`split_by_segment`) into ``train/validation/test.extxyz`` and a JSON
   card ``card.json`` (method, code versions, the tblite version of the labels, sampling settings,
   seeds, split, counts, how many labels of ``labels.extxyz`` lie outside the data set, timings).

Cost, measured on the shared 2-core CPU (one thread, tblite 0.8.0): one E+F 1.1 ms for ethanol,
6.4 ms for alanine dipeptide, 3.1 ms for the water hexamer; an MD step about the same. With the
defaults (0.5 fs, a snapshot every 20 steps, 200 equilibration steps per 10-frame segment) a frame
costs about 40 xTB calls (measured: 0.31 s per alanine dipeptide frame at 1000 K, MD included), so
1200 alanine dipeptide frames take about 6 minutes. Stored extxyz: about
2.5 kB per alanine dipeptide frame, 1.2 kB per ethanol frame.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

from lawful.forcefields.molecules import SPECIES, start_structures, stated_state
from lawful.kernels.errors import BackendError, InputError

__all__ = ["METHOD", "SamplingConfig", "xtb_calculator", "frame_key", "cache_key", "LabelCache", "label_cached",
           "minimise", "sample_segments", "split_by_segment", "empty_splits", "make_dataset", "electronic_state",
           "molecule_state", "stored_positions"]

#: The reference method (tblite's name for it).
METHOD = "GFN2-xTB"
SPLITS = ("train", "validation", "test")


def electronic_state(numbers, charge: int = 0, multiplicity: int = 1) -> tuple[int, int]:
    """``(charge, multiplicity)`` checked against the atoms' electron count, or InputError.

    ``charge``: total charge, e (an integer); ``multiplicity``: 2S + 1 (1 singlet, 2 doublet, ...).
    The electron count ``sum(Z) - charge`` and the unpaired electrons ``multiplicity - 1`` must have
    the same parity: tblite does not check it, and labels an ion given as neutral (an odd electron
    count as a "singlet") without error, e.g. NH4+ read as NH4 is 6 eV off."""
    for name, v in (("charge", charge), ("multiplicity", multiplicity)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise InputError(f"{name}={v!r} is not an integer; give the total {name} as a whole number.")
    n_el = int(np.sum(np.asarray(numbers, dtype=np.int64))) - int(charge)
    unpaired = int(multiplicity) - 1
    if multiplicity < 1 or unpaired > n_el:
        raise InputError(f"multiplicity={multiplicity!r} is impossible with {n_el} electrons; give 2S+1 >= 1 "
                         "(1 for a closed-shell molecule).")
    if (n_el - unpaired) % 2:
        raise InputError(f"charge={charge} and multiplicity={multiplicity} do not fit {n_el} electrons (an odd count "
                         f"cannot be a {'singlet' if unpaired == 0 else f'multiplicity-{multiplicity} state'}): "
                         "give the molecule's real total charge (--charge, e.g. 1 for a cation) or, for a radical, "
                         "its multiplicity (--multiplicity 2).")
    return int(charge), int(multiplicity)


def molecule_state(starts: dict[str, Atoms], charge: int | None = None,
                   multiplicity: int | None = None) -> tuple[int, int]:
    """``(charge, multiplicity)`` of a molecule's starts (by label, as
    :func:`lawful.forcefields.molecules.start_structures` gives them, or one ``Atoms``), checked by
    :func:`electronic_state`. What the structures state (:func:`~lawful.forcefields.molecules.stated_state`:
    extxyz ``charge=`` / ``multiplicity=``, per-atom initial charges, SDF ``M  CHG``, the Gaussian
    charge line) is used where the argument is None; an argument that disagrees with it, or starts
    that disagree with each other, raise InputError (a carbonate file with ``charge=-2`` was
    labelled as neutral CO3, 11.7 eV off). Nothing stated and None given: the neutral singlet (0, 1)."""
    stated: dict[str, dict[str, object]] = {}
    for label, atoms in starts.items():
        for key, value in stated_state(atoms, f"start {label!r}").items():
            stated.setdefault(key, {})[label] = value
    given = {"charge": charge, "multiplicity": multiplicity}
    chosen = {}
    for key, default in (("charge", 0), ("multiplicity", 1)):
        values = stated.get(key, {})
        if len(set(values.values())) > 1:
            raise InputError(f"the starts state different {key}s ({', '.join(f'{k}: {v}' for k, v in values.items())}); "
                             f"a data set is one molecule in one electronic state: make every structure say {key}=the same.")
        in_file = next(iter(values.values()), None)
        if given[key] is not None and in_file is not None and given[key] != in_file:
            raise InputError(f"{key}={given[key]} was given but the molecule's file states {key}={in_file} (start "
                             f"{next(iter(values))!r}); pass {key}={in_file} or none (the file's is used), or fix the file.")
        chosen[key] = given[key] if given[key] is not None else in_file if in_file is not None else default
    spins = stated.get("spin", {})
    if spins and multiplicity is None and "multiplicity" not in stated:
        raise InputError(f"start {next(iter(spins))!r} states spin={next(iter(spins.values()))!r}, which could be S or 2S+1; "
                         "pass the multiplicity 2S+1 (--multiplicity / multiplicity=) or write multiplicity= in the file.")
    return electronic_state(next(iter(starts.values())).numbers, chosen["charge"], chosen["multiplicity"])


def _state_tag(charge: int, multiplicity: int) -> str:
    """The electronic state as it joins keys: empty for the neutral singlet (the keys every existing
    cache holds), else ``" charge=Q multiplicity=M"``."""
    return "" if (charge, multiplicity) == (0, 1) else f" charge={charge} multiplicity={multiplicity}"


def xtb_calculator(method: str = METHOD, fresh_guess: bool = True, charge: int = 0, multiplicity: int = 1):
    """tblite's ASE calculator (``TBLite``), quiet; energies eV, forces eV/Å; ``charge`` (e) and
    ``multiplicity`` (2S+1) of the molecule, checked by :func:`electronic_state` where the atoms are known.

    ``fresh_guess`` sets ``cache_api=False``, but even then a reused TBLite instance gives results
    that depend on the geometries it saw before (about 1e-8 eV, 1e-5 eV/Å: the SCF tolerance), so
    :func:`label_cached` makes a new instance per frame, which is bit-for-bit reproducible whatever
    the order (resumed and uninterrupted runs agree exactly). MD passes ``False``."""
    try:
        from tblite.ase import TBLite
    except ImportError:
        raise BackendError("GFN2-xTB labelling needs the tblite package, which is not installed: "
                           "pip install 'lawful[xtb]' (or pip install tblite).") from None
    return TBLite(method=method, verbosity=0, cache_api=not fresh_guess, charge=int(charge),
                  multiplicity=int(multiplicity))


def tblite_version() -> str | None:
    """The installed tblite's version (None: not installed): it joins every xTB label as
    ``info["tblite"]`` (:func:`label_cached`), since another version may give other numbers."""
    from importlib import metadata

    try:
        return metadata.version("tblite")
    except metadata.PackageNotFoundError:
        return None


def _label_version(atoms: Atoms, unrecorded: str | None = None) -> str | None:
    """The tblite version that made the label of ``atoms`` (``info["tblite"]``, "v0.8.0"), else ``unrecorded``."""
    said = atoms.info.get("tblite")
    return str(said).removeprefix("v") if isinstance(said, str) else unrecorded


def frame_key(atoms: Atoms, method: str = METHOD) -> str:
    """A 16-hex-digit key of a frame: SHA-256 of the method (the labeller, :func:`labeller_id`),
    atomic numbers and float64 positions, and for a periodic frame (any ``pbc``) also its pbc flags
    and float64 cell: a periodic cell and the isolated cluster of its atoms have different energies,
    so they never share a label. A non-periodic frame's key ignores its cell (no energy depends on
    it), so the keys of molecules are those every existing cache holds."""
    h = hashlib.sha256(method.encode())
    h.update(np.ascontiguousarray(atoms.numbers, dtype=np.int64).tobytes())
    h.update(np.ascontiguousarray(atoms.positions, dtype=np.float64).tobytes())
    if atoms.pbc.any():
        h.update(b"pbc" + np.ascontiguousarray(atoms.pbc, dtype=np.uint8).tobytes())
        h.update(np.ascontiguousarray(atoms.cell[:], dtype=np.float64).tobytes())
    return h.hexdigest()[:16]


def stored_positions(atoms: Atoms) -> np.ndarray:
    """``atoms.positions`` (Å, float64) as an extxyz file stores and reads them back: each coordinate
    printed with 8 decimals (ase's ``%16.8f``) and parsed again. Idempotent, so a frame read back
    from a file maps to itself."""
    pos = np.ascontiguousarray(atoms.positions, dtype=np.float64)
    return np.char.mod("%.8f", pos).astype(np.float64).reshape(pos.shape)


def cache_key(atoms: Atoms, labeller: str = METHOD) -> str:
    """The :class:`LabelCache` key of a frame: :func:`frame_key` of its :func:`stored_positions`, so
    a frame and its copy read back from ``labels.extxyz`` have the same key (full float64 positions
    never found their 8-decimal copies on disk: every rerun labelled them again and grew the file).
    The cell and pbc are kept (extxyz stores the cell exactly), so a periodic frame is keyed with them."""
    return frame_key(_stored_frame(atoms), labeller)


def _stored_frame(atoms: Atoms) -> Atoms:
    """A bare copy of ``atoms`` as the label cache stores it: numbers, :func:`stored_positions`,
    cell and pbc (a periodic frame labelled without its cell was an isolated cluster: a periodic
    4-atom Cu cell came back with 5.11 eV instead of EMT's -0.023 eV)."""
    return Atoms(atoms.numbers, positions=stored_positions(atoms), cell=atoms.cell[:], pbc=atoms.pbc)


def labeller_id(calculator=None, method: str = METHOD, charge: int = 0, multiplicity: int = 1) -> str:
    """What made a label, as the cache keys it: ``method`` for the default labeller on a neutral
    singlet (a fresh :func:`xtb_calculator` per frame, the keys every existing cache holds), with
    ``" charge=Q multiplicity=M"`` for another electronic state, else the calculator's class and
    parameters (``todict()``), so labels of another calculator are never taken for xTB's (a
    Lennard-Jones label once came back as "GFN2-xTB", 300 eV off). A calculator made of others
    (ASE's ``SumCalculator``, ``LinearCombinationCalculator``, ``MixedCalculator``: ``calcs`` and
    ``weights``, in their ``mixer``, which their ``todict()`` leaves out) adds the id of each part and the weights:
    two sums of different potentials once shared one id, and the cache gave one the other's labels.
    A ``method`` other than :data:`METHOD` given with a ``calculator`` joins its id, a name for a
    calculator whose ``todict()`` does not tell its instances apart (an OpenMM force field)."""
    if calculator is None:
        return method + _state_tag(charge, multiplicity)
    params = getattr(calculator, "todict", lambda: {})()
    out = (f"{type(calculator).__module__}.{type(calculator).__qualname__}"
           + json.dumps(params, sort_keys=True, default=str))
    mix = getattr(calculator, "mixer", calculator)        # ase >= 3.23 keeps them in a Mixer
    parts = getattr(mix, "calcs", None)
    if isinstance(parts, (list, tuple)) and parts:
        weights = getattr(mix, "weights", None)
        out += ("[" + ", ".join(labeller_id(c) for c in parts) + "]"
                + ("" if weights is None else json.dumps([float(w) for w in np.ravel(weights)])))
    return out if method == METHOD else f"{method}: {out}"


def _extxyz_text(atoms: Atoms) -> bytes:
    from ase.io import write

    buf = io.StringIO()
    write(buf, atoms, format="extxyz")
    return buf.getvalue().encode()


def _round_trip(atoms: Atoms) -> Atoms:
    """``atoms`` with positions as extxyz stores them (:func:`stored_positions`), so a frame read
    back from the samples file has the same :func:`frame_key` as the one first sampled."""
    return Atoms(atoms.numbers, positions=stored_positions(atoms))


def _append_frames(path: Path, frames: Iterable[Atoms]) -> None:
    """Append frames to an extxyz file in one ``write`` (a whole sampled segment, or one label),
    then flush and fsync, so a killed run leaves at most a torn tail (:func:`_read_intact` drops it),
    not a segment with some of its frames."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = b"".join(_extxyz_text(a) for a in frames)
    with open(path, "ab") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def _rewrite_frames(path: Path, frames: Iterable[Atoms]) -> None:
    """Replace ``path`` by ``frames`` atomically, through a temporary file of its own
    (:func:`lawful.kernels.modelfile.atomic_write`): a fixed ``X.tmp`` was shared by two writers."""
    from lawful.kernels.modelfile import atomic_write

    with atomic_write(path) as fh:
        fh.write(b"".join(_extxyz_text(a) for a in frames))


def _read_intact(path: Path) -> list[Atoms]:
    """Every intact frame of an appended extxyz file. A torn last frame (the process killed in the
    middle of a write) is dropped and the file rewritten without it, atomically."""
    from ase.io import iread

    if not path.is_file():
        return []
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        # every frame ends with a newline: a tail without one was cut mid-write, possibly inside
        # its last number (-3.546 read as -3.54), so that line goes and its frame with it below
        from lawful.kernels.modelfile import atomic_write

        with atomic_write(path) as fh:
            fh.write(data[:data.rfind(b"\n") + 1])
    frames = []
    try:
        for a in iread(str(path), index=":", format="extxyz"):
            frames.append(a)
        return frames
    except Exception:  # a torn tail: keep what parsed
        _rewrite_frames(path, frames)
        return frames


class LabelCache:
    """Labelled frames on disk (extxyz at ``path``), appended one by one, looked up by
    :func:`cache_key` (stored as ``info["key"]``)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.frames: dict[str, Atoms] = {}
        for a in _read_intact(self.path):
            # recomputed from the stored frame (the positions round-trip exactly): extxyz reads a
            # key such as 306540283e861062 back as a number (inf), which never matched again
            a.info["key"] = cache_key(a, str(a.info.get("labeller", a.info.get("method", METHOD))))
            self.frames[a.info["key"]] = a

    def __contains__(self, key: str) -> bool:
        return key in self.frames

    def add(self, atoms: Atoms) -> None:
        """Append one labelled frame (with ``info["key"]``) to the file (fsync'd) and the index."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        _append_frames(self.path, [atoms])
        self.frames[str(atoms.info["key"])] = atoms


def label_cached(frames: Sequence[Atoms], cache: str | os.PathLike | LabelCache, calculator=None,
                 method: str = METHOD, progress: bool = False,
                 on_label: Callable[[int], None] | None = None, charge: int = 0,
                 multiplicity: int = 1, unrecorded_version: str | None = None) -> list[Atoms]:
    """``frames`` labelled by ``calculator`` (default: a new :func:`xtb_calculator` per frame, for the
    total ``charge`` (e) and ``multiplicity`` given, checked against each frame's electrons): copies
    carrying energy (eV) and forces (eV/Å) in a SinglePointCalculator and ``info`` (``key``,
    ``segment``, ``source``, ... of the input, plus ``method``, ``charge``, ``multiplicity``), in
    input order; a frame found in the cache carries its own input's ``info`` too, not that of the
    frame first labelled at its positions. A frame is labelled at its positions as the cache file stores them
    (:func:`stored_positions`, 8 decimals in Å), with its cell and pbc (a periodic frame is labelled
    periodic: tblite's GFN2-xTB and ASE's calculators take the cell; a cell vector missing along a
    periodic axis is refused), and found by :func:`cache_key`, so frames already in
    ``cache`` are not recomputed, whatever the precision of the positions passed; each new one is
    appended to it at once, so an interruption keeps them. A frame that states another charge or
    multiplicity (``info``, :func:`~lawful.forcefields.molecules.stated_state`) than the one given is
    refused. ``on_label(n)``: called after the n-th new label is stored. ``progress``: a tqdm bar (stderr).

    xTB labels (``calculator`` None) record the tblite version that made them (``info["tblite"]``,
    ``"v0.8.0"``).
    New labels are refused (:class:`InputError`, before any is made) when the frames asked for
    include labels of the cache made by another tblite version, so that one data set never mixes
    two versions' numbers while its card names one; ``unrecorded_version`` is the version of the
    cache's labels that record none (older caches; :func:`make_dataset` passes its card's)."""
    cache = cache if isinstance(cache, LabelCache) else LabelCache(cache)
    if calculator is None:
        for numbers in {tuple(a.numbers) for a in frames}:
            electronic_state(numbers, charge, multiplicity)
        for i, a in enumerate(frames):
            said = stated_state(a, f"frame {i}")
            for key, value in (("charge", charge), ("multiplicity", multiplicity)):
                if key in said and said[key] != value:
                    raise InputError(f"frame {i} states {key}={said[key]} but label_cached got {key}={value}; pass "
                                     f"{key}={said[key]} (every frame of one call is labelled in one electronic state).")
    for i, a in enumerate(frames):
        flat = [k for k in range(3) if a.pbc[k] and not np.linalg.norm(a.cell[k]) > 0]
        if flat:
            raise InputError(f"frame {i} is periodic along axis {', '.join(map(str, flat))} (pbc={a.pbc.tolist()}) "
                             "but its cell has no vector there; give the frame its cell, or pbc=False for an "
                             "isolated molecule.")
    labeller = labeller_id(calculator, method, charge, multiplicity)
    keys = [cache_key(a, labeller) for a in frames]
    todo = [i for i, k in enumerate(keys) if k not in cache]
    version = tblite_version() if calculator is None else None
    if todo and version is not None:
        made_by = {str(_label_version(cache.frames[k], unrecorded_version)) for k in keys if k in cache}
        other = sorted(made_by - {str(version), "None"})
        if other:
            raise InputError(f"{len(keys) - len(todo)} of these frames are labelled in {os.fspath(cache.path)!r} by "
                             f"tblite {', '.join(other)}, and the {len(todo)} new label(s) would be made by tblite "
                             f"{version}: one data set would mix two versions' numbers. Install tblite=={other[0]} "
                             "to finish it, or label into a new folder (lawful data --out NEW) with this one.")
    bar = None
    if progress and todo:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(todo), desc=f"labelling ({method})", unit="frame")
    try:
        for n, i in enumerate(todo, start=1):
            a = _stored_frame(frames[i])   # as the file keeps it: 8-decimal positions, the cell and pbc
            a.info.update(frames[i].info)
            # what an input frame says of an earlier labelling goes: a stale "labeller" (read from
            # another cache) filed this label under that calculator's key in the reloaded cache, and
            # labels in its info (an extxyz read without a calculator) clashed with the new ones when
            # the frame was written ("key from calculator already exists"), after the label was
            # paid for, at every rerun
            for name in _STALE_INFO:
                a.info.pop(name, None)
            a.info["key"], a.info["method"] = keys[i], method if calculator is None else labeller
            if labeller != method:            # another calculator or electronic state: the key says which
                a.info["labeller"] = labeller
            if calculator is None and (charge, multiplicity) != (0, 1):
                a.info["charge"], a.info["multiplicity"] = int(charge), int(multiplicity)
            a.calc = (calculator if calculator is not None        # fresh: see xtb_calculator
                      else xtb_calculator(method, charge=charge, multiplicity=multiplicity))
            t0 = time.perf_counter()
            energy, forces = float(a.get_potential_energy()), np.array(a.get_forces(), dtype=np.float64)
            a.info["seconds"] = round(time.perf_counter() - t0, 6)
            if version is not None:
                a.info["tblite"] = "v" + version    # "v": extxyz reads a bare 0.10 back as the number 0.1
            if not (np.isfinite(energy) and np.isfinite(forces).all()):
                raise InputError(f"frame {i} (key {keys[i]}) got a non-finite {method} energy/forces: the "
                                 "geometry is probably broken; drop the frame or lower the MD temperature.")
            a.calc = SinglePointCalculator(a, energy=energy, forces=forces)
            cache.add(a)
            if bar is not None:
                bar.update()
            if on_label is not None:
                on_label(n)
    finally:
        if bar is not None:
            bar.close()
    return [_with_info_of(cache.frames[k], frames[i]) for i, k in enumerate(keys)]


#: What a frame's ``info`` says of a labelling: never carried from an input frame to its new label.
_STALE_INFO = ("labeller", "energy", "free_energy", "forces", "stress", "tblite")
#: What a stored label's ``info`` says of how it was made (:func:`label_cached`).
_LABEL_INFO = ("key", "method", "labeller", "charge", "multiplicity", "seconds", "tblite")


def _with_info_of(label: Atoms, frame: Atoms) -> Atoms:
    """A copy of the cached ``label`` (positions, cell, energy, forces) carrying the ``info`` of the
    input ``frame`` (``segment``, ``source``, ``start``, ...) plus what the label records of its
    making (:data:`_LABEL_INFO`). The cached frame itself carries the info of whichever input was
    labelled first: two frames at one position (rattled at amplitude 0, or a segment renamed in a
    later run) both came back as that one, so a data set's split lost a segment and its card
    listed segments its plan does not have."""
    out = label.copy()
    out.info = {k: v for k, v in frame.info.items() if k not in _STALE_INFO and k not in ("key", "method", "seconds")}
    out.info.update({k: label.info[k] for k in _LABEL_INFO if k in label.info})
    if label.calc is not None:
        out.calc = SinglePointCalculator(out, **{k: np.array(v, copy=True) if isinstance(v, np.ndarray) else v
                                                 for k, v in label.calc.results.items()})
    return out


@dataclass
class SamplingConfig:
    """How configurations are sampled. Temperatures K, timestep fs, friction 1/fs, amplitudes Å.

    Each Langevin segment starts from the xTB minimum with Maxwell-Boltzmann velocities (its own
    seed), runs ``equilibration`` steps, then keeps a snapshot every ``interval`` steps.
    Rattled minima: ``rattled_segments`` segments of ``frames_per_segment`` copies of the minimum,
    Gaussian displacements of standard deviation ``rattle_amplitudes`` (cycled over segments)."""

    temperatures: Sequence[float] = (300.0, 500.0, 700.0, 1000.0)
    segments_per_temperature: int = 4
    frames_per_segment: int = 10
    interval: int = 20
    equilibration: int = 200
    timestep_fs: float = 0.5
    friction: float = 0.01
    rattled_segments: int = 2
    rattle_amplitudes: Sequence[float] = (0.05, 0.1)
    fmax_minimise: float = 0.02
    seed: int = 0
    fractions: Sequence[float] = field(default_factory=lambda: (0.8, 0.1, 0.1))

    def check(self) -> None:
        """Raise ``InputError`` for a setting that cannot work, naming it."""
        for name in ("segments_per_temperature", "frames_per_segment", "interval", "rattled_segments",
                     "equilibration"):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or v < (0 if name in ("rattled_segments", "equilibration") else 1):
                raise InputError(f"SamplingConfig.{name}={v!r} is not a valid count; give a positive integer.")
        for t in self.temperatures:
            if not (np.isfinite(t) and 0 < t <= 5000):
                raise InputError(f"SamplingConfig.temperatures contains {t!r}; give temperatures in K in (0, 5000].")
        names = [int(round(t)) for t in self.temperatures]
        if len(set(names)) != len(names):
            raise InputError(f"SamplingConfig.temperatures {tuple(self.temperatures)!r} repeat a temperature (to the "
                             "kelvin, which names the segments): give distinct whole-kelvin temperatures.")
        if not (0 < self.timestep_fs <= 2.0):
            raise InputError(f"SamplingConfig.timestep_fs={self.timestep_fs!r} is outside (0, 2] fs; molecules "
                             "with H need <= 1 fs.")
        if not (np.isfinite(self.friction) and self.friction >= 0):
            raise InputError(f"SamplingConfig.friction={self.friction!r} is not a friction; give a finite "
                             "coefficient >= 0 in 1/fs (default 0.01).")
        if self.rattled_segments and (not len(self.rattle_amplitudes) or not all(
                np.isfinite(x) and x >= 0 for x in self.rattle_amplitudes)):
            raise InputError(f"SamplingConfig.rattle_amplitudes={tuple(self.rattle_amplitudes)!r} cannot rattle "
                             f"{self.rattled_segments} segment(s); give one or more finite amplitudes >= 0 in Å.")
        f = np.asarray(self.fractions, dtype=float)
        if f.shape != (3,) or (f < 0).any() or abs(f.sum() - 1) > 1e-9:
            raise InputError(f"SamplingConfig.fractions={tuple(self.fractions)!r} must be three non-negative "
                             "numbers (train, validation, test) summing to 1.")
        if not self.temperatures and not self.rattled_segments:
            raise InputError("SamplingConfig has no temperatures and no rattled segments: nothing to sample.")


def minimise(atoms: Atoms, fmax: float = 0.02, steps: int = 500, calculator=None,
             constrain: Callable[[Atoms], None] | None = None, charge: int = 0,
             multiplicity: int = 1) -> Atoms:
    """A copy of ``atoms`` relaxed with xTB (ASE BFGS; total ``charge`` e, ``multiplicity`` 2S+1)
    until the largest force is below ``fmax`` eV/Å; ``ConvergenceError`` if ``steps`` do not
    suffice. ``constrain(copy)``: sets an ASE constraint on the copy before relaxing it (e.g. φ/ψ
    held); the result carries none."""
    from ase.optimize import BFGS

    from lawful.kernels.errors import ConvergenceError

    a = Atoms(atoms.numbers, positions=atoms.positions)
    if constrain is not None:
        constrain(a)
    a.calc = calculator or xtb_calculator(fresh_guess=False, charge=charge, multiplicity=multiplicity)
    opt = BFGS(a, logfile=None)
    if not opt.run(fmax=fmax, steps=steps):
        raise ConvergenceError(f"xTB minimisation did not reach fmax={fmax} eV/Å in {steps} steps; start from "
                               "a better geometry or raise the step limit.")
    return Atoms(a.numbers, positions=a.positions)


def _prepared_start(atoms: Atoms, fmax: float, charge: int = 0, multiplicity: int = 1) -> Atoms:
    """A start as its ``info["minimise"]`` asks (:data:`lawful.forcefields.molecules.MINIMISE_MODES`):
    the xTB minimum ("free", the default), the xTB minimum with alanine dipeptide's φ, ψ held
    ("backbone"), or the structure as given ("none")."""
    mode = atoms.info.get("minimise", "free")
    if mode == "none":
        return Atoms(atoms.numbers, positions=atoms.positions)
    if mode == "backbone":
        from lawful.forcefields.conformers import backbone_torsions, restrain_backbone

        return minimise(atoms, fmax, steps=2000, constrain=lambda a: restrain_backbone(a, *backbone_torsions(a)),
                        charge=charge, multiplicity=multiplicity)
    return minimise(atoms, fmax, charge=charge, multiplicity=multiplicity)


def _segment_plan(cfg: SamplingConfig, starts: Sequence[str] = ("start",)) -> list[dict]:
    """One dict per segment: name, kind, temperature or amplitude, seed and start (cycled over
    ``starts``; the start label joins the segment name when there are several)."""
    plan = []
    tag = (lambda g: f"-{starts[g % len(starts)]}") if len(starts) > 1 else (lambda g: "")
    g = 0                                   # a running count, so every temperature sees every start
    for ti, t in enumerate(cfg.temperatures):
        for s in range(cfg.segments_per_temperature):
            plan.append({"segment": f"md{int(round(t))}K-{s}{tag(g)}", "kind": "md", "temperature_K": float(t),
                         "seed": int(cfg.seed * 100003 + 1000 * ti + s), "start": starts[g % len(starts)]})
            g += 1
    for s in range(cfg.rattled_segments):
        amp = float(cfg.rattle_amplitudes[s % len(cfg.rattle_amplitudes)])
        plan.append({"segment": f"rattled{amp:g}-{s}{tag(s)}", "kind": "rattled", "amplitude": amp,
                     "seed": int(cfg.seed * 100003 + 90000 + s), "start": starts[s % len(starts)]})
    return plan


def _run_segment(minima: dict[str, Atoms], item: dict, cfg: SamplingConfig, calculator) -> list[Atoms]:
    minimum = minima[item["start"]]
    rng = np.random.default_rng(item["seed"])
    frames = []
    if item["kind"] == "rattled":
        for _ in range(cfg.frames_per_segment):
            frames.append(Atoms(minimum.numbers,
                                positions=minimum.positions + rng.normal(0.0, item["amplitude"], (len(minimum), 3))))
    else:
        import ase.units as au
        from ase.md.langevin import Langevin
        from ase.md.velocitydistribution import Stationary, ZeroRotation
        try:                                  # ase >= 3.28 (MaxwellBoltzmannDistribution deprecated)
            from ase.md.velocitydistribution import thermalize_momenta as _thermalize
        except ImportError:                   # pragma: no cover - older ase
            from ase.md.velocitydistribution import MaxwellBoltzmannDistribution as _thermalize

        from ase.constraints import FixCom

        a = Atoms(minimum.numbers, positions=minimum.positions)
        a.set_constraint(FixCom())
        a.calc = calculator
        _thermalize(a, temperature_K=item["temperature_K"], rng=rng)
        Stationary(a)
        ZeroRotation(a)
        dyn = Langevin(a, cfg.timestep_fs * au.fs, temperature_K=item["temperature_K"],
                       friction=cfg.friction / au.fs, rng=rng, fixcm=False)
        dyn.run(cfg.equilibration)
        for _ in range(cfg.frames_per_segment):
            dyn.run(cfg.interval)
            frames.append(Atoms(a.numbers, positions=a.positions.copy()))
    frames = [_round_trip(f) for f in frames]   # in memory exactly as on disk, so keys match on resume
    for j, f in enumerate(frames):
        f.info.update({"segment": item["segment"], "source": item["kind"], "index_in_segment": j,
                       "start": item["start"]})
        if "temperature_K" in item:
            f.info["temperature_K"] = item["temperature_K"]
    return frames


def _settings_key(cfg: SamplingConfig, minima: dict[str, Atoms], charge: int = 0, multiplicity: int = 1) -> str:
    """A 16-hex-digit key of everything that decides the sampled frames: the sampling settings
    (not the split fractions), each start's positions and the electronic state (the neutral
    singlet adds nothing, so existing keys stand)."""
    d = {k: v for k, v in asdict(cfg).items() if k != "fractions"}
    text = (json.dumps(d, sort_keys=True, default=list) + "".join(f"{k}:{frame_key(m)}" for k, m in minima.items())
            + _state_tag(charge, multiplicity))
    digest = hashlib.sha256(text.encode()).digest()
    # the key is stored as info["settings"] of each sample, and extxyz reads back a number where it
    # can: "6999e64720891840" came back as inf and "049e..." / "0123..." lost their text, so every
    # resume of those settings (about 1 in 1300) was refused as "sampled with other settings".
    # Such a key is hashed again until it reads back as itself; every other key is unchanged.
    while not _reads_back(digest.hex()[:16]):
        digest = hashlib.sha256(digest).digest()
    return digest.hex()[:16]


def _reads_back(text: str) -> bool:
    """Whether extxyz reads ``text`` (a hex key) back as the same text: not a float, and an integer
    only without a leading zero."""
    try:
        return str(int(text)) == text
    except ValueError:
        pass
    try:
        float(text)
    except ValueError:
        return True
    return False


def _complete_segments(frames: Sequence[Atoms], n: int) -> dict[str, list[Atoms]]:
    """The segments of ``frames`` (an appended samples file, in file order) that hold a complete
    set: for each segment, the first run of ``n`` consecutive frames with ``index_in_segment``
    0, 1, ..., n-1. A segment without one (cut short) is left out; frames beyond the first complete
    set (a copy appended again) are dropped."""
    runs: dict[str, list[Atoms]] = {}
    done: dict[str, list[Atoms]] = {}
    for a in frames:
        name = str(a.info["segment"])
        if name in done:
            continue
        run = runs.setdefault(name, [])
        j = int(a.info.get("index_in_segment", len(run)))
        if j == 0:
            run[:] = [a]
        elif j == len(run):
            run.append(a)
        else:                     # a gap: this run was cut short; wait for the next frame 0
            run.clear()
        if len(run) == n:
            done[name] = runs.pop(name)
    return done


def sample_segments(minimum: Atoms | dict[str, Atoms], cfg: SamplingConfig, samples_path: str | os.PathLike | None = None,
                    calculator=None, progress: bool = False, charge: int = 0,
                    multiplicity: int = 1) -> list[Atoms]:
    """Unlabelled frames of every segment of ``cfg`` (``info``: ``segment``, ``source``,
    ``temperature_K``), in plan order. With ``samples_path`` each finished segment is appended to
    that extxyz file (in one write) and segments already there complete are read back instead of
    rerun; the frames of an incomplete segment, or of a second copy of one, are removed from the
    file (rewritten atomically) and the segment is sampled again once. ``minimum``: one
    start, or several by label (segments cycle over them). ``charge`` (e), ``multiplicity`` (2S+1):
    the electronic state of the default xTB MD."""
    cfg.check()
    minima = minimum if isinstance(minimum, dict) else {"start": minimum}
    if calculator is None:
        electronic_state(next(iter(minima.values())).numbers, charge, multiplicity)
    plan = _segment_plan(cfg, list(minima))
    done: dict[str, list[Atoms]] = {}
    path = Path(samples_path) if samples_path is not None else None   # its folder is made when needed
    settings = _settings_key(cfg, minima, charge, multiplicity)
    if path is not None:
        stored = _read_intact(path)
        for a in stored:
            if str(a.info.get("settings")) != settings:
                raise InputError(f"{os.fspath(path)!r} holds segments sampled with other settings or starts "
                                 f"(settings key {a.info.get('settings')!r}, now {settings!r}); write to a new "
                                 "folder, or delete the file to resample.")
        done = _complete_segments(stored, cfg.frames_per_segment)
        kept = [a for seg in done.values() for a in seg]
        if len(kept) != len(stored):
            # frames of an unfinished segment (a run killed while appending it) or a second copy of one
            # (two runs sampling into one file): rewritten without them, so the unfinished segment is
            # sampled once more and the file does not grow on every rerun (10 -> 13 -> 16 frames)
            _rewrite_frames(path, kept)
    todo = [item for item in plan if item["segment"] not in done]
    bar = None
    if progress and todo:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(todo), desc="sampling (xTB MD)", unit="segment")
    try:
        for item in todo:
            # a new tblite instance per segment: a reused one carries its last wavefunction over, and
            # the MD would then depend on which segments ran before (a resumed run would differ)
            seg = _run_segment(minima, item, cfg, calculator or xtb_calculator(
                fresh_guess=False, charge=charge, multiplicity=multiplicity))
            for f in seg:
                f.info["settings"] = settings
            if path is not None:
                _append_frames(path, seg)
            done[item["segment"]] = seg
            if bar is not None:
                bar.update()
    finally:
        if bar is not None:
            bar.close()
    return [a for item in plan for a in done[item["segment"]]]


def split_by_segment(frames: Sequence[Atoms], fractions: Sequence[float] = (0.8, 0.1, 0.1),
                     seed: int = 0) -> dict[str, list[str]]:
    """Segment names (``info["segment"]``) per set: ``{"train": [...], "validation": [...],
    "test": [...]}``. Whole segments are shuffled (``seed``) and dealt out, so the frames of one
    segment are never in two sets. With >= 3 segments, validation and test get at least one each
    when their fraction is positive."""
    names = sorted({str(a.info["segment"]) for a in frames})
    if not names:
        raise InputError("split_by_segment got no frames with info['segment']; sample some first.")
    return _split_names(names, fractions, seed)


def _split_names(names: list[str], fractions: Sequence[float], seed: int) -> dict[str, list[str]]:
    """:func:`split_by_segment` of sorted segment ``names``."""
    order = list(np.random.default_rng(seed).permutation(len(names)))
    n = len(names)
    n_val, n_test = (int(round(f * n)) for f in fractions[1:])
    if n >= 3:
        n_val = max(n_val, 1 if fractions[1] > 0 else 0)
        n_test = max(n_test, 1 if fractions[2] > 0 else 0)
    n_val, n_test = min(n_val, n), min(n_test, max(n - n_val, 0))
    shuffled = [names[i] for i in order]
    test, val, train = shuffled[:n_test], shuffled[n_test:n_test + n_val], shuffled[n_test + n_val:]
    return {"train": sorted(train), "validation": sorted(val), "test": sorted(test)}


def empty_splits(cfg: SamplingConfig, starts: Sequence[str] = ("start",)) -> list[str]:
    """The sets of :data:`SPLITS` with a positive fraction that :func:`split_by_segment` would leave
    empty for the segments ``cfg`` plans (fewer than 3 segments), before anything is sampled."""
    split = _split_names(sorted(item["segment"] for item in _segment_plan(cfg, list(starts))), cfg.fractions, cfg.seed)
    return [s for s, f in zip(SPLITS, cfg.fractions) if f > 0 and not split[s]]


def _energy(atoms: Atoms, charge: int, multiplicity: int) -> float:
    """The xTB energy (eV) of ``atoms`` in the labels' electronic state."""
    a = Atoms(atoms.numbers, positions=atoms.positions)
    a.calc = xtb_calculator(charge=charge, multiplicity=multiplicity)
    return float(a.get_potential_energy())


def _versions() -> dict:
    from importlib import metadata
    import platform

    out = {"python": platform.python_version()}
    for pkg in ("lawful", "tblite", "ase", "numpy"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def _read_card(path: Path) -> dict:
    """The card at ``path`` ({} if there is none or it is not a JSON object)."""
    try:
        card = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}
    return card if isinstance(card, dict) else {}


def _label_versions(labelled: Sequence[Atoms], unrecorded: str | None, xtb: bool) -> dict:
    """``{"tblite": version}`` of the xTB labels of a data set (each label's ``info["tblite"]``,
    ``unrecorded`` for those that record none; None if that is unknown too); {} for another labeller."""
    if not xtb:
        return {}
    found = sorted({str(_label_version(a, unrecorded)) for a in labelled})
    return {"tblite": None if found == ["None"] else found[0] if len(found) == 1 else found}


def make_dataset(molecule: str | os.PathLike | Atoms, out: str | os.PathLike, cfg: SamplingConfig | None = None,
                 calculator=None, progress: bool = False,
                 on_label: Callable[[int], None] | None = None, charge: int | None = None,
                 multiplicity: int | None = None) -> dict:
    """Sample, label and split a GFN2-xTB data set for ``molecule`` (a name, a file, or Atoms of
    H/C/N/O) into folder ``out``; returns the card (also written to ``out/card.json``).

    Files: ``samples.extxyz`` (unlabelled segments, resumable), ``labels.extxyz`` (the label
    cache: it keeps labels of earlier runs with other settings, which the card's ``label_cache``
    counts as ``outside_this_data_set``), ``train.extxyz`` / ``validation.extxyz`` / ``test.extxyz``
    and ``card.json`` (while a rerun rewrites the split files, an earlier card is replaced by one that
    says ``incomplete``, so a killed run leaves no card of another split beside them).
    Rerunning with the same arguments reuses both caches and labels only what is missing.
    ``calculator``: the labeller (default: fresh-guess :func:`xtb_calculator`); MD and the
    minimisation always use tblite. ``charge`` (e) and ``multiplicity`` (2S+1): the molecule's
    electronic state for every xTB call (:func:`molecule_state`): None takes what the molecule's
    file or ``Atoms`` states (extxyz ``charge=`` / ``multiplicity=``, per-atom initial charges, SDF
    ``M  CHG``, the Gaussian charge line), else the neutral singlet; a value that disagrees with the
    file is refused. Checked against the electron count before any work (an ion given as neutral is
    refused, not labelled as a radical) and recorded in the card. A plan of fewer than 3 segments
    leaves validation/test empty: a warning says so before sampling.

    ``out`` is not locked here (``lawful data --calc xtb`` locks its ``--out``): two processes
    running ``make_dataset`` into one folder at once both sample and label every missing frame
    (the work is done twice; the results are right, ``labels.extxyz`` may hold a label twice, which
    the cache reads as one, and a rerun drops the second copy of a sampled segment). Run one at a
    time per folder, or use ``lawful data``, whose lock refuses the second run.
    """
    cfg = cfg or SamplingConfig()
    cfg.check()
    if isinstance(molecule, Atoms):
        starts, name = {"start": molecule}, str(molecule.info.get("molecule", molecule.get_chemical_formula()))
        if any(molecule.pbc):
            raise InputError(f"molecule {name!r} is periodic (pbc={list(map(bool, molecule.pbc))}): the molecular "
                             "data sets label isolated molecules, and the cell would be dropped; pass it with "
                             "pbc=False.")
        bad = sorted(set(molecule.get_chemical_symbols()) - set(SPECIES))
        if bad:
            raise InputError(f"molecule {name!r} contains {', '.join(bad)}; the molecular data sets use only "
                             f"{', '.join(SPECIES)}: pass a molecule of those elements.")
    else:
        starts = start_structures(molecule)
        name = str(next(iter(starts.values())).info["molecule"])
    charge, multiplicity = molecule_state(starts, charge, multiplicity)
    empty = empty_splits(cfg, list(starts))
    if empty:
        n = len(_segment_plan(cfg, list(starts)))
        warnings.warn(f"{n} segment(s) cannot fill every split: {' and '.join(empty)} will be empty (the split is by "
                      "whole segments); sample at least 3 segments (more segments_per_temperature, temperatures or "
                      "rattled_segments; lawful data: --frames >= 3 x --frames-per-segment).", stacklevel=2)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"output {os.fspath(out)!r} is a file, not a folder; pass a folder path.")
    out.mkdir(parents=True, exist_ok=True)
    if not os.access(out, os.W_OK | os.X_OK):
        raise InputError(f"output folder {os.fspath(out)!r} is not writable; choose another folder.")
    t_start = time.perf_counter()
    minima = {k: _prepared_start(a, cfg.fmax_minimise, charge, multiplicity) for k, a in starts.items()}
    minimum = next(iter(minima.values()))
    frames = sample_segments(minima, cfg, out / "samples.extxyz", progress=progress, charge=charge,
                             multiplicity=multiplicity)
    # labels of an older cache record no tblite version: its card says which made them
    old_card = _read_card(out / "card.json")
    unrecorded = (old_card.get("label_versions") or {}).get("tblite") or (old_card.get("versions") or {}).get("tblite")
    cache = LabelCache(out / "labels.extxyz")
    labelled = label_cached(frames, cache, calculator=calculator, progress=progress,
                            on_label=on_label, charge=charge, multiplicity=multiplicity,
                            unrecorded_version=unrecorded if isinstance(unrecorded, str) else None)
    split = split_by_segment(labelled, cfg.fractions, seed=cfg.seed)
    from lawful.kernels.modelfile import atomic_write

    if (out / "card.json").exists():
        # the split files are rewritten one by one: a run killed among them left the old card (old
        # split, old counts) beside a new train.extxyz, a segment in two sets by the files. The old
        # card goes first, replaced by one that says so and keeps what the next run reads of it.
        with atomic_write(out / "card.json") as fh:
            fh.write((json.dumps({"incomplete": "the split files were being rewritten: run make_dataset / lawful "
                                                "data again to finish this data set",
                                  **{k: old_card[k] for k in ("label_versions", "versions") if k in old_card}},
                                 indent=2) + "\n").encode())
    counts = {}
    for s in SPLITS:
        members = set(split[s])
        chosen = [a for a in labelled if a.info["segment"] in members]
        _rewrite_frames(out / f"{s}.extxyz", chosen)
        counts[s] = {"frames": len(chosen), "segments": len(members)}
    secs = [float(a.info["seconds"]) for a in labelled if "seconds" in a.info]
    labellers = sorted({str(a.info.get("labeller", METHOD)) for a in labelled})
    xtb = labeller_id(None, METHOD, charge, multiplicity)
    card = {
        "molecule": name,
        "formula": minimum.get_chemical_formula(),
        "n_atoms": len(minimum),
        "species": sorted(set(minimum.get_chemical_symbols())),
        "charge": charge,
        "multiplicity": multiplicity,
        "method": METHOD if labellers == [xtb] else labellers,
        "calculator": ("tblite.ase.TBLite, a new instance per frame (SCF from the SAD guess, accuracy 1.0, "
                       "electronic temperature 300 K)" if labellers == [xtb] else
                       "the calculator passed to make_dataset (see method)"),
        "units": {"energy": "eV", "forces": "eV/Angstrom", "positions": "Angstrom"},
        "versions": _versions(),
        # the version that made the labels, which a rerun that made no new label did not
        "label_versions": _label_versions(labelled, unrecorded if isinstance(unrecorded, str) else None,
                                          labellers == [xtb]),
        "sampling": {**{k: (list(v) if isinstance(v, (list, tuple)) else v) for k, v in asdict(cfg).items()},
                     "integrator": "ase.md.langevin.Langevin + FixCom, from each start as its minimise mode prepared it",
                     "segments": _segment_plan(cfg, list(minima)),
                     "starts": {k: {"minimise": starts[k].info.get("minimise", "free"), "xtb_energy_eV": _energy(m, charge, multiplicity)}
                                for k, m in minima.items()}},
        "seeds": {"base": cfg.seed, "split": cfg.seed},
        "split": split,
        "counts": {**counts, "total_frames": len(labelled)},
        "files": {s: f"{s}.extxyz" for s in SPLITS} | {"labels": "labels.extxyz", "samples": "samples.extxyz"},
        # labels.extxyz is a cache: a folder resampled with other settings (samples.extxyz deleted,
        # as the refusal says) keeps the earlier labels there, which are no part of this data set
        "label_cache": {"labels": len(cache.frames),
                        "outside_this_data_set": len(set(cache.frames) - {a.info["key"] for a in labelled})},
        "seconds_per_label_mean": float(np.mean(secs)) if secs else None,
        "wall_seconds_this_run": round(time.perf_counter() - t_start, 3),
    }
    with atomic_write(out / "card.json") as fh:
        fh.write((json.dumps(card, indent=2) + "\n").encode())
    return card

"""The engine-neutral core of every engine adapter: :class:`ModelRunner` and :func:`resolve_model`.

The ASE calculator (:mod:`lawful.integrations.ase`), the OpenMM force
(:mod:`lawful.integrations.openmm`) and the openmm-ml potential
(:mod:`lawful.integrations.openmmml_potential`) all evaluate a model through this module: model
loading, species validation, dtype/device, a Verlet neighbour list reused with its skin, NaN checks.
Everything is in lawful's units (Å, eV, eV/Å, eV/Å³); each adapter converts at its own boundary.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import math
import os
import threading
import warnings
from pathlib import Path

import numpy as np
import torch
from ase.data import atomic_numbers as _atomic_numbers
from ase.data import chemical_symbols as _chemical_symbols

from lawful.forcefields.domain import (DOMAIN_TOLERANCE, REREPORT_VOLUME_CHANGE, UNIT_MISTAKE_DENSITY, report_covers, charge_outside, close_pair_reason, composition_outside,
                                      counts_outside, domain_limits, neighbour_bounds, neighbour_text,
                                      neighbour_weights, pairs_below, unit_mistake_error, unit_mistakes)
from lawful.kernels.errors import (
    InputError,
    ModelFileError,
    NumericalError,
    OutOfDomainWarning,
    ShapeError,
    UnsupportedSpeciesError,
)
from lawful.kernels.neighbors import wrap_positions
from lawful.kernels.precision import resolve_device, resolve_dtype

__all__ = ["ModelRunner", "resolve_model", "model_dtype", "model_device", "DOMAIN_TOLERANCE", "domain_report_log"]


def resolve_model(model_or_path, device=None, dtype=None):
    """A model object from a model or a path to a ``.lawful`` file, on ``device`` in ``dtype``.

    ``model_or_path``: a lawful model (anything with ``evaluate``, ``species``, ``cutoff``), a
    path (str / PathLike) loaded with :func:`lawful.forcefields.load_model` (no code runs on load),
    or the name of a shipped model (``"cu-emt"``; a bare name that is also a file in the working
    directory is refused as ambiguous: :func:`lawful.forcefields.shipped.resolve_model_path`).
    ``device`` / ``dtype``: ``None`` keeps the model's own; otherwise a *copy* of a passed model is
    moved, so the caller's object is never changed. A model loaded here (or the moved copy) is
    the engine's own: its weights are frozen (``requires_grad_(False)``), which makes each force
    evaluation cheaper; to train a model, load it with :func:`lawful.forcefields.load_model`.
    Raises :class:`ModelFileError` for a missing or unreadable file and :class:`InputError` for an
    object that is not a model.
    """
    if isinstance(model_or_path, (str, os.PathLike)):
        try:
            from lawful.forcefields import load_model
        except ImportError as exc:  # pragma: no cover - a broken installation
            raise ModelFileError(f"cannot read {str(model_or_path)!r}: lawful.forcefields is not importable in "
                                 "this installation; reinstall lawful.") from exc
        model = load_model(model_or_path)   # a file, or a shipped model's name (resolved there, once)
        owned = True
    else:
        model = model_or_path
        owned = False
    for attr in ("evaluate", "species", "cutoff"):
        if not hasattr(model, attr):
            raise InputError(
                f"{type(model).__name__!r} object is not a lawful model (it has no {attr!r}): pass a "
                "NeuralPotential / DirectForceModel or the path of a .lawful file."
            )
    cur_dtype = model_dtype(model)
    cur_device = model_device(model)
    want_dtype = cur_dtype if dtype is None else resolve_dtype(dtype)
    want_device = cur_device if device is None else resolve_device(device)
    if want_dtype != cur_dtype or want_device != cur_device:
        if not owned:
            model = copy.deepcopy(model)
            owned = True
        model = model.to(device=want_device, dtype=want_dtype)
    if isinstance(model, torch.nn.Module):
        model.eval()
        if owned:
            # a model only this engine holds: forces are gradients with respect to the positions
            # alone, and weights that require grad only make autograd record and walk more (a
            # fresh E+F call of organic-xtb on alanine dipeptide: about 5-10 % of its CPU time).
            # The caller's own object is never changed: it may still be trained.
            model.requires_grad_(False)
    return model


def model_dtype(model) -> torch.dtype:
    dt = getattr(model, "dtype", None)
    if isinstance(dt, torch.dtype):
        return dt
    if isinstance(model, torch.nn.Module):
        for p in model.parameters():
            return p.dtype
    return torch.float64


def model_device(model) -> torch.device:
    dev = getattr(model, "device", None)
    if dev is not None:
        return torch.device(dev)
    if isinstance(model, torch.nn.Module):
        for p in model.parameters():
            return p.device
    return torch.device("cpu")


def _one_thread_after_fork() -> None:
    """In a forked child, run torch on one thread: the parent's OpenMP thread pool does not
    survive ``fork`` (GNU libgomp is not fork-safe), so the first parallel region of a child of a
    parent that used several threads waits forever, e.g. a ``multiprocessing`` "fork" pool
    evaluating a calculator its parent already used. One thread never enters that pool; the
    child may raise it again with ``torch.set_num_threads``. Registered once, at import."""
    if torch.get_num_threads() != 1:
        torch.set_num_threads(1)


if hasattr(os, "register_at_fork"):   # POSIX; Windows has no fork
    os.register_at_fork(after_in_child=_one_thread_after_fork)



#: Å (whatever the positions' unit: ``length_scale`` converts): how far atom 0 of a lower-precision
#: model's structure may move from the float64 offset subtracted before rounding before a new
#: offset is taken (float32 keeps about 6e-7 Å at 10 Å from the offset)
ORIGIN_RADIUS = 10.0

# An out-of-domain kind (a close pair, too few or too many neighbours) is reported once per runner,
# and again for a periodic structure whose volume per atom differs from that of the last report by
# more than REREPORT_VOLUME_CHANGE (forcefields.domain, shared with the TorchScript module): one
# calculator over an EOS scan or a cell relaxation reported the first structure outside and nothing
# of those further out (a 10 % expanded copper cell warned, a 20 % one did not); an MD run at
# constant volume still gets one report.


def _domain_table(model, species, tolerance):
    """(S, S) squared out-of-domain limits (Å²) indexed by species index, from the model's
    ``pair_min_distance`` (:func:`lawful.forcefields.domain.domain_limits`); None without a record."""
    return domain_limits(getattr(model, "pair_min_distance", None), species, tolerance, model_dtype(model),
                         model_device(model))


def _species_numbers(species) -> list[int]:
    out = []
    for s in species:
        if isinstance(s, (int, np.integer)):
            out.append(int(s))
        elif s in _atomic_numbers:
            out.append(_atomic_numbers[s])
        else:
            raise InputError(f"model species {s!r} is not a chemical symbol; the model file is inconsistent.")
    return out


_PAUSE = threading.local()

#: lists that :func:`domain_report_log` opened; every out-of-domain report is appended to each
_DOMAIN_LOGS: list[list] = []
_DOMAIN_LOGS_LOCK = threading.Lock()


@contextlib.contextmanager
def domain_report_log():
    """Within ``with domain_report_log() as reports:``, the message of every out-of-domain report
    a :class:`ModelRunner` (or :func:`report_charge`) makes, in any thread, is appended to
    ``reports``, whether or not Python's warning filters show it (an identical warning from the
    same line is shown once per process by default, so a second run with a fresh calculator went
    unseen; ``-W ignore`` hides them all). ``run_md`` records them in md.json."""
    reports: list[str] = []
    with _DOMAIN_LOGS_LOCK:
        _DOMAIN_LOGS.append(reports)
    try:
        yield reports
    finally:
        with _DOMAIN_LOGS_LOCK:
            _DOMAIN_LOGS[:] = [log for log in _DOMAIN_LOGS if log is not reports]


def _warn_out_of_domain(message: str, stacklevel: int) -> None:
    """Warn ``message`` as an :class:`OutOfDomainWarning` (``stacklevel`` as the caller's
    ``warnings.warn`` would take it) and add it to the open :func:`domain_report_log` lists."""
    with _DOMAIN_LOGS_LOCK:
        for log in _DOMAIN_LOGS:
            log.append(message)
    warnings.warn(message, OutOfDomainWarning, stacklevel=stacklevel + 1)


@contextlib.contextmanager
def domain_checks_paused():
    """Skip the runners' per-evaluation training-domain checks (close pairs, neighbour density)
    of the evaluations this thread makes inside the block: for a local minimiser's line search,
    whose trial geometries go far from anything physical (OpenMM's L-BFGS on alanine dipeptide
    in vacuum probed H-H at 0.17 Å and an N with no neighbour from an in-domain start): they
    warned "at step 0", used up the once-only report, or stopped a strict run. Check the result
    afterwards (:func:`lawful.integrations.openmm.minimize` does)."""
    before = getattr(_PAUSE, "on", False)
    _PAUSE.on = True
    try:
        yield
    finally:
        _PAUSE.on = before


def report_charge(model, charge: int, strict: bool, stacklevel: int = 3) -> None:
    """Warn (``OutOfDomainWarning``) or raise (``strict``: :class:`NumericalError`) when a total
    charge (e) is not one ``model`` was trained on (:func:`lawful.forcefields.domain.charge_outside`):
    the one charge check of the engines (the ASE calculator through :meth:`ModelRunner.check_charge`,
    OpenMM's ``create_force(charge=)``)."""
    message = charge_outside(getattr(model, "training_charges", None), int(charge))
    if message is None:
        return
    message = message[0].upper() + message[1:]
    if strict:
        err = NumericalError(message + " (strict mode)")
        err.out_of_domain = {"charge": int(charge)}
        raise err
    _warn_out_of_domain(message, stacklevel)


class ModelRunner:
    """Engine-neutral evaluation of a lawful model for a fixed set of atoms.

    Holds the model (on its device, in its dtype; a model moved in place later is followed), the
    atomic numbers as a tensor, reusable position/cell buffers and — when the model's ``evaluate``
    accepts a ``pairs`` argument — a :class:`lawful.kernels.neighbors.VerletList` built with
    ``cutoff + skin`` and rebuilt only when an atom moved more than ``skin/2``. Inputs and outputs
    are in lawful's units (Å, eV, eV/Å, eV/Å³); the engine adapters convert at their boundary.

    Training domain: when the model records the smallest distance per species pair of its
    training data (``model.pair_min_distance``, written by :func:`lawful.forcefields.train`), every
    evaluation compares the distances of the pairs it already has with ``domain_tolerance`` (0.9)
    times that minimum. A closer pair is an out-of-domain event: an
    :class:`~lawful.kernels.errors.OutOfDomainWarning` (once per runner, and again for a periodic
    structure whose volume per atom moved by more than :data:`REREPORT_VOLUME_CHANGE` from the
    reported one's: an EOS scan names each point outside) or, with ``strict=True``,
    a :class:`~lawful.kernels.errors.NumericalError`, naming the two atoms (indices, symbols),
    their distance, the training minimum and the step when the engine passes it. Models without
    the record (old files, untrained models) and models that build their own pairs are not checked.
    Likewise, at the first evaluation, a composition outside the span of the model's training
    compositions (``model.training_compositions``: its absolute energy is not determined; see
    :func:`lawful.forcefields.domain.composition_outside`) warns once or raises.

    Parameters
    ----------
    model: a lawful model (see :func:`resolve_model`).
    numbers: (N,) atomic numbers of the atoms the model acts on.
    skin: Verlet skin in Å (0 disables the reuse of the neighbour list).
    strict: raise instead of warning on an out-of-domain structure.
    domain_tolerance: fraction (0, 1] of the training minimum below which a pair is out of domain.
    labels: (N,) the index each atom has in the engine (e.g. the OpenMM particle of each ML atom
        of a subset), used wherever a report names atoms (out-of-domain events, coincident atoms);
        ``None``: the atom's row here.
    """

    # buffers and results are normal tensors even when made inside a caller's torch.inference_mode()
    # (autograd, which gives the forces, cannot use inference tensors in later calls)
    @torch.inference_mode(False)
    def __init__(self, model, numbers, skin: float = 0.5, strict: bool = False,
                 domain_tolerance: float = DOMAIN_TOLERANCE, labels=None):
        self.model = model
        self.dtype = model_dtype(model)
        self.device = model_device(model)
        self.cutoff = float(model.cutoff)
        self.species = list(model.species)
        self._known = _species_numbers(self.species)
        self.set_numbers(numbers)
        try:
            self.skin = float(skin)
        except (TypeError, ValueError):
            self.skin = float("nan")
        if not (self.skin >= 0.0) or math.isinf(self.skin):
            raise InputError(f"skin must be a finite distance >= 0 in Å, got {skin!r}: pass e.g. skin=0.5 "
                             "(0 rebuilds the neighbour list at every step).")
        self.strict = bool(strict)
        self.labels = None
        self._labels_t = None
        if labels is not None:
            self.labels = [int(v) for v in labels]
            if len(self.labels) != self.n_atoms:
                raise ShapeError(f"labels has {len(self.labels)} entries for {self.n_atoms} atoms: pass one "
                                 "engine index per atom, or none.")
            self._labels_t = torch.as_tensor(self.labels, dtype=torch.long, device=self.device)
        try:
            tol = float(domain_tolerance)
        except (TypeError, ValueError):
            tol = float("nan")
        if not 0.0 < tol <= 1.0:
            raise InputError(f"domain_tolerance must be a fraction in (0, 1] of the training minimum distance, "
                             f"got {domain_tolerance!r}: pass e.g. {DOMAIN_TOLERANCE}.")
        self.domain_tolerance = tol
        #: kind of out-of-domain event ("close", "few", "many") -> volume per atom (Å³; None when not
        #: periodic) of the structure last reported for it
        self._reported: dict[str, float | None] = {}
        self._domain_min2 = _domain_table(model, self.species, tol)
        self._count_bounds = neighbour_bounds(model, self.species, self.dtype, self.device)
        self._verlet = None
        from lawful.forcefields.base import AtomisticModel

        self._cut_pairs = isinstance(model, AtomisticModel)
        self._nl_cached = None
        self._offsets = None
        try:
            params = inspect.signature(model.evaluate).parameters
            self._pairs_arg = next((a for a in ("pairs", "neighbors") if a in params), None)
        except (TypeError, ValueError):  # pragma: no cover - builtins
            self._pairs_arg = None
        # a domain check reads the pairs' distances, so it keeps a list even with skin 0 (rebuilt
        # whenever anything moves: the same work as the model's own fresh list)
        if self._pairs_arg is not None and (self.skin > 0.0 or self._domain_min2 is not None
                                            or self._count_bounds is not None):
            try:
                from lawful.kernels.neighbors import VerletList
            except ImportError:  # pragma: no cover - older kernels: the model builds its own list
                VerletList = None
            if VerletList is not None:
                self._verlet = VerletList(self.cutoff, skin=self.skin)
        self._pos = torch.empty((self.n_atoms, 3), dtype=self.dtype, device=self.device)
        self._cell = torch.zeros((3, 3), dtype=self.dtype, device=self.device)
        self._origin = None   # float64 offset of a lower-precision model's positions (set at the first call)

    @torch.inference_mode(False)
    def _follow_model(self) -> None:
        """Take the dtype and device the model has now (moved in place since this runner was made:
        ``calc.model.to(torch.float32)``, a model object its owner moved): the buffers, tables and
        tensors made in the old ones are made again, and the neighbour list is rebuilt. Without this
        a float32 model kept getting float64 positions: no offset before the rounding (cu-emt at
        1e4 Å: forces 6e-3 eV/Å off, against 2e-6 for a runner made in float32). What was already
        reported and checked (domain events, composition, charges) is kept."""
        self.dtype = model_dtype(self.model)
        self.device = model_device(self.model)
        self.set_numbers(self.numbers_np, keep_checks=True)
        if self.labels is not None:
            self._labels_t = torch.as_tensor(self.labels, dtype=torch.long, device=self.device)
        self._domain_min2 = _domain_table(self.model, self.species, self.domain_tolerance)
        self._count_bounds = neighbour_bounds(self.model, self.species, self.dtype, self.device)
        if self._verlet is not None:
            self._verlet.reset()
        self._nl_cached = self._offsets = None
        self._cell = torch.zeros((3, 3), dtype=self.dtype, device=self.device)

    # -- set-up ------------------------------------------------------------------------------
    def set_numbers(self, numbers, keep_checks: bool = False) -> None:
        """Set the atomic numbers (validated against the model's species). ``keep_checks``: the
        composition and charges already checked stay checked (the same atoms, new tensors)."""
        z = np.asarray(numbers, dtype=np.int64).reshape(-1)
        unknown = sorted({int(v) for v in z} - set(self._known))
        if unknown:
            raise UnsupportedSpeciesError(
                [_chemical_symbols[v] if 0 <= v < len(_chemical_symbols) else str(v) for v in unknown],
                self.species,
            )
        if getattr(self, "labels", None) is not None and len(self.labels) != z.shape[0]:
            raise ShapeError(f"{z.shape[0]} atomic numbers for a runner labelled with {len(self.labels)} engine "
                             "indices: make a new runner for the new atoms.")
        self.numbers_np = z
        self.numbers = torch.as_tensor(z, dtype=torch.long, device=self.device)
        index = {zk: k for k, zk in enumerate(self._known)}
        self._species_idx = torch.as_tensor([index[int(v)] for v in z], dtype=torch.long, device=self.device)
        self.n_atoms = int(z.shape[0])
        self._pos = torch.empty((self.n_atoms, 3), dtype=self.dtype, device=self.device)
        self._origin = None
        if not keep_checks:
            self._composition_checked = False   # at the first evaluation, when strict is known
            self._charges_checked: set[int] = set()

    # -- pickling ------------------------------------------------------------------------------
    # The position/cell buffers are written in place at every call and the Verlet list is a cache
    # of this process's last structure. torch's multiprocessing pickler moves tensors into shared
    # memory, so a runner (or a LawfulCalculator holding one) sent to "spawn"/"forkserver" pool
    # workers would share these buffers between the workers, and concurrent calls would evaluate
    # each other's positions -- wrong energies with no error. A copy therefore gets its own
    # buffers and an empty neighbour-list cache; the model's weights (read-only) may be shared.
    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_pos"] = state["_cell"] = None
        state["_nl_cached"] = state["_offsets"] = None
        if state.get("_verlet") is not None:
            state["_verlet"] = copy.copy(state["_verlet"])
            state["_verlet"].reset()
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._pos = torch.empty((self.n_atoms, 3), dtype=self.dtype, device=self.device)
        self._cell = torch.zeros((3, 3), dtype=self.dtype, device=self.device)

    @property
    def neighbor_rebuilds(self) -> int | None:
        """How many times the Verlet neighbour list was built (None when the model builds its own)."""
        return None if self._verlet is None else int(self._verlet.rebuilds)

    # -- evaluation ----------------------------------------------------------------------------
    def _pairs_within_cutoff(self, pos, cell, pbc):
        """The Verlet list (built with cutoff + skin, reused until an atom moved skin/2), cut down
        to the pairs inside the model's cutoff: the model then does exactly the work of a fresh
        list, and the skin costs two gathers per step (the image offsets ``shifts @ cell`` are
        cached with the list). Returns the kept list and its squared distances (Å²)."""
        from lawful.kernels.neighbors import NeighborList, pairs_within_cutoff

        nl = self._verlet.get(pos, cell, pbc)
        if nl is not self._nl_cached:
            self._nl_cached = nl
            self._offsets = nl.shifts @ cell if (cell is not None and nl.shifts.shape[0]) else None
        d = pos.index_select(0, nl.j) - pos.index_select(0, nl.i)
        if self._offsets is not None:
            d += self._offsets
        i, j, shifts, d2 = pairs_within_cutoff(nl.i, nl.j, nl.shifts, d, self.cutoff)
        return NeighborList(i, j, shifts), d2

    def _check_composition(self) -> None:
        """Warn once (or raise, strict) when the atoms' composition lies outside the span of the
        model's training compositions (:func:`lawful.forcefields.domain.composition_outside`)."""
        self._composition_checked = True
        message = composition_outside(getattr(self.model, "training_compositions", None), self.species,
                                      self.numbers_np)
        if message is None:
            return
        if self.strict:
            err = NumericalError(message[0].upper() + message[1:] + " (strict mode)")
            err.out_of_domain = {"composition": message}
            raise err
        _warn_out_of_domain(message[0].upper() + message[1:], stacklevel=4)

    def check_charge(self, charge: int) -> None:
        """Warn once per charge (or raise, strict) when a structure's stated total charge (e) is not
        one the model was trained on (:func:`lawful.forcefields.domain.charge_outside`): the
        models have no charge input. Called by the engines that know the charge (ASE's atoms)."""
        if int(charge) in self._charges_checked:
            return
        report_charge(self.model, charge, self.strict, stacklevel=5)
        self._charges_checked.add(int(charge))

    @property
    def domain_warned(self) -> bool:
        """Whether a close pair has been reported (warned) by this runner."""
        return "close" in self._reported

    def _volume_per_atom(self, cell_t, pbc) -> float | None:
        """Å³ per atom of a structure periodic in all three directions, else None."""
        if cell_t is None or not all(np.broadcast_to(np.asarray(pbc, dtype=bool), (3,))) or not self.n_atoms:
            return None
        return abs(float(torch.linalg.det(cell_t.to(torch.float64)))) / self.n_atoms

    def _reported_already(self, kind: str, volume) -> bool:
        """Whether an event of ``kind`` in a structure of ``volume`` per atom goes unreported (see
        :data:`REREPORT_VOLUME_CHANGE`)."""
        if self.strict or kind not in self._reported:
            return False
        was = self._reported[kind]
        return report_covers(0.0 if volume is None else volume, 0.0 if was is None else was)

    @staticmethod
    def _where(step, volume) -> str:
        """Where an event is, for its report: the engine's step, the cell's volume per atom."""
        return ("" if step is None else f" at step {int(step)}") + (
            "" if volume is None else f" in a cell of {volume:.4g} Å³/atom")

    def _report_tail(self, what: str) -> str:
        return (f" Further {what} are not reported by this runner unless the cell's volume per atom changes by more "
                f"than {100 * REREPORT_VOLUME_CHANGE:g} %; pass strict=True to stop instead.")

    def _neighbour_counts(self, nl, d2, step, cell_t=None, pbc=False):
        """Each atom's neighbour density (older records: count) within the cutoff against its
        species' training range (widened by ``domain.NEIGHBOUR_MARGIN``): ``(counts, low, high,
        outside)``, or None when every atom is inside. A density over
        :data:`~lawful.forcefields.domain.UNIT_MISTAKE_DENSITY` x the range's top raises
        :class:`InputError` here, strict or not, before any other check reports: not an
        extrapolation to warn about and grind through (a lattice of 0.361 (nm) for 3.61 Å gave
        5000 neighbours per atom, and lawful md hung 5 minutes on its first step)."""
        lo, hi, weighted = self._count_bounds
        weights = neighbour_weights(d2, self.cutoff) if weighted else None
        counts, low, high, outside = counts_outside((lo, hi), self._species_idx, nl.i, self.n_atoms, weights)
        if not bool(outside.any()):
            return None
        dense = unit_mistakes(counts, high, UNIT_MISTAKE_DENSITY)
        if bool(dense.any()):
            j = int(torch.nonzero(dense)[0])
            raise unit_mistake_error(self.model, f"atom {j if self.labels is None else self.labels[j]}",
                                     self.species[int(self._species_idx[j])], float(counts[j]), weighted,
                                     self._where(step, self._volume_per_atom(cell_t, pbc)), int(dense.sum()))
        return counts, low, high, outside

    def _check_neighbour_counts(self, found, step, cell_t=None, pbc=False) -> None:
        """Report :meth:`_neighbour_counts`' finding ``found`` (None: nothing): warn once per side
        (too few, too many) or raise (strict) on the first atom outside."""
        if found is None:
            return
        counts, low, high, outside = found
        weighted = self._count_bounds[2]
        volume = self._volume_per_atom(cell_t, pbc)
        where = self._where(step, volume)
        k = int(torch.nonzero(outside)[0])
        side = "few" if bool(counts[k] < low[k]) else "many"
        if self._reported_already(side, volume):
            return
        name = self.species[int(self._species_idx[k])]
        label = k if self.labels is None else self.labels[k]
        message = (f"atom {label} ({name}) {neighbour_text(self.model, name, float(counts[k]), weighted)}{where} "
                   f"(allowed {float(low[k]):.3g}-{float(high[k]):.3g}; {int(outside.sum())} atom(s) outside): an "
                   "environment the model never saw (an isolated atom, a dimer, a surface, a lattice in other units "
                   "or far from its training density), so its energy and forces are extrapolation.")
        if self.strict:
            err = NumericalError(message + " (strict mode)")
            err.out_of_domain = {"atoms": (label,), "symbols": (name,), "neighbours": float(counts[k]),
                                 "weighted": weighted, "training_range": (float(low[k]), float(high[k])),
                                 "step": step}
            raise err
        self._reported[side] = volume
        _warn_out_of_domain(message + self._report_tail(f"atoms with too {side} neighbours"), stacklevel=4)

    def _check_domain(self, nl, d2, step, cell_t=None, pbc=False) -> None:
        """Compare the pairs' squared distances with the training minima (one gather, one compare);
        warn once (:data:`REREPORT_VOLUME_CHANGE`) or raise (strict) on the closest offending pair."""
        _, below, k = pairs_below(self._domain_min2, self._species_idx, nl.i, nl.j, d2)
        if k < 0:
            return
        volume = self._volume_per_atom(cell_t, pbc)
        if self._reported_already("close", volume):
            return
        a, b = sorted((int(nl.i[k]), int(nl.j[k])))
        za, zb = int(self.numbers_np[a]), int(self.numbers_np[b])
        la, lb = (a, b) if self.labels is None else (self.labels[a], self.labels[b])
        name_a, name_b = _chemical_symbols[za], _chemical_symbols[zb]
        from lawful.forcefields.batch import pair_key

        key = pair_key(name_a, name_b)
        d_min = float(self.model.pair_min_distance[key])
        where = self._where(step, volume)
        n_bad = int(below.sum()) // 2
        message = (
            f"atoms {la} ({name_a}) and {lb} ({name_b}) are {math.sqrt(float(d2[k])):.4g} Å apart{where}"
            + close_pair_reason(key, math.sqrt(float(d2[k])), d_min, float(self.model.cutoff), self.domain_tolerance)
            + f" ({n_bad} pair(s) out of domain): the model is extrapolating and its forces are not "
            "to be trusted; check the structure and time step, or train on data with closer contacts "
            "(a NeuralPotential trained with repulsion='zbl' keeps atoms apart)."
        )
        if self.strict:
            err = NumericalError(message + " (strict mode)")
            #: what the report says, for engine adapters: atoms, symbols, Å, training minimum, step
            err.out_of_domain = {"atoms": (la, lb), "symbols": (name_a, name_b), "distance": math.sqrt(float(d2[k])),
                                 "training_min": d_min, "tolerance": self.domain_tolerance, "step": step}
            raise err
        self._reported["close"] = volume
        _warn_out_of_domain(message + self._report_tail("pairs closer than the training data's"), stacklevel=4)

    @torch.inference_mode(False)
    def evaluate(self, positions, cell=None, pbc=False, stress: bool = False,
                 length_scale: float = 1.0, step=None) -> dict:
        """Energy (0-d, eV), forces ((N, 3), eV/Å), per-atom energies and optionally stress.

        ``positions``: (N, 3) numpy array or tensor; ``cell``: (3, 3) rows or None; both in Å, or
        in another length unit with ``length_scale`` Å per unit (the scaling is done in place in
        the preallocated buffers). ``pbc``: bool or 3 bools. ``step``: the engine's step number,
        quoted in out-of-domain reports (None: not known). Outputs are tensors in the model's
        dtype/device, those it has at this call (a model moved in place since the runner was made
        is followed: :meth:`_follow_model`). Raises :class:`NumericalError` for non-finite
        positions or model output, and for an out-of-domain structure in strict mode (see the
        class docstring).
        """
        if model_dtype(self.model) != self.dtype or model_device(self.model) != self.device:
            self._follow_model()
        if not self._composition_checked:
            self._check_composition()
        pos = self._pos
        src = torch.as_tensor(positions)
        if tuple(src.shape) != (self.n_atoms, 3):
            raise ShapeError(f"positions must have shape ({self.n_atoms}, 3), got {tuple(src.shape)}.")
        if self.dtype == torch.float64 or src.dtype != torch.float64 or self.n_atoms == 0:
            pos.copy_(src)
        else:
            # a lower-precision model: move the structure near the origin before rounding, or the
            # pair vectors keep ~7 digits of the absolute coordinates (alanine dipeptide at 1e4 Å:
            # forces 0.07 eV/Å off). Energies, forces and stress do not see a translation, nor does
            # the Verlet list's test (a pair's distance changes by at most the two atoms' moves in
            # any frame); the offset is renewed when atom 0 is more than ORIGIN_RADIUS Å from it
            # (in Å whatever the unit: compared in OpenMM's nm, a structure 9 nm from its offset
            # kept float32 forces 1e-4 eV/Å off, 50x those of the same structure given in Å).
            # Atoms at different lattice offsets (unwrapped positions: ASE's MD and OpenMM do not
            # wrap) keep their own large coordinates after that shift: each is wrapped along the
            # periodic axes first, in float64, into the cell centred on atom 0 (cu-emt in float32
            # at offsets of 10 / 1e4 cells: forces 9e-5 / 0.09 eV/Å off, 5e-6 wrapped), which keeps
            # a solute smaller than half the box whole where it straddles a face (wrapped into
            # [0, 1) it was split, and its float32 forces were 3x a centred one's rounding error);
            # nothing physical changes.
            if cell is not None:
                src = wrap_positions(src, torch.as_tensor(np.asarray(cell, dtype=np.float64).reshape(3, 3)),
                                     [bool(p) for p in np.broadcast_to(np.asarray(pbc, dtype=bool), (3,))],
                                     about_first=True)
            if (self._origin is None or self._origin.device != src.device
                    or float((src[0] - self._origin).abs().max()) * abs(length_scale) > ORIGIN_RADIUS):
                self._origin = src[0].detach().clone()
            pos.copy_(src - self._origin)
        if length_scale != 1.0:
            pos.mul_(length_scale)
        if not bool(torch.isfinite(pos).all()):
            bad = torch.nonzero(~torch.isfinite(pos).all(dim=1)).reshape(-1)[:10].tolist()
            raise NumericalError(
                f"positions of atom(s) {bad} are NaN or infinite: the simulation has blown up (time "
                "step too large, overlapping atoms) or the input was not initialised."
            )
        cell_t = None
        if cell is not None:
            self._cell.copy_(torch.as_tensor(cell))
            if length_scale != 1.0:
                self._cell.mul_(length_scale)
            cell_t = self._cell
        kwargs = {}
        if self._verlet is not None:
            nl, d2 = self._pairs_within_cutoff(pos, cell_t, pbc)
            if self.labels is not None:
                # the model's own coincident-atom check names its rows: check here with the engine's
                from lawful.forcefields.batch import check_squared_distances

                lab = self._labels_t
                check_squared_distances(d2, lab.index_select(0, nl.i), lab.index_select(0, nl.j))
            checking = not getattr(_PAUSE, "on", False)
            # the densities first: a unit mistake is refused as one, strict or not, before the
            # close pairs it also makes are reported; then the pairs, then the densities' report
            found = (self._neighbour_counts(nl, d2, step, cell_t, pbc)
                     if self._count_bounds is not None and checking else None)
            if self._domain_min2 is not None and checking:
                self._check_domain(nl, d2, step, cell_t, pbc)
            self._check_neighbour_counts(found, step, cell_t, pbc)
            # lawful's own models take the pairs already cut, with their squared distances: no
            # second displacement pass and cut in make_batch
            kwargs[self._pairs_arg] = (*nl, d2) if self._cut_pairs else nl
        with torch.inference_mode(False):  # forces are gradients: autograd must be on
            out = self.model.evaluate(pos, self.numbers, cell=cell_t, pbc=pbc, stress=stress, **kwargs)
        energy = out["energy"]
        if not bool(torch.isfinite(energy).all()) or not bool(torch.isfinite(out["forces"]).all()):
            raise NumericalError(
                f"the model returned a non-finite energy/forces (energy={float(energy.detach())}) for "
                "finite positions: atoms are probably overlapping; check the structure or time step."
            )
        return out

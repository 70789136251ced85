"""The OpenMM way in: :func:`create_force` and the :class:`DriftReporter`.

>>> from lawful.integrations.openmm import create_force, DriftReporter
>>> system.addForce(create_force("cu.lawful", topology=topology))          # whole system
>>> system.addForce(create_force(model, topology=topology, atoms=ligand))   # ML/MM: a subset
>>> simulation.reporters.append(DriftReporter("drift.csv", 100))

Two backends return an ``openmm.Force``:

- ``backend="python"``: an ``openmm.PythonForce`` whose callback hands OpenMM's positions (a
  float64 NumPy array in nm) straight to torch: one copy into a preallocated tensor scaled to Å,
  the model, one scaled copy of the forces into a preallocated NumPy array in kJ/mol/nm. A Verlet
  neighbour list (cutoff + skin) is reused between steps when the model accepts prebuilt pairs.
  ``setParticles`` restricts it to an ML subset, ``setUsesPeriodicBoundaryConditions`` hands it
  the box for periodic systems.
- ``backend="torch"``: an ``openmmtorch.TorchForce`` running a TorchScript export of the model
  (see :mod:`lawful.integrations.torchscript_force`); needs the optional ``openmmtorch`` package.
  ``"auto"`` picks it when ``openmmtorch`` imports, else the python backend.

Units are converted only here, with the constants of :mod:`lawful.integrations.units`.

Periodicity is decided explicitly (:func:`resolve_periodicity`): a topology's box vectors decide
(``periodic=None`` follows them; a contradicting ``True``/``False`` is an error); with
``numbers=`` alone ``periodic`` must be given; a periodic force refuses a Context whose box is
OpenMM's never-set default. Indices and lengths are checked in :func:`create_force`; what only the
Context knows (its box, with ``numbers=`` alone its particle count) at the first evaluation.

Errors raised inside an OpenMM force callback reach Python as ``openmm.OpenMMException`` (OpenMM
crosses C++ in between) with lawful's message and a tag ``[lawful force K, error M]``; wrap the MD
loop in :func:`lawful_errors` to get the original :class:`lawful.kernels.LawfulError` subclass
back. Each error is kept by the computation that raised it, never in a process-wide slot. A
blow-up during MD is reported as one: OpenMM's step, the largest displacement since the previous
evaluation and the largest force there, with their particles.
"""

from __future__ import annotations

import contextlib
import itertools
import numbers as _numbers
import os
import re
import threading
import warnings
import weakref

import ase.units as _ase_units
import numpy as np
import openmm
import torch
from openmm import unit as _omm_unit

from lawful.integrations import units
from lawful.integrations.runner import ModelRunner, report_charge, resolve_model
from lawful.integrations.monitors import CsvLog, DriftAccumulator, DriftSummary
from lawful.kernels.errors import BackendError, InputError, LawfulError, NumericalError, ShapeError

__all__ = ["create_force", "numbers_from_topology", "topology_from_atoms", "openmm_frame", "OpenMMFrame", "system_from_atoms", "apply_ase_constraints",
           "velocities_from_ase", "particle_masses", "set_on_step_velocities", "minimize", "LEAPFROG_INTEGRATORS", "DriftReporter", "lawful_errors", "LawfulComputation",
           "available_backends", "resolve_periodicity"]

_BACKENDS = ("auto", "python", "torch")
# OpenMM's default periodic box (a 2 nm cube): what a System's box is when it was never set.
_DEFAULT_BOX_NM = np.array([v.value_in_unit(_omm_unit.nanometer)
                            for v in openmm.System().getDefaultPeriodicBoxVectors()])
# Live computations by serial number, so that lawful_errors() finds the owner of an error from the
# tag in OpenMM's message. Only weak references: each error lives in its own computation.
_COMPUTATIONS: "weakref.WeakValueDictionary[int, LawfulComputation]" = weakref.WeakValueDictionary()
_SERIALS = itertools.count(1)
#: An evaluation failing after an atom moved more than this (Å) since the previous one, or after a
#: force above EXPLOSION_FORCE_EV_A (eV/Å), is reported as an explosion (thermal motion of Cu at
#: 300 K is ~0.01 Å per 2 fs step; forces in a stable solid are a few eV/Å).
EXPLOSION_DISPLACEMENT_A = 0.1
EXPLOSION_FORCE_EV_A = 20.0
_ERROR_TAG = re.compile(r"\[lawful force (\d+), error (\d+)\]")
#: Ctrl-C / SIGTERM that arrived inside a force callback, by key (see :func:`interrupt_message`)
_INTERRUPT_TAG = re.compile(r"\[lawful interrupt (\d+)\]")
_INTERRUPTS: dict = {}
_INTERRUPT_KEYS = itertools.count(1)


def interrupt_message(exc: BaseException) -> str:
    """Keep a ``KeyboardInterrupt`` raised inside an OpenMM force callback and return the message
    to raise there instead (``RuntimeError(interrupt_message(exc))``): OpenMM turns whatever the
    callback raises into a plain ``OpenMMException`` (a Ctrl-C ended the run with exit 1 and a
    traceback, and the CLI's SIGTERM lost its 143); :func:`lawful_errors` raises the kept one."""
    k = next(_INTERRUPT_KEYS)
    _INTERRUPTS[k] = exc
    while len(_INTERRUPTS) > 16:
        _INTERRUPTS.pop(next(iter(_INTERRUPTS)))
    return f"interrupted [lawful interrupt {k}]"
# the checks of the backend="torch" module (torchscript_force.OpenMMTorchModule) raise this text,
# its strict training-domain check (forcefields.TorchScriptPotential) the second
_TORCH_INPUT_ERROR = re.compile(r"InputError: ((?:this lawful force |atom \d)[^\n]*)")
_TORCH_DOMAIN_ERROR = re.compile(r"NumericalError: (lawful model out of its training domain[^\n]*)")


@contextlib.contextmanager
def lawful_errors():
    """Re-raise lawful's own exception when a lawful force fails inside OpenMM.

    >>> with lawful_errors():
    ...     simulation.step(1000)

    OpenMM turns exceptions raised in a force callback into ``openmm.OpenMMException``; inside
    this context the original :class:`LawfulError` subclass (e.g. ``NumericalError`` for NaN
    positions), or the ``KeyboardInterrupt`` of a Ctrl-C that arrived during the callback, is raised instead, chained to OpenMM's exception; OpenMM's own NaN errors become
    :class:`NumericalError` too, and the input checks of the ``backend="torch"`` module become
    :class:`InputError`. Each error is kept by the force computation that raised it and
    found through the tag ``[lawful force K, error M]`` in OpenMM's message, so Contexts running
    in other threads can never hand each other their errors.
    """
    try:
        yield
    except openmm.OpenMMException as exc:
        hit = _INTERRUPT_TAG.search(str(exc))
        if hit is not None and int(hit.group(1)) in _INTERRUPTS:
            raise _INTERRUPTS.pop(int(hit.group(1))) from None
        err = _pop_error(str(exc))
        if err is not None:
            raise err from exc
        scripted = _TORCH_INPUT_ERROR.findall(str(exc))  # raised inside the TorchScript module
        if scripted:  # the last one: the message itself (the script's traceback quotes its source)
            raise InputError(scripted[-1]) from exc
        outside = _TORCH_DOMAIN_ERROR.findall(str(exc))
        if outside:
            raise NumericalError(outside[-1] + " (strict mode)") from exc
        if "nan" in str(exc).lower():  # OpenMM's own NaN checks (e.g. the CPU platform's)
            raise NumericalError(
                f"OpenMM reports NaN: {exc}. The simulation has blown up: reduce the time step, "
                "minimise the structure first, or check the starting velocities."
            ) from exc
        raise


def _pop_error(message: str):
    """The LawfulError tagged in ``message`` (removed from its owner), or None."""
    match = _ERROR_TAG.search(message)
    if match is None:
        return None
    owner = _COMPUTATIONS.get(int(match.group(1)))
    return None if owner is None else owner.pop_error(int(match.group(2)))


def available_backends() -> list[str]:
    """The backends that work here: always ``"python"``, plus ``"torch"`` when openmmtorch imports."""
    out = ["python"]
    try:
        import openmmtorch  # noqa: F401

        out.append("torch")
    except ImportError:
        pass
    return out


def numbers_from_topology(topology, atoms=None) -> np.ndarray:
    """Atomic numbers (int64) of the topology's atoms, or of the ``atoms`` subset (indices).

    Raises :class:`InputError` for an atom without an element (a virtual site or dummy atom) or
    an index outside the topology.
    """
    all_atoms = list(topology.atoms())
    chosen = range(len(all_atoms)) if atoms is None else atoms
    out = []
    for idx in chosen:
        if not 0 <= idx < len(all_atoms):
            raise InputError(f"atom index {idx} is outside the topology ({len(all_atoms)} atoms).")
        a = all_atoms[idx]
        if a.element is None:
            raise InputError(
                f"topology atom {idx} ({a.name!r} in residue {a.residue.name!r} {a.residue.id}) has no "
                "element, so the model cannot handle it: leave it out of atoms=[...] (ML/MM) or give "
                "it an element in the topology."
            )
        out.append(a.element.atomic_number)
    return np.asarray(out, dtype=np.int64)


def _index_list(atoms) -> list[int]:
    """``atoms`` as a list of Python ints; InputError for anything that is not integer indices."""
    arr = np.asarray(atoms)
    if arr.ndim != 1:
        raise InputError(f"atoms={atoms!r} must be a flat list of particle indices (ML/MM subset), "
                         f"got an array of shape {arr.shape}.")
    if arr.size and arr.dtype.kind not in "iu":
        raise InputError(f"atoms must be integer particle indices, got {arr.tolist()[:10]} ({arr.dtype}): "
                         "pass e.g. atoms=[0, 1, 2].")
    return [int(i) for i in arr]


def _subset(atoms, n_total: int | None, source: str = "the topology") -> list[int] | None:
    """The ML subset as a list of particle indices, checked against ``n_total`` particles."""
    if atoms is None:
        return None
    idx = _index_list(atoms)
    if not idx:
        raise InputError("atoms=[] selects no atom: pass the indices of the ML subset, or atoms=None for all.")
    if len(set(idx)) != len(idx):
        raise InputError(f"atoms contains repeated indices {sorted(i for i in set(idx) if idx.count(i) > 1)}: "
                         "list each ML particle once.")
    negative = sorted(i for i in idx if i < 0)
    if negative:
        raise InputError(f"atoms contains negative indices {negative[:10]}: particle indices count from 0 "
                         "(Python's counting from the end is not used here).")
    if n_total is not None:
        outside = sorted(i for i in idx if i >= n_total)
        if outside:
            raise InputError(f"atoms {outside[:10]} are outside the {n_total} particles of {source} (indices "
                             f"0..{n_total - 1}): pass indices of existing particles.")
    return idx


def _as_numbers(numbers) -> np.ndarray:
    """``numbers`` as a 1-D int64 array of atomic numbers (InputError/ShapeError otherwise)."""
    arr = np.asarray(numbers)
    if arr.ndim != 1 or arr.size == 0:
        raise ShapeError(f"numbers must be a non-empty 1-D list of atomic numbers, got shape {arr.shape}.")
    if arr.dtype.kind == "f" and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)):
        arr = arr.astype(np.int64)
    if arr.dtype.kind not in "iu":
        raise InputError(f"numbers must be integer atomic numbers, got {arr.tolist()[:10]} ({arr.dtype}).")
    return arr.astype(np.int64)


def _box_text(box_nm) -> str:
    box = np.asarray(box_nm, dtype=float)
    if np.count_nonzero(box - np.diag(np.diag(box))) == 0:
        return "[" + ", ".join(f"{v:.6g}" for v in np.diag(box)) + "] nm"
    return np.array2string(box, precision=6, separator=", ") + " nm"


def resolve_periodicity(topology, periodic) -> tuple[bool, np.ndarray | None]:
    """The rule that decides whether a lawful force sees a periodic box: ``(periodic, box_nm)``.

    - With a ``topology``, the topology decides: ``periodic=None`` follows its box vectors;
      ``True`` on a topology without box vectors and ``False`` on one with them are
      :class:`InputError` (the two readings give different energies). ``box_nm`` is the
      topology's box, (3, 3) rows in nm, or None.
    - Without a topology (``numbers=`` only) nothing says whether the System is periodic, so
      ``periodic`` must be ``True`` or ``False``; ``None`` is an :class:`InputError`.

    When the force is evaluated, a periodic force also checks the Context's box: OpenMM's default
    2 nm cube (a System whose box was never set) is an :class:`InputError` unless the topology's
    box is that cube. A non-periodic force makes a non-periodic System (OpenMM: a System is
    periodic iff one of its forces is), whatever its default box says. One case stays out of the
    force's sight: a non-periodic lawful force added by hand beside *other* periodic forces (OpenMM
    hands a non-periodic force no box); openmm-ml's ``createMixedSystem`` refuses it, and a
    topology with box vectors makes ``create_force`` refuse ``periodic=False``.
    """
    if periodic is not None and not isinstance(periodic, (bool, np.bool_)):
        raise InputError(f"periodic={periodic!r} must be None (follow the topology's box), True or False.")
    if topology is None:
        if periodic is None:
            raise InputError(
                "periodic=None with numbers= and no topology: nothing says whether the System is periodic; "
                "pass periodic=True (the System's box, which must be set) or periodic=False (no periodic "
                "images), or pass topology=... whose box vectors decide."
            )
        return bool(periodic), None
    vectors = topology.getPeriodicBoxVectors()
    box_nm = None if vectors is None else np.array(vectors.value_in_unit(_omm_unit.nanometer), dtype=float)
    if periodic is None:
        return box_nm is not None, box_nm
    if periodic and box_nm is None:
        raise InputError(
            "periodic=True but the topology has no periodic box vectors: set them "
            "(topology.setPeriodicBoxVectors(...), the structure's cell) or pass periodic=None/False for a "
            "non-periodic structure."
        )
    if not periodic and box_nm is not None:
        raise InputError(
            f"periodic=False but the topology has periodic box vectors {_box_text(box_nm)}: without its images "
            "the structure has a different energy; pass periodic=None (follow the topology), or remove the "
            "box (topology.setPeriodicBoxVectors(None)) for a structure in vacuum."
        )
    return bool(periodic), box_nm


class LawfulComputation:
    """The callback of the python backend: ``computation(state) -> (energy kJ/mol, forces kJ/mol/nm)``.

    ``state.getPositions()`` holds only the ML particles when the force has a subset
    (``setParticles``); with ``select`` the state holds every particle and the computation picks
    the ``subset`` rows itself (``numbers=`` without a topology: the particle count is then
    checked at every call). Buffers are allocated once; per call: one copy of the positions into a
    torch tensor (nm -> Å), the model, one scaled copy of the forces into a NumPy array, and a copy
    of the positions kept to report an explosion (largest displacement, step) if the next call fails.

    ``box_nm``: the box the topology declares ((3, 3) nm) or None; a periodic computation refuses a
    Context whose box is OpenMM's never-set default unless it equals ``box_nm``. Errors are kept
    by this object (see :func:`lawful_errors`). Every Context of a System calls the same object,
    so calls are serialised by a lock (two Contexts in two threads each get their own numbers).
    What it remembers between calls is shared by those Contexts too: the out-of-domain warning
    comes once per force (not per Context: pass ``strict=True`` to stop at every event), and an
    explosion report's "moved since the previous force evaluation" compares with the previous
    evaluation of any of them; give each Context its own System for per-Context diagnostics.
    Pickles compactly (model, numbers and options), as
    OpenMM does when it copies a System.
    """

    def __init__(self, model, numbers, periodic: bool, skin: float = 0.5, *, subset=None, select: bool = False,
                 n_particles: int | None = None, box_nm=None, strict: bool = False):
        self.model = model
        self.periodic = bool(periodic)
        self.skin = float(skin)
        self.strict = bool(strict)
        self.subset = None if subset is None else [int(i) for i in subset]
        self.select = bool(select) and self.subset is not None
        self.box_nm = None if box_nm is None else np.array(box_nm, dtype=float).reshape(3, 3)
        self.runner = ModelRunner(model, numbers, skin=skin, strict=strict, labels=self.subset)
        self.n_particles = int(n_particles) if n_particles is not None else self.runner.n_atoms
        self._rows = self.n_particles if self.select else self.runner.n_atoms  # rows of state positions
        self._select_idx = np.asarray(self.subset, dtype=np.int64) if self.select else None
        self._forces = np.zeros((self._rows, 3), dtype=np.float64)
        self._prev_pos = np.zeros((self._rows, 3), dtype=np.float64)
        self._prev_step = None
        self.calls = 0
        self.serial = next(_SERIALS)
        _COMPUTATIONS[self.serial] = self
        self._errors: dict[int, LawfulError] = {}
        self._error_serials = itertools.count(1)
        self._lock = threading.Lock()
        self._call_lock = threading.Lock()

    def __reduce__(self):
        return (_rebuild_computation, (self.model, self.runner.numbers_np, self.periodic, self.skin,
                                       dict(subset=self.subset, select=self.select, n_particles=self.n_particles,
                                            box_nm=self.box_nm, strict=self.strict)))

    # -- errors, scoped to this computation --------------------------------------------------
    def _keep(self, exc: LawfulError) -> LawfulError:
        """Keep ``exc`` here; return a copy whose message carries the tag lawful_errors() reads."""
        with self._lock:
            k = next(self._error_serials)
            self._errors[k] = exc
            while len(self._errors) > 16:  # errors nobody collected: keep the newest few
                self._errors.pop(next(iter(self._errors)))
        tagged = type(exc).__new__(type(exc))
        tagged.__dict__.update(exc.__dict__)
        tagged.args = (f"{exc} [lawful force {self.serial}, error {k}]",)
        return tagged

    def pop_error(self, key: int):
        """The error kept under ``key`` (and forget it), or None."""
        with self._lock:
            return self._errors.pop(int(key), None)

    # -- the callback --------------------------------------------------------------------------
    def _particle(self, row: int) -> int:
        """The System particle index of row ``row`` of the state's positions."""
        return row if (self.subset is None or self.select) else self.subset[row]

    def _check_box(self, box_nm) -> None:
        if not np.array_equal(box_nm, _DEFAULT_BOX_NM):
            return
        if self.box_nm is not None and np.array_equal(self.box_nm, _DEFAULT_BOX_NM):
            return  # the topology really declares a 2 nm cube
        if self.box_nm is not None:
            raise InputError(
                f"the Context's periodic box is OpenMM's default {_box_text(box_nm)} (the System's box was "
                f"never set) but the topology's box is {_box_text(self.box_nm)}: call "
                "system.setDefaultPeriodicBoxVectors(*topology.getPeriodicBoxVectors()) before making the Context."
            )
        raise InputError(
            f"this lawful force is periodic (periodic=True) but the Context's box is OpenMM's default "
            f"{_box_text(box_nm)}, i.e. the System's box was never set: call "
            "system.setDefaultPeriodicBoxVectors(a, b, c) with your structure's cell (or pass a topology with "
            "that box to create_force if a 2 nm cube is really meant)."
        )

    def _explosion(self, exc: NumericalError, pos_nm, box_nm, step) -> NumericalError:
        """``exc`` restated as what it is in an MD run: where (OpenMM's step), how far atoms moved
        since the previous evaluation and the largest force there, with their particles. Called an
        explosion when positions are non-finite, an atom moved more than
        :data:`EXPLOSION_DISPLACEMENT_A` or a force exceeded :data:`EXPLOSION_FORCE_EV_A`; else a
        model failure on a configuration that moved only a little."""
        at = "at OpenMM step ?" if step is None else f"at OpenMM step {step}"
        if self._prev_step is None:
            pair = getattr(exc, "coincident", None)
            if pair is not None:   # nothing has moved yet: no collapse, and a time step is no cure
                from lawful.forcefields.batch import MIN_DISTANCE

                return NumericalError(
                    f"{at} (the first force evaluation of this force): particles {pair[0]} and {pair[1]} are "
                    f"{pair[2]:.3g} Å apart (coincident; the model refuses distances below {MIN_DISTANCE} Å). "
                    "Before any step that is either a duplicated atom in the structure or a virtual site not yet "
                    "placed: Context.setPositions does not place virtual sites (openmm-ml's link atoms, a water "
                    "model's extra site); call context.computeVirtualSites() after setPositions.")
            return NumericalError(f"{at} (the first force evaluation of this force): {exc}")
        d = pos_nm - self._prev_pos
        if self.periodic and box_nm is not None:
            frac = d @ np.linalg.inv(box_nm)
            d = (frac - np.round(frac)) @ box_nm
        with np.errstate(invalid="ignore"):
            disp = np.linalg.norm(d, axis=1) * units.ANGSTROM_PER_NM
        finite = np.isfinite(disp)
        fmag = np.linalg.norm(self._forces, axis=1) * units.FORCE_ASE_PER_OPENMM
        m = int(np.argmax(fmag))
        k = int(np.argmax(np.where(finite, disp, -1.0))) if finite.any() else None
        exploded = (not finite.all() or fmag[m] > EXPLOSION_FORCE_EV_A
                    or (k is not None and disp[k] > EXPLOSION_DISPLACEMENT_A))
        parts = [f"the simulation exploded {at}" if exploded else f"the model failed {at}"]
        if not finite.all():
            bad = [self._particle(int(r)) for r in np.flatnonzero(~finite)[:10]]
            parts.append(f"particle(s) {bad} have non-finite positions")
        if k is not None:
            parts.append(f"since the previous force evaluation (step {self._prev_step}) particle {self._particle(k)} "
                         f"moved {disp[k]:.3g} Å, the largest displacement")
        parts.append(f"the largest force at that evaluation was {fmag[m]:.3g} eV/Å on particle {self._particle(m)}")
        advice = ("Reduce the time step, minimise the structure first, or check that the model was trained on "
                  "such configurations." if exploded else
                  "Nothing moved violently, so the model itself breaks down here: check it on this "
                  "configuration (e.g. with LawfulCalculator) or retrain it.")
        return NumericalError("; ".join(parts) + f". The model reports: {exc} {advice}")

    def __call__(self, state):
        # Every Context made from one System calls this same object, possibly from several
        # threads: one evaluation at a time, so that buffers and the Verlet list are never shared
        # mid-call. OpenMM copies the returned forces before it lets go of the GIL.
        with self._call_lock:
            try:
                return self._compute(state)
            except KeyboardInterrupt as exc:   # Ctrl-C (or the CLI's SIGTERM) landed in this callback
                raise RuntimeError(interrupt_message(exc)) from None

    def _compute(self, state):
        step = None
        try:
            step = int(state.getStepCount())
            pos_nm = state.getPositions(asNumpy=True).value_in_unit(_omm_unit.nanometer)
            if pos_nm.shape[0] != self._rows:
                raise ShapeError(
                    f"this lawful force was made for {self._rows} particles (the length of numbers=) but the "
                    f"System has {pos_nm.shape[0]}: pass one atomic number per System particle."
                )
            box_nm = None
            if self.periodic:
                box_nm = state.getPeriodicBoxVectors(asNumpy=True).value_in_unit(_omm_unit.nanometer)
                self._check_box(box_nm)
            ml_pos = pos_nm if self._select_idx is None else pos_nm[self._select_idx]
            try:
                out = self.runner.evaluate(ml_pos, cell=box_nm, pbc=self.periodic,
                                           length_scale=units.ANGSTROM_PER_NM, step=step)
            except NumericalError as exc:
                if _is_out_of_domain(exc):
                    raise  # the runner's strict-mode report already names the atoms and the step
                raise self._explosion(exc, pos_nm, box_nm, step) from exc
        except LawfulError as exc:
            raise self._keep(exc) from None
        self.calls += 1
        f = out["forces"]
        if f.dtype != torch.float64 or f.device.type != "cpu":
            f = f.to("cpu", torch.float64)
        if self._select_idx is None:
            np.multiply(f.numpy(), units.FORCE_OPENMM_PER_ASE, out=self._forces)
        else:
            self._forces[self._select_idx] = f.numpy() * units.FORCE_OPENMM_PER_ASE
        np.copyto(self._prev_pos, pos_nm)
        self._prev_step = step
        return float(out["energy"]) * units.KJMOL_PER_EV, self._forces


def _is_out_of_domain(exc: NumericalError) -> bool:
    """Whether ``exc`` is the runner's strict-mode out-of-domain report (not a blow-up)."""
    return "(strict mode)" in str(exc)


def _rebuild_computation(model, numbers, periodic, skin, options):
    return LawfulComputation(model, numbers, periodic, skin, **options)


def create_force(model, topology=None, numbers=None, atoms=None, periodic=None, backend: str = "auto", *,
                 device=None, dtype=None, skin: float = 0.5, force_group: int = 0,
                 strict: bool = False, charge: int = 0) -> openmm.Force:
    """An ``openmm.Force`` computing a lawful model's energy and forces.

    Parameters
    ----------
    model:
        a lawful model object, the path of a ``.lawful`` file or a shipped model's name.
    topology:
        an ``openmm.app.Topology``: gives the elements, the particle count (ML/MM indices are
        checked against it) and, by its box vectors, periodicity.
    numbers:
        atomic numbers instead of (or to check against) the topology. Without a topology: one
        per System particle (the ML subset is then ``numbers[atoms]``). With a topology: one per
        particle or one per atom of the ``atoms`` subset.
    atoms:
        indices of the particles the model acts on (ML/MM); ``None``: every particle.
    periodic:
        whether the model sees the periodic box (see :func:`resolve_periodicity`): ``None``
        follows the topology's box vectors and needs a topology; ``True``/``False`` must agree
        with the topology when one is given.
    backend:
        ``"python"`` (openmm.PythonForce), ``"torch"`` (openmmtorch.TorchForce) or ``"auto"``
        (torch when openmmtorch imports, the model has a TorchScript export and it records no
        training domain; else python). Both backends make the training-domain check from the
        same table (:func:`lawful.forcefields.domain.domain_limits`): the python backend warns
        with an ``OutOfDomainWarning`` naming the particles and the step, the TorchScript module
        openmm-torch runs with a plain warning that openmm-torch prints (naming the particles),
        and with ``strict`` both raise :class:`NumericalError` (through :func:`lawful_errors`).
        "auto" keeps a model that records its domain (every model ``train()`` made) on python,
        for the fuller report. ``"torch"`` scripts a copy of the model as it is now (openmm-torch
        keeps the module serialised): a model object changed in place afterwards (further
        training, ``load_state_dict``) keeps its old weights in that force, while the python
        backend evaluates the model object as it is at each call; make a new force after such a
        change.
    device, dtype:
        torch device and dtype (``None``: the model's own, float64 for MD).
    skin:
        Verlet skin in Å for the reused neighbour list (python backend).
    force_group:
        the OpenMM force group of the returned force.
    strict:
        out-of-domain structures (atoms closer than the model's training data) raise
        :class:`NumericalError` instead of warning once (either backend).
    charge:
        the total charge (e) of the atoms the force computes (the ML region). The models have
        no charge input: a charge the model was not trained on (``model.training_charges``; a
        model without the record: neutral) warns now (``OutOfDomainWarning``), or raises with
        ``strict``. :func:`system_from_atoms` passes the atoms' own (``info["charge"]`` or the
        sum of their initial charges).

    Everything that can be checked here is (indices, lengths, elements, periodicity against the
    topology); the rest when the force is first evaluated (the Context's box; with ``numbers=``
    only, the System's particle count). The force's name, ``LawfulForce[<backend>,<dtype>,<device>]``,
    reports what is used. Raises :class:`InputError` / :class:`ShapeError` for inconsistent
    inputs, :class:`UnsupportedSpeciesError` for elements the model does not know,
    :class:`ModelFileError` for a missing/invalid model file, :class:`BackendError` when
    ``backend="torch"`` but openmmtorch is not installed.
    """
    if backend not in _BACKENDS:
        raise InputError(f"unknown backend {backend!r}: use one of {list(_BACKENDS)}.")
    if topology is None and numbers is None:
        raise InputError("create_force needs the elements: pass topology=... or numbers=[...].")
    given = None if numbers is None else _as_numbers(numbers)
    if topology is not None:
        n_total = topology.getNumAtoms()
        subset = _subset(atoms, n_total, "the topology")
        z = numbers_from_topology(topology, subset)
        if given is not None:
            if subset is not None and given.shape[0] == n_total:
                given = given[subset]
            if given.shape[0] != z.shape[0]:
                raise ShapeError(
                    f"numbers has {given.shape[0]} entries but the topology has {n_total} particles"
                    + (f" and atoms selects {len(subset)}" if subset is not None else "")
                    + ": pass one number per particle (or per selected atom), or leave numbers out."
                )
            if not np.array_equal(given, z):
                k = int(np.flatnonzero(given != z)[0])
                raise InputError(
                    f"numbers disagree with the topology's elements (entry {k}: {int(given[k])} given, "
                    f"{int(z[k])} in the topology): pass one or the other."
                )
        select = False
    else:
        n_total = int(given.shape[0])
        subset = _subset(atoms, n_total, f"numbers= (one per System particle, {n_total} given)")
        z = given if subset is None else given[subset]
        select = subset is not None
    periodic, box_nm = resolve_periodicity(topology, periodic)
    if not (isinstance(skin, (int, float)) and skin >= 0.0):
        raise InputError(f"skin={skin!r} must be a non-negative distance in Å.")
    model = resolve_model(model, device=device, dtype=dtype)
    report_charge(model, charge, strict, stacklevel=3)     # the models have no charge input
    # both backends check the training domain; the python backend's report is the fuller one
    has_domain = bool(getattr(model, "pair_min_distance", None))
    auto = backend == "auto"
    if auto:
        backend = "torch" if ("torch" in available_backends() and not has_domain) else "python"
    force = None
    if backend == "torch":
        from lawful.integrations.torchscript_force import create_torch_force

        try:
            force = create_torch_force(model, z, subset, n_total, periodic=periodic, box_nm=box_nm, strict=strict)
        except BackendError:
            if not auto:
                raise
            backend = "python"  # "auto": a model without a TorchScript export (DirectForceModel)
    if force is None:
        computation = LawfulComputation(model, z, periodic, skin=skin, subset=subset, select=select,
                                        n_particles=n_total, box_nm=box_nm, strict=strict)
        force = openmm.PythonForce(computation)
        force.setUsesPeriodicBoundaryConditions(periodic)
        if subset is not None and not select:
            force.setParticles(subset)
    force.setForceGroup(int(force_group))
    # what is actually used, readable from the System (e.g. after XML serialisation)
    dev = getattr(model, "device", "cpu")
    force.setName(f"LawfulForce[{backend},{str(getattr(model, 'dtype', '')).replace('torch.', '')},{dev}]")
    return force


class OpenMMFrame:
    """How the coordinates of an ``ase.Atoms`` map into OpenMM's frame (see :func:`openmm_frame`).

    ``rotation`` (3, 3), orthogonal, determinant +1: a vector (row) in the user's frame ``v`` is
    ``v @ rotation.T`` in OpenMM's frame; :meth:`to_openmm` / :meth:`to_user` apply it to (N, 3)
    arrays of positions, velocities or forces in any unit. ``box`` (3, 3), Å, rows a, b, c: the
    periodic box in OpenMM's reduced lower-triangular form (None for a non-periodic structure);
    the same lattice as the atoms' cell, possibly another basis of it. ``rotated`` / ``reduced``:
    whether the rotation is not the identity, and whether the box's basis differs from the cell's.
    """

    def __init__(self, rotation: np.ndarray, box: np.ndarray | None, reduced: bool = False):
        self.rotation = np.asarray(rotation, dtype=np.float64)
        self.box = None if box is None else np.asarray(box, dtype=np.float64)
        self.reduced = bool(reduced)

    @property
    def rotated(self) -> bool:
        """Whether OpenMM's frame is a rotation of the user's (False: the same axes)."""
        return not np.array_equal(self.rotation, np.eye(3))

    def to_openmm(self, vectors) -> np.ndarray:
        """(N, 3) vectors of the user's frame in OpenMM's frame (same unit)."""
        v = np.asarray(vectors, dtype=np.float64)
        return v if not self.rotated else v @ self.rotation.T

    def to_user(self, vectors) -> np.ndarray:
        """(N, 3) vectors of OpenMM's frame (positions, forces, velocities) in the user's frame."""
        v = np.asarray(vectors, dtype=np.float64)
        return v if not self.rotated else v @ self.rotation

    def as_dict(self) -> dict:
        """JSON-able form (``md.json`` records it)."""
        return {"rotated": self.rotated, "reduced": self.reduced, "rotation": self.rotation.tolist(),
                "box_angstrom": None if self.box is None else self.box.tolist()}


def _is_openmm_reduced(box: np.ndarray) -> bool:
    a, b, c = box
    return (a[1] == 0.0 and a[2] == 0.0 and b[2] == 0.0 and a[0] > 0.0 and b[1] > 0.0 and c[2] > 0.0
            and a[0] >= 2.0 * abs(b[0]) and a[0] >= 2.0 * abs(c[0]) and b[1] >= 2.0 * abs(c[1]))


def _snap_half(value: float, whole: float) -> float:
    """``value`` set to exactly ±whole/2 where rounding alone (~1e-15) put it past it: OpenMM checks
    ``whole >= 2|value|`` with no tolerance, and a primitive fcc cell sits on that boundary."""
    if 2.0 * abs(value) > whole and 2.0 * abs(value) - whole <= 1e-12 * whole:
        return float(np.copysign(0.5 * whole, value))
    return value


def openmm_frame(atoms) -> OpenMMFrame:
    """The :class:`OpenMMFrame` for ``atoms``: OpenMM requires a periodic box in reduced
    lower-triangular form (a along x, b in the xy plane, |b_x|, |c_x| <= a_x/2, |c_y| <= b_y/2,
    right-handed). A cell already in that form (cubic, orthorhombic, ...) is kept as it is, with no
    rotation, so coordinates pass unchanged. Any other cell (ASE's primitive fcc from ``bulk("Cu",
    "fcc")``, a skewed or left-handed cell) is rotated to its lower-triangular standard form
    (``ase.cell.Cell.standard_form``; a left-handed cell first takes -c, the same lattice) and
    reduced by whole lattice vectors as OpenMM reduces boxes: the same periodic crystal, so
    energies are identical and forces differ only by the rotation. Non-periodic atoms: identity,
    no box. :class:`InputError` for a flat (zero-volume) periodic cell."""
    from ase.cell import Cell

    if not atoms.pbc.any():
        return OpenMMFrame(np.eye(3), None)
    cell = np.array(atoms.cell.array, dtype=np.float64)
    volume = float(np.linalg.det(cell))
    if not abs(volume) > 1e-9 * max(float(np.abs(cell).max()), 1.0) ** 3:
        raise InputError(f"atoms.pbc={[bool(p) for p in atoms.pbc]} but the cell {cell.round(6).tolist()} Å has no "
                         "volume: set the periodic cell (atoms.cell) or use pbc=False.")
    if _is_openmm_reduced(cell):
        return OpenMMFrame(np.eye(3), cell)
    basis = cell.copy()
    if volume < 0.0:
        basis[2] = -basis[2]  # right-handed; -c spans the same lattice
    rcell, q = Cell(basis).standard_form()
    a, b, c = (np.array(v, dtype=np.float64) for v in np.asarray(rcell))
    a[1] = a[2] = b[2] = 0.0  # exact zeros (they are ~1e-16 after the rotation)
    c = c - b * round(c[1] / b[1])
    c = c - a * round(c[0] / a[0])
    b = b - a * round(b[0] / a[0])
    b[0] = _snap_half(b[0], a[0])
    c[0] = _snap_half(c[0], a[0])
    c[1] = _snap_half(c[1], b[1])
    box = np.array([a, b, c])
    return OpenMMFrame(np.asarray(q, dtype=np.float64), box, reduced=not np.allclose(box, np.asarray(rcell)))


def _box_quantity(box_angstrom: np.ndarray):
    """The box (Å) as OpenMM box vectors (nm), still in reduced form after the unit conversion."""
    a, b, c = (np.array(v) for v in np.asarray(box_angstrom) * units.NM_PER_ANGSTROM)
    b[0] = _snap_half(b[0], a[0])
    c[0] = _snap_half(c[0], a[0])
    c[1] = _snap_half(c[1], b[1])
    return [openmm.Vec3(*row) for row in (a, b, c)] * _omm_unit.nanometer


def topology_from_atoms(atoms):
    """An ``openmm.app.Topology`` (one residue per atom) and positions (``Quantity``, nm) for
    ``ase.Atoms``; periodic atoms give the topology their cell as box vectors (nm).

    OpenMM needs a reduced lower-triangular box: a cell that is not (ASE's primitive fcc, a
    skewed or left-handed cell) is rotated and lattice-reduced by :func:`openmm_frame`, and the
    positions returned are then in OpenMM's frame (``openmm_frame(atoms).to_user`` maps them, and
    forces, back); cubic and other already-reduced cells pass unchanged."""
    from openmm import app

    top = app.Topology()
    chain = top.addChain()
    for k, z in enumerate(atoms.numbers):
        el = app.Element.getByAtomicNumber(int(z))
        res = top.addResidue(el.symbol, chain)
        top.addAtom(el.symbol, el, res, id=str(k + 1))
    if atoms.pbc.any() and not atoms.pbc.all():
        pbc = [bool(p) for p in atoms.pbc]
        raise InputError(f"OpenMM boxes are periodic in all three directions; atoms.pbc={pbc}: "
                         "use pbc=True (with a vacuum gap if needed) or pbc=False.")
    frame = openmm_frame(atoms)
    if frame.box is not None:
        top.setPeriodicBoxVectors(_box_quantity(frame.box))
    positions = _omm_unit.Quantity(frame.to_openmm(atoms.positions) * units.NM_PER_ANGSTROM, _omm_unit.nanometer)
    return top, positions


def apply_ase_constraints(system, atoms) -> None:
    """Carry the atoms' ASE constraints into an OpenMM ``system`` with one particle per atom:
    ``FixAtoms`` becomes mass 0 (OpenMM's fixed particle; the drift reporter then leaves it out
    of the degrees of freedom, as ASE does); any other constraint raises :class:`InputError`,
    since OpenMM would silently ignore it (fixed atoms moved 0.2 Å in 200 fs before this)."""
    from ase.constraints import FixAtoms

    for c in atoms.constraints:
        if not isinstance(c, FixAtoms):
            raise InputError(f"the OpenMM engine cannot apply the ASE constraint {type(c).__name__}: run with "
                             "the ASE engine, or remove the constraint (FixAtoms is carried over as mass 0).")
    for c in atoms.constraints:
        for i in c.get_indices():
            system.setParticleMass(int(i), 0.0)


def minimize(simulation, tolerance_kj_mol_nm: float = 10.0, max_iterations: int = 0):
    """OpenMM's local energy minimisation (L-BFGS) of ``simulation`` (an ``app.Simulation`` or a
    ``Context``) with the lawful forces' training-domain checks paused during its line search,
    then made once on the minimised structure (an energy evaluation: a warning, or under strict
    a :class:`NumericalError`, names what is out of domain there). ``simulation.minimizeEnergy()``
    evaluates its trial steps with the checks on: from an in-domain start of alanine dipeptide in
    vacuum they probed H-H at 0.17 Å, warned "at step 0" (using up the once-only report of a real
    event later) or stopped a strict run, while the minimum it reached was in domain.
    ``tolerance_kj_mol_nm``: OpenMM's RMS-force tolerance (kJ/mol/nm); ``max_iterations`` (0: until
    converged). The python backend's checks are paused (``backend="torch"`` checks inside its
    TorchScript module and cannot be). Returns the minimised potential energy (kJ/mol)."""
    from lawful.integrations.runner import domain_checks_paused

    context = getattr(simulation, "context", simulation)
    with lawful_errors():
        with domain_checks_paused():
            openmm.LocalEnergyMinimizer.minimize(context, float(tolerance_kj_mol_nm), int(max_iterations))
        state = context.getState(getEnergy=True)     # the minimised structure, with the checks on
    return state.getPotentialEnergy().value_in_unit(_omm_unit.kilojoule_per_mole)


def system_from_atoms(atoms, model, backend: str = "auto", **kwargs):
    """A System for ``ase.Atoms`` with one lawful force (masses from the atoms, amu = dalton),
    plus its topology and positions (nm): ``system, topology, positions``. ``kwargs`` go to
    :func:`create_force` (``periodic``, ``strict``, ``dtype``, ...). The atoms' ``pbc`` decides
    periodicity (all three directions or none; the System's box is the cell), so ``periodic``
    may only repeat it. No CMMotionRemover and no thermostat: ready for NVE. The atoms' ASE
    constraints: see :func:`apply_ase_constraints`. A cell that is not in OpenMM's reduced
    lower-triangular form is rotated and reduced (:func:`topology_from_atoms`): the positions
    returned, and OpenMM's forces, are then in OpenMM's frame; ``openmm_frame(atoms).to_user(...)``
    gives them in the atoms' frame (energies are the same in both)."""
    top, positions = topology_from_atoms(atoms)
    system = openmm.System()
    for m in atoms.get_masses():
        system.addParticle(float(m))  # ASE masses are in amu = dalton, OpenMM's mass unit
    apply_ase_constraints(system, atoms)
    if top.getPeriodicBoxVectors() is not None:
        system.setDefaultPeriodicBoxVectors(*top.getPeriodicBoxVectors())
    from lawful.forcefields.domain import structure_charge

    kwargs.setdefault("charge", structure_charge(atoms))
    system.addForce(create_force(model, topology=top, backend=backend, **kwargs))
    return system, top, positions


#: OpenMM integrators that keep velocities half a step behind the positions (leapfrog), v(t - dt/2):
#: each one's frictionless limit is the leapfrog Verlet scheme (checked in tests/test_md_same_start.py).
LEAPFROG_INTEGRATORS = ("VerletIntegrator", "LangevinMiddleIntegrator", "LangevinIntegrator")


def velocities_from_ase(atoms) -> np.ndarray:
    """The velocities of ``ase.Atoms`` as an (N, 3) float64 array in nm/ps, in OpenMM's frame
    (:func:`openmm_frame`: rotated with the positions when the cell is). ASE's velocities are Å per
    ASE time unit; the time unit is taken from ``ase.units`` at module level, CODATA 2014, which is
    the unit ASE's own integrators and ``get_kinetic_energy`` use, so this is the same motion.
    OpenMM's kinetic energy of it (CODATA 2018) then differs from ASE's by about 8e-9 relative, the
    2014/2018 change of the dalton-to-eV ratio (see :mod:`lawful.kernels.units`)."""
    v = openmm_frame(atoms).to_openmm(atoms.get_velocities())
    return v * (_ase_units.fs * units.NM_PER_ANGSTROM * units.FS_PER_PS)


def particle_masses(system) -> np.ndarray:
    """``(N,)`` masses (dalton) of ``system``'s particles; 0 for one OpenMM holds fixed or a
    virtual site: the particles with mass are the atoms that move."""
    return np.array([system.getParticleMass(i).value_in_unit(_omm_unit.dalton)
                     for i in range(system.getNumParticles())], dtype=np.float64)


def set_on_step_velocities(context, velocities_nm_ps, half_step: bool | None = None) -> np.ndarray:
    """Set on-step velocities v(0) (those of ASE, a velocity-Verlet integrator, a trajectory frame,
    a Maxwell-Boltzmann draw) as the starting velocities of ``context``'s integrator. Returns the
    (N, 3) array set, in nm/ps.

    ``velocities_nm_ps``: (N, 3), nm/ps, in OpenMM's frame (:func:`velocities_from_ase` for
    ``ase.Atoms``), N the System's particle count. Call it after ``context.setPositions``: it
    evaluates the forces at those positions.

    Why: OpenMM's ``VerletIntegrator`` is leapfrog. The velocities it stores are v(t - dt/2), half a
    step behind the positions, and its reported kinetic energy is that of
    v(t - dt/2) + dt/2 * F(t)/m, the mean of the two half-step velocities around t (equal to the
    on-step v(t) of velocity Verlet). Setting v(0) itself there starts the run from another state
    (32 rattled Cu atoms at 300 K, 2 fs: KE(0) 0.7 % low, the potential energy 0.13 eV off ASE's
    after 10 steps). So for a leapfrog integrator (:data:`LEAPFROG_INTEGRATORS`) this sets

        v(-dt/2) = v(0) - dt/2 * F(0) / m

    in OpenMM's units: F in kJ/mol/nm, m in dalton (g/mol), so F/m is in nm/ps^2 exactly, dt in
    ps (the integrator's step size), F from the integrator's force groups. Particles of mass 0
    (OpenMM's fixed particles; ``FixAtoms`` in :func:`apply_ase_constraints`) do not move and
    keep the velocity given. With it, OpenMM's ``VerletIntegrator`` and ASE's ``VelocityVerlet``
    follow the same trajectory (up to round-off and the CODATA 2014/2018 difference of ASE's
    time unit) and the first kinetic energy OpenMM reports is that of v(0).

    ``LangevinMiddleIntegrator`` (NVT) and ``LangevinIntegrator``: the same shift is applied. They
    also store half-step velocities (the full kick with F(t) comes first in each step), and with
    zero friction both are exactly the leapfrog scheme above, so v(0) - dt/2 F/m is the start
    consistent with the on-step state; without the shift the deterministic part of the first
    step starts from the wrong velocities, as in NVE, and only the thermostat (over ~1/friction)
    forgets the difference. Unlike ``VerletIntegrator`` they report the kinetic energy of the
    stored half-step velocities themselves (no shift; OpenMM's choice, a better temperature
    estimate under the thermostat), so the first temperature an NVT run reports is that of
    v(-dt/2), which differs from the on-step temperature by O(dt) (+1.1 % for 32 Cu atoms rattled
    by 0.1 Å at 300 K and 2 fs; nothing on a perfect lattice, where F = 0).

    ``half_step``: None decides from the integrator's class (:data:`LEAPFROG_INTEGRATORS`: True;
    any other integrator raises :class:`InputError`, since whether it keeps on-step or half-step
    velocities is not known here); True / False force the shift or set ``velocities_nm_ps`` as
    given. :class:`ShapeError` for a wrong shape."""
    system = context.getSystem()
    n = system.getNumParticles()
    v = np.array(velocities_nm_ps, dtype=np.float64)
    if v.shape != (n, 3):
        raise ShapeError(f"velocities_nm_ps has shape {v.shape}; the System has {n} particles: expected ({n}, 3).")
    integrator = context.getIntegrator()
    if half_step is None:
        name = type(integrator).__name__
        if name not in LEAPFROG_INTEGRATORS:
            raise InputError(f"set_on_step_velocities does not know whether {name} keeps on-step or half-step "
                             f"velocities (known leapfrog: {', '.join(LEAPFROG_INTEGRATORS)}): pass "
                             "half_step=True (velocities at t - dt/2) or half_step=False (at t).")
        half_step = True
    if half_step:
        dt_ps = integrator.getStepSize().value_in_unit(_omm_unit.picosecond)
        state = context.getState(getForces=True, groups=integrator.getIntegrationForceGroups())
        f = state.getForces(asNumpy=True).value_in_unit(_omm_unit.kilojoule_per_mole / _omm_unit.nanometer)
        m = particle_masses(system)
        moving = m > 0.0
        v[moving] -= (0.5 * dt_ps) * f[moving] / m[moving, None]
    context.setVelocities(_omm_unit.Quantity(v, _omm_unit.nanometer / _omm_unit.picosecond))
    return v


_KB_EV = _ase_units.create_units(units.CODATA_VERSION)["kB"]


def _check_writable_file(file) -> None:
    """InputError unless ``file`` can be created or overwritten (checked before any simulation)."""
    path = os.fspath(file)
    if os.path.isdir(path):
        raise InputError(f"the drift file {path!r} is a folder: pass a file name such as drift.csv.")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise InputError(f"the drift file {path!r} cannot be written: its folder {parent!r} does not exist; "
                         "create it first.")
    if not os.access(parent, os.W_OK | os.X_OK) or (os.path.exists(path) and not os.access(path, os.W_OK)):
        raise InputError(f"the drift file {path!r} is not writable: choose a writable path.")


class DriftReporter:
    """An OpenMM reporter measuring energy drift inside OpenMM's own MD loop.

    >>> reporter = DriftReporter("drift.csv", reportInterval=10)
    >>> simulation.reporters.append(reporter)
    >>> reporter.record(simulation)          # optional: include t = 0
    >>> simulation.step(10000)
    >>> reporter.summary().drift_mev_per_atom_per_ps

    Every ``reportInterval`` steps it asks OpenMM for the energies, converts them to eV (lawful's
    units module), feeds one :class:`DriftAccumulator` and, when ``file`` is given, appends a CSV
    row (columns :data:`lawful.integrations.monitors.CSV_COLUMNS`), flushed each report.
    ``n_atoms`` defaults to the number of particles with non-zero mass (OpenMM fixes an atom by
    zeroing its mass, and virtual sites have none: per moving atom, as ASE's
    :class:`~lawful.integrations.monitors.DriftObserver` counts). ``nve`` (default True):
    the run is meant to conserve energy; a thermostatted integrator (Langevin, Brownian,
    Nosé-Hoover, Andersen), a barostat or a ``CMMotionRemover`` in the simulation is then named in
    a warning at the first report (the slope measures heat or work exchanged, not a conservation
    error; audit) and in :attr:`not_conserving`. Pass ``nve=False`` for a deliberate NVT/NPT run.
    """

    #: integrators and forces that change the total energy by design
    _EXCHANGE = ("LangevinIntegrator", "LangevinMiddleIntegrator", "BrownianIntegrator", "NoseHooverIntegrator",
                 "VariableLangevinIntegrator", "DPDIntegrator", "AndersenThermostat", "MonteCarloBarostat",
                 "MonteCarloAnisotropicBarostat", "MonteCarloFlexibleBarostat", "MonteCarloMembraneBarostat",
                 "CMMotionRemover")

    def __init__(self, file: str | os.PathLike | None, reportInterval: int, n_atoms: int | None = None,
                 nve: bool = True):
        if isinstance(reportInterval, bool) or not isinstance(reportInterval, _numbers.Integral) or reportInterval <= 0:
            raise InputError(f"reportInterval must be a positive integer number of steps, got {reportInterval!r}.")
        if n_atoms is not None and (isinstance(n_atoms, bool) or not isinstance(n_atoms, _numbers.Integral)
                                    or n_atoms <= 0):
            raise InputError(f"n_atoms={n_atoms!r} must be a positive integer (or None: the particles with mass).")
        if file is not None:
            _check_writable_file(file)
        self._interval = int(reportInterval)
        self._file = file
        self._n_atoms = n_atoms
        self.log: CsvLog | None = None
        self.accumulator: DriftAccumulator | None = None
        self._dof = None
        self._last_step = None
        self._nve = bool(nve)
        #: what in the simulation exchanges energy with a bath or a piston (set at the first report)
        self.not_conserving: list[str] = []

    def describeNextReport(self, simulation):
        """OpenMM reporter protocol: steps to the next report, and that energies are needed."""
        steps = self._interval - simulation.currentStep % self._interval
        return {"steps": steps, "periodic": None, "include": ["energy"]}

    def _setup(self, simulation) -> None:
        system = simulation.system
        n_real = int(np.count_nonzero(particle_masses(system) > 0.0))
        n_atoms = self._n_atoms if self._n_atoms is not None else n_real
        self.accumulator = DriftAccumulator(n_atoms, conserving=self._nve)
        dof = 3 * n_real - system.getNumConstraints()
        if any(isinstance(f, openmm.CMMotionRemover) for f in system.getForces()):
            dof -= 3
        self._dof = max(dof, 1)
        found = [type(simulation.integrator).__name__] + [type(f).__name__ for f in system.getForces()]
        self.not_conserving = sorted({name for name in found if name in self._EXCHANGE})
        if self.not_conserving and self._nve:
            import warnings

            warnings.warn(f"DriftReporter: the simulation has {', '.join(self.not_conserving)}, which exchange "
                          "energy with a bath or a piston: the total-energy slope it reports is that exchange, not "
                          "a conservation error. Use a VerletIntegrator without them to measure drift, or pass "
                          "nve=False for a deliberate thermostatted run.", UserWarning, stacklevel=3)
        if self._file is not None:
            self.log = CsvLog(self._file)

    def report(self, simulation, state) -> None:
        """OpenMM reporter protocol: record the state's potential and kinetic energy."""
        if self.accumulator is None:
            self._setup(simulation)
        step = int(state.getStepCount()) if hasattr(state, "getStepCount") else int(simulation.currentStep)
        if step == self._last_step:
            return
        if self._last_step is not None and step < self._last_step:
            # a checkpoint or state of an earlier step was loaded: the samples after it belong to a
            # branch that no longer exists; fitting one line over both branches counted the replayed
            # steps twice (OpenMM audit)
            warnings.warn(f"the simulation went back from step {self._last_step} to step {step} (a checkpoint or "
                          "state was loaded): this DriftReporter's drift starts again from here; its CSV keeps "
                          "the rows of both branches.", UserWarning, stacklevel=2)
            self.accumulator.reset()
        self._last_step = step
        t_ps = state.getTime().value_in_unit(_omm_unit.picosecond)
        u = state.getPotentialEnergy().value_in_unit(_omm_unit.kilojoule_per_mole) * units.EV_PER_KJMOL
        k = state.getKineticEnergy().value_in_unit(_omm_unit.kilojoule_per_mole) * units.EV_PER_KJMOL
        if self.log is not None:   # first: a sample that stops the run (blown up) is in the file
            self.log.write(step, t_ps, u, k, 2.0 * k / (self._dof * _KB_EV))
        self.accumulator.add(t_ps, u, k)

    def record(self, simulation) -> None:
        """Record the current state now (e.g. t = 0 before ``simulation.step``)."""
        groups = simulation.integrator.getIntegrationForceGroups()
        self.report(simulation, simulation.context.getState(getEnergy=True, groups=groups))

    def summary(self) -> DriftSummary:
        """The :class:`DriftSummary` of every report so far."""
        if self.accumulator is None:
            raise InputError("the DriftReporter has not reported yet: run simulation.step(...) first.")
        return self.accumulator.summary()

    def close(self) -> None:
        """Close the CSV file, if any."""
        if self.log is not None:
            self.log.close()

"""The ASE way in: :class:`LawfulCalculator`, a real ``ase.calculators.calculator.Calculator``.

>>> from lawful.integrations.ase import LawfulCalculator
>>> atoms.calc = LawfulCalculator("cu.lawful")            # or a model object
>>> atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress()

Everything inside is in ASE's units (Å, eV, eV/Å, eV/Å³), which are also lawful's, so no unit
conversion happens on this path. Model loading, species checks, the Verlet list and NaN checks
live in :mod:`lawful.integrations.runner`, shared with the OpenMM force and the openmm-ml potential.
"""

from __future__ import annotations

import difflib
import hashlib
import inspect
import json
import os
import warnings

import numpy as np
import torch
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes
from ase.stress import full_3x3_to_voigt_6_stress

from lawful.forcefields.domain import structure_charge
from lawful.integrations.runner import ModelRunner, model_device, model_dtype, resolve_model
from lawful.kernels.errors import InputError
from lawful.kernels.modelfile import tensors_digest
from lawful.kernels.precision import dtype_name

__all__ = ["LawfulCalculator", "ModelRunner", "resolve_model"]


def _identify(model_or_path) -> tuple[str, str]:
    """(name, sha256) of a model: the path or shipped name given and the file's sha256, or
    ``"<kind> (in memory)"`` and the sha256 of its weights and config."""
    if isinstance(model_or_path, (str, os.PathLike)):
        from lawful.forcefields.shipped import resolve_model_path

        h = hashlib.sha256()
        with open(resolve_model_path(model_or_path), "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        return os.fspath(model_or_path), h.hexdigest()
    kind = getattr(model_or_path, "kind", type(model_or_path).__name__)
    h = hashlib.sha256()
    config = getattr(model_or_path, "config", None)
    h.update(json.dumps(config, sort_keys=True, default=str).encode())
    if isinstance(model_or_path, torch.nn.Module):
        h.update(tensors_digest({k: v.detach().cpu() for k, v in model_or_path.state_dict().items()}).encode())
    return f"{kind} (in memory)", h.hexdigest()


#: LawfulCalculator's own keywords
CALCULATOR_KEYWORDS = ("model_or_path", "device", "dtype", "skin", "strict")
#: the keywords of ASE's ``Calculator.__init__`` (label, directory, atoms, restart, ...), passed on to it
ASE_KEYWORDS = tuple(name for name, p in inspect.signature(Calculator.__init__).parameters.items()
                     if name != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))
#: what ``calc.set(...)`` can change on a calculator already made
SETTABLE_KEYWORDS = ("skin", "strict")
#: other engines' names for a keyword here (openmm-ml's ``precision``)
_ALIASES = {"precision": "dtype", "model": "model_or_path"}


def _refuse_unknown(unknown, accepted, where: str, fix: str) -> None:
    """An :class:`InputError` naming the ``unknown`` keywords, the nearest accepted one of each (if
    any) and all the ``accepted`` ones."""
    near = []
    for k in sorted(unknown):
        close = [_ALIASES[k]] if _ALIASES.get(k) in accepted else difflib.get_close_matches(k, accepted, n=1)
        near += [f"{close[0]!r} for {k!r}"] if close else []
    hint = f" (did you mean {', '.join(near)}?)" if near else ""
    raise InputError(f"unknown keyword(s) {sorted(unknown)} for {where}{hint}: it accepts {list(accepted)}; {fix}")


def _model_stamp(model, modules) -> tuple:
    """What changes when a model is moved or changed in place: its dtype and device, and each
    weight's and buffer's identity, storage and in-place version counter (bumped by optimiser
    steps, ``load_state_dict``, ``copy_`` and other in-place operations on the tensor; not by
    writes through ``.data``), read from ``modules`` (the model's, listed once: walking
    ``model.parameters()`` at each call cost 160 µs for organic-xtb, this 40 µs)."""
    tensors = tuple((id(t), t.data_ptr(), t._version) for mod in modules
                    for table in (mod._parameters, mod._buffers) for t in table.values() if t is not None)
    return (model_dtype(model), model_device(model), tensors)


def _as_pbc(pbc) -> list[bool]:
    return [bool(b) for b in np.broadcast_to(np.asarray(pbc, dtype=bool), (3,))]


class LawfulCalculator(Calculator):
    """An ASE calculator for a lawful model.

    Parameters
    ----------
    model_or_path:
        a lawful model (``NeuralPotential``, ``DirectForceModel``) or the path of a ``.lawful``
        file (loaded safely, no code executed).
    device:
        torch device ("cpu", "cuda", "auto"); ``None`` keeps the model's.
    dtype:
        "float64" / "float32" / a torch dtype; ``None`` keeps the model's (float64 for MD).
    skin:
        Verlet neighbour-list skin (Å) used when the model accepts a prebuilt list.
    strict:
        what to do when a structure leaves the model's training domain (a pair closer than 0.9 x
        the smallest distance of that species pair in its training data, a composition outside the
        span of its training compositions, an atom's neighbour density outside its species' training
        range, a stated total charge it was not trained on; see
        :class:`~lawful.integrations.runner.ModelRunner`): ``False`` warns
        (:class:`~lawful.kernels.errors.OutOfDomainWarning`; once per kind, see
        :data:`~lawful.forcefields.domain.REREPORT_VOLUME_CHANGE`), ``True`` raises
        :class:`~lawful.kernels.errors.NumericalError`.
    label, directory, atoms, restart, ...:
        ASE's own ``Calculator`` keywords, passed on to it; any other keyword (a misspelling,
        openmm-ml's ``precision``) is an :class:`~lawful.kernels.errors.InputError` naming it.

    ``skin`` and ``strict`` can change on a calculator in use, by ``calc.set(strict=True)`` (ASE's
    way; it returns the changed ones) or ``calc.strict = True``: checked as here, then the cached
    results and neighbour list are dropped, so the next calculation and ``calc.todict()`` use the
    new value. The model, ``dtype`` and ``device`` are fixed (another dtype or device is another
    copy of the model): ``calc.set(dtype=...)``, ``calc.set(device=...)`` and any other keyword
    are an :class:`~lawful.kernels.errors.InputError`; make a new calculator for them. A model
    object changed in place after the calculator was made (a model you passed and train further,
    ``calc.model.to(torch.float32)``) is followed, not answered from the cache: the results of the
    old weights are dropped (:meth:`check_state` reports a ``"model"`` change), the next
    calculation uses the model as it is (a float32 model gets the same care far from the origin as
    one made with ``dtype="float32"``), and ``calc.dtype``, ``calc.device`` and ``calc.todict()``
    describe it. Writes through ``.data`` bypass torch's version counters and go unseen: call
    ``calc.reset()`` after them.

    Properties (ASE units): ``energy`` and ``free_energy`` (eV), ``energies`` (per atom, eV),
    ``forces`` ((N, 3), eV/Å), ``stress`` (Voigt 6-vector, eV/Å³, ASE's sign convention; only for
    atoms periodic in all three directions). All properties come from one model pass; ASE's
    ``system_changes`` decides when to recompute. For atoms periodic in all three directions the
    stress is computed in the same backward pass as the forces whatever was asked, so
    ``get_forces(); get_stress()`` costs one model evaluation; a model whose stress training did
    not fit (``model.stress_fitted`` False: a ``DirectForceModel`` trained with stress weight 0)
    computes it only when asked, and warns once that it is not to be trusted. ``calc.dtype`` and
    ``calc.device`` report what is actually used; ``calc.todict()`` names the model (path or
    shipped name) with a sha256 of its content, so ASE databases and trajectories record which
    potential made them. Atoms of elements the model does not know raise
    :class:`lawful.kernels.UnsupportedSpeciesError`.

    In a ``multiprocessing`` pool: "spawn" pickles nothing torch-specific and works as is; for
    "fork", :mod:`lawful.integrations.runner` sets torch to one thread in every forked child
    (the parent's OpenMP pool does not survive ``fork``; without this a child of a parent that
    evaluated with several threads hangs).
    """

    implemented_properties = ["energy", "free_energy", "energies", "forces", "stress"]
    nolabel = True

    def __init__(self, model_or_path, device=None, dtype=None, skin: float = 0.5, strict: bool = False,
                 **kwargs):
        unknown = set(kwargs) - set(ASE_KEYWORDS)
        if unknown:
            _refuse_unknown(unknown, CALCULATOR_KEYWORDS + ASE_KEYWORDS, "LawfulCalculator(...)",
                            "check the spelling.")
        Calculator.__init__(self, **kwargs)
        self.model = resolve_model(model_or_path, device=device, dtype=dtype)
        self._given_name, self._given_sha256 = _identify(model_or_path)
        self._given_file = isinstance(model_or_path, (str, os.PathLike))
        self._modules = tuple(self.model.modules()) if isinstance(self.model, torch.nn.Module) else ()
        self._stamp_now = None         # the model's stamp, read once per get_property
        self._given_stamp = self._stamp()
        self._identity = (self._given_stamp, self._given_name, self._given_sha256)
        self._results_stamp = None     # the model's stamp when self.results were computed
        self._strict = bool(strict)
        self._skin = self._checked_skin(skin)      # checked now, not at the first step
        self._runner: ModelRunner | None = None
        self._stress_warned = False

    @property
    def dtype(self) -> torch.dtype:
        """The dtype the model evaluates in (its own, now: a model moved after the calculator was
        made is followed)."""
        return model_dtype(self.model)

    @property
    def device(self) -> torch.device:
        """The device the model evaluates on (its own, now)."""
        return model_device(self.model)

    @property
    def model_name(self) -> str:
        """The path or shipped name given (with ``" (changed in memory)"`` once the loaded model's
        weights, dtype or device changed after the calculator was made), or ``"<kind> (in
        memory)"`` for a model object."""
        return self._identified()[0]

    @property
    def model_sha256(self) -> str:
        """sha256 of the file given (of the weights and config once the loaded model changed), or of
        a model object's weights and config as they are now."""
        return self._identified()[1]

    def _stamp(self) -> tuple:
        """The model's :func:`_model_stamp` now."""
        return self._stamp_now if self._stamp_now is not None else _model_stamp(self.model, self._modules)

    def _identified(self) -> tuple[str, str]:
        stamp = self._stamp()
        if stamp != self._identity[0]:
            if stamp == self._given_stamp:
                name, sha = self._given_name, self._given_sha256
            else:
                name, sha = _identify(self.model)
                name = f"{self._given_name} (changed in memory)" if self._given_file else name
            self._identity = (stamp, name, sha)
        return self._identity[1], self._identity[2]

    def _checked_skin(self, skin) -> float:
        """``skin`` as a float, checked as the runner checks it (an :class:`InputError` if not a
        finite distance >= 0 in Å)."""
        return ModelRunner(self.model, [], skin=skin).skin

    def _change(self, name: str, value) -> bool:
        """Set ``skin``/``strict`` to a checked ``value``; when it differs, drop the runner (made
        again with it at the next calculation) and the results (not answered from the cache)."""
        if getattr(self, "_" + name) == value:
            return False
        setattr(self, "_" + name, value)
        self._runner = None
        self.reset()
        return True

    @property
    def strict(self) -> bool:
        """Out of the training domain: ``True`` raises, ``False`` warns; assigning takes effect at
        the next calculation."""
        return self._strict

    @strict.setter
    def strict(self, value) -> None:
        self._change("strict", bool(value))

    @property
    def skin(self) -> float:
        """Verlet skin (Å); assigning checks it (an :class:`InputError` if not a finite distance >= 0)
        and takes effect at the next calculation."""
        return self._skin

    @skin.setter
    def skin(self, value) -> None:
        self._change("skin", self._checked_skin(value))

    def set(self, **kwargs) -> dict:
        """ASE's ``calc.set(...)``: ``skin`` and ``strict``, checked as the constructor checks them
        (all of them before any is applied), take effect at the next calculation (cached results
        and neighbour list dropped); returns those that changed, with their new values. ``dtype``,
        ``device``, the model and any other keyword are an :class:`InputError`, nothing changed."""
        fixed = sorted(set(kwargs) & {"model_or_path", "model", "dtype", "precision", "device"})
        if fixed:
            raise InputError(f"{fixed} cannot change on a LawfulCalculator (another dtype or device is another "
                             f"copy of the model): make a new one, LawfulCalculator(model, dtype=..., device=...); "
                             f"set() changes only {list(SETTABLE_KEYWORDS)}.")
        unknown = set(kwargs) - set(SETTABLE_KEYWORDS)
        if unknown:
            _refuse_unknown(unknown, SETTABLE_KEYWORDS, "LawfulCalculator.set(...)",
                            "check the spelling, or make a new calculator for other settings.")
        new = {}
        if "strict" in kwargs:
            new["strict"] = bool(kwargs["strict"])
        if "skin" in kwargs:
            new["skin"] = self._checked_skin(kwargs["skin"])
        return {k: v for k, v in new.items() if self._change(k, v)}

    # A pickled or deep-copied calculator holds new tensors (other ids, storages, version counters):
    # each stamp that described the model as it was when pickled is made to describe the copy, so a
    # copy neither drops its results nor renames its model; a stamp already stale stays stale.
    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_stamp_when_pickled"] = _model_stamp(self.model, self._modules)
        state["_stamp_now"] = None
        return state

    def __setstate__(self, state: dict) -> None:
        was = state.pop("_stamp_when_pickled", None)
        self.__dict__.update(state)
        now = _model_stamp(self.model, self._modules)
        self._given_stamp = now if self._given_stamp == was else self._given_stamp
        self._identity = (now if self._identity[0] == was else self._identity[0], *self._identity[1:])
        self._results_stamp = now if self._results_stamp == was else self._results_stamp

    def __repr__(self) -> str:
        return (f"LawfulCalculator({type(self.model).__name__}, species={list(self.model.species)}, "
                f"cutoff={float(self.model.cutoff)} Å, dtype={self.dtype}, device={self.device})")

    def todict(self, skip_default=True) -> dict:
        """What made the results, for ASE databases and trajectories (JSON-able): ``model`` (the
        path or shipped name given, or ``"<kind> (in memory)"``), ``model_sha256`` (of the file, or
        of the weights of a model object), ``dtype``, ``device``, ``skin`` (Å), ``strict``. A
        model changed in place after the calculator was made (trained further, moved to another
        dtype) is described as it is now: the sha256 of its weights and config, and a model loaded
        from a file is named ``"<path or name> (changed in memory)"``."""
        return {"model": self.model_name, "model_sha256": self.model_sha256, "dtype": dtype_name(self.dtype),
                "device": str(self.device), "skin": self.skin, "strict": self.strict}

    def _runner_for(self, atoms) -> ModelRunner:
        numbers = atoms.numbers
        r = self._runner
        if r is None or r.n_atoms != len(numbers) or not np.array_equal(r.numbers_np, numbers):
            if r is None:
                r = ModelRunner(self.model, numbers, skin=self.skin, strict=self.strict)
            else:
                r.set_numbers(numbers)
            self._runner = r
        return r

    def check_state(self, atoms, tol: float = 1e-15):
        """ASE's changes since the last calculation, plus a changed stated total charge: ASE compares
        ``initial_charges`` but not ``info["charge"]``, so a charge stated after a first evaluation
        was answered from the cache, unchecked; plus ``"model"`` when the model was moved or
        changed in place since (trained further, ``calc.model.to(torch.float32)``): its cached
        results were returned for the new weights."""
        changes = super().check_state(atoms, tol)
        if self.atoms is not None and structure_charge(atoms) != structure_charge(self.atoms) \
                and "initial_charges" not in changes:
            changes.append("initial_charges")
        if self._model_changed():
            changes.append("model")
        return changes

    def _model_changed(self) -> bool:
        """Whether the model changed (:func:`_model_stamp`) since ``self.results`` were computed."""
        return bool(self.results) and self._results_stamp != self._stamp()

    def get_property(self, name, atoms=None, allow_calculation=True):
        """ASE's ``get_property``; results computed by a model changed since are dropped first, also
        when asked without atoms (``calc.get_potential_energy()``, which ASE answers from the cache
        without :meth:`check_state`)."""
        self._stamp_now = _model_stamp(self.model, self._modules)
        try:
            if self._model_changed():
                self.results = {}
            return super().get_property(name, atoms, allow_calculation)
        finally:
            self._stamp_now = None

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        """Fill ``self.results`` for every property in one model evaluation (ASE protocol)."""
        Calculator.calculate(self, atoms, properties, system_changes)
        atoms = self.atoms
        pbc = _as_pbc(atoms.pbc)
        if "stress" in properties and not all(pbc):
            raise PropertyNotImplementedError(
                f"stress needs atoms periodic in all three directions (pbc={pbc}); set atoms.pbc=True "
                "with a 3D cell, or do not ask for stress."
            )
        fitted = bool(getattr(self.model, "stress_fitted", True))
        # same backward pass: a later get_stress() costs nothing (an unfitted stress only on request)
        want_stress = all(pbc) and (fitted or "stress" in properties)
        if "stress" in properties and not fitted and not self._stress_warned:
            self._stress_warned = True
            warnings.warn(
                f"this {type(self.model).__name__} was trained without stress (stress weight 0), and its stress "
                "is not determined by forces: the pressure can be off by GPa (cu-emt-direct: about 10 GPa from "
                "EMT's). Do not use it for NPT or cell relaxation; use a NeuralPotential (stress = the strain "
                "derivative of its energy) or train the control with stress_weight > 0.", UserWarning,
                stacklevel=2)
        cell = np.asarray(atoms.cell.array, dtype=np.float64) if any(pbc) else None
        runner = self._runner_for(atoms)
        runner.check_charge(structure_charge(atoms))     # the model has no charge input
        self._results_stamp = self._stamp()
        out = runner.evaluate(atoms.positions, cell=cell, pbc=pbc, stress=want_stress)
        energy = float(out["energy"].detach())
        self.results["energy"] = energy
        self.results["free_energy"] = energy
        self.results["forces"] = out["forces"].detach().to("cpu", torch.float64).numpy().copy()
        if "energies" in out and out["energies"] is not None:
            self.results["energies"] = out["energies"].detach().to("cpu", torch.float64).numpy().copy()
        if want_stress:
            s = out["stress"].detach().to("cpu", torch.float64).numpy().reshape(3, 3)
            self.results["stress"] = full_3x3_to_voigt_6_stress(s)

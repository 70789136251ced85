"""Saving and loading lawful models on the safe model-file format of
:mod:`lawful.kernels.modelfile` (safetensors weights + JSON header: loading never runs code).

Two families share the one writer, :func:`save_model` (and each model's ``save``):

* force fields (``NeuralPotential``, ``DirectForceModel``), read by :func:`load_model`: the file
  holds the kind, the constructor config (species, cutoff, descriptor and network sizes), every
  weight and normalisation buffer, the units, the dtype the model was saved in, the lawful version
  (written by the format), the training summary and the training domain;
* dynamics models (``HamiltonianNN``, ``LagrangianNN``, ``DerivativeMLP``), read by
  :func:`load_dynamics_model`: the kind, every constructor argument (dim, sizes, activation,
  ``separable``/``mass``, ``kinetic_prior``/``max_condition``), the weights, the dtype and an
  optional training summary. A loaded model gives bitwise the outputs of the saved one.

Each loader refuses the other family's files with a message naming the right loader, so an engine
adapter handed a dynamics model's file never gets an object it cannot evaluate.
"""

from __future__ import annotations

import os

import torch

from lawful.kernels.errors import InputError, ModelFileError
from lawful.kernels.precision import dtype_name

from lawful.forcefields.base import UNITS, AtomisticModel

__all__ = ["save_model", "load_model", "load_dynamics_model", "MODEL_KINDS", "DYNAMICS_KINDS"]


def _kinds() -> dict:
    from lawful.forcefields.direct import DirectForceModel
    from lawful.forcefields.potential import NeuralPotential

    return {"NeuralPotential": NeuralPotential, "DirectForceModel": DirectForceModel}


def _dynamics_kinds() -> dict:
    from lawful.forcefields.derivative_mlp import DerivativeMLP
    from lawful.forcefields.hamiltonian import HamiltonianNN
    from lawful.forcefields.lagrangian import LagrangianNN

    return {"HamiltonianNN": HamiltonianNN, "LagrangianNN": LagrangianNN,
            "DerivativeMLP": DerivativeMLP}


#: The force-field classes a file may name (read by :func:`load_model`).
MODEL_KINDS = ("NeuralPotential", "DirectForceModel")
#: The dynamics-model classes a file may name (read by :func:`load_dynamics_model`).
DYNAMICS_KINDS = ("HamiltonianNN", "LagrangianNN", "DerivativeMLP")


def save_model(model, path: str | os.PathLike, training_summary: dict | None = None):
    """Write ``model`` (a force field or a dynamics model, see the module docstring) to ``path``
    atomically. ``training_summary`` (JSON-able) defaults to the model's own ``training_summary``
    (set by :func:`lawful.forcefields.train`). Returns the path."""
    from lawful.forcefields.derivative_mlp import DynamicsModel
    from lawful.kernels.modelfile import save_model_file

    summary = training_summary if training_summary is not None else getattr(model, "training_summary", {})
    if isinstance(model, DynamicsModel) and type(model).__name__ in DYNAMICS_KINDS:
        config = model.config           # InputError for a wrapped function: no code in a file
        tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        save_model_file(path, kind=type(model).__name__, config=config, tensors=tensors,
                        metadata={"dtype": dtype_name(model.dtype), "training_summary": summary or {}})
        return path
    if not isinstance(model, AtomisticModel) or model.kind not in MODEL_KINDS:
        raise InputError(f"save_model takes a force field ({', '.join(MODEL_KINDS)}) or a dynamics model "
                         f"({', '.join(DYNAMICS_KINDS)}), got {type(model).__name__!r}; fluid correctors "
                         "have their own corrector.save(path).")

    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    metadata = {"units": dict(UNITS), "dtype": dtype_name(model.dtype),
                "species": list(model.species), "cutoff": model.cutoff,
                "training_summary": summary or {}}
    pair_min = dict(getattr(model, "pair_min_distance", {}) or {})
    if pair_min:
        metadata["pair_min_distance"] = {str(k): float(v) for k, v in pair_min.items()}
    counts = dict(getattr(model, "neighbour_counts", {}) or {})
    if counts:
        metadata["neighbour_counts"] = {str(k): [int(v[0]), int(v[1])] for k, v in counts.items()}
    density = dict(getattr(model, "neighbour_density", {}) or {})
    if density:
        metadata["neighbour_density"] = {str(k): [float(v[0]), float(v[1])] for k, v in density.items()}
    compositions = dict(getattr(model, "training_compositions", {}) or {})
    if compositions:
        metadata["training_compositions"] = {"basis": [[float(x) for x in row] for row in compositions["basis"]],
                                             "formulas": [str(f) for f in compositions.get("formulas", [])]}
    charges = list(getattr(model, "training_charges", []) or [])
    if charges:
        metadata["training_charges"] = [int(c) for c in charges]
    save_model_file(path, kind=model.kind, config=model.config, tensors=tensors, metadata=metadata)
    return path


@torch.inference_mode(False)      # weights autograd can use later, also when loaded in inference mode
def _rebuild(path, mf, cls, dtype, device):
    """``cls(**config)`` in ``dtype`` (default: the saved one) on ``device`` with the file's
    weights, strictly (every tensor, no other); ModelFileError when config or weights do not fit."""
    saved_dtype = mf.metadata.get("dtype", "float64")
    try:
        model = cls(**mf.config, dtype=dtype or saved_dtype, device=device)
    except (TypeError, InputError) as exc:
        raise ModelFileError(f"{os.fspath(path)!r}: its config {mf.config} does not fit {mf.kind} "
                             f"({exc}); it was written by another lawful version ({mf.lawful_version}).") from exc
    state = {k: torch.as_tensor(v) for k, v in mf.tensors.items()}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ModelFileError(f"{os.fspath(path)!r}: its weights do not match the {mf.kind} architecture "
                             f"in its config ({exc}); the file is corrupt or from another version.") from exc
    model.training_summary = dict(mf.metadata.get("training_summary", {}))
    model.eval()
    return model


def _pair_min_distance(path, value, species) -> dict:
    """The file's training-domain record ``{"A-B": Å}`` checked: species pairs of the model and
    positive finite distances. Files written before it existed have none (``{}``: no check)."""
    import math

    from lawful.forcefields.batch import pair_key

    if not isinstance(value, dict):
        raise ModelFileError(f"{os.fspath(path)!r}: pair_min_distance {value!r} is not a mapping of species "
                             "pairs to distances; the file is corrupt: re-save the model.")
    known = {pair_key(a, b) for a in species for b in species}
    out = {}
    for key, d in value.items():
        ok = isinstance(d, (int, float)) and not isinstance(d, bool) and math.isfinite(d) and d > 0
        if key not in known or not ok:
            raise ModelFileError(f"{os.fspath(path)!r}: pair_min_distance entry {key!r}: {d!r} is not a pair of "
                                 f"the model's species {list(species)} with a positive distance in Å; the file "
                                 "is corrupt: re-save the model.")
        out[key] = float(d)
    return out


def load_model(path: str | os.PathLike, dtype=None, device=None) -> AtomisticModel:
    """Load a model written by :func:`save_model` / ``model.save``, or a shipped model by name.

    ``path``: a ``.lawful`` file, or the name of a model shipped with lawful (``"cu-emt"``, see
    :func:`lawful.forcefields.shipped_models`; a bare shipped name that is also a file in the working
    directory is refused as ambiguous, see :func:`~lawful.forcefields.shipped.resolve_model_path`).
    Returns a :class:`~lawful.forcefields.NeuralPotential` or
    :class:`~lawful.forcefields.DirectForceModel` in evaluation mode, in ``dtype`` (default: the
    dtype it was saved in) on ``device`` (default "cpu"). Bad, truncated, foreign or future files
    raise :class:`~lawful.kernels.ModelFileError`; no code from the file is ever executed.
    """
    from lawful.forcefields.shipped import resolve_model_path
    from lawful.kernels.modelfile import load_model_file

    path = resolve_model_path(path)
    mf = load_model_file(path)
    kinds = _kinds()
    if mf.kind in DYNAMICS_KINDS:
        raise ModelFileError(f"{os.fspath(path)!r} holds a {mf.kind}, a dynamics model, not a force field "
                             f"({list(kinds)}): load it with lawful.forcefields.load_dynamics_model(path).")
    if mf.kind not in kinds:
        raise ModelFileError(f"{os.fspath(path)!r} holds a {mf.kind!r}, not a force field ({list(kinds)}); "
                             "load it with the tool that wrote it.")
    model = _rebuild(path, mf, kinds[mf.kind], dtype, device)
    model.pair_min_distance = _pair_min_distance(path, mf.metadata.get("pair_min_distance", {}), model.species)
    model.training_compositions = _training_compositions(path, mf.metadata.get("training_compositions", {}),
                                                         model.species)
    model.neighbour_counts = _species_ranges(path, "neighbour_counts", mf.metadata.get("neighbour_counts", {}),
                                             model.species, counts=True)
    model.neighbour_density = _species_ranges(path, "neighbour_density", mf.metadata.get("neighbour_density", {}),
                                              model.species, counts=False)
    charges = mf.metadata.get("training_charges", [])
    if not (isinstance(charges, list) and all(isinstance(c, int) and not isinstance(c, bool) for c in charges)):
        raise ModelFileError(f"{os.fspath(path)!r}: training_charges {charges!r} is not a list of total charges "
                             "(integers, e); the file is corrupt: re-save the model.")
    model.training_charges = sorted(charges)
    return model


def _species_ranges(path, key: str, value, species, counts: bool) -> dict:
    """The file's ``{symbol: [low, high]}`` record ``key`` checked (``{}``: none): neighbour
    counts (``counts``: integers) or neighbour densities (finite numbers), low <= high, per species
    of the model."""
    import math

    def number(x) -> bool:
        if isinstance(x, bool):
            return False
        return isinstance(x, int) if counts else isinstance(x, (int, float)) and math.isfinite(x)

    ok = isinstance(value, dict) and all(
        k in species and isinstance(v, list) and len(v) == 2 and all(number(x) for x in v) and 0 <= v[0] <= v[1]
        for k, v in value.items())
    if not ok:
        what = "[fewest, most] neighbour counts" if counts else "[lowest, highest] densities"
        raise ModelFileError(f"{os.fspath(path)!r}: {key} {value!r} is not a mapping of the model's species "
                             f"{list(species)} to {what}; the file is corrupt: re-save the model.")
    cast = int if counts else float
    return {k: [cast(v[0]), cast(v[1])] for k, v in value.items()}


def _training_compositions(path, value, species) -> dict:
    """The file's composition record checked: orthonormal rows of one count per species.
    Files written before it existed have none (``{}``: no composition check)."""
    import math

    if value in ({}, None):
        return {}
    ok = isinstance(value, dict) and isinstance(value.get("basis"), list) and value["basis"] and all(
        isinstance(row, list) and len(row) == len(species)
        and all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in row)
        for row in value["basis"])
    if ok:
        import numpy as np

        b = np.asarray(value["basis"], dtype=np.float64)
        from lawful.forcefields.domain import COMPOSITION_BASIS_ATOL

        ok = b.shape[0] <= len(species) and bool(np.abs(b @ b.T - np.eye(b.shape[0])).max() <= COMPOSITION_BASIS_ATOL)
    if not ok:
        raise ModelFileError(f"{os.fspath(path)!r}: training_compositions {value!r} is not a set of orthonormal "
                             f"composition rows over the model's species {list(species)}; the file is corrupt: "
                             "re-save the model.")
    return {"basis": [list(map(float, row)) for row in value["basis"]],
            "formulas": [str(f) for f in value.get("formulas", [])]}


def load_dynamics_model(path: str | os.PathLike, dtype=None, device=None):
    """Load a dynamics model written by ``model.save(path)`` / :func:`save_model`.

    Returns the :class:`~lawful.forcefields.HamiltonianNN`, :class:`~lawful.forcefields.LagrangianNN`
    or :class:`~lawful.forcefields.DerivativeMLP` rebuilt with every constructor argument it was
    saved with (mass, kinetic_prior, activation, ...) and its weights, in evaluation mode, in
    ``dtype`` (default: the saved one) on ``device`` (default "cpu"); ``training_summary`` holds
    what was saved with it. A force field's file, or a bad/foreign/future file, raises
    :class:`~lawful.kernels.ModelFileError`; no code from the file is ever executed.
    """
    from lawful.kernels.modelfile import load_model_file

    mf = load_model_file(path)
    kinds = _dynamics_kinds()
    if mf.kind not in kinds:
        hint = ("load it with lawful.forcefields.load_model(path)" if mf.kind in MODEL_KINDS
                else "load it with the tool that wrote it")
        raise ModelFileError(f"{os.fspath(path)!r} holds a {mf.kind!r}, not a dynamics model ({list(kinds)}); "
                             f"{hint}.")
    return _rebuild(path, mf, kinds[mf.kind], dtype, device)

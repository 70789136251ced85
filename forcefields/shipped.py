"""Trained force fields shipped inside the package, loaded by name.

>>> from lawful.forcefields import load_model, shipped_models
>>> shipped_models()                      # {"cu-emt": {...card...}, "cu-emt-direct": ..., "organic-xtb": ..., ...}
>>> model = load_model("cu-emt")          # the same as load_model(shipped_model_path("cu-emt"))

The files live in ``lawful/forcefields/pretrained/`` (package data) beside ``index.json``, one card
per name: the file, model kind, species, reference method, data and the script that made it.

How a string resolves (:func:`resolve_model_path`): a path to an existing file is that file; a
shipped name is the shipped model — but a bare shipped name (``"organic-xtb"``) that is *also* a
file in the working directory is refused as ambiguous (the local file used to win silently, so a
``model.save("organic-xtb")`` replaced the shipped model under its own name): pass
``"./organic-xtb"`` for the file or :func:`shipped_model_path` for the shipped one. A directory
of a shipped name cannot be a model, so the name means the shipped model.
"""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path

from lawful.kernels.errors import ModelFileError

__all__ = ["shipped_models", "shipped_model_path", "resolve_model_path"]

_DIR = Path(__file__).resolve().parent / "pretrained"


@lru_cache(maxsize=1)
def _index() -> dict:
    try:
        return json.loads((_DIR / "index.json").read_text())
    except FileNotFoundError:  # pragma: no cover - a broken installation
        return {}


def shipped_models() -> dict:
    """``{name: card}`` for every model shipped with lawful (a copy: editing it changes nothing)."""
    return json.loads(json.dumps(_index()))


def shipped_model_path(name: str) -> Path:
    """The file of the shipped model ``name``; :class:`ModelFileError` listing the names if unknown."""
    cards = _index()
    if name not in cards:
        raise ModelFileError(f"{name!r} is not a shipped model ({', '.join(sorted(cards))}); pass one of "
                             "those names or the path of a .lawful file written by model.save(...).")
    return _DIR / cards[name]["file"]


def resolve_model_path(name_or_path: str | os.PathLike) -> Path:
    """A model file's path from a path on disk or the name of a shipped model.

    A shipped name given as a bare string (exactly as :func:`shipped_models` lists it) is the
    shipped model, unless a *file* of that name exists in the working directory: that is
    ambiguous and raises :class:`ModelFileError` naming both ways to say which (``"./name"`` for
    the file, :func:`shipped_model_path` for the shipped model); a directory of that name is not a
    model, so the shipped model is meant. Anything else must be an existing file (a
    ``pathlib.Path`` or a string that differs from the shipped names, ``"./organic-xtb"``
    included, is always read as a path). A directory, or a string that is neither a file nor a
    shipped name, raises :class:`ModelFileError` naming the value, the working directory and the
    shipped names.
    """
    path = Path(name_or_path)
    if isinstance(name_or_path, str) and name_or_path in _index():
        if path.is_file():
            raise ModelFileError(
                f"{name_or_path!r} is both a shipped model and a file in the working directory "
                f"({os.getcwd()!r}): pass {'./' + name_or_path!r} (or the file's full path) to load the file, "
                f"or lawful.forcefields.shipped.shipped_model_path({name_or_path!r}) for the shipped model; "
                "or rename the file (e.g. with a .lawful suffix).")
        return shipped_model_path(name_or_path)
    if path.is_file():
        return path
    if path.is_dir():
        raise ModelFileError(f"{str(path)!r} is a directory, not a model file: pass the .lawful file inside "
                             "it (e.g. models/conservative.lawful) or a shipped model name "
                             f"({', '.join(sorted(_index()))}).")
    raise ModelFileError(
        f"model {str(name_or_path)!r} is neither a file (working directory {os.getcwd()!r}) nor a shipped "
        f"model ({', '.join(sorted(_index()))}): pass the path of a file written by model.save(...) or one "
        "of those names."
    )

"""Training checkpoints: written atomically, read back with ``torch.load(weights_only=True)``.

A checkpoint is a dict of tensors and plain Python values (numbers, strings, bools, None, lists,
tuples, dicts) — model and optimizer ``state_dict()``s, the epoch, the RNG state as a tensor.
:func:`save_checkpoint` refuses anything else up front (it could not be loaded safely later) and
writes through a temporary file, fsync and ``os.replace``, so an interrupted run leaves either
the previous checkpoint or the new one at the path, never a half-written file.
:func:`load_checkpoint` never unpickles arbitrary objects.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from collections import OrderedDict
from pathlib import Path

import torch

from lawful.kernels.errors import InputError, ModelFileError
from lawful.kernels.modelfile import atomic_write

__all__ = ["save_checkpoint", "load_checkpoint"]

_PLAIN = (int, float, bool, str, bytes, type(None), torch.dtype, torch.device, torch.Size)


def _check_plain(value, where: str) -> None:
    if isinstance(value, torch.Tensor) or isinstance(value, _PLAIN):
        return
    if isinstance(value, (dict, OrderedDict)):
        for key, item in value.items():
            if not isinstance(key, (str, int, float, bool, type(None))):
                raise InputError(f"checkpoint key {where}[{key!r}] is a {type(key).__name__}; "
                                 "use str or int keys.")
            _check_plain(item, f"{where}[{key!r}]")
        return
    if isinstance(value, (list, tuple)):
        for k, item in enumerate(value):
            _check_plain(item, f"{where}[{k}]")
        return
    raise InputError(
        f"checkpoint value {where} is a {type(value).__module__}.{type(value).__name__}; a "
        "checkpoint holds only tensors and plain values (numbers, str, bool, None, lists, tuples, "
        "dicts) so that it loads with weights_only=True. Convert it (numpy array -> "
        "torch.from_numpy, numpy scalar -> .item(), an object -> its state_dict()).")


def save_checkpoint(path: str | os.PathLike, state: dict) -> Path:
    """Write ``state`` to ``path`` atomically (tmp file + fsync + os.replace); return the path.

    state: dict of tensors (any device; loaded back on CPU by default) and plain values.
    Raises InputError naming the first value that is not a tensor or plain value.
    """
    if not isinstance(state, dict):
        raise InputError(f"state must be a dict, got {type(state).__name__}.")
    _check_plain(state, "state")
    path = Path(path)
    with atomic_write(path) as fh:
        torch.save(state, fh)
    return path


def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict:
    """Read a checkpoint written by :func:`save_checkpoint` with ``torch.load(weights_only=True)``.

    map_location: where tensors go (default "cpu"; e.g. "cuda" or a torch.device).
    Missing, truncated or corrupt files, and files holding arbitrary Python objects, raise
    :class:`ModelFileError` naming the file and what to do.
    """
    p = Path(path)
    if not p.exists():
        raise ModelFileError(f"cannot load checkpoint {str(path)!r}: no such file. Check the "
                             "path, or start training without resuming.")
    if p.is_dir():
        raise ModelFileError(f"cannot load checkpoint {str(path)!r}: it is a directory.")
    try:
        with open(p, "rb") as fh:
            magic = fh.read(4)
    except OSError as exc:
        raise ModelFileError(f"cannot read checkpoint {str(path)!r}: {exc}.") from exc
    if magic != b"PK\x03\x04":  # save_checkpoint writes torch's zip format, nothing else
        raise ModelFileError(
            f"cannot load checkpoint {str(path)!r}: it is truncated or corrupt, or not a "
            "checkpoint written by save_checkpoint (no torch zip archive; lawful never reads "
            "legacy pickle files). Resume from an earlier checkpoint or restart training.")
    try:   # torch.load does not check the archive's CRCs: a flipped bit loaded as a wrong weight
        with zipfile.ZipFile(p) as zf:
            bad = zf.testzip()
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise ModelFileError(f"cannot load checkpoint {str(path)!r}: it is truncated or corrupt ({exc}). Resume "
                             "from an earlier checkpoint or restart training.") from exc
    if bad is not None:
        raise ModelFileError(f"cannot load checkpoint {str(path)!r}: its entry {bad!r} fails its CRC check "
                             "(the file is corrupted). Resume from an earlier checkpoint or restart training.")
    try:
        state = torch.load(p, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        lines = [ln.strip() for ln in str(exc).splitlines() if "global" in ln.lower()]
        detail = (lines[0] if lines else str(exc).splitlines()[0]).split(" Please use")[0][:200]
        raise ModelFileError(
            f"cannot load checkpoint {str(path)!r}: it holds Python objects other than tensors "
            f"and plain values ({detail}); lawful loads checkpoints with weights_only=True and "
            "never runs code from a file. Re-create it with save_checkpoint.") from exc
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError, KeyError) as exc:
        raise ModelFileError(
            f"cannot load checkpoint {str(path)!r}: it is truncated or corrupt "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}). The write "
            "was interrupted or the copy is incomplete: resume from an earlier checkpoint or "
            "restart training.") from exc
    if not isinstance(state, dict):
        raise ModelFileError(f"checkpoint {str(path)!r} holds a {type(state).__name__}, not a "
                             "dict: it was not written by save_checkpoint.")
    return state

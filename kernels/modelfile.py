"""The lawful model file: safetensors weights plus a JSON header. Loading never executes code.

A model file is a standard `safetensors <https://github.com/huggingface/safetensors>`_ file whose
header metadata carries one JSON document::

    {"format": "lawful-model", "format_version": 1, "kind": "NeuralPotential",
     "config": {...}, "metadata": {...}, "lawful_version": "0.1.0", "tensors_sha256": "..."}

``config`` holds what a loader needs to rebuild the object (species, cutoff, layer sizes...),
``metadata`` anything descriptive (units, training summary). Tensors are stored as raw little-
endian arrays; there is no pickle anywhere, so a file can be inspected and loaded safely from an
untrusted source. Files are written atomically (temporary file, fsync, ``os.replace``): a crash
never leaves a half-written file at the path.

Both force fields (``NeuralPotential.save``) and fluid correctors use this one format.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import struct
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Iterable, Iterator, Mapping

import torch

from lawful.kernels.errors import InputError, ModelFileError

# Signals whose Python handlers interrupt a write: Ctrl-C and the CLI's SIGTERM handler.
_HELD_SIGNALS = (signal.SIGINT, signal.SIGTERM)

__all__ = ["FORMAT_VERSION", "ModelFile", "save_model_file", "load_model_file", "read_header",
           "atomic_write", "signals_held", "lawful_version", "tensors_digest"]

#: Version of the model-file layout written by this lawful; files with a higher number are refused.
FORMAT_VERSION = 1

_FORMAT_NAME = "lawful-model"
_META_KEY = "lawful"
# the largest safetensors header we accept (the JSON index of the tensors): 100 MB
_MAX_HEADER = 100_000_000


def lawful_version() -> str:
    """The installed lawful version (importlib.metadata), or "unknown" when not installed."""
    from importlib import metadata

    try:
        return metadata.version("lawful")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "unknown"


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM for the block; deliver them, in order, once it has ended.

    An interrupt raised inside ``torch.save`` makes its zip writer fail on the way out ("unexpected
    pos ... vs ..."), so the user saw a traceback instead of the interrupt, and the checkpoint that
    was being written was lost. A write is milliseconds long, so it is finished first.
    Only the main thread runs Python signal handlers; elsewhere (and for a signal whose handler
    was not installed from Python) nothing is changed. Also for other short writes that a signal
    must not cut (an MD trajectory frame: numpy's ``tofile`` turned a SIGTERM into a TypeError).
    """
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = {}
    for sig in _HELD_SIGNALS:
        handler = signal.getsignal(sig)
        if handler is None or handler == signal.SIG_IGN:  # installed outside Python, or ignored
            continue
        previous[sig] = signal.signal(sig, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for sig in dict.fromkeys(caught):  # once each; the restored handler now runs
            signal.raise_signal(sig)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[IO[bytes]]:
    """Open ``path`` for binary writing so that it appears complete or not at all.

    Writes go to a temporary file in the same directory, which is flushed, fsync'ed and moved
    over ``path`` with ``os.replace`` when the block exits normally; on an exception the
    temporary file is removed and ``path`` keeps its previous content. The directory is fsync'ed
    too, so the rename itself survives a power cut (where the OS supports it). Ctrl-C or SIGTERM
    during the write is held until the file is in place, then delivered. A symbolic link is
    followed (its target is replaced, the link kept) and a replaced file keeps its permissions.
    """
    path = Path(path)
    if path.is_symlink():     # write the file the link points to; replacing the link left it stale
        path = Path(os.path.realpath(path))
    directory = path.parent if str(path.parent) else Path(".")
    if not directory.is_dir():
        what = "is a file, not a directory" if directory.exists() else "does not exist"
        raise ModelFileError(f"cannot write {str(path)!r}: the directory {str(directory)!r} {what}; "
                             "create it first or choose another path.")
    if path.is_dir():
        raise ModelFileError(f"cannot write {str(path)!r}: it is an existing directory (left as it is); "
                             f"pass a file name inside it, e.g. {str(path / 'model.lawful')!r}.")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    except OSError as exc:
        raise ModelFileError(f"cannot write {str(path)!r}: the directory {str(directory)!r} does not accept "
                             f"new files ({exc.strerror}); choose a writable directory.") from exc
    with signals_held():
        try:
            # mkstemp creates the file 0600; give it the mode of the file it replaces, else the mode a
            # plain open() would (0666 minus umask): a private 0600 file came back world-readable
            try:
                mode = os.stat(path).st_mode & 0o7777
            except OSError:
                umask = os.umask(0)
                os.umask(umask)
                mode = 0o666 & ~umask
            os.chmod(tmp, mode)
            with os.fdopen(fd, "wb") as fh:
                yield fh
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        with contextlib.suppress(OSError):  # not every platform/filesystem can fsync a directory
            dir_fd = os.open(directory, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)


@dataclass(frozen=True)
class ModelFile:
    """The content of a model file.

    kind:           what the file holds ("NeuralPotential", "DirectForceModel", a corrector...).
    config:         JSON dict needed to rebuild the object.
    tensors:        name -> CPU tensor (dtype as saved).
    metadata:       JSON dict of descriptive data (units, species, training summary...).
    lawful_version: the lawful version that wrote the file.
    format_version: the model-file layout version (<= FORMAT_VERSION).
    path:           where it was loaded from.
    """

    kind: str
    config: dict
    tensors: dict
    metadata: dict
    lawful_version: str
    format_version: int
    path: str = field(default="")

    def tensor(self, name: str) -> torch.Tensor:
        """The tensor ``name``; a clear ModelFileError when the file lacks it."""
        try:
            return self.tensors[name]
        except KeyError:
            raise ModelFileError(
                f"model file {self.path!r} ({self.kind}) has no tensor {name!r} (it holds "
                f"{sorted(self.tensors)[:20]}): it was saved by an incompatible model or edited; "
                "re-save the model with this lawful version.") from None


def _json_default(obj):
    # numpy / torch scalars are common in configs; anything else is a user error
    if hasattr(obj, "item") and getattr(obj, "ndim", None) == 0:
        return obj.item()
    raise TypeError(f"{type(obj).__name__} is not JSON-serialisable")


def _to_json(value, what: str) -> str:
    try:
        return json.dumps(value, default=_json_default, allow_nan=False, sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{what} must be a JSON-serialisable dict (str, numbers, bools, None, "
                         f"lists, dicts; no NaN): {exc}. Put tensors in `tensors`, convert other "
                         "objects to plain values.") from exc


def header_digest(header: Mapping) -> str:
    """sha256 (hex) of a model-file header's canonical JSON (sorted keys) without its own
    ``header_sha256`` entry: the ``header_sha256`` of the header (format 1 files written since it
    was added; older files carry none and are read as before)."""
    text = _to_json({k: v for k, v in header.items() if k != "header_sha256"}, "header")
    return hashlib.sha256(text.encode()).hexdigest()


def tensors_digest(tensors: Mapping[str, torch.Tensor]) -> str:
    """sha256 (hex) of named tensors: names, dtypes, shapes and bytes, in name order. The
    ``tensors_sha256`` of a model file's header; also identifies in-memory weights."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name]
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.contiguous().view(-1).view(torch.uint8).numpy().tobytes()
                 if t.numel() else b"")
    return h.hexdigest()


def save_model_file(path: str | os.PathLike, kind: str, config: dict,
                    tensors: Mapping[str, torch.Tensor], metadata: dict | None = None) -> Path:
    """Write a lawful model file atomically and return its path.

    path:     destination (conventionally ``*.lawful``); its directory must exist.
    kind:     what the file holds, checked by ``load_model_file(expected_kind=...)``.
    config:   JSON-able dict needed to rebuild the object (species, cutoff, sizes...).
    tensors:  name -> tensor (any device; saved as contiguous CPU copies, dtype kept).
    metadata: JSON-able dict of descriptive data (units, training summary...).
    Raises InputError for a non-JSON config/metadata or non-tensor values.
    """
    from safetensors.torch import save as st_save

    if not isinstance(kind, str) or not kind:
        raise InputError(f"kind must be a non-empty string such as 'NeuralPotential', got {kind!r}.")
    if not isinstance(config, dict):
        raise InputError(f"config must be a dict, got {type(config).__name__}.")
    if metadata is not None and not isinstance(metadata, dict):
        raise InputError(f"metadata must be a dict or None, got {type(metadata).__name__}.")
    plain = {}
    for name, t in dict(tensors).items():
        if not isinstance(name, str) or not isinstance(t, torch.Tensor):
            raise InputError(f"tensors must map names (str) to torch tensors; got {name!r}: "
                             f"{type(t).__name__}. Put plain values in config or metadata.")
        # a private contiguous CPU copy: safetensors refuses views that share storage
        plain[name] = t.detach().to("cpu").contiguous().clone()
    header = {
        "format": _FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "kind": kind,
        "config": config,
        "metadata": metadata or {},
        "lawful_version": lawful_version(),
        "tensors_sha256": tensors_digest(plain),
    }
    # the header's own checksum: the tensors' one left config unchecked (one flipped bit turned a
    # cutoff of 4.5 into 4.4 Å and the file loaded, energies 0.022 eV/atom off)
    header["header_sha256"] = header_digest(header)
    blob = st_save(plain, metadata={_META_KEY: _to_json(header, "config/metadata")})
    path = Path(path)
    with atomic_write(path) as fh:
        fh.write(blob)
    return path


def _fail(path, problem: str, fix: str):
    raise ModelFileError(f"cannot load model file {str(path)!r}: {problem}. {fix}")


def _read(path) -> bytes:
    p = Path(path)
    if not p.exists():
        _fail(path, "no such file", "Check the path, or save a model there first "
                                    "(model.save(path)).")
    if p.is_dir():
        _fail(path, "it is a directory", "Pass the path of a .lawful file.")
    try:
        return p.read_bytes()
    except OSError as exc:
        _fail(path, f"it cannot be read ({exc})", "Check the file permissions.")


def _parse(path, data: bytes) -> tuple[dict, dict, int]:
    """Check the safetensors framing and the lawful header; return (header, index, data start)."""
    # a safetensors file starts with its header's length (little-endian u64) and then "{": a length of
    # 0x0380 bytes begins 80 03 like a pickle, so the pickle test looks only where that framing fails
    framed = len(data) > 8 and data[8:9] == b"{" and struct.unpack("<Q", data[:8])[0] <= len(data) - 8
    if not framed and (data[:2] in (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05")
                       or data[:4] == b"PK\x03\x04"):
        _fail(path, "it is a pickle / torch.save (zip) file, not a lawful model file",
              "lawful never unpickles model files, "
              "because unpickling can run arbitrary code. Load it with the code that wrote it, "
              "in a trusted environment, and re-save it with lawful (model.save(path)).")
    if len(data) <= 8:
        _fail(path, f"it is only {len(data)} bytes long (truncated or empty)",
              "The write was interrupted or the copy is incomplete: re-save or re-copy it.")
    (n,) = struct.unpack("<Q", data[:8])
    if n > _MAX_HEADER or data[8:9] != b"{":
        _fail(path, "it is not a safetensors/lawful model file (unrecognised content)",
              "Pass a file written by model.save(path) / save_model_file.")
    if 8 + n > len(data):
        _fail(path, f"it is truncated: the header says {8 + n} bytes, the file has {len(data)}",
              "The write was interrupted or the copy is incomplete: re-save or re-copy it.")
    try:
        index = json.loads(data[8:8 + n])
    except (UnicodeDecodeError, json.JSONDecodeError):
        _fail(path, "its header is corrupt (not JSON)", "Re-save or re-copy the file.")
    if not isinstance(index, dict):
        _fail(path, "its header is corrupt (not a JSON object)", "Re-save or re-copy the file.")
    end = 0
    for name, info in index.items():
        if name == "__metadata__":
            continue
        try:
            end = max(end, int(info["data_offsets"][1]))
        except (KeyError, TypeError, ValueError, IndexError):
            _fail(path, f"its header entry for tensor {name!r} is corrupt", "Re-save the file.")
    have = len(data) - 8 - n
    if end > have:
        _fail(path, f"it is truncated: the tensors need {end} bytes of data, the file has {have}",
              "The write was interrupted or the copy is incomplete: re-save or re-copy it.")
    meta = index.get("__metadata__") or {}
    raw = meta.get(_META_KEY) if isinstance(meta, dict) else None
    if raw is None:
        _fail(path, "it is a safetensors file but not a lawful model file (no lawful header)",
              "Pass a file written by model.save(path) / save_model_file.")
    try:
        header = json.loads(raw)
    except (TypeError, json.JSONDecodeError):
        _fail(path, "its lawful header is corrupt (not JSON)", "Re-save the model.")
    if not isinstance(header, dict) or header.get("format") != _FORMAT_NAME:
        _fail(path, "its lawful header is not a model-file header", "Re-save the model.")
    version = header.get("format_version")
    if not isinstance(version, int) or version < 1:
        _fail(path, f"its format version {version!r} is invalid", "Re-save the model.")
    if version > FORMAT_VERSION:
        _fail(path, f"it was written by a newer lawful ({header.get('lawful_version')}, model-file "
              f"format v{version}); this lawful ({lawful_version()}) reads up to "
              f"v{FORMAT_VERSION}", "Upgrade lawful (pip install -U lawful) to load it.")
    for key, typ in (("kind", str), ("config", dict), ("metadata", dict)):
        if not isinstance(header.get(key), typ):
            _fail(path, f"its lawful header lacks a valid {key!r}", "Re-save the model.")
    if "header_sha256" in header and header_digest(header) != header["header_sha256"]:
        _fail(path, "its header (configuration, metadata) does not match the checksum stored with it (corrupted)",
              "Re-save or re-copy the file.")
    return header, index, 8 + n


def read_header(path: str | os.PathLike) -> dict:
    """The lawful JSON header of a model file (kind, config, metadata, versions), without the
    tensors; raises ModelFileError like :func:`load_model_file`."""
    header, _, _ = _parse(path, _read(path))
    return header


def load_model_file(path: str | os.PathLike, expected_kind: str | None = None,
                    required_tensors: Iterable[str] = ()) -> ModelFile:
    """Read a lawful model file; never executes code from it.

    expected_kind:    if given, a file holding another kind raises ModelFileError.
    required_tensors: names that must be present (ModelFileError naming the missing ones).
    Missing, truncated, corrupt, pickle/torch.save, non-lawful and future-version files raise
    :class:`ModelFileError` naming the file, the problem and the fix.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load as st_load

    data = _read(path)
    header, _, _ = _parse(path, data)
    kind = header["kind"]
    if expected_kind is not None and kind != expected_kind:
        _fail(path, f"it holds a {kind!r}, not a {expected_kind!r}",
              f"Load it with the loader for {kind!r} (lawful.forcefields.load_model picks the "
              "right one for force fields).")
    try:
        tensors = st_load(data)
    except (SafetensorError, ValueError, RuntimeError) as exc:
        _fail(path, f"its tensor data is corrupt ({exc})", "Re-save or re-copy the file.")
    expected_digest = header.get("tensors_sha256")
    if expected_digest is not None and tensors_digest(tensors) != expected_digest:
        _fail(path, "its tensor data does not match the checksum in its header (corrupted)",
              "Re-save or re-copy the file.")
    missing = sorted(set(required_tensors) - set(tensors))
    if missing:
        _fail(path, f"it has no tensor(s) {missing} (it holds {sorted(tensors)[:20]})",
              "It was saved by an incompatible model or edited: re-save the model with this "
              "lawful version.")
    return ModelFile(kind=kind, config=header["config"], tensors=tensors,
                     metadata=header["metadata"], lawful_version=str(header.get("lawful_version")),
                     format_version=header["format_version"], path=str(path))

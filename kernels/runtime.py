"""The Taichi runtime: one lazy initialisation for the whole process.

Nothing in lawful calls ``ti.init`` except :func:`ensure_taichi`. The arch is chosen once, on first
use, in this order:

1. the ``arch`` argument of the first call (``"cpu"`` or ``"cuda"``);
2. the environment variable ``LAWFUL_TI_ARCH`` (``cpu`` | ``cuda``);
3. automatic: CUDA when torch sees a GPU *and* Taichi's CUDA backend starts, else CPU.

``ti.gpu`` is never used: with Taichi 1.7.4 it segfaults on CPU-only machines. :func:`taichi_arch`
reports the arch actually in use ("cpu" or "cuda").
"""

from __future__ import annotations

import os
import threading

from lawful.kernels.errors import BackendError, InputError

__all__ = ["ensure_taichi", "taichi_arch", "taichi_real", "ENV_ARCH"]

ENV_ARCH = "LAWFUL_TI_ARCH"
_VALID = ("cpu", "cuda")
_lock = threading.Lock()
_arch: str | None = None


def _requested(arch: str | None) -> str | None:
    value = arch if arch is not None else os.environ.get(ENV_ARCH)
    if value is None or value == "" or value == "auto":
        return None
    value = value.lower()
    if value not in _VALID:
        source = "argument arch" if arch is not None else f"environment variable {ENV_ARCH}"
        raise InputError(f"{source}={value!r} is not a Taichi arch lawful supports: use 'cpu' or 'cuda'.")
    return value


def _cuda_visible() -> bool:
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a hard dependency
        return False
    return bool(torch.cuda.is_available())


def _init(ti, name: str) -> None:
    arch = ti.cuda if name == "cuda" else ti.cpu
    # offline_cache keeps compiled kernels between processes (faster test runs).
    ti.init(arch=arch, offline_cache=True, log_level=ti.WARN)


def ensure_taichi(arch: str | None = None) -> str:
    """Initialise Taichi once and return the arch in use ("cpu" or "cuda").

    Later calls return the arch already chosen; asking for a different arch after initialisation
    raises :class:`BackendError` (Taichi cannot switch arch without resetting every field).
    """
    global _arch
    wanted = _requested(arch)
    with _lock:
        if _arch is not None:
            if arch is not None and wanted is not None and wanted != _arch:
                raise BackendError(
                    f"Taichi already runs on {_arch!r}; cannot switch to {wanted!r} in the same "
                    f"process. Set {ENV_ARCH}={wanted} before the first use instead."
                )
            return _arch
        import taichi as ti

        if wanted == "cuda":
            if not _cuda_visible():
                raise BackendError(
                    f"Taichi arch 'cuda' requested but no CUDA GPU is visible to torch; "
                    f"unset {ENV_ARCH} or use 'cpu'."
                )
            _init(ti, "cuda")
            if ti.lang.impl.current_cfg().arch != ti.cuda:
                raise BackendError("Taichi's CUDA backend did not start; use LAWFUL_TI_ARCH=cpu.")
            _arch = "cuda"
        elif wanted == "cpu":
            _init(ti, "cpu")
            _arch = "cpu"
        else:
            _arch = "cpu"
            if _cuda_visible():
                _init(ti, "cuda")
                # Taichi falls back to CPU by itself when CUDA fails to start; report the truth.
                if ti.lang.impl.current_cfg().arch == ti.cuda:
                    _arch = "cuda"
            else:
                _init(ti, "cpu")
        return _arch


def taichi_arch() -> str | None:
    """The arch Taichi was initialised with ("cpu" / "cuda"), or ``None`` if not yet started."""
    return _arch


def taichi_real(name: str):
    """The Taichi scalar type of the dtype name ``name`` (``"float32"`` -> ``ti.f32``,
    ``"float64"`` -> ``ti.f64``; names from :func:`lawful.kernels.precision.dtype_name`, the key
    under which the kernel modules compile and cache their dtype-specialised kernels); anything
    else raises :class:`InputError`."""
    import taichi as ti

    if name == "float32":
        return ti.f32
    if name == "float64":
        return ti.f64
    raise InputError(f"Taichi kernels are compiled for float32 or float64, not {name!r}: convert the "
                     f"tensors with .float() or .double().")

"""dtype and device policy shared by every layer.

float64 is the default for molecular dynamics and every gradient or conservation check; float32 is
the default for fluids (grid-sized tensors, speed). Nothing here changes process-wide state
(no ``torch.set_default_dtype``): callers pass dtype and device explicitly.
"""

from __future__ import annotations

import torch

from lawful.kernels.errors import BackendError, InputError

__all__ = ["MD_DTYPE", "FLUID_DTYPE", "resolve_dtype", "resolve_device", "md_dtype", "fluid_dtype", "dtype_name"]

MD_DTYPE = torch.float64
FLUID_DTYPE = torch.float32

_DTYPE_NAMES = {
    "float64": torch.float64, "f64": torch.float64, "double": torch.float64, "64": torch.float64,
    "float32": torch.float32, "f32": torch.float32, "32": torch.float32,
}
#: names that mean different precisions to different libraries: torch's "float" is float32, Python's
#: and NumPy's float64 (dtype="float" gave MD single precision without a word)
_AMBIGUOUS = ("float",)


def resolve_dtype(dtype=None, default: torch.dtype = MD_DTYPE) -> torch.dtype:
    """Turn ``None`` / a name ("float64", "f32", ...) / a torch dtype into a floating torch dtype.

    Only float32 and float64 are accepted; anything else raises :class:`InputError`.
    """
    if dtype is None:
        return default
    if isinstance(dtype, torch.dtype):
        if dtype in (torch.float32, torch.float64):
            return dtype
    elif isinstance(dtype, str) and dtype.lower() in _DTYPE_NAMES:
        return _DTYPE_NAMES[dtype.lower()]
    elif isinstance(dtype, str) and dtype.lower() in _AMBIGUOUS:
        raise InputError(f"dtype {dtype!r} is ambiguous (torch's float is float32, Python's and NumPy's float64): "
                         "say 'float64' or 'float32'.")
    elif dtype is float:
        return torch.float64           # Python's float is a double
    raise InputError(f"unsupported dtype {dtype!r}: use 'float64' (default for MD) or 'float32'.")


def dtype_name(dtype: torch.dtype) -> str:
    """The short name of a torch dtype (``torch.float32`` -> ``"float32"``), as model files record
    it and as the Taichi kernel builders key their caches."""
    return str(dtype).replace("torch.", "")


def md_dtype(dtype=None) -> torch.dtype:
    """The dtype for molecular dynamics and force fields: float64 unless asked otherwise."""
    return resolve_dtype(dtype, MD_DTYPE)


def fluid_dtype(dtype=None) -> torch.dtype:
    """The dtype for fluid grids: float32 unless asked otherwise."""
    return resolve_dtype(dtype, FLUID_DTYPE)


def resolve_device(device=None) -> torch.device:
    """Turn ``None`` / "auto" / "cpu" / "cuda[:k]" / a torch.device into a usable torch.device.

    ``None`` and "auto" pick CUDA when torch sees a GPU, else CPU. Asking for CUDA on a machine
    without one raises :class:`BackendError`.
    """
    if device is None or (isinstance(device, str) and device == "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise InputError(f"unknown device {device!r}: use 'cpu', 'cuda', 'cuda:0' or 'auto'.") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise BackendError(f"device {device!r} asked for, but torch sees no CUDA GPU here: use 'cpu'.")
    if dev.type not in ("cpu", "cuda"):
        raise InputError(f"unsupported device {device!r}: lawful runs on 'cpu' or 'cuda'.")
    return dev

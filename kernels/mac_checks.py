"""The reductions that guard a corrected step (Taichi), one launch before the correction and one
after it (what a dozen torch reductions and two copies did, about 0.5 ms of a 128^2 step).

* :func:`snapshot_stats` -- copies the face velocities ``u`` ``(nx+1, ny)``, ``v`` ``(nx, ny+1)``
  into ``u0``, ``v0`` and returns ``(div_max, speed)``: the largest ``|u[i+1,j] - u[i,j] +
  v[i,j+1] - v[i,j]|`` over the fluid cells, each difference formed in float64 (the cell
  divergence times ``dx``, :func:`lawful.fluids.metrics.divergence_metrics`'s numerator), and the
  largest ``|u|``, ``|v|``;
* :func:`change_stats` -- returns ``(change, speed)``: the largest ``|u - u0|``, ``|v - v0|``
  (formed in the fields' dtype) and the largest ``|u|``, ``|v|`` now.

Both return NaN for every figure when a face holds NaN or inf. Taichi compiles with fast math,
under which a NaN may not survive a comparison or a maximum, so non-finite values are found from
their bits (all exponent bits set), which no floating-point optimisation touches. Float32 and
float64 fields; the arrays share one dtype and device.
"""

import functools
import math

import torch

from lawful.kernels.errors import ShapeError
from lawful.kernels.fast_launch import fast_kernels
from lawful.kernels.mac_grid import record_writes, serial_grid
from lawful.kernels.precision import dtype_name
from lawful.kernels.runtime import ensure_taichi, taichi_real

__all__ = ["snapshot_stats", "change_stats"]

# slots of the float64 result array: the divergence (snapshot) or the change (change), the
# largest speed, the non-finite faces counted
_FIRST, _SPEED, _BAD = 0, 1, 2


@functools.lru_cache(maxsize=None)
def _kernels(real_name: str):
    ti = __import__("taichi")
    real = taichi_real(real_name)
    A2 = ti.types.ndarray(dtype=real, ndim=2)
    A3 = ti.types.ndarray(dtype=real, ndim=3)
    F1 = ti.types.ndarray(dtype=ti.f64, ndim=1)
    f64 = ti.f64
    wide = real_name == "float64"
    bits_t = ti.i64 if wide else ti.i32
    shift, exponent = (52, 0x7FF) if wide else (23, 0xFF)      # the exponent field of the format

    @ti.func
    def nonfinite(x) -> ti.i32:
        r = 0
        if ((ti.bit_cast(x, bits_t) >> shift) & exponent) == exponent:
            r = 1
        return r

    @ti.func
    def faces(q: ti.template(), q0: ti.template(), out: ti.template(), copy: ti.template(), ser: ti.template()):
        """Over every face of ``q``: the largest |q| (and |q - q0| into slot _FIRST without
        ``copy``; with it, q0 = q); non-finite faces counted in slot _BAD. Each row reduces into
        locals and meets the others in one atomic per slot (an atomic per face, a compare-and-swap
        loop for a float64 maximum, cost 1 ms at 128^2)."""
        if ti.static(ser):
            ti.loop_config(serialize=True)
        for i in range(q.shape[0]):
            top = ti.cast(0.0, f64)
            moved = ti.cast(0.0, f64)
            bad = 0
            for j in range(q.shape[1]):
                x = q[i, j]
                if ti.static(copy):
                    q0[i, j] = x
                else:
                    moved = ti.max(moved, ti.cast(ti.abs(x - q0[i, j]), f64))
                top = ti.max(top, ti.cast(ti.abs(x), f64))
                bad += nonfinite(x)
            ti.atomic_max(out[_SPEED], top)
            if ti.static(not copy):
                ti.atomic_max(out[_FIRST], moved)
            if bad:
                ti.atomic_add(out[_BAD], ti.cast(bad, f64))

    @ti.kernel
    def snapshot(u: A2, v: A2, u0: A2, v0: A2, fluid: A3, out: F1, ser: ti.template()):
        for k in ti.static(range(3)):     # unrolled: a top-level loop would run on the thread pool
            out[k] = 0.0
        faces(u, u0, out, True, ser)
        faces(v, v0, out, True, ser)
        if ti.static(ser):
            ti.loop_config(serialize=True)
        for i in range(fluid.shape[1]):
            top = ti.cast(0.0, f64)
            for j in range(fluid.shape[2]):
                if fluid[0, i, j] > 0:
                    d = ((ti.cast(u[i + 1, j], f64) - ti.cast(u[i, j], f64))
                         + (ti.cast(v[i, j + 1], f64) - ti.cast(v[i, j], f64)))
                    top = ti.max(top, ti.abs(d))
            ti.atomic_max(out[_FIRST], top)

    @ti.kernel
    def change(u: A2, v: A2, u0: A2, v0: A2, out: F1, ser: ti.template()):
        for k in ti.static(range(3)):     # unrolled: a top-level loop would run on the thread pool
            out[k] = 0.0
        faces(u, u0, out, False, ser)
        faces(v, v0, out, False, ser)

    return fast_kernels(dict(snapshot=snapshot, change=change))


def _checked(u, v, u0, v0, fluid=None):
    nx, ny = v.shape[0], u.shape[1]
    shapes = [("u", u, (nx + 1, ny)), ("v", v, (nx, ny + 1)), ("u0", u0, (nx + 1, ny)), ("v0", v0, (nx, ny + 1))]
    if fluid is not None:
        shapes.append(("fluid", fluid, (1, nx, ny)))
    for name, t, shape in shapes:
        if tuple(t.shape) != shape or t.dtype != u.dtype or t.device != u.device or not t.is_contiguous():
            raise ShapeError(f"{name} is {tuple(t.shape)} {t.dtype} on {t.device}; the faces of this "
                             f"{nx}x{ny} grid need a contiguous {shape} {u.dtype} array on {u.device}.")
    ensure_taichi()
    return _kernels(dtype_name(u.dtype)), serial_grid(nx + 1, ny)


def _result(out: torch.Tensor) -> tuple[float, float]:
    first, speed, bad = out.tolist()
    if bad:
        return math.nan, math.nan
    return first, speed


def snapshot_stats(u, v, u0, v0, fluid, out: torch.Tensor | None = None) -> tuple[float, float]:
    """Copy ``u``, ``v`` into ``u0``, ``v0`` and return ``(div_max, speed)`` (module docstring).
    ``fluid``: ``(1, nx, ny)`` in the fields' dtype, > 0 on fluid cells (the solver's
    ``fluid_cells``); ``out``: a float64 ``(3,)`` scratch on the fields' device (made if None)."""
    k, ser = _checked(u, v, u0, v0, fluid)
    if out is None:
        out = torch.zeros(3, dtype=torch.float64, device=u.device)
    k["snapshot"](u, v, u0, v0, fluid, out, ser)
    record_writes(u0, v0, out)
    return _result(out)


def change_stats(u, v, u0, v0, out: torch.Tensor | None = None) -> tuple[float, float]:
    """``(change, speed)`` of ``u``, ``v`` against ``u0``, ``v0`` (module docstring)."""
    k, ser = _checked(u, v, u0, v0)
    if out is None:
        out = torch.zeros(3, dtype=torch.float64, device=u.device)
    k["change"](u, v, u0, v0, out, ser)
    record_writes(out)
    return _result(out)

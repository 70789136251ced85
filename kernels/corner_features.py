"""The corrector's velocity inputs at the cell corners, written straight into its network's input
buffer (Taichi): what :meth:`lawful.fluids.correctors.DivergenceFreeCorrector.features` computes with
a dozen torch operations, and the network then wraps with a periodic halo and copies to
channels-last, in one launch (the in-loop call of a corrector; training keeps the torch path,
which is differentiable).

:func:`corner_velocity_channels` fills channels 0-2 of ``out`` ``(Hh, Wh, C)`` (channels last) at
every position ``(a, b)``: the corner ``(i, j) = (a - hx, b - hy)``, wrapped modulo the corner count
on a periodic axis (``hx``/``hy`` the halo: 0 on other axes), gets

* ``uc = (u[i, j-1] + u[i, j]) / 2`` and ``vc = (v[i-1, j] + v[i, j]) / 2`` (indices wrapped on a
  periodic axis, clamped to the array on others: the corner average of the faces either side),
* ``circ = (v[i, j] - v[i-1, j]) - (u[i, j] - u[i, j-1])`` (the circulation around the corner,
  ``dx`` times the vorticity; 0 on the corners of a non-periodic side),

each times ``scale``; the other channels are left as they are (the caller's constant channels).
Float32 and float64 arrays of one dtype.
"""

import functools

import torch

from lawful.kernels.errors import ShapeError
from lawful.kernels.fast_launch import fast_kernels
from lawful.kernels.mac_grid import record_writes, serial_grid
from lawful.kernels.precision import dtype_name
from lawful.kernels.runtime import ensure_taichi, taichi_real

__all__ = ["corner_velocity_channels"]


@functools.lru_cache(maxsize=None)
def _kernel(real_name: str):
    ti = __import__("taichi")
    real = taichi_real(real_name)
    A2 = ti.types.ndarray(dtype=real, ndim=2)
    A3 = ti.types.ndarray(dtype=real, ndim=3)

    @ti.func
    def index(k, n, periodic: ti.template()):
        """``k`` wrapped into [0, n) on a periodic axis (one compare each way: |k| < 2n here),
        clamped to it on others."""
        r = k
        if ti.static(periodic):
            if r < 0:
                r += n
            elif r >= n:
                r -= n
        else:
            r = ti.min(ti.max(r, 0), n - 1)
        return r

    @ti.kernel
    def fill(u: A2, v: A2, out: A3, hx: int, hy: int, scale: real, px: ti.template(), py: ti.template(),
             ser: ti.template()):
        nx, ny = v.shape[0], u.shape[1]
        cx = nx if ti.static(px) else nx + 1          # canonical corner counts
        cy = ny if ti.static(py) else ny + 1
        half = ti.cast(0.5, real)
        if ti.static(ser):
            ti.loop_config(serialize=True)
        for a in range(out.shape[0]):
            i = index(a - hx, cx, px)
            im = index(i - 1, nx, px)
            ip = index(i, nx, px)
            for b in range(out.shape[1]):
                j = index(b - hy, cy, py)
                jm = index(j - 1, ny, py)
                jp = index(j, ny, py)
                u0, u1 = u[i, jm], u[i, jp]
                v0, v1 = v[im, j], v[ip, j]
                circ = (v1 - v0) - (u1 - u0)
                if ti.static(not px):
                    if i == 0 or i == nx:
                        circ = ti.cast(0.0, real)
                if ti.static(not py):
                    if j == 0 or j == ny:
                        circ = ti.cast(0.0, real)
                out[a, b, 0] = (half * (u0 + u1)) * scale
                out[a, b, 1] = (half * (v0 + v1)) * scale
                out[a, b, 2] = circ * scale

    return fast_kernels(dict(fill=fill))["fill"]


def corner_velocity_channels(u: torch.Tensor, v: torch.Tensor, out: torch.Tensor, halo, periodic,
                             scale: float = 1.0) -> None:
    """Fill channels 0-2 of ``out`` ``(Hh, Wh, C)`` (contiguous, ``C >= 3``) with the corner
    velocity inputs of ``u`` ``(nx+1, ny)``, ``v`` ``(nx, ny+1)`` (module docstring). ``halo``:
    ``(hx, hy)`` corners of periodic halo on each side (0 on a non-periodic axis, at most the axis's
    corner count on a periodic one); ``Hh`` must be
    the canonical corner count plus twice the halo (``nx + 2 hx`` on a periodic x, ``nx + 1``
    otherwise; ``Wh`` likewise)."""
    nx, ny = v.shape[0], u.shape[1]
    px, py = bool(periodic[0]), bool(periodic[1])
    hx, hy = int(halo[0]), int(halo[1])
    want = ((nx if px else nx + 1) + 2 * hx, (ny if py else ny + 1) + 2 * hy)
    # the kernel wraps a halo index once each way: a halo wider than its axis would read outside it
    if (tuple(u.shape) != (nx + 1, ny) or tuple(v.shape) != (nx, ny + 1) or out.dim() != 3 or tuple(out.shape[:2]) != want or out.shape[2] < 3
            or (hx and not px) or (hy and not py) or hx > nx or hy > ny or not out.is_contiguous()
            or not (u.dtype == v.dtype == out.dtype) or not (u.device == v.device == out.device)):
        raise ShapeError(f"corner_velocity_channels: u {tuple(u.shape)}, v {tuple(v.shape)} ({u.dtype}, {v.dtype}) "
                         f"with halo {(hx, hy)} on periodic axes {(px, py)} need a contiguous out of shape "
                         f"({want[0]}, {want[1]}, >= 3) in their dtype, got {tuple(out.shape)} {out.dtype} "
                         "(a halo only on periodic axes, at most as wide as its axis).")
    ensure_taichi()
    _kernel(dtype_name(u.dtype))(u.contiguous(), v.contiguous(), out, hx, hy, float(scale), px, py,
                                 serial_grid(want[0], want[1]))
    record_writes(out)

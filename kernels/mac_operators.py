"""Discrete MAC-grid operators (Taichi kernels, with torch references of the same stencils).

Exact stencils (``nx`` x ``ny`` cells of side ``dx``; layout in :mod:`lawful.kernels.mac_grid`;
indices wrap modulo ``nx``/``ny`` on periodic axes):

* divergence at cell ``(i, j)``: ``(u[i+1,j] - u[i,j] + v[i,j+1] - v[i,j]) / dx``
* curl of a corner stream function ``psi`` ``(nx+1, ny+1)`` (``psi[i, j]`` at ``(i, j) dx``):
  ``u[i,j] = (psi[i,j+1] - psi[i,j]) / dx``, ``v[i,j] = -(psi[i+1,j] - psi[i,j]) / dx``.
  Its divergence telescopes to exactly 0 in exact arithmetic (to rounding in floating point) for
  *any* psi; the flux through a face is the difference of psi at the face's two corners, so psi
  held at one constant on the corners of :func:`lawful.kernels.mac_grid.solid_corner_mask` gives
  no flow through walls, obstacles or inflow faces. On a periodic axis ``psi``'s last corner
  column/row is ignored (the wrapped first one is used). This is *the* curl kernel: the solver's
  corrector slot and the divergence-free neural corrector both use :func:`curl`.
  3D analogue: a vector potential ``A`` on cell edges, ``u = curl A`` on faces (same telescoping).
* vorticity at corner ``(i, j)``: ``(v[i,j] - v[i-1,j] - u[i,j] + u[i,j-1]) / dx`` (interior
  corners; wrapped on periodic axes).
"""


import functools

import torch

from lawful.kernels.errors import ShapeError
from lawful.kernels.fast_launch import fast_kernels
from lawful.kernels.mac_grid import record_writes, serial_grid
from lawful.kernels.precision import dtype_name
from lawful.kernels.runtime import ensure_taichi, taichi_real

__all__ = ["divergence", "divergence_torch", "curl", "curl_torch", "vorticity_torch"]


@functools.lru_cache(maxsize=None)
def _kernels(real_name: str):
    ti = __import__("taichi")
    real = taichi_real(real_name)
    A2 = ti.types.ndarray(dtype=real, ndim=2)

    @ti.kernel
    def div(u: A2, v: A2, out: A2, inv_dx: real, ser: ti.template()):
        if ti.static(ser):
            ti.loop_config(serialize=True)
        for i in range(out.shape[0]):
            for j in range(out.shape[1]):
                out[i, j] = ((u[i + 1, j] - u[i, j]) + (v[i, j + 1] - v[i, j])) * inv_dx

    return fast_kernels(dict(div=div))


def divergence(u: torch.Tensor, v: torch.Tensor, dx: float, out: torch.Tensor | None = None) -> torch.Tensor:
    """Cell divergence ``(nx, ny)`` of face velocities ``u`` ``(nx+1, ny)``, ``v`` ``(nx, ny+1)``
    (Taichi; units 1/time; same dtype as ``u``)."""
    nx, ny = v.shape[0], u.shape[1]
    if tuple(u.shape) != (nx + 1, ny) or tuple(v.shape) != (nx, ny + 1):
        raise ShapeError(f"u {tuple(u.shape)} / v {tuple(v.shape)} are not MAC faces of one grid: "
                         "need u (nx+1, ny) and v (nx, ny+1).")
    ensure_taichi()
    if out is None:
        out = torch.empty((nx, ny), dtype=u.dtype, device=u.device)
    _kernels(dtype_name(u.dtype))["div"](u, v, out, 1.0 / float(dx), serial_grid(nx, ny))
    record_writes(out)
    return out


def divergence_torch(u: torch.Tensor, v: torch.Tensor, dx: float) -> torch.Tensor:
    """Torch version of :func:`divergence` (same stencil, differentiable)."""
    return ((u[1:] - u[:-1]) + (v[:, 1:] - v[:, :-1])) / dx


@functools.lru_cache(maxsize=None)
def _curl_kernel(field_name: str, psi_name: str):
    """The curl kernel for fields of one real type and psi of another (the arithmetic is psi's)."""
    ti = __import__("taichi")
    real, preal = taichi_real(field_name), taichi_real(psi_name)
    F2 = ti.types.ndarray(dtype=real, ndim=2)
    P2 = ti.types.ndarray(dtype=preal, ndim=2)

    @ti.kernel
    def curl_k(psi: P2, du: F2, dv: F2, inv_dx: preal, px: int, py: int, alpha: preal, acc: int,
               off_u: preal, off_v: preal, ser: ti.template()):
        nx, ny = dv.shape[0], du.shape[1]
        # periodic indices by compares (``x if c else y`` evaluates both sides: a division per face)
        if ti.static(ser):
            ti.loop_config(serialize=True)
        for i in range(du.shape[0]):
            ie = i
            if px and i == nx:
                ie = 0
            for j in range(du.shape[1]):
                jn = j + 1
                if py and jn == ny:
                    jn = 0
                val = alpha * (psi[ie, jn] - psi[ie, j]) * inv_dx
                if acc:
                    val = ti.cast(du[i, j], preal) + val
                du[i, j] = ti.cast(val + off_u, real)
        if ti.static(ser):
            ti.loop_config(serialize=True)
        for i in range(dv.shape[0]):
            inn = i + 1
            if px and inn == nx:
                inn = 0
            for j in range(dv.shape[1]):
                je = j
                if py and j == ny:
                    je = 0
                val = -alpha * (psi[inn, je] - psi[i, je]) * inv_dx
                if acc:
                    val = ti.cast(dv[i, j], preal) + val
                dv[i, j] = ti.cast(val + off_v, real)

    return fast_kernels(dict(curl=curl_k))["curl"]


def curl(psi: torch.Tensor, du: torch.Tensor, dv: torch.Tensor, dx: float, periodic=(True, True),
         alpha: float = 1.0, accumulate: bool = False, offset=(0.0, 0.0)) -> None:
    """Face velocities from a corner stream function (Taichi, in place).

    ``psi`` ``(nx+1, ny+1)``; ``du`` ``(nx+1, ny)``, ``dv`` ``(nx, ny+1)``; writes
    ``alpha * curl(psi) + offset`` to ``du``/``dv``, or with ``accumulate=True`` adds it to them
    (e.g. to the state's ``u``/``v``): ``offset = (ou, ov)`` is a uniform flow added to every u
    and v face, in the same sum. Units: psi = length^2/time, velocities = length/time.
    ``du`` and ``dv`` share one dtype and device; ``psi`` has theirs, or is float64 with float32
    fields: the sum ``du + alpha * curl(psi) + offset`` is then formed in float64 and rounded
    once, as a float64 copy of the fields would be (without the copies).
    """
    nx, ny = dv.shape[0], du.shape[1]
    if tuple(psi.shape) != (nx + 1, ny + 1) or tuple(du.shape) != (nx + 1, ny):
        raise ShapeError(f"curl: psi {tuple(psi.shape)}, du {tuple(du.shape)}, dv {tuple(dv.shape)} do "
                         f"not fit one grid: need psi (nx+1, ny+1), du (nx+1, ny), dv (nx, ny+1).")
    if dv.dtype != du.dtype or not (psi.dtype == du.dtype or psi.dtype == torch.float64):
        raise ShapeError(f"curl: dtypes differ (psi {psi.dtype}, du {du.dtype}, dv {dv.dtype}): du and dv need "
                         "one dtype, and psi theirs or float64; cast psi.")
    ensure_taichi()
    _curl_kernel(dtype_name(du.dtype), dtype_name(psi.dtype))(
        psi.contiguous(), du, dv, 1.0 / float(dx), int(periodic[0]), int(periodic[1]), float(alpha),
        int(bool(accumulate)), float(offset[0]), float(offset[1]), serial_grid(nx, ny))
    record_writes(du, dv)


def curl_torch(psi: torch.Tensor, dx: float, periodic=(True, True)) -> tuple[torch.Tensor, torch.Tensor]:
    """Torch version of :func:`curl` (same stencil and periodic handling, differentiable):
    returns ``(du, dv)``."""
    p = psi
    if periodic[0]:
        p = torch.cat([p[:-1], p[:1]], 0)
    if periodic[1]:
        p = torch.cat([p[:, :-1], p[:, :1]], 1)
    du = (p[:, 1:] - p[:, :-1]) / dx
    dv = -(p[1:, :] - p[:-1, :]) / dx
    return du, dv


def vorticity_torch(u: torch.Tensor, v: torch.Tensor, dx: float, periodic=(True, True)) -> torch.Tensor:
    """Vorticity at the corners: ``(nx, ny)`` on a doubly periodic grid (corner ``(i, j)``, the
    wrapped last row/column dropped), else the interior corners ``(nx-1, ny-1)`` (or mixed)."""
    if periodic[0]:
        dvdx = v - torch.roll(v, 1, 0)
    else:
        dvdx = v[1:] - v[:-1]
    if periodic[1]:
        dudy = u - torch.roll(u, 1, 1)
    else:
        dudy = u[:, 1:] - u[:, :-1]
    # dvdx: corners (i, j) for j in 0..ny ; dudy: corners for i in 0..nx
    if periodic[0]:
        dudy = dudy[:-1]
    else:
        dudy = dudy[1:-1]
    if periodic[1]:
        dvdx = dvdx[:, :-1]
    else:
        dvdx = dvdx[:, 1:-1]
    return (dvdx - dudy) / dx

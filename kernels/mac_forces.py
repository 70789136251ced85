"""Forces and boundary conditions on MAC face velocities (Taichi).

* :func:`viscosity` — explicit diffusion ``q += nu dt/dx^2 (q_E + q_W + q_N + q_S - 4 q)`` on every
  free face (5-point stencil). A neighbour beyond a wall is a ghost ``2 U_wall - q`` (no-slip:
  the tangential velocity equals the wall's ``U_wall``, 0 unless it moves, on the wall half a
  cell away), ``-q`` on inflow sides (no tangential inflow) or ``+q`` (free-slip, outflow);
  neighbours wrap on periodic axes; an
  obstacle's fixed faces enter with their value (0, or the body's velocity there). Stable for ``nu dt/dx^2 <= 1/4``; :func:`viscosity` substeps beyond that.
* :func:`buoyancy_and_bc` — Boussinesq buoyancy ``v[i,j] += dt b (s[k,i,j-1] + s[k,i,j])/2`` on
  free v faces (scalar ``k``, coefficient ``b`` along +y), then boundary values: fixed faces get
  their prescribed value (walls/obstacles 0, inflow ``U``) and outflow faces copy their inner
  neighbour (zero normal gradient) before the projection.
* :func:`viscosity_buoyancy_and_bc` — both in as few launches as the viscous substeps need; a
  constant forcing ``u += dt f`` and linear drag ``u *= keep`` (free faces) ride its first launch,
  applied as it copies the faces into ``uw[0]`` (the fluid solver's force part, without a torch
  pass over the faces for each).
"""


import functools

import torch

from lawful.kernels.errors import InputError, ShapeError
from lawful.kernels.fast_launch import fast_kernels
from lawful.kernels.mac_grid import VISCOUS_NUMBER_MAX, Boundary, record_writes, serial_grid, substeps, unread_array
from lawful.kernels.precision import dtype_name
from lawful.kernels.runtime import ensure_taichi, taichi_real

__all__ = ["viscosity", "buoyancy_and_bc", "viscosity_buoyancy_and_bc", "PRE_FORCING", "PRE_DRAG"]

#: What the first viscous launch applies to the faces before the stencil reads them (a template
#: bit mask: each combination compiles its own kernel instance): a constant acceleration, and
#: linear drag on the free faces (see :func:`viscosity_buoyancy_and_bc`).
PRE_FORCING, PRE_DRAG = 1, 2


@functools.lru_cache(maxsize=None)
def _kernels(real_name: str):
    ti = __import__("taichi")
    real = taichi_real(real_name)
    A2 = ti.types.ndarray(dtype=real, ndim=2)
    A3 = ti.types.ndarray(dtype=real, ndim=3)

    A1 = ti.types.ndarray(dtype=real, ndim=1)

    @ti.func
    def ghost(q, gh: ti.template(), k):
        # Boundary.ghost_coefficients: a q + b (no-slip: 2 U_wall - q; otherwise q)
        return gh[k] * q + gh[k + 1]

    @ti.func
    def pre_value(q, f: ti.template(), free, i, j, fdt, keep, pre: ti.template()):
        # PRE_FORCING: q + fdt f (the numbers of torch's q.add_(f, alpha=fdt)); PRE_DRAG: then
        # q * keep on a free face (Solver.force_step's drag, lawful.fluids.solver.drag_factor)
        if ti.static(pre & PRE_FORCING):
            q = q + fdt * f[i, j]
        if ti.static(pre & PRE_DRAG):
            if free > 0:
                q = q * keep
        return q

    @ti.func
    def visc_loops(u: ti.template(), v: ti.template(), uw: ti.template(), vw: ti.template(), c, xlo, ylo,
                   gh: ti.template(), obst, fu: ti.template(), fv: ti.template(), fdt, keep, pre: ti.template(),
                   ser: ti.template()):
        nx, ny = v.shape[0], u.shape[1]
        px, py = xlo == 0, ylo == 0
        if ti.static(ser):
            ti.loop_config(serialize=True)
        for i in range(u.shape[0]):
            for j in range(u.shape[1]):
                q = u[i, j]
                if ti.static(pre):
                    q = pre_value(q, fu, uw[2, i, j], i, j, fdt, keep, pre)
                    u[i, j] = q
                uw[0, i, j] = q
        if ti.static(ser):
            ti.loop_config(serialize=True)
        for i in range(v.shape[0]):
            for j in range(v.shape[1]):
                q = v[i, j]
                if ti.static(pre):
                    q = pre_value(q, fv, vw[2, i, j], i, j, fdt, keep, pre)
                    v[i, j] = q
                vw[0, i, j] = q
        if ti.static(ser):
            ti.loop_config(serialize=True)
        # wrapped indices by compares, once per row (a Taichi ``x if c else y`` evaluates both
        # sides, and an integer division per face cost as much as the stencil)
        for i in range(u.shape[0]):
            ie = i
            if px and i == nx:
                ie = 0
            iw = ie - 1
            if iw < 0:
                iw = nx - 1         # reached only on a periodic x (else face 0 is not updated)
            for j in range(u.shape[1]):
                if uw[2, i, j] > 0 and (px or (i > 0 and i < nx)):
                    q = uw[0, ie, j]
                    w = uw[0, iw, j]
                    e = uw[0, ie + 1, j]
                    s = ti.cast(0.0, real)
                    if j > 0 or py:
                        js = j - 1 if j > 0 else ny - 1
                        s = uw[0, ie, js]
                        if obst and uw[2, ie, js] == 0:
                            s = 2 * s - q      # tangential neighbour inside an obstacle: wall half a cell away
                    else:
                        s = ghost(q, gh, 0)
                    n = ti.cast(0.0, real)
                    if j < ny - 1 or py:
                        jn = j + 1 if j < ny - 1 else 0
                        n = uw[0, ie, jn]
                        if obst and uw[2, ie, jn] == 0:
                            n = 2 * n - q
                    else:
                        n = ghost(q, gh, 2)
                    u[i, j] = q + c * (w + e + s + n - 4 * q)
        if ti.static(ser):
            ti.loop_config(serialize=True)
        for i in range(v.shape[0]):
            for j in range(v.shape[1]):
                if vw[2, i, j] > 0 and (py or (j > 0 and j < ny)):
                    je = j
                    if py and j == ny:
                        je = 0
                    js = je - 1
                    if js < 0:
                        js = ny - 1     # periodic y only, as for iw above
                    q = vw[0, i, je]
                    s = vw[0, i, js]
                    n = vw[0, i, je + 1]
                    w = ti.cast(0.0, real)
                    if i > 0 or px:
                        iw = i - 1 if i > 0 else nx - 1
                        w = vw[0, iw, je]
                        if obst and vw[2, iw, je] == 0:
                            w = 2 * w - q
                    else:
                        w = ghost(q, gh, 4)
                    e = ti.cast(0.0, real)
                    if i < nx - 1 or px:
                        ie2 = i + 1 if i < nx - 1 else 0
                        e = vw[0, ie2, je]
                        if obst and vw[2, ie2, je] == 0:
                            e = 2 * e - q
                    else:
                        e = ghost(q, gh, 6)
                    v[i, j] = q + c * (w + e + s + n - 4 * q)

    @ti.func
    def bc_loops(u: ti.template(), v: ti.template(), uw: ti.template(), vw: ti.template(), s: ti.template(), k,
                 bdt, xlo, xhi, ylo, yhi, ser: ti.template()):
        nx, ny = v.shape[0], u.shape[1]
        if ti.static(ser):
            ti.loop_config(serialize=True)
        for i in range(v.shape[0]):
            for j in range(v.shape[1]):
                if k >= 0 and vw[2, i, j] > 0:
                    jm = j - 1
                    jp = j
                    if ylo == 0:            # periodic y: wrap by compares
                        if jm < 0:
                            jm = ny - 1
                        if jp == ny:
                            jp = 0
                    if jm >= 0 and jp < ny:
                        v[i, j] += bdt * ti.cast(0.5, real) * (s[k, i, jm] + s[k, i, jp])
        if ti.static(ser):
            ti.loop_config(serialize=True)
        for i in range(u.shape[0]):
            for j in range(u.shape[1]):
                if uw[2, i, j] > 0:
                    if i == 0 and xlo == 4:
                        u[i, j] = u[1, j]
                    elif i == nx and xhi == 4:
                        u[i, j] = u[nx - 1, j]
                else:
                    u[i, j] = uw[3, i, j]
        if ti.static(ser):
            ti.loop_config(serialize=True)
        for i in range(v.shape[0]):
            for j in range(v.shape[1]):
                if vw[2, i, j] > 0:
                    if j == 0 and ylo == 4:
                        v[i, j] = v[i, 1]
                    elif j == ny and yhi == 4:
                        v[i, j] = v[i, ny - 1]
                else:
                    v[i, j] = vw[3, i, j]

    @ti.kernel
    def visc(u: A2, v: A2, uw: A3, vw: A3, c: real, xlo: int, xhi: int, ylo: int, yhi: int, gh: A1,
             obst: int, fu: A2, fv: A2, fdt: real, keep: real, pre: ti.template(), ser: ti.template()):
        visc_loops(u, v, uw, vw, c, xlo, ylo, gh, obst, fu, fv, fdt, keep, pre, ser)

    @ti.kernel
    def buoy_bc(u: A2, v: A2, uw: A3, vw: A3, s: A3, k: int, bdt: real, xlo: int, xhi: int,
                ylo: int, yhi: int, ser: ti.template()):
        bc_loops(u, v, uw, vw, s, k, bdt, xlo, xhi, ylo, yhi, ser)

    @ti.kernel
    def visc_buoy_bc(u: A2, v: A2, uw: A3, vw: A3, c: real, xlo: int, xhi: int, ylo: int, yhi: int, gh: A1,
                     obst: int, s: A3, k: int, bdt: real, fu: A2, fv: A2, fdt: real, keep: real, pre: ti.template(),
                     ser: ti.template()):
        # the last viscous substep and buoyancy_and_bc in one launch (same loops, same order);
        # ser: every loop on the calling thread (small grids)
        visc_loops(u, v, uw, vw, c, xlo, ylo, gh, obst, fu, fv, fdt, keep, pre, ser)
        bc_loops(u, v, uw, vw, s, k, bdt, xlo, xhi, ylo, yhi, ser)

    return fast_kernels(dict(visc=visc, buoy_bc=buoy_bc, visc_buoy_bc=visc_buoy_bc))


@functools.lru_cache(maxsize=64)
def _codes(boundary: Boundary):
    return tuple(boundary.side_code(n) for n in ("x_lo", "x_hi", "y_lo", "y_hi"))


def viscosity(u, v, uw, vw, nu: float, dt: float, dx: float, boundary: Boundary, ghost=None,
              obstacle_ghost: bool = False) -> int:
    """Explicit viscous step over ``dt`` (in place; substeps so that ``nu dt/dx^2 <=``
    :data:`~lawful.kernels.mac_grid.VISCOUS_NUMBER_MAX`);
    ``uw``/``vw`` from :func:`lawful.kernels.mac_advection.velocity_workspace`; ``ghost``: the
    ``(8,)`` tensor of :func:`lawful.kernels.mac_advection.ghost_tensor` for ``boundary`` (built
    when omitted). ``obstacle_ghost``: a tangential neighbour that is a fixed obstacle face enters
    as the ghost ``2 q_b - q`` (no-slip half a cell away, like the outer walls) instead of its value
    ``q_b`` (the wall effectively a whole cell away). Returns the number of substeps (0 when
    ``nu == 0``)."""
    if nu == 0.0:
        return 0
    ensure_taichi()
    if ghost is None:
        from lawful.kernels.mac_advection import ghost_tensor

        ghost = ghost_tensor(boundary, u.dtype, u.device)
    c = float(nu) * float(dt) / float(dx) ** 2
    n = substeps(c, VISCOUS_NUMBER_MAX)
    k = _kernels(dtype_name(u.dtype))["visc"]
    ser = serial_grid(u.shape[0], u.shape[1])
    none = unread_array(u.dtype, u.device, 2)        # no forcing: the slots are not read
    for _ in range(n):
        k(u, v, uw, vw, c / n, *_codes(boundary), ghost, int(bool(obstacle_ghost)), none, none, 0.0, 1.0, 0, ser)
    record_writes(u, v, uw, vw)
    return n


def buoyancy_and_bc(u, v, uw, vw, s: torch.Tensor, boundary: Boundary, scalar_index: int = -1,
                    coefficient: float = 0.0, dt: float = 0.0) -> None:
    """Add buoyancy from scalar ``s[scalar_index]`` (``(ns, nx, ny)``; -1 = none) and set boundary
    face values (fixed faces, outflow extrapolation), in place."""
    ensure_taichi()
    k = _kernels(dtype_name(u.dtype))["buoy_bc"]
    if s.shape[0] == 0:
        s = unread_array(u.dtype, u.device, 3)     # (scalar index -1: not read)
        scalar_index = -1
    k(u, v, uw, vw, s, int(scalar_index), float(coefficient) * float(dt), *_codes(boundary),
      serial_grid(u.shape[0], u.shape[1]))
    record_writes(u, v, uw, vw)


def viscosity_buoyancy_and_bc(u, v, uw, vw, s: torch.Tensor, boundary: Boundary, nu: float, dt: float, dx: float,
                              ghost=None, obstacle_ghost: bool = False, scalar_index: int = -1,
                              coefficient: float = 0.0, forcing=None, forcing_dt: float = 0.0,
                              drag_keep: float | None = None) -> int:
    """:func:`viscosity` over ``dt`` followed by :func:`buoyancy_and_bc` over ``dt`` (same
    arguments, same results), with the last viscous substep and the buoyancy/boundary loops in
    one kernel launch. Returns the number of viscous substeps (0 when ``nu == 0``).

    ``forcing`` ``(fu, fv)`` (contiguous arrays of the velocity's shapes and dtype) and
    ``drag_keep``: first ``u += forcing_dt * fu`` on every face, then ``u *= drag_keep`` on the
    free ones (``uw[2] > 0``; fixed faces keep their value), the same for ``v`` -- in the first
    viscous launch, as it copies the faces into ``uw[0]``: the numbers of ``u.add_(fu,
    alpha=forcing_dt)`` and ``u.mul_(drag_factor(...))`` before the call, up to one rounding of
    the product ``forcing_dt * fu`` (torch fuses ``u + forcing_dt * fu`` into one multiply-add,
    the kernel rounds the product first: where the sum cancels that is many ulp of the result,
    never more than about one ulp of ``max(|u|, |forcing_dt * fu|)``).
    They need ``nu > 0`` (no viscous launch to ride otherwise): :class:`InputError` if not."""
    pre = (PRE_FORCING if forcing is not None else 0) | (PRE_DRAG if drag_keep is not None else 0)
    if nu == 0.0:
        if pre:
            raise InputError("viscosity_buoyancy_and_bc: forcing/drag_keep ride the first viscous launch, and "
                             "nu == 0 makes none: apply them with torch before the call.")
        buoyancy_and_bc(u, v, uw, vw, s, boundary, scalar_index, coefficient, dt)
        return 0
    none = unread_array(u.dtype, u.device, 2)
    fu, fv = forcing if forcing is not None else (none, none)       # (no forcing: not read)
    for name, f, ref in (("forcing[0]", fu, u), ("forcing[1]", fv, v)) if forcing is not None else ():
        if f.shape != ref.shape or f.dtype != ref.dtype or f.device != ref.device:
            raise ShapeError(f"viscosity_buoyancy_and_bc: {name} is {tuple(f.shape)} {f.dtype} on {f.device}; it "
                             f"must be {tuple(ref.shape)} {ref.dtype} on {ref.device}, as the faces it accelerates.")
    keep = 1.0 if drag_keep is None else float(drag_keep)
    ensure_taichi()
    if ghost is None:
        from lawful.kernels.mac_advection import ghost_tensor

        ghost = ghost_tensor(boundary, u.dtype, u.device)
    c = float(nu) * float(dt) / float(dx) ** 2
    n = substeps(c, VISCOUS_NUMBER_MAX)
    ks = _kernels(dtype_name(u.dtype))
    codes = _codes(boundary)
    ser = serial_grid(u.shape[0], u.shape[1])
    for sub in range(n - 1):
        ks["visc"](u, v, uw, vw, c / n, *codes, ghost, int(bool(obstacle_ghost)), fu, fv, float(forcing_dt), keep,
                   pre if sub == 0 else 0, ser)
    if s.shape[0] == 0:
        s = unread_array(u.dtype, u.device, 3)     # (scalar index -1: not read)
        scalar_index = -1
    ks["visc_buoy_bc"](u, v, uw, vw, c / n, *codes, ghost, int(bool(obstacle_ghost)), s, int(scalar_index),
                       float(coefficient) * float(dt), fu, fv, float(forcing_dt), keep, pre if n == 1 else 0, ser)
    record_writes(u, v, uw, vw)
    return n

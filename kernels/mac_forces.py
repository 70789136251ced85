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
* :func:`viscosity_buoyancy_and_bc` — both in as few launches as the viscous substeps need (the
  fluid solver's force part); a constant forcing ``f``, linear drag and buoyancy ride every viscous
  substep's update of a free face (so their steady balance with viscosity does not depend on dt),
  and each substep reads the faces plus the pressure impulse of the step's pressure up to its time
  (viscosity and drag act on the velocity, not on a pressure gradient).
"""


import functools

import torch

from lawful.kernels.errors import InputError, ShapeError
from lawful.kernels.fast_launch import fast_kernels
from lawful.kernels.mac_grid import VISCOUS_NUMBER_MAX, Boundary, record_writes, serial_grid, substeps, unread_array
from lawful.kernels.precision import dtype_name
from lawful.kernels.runtime import ensure_taichi, taichi_real

__all__ = ["viscosity", "buoyancy_and_bc", "viscosity_buoyancy_and_bc", "BODY_FORCING", "BODY_DRAG"]

#: The body forces every viscous substep applies with its stencil (a template bit mask: each
#: combination compiles its own kernel instance): a constant acceleration, and linear drag on the
#: free faces (see :func:`viscosity_buoyancy_and_bc`).
BODY_FORCING, BODY_DRAG = 1, 2


@functools.lru_cache(maxsize=None)
def _kernels(real_name: str):
    ti = __import__("taichi")
    real = taichi_real(real_name)
    A2 = ti.types.ndarray(dtype=real, ndim=2)
    A3 = ti.types.ndarray(dtype=real, ndim=3)

    A1 = ti.types.ndarray(dtype=real, ndim=1)
    f64 = ti.f64
    F3 = ti.types.ndarray(dtype=f64, ndim=3)
    from lawful.kernels.mac_pressure import WX, WY, face_gradient_funcs     # the pressure solver's channels

    face_cells = face_gradient_funcs()[0]

    @ti.func
    def ghost(q, gh: ti.template(), k):
        # Boundary.ghost_coefficients: a q + b (no-slip: 2 U_wall - q; otherwise q)
        return gh[k] * q + gh[k + 1]

    @ti.func
    def p_step(p: ti.template(), pscale, hi, lo, ok_hi, ok_lo, ia, ja, ib, jb):
        # the float64 phi_hi - phi_lo of phi = p * pscale (formed in p's dtype, as the advection's
        # predictor sets the pressure solver's phi): a missing cell reads 0
        ph = ti.cast(0.0, f64)
        pl = ti.cast(0.0, f64)
        if ok_hi:
            ph = ti.cast(p[ia, ja] * pscale, f64)
        if ok_lo:
            pl = ti.cast(p[ib, jb] * pscale, f64)
        return ph - pl

    @ti.func
    def body_update(base, src, lap, f: ti.template(), i, j, fdt, keep, body: ti.template(), grad: ti.template()):
        # one viscous substep of a free face: base + the stencil's increment ``lap`` of what it reads
        # (``src``), with the body forces inside every substep (their steady balance with viscosity
        # then holds for any dt): drag -(1 - keep) src (BODY_DRAG; on the velocity the stencil reads,
        # ``keep * base`` when that is the face itself) and fdt f (BODY_FORCING); without them the
        # numbers of q + c (...) as before
        q = base
        if ti.static(body & BODY_DRAG):
            if ti.static(grad):
                q = q + (keep - 1) * src
            else:
                q = q * keep
        q = q + lap
        if ti.static(body & BODY_FORCING):
            q = q + fdt * f[i, j]
        return q

    @ti.func
    def visc_loops(u: ti.template(), v: ti.template(), uw: ti.template(), vw: ti.template(), c, xlo, ylo,
                   gh: ti.template(), obst, fu: ti.template(), fv: ti.template(), fdt, keep, body: ti.template(),
                   a: ti.template(), p: ti.template(), pscale, grad: ti.template(), sc: ti.template(), kb, bdt,
                   ser: ti.template()):
        # uw[0] / vw[0]: the faces the stencil reads; with ``grad`` the faces plus W G (p pscale)
        # (the velocity with the pressure impulse of p up to the substep's time: viscosity and drag
        # act on it, see viscosity_buoyancy_and_bc), the faces themselves in uw[1] / vw[1]; buoyancy
        # bdt b s (scalar kb >= 0) on the v faces with the forcing
        nx, ny = v.shape[0], u.shape[1]
        px, py = xlo == 0, ylo == 0
        if ti.static(ser):
            ti.loop_config(serialize=True)
        for i in range(u.shape[0]):
            for j in range(u.shape[1]):
                q = u[i, j]
                if ti.static(grad):
                    uw[1, i, j] = q
                    w = a[WX, i, j]
                    if w > 0:
                        hi, lo = face_cells(i, nx, px)
                        q = ti.cast(ti.cast(q, f64) + w * p_step(p, pscale, hi, lo, hi < nx, lo >= 0, hi, j, lo, j),
                                    real)
                uw[0, i, j] = q
        if ti.static(ser):
            ti.loop_config(serialize=True)
        for i in range(v.shape[0]):
            for j in range(v.shape[1]):
                q = v[i, j]
                if ti.static(grad):
                    vw[1, i, j] = q
                    w = a[WY, i, j]
                    if w > 0:
                        hi, lo = face_cells(j, ny, py)
                        q = ti.cast(ti.cast(q, f64) + w * p_step(p, pscale, hi, lo, hi < ny, lo >= 0, i, hi, i, lo),
                                    real)
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
                    base = q
                    if ti.static(grad):
                        base = uw[1, ie, j]
                    u[i, j] = body_update(base, q, c * (w + e + s + n - 4 * q), fu, ie, j, fdt, keep, body, grad)
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
                    base = q
                    if ti.static(grad):
                        base = vw[1, i, je]
                    r = body_update(base, q, c * (w + e + s + n - 4 * q), fv, i, je, fdt, keep, body, grad)
                    if kb >= 0:
                        r += bdt * ti.cast(0.5, real) * (sc[kb, i, js] + sc[kb, i, je])
                    v[i, j] = r

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
             obst: int, fu: A2, fv: A2, fdt: real, keep: real, body: ti.template(), a: F3, p: A2, pscale: real,
             grad: ti.template(), s: A3, k: int, bdt: real, ser: ti.template()):
        visc_loops(u, v, uw, vw, c, xlo, ylo, gh, obst, fu, fv, fdt, keep, body, a, p, pscale, grad, s, k, bdt, ser)

    @ti.kernel
    def buoy_bc(u: A2, v: A2, uw: A3, vw: A3, s: A3, k: int, bdt: real, xlo: int, xhi: int,
                ylo: int, yhi: int, ser: ti.template()):
        bc_loops(u, v, uw, vw, s, k, bdt, xlo, xhi, ylo, yhi, ser)

    @ti.kernel
    def visc_buoy_bc(u: A2, v: A2, uw: A3, vw: A3, c: real, xlo: int, xhi: int, ylo: int, yhi: int, gh: A1,
                     obst: int, fu: A2, fv: A2, fdt: real, keep: real, body: ti.template(), a: F3, p: A2,
                     pscale: real, grad: ti.template(), s: A3, k: int, bdt: real, ser: ti.template()):
        # the last viscous substep (buoyancy in it, as in the others) and buoyancy_and_bc's boundary
        # values in one launch; ser: every loop on the calling thread (small grids)
        visc_loops(u, v, uw, vw, c, xlo, ylo, gh, obst, fu, fv, fdt, keep, body, a, p, pscale, grad, s, k, bdt, ser)
        bc_loops(u, v, uw, vw, s, -1, bdt, xlo, xhi, ylo, yhi, ser)

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
    none = unread_array(u.dtype, u.device, 2)        # no forcing, no gradient: the slots are not read
    no_a = unread_array(torch.float64, u.device, 3)
    no_s = unread_array(u.dtype, u.device, 3)
    for _ in range(n):
        k(u, v, uw, vw, c / n, *_codes(boundary), ghost, int(bool(obstacle_ghost)), none, none, 0.0, 1.0, 0,
          no_a, none, 0.0, False, no_s, -1, 0.0, ser)
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
                              drag_keep: float | None = None, pressure=None) -> int:
    """:func:`viscosity` over ``dt`` followed by :func:`buoyancy_and_bc` over ``dt``, with the body
    forces inside the viscous substeps: the force part of the fluid solver's step, in as few
    launches as the substeps need (the last one with the boundary values). Returns the number of
    viscous substeps (0 when ``nu == 0``: then :func:`buoyancy_and_bc` alone).

    Each substep of ``h = dt / n`` updates the free faces the stencil reaches as the explicit step
    of ``du/dt = nu lap u - drag u + f + b s_y - grad p``:
    ``q' = q + c_h (stencil of r) - (1 - keep_h) r + h f (+ h b s on v faces)``, where ``r`` is
    what the stencil reads (below), ``forcing = (fu, fv)`` the constant acceleration ``f``
    (contiguous arrays of the velocity's shapes and dtype; ``forcing_dt`` = ``dt``), ``drag_keep``
    ``= 1 - drag dt`` (``keep_h = 1 - (1 - drag_keep)/n``; the factor itself when ``n == 1``) and
    ``b s`` the Boussinesq buoyancy of scalar ``scalar_index`` (``coefficient`` b, the scalar
    averaged from the two cells). So a steady balance of viscosity and the body forces does not
    depend on ``dt`` (a forcing applied once before the substeps left body-force-driven
    Poiseuille flow 8 % slow at ``nu dt/H^2 = 0.02``). Forcing and drag need ``nu > 0`` (no viscous
    launch to ride otherwise): :class:`InputError` if not; without viscosity apply them with torch
    (``u += dt f``, ``u *= keep`` on the free faces), the same update.

    ``pressure`` ``(solver, p, carried)``: the step's pressure ``p`` (``(nx, ny)`` cells,
    contiguous, the velocity's dtype), the :class:`~lawful.kernels.mac_pressure.PressureSolver`
    whose face gradient ``W G`` it goes through, and the part ``carried`` of ``dt W G p`` that the
    faces carry with a minus sign (0.5 with the pressure predictor, which advects
    ``u - (dt/2) grad p``; 0 without). Substep ``k`` reads ``r = q + (carried - k/n) dt W G p``: the
    velocity with the pressure impulse of ``p`` applied up to the substep's time. Viscosity and
    drag then act on the velocity and not on the gradient (on it, the no-slip ghost ``2 U - q`` of
    a wall left a part that is no gradient, which the projection could not remove: a fluid at rest
    under uniform buoyancy in a closed box moved, at 0.7 % of ``b t``, with ``dp/dy`` beside the
    walls 25 % off at 32^2), and a fluid at rest under a force that ``p`` balances stays at rest
    for any number of substeps. ``None``: ``r = q`` (the faces as they are).
    """
    body = (BODY_FORCING if forcing is not None else 0) | (BODY_DRAG if drag_keep is not None else 0)
    if nu == 0.0:
        if body:
            raise InputError("viscosity_buoyancy_and_bc: forcing/drag_keep ride the viscous launches, and nu == 0 "
                             "makes none: apply forcing and drag with torch before the call.")
        buoyancy_and_bc(u, v, uw, vw, s, boundary, scalar_index, coefficient, dt)
        return 0
    none = unread_array(u.dtype, u.device, 2)
    fu, fv = forcing if forcing is not None else (none, none)       # (no forcing: not read)
    for name, f, ref in (("forcing[0]", fu, u), ("forcing[1]", fv, v)) if forcing is not None else ():
        if f.shape != ref.shape or f.dtype != ref.dtype or f.device != ref.device:
            raise ShapeError(f"viscosity_buoyancy_and_bc: {name} is {tuple(f.shape)} {f.dtype} on {f.device}; it "
                             f"must be {tuple(ref.shape)} {ref.dtype} on {ref.device}, as the faces it accelerates.")
    ensure_taichi()
    if ghost is None:
        from lawful.kernels.mac_advection import ghost_tensor

        ghost = ghost_tensor(boundary, u.dtype, u.device)
    c = float(nu) * float(dt) / float(dx) ** 2
    n = substeps(c, VISCOUS_NUMBER_MAX)
    a, p, carried = unread_array(torch.float64, u.device, 3), none, 0.0
    grad = pressure is not None and (float(pressure[2]) != 0.0 or n > 1)    # else every substep reads q itself
    if grad:
        solver, p, carried = pressure
        nx, ny = v.shape[0], u.shape[1]
        if (solver.nx, solver.ny) != (nx, ny) or tuple(p.shape) != (nx, ny) or p.dtype != u.dtype \
                or p.device != u.device or not p.is_contiguous():
            raise ShapeError(f"viscosity_buoyancy_and_bc: the pressure's solver is for a {solver.nx}x{solver.ny} "
                             f"grid and its p is {tuple(p.shape)} {p.dtype} on {p.device} (contiguous: "
                             f"{p.is_contiguous()}); both must be the {nx}x{ny} cells of the velocity, p contiguous "
                             f"in {u.dtype} on {u.device}.")
        a = solver.fine
    keep = 1.0 if drag_keep is None else float(drag_keep)
    if n > 1:
        keep = 1.0 - (1.0 - keep) / n
    fdt = float(forcing_dt) / n
    if s.shape[0] == 0:
        s = unread_array(u.dtype, u.device, 3)     # (scalar index -1: not read)
        scalar_index = -1
    bdt = float(coefficient) * float(dt) / n
    ks = _kernels(dtype_name(u.dtype))
    codes = _codes(boundary)
    ser = serial_grid(u.shape[0], u.shape[1])
    for sub in range(n):
        pscale = float(dt) / float(dx) * (float(carried) - sub / n)
        args = (u, v, uw, vw, c / n, *codes, ghost, int(bool(obstacle_ghost)), fu, fv, fdt, keep, body, a, p, pscale,
                grad, s, int(scalar_index), bdt, ser)
        ks["visc_buoy_bc" if sub == n - 1 else "visc"](*args)
    record_writes(u, v, uw, vw)
    return n

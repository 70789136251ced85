"""A differentiable twin of :meth:`lawful.fluids.solver.Solver.step` for solver-in-the-loop training.

Design (why this split): gradients must flow through advection and the projection.

* **Advection, forces, viscosity, boundary values** are re-implemented here in torch, stencil for
  stencil the discretisation of :mod:`lawful.kernels.mac_advection` (midpoint back-trace,
  bilinear sampling with the same wrap/clamp rules, MacCormack with the min/max limiter or
  semi-Lagrangian), :mod:`lawful.kernels.mac_forces` (explicit 5-point viscosity with the same
  wall ghosts and substep rule, Boussinesq buoyancy, fixed/outflow face values) and the flux-form
  scalar advection (MUSCL/minmod, same CFL substeps). Autograd then differentiates them exactly
  (piecewise: floor/clamp/min/max have their one-sided derivatives). Hand-written Taichi adjoints
  of a limited MacCormack scheme would be long and fragile; the torch twin is short and
  ``tests/test_corrector_torch_step.py`` proves it matches the Taichi step to round-off (float64).
* **The projection** is the solver's own Taichi MGPCG (:class:`~lawful.kernels.mac_pressure.PressureSolver`)
  wrapped in a :class:`torch.autograd.Function`. Its Jacobian, composed with the fixed-face reset
  that always precedes it, is ``P W`` with ``P = I - W D^T A^+ M D`` (``D`` divergence, ``W`` the
  free-face mask, ``A = D W D^T`` the Poisson matrix, ``M`` the mean-removal of singular
  problems). The adjoint ``J^T g = g - D^T A^+ M D W g`` is one more projection-type solve: the
  backward pass runs the *same* Taichi solver on ``W g`` and subtracts the (unweighted) gradient of
  its potential. Forward and backward are therefore exactly the solver's discretisation and cost.

Periodic axes: the duplicate last face (``u[nx] == u[0]``) is a copy; the twin reads only the
canonical faces and writes the copy, so gradients collect on ``u[0]``.

Use :class:`TorchStep` (built from a :class:`~lawful.fluids.solver.Solver`) on tensors:
``u, v, s = step(u, v, s)``. Everything is float32/float64 like the solver; zero-copy to Taichi.
"""

from __future__ import annotations

import math

import torch

from lawful.kernels.errors import InputError, NumericalError, ShapeError
from lawful.kernels.mac_grid import SCALAR_CFL_MAX, VISCOUS_NUMBER_MAX, set_periodic_duplicate, substeps
from lawful.kernels.mac_pressure import PressureSolver, default_rtol

__all__ = ["TorchStep", "project_differentiable", "Projector", "face_gradient"]


# --------------------------------------------------------------------------------------------
# advection (torch twin of lawful.kernels.mac_advection)
# --------------------------------------------------------------------------------------------

def _sample(q, x, y, per_x: int, per_y: int, with_bounds: bool = False, ghost=None, gaxis: int = -1):
    """Bilinear sample of ``q`` (2D) at fractional indices ``(x, y)``; same wrap/clamp rules as the
    Taichi ``sample`` (``per_*`` = period or 0 for a clamped axis). ``ghost = (a_lo, b_lo, a_hi,
    b_hi)`` on the non-periodic axis ``gaxis`` (0: x, 1: y): positions reach half a cell beyond the
    last rows, where the ghost ``a q + b`` of the boundary row stands."""
    nqx, nqy = q.shape
    gx = gaxis == 0 and not per_x and ghost is not None
    gy = gaxis == 1 and not per_y and ghost is not None
    if not per_x:
        x = x.clamp(-0.5, nqx - 0.5) if gx else x.clamp(0.0, nqx - 1)
    if not per_y:
        y = y.clamp(-0.5, nqy - 0.5) if gy else y.clamp(0.0, nqy - 1)
    fi = torch.floor(x)
    fj = torch.floor(y)
    tx = x - fi
    ty = y - fj
    i0 = fi.long()
    j0 = fj.long()
    i1 = i0 + 1
    j1 = j0 + 1
    if per_x:
        i0 = torch.remainder(i0, per_x)
        i1 = torch.remainder(i1, per_x)
    elif not gx:
        # clamped to the last row: rows nqx-2, nqx-1 with weight 1 on the last (mirrors row 0)
        i0 = i0.clamp_max(nqx - 2)
        tx = x - i0.to(x.dtype)
        i1 = i0 + 1
    if per_y:
        j0 = torch.remainder(j0, per_y)
        j1 = torch.remainder(j1, per_y)
    elif not gy:
        j0 = j0.clamp_max(nqy - 2)
        ty = y - j0.to(y.dtype)
        j1 = j0 + 1

    def fetch(i, j):
        val = q[i.clamp(0, nqx - 1), j.clamp(0, nqy - 1)]
        if gx or gy:
            g, n = (i, nqx) if gx else (j, nqy)
            val = torch.where(g < 0, ghost[0] * val + ghost[1], torch.where(g >= n, ghost[2] * val + ghost[3], val))
        return val

    a = fetch(i0, j0)
    b = fetch(i1, j0)
    d = fetch(i0, j1)
    e = fetch(i1, j1)
    val = (1 - ty) * ((1 - tx) * a + tx * b) + ty * ((1 - tx) * d + tx * e)
    if not with_bounds:
        return val
    lo = torch.minimum(torch.minimum(a, b), torch.minimum(d, e))
    hi = torch.maximum(torch.maximum(a, b), torch.maximum(d, e))
    return val, lo, hi


def _advect_velocity(u, v, ubc, vbc, h: float, periodic, maccormack: bool, limiter: bool,
                     qu=None, qv=None, ghost=(1.0, 0.0) * 4):
    """Trace with ``(u, v)``, carry ``(qu, qv)`` (default: the velocity itself); ``ghost``: the
    8 wall-ghost coefficients of :meth:`~lawful.kernels.mac_grid.Boundary.ghost_coefficients`."""
    gu, gv = ghost[:4], ghost[4:]
    nx, ny = v.shape[0], u.shape[1]
    qu = u if qu is None else qu
    qv = v if qv is None else qv
    px, py = nx * int(periodic[0]), ny * int(periodic[1])
    dt_, dev = u.dtype, u.device

    def vel(x, y):
        return _sample(u, x, y - 0.5, px, py, ghost=gu, gaxis=1), _sample(v, x - 0.5, y, px, py, ghost=gv, gaxis=0)

    def trace(x, y, hh):
        ux, vy = vel(x, y)
        ux2, vy2 = vel(x - 0.5 * hh * ux, y - 0.5 * hh * vy)
        return x - hh * ux2, y - hh * vy2

    iu = torch.arange(nx + 1, device=dev)
    if periodic[0]:
        iu = iu % nx
    xu = iu.to(dt_)[:, None].expand(nx + 1, ny)
    yu = (torch.arange(ny, device=dev, dtype=dt_) + 0.5)[None, :].expand(nx + 1, ny)
    xv = (torch.arange(nx, device=dev, dtype=dt_) + 0.5)[:, None].expand(nx, ny + 1)
    jv = torch.arange(ny + 1, device=dev)
    if periodic[1]:
        jv = jv % ny
    yv = jv.to(dt_)[None, :].expand(nx, ny + 1)

    bxu, byu = trace(xu, yu, h)
    bxv, byv = trace(xv, yv, h)
    hu, lou, hiu = _sample(qu, bxu, byu - 0.5, px, py, True, gu, 1)
    hv, lov, hiv = _sample(qv, bxv - 0.5, byv, px, py, True, gv, 0)
    if maccormack:
        fxu, fyu = trace(xu, yu, -h)
        fxv, fyv = trace(xv, yv, -h)
        qtu = _sample(hu, fxu, fyu - 0.5, px, py, ghost=gu, gaxis=1)
        qtv = _sample(hv, fxv - 0.5, fyv, px, py, ghost=gv, gaxis=0)
        nu_ = hu + 0.5 * (qu - qtu)
        nv_ = hv + 0.5 * (qv - qtv)
        if limiter:
            nu_ = torch.minimum(torch.maximum(nu_, lou), hiu)
            nv_ = torch.minimum(torch.maximum(nv_, lov), hiv)
    else:
        nu_, nv_ = hu, hv
    return ubc[0] * nu_ + (1 - ubc[0]) * ubc[1], vbc[0] * nv_ + (1 - vbc[0]) * vbc[1]


def _advect_scalars(s, u, v, h: float, periodic, order: int, fluid=None):
    """One flux-form substep (``h = dt/dx``) of cell scalars ``s`` ``(ns, nx, ny)``; ``fluid``
    ``(nx, ny)`` bool (None: all fluid): an order-2 slope needs both neighbours fluid, as in the
    Taichi kernel (values in obstacle cells never shape the flow's)."""
    ns, nx, ny = s.shape
    px, py = periodic

    def pad(a, dim, per, width):
        n = a.shape[dim]
        if per:
            lo, hi = a.narrow(dim, n - width, width), a.narrow(dim, 0, width)
        else:
            shape = list(a.shape)
            shape[dim] = width
            lo = hi = torch.zeros(shape, dtype=a.dtype, device=a.device)
        return torch.cat([lo, a, hi], dim)

    def inside(n, per, width, dev):
        m = torch.ones(n + 2 * width, dtype=torch.bool, device=dev)
        if not per:
            m[:width] = False
            m[-width:] = False
        return m

    def minmod(a, b):
        return torch.where(a * b > 0, torch.minimum(a.abs(), b.abs()) * torch.sign(a), torch.zeros_like(a))

    def face_fluxes(sp, ins, fl, vel, axis):
        # sp: scalars padded by 2 along `axis` (index k of sp = cell k - 2); faces f = 0..n; ins: the
        # padded cells inside the box (1D), fl: the padded cells that are fluid ((nx, ny) padded)
        n = sp.shape[axis] - 4
        c_l = sp.narrow(axis, 1, n + 1)    # cell f-1
        c_r = sp.narrow(axis, 2, n + 1)    # cell f
        in_l, in_r = ins[1:n + 2], ins[2:n + 3]
        shp = [1, 1, 1]
        shp[axis] = n + 1
        in_l, in_r = in_l.view(shp), in_r.view(shp)
        val_l = torch.where(in_l, c_l, torch.zeros_like(c_l))
        val_r = torch.where(in_r, c_r, torch.zeros_like(c_r))
        if order == 2:
            c_ll = sp.narrow(axis, 0, n + 1)   # cell f-2
            c_rr = sp.narrow(axis, 3, n + 1)   # cell f+1
            in_ll, in_rr = ins[0:n + 1].view(shp), ins[3:n + 4].view(shp)
            if fl is not None:                 # a neighbour in an obstacle: no slope
                f_l, f_r = fl.narrow(axis - 1, 1, n + 1), fl.narrow(axis - 1, 2, n + 1)
                f_ll, f_rr = fl.narrow(axis - 1, 0, n + 1), fl.narrow(axis - 1, 3, n + 1)
                in_ll, in_rr = in_ll & f_ll & f_r, in_rr & f_rr & f_l
            lim = 0.5 * (1 - vel.abs() * h)
            slope_l = minmod(c_l - c_ll, c_r - c_l)
            slope_r = minmod(c_r - c_rr, c_l - c_r)
            val_l = val_l + torch.where(in_l & in_ll & in_r, lim * slope_l, torch.zeros_like(c_l))
            val_r = val_r + torch.where(in_r & in_rr & in_l, lim * slope_r, torch.zeros_like(c_r))
        sf = torch.where(vel > 0, val_l, torch.where(vel < 0, val_r, torch.zeros_like(val_l)))
        return vel * sf

    insx = inside(nx, px, 2, s.device)
    insy = inside(ny, py, 2, s.device)
    flx = fly = None
    if fluid is not None:
        flx, fly = pad(fluid, 0, px, 2), pad(fluid, 1, py, 2)
    fx = face_fluxes(pad(s, 1, px, 2), insx, flx, u.unsqueeze(0), 1)
    fy = face_fluxes(pad(s, 2, py, 2), insy, fly, v.unsqueeze(0), 2)
    return s - h * ((fx[:, 1:] - fx[:, :-1]) + (fy[:, :, 1:] - fy[:, :, :-1]))


# --------------------------------------------------------------------------------------------
# forces (torch twin of lawful.kernels.mac_forces)
# --------------------------------------------------------------------------------------------

def _shift_fixed(f, dim: int, step: int, periodic: bool):
    """The fixed-face mask of the neighbour at ``step`` (+1/-1) along ``dim``; False beyond a
    non-periodic side (the wall ghost applies there)."""
    if periodic:
        return torch.roll(f, -step, dim)
    z = torch.zeros_like(f.narrow(dim, 0, 1))
    n = f.shape[dim]
    return torch.cat([z, f.narrow(dim, 0, n - 1)], dim) if step < 0 else torch.cat([f.narrow(dim, 1, n - 1), z], dim)


def _viscosity_once(u, v, ubc, vbc, c: float, boundary, obstacle_ghost: bool = False, carried=None,
                    keep: float | None = None, forcing=None, fdt: float = 0.0, buoyancy=None):
    """One viscous substep of the free faces, as :func:`lawful.kernels.mac_forces.viscosity_buoyancy_and_bc`'s:
    ``q' = q + (keep - 1) r + c (stencil of r) + fdt f`` with ``r = q + g``, ``carried = (gu, gv)``
    the pressure impulse ``g`` this substep reads (``(carried - k/n) dt W G p``; None: 0),
    ``keep`` the substep's drag factor (None: 1), ``forcing = (fu, fv)`` (None: none) and
    ``buoyancy = (s, index, bdt)``: ``+ bdt (s[index] below + above)/2`` on the v faces (None: none)."""
    nx, ny = v.shape[0], u.shape[1]
    px, py = boundary.periodic_axes
    g = boundary.ghost_coefficients()      # a q + b beyond each side (no-slip: 2 U_wall - q)
    su, sv = (u, v) if carried is None else (u + carried[0], v + carried[1])     # what the stencil reads
    # u faces
    uc = su[:nx] if px else su
    if px:
        w = torch.roll(uc, 1, 0)
        e = torch.roll(uc, -1, 0)
    else:
        w = torch.cat([uc[:1], uc[:-1]], 0)      # row 0 unused (not updated)
        e = torch.cat([uc[1:], uc[-1:]], 0)
    if py:
        s = torch.roll(uc, 1, 1)
        n = torch.roll(uc, -1, 1)
    else:
        s = torch.cat([g[0] * uc[:, :1] + g[1], uc[:, :-1]], 1)
        n = torch.cat([uc[:, 1:], g[2] * uc[:, -1:] + g[3]], 1)
    if obstacle_ghost:
        fu = (ubc[0] == 0)[:nx] if px else ubc[0] == 0
        s = torch.where(_shift_fixed(fu, 1, -1, py), 2 * s - uc, s)
        n = torch.where(_shift_fixed(fu, 1, 1, py), 2 * n - uc, n)
    bu = u[:nx] if px else u
    un = _body_update(bu, bu if carried is None else uc, c * (w + e + s + n - 4 * uc), keep,
                      None if forcing is None else (forcing[0][:nx] if px else forcing[0]), fdt)
    if px:
        un = torch.cat([un, un[:1]], 0)
        upd = ubc[0] > 0
    else:
        upd = ubc[0] > 0
        upd = upd.clone()
        upd[0] = False
        upd[nx] = False
    u_out = torch.where(upd, un, u)
    # v faces
    vc = sv[:, :ny] if py else sv
    if py:
        s = torch.roll(vc, 1, 1)
        n = torch.roll(vc, -1, 1)
    else:
        s = torch.cat([vc[:, :1], vc[:, :-1]], 1)
        n = torch.cat([vc[:, 1:], vc[:, -1:]], 1)
    if px:
        w = torch.roll(vc, 1, 0)
        e = torch.roll(vc, -1, 0)
    else:
        w = torch.cat([g[4] * vc[:1] + g[5], vc[:-1]], 0)
        e = torch.cat([vc[1:], g[6] * vc[-1:] + g[7]], 0)
    if obstacle_ghost:
        fv = (vbc[0] == 0)[:, :ny] if py else vbc[0] == 0
        w = torch.where(_shift_fixed(fv, 0, -1, px), 2 * w - vc, w)
        e = torch.where(_shift_fixed(fv, 0, 1, px), 2 * e - vc, e)
    bv = v[:, :ny] if py else v
    vn = _body_update(bv, bv if carried is None else vc, c * (w + e + s + n - 4 * vc), keep,
                      None if forcing is None else (forcing[1][:, :ny] if py else forcing[1]), fdt)
    if buoyancy is not None:           # the scalar averaged from the cells below and above each face
        sk, bdt = buoyancy[0][buoyancy[1]], buoyancy[2]
        if py:
            avg = 0.5 * (torch.roll(sk, 1, 1) + sk)
        else:
            avg = 0.5 * (torch.cat([sk[:, :1], sk[:, :-1]], 1) + sk)     # column 0 unused (not updated)
            avg = torch.cat([avg, avg[:, -1:]], 1)
        vn = vn + bdt * avg
    if py:
        vn = torch.cat([vn, vn[:, :1]], 1)
        upd = vbc[0] > 0
    else:
        upd = (vbc[0] > 0).clone()
        upd[:, 0] = False
        upd[:, ny] = False
    v_out = torch.where(upd, vn, v)
    return u_out, v_out


def _body_update(base, src, lap, keep, f, fdt: float):
    """``base + (keep - 1) src + lap + fdt f`` (``keep base`` when ``src`` is ``base``) in the
    Taichi kernel's order (each term only when given)."""
    q = base
    if keep is not None:
        q = base * keep if src is base else base + (keep - 1) * src
    q = q + lap
    return q if f is None else q + fdt * f


def _buoyancy_and_bc(u, v, ubc, vbc, s, boundary, index: int, bdt: float):
    nx, ny = v.shape[0], u.shape[1]
    px, py = boundary.periodic_axes
    if index >= 0 and bdt != 0.0:
        sk = s[index]
        if py:
            avg = 0.5 * (torch.roll(sk, 1, 1) + sk)
            avg = torch.cat([avg, avg[:, :1]], 1)
            inside = torch.ones_like(vbc[0], dtype=torch.bool)
        else:
            z = torch.zeros_like(sk[:, :1])
            avg = 0.5 * (torch.cat([z, sk], 1) + torch.cat([sk, z], 1))
            inside = torch.ones_like(vbc[0], dtype=torch.bool).clone()
            inside[:, 0] = False
            inside[:, ny] = False
        v = torch.where((vbc[0] > 0) & inside, v + bdt * avg, v)
    free_u = ubc[0] > 0
    free_v = vbc[0] > 0
    if boundary.x_lo == "outflow":
        u = torch.cat([torch.where(free_u[:1], u[1:2], u[:1]), u[1:]], 0)
    if boundary.x_hi == "outflow":
        u = torch.cat([u[:nx], torch.where(free_u[nx:], u[nx - 1:nx], u[nx:])], 0)
    if boundary.y_lo == "outflow":
        v = torch.cat([torch.where(free_v[:, :1], v[:, 1:2], v[:, :1]), v[:, 1:]], 1)
    if boundary.y_hi == "outflow":
        v = torch.cat([v[:, :ny], torch.where(free_v[:, ny:], v[:, ny - 1:ny], v[:, ny:])], 1)
    u = torch.where(free_u, u, ubc[1])
    v = torch.where(free_v, v, vbc[1])
    return u, v


# --------------------------------------------------------------------------------------------
# the differentiable projection (Taichi MGPCG forward and adjoint)
# --------------------------------------------------------------------------------------------

class Projector:
    """The projection of one grid as a differentiable operation (see the module docstring).

    Owns a :class:`~lawful.kernels.mac_pressure.PressureSolver` (its own, so it never disturbs the
    warm start of a running solver) with tolerance ``rtol`` (default: the solver default for
    ``dtype``; use ~1e-13 in float64 for finite-difference gradient checks).
    """

    def __init__(self, boundary, solid: torch.Tensor, dtype, rtol: float | None = None,
                 max_iter: int = 200, device=None):
        from lawful.kernels.mac_grid import face_bc

        self.boundary = boundary
        self.periodic = boundary.periodic_axes
        self.dtype = dtype
        self.solver = PressureSolver(boundary, solid.bool(), dtype=dtype,
                                     rtol=rtol if rtol is not None else default_rtol(dtype),
                                     max_iter=max_iter, device=device if device is not None else solid.device)
        ubc, vbc = face_bc(boundary, solid.bool(), dtype)
        self.wu, self.wv = ubc[0].to(solid.device), vbc[0].to(solid.device)
        self.fluid = ~solid.bool()
        self.singular = not boundary.has_outflow
        self.last_stats = None

    def _dup(self, u, v):
        if self.periodic[0]:
            set_periodic_duplicate(u, 0)
        if self.periodic[1]:
            set_periodic_duplicate(v, 1)
        return u, v

    def forward(self, u, v):
        """Projected copies of ``u``, ``v`` (no autograd; the duplicate periodic faces are made
        copies of the first ones before the solve)."""
        uo, vo = self._dup(u.detach().clone(), v.detach().clone())
        self.last_stats = self.solver.project(uo, vo, warm_start=True)
        return uo, vo

    def adjoint(self, gu, gv):
        """``J^T (gu, gv)`` (see the module docstring)."""
        px, py = self.periodic
        gu = gu.clone()
        gv = gv.clone()
        if px:
            gu[0] += gu[-1]
            gu[-1] = 0.0
        if py:
            gv[:, 0] += gv[:, -1]
            gv[:, -1] = 0.0
        qu, qv = self._dup((gu * self.wu).contiguous(), (gv * self.wv).contiguous())
        self.solver.project(qu, qv, warm_start=False)
        phi = self.solver.phi.clone()
        if self.singular:
            f = self.fluid
            phi = torch.where(f, phi - phi[f].mean(), torch.zeros_like(phi))
        phi = phi.to(gu.dtype)
        nx, ny = phi.shape
        # unweighted gradient phi_R - phi_L on every face (0 outside a non-periodic side)
        if px:
            gx = phi - torch.roll(phi, 1, 0)
            gx = torch.cat([gx, torch.zeros_like(gx[:1])], 0)
        else:
            z = torch.zeros_like(phi[:1])
            gx = torch.cat([phi, z], 0) - torch.cat([z, phi], 0)
        if py:
            gy = phi - torch.roll(phi, 1, 1)
            gy = torch.cat([gy, torch.zeros_like(gy[:, :1])], 1)
        else:
            z = torch.zeros_like(phi[:, :1])
            gy = torch.cat([phi, z], 1) - torch.cat([z, phi], 1)
        return gu - gx, gv - gy


class _ProjectFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, v, projector):
        ctx.projector = projector
        return projector.forward(u, v)

    @staticmethod
    def backward(ctx, gu, gv):
        ru, rv = ctx.projector.adjoint(gu.contiguous(), gv.contiguous())
        return ru, rv, None


def project_differentiable(u, v, projector: Projector):
    """Project ``(u, v)`` with the Taichi MGPCG; differentiable (adjoint = one more solve)."""
    return _ProjectFn.apply(u, v, projector)


# --------------------------------------------------------------------------------------------
# the step
# --------------------------------------------------------------------------------------------

def face_gradient(p: torch.Tensor, wu: torch.Tensor, wv: torch.Tensor, periodic) -> tuple:
    """``W G p``: the projection's face gradient ``w_f (p_right - p_left)`` of a cell field ``p``
    ``(nx, ny)`` (wrapped on periodic axes, 0 outside other sides), on ``(nx+1, ny)`` / ``(nx, ny+1)``
    faces; differentiable."""
    if periodic[0]:
        gx = p - torch.roll(p, 1, 0)
        gx = torch.cat([gx, gx[:1]], 0)
    else:
        z = torch.zeros_like(p[:1])
        gx = torch.cat([p, z], 0) - torch.cat([z, p], 0)
    if periodic[1]:
        gy = p - torch.roll(p, 1, 1)
        gy = torch.cat([gy, gy[:, :1]], 1)
    else:
        z = torch.zeros_like(p[:, :1])
        gy = torch.cat([p, z], 1) - torch.cat([z, p], 1)
    return wu * gx, wv * gy


#: the Solver methods a step runs (Solver.step and the parts it calls): one replaced by a subclass
#: or on the instance changes the Taichi step but not its twin, so TorchStep refuses such a solver
_STEP_PARTS = ("step", "advect_step", "force_step", "project", "_project_step", "_project_storing",
               "_scalar_velocity", "_phi_scale", "_set_phi", "_store_pressure")


class TorchStep:
    """Torch twin of ``solver.step`` (without the corrector): ``u, v, s, gp = step(u, v, s, gp)``.

    ``solver``: the :class:`~lawful.fluids.solver.Solver` whose configuration, forcing, sources,
    face classification and geometry it mirrors. ``projection_rtol``: tolerance of the
    differentiable projection (default: the solver's). Inputs ``u`` ``(nx+1, ny)``, ``v``
    ``(nx, ny+1)``, ``s`` ``(ns, nx, ny)`` (or ``None``), and the face pressure gradient
    ``gp = (W G p)_u, (W G p)_v`` of the state's pressure (:meth:`pressure_gradient`; it is carried
    along the characteristics when ``config.pressure_predictor`` is on; ``None`` = zero). Returns
    new tensors with an autograd graph through advection, forces and projection; ``gp`` of the new
    pressure follows :func:`~lawful.fluids.solver.stored_pressure` from the projection's
    ``(u* - u') / (phi scale)`` (``u*`` before, ``u'`` after it), so no separate pressure adjoint
    is needed. The CFL substep count is chosen like the solver's (from
    the detached input).

    Refused (:class:`~lawful.kernels.errors.InputError`, naming it): a solver with step parts of
    its own (``Solver(..., advect=/force=/project=)``, or a subclass / instance replacing
    ``advect_step``, ``force_step``, ``project``, ``step`` or another method the step runs: the twin
    mirrors only the built-in ones), a capped projection (``pressure_capped=True``), inputs of
    another shape or dtype than the solver's grid and scalars, and ``s=None`` on a solver with
    buoyancy (without its scalar the force cannot be applied). ``s=None`` is otherwise allowed
    (passive scalars do not act on the velocity; none are returned).
    """

    def __init__(self, solver, projection_rtol: float | None = None):
        injected = [name for name in ("advect", "force", "project") if getattr(solver, "_" + name, None) is not None]
        if injected:
            # the twin mirrors the solver's own parts: with a user's part it would be another solver's
            # twin (a custom body force: 21 % off the Taichi step, no error)
            raise InputError(
                f"TorchStep mirrors the Solver's built-in steps, but this Solver was given its own "
                f"{', '.join(injected)} (Solver(..., {'=..., '.join(injected)}=...)), which has no torch twin: "
                "build the twin from a Solver without them, or express the change through forcing/sources, "
                "which the twin mirrors.")
        # the same for a subclass (or an instance) that replaces a part of the step: Solver.step runs
        # it, the twin the built-in one (a force_step adding a shear force: 6 % off, no error)
        from lawful.fluids.solver import Solver

        own = vars(solver)
        replaced = [name for name in _STEP_PARTS
                    if getattr(type(solver), name, None) is not getattr(Solver, name) or name in own]
        if replaced:
            raise InputError(
                f"TorchStep mirrors the Solver's built-in steps, but this {type(solver).__name__} replaces "
                f"{', '.join(replaced)} (in a subclass or on the instance), which the twin does not see and has no "
                "torch twin: build the twin from a plain lawful.fluids.Solver(state, config, forcing=..., "
                "sources=..., body_velocity=...) of the same scene, or express the change through forcing/sources, "
                "which the twin mirrors.")
        if solver.config.pressure_capped:
            raise InputError(
                "TorchStep needs a converged projection (its gradient is the exact adjoint of one), but the "
                "Solver's config has pressure_capped=True (capped solves accepted): build the twin from a "
                "config with pressure_capped=False and a pressure_max_iter the solves reach.")
        self.solver = solver
        self.config = solver.config
        self.boundary = solver.boundary
        self.periodic = solver.periodic
        self.dx = solver.dx
        self.ubc, self.vbc = solver.ubc, solver.vbc
        #: (nx, ny) bool, the fluid cells (None without obstacles): the scalars' slopes read it
        self.fluid = ~solver.solid.bool() if bool(solver.solid.any()) else None
        rtol = projection_rtol if projection_rtol is not None else solver.rtol
        self.projector = Projector(solver.boundary, solver.solid, solver.dtype, rtol=rtol,
                                   max_iter=solver.config.pressure_max_iter, device=solver.device)
        # the scalars' own velocity near moving bodies (Solver.scalar_velocity): a projector of its own
        self.scalar_projector = None
        if solver.body_free_faces is not None:
            self.scalar_projector = Projector(solver.boundary, solver.solid, solver.dtype, rtol=rtol,
                                              max_iter=solver.config.pressure_max_iter, device=solver.device)

    def pressure_gradient(self, p: torch.Tensor) -> tuple:
        """``W G p`` on the faces for a cell pressure ``p`` ``(nx, ny)`` (e.g. ``state.p``)."""
        return face_gradient(p, self.ubc[0], self.vbc[0], self.periodic)

    def _phi_scale(self, h: float) -> float:
        from lawful.fluids.solver import pressure_scale

        return pressure_scale(h, self.dx, self.config.pressure_predictor)

    def substeps(self, u, v) -> int:
        """Number of CFL substeps the solver takes from this state."""
        cfg = self.config
        m = max(float(u.detach().abs().max()), float(v.detach().abs().max()))
        cfl = m * cfg.dt / self.dx
        if not math.isfinite(cfl):
            raise NumericalError("non-finite velocity entering the torch step: the rollout blew up.")
        n = substeps(cfl, cfg.cfl_max)
        if n > cfg.max_substeps:
            raise NumericalError(f"CFL number {cfl:.3g} needs {n} substeps > max_substeps={cfg.max_substeps}.")
        return n

    def substep(self, u, v, s, gp, h: float):
        """One substep of length ``h``: advect (scalars, velocity), force, project."""
        cfg = self.config
        sol = self.solver
        dx = self.dx
        if s is not None and s.shape[0]:
            us, vs = u, v
            if self.scalar_projector is not None:     # Solver.scalar_velocity
                open_u, open_v = sol.body_free_faces
                us, vs = project_differentiable(u * open_u, v * open_v, self.scalar_projector)
            cfl = (float(us.detach().abs().max()) + float(vs.detach().abs().max())) * h / dx
            n = substeps(cfl, SCALAR_CFL_MAX)
            for _ in range(n):
                s = _advect_scalars(s, us, vs, h / dx / n, self.periodic, cfg.scalar_order, self.fluid)
        qu = qv = None
        if cfg.pressure_predictor and gp is not None:
            sc = self._phi_scale(h)
            qu, qv = u - sc * gp[0], v - sc * gp[1]
        u, v = _advect_velocity(u, v, self.ubc, self.vbc, h / dx, self.periodic,
                                cfg.advection == "maccormack", cfg.limiter, qu, qv,
                                self.boundary.ghost_coefficients())
        if s is not None and sol.sources is not None:
            s = s + h * sol.sources
        keep = 1.0 - cfg.drag * h if cfg.drag else None
        index = sol.buoyancy_index if s is not None else -1
        bdt = cfg.buoyancy * h
        if cfg.viscosity:
            # Solver.force_step: forcing, drag and buoyancy in every viscous substep, which reads the
            # velocity with the pressure impulse of p up to its time (viscosity_buoyancy_and_bc)
            c = cfg.viscosity * h / dx ** 2
            n = substeps(c, VISCOUS_NUMBER_MAX)
            carried = 0.5 if cfg.pressure_predictor else 0.0
            if keep is not None and n > 1:
                keep = 1.0 - (1.0 - keep) / n
            buoy = None
            if index >= 0 and bdt != 0.0:
                buoy = (s, index, bdt / n)
            for k in range(n):
                part = None
                if gp is not None and (carried != 0.0 or n > 1):
                    part = tuple((h / dx) * (carried - k / n) * g for g in gp)
                u, v = _viscosity_once(u, v, self.ubc, self.vbc, c / n, self.boundary, cfg.obstacle_ghost, part,
                                       keep, sol.forcing, h / n, buoy)
            index = -1          # (buoyancy done)
        else:
            if sol.forcing is not None:
                u = u + h * sol.forcing[0]
                v = v + h * sol.forcing[1]
            if keep is not None:       # free faces only, as the Taichi step
                from lawful.fluids.solver import drag_factor

                u = u * drag_factor(u, keep, sol.fixed_faces[0])
                v = v * drag_factor(v, keep, sol.fixed_faces[1])
        u, v = _buoyancy_and_bc(u, v, self.ubc, self.vbc, s, self.boundary, index, bdt)
        from lawful.fluids.solver import stored_pressure

        pu, pv = project_differentiable(u, v, self.projector)
        sc = self._phi_scale(h)
        before = gp if gp is not None else (0.0, 0.0)
        gp = tuple(stored_pressure(b, (w - p) / sc, cfg.pressure_predictor) for b, w, p in zip(before, (u, v), (pu, pv)))
        return pu, pv, s, gp

    def _check_inputs(self, u, v, s, gp) -> None:
        """Shapes and dtypes of the step's inputs against the solver's grid and scalars; ``s=None``
        is refused when buoyancy couples a scalar to the velocity (the twin then had no scalar to
        read and dropped the force: the Taichi step, whose state always holds it, applies it)."""
        sol = self.solver
        nx, ny = sol.nx, sol.ny
        ns = len(sol.scalar_names)
        want = [("u", u, (nx + 1, ny)), ("v", v, (nx, ny + 1))]
        if s is not None:
            want.append(("s", s, (ns, nx, ny)))
        if gp is not None:
            if not (isinstance(gp, (tuple, list)) and len(gp) == 2):
                raise InputError(f"torch step: gp must be None or a pair (gu, gv) of face tensors "
                                 f"(TorchStep.pressure_gradient(state.p)), got {type(gp).__name__}.")
            want += [("gp[0]", gp[0], (nx + 1, ny)), ("gp[1]", gp[1], (nx, ny + 1))]
        for name, t, shape in want:
            if not isinstance(t, torch.Tensor):
                raise InputError(f"torch step: {name} must be a torch tensor, got {type(t).__name__}.")
            if tuple(t.shape) != shape:
                extra = (f" (the solver's {ns} scalars {list(sol.scalar_names)} on its {nx}x{ny} grid, in that "
                         "order)") if name == "s" else f" (the solver's {nx}x{ny} grid)"
                raise ShapeError(f"torch step: {name} has shape {tuple(t.shape)}; it must be {shape}{extra}.")
            if t.dtype != sol.dtype:
                raise InputError(f"torch step: {name} is {t.dtype} but the solver runs in {sol.dtype}.")
        if s is None and sol.buoyancy_index >= 0:
            raise InputError(
                f"torch step: s=None, but the solver's config has buoyancy={self.config.buoyancy} from scalar "
                f"{sol.scalar_names[sol.buoyancy_index]!r}: without the scalars the twin cannot apply that force and "
                "would step another flow than the solver. Pass the scalars (state.scalars) as s.")

    def __call__(self, u, v, s=None, gp=None):
        self._check_inputs(u, v, s, gp)
        n = self.substeps(u, v)
        h = self.config.dt / n
        for _ in range(n):
            u, v, s, gp = self.substep(u, v, s, gp, h)
        return u, v, s, gp

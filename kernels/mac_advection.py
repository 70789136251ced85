"""Advection on the MAC grid (Taichi): semi-Lagrangian / MacCormack for velocity, conservative
finite-volume flux form for passive scalars.

**Velocity** (grid layout in :mod:`lawful.kernels.mac_grid`). Every face value ``q`` at position
``X`` is traced back with the explicit midpoint rule on the velocity at time n,

    X* = X - (h/2) V(X),   X_d = X - h V(X*),        h = +dt (back), -dt (forward trace)

and ``V``/``q`` are sampled by bilinear interpolation of the face arrays (``u[a, b]`` sits at
``(a, b + 1/2) dx``, ``v[a, b]`` at ``(a + 1/2, b) dx``); indices wrap on periodic axes and are
clamped to the array on other axes (zero-gradient beyond free-slip walls, inflow and outflow).
``scheme="semi_lagrangian"``: ``q^{n+1}(X) = q^n(X_d)``.
``scheme="maccormack"`` (Selle et al. 2008): ``q^ = q^n(X_d)``, ``q~ = q^(X_f)`` (forward trace
from ``X``), ``q^{n+1} = q^ + (q^n(X) - q~)/2``, clamped (``limiter=True``) to the min/max of the
four ``q^n`` samples around ``X_d``. Second order in space and time on smooth flows.
Fixed faces (walls, obstacles, inflow) are then reset to their prescribed value. Beyond a
no-slip wall the tangential component is read from the ghost ``2 U_wall - q`` (a moving lid
enters the characteristics and the carried values); elsewhere samples are clamped (zero gradient).

**Scalars** ``s`` (``(ns, nx, ny)`` cell averages): ``s_c -= dt/dx (F_{i+1} - F_i + G_{j+1} - G_j)``
with face fluxes ``F = u_f s_face`` (``G`` likewise with ``v``); ``s_face`` is the upwind cell's
value plus (``order=2``) the minmod-limited slope term ``(1 - |u_f| dt/dx)/2 minmod(s_c - s_{c-1},
s_{c+1} - s_c)`` (MUSCL / Fromm with limiter; slopes are 0 next to a non-periodic side or an obstacle cell, the
``fluid`` mask, so what obstacle cells hold never shapes the flow's); a face
whose upwind cell lies outside the domain carries no scalar. Fluxes are stored once per face, so
the total ``sum(s) dx^2`` changes only by rounding. Stable for ``(max|u| + max|v|) dt/dx <= 1/2``
(:func:`advect_scalars` substeps to stay there).
"""


import functools

import torch

from lawful.kernels.errors import InputError, ShapeError
from lawful.kernels.fast_launch import fast_kernels
from lawful.kernels.mac_grid import SCALAR_CFL_MAX, record_writes, serial_grid, substeps, unread_array
from lawful.kernels.precision import dtype_name
from lawful.kernels.runtime import ensure_taichi, taichi_real

__all__ = ["advect_velocity", "advect_scalars", "SCHEMES", "velocity_workspace", "ghost_tensor"]

SCHEMES = ("semi_lagrangian", "maccormack")


@functools.lru_cache(maxsize=None)
def _kernels(real_name: str):
    ti = __import__("taichi")
    real = taichi_real(real_name)
    A2 = ti.types.ndarray(dtype=real, ndim=2)
    A3 = ti.types.ndarray(dtype=real, ndim=3)

    A1 = ti.types.ndarray(dtype=real, ndim=1)
    f64 = ti.f64
    F3 = ti.types.ndarray(dtype=f64, ndim=3)
    from lawful.kernels.mac_pressure import PHI, WX, WY, face_gradient_funcs     # the pressure solver's channels

    face_cells, phi_step_x, phi_step_y = face_gradient_funcs()   # its face update's rule

    @ti.func
    def wrap(i, n):
        """``i`` modulo ``n`` (Python sign rule) for any integer ``i``; the in-range case costs two
        compares instead of an integer division."""
        r = i
        if r < 0 or r >= n:
            r = i % n
        return r

    @ti.func
    def sample(q: ti.template(), c, gx, gy, nqx, nqy, nx, ny, px: ti.template(), py: ti.template(),
               gh: ti.template(), gaxis: ti.template()):
        """Bilinear sample of q[c] at fractional index (gx, gy); returns (value, min, max).

        Indices wrap modulo ``nx``/``ny`` on periodic axes (``px``/``py``, compile-time). Along the
        ghosted axis ``gaxis`` (1: y for u, 0: x for v; the axis on which the array is
        cell-centred) a non-periodic position may reach half a cell beyond the last row, where the
        ghost ``a q + b`` of the boundary row stands (``gh``: Boundary.ghost_coefficients, lo/hi
        pairs at ``gh[4 * (1 - gaxis) ...]``); on the other axis positions are clamped."""
        x = ti.cast(gx, real)
        y = ti.cast(gy, real)
        if ti.static(not px):
            lo_x = ti.cast(0.0, real)
            hi_x = ti.cast(nqx - 1, real)
            if ti.static(gaxis == 0):
                lo_x = ti.cast(-0.5, real)
                hi_x = ti.cast(nqx, real) - ti.cast(0.5, real)
            x = ti.min(ti.max(x, lo_x), hi_x)
        if ti.static(not py):
            lo_y = ti.cast(0.0, real)
            hi_y = ti.cast(nqy - 1, real)
            if ti.static(gaxis == 1):
                lo_y = ti.cast(-0.5, real)
                hi_y = ti.cast(nqy, real) - ti.cast(0.5, real)
            y = ti.min(ti.max(y, lo_y), hi_y)
        fi = ti.floor(x)
        fj = ti.floor(y)
        tx = x - fi
        ty = y - fj
        i0 = ti.cast(fi, ti.i32)
        j0 = ti.cast(fj, ti.i32)
        i1 = i0 + 1
        j1 = j0 + 1
        if ti.static(px):
            i0 = wrap(i0, nx)
            i1 = i0 + 1
            if i1 == nx:
                i1 = 0
        elif ti.static(gaxis != 0):
            # a position clamped to the last row reads rows nqx-2 and nqx-1 with weight 1 on the
            # last, as one clamped to row 0 reads rows 0 and 1 with weight 1 on row 0: the same
            # value as reading the last row twice, and limiter bounds that mirror the low side's
            if i0 > nqx - 2:
                i0 = nqx - 2
                tx = x - ti.cast(i0, real)
            i1 = i0 + 1
        if ti.static(py):
            j0 = wrap(j0, ny)
            j1 = j0 + 1
            if j1 == ny:
                j1 = 0
        elif ti.static(gaxis != 1):
            if j0 > nqy - 2:        # as for x above
                j0 = nqy - 2
                ty = y - ti.cast(j0, real)
            j1 = j0 + 1
        a = fetch(q, c, i0, j0, nqx, nqy, px, py, gh, gaxis)
        b = fetch(q, c, i1, j0, nqx, nqy, px, py, gh, gaxis)
        d = fetch(q, c, i0, j1, nqx, nqy, px, py, gh, gaxis)
        e = fetch(q, c, i1, j1, nqx, nqy, px, py, gh, gaxis)
        val = (1 - ty) * ((1 - tx) * a + tx * b) + ty * ((1 - tx) * d + tx * e)
        lo = ti.min(ti.min(a, b), ti.min(d, e))
        hi = ti.max(ti.max(a, b), ti.max(d, e))
        return ti.Vector([val, lo, hi])

    @ti.func
    def fetch(q: ti.template(), c, i, j, nqx, nqy, px: ti.template(), py: ti.template(), gh: ti.template(),
              gaxis: ti.template()):
        """q[c, i, j], or the ghost a q + b of the boundary row when the ghosted index is -1 / n
        (indices on a periodic axis arrive wrapped: no clamp, no ghost there)."""
        ii, jj = i, j
        if ti.static(not px):
            ii = ti.min(ti.max(i, 0), nqx - 1)
        if ti.static(not py):
            jj = ti.min(ti.max(j, 0), nqy - 1)
        val = q[c, ii, jj]
        if ti.static(not (px if gaxis == 0 else py)):
            k = ti.static(0 if gaxis == 1 else 4)
            g = j if ti.static(gaxis == 1) else i
            ng = nqy if ti.static(gaxis == 1) else nqx
            if g < 0:
                val = gh[k] * val + gh[k + 1]
            elif g >= ng:
                val = gh[k + 2] * val + gh[k + 3]
        return val

    @ti.func
    def vel(uw: ti.template(), vw: ti.template(), x, y, nx, ny, px: ti.template(), py: ti.template(),
            gh: ti.template()):
        uu = sample(uw, 0, x, y - ti.cast(0.5, real), nx + 1, ny, nx, ny, px, py, gh, 1)[0]
        vv = sample(vw, 0, x - ti.cast(0.5, real), y, nx, ny + 1, nx, ny, px, py, gh, 0)[0]
        return ti.Vector([uu, vv])

    @ti.func
    def vel_uface(uw: ti.template(), vw: ti.template(), ie, j, nx, ny, px: ti.template(), py: ti.template(),
                  gh: ti.template()):
        """The velocity at u face (ie, j + 1/2) (``ie`` wrapped on a periodic x): ``vel`` there
        without interpolating -- u is the face's own value and v the mean of the four v faces
        around it (bilinear weights 1/2, 1/2)."""
        i0 = ie - 1
        if ti.static(px):
            if i0 < 0:
                i0 = nx - 1
        j1 = j + 1
        if ti.static(py):
            if j1 == ny:
                j1 = 0
        a = fetch(vw, 0, i0, j, nx, ny + 1, px, py, gh, 0)
        b = fetch(vw, 0, ie, j, nx, ny + 1, px, py, gh, 0)
        d = fetch(vw, 0, i0, j1, nx, ny + 1, px, py, gh, 0)
        e = fetch(vw, 0, ie, j1, nx, ny + 1, px, py, gh, 0)
        half = ti.cast(0.5, real)
        return ti.Vector([uw[0, ie, j], half * (half * a + half * b) + half * (half * d + half * e)])

    @ti.func
    def vel_vface(uw: ti.template(), vw: ti.template(), i, je, nx, ny, px: ti.template(), py: ti.template(),
                  gh: ti.template()):
        """The velocity at v face (i + 1/2, je) (``je`` wrapped on a periodic y), as ``vel_uface``."""
        i1 = i + 1
        if ti.static(px):
            if i1 == nx:
                i1 = 0
        j0 = je - 1
        if ti.static(py):
            if j0 < 0:
                j0 = ny - 1
        a = fetch(uw, 0, i, j0, nx + 1, ny, px, py, gh, 1)
        b = fetch(uw, 0, i1, j0, nx + 1, ny, px, py, gh, 1)
        d = fetch(uw, 0, i, je, nx + 1, ny, px, py, gh, 1)
        e = fetch(uw, 0, i1, je, nx + 1, ny, px, py, gh, 1)
        half = ti.cast(0.5, real)
        return ti.Vector([half * (half * a + half * b) + half * (half * d + half * e), vw[0, i, je]])

    @ti.func
    def trace(uw: ti.template(), vw: ti.template(), x, y, v1, h, nx, ny, px: ti.template(), py: ti.template(),
              gh: ti.template()):
        """Midpoint-rule trace over time h (grid units: positions / dx, h = dt / dx) from (x, y),
        where the velocity is ``v1``."""
        half = ti.cast(0.5, real)
        v2 = vel(uw, vw, x - half * h * v1[0], y - half * h * v1[1], nx, ny, px, py, gh)
        return ti.Vector([x - h * v2[0], y - h * v2[1]])

    @ti.kernel
    def advect(u: A2, v: A2, uw: A3, vw: A3, h: real, px: ti.template(), py: ti.template(), mac: ti.template(),
               limiter: ti.template(), ready: ti.template(), gh: A1, ser: ti.template()):
        advect_loops(u, v, uw, vw, h, px, py, mac, limiter, ready, gh, ser)

    @ti.kernel
    def predict_advect(u: A2, v: A2, uw: A3, vw: A3, a: F3, h: real, px: ti.template(), py: ti.template(),
                       mac: ti.template(), limiter: ti.template(), gh: A1, p: A2, pscale: real,
                       set_phi: ti.template(), ser: ti.template()):
        # the pressure predictor's carried values u - G phi (PressureSolver.subtract_phi_gradient's
        # update, read from the solver's float64 array ``a``) into uw[4] / vw[4], then the advection
        # of that quantity: what subtract_phi_gradient on copies of u, v and advect(ready) did in
        # two launches. With ``set_phi``, phi = p * pscale first (the product in p's dtype, as
        # torch.mul(p, pscale, out=phi) forms it)
        if ti.static(set_phi):
            if ti.static(ser):
                ti.loop_config(serialize=True)
            for i in range(p.shape[0]):
                for j in range(p.shape[1]):
                    a[PHI, i, j] = ti.cast(p[i, j] * pscale, f64)
        predict_loops(u, v, uw, vw, a, px, py, ser)
        advect_loops(u, v, uw, vw, h, px, py, mac, limiter, True, gh, ser)

    @ti.func
    def predict_loops(u: ti.template(), v: ti.template(), uw: ti.template(), vw: ti.template(), a: ti.template(),
                      px: ti.template(), py: ti.template(), ser: ti.template()):
        """``uw[4] = u - w (phi_right - phi_left)`` on the faces with weight ``w > 0`` (``u`` on the
        others), ``vw[4]`` likewise: the face update of mac_pressure's ``gradient_loops`` (the same
        funcs, :func:`~lawful.kernels.mac_pressure.face_gradient_funcs`, the same float64
        arithmetic), written beside the face instead of over it."""
        nx, ny = v.shape[0], u.shape[1]
        if ti.static(ser):
            ti.loop_config(serialize=True)
        for i in range(u.shape[0]):
            ir, il = face_cells(i, nx, px)      # the cells right and left of face i
            for j in range(u.shape[1]):
                q = u[i, j]
                w = a[WX, i, j]
                if w > 0:
                    q = ti.cast(ti.cast(u[i, j], f64) - w * phi_step_x(a, ir, il, j, nx), real)
                uw[4, i, j] = q
        if ti.static(ser):
            ti.loop_config(serialize=True)
        for i in range(v.shape[0]):
            for j in range(v.shape[1]):
                q = v[i, j]
                w = a[WY, i, j]
                if w > 0:
                    jt, jb = face_cells(j, ny, py)      # the cells above face j and below it
                    q = ti.cast(ti.cast(v[i, j], f64) - w * phi_step_y(a, i, jt, jb, ny), real)
                vw[4, i, j] = q

    @ti.func
    def advect_loops(u: ti.template(), v: ti.template(), uw: ti.template(), vw: ti.template(), h,
                     px: ti.template(), py: ti.template(), mac: ti.template(), limiter: ti.template(),
                     ready: ti.template(), gh: ti.template(), ser: ti.template()):
        # ser: every loop on the calling thread (small grids: cheaper than the thread pool's hand-off)
        # uw/vw channels: 0 = tracing velocity u^n, 1 = q^, 2 = free mask, 3 = fixed value,
        # 4 = advected quantity q^n (= u^n unless the caller filled it: ready = 1), 5/6 = limiter bounds
        nx, ny = v.shape[0], u.shape[1]
        if ti.static(ser):
            ti.loop_config(serialize=True)
        for i in range(u.shape[0]):
            for j in range(u.shape[1]):
                uw[0, i, j] = u[i, j]
                if ti.static(not ready):
                    uw[4, i, j] = u[i, j]
        if ti.static(ser):
            ti.loop_config(serialize=True)
        for i in range(v.shape[0]):
            for j in range(v.shape[1]):
                vw[0, i, j] = v[i, j]
                if ti.static(not ready):
                    vw[4, i, j] = v[i, j]
        # channels 5, 6 keep the min/max of the four q^n samples around the departure point; without
        # MacCormack q^ is the result, written straight to u/v (the traces read channel 0 only)
        if ti.static(ser):
            ti.loop_config(serialize=True)
        for i in range(u.shape[0]):
            for j in range(u.shape[1]):
                ie = i
                if ti.static(px):
                    if i == nx:
                        ie = 0
                v1 = vel_uface(uw, vw, ie, j, nx, ny, px, py, gh)
                p = trace(uw, vw, ti.cast(ie, real), j + ti.cast(0.5, real), v1, h, nx, ny, px, py, gh)
                s = sample(uw, 4, p[0], p[1] - ti.cast(0.5, real), nx + 1, ny, nx, ny, px, py, gh, 1)
                if ti.static(mac):
                    uw[1, i, j] = s[0]
                    if ti.static(limiter):
                        uw[5, i, j] = s[1]
                        uw[6, i, j] = s[2]
                else:
                    u[i, j] = uw[2, i, j] * s[0] + (1 - uw[2, i, j]) * uw[3, i, j]
        if ti.static(ser):
            ti.loop_config(serialize=True)
        for i in range(v.shape[0]):
            for j in range(v.shape[1]):
                je = j
                if ti.static(py):
                    if j == ny:
                        je = 0
                v1 = vel_vface(uw, vw, i, je, nx, ny, px, py, gh)
                p = trace(uw, vw, i + ti.cast(0.5, real), ti.cast(je, real), v1, h, nx, ny, px, py, gh)
                s = sample(vw, 4, p[0] - ti.cast(0.5, real), p[1], nx, ny + 1, nx, ny, px, py, gh, 0)
                if ti.static(mac):
                    vw[1, i, j] = s[0]
                    if ti.static(limiter):
                        vw[5, i, j] = s[1]
                        vw[6, i, j] = s[2]
                else:
                    v[i, j] = vw[2, i, j] * s[0] + (1 - vw[2, i, j]) * vw[3, i, j]
        if ti.static(mac):
            # forward trace from the face: its first velocity is the backward trace's (same point)
            if ti.static(ser):
                ti.loop_config(serialize=True)
            for i in range(u.shape[0]):
                for j in range(u.shape[1]):
                    ie = i
                    if ti.static(px):
                        if i == nx:
                            ie = 0
                    v1 = vel_uface(uw, vw, ie, j, nx, ny, px, py, gh)
                    pf = trace(uw, vw, ti.cast(ie, real), j + ti.cast(0.5, real), v1, -h, nx, ny, px, py, gh)
                    qt = sample(uw, 1, pf[0], pf[1] - ti.cast(0.5, real), nx + 1, ny, nx, ny, px, py, gh, 1)[0]
                    q = uw[1, i, j] + ti.cast(0.5, real) * (uw[4, i, j] - qt)
                    if ti.static(limiter):
                        q = ti.min(ti.max(q, uw[5, i, j]), uw[6, i, j])
                    u[i, j] = uw[2, i, j] * q + (1 - uw[2, i, j]) * uw[3, i, j]
            if ti.static(ser):
                ti.loop_config(serialize=True)
            for i in range(v.shape[0]):
                for j in range(v.shape[1]):
                    je = j
                    if ti.static(py):
                        if j == ny:
                            je = 0
                    v1 = vel_vface(uw, vw, i, je, nx, ny, px, py, gh)
                    pf = trace(uw, vw, i + ti.cast(0.5, real), ti.cast(je, real), v1, -h, nx, ny, px, py, gh)
                    qt = sample(vw, 1, pf[0] - ti.cast(0.5, real), pf[1], nx, ny + 1, nx, ny, px, py, gh, 0)[0]
                    q = vw[1, i, j] + ti.cast(0.5, real) * (vw[4, i, j] - qt)
                    if ti.static(limiter):
                        q = ti.min(ti.max(q, vw[5, i, j]), vw[6, i, j])
                    v[i, j] = vw[2, i, j] * q + (1 - vw[2, i, j]) * vw[3, i, j]

    @ti.func
    def cell(s: ti.template(), fluid: ti.template(), c, i, j, nx, ny, px, py, read_fluid: ti.template()):
        """s[c, i, j] with wrap on periodic axes: vector (value, inside, fluid), inside = 0 outside
        the box; fluid = ``fluid[0, i, j]`` inside it with ``read_fluid`` (else 1), 0 outside."""
        ii, jj = i, j
        inside = 1
        if ii < 0 or ii >= nx:
            if px:
                ii = (ii + nx) % nx
            else:
                inside = 0
        if jj < 0 or jj >= ny:
            if py:
                jj = (jj + ny) % ny
            else:
                inside = 0
        val = ti.cast(0.0, real)
        fl = ti.cast(0.0, real)
        if inside:
            val = s[c, ii, jj]
            fl = ti.cast(1.0, real)
            if ti.static(read_fluid):
                fl = fluid[0, ii, jj]
        return ti.Vector([val, ti.cast(inside, real), fl])

    @ti.func
    def minmod(a, b):
        r = ti.cast(0.0, real)
        if a * b > 0:
            r = ti.min(ti.abs(a), ti.abs(b))
            if a < 0:
                r = -r
        return r

    @ti.func
    def face_value(s: ti.template(), fluid: ti.template(), c, ic, jc, di, dj, vel_f, h, order: ti.template(),
                   nx, ny, px, py):
        """Upwind value at a face of cell (ic, jc) along (di, dj) = the flow direction. The
        order-2 slope needs both neighbours inside the box and fluid (``fluid`` > 0): what sits in
        an obstacle's cells is not the flow's and must not shape it (a side or a body: first order)."""
        cv = cell(s, fluid, c, ic, jc, nx, ny, px, py, False)
        val = cv[0]
        if ti.static(order == 2):
            if cv[1] > 0:
                m = cell(s, fluid, c, ic - di, jc - dj, nx, ny, px, py, True)
                p = cell(s, fluid, c, ic + di, jc + dj, nx, ny, px, py, True)
                if m[1] > 0 and p[1] > 0 and m[2] > 0 and p[2] > 0:
                    val += ti.cast(0.5, real) * (1 - ti.abs(vel_f) * h) * minmod(val - m[0], p[0] - val)
        return val

    def make_scalar(order):
        @ti.kernel
        def adv(s: A3, fx: A3, fy: A3, u: A2, v: A2, comp: A3, fluid: A3, h: real, px: int, py: int,
                ser: ti.template()):
            nx, ny = v.shape[0], u.shape[1]
            if ti.static(ser):
                ti.loop_config(serialize=True)
            for c, i in ti.ndrange(fx.shape[0], fx.shape[1]):
                for j in range(fx.shape[2]):
                    uf = u[i, j]
                    ie = i          # wrapped by a compare: ``x if c else y`` would divide on every face
                    if px and i == nx:
                        ie = 0
                    sf = ti.cast(0.0, real)
                    if uf > 0:
                        sf = face_value(s, fluid, c, ie - 1, j, 1, 0, uf, h, order, nx, ny, px, py)
                    elif uf < 0:
                        sf = face_value(s, fluid, c, ie, j, -1, 0, uf, h, order, nx, ny, px, py)
                    fx[c, i, j] = uf * sf
            if ti.static(ser):
                ti.loop_config(serialize=True)
            for c, i in ti.ndrange(fy.shape[0], fy.shape[1]):
                for j in range(fy.shape[2]):
                    vf = v[i, j]
                    je = j
                    if py and j == ny:
                        je = 0
                    sf = ti.cast(0.0, real)
                    if vf > 0:
                        sf = face_value(s, fluid, c, i, je - 1, 0, 1, vf, h, order, nx, ny, px, py)
                    elif vf < 0:
                        sf = face_value(s, fluid, c, i, je, 0, -1, vf, h, order, nx, ny, px, py)
                    fy[c, i, j] = vf * sf
            if ti.static(ser):
                ti.loop_config(serialize=True)
            for c, i in ti.ndrange(s.shape[0], s.shape[1]):
                for j in range(s.shape[2]):
                    # compensated update: the sum is formed in float64 and the part lost by rounding it
                    # to the storage dtype is kept in comp and re-added next time, so rounding errors
                    # do not random-walk the total mass (a float64 round trip, which fast-math keeps)
                    delta = ti.cast(comp[c, i, j], ti.f64) - ti.cast(h, ti.f64) * (
                        (ti.cast(fx[c, i + 1, j], ti.f64) - ti.cast(fx[c, i, j], ti.f64))
                        + (ti.cast(fy[c, i, j + 1], ti.f64) - ti.cast(fy[c, i, j], ti.f64)))
                    new = ti.cast(s[c, i, j], ti.f64) + delta
                    stored = ti.cast(new, real)
                    comp[c, i, j] = ti.cast(new - ti.cast(stored, ti.f64), real)
                    s[c, i, j] = stored
        return adv

    return fast_kernels(dict(advect=advect, predict_advect=predict_advect, scalar1=make_scalar(1),
                             scalar2=make_scalar(2)))


def velocity_workspace(ubc: torch.Tensor, vbc: torch.Tensor):
    """Allocate the ``(7, ...)`` work arrays :func:`advect_velocity` needs, with the face
    classification ``ubc``/``vbc`` (from :func:`lawful.kernels.mac_grid.face_bc`) in channels 2-3.
    Channel 4 holds the advected quantity (``uw[4]``, ``vw[4]``: fill it and pass
    ``quantity_ready=True`` to advect something other than the velocity itself)."""
    uw = torch.zeros((7,) + tuple(ubc.shape[1:]), dtype=ubc.dtype, device=ubc.device)
    vw = torch.zeros((7,) + tuple(vbc.shape[1:]), dtype=vbc.dtype, device=vbc.device)
    uw[2:4] = ubc
    vw[2:4] = vbc
    return uw, vw


def ghost_tensor(boundary=None, dtype=torch.float32, device=None) -> torch.Tensor:
    """The ``(8,)`` ghost coefficients :func:`advect_velocity` takes
    (:meth:`lawful.kernels.mac_grid.Boundary.ghost_coefficients`; ``None``: zero-gradient
    everywhere, i.e. clamped samples)."""
    vals = boundary.ghost_coefficients() if boundary is not None else (1.0, 0.0) * 4
    return torch.tensor(vals, dtype=dtype, device=device)


def advect_velocity(u, v, uw, vw, dt: float, dx: float, periodic=(True, True),
                    scheme: str = "maccormack", limiter: bool = True, quantity_ready: bool = False,
                    ghost=None, gradient=None, phi_from=None) -> None:
    """Advect the face velocities ``u`` ``(nx+1, ny)``, ``v`` ``(nx, ny+1)`` by themselves over
    ``dt`` (in place). ``uw``/``vw`` come from :func:`velocity_workspace`; with
    ``quantity_ready=True`` the characteristics are traced with ``u``/``v`` but the values carried
    are ``uw[4]``/``vw[4]`` (the result still lands in ``u``/``v``). ``gradient``: a
    :class:`~lawful.kernels.mac_pressure.PressureSolver` of this grid, boundary and dtype; the
    values carried are then ``u - G phi``, ``v - G phi`` (its face gradient of its ``phi``, the
    update :meth:`~lawful.kernels.mac_pressure.PressureSolver.subtract_phi_gradient` applies),
    put into ``uw[4]``/``vw[4]`` in the same launch: the numbers of copying ``u``, ``v`` there,
    ``gradient.subtract_phi_gradient(uw[4], vw[4])`` and ``quantity_ready=True`` (the pressure
    predictor of :class:`~lawful.fluids.solver.Solver`); not with ``quantity_ready``. ``phi_from``
    (with ``gradient`` only): ``(p, scale)``, ``p`` a contiguous ``(nx, ny)`` array of the
    velocity's dtype: the gradient's ``phi`` is first set to ``p * scale`` in the same launch (the
    product in ``p``'s dtype, the numbers of ``torch.mul(p, scale, out=gradient.phi)``). ``ghost``: the wall ghosts,
    :func:`ghost_tensor` of the boundary (a Boundary is converted; ``None`` clamps: zero gradient
    beyond every side). Units: the domain's (``dx`` length, ``dt`` time; not cells and steps); dtype float32 or float64,
    all arrays alike."""
    if scheme not in SCHEMES:
        raise InputError(f"advection scheme {scheme!r} is unknown: use one of {SCHEMES}.")
    ensure_taichi()
    if not isinstance(ghost, torch.Tensor):
        ghost = ghost_tensor(ghost, u.dtype, u.device)
    px, py = bool(periodic[0]), bool(periodic[1])
    if phi_from is not None and gradient is None:
        raise InputError("advect_velocity: phi_from=(p, scale) sets the gradient's phi; give gradient= too.")
    if gradient is not None:
        if quantity_ready:
            raise InputError("advect_velocity: give either quantity_ready=True (uw[4]/vw[4] filled) or a "
                             "gradient to subtract from u, v, not both.")
        nx, ny = v.shape[0], u.shape[1]
        if (gradient.nx, gradient.ny) != (nx, ny) or gradient.dtype != u.dtype or \
                (gradient.px, gradient.py) != (int(px), int(py)):
            raise ShapeError(f"advect_velocity: the gradient's pressure solver is for a {gradient.nx}x{gradient.ny} "
                             f"{gradient.dtype} grid with periodic axes {(bool(gradient.px), bool(gradient.py))}, "
                             f"the velocities for {nx}x{ny} {u.dtype} with {(px, py)}: use the solver of this grid.")
        p, pscale = (unread_array(u.dtype, u.device, 2), 0.0) if phi_from is None else phi_from
        if phi_from is not None and (tuple(p.shape) != (nx, ny) or p.dtype != u.dtype or p.device != u.device):
            raise ShapeError(f"advect_velocity: phi_from's p is {tuple(p.shape)} {p.dtype} on {p.device}; it must be "
                             f"the cell array ({nx}, {ny}) {u.dtype} on {u.device} of these velocities.")
        k = _kernels(dtype_name(u.dtype))["predict_advect"]
        k(u, v, uw, vw, gradient.fine, float(dt) / float(dx), px, py, scheme == "maccormack", bool(limiter), ghost,
          p, float(pscale), phi_from is not None, serial_grid(u.shape[0], u.shape[1]))
    else:
        k = _kernels(dtype_name(u.dtype))["advect"]
        k(u, v, uw, vw, float(dt) / float(dx), px, py,
          scheme == "maccormack", bool(limiter), bool(quantity_ready), ghost, serial_grid(u.shape[0], u.shape[1]))
    record_writes(u, v, uw, vw)


def advect_scalars(s, fx, fy, u, v, dt: float, dx: float, periodic=(True, True), order: int = 2,
                   cfl_max: float = SCALAR_CFL_MAX, comp=None, fluid=None) -> int:
    """Conservative flux-form advection of cell scalars ``s`` ``(ns, nx, ny)`` by face velocities
    (in place), using flux buffers ``fx`` ``(ns, nx+1, ny)`` and ``fy`` ``(ns, nx, ny+1)``.
    ``fluid``: ``(1, nx, ny)`` in ``s``'s dtype, 1 on fluid cells and 0 on obstacle cells (None: all
    fluid), read by the order-2 slope, which a neighbour that is not fluid turns off (first order
    there, as at a side of the box): values in obstacle cells never shape the flow's.
    ``comp`` (``s``-shaped, zeros at first) carries each cell's rounding error of the update
    to the next call (compensated summation: float32 totals stay constant to ~1e-7 over 10^4 steps);
    pass the same tensor every step. Substeps so that ``(max|u| + max|v|) dt_sub / dx <=
    cfl_max``; returns the substep count."""
    if order not in (1, 2):
        raise InputError(f"scalar advection order={order!r}: use 1 (upwind) or 2 (MUSCL/minmod).")
    if s.shape[0] == 0:
        return 0
    ns, nx, ny = s.shape
    comp_shape = None if comp is None else tuple(comp.shape)
    for name, shape, want in (("fx", tuple(fx.shape), (ns, nx + 1, ny)), ("fy", tuple(fy.shape), (ns, nx, ny + 1)),
                              ("comp", comp_shape, (ns, nx, ny)), ("u", tuple(u.shape), (nx + 1, ny)),
                              ("v", tuple(v.shape), (nx, ny + 1)),
                              ("fluid", None if fluid is None else tuple(fluid.shape), (1, nx, ny))):
        if shape is not None and shape != want:
            raise ShapeError(f"advect_scalars: {name} has shape {shape} but scalars of shape {tuple(s.shape)} need "
                             f"{want}: make the flux buffers, compensation and fluid mask for this many scalars and "
                             "this grid.")
    if fluid is not None and fluid.dtype != s.dtype:
        raise ShapeError(f"advect_scalars: fluid has dtype {fluid.dtype}; scalars of dtype {s.dtype} need it in "
                         f"{s.dtype} (1 on fluid cells, 0 on obstacles).")
    ensure_taichi()
    k = _kernels(dtype_name(s.dtype))["scalar2" if order == 2 else "scalar1"]
    cfl = (float(u.abs().max()) + float(v.abs().max())) * float(dt) / float(dx)
    n = substeps(cfl, cfl_max)
    h = float(dt) / float(dx) / n
    if comp is None:
        comp = torch.zeros_like(s)
    if fluid is None:
        fluid = torch.ones((1, nx, ny), dtype=s.dtype, device=s.device)
    ser = serial_grid(s.shape[1], s.shape[2] * s.shape[0])
    for _ in range(n):
        k(s, fx, fy, u, v, comp, fluid, h, int(periodic[0]), int(periodic[1]), ser)
    record_writes(s, fx, fy, comp)
    return n

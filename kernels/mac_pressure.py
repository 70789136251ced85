"""Pressure projection on the MAC grid: multigrid-preconditioned conjugate gradients in Taichi.

The discrete problem (unscaled, ``phi = p dt / (rho dx)``): for every fluid cell ``c``

    sum_f w_f (phi_c - phi_nb(f)) = -D_c,     D_c = u[i+1,j] - u[i,j] + v[i,j+1] - v[i,j]

over its four faces ``f`` with weight ``w_f`` = the face's free mask (:func:`lawful.kernels.mac_grid.face_bc`);
``phi_nb`` is the neighbour across the face, wrapped on periodic axes and 0 outside a non-periodic
side (an open outflow face = Dirichlet ``p = 0``; walls, obstacles and inflow faces have ``w = 0``,
i.e. Neumann). The projection is then ``u_f -= w_f (phi_right - phi_left)``, which makes ``D_c``
equal to the solve's residual. Without an outflow side the problem is singular (constants); the
right-hand side and every preconditioned vector are then kept mean-free over the fluid cells.

Solver: CG preconditioned by one symmetric V-cycle of cell-centred multigrid (aggregation:
piecewise-constant prolongation, restriction = its transpose, coarse operator = Galerkin ``P^T A P``
scaled by 1/2, i.e. coarse face weight = half the sum of the fine face weights it covers;
red-black Gauss-Seidel, 2 sweeps before (red, black) and after (black, red); the coarsest level
(at most 8 cells across, or where a periodic axis turns odd) by serial symmetric Gauss-Seidel).
Levels coarsen any grid size, with walls, outflow and obstacle masks.

Launches: a solve is ``start`` (right-hand side, mean removal, first residual, max|u|), one
``cg_iter`` per CG iteration (the whole V-cycle and the CG vector updates), and ``finish`` (true
residual and, when done, the velocity update, max|u| after). Levels of at most
:func:`~lawful.kernels.mac_grid.serial_cells` cells run their loops on the calling thread.

Stopping rule ("relative residual"): ``max_c |r_c| <= (rtol - 4 eps) * max_f |u_f|``, i.e. the
relative divergence ``max|div u| dx / max|u|`` the projected field will have, with room left for
rounding the velocity update to the state's dtype (eps of float32 or float64). The solve runs in
float64 whatever the state's dtype (f32 residuals cannot reach 1e-6 relative at large N). Default
``rtol``: 1e-6 (float32 state), 1e-10 (float64). A solve that does not converge within
``max_iter`` iterations raises :class:`~lawful.kernels.errors.ConvergenceError`, and so does a
projection that ends above its tolerance in any other way (e.g. after its re-solves when removing
the gradient shrank the field); only a solver built with ``capped=True`` returns such a field, with
``ProjectionStats.converged`` False. Divergence at the rounding level of the input field
(``8 eps max|u_in|``) counts as converged: nothing smaller is representable.
"""


import functools
import math
from dataclasses import dataclass

import torch

from lawful.kernels.errors import ConvergenceError, InputError, NumericalError
from lawful.kernels.fast_launch import fast_kernels
from lawful.kernels.mac_grid import Boundary, face_bc, record_writes, serial_grid, unread_array
from lawful.kernels.precision import dtype_name
from lawful.kernels.runtime import check_generation, ensure_taichi, runtime_generation, taichi_real

__all__ = ["PressureSolver", "ProjectionStats", "default_rtol"]

X, B, R, WX, WY, PHI, RC, P, AP = range(9)  # R: spare (residuals are restricted on the fly)
P2 = R  # on the float64 fine level: the second buffer of the CG search direction
_PRE_SWEEPS = 2  # >= 2: up() sums X in its last sweep
_BOTTOM_MAX = 8


def default_rtol(dtype: torch.dtype) -> float:
    """The default relative-divergence tolerance: 1e-6 for float32 states, 1e-10 for float64."""
    return 1e-6 if dtype == torch.float32 else 1e-10


@functools.lru_cache(maxsize=None)
def face_gradient_funcs():
    """The Taichi funcs of the face update ``u_f - w_f (phi_hi - phi_lo)``, shared by the
    projection's velocity update (``gradient_loops``) and the advection's pressure predictor
    (:mod:`lawful.kernels.mac_advection`): ``face_cells(f, n, periodic)`` gives the cells
    ``(hi, lo)`` on either side of face ``f`` along an axis of ``n`` cells (wrapped when periodic;
    ``n`` or ``-1`` where there is none, found by compares: an integer division per face cost more
    than the update), ``phi_step_x(a, hi, lo, j, n)`` / ``phi_step_y(a, i, hi, lo, n)`` the float64
    ``phi_hi - phi_lo`` of the solver's array ``a`` (a missing cell reads 0)."""
    import taichi as ti

    f64 = ti.f64

    @ti.func
    def face_cells(f, n, periodic):
        hi = f
        if hi == n and periodic:
            hi = 0
        lo = hi - 1
        if lo < 0 and periodic:
            lo = n - 1
        return hi, lo

    @ti.func
    def phi_step_x(a: ti.template(), hi, lo, j, n):
        ph = ti.cast(0.0, f64)
        pl = ti.cast(0.0, f64)
        if hi < n:
            ph = a[PHI, hi, j]
        if lo >= 0:
            pl = a[PHI, lo, j]
        return ph - pl

    @ti.func
    def phi_step_y(a: ti.template(), i, hi, lo, n):
        ph = ti.cast(0.0, f64)
        pl = ti.cast(0.0, f64)
        if hi < n:
            ph = a[PHI, i, hi]
        if lo >= 0:
            pl = a[PHI, i, lo]
        return ph - pl

    return face_cells, phi_step_x, phi_step_y


@dataclass
class ProjectionStats:
    """What one projection did: CG iterations, the final relative residual (max-norm, relative to
    max|u|: the relative divergence left), the L2 residual relative to the right-hand side, and the
    relative divergence before the projection; ``converged`` is False only for a capped solver
    (``PressureSolver(capped=True)``) that stopped above its tolerance."""

    iterations: int
    residual: float
    residual_l2: float
    initial: float
    converged: bool = True


@functools.lru_cache(maxsize=None)
def _mg_kernels(real_name: str = "float32"):
    """Multigrid functions on level arrays of dtype ``real_name`` (the preconditioner runs in
    float32: it only has to be a fixed SPD operator, and half the bytes). Every level lives in
    one stacked ``(5, nx+1, sum_l (ny_l+1))`` array, level ``l`` at column offset ``o`` (level 0 at
    0); every accessor takes that offset, so a whole V-cycle runs in one kernel launch."""
    ti = __import__("taichi")
    real = taichi_real(real_name)
    f64 = real  # local accumulators in the level dtype
    A3 = ti.types.ndarray(dtype=real, ndim=3)

    @ti.func
    def nbv(a: ti.template(), ch, i, j, nx, ny, px, py, o):
        val = ti.cast(0.0, f64)
        ii, jj = i, j
        inside = True
        if ii < 0 or ii >= nx:
            if px:
                ii = (ii + nx) % nx
            else:
                inside = False
        if jj < 0 or jj >= ny:
            if py:
                jj = (jj + ny) % ny
            else:
                inside = False
        if inside:
            val = a[ch, ii, jj + o]
        return val

    @ti.func
    def diag(a: ti.template(), i, j, o):
        return a[WX, i, j + o] + a[WX, i + 1, j + o] + a[WY, i, j + o] + a[WY, i, j + 1 + o]

    @ti.func
    def interior(i, j, nx, ny):
        """Whether cell (i, j) has its four neighbours inside the level (no wrap, nothing outside)."""
        return 0 < i and i < nx - 1 and 0 < j and j < ny - 1

    @ti.func
    def offsum(a: ti.template(), ch, i, j, nx, ny, px, py, o):
        """sum_f w_f a[ch, nb(f)] over the four faces of cell (i, j), ``nbv``'s rule; an interior
        cell reads its neighbours directly (the same sum of products; Taichi's fast math may round
        the two paths differently in the last bit)."""
        s = ti.cast(0.0, f64)
        if interior(i, j, nx, ny):
            s = (a[WX, i, j + o] * a[ch, i - 1, j + o]
                 + a[WX, i + 1, j + o] * a[ch, i + 1, j + o]
                 + a[WY, i, j + o] * a[ch, i, j - 1 + o]
                 + a[WY, i, j + 1 + o] * a[ch, i, j + 1 + o])
        else:
            s = (a[WX, i, j + o] * nbv(a, ch, i - 1, j, nx, ny, px, py, o)
                 + a[WX, i + 1, j + o] * nbv(a, ch, i + 1, j, nx, ny, px, py, o)
                 + a[WY, i, j + o] * nbv(a, ch, i, j - 1, nx, ny, px, py, o)
                 + a[WY, i, j + 1 + o] * nbv(a, ch, i, j + 1, nx, ny, px, py, o))
        return s

    @ti.func
    def apply_a(a: ti.template(), ch, i, j, nx, ny, px, py, o):
        return diag(a, i, j, o) * a[ch, i, j + o] - offsum(a, ch, i, j, nx, ny, px, py, o)

    @ti.func
    def nbfirst(a: ti.template(), bch, i, j, nx, ny, px, py, o, oc, mode: ti.template()):
        """A red neighbour's X as the first half-sweep of a level leaves it, computed where a black
        cell needs it (``nbv``'s wrap and outside-is-0 rule): ``mode`` 1 (going down, from X = 0)
        ``B / diag`` (0 where diag = 0); ``mode`` 2 (going up) ``X`` plus the coarse correction
        ``X[i // 2, j // 2]`` on the level at offset ``oc`` (where diag > 0)."""
        val = ti.cast(0.0, f64)
        ii, jj = i, j
        inside = True
        if ii < 0 or ii >= nx:
            if px:
                ii = (ii + nx) % nx
            else:
                inside = False
        if jj < 0 or jj >= ny:
            if py:
                jj = (jj + ny) % ny
            else:
                inside = False
        if inside:
            val = nbfirst_in(a, bch, ii, jj, o, oc, mode)
        return val

    @ti.func
    def nbfirst_in(a: ti.template(), bch, ii, jj, o, oc, mode: ti.template()):
        """``nbfirst`` at a cell (ii, jj) known to lie inside the level."""
        val = ti.cast(0.0, f64)
        d = diag(a, ii, jj, o)
        if ti.static(mode == 1):
            if d > 0:
                val = a[bch, ii, jj + o] / d
        else:
            val = a[X, ii, jj + o]
            if d > 0:
                val += a[X, ii // 2, jj // 2 + oc]
        return val

    @ti.func
    def gs_first(a: ti.template(), bch, i, j, nx, ny, px, py, o, oc, mode: ti.template()):
        """``gs`` at a black cell with its red neighbours' values from ``nbfirst``."""
        d = diag(a, i, j, o)
        if d > 0:
            off = ti.cast(0.0, f64)
            if interior(i, j, nx, ny):
                off = (a[WX, i, j + o] * nbfirst_in(a, bch, i - 1, j, o, oc, mode)
                       + a[WX, i + 1, j + o] * nbfirst_in(a, bch, i + 1, j, o, oc, mode)
                       + a[WY, i, j + o] * nbfirst_in(a, bch, i, j - 1, o, oc, mode)
                       + a[WY, i, j + 1 + o] * nbfirst_in(a, bch, i, j + 1, o, oc, mode))
            else:
                off = (a[WX, i, j + o] * nbfirst(a, bch, i - 1, j, nx, ny, px, py, o, oc, mode)
                       + a[WX, i + 1, j + o] * nbfirst(a, bch, i + 1, j, nx, ny, px, py, o, oc, mode)
                       + a[WY, i, j + o] * nbfirst(a, bch, i, j - 1, nx, ny, px, py, o, oc, mode)
                       + a[WY, i, j + 1 + o] * nbfirst(a, bch, i, j + 1, nx, ny, px, py, o, oc, mode))
            a[X, i, j + o] = (a[bch, i, j + o] + off) / d
        elif ti.static(mode == 1):
            a[X, i, j + o] = ti.cast(0.0, f64)

    @ti.func
    def gs(a: ti.template(), bch, i, j, nx, ny, px, py, o):
        d = diag(a, i, j, o)
        if d > 0:
            a[X, i, j + o] = (a[bch, i, j + o] + offsum(a, X, i, j, nx, ny, px, py, o)) / d

    @ti.func
    def rb_sweep(a: ti.template(), bch, nx, ny, px, py, first: ti.template(), o, ser: ti.template()):
        if ti.static(ser):
            ti.loop_config(serialize=True)
        for i in range(nx):
            for jh in range((ny + 1) // 2):
                j = 2 * jh + (i + first) % 2
                if j < ny:
                    gs(a, bch, i, j, nx, ny, px, py, o)
        if ti.static(ser):
            ti.loop_config(serialize=True)
        for i in range(nx):
            for jh in range((ny + 1) // 2):
                j = 2 * jh + (i + first + 1) % 2
                if j < ny:
                    gs(a, bch, i, j, nx, ny, px, py, o)

    @ti.func
    def rb_sweep_sum(a: ti.template(), bch, nx, ny, px, py, first: ti.template(), o, ser: ti.template()):
        """``rb_sweep`` that also returns the sum (float64) of X over the cells with diag > 0 after
        it (every cell is rewritten by one of its half-sweeps; X = 0 where diag = 0)."""
        total = ti.cast(0.0, ti.f64)
        if ti.static(ser):
            ti.loop_config(serialize=True)
        for i in range(nx):
            for jh in range((ny + 1) // 2):
                j = 2 * jh + (i + first) % 2
                if j < ny:
                    d = diag(a, i, j, o)
                    if d > 0:
                        x = (a[bch, i, j + o] + offsum(a, X, i, j, nx, ny, px, py, o)) / d
                        a[X, i, j + o] = x
                        total += ti.cast(x, ti.f64)
        if ti.static(ser):
            ti.loop_config(serialize=True)
        for i in range(nx):
            for jh in range((ny + 1) // 2):
                j = 2 * jh + (i + first + 1) % 2
                if j < ny:
                    d = diag(a, i, j, o)
                    if d > 0:
                        x = (a[bch, i, j + o] + offsum(a, X, i, j, nx, ny, px, py, o)) / d
                        a[X, i, j + o] = x
                        total += ti.cast(x, ti.f64)
        return total

    @ti.func
    def down(a: ti.template(), bch, nx, ny, px, py, ncx, ncy, o, oc, ser: ti.template()):
        # first red half-sweep from X = 0 (X = B / diag, needs no neighbour) and the black one in
        # one loop (a black cell computes its red neighbours' values itself), then more full
        # sweeps (ser: run every loop of this level on the calling thread -- a small level's
        # loops cost less than the thread pool's hand-off)
        if ti.static(ser):
            ti.loop_config(serialize=True)
        for i in range(nx):
            for jh in range((ny + 1) // 2):
                j = 2 * jh + i % 2
                if j < ny:
                    d = diag(a, i, j, o)
                    a[X, i, j + o] = a[bch, i, j + o] / d if d > 0 else ti.cast(0.0, f64)
                j2 = 2 * jh + (i + 1) % 2
                if j2 < ny:
                    gs_first(a, bch, i, j2, nx, ny, px, py, o, 0, 1)
        for _s in ti.static(range(_PRE_SWEEPS - 1)):
            rb_sweep(a, bch, nx, ny, px, py, 0, o, ser)
        # residual of the four children, summed (restriction = transpose of constant prolongation);
        # the last half-sweep was black, which leaves the black children's residual 0 (to rounding),
        # so only the red children (di == dj) are summed
        if ti.static(ser):
            ti.loop_config(serialize=True)
        for I in range(ncx):
            for J in range(ncy):
                s = ti.cast(0.0, f64)
                for di, dj in ti.static(ti.ndrange(2, 2)):
                    fi, fj = 2 * I + di, 2 * J + dj
                    if ti.static(di == dj) and fi < nx and fj < ny:
                        if diag(a, fi, fj, o) > 0:
                            s += a[bch, fi, fj + o] - apply_a(a, X, fi, fj, nx, ny, px, py, o)
                a[B, I, J + oc] = s
                a[X, I, J + oc] = ti.cast(0.0, f64)

    @ti.func
    def up(a: ti.template(), bch, nx, ny, px, py, o, oc, ser: ti.template()):
        """Prolongation and post-smoothing; returns the sum of the level's X after it (float64)."""
        # prolongation (X += the coarse X of the parent) fused into the first (black) half-sweep:
        # a black cell adds the correction to its red neighbours' values itself; the red cells'
        # own update is overwritten by the red half-sweep that follows, so it is never stored
        if ti.static(ser):
            ti.loop_config(serialize=True)
        for i in range(nx):
            for jh in range((ny + 1) // 2):
                j = 2 * jh + (i + 1) % 2
                if j < ny:
                    gs_first(a, bch, i, j, nx, ny, px, py, o, oc, 2)
        if ti.static(ser):
            ti.loop_config(serialize=True)
        for i in range(nx):
            for jh in range((ny + 1) // 2):
                j = 2 * jh + i % 2
                if j < ny:
                    gs(a, bch, i, j, nx, ny, px, py, o)
        for _s in ti.static(range(_PRE_SWEEPS - 2)):
            rb_sweep(a, bch, nx, ny, px, py, 1, o, ser)
        return rb_sweep_sum(a, bch, nx, ny, px, py, 1, o, ser)

    @ti.func
    def bottom(a: ti.template(), bch, nx, ny, px, py, sweeps, o):
        ti.loop_config(serialize=True)
        for i in range(nx):
            for j in range(ny):
                a[X, i, j + o] = ti.cast(0.0, f64)
        ti.loop_config(serialize=True)
        for _it in range(sweeps):
            for k in range(nx * ny):
                gs(a, bch, k // ny, k % ny, nx, ny, px, py, o)
            for k in range(nx * ny):
                kk = nx * ny - 1 - k
                gs(a, bch, kk // ny, kk % ny, nx, ny, px, py, o)

    @ti.func
    def vcycle(m: ti.template(), dims: ti.template(), nlev: ti.template(), nserial: ti.template(), px, py):
        """One symmetric V-cycle on the stacked levels (``dims[l] = (nx, ny, offset)``), RHS in B;
        the last ``nserial`` levels run serialized (the coarsest always does). Returns the sum of
        level 0's X (float64; for the mean CG removes on singular problems; needs nlev >= 2)."""
        for l in ti.static(range(nlev - 1)):
            down(m, B, dims[l, 0], dims[l, 1], px, py, dims[l + 1, 0], dims[l + 1, 1], dims[l, 2], dims[l + 1, 2],
                 ti.static(l >= nlev - nserial))
        bx, by = dims[nlev - 1, 0], dims[nlev - 1, 1]
        bottom(m, B, bx, by, px, py, 2 * ti.max(bx, by) + 4, dims[nlev - 1, 2])
        total = ti.cast(0.0, ti.f64)
        if ti.static(nlev == 1):
            ti.loop_config(serialize=True)
            for i in range(bx):
                for j in range(by):
                    if diag(m, i, j, 0) > 0:
                        total += ti.cast(m[X, i, j], ti.f64)
        for k in ti.static(range(nlev - 1)):
            l = ti.static(nlev - 2 - k)
            total = up(m, B, dims[l, 0], dims[l, 1], px, py, dims[l, 2], dims[l + 1, 2], ti.static(l >= nlev - nserial))
        return total

    @ti.kernel
    def coarsen(a: A3, nx: int, ny: int, ncx: int, ncy: int, o: int, oc: int):
        for I in range(ncx + 1):
            for J in range(ncy):
                fi = 2 * I
                if I == ncx:
                    fi = nx
                s = ti.cast(0.0, f64)
                for dj in ti.static(range(2)):
                    if 2 * J + dj < ny:
                        s += a[WX, fi, 2 * J + dj + o]
                a[WX, I, J + oc] = ti.cast(0.5, f64) * s
        for I in range(ncx):
            for J in range(ncy + 1):
                fj = 2 * J
                if J == ncy:
                    fj = ny
                s = ti.cast(0.0, f64)
                for di in ti.static(range(2)):
                    if 2 * I + di < nx:
                        s += a[WY, 2 * I + di, fj + o]
                a[WY, I, J + oc] = ti.cast(0.5, f64) * s

    return fast_kernels(dict(coarsen=coarsen, vcycle=vcycle, nbv=nbv, diag=diag, apply_a=apply_a,
                             interior=interior))


@functools.lru_cache(maxsize=None)
def _fine_funcs():
    """Taichi functions on the float64 fine-level array shared by the CG kernels and the start /
    finish of a solve."""
    ti = __import__("taichi")
    f64 = ti.f64
    k64 = _mg_kernels("float64")
    diag, apply_a = k64["diag"], k64["apply_a"]

    @ti.func
    def residual_loops(a: ti.template(), m: ti.template(), nx, ny, px, py, singular, nfluid, ser: ti.template()):
        """r = B - A phi on the fluid cells (mean-free when singular) into RC and, as float32, into
        the multigrid level 0's B; returns (max |r|, sum r^2)."""
        mean = ti.cast(0.0, f64)
        if ti.static(ser):
            ti.loop_config(serialize=True)
        for i in range(nx):
            for j in range(ny):
                r = ti.cast(0.0, f64)
                if diag(a, i, j, 0) > 0:
                    r = a[B, i, j] - apply_a(a, PHI, i, j, nx, ny, px, py, 0)
                a[RC, i, j] = r
                mean += r
        mean = mean / nfluid
        rmax = ti.cast(0.0, f64)
        r2 = ti.cast(0.0, f64)
        if ti.static(ser):
            ti.loop_config(serialize=True)
        for i in range(nx):
            for j in range(ny):
                if diag(a, i, j, 0) > 0:
                    if singular:
                        a[RC, i, j] -= mean
                    ti.atomic_max(rmax, ti.abs(a[RC, i, j]))
                    r2 += a[RC, i, j] * a[RC, i, j]
                m[B, i, j] = ti.cast(a[RC, i, j], ti.f32)
        return ti.Vector([rmax, r2])

    return dict(residual_loops=residual_loops)


@functools.lru_cache(maxsize=None)
def _cg_kernels(nlev: int, nserial: int = 0):
    """Conjugate-gradient kernels on the float64 fine-level array (channels B, PHI, RC, P, AP and
    the weights); they hand residuals to / take preconditioned vectors from the float32 stacked
    multigrid levels ``m`` (level 0 at offset 0: its B and X channels). ``cg_iter`` is one whole
    preconditioned CG iteration (V-cycle, ``z``, ``beta``, ``p``, ``A p``, ``alpha``, the update
    and the residual's max-norm) in one launch and three fine-level loops after the V-cycle;
    ``sc`` carries ``(rz_old, pap)`` between them, and ``p`` alternates between channels ``pin``
    and ``pout`` (P and P2) so that the new ``p`` and ``A p`` come out of one loop. It returns the
    residual's max-norm, or -1 on breakdown (a scalar: a vector return costs more Python)."""
    ti = __import__("taichi")
    f64 = ti.f64
    A3 = ti.types.ndarray(dtype=f64, ndim=3)
    M3 = ti.types.ndarray(dtype=ti.f32, ndim=3)
    I2 = ti.types.ndarray(dtype=ti.i32, ndim=2)
    S1 = ti.types.ndarray(dtype=f64, ndim=1)
    k64 = _mg_kernels("float64")
    nbv, diag, apply_a, interior = k64["nbv"], k64["diag"], k64["apply_a"], k64["interior"]
    vcycle = _mg_kernels("float32")["vcycle"]
    residual_loops = _fine_funcs()["residual_loops"]
    ser = nserial >= nlev  # level 0 small: its float64 loops run serialized too

    @ti.func
    def pnew(a: ti.template(), pin, beta, i, j, nx, ny, px, py):
        """z + beta p_old at cell (i, j), with ``nbv``'s wrap and outside-is-0 rule."""
        return nbv(a, X, i, j, nx, ny, px, py, 0) + beta * nbv(a, pin, i, j, nx, ny, px, py, 0)

    @ti.func
    def pnew_in(a: ti.template(), pin, beta, i, j):
        """``pnew`` at a cell known to lie inside the grid."""
        return a[X, i, j] + beta * a[pin, i, j]

    @ti.kernel
    def residual(a: A3, m: M3, nx: int, ny: int, px: int, py: int, singular: int, nfluid: f64) -> f64:
        return residual_loops(a, m, nx, ny, px, py, singular, nfluid, ser)[0]

    @ti.kernel
    def cg_iter(a: A3, m: M3, dims: I2, sc: S1, nx: int, ny: int, px: int, py: int, singular: int,
                nfluid: f64, first: int, pin: int, pout: int) -> f64:
        # z = M r (mean-free on singular problems: the V-cycle sums z as it leaves it), rz
        mean = vcycle(m, dims, nlev, nserial, px, py) / nfluid
        rz = ti.cast(0.0, f64)
        if ti.static(ser):
            ti.loop_config(serialize=True)
        for i in range(nx):
            for j in range(ny):
                z = ti.cast(0.0, f64)
                if diag(a, i, j, 0) > 0:
                    z = ti.cast(m[X, i, j], f64)
                    if singular:
                        z -= mean
                    rz += a[RC, i, j] * z
                a[X, i, j] = z
        beta = ti.cast(0.0, f64)
        if first == 0:
            beta = rz / sc[0]
        # p = z + beta p_old (channel pin) into channel pout, with A p and p.A p in the same loop
        # (the neighbours' p computed where needed; p_old is not overwritten: two buffers)
        pap = ti.cast(0.0, f64)
        if ti.static(ser):
            ti.loop_config(serialize=True)
        for i in range(nx):
            for j in range(ny):
                pc = a[X, i, j] + beta * a[pin, i, j]
                q = ti.cast(0.0, f64)
                if diag(a, i, j, 0) > 0:
                    off = ti.cast(0.0, f64)
                    if interior(i, j, nx, ny):
                        off = (a[WX, i, j] * pnew_in(a, pin, beta, i - 1, j)
                               + a[WX, i + 1, j] * pnew_in(a, pin, beta, i + 1, j)
                               + a[WY, i, j] * pnew_in(a, pin, beta, i, j - 1)
                               + a[WY, i, j + 1] * pnew_in(a, pin, beta, i, j + 1))
                    else:
                        off = (a[WX, i, j] * pnew(a, pin, beta, i - 1, j, nx, ny, px, py)
                               + a[WX, i + 1, j] * pnew(a, pin, beta, i + 1, j, nx, ny, px, py)
                               + a[WY, i, j] * pnew(a, pin, beta, i, j - 1, nx, ny, px, py)
                               + a[WY, i, j + 1] * pnew(a, pin, beta, i, j + 1, nx, ny, px, py))
                    q = diag(a, i, j, 0) * pc - off
                a[pout, i, j] = pc
                a[AP, i, j] = q
                pap += pc * q
        alpha = ti.cast(0.0, f64)
        if pap > 0:
            alpha = rz / pap
        sc[0] = rz
        sc[1] = pap
        # x += alpha p, r -= alpha A p (alpha = 0 on breakdown: nothing changes)
        rmax = ti.cast(0.0, f64)
        if ti.static(ser):
            ti.loop_config(serialize=True)
        for i in range(nx):
            for j in range(ny):
                a[PHI, i, j] += alpha * a[pout, i, j]
                a[RC, i, j] -= alpha * a[AP, i, j]
                m[B, i, j] = ti.cast(a[RC, i, j], ti.f32)
                ti.atomic_max(rmax, ti.abs(a[RC, i, j]))
        # the residual's max-norm, or -1 on breakdown (p.A p not > 0: nothing was changed)
        out = ti.cast(-1.0, f64)
        if pap > 0:
            out = rmax
        return out

    return fast_kernels(dict(residual=residual, cg_iter=cg_iter))


@functools.lru_cache(maxsize=None)
def _state_kernels(real_name: str):
    """Kernels that touch the state's velocity arrays (compiled per state dtype): the start and
    the end of a solve, each one launch (``start``: right-hand side, its mean removed, and the
    first residual; ``finish``: the true residual and, when the solve is done, the velocity
    update), and the bare velocity update ``subtract_gradient``."""
    ti = __import__("taichi")
    real = taichi_real(real_name)
    f64 = ti.f64
    A2 = ti.types.ndarray(dtype=real, ndim=2)
    A3 = ti.types.ndarray(dtype=f64, ndim=3)
    M3 = ti.types.ndarray(dtype=ti.f32, ndim=3)
    O1 = ti.types.ndarray(dtype=f64, ndim=1)
    face_cells, phi_step_x, phi_step_y = face_gradient_funcs()
    k64 = _mg_kernels("float64")
    nbv, diag, apply_a = k64["nbv"], k64["diag"], k64["apply_a"]
    residual_loops = _fine_funcs()["residual_loops"]


    @ti.kernel
    def start(u: A2, v: A2, a: A3, m: M3, out: O1, px: int, py: int, singular: int, nfluid: f64,
              ser: ti.template()):
        """B = -div u (mean-free when singular; phi = 0 off the fluid), then the residual of the
        current phi; ``out`` = (max |B|, max |r|, sum B^2, max |u|, |v| over all faces) (a small
        float64 array read with one ``tolist``: cheaper than a vector return)."""
        nx, ny = v.shape[0], u.shape[1]
        mean = ti.cast(0.0, f64)
        umax = ti.cast(0.0, f64)
        if ti.static(ser):
            ti.loop_config(serialize=True)
        for i in range(nx):
            for j in range(ny):
                d = diag(a, i, j, 0)
                b = ti.cast(0.0, f64)
                if d > 0:
                    b = -((ti.cast(u[i + 1, j], f64) - ti.cast(u[i, j], f64))
                          + (ti.cast(v[i, j + 1], f64) - ti.cast(v[i, j], f64)))
                else:
                    a[PHI, i, j] = ti.cast(0.0, f64)
                a[B, i, j] = b
                mean += b
                # every face is read here (u[i + 1] covers the last column, v[:, j + 1] the last row)
                ti.atomic_max(umax, ti.cast(ti.max(ti.max(ti.abs(u[i, j]), ti.abs(u[i + 1, j])),
                                                   ti.max(ti.abs(v[i, j]), ti.abs(v[i, j + 1]))), f64))
        mean = mean / nfluid
        bmax = ti.cast(0.0, f64)
        b2 = ti.cast(0.0, f64)
        if ti.static(ser):
            ti.loop_config(serialize=True)
        for i in range(nx):
            for j in range(ny):
                if diag(a, i, j, 0) > 0:
                    if singular:
                        a[B, i, j] -= mean
                    ti.atomic_max(bmax, ti.abs(a[B, i, j]))
                    b2 += a[B, i, j] * a[B, i, j]
        rr = residual_loops(a, m, nx, ny, px, py, singular, nfluid, ser)
        out[0] = bmax
        out[1] = rr[0]
        out[2] = b2
        out[3] = umax

    @ti.func
    def gradient_loops(u: ti.template(), v: ti.template(), a: ti.template(), px, py, apply, ser: ti.template()):
        """``u_f -= w_f (phi_right - phi_left)`` where ``apply``; returns max |u|, |v| after.
        ``nbv``'s wrap and outside-is-0 rule (:func:`face_gradient_funcs`), the two cells of a u
        face found once per row; the max is taken per row, then once per row across threads."""
        nx, ny = v.shape[0], u.shape[1]
        umax = ti.cast(0.0, f64)
        if ti.static(ser):
            ti.loop_config(serialize=True)
        for i in range(u.shape[0]):
            ir, il = face_cells(i, nx, px)      # the cells right and left of face i
            rmax = ti.cast(0.0, f64)
            for j in range(u.shape[1]):
                w = a[WX, i, j]
                if apply and w > 0:
                    u[i, j] = ti.cast(ti.cast(u[i, j], f64) - w * phi_step_x(a, ir, il, j, nx), real)
                rmax = ti.max(rmax, ti.cast(ti.abs(u[i, j]), f64))
            ti.atomic_max(umax, rmax)
        if ti.static(ser):
            ti.loop_config(serialize=True)
        for i in range(v.shape[0]):
            rmax = ti.cast(0.0, f64)
            for j in range(v.shape[1]):
                w = a[WY, i, j]
                if apply and w > 0:
                    jt, jb = face_cells(j, ny, py)      # the cells above face j and below it
                    v[i, j] = ti.cast(ti.cast(v[i, j], f64) - w * phi_step_y(a, i, jt, jb, ny), real)
                rmax = ti.max(rmax, ti.cast(ti.abs(v[i, j]), f64))
            ti.atomic_max(umax, rmax)
        return umax

    @ti.kernel
    def finish(u: A2, v: A2, a: A3, m: M3, out: O1, px: int, py: int, singular: int, nfluid: f64, target: f64,
               force: int, p: A2, pscale: f64, predictor: int, rel_target: f64, done: int, ser: ti.template()):
        """The true residual of phi; when it is at most ``target`` (or ``force``) the velocity
        update. ``out`` = (max |r|, sum r^2, max |u|, |v| after, 1 if updated else 0, 1 if ``p``
        was stored else 0). ``p`` (``(nx, ny)``, the velocity's dtype; ``pscale`` > 0, else no
        store): when the update is applied and the projection is over -- the residual at most
        ``rel_target`` times max |u|, |v| after (``PressureSolver._project``'s test for a re-solve),
        or ``done`` (a capped solve out of iterations) -- ``p`` becomes the stored pressure of
        ``phi / pscale`` (``lawful.fluids.solver.stored_pressure``; ``predictor``: its mean with the
        ``p`` given), in float64, rounded once to ``p``'s dtype (a true division: torch's CPU
        numbers; torch on CUDA multiplies by the reciprocal, one float64 rounding apart)."""
        nx, ny = v.shape[0], u.shape[1]
        rr = residual_loops(a, m, nx, ny, px, py, singular, nfluid, ser)
        apply = 0
        if rr[0] <= target or force != 0:
            apply = 1
        umax = gradient_loops(u, v, a, px, py, apply, ser)
        store = 0
        # (umax > 0: a zero field, where _project compares with rel_target * 1e-300, is left to it)
        if pscale > 0 and apply != 0 and ((umax > 0 and rr[0] <= rel_target * umax) or done != 0):
            store = 1
        if ti.static(ser):
            ti.loop_config(serialize=True)
        for i in range(nx):
            for j in range(ny):
                if store != 0:
                    solved = a[PHI, i, j] / pscale
                    if predictor != 0:
                        solved = (solved + ti.cast(p[i, j], f64)) * 0.5
                    p[i, j] = ti.cast(solved, real)
        out[0] = rr[0]
        out[1] = rr[1]
        out[2] = umax
        out[3] = ti.cast(apply, f64)
        out[4] = ti.cast(store, f64)

    @ti.kernel
    def subtract_gradient(u: A2, v: A2, a: A3, px: int, py: int, ser: ti.template()):
        gradient_loops(u, v, a, px, py, 1, ser)

    return fast_kernels(dict(start=start, finish=finish, subtract_gradient=subtract_gradient))


def _taichi_array(t: torch.Tensor, dtype: str):
    """A Taichi ndarray holding a copy of ``t`` (``dtype``: "f32", "i32", "f64")."""
    ti = __import__("taichi")
    out = ti.ndarray(getattr(ti, dtype), tuple(t.shape))
    out.from_numpy(t.detach().cpu().numpy())
    return out


def check_finite_faces(u: torch.Tensor, v: torch.Tensor, what: str) -> None:
    """Raise :class:`NumericalError` naming the first NaN/inf face of ``u`` or ``v`` given to
    ``what`` (one reduction per array when all are finite)."""
    for name, t in (("u", u), ("v", v)):
        if t.numel() and not math.isfinite(float(t.sum())):
            bad = torch.nonzero(~torch.isfinite(t))
            if bad.shape[0] == 0:
                continue            # finite values whose sum overflowed: nothing to refuse
            k = [int(x) for x in bad[0]]
            raise NumericalError(
                f"{what} was given a non-finite face velocity: {name}{k} = {float(t[tuple(k)])} ({bad.shape[0]} "
                f"such face(s) in {name}); a NaN/inf field cannot be projected (the run blew up: lower dt, "
                "check the forcing or a corrector's output).")


class PressureSolver:
    """Projection of MAC face velocities onto discretely divergence-free fields (MGPCG, float64).

    Parameters: ``boundary`` (:class:`~lawful.kernels.mac_grid.Boundary`), ``solid`` (``(nx, ny)``
    bool obstacle mask), ``dtype`` of the velocity arrays it will project (float32/float64),
    ``rtol`` (default :func:`default_rtol`), ``max_iter`` (CG iterations before
    :class:`ConvergenceError`), ``device``, ``capped`` (False: a solve that stops above ``rtol``
    raises :class:`ConvergenceError` naming the residual, tolerance and iterations; True: it
    returns the partly projected field and ``ProjectionStats.converged`` is False -- a fixed
    iteration budget, chosen explicitly).

    :meth:`project` works in place on ``u`` ``(nx+1, ny)`` and ``v`` ``(nx, ny+1)`` tensors (Taichi
    ndarray arguments: zero-copy) and keeps ``phi`` (``p dt / (rho dx)``) for warm starts.
    """

    def __init__(self, boundary: Boundary, solid: torch.Tensor, dtype=torch.float32, rtol=None,
                 max_iter: int = 200, device=None, capped: bool = False):
        ensure_taichi()
        self._generation = runtime_generation()   # its Taichi ndarrays live in this runtime
        if rtol is not None and not (0.0 < float(rtol) < 1.0):
            raise InputError(f"pressure rtol={rtol!r} must lie in (0, 1); e.g. 1e-6 (float32) or 1e-10.")
        if int(max_iter) < 1:
            raise InputError(f"pressure max_iter={max_iter!r} must be >= 1.")
        self.boundary = boundary
        self.dtype = dtype
        self.rtol = float(rtol) if rtol is not None else default_rtol(dtype)
        self.max_iter = int(max_iter)
        self.capped = bool(capped)
        self.eps = float(torch.finfo(dtype).eps)
        device = device if device is not None else solid.device
        nx, ny = solid.shape
        self.nx, self.ny = nx, ny
        self.px, self.py = (int(b) for b in boundary.periodic_axes)
        self.singular = int(not boundary.has_outflow)
        eps = torch.finfo(dtype).eps
        self.target = max(self.rtol - 4.0 * eps, 0.25 * self.rtol)
        # level hierarchy
        dims = [(nx, ny)]
        while max(dims[-1]) > _BOTTOM_MAX:
            cx, cy = dims[-1]
            if (self.px and cx % 2) or (self.py and cy % 2):
                break
            dims.append(((cx + 1) // 2, (cy + 1) // 2))
        self.dims = dims
        # levels of at most mac_grid.serial_cells() cells run their loops serialized (see _cg_kernels)
        self.nserial = sum(1 for d in dims if serial_grid(*d))
        self._ser = serial_grid(nx, ny)
        # float64 fine level for CG (channels X as z, B, PHI, RC, P, AP, weights) and float32
        # multigrid levels (X, B, R, WX, WY) for the preconditioner
        self.fine = torch.zeros((9, nx + 1, ny + 1), dtype=torch.float64, device=device)
        offsets = [0]
        for d in dims[:-1]:
            offsets.append(offsets[-1] + d[1] + 1)
        self.mg = torch.zeros((5, nx + 1, offsets[-1] + dims[-1][1] + 1), dtype=torch.float32, device=device)
        mg_dims = torch.tensor([[d[0], d[1], o] for d, o in zip(dims, offsets)], dtype=torch.int32)
        self._out = torch.zeros(5, dtype=torch.float64, device=device)  # start's / finish's results
        self._pbuf = (P, P2)  # the search direction alternates between two channels (cg_iter's pin, pout)
        ubc, vbc = face_bc(boundary, solid.to(device), torch.float64)
        a0 = self.fine
        a0[WX, :, :ny] = ubc[0]
        a0[WY, :nx, :] = vbc[0]
        self.mg[WX:WY + 1, :, :ny + 1] = a0[WX:WY + 1].float()
        k = _mg_kernels()
        for l in range(len(dims) - 1):
            k["coarsen"](self.mg, *dims[l], *dims[l + 1], offsets[l], offsets[l + 1])
        # the arrays only Taichi kernels touch become Taichi ndarrays: a launch argument costs
        # ~4 us of Python instead of ~10 us for a torch tensor (the levels, their sizes, CG scalars)
        self.mg = _taichi_array(self.mg, "f32")
        self.mg_dims = _taichi_array(mg_dims, "i32")
        self.cg_scalars = _taichi_array(torch.zeros(2, dtype=torch.float64), "f64")
        d0 = a0[WX, :nx, :ny] + a0[WX, 1:, :ny] + a0[WY, :nx, :ny] + a0[WY, :nx, 1:]
        self.nfluid = float(max(int((d0 > 0).sum()), 1))
        self.phi = a0[PHI, :nx, :ny]  # a view: warm start kept between calls
        self._sk = _state_kernels(dtype_name(dtype))

    def check_runtime(self, owner: str = "this PressureSolver", fix: str = "Build a new PressureSolver") -> None:
        """Raise :class:`~lawful.kernels.errors.BackendError` (``owner`` was built before a ``ti.init``;
        ``fix``) when Taichi was re-initialised since this solver was built: its Taichi ndarrays
        (multigrid levels, CG scalars) died with the old runtime
        (:func:`~lawful.kernels.runtime.check_generation`)."""
        check_generation(self._generation, owner, fix)

    def subtract_phi_gradient(self, u: torch.Tensor, v: torch.Tensor) -> None:
        """``u_f -= w_f (phi_right - phi_left)`` with the last solve's ``phi`` (in place): the
        projection's velocity update, applied to any face arrays of this grid and dtype."""
        self._sk["subtract_gradient"](u, v, self.fine, self.px, self.py, self._ser)
        record_writes(u, v)

    def project(self, u: torch.Tensor, v: torch.Tensor, warm_start: bool = True) -> ProjectionStats:
        """Project ``u``, ``v`` in place; return :class:`ProjectionStats`.

        ``warm_start``: start CG from the previous call's ``phi`` (right in time stepping, where
        the pressure changes little per step); it falls back to 0 when that is worse. The
        tolerance is relative to max|u| *after* the projection: when removing the gradient part
        shrank the field, the remaining divergence is projected out again (``phi`` accumulates).

        Raises :class:`ConvergenceError` when the residual is still above the tolerance after
        ``max_iter`` CG iterations or after the re-solves (message: residual reached, tolerance,
        iterations, what to try), unless the solver is ``capped``; :class:`BackendError` (before
        touching ``u``, ``v``) when Taichi was re-initialised since this solver was built;
        :class:`NumericalError` (before touching them) when a face is NaN or infinite: the solve's
        maxima pass a NaN over, so it would report a converged projection of a broken field.
        """
        self.check_runtime()
        check_finite_faces(u, v, "the projection")
        return self._project(u, v, warm_start)

    def _project(self, u: torch.Tensor, v: torch.Tensor, warm_start: bool) -> ProjectionStats:
        """:meth:`project` after its runtime check (for a caller that has just made that check:
        the fluid solver's step, once per step)."""
        return self._project_storing(u, v, warm_start, None)[0]

    def _project_storing(self, u, v, warm_start: bool, store) -> tuple[ProjectionStats, bool]:
        """:meth:`_project`, and with ``store = (p, pscale, predictor)`` (``p``: a contiguous
        ``(nx, ny)`` tensor of the velocity's dtype and device; ``pscale`` > 0) ``p`` set to the
        stored pressure of ``phi / pscale`` (:func:`lawful.fluids.solver.stored_pressure`) in the
        launch that applies the velocity update, when that solve ends the projection. Returns
        ``(stats, stored)``: ``stored`` False when ``p`` was left alone (no store asked; a field
        already divergence-free to the tolerance, so no update launch; or a re-solve of the
        shrunken field, after which ``phi`` is the sum of the solves): the caller then stores
        it from ``phi`` itself."""
        # the solve measures max|u| before (scale0) and after (scale) in its own kernels
        iters, rmax, rl2, bmax, scale0, scale, stored = self._solve(u, v, warm_start, None, store)
        initial = bmax / scale0
        total = None
        floor = None
        for _ in range(4):
            scale = max(scale, 1e-300)
            if rmax <= self.target * scale or (self.capped and iters >= self.max_iter):
                break
            if floor is None:
                floor = self._roundoff_floor(scale0)
            if rmax <= floor:
                # what is left is the rounding of A phi: the field was a gradient to round-off (a
                # fluid at rest, its pressure balancing a body force, from the warm start), and
                # a re-solve of the remainder against max|u| ~ 1e-17 only broke CG down
                break
            if stored:      # finish stores only when this test ends the projection (same numbers)
                raise RuntimeError("PressureSolver: the pressure was stored by a solve that is re-solved; "
                                   "finish's end-of-projection test and _project_storing's disagree.")
            total = self.phi.clone() if total is None else total + self.phi
            more, rmax, rl2, _b, _s, scale, _stored = self._solve(u, v, False, scale, None)
            iters += more
        if total is not None:
            self.phi.add_(total)
        scale = max(scale, 1e-300)
        converged = rmax <= self.target * scale or rmax <= 8.0 * self.eps * scale0
        relative = rmax / scale
        if not converged and floor is not None and rmax <= floor:
            # at the rounding floor: reported against the field before the projection (against the
            # ~1e-17 left after it the figure would read as a failed solve)
            converged, relative = True, rmax / max(scale0, 1e-300)
        # the kernels wrote u, v (and p) in place behind autograd's back: record it as a torch
        # in-place op would, so a graph that saved one of them raises on backward
        record_writes(u, v, store[0] if stored else None)
        if not converged and not self.capped:
            self._raise(rmax / scale, iters, "after re-solving the shrunken field")
        return ProjectionStats(iters, relative, rl2, initial, converged), stored

    def _roundoff_floor(self, scale0: float) -> float:
        """The smallest residual (velocity units) a solve can reach: the rounding of the Poisson
        operator applied to ``phi``, ``8 eps max(max|phi|, scale0)`` (float64 eps; ``scale0`` the
        field's max|u| before the projection)."""
        return 8.0 * float(torch.finfo(torch.float64).eps) * max(float(self.phi.abs().max()), scale0)

    def _raise(self, residual, iters, where):
        raise ConvergenceError(
            f"pressure solve stopped above its tolerance: relative residual {residual:.3e} after {iters} CG "
            f"iterations ({where}; tolerance {self.rtol:.1e}, max_iter={self.max_iter}). Raise the iteration "
            "limit (SolverConfig.pressure_max_iter) or take a smaller dt (the velocity field may be blowing "
            "up; check the CFL number); SolverConfig.pressure_capped=True accepts capped solves explicitly."
        )

    def _solve(self, u, v, warm_start, scale, store=None):
        """One solve and velocity update (``start``, CG iterations, ``finish``: two launches
        besides the iterations). ``scale``: the max|u| the tolerance is relative to (None: this
        field's, measured by ``start``); ``store``: see :meth:`_project_storing`. Returns
        (iterations, max-norm residual, L2 residual relative to the right-hand side's, max|B|, the
        scale used, max|u| after, whether ``finish`` stored the pressure)."""
        k = _cg_kernels(len(self.dims), self.nserial)
        a, m = self.fine, self.mg
        nx, ny, px, py = self.nx, self.ny, self.px, self.py
        if not warm_start:
            self.phi.zero_()
        out = self._out
        self._sk["start"](u, v, a, m, out, px, py, self.singular, self.nfluid, self._ser)
        bmax, rmax, b2, umax, _ = out.tolist()
        if scale is None:
            scale = max(umax, 1e-300)
        target = self.target * scale
        if bmax <= target:
            self.phi.zero_()
            return 0, bmax, 1.0 if bmax > 0 else 0.0, bmax, scale, umax, False
        if rmax > bmax:
            self.phi.zero_()
            rmax = k["residual"](a, m, nx, ny, px, py, self.singular, self.nfluid)
        # no store: pscale 0, and p a stand-in never touched (not u: see mac_grid.unread_array)
        p, pscale, predictor = store if store is not None else (unread_array(u.dtype, u.device, 2), 0.0, False)
        iters = 0
        breakdown = False
        while True:
            if rmax > target and iters < self.max_iter and not breakdown:
                first = 1
                while iters < self.max_iter:
                    rmax = k["cg_iter"](a, m, self.mg_dims, self.cg_scalars, nx, ny, px, py, self.singular,
                                        self.nfluid, first, *self._pbuf)
                    self._pbuf = self._pbuf[::-1]
                    first = 0
                    if rmax < 0.0:
                        breakdown = True
                        break
                    iters += 1
                    if rmax <= target:
                        break
            final = iters >= self.max_iter or breakdown
            # the recurrence's residual drifts from the true one: recompute it; the velocity update
            # is applied in the same launch when the solve is done (else CG restarts from there),
            # and the pressure stored when that ends the projection (_project_storing's test)
            self._sk["finish"](u, v, a, m, out, px, py, self.singular, self.nfluid, target,
                               int(final and self.capped), p, float(pscale), int(bool(predictor)), self.target,
                               int(self.capped and iters >= self.max_iter), self._ser)
            rmax, r2, umax, applied, stored = out.tolist()
            if applied:
                break
            if final:
                self._raise(rmax / scale, iters, "did not converge within max_iter" if iters >= self.max_iter
                            else "CG broke down")
        bl2 = math.sqrt(b2)
        return iters, rmax, math.sqrt(r2) / bl2 if bl2 > 0 else 0.0, bmax, scale, umax, bool(stored)

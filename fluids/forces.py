"""Obstacle shapes for scenes and the force the fluid exerts on each obstacle.

**Shapes** (domain units; the grid has square cells of side ``dx``): :class:`Circle` (centre,
radius, optional angular velocity ``omega`` for a rotating body) and :class:`Box` (lower-left and
upper-right corners). A cell is solid when its centre lies inside the shape (strictly, for the
circle). :func:`body_velocity` gives the obstacles' velocity on the MAC faces (rigid rotation
``omega x (r - centre)``; zero for static bodies), which the solver prescribes on the faces
touching each body (:func:`lawful.kernels.mac_grid.face_bc`).

**Forces** (:func:`obstacle_forces`) are integrated over the staircase surface of each body's
mask (per unit depth, density 1, so a force has units length^3/time^2): on every cell face between
a solid cell of the body and a fluid cell, with ``n`` the unit normal out of the body and ``dx``
the face length,

* pressure: ``F -= p_w n dx`` with ``p_w = (3 p_f - p_ff) / 2`` linearly extrapolated to the wall
  from the fluid cell ``f`` next to it and the one beyond (``state.p``, the projection's pressure;
  ``p_w = p_f`` where ``ff`` is solid or outside), so a linear pressure field gives the exact
  Archimedes force;
* viscous shear: ``F_t += nu (q_f - q_wall) / (dx / 2) dx`` for the tangential component, with
  ``q_f`` the fluid cell's centre velocity (the mean of its two faces) and ``q_wall`` the body's
  velocity at the face midpoint. The normal viscous stress ``2 nu du_n/dn`` vanishes on a no-slip
  wall of an incompressible flow (``du_n/dn = -du_t/dt = 0``) and is not added.

``drag`` is the x component (the flow direction of the channels) and ``lift`` the y component;
with a reference velocity ``U`` and length ``L``: ``cd = 2 drag / (U^2 L)``, ``cl = 2 lift /
(U^2 L)``. Staircase surfaces make the shear, and hence the drag, first-order accurate in ``dx``;
``benchmarks/bench_cfd.py`` reports the error against the Schäfer-Turek 2D-1 benchmark.
Obstacles touching a periodic seam are not supported (their faces across the seam are skipped).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from lawful.kernels.errors import InputError

__all__ = ["Circle", "Box", "obstacle_masks", "body_velocity", "obstacle_forces", "force_record", "control_volume_force",
           "control_volume_box", "box_momentum", "box_integral", "ForceProbe"]


def _finite(name, val):
    if isinstance(val, bool) or not isinstance(val, (int, float)) or not math.isfinite(val):
        raise InputError(f"{name}={val!r} must be a finite number (domain units).")
    return float(val)


def _point(name, val):
    if not isinstance(val, (tuple, list)) or len(val) != 2:
        raise InputError(f"{name}={val!r} must be a point (x, y) in domain units.")
    return (_finite(f"{name}[0]", val[0]), _finite(f"{name}[1]", val[1]))


@dataclass(frozen=True)
class Circle:
    """A disc of ``radius`` at ``centre`` (domain units), rotating counter-clockwise at ``omega``
    (radians per time unit; 0 = static). ``name`` labels its force columns."""

    centre: tuple
    radius: float
    omega: float = 0.0
    name: str = ""

    def __post_init__(self):
        object.__setattr__(self, "centre", _point("Circle centre", self.centre))
        r = _finite("Circle radius", self.radius)
        if r <= 0:
            raise InputError(f"Circle radius={self.radius!r} must be > 0 (domain units).")
        _finite("Circle omega", self.omega)

    @property
    def size(self) -> float:
        """The smallest extent (the diameter): it must span 2 cells or more."""
        return 2.0 * self.radius

    def inside(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """True where ``(x, y)`` lies strictly inside the disc."""
        return ((x - self.centre[0]) ** 2 + (y - self.centre[1]) ** 2) < self.radius ** 2

    def velocity(self, x: torch.Tensor, y: torch.Tensor):
        """The body's rigid velocity ``(u, v)`` at ``(x, y)``."""
        return -self.omega * (y - self.centre[1]), self.omega * (x - self.centre[0])


@dataclass(frozen=True)
class Box:
    """The axis-aligned rectangle from ``lo = (x0, y0)`` to ``hi = (x1, y1)`` (domain units, static)."""

    lo: tuple
    hi: tuple
    name: str = ""

    def __post_init__(self):
        object.__setattr__(self, "lo", _point("Box lo", self.lo))
        object.__setattr__(self, "hi", _point("Box hi", self.hi))
        if not (self.hi[0] > self.lo[0] and self.hi[1] > self.lo[1]):
            raise InputError(f"Box lo={self.lo} / hi={self.hi}: hi must exceed lo on both axes.")

    @property
    def size(self) -> float:
        """The smallest side: it must span 1 cell or more."""
        return min(self.hi[0] - self.lo[0], self.hi[1] - self.lo[1])

    def inside(self, x, y):
        """True where ``(x, y)`` lies inside the rectangle (closed on the low sides)."""
        return (x >= self.lo[0]) & (x < self.hi[0]) & (y >= self.lo[1]) & (y < self.hi[1])

    def velocity(self, x, y):
        """A static box: zero velocity."""
        return torch.zeros_like(x + y), torch.zeros_like(x + y)


def _centres(nx, ny, dx, device=None):
    x = (torch.arange(nx, dtype=torch.float64, device=device)[:, None] + 0.5) * dx
    y = (torch.arange(ny, dtype=torch.float64, device=device)[None, :] + 0.5) * dx
    return x, y


def obstacle_masks(obstacles, nx: int, ny: int, dx: float, device=None) -> list:
    """One ``(nx, ny)`` bool mask per obstacle (cells whose centre is inside it)."""
    x, y = _centres(nx, ny, dx, device)
    return [ob.inside(x, y) for ob in obstacles]


def body_velocity(obstacles, masks, nx: int, ny: int, dx: float, dtype=torch.float64, device=None):
    """``(ub (nx+1, ny), vb (nx, ny+1))``: each obstacle's rigid velocity at the faces of its cells
    and their neighbours (zero elsewhere), or ``None`` when no obstacle moves."""
    if not any(getattr(ob, "omega", 0.0) for ob in obstacles):
        return None
    xu = torch.arange(nx + 1, dtype=torch.float64, device=device)[:, None] * dx
    yu = (torch.arange(ny, dtype=torch.float64, device=device)[None, :] + 0.5) * dx
    xv = (torch.arange(nx, dtype=torch.float64, device=device)[:, None] + 0.5) * dx
    yv = torch.arange(ny + 1, dtype=torch.float64, device=device)[None, :] * dx
    ub = torch.zeros((nx + 1, ny), dtype=torch.float64, device=device)
    vb = torch.zeros((nx, ny + 1), dtype=torch.float64, device=device)
    for ob, m in zip(obstacles, masks):
        tu = torch.zeros((nx + 1, ny), dtype=torch.bool, device=device)
        tu[:-1] |= m
        tu[1:] |= m
        tv = torch.zeros((nx, ny + 1), dtype=torch.bool, device=device)
        tv[:, :-1] |= m
        tv[:, 1:] |= m
        ub = torch.where(tu, ob.velocity(xu.expand(nx + 1, ny), yu.expand(nx + 1, ny))[0], ub)
        vb = torch.where(tv, ob.velocity(xv.expand(nx, ny + 1), yv.expand(nx, ny + 1))[1], vb)
    return ub.to(dtype), vb.to(dtype)


def obstacle_forces(state, viscosity: float, obstacles, masks, pressure=None) -> list:
    """``[(fx, fy), ...]``: the force of the fluid on each obstacle (per unit depth, density 1;
    see the module docstring for the surface integral). ``masks``: from :func:`obstacle_masks`
    (each a subset of ``state.solid``); ``pressure``: a cell pressure to use instead of
    ``state.p``."""
    u = state.u.double()
    v = state.v.double()
    p = (state.p if pressure is None else pressure).double()
    dx = float(state.dx)
    nu = float(viscosity)
    nx, ny = p.shape
    fluid = ~state.solid
    # pressure extrapolated to the wall from the fluid side, per direction of the wall normal
    p_xp = p.clone()                      # wall on the cell's low-x side (body at i-1): use p[i+1]
    p_xp[:-1] = torch.where(fluid[1:], 1.5 * p[:-1] - 0.5 * p[1:], p[:-1])
    p_xm = p.clone()                      # wall on the cell's high-x side (body at i+1): use p[i-1]
    p_xm[1:] = torch.where(fluid[:-1], 1.5 * p[1:] - 0.5 * p[:-1], p[1:])
    p_yp = p.clone()
    p_yp[:, :-1] = torch.where(fluid[:, 1:], 1.5 * p[:, :-1] - 0.5 * p[:, 1:], p[:, :-1])
    p_ym = p.clone()
    p_ym[:, 1:] = torch.where(fluid[:, :-1], 1.5 * p[:, 1:] - 0.5 * p[:, :-1], p[:, 1:])
    uc = 0.5 * (u[:-1] + u[1:])
    vc = 0.5 * (v[:, :-1] + v[:, 1:])
    xf = torch.arange(1, nx, dtype=torch.float64, device=p.device)[:, None] * dx     # x of interior u faces
    yc = (torch.arange(ny, dtype=torch.float64, device=p.device)[None, :] + 0.5) * dx
    xc = (torch.arange(nx, dtype=torch.float64, device=p.device)[:, None] + 0.5) * dx
    yf = torch.arange(1, ny, dtype=torch.float64, device=p.device)[None, :] * dx     # y of interior v faces
    out = []
    for ob, m in zip(obstacles, masks):
        m = m.to(p.device)
        # vertical faces i = 1..nx-1 between cells (i-1, j) and (i, j)
        b_left = m[:-1] & fluid[1:]                 # body on the left, fluid on the right: n = +x
        b_right = fluid[:-1] & m[1:]                # fluid on the left, body on the right: n = -x
        _, vw = ob.velocity(xf.expand(nx - 1, ny), yc.expand(nx - 1, ny))
        fx = (-(p_xp[1:] * b_left).sum() + (p_xm[:-1] * b_right).sum()) * dx
        fy = 2.0 * nu * (((vc[1:] - vw) * b_left).sum() + ((vc[:-1] - vw) * b_right).sum())
        # horizontal faces j = 1..ny-1 between cells (i, j-1) and (i, j)
        b_below = m[:, :-1] & fluid[:, 1:]          # body below, fluid above: n = +y
        b_above = fluid[:, :-1] & m[:, 1:]          # fluid below, body above: n = -y
        uw, _ = ob.velocity(xc.expand(nx, ny - 1), yf.expand(nx, ny - 1))
        fy = fy + (-(p_yp[:, 1:] * b_below).sum() + (p_ym[:, :-1] * b_above).sum()) * dx
        fx = fx + 2.0 * nu * (((uc[:, 1:] - uw) * b_below).sum() + ((uc[:, :-1] - uw) * b_above).sum())
        out.append((float(fx), float(fy)))
    return out


def control_volume_box(masks, k: int, solid: torch.Tensor, margin: int = 4):
    """A box ``(i0, i1, j0, j1)`` of cell faces around obstacle ``k``: its cells' bounding box grown
    by ``margin`` cells (less where needed) so that no other solid cell lies inside and one
    layer of cells remains outside for the stencils; ``None`` when no such box exists (a body
    touching a wall or its neighbour)."""
    m = masks[k]
    nx, ny = m.shape
    ii = torch.nonzero(m.any(1)).flatten()
    jj = torch.nonzero(m.any(0)).flatten()
    if not len(ii):
        return None
    others = solid & ~m
    for g in range(margin, 0, -1):
        i0, i1 = int(ii[0]) - g, int(ii[-1]) + 1 + g
        j0, j1 = int(jj[0]) - g, int(jj[-1]) + 1 + g
        if i0 < 1 or j0 < 1 or i1 > nx - 1 or j1 > ny - 1:
            continue
        if not bool(others[max(i0 - 1, 0):i1 + 1, max(j0 - 1, 0):j1 + 1].any()):
            return (i0, i1, j0, j1)
    return None


def box_integral(fu: torch.Tensor, fv: torch.Tensor, box, dx: float) -> tuple:
    """``(sum fu dV, sum fv dV)`` of face fields ``fu`` (nx+1, ny), ``fv`` (nx, ny+1) over ``box``:
    the faces within it, those on its border at half weight."""
    i0, i1, j0, j1 = box
    dx2 = float(dx) ** 2
    u = fu.double()[i0:i1 + 1, j0:j1]
    v = fv.double()[i0:i1, j0:j1 + 1]
    return (float(u.sum() - 0.5 * (u[0].sum() + u[-1].sum())) * dx2,
            float(v.sum() - 0.5 * (v[:, 0].sum() + v[:, -1].sum())) * dx2)


def box_momentum(state, box) -> tuple:
    """Fluid momentum ``(Mx, My)`` (density 1, per unit depth) inside ``box`` (:func:`box_integral`
    of the velocity)."""
    return box_integral(state.u, state.v, box, state.dx)


class ForceProbe:
    """The force columns of a scene's run records, one probe per scene.

    ``method="control_volume"`` (default): for each obstacle, the momentum balance
    (:func:`control_volume_force`) on :func:`control_volume_box` around it, with ``d/dt`` of the
    box momentum from the previous call or :meth:`start` (a backward difference over the step; 0
    on a first call without :meth:`start`, or a repeated time) and, with it, the pressure the step applied (``state.p``: with the
    pressure predictor the step's time-centred pressure, :func:`~lawful.fluids.solver.stored_pressure`); an
    obstacle without a valid box falls back to the surface integral. ``method="surface"``: :func:`obstacle_forces` (staircase surface: pressure
    extrapolated to the wall + wall shear; first order, and biased where the viscous stencil
    puts the wall a cell away). Columns: :meth:`record`."""

    METHODS = ("control_volume", "surface")

    def __init__(self, obstacles, masks, reference=None, method: str = "control_volume"):
        if method not in self.METHODS:
            raise InputError(f"force method {method!r} is unknown: use one of {self.METHODS}.")
        self.obstacles, self.masks, self.reference, self.method = tuple(obstacles), tuple(masks), reference, method
        _column_names(self.obstacles)
        self._boxes = None
        self._prev = {}

    def _control_boxes(self, state) -> list:
        if self._boxes is None:
            self._boxes = [control_volume_box(self.masks, k, state.solid) for k in range(len(self.masks))]
        return self._boxes

    def start(self, state) -> None:
        """Take ``state``'s box momenta at its time as the previous call's: the next call's d/dt is
        then the change over the step (without it, a run's first record, and the first after a
        restart in a new scene, left the rate term out). A no-op for the surface method."""
        if self.method == "surface":
            return
        for k, box in enumerate(self._control_boxes(state)):
            if box is not None:
                self._prev[k] = (state.t, box_momentum(state, box))

    def forces(self, state, viscosity: float, body_force=None) -> list:
        """``[(fx, fy), ...]`` per obstacle; ``body_force``: the face accelerations the step applied
        to the fluid (:meth:`lawful.fluids.Solver.body_force`; None: none), part of the control
        volume's balance."""
        surface = obstacle_forces(state, viscosity, self.obstacles, self.masks)
        if self.method == "surface":
            return surface
        out = []
        for k, box in enumerate(self._control_boxes(state)):
            if box is None:
                out.append(surface[k])
                continue
            m = box_momentum(state, box)
            rate = (0.0, 0.0)
            prev = self._prev.get(k)
            if prev is not None and state.t > prev[0]:
                rate = ((m[0] - prev[1][0]) / (state.t - prev[0]), (m[1] - prev[1][1]) / (state.t - prev[0]))
            self._prev[k] = (state.t, m)
            out.append(control_volume_force(state, viscosity, box, rate, body_force=body_force))
        return out

    def record(self, state, viscosity: float, body_force=None) -> dict:
        """``drag``, ``lift`` (summed over the obstacles), ``cd``, ``cl`` when ``reference = (U, L)``
        is given, and with several obstacles ``drag_<name>``, ``lift_<name>`` (and ``cd_<name>``,
        ``cl_<name>``) per obstacle (``name`` or its index)."""
        return _record(self.forces(state, viscosity, body_force), self.obstacles, self.reference)


def force_record(state, viscosity: float, obstacles, masks, reference=None) -> dict:
    """The surface-integral force columns (:func:`obstacle_forces`) of one state; see
    :class:`ForceProbe` for the run records' default (control volume)."""
    return _record(obstacle_forces(state, viscosity, obstacles, masks), obstacles, reference)


def _record(forces, obstacles, reference) -> dict:
    rec = {"drag": sum(f[0] for f in forces), "lift": sum(f[1] for f in forces)}
    q = None
    if reference is not None:
        U, L = reference
        q = 0.5 * float(U) ** 2 * float(L)
        rec["cd"], rec["cl"] = rec["drag"] / q, rec["lift"] / q
    if len(forces) > 1:
        for name, f in zip(_column_names(obstacles), forces):
            rec[f"drag_{name}"], rec[f"lift_{name}"] = f
            if q is not None:
                rec[f"cd_{name}"], rec[f"cl_{name}"] = f[0] / q, f[1] / q
    return rec


def _column_names(obstacles) -> list:
    """Each obstacle's name in the force columns (``name``, or its index when unnamed); an
    :class:`InputError` when two would share one (the later obstacle's columns would replace the
    earlier's)."""
    names = [ob.name or str(k) for k, ob in enumerate(obstacles)]
    seen = {}
    for k, name in enumerate(names):
        if name in seen:
            raise InputError(f"obstacles {seen[name]} and {k} would both write the force columns drag_{name} / "
                             f"lift_{name}: give every obstacle its own name (an unnamed obstacle is named by its "
                             "index).")
        seen[name] = k
    return names


def control_volume_force(state, viscosity: float, box, momentum_rate=(0.0, 0.0), pressure=None,
                         body_force=None) -> tuple:
    """The force of the fluid on whatever lies inside the rectangle ``box = (i0, i1, j0, j1)``
    (cell-face indices: the lines ``x = i0 dx``, ``x = i1 dx``, ``y = j0 dx``, ``y = j1 dx``; every
    cell of the box border fluid, with one cell of fluid outside) from the momentum balance of the
    fluid in it (density 1, per unit depth):

        F = sum over the box faces of ( -p n + sigma . n - u (u . n) ) dS  -  d/dt (momentum in the box)
            + integral over the fluid in the box of f dV

    with ``sigma = nu (grad u + grad u^T)`` by central differences on the MAC grid, ``p`` the
    cell pressure (``state.p`` or ``pressure``) averaged to the border and ``momentum_rate`` the
    caller's estimate of the d/dt term (0 for a steady flow) and ``f`` the body force per unit
    mass on the fluid faces, ``body_force = (fu, fv)`` (:func:`~lawful.fluids.solver.body_acceleration`:
    forcing, linear drag, buoyancy; None: none, which is wrong for a driven or buoyant flow). The border lies in smooth flow away from the staircase surface,
    so this is the check :func:`obstacle_forces` is compared against (``bench_cfd.py``).
    """
    i0, i1, j0, j1 = (int(k) for k in box)
    u = state.u.double()
    v = state.v.double()
    p = (state.p if pressure is None else pressure).double()
    dx = float(state.dx)
    nu = float(viscosity)
    fx = fy = 0.0
    js = torch.arange(j0, j1)
    is_ = torch.arange(i0, i1)
    for i, sgn in ((i1, 1.0), (i0, -1.0)):             # vertical sides, normal +-x
        uf = u[i, js]
        vf = 0.25 * (v[i - 1, js] + v[i, js] + v[i - 1, js + 1] + v[i, js + 1])
        pf = 0.5 * (p[i - 1, js] + p[i, js])
        dudx = (u[i + 1, js] - u[i - 1, js]) / (2 * dx)
        dudy = (u[i, js + 1] - u[i, js - 1]) / (2 * dx)
        dvdx = (0.5 * (v[i, js] + v[i, js + 1]) - 0.5 * (v[i - 1, js] + v[i - 1, js + 1])) / dx
        fx += sgn * float((-pf + 2 * nu * dudx - uf * uf).sum()) * dx
        fy += sgn * float((nu * (dudy + dvdx) - vf * uf).sum()) * dx
    for j, sgn in ((j1, 1.0), (j0, -1.0)):             # horizontal sides, normal +-y
        vf = v[is_, j]
        uf = 0.25 * (u[is_, j - 1] + u[is_ + 1, j - 1] + u[is_, j] + u[is_ + 1, j])
        pf = 0.5 * (p[is_, j - 1] + p[is_, j])
        dvdy = (v[is_, j + 1] - v[is_, j - 1]) / (2 * dx)
        dvdx = (v[is_ + 1, j] - v[is_ - 1, j]) / (2 * dx)
        dudy = (0.5 * (u[is_, j] + u[is_ + 1, j]) - 0.5 * (u[is_, j - 1] + u[is_ + 1, j - 1])) / dx
        fy += sgn * float((-pf + 2 * nu * dvdy - vf * vf).sum()) * dx
        fx += sgn * float((nu * (dudy + dvdx) - uf * vf).sum()) * dx
    if body_force is not None:
        bx, by = box_integral(body_force[0], body_force[1], box, dx)
        fx, fy = fx + bx, fy + by
    return fx - float(momentum_rate[0]), fy - float(momentum_rate[1])

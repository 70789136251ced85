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

The record columns (:func:`force_columns`): ``drag`` is the component along the mean flow
(:func:`flow_direction`: the inflow direction, into the domain; +x without an inflow side) and
``lift`` the component 90 degrees counter-clockwise from it (for a flow in +x: the x and y
components, as before 2026-12), with the raw ``fx``, ``fy`` alongside; with a reference velocity
``U`` and length ``L``: ``cd = 2 drag / (U^2 L)``, ``cl = 2 lift / (U^2 L)``. Staircase surfaces
make the shear, and hence the drag, first-order accurate in ``dx``; ``benchmarks/bench_cfd.py``
reports the error against the Schäfer-Turek 2D-1 benchmark.
Obstacles touching a periodic seam are not supported (their faces across the seam are skipped).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch

from lawful.kernels.errors import InputError
from lawful.kernels.mac_grid import faces_touching

__all__ = ["Circle", "Box", "obstacle_masks", "body_velocity", "obstacle_forces", "force_record", "force_columns",
           "flow_direction", "FORCE_METHODS", "SURFACE_BIAS", "control_volume_force", "control_volume_box",
           "box_momentum", "box_integral", "fluid_integral", "ForceProbe"]


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

    def cells(self, nx: int, ny: int, dx: float, device=None) -> torch.Tensor:
        """``(nx, ny)`` bool: the cells whose centre lies inside the disc, decided in cell units
        (:func:`_in_cells`): a centre on the rim is outside, whatever the length unit."""
        ci, cj = _cell_centres(nx, ny, device)
        cx, cy, r = (_in_cells(v, dx) for v in (*self.centre, self.radius))
        return ((ci - cx) ** 2 + (cj - cy) ** 2) < r * r - _CELL_TIE

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

    def cells(self, nx: int, ny: int, dx: float, device=None) -> torch.Tensor:
        """``(nx, ny)`` bool: the cells whose centre lies inside (closed on the low sides), decided
        in cell units (:func:`_in_cells`), whatever the length unit."""
        ci, cj = _cell_centres(nx, ny, device)
        x0, y0, x1, y1 = (_in_cells(v, dx) for v in (*self.lo, *self.hi))
        return (ci >= x0) & (ci < x1) & (cj >= y0) & (cj < y1)

    def velocity(self, x, y):
        """A static box: zero velocity."""
        return torch.zeros_like(x + y), torch.zeros_like(x + y)


#: shapes are placed on the grid in cell units rounded to 1e-9 cells (:func:`_in_cells`), and a
#: cell centre within this many squared cells of a circle's rim counts as outside
_CELL_TIE = 1e-9


def _in_cells(v: float, dx: float) -> float:
    """A domain length or coordinate in cells, rounded to 1e-9 cells: the same shape in another
    length unit (all lengths times L) lands on the same cells. Decided in domain units, a cell
    centre on a circle's rim fell in or out with the rounding of the unit: 21 / 20 / 19 / 16 cells
    for one body at L = 1 / 10 / 0.1 / 100, asymmetric masks and cd 5.126 against 5.464."""
    return round(float(v) / float(dx), 9)


def _cell_centres(nx: int, ny: int, device=None):
    """Cell centres in cell units (exact: ``i + 1/2``), as ``(nx, 1)`` and ``(1, ny)`` columns."""
    return ((torch.arange(nx, dtype=torch.float64, device=device)[:, None] + 0.5),
            (torch.arange(ny, dtype=torch.float64, device=device)[None, :] + 0.5))


def obstacle_masks(obstacles, nx: int, ny: int, dx: float, device=None) -> list:
    """One ``(nx, ny)`` bool mask per obstacle: the cells whose centre is inside it, decided in
    cell units (``obstacle.cells``)."""
    return [ob.cells(nx, ny, dx, device) for ob in obstacles]


def body_velocity(obstacles, masks, nx: int, ny: int, dx: float, dtype=torch.float64, device=None,
                  periodic=(False, False)):
    """``(ub (nx+1, ny), vb (nx, ny+1))``: each obstacle's rigid velocity at the faces of its cells
    and their neighbours (zero elsewhere), or ``None`` when no obstacle moves. ``periodic``: the
    periodic axes, whose first and last faces are one face (both copies get a body's velocity).

    Known limit (audit 2026-12, F1, in part open): the body's surface faces (a body cell on one
    side, fluid on the other) carry the rigid velocity, including its normal part (up to the rim
    speed), so ``state.u``, ``state.v`` pass fluid through a spinning body: a rigid rotation's
    ``u`` is constant along a row of the body's cells and ``v`` along a column, so what enters one
    end of a row leaves at the other. The solver's scalars do not ride that field (since 2026-12):
    :meth:`~lawful.fluids.solver.Solver.scalar_velocity` carries them with the nearest
    divergence-free field that passes nothing through a body, so none enters it and totals are
    kept (a uniform dye: 0 inside, 1 to 3e-9 outside; before, 3.6 % inside after 200 steps and
    down to 0.60 outside; a blob of dye touching a disc spinning at 0.6 rim speed kept its total to
    2e-16, where riding ``state.u`` lost 18.6 % into the disc). Prescribing 0 on the surface faces
    keeps the fluid out too but, because the viscous obstacle ghost and the advection read the same
    face value as the wall's tangential velocity, it removes most of the spin's drive (the Couette
    velocity around a disc in a box 0.11 for 0.42, Magnus cl -0.43 for -1.77); an impermeable
    surface (flux 0) with the rigid velocity kept as the wall velocity for the viscous ghosts and
    the advection's samples still brakes the swirl at the fixed staircase teeth (0.350 / 0.327 at
    n = 32 / 64 for Couette's 0.423, moving away under refinement). A velocity field that neither
    crosses the body nor brakes the swirl needs cut cells; :func:`~lawful.fluids.scenes.flow_scene`
    warns when a body rotates."""
    if not any(getattr(ob, "omega", 0.0) for ob in obstacles):
        return None
    xu = torch.arange(nx + 1, dtype=torch.float64, device=device)[:, None] * dx
    yu = (torch.arange(ny, dtype=torch.float64, device=device)[None, :] + 0.5) * dx
    xv = (torch.arange(nx, dtype=torch.float64, device=device)[:, None] + 0.5) * dx
    yv = torch.arange(ny + 1, dtype=torch.float64, device=device)[None, :] * dx
    ub = torch.zeros((nx + 1, ny), dtype=torch.float64, device=device)
    vb = torch.zeros((nx, ny + 1), dtype=torch.float64, device=device)
    for ob, m in zip(obstacles, masks):
        tu, tv = faces_touching(m.to(device), periodic)
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


def fluid_integral(fu: torch.Tensor, fv: torch.Tensor, box, dx: float, solid: torch.Tensor,
                   periodic=(False, False)) -> tuple:
    """``(integral of fu dV, integral of fv dV)`` over the fluid in ``box``: a body force per unit
    mass given on the free faces (:func:`~lawful.fluids.solver.body_acceleration`, zero on the
    fixed ones) integrated over the fluid the box holds, the term the momentum balance of that
    fluid needs (:func:`control_volume_force`).

    Each fluid cell holds ``dx^2`` of fluid, half on either side of its centre along each axis,
    and each half takes the value on the face it touches when that face is free. A face touching a
    solid cell (the body's surface: fixed, so no value is given there) lends its half cell the
    value on the cell's opposite face along that axis (the nearest free face on the fluid side;
    0 when that face touches a solid cell too, a fluid cell one cell wide between solid ones). So
    a face between two fluid cells counts ``dx^2``, one on the box border ``dx^2 / 2``
    (:func:`box_integral`), one on a body's surface ``dx^2 / 2`` (its fluid side) and one inside a
    body nothing: a uniform ``f`` integrates to ``f`` times the fluid area in the box, exactly.
    The surface integral (:func:`obstacle_forces`) extrapolates the pressure across the same half
    cells from the same face, so at rest the two methods give one force, Archimedes' ``-f A`` on
    the body's cells for a uniform ``f`` (to rounding). A buoyancy that varies across the half
    cell (a stratified scalar) is taken half a cell further out than the cell's own scalar: the
    force at rest is then second order in ``dx`` (a square in ``s = exp(3 y)``: 1.3 %, 0.29 %,
    0.07 % at 4, 8, 16 cells across; the fluid cell's scalar, which the faces do not carry, would
    be 7x closer).

    Until 2026-12-03 the body force was :func:`box_integral` of the free faces: the half cells of
    fluid against a body got none, and a body read a face wider along the force (Archimedes 12.5 %
    too large for a square of 8 x 8 cells, 15.4 % for a disc 8 cells across; 6.3 % / 7.7 % at 16).
    ``periodic``: the periodic axes (a face on the seam sees the wrapped cell)."""
    i0, i1, j0, j1 = (int(k) for k in box)
    touch_u, touch_v = faces_touching(solid.to(fu.device), periodic)
    out = []
    for f, free, axis in ((fu, ~touch_u, 0), (fv, ~touch_v, 1)):
        n = f.shape[axis] - 1                                           # cells along the axis
        g = torch.where(free, f.double(), torch.zeros((), dtype=torch.float64, device=f.device))
        lo, hi = g.narrow(axis, 0, n), g.narrow(axis, 1, n)             # each cell's two faces
        free_lo, free_hi = free.narrow(axis, 0, n), free.narrow(axis, 1, n)
        # each half cell: its face's value where free, else the opposite face's (0 if fixed too)
        cell = 0.5 * (torch.where(free_lo, lo, hi) + torch.where(free_hi, hi, lo))
        out.append(float(cell[i0:i1, j0:j1].sum()) * float(dx) ** 2)
    return out[0], out[1]


def box_momentum(state, box) -> tuple:
    """Fluid momentum ``(Mx, My)`` (density 1, per unit depth) inside ``box`` (:func:`box_integral`
    of the velocity)."""
    return box_integral(state.u, state.v, box, state.dx)


#: The force methods, by their code in the ``force_method`` columns (0 = control volume, 1 = surface).
FORCE_METHODS = ("control_volume", "surface")
#: Measured bias of the surface integral against the control volume on the same state (audit
#: 2026-12): cd 9-14 % low in some flows (Schäfer-Turek 2D-1 at 10 cells/D 5.10 for 5.60; a
#: cylinder 2 cells from a no-slip wall 3.41 for 3.86), 9-21 % high in others (the Kármán scene
#: at Re 100, 4 cells/D, obstacle_ghost off: 1.76-1.83 for 1.51-1.61 at t = 15-30, +9 % after
#: 600 steps): its sign depends on the flow, so the warning gives neither direction alone.
SURFACE_BIAS = ("cd off by 9-21 % against the control volume on the same state, of either sign (9-14 % low in "
                "Schäfer-Turek 2D-1, 9-21 % high in the Kármán scene)")


def flow_direction(boundary, nx: int, ny: int) -> tuple:
    """``(ex, ey)``: the unit vector of the mean flow that ``drag`` is measured along: the inward
    normal of the inflow side (``x_lo`` -> +x, ``x_hi`` -> -x, ``y_lo`` -> +y, ``y_hi`` -> -y);
    with several inflow sides their inward normals weighted by the side's length (``ny`` cells
    for an x side, ``nx`` for a y side: the inflow's volume flux). Without an inflow side (boxes,
    periodic flows), or with inflows that cancel, +x. ``lift`` is 90 degrees counter-clockwise
    from it: ``(-ey, ex)``."""
    ex = ey = 0.0
    for side, (sx, sy), length in (("x_lo", (1, 0), ny), ("x_hi", (-1, 0), ny), ("y_lo", (0, 1), nx),
                                   ("y_hi", (0, -1), nx)):
        if getattr(boundary, side) == "inflow":
            ex, ey = ex + sx * length, ey + sy * length
    r = math.hypot(ex, ey)
    return (1.0, 0.0) if r == 0.0 else (ex / r, ey / r)


def _wall_gap(masks, k: int, solid: torch.Tensor) -> str:
    """Words for how close obstacle ``k`` is to the domain edge and to the other solid cells (the
    fluid cells between them), for the fallback warning."""
    m = masks[k].to(solid.device)
    nx, ny = m.shape
    ii, jj = torch.nonzero(m, as_tuple=True)
    if not len(ii):
        return "no cell of it on the grid"
    edges = {"x_lo": int(ii.min()), "x_hi": nx - 1 - int(ii.max()),
             "y_lo": int(jj.min()), "y_hi": ny - 1 - int(jj.max())}
    side = min(edges, key=edges.get)
    words = [f"{edges[side]} fluid cell(s) from the {side} side"]
    oi, oj = torch.nonzero(solid & ~m, as_tuple=True)
    if len(oi):
        d = torch.maximum((ii[:, None] - oi[None, :]).abs(), (jj[:, None] - oj[None, :]).abs()).min()
        words.append(f"{int(d) - 1} fluid cell(s) from another solid body")
    return " and ".join(words)


class ForceProbe:
    """The force columns of a scene's run records, one probe per scene.

    ``method="control_volume"`` (default): for each obstacle, the momentum balance
    (:func:`control_volume_force`) on :func:`control_volume_box` around it, with ``d/dt`` of the
    box momentum since the latest earlier time it saw (a backward difference over the step; the
    first from :meth:`start`) and, with it, the pressure the step applied (``state.p``: with the
    pressure predictor the step's time-centred pressure, :func:`~lawful.fluids.solver.stored_pressure`).
    Asked again at the time of its last evaluation (``scene.forces()`` after ``run()``, or from a
    run's callback), it returns that evaluation's result (until 2026-12 it recomputed the balance
    without its d/dt term: lift +0.044 for the run's +0.024 in Kármán shedding). A probe that has
    seen no earlier time (neither a previous call nor :meth:`start`) has no rate: it takes d/dt = 0
    and warns once. An obstacle without a valid box (within about 2 cells of the domain edge or of
    another body) falls back to the surface integral: recorded in its ``force_method`` column and
    warned once per obstacle (the surface integral is biased, :data:`SURFACE_BIAS`).
    ``method="surface"``: :func:`obstacle_forces` (staircase surface: pressure extrapolated to the
    wall + wall shear; first order, and biased where the viscous stencil puts the wall a cell
    away). Columns: :meth:`record`."""

    METHODS = FORCE_METHODS

    def __init__(self, obstacles, masks, reference=None, method: str = "control_volume"):
        if method not in self.METHODS:
            raise InputError(f"force method {method!r} is unknown: use one of {self.METHODS}.")
        self.obstacles, self.masks, self.reference, self.method = tuple(obstacles), tuple(masks), reference, method
        _column_names(self.obstacles)
        self._boxes = None
        self._prev = {}          # obstacle index -> (t, box momentum) of the last call or start()
        self._before = {}        # obstacle index -> the last (t, box momentum) at a time before _prev's
        self._last = None        # (t, box momenta, forces) of the last evaluation
        self._warned = set()

    def _control_boxes(self, state) -> list:
        if self._boxes is None:
            self._boxes = [control_volume_box(self.masks, k, state.solid) for k in range(len(self.masks))]
        return self._boxes

    def methods(self, state) -> list:
        """Per obstacle, the method its force uses (one of :data:`FORCE_METHODS`): the probe's,
        except ``"surface"`` for an obstacle that has no control-volume box."""
        if self.method == "surface":
            return ["surface"] * len(self.obstacles)
        return ["surface" if box is None else "control_volume" for box in self._control_boxes(state)]

    def start(self, state) -> None:
        """Take ``state``'s box momenta at its time as the previous call's: the next call's d/dt is
        then the change over the step (without it, a run's first record, and the first after a
        restart in a new scene, left the rate term out). A no-op for the surface method."""
        if self.method == "surface":
            return
        for k, box in enumerate(self._control_boxes(state)):
            if box is not None:
                self._prev[k] = (state.t, box_momentum(state, box))

    def _warn_once(self, key, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            warnings.warn(message, UserWarning, stacklevel=4)

    def forces(self, state, viscosity: float, body_force=None) -> list:
        """``[(fx, fy), ...]`` per obstacle (x and y components, per unit depth, density 1);
        ``body_force``: the face accelerations the step applied to the fluid
        (:meth:`lawful.fluids.Solver.body_force`; None: none), part of the control volume's
        balance."""
        if self.method == "surface":
            return obstacle_forces(state, viscosity, self.obstacles, self.masks)
        boxes = self._control_boxes(state)
        names = _column_names(self.obstacles)
        momenta = [None if box is None else box_momentum(state, box) for box in boxes]
        if self._last is not None and self._last[0] == state.t and self._last[1] == momenta:
            return list(self._last[2])           # the same state asked again: the same answer
        surface = None
        out = []
        for k, box in enumerate(boxes):
            if box is None:
                if surface is None:
                    surface = obstacle_forces(state, viscosity, self.obstacles, self.masks)
                self._warn_once(("surface", k), (
                    f"ForceProbe: obstacle {names[k]!r} is {_wall_gap(self.masks, k, state.solid)}: no control-volume "
                    "box with a clear cell fits around it, so its force is the staircase surface integral "
                    f"(its force_method column reads 1), {SURFACE_BIAS} (the drag jumps by that much where a "
                    "sweep crosses this gap). Leave 2 or more fluid cells around the body, or refine the grid."))
                out.append(surface[k])
                continue
            m = momenta[k]
            last = self._prev.get(k)
            if last is None or last[0] != state.t:      # a new time: the last one seen is the one before it
                self._before[k] = last if last is not None and last[0] < state.t else None
            prev = self._before.get(k)                  # (another state at the same time keeps it)
            if prev is not None:
                dt = state.t - prev[0]
                rate = ((m[0] - prev[1][0]) / dt, (m[1] - prev[1][1]) / dt)
            else:
                rate = (0.0, 0.0)
                self._warn_once("rate", (
                    f"ForceProbe: no state before t={state.t:g} seen (no earlier call, no start()): the "
                    "control-volume forces leave out d/dt of the momentum in the box, which is right only for a "
                    "steady flow. Call scene.start_forces(state) before stepping, or read the forces from run()."))
            self._prev[k] = (state.t, m)
            out.append(control_volume_force(state, viscosity, box, rate, body_force=body_force))
        self._last = (state.t, momenta, tuple(out))
        return out

    def record(self, state, viscosity: float, body_force=None) -> dict:
        """The force columns of ``state`` (:func:`force_columns`): ``drag`` along the mean flow
        (:func:`flow_direction` of ``state.boundary``), ``lift`` 90 degrees counter-clockwise
        from it, the raw ``fx``, ``fy``, the ``force_method`` code per obstacle, and ``cd``,
        ``cl`` when ``reference = (U, L)`` is given."""
        return force_columns(self.forces(state, viscosity, body_force), self.obstacles, self.reference,
                             flow_direction(state.boundary, state.nx, state.ny), self.methods(state))


def force_record(state, viscosity: float, obstacles, masks, reference=None) -> dict:
    """The surface-integral force columns (:func:`obstacle_forces`, :func:`force_columns`) of one
    state; see :class:`ForceProbe` for the run records' default (control volume)."""
    return force_columns(obstacle_forces(state, viscosity, obstacles, masks), obstacles, reference,
                         flow_direction(state.boundary, state.nx, state.ny), ["surface"] * len(obstacles))


def force_columns(forces, obstacles, reference=None, direction=(1.0, 0.0), methods=None) -> dict:
    """The record columns of per-obstacle forces ``[(fx, fy), ...]`` (per unit depth, density 1,
    length^3/time^2):

    * ``drag`` = ``F . e`` and ``lift`` = ``F . (-ey, ex)`` for the flow ``direction = (ex, ey)``
      (:func:`flow_direction`: the inflow direction, +x without an inflow), summed over the
      obstacles; for a flow in +x exactly the x and y components;
    * ``fx``, ``fy``: the raw x and y components, summed;
    * ``force_method``: per obstacle, the index in :data:`FORCE_METHODS` of the method its force
      used (0 control volume, 1 surface integral; ``methods``: their names, default all control
      volume);
    * ``cd = drag / (U^2 L / 2)``, ``cl = lift / (U^2 L / 2)`` with ``reference = (U, L)``.

    With several obstacles the sums carry no suffix and each obstacle adds ``drag_<name>``,
    ``lift_<name>``, ``fx_<name>``, ``fy_<name>``, ``force_method_<name>`` (and ``cd_<name>``,
    ``cl_<name>``), ``name`` its name or index; with one, ``force_method`` is its code."""
    ex, ey = (float(c) for c in direction)
    methods = list(methods) if methods is not None else ["control_volume"] * len(forces)
    codes = [FORCE_METHODS.index(mth) for mth in methods]
    along = [(ex * f[0] + ey * f[1], -ey * f[0] + ex * f[1]) for f in forces]
    rec = {"drag": sum(d for d, _ in along), "lift": sum(li for _, li in along)}
    q = None
    if reference is not None:
        U, L = reference
        q = 0.5 * float(U) ** 2 * float(L)
        rec["cd"], rec["cl"] = rec["drag"] / q, rec["lift"] / q
    rec["fx"], rec["fy"] = sum(f[0] for f in forces), sum(f[1] for f in forces)
    if len(forces) == 1:
        rec["force_method"] = codes[0]
    if len(forces) > 1:
        for name, f, (d, li), code in zip(_column_names(obstacles), forces, along, codes):
            rec[f"drag_{name}"], rec[f"lift_{name}"] = d, li
            if q is not None:
                rec[f"cd_{name}"], rec[f"cl_{name}"] = d / q, li / q
            rec[f"fx_{name}"], rec[f"fy_{name}"] = f
            rec[f"force_method_{name}"] = code
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
    forcing, linear drag, buoyancy; None: none, which is wrong for a driven or buoyant flow),
    integrated over the fluid cells in the box (:func:`fluid_integral`: the half cells of fluid
    against the body included, with the value on the fluid cell's other face; a body in fluid at
    rest under a uniform body force feels Archimedes' force on its cells, to rounding, as the
    surface integral gives). The border lies in smooth flow away from the staircase surface,
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
        bx, by = fluid_integral(body_force[0], body_force[1], (i0, i1, j0, j1), dx, state.solid,
                                state.boundary.periodic_axes)
        fx, fy = fx + bx, fy + by
    return fx - float(momentum_rate[0]), fy - float(momentum_rate[1])

"""Corner geometry of a MAC grid for the correctors: pinned corners, solid bodies, masks.

A corrector works on the grid's cell *corners* ``(nx+1, ny+1)``. What it needs to know about a
grid with a given :class:`~lawful.kernels.mac_grid.Boundary` and obstacle mask ``solid`` ``(nx, ny)``
is a :class:`CornerGeometry`: the corners pinned by walls, obstacles and inflow sides, their
connected solid bodies (psi is held at one constant per body), the fluid fraction around each corner,
the face masks and the periodic mean-flow axes. :func:`corner_geometry` builds one (a pure function
of the boundary and the mask *content*, no cache). :class:`GeometryCache` is the small cache a
corrector instance owns: keyed on the mask's content (not its ``id`` or version counter), so an
obstacle edited in place, a new mask that reuses a freed tensor's id, or a new scene always gets
its own geometry. Nothing here is process-wide state.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lawful.kernels.errors import InputError, ShapeError
from lawful.kernels.mac_grid import Boundary, face_bc, same_mask, solid_corner_mask

__all__ = ["CornerGeometry", "corner_geometry", "GeometryCache"]


@dataclass(frozen=True)
class CornerGeometry:
    """Static description of a grid the correctors need (build with :func:`corner_geometry`).

    ``pinned`` ``(nx+1, ny+1)`` bool: corners on walls/obstacles/inflow sides; ``body`` ``(nx+1,
    ny+1)`` int64: index of the connected solid body of each pinned corner (-1 elsewhere);
    ``n_bodies``; ``fluid_corner`` ``(nx+1, ny+1)``: fluid fraction of the 4 cells around a corner;
    ``ubc``/``vbc``: :func:`lawful.kernels.mac_grid.face_bc` of the grid (float, on the device);
    ``mean_axes`` ``(2,)``: 1 where a uniform flow along x / y is allowed (periodic axis, no
    obstacle); ``periodic`` (px, py).
    """

    nx: int
    ny: int
    periodic: tuple
    pinned: torch.Tensor
    body: torch.Tensor
    n_bodies: int
    fluid_corner: torch.Tensor
    ubc: torch.Tensor
    vbc: torch.Tensor
    mean_axes: torch.Tensor




def _label_bodies(pinned: torch.Tensor, periodic, ufixed: torch.Tensor, vfixed: torch.Tensor):
    """Solid bodies: connected components of the pinned corners, two neighbouring corners being
    joined when the face between them is fixed (corners ``(i,j)-(i,j+1)`` bound u face ``(i,j)``,
    ``(i,j)-(i+1,j)`` bound v face ``(i,j)``); wraps on periodic axes (duplicate corners are the
    same point). Two bodies a fluid face apart stay separate, so the correction may move fluid
    through the gap. Pure python union-find, run once per geometry."""
    nxp, nyp = pinned.shape
    px, py = bool(periodic[0]), bool(periodic[1])
    cx, cy = nxp - 1 if px else nxp, nyp - 1 if py else nyp   # canonical corner counts
    pin = pinned[:cx, :cy].cpu().tolist()
    uf = ufixed.cpu().tolist()
    vf = vfixed.cpu().tolist()
    parent = list(range(cx * cy))

    def find(a):
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    def union(a, b):
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[rb] = ra

    for i in range(cx):
        for j in range(cy):
            if not pin[i][j]:
                continue
            ni, nj = i + 1, j + 1
            if ni == cx and px:
                ni = 0
            if ni < cx and pin[ni][j] and j < len(vf[0]) and i < len(vf) and vf[i][j]:
                union(i * cy + j, ni * cy + j)
            if nj == cy and py:
                nj = 0
            if nj < cy and pin[i][nj] and j < len(uf[0]) and uf[i][j]:
                union(i * cy + j, i * cy + nj)
    body = torch.full((nxp, nyp), -1, dtype=torch.int64)
    ids: dict[int, int] = {}
    for i in range(cx):
        for j in range(cy):
            if pin[i][j]:
                root = find(i * cy + j)
                body[i, j] = ids.setdefault(root, len(ids))
    if px:
        body[cx, :cy] = body[0, :cy]
    if py:
        body[:, cy] = body[:, 0]
    return body, len(ids)




def _pad_axis(x: torch.Tensor, dim: int, periodic: bool, mode: str = "replicate", value=0.0):
    """Pad ``x`` by one sample on both ends of ``dim``: wrap, replicate or a constant."""
    n = x.shape[dim]
    first, last = x.narrow(dim, 0, 1), x.narrow(dim, n - 1, 1)
    if periodic:
        lo, hi = last, first
    elif mode == "replicate":
        lo, hi = first, last
    else:
        lo = torch.full_like(first, value)
        hi = torch.full_like(last, value)
    return torch.cat([lo, x, hi], dim)


def _cells_to_corners(c: torch.Tensor, periodic, pad_value=None) -> torch.Tensor:
    """``(C, nx, ny)`` cell values -> ``(C, nx+1, ny+1)`` corner averages of the 4 cells around
    each corner (periodic wrap; outside a non-periodic side: ``pad_value`` or replicate)."""
    mode = "replicate" if pad_value is None else "constant"
    val = 0.0 if pad_value is None else pad_value
    p = _pad_axis(c, 1, periodic[0], mode, val)
    p = _pad_axis(p, 2, periodic[1], mode, val)
    return 0.25 * (p[:, :-1, :-1] + p[:, 1:, :-1] + p[:, :-1, 1:] + p[:, 1:, 1:])



def _check(boundary, solid):
    if not isinstance(boundary, Boundary):
        raise InputError(f"boundary must be a lawful.kernels.mac_grid.Boundary, got {type(boundary).__name__}.")
    if not isinstance(solid, torch.Tensor) or solid.dim() != 2:
        shape = tuple(solid.shape) if isinstance(solid, torch.Tensor) else type(solid).__name__
        raise ShapeError(f"solid mask has shape {shape}; it must be an (nx, ny) bool tensor.")


def corner_geometry(boundary: Boundary, solid: torch.Tensor, dtype=torch.float32) -> CornerGeometry:
    """The :class:`CornerGeometry` of a grid with ``boundary`` and obstacle mask ``solid``
    ``(nx, ny)`` bool, float tensors in ``dtype`` on ``solid``'s device. Built from scratch on
    every call (the body labelling is a Python union-find: call it once per grid, or use a
    :class:`GeometryCache`)."""
    _check(boundary, solid)
    solid = solid.detach().bool()
    nx, ny = solid.shape
    px, py = boundary.periodic_axes
    pinned = solid_corner_mask(boundary, solid)
    ubc, vbc = face_bc(boundary, solid, dtype)
    body, nb = _label_bodies(pinned, (px, py), ubc[0] == 0, vbc[0] == 0)
    fluid = (~solid).to(dtype)
    fc = _cells_to_corners(fluid.unsqueeze(0), (px, py), pad_value=0.0)[0]
    has_solid = bool(solid.any())
    mean_axes = torch.tensor([float(px and not has_solid), float(py and not has_solid)],
                             dtype=dtype, device=solid.device)
    return CornerGeometry(nx, ny, (px, py), pinned, body.to(solid.device), nb, fc, ubc, vbc, mean_axes)


class GeometryCache:
    """A bounded cache of :class:`CornerGeometry` keyed on the *content* of the obstacle mask.

    ``cache.get(boundary, solid, dtype)`` returns the geometry of exactly this boundary and mask:
    each entry keeps a private copy of the mask it was built from and is reused only when the
    boundary, dtype, device and every mask cell are equal
    (:func:`~lawful.kernels.mac_grid.same_mask`: the bytes of a CPU mask, ``torch.equal`` on other
    devices). An in-place edit of a mask, a new tensor that reuses a
    freed one's ``id``, or another scene therefore never gets a stale geometry. Holds at most
    ``maxsize`` grids (least recently used dropped first). Owned by one corrector (or solver).
    """

    def __init__(self, maxsize: int = 4):
        if int(maxsize) < 1:
            raise InputError(f"GeometryCache maxsize={maxsize!r} must be >= 1.")
        self.maxsize = int(maxsize)
        self._entries: list = []        # [(boundary, dtype, mask copy, geometry)], most recent first
        self.builds = 0                  # geometries built (a miss each)

    def get(self, boundary: Boundary, solid: torch.Tensor, dtype=torch.float32) -> CornerGeometry:
        """The geometry of ``boundary`` and ``solid`` ``(nx, ny)`` in ``dtype`` (built on a miss)."""
        _check(boundary, solid)
        solid = solid.detach().bool()
        for k, (b, dt, mask, geom) in enumerate(self._entries):
            if (dt == dtype and b == boundary and mask.shape == solid.shape and mask.device == solid.device
                    and same_mask(mask, solid)):
                if k:
                    self._entries.insert(0, self._entries.pop(k))
                return geom
        geom = corner_geometry(boundary, solid, dtype)
        self.builds += 1
        self._entries.insert(0, (boundary, dtype, solid.clone(), geom))
        del self._entries[self.maxsize:]
        return geom

    def clear(self) -> None:
        """Drop every cached geometry."""
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


# --------------------------------------------------------------------------------------------
# THE way a stream-function correction is applied (solver corrector slot and the correctors)
# --------------------------------------------------------------------------------------------

def pin_stream_function(raw: torch.Tensor, geom: CornerGeometry) -> torch.Tensor:
    """Hold a corner stream function ``(nx+1, ny+1)`` at one constant on each solid body of
    ``geom`` (the mean of ``raw`` over the body's pinned corners; differentiable). The flux through
    a face is the difference of psi at its two corners, so the curl of the result carries no flow
    through any wall, obstacle or inflow face, never changes the net flow between the outer walls
    (they are one body), and may carry a circulation around an obstacle."""
    if not geom.n_bodies:
        return raw
    body = geom.body.reshape(-1)
    pinned = body >= 0
    # the mean counts each physical corner once: on a periodic axis the last corner row is row 0
    # again (it used to count twice, so a wall's constant, and a periodic channel's net flow, moved
    # with where the seam was)
    once = geom.body >= 0
    if geom.periodic[0] or geom.periodic[1]:
        once = once.clone()
        if geom.periodic[0]:
            once[-1] = False
        if geom.periodic[1]:
            once[:, -1] = False
    once = once.reshape(-1)
    idx = body.clamp_min(0)
    flat = raw.reshape(-1)
    sums = torch.zeros(geom.n_bodies, dtype=raw.dtype, device=raw.device).index_add(0, idx[once], flat[once])
    counts = torch.zeros(geom.n_bodies, dtype=raw.dtype, device=raw.device).index_add(
        0, idx[once], torch.ones_like(flat[once]))
    const = (sums / counts)[idx]
    return torch.where(pinned, const, flat).reshape(raw.shape)


def apply_stream_function(u: torch.Tensor, v: torch.Tensor, psi: torch.Tensor, geom: CornerGeometry, dx: float,
                          mean=None, pinned: bool = False) -> None:
    """Add the correction of a corner stream function to the face velocities, in place: the one
    rule used by the solver's corrector slot (:meth:`lawful.fluids.solver.Solver.apply_correction`)
    and by :class:`~lawful.fluids.correctors.DivergenceFreeCorrector`.

    1. psi ``(nx+1, ny+1)`` (length^2/time) is held at one constant per solid body
       (:func:`pin_stream_function`; skipped when ``pinned=True``: the caller already did);
    2. its discrete curl (:func:`lawful.kernels.mac_operators.curl`, the Taichi kernel) is added to
       ``u`` ``(nx+1, ny)`` and ``v`` ``(nx, ny+1)`` in place; on float32 fields each face's sum is
       formed in float64 and rounded once (in the kernel), so the corrected field's divergence is the
       projection's plus at most the rounding of the sum (2 eps max|u|), inside the 4 eps headroom
       the projection leaves below its tolerance;
    3. ``mean = (mx, my)``: a uniform flow added on the axes where ``geom.mean_axes`` allows it
       (periodic axes without obstacles; divergence-free, not the curl of a periodic psi).
    """
    from lawful.kernels.mac_operators import curl

    with torch.no_grad():
        if not pinned:
            psi = pin_stream_function(psi.to(torch.float64), geom)
        offset = (0.0, 0.0)
        if mean is not None:
            m = mean.tolist() if isinstance(mean, torch.Tensor) else [float(x) for x in mean]
            offset = tuple(x * a for x, a in zip(m, geom.mean_axes.tolist()))
        # float32 fields: the curl kernel forms u + curl(psi) + mean in float64 and rounds once
        curl(psi.to(torch.float64).contiguous(), u, v, dx, geom.periodic, accumulate=True, offset=offset)

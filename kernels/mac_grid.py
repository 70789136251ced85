"""The MAC (staggered) grid: layout, boundary description and face classification.

Layout (2D, ``nx`` x ``ny`` square cells of side ``dx``; index ``[i, j]`` = ``(x, y)``):

==============  ===============  ===============================
array           shape            position of ``a[i, j]`` / dx
==============  ===============  ===============================
u (x-velocity)  ``(nx+1, ny)``   ``(i, j + 1/2)``  (vertical faces)
v (y-velocity)  ``(nx, ny+1)``   ``(i + 1/2, j)``  (horizontal faces)
p, scalars, ..  ``(nx, ny)``     ``(i + 1/2, j + 1/2)`` (cell centres)
psi (stream fn) ``(nx+1, ny+1)`` ``(i, j)``        (cell corners)
==============  ===============  ===============================

A periodic axis keeps its duplicate last face equal to the first (``u[nx] == u[0]``), so every
array has the same shape whatever the boundaries; kernels read wrapped neighbours modulo ``nx``.

Each face is either *free* (its velocity is computed by advection, forces and the projection) or
*fixed* (walls, obstacle faces and inflow faces, whose value is prescribed). :func:`face_bc` returns
``(2, ...)`` tensors ``bc[0] = free mask (1/0)``, ``bc[1] = fixed value``. The pressure-solve
weight of a face is its free mask; a free face on a non-periodic side is an outflow face where the
pressure is held at 0 (Dirichlet); fixed faces are Neumann.

The 3D analogue adds ``w`` on ``(nx, ny, nz+1)`` faces and a vector potential on edges; every rule
here is per axis, so it extends axis by axis.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lawful.kernels.errors import InputError, ShapeError

__all__ = ["SIDE_KINDS", "Boundary", "face_bc", "solid_corner_mask", "check_staggering", "face_shapes"]

SIDE_KINDS = ("periodic", "free_slip", "no_slip", "inflow", "outflow")
_WALLS = ("free_slip", "no_slip")


@dataclass(frozen=True)
class Boundary:
    """Boundary kind of each side of the box: one of :data:`SIDE_KINDS`.

    ``x_lo``/``x_hi`` are the sides ``x = 0`` and ``x = nx dx``; ``y_lo``/``y_hi`` likewise.
    ``"periodic"`` must be given on both sides of an axis. ``"inflow"`` fixes the normal velocity
    to ``inflow_velocity`` (grid units: length/time, positive = into the domain); ``"outflow"``
    holds the pressure at 0 and lets the flow leave. Walls are ``"free_slip"`` or ``"no_slip"``
    (the tangential condition enters the viscous stencil through a ghost value: ``+u`` resp.
    ``-u``).
    """

    x_lo: str = "periodic"
    x_hi: str = "periodic"
    y_lo: str = "periodic"
    y_hi: str = "periodic"
    inflow_velocity: float = 0.0

    def __post_init__(self):
        for name in ("x_lo", "x_hi", "y_lo", "y_hi"):
            kind = getattr(self, name)
            if kind not in SIDE_KINDS:
                raise InputError(f"boundary {name}={kind!r} is unknown: use one of {SIDE_KINDS}.")
        for axis in ("x", "y"):
            lo, hi = getattr(self, f"{axis}_lo"), getattr(self, f"{axis}_hi")
            if (lo == "periodic") != (hi == "periodic"):
                raise InputError(
                    f"boundary {axis}: {lo!r}/{hi!r} - 'periodic' must be given on both sides of an axis."
                )

    @classmethod
    def periodic(cls) -> "Boundary":
        """Periodic in x and y."""
        return cls()

    @classmethod
    def box(cls, kind: str = "no_slip") -> "Boundary":
        """A closed box with walls of ``kind`` ("no_slip" or "free_slip") on all four sides."""
        if kind not in _WALLS:
            raise InputError(f"box wall kind {kind!r} is unknown: use 'no_slip' or 'free_slip'.")
        return cls(kind, kind, kind, kind)

    @classmethod
    def channel(cls, inflow_velocity: float, walls: str = "free_slip") -> "Boundary":
        """Flow in +x: inflow on x_lo, outflow on x_hi, walls on y."""
        return cls("inflow", "outflow", walls, walls, float(inflow_velocity))

    @property
    def periodic_axes(self) -> tuple[bool, bool]:
        """(x periodic, y periodic)."""
        return (self.x_lo == "periodic", self.y_lo == "periodic")

    @property
    def has_outflow(self) -> bool:
        """True when some side holds the pressure (the Poisson problem is then non-singular)."""
        return "outflow" in (self.x_lo, self.x_hi, self.y_lo, self.y_hi)

    def side_code(self, name: str) -> int:
        """Integer code of a side for kernels: index in :data:`SIDE_KINDS`."""
        return SIDE_KINDS.index(getattr(self, name))


def face_shapes(nx: int, ny: int) -> dict:
    """Shapes of the MAC arrays for an ``nx`` x ``ny`` grid."""
    return {"u": (nx + 1, ny), "v": (nx, ny + 1), "cell": (nx, ny), "corner": (nx + 1, ny + 1)}


def check_staggering(name: str, tensor: torch.Tensor, where: str, nx: int, ny: int) -> None:
    """Raise :class:`ShapeError` unless ``tensor`` has the shape of ``where`` ("u", "v", "cell",
    "corner") on an ``nx`` x ``ny`` grid."""
    want = face_shapes(nx, ny)[where]
    if tuple(tensor.shape) != want:
        raise ShapeError(
            f"{name} has shape {tuple(tensor.shape)} but lives on the {where} points of a {nx}x{ny} MAC "
            f"grid, which need shape {want}. Build it with that shape (see lawful.kernels.mac_grid)."
        )


def face_bc(boundary: Boundary, solid: torch.Tensor, dtype=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Face classification for u and v: ``(ubc, vbc)`` with shapes ``(2, nx+1, ny)``, ``(2, nx, ny+1)``.

    ``bc[0]`` is 1 on free faces, 0 on fixed ones; ``bc[1]`` is the prescribed value of fixed faces
    (0 on walls and obstacles; ``inflow_velocity`` with the inward sign on inflow faces). A face
    touching a solid cell (``solid`` is an ``(nx, ny)`` bool mask) is fixed at 0.
    """
    nx, ny = solid.shape
    dtype = dtype or torch.float32
    fluid = (~solid.bool()).to(dtype)
    px, py = boundary.periodic_axes
    ubc = torch.zeros((2, nx + 1, ny), dtype=dtype, device=solid.device)
    vbc = torch.zeros((2, nx, ny + 1), dtype=dtype, device=solid.device)
    # interior faces: free iff both neighbours are fluid
    ubc[0, 1:nx] = fluid[:-1] * fluid[1:]
    vbc[0, :, 1:ny] = fluid[:, :-1] * fluid[:, 1:]
    uin = float(boundary.inflow_velocity)
    if px:
        ubc[0, 0] = fluid[-1] * fluid[0]
        ubc[0, nx] = ubc[0, 0]
    else:
        for side, idx, cell, sign in (("x_lo", 0, 0, 1.0), ("x_hi", nx, nx - 1, -1.0)):
            kind = getattr(boundary, side)
            if kind == "outflow":
                ubc[0, idx] = fluid[cell]
            elif kind == "inflow":
                ubc[1, idx] = sign * uin * fluid[cell]
    if py:
        vbc[0, :, 0] = fluid[:, -1] * fluid[:, 0]
        vbc[0, :, ny] = vbc[0, :, 0]
    else:
        for side, idx, cell, sign in (("y_lo", 0, 0, 1.0), ("y_hi", ny, ny - 1, -1.0)):
            kind = getattr(boundary, side)
            if kind == "outflow":
                vbc[0, :, idx] = fluid[:, cell]
            elif kind == "inflow":
                vbc[1, :, idx] = sign * uin * fluid[:, cell]
    return ubc.contiguous(), vbc.contiguous()


def solid_corner_mask(boundary: Boundary, solid: torch.Tensor) -> torch.Tensor:
    """``(nx+1, ny+1)`` bool: the corners where a stream function must be pinned (to one constant).

    A corner is pinned when it touches a solid cell, or lies on a wall or inflow side. Holding psi
    at one constant there makes the curl of psi carry no flux through any wall, obstacle or inflow
    face (the flux through a face is the difference of psi at its two corners) and leaves the total
    flow rate between bodies unchanged. Outflow and periodic sides are left free.
    """
    nx, ny = solid.shape
    s = solid.bool()
    pad = torch.zeros((nx + 2, ny + 2), dtype=torch.bool, device=solid.device)
    pad[1:-1, 1:-1] = s
    px, py = boundary.periodic_axes
    if py:
        pad[1:-1, 0], pad[1:-1, -1] = s[:, -1], s[:, 0]
    if px:
        pad[0, :], pad[-1, :] = pad[-2, :].clone(), pad[1, :].clone()
    # corner (i, j) touches cells (i-1..i, j-1..j) = pad[i..i+1, j..j+1]
    mask = pad[:-1, :-1] | pad[1:, :-1] | pad[:-1, 1:] | pad[1:, 1:]
    for side, sl in (("x_lo", (0, slice(None))), ("x_hi", (nx, slice(None))),
                     ("y_lo", (slice(None), 0)), ("y_hi", (slice(None), ny))):
        if getattr(boundary, side) in _WALLS + ("inflow",):
            mask[sl] = True
    return mask

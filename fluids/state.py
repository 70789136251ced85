"""The fluid state: face velocities, pressure, passive scalars and solid mask on a MAC grid.

Everything is a torch tensor (Taichi kernels take them as ndarray arguments, zero-copy, and torch
networks read/write the same memory). Grid units: ``dx`` is a length, velocities length/time,
pressure length^2/time^2 (density 1). Layout: :mod:`lawful.kernels.mac_grid`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import torch

from lawful.kernels.errors import InputError, ShapeError
from lawful.kernels.mac_grid import Boundary, check_staggering
from lawful.kernels.precision import fluid_dtype, resolve_device

__all__ = ["FluidState", "first_nonfinite"]


def first_nonfinite(t: torch.Tensor):
    """Index tuple of the first NaN/inf entry of ``t``, or ``None`` when all are finite."""
    bad = ~torch.isfinite(t)
    if not bool(bad.any()):
        return None
    return tuple(int(k) for k in torch.nonzero(bad)[0])


@dataclass
class FluidState:
    """A 2D MAC-grid fluid state (float32 by default, float64 on request).

    Attributes
    ----------
    u : ``(nx+1, ny)`` x-velocity on vertical faces (periodic x: ``u[nx] == u[0]``).
    v : ``(nx, ny+1)`` y-velocity on horizontal faces.
    p : ``(nx, ny)`` pressure at cell centres (density 1): the pressure the last step applied (with
        the pressure predictor its time-centred one, at ``t - dt/2``:
        :func:`~lawful.fluids.solver.stored_pressure`); the next step's predictor and warm start.
    scalars : ``(ns, nx, ny)`` passive scalars (cell averages), named by ``scalar_names``.
    solid : ``(nx, ny)`` bool obstacle mask (True = solid cell).
    dx : cell size, in the domain's length unit (every length, velocity and time of the solver is in
    the domain's units: not cells, not steps); ``boundary``: :class:`~lawful.kernels.mac_grid.Boundary`.
    t, step : simulated time and step count.
    scalar_comp : ``(ns, nx, ny)``, zeros by default: the rounding residue of each cell's last
        scalar update, re-added by the next (compensated summation, :func:`advect_scalars`). Part
        of the state, so a restart (a clone stepped by a new Solver) continues exactly, and two
        states stepped by one Solver keep their own (it lived in the Solver: 1 ulp of float32 on a
        restart, and a second state's steps mixed in the first one's residue).
    """

    u: torch.Tensor
    v: torch.Tensor
    p: torch.Tensor
    scalars: torch.Tensor
    solid: torch.Tensor
    dx: float
    boundary: Boundary = field(default_factory=Boundary)
    scalar_names: tuple = ()
    t: float = 0.0
    step: int = 0
    scalar_comp: torch.Tensor | None = None

    def __post_init__(self):
        self.validate()

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def zeros(cls, nx: int, ny: int, dx: float, boundary: Boundary | None = None, solid=None,
              scalar_names=(), dtype=None, device=None) -> "FluidState":
        """A fluid at rest on an ``nx`` x ``ny`` grid of cell size ``dx``."""
        dtype = fluid_dtype(dtype)
        device = resolve_device(device if device is not None else "cpu")
        for name, val in (("nx", nx), ("ny", ny)):
            if not isinstance(val, int) or val < 2:
                raise InputError(f"{name}={val!r}: a grid needs an integer >= 2 cells per axis.")
        if solid is None:
            solid = torch.zeros((nx, ny), dtype=torch.bool, device=device)
        z = lambda *s: torch.zeros(s, dtype=dtype, device=device)  # noqa: E731
        return cls(u=z(nx + 1, ny), v=z(nx, ny + 1), p=z(nx, ny), scalars=z(len(scalar_names), nx, ny),
                   solid=torch.as_tensor(solid, device=device).bool(), dx=dx,
                   boundary=boundary or Boundary(), scalar_names=tuple(scalar_names))

    # -- properties ---------------------------------------------------------------------------
    @property
    def nx(self) -> int:
        """Cells along x."""
        return int(self.p.shape[0])

    @property
    def ny(self) -> int:
        """Cells along y."""
        return int(self.p.shape[1])

    @property
    def ndim(self) -> int:
        """Spatial dimension (2)."""
        return 2

    @property
    def dtype(self) -> torch.dtype:
        """Floating dtype of every field."""
        return self.u.dtype

    @property
    def device(self) -> torch.device:
        """Device of every field."""
        return self.u.device

    def scalar(self, name: str) -> torch.Tensor:
        """The ``(nx, ny)`` view of the passive scalar ``name``."""
        if name not in self.scalar_names:
            raise InputError(f"no passive scalar {name!r}; this state has {list(self.scalar_names)}.")
        return self.scalars[self.scalar_names.index(name)]

    def clone(self) -> "FluidState":
        """A deep copy (new tensors)."""
        return replace(self, u=self.u.clone(), v=self.v.clone(), p=self.p.clone(),
                       scalars=self.scalars.clone(), solid=self.solid.clone(), scalar_comp=self.scalar_comp.clone())

    def compensation(self) -> torch.Tensor:
        """``scalar_comp``, made zeros first when there is none or the scalars were replaced by a
        tensor of another shape (``state.scalars = ...``): a residue of other scalars means nothing."""
        if self.scalar_comp is None or self.scalar_comp.shape != self.scalars.shape:
            self.scalar_comp = torch.zeros_like(self.scalars)
        return self.scalar_comp

    # -- checks -------------------------------------------------------------------------------
    def validate(self) -> None:
        """Check shapes (staggering), dtypes, devices, ``dx`` and finiteness; raise
        :class:`InputError`/:class:`ShapeError` naming the offending value."""
        if not isinstance(self.dx, (int, float)) or not math.isfinite(self.dx) or self.dx <= 0:
            raise InputError(f"grid spacing dx={self.dx!r} must be a positive finite number (the domain's length unit).")
        self.dx = float(self.dx)
        if not isinstance(self.boundary, Boundary):
            raise InputError(f"boundary={self.boundary!r} must be a lawful.kernels.mac_grid.Boundary.")
        for name in ("u", "v", "p", "scalars", "solid"):
            if not isinstance(getattr(self, name), torch.Tensor):
                raise InputError(f"state.{name} must be a torch tensor, got {type(getattr(self, name)).__name__}.")
        if self.p.ndim != 2:
            raise ShapeError(f"p has shape {tuple(self.p.shape)}: it must be (nx, ny) (2D grids).")
        nx, ny = self.nx, self.ny
        check_staggering("u", self.u, "u", nx, ny)
        check_staggering("v", self.v, "v", nx, ny)
        check_staggering("solid", self.solid, "cell", nx, ny)
        if self.scalars.ndim != 3 or tuple(self.scalars.shape[1:]) != (nx, ny):
            raise ShapeError(f"scalars has shape {tuple(self.scalars.shape)}: need (ns, {nx}, {ny}).")
        if len(self.scalar_names) != self.scalars.shape[0]:
            raise InputError(f"{len(self.scalar_names)} scalar_names for {self.scalars.shape[0]} scalars.")
        self.compensation()
        dt = self.u.dtype
        if dt not in (torch.float32, torch.float64):
            raise InputError(f"state dtype {dt} is not supported: use torch.float32 or torch.float64.")
        if self.scalar_comp.dtype != dt or self.scalar_comp.device != self.u.device:
            self.scalar_comp = self.scalar_comp.to(dtype=dt, device=self.u.device)
        for name in ("v", "p", "scalars", "scalar_comp"):
            t = getattr(self, name)
            if t.dtype != dt or t.device != self.u.device:
                raise InputError(f"state.{name} is {t.dtype} on {t.device} but u is {dt} on {self.u.device}: "
                                 "all fields must share dtype and device.")
            if not t.is_contiguous():
                setattr(self, name, t.contiguous())
        if not self.u.is_contiguous():
            self.u = self.u.contiguous()
        self.solid = self.solid.bool().to(self.u.device)
        for name in ("u", "v", "p", "scalars"):
            bad = first_nonfinite(getattr(self, name))
            if bad is not None:
                raise InputError(f"state.{name} has a non-finite value ({float(getattr(self, name)[bad])}) "
                                 f"at index {bad}: initialise every field with finite numbers.")

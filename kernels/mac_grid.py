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

import functools
import math
import os
from dataclasses import dataclass

import numpy as np
import torch
from torch.autograd.graph import increment_version

from lawful.kernels.errors import InputError, ShapeError

__all__ = ["SIDE_KINDS", "INFLOW_PROFILES", "Boundary", "face_bc", "faces_touching", "solid_corner_mask",
           "check_staggering", "face_shapes", "inflow_profile", "substeps", "VISCOUS_NUMBER_MAX", "SCALAR_CFL_MAX",
           "SERIAL_CELLS", "SERIAL_THREADS", "SERIAL_CELLS_FEW_THREADS", "ENV_SERIAL_CELLS", "serial_cells", "serial_grid", "set_periodic_duplicate", "record_writes"]

#: Explicit viscosity substeps so that ``nu dt_sub / dx^2 <= VISCOUS_NUMBER_MAX`` (the 5-point
#: stencil is stable up to 1/4).
VISCOUS_NUMBER_MAX = 0.2
#: Flux-form scalar advection substeps so that ``(max|u| + max|v|) dt_sub / dx <= SCALAR_CFL_MAX``.
SCALAR_CFL_MAX = 0.5
#: Grid loops over at most this many cells run on the calling thread (the MAC kernels and the
#: multigrid levels): below it the thread pool's hand-off per loop costs more than the loop. The
#: threshold where a thread pool pays off; see :func:`serial_cells` for the one in force.
SERIAL_CELLS = 4096
#: A Taichi CPU thread pool of at most this many threads runs only grids of more than
#: :data:`SERIAL_CELLS_FEW_THREADS` cells (:func:`serial_cells`). Measured on a 2-vCPU machine
#: (Kolmogorov, float32, one process): the serialized step took 7.9 / 18-22 / 60-68 ms at
#: 128^2 / 256^2 / 512^2 against 10.8-14 / 29 / 85 ms with Taichi's two threads, level at 1024^2
#: (212-302 against 223-257 ms), because each parallel loop pays a hand-off of about 100 us there
#: (a wake-up of the pool's threads) and the two threads of such a machine share one core's
#: caches; with one Taichi thread the parallel launch is pure hand-off (83 against 60 ms at 512^2).
SERIAL_THREADS = 2
#: The serialization threshold (cells) for a pool of at most :data:`SERIAL_THREADS` threads: 512^2.
SERIAL_CELLS_FEW_THREADS = 512 * 512
#: Environment variable: the serialization threshold in cells (an integer >= 0), overriding
#: :func:`serial_cells`'s choice for the process, e.g. ``4096`` for a 2-core machine whose threads
#: hand off fast.
ENV_SERIAL_CELLS = "LAWFUL_TI_SERIAL_CELLS"


@functools.lru_cache(maxsize=None)
def unread_array(dtype: torch.dtype, device: torch.device, ndim: int) -> torch.Tensor:
    """Zeros of shape ``(1,) * ndim`` for a kernel argument that a launch does not read (no
    forcing, no pressure to store, no scalars), one per dtype, device and rank. Never pass a
    tensor the same launch writes in such a slot: Taichi's own launch path (tensors on another
    device than its arch: CUDA tensors on ``ti.cpu``, CPU tensors on ``ti.cuda``) copies every
    array argument to a temporary and back, and the unwritten copy of a tensor passed twice can
    land last and undo the kernel's writes, silently."""
    return torch.zeros((1,) * ndim, dtype=dtype, device=device)


def record_writes(*tensors: torch.Tensor) -> None:
    """Record that a Taichi launch wrote ``tensors`` in place, as a torch in-place op would (their
    autograd version counters move), so that a graph which saved one of them refuses its backward
    instead of differentiating, without a word, with the new values. Every function that launches
    a kernel writing torch tensors calls it on what it wrote (``None`` entries are skipped)."""
    for t in tensors:
        if t is not None:
            increment_version(t)


def same_mask(a: torch.Tensor, b: torch.Tensor) -> bool:
    """``torch.equal(a, b)`` for two obstacle masks, answered from their bytes when both are
    contiguous bool CPU tensors of one shape and the bytes match (``torch.equal`` costs ~15-25 us
    on a 128^2 mask, paid every step by the solver's state check and the corrector's geometry
    lookup); anything else, or bytes that differ, goes to ``torch.equal``."""
    if (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.dtype == torch.bool
            and b.dtype == torch.bool and a.is_cpu and b.is_cpu and a.shape == b.shape and a.is_contiguous()
            and b.is_contiguous() and a.numpy().tobytes() == b.numpy().tobytes()):
        return True
    return torch.equal(a, b)


def serial_cells() -> int:
    """The grid size (cells) up to which kernel loops run serialized on the calling thread:
    ``LAWFUL_TI_SERIAL_CELLS`` when set; :data:`SERIAL_CELLS_FEW_THREADS` (512^2) when Taichi runs
    on the CPU with at most :data:`SERIAL_THREADS` threads; else :data:`SERIAL_CELLS` (also on
    CUDA, where a serialized loop runs on one GPU thread). Serialized and parallel loops give the same results up
    to rounding (their reductions add in another order), so a run is reproduced bit for bit on a
    machine with the same thread count and setting."""
    env = os.environ.get(ENV_SERIAL_CELLS)
    if env is not None:
        try:
            cells = int(env)
        except ValueError:
            cells = -1
        if cells < 0:
            raise InputError(f"{ENV_SERIAL_CELLS}={env!r}: give the number of cells (an integer >= 0) up to "
                             "which the fluid kernels' loops run serialized, e.g. 4096; unset it for the default.")
        return cells
    from lawful.kernels.runtime import taichi_cpu_threads

    threads = taichi_cpu_threads()
    if threads is not None and threads <= SERIAL_THREADS:
        return SERIAL_CELLS_FEW_THREADS
    return SERIAL_CELLS


def serial_grid(nx: int, ny: int) -> bool:
    """Whether an ``nx`` x ``ny`` grid's kernel loops run serialized (``nx * ny <=``
    :func:`serial_cells`)."""
    return nx * ny <= serial_cells()


def substeps(number: float, limit: float) -> int:
    """The substep rule every part of a step uses (velocity CFL, viscosity, scalar CFL; the Taichi
    solver and its torch twin alike): ``max(1, ceil(number / limit))`` (1 for a non-finite
    number, which the caller reports), with a 1e-12 tolerance so an exact multiple is not split."""
    if not math.isfinite(number):
        return 1
    return max(1, math.ceil(number / limit - 1e-12))

SIDE_KINDS = ("periodic", "free_slip", "no_slip", "inflow", "outflow")
_WALLS = ("free_slip", "no_slip")
_SIDES = ("x_lo", "x_hi", "y_lo", "y_hi")
#: Inflow profiles: ``"uniform"`` (every inflow face at the mean velocity) or ``"parabolic"``
#: (Poiseuille, zero at both ends of the side; each face carries the *cell average* of
#: ``6 U s (1 - s)`` over its extent, so the discrete mean over the side is exactly ``U``).
INFLOW_PROFILES = ("uniform", "parabolic")


@dataclass(frozen=True)
class Boundary:
    """Boundary kind of each side of the box: one of :data:`SIDE_KINDS`.

    ``x_lo``/``x_hi`` are the sides ``x = 0`` and ``x = nx dx``; ``y_lo``/``y_hi`` likewise.
    ``"periodic"`` must be given on both sides of an axis. ``"inflow"`` fixes the normal velocity
    to ``inflow_velocity`` (the domain's length/time, positive = into the domain); ``"outflow"``
    holds the pressure at 0 and lets the flow leave. Walls are ``"free_slip"`` or ``"no_slip"``
    (the tangential condition enters through a ghost value beyond the wall, see
    :meth:`ghost_coefficients`).

    ``inflow_velocity`` is the *mean* normal velocity of an inflow side and ``inflow_profile``
    its shape (:data:`INFLOW_PROFILES`: ``"uniform"`` or ``"parabolic"`` Poiseuille, see
    :func:`inflow_profile`); without an ``"inflow"`` side they must stay 0 and ``"uniform"``
    (:meth:`check_flow` refuses them: nothing would read them). ``wall_velocity`` =
    ``(x_lo, x_hi, y_lo, y_hi)``: the tangential velocity of each side (length/time; the v
    component on the x sides, the u component on the y sides), allowed only on ``"no_slip"``
    sides (a lid-driven cavity: ``y_hi`` moving at ``U``).
    A moving no-slip wall enters advection (bilinear samples beyond the wall read the ghost
    ``2 U_wall - q``) and viscosity (the same ghost in the 5-point stencil); it carries no normal
    flux, so the projection sees it only through the velocities it drives.
    """

    x_lo: str = "periodic"
    x_hi: str = "periodic"
    y_lo: str = "periodic"
    y_hi: str = "periodic"
    inflow_velocity: float = 0.0
    inflow_profile: str = "uniform"
    wall_velocity: tuple = (0.0, 0.0, 0.0, 0.0)

    def __post_init__(self):
        for name in _SIDES:
            kind = getattr(self, name)
            if kind not in SIDE_KINDS:
                raise InputError(f"boundary {name}={kind!r} is unknown: use one of {SIDE_KINDS}.")
        iv = self.inflow_velocity
        if isinstance(iv, bool) or not isinstance(iv, (int, float)) or iv != iv or abs(iv) == float("inf"):
            raise InputError(f"boundary inflow_velocity={iv!r} must be a finite number (length/time).")
        if self.inflow_profile not in INFLOW_PROFILES:
            raise InputError(f"boundary inflow_profile={self.inflow_profile!r} is unknown: use one of "
                             f"{INFLOW_PROFILES}.")
        wv = self.wall_velocity
        if (not isinstance(wv, (tuple, list)) or len(wv) != 4
                or not all(isinstance(w, (int, float)) and not isinstance(w, bool) and w == w
                           and abs(w) != float("inf") for w in wv)):
            raise InputError(f"boundary wall_velocity={wv!r} must be 4 finite numbers (x_lo, x_hi, y_lo, y_hi: "
                             "the tangential velocity of each side).")
        object.__setattr__(self, "wall_velocity", tuple(float(w) for w in wv))
        for name, w in zip(_SIDES, self.wall_velocity):
            if w != 0.0 and getattr(self, name) != "no_slip":
                raise InputError(f"boundary {name} is {getattr(self, name)!r} but has wall_velocity {w!r}: only a "
                                 "'no_slip' side can move tangentially (a free-slip wall exerts no shear); make "
                                 f"{name} 'no_slip' or set its wall velocity to 0.")
        if self.inflow_profile == "parabolic":
            for axis, other in (("x", "y"), ("y", "x")):
                if "inflow" in (getattr(self, f"{axis}_lo"), getattr(self, f"{axis}_hi")) and \
                        getattr(self, f"{other}_lo") == "periodic":
                    raise InputError(f"boundary inflow_profile='parabolic' on an {axis} side needs walls on the "
                                     f"{other} sides (the profile vanishes there), but {other} is periodic: use "
                                     "'uniform' or wall the sides.")
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
    def box(cls, kind: str = "no_slip", lid_velocity: float = 0.0) -> "Boundary":
        """A closed box with walls of ``kind`` ("no_slip" or "free_slip") on all four sides;
        ``lid_velocity``: the top wall (``y_hi``) slides along +x at that speed (no-slip only)."""
        if kind not in _WALLS:
            raise InputError(f"box wall kind {kind!r} is unknown: use 'no_slip' or 'free_slip'.")
        return cls(kind, kind, kind, kind, wall_velocity=(0.0, 0.0, 0.0, lid_velocity))

    @classmethod
    def channel(cls, inflow_velocity: float, walls: str = "free_slip", profile: str = "uniform") -> "Boundary":
        """Flow in +x: inflow on x_lo (mean velocity ``inflow_velocity``, ``profile`` uniform or
        parabolic), outflow on x_hi, walls of kind ``walls`` on y."""
        return cls("inflow", "outflow", walls, walls, inflow_velocity, profile)

    def ghost_coefficients(self) -> tuple:
        """``(a, b)`` per side such that the ghost value beyond the side is ``a q + b`` for the
        tangential velocity ``q`` next to it: ``(-1, 2 U_wall)`` on no-slip walls (the velocity
        interpolated to the wall is ``U_wall``), ``(-1, 0)`` on inflow sides (the inflow is normal
        to its side: the tangential velocity there is 0, the inlet condition of the channel
        benchmarks; a zero gradient let it reach 19 % of the mean inflow at Schäfer-Turek's inlet),
        ``(1, 0)`` elsewhere (zero gradient: free slip, outflow; unused on periodic sides). Returns 8 floats in the order
        ``(y_lo a, y_lo b, y_hi a, y_hi b, x_lo a, x_lo b, x_hi a, x_hi b)``: the first four act on
        u (cell-centred along y), the last four on v (cell-centred along x). The one definition
        the Taichi kernels and the torch twin both use."""
        out = []
        for side in ("y_lo", "y_hi", "x_lo", "x_hi"):
            if getattr(self, side) == "no_slip":
                out += [-1.0, 2.0 * self.wall_velocity[_SIDES.index(side)]]
            elif getattr(self, side) == "inflow":
                out += [-1.0, 0.0]
            else:
                out += [1.0, 0.0]
        return tuple(out)

    @property
    def periodic_axes(self) -> tuple[bool, bool]:
        """(x periodic, y periodic)."""
        return (self.x_lo == "periodic", self.y_lo == "periodic")

    @property
    def has_outflow(self) -> bool:
        """True when some side holds the pressure (the Poisson problem is then non-singular)."""
        return "outflow" in (self.x_lo, self.x_hi, self.y_lo, self.y_hi)

    def check_flow(self, solid: torch.Tensor) -> None:
        """Refuse, with ``InputError``, what the solver cannot do with these sides around ``solid``
        ((nx, ny) bool cells) without an error of its own: a negative inflow (fluid would enter
        through the outflow side), an inflow with no outflow side (mass
        cannot leave: the projection runs and div_max_rel sits at 0.1-0.25), and a parabolic inflow
        on a side that an obstacle touches (the parabola spans the whole side and the blocked faces
        are zeroed: the mean over the open faces was 1.11 U for 1.0 behind a step of 1/3 height), and
        obstacles that cut (part of) an inflow side off from every outflow side (the projection broke
        down with a ConvergenceError advising more iterations or a smaller dt), and an inflow velocity
        or a parabolic profile with no side of kind ``"inflow"`` to carry it (nothing reads them
        there: a channel whose inlet was left a wall stayed at rest, max velocity 0 for an inflow
        of 1, and flow_scene took its dt from the other speeds)."""
        sides = {"x_lo": self.x_lo, "x_hi": self.x_hi, "y_lo": self.y_lo, "y_hi": self.y_hi}
        inflow = [k for k, kind in sides.items() if kind == "inflow"]
        if not inflow and (self.inflow_velocity != 0.0 or self.inflow_profile != "uniform"):
            what = " and ".join(([f"inflow_velocity={self.inflow_velocity:g}"] if self.inflow_velocity != 0.0 else [])
                                + ([f"inflow_profile={self.inflow_profile!r}"]
                                   if self.inflow_profile != "uniform" else []))
            raise InputError(f"boundary: {what} but no side is 'inflow' (sides {tuple(sides.values())}), so nothing "
                             "would use it and no fluid would enter: make the inlet side 'inflow' (e.g. "
                             "Boundary.channel(U, walls, profile)), or drop the inflow settings.")
        if inflow and self.inflow_velocity < 0.0:
            raise InputError(f"boundary: inflow_velocity={self.inflow_velocity:g} < 0 on {', '.join(inflow)} draws "
                             "fluid out, so it would enter through the outflow side, whose zero-gradient condition "
                             "is meant for fluid leaving: give a positive inflow (into the domain) and swap the sides.")
        if inflow and self.inflow_velocity != 0.0 and not self.has_outflow:
            raise InputError(f"boundary: {', '.join(inflow)} {'is an inflow' if len(inflow) == 1 else 'are inflows'} "
                             f"(velocity {self.inflow_velocity:g}) but no side is 'outflow': an incompressible flow "
                             "cannot take in mass it cannot let out. Make a side 'outflow' (e.g. "
                             "Boundary.channel(...) puts it opposite the inflow).")
        if inflow and self.inflow_velocity != 0.0:
            closed = self._inflow_without_outlet(solid, inflow)
            if closed is not None:
                side, lo, hi = closed
                raise InputError(f"boundary: the fluid entering through {side} ({'rows' if side[0] == 'x' else 'columns'} "
                                 f"{lo}-{hi} of its cells) has no path of fluid cells to an outflow side: the obstacles "
                                 "close the channel, so the mass that comes in cannot leave and no pressure can make "
                                 "the flow divergence-free (the projection breaks down). Open a gap through the "
                                 "obstacles, or wall that part of the inflow side.")
        if self.inflow_profile == "parabolic" and inflow:
            edge = {"x_lo": solid[0, :], "x_hi": solid[-1, :], "y_lo": solid[:, 0], "y_hi": solid[:, -1]}
            blocked = [k for k in inflow if bool(edge[k].any())]
            if blocked:
                raise InputError(f"boundary: inflow_profile='parabolic' on {', '.join(blocked)}, which an obstacle "
                                 f"touches ({int(edge[blocked[0]].sum())} of its cells are solid): the parabola spans "
                                 "the whole side, so the open part would not get the mean velocity asked for. Use "
                                 "'uniform', or move the obstacle off the inflow side.")

    def fluid_regions(self, solid: torch.Tensor):
        """``(region, open_ids)``: ``region`` (nx, ny) int numpy array, 0 on solid cells and else the
        id of the cell's connected fluid region (4-neighbours, joined across periodic sides);
        ``open_ids`` the ids of the regions that reach an outflow side's fluid cells (their
        pressure is pinned there; every other region's projection needs zero net inflow)."""
        from scipy import ndimage   # an ASE dependency

        fluid = ~solid.detach().to("cpu", torch.bool).numpy()
        labels, n = ndimage.label(fluid)          # 4-connected components of the fluid cells
        root = list(range(n + 1))

        def find(a):
            while root[a] != a:
                root[a] = root[root[a]]
                a = root[a]
            return a

        px, py = self.periodic_axes
        seams = ([(labels[0, :], labels[-1, :])] if px else []) + ([(labels[:, 0], labels[:, -1])] if py else [])
        for first, last in seams:
            for a, b in zip(first.tolist(), last.tolist()):
                if a and b:
                    root[find(a)] = find(b)
        region = np.asarray([find(a) for a in range(n + 1)])[labels]
        edge = {"x_lo": region[0, :], "x_hi": region[-1, :], "y_lo": region[:, 0], "y_hi": region[:, -1]}
        sides = {"x_lo": self.x_lo, "x_hi": self.x_hi, "y_lo": self.y_lo, "y_hi": self.y_hi}
        open_ids = {int(a) for k, kind in sides.items() if kind == "outflow" for a in edge[k] if a}
        return region, open_ids

    def _inflow_without_outlet(self, solid: torch.Tensor, inflow: list) -> tuple | None:
        """``(side, first, last)``: the first run of an inflow side's fluid cells that no path of
        fluid cells (4-neighbours, across periodic sides) joins to an outflow side's fluid cells;
        None when every one is joined. A closed fluid pocket away from the inflow is allowed."""
        region, outlets = self.fluid_regions(solid)
        edge = {"x_lo": region[0, :], "x_hi": region[-1, :], "y_lo": region[:, 0], "y_hi": region[:, -1]}
        for side in inflow:
            cells = edge[side].tolist()
            bad = [i for i, a in enumerate(cells) if a and a not in outlets]
            if bad:
                last = bad[0]
                while last + 1 < len(cells) and last + 1 in bad:
                    last += 1
                return side, bad[0], last
        return None

    def check_prescribed_flux(self, solid: torch.Tensor, ubc: torch.Tensor, vbc: torch.Tensor,
                              rtol: float = 1e-5) -> None:
        """Raise :class:`InputError` when the fixed faces of :func:`face_bc` (``ubc``, ``vbc``) carry
        a net flux into a fluid region that reaches no outflow side: no pressure can make that
        flow divergence-free (the singular projection would spread it over the fluid as a uniform
        source and report convergence, or break down). A moving obstacle touching a wall or another
        obstacle does this: its rigid velocity on the faces it shares with them crosses them.
        ``rtol``: of the region's prescribed face speeds summed (float32 rounding passes)."""
        fixed_u, fixed_v = (bc[0] <= 0 for bc in (ubc, vbc))
        fu = torch.where(fixed_u, ubc[1], torch.zeros_like(ubc[1])).detach().to("cpu", torch.float64).numpy()
        fv = torch.where(fixed_v, vbc[1], torch.zeros_like(vbc[1])).detach().to("cpu", torch.float64).numpy()
        if not (np.abs(fu).max(initial=0.0) > 0 or np.abs(fv).max(initial=0.0) > 0):
            return
        out = (fu[1:] - fu[:-1]) + (fv[:, 1:] - fv[:, :-1])          # prescribed outflow of each cell
        size = np.abs(fu[1:]) + np.abs(fu[:-1]) + np.abs(fv[:, 1:]) + np.abs(fv[:, :-1])
        region, open_ids = self.fluid_regions(solid)
        for rid in np.unique(region):
            if rid == 0 or int(rid) in open_ids:
                continue
            cells = region == rid
            net, scale = -float(out[cells].sum()), float(size[cells].sum())
            if abs(net) > rtol * scale:
                i, j = (int(k[0]) for k in np.nonzero(cells))
                raise InputError(
                    f"the face velocities prescribed around a closed fluid region ({int(cells.sum())} cells, e.g. "
                    f"cell ({i}, {j})) carry a net inflow of {net:.3g} (the sum of their velocities, in cell faces) into it: no pressure can make that "
                    "flow divergence-free (the projection would spread it over the fluid as a uniform source and "
                    "report convergence, or break down). A moving obstacle touching a wall or another obstacle "
                    "does this: its rigid velocity on the faces it shares with them crosses them. Leave at least "
                    "one fluid cell between a moving obstacle and the walls and the other obstacles.")

    def side_code(self, name: str) -> int:
        """Integer code of a side for kernels: index in :data:`SIDE_KINDS`."""
        return SIDE_KINDS.index(getattr(self, name))


def face_shapes(nx: int, ny: int) -> dict:
    """Shapes of the MAC arrays for an ``nx`` x ``ny`` grid."""
    return {"u": (nx + 1, ny), "v": (nx, ny + 1), "cell": (nx, ny), "corner": (nx + 1, ny + 1)}


def set_periodic_duplicate(faces: torch.Tensor, axis: int) -> torch.Tensor:
    """Set the last face of ``faces`` along ``axis`` to the first, in place, and return ``faces``:
    on a periodic axis ``u[nx]`` (axis 0) and ``v[:, ny]`` (axis 1) are the first face again."""
    faces.select(axis, faces.shape[axis] - 1).copy_(faces.select(axis, 0))
    return faces


def check_staggering(name: str, tensor: torch.Tensor, where: str, nx: int, ny: int) -> None:
    """Raise :class:`ShapeError` unless ``tensor`` has the shape of ``where`` ("u", "v", "cell",
    "corner") on an ``nx`` x ``ny`` grid."""
    want = face_shapes(nx, ny)[where]
    if tuple(tensor.shape) != want:
        raise ShapeError(
            f"{name} has shape {tuple(tensor.shape)} but lives on the {where} points of a {nx}x{ny} MAC "
            f"grid, which need shape {want}. Build it with that shape (see lawful.kernels.mac_grid)."
        )


def inflow_profile(n: int, mean: float, profile: str = "uniform") -> torch.Tensor:
    """Normal velocities ``(n,)`` (float64) of the ``n`` faces along an inflow side of mean
    ``mean``: all ``mean`` (``"uniform"``) or the cell averages of the Poiseuille profile
    ``6 mean s (1 - s)``, ``s`` = position along the side / its length (``"parabolic"``); the
    discrete mean is ``mean`` exactly in both cases and the peak of the parabola is ``1.5 mean``."""
    if profile not in INFLOW_PROFILES:
        raise InputError(f"inflow profile {profile!r} is unknown: use one of {INFLOW_PROFILES}.")
    if profile == "uniform":
        return torch.full((n,), float(mean), dtype=torch.float64)
    s0 = torch.arange(n, dtype=torch.float64) / n
    s1 = (torch.arange(n, dtype=torch.float64) + 1) / n
    # (1/ds) * integral of 6 s (1 - s) ds over [s0, s1]
    return float(mean) * 6.0 * ((s1 ** 2 - s0 ** 2) / 2 - (s1 ** 3 - s0 ** 3) / 3) * n


def faces_touching(cells: torch.Tensor, periodic=(False, False)) -> tuple[torch.Tensor, torch.Tensor]:
    """``(touch_u (nx+1, ny), touch_v (nx, ny+1))``: the faces with a cell of the ``(nx, ny)`` bool
    mask ``cells`` on either side (a periodic axis's first and last faces see the wrapped cell)."""
    nx, ny = cells.shape
    s = cells.bool()
    pad_x = torch.zeros((nx + 2, ny), dtype=torch.bool, device=s.device)
    pad_x[1:-1] = s
    if periodic[0]:
        pad_x[0], pad_x[-1] = s[-1], s[0]
    pad_y = torch.zeros((nx, ny + 2), dtype=torch.bool, device=s.device)
    pad_y[:, 1:-1] = s
    if periodic[1]:
        pad_y[:, 0], pad_y[:, -1] = s[:, -1], s[:, 0]
    return pad_x[:-1] | pad_x[1:], pad_y[:, :-1] | pad_y[:, 1:]


def face_bc(boundary: Boundary, solid: torch.Tensor, dtype=None, body_velocity=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Face classification for u and v: ``(ubc, vbc)`` with shapes ``(2, nx+1, ny)``, ``(2, nx, ny+1)``.

    ``bc[0]`` is 1 on free faces, 0 on fixed ones; ``bc[1]`` is the prescribed value of fixed faces
    (0 on walls; the inflow profile, :func:`inflow_profile`, with the inward sign on inflow faces).
    A face touching a solid cell (``solid`` is an ``(nx, ny)`` bool mask) is fixed at 0, or at the
    body's velocity there when ``body_velocity = (ub (nx+1, ny), vb (nx, ny+1))`` is given (a
    moving or rotating obstacle; values on other faces are ignored).
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
    prof_u = inflow_profile(ny, uin, boundary.inflow_profile).to(dtype=dtype, device=solid.device)
    prof_v = inflow_profile(nx, uin, boundary.inflow_profile).to(dtype=dtype, device=solid.device)
    if px:
        ubc[0, 0] = fluid[-1] * fluid[0]
        ubc[0, nx] = ubc[0, 0]
    else:
        for side, idx, cell, sign in (("x_lo", 0, 0, 1.0), ("x_hi", nx, nx - 1, -1.0)):
            kind = getattr(boundary, side)
            if kind == "outflow":
                ubc[0, idx] = fluid[cell]
            elif kind == "inflow":
                ubc[1, idx] = sign * prof_u * fluid[cell]
    if py:
        vbc[0, :, 0] = fluid[:, -1] * fluid[:, 0]
        vbc[0, :, ny] = vbc[0, :, 0]
    else:
        for side, idx, cell, sign in (("y_lo", 0, 0, 1.0), ("y_hi", ny, ny - 1, -1.0)):
            kind = getattr(boundary, side)
            if kind == "outflow":
                vbc[0, :, idx] = fluid[:, cell]
            elif kind == "inflow":
                vbc[1, :, idx] = sign * prof_v * fluid[:, cell]
    if body_velocity is not None:
        ub, vb = (torch.as_tensor(t, dtype=dtype, device=solid.device) for t in body_velocity)
        check_staggering("body_velocity[0]", ub, "u", nx, ny)
        check_staggering("body_velocity[1]", vb, "v", nx, ny)
        touch_u, touch_v = faces_touching(solid, (px, py))
        ubc[1] = torch.where(touch_u, ub, ubc[1])
        vbc[1] = torch.where(touch_v, vb, vbc[1])
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

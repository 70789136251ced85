"""Ready-made fluid scenes: an initial :class:`FluidState` plus solver settings.

``taylor_green`` (periodic, analytic decaying solution), ``kolmogorov`` (forced 2D turbulence,
the jax-cfd benchmark), ``smoke_plume`` (buoyant smoke in a closed box), ``karman`` (cylinder in a
channel with inflow/outflow, by Reynolds number), ``lid_driven_cavity`` (the Ghia et al. box).
``flow_scene`` builds any channel or box from a domain size, a :class:`Boundary` (wall kind and
tangential velocity per side, inflow profile) and obstacle shapes
(:class:`~lawful.fluids.forces.Circle`, :class:`~lawful.fluids.forces.Box`) in domain units;
scenes with obstacles record the force on each (``drag`` along the inflow direction, ``lift``
across it, raw ``fx``/``fy``, ``force_method``, ``cd``, ``cl``) in
:func:`~lawful.fluids.solver.run`. ``make(name, **kw)`` looks one up by name.
All in the domain's units (lengths in those of ``dx``, times in those of ``dt``; the box or
channel height of ``smoke_plume``, ``karman`` and ``lid_driven_cavity`` is 1, the periodic box of
``taylor_green`` and ``kolmogorov`` is ``[0, 2 pi]^2``), float32 by default and float64 on request.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from typing import Callable

import torch

from lawful.kernels.errors import InputError
from lawful.kernels.mac_grid import Boundary, faces_touching, inflow_profile
from lawful.kernels.mac_operators import curl_torch
from lawful.fluids.forces import Box, Circle, ForceProbe, _column_names, body_velocity, obstacle_masks
from lawful.kernels.precision import fluid_dtype, resolve_device
from lawful.fluids.solver import Solver, SolverConfig, body_acceleration
from lawful.fluids.state import FluidState

__all__ = ["Scene", "taylor_green", "kolmogorov", "smoke_plume", "karman", "lid_driven_cavity", "flow_scene",
           "Circle", "Box", "make", "SCENES", "MIN_CELLS_PER_DIAMETER", "MIN_CELLS_PER_WAVELENGTH"]

#: Every round feature of a scene (the Karman cylinder, the plume's source disc, a flow_scene
#: Circle) must span at least this many cells across its diameter, and its mask must hold at least
#: one cell; a round *obstacle*'s mask must also span this many cells along x and along y (a disc
#: two cells across centred on a cell centre keeps that one cell: a square body half its diameter
#: wide, whose Re and cd the scene would report for the nominal one). Coarser grids are refused
#: (an unresolved cylinder has no solid cell at all, so Re would have no effect).
MIN_CELLS_PER_DIAMETER = 2.0
#: A sinusoidal forcing ``sin(k y)`` needs at least this many cells per wavelength: at 2 it is the
#: grid's Nyquist mode, below it aliases onto a longer wave (k=4 on 6 cells forces k=2).
MIN_CELLS_PER_WAVELENGTH = 4


@dataclass
class Scene:
    """A named initial state with its solver settings.

    ``state`` (:class:`FluidState`), ``config`` (:class:`SolverConfig`), optional constant
    ``forcing`` ``(fu, fv)`` face accelerations and scalar ``sources`` ``(ns, nx, ny)``, an
    ``analytic(t) -> (u, v)`` exact solution where one exists, and the ``params`` that built it.
    ``obstacles``: the shapes whose forces :meth:`forces` reports (``masks``: their cells),
    ``body_velocity``: face velocities of moving obstacles (for the solver), ``reference``:
    ``(U, L)`` for the force coefficients.
    """

    name: str
    state: FluidState
    config: SolverConfig
    forcing: tuple | None = None
    sources: torch.Tensor | None = None
    analytic: Callable | None = None
    params: dict = field(default_factory=dict)
    obstacles: tuple = ()
    masks: tuple = ()
    body_velocity: tuple | None = None
    reference: tuple | None = None

    force_method: str = "control_volume"

    def forces(self, state: FluidState | None = None, viscosity: float | None = None, body_force=None) -> dict:
        """Force columns (:meth:`~lawful.fluids.forces.ForceProbe.record`, method
        ``force_method``) of ``state`` (default: the scene's) on the scene's obstacles; ``{}``
        without obstacles. Called once per step by :func:`~lawful.fluids.solver.run` (the control
        volume's d/dt term is the change since the previous call), which passes the solver's
        ``body_force``; without it, the scene's own forcing and config's drag and buoyancy
        (:func:`~lawful.fluids.solver.body_acceleration`)."""
        if not self.obstacles:
            return {}
        probe = self._force_probe()
        nu = self.config.viscosity if viscosity is None else viscosity
        state = state if state is not None else self.state
        if body_force is None and self.force_method == "control_volume":
            body_force = body_acceleration(state, self.config, self.forcing)
        return probe.record(state, nu, body_force)

    def _force_probe(self) -> ForceProbe:
        probe = self.__dict__.get("_probe")
        if probe is None or probe.method != self.force_method:
            probe = self.__dict__["_probe"] = ForceProbe(self.obstacles, self.masks, self.reference,
                                                         self.force_method)
        return probe

    def start_forces(self, state: FluidState | None = None) -> None:
        """Give the force probe the momentum of ``state`` (default: the scene's) at its time, the
        start of the next step's d/dt: :func:`~lawful.fluids.solver.run` calls it before its first
        step, so the first record of a run -- from rest, or restarted from a saved state in a new
        scene -- has its rate term (it had none: lift 0.070 for 0.033 after a restart in shedding)."""
        if self.obstacles:
            self._force_probe().start(state if state is not None else self.state)

    def make_solver(self, **overrides) -> Solver:
        """A :class:`Solver` for this scene (``overrides`` replace config fields)."""
        config = self.config
        if overrides:
            from dataclasses import fields, replace

            known = {f.name for f in fields(SolverConfig)}
            unknown = sorted(set(overrides) - known)
            if unknown:
                raise InputError(f"make_solver: unknown SolverConfig field(s) {unknown}; known: {sorted(known)}.")
            config = replace(config, **overrides)
        return Solver(self.state, config, forcing=self.forcing, sources=self.sources,
                      body_velocity=self.body_velocity)


def _grid(nx, ny, dx, dtype, device):
    xu = torch.arange(nx + 1, dtype=torch.float64, device=device)[:, None] * dx
    yu = (torch.arange(ny, dtype=torch.float64, device=device)[None, :] + 0.5) * dx
    xv = (torch.arange(nx, dtype=torch.float64, device=device)[:, None] + 0.5) * dx
    yv = torch.arange(ny + 1, dtype=torch.float64, device=device)[None, :] * dx
    xc = (torch.arange(nx, dtype=torch.float64, device=device)[:, None] + 0.5) * dx
    yc = (torch.arange(ny, dtype=torch.float64, device=device)[None, :] + 0.5) * dx
    return (xu, yu), (xv, yv), (xc, yc)


def _check_n(n, scene: str, minimum=4):
    if isinstance(n, bool) or not isinstance(n, int) or n < minimum:
        raise InputError(f"{scene}: grid size n={n!r} must be an integer >= {minimum} (cells across the "
                         "domain's short side).")


def _disc_mask(n, cx, cy, diameter, nx=None):
    """Cells of an ``n``-cells-per-unit grid (``nx`` along x) whose centres lie inside the disc."""
    nx = n if nx is None else nx
    dx = 1.0 / n
    return Circle((cx, cy(dx)), diameter / 2).cells(nx, n, dx)


def _mask_span(mask) -> tuple[int, int]:
    """``(columns, rows)``: how many cells a non-empty ``(nx, ny)`` bool mask spans along x and y
    (first to last solid column / row); ``(0, 0)`` when empty."""
    cols = torch.nonzero(mask.any(1)).flatten()
    rows = torch.nonzero(mask.any(0)).flatten()
    if not len(cols):
        return 0, 0
    return int(cols[-1] - cols[0]) + 1, int(rows[-1] - rows[0]) + 1


def _spans(mask) -> bool:
    """Whether a round obstacle's mask spans :data:`MIN_CELLS_PER_DIAMETER` cells along x and y."""
    return min(_mask_span(mask)) >= MIN_CELLS_PER_DIAMETER


def _refuse_narrow_mask(scene, what, n, cells_across, mask, resolved, fix=""):
    """Refuse a round obstacle (``what``: its description) whose mask ``mask(n)`` spans fewer than
    :data:`MIN_CELLS_PER_DIAMETER` cells along x or y, naming the smallest ``m > n`` at which
    ``resolved(m)`` holds and the mask spans them; ``cells_across``: its diameter in cells."""
    if _spans(mask(n)):
        return
    m = n + 1
    while not (resolved(m) and _spans(mask(m))) and m < 1 << 16:
        m += 1
    sx, sy = _mask_span(mask(n))
    raise InputError(
        f"{scene}: n={n} gives {what} {cells_across:.3g} cells across, but its mask spans only {sx} x {sy} cells "
        f"(a body narrower than the diameter its Re and cd are reported for); it needs "
        f"{MIN_CELLS_PER_DIAMETER:g} cells along x and y: use n >= {m}, or move it off the cell centre it sits on{fix}."
    )


def _check_disc(scene, what, n, diameter, cx, cy, aspect=1, fix="", body=False):
    """Refuse a grid on which a disc of ``diameter`` (domain units, ``n`` cells per unit) spans
    fewer than :data:`MIN_CELLS_PER_DIAMETER` cells or covers no cell centre, and, for a ``body``
    (an obstacle: its diameter sets Re and cd), one whose mask spans fewer cells along x or y; the
    message names the smallest ``n`` that resolves it."""
    def mask(m):
        return _disc_mask(m, cx, cy, diameter, aspect * m)

    def resolved(m):
        return diameter * m >= MIN_CELLS_PER_DIAMETER and bool(mask(m).any())

    if not resolved(n):
        m = max(n + 1, math.ceil(MIN_CELLS_PER_DIAMETER / diameter))
        while not resolved(m):
            m += 1
        cells = int(mask(n).sum())
        raise InputError(
            f"{scene}: n={n} gives the {what} (diameter {diameter:g}) {diameter * n:.3g} cells across and {cells} "
            f"cells in its mask, but it needs at least {MIN_CELLS_PER_DIAMETER:g} cells per diameter and a "
            f"non-empty mask: use n >= {m}{fix}."
        )
    if body:
        _refuse_narrow_mask(scene, f"the {what} (diameter {diameter:g})", n, diameter * n, mask, resolved, fix)


def taylor_green(n: int = 64, dtype=None, viscosity: float = 0.01, amplitude: float = 1.0,
                 cfl: float = 0.5, dt: float | None = None, advection: str = "maccormack",
                 device=None) -> Scene:
    """Taylor-Green vortex on the periodic ``[0, 2 pi]^2`` with ``n^2`` cells.

    ``u = A sin x cos y F(t)``, ``v = -A cos x sin y F(t)``, ``F = exp(-2 nu t)``: an exact
    Navier-Stokes solution (the pressure balances advection); its MAC sampling is discretely
    divergence-free. ``dt`` defaults to ``cfl * dx / A``. ``scene.analytic(t)`` gives the exact
    face velocities.
    """
    _check_n(n, "taylor_green")
    if isinstance(amplitude, bool) or not isinstance(amplitude, numbers.Real) or not math.isfinite(amplitude) \
            or (dt is None and amplitude == 0):
        raise InputError(f"taylor_green: amplitude={amplitude!r} must be a finite velocity, and non-zero unless dt is "
                         "given (dt = cfl * dx / |amplitude| has no velocity to go by): pass one, or dt=... for a "
                         "fluid at rest.")
    dtype = fluid_dtype(dtype)
    device = resolve_device(device if device is not None else "cpu")
    dx = 2 * math.pi / n
    (xu, yu), (xv, yv), _ = _grid(n, n, dx, dtype, device)

    def analytic(t: float):
        f = amplitude * math.exp(-2.0 * viscosity * t)
        u = (f * torch.sin(xu) * torch.cos(yu)).to(dtype)
        v = (-f * torch.cos(xv) * torch.sin(yv)).to(dtype)
        return u.contiguous(), v.contiguous()

    state = FluidState.zeros(n, n, dx, Boundary.periodic(), dtype=dtype, device=device)
    u0, v0 = analytic(0.0)
    state.u.copy_(u0)
    state.v.copy_(v0)
    state.u[n] = state.u[0]
    state.v[:, n] = state.v[:, 0]
    _, _, (xc, yc) = _grid(n, n, dx, dtype, device)
    state.p.copy_((0.25 * amplitude ** 2 * (torch.cos(2 * xc) + torch.cos(2 * yc))).to(dtype))
    dt = float(dt) if dt is not None else float(cfl * dx / abs(amplitude))
    config = SolverConfig(dt=dt, viscosity=viscosity, advection=advection)
    return Scene("taylor_green", state, config, analytic=analytic,
                 params=dict(n=n, viscosity=viscosity, amplitude=amplitude, dt=dt))


def _random_psi(nx, ny, modes, seed, device):
    g = torch.Generator(device="cpu").manual_seed(int(seed))
    psi = torch.zeros((nx + 1, ny + 1), dtype=torch.float64)
    x = torch.arange(nx + 1, dtype=torch.float64)[:, None] * 2 * math.pi / nx
    y = torch.arange(ny + 1, dtype=torch.float64)[None, :] * 2 * math.pi / ny
    for kx in range(-modes, modes + 1):
        for ky in range(0, modes + 1):
            if kx == 0 and ky == 0:
                continue
            a, b = torch.randn(2, generator=g, dtype=torch.float64)
            k2 = kx * kx + ky * ky
            psi += (a * torch.cos(kx * x + ky * y) + b * torch.sin(kx * x + ky * y)) / k2 ** 1.5
    return psi.to(device)


def kolmogorov(n: int = 64, dtype=None, viscosity: float = 1e-3, wavenumber: int = 4, forcing: float = 1.0,
               drag: float = 0.1, perturbation: float = 0.5, seed: int = 0, dt: float | None = None,
               device=None) -> Scene:
    """Kolmogorov flow on the periodic ``[0, 2 pi]^2``: forcing ``f_x = F sin(k y)``, linear drag,
    viscosity ``nu`` (jax-cfd's defaults: k=4, drag 0.1, nu=1e-3), started from a random
    divergence-free perturbation (curl of a random smooth stream function, ``seed``).

    The forcing needs at least :data:`MIN_CELLS_PER_WAVELENGTH` cells per wavelength
    (``n >= 4 * wavenumber``); coarser grids raise :class:`InputError` (they would alias it).
    """
    _check_n(n, "kolmogorov")
    if isinstance(wavenumber, bool) or not isinstance(wavenumber, int) or wavenumber < 1:
        raise InputError(f"kolmogorov: wavenumber={wavenumber!r} must be a positive integer (waves per 2 pi).")
    if n < MIN_CELLS_PER_WAVELENGTH * wavenumber:
        raise InputError(
            f"kolmogorov: n={n} gives the forcing sin({wavenumber} y) {n / wavenumber:.3g} cells per wavelength, "
            f"but it needs at least {MIN_CELLS_PER_WAVELENGTH} (fewer aliases it onto another wave): use "
            f"n >= {MIN_CELLS_PER_WAVELENGTH * wavenumber} or a smaller wavenumber."
        )
    dtype = fluid_dtype(dtype)
    device = resolve_device(device if device is not None else "cpu")
    dx = 2 * math.pi / n
    (xu, yu), _, _ = _grid(n, n, dx, dtype, device)
    state = FluidState.zeros(n, n, dx, Boundary.periodic(), dtype=dtype, device=device)
    psi = _random_psi(n, n, 4, seed, device)
    du, dv = curl_torch(psi, dx, (True, True))
    scale = perturbation / max(float(du.abs().max()), float(dv.abs().max()))
    state.u.copy_((du * scale).to(dtype))
    state.v.copy_((dv * scale).to(dtype))
    fu = (forcing * torch.sin(wavenumber * yu)).expand(n + 1, n).to(dtype)
    fv = torch.zeros((n, n + 1), dtype=dtype, device=device)
    dt = float(dt) if dt is not None else 0.2 * dx
    config = SolverConfig(dt=dt, viscosity=viscosity, drag=drag)
    return Scene("kolmogorov", state, config, forcing=(fu, fv),
                 params=dict(n=n, viscosity=viscosity, wavenumber=wavenumber, forcing=forcing, drag=drag,
                             seed=seed, dt=dt))


_PLUME_SOURCE_RADIUS = 0.06


def _plume_source_y(dx):
    return 0.12


def _karman_centre_y(dx):
    """The cylinder sits a quarter cell above the channel axis (breaks the symmetry)."""
    return 0.5 + 0.25 * dx


def smoke_plume(n: int = 64, dtype=None, buoyancy: float = 1.0, source: bool = True, source_rate: float = 1.0,
                viscosity: float = 0.0, walls: str = "no_slip", dt: float | None = None, device=None) -> Scene:
    """Buoyant smoke in the closed unit box (walls of kind ``walls``), scalar ``"smoke"``.

    ``source=True``: smoke is released at ``source_rate`` per unit area per unit time in a disc of
    radius 0.06 near the bottom: the total per unit time is ``source_rate`` times the disc's area
    ``pi r^2`` on every grid (``params["release_rate"]``): the cells whose centres the disc covers
    share it (their area is 39 % short of the disc's at n = 17-24, 3.6 % over at n = 32: the same
    per-cell rate released that much less or more smoke);
    ``source=False``: a smooth blob of smoke starts near the bottom and no smoke is added (total
    smoke mass is then conserved). Buoyancy ``b * smoke`` along +y. The source disc (diameter
    0.12) must span at least :data:`MIN_CELLS_PER_DIAMETER` cells (``n >= 17``); coarser grids
    raise :class:`InputError`.
    """
    _check_n(n, "smoke_plume")
    if source:
        _check_disc("smoke_plume", "smoke source disc", n, 2 * _PLUME_SOURCE_RADIUS, 0.5, _plume_source_y,
                    fix=", or source=False (a blob that exists on any grid)")
    dtype = fluid_dtype(dtype)
    device = resolve_device(device if device is not None else "cpu")
    dx = 1.0 / n
    _, _, (xc, yc) = _grid(n, n, dx, dtype, device)
    state = FluidState.zeros(n, n, dx, Boundary.box(walls), scalar_names=("smoke",), dtype=dtype, device=device)
    sources = None
    release_rate = source_rate * math.pi * _PLUME_SOURCE_RADIUS ** 2 if source else 0.0   # per unit time
    if source:
        disc = _disc_mask(n, 0.5, _plume_source_y, 2 * _PLUME_SOURCE_RADIUS)
        per_cell = release_rate / (float(disc.sum()) * dx * dx)
        sources = (per_cell * disc.to(device=device, dtype=dtype))[None].contiguous()
    else:
        blob = torch.exp(-((xc - 0.5) ** 2 + (yc - 0.3) ** 2) / (2 * 0.08 ** 2))
        state.scalars[0].copy_(blob.to(dtype))
    dt = float(dt) if dt is not None else 0.5 * dx
    config = SolverConfig(dt=dt, viscosity=viscosity, buoyancy=buoyancy, buoyancy_scalar="smoke")
    return Scene("smoke_plume", state, config, sources=sources,
                 params=dict(n=n, buoyancy=buoyancy, source=source, source_rate=source_rate,
                             release_rate=release_rate,
                             viscosity=viscosity, walls=walls, dt=dt))


def karman(re: float = 100.0, n: int = 64, dtype=None, aspect: int = 4, inflow: float = 1.0,
           diameter: float = 0.125, dt: float | None = None, device=None, centre_y: float | None = None) -> Scene:
    """Kármán vortex street: a cylinder of ``diameter`` in a channel of height 1 (``n`` cells
    across, ``aspect * n`` along), inflow ``U`` on the left, outflow on the right, free-slip walls.
    Viscosity ``nu = U D / Re``. The cylinder sits at ``x = 0.5`` and, by default, a quarter cell
    above the axis (breaks the symmetry so shedding starts); ``centre_y`` (domain units) puts it
    elsewhere: a finer grid of the same flow passes the coarse grid's centre (the fine reference of
    :mod:`lawful.fluids.fine_reference`; with its own quarter cell it sat 3/16 of a coarse cell
    lower at 4x). Dye ``"dye"`` is released upstream at five heights.
    The cylinder must span at least :data:`MIN_CELLS_PER_DIAMETER` cells (``diameter * n >= 2``,
    e.g. ``n >= 16`` for the default diameter), and so must its mask along x and along y (a
    ``centre_y`` that puts a two-cell cylinder on a cell centre leaves one cell: a body half its
    diameter wide); coarser grids raise :class:`InputError`.
    """
    _check_n(n, "karman", 8)
    if isinstance(re, bool) or not (isinstance(re, (int, float)) and math.isfinite(re) and re > 0):
        raise InputError(f"Reynolds number re={re!r} must be a positive finite number.")
    if isinstance(aspect, bool) or not isinstance(aspect, int) or aspect < 1:
        raise InputError(f"karman: aspect={aspect!r} must be a positive integer (channel length / height).")
    if not (isinstance(diameter, (int, float)) and math.isfinite(diameter) and 0 < diameter < 1):
        raise InputError(f"karman: diameter={diameter!r} must lie in (0, 1) channel heights.")
    if isinstance(inflow, bool) or not (isinstance(inflow, (int, float)) and math.isfinite(inflow) and inflow > 0):
        raise InputError(f"karman: inflow={inflow!r} must be a finite positive velocity (domain units): the flow "
                         "enters on the left and leaves on the right; a negative one would enter through the outflow "
                         "side (for a flow to the left, build the channel with flow_scene).")
    if centre_y is None:
        centre = _karman_centre_y
    else:
        if (isinstance(centre_y, bool) or not isinstance(centre_y, (int, float)) or not math.isfinite(centre_y)
                or not diameter / 2 < centre_y < 1 - diameter / 2):
            raise InputError(f"karman: centre_y={centre_y!r} must put the cylinder (diameter {diameter:g}) inside the "
                             f"channel: between {diameter / 2:g} and {1 - diameter / 2:g}.")
        cy = float(centre_y)

        def centre(_dx):
            return cy
    _check_disc("karman", "cylinder", n, float(diameter), 0.5, centre, aspect, body=True)
    dtype = fluid_dtype(dtype)
    device = resolve_device(device if device is not None else "cpu")
    nx, ny = aspect * n, n
    dx = 1.0 / n
    _, _, (xc, yc) = _grid(nx, ny, dx, dtype, device)
    solid = _disc_mask(n, 0.5, centre, diameter, nx).to(device)   # the mask _check_disc judged
    boundary = Boundary.channel(inflow, walls="free_slip")
    state = FluidState.zeros(nx, ny, dx, boundary, solid=solid, scalar_names=("dye",), dtype=dtype, device=device)
    state.u.fill_(inflow)
    state.u[1:nx][solid[:-1] | solid[1:]] = 0.0
    src = torch.zeros((nx, ny), dtype=dtype, device=device)
    for yy in (0.2, 0.35, 0.5, 0.65, 0.8):
        src += ((((xc - 0.15) ** 2 + (yc - yy) ** 2) < (1.5 * dx) ** 2)).to(dtype)
    nu = inflow * diameter / re
    dt = float(dt) if dt is not None else 0.5 * dx / abs(inflow)
    config = SolverConfig(dt=dt, viscosity=nu)
    cyl = Circle((0.5, centre(dx)), diameter / 2, name="cylinder")
    return Scene("karman", state, config, sources=src[None].contiguous(),
                 params=dict(re=re, n=n, aspect=aspect, inflow=inflow, diameter=diameter, viscosity=nu, dt=dt,
                             centre_y=centre(dx)),
                 obstacles=(cyl,), masks=(solid,), reference=(abs(inflow), diameter))


def _shape_resolution(scene, ob, k, n, ly, lx, nx, dx, device):
    """Refuse an obstacle narrower than its minimum cell count or with an empty mask, and a circle
    whose mask spans fewer than :data:`MIN_CELLS_PER_DIAMETER` cells along x or y, naming the
    smallest ``n`` (cells across the height) that resolves it."""
    circle = isinstance(ob, Circle)
    need = MIN_CELLS_PER_DIAMETER if circle else 1.0

    def mask(m):
        d = ly / m
        return obstacle_masks([ob], round(lx / d), m, d)[0]

    def resolved(m):
        return ob.size / (ly / m) >= need and bool(mask(m).any())

    what = f"obstacle {k} ({type(ob).__name__}{' ' + ob.name if ob.name else ''}, size {ob.size:g})"
    if not resolved(n):
        m = n + 1
        while not resolved(m) and m < 1 << 16:
            m += 1
        raise InputError(f"{scene}: n={n} gives {what} {ob.size / dx:.3g} cells across, but it needs at least "
                         f"{need:g} cells and a non-empty mask: use n >= {m}.")
    if circle:
        _refuse_narrow_mask(scene, what, n, ob.size / dx, mask, resolved)


#: cells an obstacle keeps from a periodic seam: the force records (the control-volume box, the
#: surface stencil) do not wrap across it
SEAM_CLEARANCE = 2


def _check_seams(boundary, masks, name: str) -> None:
    """Refuse an obstacle within :data:`SEAM_CLEARANCE` cells of a periodic seam: its recorded
    drag was 0.69-0.89x the same flow's shifted away from the seam (the flow itself is right)."""
    for axis, periodic in enumerate(boundary.periodic_axes):
        if not periodic:
            continue
        for k, m in enumerate(masks):
            idx = torch.nonzero(m.any(1 - axis)).flatten()
            n = m.shape[axis]
            if len(idx) and (int(idx[0]) < SEAM_CLEARANCE or int(idx[-1]) > n - 1 - SEAM_CLEARANCE):
                raise InputError(f"{name}: obstacle {k} comes within {SEAM_CLEARANCE} cells of the periodic seam "
                                 f"of {'xy'[axis]} (its cells {int(idx[0])}..{int(idx[-1])} of {n}): the force "
                                 "records do not wrap across the seam. Shift the obstacles along "
                                 f"{'xy'[axis]} so they sit away from it (a periodic flow is the same).")


def flow_scene(size=(1.0, 1.0), n: int = 64, boundary: Boundary | None = None, obstacles=(),
               viscosity: float = 0.0, dt: float | None = None, cfl: float = 0.5, initial: str = "auto",
               reference=None, scalar_names=(), name: str = "flow", params: dict | None = None,
               obstacle_ghost: bool = True, force_method: str = "control_volume", dtype=None, device=None) -> Scene:
    """A channel or box of ``size = (Lx, Ly)`` domain units with ``n`` cells across the height
    (``dx = Ly / n``; ``Lx / dx`` must be a whole number of cells), boundaries ``boundary`` (a
    :class:`Boundary`: kind and tangential ``wall_velocity`` per side, inflow mean velocity and
    ``inflow_profile``; default a closed no-slip box) and ``obstacles`` (a sequence of
    :class:`Circle` / :class:`Box`, domain units; a circle must span :data:`MIN_CELLS_PER_DIAMETER`
    cells, and so must its mask along x and y; a box one cell). ``viscosity``: kinematic (domain
    units^2/time). ``initial``: ``"rest"`` or ``"inflow"`` (every face at the inflow profile; the
    first projection makes it divergence-free around the bodies); ``"auto"`` = ``"inflow"`` when a
    side is an inflow. ``dt`` defaults to ``cfl * dx / V`` with ``V`` the fastest prescribed speed
    (inflow peak, walls, rotating bodies). ``reference = (U, L)``: velocity and length of the force
    coefficients ``cd``/``cl`` recorded with the forces of every obstacle (``force_method``:
    ``"control_volume"`` momentum balance around each body, or ``"surface"``,
    :class:`~lawful.fluids.forces.ForceProbe`). ``obstacle_ghost`` (default True): the viscous
    stencil treats obstacle walls as no-slip half a cell away
    (:attr:`~lawful.fluids.solver.SolverConfig.obstacle_ghost`; Schäfer-Turek 2D-1 cd +6.9 % at 10
    cells per diameter and +2.6 % at 20, converging, against -2.1 % at 10 without).
    """
    _check_n(n, name)
    boundary = boundary if boundary is not None else Boundary.box("no_slip")
    if not isinstance(boundary, Boundary):
        raise InputError(f"flow_scene: boundary={boundary!r} must be a lawful.kernels.mac_grid.Boundary.")
    if not (isinstance(size, (tuple, list)) and len(size) == 2 and all(
            isinstance(a, (int, float)) and not isinstance(a, bool) and math.isfinite(a) and a > 0 for a in size)):
        raise InputError(f"flow_scene: size={size!r} must be (Lx, Ly), two positive finite lengths.")
    lx, ly = float(size[0]), float(size[1])
    dx = ly / n
    nx = round(lx / dx)
    if nx < 2 or abs(nx * dx - lx) > 1e-9 * lx:
        raise InputError(f"flow_scene: size={tuple(size)} with n={n} cells across the height gives {lx / dx:.6g} "
                         "cells along x; choose n so that Lx / (Ly / n) is a whole number >= 2.")
    obstacles = tuple(obstacles)
    for k, ob in enumerate(obstacles):
        if not isinstance(ob, (Circle, Box)):
            raise InputError(f"flow_scene: obstacle {k} is a {type(ob).__name__}; give Circle or Box shapes.")
        _shape_resolution(name, ob, k, n, ly, lx, nx, dx, device)
    _column_names(obstacles)      # refused now, not at the first step's force record
    if initial not in ("auto", "rest", "inflow"):
        raise InputError(f"flow_scene: initial={initial!r}: use 'auto', 'rest' or 'inflow'.")
    if reference is not None:
        if not (isinstance(reference, (tuple, list)) and len(reference) == 2 and all(
                isinstance(a, (int, float)) and math.isfinite(a) and a > 0 for a in reference)):
            raise InputError(f"flow_scene: reference={reference!r} must be (U, L), a positive velocity and length.")
    dtype = fluid_dtype(dtype)
    device = resolve_device(device if device is not None else "cpu")
    masks = [m.to(device) for m in obstacle_masks(obstacles, nx, n, dx, device)]
    solid = torch.zeros((nx, n), dtype=torch.bool, device=device)
    for k, m in enumerate(masks):
        shared = solid & m
        if bool(shared.any()):   # their shared surface counted twice in the forces (drag +3.4 % for a T)
            first = next(j for j in range(k) if bool((masks[j] & m).any()))
            raise InputError(f"flow_scene: obstacles {first} and {k} overlap ({int(shared.sum())} cells): the force "
                             "records would count their shared surface twice. Give a body as shapes that do not "
                             "overlap, or as one shape.")
        solid |= m
    _check_seams(boundary, masks, name)
    boundary.check_flow(solid)
    bv = body_velocity(obstacles, masks, nx, n, dx, dtype, device, boundary.periodic_axes)
    if bv is not None:
        import warnings

        warnings.warn(
            "flow_scene: a rotating obstacle's staircase surface faces carry its rigid velocity, normal part "
            "included, so state.u/v pass fluid through the body along its rows and columns of cells (the flow "
            "around it is right to a few %: Couette 0.434 for 0.423). The solver's scalars ride the nearest "
            "divergence-free field that passes nothing through a body (Solver.scalar_velocity), so they stay "
            "out of it and keep their totals; carry anything else near the body (tracer particles, your own "
            "fields) with that field, not with state.u/v (see lawful.fluids.forces.body_velocity).",
            UserWarning, stacklevel=2)
    state = FluidState.zeros(nx, n, dx, boundary, solid=solid, scalar_names=scalar_names, dtype=dtype, device=device)
    sides = (boundary.x_lo, boundary.x_hi, boundary.y_lo, boundary.y_hi)
    has_inflow = "inflow" in sides
    if initial == "auto":
        initial = "inflow" if has_inflow else "rest"
    if initial == "inflow":
        if not has_inflow:
            raise InputError("flow_scene: initial='inflow' needs an inflow side in the boundary.")
        if "inflow" in sides[:2]:
            sign = 1.0 if boundary.x_lo == "inflow" else -1.0
            state.u.copy_((sign * inflow_profile(n, boundary.inflow_velocity, boundary.inflow_profile))[None, :]
                          .expand(nx + 1, n).to(dtype))
            state.u[1:nx][solid[:-1] | solid[1:]] = 0.0
        else:
            sign = 1.0 if boundary.y_lo == "inflow" else -1.0
            state.v.copy_((sign * inflow_profile(nx, boundary.inflow_velocity, boundary.inflow_profile))[:, None]
                          .expand(nx, n + 1).to(dtype))
            state.v[:, 1:n][solid[:, :-1] | solid[:, 1:]] = 0.0
    if bv is not None:
        # a rotating body's faces start at its rigid velocity, the value the solver's face_bc holds
        # them at from the first step: left at 0, the first step set them, and the control-volume
        # force of the first record read that jump of the body's own momentum as the fluid's d/dt
        # (dt = dx / 4: a disc spun up from rest a quarter cell off its mask's axis fx -0.077 for -0.045)
        tu, tv = faces_touching(solid, boundary.periodic_axes)
        state.u[tu] = bv[0][tu]
        state.v[tv] = bv[1][tv]
    speeds = [abs(boundary.inflow_velocity) * (1.5 if boundary.inflow_profile == "parabolic" else 1.0) * has_inflow]
    speeds += [abs(w) for w in boundary.wall_velocity]
    if bv is not None:
        speeds += [float(bv[0].abs().max()), float(bv[1].abs().max())]
    vmax = max(speeds)
    if dt is None:
        if vmax == 0.0:
            raise InputError("flow_scene: nothing prescribes a velocity (no inflow, moving wall or rotating body): "
                             "give dt explicitly.")
        dt = cfl * dx / vmax
    if not (isinstance(viscosity, (int, float)) and math.isfinite(viscosity) and viscosity >= 0):
        raise InputError(f"flow_scene: viscosity={viscosity!r} must be a finite number >= 0.")
    config = SolverConfig(dt=float(dt), viscosity=float(viscosity), obstacle_ghost=bool(obstacle_ghost))
    par = dict(size=(lx, ly), n=n, nx=nx, dx=dx, viscosity=viscosity, dt=float(dt), boundary=boundary,
               obstacles=obstacles, reference=reference)
    par.update(params or {})
    if force_method not in ForceProbe.METHODS:
        raise InputError(f"flow_scene: force_method={force_method!r}: use one of {ForceProbe.METHODS}.")
    return Scene(name, state, config, params=par, obstacles=obstacles, masks=tuple(masks), body_velocity=bv,
                 reference=tuple(reference) if reference is not None else None, force_method=force_method)


def lid_driven_cavity(re: float = 100.0, n: int = 64, lid_velocity: float = 1.0, cfl: float = 0.5,
                      dt: float | None = None, dtype=None, device=None) -> Scene:
    """The lid-driven cavity of Ghia, Ghia & Shin (1982): the unit box with no-slip walls, the top
    wall (``y_hi``) sliding along +x at ``lid_velocity``; ``nu = U * 1 / re``; ``n x n`` cells,
    started at rest. ``dt`` defaults to ``cfl * dx / U``."""
    if isinstance(re, bool) or not (isinstance(re, (int, float)) and math.isfinite(re) and re > 0):
        raise InputError(f"lid_driven_cavity: Reynolds number re={re!r} must be a positive finite number.")
    if not (isinstance(lid_velocity, (int, float)) and math.isfinite(lid_velocity) and lid_velocity != 0):
        raise InputError(f"lid_driven_cavity: lid_velocity={lid_velocity!r} must be a finite non-zero velocity.")
    return flow_scene((1.0, 1.0), n, Boundary.box("no_slip", lid_velocity=float(lid_velocity)),
                      viscosity=abs(lid_velocity) / float(re), dt=dt, cfl=cfl, name="lid_driven_cavity",
                      params=dict(re=float(re), lid_velocity=float(lid_velocity)), dtype=dtype, device=device)


SCENES = {"taylor_green": taylor_green, "kolmogorov": kolmogorov, "smoke_plume": smoke_plume, "karman": karman,
          "lid_driven_cavity": lid_driven_cavity}


def make(name: str, **kwargs) -> Scene:
    """Build the scene called ``name`` (one of :data:`SCENES`; ``smoke-plume`` is read as
    ``smoke_plume``) with keyword arguments."""
    name = name.replace("-", "_") if isinstance(name, str) else name
    if name not in SCENES:
        raise InputError(f"unknown scene {name!r}: choose one of {sorted(SCENES)}.")
    return SCENES[name](**kwargs)

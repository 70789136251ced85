"""The incompressible MAC-grid solver: a step built from injected parts, and ``run``.

One step of ``Solver.step`` (first-order operator splitting, ``k`` CFL substeps of ``dt/k``):

1. **advect** — passive scalars in conservative flux form by the current (divergence-free) face
   velocities, then the velocity by itself (semi-Lagrangian or MacCormack);
2. **force** — scalar sources, external forcing and linear drag, explicit viscosity, buoyancy,
   boundary face values;
3. **project** — MGPCG pressure projection to the relative-divergence tolerance;
4. **correct** (once per step, after the last substep) — the corrector slot (below), then an
   optional re-projection; then NaN/inf detection and metrics.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, fields
from typing import Callable, NamedTuple

import torch

from lawful.kernels.errors import ConvergenceError, InputError, NumericalError, ShapeError
from lawful.kernels.mac_checks import change_stats, snapshot_stats
from lawful.kernels.mac_advection import SCHEMES, advect_scalars, advect_velocity, ghost_tensor, velocity_workspace
from lawful.kernels.mac_forces import viscosity_buoyancy_and_bc
from lawful.kernels.mac_grid import (check_staggering, face_bc, faces_touching, same_mask, set_periodic_duplicate,
                                    solid_corner_mask, substeps)
from lawful.fluids.corrector_geometry import apply_stream_function
from lawful.kernels.mac_pressure import PressureSolver, ProjectionStats, default_rtol
from lawful.fluids.metrics import MetricsWriter, check_writable, plot_metrics, state_metrics
from lawful.fluids.records import DEFAULT_KEEP, RunRecords
from lawful.fluids.state import FluidState, first_nonfinite

__all__ = ["SolverConfig", "Solver", "run", "pressure_scale", "stored_pressure", "body_acceleration"]


def pressure_scale(dt: float, dx: float, predictor: bool) -> float:
    """``phi = p * pressure_scale``: the projection's unknown for a pressure ``p`` (density 1) over
    a (sub)step ``dt``. With the pressure predictor the projection applies ``(dt/2) grad p`` (the
    other half travels with the advected velocity), without it ``dt grad p``. The one definition
    the solver and its torch twin (:class:`~lawful.fluids.torch_step.TorchStep`) use."""
    return (0.5 * dt if predictor else dt) / dx


def stored_pressure(p_before, p_solved, predictor: bool, out=None):
    """The pressure a step leaves in ``state.p``, from the one it started with (``p_before``) and
    the projection's solution ``p_solved`` (``phi / pressure_scale``; cell fields or face gradients
    alike, the rule is linear).

    With the pressure predictor a step applies ``(dt/2) grad p_before`` along the characteristics
    and ``(dt/2) grad p_solved`` in the projection: only their mean ``P`` acts, the time-centred
    pressure of the step (at ``t - dt/2``), and that is what is stored and carried to the next
    predictor. Storing ``p_solved`` instead (done until 2026-12) left a neutral mode,
    ``p_solved = 2 P - p_before``: ``state.p`` alternated step to step around ``P`` (by 44-51 % in
    Kolmogorov flow, 133-226 % in the Re 100 cavity, measured), a silently wrong pressure for anyone
    reading it. Without the predictor the projection applies all of ``dt grad p_solved`` and that
    is stored. The one rule :class:`Solver` and :class:`~lawful.fluids.torch_step.TorchStep` use
    (the solver's step through ``out=``, in place).

    ``out``: the tensor to write the result into and return, instead of new tensors (the solver's
    step passes ``p_before`` itself): the same numbers, each rounded once to ``out``'s dtype as
    ``out.copy_(result)`` would; ``p_solved`` then serves as scratch (overwritten).
    """
    if out is None:
        return 0.5 * (p_before + p_solved) if predictor else p_solved
    if predictor:
        return torch.mul(torch.add(p_solved, p_before, out=p_solved), 0.5, out=out)
    return out.copy_(p_solved)


_STORED_PRESSURE = stored_pressure     # the rule the step's in-place evaluation reproduces


class ScalarFlow(NamedTuple):
    """What :meth:`Solver.scalar_velocity` keeps near moving bodies: the buffers ``u``, ``v`` it
    fills and its own :class:`PressureSolver` (warm start kept)."""
    u: torch.Tensor
    v: torch.Tensor
    pressure: PressureSolver


@dataclass(frozen=True)
class SolverConfig:
    """Settings and tolerances of a :class:`Solver` (in the domain's units, those of ``state.dx``, not cells and steps; immutable,
    ``replace()`` to vary).

    dt: time step. viscosity: kinematic viscosity nu (length^2/time). advection: "maccormack" or
    "semi_lagrangian"; limiter: MacCormack min/max clamp. scalar_order: 1 (upwind) or 2 (MUSCL).
    pressure_rtol: relative divergence after each projection (None: 1e-6 float32 / 1e-10 float64);
    pressure_max_iter: CG iterations before ConvergenceError. pressure_capped: False (default)
    -- a projection that stops above pressure_rtol raises ConvergenceError (residual, tolerance,
    iterations, fix); True -- accept it (a fixed iteration budget, as real-time solvers do): the
    step then goes on with the partly projected field and its record has ``pressure_converged``
    (1/0; 0 also when the scalars' own projection near a moving body, :meth:`Solver.scalar_velocity`,
    stopped early) beside ``pressure_residual``. cfl_max: largest
    ``max|u| dt_sub/dx`` per substep; max_substeps: beyond that many substeps, NumericalError.
    buoyancy: coefficient b of the +y force ``b * s`` from scalar ``buoyancy_scalar``.
    drag: linear drag coefficient (``u -= drag * u * dt``). reproject_after_correction: project
    again after the corrector (the "extra projection" baseline). check_finite: NaN/inf check.
    pressure_predictor: carry ``u - (dt/2) grad p`` (``p = state.p``) along the characteristics
    instead of ``u`` (trapezoidal pressure along the path: second order in time; the projection
    then applies the other half, ``(dt/2) grad p'``, and ``state.p`` becomes their time-centred
    mean, :func:`stored_pressure`); False gives the classic first-order Chorin splitting. Either
    way the viscous substeps read the faces plus the pressure impulse of ``state.p`` up to their
    time, the carried part included (:meth:`force_step`: viscosity acts on the velocity, and a
    fluid at rest under a uniform body force stays at rest with ``grad p`` equal to it). An
    advection part of one's own must carry the same quantity.
    obstacle_ghost: in the viscous stencil, a tangential neighbour that is a fixed obstacle face
    enters as the no-slip ghost ``2 q_b - q`` (wall half a cell away) instead of its value (False,
    the default kept for existing scenes and trained correctors: the wall acts a whole cell away).
    """

    dt: float
    viscosity: float = 0.0
    advection: str = "maccormack"
    limiter: bool = True
    scalar_order: int = 2
    pressure_rtol: float | None = None
    pressure_max_iter: int = 200
    pressure_capped: bool = False
    cfl_max: float = 1.0
    max_substeps: int = 8
    buoyancy: float = 0.0
    buoyancy_scalar: str | None = None
    drag: float = 0.0
    reproject_after_correction: bool = False
    check_finite: bool = True
    pressure_predictor: bool = True
    obstacle_ghost: bool = False

    def __post_init__(self):
        for name in ("dt", "cfl_max"):
            val = getattr(self, name)
            if not isinstance(val, (int, float)) or not math.isfinite(val) or val <= 0:
                raise InputError(f"SolverConfig.{name}={val!r} must be a positive finite number.")
        for name in ("viscosity", "drag"):
            val = getattr(self, name)
            if not isinstance(val, (int, float)) or not math.isfinite(val) or val < 0:
                raise InputError(f"SolverConfig.{name}={val!r} must be a finite number >= 0.")
        if self.advection not in SCHEMES:
            raise InputError(f"SolverConfig.advection={self.advection!r}: use one of {SCHEMES}.")
        if self.scalar_order not in (1, 2):
            raise InputError(f"SolverConfig.scalar_order={self.scalar_order!r}: use 1 or 2.")
        for name in ("max_substeps", "pressure_max_iter"):
            val = getattr(self, name)
            if isinstance(val, bool) or not isinstance(val, int) or val < 1:
                raise InputError(f"SolverConfig.{name}={val!r} must be an integer >= 1.")
        rtol = self.pressure_rtol
        if rtol is not None and (isinstance(rtol, bool) or not isinstance(rtol, (int, float))
                                 or not 0.0 < float(rtol) < 1.0):
            raise InputError(f"SolverConfig.pressure_rtol={rtol!r} must lie in (0, 1) (relative divergence; "
                             "e.g. 1e-6 for float32, 1e-10 for float64) or be None for the default.")
        if not (isinstance(self.buoyancy, (int, float)) and math.isfinite(self.buoyancy)):
            raise InputError(f"SolverConfig.buoyancy={self.buoyancy!r} must be a finite number.")

    def as_dict(self) -> dict:
        """Plain dict of the settings (for logs and model files)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


class Solver:
    """Incompressible Navier-Stokes on a 2D MAC grid, with Taichi kernels on the state's tensors.

    ``Solver(state, config, forcing=None, sources=None, advect=None, force=None, project=None)``

    * ``state`` (:class:`~lawful.fluids.state.FluidState`) fixes the grid, boundary, obstacle
      mask, dtype and device the solver is built for (the workspaces); ``step`` takes any state of
      that layout.
    * ``forcing``: ``(fu (nx+1, ny), fv (nx, ny+1))`` constant acceleration on the faces;
      ``sources``: ``(ns, nx, ny)`` scalar sources, the rate of change of each cell's average
      (amount per unit area per unit time: a cell gains ``sources * dx**2`` of the scalar's total
      per unit time), in fluid cells only: a source on solid cells is refused
      (:class:`~lawful.kernels.errors.InputError` naming the amount), as its release never reached
      the fluid (half of it vanished for a source half under a cylinder);
      ``body_velocity``: ``(ub (nx+1, ny), vb (nx, ny+1))`` the velocity of moving / rotating
      obstacles on their faces (fixed faces take it, :func:`~lawful.kernels.mac_grid.face_bc`).
    * ``advect(solver, state, dt)``, ``force(solver, state, dt)``,
      ``project(solver, state, warm_start) -> ProjectionStats``: injected parts replacing the
      defaults :meth:`advect_step`, :meth:`force_step`, :meth:`project` (e.g. a torch
      re-implementation, or a different pressure solver).

    **Corrector slot** — ``step(state, corrector)`` calls ``corrector(state)`` once per step,
    AFTER the projection (after the last CFL substep). It may modify ``state`` in place and return
    ``None``, or return a correction that the solver adds:

    * a tensor ``psi`` of shape ``(nx+1, ny+1)`` (stream function at the cell corners): applied by
      :func:`lawful.fluids.corrector_geometry.apply_stream_function`, the rule the
      divergence-free corrector uses too -- psi held at one constant per solid body (walls,
      obstacles, inflow sides; :func:`~lawful.kernels.mac_grid.solid_corner_mask`), then its
      discrete curl added (``u[i,j] += (psi[i,j+1]-psi[i,j])/dx``, ``v[i,j] -= (psi[i+1,j]-psi[i,j])/dx``),
      in float64 and rounded once into a float32 state (psi is taken in float64, never rounded to
      the state's dtype first);
    * a tuple ``(du, dv)`` of face tensors: added on the free faces as is (unconstrained);
    * a dict with any of ``"psi"``, ``"du"``, ``"dv"``, ``"mean_flow"`` (``(mx, my)``: a uniform
      flow added along periodic axes of a domain without obstacles - divergence-free, not
      representable by a periodic psi).

    Why after the projection: the curl of any psi is discretely divergence-free, so a hard-
    constrained corrector keeps the projected field incompressible to round-off while its effect
    is not undone by a projection; unconstrained corrections show their divergence in the step's
    metrics (``div_max_rel``); ``SolverConfig.reproject_after_correction=True`` is the
    "extra projection" (FluidNet-style) baseline. With a corrector, the step's figures also hold
    ``div_max_rel_projected``: the divergence right after the projection, before the corrector.
    """

    def __init__(self, state: FluidState, config: SolverConfig, forcing=None, sources=None,
                 advect: Callable | None = None, force: Callable | None = None,
                 project: Callable | None = None, body_velocity=None):
        if not isinstance(state, FluidState):
            raise InputError(f"Solver needs a FluidState, got {type(state).__name__}.")
        if not isinstance(config, SolverConfig):
            raise InputError(f"Solver config must be a SolverConfig, got {type(config).__name__}.")
        state.validate()
        self.config = config
        self.dtype, self.device = state.dtype, state.device
        self.nx, self.ny, self.dx = state.nx, state.ny, state.dx
        self.boundary = state.boundary
        self.solid = state.solid.clone()
        self.scalar_names = tuple(state.scalar_names)
        self.periodic = state.boundary.periodic_axes
        if body_velocity is not None:
            if not (isinstance(body_velocity, (tuple, list)) and len(body_velocity) == 2):
                raise InputError(f"body_velocity must be a pair (ub (nx+1, ny), vb (nx, ny+1)) of face velocities "
                                 f"of the obstacles, got {type(body_velocity).__name__}.")
            for name, t in zip(("body_velocity[0]", "body_velocity[1]"), body_velocity):
                bad = first_nonfinite(torch.as_tensor(t))
                if bad is not None:
                    raise InputError(f"{name} has a non-finite value at face {list(bad)}: give finite body velocities.")
            # only the faces touching a body are read (face_bc); on them the two copies of a periodic
            # seam face must agree (one face), else the twin and the step read different values
            touch = faces_touching(state.solid, self.periodic)
            faces = []
            for k, (t, tt, where) in enumerate(zip(body_velocity, touch, ("u", "v"))):
                t = torch.as_tensor(t)
                check_staggering(f"body_velocity[{k}]", t, where, self.nx, self.ny)
                faces.append(torch.where(tt.to(t.device), t, torch.zeros_like(t)))
            body_velocity = _periodic_duplicates(faces[0], faces[1], self.periodic, "body_velocity")
        else:
            touch = None
        self.body_velocity = body_velocity
        state.boundary.check_flow(state.solid)
        self.ubc, self.vbc = face_bc(state.boundary, state.solid, self.dtype, body_velocity)
        if body_velocity is not None:
            state.boundary.check_prescribed_flux(state.solid, self.ubc, self.vbc)
        #: the (u, v) masks of the fixed faces (walls, inflow, bodies), None where every face is free
        #: (found once: linear drag skips them every step, :func:`drag_factor`)
        self.fixed_faces = tuple(m if bool(m.any()) else None for m in (self.ubc[0] <= 0, self.vbc[0] <= 0))
        self.ghost = ghost_tensor(state.boundary, self.dtype, self.device)
        self.uw, self.vw = velocity_workspace(self.ubc, self.vbc)
        ns = state.scalars.shape[0]
        #: (1, nx, ny): 1 on fluid cells, 0 on obstacle cells (state dtype), read by the scalars' slopes
        self.fluid_cells = (~self.solid).to(self.dtype).unsqueeze(0).contiguous()
        self._has_fluid = not bool(self.solid.all())
        # a corrected step's copy of the projected faces and its float64 figures (kernels.mac_checks)
        self._u0, self._v0 = torch.empty_like(state.u), torch.empty_like(state.v)
        self._guard = torch.zeros(3, dtype=torch.float64, device=self.device)
        self.fx = torch.zeros((ns, self.nx + 1, self.ny), dtype=self.dtype, device=self.device)
        self.fy = torch.zeros((ns, self.nx, self.ny + 1), dtype=self.dtype, device=self.device)
        #: with a moving body (its faces carry a velocity, so state.u/v cross it): ``(open_u, open_v)``,
        #: 1 on the faces touching no body cell, 0 on the others (state dtype), which
        #: :meth:`scalar_velocity` keeps open; None without one
        self.body_free_faces = None
        if touch is not None and bool(self.solid.any()):
            self.body_free_faces = tuple((~t).to(self.dtype) for t in touch)
        #: :meth:`scalar_velocity`'s :class:`ScalarFlow`, made at its first call (the step calls it
        #: only with scalars)
        self.scalar_flow = None
        #: :class:`ProjectionStats` of :meth:`scalar_velocity`'s last projection (None before one); a
        #: step's record folds its ``converged`` into ``pressure_converged``
        self.scalar_projection = None
        self.pressure = PressureSolver(state.boundary, state.solid, self.dtype, rtol=config.pressure_rtol,
                                       max_iter=config.pressure_max_iter, device=self.device,
                                       capped=config.pressure_capped)
        self.rtol = config.pressure_rtol if config.pressure_rtol is not None else default_rtol(self.dtype)
        self.pinned = solid_corner_mask(state.boundary, state.solid)
        self._geometry = None
        self.forcing = None
        if forcing is not None:
            fu, fv = forcing
            fu = torch.as_tensor(fu, dtype=self.dtype, device=self.device)
            fv = torch.as_tensor(fv, dtype=self.dtype, device=self.device)
            self._check_like("forcing[0]", fu, state.u)
            self._check_like("forcing[1]", fv, state.v)
            for name, t in (("forcing[0]", fu), ("forcing[1]", fv)):
                bad = first_nonfinite(t)
                if bad is not None:
                    raise InputError(f"{name} has a non-finite value ({float(t[bad])}) at face {list(bad)}: "
                                     "give finite face accelerations.")
            fu, fv = _periodic_duplicates(fu, fv, self.periodic, "forcing")
            self.forcing = (fu * self.ubc[0], fv * self.vbc[0])
        self.sources = None
        if sources is not None:
            src = torch.as_tensor(sources, dtype=self.dtype, device=self.device)
            self._check_like("sources", src, state.scalars)
            bad = first_nonfinite(src)
            if bad is not None:
                raise InputError(f"sources has a non-finite value ({float(src[bad])}) at {list(bad)}: "
                                 "give finite scalar sources.")
            on_solid = src.abs() * self.solid.to(self.dtype)
            if bool((on_solid != 0).any()):
                k = int(torch.argmax(on_solid.sum((1, 2))))
                total = float(src[k].abs().sum())
                lost = float(on_solid[k].sum())
                raise InputError(
                    f"sources of scalar {k} ({self.scalar_names[k] if k < len(self.scalar_names) else k!r}) are non-zero "
                    f"on {int((on_solid[k] != 0).sum())} solid cell(s), {100 * lost / total:.3g} % of its stated rate: "
                    "a solid cell holds no fluid, so that part would never be released (the rest would, and the "
                    "total would fall short of what was asked). Move the source off the obstacles or zero it "
                    "there (sources * ~state.solid) and raise the rest if the total matters.")
            self.sources = src
        self.buoyancy_index = -1
        if config.buoyancy != 0.0:
            name = config.buoyancy_scalar or (self.scalar_names[0] if self.scalar_names else None)
            if name not in self.scalar_names:
                raise InputError(f"buoyancy needs scalar {name!r}, but the state has {list(self.scalar_names)}.")
            self.buoyancy_index = self.scalar_names.index(name)
        self._advect = advect
        self._force = force
        self._project = project
        #: a moving body, scalars and an advection part of one's own: the step watches the scalars in
        #: the bodies (nothing may enter them) and warns once if they change (see :meth:`step`)
        self._watch_body_scalars = bool(self.body_free_faces is not None and self.scalar_names
                                        and (advect is not None or type(self).advect_step is not Solver.advect_step))
        self.last_correction = None     # (largest face change, max|u| before) of the last corrector call
        # scratch for the step's phi / scale (stored_pressure's p_solved): the numbers torch computes
        # into new tensors, without allocating them every step
        self._p_solved = torch.empty((self.nx, self.ny), dtype=torch.float64, device=self.device)

    @property
    def config(self) -> SolverConfig:
        """The :class:`SolverConfig` this solver was built with (read-only: the pressure solver's
        tolerance and cap, the face masks and any :class:`~lawful.fluids.torch_step.TorchStep` are
        built from it, so a replaced config would be half applied)."""
        return self._config

    @config.setter
    def config(self, value) -> None:
        if getattr(self, "_config", None) is not None:
            # a replaced config was read live by some parts (dt, drag, ...) and not by others (the
            # pressure tolerance, a TorchStep's copy: a halved dt put the twin 5e-2 off the step)
            raise InputError(
                "Solver.config cannot be replaced after the Solver is built: parts of the solver (its "
                "pressure solver's tolerance and cap) and any TorchStep made from it were built from the "
                "old one and would not follow. Build a new Solver(state, new_config, ...) instead (e.g. "
                "dataclasses.replace(solver.config, dt=...)).")
        self._config = value

    def _buoyancy_name(self):
        return self.scalar_names[self.buoyancy_index] if self.buoyancy_index >= 0 else None

    @staticmethod
    def _check_like(name, t, ref):
        if tuple(t.shape) != tuple(ref.shape):
            raise ShapeError(f"{name} has shape {tuple(t.shape)}; it must match {tuple(ref.shape)}.")

    def check_state(self, state: FluidState) -> None:
        """Raise :class:`ShapeError`/:class:`InputError` unless ``state`` fits this solver: grid,
        dtype, ``dx``, boundary, obstacle mask and passive scalars (their names, in order, and
        count: the flux buffers, sources and the buoyancy scalar were set up for them); and
        :class:`~lawful.kernels.errors.BackendError` when Taichi was re-initialised since the solver
        was built. Runs before a step touches the state, so a refused step leaves it unchanged."""
        if not isinstance(state, FluidState):
            raise InputError(f"expected a FluidState, got {type(state).__name__}.")
        self.pressure.check_runtime("this Solver", "Build a new Solver (scene.make_solver() or Solver(state, config))")
        if (state.nx, state.ny) != (self.nx, self.ny) or state.dtype != self.dtype or state.dx != self.dx:
            raise ShapeError(f"state grid {state.nx}x{state.ny} {state.dtype} dx={state.dx} does not match the "
                             f"solver's {self.nx}x{self.ny} {self.dtype} dx={self.dx}: build a Solver for it.")
        if (state.boundary is not self.boundary and state.boundary != self.boundary) \
                or not self._same_solid(state.solid):
            raise ShapeError("state boundary/obstacle mask differ from the solver's: build a Solver for it.")
        names = tuple(state.scalar_names)
        ns = state.scalars.shape[0] if state.scalars.ndim == 3 else -1
        if names != self.scalar_names or ns != len(self.scalar_names):
            raise ShapeError(
                f"state passive scalars {list(names)} (scalars of shape {tuple(state.scalars.shape)}) differ from "
                f"the {list(self.scalar_names)} this solver was built for (its flux buffers, sources and buoyancy "
                f"scalar {self._buoyancy_name()!r} follow those names): build a Solver for this state, or give the "
                f"state the scalars {list(self.scalar_names)} in that order."
            )

    def _same_solid(self, solid) -> bool:
        """Whether ``solid`` is this solver's obstacle mask (:func:`~lawful.kernels.mac_grid.same_mask`)."""
        return same_mask(solid, self.solid)

    # -- the parts ----------------------------------------------------------------------------
    def _phi_scale(self, dt: float) -> float:
        """phi = p * _phi_scale(dt): the projection applies (dt/2) grad p with the predictor, else dt grad p."""
        return pressure_scale(dt, self.dx, self.config.pressure_predictor)

    def advect_step(self, state: FluidState, dt: float) -> None:
        """Default advection part: scalars (flux form, carried by :meth:`scalar_velocity`), then
        velocity (in place). With
        ``pressure_predictor`` the carried values are ``u - (dt/2) G p`` (G: the projection's face
        gradient, :meth:`PressureSolver.subtract_phi_gradient`; formed in the advection's own
        launch, ``advect_velocity(..., gradient=self.pressure)``), and ``phi`` is left at
        ``p * _phi_scale(dt)`` (set in that launch too, ``phi_from``)."""
        cfg = self.config
        if state.scalars.shape[0]:
            us, vs = self._scalar_velocity(state)
            advect_scalars(state.scalars, self.fx, self.fy, us, vs, dt, self.dx, self.periodic,
                           order=cfg.scalar_order, comp=state.compensation(), fluid=self.fluid_cells)
        gradient = phi_from = None
        if cfg.pressure_predictor:
            gradient = self.pressure
            if self._kernel_pressure(state.p):
                phi_from = (state.p, self._phi_scale(dt))     # phi = p * scale in the advection's launch
            else:
                self._set_phi(state.p, dt)
        advect_velocity(state.u, state.v, self.uw, self.vw, dt, self.dx, self.periodic, scheme=cfg.advection,
                        limiter=cfg.limiter, ghost=self.ghost, gradient=gradient, phi_from=phi_from)

    def scalar_velocity(self, state: FluidState) -> tuple[torch.Tensor, torch.Tensor]:
        """The face velocities that carry the scalars: ``(state.u, state.v)`` themselves, except
        with a moving body. A spinning body's staircase faces carry its rigid velocity, normal part
        included (:func:`lawful.fluids.forces.body_velocity`), so ``state.u``, ``state.v`` pass
        fluid through it; the scalars are carried instead by the nearest divergence-free field
        that passes nothing through any body: the velocity with every face touching a body set
        to 0, projected with those faces fixed (a second :class:`PressureSolver`, warm-started;
        0-1 CG iterations per step once running). So no scalar enters a body, a uniform one stays
        uniform, and totals change only by rounding. Returned in this solver's buffers (valid
        until the next call). Use it, not ``state.u``/``v``, to carry anything else near a moving
        body (tracer particles, fields of your own): it is made here also without scalars. The
        state is checked against this solver first (grid, obstacles, scalars: :meth:`check_state`).
        Its warm start lives in this solver, not in the state: a run split over two solvers (two
        ``run`` calls on a scene, a restart) agrees with one run to the projection's tolerance
        (1e-10 of the scalars in float64), not bit for bit as without a moving body."""
        self.check_state(state)
        return self._scalar_velocity(state)

    def _scalar_velocity(self, state: FluidState) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`scalar_velocity` of a state already checked (the step's)."""
        if self.body_free_faces is None:
            return state.u, state.v
        flow = self.scalar_flow
        if flow is None:
            cfg = self.config
            flow = self.scalar_flow = ScalarFlow(
                torch.zeros_like(state.u), torch.zeros_like(state.v),
                PressureSolver(self.boundary, self.solid, self.dtype, rtol=cfg.pressure_rtol,
                               max_iter=cfg.pressure_max_iter, device=self.device, capped=cfg.pressure_capped))
        open_u, open_v = self.body_free_faces
        torch.mul(state.u, open_u, out=flow.u)
        torch.mul(state.v, open_v, out=flow.v)
        stats = flow.pressure.project(flow.u, flow.v, warm_start=True)
        if self.scalar_projection is None or self.scalar_projection.converged:   # a step keeps its first miss
            self.scalar_projection = stats
        return flow.u, flow.v

    def force_step(self, state: FluidState, dt: float) -> None:
        """Default force part: sources, forcing, drag, viscosity, buoyancy, boundary values.

        With viscosity the forcing, drag and buoyancy ride every viscous substep's update of a free
        face (:func:`~lawful.kernels.mac_forces.viscosity_buoyancy_and_bc`: their steady balance
        with viscosity does not depend on ``dt``), and each substep reads the velocity with the
        pressure impulse of ``state.p`` applied up to its time (with the pressure predictor the
        faces carry ``-(dt/2) G p``, :meth:`advect_step`'s), so viscosity and drag act on the
        velocity, not on a pressure gradient: a fluid at rest under a body force that the pressure
        balances stays at rest."""
        cfg = self.config
        if self.sources is not None:
            state.scalars.add_(self.sources, alpha=dt)
        # drag on free faces only: fixed ones (walls, inflow, bodies) keep the value they prescribe,
        # which the viscous stencil reads as its boundary value
        keep = 1.0 - cfg.drag * dt if cfg.drag else None
        viscous = cfg.viscosity != 0.0
        pressure = None
        if viscous:
            p = state.p
            if not self._kernel_pressure(p):
                p = p.detach().to(device=self.device, dtype=self.dtype).clone(memory_format=torch.contiguous_format)
            # the part of dt grad p the advected faces carry: the viscous substeps read the velocity
            pressure = (self.pressure, p, 0.5 if cfg.pressure_predictor else 0.0)
        else:       # no viscous launch to ride: the same update with torch
            if self.forcing is not None:
                state.u.add_(self.forcing[0], alpha=dt)
                state.v.add_(self.forcing[1], alpha=dt)
            if keep is not None:
                state.u.mul_(drag_factor(state.u, keep, self.fixed_faces[0]))
                state.v.mul_(drag_factor(state.v, keep, self.fixed_faces[1]))
        viscosity_buoyancy_and_bc(state.u, state.v, self.uw, self.vw, state.scalars, self.boundary, cfg.viscosity,
                                  dt, self.dx, self.ghost, cfg.obstacle_ghost, self.buoyancy_index, cfg.buoyancy,
                                  forcing=self.forcing if viscous else None, forcing_dt=dt,
                                  drag_keep=keep if viscous else None, pressure=pressure)

    def body_force(self, state: FluidState):
        """The acceleration the force part applies to the fluid at ``state`` (:func:`body_acceleration`
        with this solver's config and forcing), or None: what a control-volume force balance needs."""
        return body_acceleration(state, self.config, self.forcing, (self.ubc[0], self.vbc[0]))

    def project(self, state: FluidState, warm_start: bool = True, dt: float | None = None) -> ProjectionStats:
        """Default projection part: MGPCG in place. With ``dt`` (a time step's projection) it
        warm-starts from ``state.p`` and leaves the step's pressure in ``state.p`` (density 1; see
        :func:`stored_pressure`); without, it is a plain projection (``state.p`` untouched)."""
        if dt is None:
            return self.pressure.project(state.u, state.v, warm_start=False)
        self.pressure.check_runtime()
        self._check_finite(state, ("u", "v"))   # a NaN face would pass as a converged solve
        if warm_start:
            # the solve's unknown is the end pressure p' = 2 P - p (stored_pressure); from a slowly
            # changing P the stored p is as close to p' as the pressure two steps back was to it
            self._set_phi(state.p, dt)
        return self._project_storing(state, dt, warm_start)

    def _project_storing(self, state: FluidState, dt: float, warm_start: bool) -> ProjectionStats:
        """The step's projection (runtime checked, warm start in ``phi`` when ``warm_start``) and
        ``state.p`` from its ``phi``: stored in the projection's last launch when the rule is the
        module's own :func:`stored_pressure` and ``state.p`` a contiguous array of this grid (the
        same rule in the kernel, float64 rounded once to ``p``'s dtype: bit for bit torch's on the
        CPU; on CUDA, where torch divides by a scalar through its reciprocal, within one float64
        rounding), else by :meth:`_store_pressure`."""
        store = None
        if stored_pressure is _STORED_PRESSURE and self._kernel_pressure(state.p):
            store = (state.p, self._phi_scale(dt), self.config.pressure_predictor)
        stats, stored = self.pressure._project_storing(state.u, state.v, warm_start, store)
        if not stored:
            self._store_pressure(state, dt)
        return stats

    def _kernel_pressure(self, p: torch.Tensor) -> bool:
        """Whether the kernels may read and write ``p`` (a state's pressure) in place: a
        contiguous ``(nx, ny)`` array of this solver's dtype and device, not requiring grad, and
        not an inference tensor outside inference mode (torch refuses to write one there). Anything
        else goes through torch (:meth:`_set_phi`, :meth:`_store_pressure`: the kernel path's
        fallback, not a hook a subclass may replace), with torch's own errors."""
        buf = self._p_solved
        return (p.shape == buf.shape and p.dtype == self.dtype and p.device == buf.device and p.is_contiguous()
                and not p.requires_grad and (not p.is_inference() or torch.is_inference_mode_enabled()))

    def _set_phi(self, p: torch.Tensor, dt: float) -> None:
        """``phi = p * _phi_scale(dt)``: the product in ``p``'s dtype, written into ``phi`` (float64)
        without a temporary -- the numbers of ``phi.copy_(p * scale)``."""
        phi = self.pressure.phi
        if p.shape != phi.shape or p.device != phi.device or p.requires_grad:
            phi.copy_(p * self._phi_scale(dt))     # (as it was: copy_ broadcasts, or names the mismatch)
            return
        torch.mul(p, self._phi_scale(dt), out=phi)

    def _store_pressure(self, state: FluidState, dt: float) -> None:
        """``state.p`` from the solve's ``phi``: :func:`stored_pressure` of ``phi / _phi_scale(dt)``,
        written into ``state.p`` through the solver's float64 scratch."""
        phi, buf, p = self.pressure.phi, self._p_solved, state.p
        rule = stored_pressure         # the module's rule, looked up now (it may have been replaced)
        if rule is not _STORED_PRESSURE or p.shape != buf.shape or p.device != buf.device:
            p.copy_(rule(p, phi / self._phi_scale(dt), self.config.pressure_predictor))
            return
        stored_pressure(p, torch.div(phi, self._phi_scale(dt), out=buf), self.config.pressure_predictor, out=p)

    def _project_step(self, state: FluidState, dt: float) -> ProjectionStats:
        """``project(state, True, dt)`` inside :meth:`step` when the step's parts are this class's
        own: ``advect_step`` has just put ``p * _phi_scale(dt)`` into ``phi`` (the pressure
        predictor) and nothing since changed ``p`` or ``phi``, so the warm start is already in place;
        the step checked the Taichi runtime at its start."""
        return self._project_storing(state, dt, True)

    # -- the step -----------------------------------------------------------------------------
    def cfl(self, state: FluidState, dt: float | None = None, where: bool = False) -> tuple[float, tuple]:
        """``(max|u| dt/dx, (component, index))`` of the fastest face (index only if ``where``)."""
        dt = self.config.dt if dt is None else dt
        mu, mv = _abs_max(state.u), _abs_max(state.v)
        comp, arr, m = ("u", state.u, mu) if mu >= mv else ("v", state.v, mv)
        idx = ()
        if where and m > 0 and math.isfinite(m):
            idx = tuple(int(k) for k in torch.nonzero(arr.abs() == m)[0])
        return m * dt / self.dx, (comp, idx)

    def step(self, state: FluidState, corrector: Callable | None = None) -> dict:
        """Advance ``state`` by ``config.dt`` in place; return the step's solver figures
        (substeps, pressure iterations and residual; with a corrector also
        ``div_max_rel_projected``, the divergence after the projection, before the correction).

        Raises :class:`NumericalError` naming step and cell on NaN/inf or when the CFL number
        needs more than ``max_substeps`` substeps; :class:`ConvergenceError` from the projection.
        """
        cfg = self.config
        self.check_state(state)
        cfl, (comp, idx) = self.cfl(state)
        if not math.isfinite(cfl):
            self._raise_nonfinite(state, "before")
        nsub = substeps(cfl, cfg.cfl_max)
        if nsub > cfg.max_substeps:
            cfl, (comp, idx) = self.cfl(state, where=True)
            raise NumericalError(
                f"CFL number {cfl:.3g} at step {state.step} (t={state.t:.4g}; fastest face {comp}{list(idx)}, "
                f"|{comp}|={cfl * self.dx / cfg.dt:.4g}) needs {nsub} substeps > max_substeps={cfg.max_substeps}: "
                "lower dt, or raise SolverConfig.max_substeps / cfl_max." + self._corrector_hint()
            )
        h = cfg.dt / nsub
        iters = 0
        stats = None
        converged = True
        # the default parts with the predictor: the projection's warm start p * scale is the phi
        # advect_step has just set (neither the force part nor the kernels between change p or phi)
        phi_set = cfg.pressure_predictor and self._stock_parts()
        self.scalar_projection = None
        inside = state.scalars[:, self.solid].clone() if self._watch_body_scalars else None
        for _ in range(nsub):
            if self._advect is None:
                self.advect_step(state, h)
            else:
                self._advect(self, state, h)
            if self._force is None:
                self.force_step(state, h)
            else:
                self._force(self, state, h)
            try:
                if phi_set:
                    stats = self._project_step(state, h)
                elif self._project is None:
                    stats = self.project(state, True, h)
                else:
                    stats = self._project(self, state, True)
            except ConvergenceError:
                for name in ("u", "v", "scalars"):        # a NaN/inf reached the projection:
                    if first_nonfinite(getattr(state, name)) is not None:   # say where it is
                        self._raise_nonfinite(state, "in")
                raise
            iters += stats.iterations
            if not getattr(stats, "converged", True):
                converged = False
        if inside is not None:
            self._check_body_scalars(state, inside)
        div_proj = None
        if corrector is not None:
            check = getattr(corrector, "check_solver", None)
            if check is not None:        # a trained corrector compares this solver's dt and viscosity
                check(state, cfg)
            # the projected field's divergence (divergence_metrics' div_max_rel) and a copy of it
            # for the correction's check, in one launch
            div_max, before = snapshot_stats(state.u, state.v, self._u0, self._v0, self.fluid_cells, self._guard)
            div_proj = 0.0 if before == 0.0 or not self._has_fluid else div_max / before
            if check is not None:        # its own in-loop check of this state is then skipped
                from lawful.fluids.correctors import call_checked

                self.apply_correction(state, call_checked(corrector, state))
            else:
                self.apply_correction(state, corrector(state))
            self._check_correction(state, before)
            if cfg.reproject_after_correction:
                s2 = self.project(state, False) if self._project is None else self._project(self, state, False)
                iters += s2.iterations
                stats = s2
        if cfg.check_finite:
            self._check_finite(state, ("u", "v", "scalars"))
        state.t += cfg.dt
        state.step += 1
        info = {"substeps": nsub, "cfl": cfl, "pressure_iters": iters, "pressure_residual": stats.residual}
        if cfg.pressure_capped:
            # the scalars' own projection (moving bodies) counts too: capped, it may stop early
            scalar_proj = self.scalar_projection
            info["pressure_converged"] = int(converged and (scalar_proj is None or scalar_proj.converged))
        if div_proj is not None:
            info["div_max_rel_projected"] = div_proj
        return info

    def _check_body_scalars(self, state: FluidState, inside: torch.Tensor) -> None:
        """Warn once when the scalars in a moving body's cells changed over a step run by an
        advection part of one's own: nothing enters a body with :meth:`scalar_velocity`, so it
        carried them with ``state.u``/``v``, which cross a spinning body."""
        now = state.scalars[:, self.solid]
        if torch.equal(now, inside):
            return
        import warnings

        self._watch_body_scalars = False
        warnings.warn(
            f"Solver: scalars entered a moving body at step {state.step} (by up to "
            f"{float((now - inside).abs().max()):.3g} in its cells) under an advection part of your own: "
            "state.u/v pass fluid through a spinning body (its staircase faces carry its rigid velocity), "
            "so scalars carried with them leak into it (3.3 % of a uniform dye in 150 steps). Carry them "
            "with solver.scalar_velocity(state), as the default advect_step does.", UserWarning, stacklevel=3)

    def _stock_parts(self) -> bool:
        """Whether a step runs this class's own advect, force and project parts (none injected,
        none overridden by a subclass or on the instance)."""
        if self._advect is not None or self._force is not None or self._project is not None:
            return False
        cls, own = type(self), self.__dict__
        return (cls.advect_step is Solver.advect_step and cls.force_step is Solver.force_step
                and cls.project is Solver.project and cls._project_step is Solver._project_step
                and "advect_step" not in own and "force_step" not in own and "project" not in own)

    def _check_correction(self, state: FluidState, before: float) -> None:
        """Tell a corrector blow-up from a CFL explosion: if the field was runnable after the
        projection (finite, CFL within ``cfl_max * max_substeps``; ``before``: its largest
        face speed, NaN if not finite) and the corrector's output made it non-finite or
        unrunnable, raise :class:`NumericalError` naming the correction's magnitude and the step.
        Reads the copy :meth:`step` took before the correction (``snapshot_stats``). Keeps
        ``last_correction`` = (largest face change, max|u| before)."""
        cfg = self.config
        mag, after = change_stats(state.u, state.v, self._u0, self._v0, self._guard)
        self.last_correction = (mag, before)
        limit = cfg.cfl_max * cfg.max_substeps
        runnable_before = math.isfinite(before) and before * cfg.dt / self.dx <= limit
        if runnable_before and not (math.isfinite(mag) and math.isfinite(after) and after * cfg.dt / self.dx <= limit):
            raise NumericalError(
                f"corrector blow-up at step {state.step} (t={state.t:.4g}): the corrector's output changed a face "
                f"velocity by {mag:.3g} (max|u| {before:.3g} after the projection -> {after:.3g}, CFL number "
                f"{after * cfg.dt / self.dx:.3g}); the flow itself was stable, so lowering dt will not help: check "
                "the corrector's weights and its input scaling (velocity_scale, the state's units)."
            )

    def _corrector_hint(self) -> str:
        last = getattr(self, "last_correction", None)
        if last is None or not last[0] > 0.1 * max(last[1], 1e-300):
            return ""
        return (f" The last correction changed a face velocity by {last[0]:.3g} ({last[0] / max(last[1], 1e-300):.2g} "
                "of max|u|): check the corrector's weights and input scaling too.")

    def _check_finite(self, state: FluidState, names) -> None:
        """:meth:`_raise_nonfinite` ("in" the step) unless the fields ``names`` of ``state`` are
        finite: one reduction per field (NaN/inf propagate into the sum), the search on failure."""
        for name in names:
            field = getattr(state, name)
            if field.numel() and not math.isfinite(float(field.sum())):   # (no scalars: nothing to sum)
                self._raise_nonfinite(state, "in")

    def _raise_nonfinite(self, state, when):
        for name in ("u", "v", "scalars"):
            bad = first_nonfinite(getattr(state, name))
            if bad is not None:
                where = "face" if name in ("u", "v") else "scalar/cell"
                raise NumericalError(
                    f"non-finite {name} ({float(getattr(state, name)[bad])}) at {where} {list(bad)} {when} step "
                    f"{state.step} (t={state.t:.4g}): the run blew up; lower dt (CFL), raise viscosity or "
                    "check forcing/corrector output." + self._corrector_hint()
                )
        raise NumericalError(f"the sum of a field overflowed at step {state.step} (t={state.t:.4g}): the run blew "
                             "up; lower dt (CFL) or check forcing/corrector output.")

    def corner_geometry(self):
        """The :class:`~lawful.fluids.corrector_geometry.CornerGeometry` of this solver's grid
        (built on first use)."""
        if self._geometry is None:
            from lawful.fluids.corrector_geometry import corner_geometry

            self._geometry = corner_geometry(self.boundary, self.solid, torch.float64)
        return self._geometry

    def apply_correction(self, state: FluidState, correction) -> None:
        """Add a corrector's output to ``state`` (see the class docstring for the accepted forms)."""
        if correction is None:
            return
        if isinstance(correction, torch.Tensor):
            correction = {"psi": correction}
        elif isinstance(correction, (tuple, list)) and len(correction) == 2:
            correction = {"du": correction[0], "dv": correction[1]}
        if not isinstance(correction, dict):
            raise InputError(f"corrector returned {type(correction).__name__}: return None, psi, (du, dv) or a dict.")
        unknown = set(correction) - {"psi", "du", "dv", "mean_flow"}
        if unknown:
            raise InputError(f"corrector dict has unknown keys {sorted(unknown)}: use psi, du, dv, mean_flow.")
        mean = None
        if correction.get("mean_flow") is not None:
            mx, my = (float(x) for x in correction["mean_flow"])
            if (mx and not self.periodic[0]) or (my and not self.periodic[1]):
                raise InputError("corrector mean_flow is only divergence-free along periodic axes.")
            if (mx or my) and bool(self.solid.any()):
                # it is added on the free faces only: every cell beside an obstacle would gain
                # mean/dx of divergence (relative divergence 1.0 after the step, no error before)
                raise InputError("corrector mean_flow is not divergence-free with obstacles (a uniform flow "
                                 "cannot pass through solid cells): return it as part of psi or (du, dv) instead, "
                                 "or drop it on this scene.")
            mean = (mx, my)
        if correction.get("psi") is not None:
            # float64 whatever the state's dtype: psi's differences are the correction, and a psi
            # of large values rounded to float32 first would lose them (a constant 1000 added to
            # psi, which changes no face, moved float32 faces by 6e-5 / dx)
            psi = correction["psi"].to(torch.float64)
            if tuple(psi.shape) != (self.nx + 1, self.ny + 1):
                raise ShapeError(f"corrector psi has shape {tuple(psi.shape)}; the corners need "
                                 f"({self.nx + 1}, {self.ny + 1}).")
            apply_stream_function(state.u, state.v, psi, self.corner_geometry(), self.dx)
        for key, ref, bc in (("du", state.u, self.ubc), ("dv", state.v, self.vbc)):
            if correction.get(key) is not None:
                d = correction[key].to(self.dtype)
                self._check_like(f"corrector {key}", d, ref)
                axis = 0 if key == "du" else 1
                if self.periodic[axis]:   # the duplicate last face is face 0 itself: face 0's correction
                    d = set_periodic_duplicate(d.clone(), axis)
                ref.add_(d * bc[0])
        if mean is not None:
            mx, my = mean
            state.u.add_(mx * self.ubc[0])
            state.v.add_(my * self.vbc[0])


def _abs_max(t: torch.Tensor) -> float:
    """``float(t.abs().max())`` from one reduction, ``torch.aminmax`` (no ``|t|`` array): the
    largest magnitude is that of the minimum or the maximum, exactly; NaN when ``t`` holds one
    (aminmax returns NaN for both then), as ``abs().max()``."""
    lo, hi = torch.aminmax(t)
    return max(abs(float(lo)), abs(float(hi)))


def drag_factor(faces: torch.Tensor, keep: float, fixed: torch.Tensor | None):
    """What linear drag multiplies ``faces`` by: ``keep`` on the free faces and 1 on the fixed ones
    (``fixed``: their bool mask, :attr:`Solver.fixed_faces`; None when every face is free, and then
    the number itself), in the faces' dtype as a scalar factor would be. One rule for the Taichi
    step and its torch twin."""
    return keep if fixed is None else torch.full_like(faces, keep).masked_fill_(fixed, 1.0)


def body_acceleration(state: FluidState, config: SolverConfig, forcing=None, free=None):
    """The body force per unit mass that a step's force part applies on the fluid faces at
    ``state``: ``forcing`` (face accelerations), linear drag ``-config.drag * u`` and Boussinesq
    buoyancy ``config.buoyancy * s`` on the v faces (the scalar averaged from the two cells, as
    the force kernel does), all zero on fixed faces (``free``: the ``(u, v)`` free-face masks;
    computed from the state's boundary and obstacles when None). Returns ``(fu (nx+1, ny),
    fv (nx, ny+1))`` in float64, or None when there is no body force. The control-volume force on
    an obstacle (:func:`lawful.fluids.forces.control_volume_force`) adds its integral over the
    fluid in the box: without it a driven or buoyant flow's drag and lift are off by the box's
    share of the driving force."""
    has_buoyancy = config.buoyancy != 0.0 and state.scalars.shape[0] > 0
    if forcing is None and not config.drag and not has_buoyancy:
        return None
    if free is None:
        free = face_bc(state.boundary, state.solid, torch.float64)
        free = (free[0][0], free[1][0])
    mu, mv = (m.to(torch.float64) for m in free)
    fu = torch.zeros_like(state.u, dtype=torch.float64)
    fv = torch.zeros_like(state.v, dtype=torch.float64)
    if forcing is not None:
        fu += torch.as_tensor(forcing[0], dtype=torch.float64, device=fu.device)
        fv += torch.as_tensor(forcing[1], dtype=torch.float64, device=fv.device)
    if config.drag:
        fu -= config.drag * state.u.double()
        fv -= config.drag * state.v.double()
    if has_buoyancy:
        names = list(state.scalar_names)
        name = config.buoyancy_scalar or names[0]
        s = state.scalars[names.index(name)].double()
        ny = s.shape[1]
        if state.boundary.periodic_axes[1]:
            below = torch.cat([s[:, -1:], s], 1)                    # v face j: cells j-1 and j (wrapped)
            above = torch.cat([s, s[:, :1]], 1)
            fv += config.buoyancy * 0.5 * (below + above)
        else:                                                       # the faces on y_lo / y_hi: none
            fv[:, 1:ny] += config.buoyancy * 0.5 * (s[:, :-1] + s[:, 1:])
    return fu * mu, fv * mv


def _periodic_duplicates(fu: torch.Tensor, fv: torch.Tensor, periodic, what: str):
    """``(fu, fv)`` face fields with the duplicate last face of each periodic axis (``u[nx]`` is
    ``u[0]``, ``v[:, ny]`` is ``v[:, 0]``) set to the first; an :class:`InputError` when they
    differ by more than rounding (``1e-6`` of the field's largest value): a field that is not
    periodic there would make the two copies of one face disagree, and the projection then sees
    divergence that is not in the flow."""
    out = []
    for k, (t, axis) in enumerate(((fu, 0), (fv, 1))):
        if periodic[axis]:
            first, last = t.select(axis, 0), t.select(axis, t.shape[axis] - 1)
            tol = 1e-6 * float(t.abs().max()) if t.numel() else 0.0
            gap = float((last - first).abs().max()) if t.numel() else 0.0
            if gap > tol:
                face = "u[nx]" if axis == 0 else "v[:, ny]"
                raise InputError(
                    f"{what}[{k}] differs between {face} and its periodic copy {'u[0]' if axis == 0 else 'v[:, 0]'} "
                    f"by {gap:.3g}: on a periodic axis the last face is the first face again. Make the field "
                    f"periodic (evaluate it at x = 0 for both, or set {face} = {'u[0]' if axis == 0 else 'v[:, 0]'}).")
            t = set_periodic_duplicate(t.clone(), axis)
        out.append(t)
    return out[0], out[1]


def run(scene, steps: int, corrector: Callable | None = None, csv=None, plot=None, solver: Solver | None = None,
        callback: Callable | None = None, progress: bool = False, keep=DEFAULT_KEEP) -> RunRecords:
    """Run ``scene`` (a :class:`~lawful.fluids.scenes.Scene`, or a ``(state, config)`` pair) for
    ``steps`` steps in place; return the step records as a :class:`~lawful.fluids.records.RunRecords`.
    A trained ``corrector`` is checked against the scene and the solver that runs it (its training
    domain); one that takes the Reynolds number as input is bound to the flow's
    (``corrector.bind(scene, solver.config)``), so a corrector bound to another scene does not run
    this one at that scene's Re. With a ``(state, config)`` pair there is no scene to check: a
    trained corrector warns once that its domain was not checked (bind it to a scene first), and
    nothing moves a body (its velocity, forcing and sources are the scene's: pass the scene, or
    ``solver=scene.make_solver()``).

    Each record: ``step``, ``t``, ``dt``, ``substeps``, ``cfl`` (the largest face speed times
    ``dt / dx`` of the state the step starts from, for the whole step: each of its ``substeps``
    runs at about ``cfl / substeps``), ``pressure_iters``,
    ``pressure_residual``, ``div_max_rel`` (after the corrector), ``div_max_rel_projected`` (with a
    corrector),
    ``div_l2``, ``kinetic_energy``, ``enstrophy``, ``scalar_mass``, ``mass_<name>``,
    ``max_velocity``, ``wall_s`` (the step's wall time, metrics excluded); for a scene with
    obstacles also ``drag`` (along the inflow direction, +x without an inflow), ``lift`` (90
    degrees counter-clockwise from it), the raw ``fx``, ``fy``, ``force_method`` (0 control volume,
    1 the surface-integral fallback) and ``cd``, ``cl`` with a reference velocity and length; per
    obstacle with several (:func:`lawful.fluids.forces.force_columns`). ``csv``: path to stream
    the records to (flushed every step); ``plot``: PNG path for :func:`plot_metrics` at the end (of
    the whole CSV when there is one, else of the records kept); ``callback(state, record)`` after
    each step; ``progress``: tqdm bar (its rate and estimate start after the first step, which
    compiles the kernels).

    Memory is O(1) in ``steps``: ``keep`` records are held (default
    :data:`~lawful.fluids.records.DEFAULT_KEEP` = 1000, ``"last"`` for one, ``"all"`` for every
    record); ``records[-1]`` is always the last step, and ``records.max(key)`` / ``records.min(key)``
    cover every step. Every input (steps, keep, the state, the CSV and plot paths) is checked
    before the first step; the CSV file is opened at the first record, so a run refused up front
    leaves an existing file untouched.
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise InputError(f"steps={steps!r} must be an integer >= 0.")
    records = RunRecords(keep)
    if isinstance(scene, tuple):
        if len(scene) != 2:
            raise InputError(f"run: scene must be a Scene or a (state, config) pair, got a {len(scene)}-tuple.")
        state, config = scene
        solver = solver or Solver(state, config)
    elif hasattr(scene, "state") and hasattr(scene, "make_solver"):
        state = scene.state
        solver = solver or scene.make_solver()
    else:
        raise InputError(f"run: scene must be a Scene or a (state, config) pair, got {type(scene).__name__}.")
    if not isinstance(solver, Solver):
        raise InputError(f"run: solver must be a lawful.fluids.Solver, got {type(solver).__name__}.")
    if corrector is not None and not callable(corrector):
        raise InputError(f"run: corrector must be callable (corrector(state)), got {type(corrector).__name__}.")
    if callback is not None and not callable(callback):
        raise InputError(f"run: callback must be callable (callback(state, record)), got {type(callback).__name__}.")
    solver.check_state(state)
    if corrector is not None and not isinstance(scene, tuple):
        re_here = (getattr(scene, "params", None) or {}).get("re")
        if re_here is not None and (getattr(corrector, "config", None) or {}).get("use_reynolds") \
                and hasattr(corrector, "bind"):
            # the network reads the Reynolds number it was bound to: one bound to another scene ran this
            # one at that scene's Re (Re 100 for 150: velocities 0.18 off, no warning); bind() checks too
            corrector.bind(scene, config=solver.config)      # the solver's dt and viscosity are what run
        elif getattr(corrector, "metadata", None):
            from lawful.fluids.correctors import check_training_domain

            # a trained corrector outside what it saw warns (the solver's dt and viscosity, not the scene's)
            check_training_domain(corrector, scene, stacklevel=3, config=solver.config)
    exact = None      # the scene whose exact solution the plot overlays (None: no exact curve)
    if plot is not None:
        check_writable(plot, "plot")
        exact = _exact_solution_of(scene, solver)
    writer = MetricsWriter(csv) if csv is not None else None
    forces = scene.forces if getattr(scene, "obstacles", None) else None
    if forces is not None:
        scene.start_forces(state)      # the first step's d/dt from this state, as every later step's
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=steps, desc="fluid", unit="step")
        bar.set_postfix_str("the first step compiles the kernels")
    try:
        for k in range(steps):
            t0 = time.perf_counter()
            info = solver.step(state, corrector)
            wall = time.perf_counter() - t0
            rec = {"step": state.step, "t": state.t, "dt": solver.config.dt}
            rec.update(info)
            rec.update(state_metrics(state))
            if forces is not None:
                rec.update(forces(state, solver.config.viscosity, body_force=solver.body_force(state)))
            rec["wall_s"] = wall
            records.append(rec)
            if writer is not None:
                writer.write(rec)
            if callback is not None:
                callback(state, rec)
            if bar is not None:
                if k == 0:
                    # the first step is mostly Taichi compiling the kernels (4.7 s of a 14 s run, and
                    # an ETA of 7:47): the rate and the estimate start after it
                    bar.reset(total=steps)
                    bar.set_postfix_str("")
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
        if writer is not None:
            writer.close()
    if plot is not None and records.total:
        source = writer.path if writer is not None and writer.path.is_file() else records
        plot_metrics(source, plot, title=getattr(scene, "name", None), scene=exact)
    return records


def _exact_solution_of(scene, solver: "Solver"):
    """``scene`` when its exact solution (``scene.analytic``, built for the scene's own config)
    describes what ``solver`` runs, else None with a warning: a Taylor-Green run through
    ``make_solver(viscosity=0.1)`` had the exact curve of the scene's nu = 0.01 drawn beside it
    (kinetic energy 8.43 "exact" against 2.01 simulated, whose exact value is 2.05)."""
    if isinstance(scene, tuple) or getattr(scene, "analytic", None) is None:
        return None
    differ = [f"{k} {getattr(scene.config, k)!r} (this run's solver: {getattr(solver.config, k)!r})"
              for k in ("viscosity", "drag") if getattr(scene.config, k) != getattr(solver.config, k)]
    if differ:
        import warnings

        warnings.warn(f"run: the scene's exact solution is for its own {', '.join(differ)}, so the plot leaves "
                      "its exact kinetic-energy curve out; build the scene with these settings to have it drawn.",
                      stacklevel=3)
        return None
    return scene

"""Training and test data for the correctors, generated in-project by the fine solver.

A :class:`ReferenceCase` names a scene (``"karman"`` by Reynolds number, ``"kolmogorov"`` by
seed), a coarse resolution and a refinement ``factor`` (4 by default). :func:`generate_reference`
runs the Taichi solver on the ``factor``-times finer grid (same physical domain, ``dt`` scaled with
``dx`` so one coarse step = ``factor`` fine steps), discards ``warmup`` coarse-step equivalents, then
records every ``factor``-th fine state *downsampled conservatively* to the coarse grid:

* face velocities: a coarse face is covered by ``factor`` fine faces; its value is their mean
  (the flux through the coarse face is the sum of the fine fluxes), so the coarse divergence of
  a cell is exactly the sum of the fine divergences inside it (zero when the fine field is
  divergence-free and the coarse cell is fluid);
* cell fields (pressure, passive scalars): the mean of the ``factor^2`` fine cells; the pressure
  (the time-centred one of the last step, ``FluidState.p``) also over the ``factor`` fine steps that
  make up the coarse step: the pressure whose gradient gives the coarse step the fine steps'
  impulse, at the coarse step's mid-time.

Coarse fixed faces (walls, obstacle, inflow) get their prescribed coarse values; the coarse start
state is then projected once on the coarse grid (obstacle masks differ slightly between
resolutions). The same admissible form of *every* recorded state,
:meth:`ReferenceTrajectory.coarse_velocity`, is what the corrector training fits and what its
rollout errors are measured against: next to the cylinder the restricted fine field carries flow
through faces the coarse grid holds solid (up to 0.75-0.85 U at n = 16), so with those faces at 0 it has
a relative divergence of 3e-2 RMS over the fluid cells, which no coarse state can match (4 % of
the reference's norm at n = 16, factor 4: nearly all of the plain coarse solver's one-step error,
0.042). :data:`TRAIN_CASES` / :data:`TEST_CASES` are the default splits: Kármán at Re 100 and 200
(train) and held-out Re 150; Kolmogorov seed 0 (train) and held-out seed 1.
Trajectories are cached with :func:`lawful.kernels.checkpoint.save_checkpoint` (atomic) under a
key of the full configuration and the solver's code version (:func:`reference_key`): a cache
written by another solver version, or for another configuration, is never reused.
"""

from __future__ import annotations

import hashlib
import json
import time
import warnings
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from lawful.kernels.errors import InputError, ModelFileError, ShapeError
from lawful.fluids import scenes as _scenes

__all__ = ["ReferenceCase", "ReferenceTrajectory", "downsample_faces", "downsample_cells",
           "coarse_scene", "generate_reference", "load_or_generate", "reference_key", "solver_code_version",
           "TRAIN_CASES", "TEST_CASES"]


@dataclass(frozen=True)
class ReferenceCase:
    """One reference run. ``scene``: "karman" or "kolmogorov"; ``n``: the coarse scene's ``n``
    (Kármán: cells across the channel; Kolmogorov: cells per side); ``factor``: refinement of the
    fine reference; ``steps``: recorded coarse steps; ``warmup``: coarse-step equivalents run
    before recording; ``re`` (Kármán), ``seed`` (Kolmogorov), ``viscosity`` (Kolmogorov),
    ``aspect`` (Kármán channel length / height), ``diameter`` (Kármán cylinder, channel heights)."""

    scene: str
    n: int = 16
    factor: int = 4
    steps: int = 200
    warmup: int = 400
    re: float = 100.0
    seed: int = 0
    viscosity: float = 0.01
    aspect: int = 2
    diameter: float = 0.25

    def __post_init__(self):
        if self.scene not in ("karman", "kolmogorov"):
            raise InputError(f"reference scene {self.scene!r}: use 'karman' or 'kolmogorov'.")
        for name in ("n", "factor", "steps"):
            if int(getattr(self, name)) < 1:
                raise InputError(f"ReferenceCase.{name}={getattr(self, name)!r} must be >= 1.")
        if int(self.warmup) < 0:
            raise InputError(f"ReferenceCase.warmup={self.warmup!r} must be >= 0.")

    @property
    def label(self) -> str:
        """Short name, e.g. ``karman_re150_n32`` / ``kolmogorov_s1_n32``."""
        if self.scene == "karman":
            return f"karman_re{self.re:g}_n{self.n}"
        return f"kolmogorov_s{self.seed}_n{self.n}"


TRAIN_CASES = (ReferenceCase("karman", re=100.0, warmup=256, steps=500),
               ReferenceCase("karman", re=200.0, warmup=256, steps=500),
               ReferenceCase("kolmogorov", n=32, seed=0, warmup=200, steps=150))
TEST_CASES = (ReferenceCase("karman", re=150.0, warmup=256, steps=500),
              ReferenceCase("kolmogorov", n=32, seed=1, warmup=200, steps=500))


def coarse_scene(case: ReferenceCase, n: int | None = None, dtype=torch.float32, device=None):
    """The scene of ``case`` at resolution ``n`` (default: the coarse ``case.n``). Every resolution
    holds the coarse scene's geometry: the cylinder at the coarse grid's centre (the Kármán scene's
    default centre is a quarter of its own cell above the axis, which at 4x put the fine cylinder
    3/16 of a coarse cell lower than the coarse one: a reference of another flow)."""
    n = case.n if n is None else int(n)
    if case.scene == "karman":
        return _scenes.karman(re=case.re, n=n, aspect=case.aspect, diameter=case.diameter, dtype=dtype,
                              device=device, centre_y=_scenes._karman_centre_y(1.0 / case.n))
    return _scenes.kolmogorov(n=n, viscosity=case.viscosity, seed=case.seed, dtype=dtype, device=device)


def downsample_faces(u: torch.Tensor, v: torch.Tensor, factor: int):
    """Conservative restriction of fine face velocities ``u`` ``(F nx+1, F ny)``, ``v``
    ``(F nx, F ny+1)`` to the coarse faces ``(nx+1, ny)``, ``(nx, ny+1)`` (mean of the ``F`` fine
    faces covering each coarse face)."""
    f = int(factor)
    nxf, nyf = v.shape[0], u.shape[1]
    if nxf % f or nyf % f:
        raise ShapeError(f"fine grid {nxf}x{nyf} is not a multiple of the factor {f}.")
    nx, ny = nxf // f, nyf // f
    uc = u[::f].reshape(nx + 1, ny, f).mean(-1)
    vc = v[:, ::f].reshape(nx, f, ny + 1).mean(1)
    return uc.contiguous(), vc.contiguous()


def downsample_cells(c: torch.Tensor, factor: int, fluid: torch.Tensor | None = None) -> torch.Tensor:
    """Mean of ``factor^2`` fine cells: ``(..., F nx, F ny)`` -> ``(..., nx, ny)``; with ``fluid``
    (the fine ``(F nx, F ny)`` bool fluid mask) the mean over the fluid ones (0 where there is
    none), for a field such as the pressure that solid cells hold at 0 without meaning it."""
    f = int(factor)
    *lead, nxf, nyf = c.shape
    if nxf % f or nyf % f:
        raise ShapeError(f"fine grid {nxf}x{nyf} is not a multiple of the factor {f}.")
    if fluid is None:
        return c.reshape(*lead, nxf // f, f, nyf // f, f).mean((-3, -1)).contiguous()
    w = fluid.to(c.dtype)
    total = (c * w).reshape(*lead, nxf // f, f, nyf // f, f).sum((-3, -1))
    count = w.reshape(nxf // f, f, nyf // f, f).sum((-3, -1))
    return (total / count.clamp_min(1.0)).contiguous()


@dataclass
class ReferenceTrajectory:
    """A downsampled fine trajectory on the coarse grid: ``u`` ``(T+1, nx+1, ny)``, ``v``
    ``(T+1, nx, ny+1)``, ``p`` ``(T+1, nx, ny)``, ``scalars`` ``(T+1, ns, nx, ny)`` (float64), at
    coarse steps 0..T; ``fine_wall_s``: wall time of the recorded fine steps (for speed ratios)."""

    case: ReferenceCase
    u: torch.Tensor
    v: torch.Tensor
    p: torch.Tensor
    scalars: torch.Tensor
    fine_wall_s: float
    fine_steps: int

    def initial_state(self, dtype=torch.float32, device=None, index: int = 0):
        """A coarse :class:`~lawful.fluids.scenes.Scene` started from reference state ``index``
        (fixed faces reset, projected once on the coarse grid)."""
        sc = coarse_scene(self.case, dtype=dtype, device=device)
        st = sc.state
        st.u.copy_(self.u[index].to(dtype))
        st.v.copy_(self.v[index].to(dtype))
        st.p.copy_(self.p[index].to(dtype))
        if st.scalars.shape[0] and self.scalars.shape[1] == st.scalars.shape[0]:
            st.scalars.copy_(self.scalars[index].to(dtype))
        solver = sc.make_solver()
        _admissible(solver, st.u, st.v)
        return sc, solver

    def coarse_velocity(self, dtype=torch.float64, device=None):
        """Every reference state as the coarse solver can hold it: ``(u, v)`` ``(T+1, nx+1, ny)``,
        ``(T+1, nx, ny+1)`` in ``dtype``, each with its fixed faces (walls, obstacle, inflow) at their
        prescribed coarse values and projected once on the coarse grid (the velocity
        :meth:`initial_state` starts from, at every index): on the coarse free faces the L2-closest
        divergence-free field to the restricted fine one. The corrector's training targets and
        rollout errors (:mod:`lawful.fluids.corrector_training`). The restricted field itself
        (``self.u``, ``self.v``) is divergence-free on the coarse grid only in cells whose faces
        are all free on both grids: next to an obstacle the fine flow crosses faces the coarse
        mask holds solid. Computed once per dtype and device (kept on the trajectory)."""
        memo = self.__dict__.setdefault("_coarse_velocity", {})
        key = (dtype, str(device))
        if key not in memo:
            solver = coarse_scene(self.case, dtype=dtype, device=device).make_solver()
            us, vs = [], []
            for k in range(self.u.shape[0]):
                # a copy: .to() of a float64 CPU record is the record itself, projected in place
                u = self.u[k].to(dtype=dtype, device=solver.device, copy=True).contiguous()
                v = self.v[k].to(dtype=dtype, device=solver.device, copy=True).contiguous()
                _admissible(solver, u, v)
                us.append(u)
                vs.append(v)
            memo[key] = (torch.stack(us), torch.stack(vs))
        return memo[key]

    def to_checkpoint(self) -> dict:
        """Plain dict for :func:`lawful.kernels.checkpoint.save_checkpoint`."""
        return {"case": asdict(self.case), "u": self.u, "v": self.v, "p": self.p,
                "scalars": self.scalars, "fine_wall_s": self.fine_wall_s, "fine_steps": self.fine_steps}

    @classmethod
    def from_checkpoint(cls, d: dict) -> "ReferenceTrajectory":
        """Inverse of :meth:`to_checkpoint`."""
        return cls(ReferenceCase(**d["case"]), d["u"], d["v"], d["p"], d["scalars"],
                   float(d["fine_wall_s"]), int(d["fine_steps"]))


def _admissible(solver, u: torch.Tensor, v: torch.Tensor) -> None:
    """In place: the fixed faces of ``solver``'s coarse grid set to their prescribed values, then
    one projection (no warm start)."""
    ubc, vbc = solver.ubc, solver.vbc
    u.copy_(ubc[0] * u + (1 - ubc[0]) * ubc[1])
    v.copy_(vbc[0] * v + (1 - vbc[0]) * vbc[1])
    solver.pressure.project(u, v, warm_start=False)


def generate_reference(case: ReferenceCase, dtype=torch.float32, device=None, progress: bool | None = None,
                       fine_dtype=None) -> ReferenceTrajectory:
    """Run the fine solver for ``case`` and return the downsampled :class:`ReferenceTrajectory`.

    The fine run uses ``fine_dtype`` (default ``dtype``); the records are float64 on the CPU.
    ``progress``: a tqdm bar over the fine steps with elapsed time and an estimate of what is
    left (True: always; None, the default: when stderr is a terminal; False: never).
    """
    from tqdm import tqdm

    f = case.factor
    coarse_scene(case, dtype=dtype)     # refuse a coarse grid without the geometry before the fine run
    fine = coarse_scene(case, n=case.n * f, dtype=fine_dtype or dtype, device=device)
    solver = fine.make_solver()
    st = fine.state
    total = (case.warmup + case.steps) * f
    it = tqdm(range(total), desc=f"fine reference {case.label} ({case.n * f} cells across)", unit="step",
              disable=None if progress is None else not progress, mininterval=1.0)
    us, vs, ps, ss = [], [], [], []
    wall = 0.0
    fluid = ~st.solid.cpu()
    # the pressures of the last f fine steps: a coarse step of dt_c = f dt_f applies dt_c grad P,
    # the f fine steps sum dt_f grad p_k, so the coarse step's pressure is their mean (centred at
    # t - dt_c/2, the coarse state's convention, FluidState.p); the last fine step's alone sits at
    # t - dt_c/(2f) (2 % of the pressure's range off in Kolmogorov flow at f = 4, 0.7 % in Kármán)
    recent = deque(maxlen=f)

    def fine_pressure():
        recent.append(downsample_cells(st.p.double().cpu(), f, fluid))   # not the solid cells' zeros

    def record():
        uc, vc = downsample_faces(st.u.double().cpu(), st.v.double().cpu(), f)
        us.append(uc)
        vs.append(vc)
        ps.append(torch.stack(tuple(recent)).mean(0) if recent else downsample_cells(st.p.double().cpu(), f, fluid))
        ss.append(downsample_cells(st.scalars.double().cpu(), f))

    start = case.warmup * f
    for k in it:
        if k == start:
            record()
        t0 = time.perf_counter()
        solver.step(st)
        if k >= start:
            wall += time.perf_counter() - t0
        if k >= start - f:
            fine_pressure()
        if k >= start and (k + 1 - start) % f == 0:
            record()
    return ReferenceTrajectory(case, torch.stack(us), torch.stack(vs), torch.stack(ps), torch.stack(ss),
                               wall, case.steps * f)


_SOLVER_MODULES = ("lawful.fluids.solver", "lawful.fluids.scenes", "lawful.fluids.state",
                   "lawful.fluids.fine_reference", "lawful.kernels.mac_advection", "lawful.kernels.mac_forces",
                   "lawful.kernels.mac_grid", "lawful.kernels.mac_operators", "lawful.kernels.mac_pressure")


def solver_code_version() -> str:
    """A digest of the source of every module the fine reference depends on (solver, scenes,
    state, this module and the MAC kernels) plus the torch version: any change to the solver's
    code changes it, so a cached reference cannot outlive the code that made it."""
    import importlib

    h = hashlib.sha256(f"torch {torch.__version__}".encode())
    for name in _SOLVER_MODULES:
        h.update(name.encode())
        h.update(Path(importlib.import_module(name).__file__).read_bytes())
    return h.hexdigest()[:16]


def reference_key(case: ReferenceCase, dtype=torch.float32) -> dict:
    """Everything a cached reference depends on: the case, the dtype, the fine scene's solver
    configuration and :func:`solver_code_version`. Its JSON digest names the cache file."""
    fine = coarse_scene(case, n=case.n * case.factor, dtype=dtype)
    return {"case": asdict(case), "dtype": str(dtype).replace("torch.", ""),
            "solver_config": {k: repr(v) for k, v in fine.config.as_dict().items()},
            "code_version": solver_code_version()}


def load_or_generate(case: ReferenceCase, cache_dir, dtype=torch.float32, progress: bool | None = None,
                     regenerate: bool = False) -> ReferenceTrajectory:
    """:func:`generate_reference` with an on-disk cache ``cache_dir/<label>_<digest>.pt`` (atomic
    checkpoints). The digest is that of :func:`reference_key` (case, dtype, solver configuration,
    solver code version), and the key is stored in the file and compared on load: a cache written
    by another solver version or configuration is never reused (another file name; a file whose
    stored key differs is regenerated with a warning naming the difference), and a damaged file
    is regenerated. ``cache_dir`` must be a directory (created if missing)."""
    from lawful.kernels.checkpoint import load_checkpoint, save_checkpoint

    cache_dir = Path(cache_dir)
    if cache_dir.exists() and not cache_dir.is_dir():
        raise InputError(f"reference cache_dir={str(cache_dir)!r} is a file, not a directory: pass a directory.")
    cache_dir.mkdir(parents=True, exist_ok=True)
    key = reference_key(case, dtype)
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    path = cache_dir / f"{case.label}_f{case.factor}_{key['dtype']}_{digest}.pt"
    if path.exists() and not regenerate:
        try:
            data = load_checkpoint(path)
            stored = json.loads(data.get("reference_key", "null"))
            if stored == key:
                return ReferenceTrajectory.from_checkpoint(data)
            diff = sorted(k for k in key if (stored or {}).get(k) != key[k])
            warnings.warn(f"reference cache {path} was made with another {', '.join(diff) or 'key'}: regenerating it.",
                          stacklevel=2)
        except (ModelFileError, KeyError, TypeError, ValueError):
            pass
    traj = generate_reference(case, dtype=dtype, progress=progress)
    save_checkpoint(path, dict(traj.to_checkpoint(), reference_key=json.dumps(key, sort_keys=True)))
    return traj

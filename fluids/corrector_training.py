"""Solver-in-the-loop training of the correctors, and rollout evaluation.

The coarse solver (its differentiable twin :class:`~lawful.fluids.torch_step.TorchStep`) is
corrected towards a 4x finer reference downsampled conservatively
(:mod:`lawful.fluids.fine_reference`). Each iteration starts from a reference state ``k0`` of a
training trajectory (fixed faces reset, projected on the coarse grid), unrolls ``unroll`` (8 by
default) corrected coarse steps and minimises

    L = (1/k) sum_j ||u_j - u_ref[k0+j]||^2_free / ||u_ref[k0+j]||^2_free   (+ constraint terms)

by backpropagating through every step (advection, forces, projection) and the network. ``u_ref``
is the reference in the coarse solver's own form, treated as the start state is
(:meth:`~lawful.fluids.fine_reference.ReferenceTrajectory.coarse_velocity`: fixed faces reset,
projected), so the start of a window is the target at its own index; ``_free``: the coarse free
faces, a periodic duplicate counted once. (The targets used to be the raw restricted states: next to the cylinder they carry flow through faces the coarse mask holds solid, and with
those faces at 0 their relative divergence was 3e-2 RMS, 300 times the augmented Lagrangian's
tolerance: the unconstrained variants were rewarded for matching it, and 4 % of the reference's
norm, about all of the plain solver's one-step error, was out of every corrector's reach.)

Variants (``TrainConfig.variant``):

* ``"hard"`` — :class:`~lawful.fluids.correctors.DivergenceFreeCorrector` (curl of psi);
* ``"plain"`` — :class:`~lawful.fluids.correctors.UnconstrainedCorrector`, no constraint;
* ``"soft"`` — unconstrained + :class:`~lawful.kernels.constraints.SoftPenalty` on the relative
  divergence field ``dx div(du) / U`` of every correction (``reduction="mean"``);
* ``"al"`` — unconstrained + :class:`~lawful.kernels.constraints.AugmentedLagrangian` in its
  inequality form, holding the per-step RMS relative divergence of the corrections below
  ``al_tolerance`` (violation ``rms - al_tolerance``, in the fit's units, a fixed-size vector of length
  ``unroll``, as the multipliers need; windows come from grids of different shapes); multipliers
  updated every ``al_update_every`` iterations from the violation averaged over the iterations
  since the last update; the penalty μ grows only while that violation's norm is above
  :func:`al_met_norm` (each step within 10 % of ``al_tolerance``). (Until 2026-12-02 it was an
  equality on the RMS itself, which cannot be negative: the multipliers could only grow, and μ,
  compared between single random windows, grew from 10 to 8.4e7; the kept networks were those of
  iteration 100. Until 2026-12-04 μ had no such threshold and doubled on the windows' noise once
  the constraint held: 10 -> 1.3e6.)
* ``"projected"`` — unconstrained with ``project=True``: each correction is followed by a
  (differentiable) pressure projection, FluidNet-style.

:class:`CorrectorTrainer` shows a tqdm bar, writes atomic checkpoints
(:func:`lawful.kernels.checkpoint.save_checkpoint`: weights, optimiser, iteration, window RNG,
constraint state, history) every ``checkpoint_every`` iterations and resumes from one; the trained
corrector is saved with ``corrector.save(path)`` (the safe model-file format).
:func:`rollout_errors` runs the *Taichi* solver with the corrector in the loop and measures the
error against a reference trajectory.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from lawful.kernels.constraints import AugmentedLagrangian, SoftPenalty
from lawful.kernels.errors import InputError
from lawful.kernels.training_core import Hooks, Loop, LoopConfig, check_grad_clip
from lawful.fluids.corrector_geometry import corner_geometry
from lawful.fluids.correctors import DivergenceFreeCorrector, UnconstrainedCorrector
from lawful.fluids.torch_step import TorchStep, project_differentiable

__all__ = ["TrainConfig", "CorrectorTrainer", "make_corrector", "rollout_errors", "VARIANTS"]

VARIANTS = ("hard", "plain", "soft", "al", "projected")


@dataclass
class TrainConfig:
    """Settings of :class:`CorrectorTrainer` (see the module docstring for the variants).

    ``unroll``: corrected solver steps per window (k >= 1); ``iterations``; ``lr`` (Adam,
    cosine-annealed to ``lr * lr_final_factor``); ``soft_weight``; ``al_penalty`` (initial mu),
    ``al_growth``, ``al_update_every``, ``al_tolerance`` (the RMS relative divergence per step the
    augmented Lagrangian holds the corrections below; μ grows only while the violation's norm
    exceeds :func:`al_met_norm`); ``checkpoint_every``; ``seed`` (window sampling);
    ``grad_clip``; ``validate_every`` / ``validation_steps``: every so many iterations run
    ``validation_steps``-step Taichi rollouts on the *training* trajectories and keep the weights
    with the lowest mean rollout error (restored at the end; 0 = off); ``batch_windows``: windows
    per iteration (the fixed global batch: under torchrun each rank unrolls every
    ``world_size``-th of them, and the weights equal a one-process run's).

    The defaults are the recipe of ``benchmarks/bench_corrector.py`` (Kármán 32x16, held-out
    Re 150: an 86 % error cut for the hard corrector in the committed ``corrector.json``, 71-86 %
    over three seeds). The unroll length matters most: in the runs of 2026-11-22 the same recipe
    reached 65 % with k = 4 (300 iterations), 83 % with k = 8.
    """

    variant: str = "hard"
    unroll: int = 8
    iterations: int = 600
    lr: float = 3e-3
    soft_weight: float = 1.0
    al_penalty: float = 1.0
    al_growth: float = 2.0
    al_update_every: int = 25
    al_tolerance: float = 1e-4
    checkpoint_every: int = 50
    seed: int = 0
    grad_clip: float = 1.0
    lr_final_factor: float = 0.1
    validate_every: int = 100
    validation_steps: int = 500
    batch_windows: int = 1

    def __post_init__(self):
        if self.variant not in VARIANTS:
            raise InputError(f"TrainConfig.variant={self.variant!r}: use one of {VARIANTS}.")
        for name in ("unroll", "iterations", "al_update_every", "checkpoint_every", "batch_windows"):
            if int(getattr(self, name)) < 1:
                raise InputError(f"TrainConfig.{name}={getattr(self, name)!r} must be >= 1.")
        for name in ("lr", "soft_weight", "al_penalty", "al_tolerance"):
            v = float(getattr(self, name))
            if not (math.isfinite(v) and v > 0):
                raise InputError(f"TrainConfig.{name}={getattr(self, name)!r} must be positive.")
        check_grad_clip(0.0 if self.grad_clip is None else self.grad_clip, "TrainConfig.grad_clip")
        f = self.lr_final_factor
        if isinstance(f, bool) or not isinstance(f, (int, float)) or not 0.0 <= f <= 1.0:
            raise InputError(f"TrainConfig.lr_final_factor={f!r} must lie in [0, 1]: the cosine schedule ends at "
                             "lr * lr_final_factor.")
        if isinstance(self.validate_every, bool) or int(self.validate_every) != self.validate_every \
                or self.validate_every < 0:
            raise InputError(f"TrainConfig.validate_every={self.validate_every!r} must be an integer >= 0 (0: off).")
        if self.validate_every and (isinstance(self.validation_steps, bool) or int(self.validation_steps) !=
                                    self.validation_steps or self.validation_steps < 1):
            raise InputError(f"TrainConfig.validation_steps={self.validation_steps!r} must be an integer >= 1 (the "
                             "steps of each validation rollout); to validate never, set validate_every=0.")


#: The augmented Lagrangian's constraint counts as met, and its penalty stops growing, when the norm
#: of its violation (the per-step RMS divergence minus ``al_tolerance``, over the ``unroll`` steps)
#: is at most this fraction of ``al_tolerance * sqrt(unroll)``: each step within 10 % of the
#: tolerance, in the RMS over the steps (:func:`al_met_norm`).
AL_MET_FRACTION = 0.1


def al_met_norm(config: "TrainConfig") -> float:
    """The ``tolerance`` of the trainer's :class:`~lawful.kernels.constraints.AugmentedLagrangian`:
    ``AL_MET_FRACTION * al_tolerance * sqrt(unroll)``. Without it (0, before 2026-12-04) the
    violation averaged over the windows since the last update, hovering about zero once the
    corrections kept to ``al_tolerance`` (the noise of the random windows), rarely shrank 4-fold
    between updates, so the penalty doubled on that noise: 10 -> 1.3e6 in the committed benchmark
    run, the clipped gradient then all constraint."""
    return AL_MET_FRACTION * float(config.al_tolerance) * math.sqrt(int(config.unroll))


def make_corrector(variant: str, dtype=torch.float32, **kwargs):
    """The corrector a variant trains: DivergenceFreeCorrector for "hard", UnconstrainedCorrector
    (``project=True`` for "projected") otherwise. ``kwargs`` go to the constructor."""
    if variant not in VARIANTS:
        raise InputError(f"corrector variant {variant!r}: use one of {VARIANTS}.")
    if variant == "hard":
        return DivergenceFreeCorrector(dtype=dtype, **kwargs)
    kwargs.pop("mean_flow", None)
    return UnconstrainedCorrector(dtype=dtype, project=(variant == "projected"), **kwargs)


@dataclass
class _Case:
    traj: object
    scene: object
    solver: object
    step: TorchStep
    geom: object
    ubc: torch.Tensor
    vbc: torch.Tensor
    reynolds: float | None
    free_u: torch.Tensor = field(default=None)
    free_v: torch.Tensor = field(default=None)
    target_u: torch.Tensor = field(default=None)     # (T+1, nx+1, ny) ReferenceTrajectory.coarse_velocity
    target_v: torch.Tensor = field(default=None)     # (T+1, nx, ny+1)


def _relative_error(u, v, ru, rv, fu, fv):
    num = ((u - ru) * fu).pow(2).sum() + ((v - rv) * fv).pow(2).sum()
    den = (ru * fu).pow(2).sum() + (rv * fv).pow(2).sum()
    return num / den.clamp_min(1e-30)


class CorrectorTrainer:
    """Solver-in-the-loop trainer on the training core (:mod:`lawful.kernels.training_core`).

    ``corrector``: a correctors module (its dtype is the training dtype); ``trajectories``: list of
    :class:`~lawful.fluids.fine_reference.ReferenceTrajectory` (all from one scene family);
    ``config``: :class:`TrainConfig`; ``checkpoint``: path for atomic checkpoints (``None``: none);
    ``resume``: continue from ``checkpoint`` when it exists. Under ``torchrun`` the iterations
    run data-parallel (DDP, gloo on CPU / NCCL on CUDA): each rank unrolls its share of the
    ``batch_windows`` windows, rank 0 writes the checkpoints.
    """

    def __init__(self, corrector, trajectories, config: TrainConfig, checkpoint=None, resume: bool = True):
        if not trajectories:
            raise InputError("CorrectorTrainer needs at least one reference trajectory.")
        self.corrector = corrector
        self.config = config
        self.dtype = corrector.dtype
        self.cases = [self._prepare(t) for t in trajectories]
        for c in self.cases:
            if c.traj.u.shape[0] <= config.unroll:
                raise InputError(f"trajectory {c.traj.case.label} has {c.traj.u.shape[0] - 1} steps; "
                                 f"the unroll length {config.unroll} needs more.")
        self.optimizer = torch.optim.Adam(corrector.parameters(), lr=config.lr)
        self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
            self.optimizer, T_max=int(config.iterations), eta_min=config.lr * config.lr_final_factor)
        self.generator = torch.Generator().manual_seed(int(config.seed))
        self.soft = SoftPenalty(config.soft_weight, reduction="mean") if config.variant == "soft" else None
        self.al = (AugmentedLagrangian(penalty=config.al_penalty, growth=config.al_growth, reduction="sum",
                                       inequality=True, tolerance=al_met_norm(config))
                   if config.variant == "al" else None)
        self.al_since_update = [None, 0]      # summed violation and iterations since the last update
        self.checkpoint = Path(checkpoint) if checkpoint is not None else None
        self.loop = Loop(corrector, self.optimizer, self.scheduler, _CorrectorHooks(self),
                         LoopConfig(units=int(config.iterations), unit="it", checkpoint=checkpoint, resume=resume,
                                    checkpoint_every=int(config.checkpoint_every),
                                    validate_every=int(config.validate_every), grad_clip=float(config.grad_clip or 0.0),
                                    desc=f"train {config.variant}", stop_label="iterations"))
        self.loop.resume()
        # a resumed run given other ``iterations`` anneals to lr_final_factor at its new end: the
        # checkpoint's schedule kept the old length, and past it the cosine climbed back up to lr
        self.scheduler.T_max = int(config.iterations)

    # the loop's counters, under the names this class has always had
    @property
    def iteration(self) -> int:
        """Iterations done (resumed ones included)."""
        return self.loop.done

    @property
    def history(self) -> list[dict]:
        """One dict per iteration: loss, fit, divergence, case, k0, seconds (+ validation_error)."""
        return self.loop.history

    @property
    def best(self) -> dict | None:
        """``{"error", "iteration", "model"}`` of the best validation so far, or None."""
        if self.loop.best_state is None:
            return None
        return {"error": self.loop.best_score, "iteration": self.loop.best_unit, "model": self.loop.best_state}

    def _prepare(self, traj) -> _Case:
        sc, solver = traj.initial_state(dtype=self.dtype)
        step = TorchStep(solver)
        geom = corner_geometry(sc.state.boundary, sc.state.solid, self.corrector.dtype)
        re = traj.case.re if traj.case.scene == "karman" else None
        case = _Case(traj, sc, solver, step, geom, solver.ubc, solver.vbc, re)
        fu, fv = solver.ubc[0].clone(), solver.vbc[0].clone()
        px, py = sc.state.boundary.periodic_axes
        if px:
            fu[-1] = 0.0          # count periodic duplicate faces once
        if py:
            fv[:, -1] = 0.0
        case.free_u, case.free_v = fu, fv
        case.target_u, case.target_v = traj.coarse_velocity(torch.float64, device=fu.device)
        return case

    # -- one window ---------------------------------------------------------------------------
    def _start(self, case: _Case, k0: int):
        t = case.traj
        dt = self.dtype
        with torch.no_grad():
            u = t.u[k0].to(dt).clone()
            v = t.v[k0].to(dt).clone()
            u = case.ubc[0] * u + (1 - case.ubc[0]) * case.ubc[1]
            v = case.vbc[0] * v + (1 - case.vbc[0]) * case.vbc[1]
            u, v = case.step.projector.forward(u.contiguous(), v.contiguous())
            gp = case.step.pressure_gradient(t.p[k0].to(dt))
        return u, v, gp

    def window_loss(self, case: _Case, k0: int):
        """``(loss, fit, divergence)`` of one unrolled window starting at reference index ``k0``;
        ``divergence`` (k,): per-step RMS relative divergence of the corrections."""
        cfg = self.config
        corr = self.corrector
        u, v, gp = self._start(case, k0)
        fit = 0.0
        divs = []
        dfields = []
        dx = case.scene.state.dx
        for j in range(1, cfg.unroll + 1):
            u, v, _, gp = case.step(u, v, None, gp)
            du, dv = corr.correction(u, v, case.geom, dx, reynolds=case.reynolds)
            du, dv = du.to(u.dtype), dv.to(v.dtype)
            scale = max(float(u.detach().abs().max()), float(v.detach().abs().max()), 1e-12)
            d = ((du[1:] - du[:-1]) + (dv[:, 1:] - dv[:, :-1]))[~case.scene.state.solid] / scale
            dfields.append(d)
            # the RMS as a norm: its gradient at a zero correction is 0, where sqrt(mean(d^2))'s
            # was 0/0 (an augmented-Lagrangian run of a zero-output network stopped on a NaN gradient)
            divs.append(torch.linalg.vector_norm(d) / math.sqrt(max(d.numel(), 1)))
            u, v = u + du, v + dv
            if cfg.variant == "projected":
                u, v = project_differentiable(u, v, case.step.projector)
            ru = case.target_u[k0 + j].to(u.dtype)
            rv = case.target_v[k0 + j].to(v.dtype)
            fit = fit + _relative_error(u, v, ru, rv, case.free_u, case.free_v)
        fit = fit / cfg.unroll
        div = torch.stack(divs)
        loss = fit
        if self.soft is not None:
            loss = loss + self.soft.loss(torch.cat(dfields))
        if self.al is not None:
            loss = loss + self.al.loss(self.al_violation(div))
        return loss, fit, div

    def al_violation(self, div: torch.Tensor) -> torch.Tensor:
        """The augmented Lagrangian's violation for per-step RMS divergences ``div``: ``div -
        al_tolerance`` (<= 0 where the corrections keep to the tolerance). Not divided by the
        tolerance: the constraint's gradient then starts at the size of the fit's and grows with
        the penalty, where a violation of order 1 made it about 1000 times the fit's, and one such
        step inflated Adam's second moment enough to stall the fit for hundreds of iterations."""
        return div - float(self.config.al_tolerance)

    # -- the loop -----------------------------------------------------------------------------
    def _pick(self):
        ci = int(torch.randint(len(self.cases), (1,), generator=self.generator))
        case = self.cases[ci]
        k0 = int(torch.randint(case.traj.u.shape[0] - self.config.unroll, (1,), generator=self.generator))
        return case, k0

    def train(self, iterations: int | None = None, progress: bool = True) -> list[dict]:
        """Run up to ``iterations`` (default ``config.iterations``) total iterations; returns the
        history (one dict per iteration: loss, fit, divergence, seconds). At the end (when
        validating) the best validated weights are restored."""
        self.loop.config.progress = bool(progress)
        self.loop.run(int(iterations if iterations is not None else self.config.iterations))
        return self.history

    def validate(self) -> float:
        """Mean relative error of ``validation_steps``-step Taichi rollouts (with the corrector) on
        the training trajectories (rank 0's value on every rank)."""
        from lawful.kernels.distributed import broadcast_float

        errs = []
        for case in self.cases:
            steps = min(self.config.validation_steps, case.traj.u.shape[0] - 1)
            r = rollout_errors(case.traj, self.corrector, steps=steps, dtype=self.dtype)
            errs.append(sum(r["error"]) / len(r["error"]))
        return broadcast_float(sum(errs) / len(errs), self.loop.ctx)

    # -- checkpoints --------------------------------------------------------------------------
    def state(self) -> dict:
        """Everything needed to resume (plain values and tensors)."""
        return self.loop.state()

    def save(self, path) -> None:
        """Atomic checkpoint (tmp + fsync + os.replace); rank 0 only."""
        self.loop.save(path)

    def load(self, path) -> None:
        """Resume from a checkpoint written by :meth:`save`."""
        self.loop.load(path)

    def close(self) -> None:
        """Leave the process group if this trainer joined it (torchrun runs)."""
        self.loop.close()


class _CorrectorHooks(Hooks):
    """CorrectorTrainer's task for the training core: one unit = one iteration over
    ``batch_windows`` windows drawn from the seeded window generator (same draws on every rank)."""

    def __init__(self, trainer: CorrectorTrainer):
        self.tr = trainer

    def loss(self, windows, n_global: int, weight: float):
        tr = self.tr
        total, fits, divs = 0.0, [], []
        for case, k0 in windows:
            loss, fit, div = tr.window_loss(case, k0)
            total = total + loss
            fits.append(fit.detach())
            divs.append(div.detach())
        self._fit = weight * torch.stack(fits).sum() / n_global
        self._div = weight * torch.stack(divs).sum(0) / n_global
        return weight * total / n_global

    def train_unit(self, loop: Loop, unit: int) -> dict:
        tr, cfg = self.tr, self.tr.config
        t0 = time.perf_counter()
        picks = [tr._pick() for _ in range(int(cfg.batch_windows))]
        local, weight = loop.shard(picks)
        share = loop.optimise(local, len(picks), weight)
        if loop.ctx.distributed:
            packed = loop.reduce(torch.cat([share.reshape(1), self._fit.reshape(1), self._div]).double())
            loss, fit, div = packed[0], packed[1], packed[2:]
        else:
            loss, fit, div = share, self._fit, self._div
        iteration = unit + 1
        if tr.al is not None:
            acc = tr.al_since_update
            d = tr.al_violation(div.detach().to(tr.dtype))
            acc[0] = d if acc[0] is None else acc[0] + d
            acc[1] += 1
            if iteration % cfg.al_update_every == 0:
                # the mean over the windows since the last update: one random window's violation
                # against the previous one's grew mu on noise
                tr.al.update(acc[0] / acc[1])
                tr.al_since_update = [None, 0]
        case, k0 = picks[0]
        return {"iteration": iteration, "loss": float(loss), "fit": float(fit), "divergence": float(div.max()),
                "case": case.traj.case.label, "k0": k0, "seconds": time.perf_counter() - t0}

    def validate(self, loop: Loop, unit: int):
        err = self.tr.validate()
        return err, {"validation_error": err}

    def state(self, loop: Loop) -> dict:
        tr = self.tr
        al = None
        if tr.al is not None:
            al = {"penalty": tr.al.penalty, "last_norm": tr.al.last_norm,
                  "iterations": tr.al.iterations, "multipliers": tr.al.multipliers,
                  "since_update": list(tr.al_since_update)}
        return {"iteration": loop.done, "generator": tr.generator.get_state(), "al": al,
                "config": asdict(tr.config), "data": self._data_identity(), "network": self._network()}

    def identity(self):
        return {"data": self._data_identity(), "config": asdict(self.tr.config), "network": self._network()}

    def _network(self) -> dict:
        """The corrector being trained, for the resume check: its class, dtype and configuration
        (hidden channels, layers, ...). Another --dtype resumed float32 weights and Adam state
        in a float64 run without a word; another --hidden ended in a raw load_state_dict error."""
        from lawful.kernels.precision import dtype_name

        c = self.tr.corrector
        return {"class": type(c).__name__, "dtype": dtype_name(c.dtype),
                **{k: v for k, v in sorted(c.config.items()) if isinstance(v, (int, float, str, bool))}}

    def _data_identity(self) -> list:
        """What the training data is, for the resume check: each trajectory's case label, its
        (steps, ny, nx) shape and a checksum of its last velocity field."""
        out = []
        for c in self.tr.cases:
            u = c.traj.u
            out.append([c.traj.case.label, list(u.shape), float(u[-1].double().abs().sum())])
        return out

    def load_state(self, loop: Loop, st: dict) -> None:
        tr = self.tr
        tr.generator.set_state(st["generator"])
        if tr.al is not None and st.get("al"):
            a = st["al"]
            tr.al.penalty = a["penalty"]
            tr.al.last_norm = a["last_norm"]
            tr.al.iterations = a["iterations"]
            tr.al.multipliers = a["multipliers"]
            tr.al_since_update = list(a.get("since_update") or [None, 0])

    #: Settings that may change between a run and its resumption (a longer run, saved more often).
    RESUMABLE_CHANGES = ("iterations", "checkpoint_every")

    def check_resume(self, st: dict, path) -> None:
        """Refuse a checkpoint made with other settings or other training data: resuming it would
        silently continue a different optimisation (only ``iterations`` and ``checkpoint_every``
        may change)."""
        saved = st.get("config", {})
        variant = saved.get("variant")
        if variant != self.tr.config.variant:
            raise InputError(f"checkpoint {path} is for variant {variant!r}, not {self.tr.config.variant!r}: "
                             "use another checkpoint path.")
        if variant == "al" and "al_tolerance" not in saved:
            raise InputError(f"checkpoint {path} is of the augmented-Lagrangian variant before 358bdb8, whose "
                             "constraint was an equality on the RMS divergence (its multipliers could only grow): "
                             "resuming it would continue that run under the inequality form; delete it (or use "
                             "another --out) and train afresh.")
        now = asdict(self.tr.config)
        changed = {k: (saved[k], now[k]) for k in now
                   if k in saved and k not in self.RESUMABLE_CHANGES and saved[k] != now[k]}
        if changed:
            text = ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in sorted(changed.items()))
            raise InputError(f"checkpoint {path} was made with other settings ({text}): resuming it would continue "
                             "a different training run; use another checkpoint path (or --out), or the same settings.")
        net, mine_net = st.get("network"), self._network()
        if net is not None and net != mine_net:   # older checkpoints record none
            text = ", ".join(f"{k} {net.get(k)!r} -> {mine_net.get(k)!r}"
                             for k in sorted(set(net) | set(mine_net)) if net.get(k) != mine_net.get(k))
            raise InputError(f"checkpoint {path} holds another corrector ({text}): resuming it would continue a "
                             "different network; use another checkpoint path (or --out), or the same network "
                             "and dtype.")
        data = st.get("data")
        if data is not None:
            mine = self._data_identity()
            if [d[:2] for d in data] != [d[:2] for d in mine] or any(
                    abs(a[2] - b[2]) > 1e-6 * max(1.0, abs(b[2])) for a, b in zip(data, mine)):
                raise InputError(f"checkpoint {path} was trained on other reference trajectories "
                                 f"({[d[0] for d in data]}, not {[d[0] for d in mine]}): use another checkpoint "
                                 "path (or --out), or the same training cases.")

    def upgrade(self, st: dict, path) -> dict:
        """A CorrectorTrainer checkpoint from before the training core (iteration, best, history)."""
        import json

        try:
            best = st.get("best")
            return {**st, "done": int(st["iteration"]),
                    "best_score": math.inf if best is None else float(best["error"]),
                    "best_unit": None if best is None else int(best["iteration"]),
                    "best_state": None if best is None else best["model"], "bad_validations": 0,
                    "train_time_s": 0.0, "train_cpu_s": 0.0, "history": json.dumps(list(st["history"]))}
        except (KeyError, TypeError, ValueError):
            raise InputError(f"checkpoint {path} lacks the iteration counters of a corrector checkpoint: delete "
                             "it or use another checkpoint path.") from None

    def postfix(self, row: dict) -> dict:
        return dict(fit=f"{row['fit']:.3e}", div=f"{row['divergence']:.1e}")


# --------------------------------------------------------------------------------------------
# evaluation in the Taichi loop
# --------------------------------------------------------------------------------------------

def rollout_errors(traj, corrector=None, steps: int | None = None, dtype=torch.float32, start: int = 0,
                   callback=None):
    """Run the Taichi solver from reference state ``start`` for ``steps`` steps with ``corrector``
    in the loop (``None``: the plain coarse solver). Returns a dict with per-step lists
    ``error`` (relative L2 error of the free-face velocity against the reference in the coarse
    solver's form, :meth:`~lawful.fluids.fine_reference.ReferenceTrajectory.coarse_velocity`, as
    in the training loss; a periodic duplicate face counted once), ``div_max_rel``
    (the in-loop metric after the corrector), ``wall_s`` (step wall time), and ``steps``.
    ``callback(state, record)`` is called after every step (as in :func:`lawful.fluids.run`)."""
    from lawful.fluids.solver import run

    n = traj.u.shape[0] - 1 - start if steps is None else int(steps)
    if start + n > traj.u.shape[0] - 1:
        raise InputError(f"rollout of {n} steps from {start} exceeds the reference ({traj.u.shape[0] - 1} steps).")
    sc, solver = traj.initial_state(dtype=dtype, index=start)
    # the rollout runs at the reference's Reynolds number and gives the corrector back as it came:
    # it used to keep the last rollout's, which the trainer then saved into the corrector file
    saved_re = getattr(corrector, "reynolds", None)
    if corrector is not None and traj.case.scene == "karman":
        corrector.reynolds = traj.case.re
    fu, fv = solver.ubc[0].double().clone(), solver.vbc[0].double().clone()   # .double() of float64 is the same tensor
    px, py = sc.state.boundary.periodic_axes
    if px:
        fu[-1] = 0.0
    if py:
        fv[:, -1] = 0.0
    errors, div, wall = [], [], []
    ref_u, ref_v = traj.coarse_velocity(torch.float64, device=fu.device)

    def cb(state, rec):
        k = state.step
        ru, rv = ref_u[start + k], ref_v[start + k]
        errors.append(float(_relative_error(state.u.double(), state.v.double(), ru, rv, fu, fv).sqrt()))
        div.append(rec["div_max_rel"])
        wall.append(rec["wall_s"])
        if callback is not None:
            callback(state, rec)

    state0_step = sc.state.step
    sc.state.step = 0
    try:
        run(sc, n, corrector=corrector, solver=solver, callback=cb, keep="last")   # every step via cb
    finally:
        if corrector is not None and traj.case.scene == "karman":
            corrector.reynolds = saved_re
    sc.state.step = state0_step + n
    return {"error": errors, "div_max_rel": div, "wall_s": wall, "steps": n}

"""The one training loop of lawful: force fields, HNN/LNN/baselines and fluid correctors use it.

A trainer describes *what* to learn through :class:`Hooks` (the loss of this rank's share of a
batch, one unit of work — an epoch or an optimiser step —, validation, and its own resumable
state) and *how* to run through :class:`LoopConfig`; :class:`Loop` does the rest, once for all:

* resume from an atomic checkpoint (:func:`lawful.kernels.checkpoint.save_checkpoint`) written
  every ``checkpoint_every`` units, after checking that it belongs to this model and data
  (:meth:`Hooks.check_resume`); a resumed run ends with the weights of an uninterrupted one;
* best weights (lowest validation score) kept and restored at the end, early stopping after
  ``patience`` validations without improvement, a learning-rate floor, a time budget;
* the learning-rate schedule (``ReduceLROnPlateau`` steps on the validation score, any other
  scheduler once per unit), gradient clipping, an exponential moving average of the weights
  (``ema_decay``: validated, kept as best and handed back in place of the raw weights);
* a NaN/inf loss or gradient stops the run with :class:`~lawful.kernels.errors.NumericalError`
  before the optimiser step (the weights stay finite), never a silently destroyed model;
* a tqdm bar and a JSON-lines log; a KeyboardInterrupt (Ctrl-C, or SIGTERM delivered as one by
  the ``lawful`` command) closes both and propagates: the last checkpoint holds the last
  finished unit, and the same call resumes from it;
* data parallelism (:mod:`lawful.kernels.distributed`): under ``torchrun`` the model is wrapped
  in ``DistributedDataParallel``, :meth:`Loop.shard` gives this rank its share of a fixed global
  batch, :meth:`Loop.optimise` scales the share so the averaged gradient is the gradient of the
  global-batch loss (the same weights as one process), and rank 0 alone writes checkpoints, logs
  and the progress bar. Every rank reads the same checkpoint to resume.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from lawful.kernels import distributed as dist
from lawful.kernels.errors import InputError, ModelFileError, NumericalError

__all__ = ["LoopConfig", "Hooks", "Loop", "check_ema_decay"]


@dataclass
class LoopConfig:
    """How :class:`Loop` runs.

    units: total units of work (epochs or optimiser steps) a full run does.
    unit: their name in the progress bar ("epoch", "step", "it").
    checkpoint: file for atomic checkpoints (None: none); resume: continue from it if it exists.
    checkpoint_every: units between checkpoints, and after the last unit of a call however it
    ends (all units done or a stop rule; not after an exception: the last checkpoint stays).
    validate_every: units between validations (and after the last unit); 0: never validate.
    patience: stop after this many validations without improvement (None: never).
    min_lr: stop when the learning rate falls below it (None: never).
    max_time: stop when the accumulated training time exceeds it, seconds (None: never).
    restore_best: load the best validated weights at the end.
    grad_clip: clip the gradient norm to this value (0: no clipping).
    progress, desc: the tqdm bar (rank 0 only) and its label; log: JSON-lines file (rank 0 only; a
    resumed run rewrites it from the checkpoint's history, then goes on).
    stop_label: the stop reason when all units ran ("epochs", "iterations", ...).
    find_unused_parameters: tell DDP that a batch may leave some parameters without gradient
    (e.g. a species absent from a rank's share); False saves a graph traversal per step.
    ema_decay: keep an exponential moving average of the trained parameters, updated after every
    optimiser step as ``a <- d a + (1 - d) w`` with ``d = min(ema_decay, (1 + n) / (10 + n))``
    (``n`` steps averaged so far, so the first steps are not dominated by the starting weights).
    Validation scores the average, the best weights are the average's, and the run ends with
    the average (or the best one) loaded; the optimiser steps go on from the raw weights, which
    the checkpoint keeps beside the average. 0 (default): off; 0.99-0.999 per step is usual.
    """

    units: int
    unit: str = "epoch"
    checkpoint: str | os.PathLike | None = None
    resume: bool = True
    checkpoint_every: int = 1
    validate_every: int = 1
    patience: int | None = None
    min_lr: float | None = None
    max_time: float | None = None
    restore_best: bool = True
    grad_clip: float = 0.0
    progress: bool = False
    desc: str = "train"
    log: str | os.PathLike | None = None
    stop_label: str = "units"
    find_unused_parameters: bool = True
    ema_decay: float = 0.0

    def __post_init__(self):
        for name in ("units", "checkpoint_every"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise InputError(f"LoopConfig.{name}={v!r} must be a positive integer.")
        if not isinstance(self.validate_every, int) or self.validate_every < 0:
            raise InputError(f"LoopConfig.validate_every={self.validate_every!r} must be an integer >= 0 "
                             "(0: never validate).")
        check_grad_clip(self.grad_clip, "LoopConfig.grad_clip")
        check_ema_decay(self.ema_decay)


def check_grad_clip(value, name: str = "grad_clip") -> float:
    """``value`` as a gradient-norm clip (:attr:`LoopConfig.grad_clip`), or InputError. A negative
    one is refused: ``torch.nn.utils.clip_grad_norm_`` scales by ``max_norm / norm`` capped at 1,
    so a negative ``max_norm`` flips every gradient and the optimiser climbs the loss, silently."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value >= 0):
        raise InputError(f"{name}={value!r} must be a gradient norm >= 0 (0: no clipping); a negative one would "
                         "flip the gradients' sign.")
    return float(value)


def check_ema_decay(value) -> float:
    """``value`` as the weight average's decay per optimiser step (:attr:`LoopConfig.ema_decay`),
    or InputError naming the range."""
    if not (isinstance(value, (int, float)) and not isinstance(value, bool) and 0.0 <= value < 1.0):
        raise InputError(f"ema_decay={value!r} must be a number in [0, 1): the weight the running average keeps "
                         "at each optimiser step (0: no average; 0.99-0.999 is usual).")
    return float(value)


class Hooks:
    """What a trainer tells :class:`Loop`. Override :meth:`loss` and :meth:`train_unit`; the rest
    have defaults (no validation, no extra state)."""

    def loss(self, *args) -> torch.Tensor:
        """This rank's share of the loss of one global batch (0-d tensor): the shares of all ranks
        sum to the global-batch loss (single-process: the whole loss). Called through
        :meth:`Loop.optimise`, inside DDP's forward."""
        raise NotImplementedError

    def train_unit(self, loop: "Loop", unit: int) -> dict | None:
        """Run unit ``unit`` (0-based; an epoch or one step) with :meth:`Loop.optimise`; return the
        history row (plain values) or None for no row."""
        raise NotImplementedError

    def validate(self, loop: "Loop", unit: int) -> tuple[float, dict] | None:
        """``(score, entries)``: the validation score (lower is better; must agree on every rank)
        and entries added to the unit's history row. None: nothing validated."""
        return None

    def state(self, loop: "Loop") -> dict:
        """Extra plain values/tensors saved in the checkpoint (RNG states, multipliers, ids)."""
        return {}

    def identity(self):
        """What the training data and settings are (a plain, picklable value: fingerprints,
        options), compared across the ranks of a data-parallel run before anything is trained
        (:func:`lawful.kernels.distributed.check_same`). None (default): not compared."""
        return None

    def load_state(self, loop: "Loop", saved: dict) -> None:
        """Restore what :meth:`state` saved."""

    def check_resume(self, saved: dict, path: Path) -> None:
        """Raise (ModelFileError / InputError) when ``saved`` belongs to another model or data."""

    def upgrade(self, saved: dict, path: Path) -> dict:
        """A checkpoint written before the training core, in the core's keys (default: as is)."""
        return saved

    def postfix(self, row: dict) -> dict:
        """Live metrics shown on the progress bar for a history row."""
        return {}


class Loop:
    """The training loop. ``model``: the module trained (its ``state_dict`` is checkpointed and
    its parameters are the ones DDP reduces); ``optimizer``; ``scheduler`` (or None); ``hooks``;
    ``config``; ``ctx``: a :class:`~lawful.kernels.distributed.DistContext` (default: the one
    torchrun's environment gives, joined on first use).

    State after :meth:`run`: ``done`` units, ``history`` rows (each with the ``lr`` the unit
    trained at, unless the hooks set their own), ``best_score`` / ``best_unit`` /
    ``best_state``, ``bad_validations``, ``train_time_s`` / ``train_cpu_s`` (accumulated over
    resumed runs), ``stop_reason``; with ``config.ema_decay``, ``ema`` (parameter name -> the
    average) and ``ema_steps``.
    """

    def __init__(self, model: torch.nn.Module, optimizer, scheduler, hooks: Hooks, config: LoopConfig,
                 ctx: dist.DistContext | None = None):
        self.model = model
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.hooks = hooks
        self.config = config
        self.ctx = ctx if ctx is not None else dist.context(_device(model))
        self.checkpoint = Path(config.checkpoint) if config.checkpoint is not None else None
        self.done = 0
        self.history: list[dict] = []
        self.best_score = math.inf
        self.best_unit: int | None = None
        self.best_state: dict | None = None
        self.bad_validations = 0
        self.train_time_s = 0.0
        self.train_cpu_s = 0.0
        self.stop_reason: str | None = None
        self.comm_s = 0.0          # seconds spent in explicit collectives of this call (benchmarks)
        self.ema: dict[str, torch.Tensor] | None = None
        self.ema_steps = 0
        self._raw_at_end: dict[str, torch.Tensor] | None = None   # a later run() steps on from these
        self._module = None
        identity = hooks.identity()
        if identity is not None:   # before a checkpoint is read or a step taken, on every rank alike
            dist.check_same(identity, "training data or settings", self.ctx)

    # -- checkpoints --------------------------------------------------------------------------
    def state(self) -> dict:
        """Everything a resume needs: weights, optimiser, scheduler, counters, best weights,
        history (JSON text) and the hooks' own state."""
        return {"done": self.done, "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
                "best_score": self.best_score, "best_unit": self.best_unit, "best_state": self.best_state,
                "bad_validations": self.bad_validations, "train_time_s": self.train_time_s,
                "train_cpu_s": self.train_cpu_s, "history": json.dumps(self.history),
                "ema": self.ema, "ema_steps": self.ema_steps, **self.hooks.state(self)}

    def save(self, path=None) -> None:
        """Write the checkpoint atomically (rank 0 only; other ranks return at once)."""
        from lawful.kernels.checkpoint import save_checkpoint

        target = Path(path) if path is not None else self.checkpoint
        if target is not None and self.ctx.is_main:
            save_checkpoint(target, self.state())

    def load(self, path) -> None:
        """Restore a checkpoint written by :meth:`save` (every rank reads the same file)."""
        from lawful.kernels.checkpoint import load_checkpoint

        path = Path(path)
        saved = load_checkpoint(path, map_location=_device(self.model))
        self.hooks.check_resume(saved, path)
        if "done" not in saved:
            saved = self.hooks.upgrade(saved, path)
        self._check_dtypes(saved.get("model"), path)
        self.model.load_state_dict(saved["model"])
        self.optimizer.load_state_dict(saved["optimizer"])
        if self.scheduler is not None and saved.get("scheduler") is not None:
            self.scheduler.load_state_dict(saved["scheduler"])
        self.done = int(saved["done"])
        self.best_score = float(saved["best_score"])
        self.best_unit = saved.get("best_unit")
        self.best_state = saved.get("best_state")
        self.bad_validations = int(saved["bad_validations"])
        self.train_time_s = float(saved["train_time_s"])
        self.train_cpu_s = float(saved["train_cpu_s"])
        self.history = json.loads(saved["history"])
        self.ema = saved.get("ema")
        self.ema_steps = int(saved.get("ema_steps") or 0)
        if self.config.ema_decay and self.ema is None and self.done > 0:
            raise ModelFileError(f"checkpoint {str(path)!r} was written without a weight average (ema_decay=0) and "
                                 f"this run asks for ema_decay={self.config.ema_decay}: resuming would average only "
                                 "the remaining steps. Resume with the checkpoint's ema_decay, or start afresh "
                                 "(delete the checkpoint or do not resume).")
        self.hooks.load_state(self, saved)

    def _check_dtypes(self, state, path: Path) -> None:
        """ModelFileError when the checkpoint's floating weights are of another dtype than the model's:
        ``load_state_dict`` (and the optimiser's ``load_state_dict``) cast them without a word, so a
        float64 run went on in float32 (or the reverse) with rounded weights and moments, a run of
        neither precision. Checked on the tensors themselves, so also for checkpoints of hooks that
        record no dtype (and train() checkpoints written before they did)."""
        if not isinstance(state, dict):
            return
        mine = self.model.state_dict()
        for name, t in state.items():
            own = mine.get(name)
            if (isinstance(t, torch.Tensor) and isinstance(own, torch.Tensor) and t.is_floating_point()
                    and own.is_floating_point() and t.dtype != own.dtype):
                have = str(t.dtype).removeprefix("torch.")
                want = str(own.dtype).removeprefix("torch.")
                raise ModelFileError(
                    f"checkpoint {str(path)!r} holds {have} weights ({name!r}) but the model is {want}: resuming "
                    "would cast the weights and optimiser state and go on as a run of neither precision. Build "
                    f"the model in {have} to resume, or start afresh (delete the checkpoint or do not resume).")

    def resume(self) -> bool:
        """Load ``config.checkpoint`` when ``config.resume`` and it exists; True if it did.

        Data-parallel: every rank calls it, and the ranks must resume alike (all from the same
        checkpoint, or none): a rank that found no checkpoint on its node's disk (or a stale one)
        trained other epochs' batches from a fresh optimiser beside its peers, and rank 0 wrote
        checkpoints of that mixture -- a later rerun loaded one as a finished run, with no error.
        InputError on every rank, before any step, when they differ."""
        resumed = False
        if self.checkpoint is not None and self.config.resume and self.checkpoint.exists():
            self.load(self.checkpoint)
            resumed = True
        if self.ctx.distributed:
            from lawful.kernels.modelfile import tensors_digest

            state = None
            if resumed:
                state = tensors_digest({k: v.detach().cpu() for k, v in self.model.state_dict().items()})[:16]
            dist.check_same({"resumed": resumed, "done": self.done, "weights": state},
                            "checkpoints to resume from", self.ctx,
                            fix="every rank must resume from the same checkpoint file (put it on a file system every "
                                "rank reads, or copy rank 0's to every node), or none (delete it on every node, or "
                                "pass resume=False), else the ranks train different epochs from different states "
                                "and rank 0 saves a model of neither run.")
        return resumed

    # -- data parallelism ---------------------------------------------------------------------
    def shard(self, items: list) -> tuple[list, float]:
        """This rank's share of the global batch ``items`` and its weight (1.0, or 0.0 for a rank
        left without items; see :func:`lawful.kernels.distributed.shard`)."""
        return dist.shard(items, self.ctx)

    def optimise(self, *args) -> torch.Tensor:
        """One optimiser step on ``hooks.loss(*args)`` (through DDP when distributed); returns
        this rank's detached loss share. Sum the shares and :meth:`reduce` them for the global loss."""
        if self._module is None:
            self._module = dist.wrap(self.model, self.hooks.loss, self.ctx, self.config.find_unused_parameters)
        self.optimizer.zero_grad(set_to_none=True)
        share = self._module(*args)
        if not self.ctx.distributed:
            self._refuse_nonfinite(share, "loss")
        # DDP averages gradients over ranks; the shares sum to the global loss, so scale by the
        # world size to get the gradient of the global loss (exact: world sizes are integers).
        (share * self.ctx.world_size if self.ctx.distributed else share).backward()
        # after DDP's all-reduce the gradients are the same on every rank, so every rank stops
        # together (a check of one rank's loss share alone would leave its peers waiting)
        grads = [p.grad for p in self.model.parameters() if p.grad is not None]
        if grads:
            self._refuse_nonfinite(torch.stack([torch.isfinite(g).all() for g in grads]).all(), "gradient")
        if self.config.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        self.optimizer.step()
        self._update_ema()
        return share.detach()

    # -- the weight average -------------------------------------------------------------------
    def _averaged(self) -> list[tuple[str, torch.Tensor]]:
        return [(n, p) for n, p in self.model.named_parameters() if p.requires_grad and p.is_floating_point()]

    def _update_ema(self) -> None:
        """Fold the weights after an optimiser step into the average (``config.ema_decay``)."""
        decay = self.config.ema_decay
        if not decay:
            return
        with torch.no_grad():
            if self.ema is None:
                self.ema = {n: p.detach().clone() for n, p in self._averaged()}
            d = min(float(decay), (1.0 + self.ema_steps) / (10.0 + self.ema_steps))
            for n, p in self._averaged():
                self.ema[n].mul_(d).add_(p.detach(), alpha=1.0 - d)
        self.ema_steps += 1

    def _load_ema(self) -> dict[str, torch.Tensor] | None:
        """Put the average into the model's parameters; returns the raw weights it replaced
        (None without an average)."""
        if self.ema is None:
            return None
        raw = {}
        with torch.no_grad():
            for n, p in self._averaged():
                raw[n] = p.detach().clone()
                p.copy_(self.ema[n])
        return raw

    def _restore(self, raw: dict[str, torch.Tensor] | None) -> None:
        if raw is None:
            return
        with torch.no_grad():
            for n, p in self._averaged():
                p.copy_(raw[n])

    def _refuse_nonfinite(self, value: torch.Tensor, what: str) -> None:
        """NumericalError when ``value`` (the loss, or a finite-gradient flag) is NaN/inf/False:
        the optimiser step is not taken, so the model keeps the last finite weights."""
        ok = bool(value.detach().all()) if value.dtype == torch.bool else bool(torch.isfinite(value.detach()).all())
        if not ok:
            raise NumericalError(
                f"the training {what} became NaN/inf at {self.config.unit} {self.done + 1}; training "
                "stopped before the optimiser step, so the model keeps the weights of the step before. "
                "Check the data for NaN/inf values, or lower the learning rate.")

    def reduce(self, t: torch.Tensor) -> torch.Tensor:
        """Sum of ``t`` over ranks (timed into ``comm_s``)."""
        if not self.ctx.distributed:
            return t
        t0 = time.perf_counter()
        out = dist.all_reduce_sum(t, self.ctx)
        self.comm_s += time.perf_counter() - t0
        return out

    # -- the loop -----------------------------------------------------------------------------
    def _stop(self) -> str | None:
        cfg = self.config
        if cfg.patience is not None and self.bad_validations >= cfg.patience:
            return "early_stopping"
        if cfg.min_lr is not None and self.optimizer.param_groups[0]["lr"] < cfg.min_lr:
            return "min_lr"
        if cfg.max_time is not None:
            elapsed = self.train_time_s
            if self.ctx.distributed:
                # rank 0's clock decides, so every rank stops after the same unit: rank 0 alone
                # writes checkpoints, its peers count that wait as training time and used to stop
                # a unit early, leaving rank 0's next gradient all-reduce unmatched (a gloo
                # "collective mismatch" abort, or a hang)
                device = "cuda" if self.ctx.backend == "nccl" else "cpu"
                elapsed = dist.broadcast_float(elapsed, self.ctx, device=device)
            if elapsed >= cfg.max_time:
                return "max_time"
        return None

    def _validate(self, unit: int, row: dict | None) -> None:
        raw = self._load_ema()          # the average is what is scored and kept as best
        try:
            self._validate_loaded(unit, row)
        finally:
            self._restore(raw)

    def _validate_loaded(self, unit: int, row: dict | None) -> None:
        res = self.hooks.validate(self, unit)
        if res is None:
            return
        score, entries = res
        score = float(score)
        if not math.isfinite(score):
            # a NaN compares False with everything: the best weights and the early stop would stop
            # moving without a word, and the run would end 'complete' on its last good epoch
            raise NumericalError(
                f"the validation score became {score} at {self.config.unit} {unit + 1}: the model's predictions "
                "on the validation data are not finite (weights diverged: lower the learning rate; or a "
                "non-finite validation label). Training stopped; the checkpoint holds the last unit saved.")
        if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            self.scheduler.step(score)
        if row is not None:
            row.update(entries)
        if score < self.best_score:
            self.best_score = score
            self.best_unit = unit + 1
            self.best_state = {k: t.detach().clone() for k, t in self.model.state_dict().items()}
            self.bad_validations = 0
        else:
            self.bad_validations += 1

    def run(self, units: int | None = None) -> str:
        """Run until ``units`` (default ``config.units``) units are done or a stop rule fires;
        returns the stop reason (also ``self.stop_reason``)."""
        cfg = self.config
        total = int(cfg.units if units is None else units)
        main = self.ctx.is_main
        # the log is written afresh: from unit 0 a new run (appending put a fresh run's epochs 0, 1,
        # ... after an earlier run's, one learning curve of two runs), and a resumed run's from the
        # checkpoint's history first (appended, it lost the row of a unit whose checkpoint was
        # written but whose row was not -- a Ctrl-C held during the save is delivered right after
        # it, before the row: units 0, 1, 3, 4, 5 -- and repeated the rows of units run again after
        # the last checkpoint, checkpoint_every > 1)
        log_f = (open(cfg.log, "w", buffering=1) if (cfg.log is not None and main) else None)
        if log_f is not None and self.done > 0:
            for old_row in self.history:
                log_f.write(json.dumps(old_row) + "\n")
        bar = None
        if cfg.progress and main:
            from tqdm.auto import tqdm

            bar = tqdm(total=total, initial=min(self.done, total), desc=cfg.desc, unit=cfg.unit,
                       dynamic_ncols=True)
        plateau = isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
        self.stop_reason = cfg.stop_label
        self.comm_s = 0.0
        if self._module is None:      # wrap (DDP: broadcast rank 0's weights) before the clock runs
            self._module = dist.wrap(self.model, self.hooks.loss, self.ctx, cfg.find_unused_parameters)
        saved = self.done      # what the checkpoint holds as far as this call knows
        self._restore(self._raw_at_end)     # an earlier call ended with the average (or best) loaded
        self._raw_at_end = None
        try:
            while self.done < total:
                reason = self._stop()
                if reason is not None:
                    self.stop_reason = reason
                    break
                t0, c0 = time.perf_counter(), time.process_time()
                unit = self.done
                lr_used = self.optimizer.param_groups[0]["lr"]   # the unit's, before the scheduler steps
                row = self.hooks.train_unit(self, unit)
                if self.scheduler is not None and not plateau:
                    self.scheduler.step()
                self.done += 1
                if cfg.validate_every and (self.done % cfg.validate_every == 0 or self.done == total):
                    self._validate(unit, row)
                self.train_time_s += time.perf_counter() - t0
                self.train_cpu_s += time.process_time() - c0
                if row is not None:
                    # the rate this unit's steps took (after the scheduler stepped, the row named the
                    # next unit's: step 1 of a cosine schedule from 1e-3 read 8.5e-4, the last one 0)
                    row.setdefault("lr", lr_used)
                    self.history.append(row)
                if self.checkpoint is not None and (self.done % cfg.checkpoint_every == 0 or self.done == total):
                    self.save()
                    saved = self.done
                if log_f is not None and row is not None:
                    log_f.write(json.dumps(row) + "\n")
                if bar is not None:
                    bar.update(1)
                    if row is not None:
                        bar.set_postfix(**self.hooks.postfix(row))
            # a stop rule (early stopping, min_lr, max_time) ended the call between checkpoints
            # (checkpoint_every > 1): its last unit was not saved, and a resumed run redid it
            if self.checkpoint is not None and self.done != saved:
                self.save()
        finally:
            if bar is not None:
                bar.close()
            if log_f is not None:
                log_f.close()
        self._raw_at_end = {n: p.detach().clone() for n, p in self._averaged()} if self.ema is not None else None
        if cfg.restore_best and self.best_state is not None:
            self.model.load_state_dict(self.best_state)
        else:
            self._load_ema()
        return self.stop_reason

    def close(self) -> None:
        """Drop the DDP wrapper and leave the process group if this loop's context joined it
        (:meth:`DistContext.close`: every rank, after a clean finish). A later :meth:`run` wraps
        the model again."""
        self._module = None
        self.ctx.close()


def _device(model: torch.nn.Module) -> torch.device:
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")

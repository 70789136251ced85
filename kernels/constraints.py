"""Constraint strategies for training: a soft penalty and the augmented Lagrangian method.

Both act on a *violation* ``v`` of an equality constraint ``c(θ) = 0`` — a tensor of any shape
whose entries should be zero (the change of a conserved energy along a learned vector field, the
divergence of a predicted velocity field, a mass imbalance...). They know nothing about force
fields or fluids, so both training loops use the same implementation:

* :class:`SoftPenalty` adds ``weight * ||v||²`` to the loss. At any finite weight the optimum of
  ``f + weight ||c||²`` violates the constraint by ``O(1/weight)``.
* :class:`AugmentedLagrangian` (the method of multipliers, Hestenes 1969 / Powell 1969) adds
  ``λ·v + (μ/2) ||v||²`` and, between inner minimisations, updates ``λ ← λ + μ v`` and grows ``μ``
  when the violation did not shrink enough. The multipliers absorb the constraint force, so the
  violation goes to zero at a *finite* penalty μ. With ``inequality=True`` it takes constraints
  ``c(θ) ≤ 0`` instead (Rockafellar's form): a quantity that cannot be negative, such as an RMS
  divergence, is held below a tolerance (``v = rms - tol``); as an equality its multipliers
  could only grow.

``v`` may be passed as a tensor, or as a callable that returns it (called with the extra
positional/keyword arguments given to :meth:`loss` / :meth:`update`). The violation keeps its
dtype and device; multipliers are created on first use with the violation's shape, dtype and device.
"""

from __future__ import annotations

import math
from typing import Callable, Union

import torch

from lawful.kernels.errors import InputError, NumericalError, ShapeError

__all__ = ["SoftPenalty", "AugmentedLagrangian", "resolve_violation"]

Violation = Union[torch.Tensor, Callable[..., torch.Tensor]]


def resolve_violation(violation: Violation, *args, **kwargs) -> torch.Tensor:
    """Return the violation tensor: ``violation`` itself, or ``violation(*args, **kwargs)``.

    Raises :class:`InputError` when it is neither a floating tensor nor a callable returning one,
    and :class:`NumericalError` when it holds NaN or inf.
    """
    v = violation(*args, **kwargs) if callable(violation) and not isinstance(violation, torch.Tensor) \
        else violation
    if not isinstance(v, torch.Tensor):
        raise InputError(
            f"a constraint violation must be a torch tensor (or a callable returning one), got "
            f"{type(v).__name__}: return e.g. torch.as_tensor(value, dtype=torch.float64).")
    if not v.is_floating_point():
        raise InputError(f"the constraint violation has dtype {v.dtype}; it must be a floating "
                         "tensor (float32 or float64).")
    if not bool(torch.isfinite(v.detach()).all()):
        raise NumericalError("the constraint violation holds NaN or inf values: the model or the "
                             "constraint function blew up; lower the learning rate or check inputs.")
    return v


def positive_finite(name: str, value) -> float:
    """``value`` as a float when it is a positive finite number (not a bool), else
    :class:`InputError` naming ``name``: the check of every weight, rate and step size given to
    the constraints and the dynamics training."""
    try:
        out = float(value)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{name} must be a positive number, got {value!r}.") from exc
    if isinstance(value, bool) or not math.isfinite(out) or out <= 0.0:
        raise InputError(f"{name} must be a positive finite number, got {value!r}.")
    return out


class SoftPenalty:
    """Quadratic penalty ``weight * ||v||²`` on a constraint violation ``v`` (any shape).

    ``weight`` (λ) is a positive float. The penalty only *encourages* the constraint: at the
    optimum of ``f + λ||c||²`` the violation is ``O(1/λ)``, never zero at finite λ.
    ``reduction="sum"`` (default) uses the squared 2-norm; ``"mean"`` divides by ``v.numel()``
    (useful when the number of constraints changes with the batch size).
    """

    def __init__(self, weight: float, reduction: str = "sum"):
        self.weight = positive_finite("SoftPenalty weight", weight)
        if reduction not in ("sum", "mean"):
            raise InputError(f"reduction must be 'sum' or 'mean', got {reduction!r}.")
        self.reduction = reduction

    def loss(self, violation: Violation, *args, **kwargs) -> torch.Tensor:
        """The penalty term (0-d tensor, differentiable) for a violation tensor or callable."""
        v = resolve_violation(violation, *args, **kwargs)
        sq = (v * v).sum()
        if self.reduction == "mean":
            sq = sq / max(v.numel(), 1)
        return self.weight * sq

    __call__ = loss

    def update(self, violation: Violation = None, *args, **kwargs) -> dict:
        """No-op kept for a common interface with :class:`AugmentedLagrangian`; returns the state."""
        return self.state()

    def state(self) -> dict:
        """Plain-python description of the strategy (for logs and benchmark JSON)."""
        return {"strategy": "soft_penalty", "weight": self.weight, "reduction": self.reduction}

    def __repr__(self) -> str:
        return f"SoftPenalty(weight={self.weight:g}, reduction={self.reduction!r})"


class AugmentedLagrangian:
    """The method of multipliers for equality constraints ``c(θ) = 0``, or with
    ``inequality=True`` for constraints ``c(θ) ≤ 0``.

    loss(v) = λ·v + (μ/2)||v||²   (λ: multipliers, same shape as ``v``; μ: penalty)
    inequality: loss(v) = Σ (max(0, λ + μ v)² - λ²) / (2μ), update λ ← max(0, λ + μ v); a
    satisfied constraint (v < -λ/μ) adds nothing, its multiplier falls back to 0, and the norm
    that decides μ's growth is that of ``max(v, -λ/μ)`` (0 when every constraint holds with room).

    Use it in an outer loop: minimise ``f + al.loss(v)`` over the model (an "inner" solve, a few
    hundred optimiser steps or an LBFGS run), then call ``al.update(v)`` with the violation at the
    new parameters. ``update`` sets ``λ ← λ + μ v`` and, when ``||v||`` did not fall below
    ``shrink * ||v_previous||`` (nor to ``tolerance``), multiplies μ by ``growth`` (capped at
    ``max_penalty``).

    Parameters: ``penalty`` initial μ > 0; ``growth`` ≥ 1; ``shrink`` in (0, 1];
    ``max_penalty`` ≥ ``penalty``; ``tolerance`` ≥ 0 (default 0): a violation norm at or below it
    counts as met and μ does not grow (without one, a violation that settled at a small floor, the
    noise of a stochastic inner solve, doubled μ at every update: 1 -> 256 in 15 updates of a toy
    already at its constraint, stiffening the inner solve for nothing); ``inequality`` (default False); ``reduction`` "sum" (default) or "mean" — with "mean" the loss is
    ``(λ·v + μ/2 ||v||²) / n`` and the update stays ``λ ← λ + μ v`` (the same fixed point).
    The multipliers are created on the first call, with the violation's shape, dtype and device;
    a later violation of another shape raises :class:`ShapeError`.
    """

    def __init__(self, penalty: float = 10.0, growth: float = 2.0, shrink: float = 0.25,
                 max_penalty: float = 1e8, reduction: str = "sum", inequality: bool = False,
                 tolerance: float = 0.0):
        self.inequality = bool(inequality)
        self.tolerance = float(tolerance)
        if not math.isfinite(self.tolerance) or self.tolerance < 0.0:
            raise InputError(f"AugmentedLagrangian tolerance must be a finite number >= 0 (the violation norm "
                             f"that counts as met), got {tolerance!r}.")
        self.penalty = positive_finite("AugmentedLagrangian penalty", penalty)
        self.initial_penalty = self.penalty
        self.growth = positive_finite("AugmentedLagrangian growth", growth)
        if self.growth < 1.0:
            raise InputError(f"growth must be >= 1 (the penalty never shrinks), got {growth!r}.")
        self.shrink = positive_finite("AugmentedLagrangian shrink", shrink)
        if self.shrink > 1.0:
            raise InputError(f"shrink must lie in (0, 1], got {shrink!r}.")
        self.max_penalty = positive_finite("AugmentedLagrangian max_penalty", max_penalty)
        if self.max_penalty < self.penalty:
            raise InputError(f"max_penalty ({max_penalty!r}) is below the initial penalty "
                             f"({penalty!r}); raise max_penalty.")
        if reduction not in ("sum", "mean"):
            raise InputError(f"reduction must be 'sum' or 'mean', got {reduction!r}.")
        self.reduction = reduction
        self.multipliers: torch.Tensor | None = None
        self.last_norm: float | None = None
        self.iterations = 0

    def _check_shape(self, v: torch.Tensor) -> None:
        if self.multipliers is not None and self.multipliers.shape != v.shape:
            raise ShapeError(
                f"the violation has shape {tuple(v.shape)} but the multipliers were created with "
                f"shape {tuple(self.multipliers.shape)}: the augmented Lagrangian needs the same "
                "constraints at every call (use full-batch constraints, or reduce the violation to "
                "a fixed-size vector, e.g. one entry per constraint).")

    def _lam(self, v: torch.Tensor) -> torch.Tensor:
        self._check_shape(v)
        if self.multipliers is None:
            return torch.zeros_like(v, memory_format=torch.contiguous_format).detach()
        return self.multipliers.to(dtype=v.dtype, device=v.device)

    def loss(self, violation: Violation, *args, **kwargs) -> torch.Tensor:
        """λ·v + (μ/2)||v||² (0-d tensor, differentiable in ``v``; λ, μ are constants here)."""
        v = resolve_violation(violation, *args, **kwargs)
        lam = self._lam(v)
        if self.inequality:
            out = (torch.clamp(lam + self.penalty * v, min=0.0) ** 2 - lam * lam).sum() / (2.0 * self.penalty)
        else:
            out = (lam * v).sum() + 0.5 * self.penalty * (v * v).sum()
        if self.reduction == "mean":
            out = out / max(v.numel(), 1)
        return out

    __call__ = loss

    @torch.no_grad()
    def update(self, violation: Violation, *args, **kwargs) -> dict:
        """Multiplier step λ ← λ + μ v (inequality: clamped at 0), then grow μ if the violation's
        norm did not shrink enough; returns state."""
        v = resolve_violation(violation, *args, **kwargs).detach()
        lam = self._lam(v)
        if self.inequality:
            norm = float(torch.linalg.vector_norm(torch.maximum(v, -lam / self.penalty)))
            self.multipliers = torch.clamp(lam + self.penalty * v, min=0.0)
        else:
            norm = float(torch.linalg.vector_norm(v))
            self.multipliers = lam + self.penalty * v
        if self.last_norm is not None and norm > self.shrink * self.last_norm and norm > self.tolerance:
            self.penalty = min(self.penalty * self.growth, self.max_penalty)
        self.last_norm = norm
        self.iterations += 1
        return self.state()

    def reset(self) -> None:
        """Back to the state the constructor left: no multipliers, no violation history, and the
        penalty at its initial value (``initial_penalty``; updates may have grown it). Call it
        before reusing the object for a new problem — a reused object would otherwise start from
        the previous run's multipliers and penalty. (``train_dynamics`` calls it at its start.)"""
        self.multipliers = None
        self.last_norm = None
        self.iterations = 0
        self.penalty = self.initial_penalty

    def state(self) -> dict:
        """Plain-python description (penalty, last violation norm, multiplier norm, iterations)."""
        lam_norm = None if self.multipliers is None else float(torch.linalg.vector_norm(self.multipliers))
        return {"strategy": "augmented_lagrangian", "inequality": self.inequality, "penalty": self.penalty,
                "tolerance": self.tolerance,
                "violation_norm": self.last_norm, "multiplier_norm": lam_norm,
                "iterations": self.iterations, "reduction": self.reduction}

    def __repr__(self) -> str:
        return (f"AugmentedLagrangian(penalty={self.penalty:g}, growth={self.growth:g}, "
                f"shrink={self.shrink:g}, inequality={self.inequality}, iterations={self.iterations})")

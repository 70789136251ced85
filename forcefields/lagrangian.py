"""Lagrangian neural networks (Cranmer, Greydanus, Hoyer et al. 2020).

A network learns one scalar L_θ(q, q̇). The Euler–Lagrange equations give the accelerations

    q̈ = (∂²L/∂q̇²)⁻¹ (∂L/∂q − (∂²L/∂q̇∂q) q̇),

computed per sample with ``torch.func`` (vmap over the batch of jacrev(grad(L)), the Hessian
of L in (q, q̇)) and solved
with a linear solve — never a pseudo-inverse. The mass matrix ∂²L/∂q̇² is checked first: if it is
singular or ill-conditioned (condition number above ``max_condition``), a
:class:`lawful.kernels.NumericalError` names the sample and the condition number.

The flow conserves the energy E = q̇·∂L/∂q̇ − L (exposed as :meth:`LagrangianNN.energy`).
Units follow the data; float64 by default.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch.func import grad, hessian, jacrev, vmap

from lawful.forcefields.derivative_mlp import ScalarFunctionModel, build_mlp, per_sample_scalar
from lawful.kernels.errors import InputError, NumericalError

__all__ = ["LagrangianNN"]


class LagrangianNN(ScalarFunctionModel):
    """A learned Lagrangian L_θ(q, q̇) (an MLP on the concatenated state).

    Parameters: ``dim`` degrees of freedom (q, q̇ are ``(batch, dim)``); ``hidden``, ``layers``,
    ``activation`` MLP size (smooth activations, default softplus as in the LNN paper);
    ``max_condition`` the largest accepted condition number of ∂²L/∂q̇² (default 1e12 in float64,
    1e6 in float32); ``kinetic_prior`` k ≥ 0 adds a fixed ½k|q̇|² to the MLP (L stays a general
    learned function, but the mass matrix starts positive definite instead of nearly singular,
    which is what makes training from a random initialisation stable; 0 = the bare MLP);
    dtype (float64 default) and device.

    ``lagrangian(q, q̇)`` -> ``(batch,)``; ``accelerations(q, q̇)`` -> ``(batch, dim)``;
    ``energy(q, q̇)`` -> ``(batch,)``; ``mass_matrix(q, q̇)`` -> ``(batch, dim, dim)``;
    ``time_derivative(q, q̇)`` -> ``(q̇, q̈)`` for :func:`lawful.forcefields.integrate`
    (not separable: use "rk4" or "implicit_midpoint").
    ``LagrangianNN.from_function(L)`` wraps an analytic ``L(q, q̇) -> (batch,)``.
    ``save(path)`` writes a network (every constructor argument, kinetic_prior included, and the
    weights) to a ``.lawful`` file; :func:`lawful.forcefields.load_dynamics_model` reads it back.
    """

    separable = False

    state_names = ("q", "qdot")

    def __init__(self, dim: int = 2, hidden: int = 128, layers: int = 2,
                 activation: str = "softplus", max_condition: float | None = None,
                 kinetic_prior: float = 0.0, dtype=None, device=None):
        super().__init__()
        if not isinstance(dim, int) or isinstance(dim, bool) or dim < 1:
            raise InputError(f"dim must be a positive integer, got {dim!r}.")
        self.dim = dim
        self._function = None
        self.net = build_mlp(2 * dim, 1, hidden, layers, activation, dtype, device)
        self.max_condition = self._max_condition(max_condition)
        if (not isinstance(kinetic_prior, (int, float)) or isinstance(kinetic_prior, bool)
                or not kinetic_prior >= 0):
            raise InputError(f"kinetic_prior must be a number >= 0, got {kinetic_prior!r}.")
        self.kinetic_prior = float(kinetic_prior)
        self._arguments = dict(dim=dim, hidden=hidden, layers=layers, activation=activation,
                               max_condition=self.max_condition, kinetic_prior=self.kinetic_prior)

    @staticmethod
    def _max_condition(value):
        if value is None:
            return None
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 1:
            raise InputError(f"max_condition must be a number > 1, got {value!r}.")
        return float(value)

    @classmethod
    def from_function(cls, lagrangian: Callable, dim: int | None = None,
                      max_condition: float | None = None) -> "LagrangianNN":
        """Wrap a known ``lagrangian(q, q̇) -> (batch,)`` written with torch ops.

        The function is called on single samples of shape ``(1, dim)`` inside ``torch.func``
        transforms, so it must be a pure torch function (no in-place ops on its inputs, no
        ``.item()``).
        """
        obj = cls._wrapping(lagrangian, dim, "L(q, qdot)")
        obj.net = None
        obj.kinetic_prior = 0.0
        obj.max_condition = cls._max_condition(max_condition)
        return obj

    # ------------------------------------------------------------------ scalar functions
    def _l(self, q, v):
        if self._function is not None:
            return per_sample_scalar(self._function(q, v), q.shape[0], "Lagrangian")
        out = self.net(torch.cat([q, v], dim=-1))[:, 0]
        if self.kinetic_prior:
            out = out + 0.5 * self.kinetic_prior * (v * v).sum(-1)
        return out

    def _l1(self, q1, v1):
        """L for one sample: q1, v1 of shape (dim,) -> 0-d."""
        return self._l(q1.unsqueeze(0), v1.unsqueeze(0))[0]

    def lagrangian(self, q, qdot) -> torch.Tensor:
        """L(q, q̇), shape ``(batch,)``."""
        q, qdot = self._check(q, qdot)
        return self._l(q, qdot)

    forward = lagrangian

    # ------------------------------------------------------------------ derivatives
    def _lx(self, x):
        """L for one sample of the concatenated state x = (q, q̇), shape (2·dim,) -> 0-d."""
        d = x.shape[0] // 2
        return self._l(x[:d].unsqueeze(0), x[d:].unsqueeze(0))[0]

    def _grad_with_aux(self, x):
        g = grad(self._lx)(x)
        return g, g

    def _terms(self, q, v):
        """∂L/∂q (B, d), the mass matrix ∂²L/∂q̇² (B, d, d) and ∂²L/∂q̇∂q (B, d, d), from one
        per-sample Hessian of L over (q, q̇): vmap(jacrev(grad(L)))."""
        d = q.shape[1]
        hess, g = vmap(jacrev(self._grad_with_aux, has_aux=True))(torch.cat([q, v], dim=-1))
        return g[:, :d], hess[:, d:, d:], hess[:, d:, :d]

    def _condition_check(self, m):
        limit = self.max_condition
        if limit is None:
            limit = 1e12 if m.dtype == torch.float64 else 1e6
        mm = m.detach()
        if not bool(torch.isfinite(mm).all()):
            raise NumericalError("the mass matrix ∂²L/∂q̇² holds NaN/inf values; check the inputs "
                                 "and the Lagrangian.")
        eig = torch.linalg.eigvalsh(0.5 * (mm + mm.transpose(-1, -2))).abs()   # (B, d)
        big = eig.max(-1).values
        small = eig.min(-1).values
        cond = torch.where(small > 0, big / small.clamp_min(torch.finfo(mm.dtype).tiny),
                           torch.full_like(big, float("inf")))
        worst = int(torch.argmax(cond))
        if not bool(cond[worst] <= limit):
            raise NumericalError(
                f"the mass matrix ∂²L/∂q̇² is singular or ill-conditioned at sample {worst}: "
                f"condition number {float(cond[worst]):.3e} > max_condition {limit:.1e} "
                f"(eigenvalues {eig[worst].tolist()}). The Lagrangian does not determine the "
                "accelerations there: L must be strictly convex in q̇ (a kinetic term "
                "½ q̇ᵀM(q)q̇ with M positive definite); check the state, or retrain/regularise.")

    def mass_matrix(self, q, qdot) -> torch.Tensor:
        """∂²L/∂q̇², shape ``(batch, dim, dim)``."""
        q, qdot = self._check(q, qdot)
        return vmap(hessian(self._l1, argnums=1))(q, qdot)

    def accelerations(self, q, qdot, create_graph: bool = False, check: bool = True) -> torch.Tensor:
        """q̈ from the Euler–Lagrange equations, shape ``(batch, dim)``.

        Raises :class:`NumericalError` when ∂²L/∂q̇² is singular/ill-conditioned at any sample.
        ``create_graph=True`` keeps the result differentiable w.r.t. the parameters (training);
        otherwise it is detached. ``check=False`` skips input validation (hot loops).
        """
        if check:
            q, qdot = self._check(q, qdot)
        with torch.enable_grad():
            dl_dq, m, c = self._terms(q, qdot)
            self._condition_check(m)
            rhs = dl_dq - (c @ qdot.unsqueeze(-1)).squeeze(-1)
            qddot = torch.linalg.solve(m, rhs)
        return qddot if create_graph else qddot.detach()

    def time_derivative(self, q, qdot, create_graph: bool = False, check: bool = True):
        """``(q̇, q̈)`` — the first-order form used by :func:`lawful.forcefields.integrate`."""
        if check:
            q, qdot = self._check(q, qdot)
        return qdot, self.accelerations(q, qdot, create_graph=create_graph, check=False)

    def energy(self, q, qdot) -> torch.Tensor:
        """E = q̇·∂L/∂q̇ − L, the quantity the Euler–Lagrange flow conserves, ``(batch,)``."""
        q, qdot = self._check(q, qdot)
        dl_dv = vmap(grad(self._l1, argnums=1))(q, qdot)
        return (qdot * dl_dv).sum(-1) - self._l(q, qdot)

    def extra_repr(self) -> str:
        kind = "function" if self._function is not None else "mlp"
        return f"dim={self.dim}, kind={kind}"

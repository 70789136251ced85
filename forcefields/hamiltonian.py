"""Hamiltonian neural networks (Greydanus, Dzamba & Yosinski 2019).

A network learns one scalar H_θ(q, p); the dynamics are its symplectic gradient

    dq/dt = ∂H/∂p,    dp/dt = −∂H/∂q,

taken by autograd, so the flow conserves H_θ exactly and is symplectic. Two forms:

* separable, H = T_θ(p) + V_θ(q) (or T = |p|²/2m with a known mass): explicit symplectic
  integrators (leapfrog, Yoshida) can step it, and ``velocity(p)`` / ``force(q)`` are exposed;
* general, H = H_θ(q, p): step it with the implicit midpoint rule (symplectic) or RK4.

Units are whatever the data use (the model is unit-agnostic); dtype float64 by default.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from lawful.forcefields.derivative_mlp import ScalarFunctionModel, build_mlp, check_pair, per_sample_scalar
from lawful.kernels.errors import InputError

__all__ = ["HamiltonianNN", "symplectic_gradient"]


def _grads(fn, xs, create_graph: bool):
    """Gradients of ``fn(*xs).sum()`` w.r.t. each of ``xs`` (zeros where unused)."""
    with torch.enable_grad():
        xs_in = [x if x.requires_grad else x.detach().requires_grad_(True) for x in xs]
        out = fn(*xs_in)
        grads = torch.autograd.grad(out.sum(), xs_in, create_graph=create_graph, allow_unused=True)
    res = []
    for x, g in zip(xs_in, grads):
        g = torch.zeros_like(x) if g is None else g
        res.append(g if create_graph else g.detach())
    return res


def symplectic_gradient(hamiltonian: Callable, q: torch.Tensor, p: torch.Tensor,
                        create_graph: bool = False):
    """``(∂H/∂p, −∂H/∂q)`` of a scalar-per-sample function ``hamiltonian(q, p) -> (batch,)``.

    q, p: ``(batch, dim)``. With ``create_graph=True`` the result is differentiable (training).
    """
    dh_dq, dh_dp = _grads(hamiltonian, (q, p), create_graph)
    return dh_dp, -dh_dq


class HamiltonianNN(ScalarFunctionModel):
    """A learned Hamiltonian H_θ(q, p) whose symplectic gradient is the vector field.

    Parameters
    ----------
    dim: degrees of freedom (q and p are ``(batch, dim)``).
    separable: ``True`` -> H = T_θ(p) + V_θ(q) (two MLPs), steppable by leapfrog / Yoshida;
        ``False`` -> one MLP H_θ(q, p), step it with "implicit_midpoint" or "rk4".
    hidden, layers, activation: MLP size (smooth activations: "tanh", "softplus", "silu", "gelu").
    mass: separable only — a positive float fixes T = |p|²/(2·mass) instead of learning T_θ.
    dtype, device: parameters' dtype (float64 default) and device.

    ``hamiltonian(q, p)`` returns ``(batch,)``; ``time_derivative(q, p)`` returns ``(q̇, ṗ)``.
    ``HamiltonianNN.from_function(H)`` wraps a known analytic H(q, p) -> (batch,) in the same
    interface, to check the machinery (and the integrators) against exact answers.
    ``save(path)`` writes a network (every constructor argument, mass included, and the weights)
    to a ``.lawful`` file; :func:`lawful.forcefields.load_dynamics_model` reads it back.
    """

    def __init__(self, dim: int = 1, separable: bool = True, hidden: int = 200, layers: int = 2,
                 activation: str = "tanh", mass: float | None = None, dtype=None, device=None):
        super().__init__()
        if not isinstance(dim, int) or isinstance(dim, bool) or dim < 1:
            raise InputError(f"dim must be a positive integer, got {dim!r}.")
        self.dim = dim
        self.separable = bool(separable)
        self._function = None
        self.mass = None
        self.kinetic_net = self.potential_net = self.net = None
        if self.separable:
            if mass is not None:
                # mass=inf passed: T = 0 and q̇ = 0, a frozen system without a word
                if (not isinstance(mass, (int, float)) or isinstance(mass, bool) or not mass > 0
                        or not math.isfinite(mass)):
                    raise InputError(f"mass must be a positive number, finite (or None to learn "
                                     f"T(p)), got {mass!r}.")
                self.mass = float(mass)
            else:
                self.kinetic_net = build_mlp(dim, 1, hidden, layers, activation, dtype, device)
            self.potential_net = build_mlp(dim, 1, hidden, layers, activation, dtype, device)
        else:
            if mass is not None:
                raise InputError("mass= only applies to separable=True (H = |p|²/2m + V(q)); drop "
                                 "it or set separable=True.")
            self.net = build_mlp(2 * dim, 1, hidden, layers, activation, dtype, device)
        self._arguments = dict(dim=dim, separable=self.separable, hidden=hidden, layers=layers,
                               activation=activation, mass=self.mass)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_function(cls, hamiltonian: Callable, dim: int | None = None,
                      separable: bool = False) -> "HamiltonianNN":
        """Wrap a known ``hamiltonian(q, p) -> (batch,)`` (torch ops, differentiable).

        ``dim`` (optional) fixes the number of degrees of freedom for input checks (without it,
        a 1-D state longer than 1 is refused as ambiguous). Declare ``separable=True`` only if
        H = T(p) + V(q) truly holds: the explicit symplectic integrators evaluate ∂H/∂p at q = 0
        and ∂H/∂q at p = 0, so :func:`~lawful.forcefields.integrate` first checks the claim at the
        initial states (:meth:`check_separable`) and refuses a non-separable H.
        """
        obj = cls._wrapping(hamiltonian, dim, "H(q, p)")
        obj.separable = bool(separable)
        obj.mass = None
        obj.kinetic_net = obj.potential_net = obj.net = None
        return obj

    # ------------------------------------------------------------------ energies
    def _h(self, q, p):
        if self._function is not None:
            return per_sample_scalar(self._function(q, p), q.shape[0], "Hamiltonian")
        if self.separable:
            return self._t(p) + self._v(q)
        return self.net(torch.cat([q, p], dim=-1))[:, 0]

    def _t(self, p):
        if self.mass is not None:
            return 0.5 * (p * p).sum(-1) / self.mass
        return self.kinetic_net(p)[:, 0]

    def _v(self, q):
        return self.potential_net(q)[:, 0]

    def hamiltonian(self, q, p) -> torch.Tensor:
        """H(q, p), shape ``(batch,)``. q, p: ``(batch, dim)`` (or ``(dim,)`` for one state)."""
        q, p = self._check(q, p)
        return self._h(q, p)

    forward = hamiltonian

    def kinetic(self, p) -> torch.Tensor:
        """T(p), ``(batch,)`` — separable networks only."""
        self._need_separable_net("kinetic")
        p, _ = check_pair(p, p, self.dim, ("p", "p"), dtype=self.dtype)
        return self._t(p)

    def potential(self, q) -> torch.Tensor:
        """V(q), ``(batch,)`` — separable networks only."""
        self._need_separable_net("potential")
        q, _ = check_pair(q, q, self.dim, ("q", "q"), dtype=self.dtype)
        return self._v(q)

    def _need_separable_net(self, what):
        if not self.separable or self._function is not None:
            raise InputError(f"{what}() needs a separable HamiltonianNN (separable=True, not a "
                             "wrapped function); use hamiltonian(q, p) instead.")

    def check_separable(self, q, p) -> None:
        """Refuse (:class:`InputError`) a wrapped H declared ``separable=True`` that is not
        T(p) + V(q) at the states ``q, p`` (``(batch, dim)``) and at the same states shifted by
        one in every coordinate: ∂H/∂p must not change when q is set to 0, nor ∂H/∂q when p is
        (to 1e-8 of the gradient's largest entry in float64, 1e-4 in float32: a relative test,
        whatever H's units). Networks are separable by construction:
        nothing to check. :func:`~lawful.forcefields.integrate` calls it before "leapfrog" /
        "yoshida4", which would otherwise integrate another system without a word."""
        if self._function is None or not self.separable:
            return
        q, p = self._check(q, p)
        q = torch.cat([q, q + 1.0])
        p = torch.cat([p, p + 1.0])
        dh_dq, dh_dp = _grads(self._h, (q, p), False)
        (dh_dp0,) = _grads(lambda x: self._h(torch.zeros_like(q), x), (p,), False)
        (dh_dq0,) = _grads(lambda x: self._h(x, torch.zeros_like(p)), (q,), False)
        tol = 1e-8 if q.dtype == torch.float64 else 1e-4
        for what, full, split, at in (("∂H/∂p", dh_dp, dh_dp0, "q = 0"),
                                      ("∂H/∂q", dh_dq, dh_dq0, "p = 0")):
            ok = torch.isfinite(full) & torch.isfinite(split)       # skip points off H's domain
            gap = float((full - split)[ok].abs().max()) if bool(ok.any()) else 0.0
            # relative to the gradient's own size: ``1 + max|full|`` was an absolute 1e-8 in H's
            # units, so an H in small units (|∂H| ~ 1e-9, SI energies of molecules) passed
            scale = float(full[ok].abs().max()) if bool(ok.any()) else 0.0
            if gap > tol * scale:
                raise InputError(
                    f"this H was declared separable=True but is not H = T(p) + V(q): {what} "
                    f"changes by {gap:.3e} when evaluated at {at} instead of the state, so "
                    "leapfrog/yoshida4 would integrate another system. Wrap it with "
                    "separable=False and use method='implicit_midpoint' (symplectic for any H) "
                    "or 'rk4'.")

    # ------------------------------------------------------------------ dynamics
    def time_derivative(self, q, p, create_graph: bool = False, check: bool = True):
        """The symplectic gradient ``(q̇, ṗ) = (∂H/∂p, −∂H/∂q)``, each ``(batch, dim)``.

        ``create_graph=True`` keeps the graph (for training on derivative targets).
        ``check=False`` skips input validation (hot loops that validated the state already).
        """
        if check:
            q, p = self._check(q, p)
        return symplectic_gradient(self._h, q, p, create_graph)

    def velocity(self, p, create_graph: bool = False, check: bool = True) -> torch.Tensor:
        """q̇ = ∂T/∂p, ``(batch, dim)`` — for separable H (depends on p only)."""
        if not self.separable:
            raise InputError("velocity(p) needs a separable Hamiltonian; use time_derivative(q, p).")
        if check:
            p, _ = self._check(p, p)
        if self.mass is not None:
            return p / self.mass
        if self._function is not None:
            (g,) = _grads(lambda x: self._h(torch.zeros_like(x), x), (p,), create_graph)
        else:
            (g,) = _grads(self._t, (p,), create_graph)
        return g

    def force(self, q, create_graph: bool = False, check: bool = True) -> torch.Tensor:
        """ṗ = −∂V/∂q, ``(batch, dim)`` — for separable H (depends on q only)."""
        if not self.separable:
            raise InputError("force(q) needs a separable Hamiltonian; use time_derivative(q, p).")
        if check:
            q, _ = self._check(q, q)
        if self._function is not None:
            (g,) = _grads(lambda x: self._h(x, torch.zeros_like(x)), (q,), create_graph)
        else:
            (g,) = _grads(self._v, (q,), create_graph)
        return -g

    def extra_repr(self) -> str:
        kind = "function" if self._function is not None else "mlp"
        return f"dim={self.dim}, separable={self.separable}, kind={kind}, mass={self.mass}"

"""Time integrators for learned (and analytic) dynamics, batched over initial conditions.

``integrate(model, (x0, y0), dt, steps, method)`` steps the first-order system

    ẋ = f_x(x, y),    ẏ = f_y(x, y)

given by ``model.time_derivative(x, y) -> (ẋ, ẏ)`` (HamiltonianNN: x = q, y = p; LagrangianNN:
x = q, y = q̇; DerivativeMLP: either), or by a plain callable with that signature.

Methods
-------
"leapfrog"           kick-drift-kick velocity Verlet, 2nd order, symplectic, explicit; needs a
                     separable model (``model.separable`` and ``velocity(p)`` / ``force(q)``).
"yoshida4"           Yoshida's (1990) triple-jump composition of leapfrog, 4th order, symplectic.
"implicit_midpoint"  x₁ = x₀ + h f((x₀ + x₁)/2), 2nd order, symplectic for *any* Hamiltonian
                     (separable or not) and exactly conserves every quadratic invariant. Solved by
                     fixed-point iteration to the relative ``tol`` (per sample, q and p apart:
                     no unit enters) with at most ``max_iter`` iterations; raises
                     :class:`ConvergenceError` otherwise.
"rk4"                classic Runge-Kutta, 4th order, not symplectic: the control whose energy drifts.

A model with parameters is integrated in its dtype (the initial state is converted to it); a
wrapped function or plain callable in the dtype of the initial state (use float64 for
conservation checks).
"""

from __future__ import annotations

import inspect
import math
from typing import Callable

import torch

from lawful.forcefields.derivative_mlp import check_pair
from lawful.kernels.errors import ConvergenceError, InputError, NumericalError, ShapeError

__all__ = ["integrate", "METHODS", "energy_drift"]

METHODS = ("leapfrog", "yoshida4", "implicit_midpoint", "rk4")

_CBRT2 = 2.0 ** (1.0 / 3.0)
_YOSHIDA_W1 = 1.0 / (2.0 - _CBRT2)
_YOSHIDA_W0 = -_CBRT2 / (2.0 - _CBRT2)
_YOSHIDA = (_YOSHIDA_W1, _YOSHIDA_W0, _YOSHIDA_W1)


def _accepts_check(fn) -> bool:
    try:
        return "check" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def _unchecked(fn):
    """``fn`` with input validation switched off when it supports ``check=`` (the integrator has
    validated the state once; per-step checks would cost more than the step)."""
    if _accepts_check(fn):
        return lambda *a: fn(*a, check=False)
    return fn


def _vector_field(model) -> Callable:
    if hasattr(model, "time_derivative"):
        return _unchecked(model.time_derivative)
    if callable(model):
        return model
    raise InputError(f"integrate needs a model with time_derivative(x, y) -> (ẋ, ẏ) or such a "
                     f"callable, got {type(model).__name__}.")


def _placement(model):
    """The dtype and device of a model's parameters ((None, None) for a wrapped function or a
    plain callable: the state's own are used)."""
    params = getattr(model, "parameters", None)
    if callable(params):
        for prm in params():
            return prm.dtype, prm.device
    return None, None


def _state(state0, model):
    """The initial state as two ``(batch, dim)`` tensors, validated once by the models' own rule
    (:func:`~lawful.forcefields.derivative_mlp.check_pair`: a ``(dim,)`` tensor is one state) and
    converted to the model's dtype and device when it has parameters."""
    if not isinstance(state0, (tuple, list)) or len(state0) != 2:
        raise InputError("state0 must be a pair (q0, p0) (or (q0, q̇0)) of (batch, dim) tensors, "
                         f"got {type(state0).__name__}.")
    dtype, device = _placement(model)
    q, p = check_pair(state0[0], state0[1], getattr(model, "dim", None), ("q0", "p0"),
                      dtype=dtype, device=device)
    return q.detach(), p.detach()


def _finite_parameters(model) -> None:
    params = getattr(model, "parameters", None)
    if not callable(params):
        return
    for name, prm in getattr(model, "named_parameters")():
        if not bool(torch.isfinite(prm.detach()).all()):
            raise InputError(f"the model's parameter {name!r} holds NaN/inf values, so every step "
                             "would too: the model is corrupt (e.g. trained on non-finite targets); "
                             "retrain it or load a good copy.")


def _pair(res, name):
    if not isinstance(res, (tuple, list)) or len(res) != 2:
        raise InputError(f"{name} must return a pair (ẋ, ẏ), got {type(res).__name__}.")
    return res[0].detach(), res[1].detach()


def integrate(model, state0, dt: float, steps: int, method: str = "leapfrog", *,
              tol: float | None = None, max_iter: int = 100, save_every: int = 1):
    """Integrate ``model`` from ``state0 = (q0, p0)`` for ``steps`` steps of size ``dt``.

    q0, p0: ``(batch, dim)`` tensors (a ``(dim,)`` tensor is one initial condition; a 1-D tensor
    of another length, or a width other than ``model.dim``, raises :class:`ShapeError`), float32
    or float64. A model with parameters (HamiltonianNN, LagrangianNN, DerivativeMLP) integrates in
    its own dtype and device: the state is converted to them. A wrapped function or a plain
    callable integrates in the state's dtype. Returns ``(q, p)``, each ``(steps // save_every + 1,
    batch, dim)``, the first entry being the initial state. ``method``: one of :data:`METHODS`;
    "leapfrog"/"yoshida4" first check that a wrapped H declared separable is separable at the
    initial states (:meth:`HamiltonianNN.check_separable`).
    ``tol``/``max_iter``: implicit midpoint only — the fixed-point iteration stops when, for every
    sample and each of q and p, the last update changed it by at most ``tol`` times its size
    (``max|x| + dt max|ẋ|``; a relative test, so the state's units do not matter; default tol:
    1e-13 in float64, 1e-6 in float32), or when rounding stops the update from shrinking within
    1e3 x tol, and raises :class:`ConvergenceError` after ``max_iter`` iterations.
    Raises :class:`InputError` for a model whose parameters hold NaN/inf, and
    :class:`NumericalError` at the first step whose state is NaN/inf (every step is checked,
    whatever ``save_every``).
    """
    if method not in METHODS:
        raise InputError(f"unknown method {method!r}: use one of {list(METHODS)}.")
    try:
        dt = float(dt)
    except (TypeError, ValueError) as exc:
        raise InputError(f"dt must be a positive number, got {dt!r}.") from exc
    if not math.isfinite(dt) or dt <= 0.0:
        raise InputError(f"dt must be a positive finite number, got {dt!r}.")
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 0:
        raise InputError(f"steps must be a non-negative integer, got {steps!r}.")
    if not isinstance(save_every, int) or save_every < 1 or steps % save_every:
        raise InputError(f"save_every must be a positive integer dividing steps={steps}, "
                         f"got {save_every!r}.")
    if not isinstance(max_iter, int) or max_iter < 1:
        raise InputError(f"max_iter must be a positive integer, got {max_iter!r}.")
    q, p = _state(state0, model)
    _finite_parameters(model)
    if tol is None:
        tol = 1e-13 if q.dtype == torch.float64 else 1e-6
    elif (not isinstance(tol, (int, float)) or isinstance(tol, bool) or not math.isfinite(tol)
          or not 0 < tol < 1):
        # tol=inf accepted the first iterate: the explicit midpoint rule, not symplectic
        raise InputError(f"tol must be a relative tolerance in (0, 1), got {tol!r}.")

    if method in ("leapfrog", "yoshida4"):
        if not (getattr(model, "separable", False) and hasattr(model, "velocity")
                and hasattr(model, "force")):
            raise InputError(
                f"method {method!r} is explicit and needs a separable model H = T(p) + V(q) "
                f"(velocity(p) and force(q)); {type(model).__name__} is not one. Use "
                "method='implicit_midpoint' (symplectic for any H) or 'rk4'.")
        check_separable = getattr(model, "check_separable", None)
        if check_separable is not None:
            check_separable(q, p)
        stepper = _Leapfrog(model, (1.0,) if method == "leapfrog" else _YOSHIDA)
    elif method == "rk4":
        stepper = _RK4(_vector_field(model))
    else:
        stepper = _ImplicitMidpoint(_vector_field(model), tol, max_iter)

    n_saved = steps // save_every + 1
    qs = q.new_empty((n_saved,) + tuple(q.shape))
    ps = p.new_empty((n_saved,) + tuple(p.shape))
    qs[0], ps[0] = q, p
    with torch.no_grad():
        for n in range(1, steps + 1):
            q, p = stepper(q, p, dt, n)
            if not (bool(torch.isfinite(q).all()) and bool(torch.isfinite(p).all())):
                raise NumericalError(f"the state became NaN/inf at step {n} (t = {n * dt:g}) "
                                     f"with {method}: the trajectory left the region where the "
                                     "model is finite; lower dt, or check the model there.")
            if n % save_every == 0:
                qs[n // save_every], ps[n // save_every] = q, p
    return qs, ps


class _Leapfrog:
    """Kick-drift-kick leapfrog, composed with the given sub-step weights (Yoshida)."""

    def __init__(self, model, weights):
        self.velocity = _unchecked(model.velocity)
        self.force = _unchecked(model.force)
        self.weights = weights
        self._force = None   # force at the current q, reused by the next kick

    def _f(self, q):
        return self.force(q).detach()

    def __call__(self, q, p, dt, n):
        f = self._force if self._force is not None else self._f(q)
        for w in self.weights:
            h = w * dt
            p = p + 0.5 * h * f
            q = q + h * self.velocity(p).detach()
            f = self._f(q)
            p = p + 0.5 * h * f
        self._force = f
        return q, p


class _RK4:
    def __init__(self, f):
        self.f = f

    def __call__(self, q, p, dt, n):
        f = self.f
        k1q, k1p = _pair(f(q, p), "time_derivative")
        k2q, k2p = _pair(f(q + 0.5 * dt * k1q, p + 0.5 * dt * k1p), "time_derivative")
        k3q, k3p = _pair(f(q + 0.5 * dt * k2q, p + 0.5 * dt * k2p), "time_derivative")
        k4q, k4p = _pair(f(q + dt * k3q, p + dt * k3p), "time_derivative")
        return (q + dt / 6.0 * (k1q + 2 * k2q + 2 * k3q + k4q),
                p + dt / 6.0 * (k1p + 2 * k2p + 2 * k3p + k4p))


class _ImplicitMidpoint:
    """x₁ = x₀ + h f(x₀ + h/2 k) with k = f(midpoint), solved by fixed-point iteration on k.

    Converged when, for every sample and for each half of the state (x and y apart, since they
    carry different units), the last update moved it by at most ``tol`` times its own size
    (``max|x| + h max|ẋ|``): a criterion without a unit. (It was ``tol * (1 + max|x|)`` over
    the whole batch, an absolute 1e-13 in the state's units: a state of size 1e-9 passed after a
    single iteration — the explicit midpoint rule, not symplectic: a 1e-12 oscillation gained
    177 % energy in 2e4 steps, silently.) When rounding stops the iteration from shrinking the
    update any further (Hairer, Lubich & Wanner, GNI VIII.6) while it is within 1e3 x tol, the
    iterate is as converged as the arithmetic allows and is accepted. "Any further" spans two
    iterations: the update must be no smaller than both of the two before it. (One was read as a
    stall, but the iteration's error rotates between x and y — the map's Jacobian (h/2) J ∇²H has
    imaginary eigenvalues — so at h ω > 1.2 the update measured against each half's size grew every
    other iteration while still contracting: iterates 300x tol off the midpoint equation were
    accepted, and a harmonic oscillator's energy, which the rule conserves exactly, drifted by
    4e-8 in 2000 steps at the default tol instead of 8e-11.)"""

    def __init__(self, f, tol, max_iter):
        self.f, self.tol, self.max_iter = f, tol, max_iter
        self._k = None
        self.iterations = []

    @staticmethod
    def _relative(dk, x, k, dt):
        """max over samples of dt |Δk| / (|x| + dt |k|), each per sample (row) in the inf-norm."""
        change = dt * dk.abs().amax(-1)
        size = x.abs().amax(-1) + dt * k.abs().amax(-1)
        rel = torch.where(change > 0, change / size.clamp_min(torch.finfo(x.dtype).tiny),
                          torch.zeros_like(change))
        return float(rel.max()) if rel.numel() else 0.0

    def __call__(self, q, p, dt, n):
        if self._k is None or self._k[0].shape != q.shape:
            kq, kp = _pair(self.f(q, p), "time_derivative")
        else:
            kq, kp = self._k   # previous step's slope: a good first guess
        change = previous = before = float("inf")
        for it in range(1, self.max_iter + 1):
            nq, np_ = _pair(self.f(q + 0.5 * dt * kq, p + 0.5 * dt * kp), "time_derivative")
            change = max(self._relative(nq - kq, q, nq, dt), self._relative(np_ - kp, p, np_, dt))
            kq, kp = nq, np_
            if not math.isfinite(change):
                break
            stalled = it > 2 and change >= max(previous, before) and change <= 1e3 * self.tol
            if change <= self.tol or stalled:
                self._k = (kq, kp)
                self.iterations.append(it)
                return q + dt * kq, p + dt * kp
            before, previous = previous, change
        raise ConvergenceError(
            f"implicit midpoint did not converge at step {n} (t = {n * dt:g}): the last fixed-point "
            f"update changed the state by {change:.3e} of its size > tol {self.tol:g} after "
            f"{self.max_iter} iterations. Use a smaller dt (the iteration contracts when "
            "dt * Lipschitz(f) / 2 < 1), or raise tol / max_iter.")


def energy_drift(energy: torch.Tensor, times: torch.Tensor | None = None) -> dict:
    """Summarise an energy series ``energy`` of shape ``(n_times, batch)`` (or ``(n_times,)``).

    Returns python floats: ``max_abs`` (max |E(t) − E(0)|), ``final_abs`` (mean over the batch of
    |E(T) − E(0)|), ``slope`` — the least-squares slope of the batch-mean E(t) − E(0) against
    ``times`` (default: the index), i.e. the secular drift per unit time (per step when ``times``
    is None) —, ``energy_spread`` (the standard deviation over the batch of the initial energies
    E_b(0)) and ``max_abs_over_spread`` = ``max_abs`` / ``energy_spread``: the drift as a fraction
    of how far apart the batch's orbits' energies lie (1: a rollout drifted as far as from one
    orbit's energy to another's). Unlike |ΔE| / |E(0)| (the ``rel_max`` it replaces, which read
    6e-5 or 1.3 for the same drift with E shifted by a constant, and 1e300 for a rollout starting
    at E = 0) it depends neither on the energy's zero nor on its unit; None with a batch of one or
    a spread at rounding level (under 64 ε max|E_b(0)|), where no scale can be read.
    """
    e = torch.as_tensor(energy).detach().to(torch.float64)
    if e.dim() == 1:
        e = e[:, None]
    if e.dim() != 2 or e.shape[0] < 2:
        raise ShapeError(f"energy must have shape (n_times >= 2, batch), got {tuple(e.shape)}.")
    de = e - e[:1]
    t = torch.arange(e.shape[0], dtype=torch.float64) if times is None else \
        torch.as_tensor(times, dtype=torch.float64)
    if t.shape != e.shape[:1]:
        raise ShapeError(f"times has shape {tuple(t.shape)}; expected ({e.shape[0]},).")
    m = de.mean(1)
    tc = t - t.mean()
    slope = float((tc * (m - m.mean())).sum() / (tc * tc).sum())
    max_abs = float(de.abs().max())
    spread = ratio = None
    if e.shape[1] > 1:
        spread = float(e[0].std(unbiased=False))
        if spread > 64.0 * torch.finfo(torch.float64).eps * float(e[0].abs().max()):
            ratio = max_abs / spread
    return {"max_abs": max_abs, "final_abs": float(de[-1].abs().mean()), "slope": slope,
            "energy_spread": spread, "max_abs_over_spread": ratio}

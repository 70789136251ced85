"""Training and evaluation of dynamics models (HNN, LNN, baseline MLP) on derivative data.

The loss is the HNN paper's: the mean squared error between the model's time derivative at the
observed (noisy) states and the exact derivative. A constraint strategy from
:mod:`lawful.kernels.constraints` can be added: ``SoftPenalty`` or ``AugmentedLagrangian`` on the
violation of energy conservation, ``v = ∇E(x) · f_θ(x)`` — the rate of change of the known energy
along the learned vector field, zero for every conservative model of the true system (see
:func:`energy_rate`).

Metrics (see :func:`rollout_metrics` and :func:`long_horizon_drift`):

* derivative test loss — MSE of (ẋ, ẏ) on the held-out states;
* rollout state MSE — model rollouts from the clean initial states of the test trajectories,
  against the exact trajectories, MSE over time points, trajectories and coordinates;
* energy MSE — the HNN paper's figure: MSE between the true energy of the exact trajectory and the
  true energy evaluated along the model's rollout, over the same time points and trajectories;
* long-horizon drift — |E(T) − E(0)| of the true energy along 10⁴–10⁵-step rollouts with each
  integrator, and its least-squares slope.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch

from lawful.forcefields.dynamics_data import STATE_NAMES, DynamicsDataset
from lawful.forcefields.integrators import energy_drift, integrate
from lawful.kernels.constraints import AugmentedLagrangian, SoftPenalty, positive_finite
from lawful.kernels.distributed import DistContext
from lawful.kernels.errors import InputError, ShapeError
from lawful.kernels.training_core import Hooks, Loop, LoopConfig

__all__ = ["TrainResult", "train_dynamics", "derivative_loss", "energy_rate", "rollout_metrics",
           "long_horizon_drift"]


@dataclass
class TrainResult:
    """What :func:`train_dynamics` returns: final losses (``train_loss``, ``test_loss``: the
    derivative MSE on the training and test states), ``violation_rms`` (RMS of dE/dt along the
    model's vector field, :func:`energy_rate`, on the *test* states; None when the dataset has no
    known energy), seconds, steps, the constraint's state, the history."""

    train_loss: float
    test_loss: float
    violation_rms: float | None
    seconds: float
    steps: int
    constraint: dict | None = None
    history: list = field(default_factory=list)

    def as_dict(self) -> dict:
        """Plain-python form for JSON."""
        return {"train_loss": self.train_loss, "test_loss": self.test_loss,
                "violation_rms": self.violation_rms, "seconds": self.seconds, "steps": self.steps,
                "constraint": self.constraint}


def _predict(model, x, y, create_graph):
    return model.time_derivative(x, y, create_graph=create_graph)


def derivative_loss(model, x, y, dx, dy, create_graph: bool = False) -> torch.Tensor:
    """Mean squared error of the predicted ``(ẋ, ẏ)`` against the targets (0-d tensor)."""
    px, py = _predict(model, x, y, create_graph)
    return 0.5 * (((px - dx) ** 2).mean() + ((py - dy) ** 2).mean())


def energy_rate(model, energy, x, y, create_graph: bool = False) -> torch.Tensor:
    """``dE/dt = ∂E/∂x · ẋ + ∂E/∂y · ẏ`` of the known energy ``energy(x, y) -> (batch,)`` along
    the model's vector field, shape ``(batch,)``: the violation of energy conservation."""
    with torch.enable_grad():
        xe = x.detach().requires_grad_(True)
        ye = y.detach().requires_grad_(True)
        gx, gy = torch.autograd.grad(energy(xe, ye).sum(), (xe, ye))
    px, py = _predict(model, x, y, create_graph)
    return (gx * px).sum(-1) + (gy * py).sum(-1)


@torch.inference_mode(False)     # gradients on, also inside no_grad() / inference_mode()
@torch.enable_grad()
def train_dynamics(model, data: DynamicsDataset, *, constraint=None, steps: int = 2000,
                   lr: float = 1e-3, final_lr: float = 1e-5, batch_size: int | None = None,
                   constraint_every: int = 100, seed: int = 0, log_every: int = 0,
                   progress: bool = True) -> TrainResult:
    """Fit ``model`` (anything with ``time_derivative(x, y, create_graph=)``) to ``data``.

    Adam with a cosine learning-rate decay from ``lr`` to ``final_lr`` over ``steps``; full batch
    unless ``batch_size`` is given (the augmented Lagrangian needs full batch: its multipliers
    are per training sample). ``constraint``: None, a :class:`SoftPenalty`, or an
    :class:`AugmentedLagrangian` on :func:`energy_rate` at the training states (the latter's
    multipliers are updated every ``constraint_every`` steps). ``seed`` fixes minibatch order.

    Before the first step the dataset is checked (:meth:`DynamicsDataset.validate`: shapes,
    dtypes, NaN/inf in any state or target, named with its first bad index), and so are the model
    against it (its ``dim``, and its state pair: a HamiltonianNN needs ``data.state ==
    "canonical"`` (q, p), a LagrangianNN ``"velocity"`` (q, q̇); the baseline takes either) and a
    constraint against the data (it needs ``data.energy``). ``progress``: a tqdm bar over the
    steps (as :func:`~lawful.forcefields.train`; a 1500-step fit ran a minute without a word). An :class:`AugmentedLagrangian` is
    reset at the start (:meth:`~lawful.kernels.AugmentedLagrangian.reset`: multipliers, history
    and penalty back to the constructor's values), so every call starts it fresh; its final state
    is in the result. A training loss or gradient that becomes NaN/inf stops the run with
    :class:`~lawful.kernels.NumericalError` before the optimiser step (the model keeps the last
    finite weights).
    """
    _check_settings(steps=steps, lr=lr, final_lr=final_lr, batch_size=batch_size,
                    constraint_every=constraint_every, seed=seed, log_every=log_every)
    if constraint is not None and not isinstance(constraint, (SoftPenalty, AugmentedLagrangian)):
        raise InputError(f"constraint must be None, a SoftPenalty or an AugmentedLagrangian, got "
                         f"{type(constraint).__name__}.")
    _check_model_and_data(model, data, constraint)
    if isinstance(constraint, AugmentedLagrangian) and batch_size is not None:
        raise InputError("the augmented Lagrangian keeps one multiplier per training sample: train "
                         "full batch (batch_size=None).")
    params = [prm for prm in model.parameters() if prm.requires_grad]
    if not params:
        raise InputError("the model has no trainable parameters (a wrapped analytic function?).")
    if isinstance(constraint, AugmentedLagrangian):
        constraint.reset()
    opt = torch.optim.Adam(params, lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps, eta_min=final_lr)
    hooks = _DynamicsHooks(model, data, constraint, batch_size, constraint_every, seed, log_every)
    loop = Loop(model, opt, sched, hooks, LoopConfig(units=steps, unit="step", validate_every=0, stop_label="steps",
                                                     progress=progress, desc="train_dynamics"), ctx=DistContext())
    t0 = time.perf_counter()
    loop.run()
    seconds = time.perf_counter() - t0
    train = float(derivative_loss(model, data.x, data.y, data.dx, data.dy).detach())
    test = float(derivative_loss(model, data.test_x, data.test_y, data.test_dx,
                                 data.test_dy).detach())
    violation = None
    if data.energy is not None:
        v = energy_rate(model, data.energy, data.test_x, data.test_y).detach()
        violation = float(torch.sqrt((v * v).mean()))
    return TrainResult(train_loss=train, test_loss=test, violation_rms=violation, seconds=seconds,
                       steps=steps, constraint=None if constraint is None else constraint.state(),
                       history=loop.history)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_settings(*, steps, lr, final_lr, batch_size, constraint_every, seed, log_every) -> None:
    """InputError naming the first bad training setting of :func:`train_dynamics` and its fix:
    ``constraint_every=0`` divided by zero at the first step, ``batch_size=0`` trained on an empty
    batch (a NaN loss), ``lr=0`` or a negative ``final_lr`` ran without a word."""
    if not _is_int(steps) or steps < 1:
        raise InputError(f"steps must be a positive integer (Adam steps), got {steps!r}.")
    positive_finite("lr", lr)
    try:
        low = float(final_lr)
    except (TypeError, ValueError) as exc:
        raise InputError(f"final_lr must be a number in [0, lr], got {final_lr!r}.") from exc
    if isinstance(final_lr, bool) or not math.isfinite(low) or not 0.0 <= low <= float(lr):
        raise InputError(f"final_lr must be a number in [0, lr={lr!r}] (the end of the cosine decay from lr), "
                         f"got {final_lr!r}: pass 0 <= final_lr <= lr.")
    if batch_size is not None and (not _is_int(batch_size) or batch_size < 1):
        raise InputError(f"batch_size must be a positive integer or None (full batch), got {batch_size!r}.")
    if not _is_int(constraint_every) or constraint_every < 1:
        raise InputError(f"constraint_every must be a positive integer (steps between the augmented "
                         f"Lagrangian's multiplier updates), got {constraint_every!r}.")
    if not _is_int(log_every) or log_every < 0:
        raise InputError(f"log_every must be a non-negative integer (steps between history rows; 0: none), "
                         f"got {log_every!r}.")
    if not _is_int(seed):
        raise InputError(f"seed must be an integer (it fixes the minibatch order), got {seed!r}.")


def _check_model_and_data(model, data, constraint) -> None:
    """Everything train_dynamics can refuse before it trains (see its docstring)."""
    if not isinstance(data, DynamicsDataset):
        raise InputError(f"data must be a DynamicsDataset (make_dataset(...) or "
                         f"DynamicsDataset.from_trajectories(...)), got {type(data).__name__}.")
    data.validate()
    dim = getattr(model, "dim", None)
    if dim is not None and dim != data.dim:
        raise ShapeError(f"the model has dim={dim} but the dataset {data.name!r} has dim={data.dim}; build "
                         f"the model with dim={data.dim}.")
    names = getattr(model, "state_names", None)
    if names is not None and names != STATE_NAMES[data.state]:
        want = next((k for k, v in STATE_NAMES.items() if v == names), "matching")
        raise InputError(f"{type(model).__name__} reads the state as {names} but the dataset {data.name!r} "
                         f"holds {STATE_NAMES[data.state]} (state={data.state!r}): it cannot fit those "
                         f"targets. Use a dataset with state={want!r}, or a model for "
                         f"{STATE_NAMES[data.state]} (HamiltonianNN: (q, p); LagrangianNN: (q, qdot); "
                         "DerivativeMLP: either).")
    if constraint is not None and data.energy is None:
        raise InputError(f"a {type(constraint).__name__} constrains dE/dt of the known energy, but the dataset "
                         f"{data.name!r} has none (energy=None): pass energy= to the dataset, or train "
                         "without a constraint.")


class _DynamicsHooks(Hooks):
    """train_dynamics for the training core: one unit = one Adam step (full batch or a seeded
    minibatch), the constraint's loss added and its multipliers updated on schedule."""

    def __init__(self, model, data, constraint, batch_size, constraint_every, seed, log_every):
        self.model, self.data, self.constraint = model, data, constraint
        self.batch_size, self.constraint_every, self.log_every = batch_size, constraint_every, log_every
        self.gen = torch.Generator().manual_seed(seed)

    def loss(self, x, y, dx, dy):
        fit = derivative_loss(self.model, x, y, dx, dy, create_graph=True)
        total = fit
        if self.constraint is not None:
            total = total + self.constraint.loss(energy_rate, self.model, self.data.energy, x, y, True)
        self._fit = fit.detach()
        return total

    def train_unit(self, loop: Loop, unit: int):
        data, n = self.data, self.data.x.shape[0]
        step = unit + 1
        if self.batch_size is None or self.batch_size >= n:
            x, y, dx, dy = data.x, data.y, data.dx, data.dy
        else:
            idx = torch.randint(0, n, (self.batch_size,), generator=self.gen)
            x, y, dx, dy = data.x[idx], data.y[idx], data.dx[idx], data.dy[idx]
        total = loop.optimise(x, y, dx, dy)
        if isinstance(self.constraint, AugmentedLagrangian) and step % self.constraint_every == 0:
            self.constraint.update(energy_rate(self.model, data.energy, data.x, data.y).detach())
        if self.log_every and step % self.log_every == 0:
            return {"step": step, "loss": float(self._fit), "total": float(total)}
        return None


def _energy_series(energy, xs, ys):
    n, b, d = xs.shape
    return energy(xs.reshape(n * b, d), ys.reshape(n * b, d)).reshape(n, b)


def rollout_metrics(model, data: DynamicsDataset, horizon: float | None = None,
                    dt: float = 0.01, method: str = "rk4", n_points: int = 200) -> dict:
    """Rollouts of ``model`` from the clean initial states of the test trajectories.

    Integrates towards ``horizon`` (default: the data's time span, ``t[-1] - t[0]``; the rollouts
    start from the trajectories' first states, at ``t[0]``) with ``method`` at step ``dt``
    and compares ``n_points`` equally spaced states with the exact (DOP853) trajectories, so the
    dataset needs its exact ``vector_field`` (:class:`InputError` otherwise).
    Returns ``state_mse`` and ``energy_mse`` (the HNN paper's definition, see the module
    docstring; None when the dataset has no energy), ``horizon`` — the time actually integrated,
    ``steps * dt``: the step count is rounded and cut to a multiple of the saving interval, so it
    can differ from the one asked for, which is ``horizon_requested`` —, ``steps``, ``points``
    (states compared per rollout) and the number of rollouts.
    """
    if data.vector_field is None:
        raise InputError(f"rollout_metrics compares with exact trajectories, but the dataset {data.name!r} has "
                         "no vector_field (built from observed trajectories): pass vector_field= to "
                         "DynamicsDataset.from_trajectories, or compare with data.traj_x/traj_y yourself.")
    # the span, not the last time: trajectories sampled from t = 5 to 11 span 6 time units (t[-1]
    # integrated 11, almost twice the data's horizon, and compared the models there without a word)
    positive_finite("dt", dt)
    if not _is_int(n_points) or n_points < 1:
        raise InputError(f"n_points must be a positive integer (states compared per rollout), got {n_points!r}.")
    requested = float(data.t[-1] - data.t[0]) if horizon is None else positive_finite("horizon", horizon)
    steps = int(round(requested / dt))
    if steps < 1:
        # 0 steps compared each initial state with itself: state_mse = energy_mse = 0 (or a crash)
        raise InputError(f"horizon={requested:g} is under half a step of dt={dt:g}: no step to compare. Use a "
                         "longer horizon or a smaller dt.")
    save = max(1, steps // n_points)
    steps = save * (steps // save)
    x0, y0 = data.traj_x[0], data.traj_y[0]
    xs, ys = integrate(model, (x0, y0), dt, steps, method, save_every=save)
    xs, ys = xs.to(x0.dtype), ys.to(y0.dtype)
    times = torch.arange(xs.shape[0], dtype=torch.float64) * dt * save
    tx, ty = data.trajectories(x0, y0, times)
    energy_mse = None
    if data.energy is not None:
        e_true = _energy_series(data.energy, tx, ty)
        e_model = _energy_series(data.energy, xs, ys)
        energy_mse = float(((e_model - e_true) ** 2).mean())
    return {"state_mse": float(((xs - tx) ** 2).mean() / 2 + ((ys - ty) ** 2).mean() / 2),
            "energy_mse": energy_mse, "horizon": steps * dt, "horizon_requested": requested,
            "steps": steps, "points": int(xs.shape[0]), "rollouts": int(x0.shape[0]), "dt": dt,
            "method": method}


def long_horizon_drift(model, data: DynamicsDataset, dt: float, steps: int, method: str,
                       n_points: int = 100, tol: float | None = 1e-11, max_iter: int = 100) -> dict:
    """Energy drift of the *true* energy along ``steps``-step rollouts of ``model`` with
    ``method`` from the test initial states: ``final_abs`` (mean over the rollouts of
    |E(T) − E(0)|), ``max_abs`` (max over rollouts and saved times of |E(t) − E(0)|), the secular
    ``slope`` (per unit time), ``energy_spread`` (the standard deviation of the rollouts' initial
    energies E_b(0) over the test states) and ``max_abs_over_spread`` = ``max_abs`` /
    ``energy_spread``: the drift as a fraction of how far apart the test orbits' energies lie (1:
    the rollout has drifted as far as from one test orbit's energy to another's). Unlike
    |ΔE| / |E(0)| it does not depend on the energy's zero or unit; it is None with one test
    rollout or a spread at rounding level. These five are None when the dataset has no known
    energy.
    ``model_energy_final_abs`` and ``model_energy_slope`` report ``final_abs`` and ``slope`` for
    the model's own conserved quantity when it has one (``hamiltonian`` or ``energy``); absent
    otherwise. ``finite``: whether the whole rollout stayed finite."""
    if not _is_int(n_points) or n_points < 1:
        raise InputError(f"n_points must be a positive integer (energies kept per rollout), got {n_points!r}.")
    save = max(1, steps // n_points)
    if steps % save:
        raise InputError(f"steps={steps} must be a multiple of {save}.")
    x0, y0 = data.traj_x[0], data.traj_y[0]
    t0 = time.perf_counter()
    xs, ys = integrate(model, (x0, y0), dt, steps, method, save_every=save, tol=tol,
                       max_iter=max_iter)
    seconds = time.perf_counter() - t0
    times = torch.arange(xs.shape[0], dtype=torch.float64) * dt * save
    if data.energy is not None:
        out = energy_drift(_energy_series(data.energy, xs, ys), times)
    else:
        out = {"max_abs": None, "final_abs": None, "slope": None, "energy_spread": None,
               "max_abs_over_spread": None}
    own = getattr(model, "hamiltonian", None) or getattr(model, "energy", None)
    if own is not None:
        e = _energy_series(lambda a, b: own(a, b).detach(), xs, ys)
        d = energy_drift(e, times)
        out.update({"model_energy_final_abs": d["final_abs"], "model_energy_slope": d["slope"]})
    out.update({"steps": steps, "dt": dt, "method": method, "seconds": seconds,
                "finite": bool(torch.isfinite(xs).all() and torch.isfinite(ys).all())})
    return out

"""The benchmark systems of the HNN and LNN papers, generated in-project with fixed seeds.

Each builder returns a :class:`DynamicsDataset`: noisy training/test states with exact time
derivatives as targets (the HNN paper's protocol: the derivative is evaluated on the clean
trajectory, Gaussian noise of std ``noise_std`` is then added to the observed state), a 50/50
split *by trajectory*, and the clean test trajectories for rollout metrics. The default noise is
0.05, half the 0.1 of the paper's code: figures are comparable with the paper's only at
``noise_std=0.1``.

Systems (the conventions of Greydanus et al. 2019 and its code):

* ``mass_spring``  — H = q² + p² (the paper's code), i.e. k = 2 and m = ½ in ½kq² + p²/2m:
  dq/dt = 2p, dp/dt = −2q (a known-mass model needs ``HamiltonianNN(mass=0.5)``), radius of the
  initial state uniform in [0.1, 1], 30 samples over t ∈ [0, 3].
* ``pendulum``     — H = 2mgl(1 − cos q) + l²p²/(2m), m = l = 1, g = 3 (the paper's text; its
  code uses 3(1 − cos q) + p², so energies and their MSEs differ in scale from its Table 1), radius
  uniform in [1.3, 2.3], 45 samples over t ∈ [0, 3].
* ``two_body``     — H = Σ|pᵢ|²/2mᵢ − G m₁m₂/|q₁ − q₂|, m = G = 1, near-circular orbits (the
  paper's generator: radius components in [0.5, 1.5], speed × (1 + 0.05 N(0,1))), 50 samples
  over t ∈ [0, 20]. q = (x₁, y₁, x₂, y₂), p the matching momenta.
* ``double_pendulum`` — the LNN paper's system, state (θ, θ̇) with m₁ = m₂ = l₁ = l₂ = 1, g = 9.8;
  angles uniform in [−1, 1] rad, angular velocities in [−1, 1] rad/s, 50 samples over t ∈ [0, 5].

Ground truth comes from SciPy's DOP853 at rtol 1e-11, independent of lawful's integrators.
All tensors are float64 on the CPU.

Your own system: :meth:`DynamicsDataset.from_trajectories` builds a dataset from observed
trajectories ``(n_t, n_traj, dim)`` (with measured derivatives, or finite differences along t),
with the same split by trajectory; the energy and exact dynamics are optional there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from lawful.kernels.errors import InputError, ShapeError

__all__ = ["DynamicsDataset", "mass_spring", "pendulum", "two_body", "double_pendulum",
           "SYSTEMS", "make_dataset", "STATE_NAMES"]


#: The state pair each ``DynamicsDataset.state`` stands for, as the models name it
#: (``HamiltonianNN.state_names``, ``LagrangianNN.state_names``).
STATE_NAMES = {"canonical": ("q", "p"), "velocity": ("q", "qdot")}

#: The tensor fields of a dataset that must be ``(n, dim)``, finite and of one dtype.
SAMPLE_FIELDS = ("x", "y", "dx", "dy", "test_x", "test_y", "test_dx", "test_dy")


@dataclass
class DynamicsDataset:
    """Noisy samples of one system, split by trajectory.

    x, y: observed training states ``(n_train, dim)`` (q and p when ``state == "canonical"``, q
    and q̇ when ``state == "velocity"``); dx, dy: their time derivatives (the targets). test_*: the
    same for the held-out trajectories. traj_x, traj_y: test trajectories ``(n_t, n_test_traj,
    dim)`` at times ``t`` (the first entry is each rollout's initial condition; clean for the
    built-in systems). energy(x, y) -> (batch,) and vector_field(x, y) -> (ẋ, ẏ) are the exact
    torch functions, or None when unknown (a dataset built from observed trajectories, see
    :meth:`from_trajectories`): training then works without a constraint, ``violation_rms`` and
    the true-energy metrics are None, and the rollout metrics (which need exact trajectories)
    refuse. Units are the data's own; time derivatives are per unit of ``t``.
    """

    name: str
    state: str
    dim: int
    x: torch.Tensor
    y: torch.Tensor
    dx: torch.Tensor
    dy: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    test_dx: torch.Tensor
    test_dy: torch.Tensor
    t: torch.Tensor
    traj_x: torch.Tensor
    traj_y: torch.Tensor
    energy: Callable | None = field(repr=False)
    vector_field: Callable | None = field(repr=False)
    meta: dict = field(default_factory=dict)

    @classmethod
    def from_trajectories(cls, t, x, y, dx=None, dy=None, *, state: str = "canonical",
                          energy: Callable | None = None, vector_field: Callable | None = None,
                          test_split: float = 0.5, name: str = "user",
                          check_rates: bool = True) -> "DynamicsDataset":
        """A dataset from your own trajectories, split by trajectory like the built-in systems.

        t: ``(n_t,)`` strictly increasing sample times, shared by every trajectory (any time
        unit). x, y: ``(n_t, n_traj, dim)`` observed states — q and p (``state="canonical"``, for
        a HamiltonianNN) or q and q̇ (``state="velocity"``, for a LagrangianNN), in your units.
        dx, dy: their time derivatives at the same points, ``(n_t, n_traj, dim)`` in units per
        unit of t; None (both) estimates them from x, y by second-order finite differences along
        t (``numpy.gradient``, ``edge_order=2``: O(Δt²) error, and noise in x, y is amplified by
        ~1/Δt — pass measured derivatives when you have them).
        energy(x, y) -> (batch,): the conserved energy if known (needed by an energy constraint
        and by the true-energy metrics), else None. vector_field(x, y) -> (ẋ, ẏ): the exact
        dynamics if known (needed by :func:`~lawful.forcefields.dynamics_training.rollout_metrics`).
        test_split: the fraction of trajectories held out (the last ones; at least one on each
        side). Everything is converted to float64 on the CPU; NaN/inf, bad shapes and a
        non-increasing t raise :class:`InputError`/:class:`ShapeError` naming the field and the
        first bad index. Given derivatives (and, with ``state="velocity"``, the q̇ in ``y``) must be
        the rate of change of the trajectories along ``t`` (:func:`_check_rate`): derivatives of the
        opposite sign, or per another time unit than t's (per second beside t in ms: 1000x), raise
        :class:`InputError` naming the factor, where training would silently learn dynamics that
        many times too fast. Each central difference is compared with the given rate averaged over
        its window (Simpson), so coarse sampling (a few samples per period, where the rate is up
        to 1.3x the difference) is no mistake; rates that do not track the differences at all
        (noisy states) cannot be checked, which a warning says. ``check_rates=False`` skips the
        check (derivatives you know to be right).
        """
        if state not in STATE_NAMES:
            raise InputError(f"state must be one of {sorted(STATE_NAMES)}, got {state!r}: 'canonical' for "
                             "(q, p), 'velocity' for (q, q̇).")
        if (dx is None) != (dy is None):
            raise InputError("pass both dx and dy (the measured time derivatives), or neither (they are "
                             "then estimated by finite differences along t).")
        for fname, fn in (("energy", energy), ("vector_field", vector_field)):
            if fn is not None and not callable(fn):
                raise InputError(f"{fname} must be a callable of (x, y) or None, got {type(fn).__name__}.")
        tt = _as_float64("t", t)
        if tt.dim() != 1 or tt.shape[0] < 2:
            raise ShapeError(f"t has shape {tuple(tt.shape)}; expected (n_t,) with n_t >= 2 sample times.")
        if not isinstance(check_rates, bool):
            raise InputError(f"check_rates must be True or False, got {check_rates!r}.")
        _first_nonfinite("t", tt)
        steps = tt[1:] - tt[:-1]
        if not bool((steps > 0).all()):
            k = int(torch.nonzero(steps <= 0)[0, 0]) + 1
            raise InputError(f"t must be strictly increasing; t[{k}] = {float(tt[k])!r} follows "
                             f"t[{k - 1}] = {float(tt[k - 1])!r}.")
        arrays = {"x": x, "y": y} if dx is None else {"x": x, "y": y, "dx": dx, "dy": dy}
        arrays = {k: _as_float64(k, v) for k, v in arrays.items()}
        shape = tuple(arrays["x"].shape)
        if len(shape) != 3 or shape[0] != tt.shape[0]:
            raise ShapeError(f"x has shape {shape}; expected (n_t, n_traj, dim) with n_t = {tt.shape[0]} "
                             "(one state per sample time and trajectory).")
        for k, v in arrays.items():
            if tuple(v.shape) != shape:
                raise ShapeError(f"{k} has shape {tuple(v.shape)} but x has {shape}; they must match "
                                 "(n_t, n_traj, dim).")
            _first_nonfinite(k, v)
        n_t, n_traj, dim = shape
        if n_traj < 2:
            raise InputError(f"{n_traj} trajectory: a split by trajectory needs at least 2 (train and test).")
        if not (isinstance(test_split, float) and 0 < test_split < 1):
            raise InputError(f"test_split must be a float in (0, 1), got {test_split!r}.")
        xs, ys = arrays["x"], arrays["y"]
        tn = tt.numpy()
        fdx = torch.from_numpy(np.gradient(xs.numpy(), tn, axis=0, edge_order=2 if n_t > 2 else 1))
        fdy = torch.from_numpy(np.gradient(ys.numpy(), tn, axis=0, edge_order=2 if n_t > 2 else 1))
        rates = [] if dx is None else [("dx", arrays["dx"], "x", fdx), ("dy", arrays["dy"], "y", fdy)]
        if state == "velocity":       # the state's q̇ is the rate of change of its q
            rates.append(("y (q̇)", ys, "x (q)", fdx))
        for given, g, of, f in (rates if check_rates else ()):
            _check_rate(given, g, of, f, tt)
        if dx is None:
            dxs, dys = fdx, fdy
            how = "finite differences (numpy.gradient, edge_order=2)"
        else:
            dxs, dys, how = arrays["dx"], arrays["dy"], "given"
        return _assemble(name, state, tt, xs, ys, dxs, dys, xs, ys, energy, vector_field, test_split,
                         {"source": "from_trajectories", "derivatives": how, "test_split": test_split})

    def validate(self) -> "DynamicsDataset":
        """Check the dataset before it is used (``train_dynamics`` calls this): ``state`` known, every
        sample field (:data:`SAMPLE_FIELDS`) a floating ``(n, dim)`` tensor with ``n >= 1``, train
        and test fields each of one length, one dtype, all finite. Raises :class:`InputError` / :class:`ShapeError`
        naming the field and the first bad index; returns the dataset."""
        if self.state not in STATE_NAMES:
            raise InputError(f"dataset {self.name!r}: state {self.state!r} is not one of {sorted(STATE_NAMES)}.")
        dtype = None
        for part in (SAMPLE_FIELDS[:4], SAMPLE_FIELDS[4:]):
            n = None
            for k in part:
                v = getattr(self, k)
                if not isinstance(v, torch.Tensor) or not v.is_floating_point():
                    raise InputError(f"dataset field {k} must be a float tensor (n, {self.dim}), got "
                                     f"{getattr(v, 'dtype', type(v).__name__)}.")
                if v.dim() == 2 and v.shape[0] == 0:
                    raise ShapeError(f"dataset field {k} holds no sample (shape {tuple(v.shape)}): the "
                                     f"{'test' if k.startswith('test_') else 'training'} split is empty, and "
                                     "its loss would be NaN without a word. Keep at least one trajectory on "
                                     "each side of the split (more samples, or another test_split).")
                if v.dim() != 2 or v.shape[1] != self.dim or (n is not None and v.shape[0] != n):
                    want = f"({n}, {self.dim})" if n is not None else f"(n, {self.dim})"
                    raise ShapeError(f"dataset field {k} has shape {tuple(v.shape)}; expected {want} "
                                     f"(dim={self.dim}, one row per sample like {part[0]}).")
                if dtype is not None and v.dtype != dtype:
                    raise InputError(f"dataset field {k} is {v.dtype} but x is {dtype}; use one dtype.")
                n, dtype = v.shape[0], v.dtype
                _first_nonfinite(k, v)
        return self

    def trajectories(self, x0: torch.Tensor, y0: torch.Tensor, t: torch.Tensor):
        """Exact (DOP853) trajectories from states ``(batch, dim)`` at times ``t`` ->
        ``(len(t), batch, dim)`` twice. Needs the exact ``vector_field``."""
        if self.vector_field is None:
            raise InputError(f"dataset {self.name!r} has no exact vector_field (built from observed "
                             "trajectories), so exact trajectories cannot be computed: pass "
                             "vector_field= to from_trajectories if you know the dynamics.")
        xs, ys = _solve(self.vector_field, x0, y0, t.numpy())
        return xs, ys


def _as_float64(name, value) -> torch.Tensor:
    try:
        out = torch.as_tensor(value)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise InputError(f"{name} must be a tensor or array of numbers, got {type(value).__name__}.") from exc
    if not (out.is_floating_point() or out.dtype in (torch.int32, torch.int64)):
        raise InputError(f"{name} has dtype {out.dtype}; pass real numbers.")
    return out.detach().to(device="cpu", dtype=torch.float64).contiguous()


#: How well a given rate must track the finite differences of its trajectories for a verdict.
RATE_MIN_CORRELATION = 0.7
#: A given rate between these multiples of the finite-difference rate is consistent.
RATE_CONSISTENT = (0.8, 1.25)
#: The base relative tolerance of the integrated comparison (:func:`_check_integrated`), to which
#: the data's own finite-difference error estimate is added.
RATE_INTEGRATED_TOL = 0.05
#: (given rate) / (rate along t) -> the time units that give it
_TIME_UNITS = {1000.0: "per second beside t in milliseconds (or per ms beside t in microseconds)",
               1e-3: "per millisecond beside t in seconds", 60.0: "per minute beside t in seconds",
               1.0 / 60.0: "per second beside t in minutes", 3600.0: "per hour beside t in seconds",
               1.0 / 3600.0: "per second beside t in hours",
               180.0 / math.pi: "in degrees beside angles in radians (a rate in degrees per unit of t?)",
               math.pi / 180.0: "in radians beside angles in degrees"}


def window_averages(g: torch.Tensor, f: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(g_avg, f_mid)``: a given rate ``g`` (n_t, ...) averaged over each central-difference window
    by Simpson's rule, ``(g[k-1] + 4 g[k] + g[k+1]) / 6``, beside the central differences ``f`` at
    the same interior samples, when ``t`` is uniform (to 1e-6) and has 3 or more samples; else
    ``(g, f)`` themselves. A central difference is exactly the window's mean rate, so the two
    agree for right rates at any sampling (a sinusoid at 5 samples per period: 1.4 % apart, where
    the rate itself is 1.27x the difference), and nothing about the states' noise enters the
    comparison's scale."""
    n = t.shape[0]
    if n < 3:
        return g, f
    dt = t[1:] - t[:-1]
    if float((dt - dt.mean()).abs().max()) > 1e-6 * float(dt.mean().abs()):
        return g, f
    return (g[:-2] + 4.0 * g[1:-1] + g[2:]) / 6.0, f[1:-1]


def _check_rate(given: str, g: torch.Tensor, of: str, f: torch.Tensor, t: torch.Tensor) -> None:
    """InputError when ``g`` (the given rate ``given``) is clearly not the rate of change ``f`` of
    ``of`` along ``t`` (finite differences), compared window by window (:func:`window_averages`).
    Noise in either biases the scale one way (in ``f``: ``Σgf/Σf²`` low; in ``g``: ``Σg²/Σgf``
    high), so the true scale lies between the two; refused only when both lie outside
    :data:`RATE_CONSISTENT` on the same side, and the two track each other (correlation >=
    :data:`RATE_MIN_CORRELATION`): opposite sign, or another time unit. When they do not track
    each other (noise far above the rates' changes between samples) the check cannot tell, and
    says so in a warning. Rates that pass (or cannot be told) window by window are then compared
    integrated, with uniform t (:func:`_check_integrated`: a factor of mass, 1.2x, is refused
    there)."""
    g_raw = g
    g, f = window_averages(g, f, t)
    gg, ff, gf = float((g * g).sum()), float((f * f).sum()), float((g * f).sum())
    if gg <= 0.0 or ff <= 0.0:
        return
    # then, with uniform t, the windows' integrals summed (odd windows tile [t0, t_2j]) against the
    # displacements they add up to, which telescope, so the states' noise enters twice per
    # displacement instead of once per window over 2 dt: a 1.5x (p = m q̇ with m = 1.5, a mass
    # convention) passed the window-by-window band at 100 samples per period and noise 0.05 (its
    # bracket 0.8 to 1.5 straddled 1), and a 1.2x passed even exact data
    integrated = g.shape[0] != g_raw.shape[0] and g.shape[0] >= 3
    if abs(gf) < RATE_MIN_CORRELATION * math.sqrt(gg * ff):
        import warnings

        warnings.warn(
            f"{given} could not be checked against the rate of change of {of} along t: the two correlate by "
            f"{gf / math.sqrt(gg * ff):.2f} only (under {RATE_MIN_CORRELATION:g}; noise in the states far above "
            f"their change between samples?), so a {given} in another time unit or of the opposite sign would "
            "pass unseen. Check its unit and sign yourself (per unit of t).", stacklevel=4)
        if integrated:
            _check_integrated(given, g_raw, g, f, of, t)
        return
    low, high = gf / ff, gg / gf
    lo, hi = min(low, high), max(low, high)
    if RATE_CONSISTENT[0] <= hi and lo <= RATE_CONSISTENT[1]:
        if integrated:
            _check_integrated(given, g_raw, g, f, of, t)
        return
    scale = math.copysign(math.sqrt(lo * hi), gf)
    shown = f"{scale:.0f}" if abs(scale) >= 100 else f"{scale:.3g}"
    small, big = sorted((abs(low), abs(high)))
    if big > 1.1 * small:      # noise: the bracket, not one number
        shown = f"{math.copysign(small, gf):.3g} to {math.copysign(big, gf):.3g}"
    if scale < 0:
        cause = "of the opposite sign (the other convention's d/dt?)"
        faster = "" if abs(abs(scale) - 1) < 0.05 else f", {abs(scale):.3g}x as fast"
        effect = f"dynamics running backwards in time{faster}"
    else:
        from lawful.forcefields.label_consistency import nearest_factor

        cause = (nearest_factor(scale, _TIME_UNITS, tolerance=0.03)
                 or "per another unit of time than t's, or in other units than the trajectories")
        effect = f"dynamics {shown}x as fast as these trajectories move"
    raise InputError(
        f"{given} is {shown}x the rate of change of {of} along t (finite differences of the trajectories against "
        f"{given} averaged over the same windows, t from "
        f"{float(t[0]):g} to {float(t[-1]):g}): it looks {cause}. Training would learn {effect}. Give {given} "
        f"per unit of t, in the trajectories' units (if it is right, pass check_rates=False).")


def integrated_rate_tolerance(g_raw: torch.Tensor, g_avg: torch.Tensor) -> float:
    """The relative tolerance of the integrated comparison (:func:`_check_integrated`):
    :data:`RATE_INTEGRATED_TOL` plus the data's own estimate of the Simpson windows' error, the
    RMS of the trapezoid-minus-Simpson difference ``Δ²g / 12`` of the rate against the RMS of the
    windows' mean rates. That estimate is conservative (a sinusoid at 5 samples per period: 0.115
    for a true error of 0.014; at 20 per period 0.008), and noise in ``g`` only widens it."""
    d2 = g_raw[:-2] - 2.0 * g_raw[1:-1] + g_raw[2:]
    den = float((g_avg * g_avg).mean())
    if den <= 0.0:
        return math.inf
    return RATE_INTEGRATED_TOL + math.sqrt(float((d2 * d2).mean()) / den) / 12.0


def _check_integrated(given, g_raw, g_avg, f, of, t) -> None:
    """InputError when the given rate, integrated over the odd windows from t[0] (composite
    Simpson), differs from the displacements of ``of`` by a factor outside 1 ± the tolerance of
    :func:`integrated_rate_tolerance` (on both noise-biased estimates, as :func:`_check_rate`).
    Silent when the two do not track each other (correlation under
    :data:`RATE_MIN_CORRELATION`): the window-by-window check speaks for those."""
    tol = integrated_rate_tolerance(g_raw, g_avg)
    dt = float(t[1] - t[0])
    gi = torch.cumsum(2.0 * dt * g_avg[0::2], dim=0)       # ∫ g over [t0, t_2j], j = 1, 2, ...
    fi = torch.cumsum(2.0 * dt * f[0::2], dim=0)            # x(t_2j) - x(t0)
    # centred along t per trajectory: x(t0)'s noise is in every displacement, a common offset
    # that biased the comparison (exact rates of states with noise 0.1 read 0.92x)
    gi, fi = gi - gi.mean(0), fi - fi.mean(0)
    gg, ff, gf = float((gi * gi).sum()), float((fi * fi).sum()), float((gi * fi).sum())
    if gg <= 0.0 or ff <= 0.0 or abs(gf) < RATE_MIN_CORRELATION * math.sqrt(gg * ff):
        return
    lo, hi = sorted((gf / ff, gg / gf))
    if hi >= 1.0 / (1.0 + tol) and lo <= 1.0 + tol:
        return
    shown = f"{lo:.3g}" if hi <= 1.02 * lo else f"{lo:.3g} to {hi:.3g}"
    scale = math.copysign(math.sqrt(abs(lo * hi)), gf)
    if scale < 0:
        cause = "of the opposite sign (the other convention's d/dt?)"
    else:
        from lawful.forcefields.label_consistency import nearest_factor

        cause = (nearest_factor(scale, _TIME_UNITS, tolerance=0.03)
                 or "in other units than the trajectories (a factor of mass: p = m q̇ given for q̇, or "
                    "m q̈ for q̈?), or per another unit of time than t's")
    raise InputError(
        f"{given} is {shown}x the rate of change of {of} along t (its integral from t = {float(t[0]):g} by "
        f"Simpson's rule against the displacements of {of}; consistent within 1 ± {tol:.3g}, this data's "
        f"finite-difference error estimate included): it looks {cause}. Training would learn dynamics "
        f"{abs(scale):.3g}x as fast as these trajectories move. Give {given} per unit of t, in the "
        "trajectories' units (if it is right, pass check_rates=False).")


def _first_nonfinite(name: str, value: torch.Tensor) -> None:
    """InputError naming ``name`` and the index of its first NaN/inf entry, if any."""
    bad = ~torch.isfinite(value.detach())
    if bool(bad.any()):
        idx = tuple(int(i) for i in torch.nonzero(bad)[0])
        raise InputError(f"dataset field {name} holds {int(bad.sum())} NaN/inf value(s), the first at index "
                         f"{idx} ({float(value[idx])!r}): drop or fill those samples before training.")


def _solve(vf, x0: torch.Tensor, y0: torch.Tensor, t_eval: np.ndarray):
    from scipy.integrate import solve_ivp

    b, d = x0.shape

    def rhs(_t, z):
        zt = torch.from_numpy(z).reshape(2, b, d)
        dx, dy = vf(zt[0], zt[1])
        return torch.stack([dx, dy]).reshape(-1).numpy()

    z0 = torch.stack([x0, y0]).reshape(-1).numpy()
    sol = solve_ivp(rhs, (float(t_eval[0]), float(t_eval[-1])), z0, t_eval=t_eval,
                    method="DOP853", rtol=1e-11, atol=1e-12)
    if not sol.success:   # pragma: no cover - the systems here are smooth
        raise RuntimeError(f"reference integration failed: {sol.message}")
    z = torch.from_numpy(sol.y.T.copy()).reshape(len(t_eval), 2, b, d)
    return z[:, 0], z[:, 1]


def _build(name, state, vf, energy, x0, y0, t, noise_std, rng, test_split, meta):
    n_traj, dim = x0.shape
    xs, ys = _solve(vf, x0, y0, t)                               # (n_t, n_traj, dim)
    dxs, dys = vf(xs.reshape(-1, dim), ys.reshape(-1, dim))
    dxs, dys = dxs.reshape(xs.shape), dys.reshape(ys.shape)
    noise = torch.from_numpy(rng.normal(0.0, noise_std, size=(2,) + tuple(xs.shape)))
    ox, oy = xs + noise[0], ys + noise[1]
    return _assemble(name, state, torch.from_numpy(t), ox, oy, dxs, dys, xs, ys, energy, vf, test_split,
                     dict(meta, noise_std=noise_std, test_split=test_split))


def _assemble(name, state, t, ox, oy, dxs, dys, xs, ys, energy, vf, test_split, meta):
    """The dataset from ``(n_t, n_traj, dim)`` observed states ``ox, oy``, targets ``dxs, dys`` and
    test trajectories ``xs, ys``: the first ``round(n_traj * (1 - test_split))`` trajectories train,
    the rest test, with at least one trajectory on each side when there are two."""
    n_t, n_traj, dim = ox.shape
    # samples=2 with test_split=0.1 rounded to no test trajectory (test_loss NaN, rollouts of
    # none) and 0.9 to no training one
    n_train = min(max(int(round(n_traj * (1 - test_split))), 1), n_traj - 1)

    def flat(a, sl):
        return a[:, sl].transpose(0, 1).reshape(-1, dim).contiguous()

    tr, te = slice(0, n_train), slice(n_train, n_traj)
    return DynamicsDataset(
        name=name, state=state, dim=dim,
        x=flat(ox, tr), y=flat(oy, tr), dx=flat(dxs, tr), dy=flat(dys, tr),
        test_x=flat(ox, te), test_y=flat(oy, te), test_dx=flat(dxs, te), test_dy=flat(dys, te),
        t=t, traj_x=xs[:, te].contiguous(), traj_y=ys[:, te].contiguous(),
        energy=energy, vector_field=vf,
        meta=dict(meta, n_trajectories=n_traj, n_train=n_train * n_t, n_test=(n_traj - n_train) * n_t,
                  samples_per_trajectory=n_t, t_span=[float(t[0]), float(t[-1])]))


def _check_common(samples, noise_std, test_split):
    if not isinstance(samples, int) or samples < 2:
        raise InputError(f"samples (number of trajectories) must be an integer >= 2, got {samples!r}.")
    if not (isinstance(noise_std, (int, float)) and noise_std >= 0):
        raise InputError(f"noise_std must be a number >= 0, got {noise_std!r}.")
    if not (isinstance(test_split, float) and 0 < test_split < 1):
        raise InputError(f"test_split must be a float in (0, 1), got {test_split!r}.")


def _radial_initial_states(rng, n, r_min, r_max):
    z = rng.uniform(-1.0, 1.0, size=(n, 2))
    r = rng.uniform(r_min, r_max, size=(n, 1))
    z = z / np.linalg.norm(z, axis=1, keepdims=True) * r
    return torch.from_numpy(z[:, :1].copy()), torch.from_numpy(z[:, 1:].copy())


# ---------------------------------------------------------------- mass-spring
def _spring_energy(q, p):
    return (q * q).sum(-1) + (p * p).sum(-1)


def _spring_field(q, p):
    return 2.0 * p, -2.0 * q


def mass_spring(seed: int = 0, samples: int = 50, noise_std: float = 0.05,
                test_split: float = 0.5) -> DynamicsDataset:
    """Ideal mass-spring, H = q² + p² (k = 2, m = ½; see the module docstring)."""
    _check_common(samples, noise_std, test_split)
    rng = np.random.default_rng(seed)
    q0, p0 = _radial_initial_states(rng, samples, 0.1, 1.0)
    t = np.linspace(0.0, 3.0, 30)
    return _build("mass_spring", "canonical", _spring_field, _spring_energy, q0, p0, t, noise_std,
                  rng, test_split, {"seed": seed, "hamiltonian": "q^2 + p^2", "radius": [0.1, 1.0]})


# ---------------------------------------------------------------- pendulum
_PEND_G = 3.0


def _pend_energy(q, p):
    return (2.0 * _PEND_G * (1.0 - torch.cos(q)) + 0.5 * p * p).sum(-1)


def _pend_field(q, p):
    return p, -2.0 * _PEND_G * torch.sin(q)


def pendulum(seed: int = 0, samples: int = 50, noise_std: float = 0.05,
             test_split: float = 0.5) -> DynamicsDataset:
    """Ideal pendulum, H = 2mgl(1 − cos q) + l²p²/2m with m = l = 1, g = 3."""
    _check_common(samples, noise_std, test_split)
    rng = np.random.default_rng(seed)
    q0, p0 = _radial_initial_states(rng, samples, 1.3, 2.3)
    t = np.linspace(0.0, 3.0, 45)
    return _build("pendulum", "canonical", _pend_field, _pend_energy, q0, p0, t, noise_std, rng,
                  test_split, {"seed": seed, "hamiltonian": "6(1 - cos q) + p^2/2",
                               "radius": [1.3, 2.3]})


# ---------------------------------------------------------------- two-body
def _twobody_energy(q, p):
    r = torch.sqrt(((q[:, :2] - q[:, 2:]) ** 2).sum(-1))
    return 0.5 * (p * p).sum(-1) - 1.0 / r


def _twobody_field(q, p):
    d = q[:, 2:] - q[:, :2]                      # from body 1 to body 2
    r3 = ((d * d).sum(-1, keepdim=True)) ** 1.5
    a1 = d / r3
    return p.clone(), torch.cat([a1, -a1], dim=-1)


def two_body(seed: int = 0, samples: int = 100, noise_std: float = 0.05,
             test_split: float = 0.5, orbit_noise: float = 0.05) -> DynamicsDataset:
    """Two bodies (m = G = 1) on near-circular orbits about their centre of mass."""
    _check_common(samples, noise_std, test_split)
    rng = np.random.default_rng(seed)
    pos = rng.uniform(0.5, 1.5, size=(samples, 2))
    r = np.linalg.norm(pos, axis=1, keepdims=True)
    vel = pos[:, ::-1] / (2.0 * r ** 1.5)          # circular speed for separation 2r, m = G = 1
    vel[:, 0] *= -1.0
    vel *= 1.0 + orbit_noise * rng.standard_normal((samples, 1))
    q0 = torch.from_numpy(np.concatenate([pos, -pos], axis=1))
    p0 = torch.from_numpy(np.concatenate([vel, -vel], axis=1))
    t = np.linspace(0.0, 20.0, 50)
    return _build("two_body", "canonical", _twobody_field, _twobody_energy, q0, p0, t, noise_std,
                  rng, test_split, {"seed": seed, "orbit_noise": orbit_noise,
                                    "hamiltonian": "|p|^2/2 - 1/|q1 - q2|"})


# ---------------------------------------------------------------- double pendulum
_DP_G = 9.8


def double_pendulum_lagrangian(q, v):
    """L(θ, θ̇) of the double pendulum with m₁ = m₂ = l₁ = l₂ = 1, g = 9.8 -> (batch,)."""
    t1, t2, w1, w2 = q[:, 0], q[:, 1], v[:, 0], v[:, 1]
    return (w1 ** 2 + 0.5 * w2 ** 2 + w1 * w2 * torch.cos(t1 - t2)
            + 2.0 * _DP_G * torch.cos(t1) + _DP_G * torch.cos(t2))


def _dp_energy(q, v):
    t1, t2, w1, w2 = q[:, 0], q[:, 1], v[:, 0], v[:, 1]
    return (w1 ** 2 + 0.5 * w2 ** 2 + w1 * w2 * torch.cos(t1 - t2)
            - 2.0 * _DP_G * torch.cos(t1) - _DP_G * torch.cos(t2))


def _dp_field(q, v):
    t1, t2, w1, w2 = q[:, 0], q[:, 1], v[:, 0], v[:, 1]
    d = t1 - t2
    den = 3.0 - torch.cos(2.0 * d)
    g = _DP_G
    a1 = (-3.0 * g * torch.sin(t1) - g * torch.sin(t1 - 2.0 * t2)
          - 2.0 * torch.sin(d) * (w2 ** 2 + w1 ** 2 * torch.cos(d))) / den
    a2 = 2.0 * torch.sin(d) * (2.0 * w1 ** 2 + 2.0 * g * torch.cos(t1) + w2 ** 2 * torch.cos(d)) / den
    return v.clone(), torch.stack([a1, a2], dim=-1)


def double_pendulum(seed: int = 0, samples: int = 50, noise_std: float = 0.05,
                    test_split: float = 0.5) -> DynamicsDataset:
    """Double pendulum in (θ, θ̇) — the LNN benchmark; energy is T + V."""
    _check_common(samples, noise_std, test_split)
    rng = np.random.default_rng(seed)
    q0 = torch.from_numpy(rng.uniform(-1.0, 1.0, size=(samples, 2)))
    v0 = torch.from_numpy(rng.uniform(-1.0, 1.0, size=(samples, 2)))
    t = np.linspace(0.0, 5.0, 50)
    return _build("double_pendulum", "velocity", _dp_field, _dp_energy, q0, v0, t, noise_std, rng,
                  test_split, {"seed": seed, "masses": [1, 1], "lengths": [1, 1], "g": _DP_G})


SYSTEMS = {"mass_spring": mass_spring, "pendulum": pendulum, "two_body": two_body,
           "double_pendulum": double_pendulum}


def make_dataset(name: str, **kwargs) -> DynamicsDataset:
    """Build a dataset by name (one of :data:`SYSTEMS`)."""
    if name not in SYSTEMS:
        raise InputError(f"unknown system {name!r}: use one of {sorted(SYSTEMS)}.")
    return SYSTEMS[name](**kwargs)

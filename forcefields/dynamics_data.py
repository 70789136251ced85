"""The benchmark systems of the HNN and LNN papers, generated in-project with fixed seeds.

Each builder returns a :class:`DynamicsDataset`: noisy training/test states with exact time
derivatives as targets (the HNN paper's protocol: the derivative is evaluated on the clean
trajectory, Gaussian noise of std ``noise_std`` is then added to the observed state), a 50/50
split *by trajectory*, and the clean test trajectories for rollout metrics. The default noise is
0.05, half the 0.1 of the paper's code: figures are comparable with the paper's only at
``noise_std=0.1``.

Systems (the conventions of Greydanus et al. 2019 and its code):

* ``mass_spring``  — H = q² + p² (the paper's code; k = m = 2 in ½kq² + p²/2m), radius of the
  initial state uniform in [0.1, 1], 30 samples over t ∈ [0, 3].
* ``pendulum``     — H = 2mgl(1 − cos q) + l²p²/(2m), m = l = 1, g = 3 (the paper's text), radius
  uniform in [1.3, 2.3], 45 samples over t ∈ [0, 3].
* ``two_body``     — H = Σ|pᵢ|²/2mᵢ − G m₁m₂/|q₁ − q₂|, m = G = 1, near-circular orbits (the
  paper's generator: radius components in [0.5, 1.5], speed × (1 + 0.05 N(0,1))), 50 samples
  over t ∈ [0, 20]. q = (x₁, y₁, x₂, y₂), p the matching momenta.
* ``double_pendulum`` — the LNN paper's system, state (θ, θ̇) with m₁ = m₂ = l₁ = l₂ = 1, g = 9.8;
  angles uniform in [−1, 1] rad, angular velocities in [−1, 1] rad/s, 50 samples over t ∈ [0, 5].

Ground truth comes from SciPy's DOP853 at rtol 1e-11, independent of lawful's integrators.
All tensors are float64 on the CPU.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from lawful.kernels.errors import InputError

__all__ = ["DynamicsDataset", "mass_spring", "pendulum", "two_body", "double_pendulum",
           "SYSTEMS", "make_dataset"]


@dataclass
class DynamicsDataset:
    """Noisy samples of one system, split 50/50 by trajectory.

    x, y: observed training states ``(n_train, dim)`` (q and p, or q and q̇ when
    ``state == "velocity"``); dx, dy: exact time derivatives at the clean states. test_*: the same
    for the held-out trajectories. traj_x, traj_y: clean test trajectories ``(n_t, n_test_traj,
    dim)`` at times ``t`` (the first entry is each rollout's initial condition).
    energy(x, y) -> (batch,) and vector_field(x, y) -> (ẋ, ẏ) are the exact torch functions.
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
    energy: Callable = field(repr=False)
    vector_field: Callable = field(repr=False)
    meta: dict = field(default_factory=dict)

    def trajectories(self, x0: torch.Tensor, y0: torch.Tensor, t: torch.Tensor):
        """Exact (DOP853) trajectories from states ``(batch, dim)`` at times ``t`` ->
        ``(len(t), batch, dim)`` twice."""
        xs, ys = _solve(self.vector_field, x0, y0, t.numpy())
        return xs, ys


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
    n_train = int(round(n_traj * (1 - test_split)))

    def flat(a, sl):
        return a[:, sl].transpose(0, 1).reshape(-1, dim).contiguous()

    tr, te = slice(0, n_train), slice(n_train, n_traj)
    return DynamicsDataset(
        name=name, state=state, dim=dim,
        x=flat(ox, tr), y=flat(oy, tr), dx=flat(dxs, tr), dy=flat(dys, tr),
        test_x=flat(ox, te), test_y=flat(oy, te), test_dx=flat(dxs, te), test_dy=flat(dys, te),
        t=torch.from_numpy(t), traj_x=xs[:, te].contiguous(), traj_y=ys[:, te].contiguous(),
        energy=energy, vector_field=vf,
        meta=dict(meta, noise_std=noise_std, n_trajectories=n_traj, test_split=test_split,
                  n_train=n_train * len(t), n_test=(n_traj - n_train) * len(t),
                  samples_per_trajectory=len(t), t_span=[float(t[0]), float(t[-1])]))


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
    """Ideal mass-spring, H = q² + p² (see the module docstring)."""
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

"""HamiltonianNN: exact vector fields from analytic H, gradient checks, conservation, errors."""

import pytest
import torch

from lawful.forcefields.derivative_mlp import DerivativeMLP
from lawful.forcefields.hamiltonian import HamiltonianNN
from lawful.forcefields.integrators import integrate
from lawful.forcefields.lagrangian import LagrangianNN
from lawful.kernels import InputError, ShapeError

F64 = torch.float64


def _rand(*shape, seed=0):
    return torch.randn(*shape, dtype=F64, generator=torch.Generator().manual_seed(seed))


def test_symplectic_gradient_of_analytic_hamiltonian_is_exact():
    # non-separable, 2 degrees of freedom
    def h(q, p):
        return (0.5 * (p * p).sum(-1) + (1 - torch.cos(q)).sum(-1)
                + 0.1 * (q[:, 0] * p[:, 1]) ** 2)

    model = HamiltonianNN.from_function(h, dim=2)
    q, p = _rand(7, 2, seed=1), _rand(7, 2, seed=2)
    qdot, pdot = model.time_derivative(q, p)
    qdot_exact = p.clone()
    qdot_exact[:, 1] += 0.2 * q[:, 0] ** 2 * p[:, 1]
    pdot_exact = -torch.sin(q)
    pdot_exact[:, 0] -= 0.2 * q[:, 0] * p[:, 1] ** 2
    torch.testing.assert_close(qdot, qdot_exact, rtol=1e-14, atol=1e-14)
    torch.testing.assert_close(pdot, pdot_exact, rtol=1e-14, atol=1e-14)
    assert model.hamiltonian(q, p).shape == (7,)


def test_separable_analytic_velocity_and_force():
    model = HamiltonianNN.from_function(
        lambda q, p: 0.5 * (p * p).sum(-1) / 2.0 + (q ** 4).sum(-1), separable=True)
    q, p = _rand(4, 3, seed=3), _rand(4, 3, seed=4)
    torch.testing.assert_close(model.velocity(p), p / 2.0, rtol=1e-14, atol=1e-14)
    torch.testing.assert_close(model.force(q), -4 * q ** 3, rtol=1e-14, atol=1e-14)


@pytest.mark.parametrize("separable, mass", [(True, None), (True, 2.0), (False, None)])
def test_network_vector_field_matches_finite_differences_of_h(separable, mass):
    torch.manual_seed(0)
    model = HamiltonianNN(dim=2, separable=separable, hidden=32, mass=mass)
    q, p = _rand(5, 2, seed=5), _rand(5, 2, seed=6)
    qdot, pdot = model.time_derivative(q, p)
    eps = 1e-6
    for k in range(2):
        e = torch.zeros(1, 2, dtype=F64)
        e[0, k] = eps
        dh_dq = (model.hamiltonian(q + e, p) - model.hamiltonian(q - e, p)) / (2 * eps)
        dh_dp = (model.hamiltonian(q, p + e) - model.hamiltonian(q, p - e)) / (2 * eps)
        torch.testing.assert_close(qdot[:, k], dh_dp.detach(), rtol=1e-7, atol=1e-9)
        torch.testing.assert_close(pdot[:, k], -dh_dq.detach(), rtol=1e-7, atol=1e-9)
    if separable:
        torch.testing.assert_close(model.velocity(p), qdot)
        torch.testing.assert_close(model.force(q), pdot)
        # T depends on p only, V on q only
        torch.testing.assert_close(model.hamiltonian(q, p),
                                   (model.kinetic(p) + model.potential(q)).detach())


def test_learned_flow_conserves_its_own_hamiltonian():
    torch.manual_seed(1)
    model = HamiltonianNN(dim=2, separable=True, hidden=32)
    q0, p0 = 0.5 * _rand(8, 2, seed=7), 0.5 * _rand(8, 2, seed=8)
    h0 = model.hamiltonian(q0, p0).detach()
    q, p = integrate(model, (q0, p0), dt=0.02, steps=500, method="yoshida4", save_every=50)
    h = torch.stack([model.hamiltonian(q[i], p[i]).detach() for i in range(q.shape[0])])
    assert float((h - h0).abs().max()) < 1e-8 * (1 + float(h0.abs().max()))
    general = HamiltonianNN(dim=2, separable=False, hidden=32)
    g0 = general.hamiltonian(q0, p0).detach()
    q, p = integrate(general, (q0, p0), dt=0.02, steps=150, method="implicit_midpoint",
                     save_every=50)
    g = torch.stack([general.hamiltonian(q[i], p[i]).detach() for i in range(q.shape[0])])
    # midpoint rule: not exact for a non-quadratic H, but bounded O(dt²) error and no drift
    assert float((g - g0).abs().max()) < 1e-4


def test_gradients_reach_the_parameters_for_training():
    torch.manual_seed(2)
    model = HamiltonianNN(dim=1, separable=False, hidden=16)
    q, p = _rand(10, 1, seed=9), _rand(10, 1, seed=10)
    qdot, pdot = model.time_derivative(q, p, create_graph=True)
    loss = (qdot - p).pow(2).mean() + (pdot + q).pow(2).mean()
    loss.backward()
    named = dict(model.named_parameters())
    last_bias = [n for n in named if n.endswith("bias")][-1]   # H's additive constant: no force
    assert all(prm.grad is not None and float(prm.grad.abs().sum()) > 0
               for n, prm in named.items() if n != last_bias)
    assert named[last_bias].grad is None or float(named[last_bias].grad.abs().sum()) == 0
    # without create_graph the outputs are detached (cheap rollouts)
    qdot, _ = model.time_derivative(q, p)
    assert not qdot.requires_grad


def test_float32_and_single_state():
    model = HamiltonianNN(dim=1, dtype=torch.float32, hidden=8)
    h = model.hamiltonian(torch.zeros(1, dtype=torch.float32), torch.ones(1, dtype=torch.float32))
    assert h.shape == (1,) and h.dtype == torch.float32


@pytest.mark.parametrize("make, match", [
    (lambda: HamiltonianNN(dim=1, hidden=8, mass=True), "mass must be a positive number"),
    (lambda: HamiltonianNN(dim=True, hidden=8), "dim must be a positive integer"),
    (lambda: LagrangianNN(dim=1, hidden=8, kinetic_prior=True), "kinetic_prior must be a number"),
    (lambda: LagrangianNN(dim=1, hidden=8, max_condition=True), "max_condition must be a number"),
])
def test_a_bool_is_not_a_number_of_the_model(make, match):
    """HamiltonianNN(mass=True) was accepted as mass 1.0 (bool passes isinstance(.., int))."""
    with pytest.raises(InputError, match=match):
        make()


def test_bad_inputs_raise_clear_errors():
    model = HamiltonianNN(dim=2, hidden=8)
    with pytest.raises(ShapeError, match=r"expected \(batch, 2\)"):
        model.hamiltonian(torch.zeros(3, 1, dtype=F64), torch.zeros(3, 1, dtype=F64))
    with pytest.raises(ShapeError, match="must match"):
        model.hamiltonian(torch.zeros(3, 2, dtype=F64), torch.zeros(4, 2, dtype=F64))
    with pytest.raises(InputError, match="NaN"):
        model.time_derivative(torch.full((1, 2), float("nan"), dtype=F64),
                              torch.zeros(1, 2, dtype=F64))
    with pytest.raises(InputError, match="dtype"):
        model.hamiltonian(torch.zeros(1, 2, dtype=torch.int64), torch.zeros(1, 2, dtype=F64))
    with pytest.raises(InputError, match="dim"):
        HamiltonianNN(dim=0)
    with pytest.raises(InputError, match="mass"):
        HamiltonianNN(dim=1, separable=False, mass=1.0)
    with pytest.raises(InputError, match="mass"):
        HamiltonianNN(dim=1, mass=-1.0)
    with pytest.raises(InputError, match="activation"):
        HamiltonianNN(dim=1, activation="relu")
    with pytest.raises(InputError, match="callable"):
        HamiltonianNN.from_function(3.0)
    bad = HamiltonianNN.from_function(lambda q, p: (q * p))
    with pytest.raises(ShapeError, match="one value per sample"):
        bad.hamiltonian(torch.zeros(3, 2, dtype=F64), torch.zeros(3, 2, dtype=F64))
    general = HamiltonianNN(dim=1, separable=False, hidden=8)
    with pytest.raises(InputError, match="separable"):
        general.force(torch.zeros(1, 1, dtype=F64))
    with pytest.raises(InputError, match="separable"):
        general.kinetic(torch.zeros(1, 1, dtype=F64))
    with pytest.raises(InputError, match="implicit_midpoint"):
        integrate(DerivativeMLP(dim=1, hidden=8), (torch.zeros(1, 1, dtype=F64),) * 2, 0.1, 3)


# ---------------------------------------------------------------- data and training
@pytest.mark.parametrize("system", ["mass_spring", "pendulum", "two_body"])
def test_benchmark_data_is_exact_and_reproducible(system):
    from lawful.forcefields.dynamics_data import make_dataset

    data = make_dataset(system, seed=3)
    again = make_dataset(system, seed=3)
    torch.testing.assert_close(data.x, again.x, rtol=0, atol=0)     # fixed seed, same data
    assert not torch.equal(data.x, make_dataset(system, seed=4).x)
    n_t, n_traj, dim = data.traj_x.shape
    assert data.test_x.shape == (n_t * n_traj, dim) and data.x.shape[0] == data.test_x.shape[0]
    # the clean trajectories conserve the energy, and the targets are the exact vector field
    e = data.energy(data.traj_x.reshape(-1, dim), data.traj_y.reshape(-1, dim)).reshape(n_t, -1)
    assert float((e - e[:1]).abs().max()) < 1e-8
    model = HamiltonianNN.from_function(data.energy, dim=dim)
    clean_x = data.traj_x.transpose(0, 1).reshape(-1, dim)
    clean_y = data.traj_y.transpose(0, 1).reshape(-1, dim)
    dq, dp = model.time_derivative(clean_x, clean_y)
    torch.testing.assert_close(dq, data.test_dx, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(dp, data.test_dy, rtol=1e-12, atol=1e-12)
    # observed states carry the requested noise
    noise = torch.cat([data.test_x - clean_x, data.test_y - clean_y])
    assert 0.04 < float(noise.std()) < 0.06


def test_training_hnn_and_constrained_baselines_on_mass_spring():
    from lawful.forcefields.dynamics_data import mass_spring
    from lawful.forcefields.dynamics_training import (long_horizon_drift, rollout_metrics,
                                                      train_dynamics)
    from lawful.kernels import AugmentedLagrangian

    data = mass_spring(seed=0, samples=20)
    torch.manual_seed(0)
    hnn = HamiltonianNN(dim=1, hidden=32)
    res = train_dynamics(hnn, data, steps=300, lr=1e-2)
    # the noise floor: targets are exact, inputs carry σ = 0.05 noise on a field of slope 2
    assert res.test_loss < 0.02
    roll = rollout_metrics(hnn, data, horizon=5.0, dt=0.05)
    assert roll["energy_mse"] < 1e-3
    drift = long_horizon_drift(hnn, data, dt=0.1, steps=1000, method="leapfrog")
    assert drift["model_energy_final_abs"] < 1e-2 and drift["finite"]

    torch.manual_seed(0)
    plain = DerivativeMLP(dim=1, hidden=32)
    r_plain = train_dynamics(plain, data, steps=300, lr=1e-2)
    torch.manual_seed(0)
    al = AugmentedLagrangian(penalty=2.0, reduction="mean")
    r_al = train_dynamics(DerivativeMLP(dim=1, hidden=32), data, steps=300, lr=1e-2,
                          constraint=al, constraint_every=30)
    assert al.iterations == 10
    assert r_al.violation_rms < 0.5 * r_plain.violation_rms     # dE/dt pushed towards 0
    with pytest.raises(InputError, match="full batch"):
        train_dynamics(plain, data, steps=1, constraint=al, batch_size=8)
    with pytest.raises(InputError, match="no trainable parameters"):
        train_dynamics(HamiltonianNN.from_function(data.energy), data, steps=1)


@pytest.mark.parametrize("energy_unit", [1.0, 1e-9, 1e-20])
def test_the_separability_check_does_not_depend_on_the_energy_unit(energy_unit):
    """The check compared the gap in ∂H against an absolute 1e-8 (x (1 + max|∂H|)): the
    non-separable H = ½p²(1 + q²) + ½q² written in a small energy unit (1e-9, or joules for a
    molecule, 1e-20) passed as separable, and leapfrog integrated another system silently. A
    truly separable H in the same units must still pass."""
    q0, p0 = torch.ones(2, 1, dtype=F64), torch.tensor([[1.0], [0.0]], dtype=F64)

    def coupled(q, p):
        return energy_unit * (0.5 * p * p * (1 + q * q) + 0.5 * q * q).sum(-1)

    def pendulum(q, p):
        return energy_unit * (0.5 * p * p + 1.0 - torch.cos(q)).sum(-1)

    wrong = HamiltonianNN.from_function(coupled, dim=1, separable=True)
    with pytest.raises(InputError, match="declared separable=True but is not"):
        wrong.check_separable(q0, p0)
    with pytest.raises(InputError, match="declared separable=True but is not"):
        integrate(wrong, (q0, p0), 0.1, 3, "leapfrog")
    right = HamiltonianNN.from_function(pendulum, dim=1, separable=True)
    right.check_separable(q0, p0)
    right.check_separable(torch.zeros(1, 1, dtype=F64), torch.zeros(1, 1, dtype=F64))
    q, p = integrate(right, (q0, p0), 0.1, 3, "leapfrog")
    assert q.shape == (4, 2, 1)


@pytest.mark.parametrize("mass", [float("inf"), float("nan"), 0.0])
def test_an_infinite_mass_is_refused_not_a_frozen_system(mass):
    """mass=inf was accepted: T = 0, q̇ = p/inf = 0, a system that never moves, silently."""
    with pytest.raises(InputError, match="mass must be a positive number, finite"):
        HamiltonianNN(dim=1, hidden=8, mass=mass)

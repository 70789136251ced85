"""LagrangianNN: exact accelerations for analytic pendulum / double pendulum, energy, errors."""

import math

import pytest
import torch

from lawful.forcefields.integrators import integrate
from lawful.forcefields.lagrangian import LagrangianNN
from lawful.kernels import InputError, NumericalError, ShapeError

F64 = torch.float64


def _rand(*shape, seed=0):
    return torch.randn(*shape, dtype=F64, generator=torch.Generator().manual_seed(seed))


M1, M2, L1, L2, G = 1.3, 0.7, 1.1, 0.9, 9.81


def double_pendulum_L(q, v):
    t1, t2 = q[:, 0], q[:, 1]
    w1, w2 = v[:, 0], v[:, 1]
    kin = (0.5 * (M1 + M2) * L1 ** 2 * w1 ** 2 + 0.5 * M2 * L2 ** 2 * w2 ** 2
           + M2 * L1 * L2 * w1 * w2 * torch.cos(t1 - t2))
    pot = -(M1 + M2) * G * L1 * torch.cos(t1) - M2 * G * L2 * torch.cos(t2)
    return kin - pot


def double_pendulum_qdd(q, v):
    """The textbook closed-form equations of motion (angles from the downward vertical)."""
    t1, t2 = q[:, 0], q[:, 1]
    w1, w2 = v[:, 0], v[:, 1]
    d = t1 - t2
    den = 2 * M1 + M2 - M2 * torch.cos(2 * t1 - 2 * t2)
    a1 = (-G * (2 * M1 + M2) * torch.sin(t1) - M2 * G * torch.sin(t1 - 2 * t2)
          - 2 * torch.sin(d) * M2 * (w2 ** 2 * L2 + w1 ** 2 * L1 * torch.cos(d))) / (L1 * den)
    a2 = (2 * torch.sin(d) * (w1 ** 2 * L1 * (M1 + M2) + G * (M1 + M2) * torch.cos(t1)
                             + w2 ** 2 * L2 * M2 * torch.cos(d))) / (L2 * den)
    return torch.stack([a1, a2], dim=1)


def test_pendulum_accelerations_are_exact():
    m, l, g = 2.0, 1.5, 9.81
    lnn = LagrangianNN.from_function(
        lambda q, v: 0.5 * m * l ** 2 * (v ** 2).sum(-1) + m * g * l * torch.cos(q).sum(-1), dim=1)
    q = torch.linspace(-3.0, 3.0, 13, dtype=F64)[:, None]
    v = torch.linspace(-2.0, 2.0, 13, dtype=F64)[:, None]
    torch.testing.assert_close(lnn.accelerations(q, v), -(g / l) * torch.sin(q),
                               rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(lnn.energy(q, v),
                               (0.5 * m * l ** 2 * v ** 2 - m * g * l * torch.cos(q))[:, 0],
                               rtol=1e-13, atol=1e-13)


def test_double_pendulum_accelerations_match_closed_form():
    lnn = LagrangianNN.from_function(double_pendulum_L, dim=2)
    q = math.pi * (2 * torch.rand(64, 2, dtype=F64, generator=torch.Generator().manual_seed(0)) - 1)
    v = 3.0 * _rand(64, 2, seed=1)
    torch.testing.assert_close(lnn.accelerations(q, v), double_pendulum_qdd(q, v),
                               rtol=1e-11, atol=1e-11)
    # energy = T + V
    t1, t2 = q[:, 0], q[:, 1]
    w1, w2 = v[:, 0], v[:, 1]
    e = (0.5 * (M1 + M2) * L1 ** 2 * w1 ** 2 + 0.5 * M2 * L2 ** 2 * w2 ** 2
         + M2 * L1 * L2 * w1 * w2 * torch.cos(t1 - t2)
         - (M1 + M2) * G * L1 * torch.cos(t1) - M2 * G * L2 * torch.cos(t2))
    torch.testing.assert_close(lnn.energy(q, v), e, rtol=1e-12, atol=1e-12)
    mm = lnn.mass_matrix(q, v)
    assert mm.shape == (64, 2, 2)
    torch.testing.assert_close(mm[:, 0, 1], M2 * L1 * L2 * torch.cos(t1 - t2))


def test_learned_lagrangian_flow_conserves_its_energy():
    # E = q̇·∂L/∂q̇ − L must be constant along the flow the same L generates; RK4 at a small
    # step converges to it (error ∝ dt⁴): a consistency check of accelerations() and energy()
    torch.manual_seed(0)
    lnn = LagrangianNN(dim=2, hidden=32)
    with torch.no_grad():   # add a positive-definite kinetic term so that M is well conditioned
        base = lnn._l
    lnn._l = lambda q, v: base(q, v) + 0.5 * (v * v).sum(-1)
    q0, v0 = 0.5 * _rand(6, 2, seed=2), 0.5 * _rand(6, 2, seed=3)
    e0 = lnn.energy(q0, v0).detach()
    errs = []
    for n in (50, 100):
        q, v = integrate(lnn, (q0, v0), dt=1.0 / n, steps=n, method="rk4")
        errs.append(float((lnn.energy(q[-1], v[-1]).detach() - e0).abs().max()))
    assert errs[1] < 1e-7
    assert errs[0] / errs[1] > 10.0       # ~16 for a 4th-order method


def test_gradients_reach_the_parameters():
    torch.manual_seed(1)
    lnn = LagrangianNN(dim=2, hidden=16)
    q, v = _rand(8, 2, seed=4), _rand(8, 2, seed=5)
    acc = lnn.accelerations(q, v, create_graph=True)
    acc.pow(2).mean().backward()
    grads = [prm.grad for prm in lnn.parameters()]
    assert sum(g is not None and float(g.abs().sum()) > 0 for g in grads) >= len(grads) - 1
    assert not lnn.accelerations(q, v).requires_grad


def test_singular_mass_matrix_raises_numerical_error():
    # L depends on q̇ only through q̇₁ + q̇₂: the mass matrix [[1, 1], [1, 1]] is singular
    lnn = LagrangianNN.from_function(
        lambda q, v: 0.5 * (v[:, 0] + v[:, 1]) ** 2 - (q * q).sum(-1), dim=2)
    q, v = _rand(3, 2, seed=6), _rand(3, 2, seed=7)
    with pytest.raises(NumericalError, match="singular or ill-conditioned at sample"):
        lnn.accelerations(q, v)
    # nearly singular also refused, with the condition number in the message
    eps = 1e-14
    near = LagrangianNN.from_function(
        lambda q, v: 0.5 * (v[:, 0] + v[:, 1]) ** 2 + 0.5 * eps * v[:, 1] ** 2, dim=2)
    with pytest.raises(NumericalError, match="condition number"):
        near.accelerations(q, v)
    # and accepted once max_condition allows it
    ok = LagrangianNN.from_function(
        lambda q, v: 0.5 * (v[:, 0] + v[:, 1]) ** 2 + 0.5 * 1e-3 * v[:, 1] ** 2, dim=2,
        max_condition=1e5)
    assert torch.isfinite(ok.accelerations(q, v)).all()


def test_bad_inputs_raise_clear_errors():
    lnn = LagrangianNN(dim=2, hidden=8)
    with pytest.raises(ShapeError, match=r"expected \(batch, 2\)"):
        lnn.accelerations(torch.zeros(3, 3, dtype=F64), torch.zeros(3, 3, dtype=F64))
    with pytest.raises(ShapeError, match="must match"):
        lnn.energy(torch.zeros(3, 2, dtype=F64), torch.zeros(2, 2, dtype=F64))
    with pytest.raises(InputError, match="NaN"):
        lnn.accelerations(torch.zeros(1, 2, dtype=F64), torch.full((1, 2), float("inf"), dtype=F64))
    with pytest.raises(InputError, match="max_condition"):
        LagrangianNN(dim=2, max_condition=0.5)
    with pytest.raises(InputError, match="callable"):
        LagrangianNN.from_function("L")
    bad = LagrangianNN.from_function(lambda q, v: q * v, dim=2)
    with pytest.raises(ShapeError, match="one value per sample"):
        bad.lagrangian(torch.zeros(3, 2, dtype=F64), torch.zeros(3, 2, dtype=F64))
    with pytest.raises(InputError, match="separable"):
        integrate(lnn, (torch.zeros(1, 2, dtype=F64),) * 2, 0.1, 2, method="leapfrog")


def test_double_pendulum_data_agrees_with_the_lnn_machinery():
    from lawful.forcefields.dynamics_data import double_pendulum, double_pendulum_lagrangian

    data = double_pendulum(seed=0, samples=4)
    lnn = LagrangianNN.from_function(double_pendulum_lagrangian, dim=2)
    n_t, n_traj, dim = data.traj_x.shape
    q = data.traj_x.transpose(0, 1).reshape(-1, dim)
    v = data.traj_y.transpose(0, 1).reshape(-1, dim)
    # the data's closed-form equations of motion == Euler–Lagrange through torch.func
    torch.testing.assert_close(lnn.accelerations(q, v), data.test_dy, rtol=1e-11, atol=1e-11)
    torch.testing.assert_close(lnn.energy(q, v), data.energy(q, v), rtol=1e-12, atol=1e-12)
    e = data.energy(q, v).reshape(n_traj, n_t)
    assert float((e - e[:, :1]).abs().max()) < 1e-8


def test_kinetic_prior_makes_the_initial_mass_matrix_positive_definite():
    torch.manual_seed(0)
    q, v = _rand(16, 2, seed=8), _rand(16, 2, seed=9)
    bare = LagrangianNN(dim=2, hidden=32)
    prior = LagrangianNN(dim=2, hidden=32, kinetic_prior=1.0)
    prior.load_state_dict(bare.state_dict())
    diff = prior.mass_matrix(q, v) - bare.mass_matrix(q, v)
    torch.testing.assert_close(diff, torch.eye(2, dtype=F64).expand(16, 2, 2))
    assert float(torch.linalg.eigvalsh(prior.mass_matrix(q, v)).min()) > 0.5
    with pytest.raises(InputError, match="kinetic_prior"):
        LagrangianNN(dim=2, kinetic_prior=-1.0)

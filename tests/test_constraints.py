"""SoftPenalty and AugmentedLagrangian on a toy constrained problem, plus their error messages."""

import math

import pytest
import torch

from lawful.kernels import InputError, NumericalError, ShapeError
from lawful.kernels.constraints import AugmentedLagrangian, SoftPenalty

A = torch.tensor([2.0, 1.0], dtype=torch.float64)   # minimise ||x - A||² on the unit circle


def objective(x):
    return ((x - A) ** 2).sum()


def circle(x):
    return (x * x).sum(-1, keepdim=True) - 1.0   # violation, shape (1,)


def _inner_minimise(x, loss_fn):
    opt = torch.optim.LBFGS([x], lr=1.0, max_iter=200, tolerance_grad=1e-14,
                            tolerance_change=1e-16, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = loss_fn()
        loss.backward()
        return loss

    opt.step(closure)


def test_soft_penalty_leaves_an_order_one_over_lambda_violation():
    lam = 10.0
    x = torch.tensor([0.3, 0.2], dtype=torch.float64, requires_grad=True)
    pen = SoftPenalty(lam)
    _inner_minimise(x, lambda: objective(x) + pen.loss(circle, x))
    v = abs(float(circle(x.detach())))
    # analytic optimum: x (1 + 2λc) = A with c = r² - 1, r = |x|  ->  r (1 + 2λ(r² - 1)) = |A|
    r = 1.0
    for _ in range(50):   # Newton on the scalar equation
        r -= (r * (1 + 2 * lam * (r * r - 1)) - math.sqrt(5)) / (1 + 2 * lam * (3 * r * r - 1))
    c = r * r - 1
    assert v == pytest.approx(c, rel=1e-6)
    assert v > 1e-2


def test_augmented_lagrangian_reaches_1e_minus_6_where_soft_penalty_at_same_lambda_does_not():
    lam = 10.0
    # the same quadratic coefficient: SoftPenalty weight λ == AL penalty μ/2; μ never grows here
    al = AugmentedLagrangian(penalty=2 * lam, growth=1.0)
    x = torch.tensor([0.3, 0.2], dtype=torch.float64, requires_grad=True)
    history = []
    for _ in range(30):
        _inner_minimise(x, lambda: objective(x) + al.loss(circle, x))
        state = al.update(circle, x.detach())
        history.append(state["violation_norm"])
        if history[-1] < 1e-9:
            break
    assert history[-1] < 1e-6, history
    assert al.penalty == 2 * lam            # the multipliers did the work, not a growing penalty
    x_star = A / A.norm()
    assert torch.allclose(x.detach(), x_star, atol=1e-6)
    # the multiplier converges to the exact Lagrange multiplier of  min f s.t. c = 0:
    # 2(x - A) + λ* 2x = 0  ->  λ* = |A| - 1
    assert float(al.multipliers) == pytest.approx(math.sqrt(5) - 1, rel=1e-5)
    # the violation falls monotonically (linear convergence of the method of multipliers)
    assert all(b < a for a, b in zip(history, history[1:]))


def test_penalty_grows_when_violation_stalls():
    al = AugmentedLagrangian(penalty=1.0, growth=3.0, shrink=0.25, max_penalty=5.0)
    v = torch.ones(3, dtype=torch.float64)
    al.update(v)
    assert al.penalty == 1.0
    al.update(v)            # same norm: did not shrink by 4x -> grow
    assert al.penalty == 3.0
    al.update(v)
    assert al.penalty == 5.0   # capped
    al.update(v * 0.01)     # shrank enough -> keep
    assert al.penalty == 5.0
    # reset() is the constructor's state again, the penalty included (it kept the grown one)
    al.reset()
    assert (al.penalty, al.multipliers, al.last_norm, al.iterations) == (1.0, None, None, 0)
    al.update(v)
    assert al.penalty == 1.0 and torch.equal(al.multipliers, v)


@pytest.mark.parametrize("tolerance, norms, penalties", [
    (0.0, [1e-3, 1e-3, 1e-3, 1e-3], [1.0, 2.0, 4.0, 8.0]),        # a settled floor doubles mu every update
    (1e-2, [1e-3, 1e-3, 1e-3, 1e-3], [1.0, 1.0, 1.0, 1.0]),       # ... unless the floor counts as met
    (1e-2, [1e-2, 1e-2, 1e-2], [1.0, 1.0, 1.0]),                  # at the tolerance: met
    (1e-2, [1.0, 1.0, 0.5, 2e-2, 2e-2], [1.0, 2.0, 4.0, 4.0, 8.0]),  # above it: the usual rule
])
def test_penalty_stops_growing_once_the_violation_is_within_tolerance(tolerance, norms, penalties):
    al = AugmentedLagrangian(penalty=1.0, growth=2.0, shrink=0.25, tolerance=tolerance)
    got = []
    for n in norms:
        al.update(torch.tensor([0.6 * n, 0.8 * n], dtype=torch.float64))
        got.append(al.penalty)
    assert got == penalties
    assert al.state()["tolerance"] == tolerance


def test_a_noisy_inner_solve_keeps_its_penalty_with_a_tolerance():
    """min |x - A|^2 s.t. |x|^2 = 1, each inner solve exact but the violation it reports carrying a
    floor of noise (a stochastic inner solve): without a tolerance mu doubles to its cap while the
    constraint is already met to the floor; with one at the floor's size mu stays where it was and
    the multiplier still converges to the exact one, |A| - 1."""
    A = torch.tensor([1.0, 2.0], dtype=torch.float64)
    gen = torch.Generator().manual_seed(0)

    def run(tolerance):
        al = AugmentedLagrangian(penalty=4.0, growth=2.0, shrink=0.25, tolerance=tolerance)
        for _ in range(40):
            x = A.clone().requires_grad_(True)
            opt = torch.optim.LBFGS([x], max_iter=200, tolerance_grad=1e-14, tolerance_change=1e-16)

            def closure():
                opt.zero_grad()
                f = ((x - A) ** 2).sum() + al.loss((x * x).sum() - 1.0)
                f.backward()
                return f

            opt.step(closure)
            noise = 1e-6 * (2 * torch.rand((), generator=gen, dtype=torch.float64) - 1)
            al.update(((x * x).sum() - 1.0).detach() + noise)
        return al, x.detach()

    plain, _ = run(0.0)
    tol, x = run(2e-6)
    assert plain.penalty >= 4.0 * 2 ** 10            # grew on the noise floor
    assert tol.penalty <= 16.0
    assert float((x * x).sum() - 1.0) == pytest.approx(0.0, abs=1e-5)
    assert float(tol.multipliers) == pytest.approx(math.sqrt(5) - 1, rel=1e-4)


def test_loss_values_and_gradients():
    v = torch.tensor([0.5, -1.0], dtype=torch.float64, requires_grad=True)
    assert float(SoftPenalty(3.0).loss(v.detach())) == pytest.approx(3.0 * 1.25)
    assert float(SoftPenalty(3.0, reduction="mean").loss(v.detach())) == pytest.approx(3.0 * 1.25 / 2)
    al = AugmentedLagrangian(penalty=4.0)
    al.multipliers = torch.tensor([1.0, 2.0], dtype=torch.float64)
    out = al.loss(v)
    assert float(out.detach()) == pytest.approx(0.5 - 2.0 + 2.0 * 1.25)
    (g,) = torch.autograd.grad(out, v)
    assert torch.allclose(g, torch.tensor([1.0, 2.0], dtype=torch.float64) + 4.0 * v.detach())


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(InputError, match="positive"):
        SoftPenalty(-1.0)
    with pytest.raises(InputError, match="positive"):
        SoftPenalty("abc")
    with pytest.raises(InputError, match="growth"):
        AugmentedLagrangian(growth=0.5)
    with pytest.raises(InputError, match="max_penalty"):
        AugmentedLagrangian(penalty=10.0, max_penalty=1.0)
    for bad in (-1e-3, float("nan"), float("inf")):
        with pytest.raises(InputError, match="tolerance must be a finite number >= 0"):
            AugmentedLagrangian(tolerance=bad)
    with pytest.raises(InputError, match="torch tensor"):
        SoftPenalty(1.0).loss([1.0, 2.0])
    with pytest.raises(InputError, match="floating"):
        SoftPenalty(1.0).loss(torch.tensor([1, 2]))
    with pytest.raises(NumericalError, match="NaN"):
        AugmentedLagrangian().loss(lambda: torch.tensor([float("nan")]))
    al = AugmentedLagrangian()
    al.update(torch.zeros(4))
    with pytest.raises(ShapeError, match="shape"):
        al.loss(torch.zeros(5))


@pytest.mark.parametrize("radius, active", [(1.0, True), (3.0, False)])
def test_the_inequality_form_finds_the_constrained_optimum_and_frees_an_inactive_constraint(radius, active):
    """min ||x - A||² s.t. ||x||² - r² <= 0 (|A| = sqrt 5): on the circle with the Lagrange
    multiplier |A|/r - 1 when r < |A|; the free optimum A with the multiplier back at 0 when the
    constraint does not bind. As an equality on a quantity that cannot be negative (an RMS), the
    multipliers could only grow (corrector audit M1)."""
    al = AugmentedLagrangian(penalty=4.0, growth=1.0, inequality=True)
    x = torch.tensor([0.3, 0.2], dtype=torch.float64, requires_grad=True)

    def c(x):
        return (x * x).sum().reshape(1) - radius ** 2

    for _ in range(40):
        _inner_minimise(x, lambda: objective(x) + al.loss(c, x))
        al.update(c, x.detach())
    if active:
        assert torch.allclose(x.detach(), A / A.norm() * radius, atol=1e-6)
        # 2(x - A) + 2 λ x = 0 on the circle: λ = |A|/r - 1
        assert float(al.multipliers) == pytest.approx(math.sqrt(5) / radius - 1, rel=1e-5)
    else:
        assert torch.allclose(x.detach(), A, atol=1e-6)
        assert float(al.multipliers) == 0.0
        assert al.state()["violation_norm"] == 0.0 or al.state()["violation_norm"] < 1e-12
    assert al.penalty == 4.0


def test_inequality_loss_values_and_gradients():
    al = AugmentedLagrangian(penalty=4.0, inequality=True)
    al.multipliers = torch.tensor([1.0, 2.0], dtype=torch.float64)
    v = torch.tensor([0.5, -1.0], dtype=torch.float64, requires_grad=True)
    out = al.loss(v)
    # (max(0, λ + μ v)² - λ²) / 2μ: (3² - 1)/8 + (0 - 4)/8
    assert float(out.detach()) == pytest.approx((9.0 - 1.0) / 8.0 - 4.0 / 8.0)
    (g,) = torch.autograd.grad(out, v)
    assert torch.allclose(g, torch.tensor([3.0, 0.0], dtype=torch.float64))
    state = al.update(v.detach())
    assert torch.equal(al.multipliers, torch.tensor([3.0, 0.0], dtype=torch.float64))
    # the growth norm: max(v, -λ/μ) = (0.5, -0.5)
    assert state["violation_norm"] == pytest.approx(math.sqrt(0.5))

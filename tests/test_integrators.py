"""Integrators: long-run energy behaviour, convergence orders, quadratic invariants, errors."""

import math

import pytest
import torch

from lawful.forcefields.hamiltonian import HamiltonianNN
from lawful.forcefields.integrators import METHODS, energy_drift, integrate
from lawful.kernels import ConvergenceError, InputError, NumericalError, ShapeError

F64 = torch.float64


def ho_energy(q, p):
    return 0.5 * (q * q + p * p).sum(-1)


HO = HamiltonianNN.from_function(ho_energy, separable=True)


def _energy_series(q, p, fn=ho_energy):
    n, b, d = q.shape
    return fn(q.reshape(n * b, d), p.reshape(n * b, d)).reshape(n, b)


class Oscillator:
    """The analytic oscillator H = (q² + p²)/2 through the integrator protocol, in closed form
    (no autograd), so that 1e5 steps take seconds. The autograd path (HamiltonianNN.from_function)
    is exercised by the order and invariant tests below and in test_hamiltonian.py."""

    separable = True

    @staticmethod
    def velocity(p):
        return p

    @staticmethod
    def force(q):
        return -q

    @staticmethod
    def time_derivative(q, p):
        return p, -q


@pytest.fixture(scope="module")
def long_runs():
    """1e5 steps of dt = 0.3 (~4800 periods) for 16 amplitudes at once, per method."""
    q0 = torch.linspace(0.2, 2.0, 16, dtype=F64)[:, None]
    p0 = torch.zeros_like(q0)
    out = {}
    for method in ("leapfrog", "yoshida4", "rk4"):
        q, p = integrate(Oscillator(), (q0, p0), dt=0.3, steps=100_000, method=method,
                         save_every=250)
        e = _energy_series(q, p)
        out[method] = (e - e[:1]) / e[:1]          # relative energy error, (401, 16)
    return out


@pytest.mark.parametrize("method, bound", [("leapfrog", 0.03), ("yoshida4", 1e-3)])
def test_symplectic_methods_keep_energy_bounded_over_1e5_steps(long_runs, method, bound):
    rel = long_runs[method]
    assert float(rel.abs().max()) < bound
    # no secular drift: the mean error over the last tenth equals that over the first tenth
    # (after the first save) to a small fraction of the oscillation amplitude
    first, last = rel[1:41].mean(0), rel[-40:].mean(0)
    assert float((last - first).abs().max()) < 0.05 * bound
    assert abs(energy_drift(rel, torch.arange(rel.shape[0]) * 250 * 0.3)["slope"]) < 1e-7


def test_rk4_drifts_over_the_same_run(long_runs):
    rel = long_runs["rk4"]
    # RK4 damps the oscillator: |R(ih)|² = 1 − h⁶/72 + O(h⁸) per step
    expected = (1 - 0.3 ** 6 / 72 + 0.3 ** 8 / 576) ** 100_000 - 1
    assert float(rel[-1].mean()) == pytest.approx(expected, rel=1e-3)
    assert float(rel[-1].max()) < -0.5                 # more than half the energy gone
    assert bool((rel[1:] < rel[:-1]).all())            # monotone: secular, not oscillating
    assert float(rel[-1].abs().min()) > 10 * float(long_runs["leapfrog"].abs().max())


def _ho_exact(q0, t):
    return q0 * math.cos(t), -q0 * math.sin(t)


@pytest.mark.parametrize("method, order", [("leapfrog", 2), ("yoshida4", 4), ("rk4", 4),
                                           ("implicit_midpoint", 2)])
def test_convergence_order(method, order):
    # a nonlinear separable system checked against a tiny-step Yoshida reference would also do;
    # the oscillator has the exact solution, and all four methods are generic on it
    q0 = torch.tensor([[1.0], [0.5]], dtype=F64)
    p0 = torch.zeros_like(q0)
    T = 2.0
    errs = []
    for n in (20, 40, 80, 160):
        q, p = integrate(HO, (q0, p0), dt=T / n, steps=n, method=method)
        qe, pe = _ho_exact(q0, T)
        errs.append(float(torch.sqrt((q[-1] - qe) ** 2 + (p[-1] - pe) ** 2).max()))
    orders = [math.log2(a / b) for a, b in zip(errs, errs[1:])]
    assert all(abs(o - order) < 0.15 for o in orders), (errs, orders)


def test_yoshida_order_on_a_nonlinear_pendulum():
    pend = HamiltonianNN.from_function(lambda q, p: 0.5 * (p * p).sum(-1) - torch.cos(q).sum(-1),
                                       separable=True)
    q0 = torch.tensor([[2.0]], dtype=F64)
    p0 = torch.zeros_like(q0)
    qr, pr = integrate(pend, (q0, p0), dt=2.0 / 1280, steps=1280, method="yoshida4")
    errs = []
    for n in (20, 40, 80):
        q, p = integrate(pend, (q0, p0), dt=2.0 / n, steps=n, method="yoshida4")
        errs.append(float((q[-1] - qr[-1]).abs().max() + (p[-1] - pr[-1]).abs().max()))
    orders = [math.log2(a / b) for a, b in zip(errs, errs[1:])]
    assert all(3.7 < o < 4.4 for o in orders), (errs, orders)


def test_implicit_midpoint_conserves_a_nonseparable_quadratic_hamiltonian():
    # H = (q² + p²)/2 + 0.4 q p : not separable, quadratic -> conserved exactly by the midpoint rule
    def h(q, p):
        return 0.5 * (q * q + p * p).sum(-1) + 0.4 * (q * p).sum(-1)

    model = HamiltonianNN.from_function(h)
    q0 = torch.randn(32, 1, dtype=F64, generator=torch.Generator().manual_seed(0))
    p0 = torch.randn(32, 1, dtype=F64, generator=torch.Generator().manual_seed(1))
    q, p = integrate(model, (q0, p0), dt=0.1, steps=1000, method="implicit_midpoint", tol=1e-14)
    e = _energy_series(q, p, h)
    assert float((e - e[:1]).abs().max()) < 1e-11
    q, p = integrate(model, (q0, p0), dt=0.1, steps=1000, method="rk4")
    e = _energy_series(q, p, h)
    assert float((e - e[:1]).abs().max()) > 1e-6
    with pytest.raises(InputError, match="implicit_midpoint"):
        integrate(model, (q0, p0), dt=0.1, steps=10, method="leapfrog")


def test_implicit_midpoint_conserves_kepler_angular_momentum():
    # Kepler: H is not quadratic, but the angular momentum L = q × p is a quadratic invariant
    def kepler(q, p):
        return 0.5 * (p * p).sum(-1) - 1.0 / torch.sqrt((q * q).sum(-1))

    model = HamiltonianNN.from_function(kepler, dim=2, separable=True)
    q0 = torch.tensor([[1.0, 0.0], [0.8, 0.1]], dtype=F64)
    p0 = torch.tensor([[0.0, 1.2], [-0.1, 1.0]], dtype=F64)

    def ang(q, p):
        return q[..., 0] * p[..., 1] - q[..., 1] * p[..., 0]

    q, p = integrate(model, (q0, p0), dt=0.02, steps=1000, method="implicit_midpoint", tol=1e-14)
    assert float((ang(q, p) - ang(q0, p0)).abs().max()) < 1e-11
    q, p = integrate(model, (q0, p0), dt=0.02, steps=1000, method="rk4")
    assert float((ang(q, p) - ang(q0, p0)).abs().max()) > 1e-8
    # leapfrog also conserves L exactly for central forces (it is a symplectic, rotation-
    # equivariant splitting), up to round-off
    q, p = integrate(model, (q0, p0), dt=0.02, steps=1000, method="leapfrog")
    assert float((ang(q, p) - ang(q0, p0)).abs().max()) < 1e-12


def test_output_shapes_save_every_and_plain_callable():
    q0 = torch.zeros(5, 3, dtype=F64)
    p0 = torch.ones(5, 3, dtype=F64)
    model = HamiltonianNN.from_function(lambda q, p: 0.5 * (q * q + p * p).sum(-1), separable=True)
    for method in METHODS:
        q, p = integrate(model, (q0, p0), dt=0.1, steps=10, method=method)
        assert q.shape == p.shape == (11, 5, 3)
        assert q.dtype == F64
    q, _ = integrate(model, (q0, p0), dt=0.1, steps=10, method="rk4", save_every=5)
    assert q.shape == (3, 5, 3)

    def field(x, y):        # a damped oscillator as a plain callable
        return y, -x - 0.1 * y

    q, p = integrate(field, (torch.ones(2, 1, dtype=F64), torch.zeros(2, 1, dtype=F64)),
                     dt=0.01, steps=100, method="rk4")
    assert q.shape == (101, 2, 1)
    # float32 runs in float32
    q, _ = integrate(model, (q0.float(), p0.float()), dt=0.1, steps=3, method="leapfrog")
    assert q.dtype == torch.float32


def test_bad_inputs_raise_clear_errors():
    q0 = torch.ones(2, 1, dtype=F64)
    p0 = torch.zeros(2, 1, dtype=F64)
    with pytest.raises(InputError, match="unknown method 'euler'"):
        integrate(HO, (q0, p0), 0.1, 10, method="euler")
    with pytest.raises(InputError, match="dt"):
        integrate(HO, (q0, p0), -0.1, 10)
    with pytest.raises(InputError, match="steps"):
        integrate(HO, (q0, p0), 0.1, 2.5)
    with pytest.raises(InputError, match="save_every"):
        integrate(HO, (q0, p0), 0.1, 10, save_every=3)
    with pytest.raises(ShapeError, match="same shape"):
        integrate(HO, (q0, torch.zeros(3, 1, dtype=F64)), 0.1, 10)
    with pytest.raises(InputError, match="pair"):
        integrate(HO, q0, 0.1, 10)
    with pytest.raises(InputError, match="NaN"):
        integrate(HO, (q0 * float("nan"), p0), 0.1, 10)
    with pytest.raises(InputError, match="time_derivative"):
        integrate(object(), (q0, p0), 0.1, 10, method="rk4")
    # a stiff oscillator with a large step: the fixed-point iteration cannot contract
    stiff = HamiltonianNN.from_function(lambda q, p: 0.5 * (p * p + 400.0 * q * q).sum(-1))
    with pytest.raises(ConvergenceError, match="smaller dt"):
        integrate(stiff, (q0, p0), 0.5, 5, method="implicit_midpoint", max_iter=30)
    # a blow-up is reported, not returned
    quartic = HamiltonianNN.from_function(lambda q, p: 0.5 * (p * p).sum(-1) - (q ** 4).sum(-1),
                                          separable=True)
    with pytest.raises(NumericalError, match="NaN/inf"):
        integrate(quartic, (q0 * 3, p0), 0.5, 200, method="rk4")


def test_energy_drift_summary():
    t = torch.arange(11, dtype=F64)
    e = torch.stack([1.0 + 0.01 * t, 2.0 + 0.0 * t], dim=1)
    d = energy_drift(e)
    assert d["slope"] == pytest.approx(0.005)
    assert d["max_abs"] == pytest.approx(0.1)
    assert "rel_max" not in d
    # the initial energies 1 and 2: spread 0.5 (population std); drift 0.1 of it -> 0.2
    assert d["energy_spread"] == pytest.approx(0.5)
    assert d["max_abs_over_spread"] == pytest.approx(0.2)
    for shift in (-1.5, 1e3):                         # the energy's zero does not enter
        assert energy_drift(e + shift)["max_abs_over_spread"] == pytest.approx(0.2, rel=1e-9)
    assert energy_drift(e[:, :1])["max_abs_over_spread"] is None        # one orbit: no spread to read
    assert energy_drift(torch.stack([e[:, 0], e[:, 0]], 1))["max_abs_over_spread"] is None
    with pytest.raises(ShapeError):
        energy_drift(torch.ones(1, 3))


# ---------------------------------------------------------------- the state against the model
HO1 = HamiltonianNN.from_function(ho_energy, dim=1, separable=True)


@pytest.mark.parametrize("method", METHODS)
def test_a_batch_of_1d_states_is_refused_not_read_as_one_wide_state(method):
    """Three initial conditions of a dim=1 model passed as shape (3,) were integrated as ONE
    3-dof state: two of them never moved. Now the (dim,) rule of the models applies."""
    q0 = torch.tensor([1.0, 2.0, 3.0], dtype=F64)
    with pytest.raises(ShapeError, match=r"\(3,\).*pass shape \(3, 1\)"):
        integrate(HO1, (q0, torch.zeros(3, dtype=F64)), 0.01, 3, method)
    # the same states as (3, 1) run and every one of them turns half a period: q(π) = -q(0)
    steps = 314 if method != "leapfrog" else 3140
    q, p = integrate(HO1, (q0[:, None], torch.zeros(3, 1, dtype=F64)), math.pi / steps, steps, method)
    assert q.shape == (steps + 1, 3, 1)
    torch.testing.assert_close(q[-1, :, 0], -q0, rtol=0, atol=1e-5)
    # (dim,) is one state
    q, _ = integrate(HO1, (torch.ones(1, dtype=F64), torch.zeros(1, dtype=F64)), 0.1, 2, method)
    assert q.shape == (3, 1, 1)


@pytest.mark.parametrize("make, shape, match", [
    (lambda: HO1, (2, 3), r"\(2, 3\); expected \(batch, 1\)"),
    (lambda: HamiltonianNN(dim=1, hidden=8), (4, 2), r"\(4, 2\); expected \(batch, 1\)"),
    (lambda: HamiltonianNN(dim=2, hidden=8), (5,), r"\(5,\); expected \(batch, 2\)"),
    (lambda: HO, (3,), r"could be one state of 3 coordinates or 3 states"),   # dim unknown
])
def test_a_state_of_the_wrong_width_is_a_shape_error(make, shape, match):
    model = make()
    with pytest.raises(ShapeError, match=match):
        integrate(model, (torch.ones(shape, dtype=F64), torch.zeros(shape, dtype=F64)), 0.1, 2,
                  "rk4")


@pytest.mark.parametrize("model_dtype, state_dtype", [
    (F64, torch.float32), (torch.float32, F64), (torch.float32, "list")])
@pytest.mark.parametrize("kind", ["hnn", "lnn", "mlp"])
def test_a_model_integrates_in_its_own_dtype_whatever_the_state(kind, model_dtype, state_dtype):
    """A float32 state with a float64 network (or lists with a float32 one) died in torch's
    matmul; the state is now converted to the model's dtype, and the trajectory equals the one
    from a state given in that dtype."""
    from lawful.forcefields.derivative_mlp import DerivativeMLP
    from lawful.forcefields.lagrangian import LagrangianNN

    torch.manual_seed(0)
    model = {"hnn": lambda: HamiltonianNN(dim=2, hidden=8, dtype=model_dtype),
             "lnn": lambda: LagrangianNN(dim=2, hidden=8, kinetic_prior=1.0, dtype=model_dtype),
             "mlp": lambda: DerivativeMLP(dim=2, hidden=8, dtype=model_dtype)}[kind]()
    q0 = [[0.3, -0.2], [0.1, 0.4]]
    p0 = [[0.0, 0.5], [-0.3, 0.2]]
    given = (q0, p0) if state_dtype == "list" else \
        (torch.tensor(q0, dtype=state_dtype), torch.tensor(p0, dtype=state_dtype))
    q, p = integrate(model, given, 0.05, 4, "rk4")
    ref_q, ref_p = integrate(model, (torch.tensor(q0, dtype=model_dtype),
                                     torch.tensor(p0, dtype=model_dtype)), 0.05, 4, "rk4")
    assert q.dtype == p.dtype == model_dtype
    if state_dtype in ("list", F64) or model_dtype == torch.float32:
        torch.testing.assert_close(q, ref_q, rtol=0, atol=0)
        torch.testing.assert_close(p, ref_p, rtol=0, atol=0)
    else:   # float32 initial state: the same trajectory from the rounded start, to float32 accuracy
        torch.testing.assert_close(q, ref_q, rtol=0, atol=1e-6)


def test_a_non_separable_h_declared_separable_is_refused_by_the_explicit_methods():
    """H = ½p²(1 + q²) + ½q² declared separable: leapfrog evaluated ∂H/∂p at q = 0 and followed
    another system (q(2) = 0.493 against the true -0.691), silently."""
    def h(q, p):
        return (0.5 * p * p * (1 + q * q) + 0.5 * q * q).sum(-1)

    q0, p0 = torch.ones(1, 1, dtype=F64), torch.ones(1, 1, dtype=F64)
    wrong = HamiltonianNN.from_function(h, dim=1, separable=True)
    for method in ("leapfrog", "yoshida4"):
        with pytest.raises(InputError, match=r"declared separable=True but is not .*implicit_midpoint"):
            integrate(wrong, (q0, p0), 1e-3, 10, method)
    # the honest wrapping integrates the true flow, which conserves H (implicit midpoint)
    right = HamiltonianNN.from_function(h, dim=1)
    q, p = integrate(right, (q0, p0), 1e-2, 200, "implicit_midpoint")
    assert float(q[-1, 0, 0]) == pytest.approx(-0.691, abs=2e-3)
    e = h(q[:, 0], p[:, 0])
    assert float((e - e[0]).abs().max()) < 1e-4
    # a truly separable H passes the check, also at q = 0 / p = 0 (where both sides agree)
    ok = HamiltonianNN.from_function(lambda q, p: (0.5 * p ** 2 + torch.cos(q)).sum(-1), dim=1,
                                     separable=True)
    for start in (q0, torch.zeros(1, 1, dtype=F64)):
        q, _ = integrate(ok, (start, p0), 0.1, 3, "leapfrog")
        assert q.shape == (4, 1, 1)


def test_a_blow_up_is_reported_at_the_step_it_happens_whatever_save_every():
    """The NaN check ran on saved steps only: with save_every=k the error quoted the next save."""
    quartic = HamiltonianNN.from_function(lambda q, p: 0.5 * (p * p).sum(-1) - (q ** 4).sum(-1),
                                          dim=1, separable=True)
    q0, p0 = torch.full((1, 1), 3.0, dtype=F64), torch.zeros(1, 1, dtype=F64)
    messages = []
    for save_every in (1, 50):
        with pytest.raises(NumericalError) as err:
            integrate(quartic, (q0, p0), 0.5, 200, method="rk4", save_every=save_every)
        messages.append(str(err.value))
    first = int(messages[0].split("at step ")[1].split()[0])
    assert first < 50 and messages[0] == messages[1]


def test_a_model_with_nan_weights_is_refused_before_the_first_step():
    model = HamiltonianNN(dim=1, hidden=8)
    with torch.no_grad():
        model.potential_net[0].weight[0, 0] = float("nan")
    with pytest.raises(InputError, match=r"potential_net.0.weight.*NaN/inf.*retrain"):
        integrate(model, (torch.ones(1, 1, dtype=F64), torch.zeros(1, 1, dtype=F64)), 0.1, 3)


@pytest.mark.parametrize("scale", [1e-12, 1e-6, 1e6])
def test_implicit_midpoint_is_unit_free(scale):
    """The fixed-point iteration stopped at an absolute 1e-13 * (1 + max|x|): a state of size
    1e-12 (an oscillation in metres of an atom) passed after one iteration, i.e. the explicit
    midpoint rule: +49 % energy in 1000 steps instead of exact conservation of this quadratic H.
    The same motion in other units must be the same trajectory, rescaled."""
    q0 = torch.tensor([[1.0], [0.3]], dtype=F64)
    p0 = torch.tensor([[0.0], [-0.5]], dtype=F64)
    q1, p1 = integrate(Oscillator(), (q0, p0), 0.3, 1000, "implicit_midpoint", save_every=100)
    qs, ps = integrate(Oscillator(), (scale * q0, scale * p0), 0.3, 1000, "implicit_midpoint",
                       save_every=100)
    e = _energy_series(qs, ps)
    assert float(((e - e[:1]) / e[:1]).abs().max()) < 1e-11
    torch.testing.assert_close(qs / scale, q1, rtol=0, atol=1e-10)
    torch.testing.assert_close(ps / scale, p1, rtol=0, atol=1e-10)


@pytest.mark.parametrize("tol", [float("inf"), float("nan"), 0.0, 1.0, True])
def test_a_tolerance_that_skips_the_implicit_solve_is_refused(tol):
    """tol=inf accepted the first iterate: the explicit midpoint rule, not symplectic."""
    with pytest.raises(InputError, match="tol must be a relative tolerance"):
        integrate(HO, (torch.ones(1, 1, dtype=F64), torch.zeros(1, 1, dtype=F64)), 0.1, 2,
                  "implicit_midpoint", tol=tol)

"""HamiltonianNN / LagrangianNN / DerivativeMLP on the safe model file: every constructor argument
and the weights come back, so a loaded model gives bitwise the saved one's outputs."""

import pytest
import torch

from lawful.forcefields import (DerivativeMLP, HamiltonianNN, LagrangianNN, load_dynamics_model,
                                load_model, save_model)
from lawful.kernels import InputError, ModelFileError
from lawful.kernels.modelfile import read_header

F64 = torch.float64

CASES = [
    (HamiltonianNN, dict(dim=2, separable=True, hidden=12, layers=3, activation="softplus")),
    (HamiltonianNN, dict(dim=2, separable=True, hidden=12, mass=2.0, activation="tanh")),
    (HamiltonianNN, dict(dim=1, separable=False, hidden=10, activation="silu")),
    (HamiltonianNN, dict(dim=3, hidden=8, dtype=torch.float32)),
    (LagrangianNN, dict(dim=2, hidden=12, kinetic_prior=1.0, activation="softplus")),
    (LagrangianNN, dict(dim=2, hidden=12, layers=1, kinetic_prior=0.5, max_condition=1e9,
                        activation="gelu")),
    (DerivativeMLP, dict(dim=2, hidden=12, layers=3, activation="tanh")),
]


def _outputs(model, dim, dtype):
    g = torch.Generator().manual_seed(3)
    q, p = (torch.randn(6, dim, dtype=dtype, generator=g) for _ in range(2))
    dq, dp = model.time_derivative(q, p)
    out = {"dq": dq, "dp": dp}
    if isinstance(model, HamiltonianNN):
        out["h"] = model.hamiltonian(q, p).detach()
    if isinstance(model, LagrangianNN):
        out["energy"] = model.energy(q, p).detach()
    return out


@pytest.mark.parametrize("cls, kwargs", CASES)
def test_round_trip_is_bitwise_and_keeps_every_argument(cls, kwargs, tmp_path):
    torch.manual_seed(0)
    model = cls(**kwargs)
    with torch.no_grad():                      # non-trivial weights everywhere (biases are 0 at init)
        for prm in model.parameters():
            prm.add_(0.1 * torch.randn_like(prm))
    path = model.save(tmp_path / "m.lawful", training_summary={"steps": 7})
    loaded = load_dynamics_model(path)
    assert type(loaded) is cls and loaded.config == model.config
    assert loaded.dtype == kwargs.get("dtype", F64) and loaded.training_summary == {"steps": 7}
    for attr in ("mass", "kinetic_prior", "max_condition", "separable"):
        assert getattr(loaded, attr, None) == getattr(model, attr, None)
    dtype = kwargs.get("dtype", F64)
    a, b = _outputs(model, kwargs["dim"], dtype), _outputs(loaded, kwargs["dim"], dtype)
    for key in a:
        assert torch.equal(a[key], b[key]), key
    # the header says what was saved: kind, every constructor argument, dtype
    header = read_header(path)
    assert header["kind"] == cls.__name__ and header["config"] == model.config
    assert header["metadata"]["dtype"] == str(dtype).replace("torch.", "")


@pytest.mark.parametrize("saved, rebuilt", [
    (dict(dim=2, hidden=8, mass=2.0), dict(dim=2, hidden=8)),
    (dict(dim=2, hidden=8, activation="tanh"), dict(dim=2, hidden=8, activation="softplus")),
])
def test_the_arguments_a_state_dict_drops_are_what_changes_the_dynamics(saved, rebuilt, tmp_path):
    """Negative control: the state_dict route (the only one before) reloads into a differently
    built model without complaint and other dynamics come out; the model file does not."""
    torch.manual_seed(0)
    model = HamiltonianNN(**saved)
    other = HamiltonianNN(**rebuilt)
    other.load_state_dict(model.state_dict(), strict=False)
    q, p = torch.ones(2, 2, dtype=F64), 0.5 * torch.ones(2, 2, dtype=F64)
    assert not torch.allclose(other.time_derivative(q, p)[0], model.time_derivative(q, p)[0])
    loaded = load_dynamics_model(model.save(tmp_path / "h.lawful"))
    assert torch.equal(loaded.time_derivative(q, p)[0], model.time_derivative(q, p)[0])


def test_a_loaded_model_continues_a_rollout_exactly(tmp_path):
    from lawful.forcefields import integrate

    torch.manual_seed(1)
    model = HamiltonianNN(dim=1, hidden=8, mass=1.5)
    loaded = load_dynamics_model(model.save(tmp_path / "h.lawful"), dtype=torch.float32)
    assert loaded.dtype == torch.float32 and loaded.mass == 1.5
    again = load_dynamics_model(tmp_path / "h.lawful")
    state = (torch.ones(3, 1, dtype=F64), torch.zeros(3, 1, dtype=F64))
    a = integrate(model, state, 0.1, 50, "leapfrog")
    b = integrate(again, state, 0.1, 50, "leapfrog")
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_what_cannot_be_saved_or_loaded_says_why(tmp_path):
    wrapped = HamiltonianNN.from_function(lambda q, p: (q * q + p * p).sum(-1), dim=1)
    with pytest.raises(InputError, match="wraps a Python function"):
        wrapped.save(tmp_path / "f.lawful")
    with pytest.raises(InputError, match=r"force field .* or a dynamics model .*corrector.save"):
        save_model(torch.nn.Linear(2, 2), tmp_path / "x.lawful")
    assert not (tmp_path / "f.lawful").exists()
    # each loader refuses the other family's files and names the right one
    hnn = HamiltonianNN(dim=1, hidden=4).save(tmp_path / "h.lawful")
    with pytest.raises(ModelFileError, match=r"dynamics model.*load_dynamics_model\(path\)"):
        load_model(hnn)
    ff = load_model("cu-emt").save(tmp_path / "cu.lawful")
    with pytest.raises(ModelFileError, match=r"not a dynamics model.*lawful.forcefields.load_model"):
        load_dynamics_model(ff)

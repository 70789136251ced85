"""The training domain: the smallest distance per species pair seen in training is recorded in
the model file, and the engine runner reports a structure closer than 0.9x that minimum (warning
once per runner, NumericalError in strict mode), naming the atoms, distance, minimum and step."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk

from lawful.forcefields import NeuralPotential, load_model
from lawful.forcefields.batch import pair_key, pair_min_distances
from lawful.integrations.ase import LawfulCalculator
from lawful.integrations.runner import DOMAIN_TOLERANCE, ModelRunner
from lawful.kernels.errors import InputError, ModelFileError, NumericalError, OutOfDomainWarning


def _model(record=None, species=("Cu",)):
    m = NeuralPotential(species=list(species), cutoff=4.0, n_basis=4, n_radial=2, lmax=1, hidden=(8,),
                        dtype=torch.float64)
    if record is not None:
        m.pair_min_distance = dict(record)
    return m


def _copper():
    return bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)


def _squeezed(atoms, a=0, b=5, distance=1.5):
    """``atoms`` with atom b moved to ``distance`` Å from atom a (along +x)."""
    out = atoms.copy()
    out.positions[b] = out.positions[a] + np.array([distance, 0.0, 0.0])
    return out


def test_out_of_domain_warning_is_a_user_warning():
    assert issubclass(OutOfDomainWarning, UserWarning)


def test_runner_warns_once_naming_atoms_distance_minimum_and_step():
    atoms = _squeezed(_copper(), 0, 5, 1.5)
    runner = ModelRunner(_model({"Cu-Cu": 2.4}), atoms.numbers)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        runner.evaluate(atoms.positions, atoms.cell.array, True, step=123)
        runner.evaluate(atoms.positions + 0.001, atoms.cell.array, True, step=124)
    dom = [w for w in caught if issubclass(w.category, OutOfDomainWarning)]
    assert len(dom) == 1
    msg = str(dom[0].message)
    for part in ("atoms 0 (Cu) and 5 (Cu)", "1.5 Å", "step 123", "2.4 Å", "Cu-Cu", "0.9 x"):
        assert part in msg, (part, msg)
    assert runner.domain_warned


def test_no_event_inside_the_domain_and_at_the_tolerance_edge():
    """A pair just above tolerance x minimum is in the domain; just below it is not."""
    d_min = 2.0
    edge = DOMAIN_TOLERANCE * d_min
    inside = _squeezed(_copper(), 0, 5, edge * (1 + 1e-6))
    outside = _squeezed(_copper(), 0, 5, edge * (1 - 1e-6))
    model = _model({"Cu-Cu": d_min})
    with warnings.catch_warnings():
        warnings.simplefilter("error", OutOfDomainWarning)
        ModelRunner(model, inside.numbers).evaluate(inside.positions, inside.cell.array, True)
        ModelRunner(model, _copper().numbers).evaluate(_copper().positions, _copper().cell.array, True)
    with pytest.warns(OutOfDomainWarning):
        ModelRunner(model, outside.numbers).evaluate(outside.positions, outside.cell.array, True)


def test_strict_mode_raises_numerical_error_with_the_step_and_keeps_raising():
    atoms = _squeezed(_copper(), 2, 7, 1.2)
    runner = ModelRunner(_model({"Cu-Cu": 2.4}), atoms.numbers, strict=True)
    for step in (5, 6):
        with pytest.raises(NumericalError, match=f"atoms 2 \\(Cu\\) and 7 \\(Cu\\) .*step {step}") as err:
            runner.evaluate(atoms.positions, atoms.cell.array, True, step=step)
        info = err.value.out_of_domain
        assert info["atoms"] == (2, 7) and info["step"] == step and info["training_min"] == 2.4
        assert info["distance"] == pytest.approx(1.2, rel=1e-12)


def test_calculator_strict_and_warning_modes():
    atoms = _squeezed(_copper(), 0, 5, 1.5)
    model = _model({"Cu-Cu": 2.4})
    atoms.calc = LawfulCalculator(model, strict=True)
    with pytest.raises(NumericalError, match="1.5 Å"):
        atoms.get_potential_energy()
    atoms.calc = LawfulCalculator(model)
    with pytest.warns(OutOfDomainWarning, match="Cu-Cu"):
        e = atoms.get_potential_energy()
    assert np.isfinite(e)


def test_molecule_without_cell_and_two_species():
    """Non-periodic structure, two species: the H-O minimum is used for the H-O pair only."""
    model = _model({"H-O": 0.9, "H-H": 1.4, "O-O": 2.5}, species=("H", "O"))
    ok = Atoms("OHH", positions=[[0, 0, 0], [0.95, 0, 0], [-0.3, 0.9, 0]])
    bad = Atoms("OHH", positions=[[0, 0, 0], [0.7, 0, 0], [-0.3, 0.9, 0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error", OutOfDomainWarning)
        ModelRunner(model, ok.numbers).evaluate(ok.positions)
    with pytest.raises(NumericalError, match=r"\(O\) and .* \(H\)|\(H\) and .* \(O\)") as err:
        ModelRunner(model, bad.numbers, strict=True).evaluate(bad.positions)
    assert "H-O" in str(err.value) and "0.7 Å" in str(err.value)


def test_a_model_without_a_record_is_not_checked_and_skin_zero_still_checks():
    atoms = _squeezed(_copper(), 0, 5, 1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", OutOfDomainWarning)
        ModelRunner(_model(), atoms.numbers, strict=True).evaluate(atoms.positions, atoms.cell.array, True)
    with pytest.raises(NumericalError, match="1 Å apart"):
        ModelRunner(_model({"Cu-Cu": 2.4}), atoms.numbers, skin=0.0, strict=True).evaluate(
            atoms.positions, atoms.cell.array, True)


@pytest.mark.parametrize("tol", [0.0, -0.5, 1.5, float("nan"), "0.9x"])
def test_bad_domain_tolerance_is_an_input_error(tol):
    with pytest.raises(InputError, match="domain_tolerance"):
        ModelRunner(_model({"Cu-Cu": 2.4}), [29], domain_tolerance=tol)


def test_pair_min_distances_of_a_batch_match_a_brute_force_scan():
    rng = np.random.default_rng(3)
    atoms = Atoms("H4O2", positions=rng.uniform(0, 3.0, (6, 3)), cell=np.eye(3) * 3.3, pbc=True)
    model = _model(species=("H", "O"))
    got = pair_min_distances(model.make_batch([atoms]), model.species)
    ref: dict[str, float] = {}
    sym = atoms.get_chemical_symbols()
    for a in range(6):
        for b in range(6):
            for s in np.ndindex(7, 7, 7):
                shift = np.array(s) - 3
                if a == b and not shift.any():
                    continue
                d = np.linalg.norm(atoms.positions[b] - atoms.positions[a] + shift @ atoms.cell.array)
                if d < model.cutoff:
                    k = pair_key(sym[a], sym[b])
                    ref[k] = min(ref.get(k, np.inf), d)
    assert got.keys() == ref.keys()
    for k in ref:
        assert got[k] == pytest.approx(ref[k], rel=1e-12)


def test_record_round_trips_through_the_model_file(tmp_path):
    model = _model({"Cu-Cu": 2.2})
    model.save(tmp_path / "m.lawful")
    back = load_model(tmp_path / "m.lawful")
    assert back.pair_min_distance == {"Cu-Cu": 2.2}
    _model().save(tmp_path / "old.lawful")              # a file without the record (as before)
    assert load_model(tmp_path / "old.lawful").pair_min_distance == {}


def test_corrupt_record_is_a_model_file_error(tmp_path):
    from lawful.forcefields.model_io import save_model
    from lawful.kernels.modelfile import save_model_file

    model = _model()
    path = tmp_path / "m.lawful"
    save_model(model, path)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_model_file(path, kind=model.kind, config=model.config, tensors=tensors,
                    metadata={"dtype": "float64", "pair_min_distance": {"Cu-Cu": -1.0}})
    with pytest.raises(ModelFileError, match="Cu-Cu"):
        load_model(path)


@pytest.mark.parametrize("name", ["cu-emt", "cu-emt-direct"])
def test_shipped_models_carry_their_training_domain(name):
    """The shipped models record the smallest Cu-Cu distance of their training split (added from
    the regenerated data, whose fingerprint matches): below the fcc nearest-neighbour distance
    (2.55 Å), since the data holds rattled and hot MD frames; a perfect crystal is in domain."""
    model = load_model(name)
    d = model.pair_min_distance["Cu-Cu"]
    assert 1.5 < d < 3.61 / np.sqrt(2) - 0.3
    atoms = _copper()
    with warnings.catch_warnings():
        warnings.simplefilter("error", OutOfDomainWarning)
        ModelRunner(model, atoms.numbers, strict=True).evaluate(atoms.positions, atoms.cell.array, True)
    with pytest.raises(NumericalError, match="Cu-Cu"):
        squeezed = _squeezed(atoms, 0, 5, 0.85 * d)
        ModelRunner(model, atoms.numbers, strict=True).evaluate(squeezed.positions, squeezed.cell.array, True)

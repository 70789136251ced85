"""A structure whose composition the training data did not span is out of the model's domain.

The energy E = sum_i e0(Z_i) + learned terms fixes the per-species reference energies only along
the span of the training compositions: organic-xtb (alanine dipeptide, ethanol, water clusters:
three independent compositions for H, C, N, O) gave methane, ammonia, benzene, formaldehyde and
HCN energies 3-15 eV/atom off GFN2-xTB with no warning (a newcomer's first hour). The engines now
warn once (strict: raise) at the first evaluation of such a composition."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from ase.build import molecule

from lawful.forcefields import NeuralPotential, load_model
from lawful.forcefields.domain import composition_outside, composition_record
from lawful.integrations.ase import LawfulCalculator
from lawful.kernels.errors import ModelFileError, NumericalError, OutOfDomainWarning


@pytest.mark.parametrize("name, outside", [
    ("H2O", False), ("CH3CH2OH", False),
    ("CH3OH", False),           # 0.5 C2H6O + 0.5 H2O: in the span (its energy is determined)
    ("C2H6", True), ("CH4", True), ("NH3", True), ("C6H6", True), ("H2CO", True), ("HCN", True),
])
def test_the_shipped_organic_model_warns_outside_its_training_compositions(name, outside):
    atoms = molecule(name)
    atoms.calc = LawfulCalculator("organic-xtb")
    with warnings.catch_warnings(record=True) as got:
        warnings.simplefilter("always")
        atoms.get_potential_energy()
        atoms.positions[0, 0] += 0.01
        atoms.get_forces()                                   # once per runner
    said = [w for w in got if issubclass(w.category, OutOfDomainWarning) and "composition" in str(w.message)]
    assert len(said) == (1 if outside else 0)
    if outside:
        strict = molecule(name)
        strict.calc = LawfulCalculator("organic-xtb", strict=True)
        with pytest.raises(NumericalError, match=r"is not a combination of the compositions .*\(strict mode\)"):
            strict.get_potential_energy()


def test_the_alanine_dipeptide_ml_region_is_inside():
    from lawful.forcefields.molecules import start_structures

    atoms = start_structures("alanine-dipeptide")["C7eq"]
    assert composition_outside(load_model("organic-xtb").training_compositions, ["H", "C", "N", "O"],
                               atoms.numbers) is None


def test_the_record_spans_exactly_the_training_compositions_and_round_trips(tmp_path):
    species = ["H", "C", "O"]
    record = composition_record([molecule("H2O").numbers, molecule("CH3OH").numbers], species)
    assert len(record["basis"]) == 2 and record["formulas"] == ["H2O", "CH4O"]
    # (H, C, O) counts: inside exactly when a linear combination of H2O (2,0,1) and CH4O (4,1,1)
    for counts, outside in (((2, 0, 1), False), ((4, 1, 1), False), ((8, 2, 2), False),   # 2 CH4O
                            ((2, 1, 0), False),                                        # CH4O - H2O
                            ((2, 0, 2), True), ((4, 1, 0), True), ((0, 1, 2), True)):  # H2O2, CH4, CO2
        assert bool(np.linalg.matrix_rank(np.array([[2, 0, 1], [4, 1, 1], counts])) == 3) is outside   # the table
        numbers = [1] * counts[0] + [6] * counts[1] + [8] * counts[2]
        assert (composition_outside(record, species, numbers) is not None) is outside, counts
    merged = composition_record([molecule("CH4").numbers], species, old=record)
    assert len(merged["basis"]) == 3 and composition_outside(merged, species, molecule("CO2").numbers) is None
    model = NeuralPotential(species=species, cutoff=4.0)
    model.training_compositions = record
    path = tmp_path / "m.lawful"
    model.save(path)
    back = load_model(path).training_compositions
    assert np.allclose(back["basis"], record["basis"], rtol=0, atol=0) and back["formulas"] == record["formulas"]


def test_a_corrupt_record_is_refused(tmp_path):
    from lawful.kernels.modelfile import load_model_file, save_model_file

    model = NeuralPotential(species=["H", "O"], cutoff=4.0)
    model.training_compositions = {"basis": [[1.0, 0.0]], "formulas": ["H"]}
    path = tmp_path / "m.lawful"
    model.save(path)
    mf = load_model_file(path)
    meta = dict(mf.metadata)
    meta["training_compositions"] = {"basis": [[2.0, 0.0]], "formulas": ["H"]}        # not orthonormal
    save_model_file(path, kind=mf.kind, config=mf.config, tensors=mf.tensors, metadata=meta)
    with pytest.raises(ModelFileError, match="training_compositions"):
        load_model(path)


@pytest.mark.parametrize("waters", [1, 10**3, 10**5, 10**7, 10**8])
def test_one_atom_too_many_is_outside_at_any_size(waters):
    """The check compares the part of the composition outside the training span with its length:
    at the old relative tolerance 1e-6 a water box of more than ~5e5 atoms with one H too many (an
    ion, a lost proton: an absolute energy the data did not determine) passed as inside. Counted
    (H, C, N, O) against the shipped organic-xtb's saved basis, in the engines' float64 arithmetic;
    the TorchScript module compares the same residual with the same constant."""
    import torch

    from lawful.forcefields import export_torchscript
    from lawful.forcefields.domain import COMPOSITION_TOLERANCE, composition_residual

    model = load_model("organic-xtb")
    basis = torch.tensor(model.training_compositions["basis"], dtype=torch.float64)
    water = torch.tensor([2.0, 0.0, 0.0, 1.0]) * waters
    for extra, outside in (((0, 0, 0, 0), False), ((1, 0, 0, 0), True), ((0, 0, 0, 1), True),
                           ((-1, 0, 0, 0), True),                   # a hydroxide: one H short
                           ((12, 6, 2, 2), False),                  # + one alanine dipeptide
                           ((6, 2, 0, 1), False), ((4, 2, 0, 0), False),   # + ethanol, + C2H4 (= ethanol - water)
                           ((4, 1, 0, 0), True)):                   # + methane
        counts = water + torch.tensor(extra, dtype=torch.float64)
        assert (composition_residual(basis, counts) > COMPOSITION_TOLERANCE) is outside, (waters, extra)
    assert export_torchscript(model).composition_tolerance == COMPOSITION_TOLERANCE
    if waters <= 10**5:     # the runner's path, from atomic numbers
        numbers = np.concatenate([np.tile([8, 1, 1], waters), [1]])
        assert composition_outside(model.training_compositions, ["H", "C", "N", "O"], numbers) is not None
        assert composition_outside(model.training_compositions, ["H", "C", "N", "O"], numbers[:-1]) is None


def test_a_basis_off_orthonormal_beyond_round_off_is_refused(tmp_path):
    """A saved basis rotated by 1e-9 would flag compositions inside its own span at the tolerance
    1e-10: files are written with the SVD's rows (orthonormal to ~1e-15) and one further off than
    COMPOSITION_BASIS_ATOL is refused as corrupt (it was accepted to 1e-8)."""
    from lawful.kernels.modelfile import load_model_file, save_model_file

    model = NeuralPotential(species=["H", "O"], cutoff=4.0)
    model.training_compositions = composition_record([molecule("H2O").numbers], ["H", "O"])
    path = tmp_path / "m.lawful"
    model.save(path)
    assert load_model(path).training_compositions["basis"] == model.training_compositions["basis"]
    mf = load_model_file(path)
    meta = dict(mf.metadata)
    row = np.asarray(model.training_compositions["basis"][0])
    meta["training_compositions"] = {"basis": [(row * (1 + 1e-9)).tolist()], "formulas": ["H2O"]}
    save_model_file(path, kind=mf.kind, config=mf.config, tensors=mf.tensors, metadata=meta)
    with pytest.raises(ModelFileError, match="training_compositions"):
        load_model(path)

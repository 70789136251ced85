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

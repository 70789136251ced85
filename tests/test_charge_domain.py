"""A structure's stated total charge is checked against the charges the model was trained on.

The models have no charge input: an ethanol cation (``atoms.info["charge"] = 1``, or initial
charges summing to +1) through organic-xtb returned the neutral energy, 14.7 eV off GFN2-xTB's
cation, with no warning (units audit U3). Model files record ``training_charges`` (train() from
the frames' stated charges; the shipped models: neutral), and the engines that know a charge (the
ASE calculator; OpenMM's create_force(charge=), which system_from_atoms and run_md fill from the
atoms) warn once or, strict, raise."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from ase.build import bulk, molecule
from ase.calculators.emt import EMT

from lawful.forcefields import NeuralPotential, load_model, train
from lawful.forcefields.domain import charge_outside, charge_record, structure_charge
from lawful.integrations.ase import LawfulCalculator
from lawful.kernels.errors import ModelFileError, NumericalError, OutOfDomainWarning


def _ethanol(how):
    a = molecule("CH3CH2OH")
    if how == "info +1":
        a.info["charge"] = 1
    elif how == "initial +1":
        a.set_initial_charges([1.0 / len(a)] * len(a))
    elif how == "info 0":
        a.info["charge"] = 0
    elif how == "partial charges summing to 0":
        a.set_initial_charges(np.linspace(-0.4, 0.4, len(a)))
    return a


CASES = [("neutral", 0, False), ("info 0", 0, False), ("partial charges summing to 0", 0, False),
         ("info +1", 1, True), ("initial +1", 1, True)]


@pytest.mark.parametrize("how, charge, outside", CASES)
def test_the_ase_calculator_checks_the_stated_charge(how, charge, outside):
    atoms = _ethanol(how)
    assert structure_charge(atoms) == charge
    atoms.calc = LawfulCalculator("organic-xtb")
    with warnings.catch_warnings(record=True) as got:
        warnings.simplefilter("always")
        e = atoms.get_potential_energy()
        atoms.positions[0, 0] += 0.01
        atoms.get_forces()                                   # once per charge
    said = [str(w.message) for w in got if issubclass(w.category, OutOfDomainWarning) and "charge" in str(w.message)]
    assert len(said) == int(outside)
    neutral = molecule("CH3CH2OH")
    neutral.calc = LawfulCalculator("organic-xtb")
    assert e == neutral.get_potential_energy()               # the check changes no number
    if outside:
        assert "total charge of +1 e" in said[0] and "trained on structures of charge 0" in said[0]
        strict = _ethanol(how)
        strict.calc = LawfulCalculator("organic-xtb", strict=True)
        with pytest.raises(NumericalError, match=r"total charge of \+1 e.*\(strict mode\)"):
            strict.get_potential_energy()


def test_a_charge_stated_after_a_first_evaluation_is_checked():
    """ASE's cache compares initial charges but not info['charge']: a charge stated after a first
    evaluation was answered from the cache without the check."""
    atoms = molecule("CH3CH2OH")
    atoms.calc = LawfulCalculator("organic-xtb")
    atoms.get_potential_energy()
    atoms.info["charge"] = 1
    with warnings.catch_warnings(record=True) as got:
        warnings.simplefilter("always")
        atoms.get_potential_energy()
    assert [str(w.message) for w in got if "total charge of +1 e" in str(w.message)]


@pytest.mark.parametrize("how, charge, outside", CASES[::2] + CASES[3:])
def test_openmm_checks_the_charge_of_the_atoms_it_is_given(how, charge, outside):
    from lawful.integrations.openmm import system_from_atoms

    with warnings.catch_warnings(record=True) as got:
        warnings.simplefilter("always")
        system_from_atoms(_ethanol(how), "organic-xtb")
    said = [w for w in got if issubclass(w.category, OutOfDomainWarning) and "total charge" in str(w.message)]
    assert len(said) == int(outside)
    if outside:
        with pytest.raises(NumericalError, match=r"total charge of \+1 e"):
            system_from_atoms(_ethanol(how), "organic-xtb", strict=True)


def test_training_records_the_charges_it_saw_and_the_file_keeps_them(tmp_path):
    frames = []
    for k in range(6):
        a = bulk("Cu", "fcc", a=3.61, cubic=True)
        a.rattle(0.05, seed=k)
        a.calc = EMT()
        a.get_forces()
        frames.append(a)
    model = NeuralPotential(["Cu"], cutoff=3.5, n_basis=4, n_radial=3, lmax=1, hidden=(8,), seed=0)
    train(model, frames, epochs=1, progress=False)
    assert model.training_charges == [0]
    path = tmp_path / "m.lawful"
    model.save(path)
    assert load_model(path).training_charges == [0]
    assert charge_record([1, -1, 1], old=[0]) == [-1, 0, 1]
    assert charge_outside([-2], -2) is None and "charge -2" in charge_outside([-2], 0)
    assert "records no training charge" in charge_outside([], 1) and charge_outside([], 0) is None
    for name in ("cu-emt", "cu-emt-direct", "organic-xtb", "organic-xtb-direct"):
        assert load_model(name).training_charges == [0]


def test_a_corrupt_charge_record_is_refused(tmp_path):
    from lawful.kernels.modelfile import load_model_file, save_model_file

    model = NeuralPotential(["H", "O"], cutoff=4.0)
    path = tmp_path / "m.lawful"
    model.save(path)
    mf = load_model_file(path)
    save_model_file(path, kind=mf.kind, config=mf.config, tensors=mf.tensors,
                    metadata={**mf.metadata, "training_charges": ["+1"]})
    with pytest.raises(ModelFileError, match="training_charges"):
        load_model(path)

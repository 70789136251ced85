"""An atom with far fewer or more neighbours than any training atom of its species is out of the
model's domain: cu-emt (bulk fcc, 23-42 neighbours within 4.5 Å in training) on a lattice typed in
bohr (6.82 Å: no neighbour, forces and stress exactly 0) or a Cu2 dimer ran with no warning (a
newcomer's first-hour audit); the pair-distance check only sees atoms too close."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk, molecule

from lawful.forcefields import NeuralPotential, load_model
from lawful.forcefields.domain import NEIGHBOUR_MARGIN, neighbour_count_bounds, neighbour_count_record
from lawful.integrations.ase import LawfulCalculator
from lawful.kernels.errors import ModelFileError, NumericalError, OutOfDomainWarning


def _fcc(a, repeat=2):
    return bulk("Cu", "fcc", a=a, cubic=True).repeat(repeat)


@pytest.mark.parametrize("make, neighbours, outside", [
    (lambda: _fcc(3.61), 42, False),                                  # the training lattice
    (lambda: _fcc(3.65), 42, False),                                  # strained a little: same shells
    (lambda: _fcc(4.2), 18, True),                                    # +16 %: the third shell left the cutoff
    (lambda: _fcc(6.82), 0, True),                                    # a = 3.61 Å typed in bohr
    (lambda: Atoms("Cu2", positions=[[0, 0, 0], [0, 0, 2.3]]), 1, True),   # a dimer
])
def test_cu_emt_warns_for_environments_it_never_saw(make, neighbours, outside):
    atoms = make()
    atoms.calc = LawfulCalculator("cu-emt")
    with warnings.catch_warnings(record=True) as got:
        warnings.simplefilter("always")
        atoms.get_potential_energy()
    said = [str(w.message) for w in got if issubclass(w.category, OutOfDomainWarning) and "neighbours" in str(w.message)]
    assert len(said) == int(outside)
    if outside:
        assert f"has {neighbours} neighbours within the 4.5 Å cutoff" in said[0] and "23-42" in said[0]
        strict = make()
        strict.calc = LawfulCalculator("cu-emt", strict=True)
        with pytest.raises(NumericalError, match=r"neighbours .*\(strict mode\)"):
            strict.get_potential_energy()


def test_held_out_copper_frames_are_inside():
    """The margin keeps the benchmark's held-out frames (down to 21 neighbours) inside."""
    from lawful.forcefields.reference import emt_metal_dataset

    calc = LawfulCalculator("cu-emt", strict=True)
    for atoms in emt_metal_dataset("Cu", 2, n_md=3, n_rattled=4, n_strained=4, seed=100):
        atoms.calc = calc
        atoms.get_potential_energy()


def test_the_record_and_its_bounds_round_trip(tmp_path):
    record = neighbour_count_record([(np.array([0, 0, 1]), np.array([4, 7, 2])),
                                     (np.array([1, 1]), np.array([3, 9]))], ["H", "O"])
    assert record == {"H": [4, 7], "O": [2, 9]}
    lo, hi = neighbour_count_bounds(record, ["H", "O"])
    assert lo.tolist() == pytest.approx([min(4 * (1 - NEIGHBOUR_MARGIN), 3), 1.0])
    assert hi.tolist() == pytest.approx([8.05, 10.35])
    assert neighbour_count_record([(np.array([0]), np.array([1]))], ["H", "O"], old=record)["H"] == [1, 7]
    model = NeuralPotential(species=["H", "O"], cutoff=4.0)
    model.neighbour_counts = record
    model.save(tmp_path / "m.lawful")
    assert load_model(tmp_path / "m.lawful").neighbour_counts == record


def test_a_corrupt_record_is_refused(tmp_path):
    from lawful.kernels.modelfile import load_model_file, save_model_file

    model = NeuralPotential(species=["H", "O"], cutoff=4.0)
    model.save(tmp_path / "m.lawful")
    mf = load_model_file(tmp_path / "m.lawful")
    save_model_file(tmp_path / "m.lawful", kind=mf.kind, config=mf.config, tensors=mf.tensors,
                    metadata={**mf.metadata, "neighbour_counts": {"H": [5, 2]}})
    with pytest.raises(ModelFileError, match="neighbour_counts"):
        load_model(tmp_path / "m.lawful")


def test_training_records_the_compositions_and_neighbour_counts_it_saw(tmp_path):
    """train() writes both records beside pair_min_distance (and a continued run merges them)."""
    from lawful.forcefields import train
    from lawful.forcefields.domain import composition_outside
    from lawful.forcefields.reference import label
    from ase.calculators.emt import EMT

    frames = []
    for k, name in enumerate(["H2O", "H2O", "H2", "H2O", "H2O"]):
        a = molecule(name)
        a.rattle(0.02, seed=k)
        frames.append(a)
    frames = label(frames, EMT())
    frames, held = frames[:4], frames[4:]
    model = NeuralPotential(species=["H", "O"], cutoff=3.0, hidden=(8,), n_radial=2, n_basis=3, lmax=1)
    train(model, frames, validation=held, epochs=1, progress=False)
    assert model.neighbour_counts == {"H": [1, 2], "O": [2, 2]}
    assert len(model.training_compositions["basis"]) == 2            # H2O and H2: every H/O composition
    assert composition_outside(model.training_compositions, model.species, molecule("H2O2").numbers) is None
    model.save(tmp_path / "m.lawful")
    back = load_model(tmp_path / "m.lawful")
    assert back.neighbour_counts == model.neighbour_counts and back.training_compositions == model.training_compositions
    # continued on water alone (fit_normalisation=False): the records keep what the first run saw
    train(back, [f for f in frames if len(f) == 3], validation=held, epochs=1, progress=False,
          fit_normalisation=False)
    assert back.neighbour_counts == {"H": [1, 2], "O": [2, 2]} and len(back.training_compositions["basis"]) == 2


def _squeezed_water():
    w = molecule("H2O")
    d = w.positions[1] - w.positions[0]
    w.positions[1] = w.positions[0] + d * (0.5 / np.linalg.norm(d))
    return w


@pytest.mark.parametrize("model, make, text", [
    ("cu-emt", lambda: _fcc(3.61), None),
    ("cu-emt", lambda: _fcc(6.82), "has 0 neighbours within the 4.5 Å cutoff"),
    ("organic-xtb", lambda: molecule("CH3CH2OH"), None),
    ("organic-xtb", lambda: molecule("CH4"), "the composition CH4 is not a combination"),
    ("organic-xtb", _squeezed_water, "atoms 0 and 1 (H-O) are 0.5 Å apart"),
])
def test_evaluate_and_evaluate_batch_check_the_domain_too(model, make, text):
    """model.evaluate / evaluate_batch made none of the engines' domain checks (a squeezed cell
    returned 1116 eV without a word: first-hour audit); they warn now, naming the structure."""
    from lawful.forcefields import evaluate_batch

    m = load_model(model)
    atoms = make()
    inside = _fcc(3.61) if model == "cu-emt" else molecule("H2O")
    with warnings.catch_warnings(record=True) as got:
        warnings.simplefilter("always")
        m.evaluate(atoms.positions, atoms.numbers, cell=atoms.cell[:], pbc=bool(atoms.pbc.all()))
        evaluate_batch(m, [inside, atoms])
    said = [str(w.message) for w in got if issubclass(w.category, OutOfDomainWarning)]
    if text is None:
        assert said == []
    else:
        assert len(said) == 2 and text in said[0] and said[1].startswith("structure 1: ") and text in said[1]

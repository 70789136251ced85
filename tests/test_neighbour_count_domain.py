"""An atom whose neighbourhood is far sparser or denser than any training atom's of its species is
out of the model's domain: cu-emt on a lattice typed in bohr (6.82 Å: no neighbour, forces and
stress exactly 0) or a Cu2 dimer ran with no warning (a newcomer's first-hour audit); the
pair-distance check only sees atoms too close. The check reads the neighbour density, the sum of
the descriptor's envelope (1 - r²/r_c²)³ over an atom's neighbours (cu-emt: 3.40-4.65 in training):
the count within the cutoff it used first jumped from 42 to 18 at a harmless 2.5 % expansion (24
third-shell atoms of weight 4e-5 leaving together) and warned there (ASE audit), while a (100)
surface atom kept a count inside the training range. Each side (too sparse, too dense) warns once
per runner: one warning used to silence every later one (a 14 % compressed cell, 290 GPa for EMT's
148, passed without a word after an expanded one had warned)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk, fcc100, molecule

from lawful.forcefields import NeuralPotential, load_model
from lawful.forcefields.domain import (NEIGHBOUR_MARGIN, neighbour_bounds, neighbour_count_bounds,
                                       neighbour_count_record, neighbour_density_record)
from lawful.integrations.ase import LawfulCalculator
from lawful.kernels.errors import ModelFileError, NumericalError, OutOfDomainWarning


def _fcc(a, repeat=2):
    return bulk("Cu", "fcc", a=a, cubic=True).repeat(repeat)


def _slab100():
    slab = fcc100("Cu", size=(2, 2, 4), a=3.61, vacuum=6.0)
    slab.pbc = True
    return slab


@pytest.mark.parametrize("make, side, outside", [
    (lambda: _fcc(3.61), None, False),                                 # the training lattice
    (lambda: _fcc(3.68), None, False),                                 # +2.5 %: the count fell 42 -> 18, not the density
    (lambda: _fcc(3.518), None, False),                                # -2.5 %
    (lambda: _fcc(4.2), "sparse", True),                               # +16 %
    (lambda: _fcc(6.82), "sparse", True),                              # a = 3.61 Å typed in bohr
    (lambda: Atoms("Cu2", positions=[[0, 0, 0], [0, 0, 2.3]]), "sparse", True),   # a dimer
    (lambda: _fcc(3.105), "dense", True),                              # -14 %: 290 GPa for EMT's 148
    (_slab100, "sparse", True),                                        # a (100) surface: 8 of 12 neighbours
])
def test_cu_emt_warns_for_environments_it_never_saw(make, side, outside):
    atoms = make()
    atoms.calc = LawfulCalculator("cu-emt")
    with warnings.catch_warnings(record=True) as got:
        warnings.simplefilter("always")
        atoms.get_potential_energy()
    said = [str(w.message) for w in got if issubclass(w.category, OutOfDomainWarning) and "neighbour" in str(w.message)]
    assert len(said) == int(outside)
    if outside:
        assert "has a neighbour density of" in said[0] and "3.4-4.65" in said[0]
        value = float(said[0].split("neighbour density of ")[1].split(" ")[0])
        assert (value < 3.4 * (1 - NEIGHBOUR_MARGIN)) if side == "sparse" else (value > 4.65 * (1 + NEIGHBOUR_MARGIN))
        strict = make()
        strict.calc = LawfulCalculator("cu-emt", strict=True)
        with pytest.raises(NumericalError, match=r"neighbour density .*\(strict mode\)"):
            strict.get_potential_energy()


def test_each_side_warns_once_and_one_warning_does_not_silence_the_other():
    calc = LawfulCalculator("cu-emt")
    with warnings.catch_warnings(record=True) as got:
        warnings.simplefilter("always")
        for a in (4.2, 4.205, 3.105, 3.1):        # sparse, sparse again, dense, dense again: one calculator
            atoms = _fcc(a)
            atoms.calc = calc
            atoms.get_potential_energy()
    said = [str(w.message) for w in got if issubclass(w.category, OutOfDomainWarning)]
    assert len(said) == 2 and "too few neighbours are not reported" in said[0]
    assert "too many neighbours are not reported" in said[1]


#: one calculator over a scan of fcc lattice constants (Å): which points are reported. A point is
#: reported again when its volume per atom is more than 2 % from the last reported one's (an EOS
#: scan named only its first point outside before); rattled atoms in the same cell are not.
SCAN = [
    ("eos outwards", (3.6, 4.2, 4.21, 4.3, 4.5), (False, True, False, True, True)),
    ("eos inwards", (3.6, 3.105, 3.1, 3.0), (False, True, False, True)),
    ("same cell rattled", (4.2, "rattle", "rattle"), (True, False, False)),
]


@pytest.mark.parametrize("case, points, reported", SCAN, ids=[c[0] for c in SCAN])
def test_a_scan_reports_each_point_further_out(case, points, reported):
    calc = LawfulCalculator("cu-emt")
    seen, a = [], None
    for k, point in enumerate(points):
        if point == "rattle":
            atoms = _fcc(a)
            atoms.rattle(0.02, seed=k)
        else:
            a = point
            atoms = _fcc(a)
        atoms.calc = calc
        with warnings.catch_warnings(record=True) as got:
            warnings.simplefilter("always")
            atoms.get_potential_energy()
        said = [str(w.message) for w in got if issubclass(w.category, OutOfDomainWarning)]
        seen.append(bool(said))
        if said:   # the report names the structure by its volume per atom
            assert f"in a cell of {atoms.get_volume() / len(atoms):.4g} Å³/atom" in said[0]
    assert tuple(seen) == reported


def test_held_out_copper_frames_are_inside():
    """The margin keeps the benchmark's held-out frames (down to 21 neighbours) inside."""
    from lawful.forcefields.reference import emt_metal_dataset

    calc = LawfulCalculator("cu-emt", strict=True)
    for atoms in emt_metal_dataset("Cu", 2, n_md=3, n_rattled=4, n_strained=4, seed=100):
        atoms.calc = calc
        atoms.get_potential_energy()


def test_the_density_record_and_its_bounds_round_trip(tmp_path):
    record = neighbour_density_record([(np.array([0, 0, 1]), np.array([1.5, 2.5, 0.5])),
                                       (np.array([1, 1]), np.array([0.25, 3.0]))], ["H", "O"])
    assert record == {"H": [1.5, 2.5], "O": [0.25, 3.0]}
    model = NeuralPotential(species=["H", "O"], cutoff=4.0)
    model.neighbour_density = record
    lo, hi, weighted = neighbour_bounds(model, ["H", "O"])
    assert weighted and lo.tolist() == pytest.approx([1.5 * 0.85, 0.25 * 0.85]) and hi.tolist() == pytest.approx(
        [2.5 * 1.15, 3.0 * 1.15])
    model.save(tmp_path / "m.lawful")
    assert load_model(tmp_path / "m.lawful").neighbour_density == record
    model.neighbour_density = {}
    model.neighbour_counts = {"H": [1, 2]}                      # a file written before the density: counts
    assert neighbour_bounds(model, ["H", "O"])[2] is False


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
    for bad in ({"H": [5.0, 2.0]}, {"X": [1.0, 2.0]}, {"H": [-1.0, 2.0]}, {"H": "1-2"}):
        save_model_file(tmp_path / "m.lawful", kind=mf.kind, config=mf.config, tensors=mf.tensors,
                        metadata={**mf.metadata, "neighbour_density": bad})
        with pytest.raises(ModelFileError, match="neighbour_density"):
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
    density = model.neighbour_density
    assert model.neighbour_counts == {} and sorted(density) == ["H", "O"] and 0 < density["H"][0] < density["H"][1]
    assert len(model.training_compositions["basis"]) == 2            # H2O and H2: every H/O composition
    assert composition_outside(model.training_compositions, model.species, molecule("H2O2").numbers) is None
    model.save(tmp_path / "m.lawful")
    back = load_model(tmp_path / "m.lawful")
    assert back.neighbour_density == density and back.training_compositions == model.training_compositions
    # continued on water alone (fit_normalisation=False): the records keep what the first run saw
    train(back, [f for f in frames if len(f) == 3], validation=held, epochs=1, progress=False,
          fit_normalisation=False)
    assert back.neighbour_density["H"][0] <= density["H"][0] and back.neighbour_density["H"][1] >= density["H"][1]
    assert len(back.training_compositions["basis"]) == 2
    # a file from before the density record (counts only): continuing says the density covers this run only
    old = load_model(tmp_path / "m.lawful")
    old.neighbour_density, old.neighbour_counts = {}, {"H": [1, 2], "O": [2, 2]}
    with pytest.warns(UserWarning, match="records neighbour counts but no neighbour density"):
        train(old, frames, validation=held, epochs=1, progress=False, fit_normalisation=False)
    assert sorted(old.neighbour_density) == ["H", "O"]


def _squeezed_water():
    w = molecule("H2O")
    d = w.positions[1] - w.positions[0]
    w.positions[1] = w.positions[0] + d * (0.5 / np.linalg.norm(d))
    return w


@pytest.mark.parametrize("model, make, text", [
    ("cu-emt", lambda: _fcc(3.61), None),
    ("cu-emt", lambda: _fcc(6.82), "has a neighbour density of 0 (the sum of (1 - r²/r_c²)³"),
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


@pytest.mark.parametrize("scale, hinted", [(0.1, True), (0.6, False), (1.0, False)])
@pytest.mark.parametrize("path", ["ase", "evaluate"])
def test_a_molecule_in_nm_is_told_its_likely_unit(scale, hinted, path):
    """A small molecule typed in nm cannot reach the unit-mistake density (organic-xtb would need
    ~80 atoms inside one cutoff): it was warned about close pairs only, with advice on structures
    and time steps (review w15: ethanol at E = 2.8e4 eV). The close-pair warning now names nm when
    the closest pair sits at 1/20-1/5 of its training minimum; a squeezed molecule is not told so."""
    import torch

    mol = molecule("CH3CH2OH")
    mol.positions *= scale
    with warnings.catch_warnings(record=True) as got:
        warnings.simplefilter("always")
        if path == "ase":
            mol.calc = LawfulCalculator("organic-xtb")
            mol.get_potential_energy()
        else:
            load_model("organic-xtb").evaluate(torch.tensor(mol.positions), torch.tensor(mol.numbers))
    close = [str(w.message) for w in got if "apart" in str(w.message)]
    assert bool(close) is (scale < 1.0)
    assert any("in nm, not Å? (multiply them by 10" in m for m in close) is hinted


@pytest.mark.parametrize("engine", ["ase", "evaluate", "batch", "torchscript"])
def test_a_species_seen_only_isolated_is_outside_not_a_unit_mistake(engine):
    """A species whose training density top is 0 (only ever an isolated atom, as in a set of
    per-element reference frames) has no scale for a unit mistake: its atom with neighbours was
    refused as "lengths in nm for Å" by every engine whenever another species' top was above 0.
    It is reported as outside its species' range (strict: stopped as such) and the others' checks
    are unchanged."""
    import torch

    from lawful.forcefields import evaluate_batch, export_torchscript
    from lawful.forcefields.molecules import alanine_dipeptide
    from lawful.kernels.errors import InputError

    model = load_model("organic-xtb")
    model.neighbour_density = dict(model.neighbour_density, N=(0.0, 0.0))
    mol = alanine_dipeptide(phi=-80.0, psi=75.0)
    n_index = int(np.flatnonzero(mol.numbers == 7)[0])

    def run(strict):
        if engine == "ase":
            mol.calc = LawfulCalculator(model, strict=strict)
            return mol.get_potential_energy()
        if engine == "evaluate":
            return model.evaluate(torch.tensor(mol.positions), torch.tensor(mol.numbers))
        if engine == "batch":
            return evaluate_batch(model, [mol])
        module = export_torchscript(model, pbc=False, strict=strict)
        return module(torch.tensor(mol.positions), torch.tensor(mol.numbers), torch.zeros(3, 3, dtype=torch.float64))

    with warnings.catch_warnings(record=True) as got:
        warnings.simplefilter("always")
        run(False)
    said = [str(w.message) for w in got if "neighbour density" in str(w.message)]
    assert said and f"atom {n_index} (N)" in said[0] and "nm for" not in said[0], said
    if engine in ("ase", "torchscript"):
        with pytest.raises((NumericalError, torch.jit.Error), match=rf"atom {n_index} \(N\) has a neighbour density") as err:
            run(True)
        assert not isinstance(err.value, InputError)

"""LawfulCalculator and ModelRunner against stale answers: whatever changed since the last
calculation (the atoms, their cell and periodicity, or the model object itself), the cached path
must give what a fresh calculator gives on a fresh copy of the atoms (float64)."""

from __future__ import annotations

import copy
import pickle
import warnings

import numpy as np
import pytest
import torch
from ase.build import bulk, molecule

from lawful.forcefields import load_model
from lawful.integrations.ase import LawfulCalculator
from lawful.integrations.runner import ModelRunner


@pytest.fixture(autouse=True)
def _quiet_domain_reports():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # out-of-domain reports of rattled cells are not the point here
        yield


def _copper(offset: float = 0.0):
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((2, 2, 2))
    atoms.rattle(0.05, seed=1)
    atoms.positions += offset
    return atoms


def _results(atoms, calc=None):
    """energy, per-atom energies, forces and (3D periodic) stress of ``atoms`` with ``calc``, or with
    a fresh calculator of the shipped cu-emt on a fresh copy."""
    if calc is None:
        atoms = atoms.copy()
        calc = LawfulCalculator("cu-emt")
    atoms.calc = calc
    out = {"energy": atoms.get_potential_energy(), "energies": atoms.get_potential_energies(),
           "forces": atoms.get_forces(apply_constraint=False)}
    if atoms.pbc.all():
        out["stress"] = atoms.get_stress()
    return out


def _assert_same(got, want, atol=1e-12):
    assert sorted(got) == sorted(want)
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=0, atol=atol, err_msg=k)


def _with_atom_at(atoms, x):
    atoms.positions[0] = [x, 1.0, 1.0]


STEPS = [   # each applied to the atoms of the step before, one calculator throughout
    ("move 0.1 Å, under skin/2", lambda a: a.positions.__setitem__(3, a.positions[3] + [0.1, 0, 0])),
    ("move 0.4 Å, over skin/2", lambda a: a.positions.__setitem__(3, a.positions[3] + [0.4, 0, 0])),
    ("near the face", lambda a: _with_atom_at(a, a.cell[0, 0] - 0.01)),
    ("0.30 Å across the face, wrapped", lambda a: _with_atom_at(a, 0.29)),
    ("back 0.15 Å, unwrapped", lambda a: _with_atom_at(a, a.cell[0, 0] + 0.14)),
    ("one lattice vector", lambda a: a.positions.__setitem__(5, a.positions[5] + a.cell[0])),
    ("minus two lattice vectors", lambda a: a.positions.__setitem__(6, a.positions[6] - 2 * a.cell[1])),
    ("cell x1.01, atoms scaled", lambda a: a.set_cell(a.cell * 1.01, scale_atoms=True)),
    ("cell x1.01, atoms kept", lambda a: a.set_cell(a.cell * 1.01)),
    ("cell sheared", lambda a: a.set_cell(a.cell.array + [[0, 0.3, 0], [0, 0, 0], [0, 0, 0]], scale_atoms=True)),
    ("slab, pbc TTF", lambda a: setattr(a, "pbc", [True, True, False])),
    ("slab's vacuum axis longer", lambda a: a.set_cell(a.cell.array * [[1], [1], [1.5]])),
    ("periodic again", lambda a: setattr(a, "pbc", True)),
    ("open", lambda a: setattr(a, "pbc", False)),
    ("one atom fewer", lambda a: a.pop(7)),
    ("periodic, 31 atoms", lambda a: setattr(a, "pbc", True)),
]


def test_one_calculator_through_every_kind_of_change_gives_what_a_fresh_one_gives():
    """Verlet reuse, lattice jumps folded into the shifts, a strained cell, pbc flips and a changed
    atom count: each step's cached-path energy, per-atom energies, forces and stress equal a fresh
    calculator's to round-off, and the per-atom energies sum to the energy."""
    atoms = _copper()
    calc = LawfulCalculator("cu-emt", skin=0.5)
    _assert_same(_results(atoms, calc), _results(atoms))
    for name, change in STEPS:
        change(atoms)
        got = _results(atoms, calc)
        _assert_same(got, _results(atoms))
        assert abs(got["energies"].sum() - got["energy"]) < 1e-11, name
    assert calc._runner.neighbor_rebuilds < 1 + len(STEPS)    # the list was reused somewhere


def test_swapped_species_and_a_stated_charge_are_recomputed():
    """Same atom count, two species exchanged: recomputed with the new species (not the cached
    energy); then a charge stated in ``info`` is a change too (it warns, the energy is unchanged)."""
    m = molecule("CH3CH2OH")
    calc = LawfulCalculator("organic-xtb")
    m.calc = calc
    e0 = m.get_potential_energy()
    z = m.numbers.copy()
    i_c, i_o = int(np.flatnonzero(z == 6)[0]), int(np.flatnonzero(z == 8)[0])
    z[[i_c, i_o]] = z[[i_o, i_c]]
    m.numbers = z
    fresh = m.copy()
    fresh.calc = LawfulCalculator("organic-xtb")
    assert abs(m.get_potential_energy() - fresh.get_potential_energy()) < 1e-12
    assert abs(m.get_potential_energy() - e0) > 0.1
    np.testing.assert_allclose(m.get_forces(), fresh.get_forces(), rtol=0, atol=1e-12)
    m.info["charge"] = 1
    assert "initial_charges" in calc.check_state(m)


def test_a_model_trained_further_after_a_calculation_is_not_answered_from_the_cache():
    """A model object passed to the calculator is shared, not copied (it may still be trained):
    after its weights change in place, the energy, forces and stress are those of the new weights,
    asked with the atoms or without, and todict() names the weights now. Before: the cached energy
    of the old weights (0.577 eV against 0.186 eV fresh), and the old sha256."""
    model = load_model("cu-emt")
    atoms = _copper()
    calc = LawfulCalculator(model)
    before = _results(atoms, calc)
    sha_before = calc.todict()["model_sha256"]
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(1.01)
    assert "model" in calc.check_state(atoms)
    b = atoms.copy()
    b.calc = LawfulCalculator(model)
    want = _results(b, b.calc)
    _assert_same(_results(atoms, calc), want)
    assert abs(want["energy"] - before["energy"]) > 0.1          # the change matters
    assert calc.check_state(atoms) == []
    assert calc.todict() == b.calc.todict() and calc.todict()["model_sha256"] != sha_before
    # asked without atoms: ASE does not call check_state on this path
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(1.01)
    c = atoms.copy()
    c.calc = LawfulCalculator(model)
    assert abs(calc.get_potential_energy() - c.get_potential_energy()) < 1e-12


def test_a_shipped_model_moved_to_float32_after_a_calculation_is_followed():
    """``calc.model.to(torch.float32)`` after a float64 calculation, far from the origin: the
    runner takes the new dtype (positions offset before rounding, as for a calculator made with
    dtype="float32"), and calc.dtype / todict() say float32. Before: the runner kept float64
    buffers, the model rounded coordinates of 1e4 Å (forces 6e-3 eV/Å off, energy 9e-4 eV), and
    calc.dtype said float64."""
    atoms = _copper(offset=1e4)
    calc = LawfulCalculator("cu-emt")
    _results(atoms, calc)
    calc.model.to(torch.float32)
    atoms.rattle(0.01, seed=2)
    got = _results(atoms, calc)
    want = _results(atoms)
    made32 = _results(atoms, LawfulCalculator("cu-emt", dtype="float32"))
    assert abs(got["energy"] - want["energy"]) < 1e-5
    assert np.abs(got["forces"] - want["forces"]).max() < 2e-5
    assert np.abs(got["stress"] - want["stress"]).max() < 1e-6
    assert np.abs(got["forces"] - made32["forces"]).max() < 1e-5
    assert calc.dtype == torch.float32 and calc._runner.dtype == torch.float32
    d = calc.todict()
    assert d["dtype"] == "float32" and d["model"] == "cu-emt (changed in memory)"


def test_a_runner_follows_its_model_moved_in_place():
    """The engine-neutral runner (OpenMM's too): a model moved to float32 after the first
    evaluation gets float32 buffers and the offset before rounding; the float64 forces are matched
    to float32 round-off far from the origin."""
    model = load_model("cu-emt")
    atoms = _copper(offset=1e4)
    cell = np.asarray(atoms.cell.array)
    runner = ModelRunner(model, atoms.numbers, skin=0.5)
    want = runner.evaluate(atoms.positions, cell=cell, pbc=True)["forces"].detach().numpy().copy()
    model.to(torch.float32)
    out = runner.evaluate(atoms.positions, cell=cell, pbc=True)
    assert np.abs(out["forces"].detach().double().numpy() - want).max() < 2e-5
    assert runner.dtype == torch.float32 and out["forces"].dtype == torch.float32


@pytest.mark.parametrize("changed_first", [False, True])
def test_a_pickled_or_copied_calculator_keeps_its_results_and_name(changed_first):
    """New tensors in a copy are not a changed model: a pickled or deep-copied calculator keeps its
    cached results and names the model as the original does, changed or not."""
    atoms = _copper()
    calc = LawfulCalculator("cu-emt")
    if changed_first:
        with torch.no_grad():
            calc.model.readout.nets[0][0].bias.add_(0.01)
    energy = _results(atoms, calc)["energy"]
    for other in (pickle.loads(pickle.dumps(calc)), copy.deepcopy(calc)):
        assert other.check_state(atoms) == [] and other.results["energy"] == energy
        assert other.todict() == calc.todict()
        assert other.todict()["model"] == ("cu-emt (changed in memory)" if changed_first else "cu-emt")


def test_the_float32_offset_is_renewed_by_distance_in_angstrom_whatever_the_unit():
    """OpenMM's positions come in nm (``length_scale=10``): a float32 structure that drifted 90 Å
    (9 nm) from the offset taken at the first call gets a new offset, as in Å, and keeps float32
    round-off. Before: the 10-unit radius meant 10 nm there, and its forces were 1.1e-4 eV/Å off
    against 2.3e-6 for the same structure given in Å."""
    atoms = _copper()
    cell = np.asarray(atoms.cell.array)
    want = ModelRunner(load_model("cu-emt"), atoms.numbers).evaluate(
        atoms.positions, cell=cell, pbc=True)["forces"].detach().numpy()
    model32 = load_model("cu-emt").to(torch.float32)
    for scale in (1.0, 10.0):   # Å, nm
        runner = ModelRunner(model32, atoms.numbers)
        runner.evaluate(atoms.positions / scale, cell=cell / scale, pbc=True, length_scale=scale)
        out = runner.evaluate((atoms.positions + 90.0) / scale, cell=cell / scale, pbc=True, length_scale=scale)
        assert np.abs(out["forces"].detach().double().numpy() - want).max() < 1e-5, scale

"""A species pair that never came within the cutoff in the training frames is outside the model's
domain at any distance closer than ``DOMAIN_TOLERANCE`` x the cutoff.

Before, ``train`` recorded only the pairs its frames held, and ``domain_limits`` gives a pair
without a record no limit: a Cu/Ag model trained on pure Cu and pure Ag cells evaluated an Ag
atom 1.0 Å from a Cu atom inside a copper crystal without a warning (composition in the span of
the training ones, neighbour densities inside their ranges), though it never saw a Cu-Ag
interaction at any distance.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator

from lawful.forcefields import NeuralPotential, evaluate_batch, train
from lawful.integrations.ase import LawfulCalculator
from lawful.kernels.errors import OutOfDomainWarning

CUTOFF = 4.0


def _labelled(atoms):
    atoms.calc = EMT()
    e, f, s = atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress()
    atoms.calc = SinglePointCalculator(atoms, energy=e, forces=f, stress=s)
    return atoms


def _pure(element, a, seed):
    atoms = bulk(element, "fcc", a=a, cubic=True).repeat((2, 1, 1))
    atoms.rattle(0.05, seed=seed)
    return _labelled(atoms)


@pytest.fixture(scope="module")
def model():
    """Trained (one epoch: the record, not the fit, is under test) on pure Cu and pure Ag cells."""
    # compressed and stretched cells: neighbour densities wide enough that an Ag atom on a Cu site,
    # and the Cu atoms around it, lie inside their species' ranges (only the pair is new)
    frames = ([_pure("Cu", a, k) for k, a in enumerate((3.35, 3.5, 3.65, 3.8))]
              + [_pure("Ag", a, 10 + k) for k, a in enumerate((3.5, 3.7, 3.9, 4.1))])
    m = NeuralPotential(["Cu", "Ag"], cutoff=CUTOFF, n_basis=4, n_radial=2, lmax=1, hidden=(8,), dtype=torch.float64)
    val = [_pure("Cu", 3.62, 20), _pure("Ag", 4.10, 21)]
    train(m, frames, validation=val, epochs=1, batch_size=8, progress=False, check_labels=False)
    return m


def _copper_with_silver_at(distance):
    """A Cu crystal (2x2x2 cubic cells, a = 3.61 Å) with the nearest neighbour of atom 0 (on its site,
    2.553 Å away along (0, 1, 1)) turned into Ag and moved to ``distance`` Å of atom 0 along that line."""
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)
    atoms.symbols[1] = "Ag"
    atoms.positions[1] = atoms.positions[0] + distance * np.array([0.0, 1.0, 1.0]) / np.sqrt(2.0)
    return atoms


def test_pairs_never_within_the_cutoff_are_recorded_at_it(model):
    rec = model.pair_min_distance
    assert rec["Ag-Cu"] == CUTOFF                      # no Cu-Ag pair in any training frame
    assert 2.0 < rec["Cu-Cu"] < 2.5 and 2.0 < rec["Ag-Ag"] < 2.6     # the seen pairs: their real minima


# (case, Ag placed this far (Å) from a Cu atom in a Cu crystal, out of domain?)
CASES = [
    ("Cu-Ag contact 1.0 A, never seen", 1.0, True),
    ("Ag on a Cu site, 2.553 A from its Cu neighbours, never seen", 3.61 / np.sqrt(2.0), True),
]


@pytest.mark.parametrize("case, distance, outside", CASES, ids=[c[0] for c in CASES])
def test_an_unseen_pair_is_out_of_domain(model, case, distance, outside):
    atoms = _copper_with_silver_at(distance)
    with warnings.catch_warnings(record=True) as got:
        warnings.simplefilter("always")
        evaluate_batch(model, [atoms], stress=False)
    said = [str(w.message) for w in got if issubclass(w.category, OutOfDomainWarning)]
    assert bool(said) == outside, (case, said)
    assert "Ag-Cu" in said[0] and "no Ag-Cu pair came within the 4 Å cutoff" in said[0], said[0]
    with warnings.catch_warnings(record=True) as got:      # the engines read the same record
        warnings.simplefilter("always")
        atoms.calc = LawfulCalculator(model)
        atoms.get_potential_energy()
    said = [str(w.message) for w in got if issubclass(w.category, OutOfDomainWarning)]
    assert any("no Ag-Cu pair came within the 4 Å cutoff" in m for m in said), (case, said)


def test_seen_pairs_inside_their_range_stay_in_domain(model):
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)
    atoms.rattle(0.03, seed=7)
    with warnings.catch_warnings():
        warnings.simplefilter("error", OutOfDomainWarning)
        evaluate_batch(model, [atoms], stress=False)

"""OpenMM's energy minimisation and the training-domain checks.

OpenMM's L-BFGS probes trial geometries far from anything physical: from an in-domain start of
alanine dipeptide in vacuum, ``simulation.minimizeEnergy()`` warned "at step 0" (H-H at 0.17 Å, an
N with no neighbour), used up the once-only report so that a real 1.4 Å O-N contact afterwards
went unreported, and stopped a strict run, though the minimum it reached was in domain (OpenMM
audit). ``lawful.integrations.openmm.minimize`` pauses the checks during the line search and makes
them once on the minimised structure."""

from __future__ import annotations

import warnings

import numpy as np
import openmm
import pytest
from openmm import app
from openmm import unit as u

from lawful.forcefields.molecules import alanine_dipeptide
from lawful.integrations.ase import LawfulCalculator
from lawful.integrations.openmm import minimize, system_from_atoms
from lawful.kernels.errors import NumericalError, OutOfDomainWarning


def _simulation(strict):
    mol = alanine_dipeptide(phi=-80.0, psi=75.0)
    mol.rattle(0.08, seed=2)
    system, top, pos = system_from_atoms(mol, "organic-xtb", backend="python", strict=strict)
    sim = app.Simulation(top, system, openmm.VerletIntegrator(0.0005), openmm.Platform.getPlatformByName("Reference"))
    sim.context.setPositions(pos)
    return mol, sim


@pytest.mark.parametrize("strict", [False, True])
def test_minimize_checks_the_minimum_not_the_line_search(strict):
    mol, sim = _simulation(strict)
    start = mol.copy()
    start.calc = LawfulCalculator("organic-xtb", strict=True)
    start.get_potential_energy()                                     # the start is in domain
    with warnings.catch_warnings(record=True) as got:
        warnings.simplefilter("always")
        e_kj = minimize(sim, max_iterations=200)
    assert [w for w in got if issubclass(w.category, OutOfDomainWarning)] == []
    state = sim.context.getState(getPositions=True, getEnergy=True)
    x = state.getPositions(asNumpy=True).value_in_unit(u.angstrom)
    end = mol.copy()
    end.positions = x
    end.calc = LawfulCalculator("organic-xtb", strict=True)
    assert end.get_potential_energy() * 96.48533212331002 == pytest.approx(e_kj, rel=1e-9)   # kJ/mol per eV
    assert e_kj < state.getPotentialEnergy().value_in_unit(u.kilojoule_per_mole) + 1e-6
    # a real contact afterwards is still reported by the same force
    y = x.copy()
    d = y[3] - y[2]
    y[2] = y[3] - d / np.linalg.norm(d) * 1.4
    sim.context.setPositions(y * 0.1)
    if strict:
        from lawful.integrations.openmm import lawful_errors

        with pytest.raises(NumericalError, match=r"atoms 2 \(O\) and 3 \(N\) are 1.4 Å apart"):
            with lawful_errors():
                sim.context.getState(getEnergy=True)
        return
    with warnings.catch_warnings(record=True) as got:
        warnings.simplefilter("always")
        sim.context.getState(getEnergy=True)
    said = [str(w.message) for w in got if issubclass(w.category, OutOfDomainWarning)]
    assert len(said) == 1 and "atoms 2 (O) and 3 (N) are 1.4 Å apart" in said[0]


def test_a_minimum_outside_the_domain_is_reported():
    """The checks are made on the minimised structure: two molecules pressed together stay so."""
    mol, sim = _simulation(True)
    x = sim.context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(u.angstrom)
    x[2] = x[3] + np.array([0.5, 0.0, 0.0])                          # O onto N: far inside any training pair
    sim.context.setPositions(x * 0.1)
    with pytest.raises(NumericalError, match="training data"):
        minimize(sim, max_iterations=1)

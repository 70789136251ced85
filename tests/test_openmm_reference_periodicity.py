"""OpenMMCalculator: the Atoms' pbc and the System's periodicity must agree.

Before the check a periodic System evaluated ``pbc=False`` Atoms in whatever box the Context held
last (895 TIP3P waters, 30 Å box, the same positions: -373.39 eV or -318.64 eV depending on the previous
call), ``pbc=[True, True, False]`` was silently periodic along z, and periodic Atoms on a
non-periodic System lost their images (-307.24 eV instead of -373.39 eV). All float64 (Reference).
"""

from pathlib import Path

import numpy as np
import pytest

openmm = pytest.importorskip("openmm")
from openmm import app, unit  # noqa: E402

from ase import Atoms  # noqa: E402

from lawful.integrations.openmm_reference import OpenMMCalculator  # noqa: E402
from lawful.kernels.errors import InputError  # noqa: E402


@pytest.fixture(scope="module")
def water_box():
    """895 TIP3P waters in their 30 Å box (OpenMM's tip3p.pdb): numbers, positions (Å), cell
    (Å) and a periodic (PME) and a non-periodic (NoCutoff) flexible amber14 System."""
    pdb = app.PDBFile(str(Path(app.__file__).parent / "data" / "tip3p.pdb"))
    ff = app.ForceField("amber14-all.xml", "amber14/tip3p.xml")
    kw = dict(constraints=None, rigidWater=False)
    periodic = ff.createSystem(pdb.topology, nonbondedMethod=app.PME, nonbondedCutoff=0.9 * unit.nanometer, **kw)
    vacuum = ff.createSystem(pdb.topology, nonbondedMethod=app.NoCutoff, **kw)
    numbers = [a.element.atomic_number for a in pdb.topology.atoms()]
    positions = np.asarray(pdb.positions.value_in_unit(unit.angstrom), dtype=np.float64)
    cell = np.asarray(pdb.topology.getPeriodicBoxVectors().value_in_unit(unit.angstrom), dtype=np.float64)
    return {"numbers": numbers, "positions": positions, "cell": cell, "periodic": periodic, "vacuum": vacuum}


def _atoms(box, pbc, scale=1.0):
    return Atoms(numbers=box["numbers"], positions=box["positions"], cell=box["cell"] * scale, pbc=pbc)


# (System, atoms.pbc, the words the error must contain)
MISMATCHES = [
    ("periodic", False, "pbc=False"),
    ("periodic", [True, True, False], "all three directions"),
    ("vacuum", [True, True, False], "all three directions"),
    ("vacuum", True, "no periodic boundary"),
]


@pytest.mark.parametrize("system, pbc, words", MISMATCHES)
def test_pbc_that_disagrees_with_the_system_is_refused(water_box, system, pbc, words):
    calc = OpenMMCalculator(water_box[system])
    calc.calculate(_atoms(water_box, system == "periodic"), ["energy"])   # a valid call first
    atoms = _atoms(water_box, pbc)
    atoms.calc = calc
    with pytest.raises(InputError, match=words):
        atoms.get_potential_energy()


def test_the_energy_depends_on_the_atoms_alone_not_on_the_previous_call(water_box):
    # the same periodic structure, evaluated fresh and after a call with a 10 % larger cell
    fresh = OpenMMCalculator(water_box["periodic"])
    e_fresh = fresh.get_potential_energy(_atoms(water_box, True))
    used = OpenMMCalculator(water_box["periodic"])
    e_big = used.get_potential_energy(_atoms(water_box, True, scale=1.1))
    e_after = used.get_potential_energy(_atoms(water_box, True))
    assert e_big != pytest.approx(e_fresh, abs=1.0)            # the cell matters (eV)
    assert e_after == pytest.approx(e_fresh, rel=1e-12, abs=1e-9)
    # periodic images matter for this box: the vacuum energy of the same positions differs
    e_vacuum = OpenMMCalculator(water_box["vacuum"]).get_potential_energy(_atoms(water_box, False))
    assert abs(e_vacuum - e_fresh) > 1.0

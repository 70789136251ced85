"""The unit constants of lawful.kernels.units (re-exported as lawful.integrations.units) against
OpenMM's own unit module."""

import math

import openmm.unit as omu
import pytest

from lawful.integrations import units

REL = 1e-12


def _rel(a, b):
    return abs(a - b) / abs(b)


def test_length():
    assert _rel(units.ANGSTROM_PER_NM, (1.0 * omu.nanometer).value_in_unit(omu.angstrom)) < REL
    assert _rel(units.NM_PER_ANGSTROM, (1.0 * omu.angstrom).value_in_unit(omu.nanometer)) < REL


def test_energy():
    ev = 1.0 * omu.elementary_charge * omu.volt * omu.AVOGADRO_CONSTANT_NA
    assert _rel(units.KJMOL_PER_EV, ev.value_in_unit(omu.kilojoule_per_mole)) < REL
    assert _rel(units.EV_PER_KJMOL * units.KJMOL_PER_EV, 1.0) < REL
    assert _rel(units.KCALMOL_PER_EV, ev.value_in_unit(omu.kilocalorie_per_mole)) < REL


def test_force():
    f = 1.0 * omu.elementary_charge * omu.volt * omu.AVOGADRO_CONSTANT_NA / omu.angstrom
    assert _rel(units.FORCE_OPENMM_PER_ASE, f.value_in_unit(omu.kilojoule_per_mole / omu.nanometer)) < REL
    assert _rel(units.FORCE_ASE_PER_OPENMM * units.FORCE_OPENMM_PER_ASE, 1.0) < REL


def test_time():
    assert _rel(units.PS_PER_FS, (1.0 * omu.femtosecond).value_in_unit(omu.picosecond)) < REL
    assert _rel(units.FS_PER_PS, (1.0 * omu.picosecond).value_in_unit(omu.femtosecond)) < REL


@pytest.mark.parametrize("value", [1.0, -3.5, 1e-8, 12345.678])
def test_helpers_are_the_constants(value):
    assert units.energy_ev_to_kjmol(value) == value * units.KJMOL_PER_EV
    assert units.forces_ev_a_to_kjmol_nm(value) == value * units.FORCE_OPENMM_PER_ASE
    assert math.isclose(units.positions_nm_to_angstrom(value), value * 10.0, rel_tol=1e-15)


def test_atomic_units_and_stress_against_codata_2018():
    """The factors the training-label check names: Hartree 27.211386245988 eV, bohr 0.529177210903 Å
    (CODATA 2018, to ASE's derivation of them: 1e-9), 1 eV/Å³ = 160.2176634 GPa (exact since 2019)."""
    assert _rel(units.EV_PER_HARTREE, 27.211386245988) < 1e-9
    assert _rel(units.ANGSTROM_PER_BOHR, 0.529177210903) < 1e-9
    assert _rel(units.GPA_PER_EV_PER_A3, 160.2176634) < 1e-9

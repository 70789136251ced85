"""The one place where lawful's unit constants are defined: its units (ASE: Å, eV, eV/Å, eV/Å³,
amu, fs) against OpenMM's (nm, kJ/mol, kJ/mol/nm, ps).

It lives in the base layer because both the engine adapters (``lawful.integrations``) and the
reference-data adapter that labels structures with an OpenMM force field
(``lawful.forcefields.reference``) convert at their OpenMM boundary, and forcefields may not import
integrations. ``lawful.integrations.units`` re-exports it for the engine side.

Constants come from ``ase.units``, evaluated for CODATA 2018 (``ase.units.create_units("2018")``):
since the 2019 SI redefinition the elementary charge and Avogadro's number are exact, and OpenMM
uses exactly those values, whereas ASE's module-level default is still CODATA 2014 (which differs
by 8e-9 relative in eV -> kJ/mol). ``tests/test_units.py`` checks every constant against OpenMM's
own ``openmm.unit`` conversions to 1e-12 relative. Never write a literal factor anywhere else:
import it from here.

That 1e-12 is the agreement of these conversion factors with OpenMM's, not of the two engines'
MD numbers. ASE's MD runs in ASE's module-level units, CODATA 2014: its velocities are Å per
ASE time unit (``ase.units.fs`` of 2014) and its kinetic energy is m v^2 / 2 with the 2014
amu-to-eV relation, while OpenMM computes the kinetic energy of the same motion with the 2018
constants. So kinetic energies of the same state agree across the engines only to about 8e-9
relative (the amu/e ratio changed by 7.8e-9 from 2014 to 2018; 8.1e-9 measured for a Cu cell,
audit U5), and a temperature from ASE's ``get_temperature`` (2014 k_B) differs from one computed
with 2018's k_B (``drift.csv``) by 3.4e-7 relative. Potential energies and forces carry no such
term: the models work in eV and Å, and converting them to OpenMM uses only the table below.
"""

from __future__ import annotations

import ase.units as _ase_units

__all__ = [
    "CODATA_VERSION",
    "ANGSTROM_PER_NM", "NM_PER_ANGSTROM", "KJMOL_PER_EV", "EV_PER_KJMOL", "KCALMOL_PER_EV",
    "EV_PER_HARTREE", "ANGSTROM_PER_BOHR", "GPA_PER_EV_PER_A3",
    "FORCE_OPENMM_PER_ASE", "FORCE_ASE_PER_OPENMM", "PS_PER_FS", "FS_PER_PS",
    "positions_nm_to_angstrom", "energy_ev_to_kjmol", "forces_ev_a_to_kjmol_nm",
]

#: The CODATA release whose (exact, post-2019 SI) constants OpenMM uses.
CODATA_VERSION = "2018"
_u = _ase_units.create_units(CODATA_VERSION)

#: 1 nm in Å (exact).
ANGSTROM_PER_NM: float = _u["nm"] / _u["Angstrom"]
#: 1 Å in nm (exact).
NM_PER_ANGSTROM: float = 1.0 / ANGSTROM_PER_NM
#: 1 eV in kJ/mol.
KJMOL_PER_EV: float = _u["eV"] / (_u["kJ"] / _u["mol"])
#: 1 kJ/mol in eV.
EV_PER_KJMOL: float = 1.0 / KJMOL_PER_EV
#: 1 eV in kcal/mol (thermochemical calorie, 4.184 J): relative conformer energies.
KCALMOL_PER_EV: float = _u["eV"] / (_u["kcal"] / _u["mol"])
#: 1 eV/Å in kJ/mol/nm.
FORCE_OPENMM_PER_ASE: float = KJMOL_PER_EV * ANGSTROM_PER_NM
#: 1 kJ/mol/nm in eV/Å.
FORCE_ASE_PER_OPENMM: float = 1.0 / FORCE_OPENMM_PER_ASE
#: 1 Hartree in eV (the label check names energies and forces in atomic units).
EV_PER_HARTREE: float = _u["Hartree"] / _u["eV"]
#: 1 bohr in Å.
ANGSTROM_PER_BOHR: float = _u["Bohr"] / _u["Angstrom"]
#: 1 eV/Å³ in GPa (stress).
GPA_PER_EV_PER_A3: float = (_u["eV"] / _u["Angstrom"] ** 3) / _u["GPa"]
#: 1 fs in ps (exact).
PS_PER_FS: float = 1.0e-3
#: 1 ps in fs (exact).
FS_PER_PS: float = 1.0e3


def positions_nm_to_angstrom(x):
    """Positions (any array-like, nm) -> Å."""
    return x * ANGSTROM_PER_NM


def energy_ev_to_kjmol(e):
    """Energy (eV) -> kJ/mol."""
    return e * KJMOL_PER_EV


def forces_ev_a_to_kjmol_nm(f):
    """Forces (eV/Å) -> kJ/mol/nm."""
    return f * FORCE_OPENMM_PER_ASE

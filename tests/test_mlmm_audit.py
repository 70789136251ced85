"""ML/MM audit: the ML region of an openmm-ml mixed System against an independent ASE evaluation
(including a solute split across the periodic box, and openmm-ml's interpolation), and the total
charge of the ML region, which the models cannot take as input.

A lysine (+1 e in amber14) as the ML region of ``createMixedSystem`` with organic-xtb (trained on
neutral molecules) ran as if neutral without a word: the charge check that the ASE calculator and
``create_force(charge=)`` make was never reached from openmm-ml, and ``charge=`` (openmm-ml's own
keyword) was refused. Float64, Reference platform."""

from __future__ import annotations

import copy
import os
import warnings

import numpy as np
import openmm
import pytest
from openmm import app
from openmm import unit as u

openmmml = pytest.importorskip("openmmml")

from ase import Atoms  # noqa: E402

from lawful.integrations import mlmm, units  # noqa: E402
from lawful.integrations.ase import LawfulCalculator  # noqa: E402
from lawful.kernels.errors import InputError, NumericalError, OutOfDomainWarning  # noqa: E402

SHIPPED = "organic-xtb"   # trained on neutral molecules (its file records training charge 0)


def _charge_warnings(fn):
    """``fn()``'s result and the OutOfDomainWarnings about a total charge it raised."""
    with warnings.catch_warnings(record=True) as got:
        warnings.simplefilter("always")
        out = fn()
    return out, [str(w.message) for w in got
                 if issubclass(w.category, OutOfDomainWarning) and "total charge" in str(w.message)]


def _state(system, positions, groups=None, lam=None):
    """(energy eV, forces eV/Å) of ``groups`` (None: all) on the Reference platform."""
    ctx = openmm.Context(system, openmm.VerletIntegrator(1e-3), openmm.Platform.getPlatformByName("Reference"))
    ctx.setPositions(positions)
    if lam is not None:
        ctx.setParameter("lambda_interpolate", lam)
    kw = {} if groups is None else {"groups": set(groups)}
    st = ctx.getState(getEnergy=True, getForces=True, **kw)
    return (st.getPotentialEnergy().value_in_unit(u.kilojoule_per_mole) * units.EV_PER_KJMOL,
            st.getForces(asNumpy=True).value_in_unit(u.kilojoule_per_mole / u.nanometer) * units.FORCE_ASE_PER_OPENMM)


# -- the ML region's charge ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def villin():
    """OpenMM's own solvated villin test box (amber names) with its amber14 System (PME)."""
    path = os.path.join(os.path.dirname(app.__file__), "data", "test.pdb")
    if not os.path.exists(path):
        pytest.skip("OpenMM's test.pdb is not installed here")
    pdb = app.PDBFile(path)
    ff = app.ForceField(*mlmm.AMBER_FILES)
    mm = ff.createSystem(pdb.topology, nonbondedMethod=app.PME, nonbondedCutoff=1.0 * u.nanometer,
                         constraints=None, rigidWater=True)
    return pdb.topology, mm


@pytest.mark.parametrize("resname, charge", [("LYS", +1), ("ASP", -1), ("ALA", 0)])
def test_a_charged_residue_as_ml_region_is_checked_against_the_training_charges(villin, resname, charge):
    """Whole residues (link atoms cap their peptide bonds): amber14 gives LYS +1, ASP -1, ALA 0."""
    top, mm = villin
    residue = next(r for r in top.residues() if r.name == resname)
    ml = [a.index for a in residue.atoms()]
    from lawful.integrations.openmmml_potential import mm_charge

    nb = next(f for f in mm.getForces() if isinstance(f, openmm.NonbondedForce))
    q = sum(nb.getParticleParameters(i)[0].value_in_unit(u.elementary_charge) for i in ml)
    assert q == pytest.approx(charge, abs=1e-4) and mm_charge(mm, ml) == charge      # independent sum
    potential = openmmml.MLPotential("lawful", model=SHIPPED)
    _, said = _charge_warnings(lambda: potential.createMixedSystem(top, mm, ml))
    if charge == 0:
        assert said == []
        return
    assert len(said) == 1 and f"total charge of {charge:+d} e" in said[0]
    with pytest.raises(NumericalError, match=rf"total charge of \{charge:+d} e.*strict mode"):
        openmmml.MLPotential("lawful", model=SHIPPED, strict=True).createMixedSystem(top, mm, ml)
    # the caller's own statement of the region's charge is taken as given
    _, said = _charge_warnings(lambda: potential.createMixedSystem(top, mm, ml, charge=0))
    assert said == []


@pytest.fixture(scope="module")
def dipeptide_cation():
    """ACE-ALA-NME in vacuum whose MM charges sum to +1 (one H made a proton's worth more positive)."""
    top, pos = mlmm.alanine_dipeptide_topology()
    mm = mlmm.mm_system(top)
    nb = next(f for f in mm.getForces() if isinstance(f, openmm.NonbondedForce))
    q, s, e = nb.getParticleParameters(4)          # ALA H
    nb.setParticleParameters(4, q + 1.0 * u.elementary_charge, s, e)
    return top, pos, mm


@pytest.mark.parametrize("interpolate", [False, True])
def test_the_mm_charge_of_the_ml_region_reaches_the_check_with_and_without_interpolation(dipeptide_cation,
                                                                                          interpolate):
    top, pos, mm = dipeptide_cation
    potential = openmmml.MLPotential("lawful", model=SHIPPED)
    mixed, said = _charge_warnings(lambda: potential.createMixedSystem(top, copy.deepcopy(mm), list(range(22)),
                                                                       interpolate=interpolate))
    assert len(said) == 1 and "total charge of +1 e" in said[0]
    # the check changes no number: the ML energy is the model's on these atoms
    e_ml, _ = _state(mixed, pos, groups={0})
    e_ref, _ = _state(mlmm.mixed_system(top, interpolate=interpolate, force_group=0), pos, groups={0})
    assert e_ml == pytest.approx(e_ref, rel=1e-12)


def test_create_system_takes_openmm_mls_charge_keyword(dipeptide_cation):
    top, pos, _ = dipeptide_cation
    potential = openmmml.MLPotential("lawful", model=SHIPPED)
    _, said = _charge_warnings(lambda: potential.createSystem(top, charge=1))
    assert len(said) == 1 and "total charge of +1 e" in said[0]
    _, said = _charge_warnings(lambda: potential.createSystem(top))             # openmm-ml's default: 0
    assert said == []
    with pytest.raises(NumericalError, match=r"total charge of -1 e"):
        openmmml.MLPotential("lawful", model=SHIPPED, strict=True).createSystem(top, charge=-1)
    for bad in (0.5, "1", True):
        with pytest.raises(InputError, match="whole-number total charge"):
            potential.createSystem(top, charge=bad)


# -- the ML region against an independent ASE evaluation ----------------------------------------

@pytest.fixture(scope="module")
def solvated():
    top, pos = mlmm.alanine_dipeptide_topology()
    stop, spos = mlmm.solvate(top, pos, padding_nm=1.0)
    return stop, np.asarray(spos.value_in_unit(u.nanometer)), mlmm.mm_system(stop)


def test_ml_region_matches_ase_on_a_solute_split_across_the_box(solvated):
    """The ML force on a solute whose atoms were wrapped one by one into the box (split across
    three faces) is LawfulCalculator's on the whole molecule in vacuum, plain and interpolated
    (λ = 1 ML; at λ = 0 the group holds only the solute's own MM bonded terms, not the model)."""
    stop, xyz, mm = solvated
    edge = stop.getPeriodicBoxVectors()[0][0].value_in_unit(u.nanometer)
    split = np.mod(xyz - xyz[5] + 0.01, edge)          # CA at the box corner: every axis cut
    assert np.all(np.ptp(split[:22], axis=0)[1:] > 0.5 * edge)    # really split (y and z)
    atoms = Atoms(numbers=[a.element.atomic_number for a in stop.atoms()][:22],
                  positions=xyz[:22] * units.ANGSTROM_PER_NM)
    atoms.calc = LawfulCalculator(SHIPPED)
    e_ref, f_ref = atoms.get_potential_energy(), atoms.get_forces()
    plain = mlmm.mixed_system(stop, mm=copy.deepcopy(mm), force_group=1)
    interp = mlmm.mixed_system(stop, mm=copy.deepcopy(mm), force_group=1, interpolate=True)
    for system, lam in ((plain, None), (interp, 1.0)):
        e, f = _state(system, split, groups={1}, lam=lam)
        assert e == pytest.approx(e_ref, rel=1e-12)
        assert np.max(np.abs(f[:22] - f_ref)) <= 1e-9 * np.max(np.abs(f_ref))
        assert np.all(f[22:] == 0.0)
    # λ = 0: the group holds the solute's own MM energy (bonded + its internal nonbonded terms),
    # which is the 22 atoms' amber14 energy in vacuum (openmm-ml's Coulomb constant 138.935456
    # against OpenMM's: 2e-8 relative)
    e_zero, _ = _state(interp, xyz, groups={1}, lam=0.0)
    vacuum = mlmm.alanine_dipeptide_topology()[0]
    e_mm_solute, _ = _state(mlmm.mm_system(vacuum), xyz[:22])
    assert abs(e_mm_solute) > 0.5 and e_zero == pytest.approx(e_mm_solute, rel=1e-7)   # eV


# -- periodicity: the topology's box and the MM System must agree ---------------------------------

def test_a_boxed_topology_with_a_vacuum_mm_system_is_refused():
    """The lawful force follows the topology's box, so with a NoCutoff MM System the mixed System
    became periodic for the ML atoms alone: ACE-ALA-NME in a 0.9 nm box read 5.0 meV above its
    vacuum energy (its own images within the 5 Å cutoff) while the MM part stayed in vacuum."""
    top, pos = mlmm.alanine_dipeptide_topology()
    vacuum_mm = mlmm.mm_system(top)                           # no box: NoCutoff
    assert not vacuum_mm.usesPeriodicBoundaryConditions()
    potential = openmmml.MLPotential("lawful", model=SHIPPED)
    ok = potential.createMixedSystem(top, copy.deepcopy(vacuum_mm), list(range(22)))   # both say vacuum
    assert not ok.usesPeriodicBoundaryConditions()
    top.setPeriodicBoxVectors(np.eye(3) * 0.9 * u.nanometer)
    # the premise: the model on these atoms in that box is not the vacuum energy
    e_vac, _ = _state(ok, pos)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", OutOfDomainWarning)
        e_box, _ = _state(potential.createSystem(top), pos)
    assert abs(e_box - e_vac) > 1e-3                           # eV
    for interpolate in (False, True):
        with pytest.raises(InputError, match="topology has periodic box vectors but the MM System is not periodic"):
            potential.createMixedSystem(top, copy.deepcopy(vacuum_mm), list(range(22)), interpolate=interpolate)

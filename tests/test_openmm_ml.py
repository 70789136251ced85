"""openmm-ml: MLPotential("lawful", model=...) through the entry point — createSystem,
createMixedSystem, the model-file errors (float64, Reference platform)."""

from __future__ import annotations

import numpy as np
import openmm
import pytest
import torch
from ase.build import molecule
from openmm import app
from openmm import unit as u

openmmml = pytest.importorskip("openmmml")
from openmmml import MLPotential  # noqa: E402

from lawful.integrations import units  # noqa: E402
from lawful.integrations.ase import LawfulCalculator  # noqa: E402
from lawful.integrations.openmm import topology_from_atoms  # noqa: E402
from lawful.kernels.errors import InputError, ModelFileError, UnsupportedSpeciesError  # noqa: E402

from test_openmm_force import _openmm_energy_forces, _rel, _water_box  # noqa: E402
from test_openmm_pairmodel import MorsePairModel, rattled_copper  # noqa: F401,E402


def _neural(species):
    try:
        from lawful.forcefields import NeuralPotential
    except ImportError:
        pytest.skip("lawful.forcefields.NeuralPotential is not available yet")
    torch.manual_seed(0)
    return NeuralPotential(species=list(species), cutoff=4.5, dtype=torch.float64)


def test_entry_point_is_registered():
    assert "lawful" in MLPotential._implFactories


def test_create_system_from_model_file(tmp_path):
    model = _neural(["Cu"])
    path = tmp_path / "cu.lawful"
    model.save(path)
    atoms = rattled_copper(seed=11)
    top, positions = topology_from_atoms(atoms)
    potential = MLPotential("lawful", model=str(path))
    system = potential.createSystem(top)
    assert any(isinstance(f, openmm.CMMotionRemover) for f in system.getForces())  # openmm-ml's default
    system = potential.createSystem(top, removeCMMotion=False)  # the NVE recipe
    assert not any(isinstance(f, openmm.CMMotionRemover) for f in system.getForces())
    assert system.usesPeriodicBoundaryConditions()
    e, f = _openmm_energy_forces(system, positions)
    atoms.calc = LawfulCalculator(path)
    assert e == pytest.approx(atoms.get_potential_energy(), rel=1e-9)
    assert _rel(f, atoms.get_forces()) <= 1e-9


def test_create_system_molecule_with_model_object():
    mol = molecule("CH3CH2OH")
    model = MorsePairModel(species=["H", "C", "O"], r0=1.3, rcut1=2.5, rcut2=3.2, epsilon=0.2)
    top, positions = topology_from_atoms(mol)
    system = MLPotential("lawful", model=model).createSystem(top, removeCMMotion=False, backend="python")
    assert not system.usesPeriodicBoundaryConditions()
    e, f = _openmm_energy_forces(system, positions)
    ref = model.evaluate(mol.positions, mol.numbers)
    assert e == pytest.approx(float(ref["energy"]), rel=1e-9)
    assert _rel(f, ref["forces"].numpy()) <= 1e-9


def test_create_mixed_system_water_cluster():
    ff, top, pos, ml_atoms = _water_box()
    mm_system = ff.createSystem(top, nonbondedMethod=app.PME, nonbondedCutoff=0.7 * u.nanometer,
                                constraints=None, rigidWater=False)
    model = MorsePairModel(species=["H", "O"], r0=1.0, rcut1=2.5, rcut2=3.5, epsilon=0.1)
    mixed = MLPotential("lawful", model=model).createMixedSystem(top, mm_system, ml_atoms, forceGroup=1)
    e_ml, f_ml = _openmm_energy_forces(mixed, pos, groups={1})
    xyz = np.array(pos.value_in_unit(u.nanometer))[ml_atoms] * units.ANGSTROM_PER_NM
    box = np.array(top.getPeriodicBoxVectors().value_in_unit(u.nanometer)) * units.ANGSTROM_PER_NM
    z = [a.element.atomic_number for a in top.atoms() if a.index in set(ml_atoms)]
    ref = model.evaluate(xyz, z, cell=box, pbc=True)
    assert e_ml == pytest.approx(float(ref["energy"]), rel=1e-9)
    assert _rel(f_ml[ml_atoms], ref["forces"].numpy()) <= 1e-9
    # the mechanical embedding removed the ML-ML classical terms: the MM part differs from mm_system
    e_mm_only, _ = _openmm_energy_forces(mm_system, pos)
    e_mixed_mm, _ = _openmm_energy_forces(mixed, pos, groups={0})
    assert e_mixed_mm != pytest.approx(e_mm_only, rel=1e-9)
    sim = app.Simulation(top, mixed, openmm.VerletIntegrator(0.5 * u.femtosecond),
                         openmm.Platform.getPlatformByName("Reference"))
    sim.context.setPositions(pos)
    sim.minimizeEnergy(maxIterations=20)
    sim.step(3)


def test_bad_model_inputs(tmp_path, monkeypatch):
    with pytest.raises(ModelFileError, match="nothere.lawful"):
        MLPotential("lawful", model=str(tmp_path / "nothere.lawful"))
    with pytest.raises(InputError, match="needs a model"):
        MLPotential("lawful")
    water = molecule("H2O")
    top, _ = topology_from_atoms(water)
    with pytest.raises(UnsupportedSpeciesError, match="'H'"):
        MLPotential("lawful", model=MorsePairModel(species=["Cu"])).createSystem(top)
    not_a_model = tmp_path / "fake.lawful"
    not_a_model.write_bytes(b"\x80\x04K\x01.")  # a pickle, not a lawful file
    with pytest.raises(ModelFileError):
        MLPotential("lawful", model=str(not_a_model))


def test_model_file_from_another_version(tmp_path, monkeypatch):
    modelfile = pytest.importorskip("lawful.kernels.modelfile")
    model = _neural(["Cu"])
    path = tmp_path / "future.lawful"
    monkeypatch.setattr(modelfile, "FORMAT_VERSION", modelfile.FORMAT_VERSION + 1)
    model.save(path)
    monkeypatch.undo()
    with pytest.raises(ModelFileError, match="future.lawful"):
        MLPotential("lawful", model=str(path))


@pytest.mark.parametrize("precision, dtype_name", [("single", "float32"), ("double", "float64"), (None, "float64")])
def test_precision_keyword_is_honoured(precision, dtype_name):
    """createSystem(..., precision=...) as openmm-ml's MACE potential: the force uses that dtype,
    and single precision gives the double-precision energy to float32 accuracy."""
    atoms = rattled_copper(seed=17)
    top, positions = topology_from_atoms(atoms)
    model = _neural(["Cu"])
    potential = MLPotential("lawful", model=model)
    system = potential.createSystem(top, removeCMMotion=False, backend="python", precision=precision, device="cpu")
    assert system.getForce(0).getName() == f"LawfulForce[python,{dtype_name},cpu]"
    e, _ = _openmm_energy_forces(system, positions)
    e64, _ = _openmm_energy_forces(potential.createSystem(top, removeCMMotion=False, backend="python"), positions)
    assert e == pytest.approx(e64, rel=1e-5 if precision == "single" else 1e-12)
    if precision == "single":
        assert e != e64  # it really ran in float32
    assert model.dtype == torch.float64  # the caller's model is not converted
    single = MLPotential("lawful", model=model, precision="single")
    assert single.createSystem(top).getForce(0).getName() == "LawfulForce[python,float32,cpu]"


@pytest.mark.parametrize("source", ["object", "file"])
def test_double_after_single_is_the_float64_model_not_its_rounded_copy(tmp_path, source):
    """MLPotential(precision="single") then createSystem(precision="double"): the force was named
    float64 but cast up the float32 copy, its weights rounded (2e-3 kJ/mol off for alanine
    dipeptide). It is now made from what was passed, and equals the float64 model exactly."""
    atoms = rattled_copper(seed=17)
    top, positions = topology_from_atoms(atoms)
    model = _neural(["Cu"])
    model.save(tmp_path / "cu.lawful")
    given = model if source == "object" else str(tmp_path / "cu.lawful")
    e64, f64 = _openmm_energy_forces(MLPotential("lawful", model=given).createSystem(
        top, removeCMMotion=False, backend="python"), positions)
    single = MLPotential("lawful", model=given, precision="single")
    system = single.createSystem(top, removeCMMotion=False, backend="python", precision="double")
    assert system.getForce(0).getName() == "LawfulForce[python,float64,cpu]"
    e, f = _openmm_energy_forces(system, positions)
    assert e == e64 and np.array_equal(f, f64)
    assert model.dtype == torch.float64


@pytest.mark.parametrize("where, kwargs, pattern", [
    ("createSystem", dict(precison="double"), r"\['precison'\].*precision"),
    ("createSystem", dict(precision="half"), r"precision='half'"),
    ("createSystem", dict(periodic=True), r"\['periodic'\]"),
    ("MLPotential", dict(precission="single"), r"\['precission'\]"),
    ("MLPotential", dict(precision="double", dtype="float32"), r"disagree"),
])
def test_unknown_or_bad_keywords_are_refused(where, kwargs, pattern):
    atoms = rattled_copper(seed=18)
    top, _ = topology_from_atoms(atoms)
    with pytest.raises(InputError, match=pattern):
        if where == "MLPotential":
            MLPotential("lawful", model=MorsePairModel(), **kwargs)
        else:
            MLPotential("lawful", model=MorsePairModel()).createSystem(top, **kwargs)


def _water_cluster(n_waters=8, n_ml=3):
    """The ``n_waters`` TIP3P waters nearest the centre of the test water box, in vacuum (no box),
    the ``n_ml`` most central ones as the ML subset; and a topology of the ML waters alone."""
    ff, top, pos, _ = _water_box()
    xyz = np.array(pos.value_in_unit(u.nanometer))
    centre = xyz.mean(axis=0)
    waters = list(top.residues())
    order = np.argsort([np.linalg.norm(xyz[[a.index for a in r.atoms()]].mean(axis=0) - centre) for r in waters])

    def keep(residues):
        mod = app.Modeller(top, pos)
        keep_set = set(residues)
        mod.delete([r for r in waters if r not in keep_set])
        mod.topology.setPeriodicBoxVectors(None)
        return mod.topology, mod.positions

    cluster_top, cluster_pos = keep([waters[k] for k in order[:n_waters]])
    ml_residues = {waters[k].id for k in order[:n_ml]}
    ml_atoms = [a.index for a in cluster_top.atoms() if a.residue.id in ml_residues]
    ml_top, ml_pos = keep([waters[k] for k in order[:n_ml]])
    return ff, cluster_top, cluster_pos, ml_atoms, ml_top, ml_pos


def test_mixed_system_removes_exactly_the_classical_ml_ml_energy():
    """Mechanical embedding: the classical part of the mixed System is the MM System minus the
    classical energy of the ML atoms among themselves, computed here independently as the energy
    of a System of the ML waters alone (NoCutoff: every term is a sum over the ML atoms)."""
    ff, top, pos, ml_atoms, ml_top, ml_pos = _water_cluster()
    kwargs = dict(nonbondedMethod=app.NoCutoff, constraints=None, rigidWater=False)
    mm_system = ff.createSystem(top, **kwargs)
    model = MorsePairModel(species=["H", "O"], r0=1.0, rcut1=2.5, rcut2=3.5, epsilon=0.1)
    mixed = MLPotential("lawful", model=model).createMixedSystem(top, mm_system, ml_atoms, forceGroup=1,
                                                                 backend="python")
    e_mm, _ = _openmm_energy_forces(mm_system, pos)
    e_mixed_classical, _ = _openmm_energy_forces(mixed, pos, groups={0})
    e_ml_alone, _ = _openmm_energy_forces(ff.createSystem(ml_top, **kwargs), ml_pos)
    removed = e_mm - e_mixed_classical
    assert abs(e_ml_alone) > 0.01  # eV: the three ML waters interact (-0.030 eV here), so the check bites
    assert removed == pytest.approx(e_ml_alone, rel=1e-9, abs=1e-9)

"""OpenMM periodicity cannot be got wrong (issue 12): every way of making a lawful force
(topology / numbers / an ML subset of either) x ``periodic`` None/True/False x a System whose box
was set or never set, for a periodic bulk cell and a molecule-like cluster, either gives
LawfulCalculator's energy and forces on the same structure to 1e-9 (float64, a real Context on the
Reference platform) or raises an InputError naming the mismatch, at create_force when it can be
known there, at the first evaluation otherwise. The same for system_from_atoms and openmm-ml's
createSystem / createMixedSystem.

The rules (integrations.openmm.resolve_periodicity): a topology decides (None follows its box;
True without a box or False with one is an error); without a topology ``periodic`` must be said;
a periodic force refuses OpenMM's default 2 nm box (never set); a non-periodic force makes a
non-periodic System, whatever its unused default box.
"""

from __future__ import annotations

import numpy as np
import openmm
import pytest
from ase import Atoms
from openmm import unit as u

from lawful.integrations import units
from lawful.integrations.ase import LawfulCalculator
from lawful.integrations.openmm import create_force, lawful_errors, system_from_atoms, topology_from_atoms
from lawful.kernels.errors import InputError

from test_openmm_pairmodel import MorsePairModel, rattled_copper

SPECTATORS = 3  # particles outside the ML subset in the "atoms" inputs
CLUSTER_BOX_NM = 2.5  # the box set on a cluster's System in the "box set" column


def _structure(kind: str) -> Atoms:
    if kind == "bulk":
        return rattled_copper(seed=21)  # 32 Cu, cubic cell 7.22 Å, pbc
    atoms = rattled_copper(seed=22)
    return Atoms(atoms.numbers, positions=atoms.positions, pbc=False)  # the same atoms in vacuum


def _system(atoms: Atoms, box_set: bool) -> openmm.System:
    system = openmm.System()
    for m in atoms.get_masses():
        system.addParticle(float(m))
    if box_set:
        if atoms.pbc.all():
            box = atoms.cell.array * units.NM_PER_ANGSTROM
        else:
            box = np.eye(3) * CLUSTER_BOX_NM
        system.setDefaultPeriodicBoxVectors(*[openmm.Vec3(*row) for row in box])
    return system


def _expected(inputs: str, structure: str, periodic, box_set: bool):
    """("create" | "eval", regex) for an error, or ("ok", pbc of the reference)."""
    if inputs.startswith("topology"):
        has_box = structure == "bulk"
        if periodic is True and not has_box:
            return "create", "periodic=True but the topology has no periodic box"
        if periodic is False and has_box:
            return "create", "periodic=False but the topology has periodic box vectors"
        is_periodic = has_box
    else:
        if periodic is None:
            return "create", "periodic=None with numbers= and no topology"
        is_periodic = periodic
    if is_periodic and not box_set:
        return "eval", "OpenMM's default"
    return "ok", is_periodic


def _openmm(system, positions_nm):
    ctx = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    ctx.setPositions(positions_nm)
    with lawful_errors():
        st = ctx.getState(getEnergy=True, getForces=True)
    e = st.getPotentialEnergy().value_in_unit(u.kilojoule_per_mole) * units.EV_PER_KJMOL
    f = st.getForces(asNumpy=True).value_in_unit(u.kilojoule_per_mole / u.nanometer) * units.FORCE_ASE_PER_OPENMM
    return e, f


def _reference(atoms: Atoms, model, pbc: bool, box_nm):
    ref = atoms.copy()
    if pbc:
        ref.set_cell(np.asarray(box_nm) * units.ANGSTROM_PER_NM)
        ref.pbc = True
    else:
        ref.pbc = False
    ref.calc = LawfulCalculator(model)
    return ref.get_potential_energy(), ref.get_forces()


def _rel(a, b):
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b))) / max(np.max(np.abs(b)), 1e-300))


def _check(system, force_or_exc, positions_nm, atoms_ml, ml_idx, model, expected, box_nm):
    n = system.getNumParticles()
    if expected[0] == "eval":
        system.addForce(force_or_exc)
        with pytest.raises(InputError, match=expected[1]):
            _openmm(system, positions_nm)
        return
    system.addForce(force_or_exc)
    e, f = _openmm(system, positions_nm)
    e_ref, f_ref = _reference(atoms_ml, model, expected[1], box_nm)
    assert abs(e - e_ref) <= 1e-9 * abs(e_ref)
    assert _rel(f[ml_idx], f_ref) <= 1e-9
    others = np.setdiff1d(np.arange(n), ml_idx)
    assert np.all(f[others] == 0.0)


@pytest.mark.parametrize("box_set", [True, False], ids=["box-set", "box-unset"])
@pytest.mark.parametrize("periodic", [None, True, False], ids=["None", "True", "False"])
@pytest.mark.parametrize("structure", ["bulk", "cluster"])
@pytest.mark.parametrize("inputs", ["topology", "numbers", "topology+atoms", "numbers+atoms"])
def test_periodicity_matrix(inputs, structure, periodic, box_set):
    model = MorsePairModel()
    atoms = _structure(structure)
    if inputs.endswith("+atoms"):
        # the System holds SPECTATORS more Cu particles far away that the model does not act on
        far = atoms.positions[:SPECTATORS] + np.array([0.0, 0.0, 0.0])
        full = Atoms(np.concatenate([atoms.numbers, [29] * SPECTATORS]),
                     positions=np.concatenate([atoms.positions, far]), cell=atoms.cell, pbc=atoms.pbc)
        ml_idx = np.arange(len(atoms))
    else:
        full = atoms
        ml_idx = np.arange(len(atoms))
    top, positions = topology_from_atoms(full)
    system = _system(full, box_set)
    box_nm = np.array([v.value_in_unit(u.nanometer) for v in system.getDefaultPeriodicBoxVectors()])
    kwargs = dict(periodic=periodic, backend="python")
    if inputs.startswith("topology"):
        kwargs["topology"] = top
    else:
        kwargs["numbers"] = full.numbers
    if inputs.endswith("+atoms"):
        kwargs["atoms"] = ml_idx.tolist()
    expected = _expected(inputs, structure, periodic, box_set)
    if expected[0] == "create":
        with pytest.raises(InputError, match=expected[1]):
            create_force(model, **kwargs)
        return
    force = create_force(model, **kwargs)
    assert force.usesPeriodicBoundaryConditions() == bool(expected[0] == "ok" and expected[1] or expected[0] == "eval")
    _check(system, force, positions, atoms, ml_idx, model, expected, box_nm)


def test_the_issue_case_bulk_copper_with_the_shipped_model():
    """Bulk Cu (108 atoms) with load_model("cu-emt"): numbers + periodic=None is refused; the two
    readings differ by ~100 kJ/mol, and periodic=True on the System's box gives ASE's energy."""
    from ase.build import bulk

    from lawful.forcefields import load_model

    model = load_model("cu-emt")
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(3)
    atoms.rattle(0.05, seed=3)
    _, positions = topology_from_atoms(atoms)
    with pytest.raises(InputError, match="periodic=None"):
        create_force(model, numbers=atoms.numbers, periodic=None, backend="python")
    system = _system(atoms, box_set=True)
    box_nm = atoms.cell.array * units.NM_PER_ANGSTROM
    _check(system, create_force(model, numbers=atoms.numbers, periodic=True, backend="python"), positions, atoms,
           np.arange(len(atoms)), model, ("ok", True), box_nm)
    e_bulk, _ = _reference(atoms, model, True, box_nm)
    e_cluster, _ = _reference(atoms, model, False, None)
    assert abs(e_bulk - e_cluster) * units.KJMOL_PER_EV > 20.0  # the silent error was this large


def test_periodic_force_on_a_system_without_box_raises_at_the_first_evaluation():
    atoms = _structure("bulk")
    _, positions = topology_from_atoms(atoms)
    system = _system(atoms, box_set=False)
    system.addForce(create_force(MorsePairModel(), numbers=atoms.numbers, periodic=True, backend="python"))
    ctx = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    ctx.setPositions(positions)
    with pytest.raises(InputError, match=r"default \[2, 2, 2\] nm.*setDefaultPeriodicBoxVectors"):
        with lawful_errors():
            ctx.getState(getEnergy=True)
    # setting the box on the Context (as a user fixing it would) makes it work
    ctx.setPeriodicBoxVectors(*[openmm.Vec3(*r) for r in atoms.cell.array * units.NM_PER_ANGSTROM])
    e, _ = _openmm_state_energy(ctx)
    e_ref, _ = _reference(atoms, MorsePairModel(), True, atoms.cell.array * units.NM_PER_ANGSTROM)
    assert e == pytest.approx(e_ref, rel=1e-9)


def _openmm_state_energy(ctx):
    st = ctx.getState(getEnergy=True)
    return st.getPotentialEnergy().value_in_unit(u.kilojoule_per_mole) * units.EV_PER_KJMOL, None


def test_a_topology_that_declares_a_2nm_cube_is_accepted():
    """The default-box refusal is not a refusal of 2 nm cubes: a topology that declares one wins."""
    a = 20.0 / 6  # Å: 6 x 6 x 6 simple-cubic-like grid filling a 2 nm cube
    grid = np.stack(np.meshgrid(*[np.arange(6) * a] * 3, indexing="ij"), -1).reshape(-1, 3)
    atoms = Atoms(f"Cu{len(grid)}", positions=grid, cell=np.eye(3) * 20.0, pbc=True)
    atoms.rattle(0.05, seed=1)
    model = MorsePairModel(r0=3.2)
    top, positions = topology_from_atoms(atoms)
    system = _system(atoms, box_set=False)  # the default box happens to be the declared one
    _check(system, create_force(model, topology=top, backend="python"), positions, atoms,
           np.arange(len(atoms)), model, ("ok", True), np.eye(3) * 2.0)


@pytest.mark.parametrize("periodic", [None, True, False])
@pytest.mark.parametrize("structure", ["bulk", "cluster"])
def test_system_from_atoms(structure, periodic):
    model = MorsePairModel()
    atoms = _structure(structure)
    is_bulk = structure == "bulk"
    if (periodic is True and not is_bulk) or (periodic is False and is_bulk):
        with pytest.raises(InputError, match=f"periodic={periodic}"):
            system_from_atoms(atoms, model, backend="python", periodic=periodic)
        return
    system, _, positions = system_from_atoms(atoms, model, backend="python", periodic=periodic)
    e, f = _openmm(system, positions)
    e_ref, f_ref = _reference(atoms, model, is_bulk, atoms.cell.array * units.NM_PER_ANGSTROM)
    assert abs(e - e_ref) <= 1e-9 * abs(e_ref) and _rel(f, f_ref) <= 1e-9


def test_torch_module_refuses_the_default_box_and_a_wrong_particle_count():
    forcefields = pytest.importorskip("lawful.forcefields")
    import torch

    from lawful.integrations.torchscript_force import openmm_torch_module

    model = forcefields.NeuralPotential(species=["Cu"], cutoff=4.5, dtype=torch.float64)
    atoms = _structure("bulk")
    pos = torch.tensor(atoms.positions * units.NM_PER_ANGSTROM)
    module = openmm_torch_module(model, atoms.numbers, None, len(atoms), periodic=True)
    with pytest.raises(Exception, match="default 2 nm cube"):
        module(pos, 2.0 * torch.eye(3, dtype=torch.float64))
    module(pos, torch.tensor(atoms.cell.array * units.NM_PER_ANGSTROM))  # the real box works
    with pytest.raises(Exception, match="made for 32 particles but the System has 31"):
        module(pos[:-1], torch.tensor(atoms.cell.array * units.NM_PER_ANGSTROM))
    declared = openmm_torch_module(model, atoms.numbers, None, len(atoms), periodic=True,
                                   box_nm=2.0 * np.eye(3))
    declared(pos, 2.0 * torch.eye(3, dtype=torch.float64))  # the topology declared that cube


# -- openmm-ml ---------------------------------------------------------------------------------
openmmml = pytest.importorskip("openmmml")


@pytest.mark.parametrize("structure", ["bulk", "cluster"])
def test_openmm_ml_create_system(structure):
    model = MorsePairModel()
    atoms = _structure(structure)
    top, positions = topology_from_atoms(atoms)
    system = openmmml.MLPotential("lawful", model=model).createSystem(top, removeCMMotion=False, backend="python")
    assert system.usesPeriodicBoundaryConditions() == (structure == "bulk")
    e, f = _openmm(system, positions)
    e_ref, f_ref = _reference(atoms, model, structure == "bulk", atoms.cell.array * units.NM_PER_ANGSTROM)
    assert abs(e - e_ref) <= 1e-9 * abs(e_ref) and _rel(f, f_ref) <= 1e-9


def _mm_system(atoms: Atoms, periodic: bool, box_set: bool) -> openmm.System:
    """A classical System for ``atoms``: a NonbondedForce with no charges and a tiny LJ term,
    periodic (CutoffPeriodic) or not (NoCutoff)."""
    system = _system(atoms, box_set)
    nb = openmm.NonbondedForce()
    nb.setNonbondedMethod(openmm.NonbondedForce.CutoffPeriodic if periodic else openmm.NonbondedForce.NoCutoff)
    if periodic:
        nb.setCutoffDistance(0.35)
    for _ in range(len(atoms)):
        nb.addParticle(0.0, 0.2, 0.01)
    system.addForce(nb)
    return system


@pytest.mark.parametrize("case", ["bulk", "cluster", "bulk-box-unset", "periodic-mm-without-topology-box"])
def test_openmm_ml_create_mixed_system(case):
    model = MorsePairModel()
    structure = "cluster" if case.startswith("cluster") or case.startswith("periodic-mm") else "bulk"
    atoms = _structure(structure)
    top, positions = topology_from_atoms(atoms)
    mm_periodic = structure == "bulk" or case == "periodic-mm-without-topology-box"
    mm = _mm_system(atoms, mm_periodic, box_set=case != "bulk-box-unset")
    ml = list(range(len(atoms) - 4))  # 4 atoms stay classical
    potential = openmmml.MLPotential("lawful", model=model)
    if case == "periodic-mm-without-topology-box":
        with pytest.raises(InputError, match="System uses periodic boundary conditions but the topology has no box"):
            potential.createMixedSystem(top, mm, ml, forceGroup=1, backend="python")
        return
    mixed = potential.createMixedSystem(top, mm, ml, forceGroup=1, backend="python")
    box_nm = np.array([v.value_in_unit(u.nanometer) for v in mixed.getDefaultPeriodicBoxVectors()])
    ctx = openmm.Context(mixed, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    ctx.setPositions(positions)
    if case == "bulk-box-unset":
        with pytest.raises(InputError, match="topology's box is"):
            with lawful_errors():
                ctx.getState(getEnergy=True, groups={1})
        return
    st = ctx.getState(getEnergy=True, getForces=True, groups={1})
    e = st.getPotentialEnergy().value_in_unit(u.kilojoule_per_mole) * units.EV_PER_KJMOL
    f = st.getForces(asNumpy=True).value_in_unit(u.kilojoule_per_mole / u.nanometer) * units.FORCE_ASE_PER_OPENMM
    e_ref, f_ref = _reference(atoms[ml], model, structure == "bulk", box_nm)
    assert abs(e - e_ref) <= 1e-9 * abs(e_ref) and _rel(f[ml], f_ref) <= 1e-9


def test_lawful_errors_turns_the_torch_module_checks_into_input_errors():
    """openmm-torch passes the TorchScript module's RuntimeError on as an OpenMMException with
    the script's text; lawful_errors() gives the InputError back (the real module's message)."""
    forcefields = pytest.importorskip("lawful.forcefields")
    import torch

    from lawful.integrations.torchscript_force import openmm_torch_module

    model = forcefields.NeuralPotential(species=["Cu"], cutoff=4.5, dtype=torch.float64)
    atoms = _structure("bulk")
    module = openmm_torch_module(model, atoms.numbers, None, len(atoms), periodic=True)
    with pytest.raises(Exception) as raised:
        module(torch.tensor(atoms.positions * units.NM_PER_ANGSTROM), 2.0 * torch.eye(3, dtype=torch.float64))
    with pytest.raises(InputError, match=r"^this lawful force is periodic .* structure's cell\.$"):
        with lawful_errors():
            raise openmm.OpenMMException(str(raised.value))

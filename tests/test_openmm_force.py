"""create_force: ASE vs OpenMM equality (periodic Cu, a molecule), ML/MM subset in a TIP3P box,
NVE inside OpenMM's VerletIntegrator with the DriftReporter, bad inputs (float64, Reference)."""

from __future__ import annotations

import csv
import pickle

import warnings

import numpy as np
import openmm
import pytest
import torch
from ase.build import molecule
from openmm import app
from openmm import unit as u

from lawful.integrations import units
from lawful.integrations.ase import LawfulCalculator
from lawful.integrations.openmm import (
    DriftReporter,
    LawfulComputation,
    available_backends,
    create_force,
    lawful_errors,
    set_on_step_velocities,
    system_from_atoms,
    topology_from_atoms,
)
from lawful.kernels.errors import (BackendError, InputError, ModelFileError, NumericalError, ShapeError,
                                   UnsupportedSpeciesError)

from test_openmm_pairmodel import MorsePairModel, rattled_copper  # noqa: F401

BACKENDS = ["python"] + (["torch"] if "torch" in available_backends() else [])
HAS_TORCH_BACKEND = "torch" in BACKENDS
MOLECULE_SPECIES = ["H", "C", "O"]


def _reference():
    return openmm.Platform.getPlatformByName("Reference")


def _models():
    models = {"morse": lambda species=("Cu",): (MorsePairModel(species=species) if list(species) == ["Cu"] else
                                               MorsePairModel(species=species, r0=1.3, rcut1=2.5, rcut2=3.2,
                                                              epsilon=0.2))}
    from lawful.forcefields import NeuralPotential

    models["neural"] = lambda species=("Cu",): NeuralPotential(species=list(species), cutoff=4.5,
                                                              dtype=torch.float64)
    return models


MODELS = _models()


@pytest.fixture(params=sorted(MODELS))
def make_model(request):
    torch.manual_seed(0)
    return MODELS[request.param]


def _openmm_energy_forces(system, positions, groups=-1):
    ctx = openmm.Context(system, openmm.VerletIntegrator(0.001), _reference())
    ctx.setPositions(positions)
    st = ctx.getState(getEnergy=True, getForces=True, groups=groups)
    e = st.getPotentialEnergy().value_in_unit(u.kilojoule_per_mole) * units.EV_PER_KJMOL
    f = st.getForces(asNumpy=True).value_in_unit(u.kilojoule_per_mole / u.nanometer) * units.FORCE_ASE_PER_OPENMM
    return e, f


def _rel(a, b):
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b))) / max(np.max(np.abs(b)), 1e-300))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", ["periodic_cu", "molecule"])
def test_ase_and_openmm_agree(make_model, backend, kind):
    if kind == "periodic_cu":
        atoms = rattled_copper(seed=7)
        model = make_model()
    else:
        atoms = molecule("CH3CH2OH")
        model = make_model(MOLECULE_SPECIES)
    atoms.calc = LawfulCalculator(model)
    e_ase, f_ase = atoms.get_potential_energy(), atoms.get_forces()
    system, _, positions = system_from_atoms(atoms, model, backend=backend)
    assert system.getForce(0).getName() == f"LawfulForce[{backend},float64,cpu]"
    e_omm, f_omm = _openmm_energy_forces(system, positions)
    assert abs(e_omm - e_ase) <= 1e-9 * abs(e_ase)
    assert _rel(f_omm, f_ase) <= 1e-9


def test_periodic_wrapping_and_cell_shape():
    # a sheared (triclinic, OpenMM reduced form) cell with atoms outside the box
    atoms = rattled_copper(seed=8)
    cell = atoms.cell.array.copy()
    cell[1, 0] += 1.2
    cell[2, 0] += 0.7
    cell[2, 1] -= 0.9
    atoms.set_cell(cell, scale_atoms=True)
    atoms.positions += np.array([5.0, -3.0, 9.0])
    model = MorsePairModel()
    atoms.calc = LawfulCalculator(model)
    system, _, positions = system_from_atoms(atoms, model, backend="python")
    e_omm, f_omm = _openmm_energy_forces(system, positions)
    assert e_omm == pytest.approx(atoms.get_potential_energy(), rel=1e-9)
    assert _rel(f_omm, atoms.get_forces()) <= 1e-9


def _water_box(n_ml_waters=3):
    """A TIP3P box (amber14 files shipped with OpenMM); the ML subset is the water molecules
    closest to the box centre (a small 'solute' cluster)."""
    ff = app.ForceField("amber14-all.xml", "amber14/tip3p.xml")
    modeller = app.Modeller(app.Topology(), [])
    modeller.addSolvent(ff, model="tip3p", boxSize=openmm.Vec3(1.6, 1.6, 1.6) * u.nanometer)
    top, pos = modeller.topology, modeller.positions
    xyz = np.array(pos.value_in_unit(u.nanometer))
    centre = xyz.mean(axis=0)
    waters = list(top.residues())
    dist = [np.linalg.norm(xyz[[a.index for a in r.atoms()]].mean(axis=0) - centre) for r in waters]
    chosen = [waters[k] for k in np.argsort(dist)[:n_ml_waters]]
    ml_atoms = sorted(a.index for r in chosen for a in r.atoms())
    return ff, top, pos, ml_atoms


def test_ml_mm_subset_forces_equal_the_model():
    ff, top, pos, ml_atoms = _water_box()
    model = MorsePairModel(species=["H", "O"], r0=1.0, rcut1=2.5, rcut2=3.5, epsilon=0.1)
    system = ff.createSystem(top, nonbondedMethod=app.PME, nonbondedCutoff=0.7 * u.nanometer,
                             constraints=None, rigidWater=False)
    system.addForce(create_force(model, topology=top, atoms=ml_atoms, backend="python", force_group=1))
    e_ml, f_all = _openmm_energy_forces(system, pos, groups={1})
    xyz_a = np.array(pos.value_in_unit(u.nanometer))[ml_atoms] * units.ANGSTROM_PER_NM
    z = [a.element.atomic_number for a in top.atoms() if a.index in set(ml_atoms)]
    box = np.array(top.getPeriodicBoxVectors().value_in_unit(u.nanometer)) * units.ANGSTROM_PER_NM
    ref = model.evaluate(xyz_a, z, cell=box, pbc=True)
    assert e_ml == pytest.approx(float(ref["energy"]), rel=1e-9)
    assert _rel(f_all[ml_atoms], ref["forces"].numpy()) <= 1e-9
    others = np.setdiff1d(np.arange(top.getNumAtoms()), ml_atoms)
    assert np.all(f_all[others] == 0.0)
    # and the mixed system runs inside OpenMM's loop (classical water + ML cluster)
    integ = openmm.VerletIntegrator(0.5 * u.femtosecond)
    sim = app.Simulation(top, system, integ, _reference())
    sim.context.setPositions(pos)
    sim.minimizeEnergy(maxIterations=50)
    sim.step(5)
    assert np.isfinite(sim.context.getState(getEnergy=True).getPotentialEnergy()._value)


def _copper_nve(model, csv_path, interval):
    """Rattled copper with ``model`` in OpenMM's Verlet at 1 fs from 300 K, a DriftReporter
    attached and t = 0 recorded: ``(simulation, system, reporter)``."""
    atoms = rattled_copper(seed=9, amp=0.02)
    system, top, positions = system_from_atoms(atoms, model, backend="python")
    sim = app.Simulation(top, system, openmm.VerletIntegrator(1.0 * u.femtosecond), _reference())
    sim.context.setPositions(positions)
    sim.context.setVelocitiesToTemperature(300 * u.kelvin, 1)
    reporter = DriftReporter(csv_path, interval)
    sim.reporters.append(reporter)
    reporter.record(sim)
    return sim, system, reporter


def test_nve_in_openmm_verlet_with_drift_reporter(make_model, tmp_path):
    sim, system, reporter = _copper_nve(make_model(), tmp_path / "drift.csv", 4)
    assert not any(isinstance(f, openmm.CMMotionRemover) for f in system.getForces())
    sim.step(40)
    s = reporter.summary()
    assert s.n_samples == 11 and s.duration_ps == pytest.approx(0.040)
    assert s.sigma_kinetic_mev_per_atom > 0.5
    assert s.max_abs_deviation_mev_per_atom < 2e-3 * s.sigma_kinetic_mev_per_atom
    rows = list(csv.DictReader((tmp_path / "drift.csv").open()))  # flushed while still open
    assert len(rows) == 11 and int(rows[-1]["step"]) == 40
    reporter.close()
    assert reporter.not_conserving == []


def test_drift_reporter_starts_again_after_a_rewind(tmp_path):
    """Loading an earlier state replayed its steps into the same fit (7 samples for 5 steps; OpenMM
    audit): the reporter warns and fits the branch from the loaded state only."""
    import warnings

    sim, _, reporter = _copper_nve(MorsePairModel(), tmp_path / "drift.csv", 5)
    sim.step(10)
    saved = sim.context.getState(getPositions=True, getVelocities=True)
    sim.step(10)
    assert reporter.summary().n_samples == 5
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        sim.context.setState(saved)
        sim.currentStep = 10
        sim.step(10)
    said = [str(w.message) for w in seen if "went back from step 20 to step" in str(w.message)]
    assert len(said) == 1
    assert reporter.summary().n_samples == 2 and reporter.summary().duration_ps == pytest.approx(0.005)
    reporter.close()
    rows = [int(r["step"]) for r in csv.DictReader((tmp_path / "drift.csv").open())]
    assert rows == [0, 5, 10, 15, 20, 15, 20]


@pytest.mark.parametrize("integrator, extra, nve, names", [
    ("langevin", None, True, ["LangevinMiddleIntegrator"]),
    ("verlet", "barostat", True, ["MonteCarloBarostat"]),
    ("verlet", "cmm", True, ["CMMotionRemover"]),
    ("langevin", None, False, ["LangevinMiddleIntegrator"]),
])
def test_drift_reporter_names_what_exchanges_energy(integrator, extra, nve, names):
    """A 'drift' under a thermostat or barostat is heat or work exchanged, not a conservation
    error: the reporter says so at its first report (unless told the run is NVT on purpose)."""
    import warnings

    atoms = rattled_copper(seed=9, amp=0.02)
    system, top, positions = system_from_atoms(atoms, MorsePairModel(), backend="python")
    if extra == "barostat":
        system.addForce(openmm.MonteCarloBarostat(1.0 * u.bar, 300 * u.kelvin))
    elif extra == "cmm":
        system.addForce(openmm.CMMotionRemover())
    integ = (openmm.LangevinMiddleIntegrator(300 * u.kelvin, 1 / u.picosecond, 1 * u.femtosecond)
             if integrator == "langevin" else openmm.VerletIntegrator(1 * u.femtosecond))
    sim = app.Simulation(top, system, integ, _reference())
    sim.context.setPositions(positions)
    reporter = DriftReporter(None, 2, nve=nve)
    sim.reporters.append(reporter)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        sim.step(4)
    said = [str(w.message) for w in seen if "DriftReporter" in str(w.message)]
    assert reporter.not_conserving == names
    assert (len(said) == 1 and names[0] in said[0]) if nve else said == []


def test_ase_and_openmm_trajectories_agree():
    """The same NVE start in ASE's VelocityVerlet and OpenMM's VerletIntegrator: same energies."""
    from ase import units as ase_units
    from ase.md.verlet import VelocityVerlet

    atoms = rattled_copper(seed=10, amp=0.05)
    model = MorsePairModel()
    system, top, positions = system_from_atoms(atoms, model, backend="python")
    integ = openmm.VerletIntegrator(1.0 * u.femtosecond)
    ctx = openmm.Context(system, integ, _reference())
    ctx.setPositions(positions)
    # OpenMM's VerletIntegrator is leapfrog: its velocities are v(t - dt/2). Starting ASE from rest,
    # the equivalent leapfrog start is v(-dt/2) = -(dt/2) F(0)/m (set_on_step_velocities).
    set_on_step_velocities(ctx, np.zeros((len(atoms), 3)))
    atoms.calc = LawfulCalculator(model)
    VelocityVerlet(atoms, timestep=1.0 * ase_units.fs).run(20)
    integ.step(20)
    st = ctx.getState(getEnergy=True, getPositions=True)
    e_omm = st.getPotentialEnergy().value_in_unit(u.kilojoule_per_mole) * units.EV_PER_KJMOL
    assert e_omm == pytest.approx(atoms.get_potential_energy(), rel=1e-9)
    x_omm = st.getPositions(asNumpy=True).value_in_unit(u.nanometer) * units.ANGSTROM_PER_NM
    # OpenMM's leapfrog and ASE's velocity Verlet give the same positions from the same start
    assert np.max(np.abs(x_omm - atoms.positions)) < 1e-8


def test_computation_pickles_for_system_copies():
    import copy

    atoms = rattled_copper()
    model = MorsePairModel()
    system, _, positions = system_from_atoms(atoms, model, backend="python")
    clone = copy.deepcopy(system)  # OpenMM serialises the PythonForce (pickles the callback)
    e1, _ = _openmm_energy_forces(system, positions)
    e2, _ = _openmm_energy_forces(clone, positions)
    assert e1 == e2
    comp = LawfulComputation(model, atoms.numbers, periodic=True)
    assert pickle.loads(pickle.dumps(comp)).runner.n_atoms == len(atoms)


def test_bad_inputs(tmp_path):
    water = molecule("H2O")
    top, _ = topology_from_atoms(water)
    with pytest.raises(UnsupportedSpeciesError, match="'H'"):
        create_force(MorsePairModel(species=["Cu"]), topology=top, backend="python")
    with pytest.raises(ModelFileError, match="missing.lawful"):
        create_force(tmp_path / "missing.lawful", topology=top)
    with pytest.raises(InputError, match="backend"):
        create_force(MorsePairModel(), numbers=[29], backend="cuda")
    with pytest.raises(InputError, match="elements"):
        create_force(MorsePairModel())
    with pytest.raises(InputError, match="repeated"):
        create_force(MorsePairModel(), numbers=[29, 29, 29], atoms=[0, 0])
    if not HAS_TORCH_BACKEND:
        with pytest.raises(BackendError, match="openmmtorch"):
            create_force(MorsePairModel(), numbers=[29], periodic=False, backend="torch")


@pytest.mark.parametrize("platform", ["Reference", "CPU"])
def test_nan_positions_raise_numerical_error(platform):
    atoms = rattled_copper()
    system, _, positions = system_from_atoms(atoms, MorsePairModel(), backend="python")
    xyz = positions.value_in_unit(u.nanometer).copy()
    xyz[2, 0] = np.nan
    ctx = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName(platform))
    ctx.setPositions(xyz)
    # Reference hands the NaN to our callback (which names the atom); CPU stops it itself
    with pytest.raises(NumericalError, match=r"\[2\]" if platform == "Reference" else "NaN"):
        with lawful_errors():
            ctx.getState(getEnergy=True, getForces=True)


def test_float32_model_in_openmm():
    atoms = rattled_copper(seed=13)
    model = MorsePairModel()
    system64, _, positions = system_from_atoms(atoms, model, backend="python")
    system32, _, _ = system_from_atoms(atoms, model, backend="python", dtype="float32")
    assert system32.getForce(0).getName() == "LawfulForce[python,float32,cpu]"
    e64, f64 = _openmm_energy_forces(system64, positions)
    e32, f32 = _openmm_energy_forces(system32, positions)
    assert e32 == pytest.approx(e64, rel=1e-5)
    assert _rel(f32, f64) < 1e-4
    assert model.dtype == torch.float64  # the caller's model was copied, not converted


def test_direct_force_model_in_both_engines():
    """The non-conservative control goes through the same adapters (python backend; 'auto' falls
    back to it since it has no TorchScript export) with the same numbers in ASE and OpenMM."""
    try:
        from lawful.forcefields import DirectForceModel
    except ImportError:
        pytest.skip("DirectForceModel is not available")
    torch.manual_seed(0)
    model = DirectForceModel(species=["Cu"], cutoff=4.5, dtype=torch.float64)
    atoms = rattled_copper(seed=15)
    atoms.calc = LawfulCalculator(model)
    system, _, positions = system_from_atoms(atoms, model, backend="auto")
    assert system.getForce(0).getName().startswith("LawfulForce[python,")
    e_omm, f_omm = _openmm_energy_forces(system, positions)
    assert e_omm == pytest.approx(atoms.get_potential_energy(), rel=1e-9)
    assert _rel(f_omm, atoms.get_forces()) <= 1e-9


class _BlowsUpBelow(MorsePairModel):
    """The Morse pair model, except that it returns a NaN energy once two atoms are closer than
    ``r_bad`` Å: a stand-in for a model that breaks down when a simulation explodes."""

    def __init__(self, r_bad=1.2):
        super().__init__()
        self.r_bad = r_bad

    def evaluate(self, positions, numbers, cell=None, pbc=False, stress=False):
        out = super().evaluate(positions, numbers, cell=cell, pbc=pbc, stress=stress)
        pos = torch.as_tensor(positions, dtype=self.dtype)
        if float(torch.pdist(pos).min()) < self.r_bad:
            out = dict(out, energy=out["energy"] * float("nan"))
        return out


def test_an_explosion_is_reported_as_one():
    """Two Cu atoms thrown at each other: the error names the step (OpenMM's), the largest
    displacement and the largest force with their atoms, not a bare 'non-finite energy'."""
    from ase import Atoms

    atoms = Atoms("Cu3", positions=[[0.0, 0.0, 0.0], [3.0, 0.0, 0.0], [0.0, 6.0, 0.0]])
    system, top, positions = system_from_atoms(atoms, _BlowsUpBelow(), backend="python")
    sim = app.Simulation(top, system, openmm.VerletIntegrator(1.0 * u.femtosecond), _reference())
    sim.context.setPositions(positions)
    v = np.zeros((3, 3))
    v[0, 0], v[1, 0] = 20.0, -20.0  # nm/ps, head on: 0.4 Å closer per fs
    sim.context.setVelocities(v)
    with pytest.raises(NumericalError) as err:
        with lawful_errors():
            sim.step(100)
    msg = str(err.value)
    import re

    step = int(re.search(r"exploded at OpenMM step (\d+);", msg).group(1))
    assert 1 <= step <= 6  # 3 Å closing at ~0.4 Å/fs reaches 1.2 Å within ~5 steps
    assert f"(step {step - 1})" in msg  # the previous evaluation
    moved = float(msg.split("moved ")[1].split(" Å")[0])
    assert moved == pytest.approx(0.2, rel=0.3)  # ~20 nm/ps x 1 fs = 0.2 Å, slowed by the repulsion
    assert "particle 0 moved" in msg or "particle 1 moved" in msg
    assert "largest force at that evaluation" in msg and "non-finite energy" in msg


def test_errors_belong_to_their_own_computation():
    """Two Contexts failing one after the other: each OpenMM exception leads back to its own
    error (the old process-wide slot handed the second error to both)."""
    atoms = rattled_copper()
    contexts = []
    for bad_atom in (2, 5):
        system, _, positions = system_from_atoms(atoms, MorsePairModel(), backend="python")
        xyz = positions.value_in_unit(u.nanometer).copy()
        xyz[bad_atom, 1] = np.nan
        ctx = openmm.Context(system, openmm.VerletIntegrator(0.001), _reference())
        ctx.setPositions(xyz)
        contexts.append(ctx)
    raw = []
    for ctx in contexts:
        with pytest.raises(openmm.OpenMMException) as exc:
            ctx.getState(getEnergy=True)
        raw.append(exc.value)
    for exc, bad_atom in zip(reversed(raw), (5, 2)):  # collected in the other order
        with pytest.raises(NumericalError, match=rf"atom\(s\) \[{bad_atom}\]"):
            with lawful_errors():
                raise exc


def test_errors_of_concurrent_contexts_stay_apart():
    import threading

    atoms = rattled_copper()
    results = {}

    def run(bad_atom):
        system, _, positions = system_from_atoms(atoms, MorsePairModel(), backend="python")
        xyz = positions.value_in_unit(u.nanometer).copy()
        xyz[bad_atom, 0] = np.inf
        ctx = openmm.Context(system, openmm.VerletIntegrator(0.001), _reference())
        ctx.setPositions(xyz)
        for _ in range(20):
            try:
                with lawful_errors():
                    ctx.getState(getEnergy=True)
            except NumericalError as exc:
                results.setdefault(bad_atom, set()).add(str(exc).split("positions of ")[1].split("]")[0])

    threads = [threading.Thread(target=run, args=(k,)) for k in (3, 7)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == {3: {"atom(s) [3"}, 7: {"atom(s) [7"}}


def test_strict_out_of_domain_names_the_openmm_step():
    """strict=True: a pair closer than the training minimum stops the run, naming OpenMM's step
    (not the force's call count); strict=False warns."""
    from ase import Atoms

    from lawful.forcefields import NeuralPotential
    from lawful.kernels.errors import OutOfDomainWarning

    torch.manual_seed(0)
    model = NeuralPotential(species=["Cu"], cutoff=4.5, dtype=torch.float64)
    model.pair_min_distance = {"Cu-Cu": 2.3}
    atoms = Atoms("Cu3", positions=[[0.0, 0.0, 0.0], [2.5, 0.0, 0.0], [0.0, 2.6, 0.0]])
    close = atoms.positions.copy()
    close[1, 0] = 1.9  # 1.9 Å < 0.9 x 2.3 Å
    for strict in (True, False):
        system, top, positions = system_from_atoms(atoms, model, backend="python", strict=strict)
        sim = app.Simulation(top, system, openmm.VerletIntegrator(0.1 * u.femtosecond), _reference())
        sim.context.setPositions(positions)
        sim.step(3)
        sim.context.setPositions(close * units.NM_PER_ANGSTROM)
        if strict:
            with pytest.raises(NumericalError, match=r"atoms 0 \(Cu\) and 1 \(Cu\) are 1.9 Å apart at step 3"):
                with lawful_errors():
                    sim.context.getState(getEnergy=True)
        else:
            with pytest.warns(OutOfDomainWarning, match="at step 3"):
                sim.context.getState(getEnergy=True)


def _domain_copper():
    from lawful.forcefields import NeuralPotential

    torch.manual_seed(0)
    model = NeuralPotential(species=["Cu"], cutoff=4.5, dtype=torch.float64)
    model.pair_min_distance = {"Cu-Cu": 2.3}
    return model


@pytest.mark.parametrize("how", ["topology", "numbers"])
@pytest.mark.parametrize("gap, error, pattern", [
    (1.9, "domain", r"atoms 3 \(Cu\) and 5 \(Cu\) are 1.9 Å apart"),        # 1.9 Å < 0.9 x 2.3 Å
    (1e-5, "coincident", r"particles 3 and 5 are 1e-05 Å apart \(coincident"),
])
def test_reports_name_system_particles_when_the_ml_atoms_are_not_the_first(how, gap, error, pattern):
    """An ML subset placed after other particles (particles 3 and 5 of 6): out-of-domain and
    coincident-atom reports name the System's particles, not the subset's rows (0 and 1), whether
    the force sees the subset only (topology: setParticles) or picks it from every particle
    (numbers=)."""
    from ase import Atoms

    model = _domain_copper()
    pos = np.array([[8.0 * k, 0.0, 0.0] for k in range(6)])
    pos[5] = pos[3] + [gap, 0.0, 0.0]
    atoms = Atoms("Cu6", positions=pos)
    top, positions = topology_from_atoms(atoms)
    if how == "topology":
        force = create_force(model, topology=top, atoms=[3, 5], periodic=False, backend="python", strict=True)
    else:
        force = create_force(model, numbers=[29] * 6, atoms=[3, 5], periodic=False, backend="python", strict=True)
    system = openmm.System()
    for _ in range(6):
        system.addParticle(63.5)
    system.addForce(force)
    ctx = openmm.Context(system, openmm.VerletIntegrator(0.001), _reference())
    ctx.setPositions(positions)
    with pytest.raises(NumericalError, match=pattern) as info:
        with lawful_errors():
            ctx.getState(getEnergy=True)
    if error == "domain":
        assert info.value.out_of_domain["atoms"] == (3, 5)


def test_an_unplaced_virtual_site_is_named_as_such_not_as_a_collapse():
    """A virtual site in the ML region (openmm-ml's link atoms) sits where setPositions put it
    until a step or computeVirtualSites: at the first evaluation the coincident-atom report said
    'remove duplicate atoms, or the simulation has collapsed - reduce the time step' (OpenMM audit
    F4); it names computeVirtualSites now, and after that call the force evaluates."""
    from lawful.forcefields import NeuralPotential

    torch.manual_seed(0)
    model = NeuralPotential(species=["Cu"], cutoff=4.5, dtype=torch.float64)
    system = openmm.System()
    for mass in (63.5, 63.5, 0.0):
        system.addParticle(mass)
    system.setVirtualSite(2, openmm.TwoParticleAverageSite(0, 1, 0.5, 0.5))
    system.addForce(create_force(model, numbers=[29, 29, 29], periodic=False, backend="python"))
    ctx = openmm.Context(system, openmm.VerletIntegrator(0.001), _reference())
    ctx.setPositions(np.array([[0.0, 0.0, 0.0], [0.5, 0.0, 0.0], [0.0, 0.0, 0.0]]))   # nm; site unplaced
    with pytest.raises(NumericalError, match=r"particles 0 and 2 are 0 Å apart.*computeVirtualSites\(\)") as info:
        with lawful_errors():
            ctx.getState(getEnergy=True)
    assert "reduce the time step" not in str(info.value)
    ctx.computeVirtualSites()
    with lawful_errors():
        energy = ctx.getState(getEnergy=True).getPotentialEnergy()
    assert np.isfinite(energy.value_in_unit(openmm.unit.kilojoule_per_mole))


def test_auto_keeps_a_model_with_a_training_domain_on_the_checking_backend(monkeypatch):
    """Both backends check the training domain, the python one with the fuller report (particles,
    step, OutOfDomainWarning): "auto" picks torch only for models without a domain record, and
    backend="torch" takes strict (it used to be refused, and a model with a record got a warning
    that its TorchScript module checked nothing)."""
    import lawful.integrations.openmm as lawful_openmm
    import lawful.integrations.torchscript_force as torchscript_force
    from lawful.forcefields import NeuralPotential

    monkeypatch.setattr(lawful_openmm, "available_backends", lambda: ["python", "torch"])
    monkeypatch.setattr(torchscript_force, "create_torch_force", lambda *a, **k: openmm.CustomExternalForce("0"))
    plain = NeuralPotential(species=["Cu"], cutoff=4.5, dtype=torch.float64)
    assert create_force(plain, numbers=[29], periodic=False).getName().startswith("LawfulForce[torch,")
    model = _domain_copper()
    for strict in (False, True):
        assert create_force(model, numbers=[29], periodic=False, strict=strict).getName().startswith(
            "LawfulForce[python,")
    seen = {}
    monkeypatch.setattr(torchscript_force, "create_torch_force",
                        lambda *a, **k: seen.update(k) or openmm.CustomExternalForce("0"))
    for strict in (False, True):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            force = create_force(model, numbers=[29], periodic=False, backend="torch", strict=strict)
        assert force.getName().startswith("LawfulForce[torch,") and seen["strict"] is strict


@pytest.mark.parametrize("kwargs, error, pattern", [
    (dict(numbers=[29] * 32, atoms=[0, 99], periodic=False), InputError, r"atoms \[99\] are outside the 32"),
    (dict(numbers=[29] * 32, atoms=[-1, 3], periodic=False), InputError, r"negative indices \[-1\]"),
    (dict(numbers=[29] * 32, atoms=[1.5, 2], periodic=False), InputError, r"integer particle indices"),
    (dict(numbers=[[29, 29]], periodic=False), ShapeError, r"shape \(1, 2\)"),
    (dict(numbers=[29.5], periodic=False), InputError, r"integer atomic numbers"),
])
def test_indices_and_lengths_are_checked_where_given(kwargs, error, pattern):
    with pytest.raises(error, match=pattern):
        create_force(MorsePairModel(), backend="python", **kwargs)


def test_wrong_numbers_length_names_both_counts_at_the_first_evaluation():
    atoms = rattled_copper()
    _, positions = topology_from_atoms(atoms)
    system = openmm.System()
    for _ in range(len(atoms)):
        system.addParticle(63.5)
    system.addForce(create_force(MorsePairModel(), numbers=[29] * 30, periodic=False, backend="python"))
    ctx = openmm.Context(system, openmm.VerletIntegrator(0.001), _reference())
    ctx.setPositions(positions)
    with pytest.raises(ShapeError, match="made for 30 particles .* the System has 32"):
        with lawful_errors():
            ctx.getState(getEnergy=True)


def test_numbers_only_subset_equals_the_topology_subset():
    """ML/MM from numbers= (every particle's number; the force selects its rows) and from a
    topology (setParticles) give the same forces, zero outside the subset."""
    atoms = rattled_copper(seed=5)
    model = MorsePairModel()
    top, positions = topology_from_atoms(atoms)
    ml = [0, 3, 4, 9, 10, 11, 20]
    out = []
    for kw in (dict(topology=top), dict(numbers=atoms.numbers, periodic=True)):
        system = openmm.System()
        for m in atoms.get_masses():
            system.addParticle(float(m))
        system.setDefaultPeriodicBoxVectors(*top.getPeriodicBoxVectors())
        system.addForce(create_force(model, atoms=ml, backend="python", **kw))
        out.append(_openmm_energy_forces(system, positions))
    assert out[0][0] == out[1][0] and np.array_equal(out[0][1], out[1][1])
    assert np.all(out[0][1][np.setdiff1d(np.arange(len(atoms)), ml)] == 0.0)


def test_two_contexts_of_one_system_in_two_threads():
    """OpenMM hands every Context of a System the same callback object: evaluations from two
    threads must not mix their buffers (each gets its own positions' energy and forces)."""
    import threading

    system, _, positions = system_from_atoms(rattled_copper(seed=6), MorsePairModel(), backend="python")
    base = positions.value_in_unit(u.nanometer)
    starts = [base, base + np.random.default_rng(1).normal(scale=0.01, size=base.shape)]
    expected = [_openmm_energy_forces(system, x) for x in starts]
    failures = []

    def run(k):
        ctx = openmm.Context(system, openmm.VerletIntegrator(0.001), _reference())
        ctx.setPositions(starts[k])
        for _ in range(30):
            st = ctx.getState(getEnergy=True, getForces=True)
            e = st.getPotentialEnergy().value_in_unit(u.kilojoule_per_mole) * units.EV_PER_KJMOL
            f = st.getForces(asNumpy=True).value_in_unit(u.kilojoule_per_mole / u.nanometer)
            if e != expected[k][0] or not np.array_equal(f * units.FORCE_ASE_PER_OPENMM, expected[k][1]):
                failures.append(k)

    threads = [threading.Thread(target=run, args=(k,)) for k in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []

"""LawfulCalculator: ASE's own numerical checks, caching on system_changes, MD/optimisation/IO, and
the bad inputs (float64)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import units
from ase.build import bulk, molecule
from ase.calculators.calculator import PropertyNotImplementedError
from ase.io import read, write
from ase.md.langevin import Langevin
from ase.md.nptberendsen import NPTBerendsen
from ase.md.velocitydistribution import Stationary, thermalize_momenta
from ase.md.verlet import VelocityVerlet
from ase.optimize import BFGS

from lawful.integrations.ase import LawfulCalculator
from lawful.integrations.monitors import DriftObserver
from lawful.kernels.errors import InputError, LawfulError, ModelFileError, NumericalError, UnsupportedSpeciesError

from test_openmm_pairmodel import MorsePairModel, ase_morse, rattled_copper  # noqa: F401


def _models():
    """The models every check runs on: the analytic pair model and, once it exists, a
    random-initialised NeuralPotential (float64)."""
    models = {"morse": lambda species=("Cu",): MorsePairModel(species=species)}
    from lawful.forcefields import NeuralPotential

    models["neural"] = lambda species=("Cu",): NeuralPotential(species=list(species), cutoff=4.5,
                                                              dtype=torch.float64)
    return models


MODELS = _models()


@pytest.fixture(params=sorted(MODELS))
def make_model(request):
    torch.manual_seed(0)
    return MODELS[request.param]


class CountingModel(torch.nn.Module):
    """Wraps a model and counts evaluate() calls."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner
        self.species, self.cutoff, self.calls = inner.species, inner.cutoff, 0

    def evaluate(self, positions, numbers, cell=None, pbc=False, stress=False):
        self.calls += 1
        return self.inner.evaluate(positions, numbers, cell=cell, pbc=pbc, stress=stress)


def _rel_err(a, b):
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


@pytest.mark.filterwarnings("ignore:Please use:FutureWarning")
def test_numerical_forces_and_stress_periodic(make_model):
    # 8 atoms in a sheared primitive cell smaller than twice the cutoff: several images per pair
    atoms = bulk("Cu", "fcc", a=3.61).repeat((2, 2, 2))
    atoms.rattle(0.08, seed=1)
    atoms.set_cell(atoms.cell.array @ np.array([[1.02, 0.03, 0.0], [0.0, 0.99, 0.02], [0.01, 0.0, 1.01]]),
                   scale_atoms=True)
    calc = LawfulCalculator(make_model())
    atoms.calc = calc
    f = atoms.get_forces()
    s = atoms.get_stress(voigt=False)
    f_num = calc.calculate_numerical_forces(atoms, d=1e-4)
    s_num = calc.calculate_numerical_stress(atoms, d=1e-5, voigt=False)
    assert _rel_err(f, f_num) <= 1e-6
    assert _rel_err(s, s_num) <= 1e-6
    assert calc.dtype == torch.float64 and calc.device.type == "cpu"


@pytest.mark.filterwarnings("ignore:Please use:FutureWarning")
def test_numerical_forces_molecule_and_no_stress():
    mol = molecule("CH3CH2OH")
    species = ["H", "C", "O"]
    for make in MODELS.values():
        model = make(species)
        if isinstance(model, MorsePairModel):
            model = MorsePairModel(species=species, r0=1.3, rcut1=2.5, rcut2=3.2, epsilon=0.2)
        calc = LawfulCalculator(model)
        mol.calc = calc
        assert _rel_err(mol.get_forces(), calc.calculate_numerical_forces(mol, d=1e-4)) <= 1e-6
        with pytest.raises(PropertyNotImplementedError):
            mol.get_stress()


def test_matches_ase_reference_calculator():
    model = MorsePairModel()
    atoms = rattled_copper(seed=3)
    ref = atoms.copy()
    ref.calc = ase_morse(model)
    atoms.calc = LawfulCalculator(model)
    assert atoms.get_potential_energy() == pytest.approx(ref.get_potential_energy(), rel=1e-12)
    np.testing.assert_allclose(atoms.get_forces(), ref.get_forces(), atol=1e-10)
    np.testing.assert_allclose(atoms.get_stress(), ref.get_stress(), atol=1e-10)
    np.testing.assert_allclose(atoms.get_potential_energies(), ref.get_potential_energies(), atol=1e-12)


def test_recomputes_only_on_system_changes():
    counting = CountingModel(MorsePairModel())
    atoms = rattled_copper()
    atoms.calc = LawfulCalculator(counting)
    atoms.get_potential_energy()
    atoms.get_forces()
    atoms.get_potential_energies()
    atoms.get_potential_energy()
    assert counting.calls == 1  # one pass fills energy, forces, energies
    atoms.get_stress()
    assert counting.calls == 1  # periodic cell: the stress came from the same pass
    atoms.get_forces()
    assert counting.calls == 1
    atoms.positions[0, 0] += 0.01
    atoms.get_forces()
    assert counting.calls == 2
    atoms.set_cell(atoms.cell * 1.001, scale_atoms=True)
    atoms.get_potential_energy()
    assert counting.calls == 3


def test_forces_then_stress_is_one_neural_model_pass(monkeypatch):
    """get_forces(); get_stress() on a periodic cell = one NeuralPotential.evaluate (counted by
    patching it), and the stress equals that of a separate stress evaluation."""
    import functools

    from lawful.forcefields import NeuralPotential

    model = NeuralPotential(["Cu"], cutoff=4.5, n_basis=4, n_radial=3, lmax=2, hidden=(8,))
    calls = []
    inner = model.evaluate

    @functools.wraps(inner)
    def counted(*args, **kwargs):
        calls.append(kwargs.get("stress"))
        return inner(*args, **kwargs)

    monkeypatch.setattr(model, "evaluate", counted)
    atoms = rattled_copper(seed=9)
    atoms.calc = LawfulCalculator(model)
    forces = atoms.get_forces()
    stress = atoms.get_stress()
    assert calls == [True]
    ref = inner(atoms.positions, atoms.numbers, atoms.cell.array, True, stress=True)
    np.testing.assert_allclose(forces, ref["forces"].numpy(), atol=1e-12)
    from ase.stress import full_3x3_to_voigt_6_stress
    np.testing.assert_allclose(stress, full_3x3_to_voigt_6_stress(ref["stress"].numpy()), atol=1e-14)
    molecule_atoms = atoms.copy()
    molecule_atoms.pbc = False
    molecule_atoms.calc = LawfulCalculator(model)
    molecule_atoms.get_forces()
    assert calls == [True, False]      # no strain derivative where no stress exists


def test_todict_names_the_model_and_its_hash_and_round_trips_through_ase_db(tmp_path):
    import hashlib

    from ase.db import connect

    from lawful.forcefields.shipped import shipped_model_path

    calc = LawfulCalculator("cu-emt", skin=0.3)
    d = calc.todict()
    assert d == {"model": "cu-emt", "model_sha256": hashlib.sha256(shipped_model_path("cu-emt").read_bytes()).hexdigest(),
                 "dtype": "float64", "device": "cpu", "skin": 0.3, "strict": False}
    atoms = rattled_copper(seed=2)
    atoms.calc = calc
    e = atoms.get_potential_energy()
    with connect(tmp_path / "runs.db") as db:
        db.write(atoms)
    row = connect(tmp_path / "runs.db").get(id=1)
    assert row.calculator_parameters == d and row.energy == pytest.approx(e, rel=1e-15)
    # in-memory models: the hash follows the weights
    from lawful.forcefields import load_model

    m = load_model("cu-emt")
    h1 = LawfulCalculator(m).todict()["model_sha256"]
    assert LawfulCalculator(m).todict()["model_sha256"] == h1
    with torch.no_grad():
        m.energy_scale.mul_(1.0 + 1e-12)
    assert LawfulCalculator(m).todict() == {**LawfulCalculator(load_model("cu-emt")).todict(), "model_sha256":
                                            LawfulCalculator(m).todict()["model_sha256"]}
    assert LawfulCalculator(m).todict()["model_sha256"] != h1
    assert LawfulCalculator(m).todict()["model"] == "NeuralPotential (in memory)"


_POOL_CALC = []


def _pool_init(calc):
    _POOL_CALC[:] = [calc]


def _pool_energy(seed):
    atoms = rattled_copper(seed=seed)
    atoms.calc = _POOL_CALC[0]
    return atoms.get_potential_energy()


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_calculator_in_a_two_worker_pool_matches_the_parent(method):
    """A calculator the parent already evaluated with two torch threads, used in a 2-worker
    multiprocessing pool: no hang (the forked child runs on one thread), same energies."""
    import multiprocessing

    if method not in multiprocessing.get_all_start_methods():
        pytest.skip(f"no {method!r} start method on this platform")
    calc = LawfulCalculator("cu-emt")
    _pool_init(calc)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        parent = [_pool_energy(s) for s in range(4)]
        with multiprocessing.get_context(method).Pool(2, initializer=_pool_init, initargs=(calc,)) as pool:
            children = pool.map_async(_pool_energy, range(4), chunksize=1).get(timeout=120)
    finally:
        torch.set_num_threads(threads)
    np.testing.assert_allclose(children, parent, rtol=1e-12)


def test_a_pickled_calculator_shares_no_scratch_buffer_between_processes():
    """torch's multiprocessing pickler (what "spawn"/"forkserver" pools use to send initargs) moves
    every tensor it pickles into shared memory. The runner writes positions into preallocated
    buffers in place, so two pool workers holding copies of one calculator evaluated each other's
    positions (a wrong energy, no error, about 1 run in 3 of the pool test above). A pickled runner
    now leaves its buffers and neighbour-list cache out: the buffers stay private to each process."""
    from multiprocessing.reduction import ForkingPickler

    calc = LawfulCalculator("cu-emt")
    atoms = rattled_copper(seed=1)
    atoms.calc = calc
    e0 = atoms.get_potential_energy()
    blob = ForkingPickler.dumps(calc)
    runner = calc._runner
    assert not runner._pos.is_shared() and not runner._cell.is_shared()
    import pickle

    copy_ = pickle.loads(bytes(pickle.dumps(calc)))        # an ordinary pickle round trip still works
    assert copy_._runner._pos.data_ptr() != runner._pos.data_ptr()
    other = rattled_copper(seed=2)
    other.calc = copy_
    assert other.get_potential_energy() != e0
    atoms.calc = copy_
    assert atoms.get_potential_energy() == pytest.approx(e0, rel=1e-12)
    assert len(blob) > 0


def test_float32_option_reports_dtype():
    model = MorsePairModel()
    calc = LawfulCalculator(model, dtype="float32")
    assert calc.dtype == torch.float32
    assert model.dtype == torch.float64  # the caller's model is left alone
    atoms = rattled_copper()
    atoms.calc = calc
    e32 = atoms.get_potential_energy()
    atoms.calc = LawfulCalculator(model)
    assert e32 == pytest.approx(atoms.get_potential_energy(), rel=1e-5)
    assert "float32" in repr(calc)


@pytest.mark.parametrize("given, frozen", [("name", True), ("object", False), ("object, float32", True)])
def test_only_the_engines_own_model_is_frozen_and_the_forces_are_the_same(given, frozen):
    """A model the calculator loaded (or copied to move it) is its own: its weights stop requiring
    grad (autograd then records and walks less); a model object the caller passed is left as it
    is, trainable. Frozen or not, the same energy and forces to the last bit."""
    from lawful.forcefields import load_model

    mine = load_model("cu-emt")
    calc = LawfulCalculator("cu-emt" if given == "name" else mine,
                            dtype="float32" if "float32" in given else None)
    assert all(p.requires_grad for p in mine.parameters())           # the caller's object: untouched
    assert all(not p.requires_grad for p in calc.model.parameters()) is frozen
    assert (calc.model is mine) is (given == "object")
    atoms = rattled_copper(seed=3)
    atoms.calc = calc
    e, f = atoms.get_potential_energy(), atoms.get_forces()
    ref = LawfulCalculator(load_model("cu-emt", dtype=calc.dtype))              # trainable, same dtype
    assert any(p.requires_grad for p in ref.model.parameters())
    atoms.calc = ref
    assert e == atoms.get_potential_energy() and np.array_equal(f, atoms.get_forces())


def test_a_frozen_model_gives_zero_forces_where_no_pair_is_inside_the_cutoff():
    """Two Cu atoms 6 Å apart (cu-emt's cutoff is shorter): the energy does not depend on the
    positions, and with the engine's frozen weights nothing in it requires grad; the forces are
    zero, through the calculator and through the TorchScript export (autograd refused the
    gradient of a tensor without a graph)."""
    import warnings

    from ase import Atoms

    from lawful.forcefields import export_torchscript

    calc = LawfulCalculator("cu-emt")
    atoms = Atoms("Cu2", positions=[[0, 0, 0], [0, 0, 6.0]])
    assert 6.0 > calc.model.cutoff
    atoms.calc = calc
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")          # (out of the training domain: warned, not tested here)
        e = atoms.get_potential_energy()
        assert np.array_equal(atoms.get_forces(), np.zeros((2, 3)))
        module = export_torchscript(calc.model, pbc=False)
        energy, forces = module(torch.tensor(atoms.positions), torch.tensor(atoms.numbers), torch.zeros(3, 3,
                                dtype=torch.float64))
    assert float(energy) == pytest.approx(e, rel=1e-12) and torch.equal(forces, torch.zeros(2, 3, dtype=torch.float64))


def _nve_run(model, dt_fs, steps):
    atoms = rattled_copper(seed=4, amp=0.02)
    atoms.calc = LawfulCalculator(model)
    thermalize_momenta(atoms, temperature_K=300, rng=np.random.default_rng(0))
    Stationary(atoms)
    dyn = VelocityVerlet(atoms, timestep=dt_fs * units.fs)
    obs = DriftObserver(dyn)
    dyn.attach(obs, interval=1)
    dyn.run(steps)
    return obs.summary()


def test_nve_velocity_verlet_conserves_energy(make_model):
    model = make_model()
    fine = _nve_run(model, 1.0, 40)
    coarse = _nve_run(model, 2.0, 20)
    assert fine.n_samples == 41
    assert fine.duration_ps == pytest.approx(0.040)
    assert fine.sigma_kinetic_mev_per_atom > 0.5  # energy really was exchanged
    # conservation inside ASE's loop: total-energy excursions tiny against the kinetic scale ...
    assert fine.max_abs_deviation_mev_per_atom < 2e-3 * fine.sigma_kinetic_mev_per_atom
    # ... and shrinking as dt^2 (velocity Verlet is second order): 4x for half the step
    ratio = coarse.max_abs_deviation_mev_per_atom / fine.max_abs_deviation_mev_per_atom
    assert 2.5 < ratio < 6.5


def test_langevin_npt_optimize_and_trajectory(tmp_path):
    model = MorsePairModel()
    atoms = rattled_copper(seed=5)
    atoms.calc = LawfulCalculator(model)
    thermalize_momenta(atoms, temperature_K=300, rng=np.random.default_rng(1))
    Langevin(atoms, 2 * units.fs, temperature_K=300, friction=0.02, fixcm=False,
             rng=np.random.default_rng(2)).run(5)
    v0 = atoms.get_volume()
    NPTBerendsen(atoms, 2 * units.fs, temperature_K=300, pressure_au=1.0 * units.GPa, taut=100 * units.fs,
                 taup=200 * units.fs, compressibility_au=1.0 / (140 * units.GPa)).run(5)
    assert atoms.get_volume() != v0  # the barostat acted on our stress
    opt = BFGS(atoms, logfile=None, trajectory=str(tmp_path / "opt.traj"))
    opt.run(fmax=0.05, steps=200)
    assert np.abs(atoms.get_forces()).max() < 0.05
    frames = read(tmp_path / "opt.traj", index=":")
    assert len(frames) >= 2
    assert frames[-1].get_potential_energy() == pytest.approx(atoms.get_potential_energy(), rel=1e-12)
    write(tmp_path / "last.extxyz", atoms)
    back = read(tmp_path / "last.extxyz")
    np.testing.assert_allclose(back.get_forces(), atoms.get_forces(), atol=1e-8)


def test_unknown_species_is_a_clear_error():
    atoms = molecule("H2O")
    atoms.calc = LawfulCalculator(MorsePairModel(species=["Cu"]))
    with pytest.raises(UnsupportedSpeciesError) as err:
        atoms.get_potential_energy()
    assert "['H', 'O']" in str(err.value) and "Cu" in str(err.value)


def test_missing_model_file(tmp_path):
    with pytest.raises(ModelFileError) as err:
        LawfulCalculator(tmp_path / "nope.lawful")
    assert "nope.lawful" in str(err.value)


def test_not_a_model():
    with pytest.raises(LawfulError):
        LawfulCalculator(object())


def test_nan_positions():
    atoms = rattled_copper()
    atoms.calc = LawfulCalculator(MorsePairModel())
    atoms.positions[3, 1] = np.nan
    with pytest.raises(NumericalError) as err:
        atoms.get_forces()
    assert "[3]" in str(err.value)


def test_verlet_list_reuse_matches_a_fresh_evaluation():
    """The calculator's neighbour list is reused with its skin (rebuilt only when atoms moved
    skin/2), and the results stay those of a fresh evaluation, also after atoms cross the box."""
    if "neural" not in MODELS:
        pytest.skip("NeuralPotential (which accepts prebuilt pairs) is not available")
    model = MODELS["neural"]()
    atoms = rattled_copper(seed=6, amp=0.02)
    calc = LawfulCalculator(model, skin=0.5)
    atoms.calc = calc
    thermalize_momenta(atoms, temperature_K=1500, rng=np.random.default_rng(3))
    atoms.set_momenta(atoms.get_momenta() + 0.3 * atoms.get_masses()[:, None])  # drift through the box
    VelocityVerlet(atoms, timestep=2.0 * units.fs).run(25)
    rebuilds = calc._runner.neighbor_rebuilds
    assert 1 < rebuilds < 20
    assert (atoms.get_scaled_positions(wrap=False) > 1.0).any() or (atoms.get_scaled_positions(wrap=False) < 0).any()
    ref = model.evaluate(atoms.positions, atoms.numbers, cell=atoms.cell.array, pbc=True)
    assert atoms.get_potential_energy() == pytest.approx(float(ref["energy"]), rel=1e-12)
    np.testing.assert_allclose(atoms.get_forces(), ref["forces"].numpy(), atol=1e-10)


@pytest.mark.parametrize("system", ["copper", "ethanol"])
@pytest.mark.parametrize("skin", [0.0, 0.5])
def test_coincident_atoms_are_a_numerical_error(system, skin):
    """The calculator hands lawful's models pairs already cut, with their squared distances: the
    coincident-atom check is made on those, periodic or not, with or without a skin."""
    if system == "copper":
        atoms, model = rattled_copper(), MODELS["neural"]()
    else:
        atoms = molecule("CH3CH2OH")
        model = MODELS["neural"](("C", "H", "O"))
    atoms.positions[4] = atoms.positions[1]
    atoms.calc = LawfulCalculator(model, skin=skin)
    with pytest.raises(NumericalError, match=r"atoms 1 and 4 are 0 Å apart \(coincident"):
        atoms.get_forces()


@pytest.mark.parametrize("skin", [0.0, 0.5])
def test_molecule_through_the_calculator_equals_the_model(skin):
    """Energy and forces of an open molecule through the calculator (Verlet list, pairs cut once)
    equal the model's own evaluation (its own neighbour search) to round-off, along a short MD run."""
    torch.manual_seed(0)
    model = MODELS["neural"](("C", "H", "O"))
    atoms = molecule("CH3CH2OH")
    atoms.calc = LawfulCalculator(model, skin=skin)
    atoms.set_momenta(np.random.default_rng(0).normal(0, 0.3, (len(atoms), 3)))
    dyn = VelocityVerlet(atoms, timestep=0.5 * units.fs)
    for _ in range(4):
        dyn.run(5)
        ref = model.evaluate(atoms.positions, atoms.numbers)
        assert atoms.get_potential_energy() == pytest.approx(float(ref["energy"]), rel=1e-13, abs=1e-12)
        np.testing.assert_allclose(atoms.get_forces(), ref["forces"].numpy(), rtol=0, atol=1e-12)


def test_slab_partial_pbc_matches_ase_reference():
    from ase.build import fcc111

    slab = fcc111("Cu", size=(3, 3, 3), vacuum=6.0, a=3.61)
    slab.rattle(0.05, seed=2)
    assert list(slab.pbc) == [True, True, False]
    model = MorsePairModel()
    ref = slab.copy()
    ref.calc = ase_morse(model)
    slab.calc = LawfulCalculator(model)
    assert slab.get_potential_energy() == pytest.approx(ref.get_potential_energy(), rel=1e-12)
    np.testing.assert_allclose(slab.get_forces(), ref.get_forces(), atol=1e-10)
    with pytest.raises(PropertyNotImplementedError):
        slab.get_stress()


def test_trained_model_nve_drift_is_emt_like():
    """The committed EMT-trained conservative model in ASE's VelocityVerlet: its energy excursion
    stays within 3x EMT's own from the same start and time step (bench_drift.py has the long run)."""

    from ase.calculators.emt import EMT

    path = "cu-emt"   # the shipped model, by name

    def run(calc):
        atoms = rattled_copper(seed=4, amp=0.01)
        atoms.calc = calc
        thermalize_momenta(atoms, temperature_K=600, rng=np.random.default_rng(5))
        Stationary(atoms)
        dyn = VelocityVerlet(atoms, timestep=2.0 * units.fs)
        obs = DriftObserver(dyn)
        dyn.attach(obs, interval=2)
        dyn.run(100)
        return obs.summary()

    emt, ours = run(EMT()), run(LawfulCalculator(path))
    assert ours.sigma_kinetic_mev_per_atom > 1.0
    assert ours.max_abs_deviation_mev_per_atom < 3.0 * emt.max_abs_deviation_mev_per_atom
    assert ours.rms_fluctuation_mev_per_atom < 3.0 * emt.rms_fluctuation_mev_per_atom


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")
def test_cuda_device_matches_cpu(make_model):
    atoms = rattled_copper(seed=14)
    model = make_model()
    atoms.calc = LawfulCalculator(model)
    e_cpu, f_cpu = atoms.get_potential_energy(), atoms.get_forces()
    calc = LawfulCalculator(model, device="cuda")
    assert calc.device.type == "cuda"
    atoms.calc = calc
    assert atoms.get_potential_energy() == pytest.approx(e_cpu, rel=1e-10)
    np.testing.assert_allclose(atoms.get_forces(), f_cpu, atol=1e-9)


def test_unfitted_stress_of_a_direct_model_is_computed_only_when_asked_and_warns_once():
    """A DirectForceModel trained without stress (the shipped control: stress weight 0) has a
    stress that forces do not determine: the calculator leaves it out of the force call and warns
    when it is asked for; a NeuralPotential's stress (the strain derivative of its energy) and a
    control trained with stress come with the forces, silently."""
    import warnings as _warnings

    from ase.build import bulk

    from lawful.forcefields import load_model

    atoms = bulk("Cu", "fcc", a=3.61, cubic=True)
    atoms.rattle(0.02, seed=1)
    direct = load_model("cu-emt-direct")
    assert direct.stress_fitted is False and load_model("cu-emt").stress_fitted is True
    calc = LawfulCalculator(direct)
    atoms.calc = calc
    with _warnings.catch_warnings():
        _warnings.simplefilter("error")
        atoms.get_forces()
    assert "stress" not in calc.results
    with pytest.warns(UserWarning, match="trained without stress"):
        s1 = atoms.get_stress()
    atoms.positions[0, 0] += 0.01
    with _warnings.catch_warnings():
        _warnings.simplefilter("error")          # once per calculator
        s2 = atoms.get_stress()
    assert s1.shape == s2.shape == (6,) and not np.allclose(s1, s2)
    direct.training_summary = dict(direct.training_summary, weights={"energy": 1.0, "forces": 1.0, "stress": 0.1})
    atoms.calc = LawfulCalculator(direct)
    with _warnings.catch_warnings():
        _warnings.simplefilter("error")
        atoms.get_forces()
        assert "stress" in atoms.calc.results
    atoms.calc = LawfulCalculator("cu-emt")
    with _warnings.catch_warnings():
        _warnings.simplefilter("error")
        atoms.get_forces()
        assert "stress" in atoms.calc.results


def _squeezed_copper():
    """Two copper atoms 0.8 Å apart: out of cu-emt's training domain (a warning, or with
    strict=True a NumericalError)."""
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)
    atoms.positions[5] = atoms.positions[0] + np.array([0.8, 0.0, 0.0])
    return atoms


@pytest.mark.parametrize("kwargs, named", [
    pytest.param({"precision": "float32"}, ["'precision'", "did you mean 'dtype'"], id="precision"),  # openmm-ml's
    pytest.param({"strcit": True}, ["'strcit'", "did you mean 'strict'"], id="strcit"),
    pytest.param({"skn": 0.0}, ["'skn'", "did you mean 'skin'"], id="skn"),
    pytest.param({"foo": 1, "Strict": True}, ["'foo'", "'Strict'"], id="two-unknown"),
    pytest.param({"label": "run1"}, None, id="ase-label"),                                   # ASE's own
    pytest.param({"directory": "calc-dir"}, None, id="ase-directory"),
    pytest.param({"atoms": "rattled"}, None, id="ase-atoms"),
])
def test_constructor_keywords_are_lawfuls_or_ases_and_nothing_else(kwargs, named, tmp_path):
    """An unknown keyword went through to ASE's Calculator, which kept it in calc.parameters
    unused (a float64, non-strict run with no error); it is now an InputError naming it and
    listing the accepted ones. ASE's own keywords still work."""
    if kwargs.get("directory"):
        kwargs = {"directory": str(tmp_path / kwargs["directory"])}
    if kwargs.get("atoms"):
        kwargs = {"atoms": rattled_copper()}
    if named is not None:
        with pytest.raises(InputError) as err:
            LawfulCalculator("cu-emt", **kwargs)
        for text in named + ["'model_or_path'", "'strict'", "'label'", "'directory'"]:
            assert text in str(err.value)
        return
    calc = LawfulCalculator("cu-emt", **kwargs)
    assert calc.parameters == {} and calc.todict()["dtype"] == "float64"
    if "label" in kwargs:
        assert calc.label.endswith("run1")
    if "directory" in kwargs:
        assert calc.directory == kwargs["directory"]
    if "atoms" in kwargs:
        assert kwargs["atoms"].calc is calc and np.isfinite(kwargs["atoms"].get_potential_energy())


@pytest.mark.parametrize("how", ["set", "attribute"])
def test_strict_changed_after_an_evaluation_applies_to_the_next_one(how):
    """calc.set(strict=True) only stored the value in calc.parameters, and calc.strict = True only
    changed todict(): the cached runner (and results) stayed non-strict, so an out-of-domain
    structure still only warned. Both now take effect at the next calculation."""
    from lawful.kernels.errors import OutOfDomainWarning

    atoms = _squeezed_copper()
    calc = LawfulCalculator("cu-emt")
    atoms.calc = calc
    with pytest.warns(OutOfDomainWarning):
        atoms.get_potential_energy()
    if how == "set":
        assert calc.set(strict=True) == {"strict": True}
        assert calc.set(strict=True) == {}                   # unchanged: nothing returned
    else:
        calc.strict = True
    assert calc.todict()["strict"] is True
    with pytest.raises(NumericalError, match="0.8 Å"):
        atoms.get_potential_energy()                           # same atoms: not answered from the cache
    assert calc._runner.strict is True


@pytest.mark.parametrize("how", ["set", "attribute"])
def test_skin_changed_after_an_evaluation_applies_to_the_next_one(how):
    """A new skin reached todict() but not the cached runner's Verlet list; now the next
    calculation runs with it (same energy), and a pickled copy keeps it."""
    import pickle

    atoms = rattled_copper(seed=7)
    calc = LawfulCalculator("cu-emt")
    atoms.calc = calc
    e = atoms.get_potential_energy()
    assert calc._runner.skin == 0.5
    if how == "set":
        assert calc.set(skin=0) == {"skin": 0.0}
    else:
        calc.skin = 0
    assert calc.skin == 0.0 and calc.todict()["skin"] == 0.0
    assert atoms.get_potential_energy() == pytest.approx(e, rel=1e-12)
    assert calc._runner.skin == 0.0 and calc._runner.skin == calc.todict()["skin"]
    copy_ = pickle.loads(pickle.dumps(calc))
    assert copy_.todict() == calc.todict() and copy_._runner.skin == 0.0


@pytest.mark.parametrize("change, named", [
    pytest.param(lambda c: c.set(dtype="float32"), "'dtype'", id="set-dtype"),
    pytest.param(lambda c: c.set(device="cpu"), "'device'", id="set-device"),
    pytest.param(lambda c: c.set(model_or_path="cu-emt"), "'model_or_path'", id="set-model_or_path"),
    pytest.param(lambda c: c.set(model="cu-emt"), "'model'", id="set-model"),
    pytest.param(lambda c: c.set(precision="single"), "'precision'", id="set-precision"),
    pytest.param(lambda c: c.set(strict=True, dtype="float32"), "'dtype'", id="set-strict-and-dtype"),
    pytest.param(lambda c: c.set(strcit=True), "did you mean 'strict'", id="set-strcit"),
    pytest.param(lambda c: c.set(label="x"), "'label'", id="set-label"),
    pytest.param(lambda c: c.set(skin=-1.0), "-1.0", id="set-skin-negative"),
    pytest.param(lambda c: c.set(strict=True, skin="abc"), "'abc'", id="set-strict-and-skin-text"),
    pytest.param(lambda c: setattr(c, "skin", -1.0), "-1.0", id="attr-skin-negative"),
    pytest.param(lambda c: setattr(c, "skin", float("nan")), "nan", id="attr-skin-nan"),
    pytest.param(lambda c: setattr(c, "skin", "abc"), "'abc'", id="attr-skin-text"),
])
def test_a_refused_change_is_an_input_error_and_changes_nothing(change, named):
    """set() took any keyword and returned it as if applied (dtype stayed float64), and a bad
    skin assigned was accepted; both are now an InputError, and the calculator is left as it was."""
    atoms = rattled_copper(seed=8)
    calc = LawfulCalculator("cu-emt")
    atoms.calc = calc
    atoms.get_potential_energy()
    before, runner = calc.todict(), calc._runner
    with pytest.raises(InputError) as err:
        change(calc)
    assert named in str(err.value)
    assert calc.todict() == before and calc._runner is runner and calc.parameters == {}
    assert calc.dtype == torch.float64 and "energy" in calc.results

"""Reference data: EMT / Lennard-Jones / OpenMM labels, sampling, and extxyz + ase.db storage."""

from __future__ import annotations

import numpy as np
import pytest

from lawful.forcefields.reference import (emt_metal_dataset, label, lennard_jones_dataset, md_snapshots, rattled,
                                          read_db, read_extxyz, strained, write_db, write_extxyz)
from lawful.integrations.openmm_reference import OpenMMCalculator, water_cluster_dataset, water_cluster_system
from lawful.kernels.errors import InputError


@pytest.fixture(scope="module")
def cu_frames():
    return emt_metal_dataset("Cu", repeat=1, temperatures=(300, 1200), n_md=3, n_rattled=2, n_strained=3, seed=0)


def test_emt_dataset_has_consistent_labels_and_sources(cu_frames):
    from ase.calculators.emt import EMT

    assert len(cu_frames) == 2 * 3 + 2 + 3
    sources = [a.info["source"] for a in cu_frames]
    assert sources.count("md_300K") == 3 and sources.count("md_1200K") == 3
    assert any(s.startswith("strained") for s in sources) and any(s.startswith("rattled") for s in sources)
    for a in cu_frames:
        ref = a.copy()
        ref.calc = EMT()
        assert a.get_potential_energy() == pytest.approx(ref.get_potential_energy(), abs=1e-12)
        assert np.allclose(a.get_forces(), ref.get_forces(), atol=1e-12)
        assert np.allclose(a.get_stress(), ref.get_stress(), atol=1e-12)
    strained_cells = [a for a in cu_frames if a.info["source"].startswith("strained")]
    vols = [a.get_volume() for a in strained_cells]
    assert np.ptp(vols) > 0.01 * np.mean(vols)              # the cells really are strained


def test_md_is_hotter_at_higher_temperature_and_seeded():
    from ase.build import bulk
    from ase.calculators.emt import EMT

    base = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((2, 2, 2))
    cold = md_snapshots(base, EMT(), [100], 3, interval=10, equilibration=30, seed=2)
    hot = md_snapshots(base, EMT(), [1500], 3, interval=10, equilibration=30, seed=2)
    again = md_snapshots(base, EMT(), [100], 3, interval=10, equilibration=30, seed=2)
    disp = lambda fr: np.mean([np.abs(a.positions - base.positions).mean() for a in fr])
    assert disp(hot) > 1.5 * disp(cold)
    assert all(np.array_equal(a.positions, b.positions) for a, b in zip(cold, again))


def test_rattled_and_strained_inputs():
    from ase.build import bulk, molecule

    base = bulk("Cu", "fcc", a=3.6, cubic=True)
    r = rattled(base, 4, 0.1, seed=0)
    assert 0.05 < np.std(np.concatenate([a.positions - base.positions for a in r])) < 0.15
    with pytest.raises(InputError, match="periodic"):
        strained(molecule("H2O"), 2)


def test_lennard_jones_labels_match_the_pair_sum():
    frames = lennard_jones_dataset(n_md=2, temperatures=(40,), repeat=1, seed=0)
    from ase.calculators.lj import LennardJones

    a = frames[0]
    calc = LennardJones(sigma=3.405, epsilon=0.0104, rc=2.5 * 3.405, smooth=True)
    b = a.copy()
    b.calc = calc
    assert a.get_potential_energy() == pytest.approx(b.get_potential_energy(), abs=1e-12)
    assert a.get_potential_energy() < 0                    # a bound argon crystal
    assert "stress" in a.calc.results


def test_openmm_adapter_units_and_forces():
    atoms, system = water_cluster_system(3)
    assert atoms.get_chemical_formula() == "H6O3"
    calc = OpenMMCalculator(system)
    atoms.calc = calc
    f = atoms.get_forces()
    e0 = atoms.get_potential_energy()
    # forces are -dE/dR in eV/Å: central differences of the eV energy along a few coordinates
    h = 1e-4
    for k, d in [(0, 0), (1, 2), (4, 1)]:
        p = atoms.positions.copy()
        p[k, d] += h
        atoms.positions = p
        ep = atoms.get_potential_energy()
        p[k, d] -= 2 * h
        atoms.positions = p
        em = atoms.get_potential_energy()
        p[k, d] += h
        atoms.positions = p
        assert -(ep - em) / (2 * h) == pytest.approx(f[k, d], rel=1e-5, abs=1e-6)
    # the energy conversion agrees with OpenMM's own unit module
    import openmm
    from openmm import unit

    ctx = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    ctx.setPositions(atoms.positions * unit.angstrom)
    e_kj = ctx.getState(getEnergy=True).getPotentialEnergy()
    ev = (1.0 * unit.elementary_charge * unit.volt * unit.AVOGADRO_CONSTANT_NA).value_in_unit(unit.kilojoule_per_mole)
    assert e0 == pytest.approx(e_kj.value_in_unit(unit.kilojoule_per_mole) / ev, rel=1e-9)
    wrong = atoms[:3]
    wrong.calc = OpenMMCalculator(system)
    with pytest.raises(InputError, match="particles"):
        wrong.get_potential_energy()


def test_water_dataset_is_labelled():
    frames = water_cluster_dataset(2, n_md=2, temperatures=(300,), n_rattled=2)
    assert len(frames) == 4
    assert all(np.isfinite(a.get_forces()).all() for a in frames)


def test_extxyz_and_database_round_trips(cu_frames, tmp_path):
    path = write_extxyz(tmp_path / "sub" / "cu.extxyz", cu_frames)
    assert not list((tmp_path / "sub").glob("*.tmp"))
    back = read_extxyz(path)
    dbpath = tmp_path / "cu.db"
    write_db(dbpath, cu_frames)
    fromdb = read_db(dbpath)
    for frames in (back, fromdb):
        assert len(frames) == len(cu_frames)
        for a, b in zip(cu_frames, frames):
            assert a.info["source"] == b.info["source"]
            assert np.allclose(a.positions, b.positions, atol=1e-8)
            assert a.get_potential_energy() == pytest.approx(b.get_potential_energy(), abs=1e-8)
            assert np.allclose(a.get_forces(), b.get_forces(), atol=1e-8)
            assert np.allclose(a.get_stress(), b.get_stress(), atol=1e-8)
    assert len(read_db(dbpath, selection="source=md_300K")) == 3
    write_db(dbpath, cu_frames[:2], append=True)
    assert len(read_db(dbpath)) == len(cu_frames) + 2
    with pytest.raises(InputError):
        read_extxyz(tmp_path / "missing.extxyz")
    with pytest.raises(InputError):
        read_db(tmp_path / "missing.db")


def test_label_with_any_calculator():
    from ase.build import molecule
    from ase.calculators.emt import EMT

    frames = label([molecule("H2O")], EMT(), source="test")
    assert frames[0].info["source"] == "test"
    assert "stress" not in frames[0].calc.results


def test_adapter_and_engines_share_one_unit_table():
    # One definition in kernels; the engine side re-exports the very same objects.
    from lawful.integrations import openmm_reference, units
    from lawful.kernels import units as kunits

    assert openmm_reference._units is kunits
    assert units.EV_PER_KJMOL is kunits.EV_PER_KJMOL and units.ANGSTROM_PER_NM is kunits.ANGSTROM_PER_NM


# -- determinism: the shipped models' data fingerprint reproduces from HEAD ------------------------
_FINGERPRINT_SCRIPT = """
import numpy as np
from lawful.forcefields.reference import emt_metal_dataset
frames = emt_metal_dataset("Cu", repeat=1, temperatures=(600,), n_md=3, n_rattled=2, n_strained=4, seed=5)
import hashlib
h = hashlib.sha256()
for a in frames:
    h.update(a.positions.tobytes()); h.update(np.asarray(a.cell).tobytes()); h.update(a.get_forces().tobytes())
print(h.hexdigest())
"""


def _exact_digest(frames) -> str:
    import hashlib

    h = hashlib.sha256()
    for a in frames:
        h.update(a.positions.tobytes())
        h.update(np.asarray(a.cell).tobytes())
        h.update(a.get_forces().tobytes())
    return h.hexdigest()


def test_strain_is_the_matrix_product_summed_in_a_fixed_order():
    from lawful.forcefields.reference import _affine

    rng = np.random.default_rng(3)
    x = rng.normal(size=(40, 3)) * 10
    f = np.eye(3) + 0.04 * rng.normal(size=(3, 3))
    assert np.allclose(_affine(x, f), x @ f, rtol=0, atol=1e-13)
    # no BLAS call: the same bits whatever the memory layout of the input
    assert np.array_equal(_affine(np.asfortranarray(x), f), _affine(x, f))


def test_dataset_is_bit_identical_in_one_process_and_across_thread_counts_and_blas_kernels():
    """Same seed -> the same bits (positions, cells, labels): twice in this process, and in a
    subprocess with two BLAS/OpenMP threads and OpenBLAS forced onto another kernel family (a
    stand-in for another CPU; the strained cells once went through a BLAS matmul whose last bit
    depended on it)."""
    import os
    import subprocess
    import sys

    kw = dict(repeat=1, temperatures=(600,), n_md=3, n_rattled=2, n_strained=4, seed=5)
    first = _exact_digest(emt_metal_dataset("Cu", **kw))
    assert _exact_digest(emt_metal_dataset("Cu", **kw)) == first
    env = dict(os.environ, OMP_NUM_THREADS="2", OPENBLAS_NUM_THREADS="2", OPENBLAS_CORETYPE="Sandybridge")
    out = subprocess.run([sys.executable, "-c", _FINGERPRINT_SCRIPT], env=env, capture_output=True, text=True,
                         check=True, timeout=300)
    assert out.stdout.strip() == first


def test_shipped_model_data_fingerprint_reproduces_from_this_tree():
    """forcefields/pretrained/cu-emt*.lawful store the fingerprint of the data they were trained
    on; HEAD's emt_metal_dataset with bench_forcefield's sizes, split as train() splits it (seed 0,
    10 % validation), must give the same one."""
    from lawful.forcefields import load_model
    from lawful.forcefields.training import _fingerprint

    frames = emt_metal_dataset("Cu", 2, n_md=50, n_rattled=40, n_strained=50, seed=0)
    perm = np.random.default_rng(0).permutation(len(frames))
    n_val = int(round(0.1 * len(frames)))
    val = [frames[k] for k in sorted(perm[:n_val])]
    train = [frames[k] for k in sorted(perm[n_val:])]
    here = _fingerprint(train) + _fingerprint(val)
    for name in ("cu-emt", "cu-emt-direct"):
        assert load_model(name).training_summary["data_fingerprint"] == here, name


# -- two writers of one file (audit MP finding 1) -------------------------------------------------------
class _WritesAgain:
    """A frame's ``source`` whose first ``str()`` runs ``again()``: a second writer that starts and
    finishes while the first one is writing its rows."""

    def __init__(self, again):
        self.again, self.done = again, False

    def __str__(self):
        if not self.done:
            self.done = True
            self.again()
        return "md_300K"


@pytest.mark.parametrize("fmt", ["db", "extxyz"])
def test_a_second_writer_during_a_write_leaves_one_complete_set(cu_frames, tmp_path, monkeypatch, fmt):
    """write_db / write_extxyz used one fixed temporary name (X.tmp.db, X.tmp): a second writer of
    the same file removed or truncated the first one's, which left an empty database after
    write_db returned normally, or an extxyz that did not parse. Now each write has its own
    temporary file: both return, and the file holds the complete set of the one that finished last."""
    import ase.io

    from lawful.forcefields import reference

    path = tmp_path / f"shared.{fmt}"
    first, second = list(cu_frames), list(cu_frames[:2])
    write, read_back = ((reference.write_db, reference.read_db) if fmt == "db"
                        else (reference.write_extxyz, reference.read_extxyz))
    if fmt == "db":                                    # the second writer runs while the first writes its rows
        first = [a.copy() for a in cu_frames]
        for a, b in zip(first, cu_frames):
            a.calc = b.calc
        first[len(first) // 2].info["source"] = _WritesAgain(lambda: write(path, second))
    else:                                              # ... or once the first one's rows are in its file
        real, calls = ase.io.write, []

        def write_then_another(*args, **kwargs):
            real(*args, **kwargs)
            if not calls:
                calls.append(1)
                write(path, second)

        monkeypatch.setattr(ase.io, "write", write_then_another)
    write(path, first)
    back = read_back(path)
    assert len(back) == len(first)                     # the first writer's set, complete (it finished last)
    assert [a.get_potential_energy() for a in back] == pytest.approx([a.get_potential_energy() for a in cu_frames])
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]   # no temporary file left


@pytest.mark.parametrize("constraint, what", [
    ("fix", "forces on the fixed atoms were stored as 0"),
    ("hookean", "the restraint's energy was added to the label"),
])
def test_label_gives_the_potentials_labels_not_the_constrained_ones(constraint, what):
    """Frames carrying ASE constraints (a slab's fixed bottom layers, a Hookean restraint, as
    frames from an ASE relaxation do) are labelled with the calculator's own energy and forces."""
    from ase.build import fcc111
    from ase.calculators.emt import EMT
    from ase.constraints import FixAtoms, Hookean

    slab = fcc111("Cu", (2, 2, 3), vacuum=6.0)
    slab.rattle(0.05, seed=1)
    slab.set_constraint(FixAtoms(indices=range(4)) if constraint == "fix" else Hookean(a1=0, a2=1, rt=1.0, k=10.0))
    free = slab.copy()
    free.set_constraint()
    free.calc = EMT()
    e_true, f_true = free.get_potential_energy(), free.get_forces()
    assert np.abs(f_true[:4]).max() > 0.1                             # the fixed atoms do feel a force
    (a,) = label([slab], EMT())
    np.testing.assert_allclose(a.calc.results["forces"], f_true, rtol=0, atol=1e-12, err_msg=what)
    assert a.calc.results["energy"] == pytest.approx(e_true, abs=1e-12), what
    np.testing.assert_allclose(a.get_forces(), f_true, rtol=0, atol=1e-12)   # read back as training does too
    assert slab.constraints                                             # the input is not changed


def test_two_openmm_force_fields_never_share_cached_labels(tmp_path):
    """OpenMMCalculator's todict() (ASE's keyword parameters) was empty for every System, so a
    label cache (label_cached) keyed two force fields alike and returned the first one's labels
    for the second (audit: -4.41e-4 eV served for +1.8e-5 eV). Its id now carries the System's
    digest and platform: one System, one id; another System (charges scaled), another id and its
    own labels."""
    import openmm

    from lawful.forcefields.xtb_data import label_cached, labeller_id

    atoms, system = water_cluster_system(2)
    other = openmm.XmlSerializer.deserialize(openmm.XmlSerializer.serialize(system))
    nb = next(f for f in other.getForces() if isinstance(f, openmm.NonbondedForce))
    for i in range(nb.getNumParticles()):
        q, sigma, eps = nb.getParticleParameters(i)
        nb.setParticleParameters(i, 0.9 * q, sigma, eps)
    a, a_again, b = OpenMMCalculator(system), OpenMMCalculator(system), OpenMMCalculator(other)
    assert labeller_id(a) == labeller_id(a_again) != labeller_id(b)
    assert labeller_id(a) != labeller_id(OpenMMCalculator(system, platform="CPU"))
    cache = tmp_path / "labels.extxyz"
    first = label_cached([atoms], cache, calculator=a)[0].get_potential_energy()
    second = label_cached([atoms], cache, calculator=b)[0].get_potential_energy()
    ref = atoms.copy()
    ref.calc = OpenMMCalculator(other)
    assert second == pytest.approx(ref.get_potential_energy(), abs=1e-9) and abs(second - first) > 5e-5


# -- a server database (postgresql://...) is only ever added to -----------------------------------------
# No database server runs in the tests: ase.db.connect is pointed, for the server URL alone, at a real
# SQLite database standing in for it (ASE writes rows to both through one interface).
_SERVER = "postgresql://lab:s3cret@dbhost:5432/frames"


@pytest.fixture
def server(tmp_path, monkeypatch):
    import ase.db

    real = ase.db.connect
    backing = tmp_path / "server.db"

    def connect(name, *args, **kwargs):
        if str(name) == _SERVER:
            kwargs.update(type="db", append=True)   # a server is never deleted by a connect
            return real(str(backing), *args[1:], **kwargs)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(ase.db, "connect", connect)
    return backing


@pytest.mark.parametrize("rows_before, append, rows_after, refused", [
    (0, False, 3, False),        # an empty server database takes the set
    (2, False, 2, True),         # a filled one is refused (was: 5 rows, the old 2 beside the new 3)
    (2, True, 5, False),         # adding on purpose
])
def test_write_db_refuses_a_filled_server_database(cu_frames, server, rows_before, append, rows_after, refused):
    if rows_before:
        write_db(_SERVER, cu_frames[:rows_before], append=True)
    if refused:
        with pytest.raises(InputError, match=rf"already holds {rows_before} rows") as info:
            write_db(_SERVER, cu_frames[:3], append=append)
        assert "s3cret" not in str(info.value) and "lab:***@dbhost" in str(info.value)
    else:
        write_db(_SERVER, cu_frames[:3], append=append)
    assert len(read_db(_SERVER)) == rows_after


def test_lawful_data_refuses_a_filled_server_database_before_labelling(cu_frames, server, tmp_path, capsys,
                                                                       monkeypatch):
    from lawful.forcefields import reference
    from lawful.integrations.cli import main

    write_db(_SERVER, cu_frames[:2], append=True)
    labelled = []
    monkeypatch.setattr(reference, "lennard_jones_dataset", lambda **kw: labelled.append(kw) or [])
    assert main(["data", "--calc", "lj", "--out", str(tmp_path / "out"), "--db", _SERVER]) == 2
    err = capsys.readouterr().err
    assert "--db" in err and "already holds 2 rows" in err and "s3cret" not in err
    assert labelled == [] and len(read_db(_SERVER)) == 2

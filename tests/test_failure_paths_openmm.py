"""Failure paths of the OpenMM side (issue 12): a table of bad inputs to create_force,
system_from_atoms, openmm-ml's createSystem / createMixedSystem, the DriftReporter and
run_md(engine="openmm"). Each case asserts the error class, that the message names the bad value,
and that nothing already written was lost: the files of an earlier run in the output folder keep
their bytes, and a System handed in is left as it was (same XML).
"""

from __future__ import annotations

import re
from types import SimpleNamespace

import openmm
from openmm import app
import pytest
from ase import Atoms
from ase.build import molecule

from lawful.integrations.md import run_md
from lawful.integrations.openmm import DriftReporter, create_force, system_from_atoms, topology_from_atoms
from lawful.kernels.errors import (BackendError, InputError, ModelFileError, ShapeError,
                                   UnsupportedSpeciesError)

from test_openmm_pairmodel import MorsePairModel, rattled_copper

openmmml = pytest.importorskip("openmmml")

EARLIER = {"md.json": '{"earlier": "run"}\n', "drift.csv": "step,time_ps\n0,0.0\n", "trajectory.dcd": "x" * 64}


@pytest.fixture
def env(tmp_path):
    """A bulk Cu cell with its topology, a classical System for it, and an output folder that
    already holds an earlier run's files."""
    atoms = rattled_copper(seed=41)
    top, positions = topology_from_atoms(atoms)
    mm = openmm.System()
    for m in atoms.get_masses():
        mm.addParticle(float(m))
    mm.setDefaultPeriodicBoxVectors(*top.getPeriodicBoxVectors())
    nb = openmm.NonbondedForce()
    nb.setNonbondedMethod(openmm.NonbondedForce.CutoffPeriodic)
    nb.setCutoffDistance(0.35)
    for _ in range(len(atoms)):
        nb.addParticle(0.0, 0.2, 0.01)
    mm.addForce(nb)
    out = tmp_path / "run"
    out.mkdir()
    for name, text in EARLIER.items():
        (out / name).write_text(text)
    a_file = tmp_path / "a_file.txt"
    a_file.write_text("keep me\n")
    return SimpleNamespace(atoms=atoms, top=top, mm=mm, out=out, a_file=a_file, tmp=tmp_path,
                           model=MorsePairModel())


def _molecule_top():
    return topology_from_atoms(molecule("H2O"))[0]


def _no_box_top(env):
    return topology_from_atoms(Atoms(env.atoms.numbers, positions=env.atoms.positions))[0]


def _partial_pbc(env):
    atoms = env.atoms.copy()
    atoms.pbc = [True, True, False]
    return atoms


def _potential(env, **kw):
    return openmmml.MLPotential("lawful", model=env.model, **kw)


def _with_virtual_site(env):
    """The test topology and MM System plus one particle without an element (a TIP4P-like EP)."""
    import copy

    top = app.Topology()
    chain = top.addChain()
    res = top.addResidue("CU", chain)
    for atom in env.top.atoms():
        top.addAtom(atom.name, atom.element, res)
    top.addAtom("EP", None, top.addResidue("HOH", chain))
    top.setPeriodicBoxVectors(env.top.getPeriodicBoxVectors())
    mm = copy.deepcopy(env.mm)
    mm.addParticle(0.0)
    return top, mm


def _reporter_summary(env):
    DriftReporter(None, 10).summary()


CASES = [
    # (id, call(env), error class, text the message must contain)
    ("create_force atoms out of range", lambda e: create_force(e.model, topology=e.top, atoms=[0, 99]),
     InputError, "[99]"),
    ("create_force negative atom", lambda e: create_force(e.model, topology=e.top, atoms=[-1, 4]),
     InputError, "[-1]"),
    ("create_force repeated atoms", lambda e: create_force(e.model, topology=e.top, atoms=[3, 5, 3]),
     InputError, "[3]"),
    ("create_force fractional atom", lambda e: create_force(e.model, topology=e.top, atoms=[0.5, 1]),
     InputError, "0.5"),
    ("create_force numbers too short", lambda e: create_force(e.model, topology=e.top, numbers=[29] * 30),
     ShapeError, "30 entries"),
    ("create_force numbers disagree", lambda e: create_force(e.model, topology=e.top, numbers=[28] * 32),
     InputError, "28 given"),
    ("create_force numbers-only subset out of range",
     lambda e: create_force(e.model, numbers=[29] * 32, atoms=[31, 32], periodic=True), InputError, "[32]"),
    ("create_force periodic=None without topology", lambda e: create_force(e.model, numbers=[29] * 32),
     InputError, "periodic=None"),
    ("create_force periodic not a bool", lambda e: create_force(e.model, topology=e.top, periodic="yes"),
     InputError, "'yes'"),
    ("create_force periodic=True without box", lambda e: create_force(e.model, topology=_no_box_top(e), periodic=True),
     InputError, "periodic=True"),
    ("create_force periodic=False with box", lambda e: create_force(e.model, topology=e.top, periodic=False),
     InputError, "periodic=False"),
    ("create_force unknown backend", lambda e: create_force(e.model, topology=e.top, backend="cuda"),
     InputError, "'cuda'"),
    ("create_force negative skin", lambda e: create_force(e.model, topology=e.top, skin=-1.0),
     InputError, "-1.0"),
    ("create_force unknown element", lambda e: create_force(e.model, topology=_molecule_top()),
     UnsupportedSpeciesError, "'H'"),
    ("create_force missing model file", lambda e: create_force(e.tmp / "missing.lawful", topology=e.top),
     ModelFileError, "missing.lawful"),
    ("system_from_atoms partial pbc", lambda e: system_from_atoms(_partial_pbc(e), e.model),
     InputError, "[True, True, False]"),
    ("system_from_atoms periodic=False on a bulk cell",
     lambda e: system_from_atoms(e.atoms, e.model, periodic=False), InputError, "periodic=False"),
    ("createSystem misspelled keyword", lambda e: _potential(e).createSystem(e.top, precison="double"),
     InputError, "'precison'"),
    ("createSystem unknown precision", lambda e: _potential(e).createSystem(e.top, precision="half"),
     InputError, "'half'"),
    ("MLPotential misspelled keyword", lambda e: _potential(e, devise="cpu"), InputError, "'devise'"),
    ("MLPotential unknown shipped name", lambda e: openmmml.MLPotential("lawful", model="cu-emtt"),
     ModelFileError, "cu-emtt"),
    ("createMixedSystem atom out of range", lambda e: _potential(e).createMixedSystem(e.top, e.mm, [0, 99]),
     InputError, "[99]"),
    ("createMixedSystem topology without box, periodic System",
     lambda e: _potential(e).createMixedSystem(_no_box_top(e), e.mm, [0, 1]), InputError, "periodic boundary"),
    ("createMixedSystem with a virtual site (TIP4P)",
     lambda e: _potential(e).createMixedSystem(*_with_virtual_site(e), [0, 1]), InputError, "without an element"),
    ("createMixedSystem misspelled keyword",
     lambda e: _potential(e).createMixedSystem(e.top, e.mm, [0, 1], backnd="python"), InputError, "'backnd'"),
    ("DriftReporter zero interval", lambda e: DriftReporter(e.out / "d.csv", 0), InputError, "0"),
    ("DriftReporter fractional interval", lambda e: DriftReporter(e.out / "d.csv", 2.5), InputError, "2.5"),
    ("DriftReporter missing folder", lambda e: DriftReporter(e.tmp / "nowhere" / "d.csv", 10),
     InputError, "nowhere"),
    ("DriftReporter n_atoms zero", lambda e: DriftReporter(None, 10, n_atoms=0), InputError, "n_atoms=0"),
    ("DriftReporter summary before any report", _reporter_summary, InputError, "not reported yet"),
    ("run_md unknown platform",
     lambda e: run_md(e.atoms, e.model, "openmm", steps=10, out=e.out, platform="NoSuchGPU"),
     BackendError, "'NoSuchGPU'"),
    ("run_md out is a file", lambda e: run_md(e.atoms, e.model, "openmm", steps=10, out=e.a_file),
     InputError, "a_file.txt"),
    ("run_md zero steps", lambda e: run_md(e.atoms, e.model, "openmm", steps=0, out=e.out), InputError, "steps=0"),
    ("run_md negative time step",
     lambda e: run_md(e.atoms, e.model, "openmm", timestep_fs=-1.0, steps=10, out=e.out), InputError, "-1.0"),
    ("run_md fractional steps", lambda e: run_md(e.atoms, e.model, "openmm", steps=10.5, out=e.out),
     InputError, "10.5"),
    ("run_md missing model", lambda e: run_md(e.atoms, e.tmp / "gone.lawful", "openmm", steps=10, out=e.out),
     ModelFileError, "gone.lawful"),
    ("run_md unknown engine", lambda e: run_md(e.atoms, e.model, "gromacs", steps=10, out=e.out),
     InputError, "'gromacs'"),
]


@pytest.mark.parametrize("call, error, names", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input(env, call, error, names):
    mm_xml = openmm.XmlSerializer.serialize(env.mm)
    with pytest.raises(error, match=re.escape(names)):
        call(env)
    for name, text in EARLIER.items():  # an earlier run's outputs are untouched
        assert (env.out / name).read_text() == text
    assert sorted(p.name for p in env.out.iterdir()) == sorted(EARLIER)
    assert env.a_file.read_text() == "keep me\n"
    assert openmm.XmlSerializer.serialize(env.mm) == mm_xml  # the System handed in is unchanged


def test_the_table_is_large_enough():
    assert len(CASES) >= 15
    assert len({c[0] for c in CASES}) == len(CASES)
    assert all(c[3] for c in CASES)  # every case names the text its message must contain

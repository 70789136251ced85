"""Failure paths of the force-field models and their ASE adapter, as a table: every bad input
raises its LawfulError subclass (ASE's PropertyNotImplementedError where ASE's protocol says so)
with a message that names the bad value, and nothing already written is lost (a model file and
an extxyz trajectory written before the failure keep their bytes; a failed save leaves what was
at the target)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk
from ase.calculators.calculator import PropertyNotImplementedError
from ase.io import write

from lawful.forcefields import DirectForceModel, NeuralPotential, export_torchscript, load_model
from lawful.forcefields.model_io import save_model
from lawful.forcefields.shipped import shipped_model_path
from lawful.integrations.ase import LawfulCalculator
from lawful.integrations.runner import ModelRunner
from lawful.kernels.errors import (InputError, LawfulError, ModelFileError, NumericalError,
                                   UnsupportedSpeciesError)
from lawful.kernels.neighbors import neighbor_list

TINY = dict(cutoff=3.0, n_basis=3, n_radial=2, lmax=1, hidden=(4,))


def _copper():
    return bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)


def _energy(atoms, calc):
    atoms.calc = calc
    return atoms.get_potential_energy()


def _nan_atoms():
    a = _copper()
    a.positions[3, 1] = np.nan
    return a


def _squeezed():
    a = _copper()
    a.positions[5] = a.positions[0] + np.array([0.8, 0.0, 0.0])
    return a


def _truncated(ctx):
    p = ctx["dir"] / "truncated.lawful"
    data = shipped_model_path("cu-emt").read_bytes()
    p.write_bytes(data[: len(data) // 2])
    return p


def _foreign(ctx):
    p = ctx["dir"] / "notes.lawful"
    p.write_text("these are my notes, not a model\n" * 20)
    return p


def _pickled(ctx):
    p = ctx["dir"] / "pickled.lawful"
    torch.save({"weights": torch.zeros(3)}, p)
    return p


def _directory(ctx):
    d = ctx["dir"] / "models"
    d.mkdir()
    (d / "keep.txt").write_text("keep me")
    return d


CASES = [
    # (id, call(ctx), error class, text the message must contain; "{...}" is filled from ctx)
    ("calc-unknown-element", lambda c: _energy(Atoms("Fe2", positions=[[0, 0, 0], [2.4, 0, 0]]),
                                               LawfulCalculator(c["model"])), UnsupportedSpeciesError, "Fe"),
    ("calc-nan-positions", lambda c: _energy(_nan_atoms(), LawfulCalculator(c["model"])), NumericalError, "[3]"),
    ("calc-stress-of-a-molecule", lambda c: (lambda a: (setattr(a, "calc", LawfulCalculator(c["model"])),
                                                        a.get_stress()))(Atoms("Cu2", positions=[[0, 0, 0], [2.4, 0, 0]])),
     PropertyNotImplementedError, "pbc=[False, False, False]"),
    ("calc-dtype-float16", lambda c: LawfulCalculator(c["model"], dtype="float16"), InputError, "float16"),
    ("calc-device-gpu0", lambda c: LawfulCalculator(c["model"], device="gpu0"), InputError, "gpu0"),
    ("calc-negative-skin", lambda c: LawfulCalculator(c["model"], skin=-1.0), InputError, "-1.0"),
    ("calc-skin-text", lambda c: LawfulCalculator(c["model"], skin="abc"), InputError, "'abc'"),
    ("calc-strict-collision", lambda c: _energy(_squeezed(), LawfulCalculator("cu-emt", strict=True)),
     NumericalError, "0.8 Å"),
    ("calc-not-a-model", lambda c: LawfulCalculator({"cutoff": 4.5}), InputError, "'dict'"),
    ("runner-tolerance-above-one", lambda c: ModelRunner(c["model"], [29], domain_tolerance=2.0), InputError, "2.0"),
    ("load-missing-file", lambda c: load_model(c["dir"] / "nope.lawful"), ModelFileError, "nope.lawful"),
    ("load-directory", lambda c: load_model(_directory(c)), ModelFileError, "models"),
    ("load-truncated", lambda c: load_model(_truncated(c)), ModelFileError, "truncated.lawful"),
    ("load-foreign-text", lambda c: load_model(_foreign(c)), ModelFileError, "notes.lawful"),
    ("load-pickle", lambda c: load_model(_pickled(c)), ModelFileError, "pickle"),
    ("load-unknown-shipped-name", lambda c: load_model("cu-emt-v2"), ModelFileError, "cu-emt-v2"),
    ("calc-unknown-shipped-name", lambda c: LawfulCalculator("cu-emt-v2"), ModelFileError, "cu-emt"),
    ("save-into-proc", lambda c: c["model"].save("/proc/x.lawful"), ModelFileError, "/proc/x.lawful"),
    ("save-over-a-directory", lambda c: c["model"].save(_directory(c)), ModelFileError, "models"),
    ("save-into-missing-directory", lambda c: c["model"].save(c["dir"] / "no" / "m.lawful"), ModelFileError,
     "m.lawful"),
    ("save-a-non-model-over-a-file", lambda c: save_model({"w": 1}, c["witness"]), InputError, "'dict'"),
    ("potential-negative-cutoff", lambda c: NeuralPotential(["Cu"], cutoff=-1.0), InputError, "-1.0"),
    ("potential-cutoff-text", lambda c: NeuralPotential(["Cu"], cutoff="4.5 A"), InputError, "'4.5 A'"),
    ("potential-infinite-cutoff", lambda c: NeuralPotential(["Cu"], cutoff=float("inf")), InputError, "inf"),
    ("potential-unknown-element", lambda c: NeuralPotential(["Xx"], cutoff=4.0), InputError, "'Xx'"),
    ("potential-unknown-prior", lambda c: NeuralPotential(["Cu"], repulsion="lj"), InputError, "'lj'"),
    ("potential-switch-reversed", lambda c: NeuralPotential(["Cu"], repulsion="zbl", repulsion_switch=(0.8, 0.5)),
     InputError, "(0.8, 0.5)"),
    ("potential-switch-beyond-cutoff", lambda c: NeuralPotential(["Cu"], cutoff=1.9, repulsion="zbl"),
     InputError, "cutoff 1.9 Å"),
    ("export-direct-model", lambda c: export_torchscript(DirectForceModel(["Cu"], embed=4, force_hidden=(4,), **TINY)),
     InputError, "DirectForceModel"),
    ("neighbors-list-positions", lambda c: neighbor_list([[0.0, 0.0, 0.0]], 2.0), InputError, "list"),
    ("neighbors-zero-cutoff", lambda c: neighbor_list(np.zeros((2, 3)), 0.0), InputError, "0.0"),
    ("neighbors-pbc-without-cell", lambda c: neighbor_list(np.zeros((2, 3)), 2.0, None, True), InputError,
     "pbc=[True, True, True]"),
    ("neighbors-degenerate-cell", lambda c: neighbor_list(np.zeros((2, 3)), 2.0, np.ones((3, 3)), True),
     InputError, "[1.0, 1.0, 1.0]"),
]


@pytest.fixture
def ctx(tmp_path):
    """A tiny model and what a user had written before the failing call: a model file and an
    extxyz trajectory."""
    model = NeuralPotential(["Cu"], **TINY)
    witness = tmp_path / "written.lawful"
    model.save(witness)
    traj = tmp_path / "traj.extxyz"
    atoms = _copper()
    atoms.calc = LawfulCalculator(model)
    atoms.get_potential_energy()
    write(traj, atoms)
    return {"dir": tmp_path, "model": model, "witness": witness, "traj": traj}


def _snapshot(root: Path) -> dict:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_the_table_is_large_enough():
    assert len(CASES) >= 15 and len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input(case, ctx):
    name, call, error, needle = case
    if name == "save-into-proc" and not Path("/proc").is_dir():
        pytest.skip("no /proc on this platform")
    before = _snapshot(ctx["dir"])
    with pytest.raises(error) as err:
        call(ctx)
    assert needle in str(err.value), str(err.value)
    if error is not PropertyNotImplementedError:
        assert isinstance(err.value, LawfulError)
    after = _snapshot(ctx["dir"])
    lost = {k for k in before if after.get(k) != before[k]}
    assert not lost, f"{name} changed what was written before: {lost}"
    leftovers = [k for k in after if k not in before and k.endswith(".tmp")]
    assert not leftovers, f"{name} left temporary files: {leftovers}"
    assert load_model(ctx["witness"]).config == ctx["model"].config

"""OpenMM needs a reduced lower-triangular box; ASE's default primitive fcc cell (``bulk("Cu",
"fcc")``), a skewed cell, a rotated triclinic cell and a left-handed cell are none (audit F14:
a raw ``ValueError`` from OpenMM, exit 1). :func:`openmm_frame` rotates and lattice-reduces them:
the System's energy is the atoms' energy in ASE to 1e-9, and OpenMM's forces, mapped back with
``to_user``, are ASE's forces in the user's frame; a cell already in OpenMM's form passes
unchanged (no rotation, positions bit for bit)."""

from __future__ import annotations

import csv

import numpy as np
import openmm
import pytest
from ase.build import bulk
from openmm import unit as u

from lawful.integrations import units
from lawful.integrations.ase import LawfulCalculator
from lawful.integrations.md import run_md
from lawful.integrations.openmm import openmm_frame, system_from_atoms, topology_from_atoms

from test_openmm_pairmodel import MorsePairModel


def _rotation(angles) -> np.ndarray:
    out = np.eye(3)
    for axis, t in enumerate(angles):
        c, s = np.cos(t), np.sin(t)
        r = np.eye(3)
        i, j = [k for k in range(3) if k != axis]
        r[i, i] = r[j, j] = c
        r[i, j], r[j, i] = -s, s
        out = r @ out
    return out


def _cell(kind: str):
    """(atoms, rotated, reduced): OpenMM's frame is a rotation / another basis of the lattice."""
    if kind == "cubic":
        atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)
    elif kind == "primitive fcc":                   # ASE's default: a = (0, a/2, a/2), ...
        atoms = bulk("Cu", "fcc", a=3.61).repeat(3)
    elif kind == "skewed lower-triangular":         # the audit's cu_skew: b = (6.0, 7.22, 0)
        atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)
        atoms.set_cell([[7.22, 0, 0], [6.0, 7.22, 0], [0, 0, 7.22]], scale_atoms=False)
        atoms.wrap()
    elif kind == "rotated triclinic":
        atoms = bulk("Cu", "fcc", a=3.61).repeat(3)
        rot = _rotation([0.3, -0.7, 1.1])
        atoms.set_cell(atoms.cell.array @ rot.T, scale_atoms=False)
        atoms.positions = atoms.positions @ rot.T
    elif kind == "left-handed":
        atoms = bulk("Cu", "fcc", a=3.61).repeat(3)
        atoms.set_cell(atoms.cell.array[[1, 0, 2]], scale_atoms=False)
    atoms.rattle(0.05, seed=4)
    return atoms


CELLS = [  # kind, rotated, reduced
    ("cubic", False, False),
    ("primitive fcc", True, None),
    ("skewed lower-triangular", False, True),
    ("rotated triclinic", True, None),
    ("left-handed", True, None),
]


def _openmm_energy_forces(atoms, model):
    system, _, positions = system_from_atoms(atoms, model, backend="python")
    ctx = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    ctx.setPositions(positions)
    state = ctx.getState(getEnergy=True, getForces=True)
    e = state.getPotentialEnergy().value_in_unit(u.kilojoule_per_mole) * units.EV_PER_KJMOL
    f = (state.getForces(asNumpy=True).value_in_unit(u.kilojoule_per_mole / u.nanometer)
         * units.EV_PER_KJMOL * units.NM_PER_ANGSTROM)
    return e, f


@pytest.mark.parametrize("model_name", ["cu-emt", "morse"])
@pytest.mark.parametrize("kind, rotated, reduced", CELLS)
def test_openmm_energy_and_user_frame_forces_equal_ase(kind, rotated, reduced, model_name):
    from lawful.forcefields import load_model

    atoms = _cell(kind)
    model = load_model("cu-emt") if model_name == "cu-emt" else MorsePairModel()
    frame = openmm_frame(atoms)
    assert frame.rotated is rotated
    if reduced is not None:
        assert frame.reduced is reduced
    ref = atoms.copy()
    ref.calc = LawfulCalculator(model)
    e_ase, f_ase = ref.get_potential_energy(), ref.get_forces()
    e_omm, f_omm = _openmm_energy_forces(atoms, model)
    assert e_omm == pytest.approx(e_ase, rel=1e-9, abs=1e-9)
    np.testing.assert_allclose(frame.to_user(f_omm), f_ase, atol=1e-9)
    if rotated:   # negative control: OpenMM's raw forces are in another frame
        assert np.abs(f_omm - f_ase).max() > 0.05
    # the box is OpenMM's reduced form of the same lattice (same volume, right-handed)
    assert np.linalg.det(frame.box) == pytest.approx(abs(np.linalg.det(atoms.cell.array)), rel=1e-12)


def test_a_reduced_cell_passes_unchanged():
    atoms = _cell("cubic")
    frame = openmm_frame(atoms)
    assert not frame.rotated and not frame.reduced and np.array_equal(frame.box, atoms.cell.array)
    _, positions = topology_from_atoms(atoms)
    assert np.array_equal(positions.value_in_unit(u.nanometer), atoms.positions * units.NM_PER_ANGSTROM)


def test_run_md_openmm_with_emt_on_the_primitive_fcc_cell(tmp_path):
    """The audit's reproducer: run_md(bulk("Cu", "fcc").repeat(...), engine="openmm") ran into
    OpenMM's ValueError; now its first sample's potential energy is ASE's EMT energy and md.json
    records the frame."""
    import json

    from ase.calculators.emt import EMT

    atoms = bulk("Cu", "fcc", a=3.61).repeat(3)
    atoms.rattle(0.03, seed=5)
    res = run_md(atoms, "emt", "openmm", timestep_fs=1.0, steps=10, report_interval=5, out=tmp_path, seed=3)
    rows = list(csv.DictReader(open(tmp_path / "drift.csv")))
    ref = atoms.copy()
    ref.calc = EMT()
    # openmm-ml's "ase" potential converts eV -> kJ/mol with its own constant (~1e-8 relative)
    assert float(rows[0]["potential_eV"]) == pytest.approx(ref.get_potential_energy(), rel=1e-7)
    assert res.summary.n_samples == 3
    frame = json.loads((tmp_path / "md.json").read_text())["settings"]["openmm_frame"]
    assert frame["rotated"] is True
    np.testing.assert_allclose(np.array(frame["rotation"]), openmm_frame(atoms).rotation, atol=0)

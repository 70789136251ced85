"""run_md in both engines: the drift figure it reports is the one its own recorded energies give,
and the OpenMM run leaves a DCD with a PDB topology beside it that trajectory readers open
(atom count, box, frame count)."""

from __future__ import annotations

import csv
import json
import re
import struct

import numpy as np
import pytest

from lawful.integrations.md import run_md

from test_openmm_pairmodel import MorsePairModel, rattled_copper


def _dcd_frames_and_atoms(path) -> tuple[int, int]:
    """NSET (frames) and NATOM from a CHARMM/NAMD DCD header (what VMD/MDTraj/MDAnalysis read)."""
    raw = path.read_bytes()
    assert struct.unpack("<i", raw[:4])[0] == 84 and raw[4:8] == b"CORD"
    n_frames = struct.unpack("<i", raw[8:12])[0]
    title_len = struct.unpack("<i", raw[92:96])[0]  # after the 84-byte first record and its markers
    off = 96 + title_len + 4
    assert struct.unpack("<i", raw[off:off + 4])[0] == 4
    n_atoms = struct.unpack("<i", raw[off + 4:off + 8])[0]
    return n_frames, n_atoms


def _pdb_atoms_and_box(path):
    lines = path.read_text().splitlines()
    atoms = [ln for ln in lines if ln.startswith(("ATOM", "HETATM"))]
    cryst = [ln for ln in lines if ln.startswith("CRYST1")]
    box = [float(cryst[0][6:15]), float(cryst[0][15:24]), float(cryst[0][24:33])] if cryst else None
    return atoms, box


@pytest.mark.parametrize("engine", ["ase", "openmm"])
def test_reported_drift_is_the_fit_of_the_recorded_energies(engine, tmp_path):
    """The drift in md.json equals an independent least-squares fit of drift.csv's total energy
    against time (per atom, meV/ps), and the run's energy is conserved to the NVE standard."""
    atoms = rattled_copper(seed=31, amp=0.03)
    res = run_md(atoms, MorsePairModel(), engine, timestep_fs=2.0, steps=200, report_interval=5, seed=1,
                 out=tmp_path)
    rows = list(csv.DictReader((tmp_path / "drift.csv").open()))
    assert len(rows) == 41  # t = 0 and every 5 steps
    t = np.array([float(r["time_ps"]) for r in rows])
    e = np.array([float(r["total_eV"]) for r in rows])
    assert np.allclose(e, [float(r["potential_eV"]) + float(r["kinetic_eV"]) for r in rows], rtol=0, atol=1e-12)
    slope = np.polyfit(t, e, 1)[0] * 1e3 / len(atoms)
    assert res.summary.drift_mev_per_atom_per_ps == pytest.approx(slope, rel=1e-6, abs=1e-9)
    stored = json.loads((tmp_path / "md.json").read_text())["drift"]
    assert stored["drift_mev_per_atom_per_ps"] == res.summary.drift_mev_per_atom_per_ps
    k = np.array([float(r["kinetic_eV"]) for r in rows])
    assert res.summary.sigma_kinetic_mev_per_atom == pytest.approx(np.std(k, ddof=1) * 1e3 / len(atoms), rel=1e-9)
    # NVE with a smooth pair potential at 2 fs: the total energy wanders far less than K exchanges
    assert np.ptp(e) < 0.05 * np.ptp(k)
    temperatures = np.array([float(r["temperature_K"]) for r in rows])
    assert 150.0 < temperatures[0] < 450.0  # started from a 300 K Maxwell-Boltzmann draw


def test_openmm_run_writes_a_pdb_topology_beside_the_dcd(tmp_path):
    atoms = rattled_copper(seed=32, amp=0.03)
    res = run_md(atoms, MorsePairModel(), "openmm", timestep_fs=1.0, steps=60, report_interval=10, out=tmp_path)
    assert res.files["topology"] == tmp_path / "topology.pdb"
    pdb_atoms, box = _pdb_atoms_and_box(tmp_path / "topology.pdb")
    assert len(pdb_atoms) == len(atoms) == 32
    assert all(ln[76:78].strip() == "Cu" for ln in pdb_atoms)  # element column: readers need no guessing
    assert box == pytest.approx(list(atoms.cell.lengths()), abs=1e-3)  # Å, as CRYST1 stores it
    n_frames, n_atoms = _dcd_frames_and_atoms(tmp_path / "trajectory.dcd")
    assert (n_frames, n_atoms) == (6, 32)  # one frame every 10 steps of 60
    assert json.loads((tmp_path / "md.json").read_text())["files"]["topology"].endswith("topology.pdb")


def test_molecule_pdb_has_no_box(tmp_path):
    from ase.build import molecule

    mol = molecule("CH3CH2OH")
    model = MorsePairModel(species=["H", "C", "O"], r0=1.3, rcut1=2.5, rcut2=3.2, epsilon=0.2)
    run_md(mol, model, "openmm", timestep_fs=0.25, steps=20, report_interval=10, temperature_K=50.0, out=tmp_path)
    pdb_atoms, box = _pdb_atoms_and_box(tmp_path / "topology.pdb")
    assert len(pdb_atoms) == 9 and box is None
    assert _dcd_frames_and_atoms(tmp_path / "trajectory.dcd") == (2, 9)


class _FailsAtCall(MorsePairModel):
    """The Morse pair model, returning a NaN energy from its ``fail_at``-th evaluation on."""

    def __init__(self, fail_at):
        super().__init__()
        self.fail_at, self.calls = fail_at, 0

    def evaluate(self, *args, **kwargs):
        out = super().evaluate(*args, **kwargs)
        self.calls += 1
        if self.calls >= self.fail_at:
            out = dict(out, energy=out["energy"] * float("nan"))
        return out


def test_openmm_run_that_blows_up_keeps_what_it_wrote(tmp_path):
    """A model failing mid-run (at its 42nd evaluation) raises NumericalError naming OpenMM's
    step and saying that nothing moved violently; drift.csv keeps every row reported before
    (flushed), the PDB and the DCD frames so far stay readable, no md.json claims a finished run."""
    from lawful.kernels.errors import NumericalError

    atoms = rattled_copper(seed=33, amp=0.03)
    model = _FailsAtCall(fail_at=42)  # evaluation 1 is the t = 0 record, then one per step
    with pytest.raises(NumericalError, match=r"the model failed at OpenMM step \d+") as err:
        run_md(atoms, model, "openmm", timestep_fs=1.0, steps=100, report_interval=10, out=tmp_path)
    failed_at = int(re.search(r"OpenMM step (\d+)", str(err.value)).group(1))
    assert 30 <= failed_at <= 41 and "Nothing moved violently" in str(err.value)
    rows = list(csv.DictReader((tmp_path / "drift.csv").open()))
    assert [int(r["step"]) for r in rows] == list(range(0, failed_at, 10))
    assert len(_pdb_atoms_and_box(tmp_path / "topology.pdb")[0]) == 32
    n_frames, n_atoms = _dcd_frames_and_atoms(tmp_path / "trajectory.dcd")
    assert n_atoms == 32 and n_frames == len(rows) - 1  # frames at steps 10, 20, ... (none at 0)
    doc = json.loads((tmp_path / "md.json").read_text())     # says the run failed, and how; no summary
    assert doc["status"].startswith("failed (NumericalError: the model failed at OpenMM step") and "drift" not in doc


def test_fixed_atoms_stay_fixed_in_openmm_and_count_as_in_ase(tmp_path):
    """ASE FixAtoms: in OpenMM the fixed atoms become massless (OpenMM's fixed particles), so they
    do not move and both engines' drift.csv count the same degrees of freedom. The OpenMM run used to drop the constraint: fixed atoms moved 0.2 Å in 200 fs and
    its temperature was half of ASE's. A constraint OpenMM cannot apply is refused before anything
    runs or is written."""
    import openmm
    from ase.constraints import FixAtoms, FixBondLength
    from openmm import unit as u

    from lawful.integrations.openmm import system_from_atoms
    from lawful.kernels.errors import InputError

    atoms = rattled_copper(seed=5, amp=0.03)
    fixed = list(range(0, len(atoms), 2))
    atoms.set_constraint(FixAtoms(indices=fixed))
    system, _, positions = system_from_atoms(atoms, MorsePairModel(), backend="python")
    assert [system.getParticleMass(i).value_in_unit(u.dalton) for i in fixed] == [0.0] * len(fixed)
    ctx = openmm.Context(system, openmm.VerletIntegrator(0.002), openmm.Platform.getPlatformByName("Reference"))
    ctx.setPositions(positions)
    ctx.setVelocitiesToTemperature(300.0, 3)
    ctx.getIntegrator().step(100)
    moved = ctx.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(u.angstrom) - atoms.positions
    free = [i for i in range(len(atoms)) if i not in fixed]
    assert np.abs(moved[fixed]).max() < 1e-12 and np.abs(moved[free]).max() > 0.01   # nm <-> Å rounding only
    per_kelvin = {}       # kinetic energy per kelvin = dof k_B / 2: the degrees of freedom each engine counts
    for engine in ("ase", "openmm"):
        run_md(atoms, MorsePairModel(), engine, timestep_fs=2.0, steps=20, report_interval=10, seed=2,
               out=tmp_path / engine)
        row = next(csv.DictReader((tmp_path / engine / "drift.csv").open()))
        per_kelvin[engine] = float(row["kinetic_eV"]) / float(row["temperature_K"])
    assert per_kelvin["openmm"] == pytest.approx(per_kelvin["ase"], rel=1e-6)   # was twice ASE's
    bad = atoms.copy()
    bad.set_constraint(FixBondLength(0, 1))
    with pytest.raises(InputError, match="cannot apply the ASE constraint FixBondLength"):
        run_md(bad, MorsePairModel(), "openmm", steps=20, out=tmp_path / "bad")
    assert not (tmp_path / "bad" / "drift.csv").exists()


def test_md_json_records_the_settings_of_the_run(tmp_path):
    """md.json names what made the run: temperature, seed, report interval, platform, strict,
    precision (EMT: its own float64 on the CPU, whatever --dtype said). Two runs that differed
    only in these used to give identical md.json files."""
    import json as _json

    atoms = rattled_copper(seed=3, amp=0.02)
    run_md(atoms, "emt", "openmm", timestep_fs=2.0, steps=20, report_interval=10, seed=7, temperature_K=450.0,
           out=tmp_path, dtype="float32")
    s = _json.loads((tmp_path / "md.json").read_text())["settings"]
    assert s["temperature_K"] == 450.0 and s["seed"] == 7 and s["report_interval"] == 10
    assert s["platform"] == "Reference" and s["strict"] is False and s["friction_per_ps"] is None
    assert s["dtype"] == "float64 (EMT)" and s["device"] == "cpu (EMT)"
    assert s["model_validation"] is None           # EMT is the reference, not a fitted model


@pytest.mark.parametrize("model_dtype, asked, recorded", [
    ("float32", None, "float32"), ("float64", None, "float64"), ("float32", "float64", "float64"),
    ("float64", "float32", "float32")])
def test_md_json_records_the_dtype_the_model_ran_in(tmp_path, model_dtype, asked, recorded):
    """run_md(dtype=None) keeps the model's own precision; md.json said null for it (a float32
    model's run looked like an unknown precision) instead of the dtype the model ran in."""
    import json as _json

    import torch

    model = MorsePairModel(dtype=getattr(torch, model_dtype))
    res = run_md(rattled_copper(seed=3, amp=0.02), model, "ase", timestep_fs=2.0, steps=4, report_interval=2,
                 out=tmp_path, dtype=asked)
    s = _json.loads((tmp_path / "md.json").read_text())["settings"]
    assert s["dtype"] == recorded and res.settings["dtype"] == recorded and s["device"] == "cpu"
    assert model.dtype == getattr(torch, model_dtype)            # the caller's model is not changed
    potential = float(next(csv.DictReader((tmp_path / "drift.csv").open()))["potential_eV"])
    assert (potential == float(np.float32(potential))) == (recorded == "float32")   # computed in that dtype


def test_a_thermostatted_run_does_not_call_its_energy_slope_drift(tmp_path, capsys):
    """Under Langevin the total energy exchanges heat with the bath: ``lawful md --ensemble nvt``
    and md.json say so instead of printing a "drift" beside NVE figures."""
    import json as _json

    from lawful.integrations.cli import main

    assert main(["md", "--model", "emt", "--ensemble", "nvt", "--repeat", "1", "--steps", "20",
                 "--report-interval", "10", "--out", str(tmp_path / "nvt")]) == 0
    line = [x for x in capsys.readouterr().out.splitlines() if x.startswith("ase nvt")][0]
    assert "total-energy slope" in line and "heat exchanged with the bath" in line and "; drift " not in line
    assert "heat exchanged" in _json.loads((tmp_path / "nvt" / "md.json").read_text())["drift"]["meaning"]
    assert main(["md", "--model", "emt", "--repeat", "1", "--steps", "20", "--report-interval", "10",
                 "--out", str(tmp_path / "nve")]) == 0
    assert "; drift " in capsys.readouterr().out
    assert "meaning" not in _json.loads((tmp_path / "nve" / "md.json").read_text())["drift"]


def _dcd_positions(path) -> np.ndarray:
    """Every frame's positions (frames, atoms, 3), Å, from a DCD (Fortran records; unit cell
    record before each frame when the header's flag says so)."""
    raw, off = path.read_bytes(), 0

    def record():
        nonlocal off
        n = struct.unpack("<i", raw[off:off + 4])[0]
        data = raw[off + 4:off + 4 + n]
        off += n + 8
        return data

    header = record()
    has_cell = struct.unpack("<i", header[44:48])[0]
    record()                                   # title
    record()                                   # atom count
    frames = []
    while off < len(raw):
        if has_cell:
            record()
        frames.append(np.stack([np.frombuffer(record(), "<f4") for _ in range(3)], axis=1))
    return np.array(frames, dtype=float)


def test_openmm_trajectory_keeps_a_molecule_across_the_box_face_whole(tmp_path):
    """The OpenMM engine's DCD wrapped each atom on its own (its System's force reports no
    bonds, so every atom was a molecule to OpenMM): an ethanol across the box face showed a 7.9 Å
    C-C "bond". It is now unwrapped, as the ASE engine's trajectory."""
    from ase.build import molecule

    mol = molecule("CH3CH2OH")
    mol.set_cell([12.0, 12.0, 12.0])
    mol.pbc = True
    mol.positions += [0.3, 6.0, 6.0]           # the C-C-O axis across x = 0
    bonded = [(i, j) for i in range(len(mol)) for j in range(i) if mol.get_distance(i, j) < 1.6]
    res = run_md(mol, "organic-xtb", "openmm", timestep_fs=0.5, steps=20, report_interval=10, temperature_K=100.0,
                 out=tmp_path)
    frames = _dcd_positions(res.files["trajectory"])
    assert frames.shape == (2, 9, 3)
    longest = max(np.linalg.norm(f[i] - f[j]) for f in frames for i, j in bonded)
    assert longest < 1.7                       # Å: every bond whole in every frame


class _StopsAfter:
    """MorsePairModel that raises ``exc`` at its ``n``-th evaluation (a Ctrl-C or SIGTERM landing
    in the force call, where an MD run spends its time)."""

    def __init__(self, n, exc=KeyboardInterrupt):
        self.inner, self.n, self.exc, self.calls = MorsePairModel(), n, exc, 0
        self.species, self.cutoff, self.dtype, self.device = (self.inner.species, self.inner.cutoff,
                                                              self.inner.dtype, self.inner.device)
        self.kind = "StopsAfter"

    def evaluate(self, *args, **kwargs):
        self.calls += 1
        if self.calls == self.n:
            raise self.exc()
        return self.inner.evaluate(*args, **kwargs)


@pytest.mark.parametrize("engine", ["ase", "openmm"])
def test_an_interrupted_rerun_never_leaves_the_earlier_runs_md_json(tmp_path, engine):
    """md.json was written only at the end: a run interrupted after a complete one left the first
    run's md.json (its drift, its settings) beside the second run's partial drift.csv. The other
    engine's trajectory files of an earlier run went unremoved too. And in OpenMM a Ctrl-C inside
    the force callback came out as an OpenMMException (exit 1, a traceback)."""
    atoms = rattled_copper(seed=3, amp=0.02)
    other = "ase" if engine == "openmm" else "openmm"
    run_md(atoms, MorsePairModel(), other, timestep_fs=1.0, steps=20, report_interval=10, out=tmp_path)
    assert json.loads((tmp_path / "md.json").read_text())["status"] == "complete"
    with pytest.raises(KeyboardInterrupt):
        run_md(atoms, _StopsAfter(8), engine, timestep_fs=1.0, steps=40, report_interval=2, seed=5, out=tmp_path)
    doc = json.loads((tmp_path / "md.json").read_text())
    assert doc["status"] == "interrupted" and doc["engine"] == engine and doc["settings"]["seed"] == 5
    assert "drift" not in doc
    stale = {"ase": ["trajectory.dcd", "topology.pdb"], "openmm": ["trajectory.traj"]}[engine]
    assert not any((tmp_path / name).exists() for name in stale)


def test_an_interrupt_inside_a_trajectory_frame_waits_for_the_frame(tmp_path, monkeypatch):
    """A SIGTERM landing in the trajectory frame's write (numpy's tofile) ended `lawful md` with a
    TypeError, exit 1, and a torn frame (CI). The signal now waits until the frame is written: the
    run stops with the interrupt and every frame on disk reads back."""
    import os
    import signal

    from ase.io import read
    from ase.io import ulm

    atoms = rattled_copper(seed=3, amp=0.02)
    real_fill, calls = ulm.Writer.fill, []

    def fill(self, a):
        calls.append(1)
        if len(calls) == 7:                       # inside the second frame's arrays
            os.kill(os.getpid(), signal.SIGINT)   # its handler runs at the next bytecode, here
        return real_fill(self, a)

    monkeypatch.setattr(ulm.Writer, "fill", fill)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            run_md(atoms, MorsePairModel(), "ase", timestep_fs=1.0, steps=100, report_interval=5, out=tmp_path)
    finally:
        signal.signal(signal.SIGINT, previous)
    frames = read(tmp_path / "trajectory.traj", index=":")
    assert len(frames) >= 2 and all(len(f) == len(atoms) for f in frames)
    assert json.loads((tmp_path / "md.json").read_text())["status"] == "interrupted"


@pytest.mark.parametrize("engine", ["ase", "openmm"])
def test_a_blown_up_run_stops_as_failed_not_complete(tmp_path, engine):
    """EMT has no domain check: at a 50 fs step copper's total energy rises by 1e5 eV/atom within
    ten steps, and the run used to end "complete" with a drift of 6e8 meV/atom/ps. The drift
    monitor now stops it (more than BLOWUP_EV_PER_ATOM from the first sample): md.json says
    failed, and the sample that stopped it is the last row of drift.csv."""
    from lawful.integrations.monitors import BLOWUP_EV_PER_ATOM
    from lawful.kernels.errors import NumericalError

    atoms = rattled_copper(seed=3, amp=0.02)
    with pytest.raises(NumericalError, match="blown up; reduce the time step"):
        run_md(atoms, "emt", engine, timestep_fs=50.0, steps=200, report_interval=5, out=tmp_path)
    doc = json.loads((tmp_path / "md.json").read_text())
    assert doc["status"].startswith("failed (NumericalError: the total energy rose by") and "drift" not in doc
    rows = list(csv.DictReader((tmp_path / "drift.csv").open()))
    moved = (float(rows[-1]["total_eV"]) - float(rows[0]["total_eV"])) / len(atoms)
    assert moved > BLOWUP_EV_PER_ATOM and all(
        abs(float(r["total_eV"]) - float(rows[0]["total_eV"])) / len(atoms) <= BLOWUP_EV_PER_ATOM for r in rows[:-1])
    # the same atoms at a sane step complete, with a drift far inside the limit
    res = run_md(atoms, "emt", engine, timestep_fs=2.0, steps=40, report_interval=5, out=tmp_path)
    assert json.loads((tmp_path / "md.json").read_text())["status"] == "complete"
    assert res.summary.max_abs_deviation_mev_per_atom < 1e-3 * 1e3 * BLOWUP_EV_PER_ATOM

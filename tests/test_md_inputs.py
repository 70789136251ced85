"""What run_md starts from and what its drift figure is worth (audit F3, F8, F9).

F3: a time step typed in ps (0.002 "fs") or a structure at rest at its minimum (0 K) moves
nothing, and the "perfect" drift it reports means nothing: a UserWarning, md.json's ``verdict``,
the simulated duration in ``lawful md``'s summary. F8: velocities a structure carries (a frame of
an earlier trajectory) are kept unless ``velocities="draw"`` asks for new ones; md.json says which.
F9: ASE's Langevin runs without its ``fixcm=True`` FutureWarning, the centre of mass held by FixCom.
"""

from __future__ import annotations

import csv
import json
import warnings

import numpy as np
import pytest
from ase.build import bulk
from ase.md import velocitydistribution as vd

from lawful.integrations.md import MIN_PLAUSIBLE_TIMESTEP_FS, STILL_ANGSTROM, run_md
from lawful.kernels.errors import InputError

from test_openmm_pairmodel import MorsePairModel, rattled_copper


def _first_row(folder) -> dict:
    return {k: float(v) for k, v in next(csv.DictReader(open(folder / "drift.csv"))).items()}


def _md_warnings(record) -> list[str]:
    return [str(w.message) for w in record if issubclass(w.category, UserWarning)
            and ("did you mean ps" in str(w.message) or "nothing moved" in str(w.message))]


# structure, timestep_fs, steps, temperature_K, engine, verdict prefix, warnings expected (substrings)
PLAUSIBILITY = [
    ("rattled", 0.002, 20, 300.0, "ase", "meaningless", ["did you mean ps", "nothing moved"]),  # 0.04 fs
    ("rattled", 0.002, 20, 300.0, "openmm", "meaningless", ["did you mean ps", "nothing moved"]),
    ("rattled", 0.02, 100, 300.0, "ase", "suspect", ["did you mean ps"]),   # moved, but a step in ps?
    ("perfect", 2.0, 20, 0.0, "ase", "meaningless", ["nothing moved"]),      # at rest at its minimum
    ("perfect", 2.0, 20, 0.0, "openmm", "meaningless", ["nothing moved"]),
    ("rattled", 2.0, 20, 300.0, "ase", "ok", []),
    ("rattled", 2.0, 20, 300.0, "openmm", "ok", []),
    ("rattled", MIN_PLAUSIBLE_TIMESTEP_FS, 100, 300.0, "ase", "ok", []),
]


@pytest.mark.parametrize("structure, dt, steps, temperature, engine, verdict, expected", PLAUSIBILITY)
def test_a_run_that_moves_nothing_says_its_drift_means_nothing(tmp_path, structure, dt, steps, temperature, engine,
                                                                verdict, expected):
    atoms = (rattled_copper(seed=1) if structure == "rattled"
             else bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2))   # at its minimum by symmetry
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        res = run_md(atoms, MorsePairModel(), engine, timestep_fs=dt, steps=steps, report_interval=10,
                     temperature_K=temperature, out=tmp_path, seed=2)
    got = _md_warnings(record)
    assert len(got) == len(expected) and all(any(e in g for g in got) for e in expected), got
    doc = json.loads((tmp_path / "md.json").read_text())
    assert doc["verdict"].split(":")[0] == verdict == res.verdict.split(":")[0]
    assert doc["duration_ps"] == pytest.approx(steps * dt / 1000.0, rel=1e-12)
    assert doc["max_displacement_angstrom"] == pytest.approx(res.max_displacement_angstrom, rel=1e-12)
    if structure == "perfect":
        assert res.max_displacement_angstrom < 1e-9
    elif verdict == "meaningless":
        assert res.max_displacement_angstrom < STILL_ANGSTROM
    else:
        assert res.max_displacement_angstrom > STILL_ANGSTROM


def test_lawful_md_prints_the_simulated_duration_and_the_verdict(tmp_path, capsys):
    from lawful.integrations.cli import main

    with pytest.warns(UserWarning, match=r"did you mean ps\? --dt and timestep_fs are in fs"), \
            pytest.warns(UserWarning, match="nothing moved in this MD run"):
        assert main(["md", "--model", "emt", "--repeat", "1", "--steps", "20", "--dt", "0.002",
                     "--report-interval", "10", "--out", str(tmp_path / "ps")]) == 0
    out = capsys.readouterr().out
    assert "20 steps of 0.002 fs (4e-05 ps simulated)" in out
    assert "verdict: meaningless: no atom moved more than" in out


def _with_velocities(temperature_K: float, seed: int = 9):
    atoms = rattled_copper(seed=3)
    rng = np.random.default_rng(seed)
    if hasattr(vd, "thermalize_momenta"):  # ASE >= 3.29
        vd.thermalize_momenta(atoms, temperature_K, rng=rng)
    else:
        vd.MaxwellBoltzmannDistribution(atoms, temperature_K=temperature_K, rng=rng)
    vd.Stationary(atoms)
    return atoms


# carries velocities (K or None), asked, engine, expected first-sample temperature ("carried", "drawn", 0)
VELOCITIES = [
    (140.0, "auto", "ase", "carried"),
    (140.0, "auto", "openmm", "carried"),
    (140.0, "keep", "ase", "carried"),
    (140.0, "draw", "ase", "drawn"),
    (None, "auto", "ase", "drawn"),
    (None, "draw", "openmm", "drawn"),
    (None, "keep", "ase", 0.0),
]


@pytest.mark.parametrize("carried_K, asked, engine, expected", VELOCITIES)
def test_velocities_the_structure_carries_are_kept_unless_draw_is_asked(tmp_path, carried_K, asked, engine,
                                                                          expected):
    atoms = _with_velocities(carried_K) if carried_K else rattled_copper(seed=3)
    res = run_md(atoms, MorsePairModel(), engine, timestep_fs=1.0, steps=10, report_interval=10,
                 temperature_K=600.0, out=tmp_path / "run", seed=4, velocities=asked)
    t0 = _first_row(tmp_path / "run")["temperature_K"]
    v = json.loads((tmp_path / "run" / "md.json").read_text())["settings"]["velocities"]
    assert v == res.settings["velocities"] and v["asked"] == asked
    if expected == "carried":
        assert v["source"] == "input structure"
        assert v["initial_temperature_K"] == pytest.approx(atoms.get_temperature(), rel=1e-12)
        # OpenMM's leapfrog reports the kinetic energy of t = 0 from half steps: a few % off
        assert t0 == pytest.approx(atoms.get_temperature(), rel=1e-6 if engine == "ase" else 0.05)  # CSV: 8 digits
        assert abs(t0 - 600.0) > 300.0
    elif expected == "drawn":
        fresh = run_md(rattled_copper(seed=3), MorsePairModel(), engine, timestep_fs=1.0, steps=10,
                       report_interval=10, temperature_K=600.0, out=tmp_path / "fresh", seed=4, velocities="draw")
        assert v["source"].startswith("drawn: Maxwell-Boltzmann at 600 K, seed 4")
        assert ("replaced" in v["source"]) is bool(carried_K)
        assert t0 == pytest.approx(_first_row(tmp_path / "fresh")["temperature_K"], rel=1e-12)
        assert v["initial_temperature_K"] == pytest.approx(fresh.settings["velocities"]["initial_temperature_K"])
    else:
        assert v["source"].startswith("none") and t0 == 0.0


def test_lawful_md_continues_a_trajectory_with_its_velocities(tmp_path, capsys):
    """The audit's reproducer: a 140 K trajectory continued at --temperature 300 started at 311 K."""
    from ase.io import read

    from lawful.integrations.cli import main

    assert main(["md", "--model", "emt", "--repeat", "1", "--steps", "40", "--report-interval", "10",
                 "--out", str(tmp_path / "md1")]) == 0
    last = read(tmp_path / "md1" / "trajectory.traj")
    capsys.readouterr()
    assert main(["md", "--model", "emt", "--structure", str(tmp_path / "md1" / "trajectory.traj"), "--steps", "20",
                 "--report-interval", "10", "--out", str(tmp_path / "cont")]) == 0
    assert "velocities: kept from --structure" in capsys.readouterr().out
    assert _first_row(tmp_path / "cont")["temperature_K"] == pytest.approx(last.get_temperature(), rel=1e-6)
    assert main(["md", "--model", "emt", "--structure", str(tmp_path / "md1" / "trajectory.traj"), "--steps", "20",
                 "--report-interval", "10", "--velocities", "draw", "--out", str(tmp_path / "draw")]) == 0
    assert abs(_first_row(tmp_path / "draw")["temperature_K"] - last.get_temperature()) > 20.0


def test_an_unknown_velocities_choice_is_refused(tmp_path):
    with pytest.raises(InputError, match="velocities='fresh' is not one of"):
        run_md(rattled_copper(), MorsePairModel(), "ase", steps=10, velocities="fresh")


@pytest.mark.parametrize("fixed", [None, [0, 5]])
def test_ase_nvt_has_no_fixcm_warning_and_keeps_the_centre_of_mass(tmp_path, fixed):
    from ase.constraints import FixAtoms, FixCom
    from ase.io import read

    atoms = rattled_copper(seed=6)
    if fixed:
        atoms.set_constraint(FixAtoms(indices=fixed))
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)   # ASE: "fixcm=True ... does not strictly sample NVT"
        run_md(atoms, MorsePairModel(), "ase", ensemble="nvt", timestep_fs=2.0, steps=40, report_interval=10,
               temperature_K=600.0, friction_per_ps=5.0, out=tmp_path, seed=1)
    frames = read(tmp_path / "trajectory.traj", index=":")
    assert len(frames) == 5
    for frame in frames:   # the frames carry the user's constraints only
        assert [type(c) for c in frame.constraints] == ([FixAtoms] if fixed else [])
        assert not any(isinstance(c, FixCom) for c in frame.constraints)
    moved = np.abs(frames[-1].positions - atoms.positions).max()
    assert moved > 0.02   # the atoms did move
    if fixed:
        np.testing.assert_array_equal(frames[-1].positions[fixed], atoms.positions[fixed])
    else:
        com0 = atoms.get_center_of_mass()
        for frame in frames:
            np.testing.assert_allclose(frame.get_center_of_mass(), com0, atol=1e-10)


ENSEMBLE_TEMPERATURES = [   # engine, ensemble, fixed atoms, degrees of freedom the run counts
    ("ase", "nvt", None, "3N-3"),      # FixCom holds the centre of mass
    ("ase", "nvt", [0, 5], "3N-6"),    # FixAtoms, no FixCom
    ("ase", "nve", None, "3N"),
    ("openmm", "nve", None, "3N"),
]


@pytest.mark.parametrize("engine, ensemble, fixed, dof", ENSEMBLE_TEMPERATURES)
def test_md_json_initial_temperature_counts_the_runs_degrees_of_freedom(tmp_path, engine, ensemble, fixed, dof):
    """md.json's initial temperature is drift.csv's first row: ASE's NVT adds FixCom, and the
    temperature of the drawn velocities counted over 3N was 3 % below the first row's for 32 atoms."""
    from ase.constraints import FixAtoms

    atoms = rattled_copper(seed=6)
    if fixed:
        atoms.set_constraint(FixAtoms(indices=fixed))
    res = run_md(atoms, MorsePairModel(), engine, ensemble=ensemble, timestep_fs=1.0, steps=2, report_interval=1,
                 temperature_K=600.0, out=tmp_path, seed=1)
    recorded = json.loads((tmp_path / "md.json").read_text())["settings"]["velocities"]["initial_temperature_K"]
    assert recorded == res.settings["velocities"]["initial_temperature_K"]
    # drift.csv: 8 digits, CODATA 2018's k_B against ASE's 2014 (3.4e-7)
    assert _first_row(tmp_path)["temperature_K"] == pytest.approx(recorded, rel=1e-6)
    n = len(atoms)
    counted = {"3N": 3 * n, "3N-3": 3 * n - 3, "3N-6": 3 * n - 6}[dof]
    kinetic = float(_first_row(tmp_path)["kinetic_eV"])
    from ase.units import kB
    assert recorded == pytest.approx(2 * kinetic / (counted * kB), rel=1e-6)


def _water(deuterated=False):
    from ase.build import molecule

    w = molecule("H2O")
    if deuterated:
        w.set_masses([15.999, 2.014, 2.014])
    return w


# structure, timestep_fs given, step used, warns about hydrogen
HYDROGEN_STEPS = [
    ("water", None, 0.5, False),       # the default with hydrogen
    ("heavy water", None, 0.5, False),  # D counts as hydrogen (2 u)
    ("water", 1.0, 1.0, False),
    ("water", 2.0, 2.0, True),          # the copper default with hydrogen: 17x the energy error (audit F10)
    ("copper", None, 2.0, False),       # no hydrogen: 2 fs
    ("copper", 5.0, 5.0, False),
]


@pytest.mark.parametrize("structure, dt, used, warns", HYDROGEN_STEPS)
def test_the_time_step_defaults_to_half_a_femtosecond_with_hydrogen(tmp_path, structure, dt, used, warns):
    """lawful md ran molecules at copper's 2 fs by default: ethanol's energy error was 17x that of
    0.5 fs, 3 fs blew up, and nothing said so (first-hour audit F10)."""
    if structure == "copper":
        atoms, model = rattled_copper(seed=1), MorsePairModel()
    else:
        atoms, model = _water(structure == "heavy water"), "organic-xtb"
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        res = run_md(atoms, model, "ase", timestep_fs=dt, steps=10, report_interval=5, out=tmp_path, seed=1)
    said = [str(w.message) for w in record if "with hydrogen atoms" in str(w.message)]
    assert res.timestep_fs == used == json.loads((tmp_path / "md.json").read_text())["timestep_fs"]
    assert len(said) == int(warns)
    if warns:
        assert "use 0.5 fs" in said[0]


def test_lawful_md_uses_half_a_femtosecond_for_a_molecule(tmp_path, capsys):
    from ase.io import write

    from lawful.integrations.cli import main

    write(tmp_path / "water.xyz", _water())
    assert main(["md", "--model", "organic-xtb", "--structure", str(tmp_path / "water.xyz"), "--steps", "10",
                 "--report-interval", "5", "--out", str(tmp_path / "md")]) == 0
    assert "10 steps of 0.5 fs" in capsys.readouterr().out


@pytest.mark.parametrize("engine", ["ase", "openmm"])
def test_a_run_outside_the_training_domain_is_suspect_in_md_json(tmp_path, engine):
    """Compressed copper (a = 3.0 Å) with cu-emt warned once on stderr, in the progress bar's
    line, and md.json said verdict "ok" (report audit 2): the warnings are recorded and the
    verdict says the drift is that of an extrapolating model."""
    from lawful.kernels.errors import OutOfDomainWarning

    atoms = bulk("Cu", "fcc", a=3.0, cubic=True).repeat(2)
    atoms.rattle(0.02, seed=1)
    with pytest.warns(OutOfDomainWarning, match="neighbour density"):
        res = run_md(atoms, "cu-emt", engine, timestep_fs=2.0, steps=20, report_interval=10, out=tmp_path, seed=2)
    doc = json.loads((tmp_path / "md.json").read_text())
    assert doc["verdict"] == res.verdict and res.verdict.startswith("suspect: the model warned 1 time(s)")
    assert len(doc["domain_warnings"]) == 1 and "neighbour density" in doc["domain_warnings"][0]
    # a second run in the same process (Python shows an identical warning from one line once) and a
    # run with the warnings ignored record it too (review: both read "ok" when md.json was fed by
    # what was displayed)
    for action in ("default", "ignore"):
        with warnings.catch_warnings():
            warnings.simplefilter(action)
            again = run_md(atoms, "cu-emt", engine, timestep_fs=2.0, steps=20, report_interval=10, seed=2)
        assert again.verdict.startswith("suspect") and len(again.domain_warnings) == 1, action
    near = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)      # in domain: nothing recorded
    near.rattle(0.02, seed=1)
    res = run_md(near, "cu-emt", engine, timestep_fs=2.0, steps=20, report_interval=10, seed=2)
    assert res.verdict == "ok" and res.domain_warnings == []


@pytest.mark.parametrize("engine", ["ase", "openmm"])
def test_steps_not_a_multiple_of_the_report_interval_are_refused(engine):
    """25 steps sampled every 10: the drift fit and the trajectory ended at step 20 while the
    summary reported 25 (report audit 8)."""
    with pytest.raises(InputError, match=r"steps=25 is not a multiple of report_interval=10.*run 30 \(or 20\)"):
        run_md(rattled_copper(seed=1), MorsePairModel(), engine, timestep_fs=1.0, steps=25, report_interval=10)


def test_the_progress_bar_counts_the_steps_run(capsys):
    """ASE calls observers at step 0 too: the bar read 210 of 200 steps."""
    import tqdm

    seen = []
    real = tqdm.tqdm.update

    def update(self, n=1):
        seen.append(n)
        return real(self, n)

    tqdm.tqdm.update = update
    try:
        run_md(rattled_copper(seed=1), MorsePairModel(), "ase", timestep_fs=1.0, steps=20, report_interval=5,
               progress=True)
    finally:
        tqdm.tqdm.update = real
    assert sum(seen) == 20


@pytest.mark.parametrize("engine, ensemble, dof", [("ase", "nve", 96), ("openmm", "nve", 96), ("ase", "nvt", 93),
                                                   ("openmm", "nvt", 96)])
def test_md_json_names_the_degrees_of_freedom_its_temperatures_count(tmp_path, engine, ensemble, dof):
    """The same drawn velocities read 574.8 K in ASE's NVT (FixCom: 3N - 3) and 556.8 K in
    OpenMM's (3N), with nothing saying so (report audit 5): md.json records the count."""
    res = run_md(rattled_copper(seed=1), MorsePairModel(), engine, ensemble=ensemble, timestep_fs=1.0, steps=10,
                 report_interval=5, temperature_K=300.0, out=tmp_path, seed=3, velocities="draw")
    doc = json.loads((tmp_path / "md.json").read_text())
    assert doc["settings"]["temperature_dof"]["count"] == dof == res.settings["temperature_dof"]["count"]
    row = _first_row(tmp_path)
    from ase.units import kB

    assert row["temperature_K"] == pytest.approx(2 * row["kinetic_eV"] / (dof * kB), rel=1e-6)


@pytest.mark.parametrize("argv, formula, source", [
    (["--element", "Ag", "--lattice", "4.2", "--repeat", "2"], "Ag32", "fcc Ag supercell: --lattice 4.2 Å, --repeat 2"),
    (["--repeat", "1"], "Cu4", "fcc Cu supercell: --lattice 3.61 Å, --repeat 1"),     # ASE's reference lattice
    ("file", "H2O", "--structure "),
])
def test_md_json_records_the_structure_that_ran(tmp_path, argv, formula, source):
    """md.json recorded neither --element, --lattice, --repeat nor the --structure path: two runs
    of different crystals left md.json files that differed only in their numbers (CLI audit)."""
    import json

    from ase.build import molecule

    from lawful.integrations.cli import main

    if argv == "file":
        path = tmp_path / "water.xyz"
        w = molecule("H2O")
        w.write(path)
        argv = ["--structure", str(path), "--dt", "0.25"]
        source += str(path.resolve())
    assert main(["md", "--model", "emt" if formula != "H2O" else "organic-xtb", *argv, "--steps", "10",
                 "--report-interval", "5", "--out", str(tmp_path / "md")]) == 0
    structure = json.loads((tmp_path / "md" / "md.json").read_text())["settings"]["structure"]
    assert structure["formula"] == formula and structure["source"] == source
    assert structure["pbc"] == ([False] * 3 if formula == "H2O" else [True] * 3)

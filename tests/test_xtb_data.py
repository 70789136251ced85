"""GFN2-xTB reference data (issue 14, first part): molecules, labels, cache, split, card, CLI.

Small sizes (water and ethanol, a few frames each): the labels equal a direct tblite call, the
forces are -dE/dR by central differences, a rerun labels nothing, an interrupted run keeps what it
labelled and a rerun completes it with the same numbers, frames of one segment never land in two
sets, and the command line refuses bad molecules and folders before any xTB work.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes
from ase.io import read, write

from lawful.forcefields import molecules, xtb_data
from lawful.forcefields.molecules import MOLECULES, build_molecule
from lawful.kernels.errors import InputError

# Normal covalent bond lengths (Å) by element pair, wide enough for ideal and xTB geometries.
BOND_RANGES = {
    ("C", "H"): (1.05, 1.13), ("H", "N"): (0.98, 1.05), ("H", "O"): (0.93, 1.01), ("C", "C"): (1.48, 1.57),
    ("C", "N"): (1.31, 1.50), ("C", "O"): (1.19, 1.45),
}


def _bonds(atoms: Atoms, mult: float = 1.1):
    """(i, j, element pair, length) of every covalent bond (ASE natural cutoffs x ``mult``)."""
    from ase.neighborlist import natural_cutoffs, neighbor_list

    i, j, d = neighbor_list("ijd", atoms, natural_cutoffs(atoms, mult=mult))
    sym = atoms.get_chemical_symbols()
    return [(a, b, tuple(sorted((sym[a], sym[b]))), float(r)) for a, b, r in zip(i, j, d) if a < b]


def _check_bonds(atoms: Atoms, name: str):
    bonds = _bonds(atoms)
    for a, b, pair, r in bonds:
        lo, hi = BOND_RANGES[pair]
        assert lo <= r <= hi, f"{name}: bond {a}-{b} {pair} is {r:.3f} Å, outside [{lo}, {hi}]"
    return {(a, b) for a, b, _, _ in bonds}


def _dihedral(p, i, j, k, m):
    return Atoms("X4", positions=p[[i, j, k, m]]).get_dihedral(0, 1, 2, 3)


# -- molecules ------------------------------------------------------------------------------------
@pytest.mark.parametrize("name, formula, n_bonds", [
    ("ethanol", "C2H6O", 8), ("alanine-dipeptide", "C6H12N2O2", 21), ("water", "H2O", 2),
    ("water-dimer", "H4O2", 4), ("water-trimer", "H6O3", 6), ("water-hexamer", "H12O6", 12)])
def test_built_molecules_have_the_right_atoms_and_bonds(name, formula, n_bonds):
    atoms = build_molecule(name)
    assert atoms.get_chemical_formula(mode="hill") == formula
    assert not atoms.pbc.any() and atoms.info["molecule"] == name
    bonds = _check_bonds(atoms, name)
    assert len(bonds) == n_bonds          # a tree for the organics; only O-H within each water


def test_alanine_dipeptide_is_l_trans_and_at_the_requested_torsions():
    a = molecules.alanine_dipeptide(phi=-80.0, psi=75.0)
    p = a.positions
    c_ace, n, ca, cb, c, n_nme, c_nme = 1, 3, 5, 7, 11, 13, 15
    assert np.linalg.det(np.array([p[c] - p[ca], p[cb] - p[ca], p[n] - p[ca]])) > 0   # L (CORN rule)
    assert _dihedral(p, c_ace, n, ca, c) == pytest.approx(360 - 80.0, abs=1e-9)
    assert _dihedral(p, n, ca, c, n_nme) == pytest.approx(75.0, abs=1e-9)
    assert abs(_dihedral(p, ca, c, n_nme, c_nme) - 180.0) < 1e-9                      # trans peptide
    other = molecules.alanine_dipeptide(phi=-150.0, psi=150.0)
    assert np.linalg.det(np.array([other.positions[c] - other.positions[ca], other.positions[cb] - other.positions[ca],
                                   other.positions[n] - other.positions[ca]])) > 0


def test_molecule_from_file_round_trips(tmp_path):
    ref = build_molecule("ethanol")
    write(tmp_path / "eth.xyz", ref)
    got = build_molecule(tmp_path / "eth.xyz")
    assert got.get_chemical_symbols() == ref.get_chemical_symbols()
    np.testing.assert_allclose(got.positions, ref.positions, atol=1e-8)
    assert got.info["molecule"] == "eth"


def _periodic(path):
    write(path, Atoms("H2", positions=[[0, 0, 0], [0.74, 0, 0]], cell=[5, 5, 5], pbc=True), format="extxyz")


BAD_MOLECULES = [
    ("no-such-molecule", lambda t: None, InputError, "no-such-molecule"),
    ("{t}/missing.xyz", lambda t: None, InputError, "missing.xyz"),
    ("{t}/garbage.xyz", lambda t: (t / "garbage.xyz").write_text("@@@ not a structure\n"), InputError, "garbage.xyz"),
    ("{t}/si.xyz", lambda t: write(t / "si.xyz", Atoms("SiH4", positions=np.eye(5, 3) * 1.5)),
     InputError, "Si"),
    ("{t}/periodic.extxyz", lambda t: _periodic(t / "periodic.extxyz"), InputError, "periodic"),
    ("{t}/overlap.xyz", lambda t: write(t / "overlap.xyz", Atoms("H2", positions=[[0, 0, 0], [0.1, 0, 0]])),
     InputError, "0.100"),
]


@pytest.mark.parametrize("spec, make, error, text", BAD_MOLECULES, ids=[c[0] for c in BAD_MOLECULES])
def test_bad_molecules_are_refused_by_name(tmp_path, spec, make, error, text):
    make(tmp_path)
    with pytest.raises(error) as exc:
        build_molecule(spec.format(t=tmp_path))
    assert text in str(exc.value)


def test_split_never_shares_a_segment():
    split_by_segment = xtb_data.split_by_segment

    for n_seg in (1, 2, 3, 7, 20):
        frames = []
        for s in range(n_seg):
            for k in range(3):
                a = Atoms("H")
                a.info["segment"] = f"seg{s}"
                frames.append(a)
        for seed in range(4):
            split = split_by_segment(frames, (0.8, 0.1, 0.1), seed=seed)
            sets = [set(split[k]) for k in ("train", "validation", "test")]
            assert sets[0].isdisjoint(sets[1]) and sets[0].isdisjoint(sets[2]) and sets[1].isdisjoint(sets[2])
            assert set().union(*sets) == {f"seg{s}" for s in range(n_seg)}
            if n_seg >= 3:
                assert all(sets), split        # every set has a segment
    with pytest.raises(InputError):
        split_by_segment([], (0.8, 0.1, 0.1))


CONFIG_CASES = [
    ({"frames_per_segment": 0}, "frames_per_segment=0"),
    ({"segments_per_temperature": -1}, "segments_per_temperature=-1"),
    ({"interval": 2.5}, "interval=2.5"),
    ({"temperatures": (300.0, -5.0)}, "-5.0"),
    ({"temperatures": (float("nan"),)}, "nan"),
    ({"timestep_fs": 5.0}, "timestep_fs=5.0"),
    ({"fractions": (0.5, 0.5)}, "(0.5, 0.5)"),
    ({"fractions": (0.9, 0.2, -0.1)}, "-0.1"),
    ({"temperatures": (), "rattled_segments": 0}, "nothing to sample"),
    ({"temperatures": (300.0, 300.4)}, "repeat a temperature"),   # both named md300K: one segment lost
]


@pytest.mark.parametrize("kwargs, text", CONFIG_CASES, ids=[c[1] for c in CONFIG_CASES])
def test_bad_sampling_settings_are_refused(kwargs, text):
    SamplingConfig = xtb_data.SamplingConfig
    with pytest.raises(InputError) as exc:
        SamplingConfig(**kwargs).check()
    assert text in str(exc.value)


# -- with tblite ----------------------------------------------------------------------------------
needs_tblite = pytest.mark.skipif(importlib.util.find_spec("tblite") is None,
                                  reason="tblite is not installed (pip install 'lawful[xtb]')")


def small_config(**kw):
    """Two temperatures x two segments x two frames plus one rattled segment: 10 frames."""
    base = dict(temperatures=(300.0, 1000.0), segments_per_temperature=2, frames_per_segment=2, interval=5,
                equilibration=10, rattled_segments=1, seed=3)
    base.update(kw)
    return xtb_data.SamplingConfig(**base)


class Counting(Calculator):
    """Delegates to a new tblite calculator per call (as the default labeller does), counting calls;
    ``fail_after``: raise a KeyboardInterrupt (Ctrl-C) on the call after that many."""

    implemented_properties = ["energy", "forces"]

    def __init__(self, fail_after=None):
        super().__init__()
        self.calls, self.fail_after = 0, fail_after

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise KeyboardInterrupt("injected")
        a = self.atoms.copy()
        a.calc = xtb_data.xtb_calculator()
        self.results = {"energy": a.get_potential_energy(), "forces": a.get_forces()}


def _all(out):
    return [a for s in xtb_data.SPLITS for a in read(out / f"{s}.extxyz", index=":")]


@needs_tblite
@pytest.mark.parametrize("name", ["alanine-dipeptide", "water-hexamer", "ethanol"])
def test_xtb_minimum_keeps_bonds_normal(name):
    start = build_molecule(name)
    bonds0 = _check_bonds(start, name)
    low = xtb_data.minimise(start, fmax=0.05)
    assert _check_bonds(low, name + " (xTB minimum)") == bonds0      # same connectivity, normal lengths
    calc = xtb_data.xtb_calculator()
    low.calc = calc
    assert np.abs(low.get_forces()).max() < 0.05 * 1.01


@needs_tblite
def test_labels_equal_a_direct_tblite_call(tmp_path):
    from tblite.ase import TBLite

    card = xtb_data.make_dataset("water-dimer", tmp_path, small_config())
    frames = _all(tmp_path)
    assert len(frames) == card["counts"]["total_frames"] == 10
    for a in frames[::-1]:                   # another order: a label does not depend on the frame before it
        b = Atoms(a.numbers, positions=a.positions)
        b.calc = TBLite(method="GFN2-xTB", verbosity=0)
        assert a.get_potential_energy() == pytest.approx(b.get_potential_energy(), abs=1e-12, rel=1e-14)   # eV
        np.testing.assert_allclose(a.get_forces(), b.get_forces(), rtol=0, atol=6e-9)   # eV/Å; extxyz keeps 8 decimals
    energies = np.array([a.get_potential_energy() for a in frames])
    assert energies.std() > 1e-3            # the frames differ: MD and rattling moved the atoms


@needs_tblite
def test_forces_are_minus_the_energy_gradient(tmp_path):
    xtb_data.make_dataset("ethanol", tmp_path, small_config(segments_per_temperature=1, rattled_segments=0,
                                                             temperatures=(1000.0,)))
    frame = read(tmp_path / "labels.extxyz", index=-1)
    forces = frame.get_forces()
    h = 1e-3
    err = []
    for i, k in [(0, 0), (2, 1), (5, 2), (8, 0)]:
        e = []
        for s in (+1, -1):
            b = Atoms(frame.numbers, positions=frame.positions)
            b.positions[i, k] += s * h
            b.calc = xtb_data.xtb_calculator()
            e.append(b.get_potential_energy())
        fd = -(e[0] - e[1]) / (2 * h)
        err.append(abs(fd - forces[i, k]))
        assert abs(forces[i, k]) > 0.02 or abs(fd) < 1e-3
    assert max(err) < 2e-3, err                     # eV/Å
    assert np.abs(forces).max() > 0.3                # a hot frame: the check is not vacuous


@needs_tblite
def test_rerun_labels_nothing_new_and_interruption_keeps_frames(tmp_path):
    cfg = small_config()
    full = tmp_path / "full"
    calc = Counting()
    xtb_data.make_dataset("ethanol", full, cfg, calculator=calc)
    assert calc.calls == 10
    before = {p.name: p.read_bytes() for p in full.iterdir()}
    again = Counting()
    xtb_data.make_dataset("ethanol", full, cfg, calculator=again)
    assert again.calls == 0
    for name in ("labels.extxyz", "samples.extxyz", "train.extxyz", "test.extxyz", "validation.extxyz"):
        assert (full / name).read_bytes() == before[name]

    part = tmp_path / "part"
    with pytest.raises(KeyboardInterrupt):
        xtb_data.make_dataset("ethanol", part, cfg, calculator=Counting(fail_after=4))
    assert len(read(part / "labels.extxyz", index=":")) == 4
    assert not (part / "card.json").exists()
    with open(part / "labels.extxyz", "ab") as fh:        # a torn frame, as from a kill mid-write
        fh.write(b"9\nProperties=species:S:1:pos:R:3 key=dead\nC 0.0 0.0\n")
    rest = Counting()
    xtb_data.make_dataset("ethanol", part, cfg, calculator=rest)
    assert rest.calls == 6
    got, ref = _all(part), _all(full)
    assert [a.info["key"] for a in got] == [a.info["key"] for a in ref]
    np.testing.assert_array_equal([a.get_potential_energy() for a in got], [a.get_potential_energy() for a in ref])
    np.testing.assert_array_equal(np.array([a.get_forces() for a in got]), np.array([a.get_forces() for a in ref]))


@needs_tblite
def test_card_is_complete_and_matches_the_files(tmp_path):
    card = xtb_data.make_dataset("water", tmp_path, small_config())
    assert json.loads((tmp_path / "card.json").read_text()) == card
    assert card["method"] == "GFN2-xTB" and card["molecule"] == "water" and card["n_atoms"] == 3
    for pkg in ("tblite", "ase", "lawful", "numpy", "python"):
        assert card["versions"][pkg], pkg
    s = card["sampling"]
    assert s["temperatures"] == [300.0, 1000.0] and s["seed"] == 3 and len(s["segments"]) == 5
    assert {seg["seed"] for seg in s["segments"]} and len({seg["seed"] for seg in s["segments"]}) == 5
    total = 0
    for name in xtb_data.SPLITS:
        frames = read(tmp_path / card["files"][name], index=":")
        assert {a.info["segment"] for a in frames} == set(card["split"][name])
        assert len(frames) == card["counts"][name]["frames"]
        total += len(frames)
    assert total == card["counts"]["total_frames"] == 10
    assert card["seconds_per_label_mean"] > 0


# -- command line ---------------------------------------------------------------------------------
CLI_CASES = [
    ("data --calc xtb --molecule nope --out {t}/out", "'nope'"),
    ("data --calc xtb --out {t}/out", "--molecule"),
    ("data --calc xtb --molecule {t}/si.xyz --out {t}/out", "Si"),
    ("data --calc xtb --molecule {t}/missing.xyz --out {t}/out", "missing.xyz"),
    ("data --calc xtb --molecule water --out {t}/afile", "afile"),
    ("data --calc xtb --molecule water --frames 0 --out {t}/out", "--frames: 0"),
    ("data --calc xtb --molecule water --temperatures 300 -5 --out {t}/out", "-5"),
    ("data --calc xtb --molecule water --temperatures 9000 --out {t}/out", "9000"),
    ("data --calc xtb --molecule water --interval 0 --out {t}/out", "--interval: 0"),
    ("data --calc xtb --molecule water --equilibration -1 --out {t}/out", "--equilibration: -1"),
    ("data --calc xtb --molecule {t}/starts.extxyz --out {t}/out", "minimise='relax'"),
    # an ion given as neutral, an impossible spin state: tblite labels both without error
    ("data --calc xtb --molecule {t}/nh4.xyz --out {t}/out", "charge=0 and multiplicity=1"),
    ("data --calc xtb --molecule water --multiplicity 2 --out {t}/out", "multiplicity=2"),
    ("data --calc xtb --molecule water --charge 1 --out {t}/out", "charge=1"),
    # the file states the charge (extxyz charge=-2): another --charge is refused, not obeyed or dropped
    ("data --calc xtb --molecule {t}/co3.extxyz --charge 0 --out {t}/out",
     "charge=0 was given but the molecule's file states charge=-2"),
    # options of another calculator (they were ignored: --calc emt --molecule ethanol labelled copper)
    ("data --calc emt --molecule ethanol --out {t}/out", "--molecule does not apply to --calc emt"),
    ("data --calc lj --charge 1 --out {t}/out", "--charge does not apply to --calc lj"),
    ("data --calc xtb --molecule water --element Cu --out {t}/out", "--element does not apply to --calc xtb"),
    ("data --calc xtb --molecule water --n-md 5 --out {t}/out", "--n-md does not apply to --calc xtb"),
    ("data --calc openmm-water --repeat 3 --out {t}/out", "--repeat does not apply to --calc openmm-water"),
    ("data --calc lj --n-strained 3 --out {t}/out", "--n-strained does not apply to --calc lj"),
]


@pytest.mark.parametrize("argv, text", CLI_CASES, ids=[c[0].split("--molecule ")[-1][:30] for c in CLI_CASES])
def test_cli_refuses_bad_input_before_labelling(tmp_path, capsys, argv, text):
    from lawful.integrations.cli import main

    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("keep\n")
    (tmp_path / "afile").write_text("keep\n")
    write(tmp_path / "si.xyz", Atoms("SiH4", positions=np.eye(5, 3) * 1.5))
    write(tmp_path / "nh4.xyz", _ammonium())                # 11 electrons as neutral NH4
    write(tmp_path / "co3.extxyz", _carbonate(charge=-2), format="extxyz")
    _two_water_starts(tmp_path, minimise="relax")          # a bad mode in a file of starts
    rc = main(argv.format(t=tmp_path).split())
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("lawful data: error:") and text in err[0], err
    if "nope" in argv:
        assert all(name in err[0] for name in MOLECULES)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["keep.txt"]   # nothing sampled or labelled
    assert (tmp_path / "afile").read_text() == "keep\n"


@needs_tblite
def test_cli_writes_a_split_dataset(tmp_path, capsys):
    from lawful.integrations.cli import main

    rc = main(["data", "--calc", "xtb", "--molecule", "water", "--frames", "6", "--frames-per-segment", "2",
               "--temperatures", "300", "800", "--out", str(tmp_path / "d")])
    assert rc == 0
    card = json.loads((tmp_path / "d" / "card.json").read_text())
    assert card["counts"]["total_frames"] >= 6 and card["sampling"]["temperatures"] == [300.0, 800.0]
    assert "labelled frames of water" in capsys.readouterr().out


@needs_tblite
def test_interrupted_sampling_resumes_with_the_same_segments(tmp_path, monkeypatch):
    cfg = small_config()
    minimum = xtb_data.minimise(build_molecule("water-dimer"))
    ref = xtb_data.sample_segments(minimum, cfg, tmp_path / "new" / "ref.extxyz")   # the folder is made
    real, ran = xtb_data._run_segment, []

    def stop_after_two(*args):
        if len(ran) == 2:
            raise KeyboardInterrupt("injected")
        ran.append(args[1]["segment"])
        return real(*args)

    monkeypatch.setattr(xtb_data, "_run_segment", stop_after_two)
    with pytest.raises(KeyboardInterrupt):
        xtb_data.sample_segments(minimum, cfg, tmp_path / "part.extxyz")
    assert len(read(tmp_path / "part.extxyz", index=":")) == 2 * cfg.frames_per_segment
    monkeypatch.setattr(xtb_data, "_run_segment", real)
    got = xtb_data.sample_segments(minimum, cfg, tmp_path / "part.extxyz")
    assert [a.info["segment"] for a in got] == [a.info["segment"] for a in ref]
    np.testing.assert_array_equal(np.array([a.positions for a in got]), np.array([a.positions for a in ref]))


def test_without_tblite_the_cli_says_how_to_install_it(tmp_path, capsys, monkeypatch):
    import sys

    from lawful.integrations.cli import main

    monkeypatch.setitem(sys.modules, "tblite.ase", None)      # import fails as if not installed
    with pytest.raises(xtb_data.BackendError, match="lawful\\[xtb\\]"):
        xtb_data.xtb_calculator()
    rc = main(["data", "--calc", "xtb", "--molecule", "water", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "pip install 'lawful[xtb]'" in err[0], err
    assert not (tmp_path / "out" / "labels.extxyz").exists()


@needs_tblite
def test_alanine_dipeptide_samples_three_conformers_and_stays_intact_at_1000_k(tmp_path):
    cfg = small_config(temperatures=(1000.0,), segments_per_temperature=3, frames_per_segment=2, interval=100,
                       equilibration=100, rattled_segments=0)
    card = xtb_data.make_dataset("alanine-dipeptide", tmp_path, cfg)
    assert set(card["sampling"]["starts"]) == set(molecules.ALANINE_DIPEPTIDE_STARTS)
    frames = read(tmp_path / "labels.extxyz", index=":")
    assert {a.info["start"] for a in frames} == set(molecules.ALANINE_DIPEPTIDE_STARTS)
    e = {k: v["xtb_energy_eV"] for k, v in card["sampling"]["starts"].items()}
    assert {v["minimise"] for v in card["sampling"]["starts"].values()} == {"free"}
    assert 0.02 < e["C5"] - e["C7eq"] < 0.2          # eV: C5 lies above C7eq in vacuum (about 1.8 kcal/mol)
    bonds = {(i, j) for i, j, _, _ in _bonds(build_molecule("alanine-dipeptide"))}
    for a in frames:                                  # 100 fs at 1000 K: no bond broken or formed
        assert bonds <= {(i, j) for i, j, _, _ in _bonds(a, mult=1.3)}
        assert {(i, j) for i, j, _, _ in _bonds(a, mult=1.0)} <= bonds


@needs_tblite
def test_resampling_with_other_settings_into_the_same_file_is_refused(tmp_path):
    minimum = xtb_data.minimise(build_molecule("water"))
    path = tmp_path / "s.extxyz"
    xtb_data.sample_segments(minimum, small_config(), path)
    before = path.read_bytes()
    for changed in (small_config(temperatures=(300.0, 900.0)), small_config(seed=4), small_config(interval=6)):
        with pytest.raises(InputError, match="other settings"):
            xtb_data.sample_segments(minimum, changed, path)
    assert path.read_bytes() == before
    xtb_data.sample_segments(minimum, small_config(fractions=(0.6, 0.2, 0.2)), path)   # the split is not sampling
    assert path.read_bytes() == before


# -- the committed dataset ------------------------------------------------------------------------
COMMITTED = Path(__file__).resolve().parents[1] / "benchmarks" / "data" / "xtb"


@pytest.mark.parametrize("name", sorted(MOLECULES))
def test_committed_dataset_matches_its_card_and_is_split_by_segment(name):
    """The committed GFN2-xTB data: counts as the card says, no segment in two sets, the molecule's
    formula in every frame, energies and forces present and finite."""
    folder = COMMITTED / name
    card = json.loads((folder / "card.json").read_text())
    assert card["method"] == "GFN2-xTB" and card["molecule"] == name
    seen = {}
    for part in ("train", "validation", "test"):
        frames = read(folder / f"{part}.extxyz", index=":")
        assert len(frames) == card["counts"][part]["frames"]
        for a in frames:
            assert a.get_chemical_formula() == card["formula"]
            assert np.isfinite(a.get_potential_energy()) and np.isfinite(a.get_forces()).all()
            seg = a.info["segment"]
            assert seen.setdefault(seg, part) == part, f"segment {seg} is in {seen[seg]} and {part}"
    assert len(seen) == sum(card["counts"][p]["segments"] for p in ("train", "validation", "test"))


@needs_tblite
@pytest.mark.parametrize("name", ["alanine-dipeptide", "ethanol", "water-hexamer"])
def test_committed_dataset_labels_equal_tblite_now(name):
    """A test frame of the committed data relabelled by tblite here: the same energy and forces
    (so the committed labels are what the card says, and a tblite change would be seen)."""
    from tblite.ase import TBLite

    a = read(COMMITTED / name / "test.extxyz", index=0)
    b = Atoms(a.numbers, positions=a.positions)
    b.calc = TBLite(method="GFN2-xTB", verbosity=0)
    assert a.get_potential_energy() == pytest.approx(b.get_potential_energy(), abs=1e-7)   # eV
    np.testing.assert_allclose(a.get_forces(), b.get_forces(), rtol=0, atol=1e-6)        # eV/Å


# -- files of several starts (the solvated alanine dipeptide set) -----------------------------------

def _starts_file(path, frames, **info):
    for a in frames:
        a.info.update(info)
    write(path, frames, format="extxyz")
    return path


def _two_water_starts(t, **kw):
    a, b = build_molecule("water"), build_molecule("water")
    b.positions[1] += 0.05
    a.info.update(start="a", **kw)
    b.info.update(start="b", **kw)
    return _starts_file(t / "starts.extxyz", [a, b])


BAD_STARTS = [
    ("bad minimise mode", lambda t: _two_water_starts(t, minimise="relax"), "minimise='relax'"),
    ("duplicate label", lambda t: _starts_file(t / "starts.extxyz", [build_molecule("water")] * 2, start="x"),
     "start='x'"),
    ("other molecule", lambda t: _starts_file(t / "starts.extxyz", [build_molecule("water"), build_molecule("ethanol")]),
     "another order"),
    ("overlap in a later structure",
     lambda t: _starts_file(t / "starts.extxyz",
                            [build_molecule("water"), Atoms("OH2", positions=[[0, 0, 0], [0.1, 0, 0], [0, 1, 0]])]),
     "structure 1"),
]


@pytest.mark.parametrize("make, text", [c[1:] for c in BAD_STARTS], ids=[c[0] for c in BAD_STARTS])
def test_bad_start_files_are_refused_by_name(tmp_path, make, text):
    path = make(tmp_path)
    with pytest.raises(InputError) as exc:
        molecules.start_structures(path)
    assert text in str(exc.value)


def test_a_file_of_starts_gives_one_labelled_start_per_structure(tmp_path):
    path = _two_water_starts(tmp_path, minimise="none")
    starts = molecules.start_structures(path)
    assert list(starts) == ["a", "b"]
    assert all(s.info["minimise"] == "none" for s in starts.values())
    np.testing.assert_array_equal(starts["b"].positions, read(path, index=1).positions)
    one = _starts_file(tmp_path / "one.extxyz", [build_molecule("ethanol")])
    assert list(molecules.start_structures(one)) == ["start"]


@needs_tblite
def test_solvent_and_restrained_starts_are_sampled_as_given(tmp_path):
    from lawful.forcefields.conformers import backbone_torsions

    snapshot = molecules.alanine_dipeptide(-70.0, 140.0)       # stands in for a solvent snapshot
    snapshot.positions += np.random.default_rng(0).normal(0, 0.02, snapshot.positions.shape)
    snapshot.info.update(start="snap", minimise="none")
    alpha_r = molecules.alanine_dipeptide(-65.0, -40.0)
    alpha_r.info.update(start="aR", minimise="backbone")
    path = _starts_file(tmp_path / "starts.extxyz", [snapshot, alpha_r], molecule="alanine-dipeptide")
    cfg = small_config(temperatures=(300.0,), segments_per_temperature=2, frames_per_segment=2, interval=4,
                       equilibration=0, rattled_segments=0)
    card = xtb_data.make_dataset(path, tmp_path / "out", cfg)
    starts = card["sampling"]["starts"]
    assert {k: v["minimise"] for k, v in starts.items()} == {"snap": "none", "aR": "backbone"}
    ref = Atoms(snapshot.numbers, positions=snapshot.positions)
    ref.calc = xtb_data.xtb_calculator()
    assert abs(starts["snap"]["xtb_energy_eV"] - ref.get_potential_energy()) < 1e-6   # not minimised
    frames = read(tmp_path / "out" / "labels.extxyz", index=":")
    assert {a.info["start"] for a in frames} == {"snap", "aR"}
    for a in frames:                                   # 2 fs after the start: still in its basin
        phi, psi = backbone_torsions(a)
        want = (-70.0, 140.0) if a.info["start"] == "snap" else (-65.0, -40.0)
        assert abs(phi - want[0]) < 15 and abs(psi - want[1]) < 15, (a.info["start"], phi, psi)
    assert card["molecule"] == "alanine-dipeptide"


def _lj_frames(n=3):
    rng = np.random.default_rng(0)
    water = build_molecule("water")
    frames = []
    for k in range(n):
        a = Atoms(water.numbers, positions=water.positions + rng.normal(0, 0.02, water.positions.shape))
        a.info["segment"] = "s0"
        frames.append(xtb_data._round_trip(a))
    return frames


@needs_tblite
def test_labels_of_another_calculator_are_not_taken_for_xtb(tmp_path):
    """A label cache filled by another calculator (Lennard-Jones here) is not read back as
    GFN2-xTB: the key names the labeller, so xTB labels the frames itself, and the other
    calculator's frames say what made them (it once returned LJ energies 300 eV off, marked
    GFN2-xTB)."""
    from ase.calculators.lj import LennardJones

    frames = _lj_frames()
    cache = tmp_path / "labels.extxyz"
    lj = xtb_data.label_cached(frames, cache, calculator=LennardJones())
    assert all(a.info["method"].startswith("ase.calculators.lj.LennardJones") for a in lj)
    xtb = xtb_data.label_cached(frames, cache)
    assert all(a.info["method"] == "GFN2-xTB" for a in xtb)
    direct = frames[0].copy()
    direct.calc = xtb_data.xtb_calculator()
    assert xtb[0].get_potential_energy() == pytest.approx(direct.get_potential_energy(), abs=1e-6)
    assert abs(xtb[0].get_potential_energy() - lj[0].get_potential_energy()) > 10.0
    assert len(read(cache, index=":")) == 6


def test_label_cache_finds_numeric_looking_keys_and_drops_a_torn_last_number(tmp_path):
    """extxyz reads a key such as 306540283e861062 back as a number: the cache indexes frames by
    the key recomputed from the stored frame, so such a frame is found (it was relabelled and
    appended again on every resume). A file cut inside its last number (the last atom's z force,
    -3.546 read as -3.54) loses that frame instead of keeping it with a wrong force."""
    from ase.calculators.lj import LennardJones

    frames = _lj_frames(2)
    path = tmp_path / "labels.extxyz"
    calc = LennardJones()
    labelled = xtb_data.label_cached(frames, path, calculator=calc)
    keys = [a.info["key"] for a in labelled]
    text = path.read_text()
    for k in keys:
        text = text.replace(f"key={k}", "key=306540283e861062")      # what extxyz turns into inf
    path.write_text(text)
    cache = xtb_data.LabelCache(path)
    assert sorted(cache.frames) == sorted(keys)
    path.write_bytes(path.read_bytes()[:-7])                            # cut inside the last force
    cache = xtb_data.LabelCache(path)
    assert list(cache.frames) == [keys[0]] and path.read_bytes().endswith(b"\n")
    f0 = labelled[0].get_forces()
    np.testing.assert_allclose(cache.frames[keys[0]].get_forces(), f0, rtol=0, atol=1e-7)   # 8 decimals on disk


def test_a_periodic_molecule_is_refused_not_labelled_as_a_cluster(tmp_path):
    """make_dataset(Atoms) with a cell: refused as the file path refuses it (the cell and the
    periodic images were dropped, and the box labelled as an isolated cluster)."""
    water = build_molecule("water")
    water.cell, water.pbc = [6.0, 6.0, 6.0], True
    with pytest.raises(InputError, match="periodic"):
        xtb_data.make_dataset(water, tmp_path / "out", small_config())
    assert not (tmp_path / "out" / "labels.extxyz").exists()


def _ammonium() -> Atoms:
    """NH4 as a tetrahedron, N-H 1.03 Å (the cation's geometry; as neutral NH4 it has 11 electrons)."""
    return Atoms("NH4", positions=np.vstack([np.zeros(3), 1.03 / np.sqrt(3) * np.array(
        [[1, 1, 1], [-1, -1, 1], [-1, 1, -1], [1, -1, -1]])]))


@pytest.mark.parametrize("numbers, charge, multiplicity, ok", [
    ([7, 1, 1, 1, 1], 0, 1, False), ([7, 1, 1, 1, 1], 1, 1, True), ([7, 1, 1, 1, 1], 0, 2, True),
    ([8, 1, 1], 0, 1, True), ([8, 1, 1], 0, 3, True), ([8, 1, 1], 0, 2, False), ([8, 1, 1], -1, 2, True),
    ([1], 0, 2, True), ([1], 1, 1, True), ([1], 1, 2, False), ([1], 0, 0, False), ([1], 0.5, 1, False),
])
def test_electronic_state_must_fit_the_electron_count(numbers, charge, multiplicity, ok):
    if ok:
        assert xtb_data.electronic_state(numbers, charge, multiplicity) == (charge, multiplicity)
    else:
        with pytest.raises(InputError, match=f"{charge}|multiplicity"):
            xtb_data.electronic_state(numbers, charge, multiplicity)


@needs_tblite
def test_an_ion_is_labelled_with_its_charge_never_as_a_neutral_radical(tmp_path):
    from tblite.ase import TBLite

    nh4 = _ammonium()
    cache = tmp_path / "labels.extxyz"
    with pytest.raises(InputError, match="charge=0 and multiplicity=1"):
        xtb_data.label_cached([nh4], cache)              # was labelled as a "singlet" of 11 electrons, 6 eV off
    assert not cache.exists()
    [cation] = xtb_data.label_cached([nh4], cache, charge=1)
    [radical] = xtb_data.label_cached([nh4], cache, charge=0, multiplicity=2)
    for label, kw in ((cation, dict(charge=1)), (radical, dict(charge=0, multiplicity=2))):
        # labelled at the positions the cache file keeps (8 decimals), which the label carries
        np.testing.assert_allclose(label.positions, nh4.positions, rtol=0, atol=5e-9)
        b = Atoms(label.numbers, positions=label.positions)
        b.calc = TBLite(method="GFN2-xTB", verbosity=0, **kw)
        assert label.get_potential_energy() == pytest.approx(b.get_potential_energy(), abs=1e-9)   # eV
        np.testing.assert_allclose(label.get_forces(), b.get_forces(), rtol=0, atol=1e-7)        # eV/Å
    assert cation.info["charge"] == 1 and radical.info["multiplicity"] == 2
    assert abs(cation.get_potential_energy() - radical.get_potential_energy()) > 1.0     # eV: two states, two keys
    assert len(xtb_data.LabelCache(cache).frames) == 2
    # the neutral singlet keeps the keys of every existing cache
    assert xtb_data.labeller_id() == xtb_data.METHOD
    assert xtb_data.labeller_id(charge=1) != xtb_data.labeller_id()


@needs_tblite
def test_a_data_set_of_an_ion_samples_and_labels_the_ion(tmp_path):
    from tblite.ase import TBLite

    with pytest.raises(InputError, match="charge=0 and multiplicity=1"):
        xtb_data.make_dataset(_ammonium(), tmp_path / "neutral", small_config())
    assert not (tmp_path / "neutral").exists()            # refused before the folder or any xTB work
    card = xtb_data.make_dataset(_ammonium(), tmp_path / "cation", small_config(), charge=1)
    assert (card["charge"], card["multiplicity"], card["method"]) == (1, 1, xtb_data.METHOD)
    frames = _all(tmp_path / "cation")
    assert len(frames) == 10 and {a.info["charge"] for a in frames} == {1}
    for a in frames[::3]:
        b = Atoms(a.numbers, positions=a.positions)
        b.calc = TBLite(method="GFN2-xTB", verbosity=0, charge=1)
        assert a.get_potential_energy() == pytest.approx(b.get_potential_energy(), abs=1e-9)   # eV
    assert max(np.linalg.norm(a.positions[1:] - a.positions[0], axis=1).max() for a in frames) < 1.3  # Å: bound


# -- the electronic state a molecule's file states (audit F1/F2) ------------------------------------
def _carbonate(**info) -> Atoms:
    """CO3 (D3h, C-O 1.29 Å): 32 electrons, so the neutral singlet passes the parity check; the
    dianion is what a carbonate file means (labelled as neutral: 11.7 eV off)."""
    a = Atoms("CO3", positions=[[0, 0, 0], [1.29, 0, 0], [-0.645, 1.117, 0], [-0.645, -1.117, 0]])
    a.info.update(info)
    return a


def _gaussian(t, state):
    path = t / "mol.com"
    path.write_text(f"%chk=c.chk\n# HF/3-21G\n\ntitle\n\n{state}\nC 0.0 0.0 0.0\nO 1.29 0.0 0.0\n"
                    "O -0.645 1.117 0.0\nO -0.645 -1.117 0.0\n\n")
    return path


def _sdf(t, chg_line=True, atom_code=3):
    """NH4+ as SDF V2000: the charge on N as an ``M  CHG`` line and/or the atom block's code (3 = +1)."""
    rows = [f"    0.0000    0.0000    0.0000 N   0  {atom_code}  0  0  0  0  0  0  0  0  0  0"] + [
        f"   {x:7.4f}   {y:7.4f}   {z:7.4f} H   0  0  0  0  0  0  0  0  0  0  0  0"
        for x, y, z in 0.6 * np.array([[1, 1, 1], [-1, -1, 1], [-1, 1, -1], [1, -1, -1]])]
    text = "ammonium\n  test\n\n  5  4  0  0  0  0  0  0  0  0999 V2000\n" + "\n".join(rows) + "\n"
    text += "".join(f"  1  {k}  1  0\n" for k in range(2, 6)) + ("M  CHG  1   1   1\n" if chg_line else "") + "M  END\n$$$$\n"
    (t / "nh4.sdf").write_text(text)
    return t / "nh4.sdf"


def _extxyz(t, frames, name="mol.extxyz"):
    write(t / name, frames, format="extxyz")
    return t / name


def _charged_atoms(charges):
    a = _carbonate()
    a.set_initial_charges(charges)
    return a


# (id, make(tmp) -> file, charge given, multiplicity given, expected (charge, multiplicity) or error text)
FILE_STATES = [
    ("extxyz charge=-2", lambda t: _extxyz(t, _carbonate(charge=-2)), None, None, (-2, 1)),
    ("extxyz charge=-2, same given", lambda t: _extxyz(t, _carbonate(charge=-2)), -2, None, (-2, 1)),
    ("extxyz charge=-2, 0 given", lambda t: _extxyz(t, _carbonate(charge=-2)), 0, None,
     "charge=0 was given but the molecule's file states charge=-2"),
    ("initial charges", lambda t: _extxyz(t, _charged_atoms([0, -1, -1, 0])), None, None, (-2, 1)),
    ("initial charges vs charge=", lambda t: _extxyz(t, _with_info(_charged_atoms([0, -1, -1, 0]), charge=-1)),
     None, None, "initial charges add up to -2"),
    ("charge not whole", lambda t: _extxyz(t, _carbonate(charge=-0.5)), None, None, "not a whole number"),
    ("multiplicity=3", lambda t: _extxyz(t, _with_info(build_molecule("water"), multiplicity=3)), None, None, (0, 3)),
    ("multiplicity=3, 1 given", lambda t: _extxyz(t, _with_info(build_molecule("water"), multiplicity=3)), None, 1,
     "multiplicity=1 was given but the molecule's file states multiplicity=3"),
    ("spin ambiguous", lambda t: _extxyz(t, _with_info(build_molecule("water"), spin=1)), None, None, "S or 2S+1"),
    ("spin, multiplicity given", lambda t: _extxyz(t, _with_info(build_molecule("water"), spin=1)), None, 1, (0, 1)),
    ("starts disagree", lambda t: _extxyz(t, [_carbonate(start="a", charge=0), _carbonate(start="b", charge=-2)]),
     None, None, "different charges"),
    ("sdf M  CHG", lambda t: _sdf(t), None, None, (1, 1)),
    ("sdf atom block only", lambda t: _sdf(t, chg_line=False), None, None, (1, 1)),
    ("sdf M  CHG, 0 given", lambda t: _sdf(t), 0, None, "states charge=1"),
    ("gaussian -2 1", lambda t: _gaussian(t, "-2 1"), None, None, (-2, 1)),
    ("gaussian -2 1, 0 given", lambda t: _gaussian(t, "-2 1"), 0, None, "states charge=-2"),
    ("gaussian 0 3", lambda t: _gaussian(t, "0 3"), None, None, (0, 3)),
    ("xyz states nothing", lambda t: _extxyz(t, _carbonate(), "mol.xyz"), None, None, (0, 1)),
    ("xyz states nothing, -2 given", lambda t: _extxyz(t, _carbonate(), "mol.xyz"), -2, None, (-2, 1)),
]


def _with_info(a, **info):
    a.info.update(info)
    return a


@pytest.mark.parametrize("make, charge, multiplicity, want", [c[1:] for c in FILE_STATES],
                         ids=[c[0] for c in FILE_STATES])
def test_the_state_a_molecule_file_states_is_used_or_a_conflict_refused(tmp_path, make, charge, multiplicity, want):
    path = make(tmp_path)
    if isinstance(want, tuple):
        starts = molecules.start_structures(path)
        assert xtb_data.molecule_state(starts, charge, multiplicity) == want
        return
    with pytest.raises(InputError, match=want.replace("(", r"\(").replace("+", r"\+")):
        xtb_data.molecule_state(molecules.start_structures(path), charge, multiplicity)


def test_an_atoms_molecule_states_its_charge_too():
    assert xtb_data.molecule_state({"start": _carbonate(charge=-2)}) == (-2, 1)
    with pytest.raises(InputError, match="charge=0 was given"):
        xtb_data.molecule_state({"start": _carbonate(charge=-2)}, 0)


def test_label_cached_refuses_frames_of_another_stated_charge(tmp_path):
    with pytest.raises(InputError, match="frame 1 states charge=-2 but label_cached got charge=0"):
        xtb_data.label_cached([_carbonate(), _carbonate(charge=-2)], tmp_path / "labels.extxyz")
    assert not (tmp_path / "labels.extxyz").exists()


@needs_tblite
def test_a_charged_molecule_file_is_labelled_with_its_charge(tmp_path, capsys):
    """``lawful data --molecule carbonate.extxyz`` (``charge=-2`` in the header, as ase writes
    ``info["charge"]``): every label and the card's start energy are the dianion's (the file's
    charge was dropped and CO3 labelled as neutral, 11.7 eV off; the card's start energy was the
    neutral singlet's even when the charge was given)."""
    from tblite.ase import TBLite

    from lawful.integrations.cli import main

    path = _extxyz(tmp_path, _carbonate(charge=-2, minimise="none"), "carbonate.extxyz")
    out = tmp_path / "out"
    rc = main(["data", "--calc", "xtb", "--molecule", str(path), "--frames", "6", "--frames-per-segment", "2",
               "--temperatures", "300", "--interval", "2", "--equilibration", "2", "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    card = json.loads((out / "card.json").read_text())
    assert (card["charge"], card["multiplicity"]) == (-2, 1)
    start = _carbonate()
    energies = {}
    for q in (-2, 0):
        start.calc = TBLite(method="GFN2-xTB", verbosity=0, charge=q)
        energies[q] = start.get_potential_energy()
    assert abs(energies[-2] - energies[0]) > 5.0                                       # eV: the test can tell
    assert card["sampling"]["starts"]["start"]["xtb_energy_eV"] == pytest.approx(energies[-2], abs=1e-6)
    frames = _all(out)
    assert len(frames) == 6 and {a.info["charge"] for a in frames} == {-2}
    for a in frames[::2]:
        b = Atoms(a.numbers, positions=a.positions)
        b.calc = TBLite(method="GFN2-xTB", verbosity=0, charge=-2)
        assert a.get_potential_energy() == pytest.approx(b.get_potential_energy(), abs=1e-6)   # eV
        np.testing.assert_allclose(a.get_forces(), b.get_forces(), rtol=0, atol=1e-6)         # eV/Å


# -- the label cache finds its own labels whatever the precision of the positions (audit F3) ---------
class _CountingLJ(Calculator):
    implemented_properties = ["energy", "forces"]

    def __init__(self):
        super().__init__()
        self.calls = 0

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        from ase.calculators.lj import LennardJones

        super().calculate(atoms, properties, system_changes)
        self.calls += 1
        a = self.atoms.copy()
        a.calc = LennardJones()
        self.results = {"energy": a.get_potential_energy(), "forces": a.get_forces()}

    def todict(self):
        return {"counting": "lj"}


@pytest.mark.parametrize("perturb", [
    lambda p, rng: p + rng.normal(0, 0.05, p.shape),                 # full float64 positions (the usual case)
    lambda p, rng: 1000.0 + p + rng.normal(0, 0.05, p.shape),        # far from the origin
    lambda p, rng: np.where(np.abs(p) < 1e-3, -1e-10, p),           # tiny negatives, stored as -0.0
    lambda p, rng: xtb_data.stored_positions(Atoms("OH2", positions=p + 0.01)),   # already at file precision
], ids=["float64", "far", "negative-zero", "rounded"])
def test_a_rerun_of_label_cached_labels_nothing_and_the_file_does_not_grow(tmp_path, perturb):
    rng = np.random.default_rng(4)
    water = build_molecule("water")
    frames = [Atoms(water.numbers, positions=perturb(water.positions + 0.02 * k, rng)) for k in range(3)]
    for a in frames:     # the cache's rounding is what extxyz writes and reads back
        b = read(_extxyz(tmp_path, a, "one.extxyz"))
        np.testing.assert_array_equal(xtb_data.stored_positions(a), b.positions)
    cache, calc = tmp_path / "labels.extxyz", _CountingLJ()
    first = xtb_data.label_cached(frames, cache, calculator=calc)
    calls, size = calc.calls, cache.stat().st_size
    assert calls >= 3 and len(read(cache, index=":")) == 3
    again = xtb_data.label_cached(frames, cache, calculator=calc)
    assert calc.calls == calls and cache.stat().st_size == size          # nothing relabelled, nothing appended
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a.positions, b.positions)
        assert a.get_potential_energy() == pytest.approx(b.get_potential_energy(), abs=1e-8)


# -- a plan too small to fill every split is said before any work (audit M1) --------------------------
@pytest.mark.parametrize("kw, empty", [
    (dict(temperatures=(300.0,), segments_per_temperature=1, rattled_segments=1), ["validation", "test"]),
    (dict(temperatures=(300.0,), segments_per_temperature=1, rattled_segments=0), ["validation", "test"]),
    (dict(temperatures=(300.0,), segments_per_temperature=2, rattled_segments=1), []),
    (dict(temperatures=(300.0,), segments_per_temperature=1, rattled_segments=1, fractions=(1.0, 0.0, 0.0)), []),
])
def test_a_plan_that_cannot_fill_every_split_warns_before_any_work(tmp_path, monkeypatch, kw, empty):
    cfg = small_config(**kw)
    assert xtb_data.empty_splits(cfg) == empty

    class Stop(Exception):
        pass

    def stop(*a, **k):
        raise Stop

    monkeypatch.setattr(xtb_data, "_prepared_start", stop)      # the first xTB work: minimising the start
    import warnings as _warnings

    with _warnings.catch_warnings(record=True) as caught:
        _warnings.simplefilter("always")
        with pytest.raises(Stop):
            xtb_data.make_dataset("water", tmp_path / "out", cfg)
    said = [str(w.message) for w in caught if "cannot fill every split" in str(w.message)]
    if empty:
        assert len(said) == 1 and " and ".join(empty) + " will be empty" in said[0] and "--frames" in said[0]
    else:
        assert not said


# -- a PDB's placeholder CRYST1 is no crystal (audit M2) -----------------------------------------------
@pytest.mark.parametrize("cryst1, periodic", [
    ("CRYST1    1.000    1.000    1.000  90.00  90.00  90.00 P 1           1", False),
    ("CRYST1   10.000   10.000   10.000  90.00  90.00  90.00 P 1           1", True),
    ("CRYST1    1.000    1.000    1.000  60.00  90.00  90.00 P 1           1", True),
    ("", False),
])
def test_a_pdb_placeholder_unit_cube_is_read_as_no_cell(tmp_path, cryst1, periodic):
    rows = ["ATOM      1    O MOL     1       0.000   0.000   0.119  1.00  0.00           O",
            "ATOM      2    H MOL     1       0.000   0.763  -0.477  1.00  0.00           H",
            "ATOM      3    H MOL     1       0.000  -0.763  -0.477  1.00  0.00           H"]
    path = tmp_path / "water.pdb"
    path.write_text("\n".join(([cryst1] if cryst1 else []) + rows + ["END"]) + "\n")
    if periodic:
        with pytest.raises(InputError, match="periodic"):
            molecules.start_structures(path)
        return
    import warnings as _warnings

    with _warnings.catch_warnings(record=True) as caught:
        _warnings.simplefilter("always")
        [start] = molecules.start_structures(path).values()
        mol = build_molecule(path)
    placeholder = [w for w in caught if "placeholder" in str(w.message)]
    assert len(placeholder) == (2 if cryst1 else 0)
    for a in (start, mol):
        assert not a.pbc.any() and a.get_chemical_formula() == "H2O"
        np.testing.assert_allclose(a.positions[1], [0.0, 0.763, -0.477], atol=1e-9)


# -- a damaged samples file is repaired once, not resampled on every rerun (audit MP finding 3) -------
def _cut_last_segment(frames, n):                # a run killed after 1 of the last segment's frames
    return frames[:-(n - 1)]


def _second_copy(frames, n):                     # two runs appended the same segment
    return frames + frames[n:2 * n]


def _partial_then_full(frames, n):               # a killed run's first frame, then a whole copy
    return frames[:-n] + frames[-n:-n + 1] + frames[-n:]


@pytest.mark.parametrize("damage, resampled", [
    (_cut_last_segment, 1), (_second_copy, 0), (_partial_then_full, 0)],
    ids=["cut", "second-copy", "partial-then-full"])
def test_a_damaged_samples_file_is_repaired_once_and_does_not_grow(tmp_path, monkeypatch, damage, resampled):
    """A segment with too few or too many frames in samples.extxyz was sampled again on every rerun
    and the file grew (10 -> 13 -> 16 frames for 9). Now the first complete set of a segment is
    kept, an incomplete one is removed and sampled once, and a second rerun samples nothing."""
    from ase.calculators.lj import LennardJones

    cfg = small_config(frames_per_segment=3, rattled_segments=0)
    water = build_molecule("water")
    path = tmp_path / "samples.extxyz"
    ref = xtb_data.sample_segments(water, cfg, path, calculator=LennardJones())
    write(path, damage(read(path, index=":"), cfg.frames_per_segment), format="extxyz")
    real, ran = xtb_data._run_segment, []
    monkeypatch.setattr(xtb_data, "_run_segment", lambda *a: ran.append(a[1]["segment"]) or real(*a))
    for rerun in range(2):
        got = xtb_data.sample_segments(water, cfg, path, calculator=LennardJones())
        assert len(ran) == resampled, f"rerun {rerun} sampled {ran}"     # the second samples nothing more
        assert len(read(path, index=":")) == len(ref)                    # no partial, no second copy
        assert [a.info["segment"] for a in got] == [a.info["segment"] for a in ref]
        assert [a.info["index_in_segment"] for a in got] == [a.info["index_in_segment"] for a in ref]
        np.testing.assert_array_equal(np.array([a.positions for a in got]), np.array([a.positions for a in ref]))


# -- label_cached keeps the cell and pbc of a periodic frame (audit MP finding 4) ----------------------
def _cu_cell():
    from ase.build import bulk

    return bulk("Cu", "fcc", a=3.61, cubic=True)


def _cu_slab():
    a = _cu_cell().repeat((1, 1, 2))
    a.pbc = (True, True, False)
    return a


def _h2_box():
    return Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.74]], cell=[3.0, 3.0, 3.0], pbc=True)


def _emt():
    from ase.calculators.emt import EMT

    return EMT()


@pytest.mark.parametrize("make, calculator", [(_cu_cell, _emt), (_cu_slab, _emt), (_h2_box, None)],
                         ids=["cu-cell-emt", "cu-slab-emt", "h2-box-xtb"])
def test_label_cached_labels_a_periodic_frame_with_its_cell(tmp_path, make, calculator):
    """A periodic fcc Cu cell came back labelled as the isolated 4-atom cluster (5.11 eV, not
    -0.023 eV) with pbc False, and the cluster and the cell shared one cache key."""
    periodic = make()
    cluster = Atoms(periodic.numbers, positions=periodic.positions)
    calc = calculator() if calculator else None
    cache = tmp_path / "labels.extxyz"
    got_p, got_c = xtb_data.label_cached([periodic, cluster], cache, calculator=calc)
    for frame, got in ((periodic, got_p), (cluster, got_c)):
        direct = frame.copy()
        direct.calc = calculator() if calculator else xtb_data.xtb_calculator()
        assert got.get_potential_energy() == pytest.approx(direct.get_potential_energy(), abs=1e-6)
        np.testing.assert_allclose(got.get_forces(), direct.get_forces(), atol=1e-6)
        assert got.pbc.tolist() == frame.pbc.tolist()
        np.testing.assert_array_equal(got.cell[:], frame.cell[:])
    assert abs(got_p.get_potential_energy() - got_c.get_potential_energy()) > 0.1
    assert got_p.info["key"] != got_c.info["key"]
    back = xtb_data.LabelCache(cache)                                   # read back: same keys, cell and pbc
    assert sorted(back.frames) == sorted([got_p.info["key"], got_c.info["key"]])
    assert back.frames[got_p.info["key"]].pbc.tolist() == periodic.pbc.tolist()
    size = cache.stat().st_size
    xtb_data.label_cached([periodic, cluster], cache, calculator=calc)
    assert cache.stat().st_size == size                                 # a rerun labels nothing


def test_label_cached_refuses_a_periodic_frame_without_its_cell(tmp_path):
    a = Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.74]], pbc=True)
    with pytest.raises(InputError, match="periodic along axis 0, 1, 2"):
        xtb_data.label_cached([a], tmp_path / "labels.extxyz", calculator=_emt())
    assert not (tmp_path / "labels.extxyz").exists()


# -- a cache hit is the calculator's own label (audit A) ----------------------------------------------
def _sum(sigma: float, r0: float):
    from ase.calculators.lj import LennardJones
    from ase.calculators.mixing import SumCalculator
    from ase.calculators.morse import MorsePotential

    return SumCalculator([LennardJones(sigma=sigma, rc=3.0 * sigma), MorsePotential(r0=r0)])


def _mix(weight: float):
    from ase.calculators.mixing import LinearCombinationCalculator

    return LinearCombinationCalculator([_sum(1.0, 1.0)], [weight])


@pytest.mark.parametrize("first, second", [
    (lambda: _sum(1.0, 1.0), lambda: _sum(3.0, 2.0)),                       # the parts differ
    (lambda: _mix(1.0), lambda: _mix(2.0)),                                 # the weights differ
])
def test_sums_of_different_potentials_do_not_share_labels(tmp_path, first, second):
    """ASE's mixing calculators keep their parts out of ``todict()``: two sums of different potentials
    had one labeller id, and the cache returned the first one's labels for the second (-0.22 eV for a
    water whose energy under the second is 6.2e6 eV)."""
    frames = _lj_frames(2)
    a, b = first(), second()
    assert xtb_data.labeller_id(a) != xtb_data.labeller_id(b)
    cache = tmp_path / "labels.extxyz"
    xtb_data.label_cached(frames, cache, calculator=a)
    got = xtb_data.label_cached(frames, xtb_data.LabelCache(cache), calculator=b)
    for f, g in zip(frames, got):
        direct = Atoms(f.numbers, positions=f.positions)
        direct.calc = b
        assert g.get_potential_energy() == pytest.approx(direct.get_potential_energy(), rel=1e-9, abs=1e-9)
        np.testing.assert_allclose(g.get_forces(), direct.get_forces(), rtol=1e-7, atol=1e-7)
    assert xtb_data.labeller_id(first()) == xtb_data.labeller_id(a)      # the same calculator: one id, reused


def test_a_method_name_joins_a_calculators_id():
    """``method`` given with a calculator names it in the key (an OpenMM force field's ``todict()`` is
    empty, so two force fields could only be told apart this way); the default keeps existing ids."""
    lj = _CountingLJ()
    assert xtb_data.labeller_id(lj, "ff-A") != xtb_data.labeller_id(lj, "ff-B")
    assert xtb_data.labeller_id(lj) == xtb_data.labeller_id(lj, xtb_data.METHOD)
    assert xtb_data.labeller_id(lj).startswith(f"{__name__}._CountingLJ")


@needs_tblite
def test_frames_labelled_before_are_filed_under_the_new_labeller(tmp_path):
    """Frames that carry ``info["labeller"]`` from an earlier labelling (read from another cache) and
    are labelled again with xTB: the stale name was kept, so the reloaded cache filed the xTB label
    under the other calculator's key and returned it as that calculator's (-137.9 eV, xTB's, for a
    Lennard-Jones energy of 0.018 eV), and labelled the frames with xTB again on every rerun."""
    frames = _lj_frames(2)
    old = xtb_data.label_cached(frames, tmp_path / "a.extxyz", calculator=_CountingLJ())
    assert all("labeller" in a.info for a in old)
    new = xtb_data.label_cached(old, tmp_path / "b.extxyz")                      # GFN2-xTB
    assert all(a.info["method"] == xtb_data.METHOD and "labeller" not in a.info for a in new)
    cache = xtb_data.LabelCache(tmp_path / "b.extxyz")
    assert sorted(cache.frames) == sorted(a.info["key"] for a in new)
    calc = _CountingLJ()
    again = xtb_data.label_cached(frames, cache, calculator=calc)      # not in b: labelled, not taken from xTB's
    assert calc.calls >= 2
    for a, b in zip(again, old):
        assert a.get_potential_energy() == pytest.approx(b.get_potential_energy(), abs=1e-8)
    size = (tmp_path / "b.extxyz").stat().st_size
    xtb_data.label_cached(old, xtb_data.LabelCache(tmp_path / "b.extxyz"))     # xTB's found again
    assert (tmp_path / "b.extxyz").stat().st_size == size                    # nothing labelled twice


@pytest.mark.parametrize("keys", [("energy",), ("free_energy",), ("energy", "free_energy"), ("forces",)])
def test_labels_carried_in_a_frames_info_do_not_crash_the_cache(tmp_path, keys):
    """A frame read from an extxyz without a calculator keeps its labels in ``info``: writing the
    new label raised "key from calculator already exists" after the label was computed, and every
    rerun computed it again and crashed the same way. The old values are dropped: the new label is
    kept, read back, and not computed twice."""
    frames = _lj_frames(2)
    for a in frames:
        for k in keys:
            a.info[k] = np.zeros((len(a), 3)) if k == "forces" else -5.0
    calc = _CountingLJ()
    first = xtb_data.label_cached(frames, tmp_path / "c.extxyz", calculator=calc)
    calls = calc.calls
    again = xtb_data.label_cached(frames, xtb_data.LabelCache(tmp_path / "c.extxyz"), calculator=calc)
    assert calc.calls == calls
    for a, b in zip(first, again):
        assert a.get_potential_energy() == pytest.approx(b.get_potential_energy(), abs=1e-10) != -5.0


@needs_tblite
def test_labels_of_two_tblite_versions_never_mix_in_one_data_set(tmp_path, monkeypatch):
    """A run interrupted, tblite upgraded, the run resumed: the new labels joined the old ones and the
    card named the new version for all of them (the cache key has no version in it)."""
    real = xtb_data.tblite_version()
    cfg = small_config()
    card = xtb_data.make_dataset("water", tmp_path, cfg)
    labels = tmp_path / "labels.extxyz"
    assert {a.info["tblite"] for a in read(labels, index=":")} == {"v" + real}
    assert card["label_versions"] == {"tblite": real} and card["versions"]["tblite"] == real

    def keep_first(n, strip=False):     # an interrupted labelling (optionally: by an older lawful)
        frames = read(labels, index=":")[:n]
        for a in frames:
            if strip:
                a.info.pop("tblite")
        write(labels, frames, format="extxyz")
        return labels.read_bytes()

    cases = [("recorded in each label", False, None), ("an older cache: its card says", True, "label_versions")]
    for what, strip, drop in cases:
        before = keep_first(6, strip)
        if drop:
            on_disk = json.loads((tmp_path / "card.json").read_text())
            on_disk.pop(drop)
            (tmp_path / "card.json").write_text(json.dumps(on_disk))
        monkeypatch.setattr(xtb_data, "tblite_version", lambda: "0.0.1")
        with pytest.raises(InputError, match=rf"labelled .* by tblite {real}, and the 4 new label\(s\) would be "
                                             r"made by tblite 0.0.1"):
            xtb_data.make_dataset("water", tmp_path, cfg)
        assert labels.read_bytes() == before, what         # nothing labelled
        monkeypatch.undo()
        card = xtb_data.make_dataset("water", tmp_path, cfg)   # finished with the version that began it
        assert card["label_versions"] == {"tblite": real} and card["counts"]["total_frames"] == 10, what
    # nothing new to label: another version may write the card, which names both
    monkeypatch.setattr(xtb_data, "tblite_version", lambda: "0.0.1")
    monkeypatch.setattr(xtb_data, "_versions", lambda: {"tblite": "0.0.1"})
    card = xtb_data.make_dataset("water", tmp_path, cfg)
    assert card["label_versions"] == {"tblite": real} and card["versions"]["tblite"] == "0.0.1"

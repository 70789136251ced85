"""The ``lawful`` command line end to end: data -> train -> md in both engines, and its errors."""

import json

import pytest

from lawful.integrations.cli import build_parser, main


def test_every_subcommand_has_help(capsys):
    parser = build_parser()
    for cmd in ("demo", "data", "train", "md", "fluid", "bench"):
        with pytest.raises(SystemExit) as exc:
            parser.parse_args([cmd, "--help"])
        assert exc.value.code == 0
        assert "--out" in capsys.readouterr().out


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    assert main(["data", "--out", str(root / "d"), "--n-md", "2", "--n-rattled", "2", "--n-strained", "2",
                 "--temperatures", "300", "900"]) == 0
    assert (root / "d" / "data.extxyz").is_file() and (root / "d" / "data.db").is_file()
    assert main(["train", "--data", str(root / "d" / "data.db"), "--epochs", "2", "--out", str(root / "t")]) == 0
    return root


def test_data_train_writes_a_model_with_its_training_summary(trained):
    from lawful.forcefields import load_model

    model = load_model(trained / "t" / "conservative.lawful")
    assert model.species == ["Cu"]
    assert model.training_summary["epochs_run"] == 2
    assert model.training_summary["val_force_mae_eV_per_A"] > 0


@pytest.mark.parametrize("engine", ["ase", "openmm"])
def test_md_with_the_trained_model_in_both_engines(trained, engine, capsys):
    out = trained / f"md-{engine}"
    assert main(["md", "--engine", engine, "--model", str(trained / "t" / "conservative.lawful"),
                 "--repeat", "2", "--steps", "20", "--dt", "1", "--report-interval", "5", "--out", str(out)]) == 0
    doc = json.loads((out / "md.json").read_text())
    assert doc["engine"] == engine and doc["n_atoms"] == 32
    # the model's own accuracy beside the drift (a clean drift is not a good model: first-hour audit 4.6)
    from lawful.forcefields import load_model

    card = load_model(trained / "t" / "conservative.lawful").training_summary
    acc = doc["settings"]["model_validation"]
    assert acc["force_mae_meV_per_A"] == pytest.approx(1e3 * card["val_force_mae_eV_per_A"])
    assert acc["energy_mae_meV_per_atom"] == pytest.approx(1e3 * card["val_energy_mae_per_atom_eV"])
    assert acc["frames"] == card["n_val"]
    assert f"model accuracy: validation force MAE {acc['force_mae_meV_per_A']:.3g} meV/Å" in capsys.readouterr().out
    assert doc["drift"]["n_samples"] == 5  # t = 0 plus every 5 steps
    lines = (out / "drift.csv").read_text().splitlines()
    assert len(lines) == 6  # header + 5 samples, flushed as the run went
    assert (out / ("trajectory.traj" if engine == "ase" else "trajectory.dcd")).stat().st_size > 0


def test_md_with_a_missing_model_file_is_a_clear_error(tmp_path, capsys):
    code = main(["md", "--model", str(tmp_path / "nope.lawful"), "--repeat", "1", "--steps", "20",
                 "--out", str(tmp_path / "o")])
    assert code == 2
    err = capsys.readouterr().err
    assert "nope.lawful" in err


def test_md_rejects_a_bad_time_step(tmp_path, capsys):
    assert main(["md", "--dt", "-1", "--repeat", "1", "--out", str(tmp_path)]) == 2
    assert "timestep_fs=-1" in capsys.readouterr().err


def test_fluid_writes_metrics_plots_and_frames(tmp_path):
    out = tmp_path / "fluid"
    assert main(["fluid", "--scene", "taylor_green", "--n", "16", "--steps", "6", "--frame-every", "3",
                 "--dtype", "float64", "--out", str(out)]) == 0
    rows = (out / "metrics.csv").read_text().splitlines()
    assert len(rows) == 7  # header + one row per step
    assert (out / "metrics.png").stat().st_size > 0
    assert sorted(p.name for p in (out / "frames").glob("*.png")) == ["vorticity_000003.png", "vorticity_000006.png"]


@pytest.mark.parametrize("re", [100.0, 1000.0])
def test_fluid_runs_the_lid_driven_cavity_at_the_reynolds_number_asked(tmp_path, re):
    """--re reaches the cavity: nu = U L / Re with L = 1 (the box side) and the lid moving at U = 1,
    and the lid drags the fluid along +x near the top wall."""
    import csv

    out = tmp_path / "ldc"
    assert main(["fluid", "--scene", "lid_driven_cavity", "--re", str(re), "--n", "16", "--steps", "20",
                 "--frame-every", "0", "--dtype", "float64", "--out", str(out)]) == 0
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert len(rows) == 20
    ke = [float(r["kinetic_energy"]) for r in rows]
    assert ke[0] > 0 and ke[-1] > ke[0]          # started at rest, driven by the lid
    from lawful.fluids import scenes

    assert scenes.lid_driven_cavity(re=re, n=16).make_solver().config.viscosity == pytest.approx(1.0 / re)


def test_fluid_unknown_scene_is_rejected(capsys):
    assert main(["fluid", "--scene", "tornado"]) == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'tornado'" in err and err.startswith("lawful fluid: error:") and err.count("\n") == 1


def test_bench_runs_a_suite_script_and_collects_its_json(tmp_path, monkeypatch, capsys):
    """`lawful bench` runs each bench_*.py in its own process with the results folder and the
    quick flag in its environment; the script's JSON (machine, versions, figures) comes back."""
    suite = tmp_path / "suite"
    suite.mkdir()
    (suite / "bench_probe.py").write_text(
        "from lawful.integrations.benchmarking import quick_requested, write_result\n"
        "write_result('probe', {'quick': quick_requested(), 'ratio': 0.5})\n")
    (suite / "bench_other.py").write_text("raise SystemExit('must not run')\n")
    out = tmp_path / "res"
    assert main(["bench", "--suite", str(suite), "--out", str(out), "--only", "probe", "--quick"]) == 0
    doc = json.loads((out / "probe.json").read_text())
    assert doc["figures"] == {"quick": True, "ratio": 0.5}
    assert doc["machine"]["cores"] >= 1 and doc["versions"]["torch"]
    # how fast the machine ran, at the script's start and when it wrote, in the units the keys name
    # (a small torch op takes microseconds, a Python loop step tens of ns, a copy GB/s)
    for when in ("at_start", "at_write"):
        speed = doc["machine_speed"][when]
        assert set(speed) == {"torch_op_us", "python_loop_ns", "copy_gbytes_per_s"}
        assert 0.05 < speed["torch_op_us"] < 500 and 1 < speed["python_loop_ns"] < 5000
        assert 0.1 < speed["copy_gbytes_per_s"] < 5000
    summary = json.loads((out / "summary.json").read_text())
    assert summary["benchmarks"]["probe"]["figures"] == {"quick": True, "ratio": 0.5}
    progress = capsys.readouterr().out
    assert "[bench 1/1] bench_probe.py ..." in progress and "[bench 1/1] bench_probe.py: done in" in progress


def test_bench_unknown_name_is_a_clear_error(tmp_path, capsys):
    suite = tmp_path / "suite"
    suite.mkdir()
    (suite / "bench_probe.py").write_text("")
    assert main(["bench", "--suite", str(suite), "--only", "nope"]) == 2
    assert "unknown benchmark(s) ['nope']" in capsys.readouterr().err


@pytest.mark.parametrize("variable", ["LAWFUL_BENCH_QUICK", "LAWFUL_BENCH_TINY"])
def test_bench_refuses_small_sizes_from_the_environment_without_quick(tmp_path, monkeypatch, capsys, variable):
    """An exported LAWFUL_BENCH_QUICK=1 (or _TINY) made every script of a plain `lawful bench` run small,
    and their figures went into SUITE/results, where the committed full-size results are."""
    suite = tmp_path / "suite"
    suite.mkdir()
    (suite / "bench_probe.py").write_text(
        "from lawful.integrations.benchmarking import quick_requested, write_result\n"
        "write_result('probe', {'quick': quick_requested()})\n")
    monkeypatch.setenv(variable, "1")
    assert main(["bench", "--suite", str(suite)]) == 2
    err = capsys.readouterr().err
    assert f"{variable}=1 in the environment" in err and "pass --quick" in err and err.count("\n") == 1
    assert not (suite / "results").exists()
    assert main(["bench", "--suite", str(suite), "--quick"]) == 0
    assert json.loads((suite / "results-quick" / "probe.json").read_text())["figures"] == {"quick": True}


def test_data_shows_progress_for_sampling_and_labelling(tmp_path, capsys):
    assert main(["data", "--out", str(tmp_path), "--n-md", "2", "--n-rattled", "1", "--n-strained", "1",
                 "--temperatures", "300", "--repeat", "1"]) == 0
    err = capsys.readouterr().err
    assert "MD sampling" in err and "labelling" in err and "4/4" in err  # tqdm bars: 2 MD + 1 + 1 frames


def test_fluid_never_reports_an_earlier_runs_outputs_as_its_own(tmp_path, capsys):
    """With --steps 0 the CSV of an earlier run in --out was read, plotted and printed as this
    run's (a karman run of 0 steps showed a Taylor-Green run's 20 steps), and a rerun's frames
    mixed with the earlier run's."""
    out = tmp_path / "fluid"
    common = ["--n", "16", "--dtype", "float64", "--out", str(out)]
    assert main(["fluid", "--scene", "taylor_green", "--steps", "6", "--frame-every", "2", *common]) == 0
    capsys.readouterr()
    assert main(["fluid", "--scene", "kolmogorov", "--steps", "0", *common]) == 0
    said = capsys.readouterr().out
    assert ": 0 steps" in said and "metrics:" not in said and "frames:" not in said
    assert main(["fluid", "--scene", "kolmogorov", "--steps", "3", "--frame-every", "3", *common]) == 0
    assert sorted(p.name for p in (out / "frames").glob("*.png")) == ["vorticity_000003.png"]
    assert len((out / "metrics.csv").read_text().splitlines()) == 4
    # a run that writes no frames leaves none of the earlier run's either (nor its animation)
    (out / "vorticity.gif").write_bytes(b"GIF89a earlier")
    assert main(["fluid", "--scene", "kolmogorov", "--steps", "2", "--frame-every", "0", *common]) == 0
    assert list((out / "frames").glob("*.png")) == [] and not (out / "vorticity.gif").exists()
    # --steps 0 with --animate writes an animation of this run: the earlier run's metrics, plot and
    # frames went on standing beside it (report audit 4)
    assert main(["fluid", "--scene", "kolmogorov", "--steps", "2", "--frame-every", "1", *common]) == 0
    assert main(["fluid", "--scene", "taylor_green", "--steps", "0", "--animate", *common]) == 0
    assert sorted(p.name for p in out.rglob("*") if p.is_file()) == ["vorticity.gif"]


def _corrector_file(path, trained_on):
    from lawful.fluids import correctors, scenes

    corr = correctors.DivergenceFreeCorrector.for_scene(scenes.make("karman", n=16))
    corr.save(path, metadata={"trained_on": trained_on})
    return path


@pytest.mark.parametrize("trained_on, run, text", [
    (dict(scene="karman", n=16, cells_per_diameter=4.0, re=[100.0, 200.0]), ["--n", "32", "--re", "150"], None),
    (dict(scene="karman", n=16, cells_per_diameter=4.0, re=[100.0, 200.0]), ["--n", "64", "--re", "150"],
     "4 cells across the cylinder (this run: 8"),
    (dict(scene="karman", n=16, cells_per_diameter=4.0, re=[100.0, 200.0]), ["--n", "32", "--re", "400"],
     "Re 100-200 (this run: 400)"),
    (dict(scene="karman", n=16, cells_per_diameter=4.0, re=[100.0]), ["--scene", "lid_driven_cavity", "--n", "16"],
     "scene karman (this run: lid_driven_cavity)"),
])
def test_fluid_warns_when_a_corrector_runs_outside_its_training(tmp_path, trained_on, run, text):
    """A trained corrector ran on any scene, grid or Reynolds number without a word (the README's
    example trained with 4 cells across the cylinder and ran with 8)."""
    import warnings

    from lawful.kernels.errors import OutOfDomainWarning

    path = _corrector_file(tmp_path / "c.lawful", trained_on)
    argv = ["fluid", "--scene", "karman", *run, "--steps", "1", "--frame-every", "0", "--corrector", str(path),
            "--out", str(tmp_path / "out")]
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        assert main(argv) == 0
    said = [str(w.message) for w in seen if issubclass(w.category, OutOfDomainWarning)]
    assert (said == []) if text is None else (len(said) == 1 and text in said[0]), said


def test_data_uses_each_calculators_own_temperatures(tmp_path, monkeypatch):
    """lawful data --calc lj sampled argon at 300-1200 K (it melts at 84 K): the EMT default
    replaced the library's own 30/60 K."""
    from lawful.forcefields import reference

    seen, real = {}, reference.lennard_jones_dataset

    def fake(**kw):
        seen.update(kw)
        return real(n_md=1, temperatures=(30.0,), repeat=1)

    monkeypatch.setattr(reference, "lennard_jones_dataset", fake)
    assert main(["data", "--calc", "lj", "--n-md", "1", "--repeat", "1", "--out", str(tmp_path / "lj")]) == 0
    assert list(seen["temperatures"]) == [30, 60]


def test_train_validates_on_a_separate_file_when_given(trained, capsys):
    """lawful train took its validation frames from --data only (a random tenth, sharing
    trajectories with the training frames); --validation FILE validates on other structures."""
    from ase.io import read, write

    from lawful.forcefields import load_model

    frames = read(trained / "d" / "data.extxyz", index=":")
    write(trained / "train.extxyz", frames[:-4])
    write(trained / "val.extxyz", frames[-4:])
    out = trained / "tv"
    assert main(["train", "--data", str(trained / "train.extxyz"), "--validation", str(trained / "val.extxyz"),
                 "--epochs", "1", "--out", str(out)]) == 0
    s = load_model(out / "conservative.lawful").training_summary
    assert (s["n_train"], s["n_val"]) == (len(frames) - 4, 4)
    assert s["ema_decay"] == 0.0
    assert main(["train", "--data", str(trained / "train.extxyz"), "--validation", str(trained / "val.extxyz"),
                 "--epochs", "1", "--ema-decay", "0.99", "--out", str(trained / "tv-ema")]) == 0
    assert load_model(trained / "tv-ema" / "conservative.lawful").training_summary["ema_decay"] == 0.99
    capsys.readouterr()
    assert main(["train", "--data", str(trained / "train.extxyz"), "--validation", str(trained / "nope.extxyz"),
                 "--epochs", "1", "--out", str(trained / "tv2")]) == 2
    assert "--validation" in capsys.readouterr().err


def test_data_refuses_a_folder_holding_another_data_set(tmp_path, capsys):
    """EMT data written into a folder of xTB data left the xTB card.json as the folder's only
    description; with --db elsewhere, an earlier data.db stayed beside the new data.extxyz."""
    small = ["--n-md", "1", "--n-rattled", "1", "--n-strained", "1", "--temperatures", "300", "--repeat", "1"]
    xtb = tmp_path / "xtb"
    xtb.mkdir()
    (xtb / "card.json").write_text('{"molecule": "water"}\n')
    assert main(["data", *small, "--out", str(xtb)]) == 2
    assert "card.json of another data set" in capsys.readouterr().err
    emt = tmp_path / "emt"
    assert main(["data", *small, "--out", str(emt)]) == 0                    # data.extxyz + data.db
    assert main(["data", *small, "--db", str(tmp_path / "else.db"), "--out", str(emt)]) == 2
    assert "data.db of another data set" in capsys.readouterr().err
    assert main(["data", "--calc", "xtb", "--molecule", "water", "--out", str(emt)]) == 2
    assert "data.extxyz, data.db of another data set" in capsys.readouterr().err
    assert main(["data", *small, "--out", str(emt)]) == 0                    # the same kind again: replaced


def test_a_folder_of_another_commands_output_is_noted(tmp_path, capsys):
    """lawful md into a lawful fluid folder put md.json beside metrics.csv without a word (first-hour
    audit 4.3): a note names the other run; the same command again says nothing."""
    out = tmp_path / "shared"
    out.mkdir()
    (out / "md.json").write_text("{}\n")
    fluid = ["fluid", "--scene", "taylor_green", "--n", "16", "--steps", "1", "--frame-every", "0", "--out", str(out)]
    assert main(fluid) == 0
    err = capsys.readouterr().err
    assert f"note: --out {out} holds a lawful md run (md.json); this lawful fluid run writes its files beside it" in err
    (out / "md.json").unlink()
    assert main(fluid) == 0
    assert "note: --out" not in capsys.readouterr().err
    assert (out / "md.json").exists() is False and (out / "metrics.csv").exists()


def test_a_fresh_training_run_says_the_model_file_is_an_earlier_runs(trained, capsys):
    from lawful.forcefields import load_model

    out = trained / "t"
    (out / "conservative.ckpt").unlink(missing_ok=True)   # as the refusal of another run's checkpoint advises
    capsys.readouterr()
    assert main(["train", "--data", str(trained / "d" / "data.db"), "--epochs", "1", "--out", str(out)]) == 0
    got = capsys.readouterr()
    assert "is an earlier run's model" in got.err
    n_val = load_model(out / "conservative.lawful").training_summary["n_val"]
    assert n_val < 10 and f"(from {n_val} validation structure" in got.out and "a rough figure" in got.out
    assert f"next: lawful md --model {out / 'conservative.lawful'} --out md" in got.out


# (options of one `lawful train` after another into one folder, the epochs line it prints): the same command
# again trained nothing (--max-time and --epochs count a resumed run's epochs) and printed the same model line
RUNS = [
    (["--epochs", "2", "--max-time", "1e-9"], "epochs: 1 (1 in this run); stopped: --max-time 1e-09 s of training"),
    (["--epochs", "2", "--max-time", "1e-9"], "epochs: 1 (0 in this run, resumed from {ckpt}); stopped: --max-time"),
    (["--epochs", "2"], "epochs: 2 (1 in this run, resumed from {ckpt}); stopped: all --epochs 2 done"),
    (["--epochs", "2"], "epochs: 2 (0 in this run, resumed from {ckpt}); stopped: all --epochs 2 done"),
]


def test_train_says_how_many_epochs_it_trained_and_why_it_stopped(trained, tmp_path, capsys):
    out = tmp_path / "t"
    for argv, text in RUNS:
        assert main(["train", "--data", str(trained / "d" / "data.db"), *argv, "--out", str(out)]) == 0
        assert text.format(ckpt=out / "conservative.ckpt") in capsys.readouterr().out, argv


def test_train_reads_an_ase_trajectory(tmp_path, capsys):
    """`lawful train --data x.traj` was refused by the command line's suffix list although
    forcefields.train reads trajectories; formats are decided in one place (data_format) now."""
    from ase.io import write

    from lawful.forcefields.reference import emt_metal_dataset

    frames = emt_metal_dataset("Cu", 1, temperatures=(600,), n_md=4, n_rattled=2, n_strained=2, seed=0)
    write(tmp_path / "cu.traj", frames)
    code = main(["train", "--data", str(tmp_path / "cu.traj"), "--epochs", "1",
                 "--out", str(tmp_path / "out")])
    assert code == 0 and (tmp_path / "out" / "conservative.lawful").exists()


def test_warnings_print_as_the_commands_own_lines(tmp_path):
    """Python's warning form (a source path and line, then the line of code, inside the progress
    bar's line) read like a crash to a new user (first-hour audit 2.5)."""
    import subprocess
    import sys

    code = ("import sys; from lawful.integrations.cli import main; sys.exit(main(['md', '--model', 'cu-emt', "
            f"'--lattice', '3.0', '--repeat', '2', '--steps', '20', '--report-interval', '10', '--out', "
            f"{str(tmp_path / 'md')!r}]))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr
    assert "\nlawful md: OutOfDomainWarning: atom 0 (Cu) has a neighbour density" in done.stderr
    assert ".py:" not in done.stderr                  # no source path and line number

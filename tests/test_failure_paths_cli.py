"""The command-line contract (issue 12), as a table of user mistakes across every subcommand.

Each case runs ``lawful`` in-process through ``main([...])`` and asserts: exit status 2; exactly
one line on stderr, ``lawful <cmd>: error: ...``, naming the bad value; no traceback; and that a
file already in the output folder (or the file wrongly passed as the folder) is intact. A few
cases run in a real subprocess: the console script's exit codes, the lock held by a live run, a
stale lock left by a killed one, SIGTERM, and help without torch.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from lawful.integrations.cli import OutputLock, _prepare_out, main

KEEP = "results of an earlier run\n"


@pytest.fixture
def ws(tmp_path):
    """A workspace: an output folder holding an earlier result, a plain file, a text file that is
    not data, a corrupt extxyz, a folder, and a benchmark suite whose one script fails."""
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text(KEEP)
    (tmp_path / "afile").write_text(KEEP)
    (tmp_path / "notes.txt").write_text("not a dataset\n")
    (tmp_path / "corrupt.extxyz").write_text("3\nthis is not extxyz\nCu 0 0\n")
    (tmp_path / "garbage.xyz").write_text("@@@ not a structure @@@\n")
    (tmp_path / "adir").mkdir()
    (tmp_path / "suite").mkdir()
    (tmp_path / "suite" / "bench_fail.py").write_text("raise SystemExit(3)\n")
    return tmp_path


# (subcommand and arguments, text the error line must contain). {t} is the workspace; every case
# writes into {t}/out unless the output folder itself is the mistake.
CASES = [
    # data
    ("data --out {t}/afile", "afile"),
    ("data --out /proc/lawful-nope/x", "/proc/lawful-nope/x"),
    ("data --element Xx --out {t}/out", "'Xx'"),
    ("data --repeat 0 --out {t}/out", "--repeat: 0"),
    ("data --temperatures 300 -5 --out {t}/out", "-5"),
    ("data --n-md two --out {t}/out", "'two'"),
    ("data --calc dft --out {t}/out", "'dft'"),
    ("data --db {t}/adir --out {t}/out", "adir"),
    # train
    ("train --epochs 0 --data {t}/notes.txt --out {t}/out", "--epochs: 0"),
    ("train --epochs -5 --data {t}/notes.txt --out {t}/out", "--epochs: -5"),
    ("train --lr 0 --data {t}/notes.txt --out {t}/out", "--lr: 0"),
    ("train --batch-size 0 --data {t}/notes.txt --out {t}/out", "--batch-size: 0"),
    ("train --force-weight -1 --data {t}/notes.txt --out {t}/out", "--force-weight: -1"),
    ("train --max-time nan --data {t}/notes.txt --out {t}/out", "nan"),
    ("train --ema-decay 1 --data {t}/notes.txt --out {t}/out", "--ema-decay: 1 is not in [0, 1)"),
    ("train --ema-decay -0.1 --data {t}/notes.txt --out {t}/out", "--ema-decay: -0.1 is not in [0, 1)"),
    ("train --out {t}/out", "--data"),
    ("train --data {t}/nope.db --out {t}/out", "nope.db"),
    ("train --data {t}/notes.txt --out {t}/out", "notes.txt"),
    ("train --data {t}/adir --out {t}/out", "adir"),
    ("train --data {t}/corrupt.extxyz --out {t}/out", "corrupt.extxyz"),
    ("train --data {t}/notes.txt --out {t}/afile", "afile"),
    ("train --name ../escape --data {t}/notes.txt --out {t}/out", "'../escape'"),
    # md
    ("md --structure {t}/nope.cif --out {t}/out", "nope.cif"),
    ("md --structure {t}/garbage.xyz --out {t}/out", "garbage.xyz"),
    ("md --engine openmm --platform CUDA --out {t}/out", "'CUDA'"),
    ("md --platform OpenCL --out {t}/out", "'OpenCL'"),
    ("md --threads -1 --out {t}/out", "--threads: -1"),
    ("md --threads 0 --out {t}/out", "--threads: 0"),
    ("md --element Xx --repeat 1 --out {t}/out", "'Xx'"),
    ("md --steps 0 --out {t}/out", "--steps: 0"),
    ("md --model {t}/nope.lawful --repeat 1 --steps 20 --out {t}/out", "nope.lawful"),
    ("md --model {t}/adir --repeat 1 --steps 20 --out {t}/out", "adir"),
    ("md --dt -1 --repeat 1 --out {t}/out", "timestep_fs=-1"),
    ("md --out /proc/lawful-nope/x", "/proc/lawful-nope/x"),
    ("md --device banana --out {t}/out", "'banana'"),
    ("md --steps 5 --report-interval 10 --out {t}/out", "--steps 5"),
    ("md --steps 25 --report-interval 10 --out {t}/out", "not a multiple of --report-interval 10"),
    # first-hour audit 2: a traceback from ASE's EMT; copper nobody asked for blamed on the model
    ("md --element Ar --steps 20 --out {t}/out", "ASE's EMT (the default --model) describes the fcc metals"),
    # audit w22: accepted and ignored (EMT ran in float64 on the CPU)
    ("md --dtype float32 --steps 20 --out {t}/out", "--dtype float32 applies to a lawful model; --model emt is ASE's"),
    ("md --model EMT --dtype float32 --engine openmm --out {t}/out", "--dtype float32 applies to a lawful model"),
    ("md --model organic-xtb --steps 20 --out {t}/out", "without --structure, lawful md builds an fcc Cu supercell"),
    ("fluid --corrector rand --steps 1 --out {t}/out", "neither 'none', 'random' nor a corrector file"),
    ("md --structure {t}/nope.cif --element Ag --repeat 4 --out {t}/out", "--element and --repeat describe"),
    ("md --structure {t}/nope.cif --lattice 4.1 --out {t}/out", "--lattice describe"),
    ("train --device banana --data {t}/notes.txt --out {t}/out", "'banana'"),
    ("data --device cpu --out {t}/out", "--device"),  # labels are ASE/OpenMM float64: no torch options
    # fluid (the options this file owns: the output folder and the shared options)
    ("fluid --scene tornado --out {t}/out", "'tornado'"),
    ("fluid --out {t}/afile", "afile"),
    ("fluid --threads 0 --out {t}/out", "--threads: 0"),
    ("fluid --dtype float16 --out {t}/out", "'float16'"),
    ("fluid --scene taylor_green --re 5 --out {t}/out", "--re does not apply to --scene taylor_green"),
    ("fluid --scene karman --n 4 --out {t}/out", "karman: grid size n=4 must be an integer >= 8 (cells across"),
    ("md --dt 2fs --out {t}/out", "'2fs' is not a number: give the number alone (2), in the unit --help names"),
    ("md --temperature 300K --out {t}/out", "'300K' is not a number: give the number alone (300)"),
    # another unit of the quantity is converted (review w15: '25C' was told to give 25, then ran at 25 K)
    ("md --temperature 25C --out {t}/out", "'25C' is not a number: 25 C is 298.15 K"),
    ("md --dt 0.5ps --out {t}/out", "'0.5ps' is not a number: 0.5 ps is 500 fs"),
    ("md --dt 1,5 --out {t}/out", "'1,5' is not a number: use a decimal point (1.5)"),
    ("md --temperature 77F --out {t}/out", "'77F' is not a number: 77 F is 298.15 K"),
    ("md --temperature 1,500 --out {t}/out", "use a decimal point (1.500) or no thousands separator (1500)"),
    ("fluid --scene smoke-plume --n 3 --out {t}/out", "--n: 3"),    # the hyphen spelling reaches the option checks
    # drawing options with nothing to draw: they were ignored (CLI audit)
    ("fluid --fps 30 --out {t}/out", "--fps sets the animation, which only --animate writes"),
    ("fluid --max-frames 20 --fps 30 --out {t}/out", "--max-frames and --fps set the animation"),
    ("fluid --field speed --frame-every 0 --out {t}/out", "--field speed picks the field drawn"),
    # bench
    ("bench --suite {t}/suite --only nope --out {t}/out", "'nope'"),
    ("bench --suite {t}/missing --out {t}/out", "missing"),
    ("bench --suite {t}/adir --out {t}/out", "adir"),
    ("bench --suite {t}/suite --out {t}/out", "bench_fail.py"),
    ("bench --suite {t}/suite --out {t}/afile", "afile"),
    ("bench --suite {t}/suite --only --out {t}/out", "--only: expected at least one argument"),  # ran them all
    # demo
    ("demo --out {t}/afile", "afile"),
    ("demo --threads 0 --out {t}/out", "--threads: 0"),
    ("demo --dtype float16 --out {t}/out", "'float16'"),
    ("demo --seed one --out {t}/out", "'one'"),
    ("demo --out /proc/lawful-nope/x", "/proc/lawful-nope/x"),
    ("demo --smoke --quick --out {t}/out", "not allowed with"),
]


@pytest.mark.parametrize("argv, names", CASES, ids=[c[0].replace("{t}/", "") for c in CASES])
def test_a_user_mistake_is_one_line_and_exit_status_2(ws, capsys, argv, names):
    args = argv.format(t=ws).split()
    code = main(args)
    err = capsys.readouterr().err
    assert code == 2, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith(f"lawful {args[0]}: error: "), err
    assert names.format(t=ws) in lines[0], err
    assert "Traceback" not in err
    assert (ws / "out" / "keep.txt").read_text() == KEEP
    assert (ws / "afile").read_text() == KEEP


def test_the_table_covers_every_subcommand():
    assert {c[0].split()[0] for c in CASES} == {"data", "train", "md", "fluid", "bench", "demo"}
    assert len(CASES) >= 20


def test_output_is_checked_before_any_work(ws, capsys, monkeypatch):
    """`lawful data --out /proc/x` used to label the whole dataset, then fail to write it."""
    from lawful.forcefields import reference

    def boom(*a, **k):
        raise AssertionError("the dataset was generated before the output folder was checked")

    monkeypatch.setattr(reference, "emt_metal_dataset", boom)
    assert main(["data", "--out", "/proc/lawful-nope/x"]) == 2
    assert main(["data", "--out", str(ws / "out"), "--db", str(ws / "adir")]) == 2


def test_a_second_run_into_a_locked_folder_is_refused(ws, capsys):
    lock = OutputLock(ws / "out", "train").acquire()
    try:
        code = main(["data", "--out", str(ws / "out")])
    finally:
        lock.release()
    err = capsys.readouterr().err
    assert code == 2
    assert f"pid {os.getpid()}: lawful train" in err and "in use" in err
    assert (ws / "out" / "keep.txt").read_text() == KEEP


def test_a_stale_lock_of_a_killed_run_does_not_block(ws):
    """flock dies with its process: the lock file a SIGKILLed run leaves behind is free."""
    code = ("import sys, time; from lawful.integrations.cli import OutputLock; "
            f"lock = OutputLock({str(ws / 'out')!r}, 'md').acquire(); print('locked', flush=True); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        with pytest.raises(Exception, match="in use by a running lawful command"):
            _prepare_out(str(ws / "out"), "data")
    finally:
        proc.kill()
        proc.wait()
    assert (ws / "out" / OutputLock.NAME).exists()  # left behind by the killed run
    _prepare_out(str(ws / "out"), "data").release()


def _lawful(*args, **kwargs):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return subprocess.run([sys.executable, "-m", "lawful.integrations.cli", *args], capture_output=True, text=True,
                          env=env, timeout=300, **kwargs)


def test_console_exit_status_and_single_line_in_a_real_process(ws):
    r = _lawful("train", "--epochs", "-5", "--data", str(ws / "notes.txt"), "--out", str(ws / "out"))
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "--epochs: -5" in r.stderr
    r = _lawful("md", "--structure", str(ws / "nope.cif"), "--out", str(ws / "out"))
    assert r.returncode == 2 and r.stderr.startswith("lawful md: error: ") and "Traceback" not in r.stderr
    assert (ws / "out" / "keep.txt").read_text() == KEEP


@pytest.mark.parametrize("argv", [["--help"], ["--version"]] + [[c, "--help"] for c in
                                                                 ("demo", "data", "train", "md", "fluid", "bench")])
def test_help_and_version_import_no_heavy_engine(argv):
    """`--help` must come back at once: no torch, Taichi or OpenMM import to print it."""
    code = ("import sys; from lawful.integrations.cli import main; rc = main(sys.argv[1:]); "
            "heavy = [m for m in ('torch', 'taichi', 'openmm', 'ase') if m in sys.modules]; "
            "print('HEAVY', heavy, file=sys.stderr); sys.exit(rc)")
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=60)
    wall = time.perf_counter() - t0
    assert r.returncode == 0, r.stderr
    assert "HEAVY []" in r.stderr
    assert wall < 10  # generous on a loaded machine; about 0.1 s idle
    if argv == ["--version"]:
        assert r.stdout.startswith("lawful ")


def test_every_option_shows_its_default():
    from lawful.integrations.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.choices and "train" in a.choices).choices
    for name in ("demo", "data", "train", "md", "fluid", "bench"):
        for action in sub[name]._actions:
            if not action.option_strings or action.dest == "help" or action.required:
                continue
            text = sub[name].formatter_class(prog="x")._get_help_string(action) or ""
            assert action.help, (name, action.dest)
            assert "default" in text, (name, action.dest, text)


def test_bench_finds_its_suite_from_any_folder(tmp_path):
    r = _lawful("bench", "--only", "no-such-benchmark", "--out", str(tmp_path / "res"), cwd=tmp_path)
    assert r.returncode == 2
    assert "unknown benchmark(s) ['no-such-benchmark']; available:" in r.stderr and "drift" in r.stderr


def test_sigterm_is_like_ctrl_c_and_exits_143(tmp_path):
    """`timeout`, batch schedulers and CI send SIGTERM: outputs so far are kept, status 143."""
    out = tmp_path / "md"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "lawful.integrations.cli", "md", "--repeat", "2",
                             "--steps", "200000", "--report-interval", "5", "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 240
    csv = out / "drift.csv"
    while time.monotonic() < deadline and not (csv.exists() and len(csv.read_text().splitlines()) > 3):
        time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143, stderr
    assert "interrupted (SIGTERM)" in stderr and "Traceback" not in stderr
    assert str(out.resolve()) in stdout
    assert len(csv.read_text().splitlines()) > 3


def test_a_clean_run_removes_its_lock(ws):
    (ws / "suite" / "bench_fail.py").unlink()
    (ws / "suite" / "bench_probe.py").write_text(
        "from lawful.integrations.benchmarking import write_result\nwrite_result('probe', {'ratio': 0.5})\n")
    assert main(["bench", "--suite", str(ws / "suite"), "--out", str(ws / "out")]) == 0
    assert not (ws / "out" / OutputLock.NAME).exists()
    assert (ws / "out" / "probe.json").is_file() and (ws / "out" / "keep.txt").read_text() == KEEP


def test_md_strict_stops_when_atoms_leave_the_training_domain(ws, capsys):
    """A crystal squeezed to a = 2.3 Å puts Cu atoms 1.63 Å apart: below the shipped model's
    training data. --strict makes that an error (exit 2, after the progress bar), not a warning.
    Squeezed to a = 1 Å (0.71 Å apart, a neighbour density 50x the training range's top) it is
    refused as a unit mistake, strict or not, before the pairs are reported."""
    code = main(["md", "--model", "cu-emt", "--lattice", "2.3", "--repeat", "1", "--steps", "20", "--strict",
                 "--out", str(ws / "out")])
    err = capsys.readouterr().err
    assert code == 2, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("lawful md: error: ") and "1.626 Å apart" in last and "(strict mode)" in last
    assert "Traceback" not in err
    assert (ws / "out" / "keep.txt").read_text() == KEEP
    for strict in (["--strict"], []):
        code = main(["md", "--model", "cu-emt", "--lattice", "1.0", "--repeat", "1", "--steps", "20", *strict,
                     "--out", str(ws / "out")])
        last = capsys.readouterr().err.strip().splitlines()[-1]
        assert code == 2 and "more than 10x the top of that range" in last and "nm for Å" in last, last


def test_sigterm_during_training_keeps_the_checkpoint_and_says_how_to_resume(tmp_path):
    assert main(["data", "--out", str(tmp_path / "d"), "--n-md", "2", "--n-rattled", "2", "--n-strained", "2",
                 "--temperatures", "300", "--repeat", "1"]) == 0
    out = tmp_path / "t"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "lawful.integrations.cli", "train", "--data",
                             str(tmp_path / "d" / "data.extxyz"), "--epochs", "100000", "--patience", "1000000",
                             "--min-lr", "0", "--out", str(out)],  # no early stop: the run is still going at SIGTERM
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and not (out / "conservative.ckpt").exists():
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143, stderr
    assert "run the same command again to resume" in stdout and "Traceback" not in stderr
    assert (out / "conservative.ckpt").stat().st_size > 0
    assert not (out / "conservative.lawful").exists()  # no half-trained model passed off as finished


# -- lawful data --db: the database file is locked like --out (audit MP finding 1) ---------------------
@pytest.mark.parametrize("outer, inner, code", [
    (["--out", "a", "--db", "shared.db"], ["--out", "b", "--db", "shared.db"], 2),   # one --db, two runs
    (["--out", "a"], ["--out", "b", "--db", "a/data.db"], 2),                      # --db names another's default
    (["--out", "a", "--db", "a/data.db"], ["--out", "b", "--db", "a/./data.db"], 2),  # one file, two spellings
    (["--out", "a", "--db", "one.db"], ["--out", "b", "--db", "two.db"], 0),         # two files: both run
], ids=["same-db", "default-db", "same-file", "other-db"])
def test_a_second_run_writing_the_same_database_is_refused(ws, capsys, monkeypatch, outer, inner, code):
    """`lawful data --db` was not locked: two runs wrote one database at once (one printed "written
    to" an empty database). The second run, started while the first computes, is refused before
    it computes anything, with the first run's pid; a run writing another file is not held up."""
    from ase.build import bulk
    from ase.calculators.emt import EMT

    from lawful.forcefields import reference

    frames = reference.label([bulk("Cu", "fcc", a=3.61, cubic=True)], EMT())
    codes, started = [], []

    def dataset(*args, **kwargs):
        if not started:                                  # the outer run starts the inner one, once
            started.append(1)
            codes.append(main(["data", *[x if x.startswith("--") else str(ws / x) for x in inner]]))
        return frames

    monkeypatch.setattr(reference, "emt_metal_dataset", dataset)
    assert main(["data", *[x if x.startswith("--") else str(ws / x) for x in outer]]) == 0
    err = capsys.readouterr().err
    assert codes == [code]
    if code == 2:
        assert f"pid {os.getpid()}: lawful data" in err and "--db" in err and "in use" in err
        assert not (ws / "b" / "data.extxyz").exists()
    else:
        assert (ws / "b" / "data.extxyz").exists() and (ws / "two.db").exists()
    assert len(reference.read_db(ws / outer[-1] if outer[-2] == "--db" else ws / "a" / "data.db")) == 1
    assert not list(ws.rglob("*.lawful.lock"))           # both locks released

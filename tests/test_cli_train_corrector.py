"""``lawful train-corrector``: solver-in-the-loop corrector training from the command line.

A tiny Kármán case (coarse n = 8, reference 2x finer, 10 recorded steps) in float64: the run
writes a corrector that ``lawful fluid --corrector`` runs divergence-free, the same command again
resumes from the checkpoint (no extra iteration), two ranks started as torchrun starts them
(RANK / WORLD_SIZE / MASTER_ADDR / MASTER_PORT / LOCAL_RANK) give the weights of one process with
the same global batch (3 windows: rank 0 unrolls 2, rank 1 one), and user mistakes exit 2 with
one line naming the value, before anything is computed or overwritten.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import pytest
import torch

from conftest import run_ranks  # the torchrun-style launcher shared by the DDP tests
from lawful.integrations.cli import main

LAWFUL = os.path.join(os.path.dirname(sys.executable), "lawful")
TINY = ["--n", "8", "--factor", "2", "--ref-steps", "10", "--warmup", "2", "--train-re", "80",
        "--iterations", "3", "--unroll", "3", "--batch-windows", "3", "--validate-every", "2",
        "--validation-steps", "3", "--hidden", "4", "--layers", "2", "--lr", "1e-2", "--dtype", "float64"]
ITERATIONS = 3


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR",
                                                             "MASTER_PORT")}
    env.update(OMP_NUM_THREADS="1", **extra)
    return env


def _train(out, cache, argv=TINY):
    return subprocess.run([LAWFUL, "train-corrector", *argv, "--out", str(out), "--reference-cache", str(cache)],
                          capture_output=True, text=True, timeout=120, env=_env())


def _with(argv, **options):
    """TINY with ``options`` (``validation_steps=None`` drops that option) set."""
    out = list(argv)
    for name, value in options.items():
        flag = "--" + name.replace("_", "-")
        k = out.index(flag)
        del out[k:k + 2]
        if value is not None:
            out += [flag, str(value)]
    return out


def _weights(path):
    from lawful.fluids.correctors import load_corrector

    return load_corrector(path, dtype=torch.float64).state_dict()


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    root = tmp_path_factory.mktemp("train_corrector")
    r = _train(root / "one", root / "ref")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    return root, r


def test_one_process_writes_a_corrector_that_lawful_fluid_runs_divergence_free(single):
    root, r = single
    out = root / "one"
    assert sorted(p.name for p in out.iterdir()) == ["corrector.ckpt", "corrector.lawful", "train_log.jsonl"]
    assert f"{ITERATIONS} iterations ({ITERATIONS} in this run)" in r.stdout and "best validation error" in r.stdout
    assert len((out / "train_log.jsonl").read_text().splitlines()) == ITERATIONS
    assert any(p.name.startswith("karman_re80_n8") for p in (root / "ref").iterdir())
    from lawful.fluids.correctors import DivergenceFreeCorrector, load_corrector

    corr = load_corrector(out / "corrector.lawful", dtype=torch.float64)
    assert isinstance(corr, DivergenceFreeCorrector)
    assert corr.metadata["training"]["iterations"] == ITERATIONS
    assert corr.metadata["training"]["train_cases"] == ["karman_re80_n8"]
    f = subprocess.run([LAWFUL, "fluid", "--scene", "karman", "--n", "16", "--re", "80", "--steps", "10",
                        "--frame-every", "0", "--dtype", "float64", "--corrector", str(out / "corrector.lawful"),
                        "--out", str(root / "fluid")], capture_output=True, text=True, timeout=120, env=_env())
    assert f.returncode == 0, f.stderr[-2000:]
    rows = list(csv.DictReader(open(root / "fluid" / "metrics.csv")))
    assert len(rows) == 10
    assert max(float(row["div_max_rel"]) for row in rows) < 1e-5


def test_lawful_fluid_runs_the_training_flow_when_not_told_another(single):
    """A corrector file alone (no --scene/--n/--diameter/--aspect/--re): lawful fluid takes them from
    its training record (Kármán, n 8, a cylinder of 0.25, aspect 2, Re 80 outside the default
    100), says so, and runs without an out-of-domain warning; an option given wins and is named
    by the domain check."""
    root, _ = single
    corr = str(root / "one" / "corrector.lawful")
    f = subprocess.run([LAWFUL, "fluid", "--corrector", corr, "--steps", "3", "--frame-every", "0",
                        "--dtype", "float64", "--out", str(root / "fluid_default")],
                       capture_output=True, text=True, timeout=120, env=_env())
    assert f.returncode == 0, f.stderr[-2000:]
    assert ("--scene karman --n 8 --diameter 0.25 --aspect 2 --re 80 from the corrector's training record"
            in f.stdout), f.stdout
    assert "OutOfDomainWarning" not in f.stderr, f.stderr
    assert "karman n=8" in f.stdout
    g = subprocess.run([LAWFUL, "fluid", "--corrector", corr, "--n", "16", "--steps", "1", "--frame-every", "0",
                        "--dtype", "float64", "--out", str(root / "fluid_n16")],
                       capture_output=True, text=True, timeout=120, env=_env())
    assert g.returncode == 0, g.stderr[-2000:]
    assert "--scene karman --diameter 0.25 --aspect 2 --re 80 from" in g.stdout, g.stdout
    assert "OutOfDomainWarning" in g.stderr and "cells across the cylinder (this run: 4" in g.stderr, g.stderr


def test_the_same_command_again_resumes_without_extra_iterations(single):
    root, _ = single
    out = root / "one"
    before = _weights(out / "corrector.lawful")
    r = _train(out, root / "ref")
    assert r.returncode == 0, r.stderr[-2000:]
    assert f"{ITERATIONS} iterations (0 in this run)" in r.stdout
    assert len((out / "train_log.jsonl").read_text().splitlines()) == ITERATIONS
    after = _weights(out / "corrector.lawful")
    for k, v in before.items():
        assert torch.equal(after[k], v), k


# (options changed from TINY, the training record's validation_steps): a rollout stops at the end of the
# reference (--ref-steps 10), and the record says how many steps it ran (it said 500 with the default)
RECORDED = [({}, 3), ({"validation_steps": None}, 10), ({"validation_steps": 10}, 10)]


@pytest.mark.parametrize("options, steps", RECORDED, ids=[str(c[0]) for c in RECORDED])
def test_the_training_record_names_the_validation_steps_run_and_the_reference(single, tmp_path, options, steps):
    root, r = single
    if options:
        r = _train(tmp_path / "run", root / "ref", _with(TINY, **options))
        assert r.returncode == 0, r.stderr[-2000:]
    from lawful.fluids.correctors import load_corrector

    out = tmp_path / "run" if options else root / "one"
    record = load_corrector(out / "corrector.lawful", dtype=torch.float64).metadata["training"]
    assert record["config"]["validation_steps"] == steps
    assert record["reference"] == {"factor": 2, "steps": 10, "warmup": 2}


def test_a_resumed_run_given_more_iterations_anneals_to_their_end(single, tmp_path):
    """The checkpoint's cosine schedule kept its old length: resumed with --iterations 6 after 3,
    the learning rate climbed from a tenth of --lr back up to it (--lr 1e-2, then 2.5e-3, 7.5e-3,
    1e-2), where --help says it is annealed to a tenth."""
    import shutil

    root, _ = single
    out = tmp_path / "longer"
    shutil.copytree(root / "one", out)
    r = _train(out, root / "ref", _with(TINY, iterations=2 * ITERATIONS))
    assert r.returncode == 0, r.stderr[-2000:]
    assert f"{2 * ITERATIONS} iterations ({ITERATIONS} in this run)" in r.stdout
    lrs = [json.loads(line)["lr"] for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert len(lrs) == 2 * ITERATIONS
    assert all(b <= a * (1 + 1e-9) for a, b in zip(lrs, lrs[1:])), lrs     # never rises
    assert min(lrs) >= 1e-3 * (1 - 1e-9), lrs                                # a tenth of --lr 1e-2 at most


def test_two_ranks_give_the_weights_of_one_process(single):
    root, _ = single
    out = root / "two"
    ranks = run_ranks([LAWFUL, "train-corrector", *TINY, "--out", out, "--reference-cache", root / "ref"],
                      timeout=120)
    texts = [t for _, t in ranks]
    assert [rc for rc, _ in ranks] == [0, 0], texts
    assert "corrector written to" in texts[0] and "corrector written to" not in texts[1]
    assert len((out / "train_log.jsonl").read_text().splitlines()) == ITERATIONS   # one writer
    one, two = _weights(root / "one" / "corrector.lawful"), _weights(out / "corrector.lawful")
    assert one.keys() == two.keys()
    for k, v in one.items():
        assert torch.allclose(two[k], v, rtol=0, atol=1e-10), k
    # training moved the weights (so the equality is not that of two untouched initialisations)
    from lawful.fluids.corrector_training import make_corrector

    torch.manual_seed(0)
    init = make_corrector("hard", dtype=torch.float64, hidden=4, layers=2, use_reynolds=True,
                          init_gain=0.01).state_dict()
    assert max(float((two[k] - init[k]).abs().max()) for k in init) > 1e-4


KEEP = "written before the failing command\n"
CASES = [
    ("--scene channel", "channel"),
    ("--variant strong", "strong"),
    ("--iterations 0", "--iterations: 0"),
    ("--train-re -5", "-5"),
    ("--train-re 100 nan", "nan"),
    ("--n 4", "--n 4"),
    ("--n 6", "--n 6"),
    ("--out {t}/afile", "afile"),
    ("--reference-cache {t}/afile", "afile"),
    ("--unroll 0", "--unroll: 0"),
    ("--unroll 20 --ref-steps 10", "--unroll 20"),
    ("--lr -0.1", "-0.1"),
    ("--max-time 0", "--max-time: 0"),
    ("--batch-windows 0", "--batch-windows: 0"),
    ("--layers 1", "--layers: 1"),
    ("--scene kolmogorov --train-re 100", "--train-re 100"),
    ("--scene kolmogorov --n 8", "--n 8"),
    ("--train-seeds 1", "--train-seeds 1"),
    ("--train-re 100 100", "100 100"),
    ("--device cuda", "cuda"),
    ("--iterations 2.5", "2.5"),
    # the rollout stopped at the reference's end: 11 steps asked, 10 compared, 11 recorded
    ("--ref-steps 10 --validation-steps 11", "--validation-steps 11 is longer than the 10 recorded reference steps"),
]


@pytest.mark.parametrize("argv, names", CASES, ids=[c[0].replace("{t}/", "") for c in CASES])
def test_a_user_mistake_is_one_line_and_exit_status_2(tmp_path, capsys, argv, names):
    (tmp_path / "afile").write_text(KEEP)
    args = ["train-corrector", "--out", str(tmp_path / "out"), *argv.format(t=tmp_path).split()]
    code = main(args)
    err = capsys.readouterr().err
    assert code == 2, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("lawful train-corrector: error: "), err
    assert names in lines[0], err
    assert (tmp_path / "afile").read_text() == KEEP
    out = tmp_path / "out"
    assert not out.exists() or not any(p.name != ".lawful.lock" for p in out.iterdir())  # nothing computed


def test_help_names_defaults_and_imports_no_torch():
    code = ("import sys; from lawful.integrations.cli import main; rc = main(['train-corrector', '--help']); "
            "heavy = [m for m in ('torch', 'taichi') if m in sys.modules]; print('HEAVY', heavy, file=sys.stderr); "
            "sys.exit(rc)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "HEAVY []" in r.stderr, r.stderr
    text = " ".join(r.stdout.split())
    for phrase in ("--train-re", "default: 100 200", "default: OUT/reference", "(default: hard)", "(default: 600)",
                   "train_log.jsonl", "torchrun"):
        assert phrase in text, phrase


def test_grid_is_the_torchrun_safe_spelling_of_n():
    """torchrun's own argparse reads ``--n`` after the script as an ambiguous abbreviation of its
    options (--nnodes, --nproc-per-node, ...) and stops; ``--grid`` is the same option."""
    from lawful.integrations.cli import build_parser

    parser = build_parser()
    assert parser.parse_args(["train-corrector", "--grid", "12", "--out", "x"]).n == 12
    assert parser.parse_args(["train-corrector", "--n", "12", "--out", "x"]).n == 12
    from torch.distributed.run import get_args_parser

    with pytest.raises(SystemExit):
        get_args_parser().parse_args(["--nproc_per_node=2", "--no-python", "lawful", "train-corrector", "--n", "8"])
    args = get_args_parser().parse_args(["--nproc_per_node=2", "--no-python", "lawful", "train-corrector",
                                         "--grid", "8"])
    assert args.training_script_args == ["train-corrector", "--grid", "8"]


def test_device_auto_says_it_trains_on_the_cpu_when_cuda_is_there(tmp_path, capsys, monkeypatch):
    """--device auto trained on the CPU without a word on a machine with CUDA."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    out = tmp_path / "out"
    code = main(["train-corrector", *TINY, "--device", "auto", "--out", str(out),
                 "--reference-cache", str(tmp_path / "ref")])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "--device auto trains on the CPU" in err, err
    from lawful.fluids.correctors import load_corrector

    assert load_corrector(out / "corrector.lawful", dtype=torch.float64).metadata["training"]["device"] == "cpu"

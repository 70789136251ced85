"""The benchmark suite runs from a clean working directory at its tiniest size.

``lawful bench --quick`` failed after minutes when a script wrote into a folder only the author's
checkout had (``runs/corrector_data``). :func:`conftest.run_benchmarks_tiny` runs ``benchmarks/bench_*.py``
through :func:`lawful.integrations.bench_suite.run_suite` with ``LAWFUL_BENCH_TINY=1``, from an
empty temporary working directory, results into ``tmp_path``: each script must exit 0 and write a
JSON result that says how it was made. No figure is checked (tiny sizes are not results). Here the
force-field half; the fluid half is ``test_bench_quick_fluids.py``.
"""

from __future__ import annotations

import json

import pytest
from conftest import BENCH_HALVES, BENCH_SUITE, EXPECTED_RESULTS, run_benchmarks_tiny  # the shared tiny run

def test_the_two_halves_cover_every_benchmark_and_every_committed_result():
    """A new ``bench_*.py`` must join one half; every committed result must be written by a script
    of one (no committed JSON comes only from a flag)."""
    scripts = sorted(p.name for p in BENCH_SUITE.glob("bench_*.py"))
    halves = BENCH_HALVES["forcefields"] + BENCH_HALVES["fluids"]
    assert sorted(halves) == scripts and len(set(halves)) == len(halves)
    assert set(EXPECTED_RESULTS) == set(scripts)
    written = {f for fs in EXPECTED_RESULTS.values() for f in fs}
    committed = {p.name for p in (BENCH_SUITE / "results").glob("*.json")} - {"summary.json"}
    assert committed <= written, f"committed results no plain suite run writes: {committed - written}"


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_the_forcefield_benchmarks_run_tiny_from_a_clean_directory(tmp_path, monkeypatch):
    run_benchmarks_tiny(BENCH_HALVES["forcefields"], tmp_path, monkeypatch)


@pytest.mark.parametrize("moved", [False, True])
def test_a_result_names_the_commit_its_run_started_from(tmp_path, monkeypatch, moved):
    """A result written after the checkout moved on (a commit during a long benchmark: it
    happened, and molecules_mace.json claimed the new commit) records the commit the run started
    from as ``git`` and the later one as ``git_at_write``."""
    from lawful.integrations import benchmarking as bm

    start = {"commit": "a" * 40, "dirty": False, "dirty_paths": []}
    later = {"commit": "b" * 40, "dirty": True, "dirty_paths": ["x.py"]} if moved else dict(start)
    monkeypatch.setattr(bm, "_GIT_AT_START", start)
    monkeypatch.setattr(bm, "git_state", lambda root=None: later)
    prov = json.loads(bm.write_result("probe", {"x": 1.0}, out_dir=tmp_path).read_text())["provenance"]
    assert prov["git"] == start
    assert prov.get("git_at_write") == (later if moved else None)


def test_a_failed_script_leaves_its_old_figures_marked_not_as_this_runs(tmp_path, monkeypatch):
    """summary.json after a failed script listed its earlier result as if this run had made it."""
    from lawful.integrations.bench_suite import SUMMARY, run_suite
    from lawful.kernels.errors import LawfulError

    suite, out = tmp_path / "suite", tmp_path / "results"
    suite.mkdir()
    script = suite / "bench_probe.py"
    body = ("import os, sys\nfrom lawful.integrations.benchmarking import write_result\n"
            "if os.environ.get('PROBE_FAIL'): sys.exit(3)\nwrite_result('probe', {'a': 1.0})\n")
    script.write_text(body)
    (suite / "bench_other.py").write_text("from lawful.integrations.benchmarking import write_result\n"
                                          "write_result('other', {'b': 2.0})\n")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    run_suite(suite, out)
    first = json.loads((out / SUMMARY).read_text())
    assert first["last_run"]["failed"] == [] and "status" not in first["benchmarks"]["probe"]
    monkeypatch.setenv("PROBE_FAIL", "1")
    with pytest.raises(LawfulError, match="bench_probe.py"):
        run_suite(suite, out)
    doc = json.loads((out / SUMMARY).read_text())
    assert doc["last_run"]["failed"] == ["bench_probe.py (exit status 3)"]
    assert doc["benchmarks"]["probe"]["status"].startswith("not rewritten by the last `lawful bench` run")
    assert "status" not in doc["benchmarks"]["other"]       # rewritten by this run
    assert doc["benchmarks"]["other"]["versions"]["torch"]  # each result keeps its own versions


def test_an_interrupted_suite_rewrites_the_summary_saying_so(tmp_path, monkeypatch):
    """Ctrl-C in the second script left the summary of the last complete run, whose figures for
    the first script were no longer the file's."""
    import subprocess

    from lawful.integrations import bench_suite
    from lawful.integrations.bench_suite import SUMMARY, run_suite

    suite, out = tmp_path / "suite", tmp_path / "results"
    suite.mkdir()
    for name in ("a", "b", "c"):
        (suite / f"bench_{name}.py").write_text("from lawful.integrations.benchmarking import write_result\n"
                                                f"write_result('{name}', {{'x': 1.0}})\n")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    run_suite(suite, out)
    real = subprocess.run

    def interrupted_at_b(cmd, **kw):
        if str(cmd[-1]).endswith("bench_b.py"):
            raise KeyboardInterrupt
        return real(cmd, **kw)

    monkeypatch.setattr(bench_suite.subprocess, "run", interrupted_at_b)
    with pytest.raises(KeyboardInterrupt):
        run_suite(suite, out)
    last = json.loads((out / SUMMARY).read_text())["last_run"]
    assert last["interrupted"] == "bench_b.py" and last["not_run"] == ["bench_c.py"] and last["rewritten"] == ["a"]


def test_a_benchmark_replacing_a_shipped_model_keeps_the_old_file(tmp_path, monkeypatch, capsys):
    """A full benchmark run installs its models where lawful ships them: the file replaced is kept
    under the results folder and both are named (report audit 3: they were replaced silently)."""
    from lawful.integrations.benchmarking import replace_model_file

    monkeypatch.setenv("LAWFUL_BENCH_DIR", str(tmp_path / "results"))
    target = tmp_path / "pkg" / "cu-emt.lawful"
    target.parent.mkdir()
    first = replace_model_file(lambda p: p.write_bytes(b"old weights"), target)
    assert first["replaced"] is None
    second = replace_model_file(lambda p: p.write_bytes(b"new weights"), target)
    kept = second["replaced"]
    assert target.read_bytes() == b"new weights" and open(kept, "rb").read() == b"old weights"
    assert kept.startswith(str(tmp_path / "results" / "replaced_models" / "cu-emt-"))
    assert f"replacing the file there, kept as {kept}" in capsys.readouterr().out

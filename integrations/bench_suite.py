"""``lawful bench``: run every ``bench_*.py`` script in a suite folder, each in its own process,
with ``LAWFUL_BENCH_DIR`` pointing at the results folder (see :mod:`lawful.integrations.benchmarking`),
then collect every result in that folder into one ``summary.json`` (machine, versions, and each
benchmark's figures, params, dtype, device and date).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from lawful.kernels.errors import InputError

__all__ = ["run_suite", "collect"]

SUMMARY = "summary.json"


def collect(out: str | Path, last_run: dict | None = None) -> Path:
    """Merge every benchmark JSON in ``out`` into ``out/summary.json`` (written atomically), each
    with its own date, provenance and library versions. ``last_run`` (from :func:`run_suite`):
    ``{"scripts": [...], "failed": [...], "rewritten": [result names]}``; it is recorded, and every
    result it did not rewrite says so in its ``status``: a failed script's old figures read as this
    run's otherwise."""
    import json

    from lawful.integrations.benchmarking import machine_info, versions
    from lawful.integrations.report import atomic_write_text

    out = Path(out)
    benchmarks = {}
    for p in sorted(out.glob("*.json")):
        if p.name == SUMMARY:
            continue
        doc = json.loads(p.read_text())
        keys = ("date", "provenance", "dtype", "device", "params", "figures", "machine", "versions")
        entry = {k: doc.get(k) for k in keys}
        if last_run is not None and p.stem not in last_run.get("rewritten", ()):
            entry["status"] = f"not rewritten by the last `lawful bench` run: figures of {doc.get('date')}"
        benchmarks[doc.get("benchmark", p.stem)] = entry
    summary = {"machine": machine_info(), "versions": versions(), "benchmarks": benchmarks}
    if last_run is not None:
        summary["last_run"] = last_run
    path = out / SUMMARY
    atomic_write_text(path, json.dumps(summary, indent=2, default=float) + "\n")
    return path


def run_suite(suite: str | Path, out: str | Path, only: list[str] | None = None, quick: bool = False) -> list[Path]:
    """Run the suite's scripts (optionally only those named) and return the JSON files written."""
    suite = Path(suite)
    scripts = sorted(suite.glob("bench_*.py"))
    if not scripts:
        raise InputError(f"no bench_*.py scripts in {str(suite)!r}: run from the repository root or pass --suite DIR.")
    if only:
        names = {n.removeprefix("bench_").removesuffix(".py") for n in only}
        unknown = names - {s.stem.removeprefix("bench_") for s in scripts}
        if unknown:
            raise InputError(f"unknown benchmark(s) {sorted(unknown)}; available: "
                             f"{[s.stem.removeprefix('bench_') for s in scripts]}")
        scripts = [s for s in scripts if s.stem.removeprefix("bench_") in names]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    before = {p: p.stat().st_mtime for p in out.glob("*.json")}
    env = dict(os.environ, LAWFUL_BENCH_DIR=str(out.resolve()))
    if quick:
        env["LAWFUL_BENCH_QUICK"] = "1"
    env.setdefault("LAWFUL_BENCH_COMMAND", " ".join([Path(sys.argv[0]).name] + sys.argv[1:]))
    import time

    failed, t_start = [], time.perf_counter()

    def rewritten():
        return sorted(p for p in out.glob("*.json") if p.name != SUMMARY and before.get(p) != p.stat().st_mtime)

    for k, script in enumerate(scripts, 1):
        print(f"[bench {k}/{len(scripts)}] {script.name} ... (suite elapsed {time.perf_counter() - t_start:.0f} s)",
              flush=True)
        t0 = time.perf_counter()
        try:
            code = subprocess.run([sys.executable, str(script)], env=env).returncode
        except KeyboardInterrupt:
            # the summary of the last complete run would stay, reading as this one's (rerun audit)
            collect(out, last_run={"scripts": [s.name for s in scripts], "failed": failed,
                                   "interrupted": script.name, "not_run": [s.name for s in scripts[k:]],
                                   "rewritten": [p.stem for p in rewritten()]})
            raise
        print(f"[bench {k}/{len(scripts)}] {script.name}: {'done' if code == 0 else f'FAILED (exit status {code})'} "
              f"in {time.perf_counter() - t0:.1f} s", flush=True)
        if code != 0:
            failed.append(f"{script.name} (exit status {code})")
    written = rewritten()
    summary = collect(out, last_run={"scripts": [s.name for s in scripts], "failed": failed,
                                     "rewritten": [p.stem for p in written]})
    if failed:
        from lawful.kernels.errors import LawfulError

        raise LawfulError(f"benchmark script(s) {', '.join(failed)} failed (their output is above); the other "
                          f"results are in {summary}. Fix the script, or leave it out with --only NAME ...")
    return written + [summary]

"""``lawful bench``: run every ``bench_*.py`` script in a suite folder, each in its own process,
with ``LAWFUL_BENCH_DIR`` pointing at the results folder (see :mod:`lawful.integrations.benchmarking`).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from lawful.kernels.errors import InputError

__all__ = ["run_suite"]


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
    for script in scripts:
        print(f"[bench] {script.name}", flush=True)
        subprocess.run([sys.executable, str(script)], env=env, check=True)
    return sorted(p for p in out.glob("*.json") if before.get(p) != p.stat().st_mtime)

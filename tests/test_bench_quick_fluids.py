"""The fluid half of the benchmark suite runs from a clean working directory at its tiniest size
(the force-field half and the reasons: ``test_bench_quick.py``; the run: :func:`conftest.run_benchmarks_tiny`)."""

from __future__ import annotations

import pytest
from conftest import BENCH_HALVES, run_benchmarks_tiny  # the shared tiny run


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_the_fluid_benchmarks_run_tiny_from_a_clean_directory(tmp_path, monkeypatch):
    run_benchmarks_tiny(BENCH_HALVES["fluids"], tmp_path, monkeypatch)

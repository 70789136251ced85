"""The benchmark convention: every script in ``benchmarks/`` writes one JSON file under
``benchmarks/results/`` with the machine, versions, dtype, device and its figures — as ratios
against a baseline measured in the same run wherever one exists.

Benchmarks are never timed assertions in the test suite; machines are noisy.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

__all__ = ["machine_info", "versions", "time_call", "write_result", "default_results_dir", "quick_requested"]


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict:
    """CPU model, core count, OS, and the GPU torch sees (or None)."""
    info = {
        "cpu": _cpu_name(),
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "gpu": None,
    }
    try:
        import torch

        info["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:  # pragma: no cover
        pass
    return info


def versions() -> dict:
    """Versions of lawful and of the engines it stands on (None where not installed)."""
    from importlib import metadata

    out = {}
    for name in ("lawful", "torch", "numpy", "ase", "openmm", "taichi", "openmmml", "openmmtorch"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def time_call(fn: Callable[[], object], repeat: int = 5, warmup: int = 1) -> dict:
    """Wall time of ``fn()`` in seconds: median, min and all samples (after ``warmup`` calls)."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return {"median_s": statistics.median(samples), "min_s": min(samples), "samples_s": samples}


def quick_requested() -> bool:
    """True when ``lawful bench --quick`` asked for small sizes (``LAWFUL_BENCH_QUICK=1``)."""
    return os.environ.get("LAWFUL_BENCH_QUICK", "") == "1"


def default_results_dir() -> Path:
    """``$LAWFUL_BENCH_DIR`` if set, else ``benchmarks/results`` under the current directory."""
    return Path(os.environ.get("LAWFUL_BENCH_DIR", "benchmarks/results"))


def write_result(name: str, figures: dict, *, dtype=None, device=None, params: dict | None = None,
                 out_dir: str | os.PathLike | None = None) -> Path:
    """Write ``<out_dir>/<name>.json`` atomically and return its path.

    ``figures`` holds the measurements (use ``*_ratio`` keys for ratios against a same-run
    baseline); ``params`` the sizes/seeds that produced them.
    """
    out = Path(out_dir) if out_dir is not None else default_results_dir()
    out.mkdir(parents=True, exist_ok=True)
    doc = {
        "benchmark": name,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "versions": versions(),
        "dtype": str(dtype) if dtype is not None else None,
        "device": str(device) if device is not None else None,
        "params": params or {},
        "figures": figures,
    }
    path = out / f"{name}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, indent=2, default=float) + "\n")
    os.replace(tmp, path)
    return path

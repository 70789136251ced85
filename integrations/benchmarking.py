"""The benchmark convention: every script in ``benchmarks/`` writes one JSON file under
``benchmarks/results/`` with the machine, versions, dtype, device and its figures — as ratios
against a baseline measured in the same run wherever one exists.

Every result says how it was made (:func:`provenance`): the command line (and the ``lawful bench``
command that started the script), the git commit and whether the tree had uncommitted changes,
the seeds, torch's thread count and the thread environment, the machine and the versions, and how
fast the machine was that hour (:func:`machine_speed`, at the start of the run and when the file
was written): the same code on the same machine has run 2-3x slower on some days (a shared host),
and slower by different factors for different work, so a result made on a slow day says so. A
result file is written whole by one run; where a benchmark keeps some parts of an earlier run's
file (``bench_molecules.py``'s partial runs, after checking that they still describe the same
model), each part names the run that made it.

Sizes: ``LAWFUL_BENCH_QUICK=1`` (``lawful bench --quick``) asks for small sizes;
``LAWFUL_BENCH_TINY=1`` for the smallest that still run every code path (the CI smoke test of
the suite, a minute or two in all; implies quick). Neither is a result to quote.

Benchmarks are never timed assertions in the test suite; machines are noisy.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

__all__ = ["machine_info", "machine_speed", "versions", "time_call", "write_result", "default_results_dir",
           "quick_requested", "tiny_requested", "provenance", "git_state", "git_state_at_start", "spread"]


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


def machine_speed() -> dict:
    """How fast this machine runs three kinds of work right now, each the median of 5 rounds on one
    thread (about 0.1 s in all): ``torch_op_us``, one small torch operation (an add of two
    64-element float64 tensors into a third: the dispatch cost that dominates a force-field call
    on a small molecule); ``python_loop_ns``, one iteration of a plain Python loop (the fluid
    step's per-launch bookkeeping is of this kind); ``copy_gbytes_per_s``, a 64 MiB float32 torch
    copy, bytes read + written (memory bandwidth: the fluid kernels' bound). Results made on the
    same machine in different hours compare through these."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        a, b, c = (torch.ones(64, dtype=torch.float64) for _ in range(3))
        big = torch.ones(16 * 2 ** 20, dtype=torch.float32)
        dst = torch.empty_like(big)
        dst.copy_(big)
        ops, loops, copies = [], [], []
        for _ in range(5):
            t0 = time.perf_counter()
            for _ in range(2000):
                torch.add(a, b, out=c)
            ops.append((time.perf_counter() - t0) / 2000)
            t0 = time.perf_counter()
            x = 0
            for i in range(20000):
                x += i
            loops.append((time.perf_counter() - t0) / 20000)
            t0 = time.perf_counter()
            dst.copy_(big)
            copies.append(2 * big.numel() * 4 / (time.perf_counter() - t0))
    finally:
        torch.set_num_threads(threads)
    return {"torch_op_us": 1e6 * statistics.median(ops), "python_loop_ns": 1e9 * statistics.median(loops),
            "copy_gbytes_per_s": statistics.median(copies) / 1e9}


_SPEED_AT_START: dict | None = None


def machine_speed_at_start() -> dict:
    """:func:`machine_speed` as measured when this process first asked (at the import of this
    module, as for :func:`git_state_at_start`)."""
    global _SPEED_AT_START
    if _SPEED_AT_START is None:
        _SPEED_AT_START = machine_speed()
    return _SPEED_AT_START


def versions() -> dict:
    """Versions of lawful and of the engines it stands on (None where not installed)."""
    from importlib import metadata

    out = {}
    for name in ("lawful", "torch", "numpy", "ase", "openmm", "taichi", "openmmml", "openmmtorch", "vesin",
                 "mace-torch", "e3nn"):
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


def spread(samples) -> dict:
    """Summary of repeated measurements: ``mean``, ``std`` (sample standard deviation, 0 for one
    sample), ``min``, ``max``, ``n`` and the ``samples`` themselves (same units as the input)."""
    xs = [float(x) for x in samples]
    if not xs:
        raise ValueError("spread() of no samples")
    return {"mean": statistics.fmean(xs), "std": statistics.stdev(xs) if len(xs) > 1 else 0.0,
            "min": min(xs), "max": max(xs), "n": len(xs), "samples": xs}


def tiny_requested() -> bool:
    """True when the smallest sizes are asked for (``LAWFUL_BENCH_TINY=1``: the CI smoke test)."""
    return os.environ.get("LAWFUL_BENCH_TINY", "") == "1"


def quick_requested() -> bool:
    """True when ``lawful bench --quick`` asked for small sizes (``LAWFUL_BENCH_QUICK=1``), or
    :func:`tiny_requested`."""
    return os.environ.get("LAWFUL_BENCH_QUICK", "") == "1" or tiny_requested()


def git_state(root: str | os.PathLike | None = None) -> dict:
    """``{"commit": sha or None, "dirty": bool or None, "dirty_paths": [...]}`` of the checkout
    holding ``root`` (default: this source tree); None where git or the repository is missing."""
    root = Path(root) if root is not None else Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                                timeout=30).stdout.strip() or None
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                                capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None, "dirty_paths": []}
    if commit is None or status.returncode != 0:
        return {"commit": None, "dirty": None, "dirty_paths": []}
    paths = [line[3:] for line in status.stdout.splitlines() if line.strip()]
    return {"commit": commit, "dirty": bool(paths), "dirty_paths": paths[:50]}


_GIT_AT_START: dict | None = None


def git_state_at_start() -> dict:
    """:func:`git_state` as it was when this process first asked (at the import of this module,
    which benchmarks do before any work): the code that ran. A result file written after the
    checkout moved on (a commit or an edit during a long benchmark) must not claim the new commit."""
    global _GIT_AT_START
    if _GIT_AT_START is None:
        _GIT_AT_START = git_state()
    return _GIT_AT_START


def provenance(seeds=None) -> dict:
    """How a result was made: this process's command line, the ``lawful bench`` command that
    started it (``LAWFUL_BENCH_COMMAND``), the working directory, git commit and dirtiness when
    the run started (``git``; ``git_at_write`` too, when the checkout changed while it ran),
    ``seeds``, torch's intra-op thread count, the thread/size environment variables."""
    env_keys = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "LAWFUL_BENCH_QUICK",
                "LAWFUL_BENCH_TINY", "LAWFUL_BENCH_DIR", "LAWFUL_TI_ARCH")
    threads = None
    if "torch" in sys.modules:
        threads = sys.modules["torch"].get_num_threads()
    start, now = git_state_at_start(), git_state()
    moved = {"git_at_write": now} if now != start else {}
    return {
        "command": [sys.executable] + sys.argv,
        "suite_command": os.environ.get("LAWFUL_BENCH_COMMAND"),
        "cwd": os.getcwd(),
        "git": start,
        **moved,
        "seeds": list(seeds) if seeds is not None else None,
        "torch_threads": threads,
        "env": {k: os.environ[k] for k in env_keys if k in os.environ},
        "quick": quick_requested(),
        "tiny": tiny_requested(),
    }


def default_results_dir() -> Path:
    """``$LAWFUL_BENCH_DIR`` if set, else ``benchmarks/results`` under the current directory."""
    return Path(os.environ.get("LAWFUL_BENCH_DIR", "benchmarks/results"))


def replace_model_file(save: Callable[[Path], object], path: str | os.PathLike) -> dict:
    """Write a benchmark's trained model with ``save(path)``. A full benchmark run installs its
    models where lawful ships them (``cu-emt``, ``organic-xtb``, the committed correctors), so
    that every later run by name uses the new weights: the file it replaces is first copied to
    ``<results dir>/replaced_models/<name>-<sha256[:12]><suffix>`` and both paths are printed, so
    nothing is replaced silently or lost. Returns ``{"path", "replaced"}`` (the copy's path or None)
    for the benchmark's JSON."""
    import hashlib
    import shutil

    path = Path(path)
    kept = None
    if path.is_file():
        digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
        folder = default_results_dir() / "replaced_models"
        folder.mkdir(parents=True, exist_ok=True)
        kept = folder / f"{path.stem}-{digest}{path.suffix}"
        if not kept.exists():            # copied under a temporary name and renamed: never a torn copy
            partial = kept.with_name(kept.name + f".partial-{os.getpid()}")
            shutil.copy2(path, partial)
            os.replace(partial, kept)
    save(path)
    print(f"model written to {path}" + (f" (replacing the file there, kept as {kept})" if kept else ""), flush=True)
    return {"path": str(path), "replaced": None if kept is None else str(kept)}


def write_result(name: str, figures: dict, *, dtype=None, device=None, params: dict | None = None,
                 seeds=None, out_dir: str | os.PathLike | None = None) -> Path:
    """Write ``<out_dir>/<name>.json`` atomically and return its path.

    ``figures`` holds the measurements of this run only (use ``*_ratio`` keys for ratios against a
    same-run baseline); ``params`` the sizes that produced them; ``seeds`` every random seed used.
    The file also carries :func:`provenance` (command line, git commit, threads, ...).
    """
    out = Path(out_dir) if out_dir is not None else default_results_dir()
    out.mkdir(parents=True, exist_ok=True)
    doc = {
        "benchmark": name,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "provenance": provenance(seeds),
        "machine": machine_info(),
        "machine_speed": {"at_start": machine_speed_at_start(), "at_write": machine_speed()},
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


git_state_at_start()    # the checkout as the benchmark importing this module starts
machine_speed_at_start()   # and how fast the machine was then

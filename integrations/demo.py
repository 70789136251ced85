"""``lawful demo``: the project's showcase and proof, run end to end on generated data.

Each part of the demo is a *section* function ``(ctx) -> Section``. Sections run in order; a
section that fails or is interrupted is recorded as such and the report is still written, so
completed outputs are never lost. ``--quick`` uses small sizes (minutes on a 2-core CPU).
"""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from lawful.integrations.benchmarking import machine_info, versions
from lawful.integrations.report import Section, write_report

__all__ = ["DemoContext", "SECTIONS", "run_demo"]


@dataclass
class DemoContext:
    """What every section gets: output folder, size mode, seed, dtype and device names."""

    out: Path
    quick: bool = True
    seed: int = 0
    dtype: str = "float64"
    device: str = "cpu"
    log: Callable[[str], None] = print
    shared: dict = field(default_factory=dict)  # results one section hands to a later one


def _environment(ctx: DemoContext) -> Section:
    from lawful.kernels import ensure_taichi

    arch = ensure_taichi()
    s = Section("environment", "Environment")
    s.text.append(f"Taichi arch: {arch}; torch device: {ctx.device}; dtype: {ctx.dtype}.")
    s.summary.update({"taichi_arch": arch, "device": ctx.device, "dtype": ctx.dtype})
    return s


#: The demo's sections, in order. Other modules append theirs as features land.
SECTIONS: list[Callable[[DemoContext], Section]] = [_environment]


def run_demo(out: str | Path = "demo-out", quick: bool = False, seed: int = 0,
             dtype: str = "float64", device: str = "cpu", log: Callable[[str], None] = print) -> Path:
    """Run every demo section and write ``out/report.html`` and ``out/summary.json``.

    Returns the report path. Ctrl-C stops the current section; the report is still written with
    every section finished so far, and the exception is re-raised after that.
    """
    ctx = DemoContext(out=Path(out), quick=quick, seed=seed, dtype=dtype, device=device, log=log)
    ctx.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    sections: list[Section] = []
    interrupted = None
    for fn in SECTIONS:
        name = fn.__name__.lstrip("_")
        log(f"[demo] {name} ...")
        ts = time.perf_counter()
        try:
            sec = fn(ctx)
        except KeyboardInterrupt as exc:
            sections.append(Section(name, name, text=["interrupted by the user"], status="interrupted"))
            interrupted = exc
            break
        except Exception as exc:  # a failed section must not lose the others' results
            sec = Section(name, name, text=[f"failed: {exc!r}", traceback.format_exc()], status="failed")
        sec.summary.setdefault("seconds", round(time.perf_counter() - ts, 2))
        sections.append(sec)
        log(f"[demo] {name}: {sec.status} in {sec.summary['seconds']} s")
    meta = {"mode": "quick" if quick else "full", "seed": seed, "dtype": dtype, "device": device,
            "total_seconds": round(time.perf_counter() - t0, 1), "versions": versions(),
            "machine": machine_info()}
    report, _ = write_report(ctx.out, "lawful demo", sections, meta)
    log(f"[demo] report: {report.resolve()}")
    if interrupted is not None:
        log(f"[demo] interrupted; completed outputs are in {ctx.out.resolve()}")
        raise interrupted
    return report

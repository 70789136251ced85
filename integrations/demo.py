"""``lawful demo``: the project's showcase and proof, run end to end on generated data.

Each part of the demo is a *section* function ``(ctx, sec)`` that fills the :class:`Section` it is
handed (built from its ``@section(key, title)`` mark). Sections run in order; a section that fails
or is interrupted is recorded as such, with whatever it had already added, and the report is still
written, so completed outputs are never lost. Modes: ``quick`` (``make demo``: at most 5 minutes on a 2-core
CPU), ``full`` (at most 30 minutes), ``smoke`` (the smallest sizes, for the test suite).
"""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from lawful.integrations.benchmarking import machine_info, versions
from lawful.integrations.report import Section, write_report

__all__ = ["DemoContext", "MODES", "run_demo", "section"]


@dataclass
class DemoContext:
    """What every section gets: output folder, size mode, seed, dtype and device names."""

    out: Path
    mode: str = "quick"  # "smoke" (tests) | "quick" (make demo, <= 5 min) | "full" (<= 30 min)
    seed: int = 0
    dtype: str = "float64"
    device: str = "cpu"
    log: Callable[[str], None] = print


def section(key: str, title: str):
    """Mark a function ``(ctx, sec)`` as the demo section ``key`` titled ``title``: the runner
    hands it ``Section(key, title)`` to fill, and reports that section also when it fails or is
    interrupted."""

    def mark(fn):
        fn.section_key, fn.section_title = key, title
        return fn

    return mark


@section("environment", "Environment")
def _environment(ctx: DemoContext, sec: Section) -> None:
    from lawful.kernels import ensure_taichi

    arch = ensure_taichi()
    sec.text.append(f"Taichi arch: {arch}; torch device: {ctx.device}; dtype: {ctx.dtype}.")
    sec.summary.update({"taichi_arch": arch, "device": ctx.device, "dtype": ctx.dtype})


def _sections() -> list[Callable[[DemoContext, Section], None]]:
    """The demo's sections, in order."""
    from lawful.integrations.demo_forcefields import forcefield_section
    from lawful.integrations.demo_fluids import fluid_section
    from lawful.integrations.demo_hamiltonian import hamiltonian_section

    return [_environment, forcefield_section, hamiltonian_section, fluid_section]


MODES = ("smoke", "quick", "full")


def run_demo(out: str | Path = "demo-out", mode: str = "quick", seed: int = 0,
             dtype: str = "float64", device: str = "cpu", log: Callable[[str], None] = print) -> Path:
    """Run every demo section and write ``out/report.html`` and ``out/summary.json``.

    Returns the report path. Ctrl-C stops the current section; the report is still written with
    every section finished so far, and the exception is re-raised after that.
    """
    if mode not in MODES:
        from lawful.kernels.errors import InputError

        raise InputError(f"unknown demo mode {mode!r}: use one of {list(MODES)}.")
    ctx = DemoContext(out=Path(out), mode=mode, seed=seed, dtype=dtype, device=device, log=log)
    ctx.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    sections: list[Section] = []
    interrupted = None
    for fn in _sections():
        sec = Section(fn.section_key, fn.section_title)
        log(f"[demo] {sec.key} ...")
        ts = time.perf_counter()
        try:
            fn(ctx, sec)
        except KeyboardInterrupt as exc:
            sec.text.append("interrupted by the user")
            sec.status = "interrupted"
            sections.append(sec)
            interrupted = exc
            break
        except Exception as exc:  # a failed section must not lose the others' results
            sec.text += [f"failed: {exc!r}", traceback.format_exc()]
            sec.status = "failed"
        sec.summary.setdefault("seconds", round(time.perf_counter() - ts, 2))
        sections.append(sec)
        log(f"[demo] {sec.key}: {sec.status} in {sec.summary['seconds']} s")
    meta = {"mode": mode, "seed": seed, "dtype": dtype, "device": device,
            "total_seconds": round(time.perf_counter() - t0, 1), "versions": versions(),
            "machine": machine_info()}
    report, _ = write_report(ctx.out, "lawful demo", sections, meta)
    log(f"[demo] report: {report.resolve()}")
    if interrupted is not None:
        log(f"[demo] interrupted; completed outputs are in {ctx.out.resolve()}")
        raise interrupted
    return report

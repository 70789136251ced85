"""``lawful demo``: the project's showcase and proof, run end to end on generated data.

Each part of the demo is a *section* function ``(ctx, sec)`` that fills the :class:`Section` it is
handed (built from its ``@section(key, title)`` mark). Sections run in order; a section that fails
or is interrupted is recorded as such, with whatever it had already added, and the report is still
written, so completed outputs are never lost; the report is rewritten after every section. Modes: ``quick`` (``make demo``: about 5 minutes on a 2-core
CPU), ``full`` (plain ``lawful demo``: about 30 minutes), ``smoke`` (the smallest sizes, for the test suite).
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
    sec.text.append(f"Taichi arch: {arch}; torch device: {ctx.device}; dtype: {ctx.dtype} (the lawful models of the "
                    "force-field and molecule sections; the molecule section's OpenMM runs use OpenMM's CPU "
                    "platform, whose MM forces are single precision; the Hamiltonian section runs in float64 on "
                    "the CPU and the fluid section in float32 with its corrector on the CPU, whatever --device and "
                    "--dtype say).")
    sec.summary.update({"taichi_arch": arch, "device": ctx.device, "dtype": ctx.dtype,
                        "hamiltonian_dtype_device": "float64, cpu", "fluids_dtype_device": "float32, cpu",
                        "molecules_mm_precision": "OpenMM CPU platform: single-precision MM forces"})


def _sections() -> list[Callable[[DemoContext, Section], None]]:
    """The demo's sections, in order."""
    from lawful.integrations.demo_forcefields import forcefield_section
    from lawful.integrations.demo_fluids import fluid_section
    from lawful.integrations.demo_hamiltonian import hamiltonian_section
    from lawful.integrations.demo_molecules import molecule_section

    return [_environment, forcefield_section, molecule_section, hamiltonian_section, fluid_section]


MODES = ("smoke", "quick", "full")

#: What a report of each mode must say before any number (``summary.json``'s ``meta.note`` and the
#: banner of ``report.html``); the full mode's numbers are the README's kind and need none.
MODE_NOTES = {
    "smoke": ("Pipeline test (--smoke): every training lasts seconds and every size is tiny, so these numbers "
              "show that each step runs, not what the methods achieve; they may contradict the text. Run "
              "`lawful demo --quick` (about 5 minutes) or plain `lawful demo` (the full demo, about 30 minutes), and "
              "see the README's benchmark figures."),
    "quick": ("Quick mode: trainings are short and systems small (a few minutes in all); the numbers are "
              "indicative and a claim they do not show is said under its section. Plain `lawful demo` (no flag: the "
              "full demo, about 30 minutes) and the benchmarks (README) measure them at full size."),
}


#: "conserves like the classical reference" (the force-field and molecule sections' claims): the
#: largest |E - E0| of a conservative model's NVE run within this factor of the classical force
#: field's on the same start and time step (both are Verlet's bounded oscillation; the demo audit
#: measured 1.00x for Cu and 0.96x for ML/MM)
FLOOR_FACTOR = 2.0


def claims_shown(sec, mode: str, claims) -> None:
    """Say under a section which of its claims this run's own numbers do not show.

    ``claims``: ``(holds, text)`` pairs, ``holds`` computed from the section's table. The texts
    not shown go to ``sec.summary["claims_not_shown"]`` (empty when all are) and into a sentence
    after the section's text, so a report never states a conclusion its numbers contradict
    without saying so."""
    missed = [text for holds, text in claims if not holds]
    sec.summary["claims_not_shown"] = missed
    if not missed:
        return
    why = ("its trainings are seconds long (smoke mode)" if mode == "smoke" else
           "its trainings are short (quick mode)" if mode == "quick" else
           "compare with the README's benchmark figures; a full run that misses them is worth reporting")
    sec.text.append("This run's numbers do not show: " + "; ".join(missed) + f" ({why}).")

#: Rough wall seconds of each section per mode on an idle 2-core CPU: the progress line's estimate
#: of what is left (scaled by how fast the finished sections ran on this machine).
EXPECTED_S = {
    "smoke": {"environment": 1, "forcefields": 8, "molecules": 8, "hamiltonian": 5, "fluids": 10},
    "quick": {"environment": 3, "forcefields": 150, "molecules": 40, "hamiltonian": 40, "fluids": 60},
    "full": {"environment": 3, "forcefields": 900, "molecules": 300, "hamiltonian": 150, "fluids": 600},
}


def _eta(mode: str, done: dict[str, float], todo: list[str]) -> float:
    """Seconds left: the expected time of the sections in ``todo``, scaled by the ratio of the
    measured to the expected time of the sections ``done`` (``{key: seconds}``), within 0.25-4x."""
    expected = EXPECTED_S[mode]
    # sections expected to take under 10 s (the environment check) say nothing about the machine's
    # speed: counted, a 0.55 s environment section quartered every later estimate (1:12 shown, 5:14 run)
    timed = {k: s for k, s in done.items() if expected.get(k, 30) >= 10}
    planned_done = sum(expected.get(k, 30) for k in timed)
    scale = sum(timed.values()) / planned_done if planned_done else 1.0
    return max(0.25, min(4.0, scale)) * sum(expected.get(k, 30) for k in todo)


def _clock(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 60}:{s % 60:02d}"


def run_demo(out: str | Path = "demo-out", mode: str = "quick", seed: int = 0,
             dtype: str = "float64", device: str = "cpu", log: Callable[[str], None] = print) -> Path:
    """Run every demo section and write ``out/report.html`` and ``out/summary.json``.

    Both files are rewritten after every section (sections still to run are listed as
    ``pending``), so the report can be opened while the demo runs. Returns the report path.
    Ctrl-C (or SIGTERM through the ``lawful`` command) stops the current section; the report is
    written with every section finished so far, and the exception is re-raised after that.
    A section that fails is recorded as ``failed`` with its traceback and the demo goes on.
    """
    if mode not in MODES:
        from lawful.kernels.errors import InputError

        raise InputError(f"unknown demo mode {mode!r}: use one of {list(MODES)}.")
    t0 = time.perf_counter()

    def stamp(msg: str) -> None:  # every line, the sections' own included, with the time since the start
        log(f"[{_clock(time.perf_counter() - t0)}] {msg}")

    ctx = DemoContext(out=Path(out), mode=mode, seed=seed, dtype=dtype, device=device, log=stamp)
    ctx.out.mkdir(parents=True, exist_ok=True)
    fns = _sections()
    sections: list[Section] = []
    done: dict[str, float] = {}
    interrupted = None
    from lawful.integrations.benchmarking import git_state

    meta = {"mode": mode, "seed": seed, "dtype": dtype, "device": device, "total_seconds": 0.0,
            "versions": versions(), "machine": machine_info(), "git": git_state()}
    if mode in MODE_NOTES:
        meta["note"] = MODE_NOTES[mode]

    def write(pending: list, status: str = "pending") -> Path:
        meta["total_seconds"] = round(time.perf_counter() - t0, 1)
        note = "not run yet (this page reloads every 30 s)" if status == "pending" else "not run: the demo was interrupted"
        waiting = [Section(f.section_key, f.section_title, text=[note], status=status) for f in pending]
        report, _ = write_report(ctx.out, "lawful demo", sections + waiting, meta,
                                 refresh_s=30 if pending and status == "pending" else None)
        return report

    report = write(fns)
    stamp(f"[demo] report (rewritten after every section): {report.resolve()}")
    for k, fn in enumerate(fns):
        sec = Section(fn.section_key, fn.section_title)
        todo = [f.section_key for f in fns[k:]]
        stamp(f"[demo {k + 1}/{len(fns)}] {sec.key} ... (about {_clock(_eta(mode, done, todo))} left)")
        ts = time.perf_counter()
        try:
            fn(ctx, sec)
        except KeyboardInterrupt as exc:
            sec.text.append("interrupted by the user")
            sec.status = "interrupted"
            interrupted = exc
        except Exception as exc:  # a failed section must not lose the others' results
            sec.text += [f"failed: {exc!r}", traceback.format_exc()]
            sec.status = "failed"
        sec.summary.setdefault("seconds", round(time.perf_counter() - ts, 2))
        sections.append(sec)
        done[sec.key] = sec.summary["seconds"]
        if interrupted is not None:
            break
        report = write(fns[k + 1:])
        stamp(f"[demo {k + 1}/{len(fns)}] {sec.key}: {sec.status} in {sec.summary['seconds']} s")
    if interrupted is not None:
        report = write(fns[len(sections):], status="not run")
        stamp(f"[demo] report: {report.resolve()}")
        stamp(f"[demo] interrupted; completed outputs are in {ctx.out.resolve()}")
        raise interrupted
    stamp(f"[demo] report: {report.resolve()}")
    failed = [s.key for s in sections if s.status == "failed"]
    if failed:
        stamp(f"[demo] section(s) failed: {', '.join(failed)} (the reason is in the report)")
    return report

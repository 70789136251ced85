"""Demo section: the shipped organic model (GFN2-xTB labels) on alanine dipeptide, in vacuum
(ASE) and as the ML region of an OpenMM ML/MM System in TIP3P water.

No training: the shipped ``organic-xtb`` (NeuralPotential) and its control
``organic-xtb-direct`` (DirectForceModel, same data and budget) are loaded from the package's own
files (:func:`~lawful.forcefields.shipped.shipped_model_path`), never by bare name: a file or
folder called ``organic-xtb`` in the working directory cannot stand in for them.

1. ASE ``VelocityVerlet``, 0.5 fs, vacuum, 300 K start: total energy of both models.
2. OpenMM ``VerletIntegrator``, 0.5 fs, alanine dipeptide in a 2 nm TIP3P box (ML/MM through
   openmm-ml's ``createMixedSystem``), with the all-MM (amber14) run from the same start: drift.
3. OpenMM ``LangevinMiddleIntegrator``, 1 fs, 300 K: φ/ψ of the ML/MM run beside the all-MM run.

Every lawful force runs strict: a structure outside the model's training distances stops that run
and the report says where; the others go on.
"""

from __future__ import annotations

import copy
import csv
from pathlib import Path

from lawful.integrations.demo import FLOOR_FACTOR, claims_shown, section
from lawful.integrations.report import Section, figure, save_figure

__all__ = ["molecule_section", "SIZES"]

#: Sizes per mode (steps). quick adds well under a minute of CPU to ``make demo`` (measured on a
#: busy 2-core machine: about 35 s).
SIZES = {
    "smoke": dict(ase_steps=40, nve_steps=40, nvt_steps=60, frame_every=10, minimize=30, report=2),
    "quick": dict(ase_steps=400, nve_steps=400, nvt_steps=2000, frame_every=20, minimize=100, report=5),
    "full": dict(ase_steps=4000, nve_steps=4000, nvt_steps=20000, frame_every=100, minimize=300, report=10),
}
PADDING_NM = 1.0  # the smallest padding whose box (2 nm) takes the 1 nm PME cutoff: 727 atoms
#: the shipped models run, by role: the names label the tables; :func:`_shipped` gives the files run
MODELS = {"conservative": "organic-xtb", "direct": "organic-xtb-direct"}
#: how each run is drawn (the classical reference as a wide pale band, as in the copper section)
STYLES = {
    "all_mm": dict(color="0.6", lw=4.0, ls="-", alpha=0.7, label="all-MM (amber14)", zorder=1),
    "conservative": dict(color="tab:blue", lw=1.2, ls="--", label="organic-xtb (conservative)", zorder=3),
    "direct": dict(color="tab:red", lw=1.2, ls="-", label="organic-xtb-direct (direct forces)", zorder=2),
}


def _series(path: Path) -> tuple[list[float], list[float]]:
    """(time ps, total eV) from a drift CSV (empty when the file is missing)."""
    if not Path(path).exists():
        return [], []
    with open(path) as fh:
        rows = list(csv.DictReader(fh))
    return [float(r["time_ps"]) for r in rows], [float(r["total_eV"]) for r in rows]


def _plot(panels: list[tuple[str, int, dict]], path: Path) -> Path:
    """E(t) - E(0) per atom (meV) for each panel ``(title, n_atoms, {run: csv path})``."""
    fig, axes = figure(len(panels), width=5.5, height=4.0, squeeze=False)
    for ax, (title, n_atoms, runs) in zip(axes[0], panels):
        for name, csv_path in runs.items():
            t, e = _series(csv_path)
            if t:
                ax.plot(t, [(x - e[0]) * 1e3 / n_atoms for x in e], **STYLES[name])
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("time (ps)")
        ax.set_ylabel("E(t) − E(0)  (meV/atom)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")
    return save_figure(fig, path)


def _shipped(name: str) -> str:
    """The absolute path of the shipped model ``name`` (what the demo runs under that label)."""
    from lawful.forcefields.shipped import shipped_model_path

    return str(shipped_model_path(name))


def _stop_text(stopped) -> str:
    if not stopped:
        return "complete"
    return f"stopped at step {stopped['step']}: {stopped['kind'].replace('_', ' ')}"


def _ase_runs(ctx, z, out: Path) -> tuple[list[dict], dict]:
    from lawful.forcefields.molecules import alanine_dipeptide
    from lawful.integrations.md import run_md
    from lawful.kernels.errors import NumericalError

    atoms = alanine_dipeptide()
    rows, files = [], {}
    for name, model in MODELS.items():
        ctx.log(f"[demo]   ASE NVE in vacuum / {model} ...")
        folder = out / f"ase_{name}"
        row = {"engine": "ASE (vacuum)", "model": model, "atoms": len(atoms)}
        try:
            res = run_md(atoms, _shipped(model), "ase", timestep_fs=0.5, steps=z["ase_steps"], temperature_K=300.0,
                         report_interval=z["report"], out=folder, seed=ctx.seed, dtype=ctx.dtype, device=ctx.device,
                         strict=True)
            s = res.summary
            row.update({"steps": res.steps, "drift (meV/atom/ps)": s.drift_mev_per_atom_per_ps,
                        "max |E−E0| (meV/atom)": s.max_abs_deviation_mev_per_atom,
                        "ms/step": 1e3 * res.step_seconds, "run": "complete"})
        except NumericalError as exc:  # strict: out of the training domain (or a blow-up)
            row["run"] = f"stopped: {str(exc)[:160]}"
        rows.append(row)
        files[name] = folder / "drift.csv"
    return rows, files


@section("molecules", "Alanine dipeptide: the shipped organic model in ASE and in OpenMM ML/MM (TIP3P water)")
def molecule_section(ctx, sec: Section) -> None:
    """Shipped organic-xtb vs its direct-force control in ASE (vacuum) and OpenMM ML/MM (water)."""
    from lawful.integrations import mlmm

    z = SIZES[ctx.mode]
    out = ctx.out / "molecules"
    out.mkdir(parents=True, exist_ok=True)
    precision = "single" if str(ctx.dtype) in ("float32", "torch.float32") else "double"

    ase_rows, ase_files = _ase_runs(ctx, z, out)

    ctx.log("[demo]   building alanine dipeptide in TIP3P (amber14) ...")
    top22, pos22 = mlmm.alanine_dipeptide_topology()
    top, pos = mlmm.solvate(top22, pos22, padding_nm=PADDING_NM)
    mm = mlmm.mm_system(top)
    n_atoms = top.getNumAtoms()
    start = mlmm.minimized(copy.deepcopy(mm), top, pos, iterations=z["minimize"], platform="CPU", threads=1)

    def system(model):
        if model is None:
            return copy.deepcopy(mm)
        return mlmm.mixed_system(top, model=_shipped(model), mm=copy.deepcopy(mm), strict=True, precision=precision,
                                 device=ctx.device)

    nve_rows, nve_files = [], {}
    for name, model in (("all_mm", None), ("conservative", MODELS["conservative"]), ("direct", MODELS["direct"])):
        ctx.log(f"[demo]   OpenMM ML/MM NVE / {model or 'amber14 only'} ...")
        nve_files[name] = out / f"mlmm_nve_{name}.csv"
        res = mlmm.run_nve(system(model), top, start, steps=z["nve_steps"], timestep_fs=0.5, seed=ctx.seed,
                           csv=nve_files[name], csv_interval=z["report"], platform="CPU", threads=1)
        s = res.summary
        nve_rows.append({"engine": "OpenMM (TIP3P box)", "model": model or "amber14 (all-MM)", "atoms": n_atoms,
                         "steps": res.steps_done,
                         "drift (meV/atom/ps)": s.drift_mev_per_atom_per_ps if s else "",
                         "max |E−E0| (meV/atom)": s.max_abs_deviation_mev_per_atom if s else "",
                         # the drift reporter evaluates the energy at every step, a second force call: the
                         # figure is about twice a bare step's (the demo audit measured 42 calls for 20 steps)
                         "ms/step (with per-step energy)": 1e3 * res.wall_s_per_step, "run": _stop_text(res.stopped)})
        if s is not None:
            sec.summary[f"drift_mlmm_{name}_mev_atom_ps"] = s.drift_mev_per_atom_per_ps
            sec.summary[f"maxdev_mlmm_{name}_mev_atom"] = s.max_abs_deviation_mev_per_atom
        sec.summary[f"mlmm_{name}_complete"] = res.stopped is None
    for row, name in zip(ase_rows, MODELS):
        if "drift (meV/atom/ps)" in row:
            sec.summary[f"drift_ase_{name}_mev_atom_ps"] = row["drift (meV/atom/ps)"]
    sec.tables.append(("NVE at 0.5 fs from 300 K: drift of the total energy (linear fit: ASE rows over the "
                       f"reports every {z['report']} steps, the points its CSV and the figure hold; OpenMM rows "
                       f"over every step, while their CSV and the figure hold every {z['report']} steps; per "
                       "atom of the whole system)", ase_rows + nve_rows))
    sec.figures.append(("Total energy vs time, relative to t = 0 (per atom)", _plot(
        [("ASE VelocityVerlet, alanine dipeptide in vacuum", 22, ase_files),
         (f"OpenMM VerletIntegrator, ML/MM in TIP3P ({n_atoms} atoms)", n_atoms, nve_files)],
        out / "nve_energy.png")))

    runs, table = {}, []
    for name, model, label in (("conservative", MODELS["conservative"], "ML/MM (organic-xtb)"),
                               ("all_mm", None, "all-MM (amber14)")):
        ctx.log(f"[demo]   OpenMM NVT / {label} ...")
        res = mlmm.run_nvt(system(model), top, start, steps=z["nvt_steps"], timestep_fs=1.0, temperature_K=300.0,
                           frame_interval=z["frame_every"], seed=ctx.seed, platform="CPU", threads=1)
        runs[label] = (res.phi, res.psi)
        row = {"run": label, "steps": res.steps_done, "frames": int(res.phi.size),
               "mean T (K)": float(res.temperature_K.mean()) if res.temperature_K.size else "",
               "ms/step": 1e3 * res.wall_s_per_step, "out-of-domain events": res.out_of_domain_events,
               "end": _stop_text(res.stopped)}
        if res.phi.size:
            row.update({k: v for k, v in mlmm.basin_populations(res.phi, res.psi).items()})
        table.append(row)
        sec.summary[f"nvt_{name}_out_of_domain_events"] = res.out_of_domain_events
        sec.summary[f"nvt_{name}_frames"] = int(res.phi.size)
    sec.tables.append((f"NVT (LangevinMiddleIntegrator, 1 fs, 300 K, {z['nvt_steps'] / 1000:g} ps): "
                       "fraction of frames per φ/ψ region", table))
    sec.figures.append(("Ramachandran plot: ML/MM beside all-MM, same start", mlmm.ramachandran_plot(
        runs, out / "ramachandran.png", title=f"alanine dipeptide in water, NVT 300 K, {z['nvt_steps'] / 1000:g} ps")))
    sec.summary.update({"n_atoms_box": n_atoms, "nve_steps": z["nve_steps"], "nvt_steps": z["nvt_steps"]})
    sec.text.append(
        "The shipped organic-xtb NeuralPotential learns GFN2-xTB energies of small molecules; its forces are the "
        "exact gradient of that energy, so in NVE the total energy keeps to the classical floor of the same box "
        "and integrator (all-MM run), in vacuum (ASE) and as the ML region of an OpenMM ML/MM system in water. "
        "organic-xtb-direct, trained on the same data with forces from their own head, has no energy its forces "
        "conserve. Every lawful force runs in strict mode: a structure closer than the model's training data "
        "stops the run, and the tables say where. The NVT runs are short: the φ/ψ plot shows where each run "
        "went from the same start, not converged populations.")
    claims = []
    for where, label in (("ase", "ASE in vacuum"), ("mlmm", "OpenMM ML/MM")):
        c = sec.summary.get(f"drift_{where}_conservative_mev_atom_ps")
        d = sec.summary.get(f"drift_{where}_direct_mev_atom_ps")
        if isinstance(c, float) and isinstance(d, float):
            claims.append((abs(c) < abs(d), f"{label}: a smaller drift for organic-xtb than for organic-xtb-direct "
                                            f"({c:.3g} vs {d:.3g} meV/atom/ps)"))
        else:   # a run that stopped has no drift: the claim is not shown (it was dropped, and read as shown)
            lost = " and ".join(m for m, v in (("organic-xtb", c), ("organic-xtb-direct", d))
                                if not isinstance(v, float))
            claims.append((False, f"{label}: a smaller drift for organic-xtb than for organic-xtb-direct (no drift "
                                  f"for {lost}: its run stopped, see the table)"))
    # "keeps to the classical floor of the same box and integrator (all-MM run)"
    c, m = sec.summary.get("maxdev_mlmm_conservative_mev_atom"), sec.summary.get("maxdev_mlmm_all_mm_mev_atom")
    text = (f"OpenMM ML/MM: organic-xtb's total energy keeps within {FLOOR_FACTOR:g}x the all-MM run's excursion "
            "(max |E-E0| ")
    if isinstance(c, float) and isinstance(m, float):
        claims.append((c <= FLOOR_FACTOR * m, text + f"{c:.3g} vs {m:.3g} meV/atom)"))
    else:
        claims.append((False, text + "not measured: a run stopped, see the table)"))
    claims_shown(sec, ctx.mode, claims)

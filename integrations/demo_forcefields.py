"""Demo section: EMT copper -> NeuralPotential and DirectForceModel -> NVE in ASE and OpenMM.

The two models are trained on the same data with the same budget; then each model and EMT itself
run NVE from the same initial state in both engines' own integrators, and the drift table and the
total-energy-vs-time plot show conservative ≈ classical ≪ direct.
"""

from __future__ import annotations

import csv
from pathlib import Path

from lawful.integrations.demo import FLOOR_FACTOR, claims_shown, section
from lawful.integrations.report import Section, save_figure

__all__ = ["forcefield_section", "SIZES"]

#: Sizes per mode: data, training budget (seconds per model), MD.
SIZES = {
    "smoke": dict(repeat=2, n_md=3, n_rattled=4, n_strained=4, temps=(300, 900), train_s=10, epochs=4,
                  md_repeat=2, steps=100, dt=2.0, report=5),
    "quick": dict(repeat=2, n_md=12, n_rattled=10, n_strained=10, temps=(300, 600, 900, 1200), train_s=45,
                  epochs=200, md_repeat=3, steps=500, dt=2.0, report=5),
    "full": dict(repeat=2, n_md=40, n_rattled=30, n_strained=40, temps=(300, 600, 900, 1200), train_s=300,
                 epochs=1000, md_repeat=3, steps=5000, dt=2.0, report=10),
}


def _read_energy(path: Path) -> tuple[list[float], list[float]]:
    with open(path) as fh:
        rows = list(csv.DictReader(fh))
    t = [float(r["time_ps"]) for r in rows]
    e = [float(r["total_eV"]) for r in rows]
    return t, e


#: How each model is drawn: EMT as a wide pale band, the conservative model as a thin dashed line
#: with markers on top of it (the two coincide to the eye, and both stay visible), direct in red.
STYLES = {
    "emt": dict(color="0.6", lw=4.0, ls="-", alpha=0.7, label="EMT (classical reference)", zorder=1),
    "conservative": dict(color="tab:blue", lw=1.2, ls="--", marker="o", markersize=3, markevery=20,
                         label="NeuralPotential (conservative)", zorder=3),
    "direct": dict(color="tab:red", lw=1.2, ls="-", label="DirectForceModel (direct forces)", zorder=2),
}
ENGINE_TITLES = {"ase": "ASE VelocityVerlet", "openmm": "OpenMM VerletIntegrator"}


def _plot(runs: list[dict], n_atoms: int, path: Path) -> Path:
    """Total energy E(t) - E(0) per atom (meV) of every run: one column per engine; the top row
    shows all models on one scale, the bottom row zooms on EMT and the conservative model (whose
    drift is far below the direct model's). ``runs``: dicts with engine, model and drift-csv path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    engines = [e for e in ENGINE_TITLES if any(r["engine"] == e for r in runs)]
    fig, axes = plt.subplots(2, len(engines), figsize=(5.5 * len(engines), 7.0), squeeze=False, sharex=True)
    for col, engine in enumerate(engines):
        for row, models in enumerate((("emt", "direct", "conservative"), ("emt", "conservative"))):
            ax = axes[row][col]
            for model in models:
                for r in runs:
                    if r["engine"] == engine and r["model"] == model:
                        t, e = _read_energy(Path(r["csv"]))
                        ax.plot(t, [(x - e[0]) * 1e3 / n_atoms for x in e], **STYLES[model])
            ax.grid(alpha=0.3)
            ax.set_ylabel("E(t) − E(0)  (meV/atom)")
            if row == 0:
                ax.set_title(f"NVE total energy in {ENGINE_TITLES[engine]}: all models")
            else:
                ax.set_title("zoom: EMT and the conservative model")
                ax.set_xlabel("time (ps)")
            ax.legend(fontsize=8, loc="best")
    return save_figure(fig, path)


@section("forcefields", "Energy conservation in ASE and OpenMM: conservative vs direct-force models")
def forcefield_section(ctx, sec: Section) -> None:
    """Train both models on fresh EMT data and compare NVE drift in ASE and OpenMM."""
    from ase.build import bulk

    from lawful.forcefields import DirectForceModel, NeuralPotential, reference, train
    from lawful.integrations.md import run_md

    mode = ctx.mode
    z = SIZES[mode]
    out = ctx.out / "forcefields"
    out.mkdir(parents=True, exist_ok=True)

    ctx.log("[demo]   labelling EMT copper structures ...")
    frames = reference.emt_metal_dataset("Cu", repeat=z["repeat"], temperatures=z["temps"], n_md=z["n_md"],
                                         n_rattled=z["n_rattled"], n_strained=z["n_strained"], seed=ctx.seed)
    reference.write_extxyz(out / "cu_emt.extxyz", frames)
    models, rows = {}, []
    for name, cls in (("conservative", NeuralPotential), ("direct", DirectForceModel)):
        ctx.log(f"[demo]   training {cls.__name__} ({z['train_s']} s budget) ...")
        model = cls(species=["Cu"], cutoff=4.5, dtype=ctx.dtype, device=ctx.device, seed=ctx.seed)
        summary = train(model, frames, epochs=z["epochs"], max_time=z["train_s"], seed=ctx.seed,
                        checkpoint=out / f"{name}.ckpt", progress=False, resume=False)
        model.save(out / f"cu_{name}.lawful")
        models[name] = model
        rows.append({"model": f"{cls.__name__} ({name})", "epochs": summary["epochs_run"],
                     "val energy MAE (meV/atom)": 1e3 * summary["val_energy_mae_per_atom_eV"],
                     "val force MAE (meV/Å)": 1e3 * summary["val_force_mae_eV_per_A"],
                     "train time (s)": summary["train_time_s"]})
    sec.tables.append(("Training on the same EMT data with the same budget (validation set)", rows))

    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((z["md_repeat"],) * 3)
    runs, table = [], []
    for engine in ("ase", "openmm"):
        for name, model in (("emt", "emt"), ("conservative", models["conservative"]), ("direct", models["direct"])):
            ctx.log(f"[demo]   NVE {engine} / {name} ...")
            res = run_md(atoms, model, engine, timestep_fs=z["dt"], steps=z["steps"], temperature_K=300.0,
                         report_interval=z["report"], out=out / f"nve_{engine}_{name}", seed=ctx.seed,
                         device=ctx.device)
            s = res.summary
            runs.append({"engine": engine, "model": name, "csv": str(res.files["drift_csv"])})
            table.append({"engine": engine, "model": name, "drift (meV/atom/ps)": s.drift_mev_per_atom_per_ps,
                          "RMS fluctuation (meV/atom)": s.rms_fluctuation_mev_per_atom,
                          "max |E−E0| (meV/atom)": s.max_abs_deviation_mev_per_atom,
                          "drift/σ(KE)": s.drift_over_sigma_ke, "ms/step": 1e3 * res.step_seconds})
            sec.summary[f"drift_{engine}_{name}_mev_atom_ps"] = s.drift_mev_per_atom_per_ps
            sec.summary[f"fluct_{engine}_{name}_mev_atom"] = s.rms_fluctuation_mev_per_atom
            sec.summary[f"maxdev_{engine}_{name}_mev_atom"] = s.max_abs_deviation_mev_per_atom
    sec.tables.append((f"NVE drift, {len(atoms)} Cu atoms, dt = {z['dt']} fs, {z['steps']} steps, 300 K start", table))
    sec.figures.append(("Total energy vs time (per atom, relative to t = 0)", _plot(runs, len(atoms), out / "nve_energy.png")))
    sec.summary.update({"n_atoms": len(atoms), "steps": z["steps"], "timestep_fs": z["dt"]})
    sec.summary.update({f"{r['model'].split()[0]}_val_force_mae_mev_A": r["val force MAE (meV/Å)"] for r in rows})
    sec.text.append(
        "Both models learn from the same EMT-labelled copper structures with the same time budget. The "
        "NeuralPotential's forces are exact gradients of one smooth energy, so NVE conserves the total "
        "energy like EMT itself; the DirectForceModel predicts forces from a separate head, and its "
        "non-conservative force errors do work on the atoms that no energy accounts for: the total energy "
        "drifts, up or down, in both engines.")
    claims_shown(sec, ctx.mode, [
        (abs(sec.summary[f"drift_{engine}_conservative_mev_atom_ps"]) < abs(sec.summary[f"drift_{engine}_direct_mev_atom_ps"]),
         f"{engine}: a smaller drift for the NeuralPotential than for the DirectForceModel "
         f"({sec.summary[f'drift_{engine}_conservative_mev_atom_ps']:.3g} vs "
         f"{sec.summary[f'drift_{engine}_direct_mev_atom_ps']:.3g} meV/atom/ps)")
        for engine in ("ase", "openmm")] + [
        # "like EMT itself": the conservative model's excursion of E within FLOOR_FACTOR of EMT's on the
        # same start and step (a model drifting 10x EMT but less than the direct one read as all shown)
        (sec.summary[f"maxdev_{engine}_conservative_mev_atom"]
         <= FLOOR_FACTOR * sec.summary[f"maxdev_{engine}_emt_mev_atom"],
         f"{engine}: the NeuralPotential's total energy keeps within {FLOOR_FACTOR:g}x EMT's own excursion "
         f"(max |E-E0| {sec.summary[f'maxdev_{engine}_conservative_mev_atom']:.3g} vs "
         f"{sec.summary[f'maxdev_{engine}_emt_mev_atom']:.3g} meV/atom)")
        for engine in ("ase", "openmm")])

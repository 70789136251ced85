"""Demo section: a coarse Kármán vortex street with no corrector, the divergence-free (hard)
corrector and the soft-penalty corrector, each trained solver-in-the-loop against a 4x finer
reference, then rolled out on a held-out Reynolds number inside the Taichi loop."""

from __future__ import annotations

import statistics

from lawful.integrations.demo import claims_shown, section
from lawful.integrations.report import Section, figure, save_figure

__all__ = ["fluid_section", "SIZES"]

SIZES = {
    "smoke": dict(n=8, warmup=40, train_steps=24, test_steps=30, iterations=4, unroll=4, validate_every=0,
                  re_train=(100.0,), re_test=150.0),
    "quick": dict(n=16, warmup=120, train_steps=80, test_steps=120, iterations=50, unroll=4, validate_every=0,
                  re_train=(100.0,), re_test=150.0),
    "full": dict(n=16, warmup=256, train_steps=150, test_steps=300, iterations=400, unroll=8, validate_every=100,
                 re_train=(100.0, 200.0), re_test=150.0),
}

VARIANTS = (("none", None), ("hard", "hard"), ("soft", "soft"))
COLOURS = {"none": "k", "hard": "tab:blue", "soft": "tab:red"}


def _plot(results: dict, path):
    fig, axes = figure(3, width=5.0)
    for name, r in results.items():
        steps = range(1, len(r["error"]) + 1)
        axes[0].semilogy(steps, [max(d, 1e-17) for d in r["div_max_rel"]], color=COLOURS[name], label=name)
        axes[1].plot(steps, r["error"], color=COLOURS[name], label=name)
        axes[2].plot(steps, r["kinetic_energy"], color=COLOURS[name], label=name)
    axes[0].set_title("relative divergence max|∇·u|Δx/max|u| (after corrector)")
    axes[1].set_title("relative L2 error vs downsampled fine reference")
    axes[2].set_title("kinetic energy")
    for ax in axes:
        ax.set_xlabel("coarse step")
        ax.grid(alpha=0.3)
        ax.legend()
    return save_figure(fig, path)


@section("fluids", "Divergence-free neural corrector in the Taichi loop (Kármán vortex street)")
def fluid_section(ctx, sec: Section) -> None:
    """Train hard and soft correctors against a fine reference; compare held-out rollouts."""
    import torch

    from lawful.fluids.corrector_training import CorrectorTrainer, TrainConfig, make_corrector, rollout_errors
    from lawful.fluids.fine_reference import ReferenceCase, generate_reference
    from lawful.integrations.fluid_frames import save_vorticity_png
    from lawful.integrations.fluid_viz import colour_limits, field_values
    from lawful.kernels import ensure_taichi

    z = SIZES[ctx.mode]
    arch = ensure_taichi()
    dtype = torch.float32
    out = ctx.out / "fluids"
    out.mkdir(parents=True, exist_ok=True)
    ctx.log(f"[demo]   fine references (4x finer, Taichi {arch}) ...")
    train_refs = [generate_reference(ReferenceCase("karman", n=z["n"], re=re, warmup=z["warmup"],
                                                   steps=z["train_steps"]), dtype=dtype)
                  for re in z["re_train"]]
    test_ref = generate_reference(ReferenceCase("karman", n=z["n"], re=z["re_test"], warmup=z["warmup"],
                                                steps=z["test_steps"]), dtype=dtype)
    results, rows, finals = {}, [], {}
    for name, variant in VARIANTS:
        corrector = None
        if variant is not None:
            ctx.log(f"[demo]   training the {name} corrector ({z['iterations']} iterations, unroll {z['unroll']}) ...")
            torch.manual_seed(ctx.seed)
            corrector = make_corrector(variant, dtype=dtype)
            trainer = CorrectorTrainer(corrector, train_refs,
                                       TrainConfig(variant=variant, iterations=z["iterations"], unroll=z["unroll"],
                                                   seed=ctx.seed, validate_every=z["validate_every"],
                                                   validation_steps=z["train_steps"]),
                                       checkpoint=out / f"{name}.ckpt", resume=False)
            trainer.train(progress=False)
            corrector.save(out / f"corrector_{name}.lawful")
        ctx.log(f"[demo]   held-out rollout (Re {z['re_test']:g}) with corrector: {name} ...")
        final = {}

        def keep(state, rec, final=final):
            final["state"] = state
            final.setdefault("ke", []).append(rec["kinetic_energy"])

        r = rollout_errors(test_ref, corrector, steps=z["test_steps"], dtype=dtype, callback=keep)
        r["kinetic_energy"] = final["ke"]
        results[name] = r
        finals[name] = final["state"]
        rows.append({"corrector": name, "max div_max_rel": max(r["div_max_rel"]),
                     "final error": r["error"][-1], "mean error": sum(r["error"]) / len(r["error"]),
                     # the median: the first run's first step pays Taichi's compilation (0.8 s), which
                     # the mean charged to the uncorrected solver (7.2 ms/step shown for about 0.7)
                     "ms/step (median)": 1e3 * statistics.median(r["wall_s"])})
        sec.summary[f"{name}_max_div_rel"] = max(r["div_max_rel"])
        sec.summary[f"{name}_mean_error"] = sum(r["error"]) / len(r["error"])
    # one colour range for the three snapshots, which the report shows side by side for comparison
    _, vmax = colour_limits("vorticity", [field_values(st, "vorticity")[0] for st in finals.values()])
    for name, state in finals.items():
        save_vorticity_png(state, out / f"vorticity_{name}.png", vmax=vmax,
                           title=f"vorticity after {z['test_steps']} steps, corrector: {name}")
        sec.figures.append((f"Vorticity, corrector: {name} (one colour range for all three)",
                            out / f"vorticity_{name}.png"))
    cut = 1.0 - sec.summary["hard_mean_error"] / sec.summary["none_mean_error"]
    sec.summary["hard_error_cut"] = cut
    sec.tables.append((f"Held-out Re = {z['re_test']:g}, coarse grid {test_ref.case.aspect * z['n']}x{z['n']}, "
                       f"{z['test_steps']} steps (float32; Taichi {arch}, corrector on the CPU)", rows))
    sec.figures.insert(0, ("Divergence (log), error vs fine reference, kinetic energy",
                           _plot(results, out / "fluid_metrics.png")))
    sec.text.append(
        "The hard corrector outputs a stream function at cell corners and adds its discrete curl, so "
        "its correction has zero discrete divergence whatever its weights: the divergence stays at "
        "the pressure solver's tolerance. The soft corrector outputs a velocity correction directly, "
        "trained with a penalty on its divergence: it adds divergence every step. "
        f"Mean error change of the hard corrector vs none: {-100 * cut:+.1f} % "
        f"({z['iterations']} training iterations; the benchmark trains longer).")
    claims_shown(sec, ctx.mode, [
        (cut > 0, f"the hard corrector lowering the error (mean error {-100 * cut:+.1f} %)"),
        # both sit at the float32 projection's round-off floor (a few 1e-7, jittering step to step):
        # "at the level" is within a factor of two of it, not 1 % (5.7e-7 vs 5.4e-7 was read as a miss)
        (sec.summary["hard_max_div_rel"] <= 2.0 * sec.summary["none_max_div_rel"] + 1e-12,
         "the hard corrector keeping the divergence at the uncorrected solver's level "
         f"({sec.summary['hard_max_div_rel']:.2g} vs {sec.summary['none_max_div_rel']:.2g})"),
        (sec.summary["soft_max_div_rel"] > 10.0 * sec.summary["hard_max_div_rel"],
         "the soft corrector adding divergence "
         f"({sec.summary['soft_max_div_rel']:.2g} vs the hard corrector's {sec.summary['hard_max_div_rel']:.2g})")])

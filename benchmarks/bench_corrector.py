"""Benchmark of the neural correctors in the Taichi loop (issue: divergence-free corrector).

Stages (all in one run, ratios against baselines measured in the same run):

1. **data** — fine (4x) reference trajectories from the fine solver, downsampled conservatively
   (:mod:`lawful.fluids.fine_reference`; cached under ``runs/corrector_data``).
2. **train** — solver-in-the-loop training (k-step unroll through the differentiable twin) of the
   Kármán correctors: hard (divergence-free), plain, soft penalty, augmented Lagrangian, projected.
   Model files ``benchmarks/models/corrector_karman_<variant>.lawful`` are reused when present
   (``--retrain`` to train again).
3. **rollouts** — held-out Reynolds number (Re 150; trained on 100 and 200): ``--steps`` (500)
   coarse steps in the Taichi loop per variant; relative L2 velocity error vs the downsampled fine
   reference; error-vs-time plot ``benchmarks/results/corrector_error.png``.
4. **divergence table** — ``--div-steps`` (10^4) steps on a small periodic grid and a small
   channel with obstacle, random-init and trained weights, float32 and float64, max over every
   step of the corrected field's relative divergence; the same for the baselines.
5. **speed** — corrected vs plain coarse step at 128^2 (Kolmogorov); coarse(+corrector) vs the
   fine solver per unit of simulated time on the held-out case.

Run: ``.venv/bin/python benchmarks/bench_corrector.py`` (``--quick`` for a smoke run).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from dataclasses import replace
from pathlib import Path

import torch

from lawful.integrations.benchmarking import quick_requested  # noqa: E402
from lawful.integrations.benchmarking import write_result
from lawful.fluids import scenes
from lawful.fluids.correctors import DivergenceFreeCorrector, load_corrector
from lawful.fluids.corrector_training import CorrectorTrainer, TrainConfig, make_corrector, rollout_errors
from lawful.fluids.fine_reference import TEST_CASES, TRAIN_CASES, load_or_generate

ROOT = Path(__file__).resolve().parent
MODELS = ROOT / "models"
RESULTS = ROOT / "results"
VARIANTS = ("hard", "plain", "soft", "al", "projected")
NET = dict(hidden=16, layers=4, use_reynolds=True, init_gain=0.01)


def train_variant(variant, trajs, args):
    path = MODELS / f"corrector_karman_{variant}.lawful"
    if path.exists() and not args.retrain:
        return load_corrector(path), None
    torch.manual_seed(0)
    corr = make_corrector(variant, **NET)
    cfg = TrainConfig(variant=variant, iterations=args.iterations, lr=args.lr, unroll=args.unroll,
                      soft_weight=args.soft_weight, al_penalty=args.al_penalty, checkpoint_every=25,
                      validate_every=args.validate_every, validation_steps=args.validation_steps)
    ckpt = None if args.quick else Path("runs") / f"corrector_{variant}.ckpt"
    trainer = CorrectorTrainer(corr, trajs, cfg, checkpoint=ckpt, resume=not args.retrain)
    t0 = time.perf_counter()
    hist = trainer.train(progress=True)
    secs = time.perf_counter() - t0
    last = hist[-max(1, len(hist) // 10):]
    summary = {"iterations": len(hist), "seconds": secs,
               "best_validation": None if trainer.best is None else
               {"iteration": trainer.best["iteration"], "error": trainer.best["error"]}, "final_fit": statistics.mean(r["fit"] for r in last),
               "first_fit": statistics.mean(r["fit"] for r in hist[:max(1, len(hist) // 10)]),
               "config": {k: getattr(cfg, k) for k in ("variant", "unroll", "iterations", "lr", "soft_weight",
                                                       "al_penalty", "validate_every", "validation_steps")},
               "train_cases": [t.case.label for t in trajs]}
    if not args.quick:
        MODELS.mkdir(parents=True, exist_ok=True)
        corr.save(path, metadata={"training": summary, "scene": "karman", "net": NET})
    return corr, summary


def divergence_run(scene, corrector, steps):
    """Max over ``steps`` Taichi-loop steps of the corrected field's relative divergence and of the
    correction's own relative divergence."""
    solver = scene.make_solver()
    st = scene.state
    worst = worst_corr = 0.0
    before = {}

    def wrapped(state):
        before["u"], before["v"] = state.u.clone(), state.v.clone()
        return corrector(state)

    fluid = ~st.solid
    for _ in range(steps):
        solver.step(st, wrapped)
        u, v = st.u.double(), st.v.double()
        scale = max(float(u.abs().max()), float(v.abs().max()))
        d = ((u[1:] - u[:-1]) + (v[:, 1:] - v[:, :-1]))[fluid]
        cu, cv = u - before["u"].double(), v - before["v"].double()
        dc = ((cu[1:] - cu[:-1]) + (cv[:, 1:] - cv[:, :-1]))[fluid]
        worst = max(worst, float(d.abs().max()) / scale)
        worst_corr = max(worst_corr, float(dc.abs().max()) / scale)
    return worst, worst_corr


def divergence_table(trained, steps, baseline_steps):
    """Hard corrector: random-init and trained, float32 and float64, ``steps`` steps on a periodic
    16^2 Kolmogorov flow and ``steps // 5`` on a channel with an obstacle; baselines (trained,
    float32) the same."""
    rows = []
    plan = []
    for dtype in (torch.float32, torch.float64):
        plan.append(("hard/random", dtype))
        if "hard" in trained:
            plan.append(("hard/trained", dtype))
    for v in VARIANTS:
        if v != "hard" and v in trained:
            plan.append((f"{v}/trained", torch.float32))
    for label, dtype in plan:
        torch.manual_seed(0)
        if label == "hard/random":
            corr = DivergenceFreeCorrector(hidden=NET["hidden"], layers=NET["layers"], dtype=dtype,
                                           use_reynolds=True)
        else:
            corr = copy.deepcopy(trained[label.split("/")[0]]).to(dtype)
        corr.reynolds = 150.0
        rtol = None if dtype == torch.float32 else 1e-13
        total = steps if label.startswith("hard") else baseline_steps
        for scene_name, n_steps in (("kolmogorov16", total), ("karman8", max(total // 5, 1))):
            if scene_name == "kolmogorov16":
                sc = scenes.kolmogorov(n=16, dtype=dtype, viscosity=0.01)
            else:
                sc = scenes.karman(re=150.0, n=8, aspect=2, diameter=0.25, dtype=dtype)
            sc.config = replace(sc.config, pressure_rtol=rtol)
            t0 = time.perf_counter()
            worst, worst_corr = divergence_run(sc, corr, n_steps)
            rows.append({"corrector": label, "dtype": str(dtype).replace("torch.", ""), "scene": scene_name,
                         "steps": n_steps, "pressure_rtol": rtol or 1e-6, "max_div_rel": worst,
                         "max_correction_div_rel": worst_corr, "seconds": time.perf_counter() - t0})
            print(rows[-1], flush=True)
    return rows


def timing_128(corrector, repeat):
    sc = scenes.kolmogorov(n=128, dtype=torch.float32, viscosity=0.01)
    solver = sc.make_solver()
    st = sc.state
    for _ in range(3):
        solver.step(st, corrector)
    plain, corr = [], []
    for _ in range(repeat):          # interleaved: the shared machine's load hits both alike
        t0 = time.perf_counter()
        solver.step(st)
        plain.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        solver.step(st, corrector)
        corr.append(time.perf_counter() - t0)
    return statistics.median(plain), statistics.median(corr)


def fine_vs_coarse(case, corrector, repeat):
    """Wall time per coarse-step of simulated time: fine solver (``factor`` fine steps) vs coarse
    solver + corrector, interleaved in this run."""
    from lawful.fluids.fine_reference import coarse_scene

    fine = coarse_scene(case, n=case.n * case.factor)
    coarse = coarse_scene(case)
    fs, cs = fine.make_solver(), coarse.make_solver()
    corrector.reynolds = case.re
    for _ in range(2):
        fs.step(fine.state)
        cs.step(coarse.state, corrector)
    tf, tc, tp = [], [], []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(case.factor):
            fs.step(fine.state)
        tf.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        cs.step(coarse.state, corrector)
        tc.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        cs.step(coarse.state)
        tp.append(time.perf_counter() - t0)
    return statistics.median(tf), statistics.median(tc), statistics.median(tp)


def plot(errors, dt, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for name, err in errors.items():
        t = [dt * (k + 1) for k in range(len(err))]
        ax.plot(t, err, label=name)
    ax.set_xlabel("simulated time (grid units)")
    ax.set_ylabel("relative L2 velocity error vs fine reference")
    ax.set_yscale("log")
    ax.set_title("Kármán, held-out Re 150: coarse 32x16 (+corrector) vs 128x64 reference")
    ax.legend()
    fig.tight_layout()
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", default=quick_requested(), help="smoke run: few iterations and steps, no files kept")
    ap.add_argument("--retrain", action="store_true")
    ap.add_argument("--iterations", type=int, default=300)
    ap.add_argument("--unroll", type=int, default=4)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--soft-weight", type=float, default=10.0)
    ap.add_argument("--al-penalty", type=float, default=10.0)
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--div-steps", type=int, default=10_000)
    ap.add_argument("--baseline-div-steps", type=int, default=2_000)
    ap.add_argument("--validate-every", type=int, default=100)
    ap.add_argument("--validation-steps", type=int, default=300)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--skip", default="", help="comma list of stages to skip: div,timing")
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.quick:
        args.iterations, args.steps, args.div_steps, args.baseline_div_steps = 4, 20, 20, 20
        args.validate_every, args.validation_steps = 2, 5
    skip = set(filter(None, args.skip.split(",")))
    cache = Path("runs") / "corrector_data"
    t_data = time.perf_counter()
    train = [load_or_generate(c, cache, progress=True) for c in TRAIN_CASES if c.scene == "karman"]
    test = load_or_generate(TEST_CASES[0], cache, progress=True)
    t_data = time.perf_counter() - t_data

    variants = [v for v in args.variants.split(",") if v]
    trained, summaries = {}, {}
    for v in variants:
        corr, summary = train_variant(v, train, args)
        corr._path = MODELS / f"corrector_karman_{v}.lawful"
        trained[v] = corr
        summaries[v] = summary or load_corrector(corr._path).metadata.get("training")

    errors, walls, divs = {}, {}, {}
    r = rollout_errors(test, None, steps=args.steps)
    errors["none"], walls["none"], divs["none"] = r["error"], r["wall_s"], max(r["div_max_rel"])
    for v in variants:
        r = rollout_errors(test, trained[v], steps=args.steps)
        errors[v], walls[v], divs[v] = r["error"], r["wall_s"], max(r["div_max_rel"])
        print(v, "mean err", statistics.mean(r["error"]), flush=True)
    mean_err = {k: statistics.mean(e) for k, e in errors.items()}
    final_err = {k: e[-1] for k, e in errors.items()}
    cut = {k: 1.0 - mean_err[k] / mean_err["none"] for k in errors if k != "none"}
    RESULTS.mkdir(parents=True, exist_ok=True)
    if not args.quick:
        from lawful.fluids.fine_reference import coarse_scene

        plot(errors, coarse_scene(test.case).config.dt, RESULTS / "corrector_error.png")

    figures = {"heldout_case": test.case.label, "rollout_steps": args.steps,
               "mean_rel_error": mean_err, "final_rel_error": final_err, "error_cut_vs_none": cut,
               "rollout_max_div_rel": divs,
               "rollout_step_median_s": {k: statistics.median(w) for k, w in walls.items()},
               "training": summaries, "data_seconds": t_data}
    if "timing" not in skip:
        hard = trained.get("hard") or DivergenceFreeCorrector(**NET)
        tf, tc, tp = fine_vs_coarse(test.case, hard, repeat=5 if args.quick else 30)
        figures["fine_per_coarse_step_s"] = tf
        figures["coarse_corrected_step_s"] = tc
        figures["coarse_plain_step_s"] = tp
        figures["speedup_coarse_corrected_vs_fine_ratio"] = tf / tc
        h128 = hard                  # the trained network (Re input set; only its cost matters here)
        h128.reynolds = 150.0
        p128, c128 = timing_128(h128, repeat=5 if args.quick else 30)
        figures["step128_plain_s"] = p128
        figures["step128_corrected_s"] = c128
        figures["step128_corrected_over_plain_ratio"] = c128 / p128
    if "div" not in skip:
        figures["divergence_table"] = divergence_table(trained, args.div_steps, args.baseline_div_steps)
    if not args.quick:
        write_result("corrector", figures, dtype=torch.float32, device="cpu",
                     params={"net": NET, "iterations": args.iterations, "unroll": args.unroll, "lr": args.lr,
                             "soft_weight": args.soft_weight, "al_penalty": args.al_penalty,
                             "train_cases": [t.case.label for t in train], "test_case": test.case.label,
                             "div_steps": args.div_steps, "baseline_div_steps": args.baseline_div_steps,
                             "validate_every": args.validate_every, "validation_steps": args.validation_steps},
                     out_dir=RESULTS)
    print({k: v for k, v in figures.items() if k not in ("divergence_table", "training")})


if __name__ == "__main__":
    main()

"""Benchmark of the neural correctors in the Taichi loop (issue: divergence-free corrector).

Stages (all in one run, ratios against baselines measured in the same run):

1. **data** — fine (4x) reference trajectories from the fine solver, downsampled conservatively
   (:mod:`lawful.fluids.fine_reference`; cached under ``runs/corrector_data`` at the repository
   root, created when missing; ``--quick``/tiny runs cache their short cases in the results folder).
2. **train** — solver-in-the-loop training (k-step unroll through the differentiable twin) of the
   Kármán correctors: hard (divergence-free), plain, soft penalty, augmented Lagrangian, projected,
   all with the same settings, by default :class:`~lawful.fluids.corrector_training.TrainConfig`'s
   (``--unroll`` 8, ``--iterations`` 600, Adam ``--lr`` 3e-3 cosine-annealed).
   Each variant is trained for every seed in ``--seeds`` (0,1,2; ``--jobs`` worker processes); the
   weights kept are those with the lowest *training-set* validation error (``--validation-steps``
   Taichi rollouts on Re 100 and 200 every ``--validate-every`` iterations, over iterations and
   seeds). The held-out case never takes part in that choice; its error for every seed is reported
   (``error_cut_per_seed``). Model files ``benchmarks/models/corrector_karman_<variant>.lawful``
   are reused when present (``--retrain`` to train again).
3. **rollouts** — held-out Reynolds number (Re 150; trained on 100 and 200): ``--steps`` (500)
   coarse steps in the Taichi loop per variant; relative L2 velocity error vs the downsampled fine
   reference; error-vs-time plot ``benchmarks/results/corrector_error.png``.
4. **divergence table** — the hard corrector, random-init and trained weights, float32 and
   float64: ``--div-steps`` (10^4) steps on a small periodic grid and a fifth of them on a small
   channel with obstacle, max over every step of the corrected field's relative divergence (and
   of the correction's own); the trained baselines the same in float32 over
   ``--baseline-div-steps`` (2000) and a fifth of them (each row records its step count; a max
   over fewer steps can only be lower, which favours the baselines).
5. **speed** — corrected vs plain coarse step at 128^2 (Kolmogorov); coarse(+corrector) vs the
   fine solver per unit of simulated time on the held-out case.

Run: ``.venv/bin/python benchmarks/bench_corrector.py`` (``--quick`` for a smoke run: the committed
models, short reference cases, figures written to the quick results folder, never over
``benchmarks/results``). ``LAWFUL_BENCH_TINY=1``: the smallest sizes (CI smoke, not a result).
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import time
from dataclasses import replace
from pathlib import Path

import torch

from lawful.integrations.benchmarking import (default_results_dir, quick_requested, replace_model_file, tiny_requested,
                                              write_result)
from lawful.fluids import scenes
from lawful.fluids.correctors import DEFAULT_NET, DivergenceFreeCorrector, load_corrector, scene_domain
from lawful.fluids.corrector_training import CorrectorTrainer, TrainConfig, make_corrector, rollout_errors
from lawful.fluids.fine_reference import TEST_CASES, TRAIN_CASES, coarse_scene, load_or_generate
from lawful.kernels.errors import NumericalError

ROOT = Path(__file__).resolve().parent
MODELS = ROOT / "models"
RUNS = ROOT.parent / "runs"          # training checkpoints and the reference cache (git-ignored)
VARIANTS = ("hard", "plain", "soft", "al", "projected")
NET = dict(DEFAULT_NET, use_reynolds=True, init_gain=0.01)


def _train_one(variant, seed, args, trajs):
    """Train one (variant, seed) in this process on the reference trajectories ``trajs``; returns
    the weights and a summary (with the training-set validation error that selects the seed)."""
    from lawful.kernels import ensure_taichi

    ensure_taichi()
    torch.set_num_threads(1)
    torch.manual_seed(seed)
    corr = make_corrector(variant, **NET)
    cfg = TrainConfig(variant=variant, iterations=args.iterations, lr=args.lr, unroll=args.unroll, seed=seed,
                      soft_weight=args.soft_weight, al_penalty=args.al_penalty, al_tolerance=args.al_tolerance,
                      checkpoint_every=25,
                      validate_every=args.validate_every, validation_steps=args.validation_steps)
    ckpt = None if args.quick else RUNS / f"corrector_{variant}_s{seed}.ckpt"
    if ckpt is not None:
        ckpt.parent.mkdir(parents=True, exist_ok=True)
    trainer = CorrectorTrainer(corr, trajs, cfg, checkpoint=ckpt, resume=variant not in args.retrain_set)
    t0 = time.perf_counter()
    hist = trainer.train(progress=args.jobs == 1)
    secs = time.perf_counter() - t0
    last = hist[-max(1, len(hist) // 10):]
    summary = {"seed": seed, "iterations": len(hist), "seconds": secs,
               "best_validation": None if trainer.best is None else
               {"iteration": trainer.best["iteration"], "error": trainer.best["error"]},
               "validation_history": [[r["iteration"], r["validation_error"]] for r in hist
                                      if "validation_error" in r],
               "final_fit": statistics.mean(r["fit"] for r in last),
               "first_fit": statistics.mean(r["fit"] for r in hist[:max(1, len(hist) // 10)]),
               "config": {k: getattr(cfg, k) for k in ("variant", "unroll", "iterations", "lr", "soft_weight",
                                                       "al_penalty", "al_tolerance", "validate_every",
                                                       "validation_steps")},
               "train_cases": [t.case.label for t in trajs],
               # the augmented Lagrangian's penalty and multipliers at the end of training (its runaway
               # was invisible); the kept weights may be an earlier iteration's (best_validation)
               "constraint": None if trainer.al is None else trainer.al.state()}
    return variant, seed, {k: t.detach().clone() for k, t in corr.state_dict().items()}, summary


def _validation_error(summary) -> float:
    best = summary.get("best_validation")
    return float("inf") if best is None else best["error"]


def train_variants(variants, trajs, args):
    """Train every variant for every seed in ``args.seeds`` (``args.jobs`` worker processes, one
    torch thread each) and keep, per variant, the seed with the lowest *training-set* validation
    error (the held-out case never takes part in the choice). Model files
    ``benchmarks/models/corrector_karman_<variant>.lawful`` are reused unless ``--retrain`` names
    the variant (or all).
    Returns ``{variant: (corrector, summary, {seed: state_dict})}``; the per-seed weights are
    only there for variants trained in this run."""
    from concurrent.futures import ProcessPoolExecutor
    import multiprocessing as mp

    out, todo = {}, []
    for v in variants:
        path = MODELS / f"corrector_karman_{v}.lawful"
        if path.exists() and v not in args.retrain_set:
            corr = load_corrector(path)
            out[v] = (corr, corr.metadata.get("training"), {})
        else:
            todo += [(v, s) for s in args.seeds]
    results = []
    if todo and args.jobs > 1:
        with ProcessPoolExecutor(args.jobs, mp_context=mp.get_context("spawn")) as pool:
            futures = [pool.submit(_train_one, v, s, args, trajs) for v, s in todo]
            for f in futures:
                results.append(f.result())
                print("trained", results[-1][0], "seed", results[-1][1], results[-1][3]["best_validation"],
                      flush=True)
    else:
        results = [_train_one(v, s, args, trajs) for v, s in todo]
    for v in variants:
        runs = [(s, w, summ) for vv, s, w, summ in results if vv == v]
        if not runs:
            continue
        seed, weights, summary = min(runs, key=lambda r: _validation_error(r[2]))
        corr = make_corrector(v, **NET)
        corr.load_state_dict(weights)
        summary = dict(summary, selected_by="lowest training-set validation error over seeds",
                       seeds={str(s): {"best_validation": summ["best_validation"], "seconds": summ["seconds"]}
                              for s, _, summ in runs})
        if not args.quick:
            MODELS.mkdir(parents=True, exist_ok=True)
            meta = {"training": summary, "scene": "karman", "net": NET,
                    # what bind()/lawful fluid compare a run with (as lawful train-corrector writes)
                    "trained_on": {**scene_domain(coarse_scene(TRAIN_CASES[0])),
                                   "re": sorted(float(c.re) for c in TRAIN_CASES if c.scene == "karman")}}
            replace_model_file(lambda p: corr.save(p, metadata=meta), MODELS / f"corrector_karman_{v}.lawful")
        out[v] = (corr, summary, {s: w for s, w, _ in runs})
    return out


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
    for k in range(steps):
        try:
            solver.step(st, wrapped)
        except NumericalError as exc:    # a corrector far outside its training (a Kármán one on Kolmogorov)
            return worst, worst_corr, f"blew up at step {k}: {str(exc).splitlines()[0][:160]}"
        u, v = st.u.double(), st.v.double()
        scale = max(float(u.abs().max()), float(v.abs().max()))
        d = ((u[1:] - u[:-1]) + (v[:, 1:] - v[:, :-1]))[fluid]
        cu, cv = u - before["u"].double(), v - before["v"].double()
        dc = ((cu[1:] - cu[:-1]) + (cv[:, 1:] - cv[:, :-1]))[fluid]
        worst = max(worst, float(d.abs().max()) / scale)
        worst_corr = max(worst_corr, float(dc.abs().max()) / scale)
    return worst, worst_corr, None


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
            worst, worst_corr, stopped = divergence_run(sc, corr, n_steps)
            rows.append({"corrector": label, "dtype": str(dtype).replace("torch.", ""), "scene": scene_name,
                         "steps": n_steps, "pressure_rtol": rtol or 1e-6, "max_div_rel": worst,
                         "max_correction_div_rel": worst_corr, "stopped": stopped,
                         "seconds": time.perf_counter() - t0})
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
    corrector.bind(coarse)           # the held-out scene: its Re, and the domain check on it
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
    ap.add_argument("--retrain", nargs="?", const="all", default=None,
                    help="train again instead of reusing the committed model files: all variants, or a comma "
                         "list of them (--retrain al); the others are reused")
    ap.add_argument("--iterations", type=int, default=TrainConfig.iterations)
    ap.add_argument("--unroll", type=int, default=TrainConfig.unroll)
    ap.add_argument("--seeds", default=None,
                    help="comma list of training seeds per variant; the model kept is the seed with the "
                         "lowest training-set validation error (default 0,1,2; --quick: 0)")
    ap.add_argument("--jobs", type=int, default=None,
                    help="worker processes for training, one thread each (default 2; --quick: 1)")
    ap.add_argument("--lr", type=float, default=TrainConfig.lr)
    ap.add_argument("--soft-weight", type=float, default=10.0)
    ap.add_argument("--al-penalty", type=float, default=10.0)
    ap.add_argument("--al-tolerance", type=float, default=TrainConfig.al_tolerance,
                    help="RMS relative divergence per step the augmented Lagrangian holds the corrections below")
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--div-steps", type=int, default=10_000)
    ap.add_argument("--baseline-div-steps", type=int, default=2_000)
    ap.add_argument("--validate-every", type=int, default=TrainConfig.validate_every)
    ap.add_argument("--validation-steps", type=int, default=TrainConfig.validation_steps)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--skip", default="", help="comma list of stages to skip: div,timing")
    args = ap.parse_args()
    torch.set_num_threads(1)
    tiny = tiny_requested()
    if args.quick:
        args.iterations, args.steps, args.div_steps, args.baseline_div_steps = 4, 20, 20, 20
        args.validate_every, args.validation_steps = 2, 5
    if tiny:
        args.steps, args.div_steps, args.baseline_div_steps, args.validation_steps = 6, 4, 4, 3
    # where results go: LAWFUL_BENCH_DIR (set by `lawful bench`), else benchmarks/results, except
    # that a quick run never writes over the committed figures
    if "LAWFUL_BENCH_DIR" in os.environ or not args.quick:
        results = default_results_dir()
    else:
        results = ROOT / "results-quick"
    cache = (results / "corrector_data") if args.quick else (RUNS / "corrector_data")
    cache.mkdir(parents=True, exist_ok=True)
    shorten = {"warmup": 4, "steps": 8} if tiny else {"warmup": 32, "steps": 30} if args.quick else {}
    if args.seeds is None:
        args.seeds = "0" if args.quick else "0,1,2"
    if args.jobs is None:
        args.jobs = 1 if args.quick else 2
    args.seeds = [int(x) for x in args.seeds.split(",") if x.strip()]
    skip = set(filter(None, args.skip.split(",")))
    t_data = time.perf_counter()
    train = [load_or_generate(replace(c, **shorten), cache, progress=True) for c in TRAIN_CASES
             if c.scene == "karman"]
    test = load_or_generate(replace(TEST_CASES[0], **shorten), cache, progress=True)
    t_data = time.perf_counter() - t_data

    variants = [v for v in args.variants.split(",") if v]
    args.retrain_set = (set(variants) if args.retrain == "all"
                        else {v for v in (args.retrain or "").split(",") if v})
    if args.retrain_set - set(variants):
        raise SystemExit(f"--retrain {args.retrain}: {sorted(args.retrain_set - set(variants))} not among the "
                         f"variants run ({','.join(variants)}): name variants from --variants, or 'all'")
    t_train = time.perf_counter()
    models = train_variants(variants, train, args)
    t_train = time.perf_counter() - t_train
    trained = {v: m[0] for v, m in models.items()}
    summaries = {v: m[1] for v, m in models.items()}

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
    # every seed on the held-out case too (reported, never used to choose): how much the cut
    # depends on the training seed; the kept seed's rollout is the one above
    per_seed = {}
    for v in variants:
        for seed, weights in models[v][2].items():
            if seed == summaries[v]["seed"]:
                per_seed.setdefault(v, {})[str(seed)] = cut[v]
                continue
            corr = make_corrector(v, **NET)
            corr.load_state_dict(weights)
            e = rollout_errors(test, corr, steps=args.steps)["error"]
            per_seed.setdefault(v, {})[str(seed)] = 1.0 - statistics.mean(e) / mean_err["none"]
    results.mkdir(parents=True, exist_ok=True)
    if not tiny:
        from lawful.fluids.fine_reference import coarse_scene

        plot(errors, coarse_scene(test.case).config.dt, results / "corrector_error.png")

    figures = {"heldout_case": test.case.label, "rollout_steps": args.steps,
               "mean_rel_error": mean_err, "final_rel_error": final_err, "error_cut_vs_none": cut,
               "rollout_max_div_rel": divs,
               "rollout_step_median_s": {k: statistics.median(w) for k, w in walls.items()},
               "error_cut_per_seed": per_seed,
               "error_cut_seed_mean": {v: statistics.mean(c.values()) for v, c in per_seed.items()},
               "training": summaries, "data_seconds": t_data, "training_seconds": t_train}
    if "timing" not in skip:
        hard = trained.get("hard") or DivergenceFreeCorrector(**NET)
        tf, tc, tp = fine_vs_coarse(test.case, hard, repeat=2 if tiny else 5 if args.quick else 30)
        figures["fine_per_coarse_step_s"] = tf
        figures["coarse_corrected_step_s"] = tc
        figures["coarse_plain_step_s"] = tp
        figures["speedup_coarse_corrected_vs_fine_ratio"] = tf / tc
        h128 = hard                  # the trained network (Re input set; only its cost matters here)
        h128.reynolds = 150.0
        p128, c128 = timing_128(h128, repeat=2 if tiny else 5 if args.quick else 30)
        figures["step128_plain_s"] = p128
        figures["step128_corrected_s"] = c128
        figures["step128_corrected_over_plain_ratio"] = c128 / p128
    if "div" not in skip:
        figures["divergence_table"] = divergence_table(trained, args.div_steps, args.baseline_div_steps)
    # quick runs write too, to the quick results folder (see ``results`` above)
    write_result("corrector", figures, dtype=torch.float32, device="cpu",
                 params={"net": NET, "iterations": args.iterations, "unroll": args.unroll, "lr": args.lr,
                         "soft_weight": args.soft_weight, "al_penalty": args.al_penalty,
                         "al_tolerance": args.al_tolerance,
                         "seeds": args.seeds, "jobs": args.jobs,
                         "train_cases": [t.case.label for t in train], "test_case": test.case.label,
                         "div_steps": args.div_steps, "baseline_div_steps": args.baseline_div_steps,
                         "validate_every": args.validate_every, "validation_steps": args.validation_steps,
                         "quick": args.quick, "tiny": tiny, "reference_shortened_to": shorten or None},
                 seeds=args.seeds, out_dir=results)
    print({k: v for k, v in figures.items() if k not in ("divergence_table", "training")})


if __name__ == "__main__":
    main()

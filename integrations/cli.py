"""The ``lawful`` command line (argparse).

Subcommands: ``demo``, ``bench``, ``data``, ``train``, ``md``, ``fluid``. Each subcommand lives in
a function ``_cmd_<name>(args)``; options shared by several (``--out``, ``--seed``, ``--device``,
``--dtype``) are added by one helper so they read the same everywhere.
"""

from __future__ import annotations

import argparse
import sys

from lawful.kernels.errors import LawfulError

__all__ = ["main", "build_parser"]


def _common(p: argparse.ArgumentParser, out_default: str, dtype_default: str = "float64") -> None:
    p.add_argument("--out", default=out_default, help=f"output folder (default: {out_default})")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--device", default="cpu", help="torch device: cpu | cuda | auto (default: cpu)")
    p.add_argument("--dtype", default=dtype_default, choices=["float64", "float32"],
                   help=f"floating-point precision (default: {dtype_default})")
    p.add_argument("--threads", type=int, default=1,
                   help="torch intra-op threads (default: 1; small systems run fastest on one, and "
                        "oversubscribed threads spin-wait)")


def _cmd_demo(args) -> int:
    from lawful.integrations.demo import run_demo

    mode = "smoke" if args.smoke else "quick" if args.quick else "full"
    report = run_demo(out=args.out, mode=mode, seed=args.seed, dtype=args.dtype, device=args.device)
    print(f"report written to {report.resolve()}")
    return 0


def _cmd_bench(args) -> int:
    from lawful.integrations.bench_suite import run_suite

    out = args.out or ("benchmarks/results-quick" if args.quick else "benchmarks/results")
    paths = run_suite(args.suite, out, only=args.only, quick=args.quick)
    for p in paths:
        print(p)
    return 0


def _structure(args):
    """The ase.Atoms that ``--element/--lattice/--repeat`` describe (an fcc supercell)."""
    from ase.build import bulk

    return bulk(args.element, "fcc", a=args.lattice, cubic=True).repeat((args.repeat,) * 3)


def _cmd_data(args) -> int:
    from pathlib import Path

    from lawful.forcefields import reference

    if args.calc == "emt":
        frames = reference.emt_metal_dataset(args.element, repeat=args.repeat, temperatures=args.temperatures,
                                             n_md=args.n_md, n_rattled=args.n_rattled,
                                             n_strained=args.n_strained, seed=args.seed)
    elif args.calc == "lj":
        frames = reference.lennard_jones_dataset(n_md=args.n_md, temperatures=args.temperatures,
                                                 repeat=args.repeat, seed=args.seed)
    else:
        frames = reference.water_cluster_dataset(n_md=args.n_md, temperatures=args.temperatures, seed=args.seed)
    out = Path(args.out)
    xyz = reference.write_extxyz(out / "data.extxyz", frames)
    db = reference.write_db(args.db or str(out / "data.db"), frames)
    print(f"{len(frames)} labelled structures ({args.calc}) written to {xyz} and {db}")
    return 0


def _cmd_train(args) -> int:
    from pathlib import Path

    from lawful.forcefields import DirectForceModel, NeuralPotential, train
    from lawful.forcefields.training import load_frames

    frames = load_frames(args.data)
    species = args.species or sorted({s for a in frames for s in a.get_chemical_symbols()})
    cls = NeuralPotential if args.model == "conservative" else DirectForceModel
    model = cls(species=species, cutoff=args.cutoff, dtype=args.dtype, device=args.device, seed=args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{args.name or args.model}.lawful"
    ckpt = out / f"{path.stem}.ckpt"
    try:
        summary = train(model, frames, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                        force_weight=args.force_weight, energy_weight=args.energy_weight,
                        stress_weight=args.stress_weight, checkpoint=ckpt, seed=args.seed,
                        max_time=args.max_time, log=out / f"{path.stem}.log.jsonl")
    except KeyboardInterrupt:
        print(f"interrupted: the last complete epoch is in {ckpt}; run the same command again to resume.")
        raise
    model.save(path)
    print(f"model written to {path}: validation energy MAE {summary.get('val_energy_mae_per_atom_eV', float('nan')):.3g} "
          f"eV/atom, force MAE {summary.get('val_force_mae_eV_per_A', float('nan')):.3g} eV/Å")
    return 0


def _cmd_md(args) -> int:
    from lawful.integrations.md import run_md

    if args.structure:
        from ase.io import read

        atoms = read(args.structure)
    else:
        atoms = _structure(args)
    res = run_md(atoms, args.model, args.engine, timestep_fs=args.dt, steps=args.steps,
                 ensemble=args.ensemble, temperature_K=args.temperature, out=args.out, seed=args.seed,
                 dtype=args.dtype, device=args.device, report_interval=args.report_interval,
                 progress=True, platform=args.platform)
    s = res.summary
    print(f"{res.engine} {res.ensemble}: {res.n_atoms} atoms, {res.steps} steps of {res.timestep_fs} fs in "
          f"{res.seconds:.1f} s; drift {s.drift_mev_per_atom_per_ps:.4g} meV/atom/ps, "
          f"fluctuation {s.rms_fluctuation_mev_per_atom:.4g} meV/atom")
    for k, v in res.files.items():
        print(f"  {k}: {v}")
    return 0


def _load_corrector(spec: str, scene, dtype):
    """``none`` -> None; ``random`` -> a random-init divergence-free corrector; else a file."""
    if spec == "none":
        return None
    from lawful.fluids import correctors

    if spec == "random":
        return correctors.DivergenceFreeCorrector.for_scene(scene)
    return correctors.load_corrector(spec, dtype=dtype)


def _cmd_fluid(args) -> int:
    from pathlib import Path

    import torch

    from lawful.fluids import run, scenes
    from lawful.integrations.fluid_frames import save_vorticity_png
    from lawful.kernels import ensure_taichi

    arch = ensure_taichi()
    dtype = torch.float64 if args.dtype == "float64" else torch.float32
    kwargs = {"n": args.n, "dtype": dtype}
    if args.scene == "karman":
        kwargs["re"] = args.re
    scene = scenes.make(args.scene, **kwargs)
    corrector = _load_corrector(args.corrector, scene, dtype)
    out = Path(args.out)
    frames = out / "frames"
    frames.mkdir(parents=True, exist_ok=True)

    def snapshot(state, rec):
        if args.frame_every and rec["step"] % args.frame_every == 0:
            save_vorticity_png(state, frames / f"vorticity_{rec['step']:06d}.png")

    try:
        records = run(scene, args.steps, corrector=corrector, csv=out / "metrics.csv",
                      plot=out / "metrics.png", callback=snapshot, progress=True)
    except KeyboardInterrupt:
        print(f"interrupted: metrics so far are in {out / 'metrics.csv'}, frames in {frames}")
        raise
    last = records[-1] if records else {}
    print(f"{args.scene} n={args.n} on Taichi {arch}: {len(records)} steps; last step div_max_rel "
          f"{last.get('div_max_rel', float('nan')):.3g}, kinetic energy {last.get('kinetic_energy', float('nan')):.4g}")
    print(f"  metrics: {out / 'metrics.csv'}\n  plots: {out / 'metrics.png'}\n  frames: {frames}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``lawful`` command."""
    parser = argparse.ArgumentParser(
        prog="lawful",
        description="Neural surrogates that obey conservation laws inside real simulators.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("demo", help="run the end-to-end demo and write an HTML report")
    _common(p, "demo-out")
    p.add_argument("--quick", action="store_true", help="small sizes: at most 5 minutes on a 2-core CPU")
    p.add_argument("--smoke", action="store_true", help="the smallest sizes (a test of the pipeline, not a result)")
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("data", help="generate labelled reference data (EMT, Lennard-Jones, OpenMM water)")
    _common(p, "data-out")
    p.add_argument("--calc", choices=["emt", "lj", "openmm-water"], default="emt", help="reference calculator")
    p.add_argument("--element", default="Cu", help="fcc element for EMT (Cu, Al, Ni, Ag, Au, Pd, Pt)")
    p.add_argument("--repeat", type=int, default=2, help="supercell repeats of the cubic cell")
    p.add_argument("--temperatures", type=float, nargs="+", default=[300, 600, 900, 1200], help="MD temperatures, K")
    p.add_argument("--n-md", type=int, default=40, help="MD snapshots per temperature")
    p.add_argument("--n-rattled", type=int, default=30, help="rattled cells (EMT)")
    p.add_argument("--n-strained", type=int, default=40, help="strained cells (EMT)")
    p.add_argument("--db", default=None, help="ase.db URL (default: OUT/data.db, SQLite)")
    p.set_defaults(func=_cmd_data)

    p = sub.add_parser("train", help="train a NeuralPotential or DirectForceModel on a dataset")
    _common(p, "train-out")
    p.add_argument("--data", required=True, help="extxyz file or ase.db file/URL with energies and forces")
    p.add_argument("--model", choices=["conservative", "direct"], default="conservative",
                   help="conservative: NeuralPotential (forces = -dE/dR); direct: DirectForceModel (control)")
    p.add_argument("--name", default=None, help="model file name (default: the --model value)")
    p.add_argument("--species", nargs="*", default=None, help="elements (default: those in the data)")
    p.add_argument("--cutoff", type=float, default=4.5, help="cutoff radius, Å")
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--energy-weight", type=float, default=1.0)
    p.add_argument("--force-weight", type=float, default=1.0)
    p.add_argument("--stress-weight", type=float, default=0.0)
    p.add_argument("--max-time", type=float, default=None, help="stop after this many seconds")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("md", help="run NVE/NVT in ASE or OpenMM with drift monitoring")
    _common(p, "md-out")
    p.add_argument("--engine", choices=["ase", "openmm"], default="ase")
    p.add_argument("--model", default="emt", help="a .lawful model file, or 'emt' (classical reference)")
    p.add_argument("--structure", default=None, help="structure file readable by ase.io (default: fcc supercell)")
    p.add_argument("--element", default="Cu")
    p.add_argument("--lattice", type=float, default=None, help="lattice constant, Å (default: ASE's)")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--ensemble", choices=["nve", "nvt"], default="nve")
    p.add_argument("--temperature", type=float, default=300.0, help="initial / target temperature, K")
    p.add_argument("--dt", type=float, default=2.0, help="time step, fs")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--report-interval", type=int, default=10, help="steps between drift samples / frames")
    p.add_argument("--platform", default="Reference", help="OpenMM platform (Reference = double precision)")
    p.set_defaults(func=_cmd_md)

    p = sub.add_parser("fluid", help="run a Taichi fluid scene, with or without a neural corrector")
    _common(p, "fluid-out", dtype_default="float32")
    p.add_argument("--scene", default="karman", choices=["taylor_green", "kolmogorov", "smoke_plume", "karman"])
    p.add_argument("--n", type=int, default=64, help="grid cells across (the short side)")
    p.add_argument("--re", type=float, default=100.0, help="Reynolds number (karman)")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--corrector", default="none", help="'none', 'random' (random-init divergence-free) or a corrector file")
    p.add_argument("--frame-every", type=int, default=50, help="vorticity PNG every this many steps (0: none)")
    p.set_defaults(func=_cmd_fluid)

    p = sub.add_parser("bench", help="run the benchmark suite and write JSON results")
    p.add_argument("--suite", default="benchmarks", help="folder holding bench_*.py scripts")
    p.add_argument("--out", default=None,
                   help="folder for the JSON results (default: benchmarks/results, or benchmarks/results-quick "
                        "with --quick so that quick figures never overwrite the committed ones)")
    p.add_argument("--only", nargs="*", default=None, help="run only these benchmarks (names)")
    p.add_argument("--quick", action="store_true", help="smaller sizes")
    p.set_defaults(func=_cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``lawful`` console script; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    if getattr(args, "threads", None):
        # The command line is an application, so it may set the process's torch thread count.
        import torch

        torch.set_num_threads(args.threads)
    try:
        return int(args.func(args) or 0)
    except LawfulError as exc:
        print(f"lawful {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"lawful {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

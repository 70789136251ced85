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


def _cmd_demo(args) -> int:
    from lawful.integrations.demo import run_demo

    report = run_demo(out=args.out, quick=args.quick, seed=args.seed, dtype=args.dtype, device=args.device)
    print(f"report written to {report.resolve()}")
    return 0


def _cmd_bench(args) -> int:
    from lawful.integrations.bench_suite import run_suite

    paths = run_suite(args.suite, args.out, only=args.only, quick=args.quick)
    for p in paths:
        print(p)
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
    p.add_argument("--quick", action="store_true", help="small sizes: a few minutes on a laptop CPU")
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("bench", help="run the benchmark suite and write JSON results")
    p.add_argument("--suite", default="benchmarks", help="folder holding bench_*.py scripts")
    p.add_argument("--out", default="benchmarks/results", help="folder for the JSON results")
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

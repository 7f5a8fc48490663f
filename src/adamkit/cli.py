"""Command line: ``adamkit demo`` (also ``python -m adamkit demo``)."""

from __future__ import annotations

import argparse
import sys


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a positive whole number, got {text!r}"
        ) from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="adamkit", description="Adam, momentum and RMSProp: exact, fast, observable."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser(
        "demo", help="train an MLP on the digits data with SGD, Momentum, RMSProp and Adam"
    )
    demo.add_argument("--epochs", type=_positive_int, default=20, help="epochs (default 20)")
    demo.add_argument("--batch-size", type=_positive_int, default=64, help="minibatch size")
    demo.add_argument("--seed", type=int, default=0, help="seed for init, split and batches")
    demo.add_argument("--no-progress", action="store_true", help="hide the progress bar")

    bench = commands.add_parser("bench", help="time Adam steps against torch.optim, interleaved")
    bench.add_argument("--rounds", type=_positive_int, default=15, help="timed rounds (default 15)")
    bench.add_argument(
        "--workload",
        action="append",
        choices=["a-one-50M-tensor", "b-transformer-54M", "c-tiny-mlp-50k"],
        help="run only this workload (repeatable; default: all)",
    )
    bench.add_argument("--json", default="bench-results.json", help="where to write the JSON")
    return parser


def _run_demo(args: argparse.Namespace) -> int:
    from .demo import format_table, run_demo

    results = run_demo(
        epochs=args.epochs,
        batch_size=args.batch_size,
        seed=args.seed,
        progress=not args.no_progress,
    )
    print(f"\nMLP 64-64-10 on scikit-learn digits, {args.epochs} epochs, batch {args.batch_size}")
    print(format_table(results))
    return 0


def _run_bench(args: argparse.Namespace) -> int:
    from .bench import WORKLOADS, run_bench

    print(run_bench(args.workload or WORKLOADS, args.rounds, args.json))
    print(f"JSON written to {args.json}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handlers = {"demo": _run_demo, "bench": _run_bench}
    return handlers[args.command](args)


if __name__ == "__main__":
    sys.exit(main())

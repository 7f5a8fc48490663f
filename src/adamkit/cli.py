"""Command line: ``adamkit demo``, ``adamkit check``, … (also ``python -m adamkit …``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


class _Parser(argparse.ArgumentParser):
    """Bad arguments end in one line naming the problem (no usage dump, no traceback)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}\n")


class _HelpWithDefaults(argparse.HelpFormatter):
    """Each option's help ends with its default, where it has a meaningful one (not for
    flags, repeatable options or options that are off unless given)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        meaningless = (
            default is None or default is False or default == [] or default is (argparse.SUPPRESS)
        )
        if "%(default)" in text or meaningless or not action.option_strings:
            return text
        return f"{text} (default: %(default)s)"


class UsageError(Exception):
    """A problem with the command line found after parsing; printed as one line, exit 2."""


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
    from . import __version__
    from .bench_algorithms import ALGORITHMS
    from .demo import OPTIMIZERS

    parser = _Parser(
        prog="adamkit", description="Adam, momentum and RMSProp: exact, fast, observable."
    )
    parser.add_argument("--version", action="version", version=f"adamkit {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    sub = {"formatter_class": _HelpWithDefaults}
    demo = commands.add_parser(
        "demo",
        help="train an MLP on the digits data with SGD, Momentum, RMSProp and Adam",
        **sub,
    )
    demo.add_argument("--epochs", type=_positive_int, default=20, help="epochs")
    demo.add_argument("--batch-size", type=_positive_int, default=64, help="minibatch size")
    demo.add_argument("--seed", type=int, default=0, help="seed for init, split and batches")
    demo.add_argument(
        "--lr",
        type=_named_lr,
        action="append",
        default=[],
        metavar="OPTIMIZER=LR",
        help="tuned learning rate of one optimizer (repeatable), e.g. --lr Adam=0.01; "
        "defaults: "
        + ", ".join(f"{name}={lr:g}" for name, (_, lr) in OPTIMIZERS.items())
        + " (each also runs at torch.optim's default lr)",
    )
    demo.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    demo.add_argument(
        "--out", type=Path, help="also write loss curves and effective-lr plots to this folder"
    )

    bench = commands.add_parser(
        "bench",
        help="time Adam steps (or another algorithm's) against torch.optim, interleaved",
        **sub,
    )
    bench.add_argument("--rounds", type=_positive_int, default=15, help="timed rounds")
    bench.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    bench.add_argument(
        "--workload",
        action="append",
        choices=["a-one-50M-tensor", "b-transformer-54M", "c-tiny-mlp-50k", "d-10k-one-element"],
        help="run only this workload (repeatable; default: a, b and c; with --algorithm: b, c, d)",
    )
    bench.add_argument(
        "--algorithm",
        action="append",
        choices=list(ALGORITHMS),
        help="time this algorithm against torch.optim's namesake, or for one torch lacks "
        "against adamkit's torch-ops step (repeatable; benchmarks/algorithms.py adds peers)",
    )
    bench.add_argument("--json", default="bench-results.json", help="where to write the JSON")
    _add_viz(commands, sub)
    explore = commands.add_parser(
        "explore",
        help="an interactive page of the Adam family's update rules (local server)",
        **sub,
    )
    explore.add_argument(
        "--port", type=_port, default=0, help="port on 127.0.0.1 (default: a free one)"
    )
    explore.add_argument("--no-browser", action="store_true", help="do not open a browser")
    claims = commands.add_parser(
        "claims", help="one experiment per claim made for Adam, and a report of them", **sub
    )
    claims.add_argument("--out", type=Path, required=True, help="folder for report.html")
    claims.add_argument("--quick", action="store_true", help="a few seconds, rougher numbers")
    claims.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    _add_check(commands, sub)
    return parser


def _add_check(commands, sub: dict) -> None:
    from .check import BACKENDS, OPTIMIZERS

    check = commands.add_parser(
        "check",
        help="the parity suite's core cases on this machine's devices against torch.optim",
        description="Run every optimizer, state precision and backend a few steps on the "
        "devices present (CPU; CUDA when available) against torch.optim's for-loop; print a "
        "table of pass/fail and the largest errors; exit 1 if any case fails.",
        **sub,
    )
    check.add_argument("--json", type=Path, metavar="PATH", help="also write the results here")
    check.add_argument(
        "--optimizer",
        action="append",
        choices=[name for name, _, _ in OPTIMIZERS],
        help="check only this optimizer (repeatable; default: all)",
    )
    check.add_argument(
        "--backend",
        action="append",
        choices=list(BACKENDS),
        help="check only this backend (repeatable; default: all; triton runs on CUDA, and "
        "on the CPU with --triton-interpret)",
    )
    check.add_argument(
        "--device",
        action="append",
        choices=["cpu", "cuda"],
        help="check only this device type (repeatable; default: the CPU, and CUDA when present)",
    )
    check.add_argument(
        "--triton-interpret",
        action="store_true",
        help="without CUDA, also run the Triton kernels on the CPU under Triton's interpreter "
        "(slow)",
    )


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number 0-65535, got {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port number 0-65535, got {value}")
    return value


def _pair(text: str) -> tuple[float, float]:
    try:
        a, b = (float(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected two numbers like 0.5,-1; got {text!r}"
        ) from None
    return a, b


def _named_lr(text: str) -> tuple[str, float]:
    name, _, value = text.partition("=")
    try:
        lr = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected OPTIMIZER=LR like Adam=0.05; got {text!r}"
        ) from None
    if not lr > 0:
        raise argparse.ArgumentTypeError(f"learning rates must be > 0; got {text!r}")
    return name, lr


def _add_viz(commands, sub: dict) -> None:
    from .viz.functions import FUNCTIONS

    viz = commands.add_parser(
        "viz", help="draw SGD, Momentum, RMSProp and Adam paths on a 2-D test function", **sub
    )
    viz.add_argument("function", choices=list(FUNCTIONS), help="the test function")
    viz.add_argument("--out", type=Path, required=True, help="PNG file to write")
    viz.add_argument("--steps", type=_positive_int, default=500, help="steps")
    viz.add_argument(
        "--lr",
        type=_named_lr,
        action="append",
        default=[],
        metavar="OPTIMIZER=LR",
        help="learning rate of one optimizer (repeatable), e.g. --lr Adam=0.1",
    )
    viz.add_argument(
        "--start", type=_pair, metavar="X,Y", help="start point (default: the function's own)"
    )
    viz.add_argument(
        "--betas", type=_pair, metavar="B1,B2", default=(0.9, 0.999), help="Adam's betas"
    )
    viz.add_argument("--rotate", type=float, default=0.0, help="rotate the quadratic (degrees)")
    viz.add_argument("--gif", type=Path, help="also write an animated GIF here")
    viz.add_argument("--no-progress", action="store_true", help="hide the GIF's progress bar")


def _require(extra: str, needed_for: str, *modules: str) -> None:
    """Before any work: a missing optional package ends the command in one line naming the
    extra to install (main prints it, exit 2)."""
    from ._extras import require

    for module in modules:
        require(module, extra, needed_for)


def _run_demo(args: argparse.Namespace) -> int:
    from .demo import first_step_note, format_table, run_demo, what_it_shows

    _require("demo", "this command", "sklearn")
    if args.out is not None:
        _require("demo", "--out", "matplotlib")
        _check_writable_dir(args.out)
    results = run_demo(
        epochs=args.epochs,
        batch_size=args.batch_size,
        seed=args.seed,
        progress=not args.no_progress,
        record_every=5 if args.out is not None else None,
        lrs=_demo_lrs(args.lr),
    )
    print(
        f"\nMLP 64-64-10 on scikit-learn's digits, {args.epochs} epochs, batch "
        f"{args.batch_size}, every run from the same init on the same minibatches.\nEach "
        "optimizer at a learning rate tuned for this problem and at torch.optim's default:"
    )
    print(format_table(results))
    print(what_it_shows(results))
    print(first_step_note(results))
    if args.out is not None:
        from .demo_plots import write_demo_plots

        for path in write_demo_plots(results, args.out):
            print(f"wrote {path}")
    return 0


def _demo_lrs(pairs: list[tuple[str, float]]) -> dict[str, float]:
    from .demo import OPTIMIZERS

    lrs = dict(pairs)
    unknown = sorted(set(lrs) - set(OPTIMIZERS))
    if unknown:
        raise UsageError(
            f"unknown optimizer {unknown[0]!r} in --lr; choose from {', '.join(OPTIMIZERS)}"
        )
    return lrs


def _check_writable_file(path: Path) -> None:
    if path.is_dir():
        raise UsageError(f"cannot write {path}: it is a folder; give a file name")
    try:
        with open(path, "ab"):
            pass
    except OSError as error:
        raise UsageError(f"cannot write {path}: {error.strerror}") from None


def _check_writable_dir(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".adamkit-write-test"
        probe.touch()
        probe.unlink()
    except OSError as error:
        raise UsageError(f"cannot write to folder {path}: {error.strerror}") from None


def _run_viz(args: argparse.Namespace) -> int:
    _require("viz", "this command", "matplotlib")
    from . import viz

    try:
        function = viz.get(args.function, args.rotate)
    except ValueError as error:
        raise UsageError(str(error)) from None
    lrs = dict(args.lr)
    unknown = sorted(set(lrs) - set(viz.OPTIMIZERS))
    if unknown:
        raise UsageError(
            f"unknown optimizer {unknown[0]!r} in --lr; choose from {', '.join(viz.OPTIMIZERS)}"
        )
    if args.start is not None and not function.contains(args.start):
        raise UsageError(
            f"start {args.start} is outside the {function.name} plot: x in {function.x_range}, "
            f"y in {function.y_range}"
        )
    if not all(0 <= b < 1 for b in args.betas):
        b1, b2 = args.betas
        raise UsageError(
            f"betas must both lie in [0, 1); got {b1:g},{b2:g}. For example: --betas 0.9,0.999"
        )
    _check_writable_file(args.out)
    if args.gif is not None:
        _check_writable_file(args.gif)
    paths = viz.run_all(function, steps=args.steps, lrs=lrs, start=args.start, betas=args.betas)
    print(f"wrote {viz.plot_trajectories(function, paths, args.out)}")
    if args.gif is not None:
        gif = viz.animate_trajectories(function, paths, args.gif, progress=not args.no_progress)
        print(f"wrote {gif}")
    for p in paths:
        print(f"{p.name:<9} lr {p.lr:<8g} final f = {p.values[-1]:.4g} at {p.points[-1].round(4)}")
    return 0


def _run_bench(args: argparse.Namespace) -> int:
    from .bench import WORKLOADS, run_bench

    if args.algorithm:
        import json

        import torch

        from .bench_algorithms import WORKLOADS as ALGORITHM_WORKLOADS
        from .bench_algorithms import format_rows, measure

        rows = [
            row
            for workload in args.workload or ALGORITHM_WORKLOADS
            for algorithm in args.algorithm
            for row in measure(workload, algorithm, args.rounds)
        ]
        print(format_rows(rows))
        with open(args.json, "w") as f:
            json.dump({"torch_threads": torch.get_num_threads(), "rows": rows}, f, indent=2)
        print(f"JSON written to {args.json}")
        return 0

    print(run_bench(args.workload or WORKLOADS, args.rounds, args.json, not args.no_progress))
    print(f"JSON written to {args.json}")
    return 0


def _run_explore(args: argparse.Namespace) -> int:
    import errno
    import webbrowser

    from .explore import make_server

    try:
        server = make_server(args.port)
    except OSError as error:
        if error.errno == errno.EADDRINUSE:
            raise UsageError(
                f"port {args.port} is in use; pick another with --port, or leave it out for "
                "a free one"
            ) from None
        raise UsageError(f"cannot serve on port {args.port}: {error.strerror}") from None
    url = f"http://127.0.0.1:{server.server_port}/"
    print(f"adamkit explore: serving {url} (Ctrl-C to stop)", flush=True)
    if not args.no_browser:
        webbrowser.open(url)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def _run_claims(args: argparse.Namespace) -> int:
    _require("demo", "this command", "sklearn", "matplotlib")
    from .claims import write_report

    _check_writable_dir(args.out)
    path = write_report(args.out, quick=args.quick, progress=not args.no_progress)
    print(f"wrote {path}")
    return 0


def _run_check(args: argparse.Namespace) -> int:
    import os

    import torch

    from .check import main as check_main

    cuda = torch.cuda.is_available()
    if args.device and "cuda" in args.device and not cuda:
        raise UsageError("--device cuda: no CUDA device is available")
    # The interpreter only without CUDA (it would take over the compiled CUDA kernels), and
    # chosen before triton is first imported.
    interpret = args.triton_interpret and not cuda
    if interpret:
        os.environ.setdefault("TRITON_INTERPRET", "1")
    if args.json is not None:
        _check_writable_file(args.json)
    return check_main(
        optimizers=args.optimizer,
        backends=args.backend,
        device_types=args.device,
        json_path=args.json,
        triton_interpret=interpret,
    )


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handlers = {
        "demo": _run_demo,
        "bench": _run_bench,
        "viz": _run_viz,
        "explore": _run_explore,
        "claims": _run_claims,
        "check": _run_check,
    }
    from ._extras import MissingExtra

    try:
        return handlers[args.command](args)
    except (UsageError, MissingExtra) as error:
        parser.exit(2, f"adamkit {args.command}: error: {error}\n")


if __name__ == "__main__":
    sys.exit(main())

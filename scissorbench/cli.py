"""The `scissorbench` command: one subcommand per entry of `COMMANDS`.

    scissorbench demo [--retention 0.35] [--frames 16] [--output results/demo]

A subcommand is a function that takes its own argument list, parses it with its own parser and
returns an exit code; its docstring's first line is its help. Arguments are validated while
parsing, so a bad value fails in one line (exit code 2) before any model, video or tensor
library is loaded.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

__all__ = ["COMMANDS", "main"]


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: `prog: error: message (see prog --help)`, exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _retention(text: str) -> float:
    """A retention ratio r in (0, 1], as argparse type."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"retention must be a number in (0, 1], got {text!r}"
        ) from None
    if math.isnan(value) or not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(
            f"retention must be in (0, 1], got {text} (e.g. 0.35 keeps 35% of the visual tokens)"
        )
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def demo(argv: list[str]) -> int:
    """Run every compressor on sample clips and draw what each keeps or merges."""
    parser = _subparser("demo", demo)
    parser.add_argument(
        "--retention",
        type=_retention,
        default=0.35,
        help="fraction of visual tokens kept, in (0, 1]",
    )
    parser.add_argument("--frames", type=_positive_int, default=16, help="frames sampled per clip")
    parser.add_argument(
        "--output", type=Path, default=Path("results/demo"), help="folder for the PNGs and CSV"
    )
    args = parser.parse_args(argv)

    from scissorbench.demo import run_demo
    from scissorbench.video import VideoError

    try:
        paths = run_demo(args.output, retention=args.retention, num_frames=args.frames)
    except VideoError as err:
        print(f"scissorbench demo: error: {err}", file=sys.stderr)
        return 1
    print("[demo] results:")
    for path in paths:
        print(f"  {path}")
    return 0


def synth_data(argv: list[str]) -> int:
    """Write the offline synthetic_video_qa task data (videos + JSONL)."""
    parser = _subparser("synth-data", synth_data)
    parser.add_argument(
        "--root",
        type=Path,
        default=None,
        help="data root (default: $SCISSORBENCH_DATA, else <repo>/data); the task is written "
        "to ROOT/synthetic_video_qa, where the lmms-eval task looks when SCISSORBENCH_DATA=ROOT",
    )
    parser.add_argument("--n", type=_positive_int, default=64, help="number of questions")
    parser.add_argument("--seed", type=int, default=0, help="generator seed")
    parser.add_argument("--split", default="test", help="split name (the task reads 'test')")
    args = parser.parse_args(argv)

    from scissorbench.synthetic import build_dataset, dataset_dir

    target = dataset_dir(args.root)
    try:
        index = build_dataset(target, n=args.n, seed=args.seed, split=args.split)
    except (OSError, ValueError) as err:
        print(f"scissorbench synth-data: error: {err}", file=sys.stderr)
        return 1
    print(f"[synth-data] {args.n} questions: {index}")
    return 0


def run(argv: list[str]) -> int:
    """Evaluate model x compressor x retention x task through lmms-eval (Hydra overrides)."""
    from runners.cli import command

    return command(argv)


def convert(argv: list[str]) -> int:
    """Convert a LLaVA-NeXT checkpoint (LLaVA-Scissor baselines) to transformers' layout."""
    parser = _subparser("convert", convert)
    parser.add_argument(
        "src", help="LLaVA-NeXT checkpoint: a directory, or a hub id in the local HF cache"
    )
    parser.add_argument("dst", type=Path, help="new or empty directory for the converted model")
    args = parser.parse_args(argv)

    from backbones.llava_next import convert as convert_checkpoint

    try:
        path = convert_checkpoint(args.src, args.dst)
    except (OSError, ValueError) as err:
        print(f"scissorbench convert: error: {err}", file=sys.stderr)
        return 1
    print(f"[convert] LLaVA-OneVision checkpoint: {path}")
    return 0


def tiny_model(argv: list[str]) -> int:
    """Write a tiny random LLaVA-OneVision checkpoint (tests, offline smoke runs)."""
    parser = _subparser("tiny-model", tiny_model)
    parser.add_argument("path", type=Path, help="directory for the checkpoint")
    parser.add_argument("--seed", type=int, default=0, help="weight seed")
    args = parser.parse_args(argv)

    from backbones.tiny import write_tiny_checkpoint

    try:
        path = write_tiny_checkpoint(args.path, seed=args.seed)
    except (OSError, ValueError) as err:
        print(f"scissorbench tiny-model: error: {err}", file=sys.stderr)
        return 1
    print(f"[tiny-model] checkpoint: {path}")
    return 0


def flops(argv: list[str]) -> int:
    """Analytic FLOPs of model x compressor x retention (key=value), ratio to the full model."""
    from reporting.cli import flops as command

    return command(argv)


def report(argv: list[str]) -> int:
    """Tables, figures and a single-file HTML report of a results folder (key=value)."""
    from reporting.cli import report as command

    return command(argv)


def reference(argv: list[str]) -> int:
    """Convert the paper's CSV into results-schema records in results/reference."""
    from reporting.cli import reference as command

    return command(argv)


COMMANDS: dict[str, Callable[[list[str]], int]] = {
    "flops": flops,
    "report": report,
    "reference": reference,
    "convert": convert,
    "demo": demo,
    "synth-data": synth_data,
    "tiny-model": tiny_model,
    "run": run,
}


def _summary(command: Callable[[list[str]], int]) -> str:
    """First line of a subcommand's docstring."""
    return (command.__doc__ or "").strip().split("\n")[0]


def _subparser(name: str, command: Callable[[list[str]], int]) -> argparse.ArgumentParser:
    return _Parser(prog=f"scissorbench {name}", description=_summary(command))


def main(argv: list[str] | None = None) -> int:
    """Parse `argv` (default: sys.argv[1:]), run the chosen subcommand, return its exit code."""
    listing = "\n".join(f"  {name:<10} {_summary(fn)}" for name, fn in COMMANDS.items())
    parser = _Parser(
        prog="scissorbench",
        description="Evaluation harness for visual-token compression in video LLMs.",
        epilog=f"commands:\n{listing}\n\n'scissorbench COMMAND --help' shows a command's options.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("command", choices=sorted(COMMANDS), metavar="COMMAND")
    argv = list(sys.argv[1:] if argv is None else argv)
    command = parser.parse_args(argv[:1]).command  # exits on --help, no or unknown command
    return COMMANDS[command](argv[1:])


if __name__ == "__main__":
    sys.exit(main())

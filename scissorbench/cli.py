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


COMMANDS: dict[str, Callable[[list[str]], int]] = {"demo": demo}


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

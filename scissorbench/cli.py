"""The `scissorbench` command: one subcommand per entry of `COMMANDS`.

    scissorbench demo [--compressors scc,fastv] [--retentions 1,0.35,0.1] [--limit 70]

A subcommand is a function that takes its own argument list, parses it with its own parser and
returns an exit code; its docstring's first line is its help. Arguments are validated while
parsing, so a bad value fails in one line (exit code 2) before any model, video or tensor
library is loaded.
"""

from __future__ import annotations

import argparse
import inspect
import math
import os
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
    """Sweep every compressor x retention on both micro models under both position policies."""
    from scissorbench.demo import DEFAULT_MODELS, DEFAULT_POLICIES, DEFAULT_RETENTIONS

    parser = _subparser("demo", demo)
    parser.add_argument("--models", type=_names, default=DEFAULT_MODELS,
                        help="comma-separated model configs (configs/model; default: "
                             f"{','.join(DEFAULT_MODELS)})")
    parser.add_argument("--positions", type=_names, default=DEFAULT_POLICIES,
                        help="comma-separated position policies (default: original,contiguous)")
    parser.add_argument("--compressors", type=_names, default=None,
                        help="comma-separated registry names (default: every budgeted compressor)")
    parser.add_argument("--retentions", type=_retentions, default=DEFAULT_RETENTIONS,
                        help="comma-separated retention ratios in (0, 1]")
    parser.add_argument("--limit", type=_positive_int, default=None,
                        help="evaluate the first N test questions only (default: all)")
    parser.add_argument("--output", type=Path, default=Path("results/demo"),
                        help="folder for the runs, the leaderboards and the figures")
    parser.add_argument("--workers", type=_positive_int, default=min(2, os.cpu_count() or 1),
                        help="(model, policy) sweeps run at once, one process each (default: "
                             "2, or 1 on a single core)")
    args = parser.parse_args(argv)

    from backbones import POSITIONS
    from runners.plan import ConfigError
    from scissorbench.demo import run_demos

    bad = [p for p in args.positions if p not in POSITIONS]
    if bad:
        print(f"scissorbench demo: error: unknown position policy {bad}; choose from "
              f"{list(POSITIONS)}", file=sys.stderr)
        return 2
    try:
        results = run_demos(args.output, models=args.models, policies=args.positions,
                            methods=args.compressors, retentions=args.retentions,
                            limit=args.limit, workers=args.workers)
    except ConfigError as err:
        print(f"scissorbench demo: error: {err}", file=sys.stderr)
        return 2
    for (model, policy), result in results.items():
        if result.table.is_file():
            print(f"## {model}, positions={policy}\n")
            print(result.table.read_text())
    positions = args.output / "positions.md"
    if positions.is_file():
        print(positions.read_text())
    print(f"[demo] positions:   {positions}")
    failed = {f"{m} {p} {k}": v for (m, p), r in results.items() for k, v in r.failed.items()}
    for (model, policy), result in results.items():
        print(f"[demo] {model} {policy}: {result.table.parent} (tables, figure, report)")
    for label, error in failed.items():
        print(f"[demo] FAILED {label}: {error}", file=sys.stderr)
    return 0 if not failed else 1


def _names(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise argparse.ArgumentTypeError("expected comma-separated names")
    return names


def _retentions(text: str) -> list[float]:
    return [_retention(part) for part in text.split(",") if part.strip()]


def pictures(argv: list[str]) -> int:
    """Draw what every compressor keeps or merges on real clips (no model: pixel features)."""
    parser = _subparser("pictures", pictures)
    parser.add_argument(
        "--retention",
        type=_retention,
        default=0.35,
        help="fraction of visual tokens kept, in (0, 1]",
    )
    parser.add_argument("--frames", type=_positive_int, default=16, help="frames sampled per clip")
    parser.add_argument(
        "--output", type=Path, default=Path("results/pictures"), help="folder for the PNGs and CSV"
    )
    args = parser.parse_args(argv)

    from harness.video import VideoError
    from scissorbench.pictures import draw_pictures

    try:
        paths = draw_pictures(args.output, retention=args.retention, num_frames=args.frames)
    except VideoError as err:
        print(f"scissorbench pictures: error: {err}", file=sys.stderr)
        return 1
    print("[pictures] results:")
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
    parser.add_argument("--n", type=_positive_int, default=None,
                        help="number of questions (default: 210 for test, 6000 for train)")
    parser.add_argument("--seed", type=int, default=None,
                        help="generator seed (default: 0 for test, 1 for train)")
    parser.add_argument("--split", default="test", help="split name (the task reads 'test')")
    args = parser.parse_args(argv)

    from synthetic.task import (
        SPLIT_SEEDS,
        TEST_ITEMS,
        TRAIN_ITEMS,
        build_dataset,
        dataset_dir,
    )

    if args.n is None:
        args.n = TRAIN_ITEMS if args.split == "train" else TEST_ITEMS
    if args.seed is None:
        args.seed = SPLIT_SEEDS.get(args.split, 0)
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


def train_micro(argv: list[str]) -> int:
    """Train the micro video-LLM on synthetic_video_qa (about 15 minutes on 2 CPU cores)."""
    from synthetic.train import TrainConfig

    defaults = TrainConfig()
    parser = _subparser("train-micro", train_micro)
    parser.add_argument("--output", type=Path, default=Path("results/models/micro"),
                        help="folder for the checkpoint (the shipped one is checkpoints/micro)")
    parser.add_argument("--seed", type=int, default=defaults.seed, help="weights and order seed")
    parser.add_argument("--steps", type=_positive_int, default=defaults.steps,
                        help="optimiser steps")
    parser.add_argument("--train-items", type=_positive_int, default=defaults.train_items,
                        help="training videos (split 'train', written on first use)")
    parser.add_argument("--data-root", type=Path, default=None,
                        help="data root (default: $SCISSORBENCH_DATA, else ~/.cache/scissorbench)")
    parser.add_argument("--backbone", choices=["llava_onevision", "qwen2_5_vl"],
                        default=defaults.backbone,
                        help="which micro model (the shipped ones: checkpoints/micro, "
                             "checkpoints/micro_qwen2_5_vl)")
    args = parser.parse_args(argv)

    from synthetic.train import train

    cfg = TrainConfig.for_backbone(args.backbone, seed=args.seed, steps=args.steps,
                                   train_items=args.train_items)
    try:
        path = train(args.output, cfg, data_root=args.data_root)
    except (OSError, ValueError) as err:
        print(f"scissorbench train-micro: error: {err}", file=sys.stderr)
        return 1
    print(f"[train-micro] checkpoint: {path}")
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
    """Convert the six papers' CSVs into results-schema records in results/reference."""
    from reporting.cli import reference as command

    return command(argv)


def leaderboard(argv: list[str]) -> int:
    """The static leaderboard site (file://): ours beside six papers' tables (key=value)."""
    from reporting.cli import leaderboard as command

    return command(argv)


def merge(argv: list[str]) -> int:
    """Merge results folders (e.g. one per machine) into one; conflicts are reported, never
    overwritten (exit 1)."""
    parser = _subparser("merge", merge)
    parser.add_argument("sources", nargs="+", type=Path, help="results folders to merge from")
    parser.add_argument("--into", type=Path, required=True, help="the results folder to fill")
    args = parser.parse_args(argv)
    missing = [str(s) for s in args.sources if not s.is_dir()]
    if missing:
        print(f"scissorbench merge: error: no such results folder: {', '.join(missing)}",
              file=sys.stderr)
        return 2
    from records.store import merge as merge_stores

    done = merge_stores(args.sources, args.into)
    print(f"[merge] {len(done.copied)} copied, {len(done.same)} already there, "
          f"{len(done.conflicts)} conflicting into {args.into}")
    for line in done.describe():
        print(f"[merge] conflict {line}", file=sys.stderr)
    return 1 if done.conflicts else 0


def lmms_eval(argv: list[str]) -> int:
    """Run lmms-eval's CLI (same arguments) and exit non-zero when the evaluation failed.

    lmms-eval 0.7.3 exits 0 after any failure. Here a run fails (exit 1, reasons on stderr)
    when lmms-eval exits non-zero, writes no *_results.json with results under --output_path
    (required; a bad task name, a model that does not load, a scorer that raises), or when a
    scissorbench per-sample record it appended to records_path (in --model_args, every rank's
    file) has an error (an unreadable video, scored as a wrong answer). Exit 0 otherwise;
    2 without --output_path. 'lmms-eval --help' lists lmms-eval's own options.
    """
    if argv in (["-h"], ["--help"]):
        usage = "usage: scissorbench lmms-eval LMMS_EVAL_ARGS..."
        print(f"{usage}\n\n{inspect.cleandoc(lmms_eval.__doc__ or '')}")
        return 0
    from scissorbench.checked_eval import run_checked

    return run_checked(argv)


COMMANDS: dict[str, Callable[[list[str]], int]] = {
    "flops": flops,
    "report": report,
    "reference": reference,
    "leaderboard": leaderboard,
    "convert": convert,
    "demo": demo,
    "pictures": pictures,
    "synth-data": synth_data,
    "tiny-model": tiny_model,
    "train-micro": train_micro,
    "run": run,
    "merge": merge,
    "lmms-eval": lmms_eval,
}


def _summary(command: Callable[[list[str]], int]) -> str:
    """First line of a subcommand's docstring."""
    return (command.__doc__ or "").strip().split("\n")[0]


def _subparser(name: str, command: Callable[[list[str]], int]) -> argparse.ArgumentParser:
    return _Parser(prog=f"scissorbench {name}", description=_summary(command))


def main(argv: list[str] | None = None) -> int:
    """Parse `argv` (default: sys.argv[1:]), run the chosen subcommand, return its exit code."""
    listing = "\n".join(f"  {name:<11} {_summary(fn)}" for name, fn in COMMANDS.items())
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

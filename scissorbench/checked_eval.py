"""lmms-eval's command line with an exit code that scripts can trust.

lmms-eval 0.7.3's CLI catches every exception of an evaluation (a bad task name, a model that
fails to load, a scorer that raises), logs "Error during evaluation" and exits 0
(`lmms_eval/__main__.py`, `cli_evaluate`). `run_checked` runs the same CLI in a child process
(`python -m lmms_eval ARGS`, so its logging and Accelerator setup stay there) and then decides:

failure = the child exited non-zero, or no `*_results.json` with results was written under
`--output_path` during the run (what every swallowed exception leaves behind), or a
scissorbench per-sample record appended to `records_path` (from `--model_args`, every rank's
file) during the run has an error (an unreadable video: lmms-eval scores it as a wrong answer
and carries on).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

__all__ = ["failures", "records_paths", "run_checked"]


def _option(argv: list[str], name: str) -> str | None:
    """The value of `--name X` or `--name=X` in lmms-eval's arguments (the last one wins)."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument(f"--{name}", default=None)
    known, _ = parser.parse_known_args(argv)
    return getattr(known, name)


def records_paths(model_args: str | None) -> list[Path]:
    """scissorbench's records files for `model_args`: `records_path` and its per-rank files
    (`<stem>.rank<r><suffix>`)."""
    for item in (model_args or "").split(","):
        key, _, value = item.partition("=")
        if key.strip() == "records_path" and value.strip():
            path = Path(value.strip())
            return [path, *sorted(path.parent.glob(f"{path.stem}.rank*{path.suffix}"))]
    return []


def _sizes(paths: list[Path]) -> dict[Path, int]:
    return {p: p.stat().st_size if p.is_file() else 0 for p in paths}


def _record_errors(before: dict[Path, int], model_args: str | None) -> list[str]:
    """Errors of the records appended since `before` (file -> size) was taken."""
    errors = []
    for path in records_paths(model_args):
        if not path.is_file():
            continue
        with path.open("rb") as f:
            f.seek(before.get(path, 0))
            lines = f.read().decode(errors="replace").splitlines()
        for line in lines:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if record.get("error"):
                errors.append(f"{record.get('task')} doc {record.get('doc_id')}: {record['error']}")
    return errors


def _results_files(output_path: Path) -> dict[Path, int]:
    """`*_results.json` under `output_path` -> modification time (ns)."""
    if not output_path.is_dir():
        return {}
    return {p: p.stat().st_mtime_ns for p in output_path.rglob("*_results.json")}


def _has_results(path: Path) -> bool:
    try:
        return bool(json.loads(path.read_text()).get("results"))
    except (OSError, ValueError, AttributeError):
        return False


def failures(
    returncode: int, output_path: Path, before: dict[Path, int], errors: list[str]
) -> list[str]:
    """Why a finished lmms-eval run failed (empty: it did not). `before`: the results files
    that existed before the run (`_results_files`); only new or rewritten ones count."""
    reasons = [] if returncode == 0 else [f"lmms-eval exited with code {returncode}"]
    written = [p for p, t in _results_files(output_path).items() if before.get(p) != t]
    if not any(_has_results(p) for p in written):
        reasons.append(f"lmms-eval wrote no results file under {output_path} "
                       "(it logs 'Error during evaluation' and exits 0)")
    reasons += [f"failed sample: {e}" for e in errors]
    return reasons


def run_checked(argv: list[str]) -> int:
    """Run `python -m lmms_eval ARGV`; 0 when it succeeded (module docstring), else 1 with the
    reasons on stderr, 2 when `--output_path` is missing."""
    output = _option(argv, "output_path")
    if not output:
        print("scissorbench lmms-eval: error: --output_path is required (the results file is "
              "the evidence of success)", file=sys.stderr)
        return 2
    model_args = _option(argv, "model_args")
    sizes, results = _sizes(records_paths(model_args)), _results_files(Path(output))
    returncode = subprocess.run([sys.executable, "-m", "lmms_eval", *argv]).returncode
    errors = _record_errors(sizes, model_args)
    reasons = failures(returncode, Path(output), results, errors)
    for reason in reasons:
        print(f"scissorbench lmms-eval: FAILED: {reason}", file=sys.stderr)
    return 1 if reasons else 0

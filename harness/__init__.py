"""The evaluation harness: the lmms-eval model `scissorbench` and what it needs per sample.

- `harness.lmms_model`: the lmms-eval model (a `backbones` video LLM with a `compressors`
  method inside), its per-sample records and accounting.
- `harness.video`: frames sampled the way lmms-eval's `llava_onevision` samples them, from
  every visual form a task hands over.
- `harness.feature_cache`: vision features per video, shared by a sweep.
- `harness.flops`: FLOPs in the FastV convention (METHODS.md section 8).
- `harness.environment`: the lock file, its hash and the drift warning.

It imports `backbones` and `compressors` only; runners, reporting and the CLI sit above it.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["tasks_dir"]


def tasks_dir() -> str:
    """The folder of scissorbench's lmms-eval tasks, for `--include_path` or
    `TaskManager(include_path=...)` (a source checkout or editable install)."""
    path = Path(__file__).resolve().parents[1] / "tasks"
    if not path.is_dir():
        raise FileNotFoundError(
            f"scissorbench's tasks folder {path} is missing; install scissorbench from a source "
            "checkout (pip install -e .)"
        )
    return str(path)

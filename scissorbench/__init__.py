"""scissorbench: evaluation harness for visual-token compression in video LLMs."""

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

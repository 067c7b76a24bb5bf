"""Structured configs of the runner: what a run may be given, checked before any model loads."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf

ROOT = Path(__file__).resolve().parents[1]  # the source checkout: checkpoints/, configs/, ...


@dataclass
class RunConfig:
    """One job: a model x a compressor x a retention x the task(s) of `task.names`."""

    model: Any = MISSING  # configs/model/*.yaml: name, pretrained, dtype, ...
    compressor: Any = MISSING  # configs/compressor/*.yaml: _target_, name, parameters
    task: Any = MISSING  # configs/task/*.yaml: names, include_path, requires
    retention: float | None = None
    seed: int = 0
    limit: int | None = None
    results_dir: str = "results/runs"
    force: bool = False
    retry_failed: bool = True
    processes: int = 1
    gpus: list[str] | None = None
    gpus_per_job: int = 1
    feature_cache: bool = True


ConfigStore.instance().store(name="run_schema", node=RunConfig)


def shipped(relative: str) -> str:
    """`${scissorbench.root:checkpoints/micro}`: a file shipped with scissorbench, as an absolute
    path under the package's root, whatever the working directory."""
    return str(ROOT / relative)


def portable(path: str) -> str:
    """`path` relative to the package root when it lies under it (how a run key can name a
    shipped asset the same in every clone), else `path` unchanged."""
    try:
        return Path(path).relative_to(ROOT).as_posix()
    except ValueError:
        return path


# every entry point that composes configs/ imports this module first
OmegaConf.register_new_resolver("scissorbench.root", shipped, replace=True)


def retention_default(budget: float, *, _root_: Any) -> float | None:
    """`${scissorbench.retention_default:0.35}`: `budget` for a budgeted compressor, null in
    SCC's threshold mode (`compressor.tau` set), where a retention would contradict tau."""
    return None if OmegaConf.select(_root_, "compressor.tau") is not None else budget


OmegaConf.register_new_resolver("scissorbench.retention_default", retention_default,
                                replace=True)

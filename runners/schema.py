"""Structured configs of the runner: what a run may be given, checked before any model loads."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


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
    processes: int = 1
    gpus: list[str] | None = None
    gpus_per_job: int = 1
    feature_cache: bool = True


ConfigStore.instance().store(name="run_schema", node=RunConfig)

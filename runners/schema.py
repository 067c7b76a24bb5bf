"""Structured configs of the runner: what a run may be given, checked before any model loads."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf

ROOT = Path(__file__).resolve().parents[1]  # the source checkout: checkpoints/, configs/, ...


@dataclass
class LeftOut:
    """A cell of a paper's table that its preset does not run, and why (the runner says so)."""

    model: str = MISSING  # our model config (`model.name`)
    method: str = MISSING  # our registry name
    retention: float = MISSING
    why: str = MISSING


@dataclass
class Experiment:
    """What a paper-table preset (configs/experiment/) reproduces, for the runner to read: the
    paper, its table, its methods (ours or missing) and its cells. A job's retention is
    `${scissorbench.cell:}`: the `cell`-th retention of its (model, method) in `cells`."""

    paper: str = MISSING  # the paper's method name, as in results/papers/ (FastVID, ...)
    table: str = MISSING  # the `table` column of the paper's CSV in results/papers/
    retention: str = MISSING  # what the paper's retention figure means (vs our `retention`)
    models: dict[str, str] = field(default_factory=dict)  # our model config -> paper base model
    # every method of the table but the dense row -> our registry name; null (or a name not in
    # compressors.available()) where the harness does not have it: listed as missing, not run
    methods: dict[str, str | None] = field(default_factory=dict)
    # our model config -> registry name -> the table's retentions of it, as fractions
    cells: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    left_out: list[LeftOut] = field(default_factory=list)
    cell: int = 0  # swept by the preset: which retention of the job's (model, method) cells


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
    experiment: Experiment | None = None  # set by a paper-table preset (configs/experiment/)


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


def cell_retention(*, _root_: Any) -> float | None:
    """`${scissorbench.cell:}`, a paper-table preset's retention: the `experiment.cell`-th
    retention the table has for the job's model and compressor (`experiment.cells`); null for
    the full model, in SCC's threshold mode, past the last retention and where the table has no
    cell (`runners.plan` skips those jobs, or says what to give)."""
    experiment = OmegaConf.select(_root_, "experiment")
    name = OmegaConf.select(_root_, "compressor.name")
    threshold = OmegaConf.select(_root_, "compressor.tau") is not None
    if experiment is None or name == "none" or threshold:
        return None
    values = (experiment.cells.get(OmegaConf.select(_root_, "model.name")) or {}).get(name)
    return float(values[experiment.cell]) if values and 0 <= experiment.cell < len(values) else None


OmegaConf.register_new_resolver("scissorbench.cell", cell_retention, replace=True)

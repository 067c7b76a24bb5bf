"""Turn a composed run config into validated, keyed runs, before any model loads."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig, OmegaConf

import compressors
from backbones import DTYPES, PREPROCESS, fingerprint
from records.store import run_key

_MODEL_KEYS = ("name", "pretrained")


class ConfigError(ValueError):
    """A run config that cannot work; the message names the field and the fix."""


@dataclass(frozen=True)
class Run:
    """One (config, task) pair: what it computes, and its key in the results store."""

    key: str
    settings: dict[str, Any]
    include_path: str | None
    versions: dict[str, Any] = field(default_factory=dict)  # what the key hashed with settings

    @property
    def task(self) -> str:
        return self.settings["task"]


def _compressor(cfg: DictConfig) -> tuple[str, dict[str, Any], float | None]:
    """(name, parameters, retention) with the retention the compressor actually takes."""
    params = OmegaConf.to_container(cfg.compressor, resolve=True)
    assert isinstance(params, dict)
    params.pop("_target_", None)
    params.pop("defaults", None)
    name = params.pop("name", None)
    if name is None:
        raise ConfigError("compressor config has no `name`; choose one of configs/compressor/")
    retention = cfg.retention
    if name == "none" or params.get("tau") is not None:
        retention = None  # the full model, or SCC's threshold mode: the count emerges
    elif retention is None or not (0.0 < float(retention) <= 1.0) or math.isnan(retention):
        raise ConfigError(
            f"retention must be in (0, 1] for compressor {name!r}, got {retention}; "
            "e.g. retention=0.35"
        )
    try:
        compressors.build(name, **params, **({} if retention is None else {"retention": retention}))
    except ValueError as err:
        raise ConfigError(f"compressor {name!r}: {err}") from err
    return name, params, retention


def _check_model(model: dict[str, Any]) -> None:
    """The model options that would otherwise fail only when the job's model loads."""
    dtype = model.get("dtype")
    if dtype is not None and dtype not in DTYPES:
        raise ConfigError(f"model.dtype must be one of {DTYPES} (or null: float16 on CUDA, "
                          f"float32 on CPU), got {dtype!r}")
    if model.get("preprocess") is not None and model["preprocess"] not in PREPROCESS:
        raise ConfigError(f"model.preprocess must be one of {PREPROCESS} (or null: by the "
                          f"checkpoint's layout), got {model['preprocess']!r}")


def plan(cfg: DictConfig, versions: dict[str, str]) -> list[Run]:
    """Validate `cfg` and list its runs, one per task of `task.names`."""
    model = OmegaConf.to_container(cfg.model, resolve=True)
    assert isinstance(model, dict)
    missing = [k for k in _MODEL_KEYS if not model.get(k)]
    if missing:
        raise ConfigError(f"model config lacks {missing}; see configs/model/*.yaml")
    _check_model(model)
    for name, minimum in (("limit", 1), ("processes", 1), ("gpus_per_job", 1)):
        value = cfg.get(name)
        if value is not None and value < minimum:
            raise ConfigError(f"{name} must be >= {minimum}, got {value}")
    name, params, retention = _compressor(cfg)
    names = list(cfg.task.names)
    if not names:
        raise ConfigError("task.names is empty; choose a task config from configs/task/")
    # a local checkpoint's weights are part of the key (a retrained one is recomputed); one
    # the runner writes itself (create_if_missing) is a function of the code version already
    weights = None if model.get("create_if_missing") else fingerprint(str(model["pretrained"]))
    keyed = {**versions, "checkpoint": weights} if weights else versions
    runs = []
    for task in names:
        settings = {
            "model": {k: v for k, v in model.items() if k != "create_if_missing"},
            "compressor": {"name": name, "params": params},
            "retention": retention,
            "task": task,
            "limit": cfg.limit,
            "seed": cfg.seed,
        }
        runs.append(Run(run_key(settings, keyed), settings, cfg.task.get("include_path"), keyed))
    return runs

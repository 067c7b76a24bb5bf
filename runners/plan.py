"""Turn a composed run config into validated, keyed runs, before any model loads."""

from __future__ import annotations

import difflib
import functools
import logging
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

import compressors
from backbones import DTYPES, POSITIONS, PREPROCESS, TINY_CHECKPOINTS, fingerprint
from harness.video import check_frame_count
from records.store import run_key
from runners.schema import portable

log = logging.getLogger("scissorbench.run")
_MODEL_KEYS = ("name", "pretrained")
ATTENTION = ("sdpa", "eager", "flash_attention_2")


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
    if params.get("tau") is not None and retention is not None:
        raise ConfigError(
            f"compressor {name!r}: compressor.tau={params['tau']} (threshold mode: the token "
            f"count emerges) and retention={retention} (a budget) exclude each other; drop "
            "retention=... (it defaults to null in threshold mode), or set compressor.tau=null"
        )
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
    if model.get("positions") is not None and model["positions"] not in POSITIONS:
        raise ConfigError(f"model.positions must be one of {POSITIONS} (or null: the "
                          "backbone's default, contiguous on LLaVA-OneVision, original on "
                          f"Qwen2.5-VL), got {model['positions']!r}")
    for bound in ("min_pixels", "max_pixels"):
        value = model.get(bound)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                  or value < 1):
            raise ConfigError(f"model.{bound} must be a positive number of pixels per frame "
                              f"(Qwen-VL only; null: lmms-eval's default), got {value!r}")
    try:
        check_frame_count(model.get("max_frames_num", 1), "model.max_frames_num")
    except ValueError as err:
        raise ConfigError(str(err)) from None
    attention = model.get("attn_implementation", "sdpa")
    if attention not in ATTENTION:
        raise ConfigError(f"model.attn_implementation must be one of {ATTENTION}, "
                          f"got {attention!r}")
    creatable = model.get("create_if_missing")
    if creatable and creatable not in TINY_CHECKPOINTS:
        raise ConfigError(f"model.create_if_missing must name a tiny checkpoint "
                          f"({', '.join(TINY_CHECKPOINTS)}), got {creatable!r}")
    _check_pretrained(str(model["pretrained"]), creatable=bool(creatable))
    _check_vision_head(model.get("vision_head"))


def _check_vision_head(head: Any) -> None:
    """`model.vision_head` is null or a SigLIP hub id or checkpoint directory (config.json)."""
    if head is None:
        return
    if not isinstance(head, str) or not head.strip():
        raise ConfigError("model.vision_head must be the SigLIP checkpoint whose attention-"
                          "pooling head gives FastVID's signals (a hub id such as "
                          f"google/siglip-so400m-patch14-384 or a directory; null: none), got "
                          f"{head!r}")
    path = Path(head).expanduser()
    if (head.startswith((".", "/", "~")) or path.exists()) and not (path / "config.json").is_file():
        raise ConfigError(f"model.vision_head={head}: not a checkpoint directory (no "
                          "config.json); give a SigLIP checkpoint directory or a hub id such as "
                          "google/siglip-so400m-patch14-384")


def _reads_head(settings: dict[str, Any]) -> bool:
    """Whether the run's compressor reads the signals of `model.vision_head` (set)."""
    from backbones.siglip_head import HEAD_SIGNALS

    if not settings["model"].get("vision_head"):
        return False
    signals = compressors.Compressor(settings["compressor"]["name"]).signals
    return bool(set(signals) & set(HEAD_SIGNALS))


def _check_pretrained(pretrained: str, creatable: bool) -> None:
    """A local `model.pretrained` (starts with '.', '/' or '~', or exists) must be a checkpoint
    directory: its config.json (a transformers or a LLaVA-NeXT one) is what every loader reads
    first. Anything else is a hub id, left to the hub."""
    path = Path(pretrained).expanduser()
    if not (pretrained.startswith((".", "/", "~")) or path.exists()):
        return
    if not path.exists():
        if creatable:
            return  # the runner writes it (create_if_missing)
        raise ConfigError(f"model.pretrained={pretrained}: no such directory; give a local "
                          "checkpoint directory (with config.json) or a Hugging Face hub id "
                          "such as llava-hf/llava-onevision-qwen2-0.5b-ov-hf")
    if not (path / "config.json").is_file():
        what = "a file" if path.is_file() else "a directory without config.json"
        raise ConfigError(f"model.pretrained={pretrained} is {what}, not a checkpoint; point it "
                          "at the directory holding config.json and the weights")


@functools.cache
def task_manager(include_path: str | None) -> Any:
    """lmms-eval's task index (seconds to build), once per include path and process."""
    from lmms_eval.tasks import TaskManager

    if include_path == "scissorbench":
        from harness import tasks_dir

        include_path = tasks_dir()
    return TaskManager(include_path=include_path) if include_path else TaskManager()


def _check_tasks(names: list[str], include_path: str | None) -> None:
    """Every name of `task.names` is a task, group or tag of lmms-eval's index for the include
    path; an unknown one fails here, with its close matches, not after the model loads."""
    known = task_manager(include_path).all_tasks
    for name in names:
        if name not in known:
            close = difflib.get_close_matches(name, known, n=5)
            hint = f"did you mean {', '.join(close)}?" if close else "see `lmms-eval --tasks list`"
            where = f" (include_path={include_path})" if include_path else ""
            raise ConfigError(f"task {name!r} is not in lmms-eval's task index{where}; {hint}")


def _check_experiment(experiment: DictConfig) -> None:
    """A paper-table preset's `experiment` block is consistent: every method it runs (`cells`,
    `left_out`) is in the registry and one of the table's `methods`, on one of its `models`, and
    every table method mapped to a registry entry is run or left out."""
    where = f"{experiment.paper} {experiment.table}"
    available = set(compressors.available())
    mapped = {name for name in experiment.methods.values() if name is not None}
    named = [(model, name) for model, cells in experiment.cells.items() for name in cells]
    named += [(entry.model, entry.method) for entry in experiment.left_out]
    for model, name in named:
        if name not in available:
            raise ConfigError(
                f"experiment {where}: cells name {name!r} (model {model}), which is not in the "
                f"compressor registry ({', '.join(sorted(available))}); a method the harness "
                "does not have goes under experiment.methods as null (listed as missing, not run)"
            )
        if name not in mapped:
            raise ConfigError(f"experiment {where}: cells name {name!r}, which is none of the "
                              f"table's methods (experiment.methods: {dict(experiment.methods)})")
        if model not in experiment.models:
            raise ConfigError(f"experiment {where}: cells of model {model!r}, which is none of "
                              f"the table's models (experiment.models: {list(experiment.models)})")
    unrun = sorted((mapped & available) - {name for _, name in named})
    if unrun:
        raise ConfigError(f"experiment {where}: experiment.methods maps table methods to {unrun}, "
                          "which have no cells (experiment.cells) and are not left out; give "
                          "their cells, or map them to null")
    if experiment.cell < 0:
        raise ConfigError(f"experiment.cell must be >= 0, got {experiment.cell}")


def table_report(cfg: DictConfig) -> str | None:
    """One line for a paper-table preset (None without one): the table's methods the harness
    does not have (null, or a name not in the registry), which are not run, and the cells the
    preset leaves out, with why."""
    experiment = cfg.get("experiment")
    if experiment is None:
        return None
    available = set(compressors.available())
    missing = [method if name is None else f"{method} ({name}: not in the registry)"
               for method, name in experiment.methods.items()
               if name is None or name not in available]
    line = (f"{experiment.paper} {experiment.table}: methods missing from the harness, not run: "
            f"{', '.join(missing) or 'none'}")
    for entry in experiment.left_out:
        line += (f"; left out: {entry.method} at retention {entry.retention:g} on "
                 f"{entry.model} ({entry.why})")
    return line


def _table_cell(cfg: DictConfig) -> bool:
    """Whether a job of a paper-table preset is a cell of its table (always True without one).

    The preset sweeps compressor (and model) x `experiment.cell`, and its retention
    (`${scissorbench.cell:}`) is the cell-th of the table's retentions for the job's model and
    compressor: a job past the last of them, or whose method the table runs on its other models
    only, is not a cell and plans no run. With a retention given instead (retention=...), the full
    model, or SCC's threshold mode, only cell 0 runs (the others would repeat it). A compressor
    or model that is not the table's, with the preset's retention, is an error naming the fix."""
    experiment = cfg.get("experiment")
    if experiment is None:
        return True
    _check_experiment(experiment)
    raw = OmegaConf.to_container(cfg, resolve=False).get("retention")
    name, model = cfg.compressor.get("name"), cfg.model.name
    if not (isinstance(raw, str) and "scissorbench.cell" in raw) or name == "none" \
            or cfg.compressor.get("tau") is not None:
        return experiment.cell == 0
    cells = experiment.cells.get(model) or {}
    if name in cells:
        return experiment.cell < len(cells[name])
    table = {n for per_model in experiment.cells.values() for n in per_model}
    if model in experiment.models and name in table | {e.method for e in experiment.left_out}:
        return False
    where = f"{experiment.paper} {experiment.table}"
    raise ConfigError(
        f"compressor {name!r} on model {model!r} is not a cell of {where} (its cells: "
        + "; ".join(f"{m}: {', '.join(sorted(c))}" for m, c in experiment.cells.items())
        + "), so the preset gives it no retention; give one, e.g. retention=0.25"
    )


def check_results_dir(results_dir: str) -> None:
    """`results_dir` can be created and written (a record, its lock, its temporary file),
    checked before any job runs rather than after an evaluation."""
    root = Path(results_dir).expanduser()
    fix = "choose another results_dir=... or fix its permissions"
    try:
        root.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-probe.", suffix=".tmp", dir=root)
        os.close(fd)
        os.unlink(probe)
    except FileExistsError:
        raise ConfigError(f"results_dir={results_dir} is a file, not a folder; {fix}") from None
    except OSError as err:
        why = err.strerror or type(err).__name__
        raise ConfigError(f"results_dir={results_dir} is not writable ({why}); {fix}") from None


def plan(cfg: DictConfig, versions: dict[str, str]) -> list[Run]:
    """Validate `cfg` and list its runs, one per task of `task.names` (none for a job of a
    paper-table preset that is not a cell of its table: `_table_cell`)."""
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
    if not _table_cell(cfg):
        log.info("not a cell of %s %s: skipped", cfg.experiment.paper, cfg.experiment.table)
        return []
    name, params, retention = _compressor(cfg)
    names = list(cfg.task.names)
    if not names:
        raise ConfigError("task.names is empty; choose a task config from configs/task/")
    _check_tasks(names, cfg.task.get("include_path"))
    check_results_dir(str(cfg.results_dir))
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
        runs.append(Run(run_key(key_settings(settings), keyed), settings,
                        cfg.task.get("include_path"), keyed))
    return runs


def key_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """The settings a key hashes: a shipped checkpoint named relative to the package, so that
    its runs have the same key in every clone (the settings keep the absolute path to load);
    `vision_head` only for a compressor that reads its signals (FastVID), so that adding it
    to a model config changes no other run's key."""
    model = {**settings["model"], "pretrained": portable(str(settings["model"]["pretrained"]))}
    if _reads_head(settings):
        model["vision_head"] = portable(str(model["vision_head"]))
    else:
        model.pop("vision_head", None)
    return {**settings, "model": model}

"""Execute planned runs through lmms-eval and write one record per (config, task).

Knows configs and lmms-eval; the model and the compressor come through the `scissorbench`
lmms-eval model. A record's status decides: a finished one is never recomputed unless `force`,
a failed one is unless `retry_failed=false`. A run is computed under its lock
(`<results_dir>/.locks/<key>.lock`): a second sweep in the same folder skips it as running
elsewhere, so concurrent sweeps share the work. A run killed mid-task resumes from the
per-sample logs `<results_dir>/.samples/<job key>*.jsonl` (one per rank), which the model
reads back as its journal: every request answered before the kill is reused, not recomputed
(lmms-eval's response cache, `<results_dir>/.cache/<key>`, keeps only tasks whose request lists
finished). The per-sample accounting of the record comes from the same logs.
"""

from __future__ import annotations

import json
import logging
import os
import statistics
import subprocess
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from filelock import Timeout
from omegaconf import DictConfig, OmegaConf

from records.store import ResultsStore, code_versions, run_key
from runners.plan import Run, key_settings, plan, task_manager

log = logging.getLogger("scissorbench.run")


@dataclass(frozen=True)
class Outcome:
    """What a sweep did with one planned run: its `status` is "finished" or "failed" (computed
    by this sweep, or, for `kept`, a failed record kept by retry_failed=false), "skipped" (a
    finished record) or "elsewhere" (another live sweep holds its lock and computes it)."""

    run: Run
    status: str
    path: Path
    error: str | None = None
    kept: bool = False


def run(cfg: DictConfig) -> list[Path]:
    """Run every unfinished (config, task) of `cfg`; return the record paths."""
    return [o.path for o in sweep(cfg)]


def sweep(cfg: DictConfig) -> list[Outcome]:
    """Run every (config, task) of `cfg` that no record settles and no other sweep holds.

    A finished record is skipped (unless `force`); a failed one is recomputed when
    `retry_failed`. Each run computed here is locked first (`ResultsStore.lock`) and its
    record read again under the lock, so two sweeps started together never both compute it.
    """
    runs = plan(cfg, code_versions())
    store = ResultsStore(cfg.results_dir)
    store.remove_stale_tmp()
    outcomes: dict[str, Outcome] = {}
    with ExitStack() as held:
        todo = [r for r in runs if _claim(cfg, store, r, held, outcomes)]
        if todo:
            _prepare_assets(cfg, todo)
            if cfg.processes > 1 and int(os.environ.get("WORLD_SIZE", "1")) == 1:
                _launch_torchrun(cfg, todo)
            else:
                execute(cfg, todo, store)
        for r in todo:
            outcomes[r.key] = _computed(store, r)
    return [outcomes[r.key] for r in runs]


def _claim(cfg: DictConfig, store: ResultsStore, r: Run, held: ExitStack,
           outcomes: dict[str, Outcome]) -> bool:
    """True when this sweep is to compute `r` (its lock now in `held`); else its outcome is
    put in `outcomes`: settled by its record, or locked by another live sweep."""
    if _settled(cfg, store, r, outcomes):
        return False
    lock = store.lock(r.key)
    try:
        lock.acquire(blocking=False)
    except Timeout:
        log.info("skip %s (%s): running elsewhere (%s is held)", r.task, r.key, lock.lock_file)
        outcomes[r.key] = Outcome(r, "elsewhere", store.path(r.key))
        return False
    held.callback(lock.release)
    return not _settled(cfg, store, r, outcomes)  # written while this sweep waited?


def _settled(cfg: DictConfig, store: ResultsStore, r: Run,
             outcomes: dict[str, Outcome]) -> bool:
    """True (with its outcome) when `r`'s record makes computing it pointless: a finished
    record, or a failed one under retry_failed=false; `force` settles nothing."""
    status = None if cfg.force else store.status(r.key)
    if status == "finished":
        log.info("skip %s (%s): finished record %s", r.task, r.key, store.path(r.key))
        outcomes[r.key] = Outcome(r, "skipped", store.path(r.key))
    elif status is not None and not cfg.retry_failed:
        log.info("keep failed %s (%s): retry_failed=false", r.task, r.key)
        outcomes[r.key] = Outcome(r, "failed", store.path(r.key), _error(store, r.key), kept=True)
    else:
        return False
    return True


def _computed(store: ResultsStore, r: Run) -> Outcome:
    """The outcome of a run this sweep computed, from the record it wrote (none: failed)."""
    path = store.path(r.key)
    status = store.status(r.key)
    if status is None:
        return Outcome(r, "failed", path, f"no record was written to {path}")
    return Outcome(r, "finished" if status == "finished" else "failed", path,
                   _error(store, r.key) if status != "finished" else None)


def _error(store: ResultsStore, key: str) -> str:
    """The first line of a failed record's error."""
    error = str(store.read(key).get("error") or "no error given")
    return error.strip().splitlines()[0] if error.strip() else "no error given"


def _prepare_assets(cfg: DictConfig, runs: list[Run]) -> None:
    """Write what a run needs and can make itself: the tiny checkpoint, the synthetic test split."""
    model = cfg.model
    writer = model.get("create_if_missing")
    if writer and not Path(model.pretrained).exists():
        from backbones import write_tiny

        log.info("writing the %s checkpoint to %s", writer, model.pretrained)
        write_tiny(writer, model.pretrained)
    if any(r.include_path == "scissorbench" for r in runs):
        from synthetic.task import (
            SPLIT_SEEDS,
            TEST_ITEMS,
            build_dataset,
            dataset_dir,
            split_is_current,
        )

        target = dataset_dir()
        if not split_is_current(target, "test", SPLIT_SEEDS["test"]):
            log.info("writing the synthetic_video_qa test split to %s", target)
            build_dataset(target, n=TEST_ITEMS, seed=SPLIT_SEEDS["test"], split="test")


def _launch_torchrun(cfg: DictConfig, runs: list[Run]) -> None:
    """Data parallel inside one run: torchrun starts `processes` workers of this config, to
    compute `runs` (the ones this process holds the locks of) and no other."""
    jobs = Path(cfg.results_dir) / ".jobs"
    jobs.mkdir(parents=True, exist_ok=True)
    config = jobs / f"{os.getpid()}-{time.time_ns()}.yaml"
    config.write_text(OmegaConf.to_yaml(cfg, resolve=True))
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone",
        f"--nproc_per_node={cfg.processes}", "-m", "runners.worker", str(config),
        ",".join(r.key for r in runs),
    ]
    log.info("data parallel: %s", " ".join(command))
    subprocess.run(command, check=True)


_task_manager = task_manager  # the index plan checked task.names against


def _model(cfg: DictConfig, first: Run, samples_path: Path):
    from harness.lmms_model import ScissorBench

    settings = first.settings
    model = settings["model"]
    return ScissorBench(
        pretrained=model["pretrained"],
        compressor=settings["compressor"]["name"],
        retention=settings["retention"],
        max_frames_num=model.get("max_frames_num", 32),
        dtype=model.get("dtype"),
        attn_implementation=model.get("attn_implementation", "sdpa"),
        device=model.get("device"),
        video_newline=model.get("video_newline", False),
        preprocess=model.get("preprocess"),
        positions=model.get("positions"),
        min_pixels=model.get("min_pixels"),
        max_pixels=model.get("max_pixels"),
        vision_head=model.get("vision_head"),
        honour_until=model.get("honour_until", False),
        records_path=str(samples_path),
        feature_cache=str(Path(cfg.results_dir) / ".features") if cfg.feature_cache else None,
        **settings["compressor"]["params"],
    )


def execute(cfg: DictConfig, runs: list[Run], store: ResultsStore) -> None:
    """Evaluate `runs` (same model and compressor) in this process group; rank 0 writes. A
    model that does not load fails every run with its error (a failed record each)."""
    samples = Path(cfg.results_dir) / ".samples" / f"{_job_key(runs[0])}.jsonl"
    try:
        lm, load_error = _model(cfg, runs[0], samples), None
    except Exception as err:  # recorded; the sweep goes on (retry_failed recomputes them)
        log.exception("the model %s did not load", runs[0].settings["model"]["pretrained"])
        lm, load_error = None, f"model did not load: {type(err).__name__}: {err}"
    rank = lm.rank if lm is not None else int(os.environ.get("RANK", "0"))
    for r in runs:
        started, clock = datetime.now(timezone.utc), time.perf_counter()
        results, error = (None, load_error) if lm is None else _evaluate(cfg, lm, r)
        if rank != 0:
            continue
        record = _record(r, results, _samples(samples, r.task), error)
        record.update(
            started_at=started.isoformat(), duration_s=time.perf_counter() - clock,
            finished_at=datetime.now(timezone.utc).isoformat(), versions=code_versions(),
        )
        path = _write(store, r.key, record)
        log.info("%s %s -> %s", record["status"], r.task, path)


def _evaluate(cfg: DictConfig, lm: Any, r: Run) -> tuple[dict | None, str | None]:
    """(lmms-eval's results, None) for `r`, or (None, the error): a failed task is recorded
    and the sweep goes on."""
    from lmms_eval.evaluator import simple_evaluate

    world = int(os.environ.get("WORLD_SIZE", "1"))
    try:
        results = simple_evaluate(
            model=lm,
            tasks=[r.task],
            limit=cfg.limit,
            task_manager=_task_manager(r.include_path),
            use_cache=str(Path(cfg.results_dir) / ".cache" / r.key),
            log_samples=False,
            random_seed=cfg.seed,
            numpy_random_seed=cfg.seed,
            torch_random_seed=cfg.seed,
            distributed_executor_backend="torchrun" if world > 1 else "accelerate",
            verbosity="WARNING",
        )
    except Exception as err:
        log.exception("task %s failed", r.task)
        return None, f"{type(err).__name__}: {err}"
    return results, None if results else "lmms-eval returned no results"


class RecordError(OSError):
    """A record that could not be written: the sweep stops, loudly (it cannot keep results)."""


def _write(store: ResultsStore, key: str, record: dict[str, Any]) -> Path:
    """`store.write`, its OSError turned into one line naming the record and the fix."""
    try:
        return store.write(key, record)
    except OSError as err:
        raise RecordError(f"could not write the record {store.path(key)} "
                          f"({err.strerror or err}); free disk space or fix the permissions "
                          "of results_dir, then rerun (finished records are kept)") from err


def _job_key(run: Run) -> str:
    """The key of a run without its task: one per-sample log for all tasks of a job."""
    settings = {k: v for k, v in key_settings(run.settings).items() if k != "task"}
    return run_key(settings, run.versions or code_versions())


def samples_of(results_dir: str | os.PathLike[str], run: Run) -> list[dict[str, Any]]:
    """The per-sample records (model output, tokens, timings) of a finished `run`."""
    return _samples(Path(results_dir) / ".samples" / f"{_job_key(run)}.jsonl", run.task)


def _samples(path: Path, task: str) -> list[dict[str, Any]]:
    """Per-sample records of `task` from every rank's log, the latest per document."""
    rows: dict[Any, dict[str, Any]] = {}
    for log_file in sorted(path.parent.glob(f"{path.stem}*{path.suffix}")):
        for line in log_file.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:  # a line cut short by a killed run
                continue
            if row.get("task") == task:
                rows[row.get("doc_id")] = row
    return list(rows.values())


def _metrics(task_results: dict[str, Any]) -> dict[str, dict[str, float | None]]:
    """lmms-eval's "metric,filter" values with their "metric_stderr,filter" partners."""
    metrics: dict[str, dict[str, float | None]] = {}
    for name, value in task_results.items():
        if name == "alias" or "_stderr" in name or not isinstance(value, (int, float)):
            continue
        metric, _, filt = name.partition(",")
        stderr = task_results.get(f"{metric}_stderr,{filt}")
        metrics[name] = {
            "value": float(value),
            "stderr": float(stderr) if isinstance(stderr, (int, float)) else None,
        }
    return metrics


def _task_metrics(run: Run, results: dict | None) -> tuple[dict, dict]:
    """(metrics, per-subtask metrics); a group without its own metrics gets their mean."""
    everything = (results or {}).get("results", {})
    metrics = _metrics(everything.get(run.task, {}))
    names = (results or {}).get("group_subtasks", {}).get(run.task, [])
    subtasks = {name: _metrics(everything.get(name, {})) for name in names}
    if not metrics and subtasks:
        for name in sorted({m for sub in subtasks.values() for m in sub}):
            values = [sub[name]["value"] for sub in subtasks.values() if name in sub]
            metrics[name] = {"value": statistics.fmean(values), "stderr": None}
    return metrics, subtasks


def _mean(rows: list[dict[str, Any]], field: str) -> float | None:
    values = [row[field] for row in rows if isinstance(row.get(field), (int, float))]
    return statistics.fmean(values) if values else None


def _record(run: Run, results: dict | None, samples: list[dict], error: str | None) -> dict:
    """The results-schema record (docs/results_schema.md) of one finished or failed run."""
    metrics, subtasks = _task_metrics(run, results)
    ok = [s for s in samples if not s.get("error")]
    failures = [
        {"doc_id": s.get("doc_id"), "video": s.get("video"), "error": s["error"]}
        for s in samples
        if s.get("error")
    ]
    achieved = [s["achieved_retention"] for s in ok if s.get("achieved_retention") is not None]
    timing_names = sorted({k for s in ok for k in s.get("timings", {})})
    peaks = [s["peak_memory_bytes"] for s in ok if s.get("peak_memory_bytes")]
    return {
        "source": "ours",
        "status": "finished" if error is None and metrics else "failed",
        "error": error if error is not None or metrics else "no metrics for the task",
        "settings": run.settings,
        "metrics": metrics,
        "subtasks": subtasks,
        "samples": {"count": len(ok) + len(failures), "failed": len(failures),
                    "failures": failures},
        "retention": {
            "target": run.settings["retention"],
            "mean": statistics.fmean(achieved) if achieved else None,
            "min": min(achieved) if achieved else None,
            "max": max(achieved) if achieved else None,
        },
        "tokens": {"visual_mean": _mean(ok, "visual_tokens"),
                   "fed_mean": _mean(ok, "visual_tokens_fed")},
        "flops": {"prefill_mean": _mean(ok, "prefill_flops"),
                  "prefill_ratio_mean": _mean(ok, "prefill_flops_ratio"),
                  "convention": "FastV: 4nd^2 + 2n^2d + 2ndm per layer, prefill, text included"},
        "timings": {
            f"{name}_s": statistics.fmean(
                [s["timings"][name] for s in ok if name in s.get("timings", {})]
            )
            for name in timing_names
        },
        "peak_memory_bytes": max(peaks) if peaks else None,
        "resolved": {name: _only(ok, name) for name in ("dtype", "preprocess", "positions")},
        "provenance": _provenance(run.settings["compressor"]["name"]),
    }


def _provenance(name: str) -> dict[str, str] | None:
    """What the compressor follows (registry: fidelity, repository, commit, file, note)."""
    import compressors

    return compressors.provenance(name) if name in compressors.available() else None


def _only(rows: list[dict[str, Any]], field: str) -> Any:
    """The one value of `field` over the samples (what a default resolved to), None if none."""
    values = {row[field] for row in rows if row.get(field) is not None}
    return values.pop() if len(values) == 1 else (sorted(values) or None)

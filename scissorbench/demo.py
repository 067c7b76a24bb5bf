"""`make demo`: every compressor x retention on both micro models under both position policies.

For each micro backbone (`micro`: LLaVA-OneVision, `micro_qwen2_5_vl`: Qwen2.5-VL) and each
position policy (`original`, `contiguous`; METHODS.md section 11) the demo sweeps every
budgeted compressor at every retention into `<output>/<model>/<policy>/`; each job is the Hydra
config a user would get from

    scissorbench run model=micro compressor=<name> retention=<r> model.positions=<policy> \
        results_dir=<output>/micro/<policy>/runs

composed from `configs/` and run by `runners.evaluate.run` (lmms-eval's `simple_evaluate` on the
`synthetic_video_qa` task, the `scissorbench` lmms-eval model, the results store, the feature
cache shared by the sweep). The full model (`none`) runs once. All jobs are validated before the
first one starts, finished runs are skipped when the demo is run again, and each job prints one
progress line. Then the reporting layer writes, from the records alone:

- `<output>/accuracy.md` (and `.csv`, `.tex`): methods x retentions;
- `<output>/leaderboard.md`: every (method, retention), best first, with its prefill FLOPs;
- `<output>/by_question_type.md`: accuracy per question type of every run, from the per-sample
  outputs (which content each compressor loses: the small dot, the brief shape, ...);
- `<output>/accuracy_vs_retention.png` (and `.pdf`): one line per method;
- `<output>/report/report.html`: every table and figure of `scissorbench report`;

and, over all of them, `<output>/positions.md` (and `.csv`): accuracy of every method x
retention under each policy on each backbone, side by side, and `<output>/site/index.html`:
the static leaderboard site (`scissorbench leaderboard`) of every run beside the six papers'
references. A (method, retention) a method
cannot reach on the micro geometry (DyCoke below its whole-frame minimum) is left out and said.
"""

from __future__ import annotations

import functools
import json
import multiprocessing
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "DEFAULT_MODELS", "DEFAULT_POLICIES", "DEFAULT_RETENTIONS", "TASK", "DemoResult",
    "demo_jobs", "run_demo", "run_demos",
]

DEFAULT_RETENTIONS = [1.0, 0.5, 0.35, 0.1, 0.05]
DEFAULT_MODELS = ["micro", "micro_qwen2_5_vl"]
DEFAULT_POLICIES = ["original", "contiguous"]
TASK = "synthetic_video_qa"


@dataclass
class DemoResult:
    """Where the demo wrote its outputs, and the jobs that failed (label: error)."""

    leaderboard: Path
    table: Path
    by_type: Path
    figure: Path
    report: Path
    records: list[Path] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


def demo_jobs(model: str, methods: Sequence[str], retentions: Sequence[float],
              runs_dir: Path, limit: int | None, positions: str | None = None,
              frames: int | None = None) -> list[list[str]]:
    """Hydra overrides of every job: the full model once, then each method x retention that
    the method can reach on `frames` frames (the LLM's temporal units; None: no check).
    Methods the model cannot feed (`needs_missing_head`) are not among `methods` here."""
    common = [f"model={model}", f"task={TASK}", f"results_dir={runs_dir}"]
    if positions is not None:
        common.append(f"model.positions={positions}")
    if limit is not None:
        common.append(f"limit={limit}")
    jobs = [[*common, "compressor=none", "retention=null"]] if "none" in methods else []
    for name in (m for m in methods if m != "none"):
        jobs += [[*common, f"compressor={name}", f"retention={r:g}"] for r in retentions
                 if frames is None or reachable(name, r, frames)]
    return jobs


def reachable(name: str, retention: float, frames: int) -> bool:
    """Whether `name` can feed budget(retention) tokens of `frames` frames: DyCoke never prunes
    its anchor frames (its minimum, `compressors.dycoke.minimum_retention`)."""
    import compressors.dycoke

    return name != "dycoke" or retention >= compressors.dycoke.minimum_retention(frames)


def _model_config(model: str) -> dict[str, Any]:
    import yaml

    from runners.cli import CONFIGS

    return yaml.safe_load((CONFIGS / "model" / f"{model}.yaml").read_text())


def _temporal_units(model: str) -> int:
    """Frames the LLM sees as separate units for `model`'s config: max_frames_num, halved for
    Qwen-VL's temporal patches of 2."""
    frames = int(_model_config(model).get("max_frames_num", 32))
    return -(-frames // 2) if "qwen" in model else frames


def needs_missing_head(name: str, model: str) -> bool:
    """Whether `name` reads the SigLIP attention-pooling head's signals (FastVID) on a LLaVA
    model config that names no `vision_head` (the micro towers were trained without one)."""
    import compressors

    head = {"frame_features", "head_attention"} & set(compressors.build(
        name, **({"retention": 0.5} if name in compressors.budgeted() else {})).signals)
    return bool(head) and "qwen" not in model and not _model_config(model).get("vision_head")


def run_demos(output: str | Path, *, models: Sequence[str] = DEFAULT_MODELS,
              policies: Sequence[str] = DEFAULT_POLICIES, methods: Sequence[str] | None = None,
              retentions: Sequence[float] = DEFAULT_RETENTIONS, limit: int | None = None,
              log: Callable[[str], None] = print,
              workers: int = 1) -> dict[tuple[str, str], DemoResult]:
    """`run_demo` for every (model, policy) into `<output>/<model>/<policy>`, then the
    positions table over all of them (`<output>/positions.md`) and the leaderboard site.

    `workers` > 1 runs that many (model, policy) sweeps at once, each in a spawned process of
    `concurrent.futures` with the cores shared out (torch threads = cores // workers), each
    printing its own progress lines: a micro model is too small for a second thread to help
    one run much (3.2 s a run on 2 threads against 3.6 s on 1, measured here), so two sweeps
    at once nearly halve the demo. The results are the same runs either way."""
    output = Path(output)
    groups = [(model, policy) for model in models for policy in policies]
    options = {"methods": methods, "retentions": retentions, "limit": limit}
    if workers <= 1 or len(groups) < 2:
        results = {(m, p): run_demo(output / m / p, model=m, positions=p, log=log, **options)
                   for m, p in groups}
    else:
        threads = max(1, (os.cpu_count() or 1) // workers)
        spawn = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=spawn) as pool:
            futures = {(m, p): pool.submit(_run_group, output / m / p, m, p, threads, options)
                       for m, p in groups}
            results = {group: future.result() for group, future in futures.items()}
    _write_positions(output, results)
    _write_site(output, log)
    return results


def _run_group(output: Path, model: str, policy: str, threads: int,
               options: dict[str, Any]) -> DemoResult:
    """One (model, policy) sweep in a worker process of `run_demos`, on `threads` threads."""
    import torch

    torch.set_num_threads(threads)
    return run_demo(output, model=model, positions=policy,
                    log=functools.partial(print, flush=True), **options)


def _write_site(output: Path, log: Callable[[str], None]) -> None:
    """The static leaderboard site of every run above plus the six papers' references
    (`<output>/site/index.html`, what `scissorbench leaderboard` writes)."""
    from reporting.load import results_folders
    from reporting.site import build_site

    if not results_folders([output]):
        return
    site = build_site([output], output / "site")
    log(f"[demo] leaderboard site: {site.index} ({site.sections} boards, "
        f"{len(site.pages)} method pages)")


def _write_positions(output: Path, results: dict[tuple[str, str], DemoResult]) -> None:
    """Accuracy of each method x retention, one column per (model, policy): what the position
    policy does to each method on each backbone."""
    import pandas as pd

    from reporting.tables import write_table

    columns, methods, retentions = {}, [], []
    for (model, policy), result in results.items():
        table = pd.read_csv(result.table.with_suffix(".csv")).set_index("method")
        methods += [m for m in table.index if m not in methods]
        retentions += [r for r in table.columns if r not in retentions]
        columns[f"{model} {policy}"] = table.stack()
    if not columns:
        return
    order = [(m, r) for m in methods for r in sorted(retentions, key=_percent, reverse=True)]
    frame = pd.DataFrame(columns).reindex(order).dropna(how="all")
    frame.index.names = ["method", "retention"]
    write_table(frame, output / "positions",
                f"{TASK} (held-out) accuracy %, by position policy on each backbone", decimals=1)


def _compose(jobs: list[list[str]]) -> list[tuple[Any, Any]]:
    """(config, planned run) of every job, composed and validated (runners.plan) before any
    model loads."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException

    import runners.schema  # noqa: F401  registers the structured config `run_schema`
    from records.store import code_versions
    from runners.cli import CONFIGS
    from runners.plan import ConfigError, plan

    versions = code_versions()
    planned = []
    with initialize_config_dir(str(CONFIGS), version_base="1.3"):
        for job in jobs:
            try:
                cfg = compose("config", overrides=job)
            except HydraException as err:
                raise ConfigError(f"{' '.join(job)}: {str(err).splitlines()[0]}") from None
            (run,) = plan(cfg, versions)  # one task: synthetic_video_qa
            planned.append((cfg, run))
    return planned


def _percent(label: str) -> float:
    """"35%" -> 35.0 (the tables' retention labels)."""
    return float(str(label).rstrip("%"))


def run_demo(output: str | Path, *, model: str = "micro", positions: str | None = None,
             methods: Sequence[str] | None = None,
             retentions: Sequence[float] = DEFAULT_RETENTIONS, limit: int | None = None,
             log: Callable[[str], None] = print) -> DemoResult:
    """Run the sweep of one model under one position policy (None: the backbone's default)
    into `<output>/runs`, then write the leaderboard, figure and report."""
    from transformers.utils import logging as hf_logging

    import compressors
    from runners.evaluate import run, samples_of
    from runners.plan import ConfigError

    output = Path(output)
    known = compressors.available()
    methods = list(["none", *compressors.budgeted()] if methods is None else methods)
    unknown = [m for m in methods if m not in known]
    if unknown:
        raise ConfigError(f"unknown compressor(s) {unknown}; choose from {known}")
    frames = _temporal_units(model)
    headless = [m for m in methods if m != "none" and needs_missing_head(m, model)]
    if headless:
        log(f"[demo] {model}: {', '.join(headless)} left out: it reads SigLIP's attention-pooling "
            f"head, and this model config names no vision_head")
        methods = [m for m in methods if m not in headless]
    jobs = demo_jobs(model, methods, retentions, output / "runs", limit, positions, frames)
    planned = _compose(jobs)
    hf_logging.disable_progress_bar()  # one line per run is the progress shown
    left_out = [f"{m} r={r:g}" for m in methods for r in retentions
                if m != "none" and not reachable(m, r, frames)]
    log(f"[demo] {len(planned)} runs: model {model}, positions {positions or 'default'}, "
        f"task {TASK}, compressors {methods}, retentions {[float(r) for r in retentions]}"
        + (f"; unreachable on {frames} frames, left out: {', '.join(left_out)}"
           if left_out else ""))
    result = DemoResult(output / "leaderboard.md", output / "accuracy.md",
                        output / "by_question_type.md", output / "accuracy_vs_retention.png",
                        output / "report" / "report.html")
    per_type: list[dict] = []
    started = time.perf_counter()
    for number, (cfg, job) in enumerate(planned, 1):
        label = cfg.compressor.name + ("" if cfg.retention is None else f" r={cfg.retention:g}")
        clock = time.perf_counter()
        paths = run(cfg)
        result.records += paths
        record = json.loads(paths[0].read_text())
        if record["status"] != "finished":
            result.failed[label] = str(record.get("error"))
            said = f"FAILED: {record.get('error')}"
        else:
            accuracy = record["metrics"]["accuracy,none"]["value"]
            said = f"accuracy {accuracy:.3f}, {record['tokens']['fed_mean'] or 0:.1f} tokens fed"
            per_type.append({"method": cfg.compressor.name, "retention": cfg.retention,
                             **type_accuracy(samples_of(cfg.results_dir, job))})
        log(f"[demo] {model} {positions or ''} {number:>2}/{len(planned)} {label:<18} {said}  "
            f"({time.perf_counter() - clock:.1f} s, {time.perf_counter() - started:.0f} s in all)")
    _write_outputs(output, model, result, per_type)
    return result


def type_accuracy(samples: list[dict]) -> dict[str, float]:
    """Accuracy (%) per question type and in all of a run's per-sample outputs, scored as the
    task scores them (`is_right`) against the test split's answers."""
    from synthetic.task import accuracy_by_type, dataset_dir, is_right, read_split

    rows = read_split(dataset_dir(), "test")
    outcomes = [(rows[s["doc_id"]]["question_type"], is_right(s.get("output"), rows[s["doc_id"]]))
                for s in samples]
    return {kind: 100.0 * share for kind, share in accuracy_by_type(outcomes).items()}


def _write_outputs(output: Path, model: str, result: DemoResult, per_type: list[dict]) -> None:
    """Tables, figure and full report, from the records in `<output>/runs` (per-type table:
    from the per-sample outputs)."""
    import pandas as pd

    from reporting.benchmarks import align
    from reporting.load import load_records
    from reporting.plots import plot_accuracy_vs_retention, save_figure
    from reporting.report import build_report
    from reporting.tables import benchmark_table, leaderboard, method_order, pct, write_table

    aligned = align(load_records(output / "runs"))
    caption = f"{model} on {TASK} (held-out), accuracy %"
    write_table(benchmark_table(aligned, TASK, model), output / "accuracy", caption)
    board = leaderboard(aligned, TASK, model)
    board = board.assign(prefill_mflops=board.pop("prefill_tflops") * 1e6)
    write_table(board.set_index("method"), output / "leaderboard",
                f"{caption}, every run, best first")
    if per_type:
        table = pd.DataFrame(per_type)
        table["_rank"] = table["method"].map(method_order(table["method"]).index)
        table = table.sort_values(["_rank", "retention"], ascending=[True, False])
        table["retention"] = table["retention"].map(lambda r: pct(r) if pd.notna(r) else "100%")
        write_table(table.drop(columns="_rank").set_index(["method", "retention"]),
                    output / "by_question_type", f"{caption} per question type", decimals=1)
    save_figure(plot_accuracy_vs_retention(aligned, TASK, model), output / "accuracy_vs_retention")
    build_report(output / "runs", output / "report")

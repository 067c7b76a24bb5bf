"""`make demo`: every compressor x retention on the micro model, through the real runner.

Each job is the Hydra config a user would get from

    scissorbench run model=micro compressor=<name> retention=<r> results_dir=<output>/runs

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
- `<output>/report/report.html`: every table and figure of `scissorbench report`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["DEFAULT_RETENTIONS", "TASK", "DemoResult", "demo_jobs", "run_demo"]

DEFAULT_RETENTIONS = [1.0, 0.5, 0.35, 0.1, 0.05]
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
              runs_dir: Path, limit: int | None) -> list[list[str]]:
    """Hydra overrides of every job: the full model once, then each method x retention."""
    common = [f"model={model}", f"task={TASK}", f"results_dir={runs_dir}"]
    if limit is not None:
        common.append(f"limit={limit}")
    jobs = [[*common, "compressor=none", "retention=null"]] if "none" in methods else []
    for name in (m for m in methods if m != "none"):
        jobs += [[*common, f"compressor={name}", f"retention={r:g}"] for r in retentions]
    return jobs


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


def run_demo(output: str | Path, *, model: str = "micro", methods: Sequence[str] | None = None,
             retentions: Sequence[float] = DEFAULT_RETENTIONS, limit: int | None = None,
             log: Callable[[str], None] = print) -> DemoResult:
    """Run the sweep into `<output>/runs`, then write the leaderboard, figure and report."""
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
    jobs = demo_jobs(model, methods, retentions, output / "runs", limit)
    planned = _compose(jobs)
    hf_logging.disable_progress_bar()  # one line per run is the progress shown
    log(f"[demo] {len(planned)} runs: model {model}, task {TASK}, compressors {methods}, "
        f"retentions {[float(r) for r in retentions]}")
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
        log(f"[demo] {number:>2}/{len(planned)} {label:<18} {said}  "
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

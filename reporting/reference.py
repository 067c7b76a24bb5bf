"""The paper's numbers as results-schema records (`source: "paper"`), in `results/reference/`.

LLaVA-Scissor (arXiv 2506.21862v1) reports its 7 tables as one CSV (columns table, base_model,
method, retention_pct, benchmark, score; `../shared/reference/`). `convert` turns it into one
record per (table, base model, method, retention, lmms-eval task), the way docs/results_schema.md
describes paper rows:

- `settings.model`: the paper's base model name, with the checkpoint it was released as and its
  LLM dimensions (for FLOPs); `settings.compressor.name`: our registry name where one exists
  (`PAPER_METHODS`), else the paper's name; `settings.retention`: retention_pct / 100 (null for
  the full model, as for our `none`); `retention.target`: retention_pct / 100.
- `settings.task`: the lmms-eval task of the benchmark (`PAPER_TASKS`); columns that average over
  several benchmarks (`avg_relative_pct`, `avg_rel`) and Table 5's FLOPs columns have task null.
- `metrics`: the paper's column names, `{"value": score, "stderr": null}`.
- `versions`: the code versions are unknown (null); `paper` and `table` name the source, so the
  same method and retention in two tables are two records.
- the key is `records.store.run_key(settings, versions)`, as for our runs.

`write_reference` writes them (and removes stale records); `scissorbench reference` runs it.
"""

from __future__ import annotations

import csv
import os
from collections import defaultdict
from pathlib import Path
from typing import Any

from records.store import SCHEMA_VERSION, ResultsStore, run_key

__all__ = [
    "DEFAULT_CSV",
    "PAPER",
    "PAPER_METHODS",
    "PAPER_MODELS",
    "PAPER_TASKS",
    "REFERENCE_DIR",
    "convert",
    "our_model_of",
    "paper_model_of",
    "write_reference",
]

_ROOT = Path(__file__).resolve().parents[1]
PAPER = "arXiv:2506.21862v1"
DEFAULT_CSV = _ROOT.parent / "shared" / "reference" / "llava_scissor_arxiv2506.21862v1.csv"
REFERENCE_DIR = _ROOT / "results" / "reference"

# The paper's base models: the checkpoints they were released as (METHODS.md section 1), our
# model config of the same checkpoint, and the LLM dimensions (Qwen2.5-7B / -0.5B).
PAPER_MODELS: dict[str, dict[str, Any]] = {
    "LLaVA-OV-7B-enhanced": {
        "config": "llava_scissor_baseline_7b",
        "pretrained": "BBBBCHAN/LLaVA-Scissor-baseline-7B",
        "llm": {"layers": 28, "hidden": 3584, "ffn": 18944},
    },
    "LLaVA-OV-0.5B-enhanced": {
        "config": "llava_scissor_baseline_0.5b",
        "pretrained": "BBBBCHAN/LLaVA-Scissor-baseline-0.5B",
        "llm": {"layers": 24, "hidden": 896, "ffn": 4864},
    },
}

# The paper's method -> (our registry name, the parameters the paper states). Methods not here
# keep the paper's name (DyCoke, the ablation rows of Table 4, the methods of Table 6).
PAPER_METHODS: dict[str, tuple[str, dict[str, Any]]] = {
    "LLaVA-Scissor": ("scc", {}),
    "SCC+Merge (LLaVA-Scissor)": ("scc", {}),
    "FastV": ("fastv", {"layer": 3}),
    "VisionZip": ("visionzip", {}),
    "PLLaVA": ("pllava", {}),
    "Random+Merge": ("random", {"merge": True}),
    "Uniform+Merge": ("uniform", {"merge": True}),
    "L2Norm+Merge": ("l2norm", {"merge": True}),
}

# The benchmark part of a paper column (before the first "_") -> lmms-eval task.
PAPER_TASKS = {
    "MVBench": "mvbench", "EgoSchema": "egoschema", "MLVU": "mlvu_dev", "VideoMME": "videomme",
    "VideoMMMU": "video_mmmu", "NextQA": "nextqa_mc_test", "ActivityNet-QA": "activitynetqa",
    "ActivityNet": "activitynetqa", "VideoChatGPT": "videochatgpt",
}
_AGGREGATES = {"avg_relative_pct", "avg_rel", "avg_perf_ratio_pct", "FLOPs_TFLOPs",
               "FLOPs_ratio_pct"}
_FLOPS_CONVENTION = (
    "FastV: 4nd^2 + 2n^2d + 2ndm per layer; the paper's Table 5 (metrics FLOPs_TFLOPs, "
    "FLOPs_ratio_pct) adds the decode of 100 tokens and counts visual tokens only"
)


def paper_model_of(model: str) -> str | None:
    """The paper's base model run from our model config `model` (None if the paper has none)."""
    return next((p for p, m in PAPER_MODELS.items() if m["config"] == model), None)


def our_model_of(paper_model: str) -> str | None:
    """Our model config of the paper's base model."""
    entry = PAPER_MODELS.get(paper_model)
    return None if entry is None else entry["config"]


def _task(column: str) -> str | None:
    if column in _AGGREGATES:
        return None
    task = PAPER_TASKS.get(column.split("_")[0])
    if task is None:
        raise ValueError(f"paper column {column!r} names no known benchmark; add it to "
                         "reporting.reference.PAPER_TASKS")
    return task


def _method(paper_method: str) -> tuple[str, dict[str, Any]]:
    if paper_method.endswith("(full)"):
        return "none", {}
    name, params = PAPER_METHODS.get(paper_method, (paper_method, {}))
    return name, dict(params)


def convert(csv_path: str | os.PathLike[str] = DEFAULT_CSV) -> list[dict[str, Any]]:
    """The paper's CSV as complete schema records (with `schema_version` and `key`)."""
    groups: dict[tuple[str, str, str, int, str | None], dict[str, float]] = defaultdict(dict)
    with open(csv_path, newline="") as handle:
        for row in csv.DictReader(handle):
            ident = (row["table"], row["base_model"], row["method"], int(row["retention_pct"]),
                     _task(row["benchmark"]))
            if row["benchmark"] in groups[ident]:
                raise ValueError(f"duplicate paper cell {ident} {row['benchmark']}")
            groups[ident][row["benchmark"]] = float(row["score"])
    records = []
    for (table, base_model, paper_method, pct, task), metrics in groups.items():
        if base_model not in PAPER_MODELS:
            raise ValueError(f"unknown base model {base_model!r}; add it to PAPER_MODELS")
        model = PAPER_MODELS[base_model]
        name, params = _method(paper_method)
        settings = {
            "model": {"name": base_model, "pretrained": model["pretrained"], "dtype": None,
                      "max_frames_num": 32, "video_newline": False, "llm": dict(model["llm"])},
            "compressor": {"name": name, "params": params},
            "retention": None if name == "none" else pct / 100,
            "task": task,
            "limit": None,
            "seed": None,
        }
        versions = {"lmms-eval": None, "transformers": None, "torch": None, "git_commit": None,
                    "paper": PAPER, "table": table}
        key = run_key(settings, versions)
        records.append({
            "schema_version": SCHEMA_VERSION,
            "key": key,
            "source": "paper",
            "status": "finished",
            "error": None,
            "settings": settings,
            "versions": versions,
            "started_at": None, "finished_at": None, "duration_s": None,
            "metrics": {col: {"value": value, "stderr": None} for col, value in metrics.items()},
            "samples": {"count": None, "failed": None, "failures": []},
            "retention": {"target": pct / 100, "mean": None, "min": None, "max": None},
            "tokens": {"visual_mean": None, "fed_mean": None},
            "flops": {"prefill_mean": None, "prefill_ratio_mean": None,
                      "convention": _FLOPS_CONVENTION},
            "timings": {},
            "peak_memory_bytes": None,
        })
    keys = [r["key"] for r in records]
    if len(set(keys)) != len(keys):
        raise ValueError("two paper records share a key; the conversion lost a distinction")
    return records


def write_reference(output_dir: str | os.PathLike[str] = REFERENCE_DIR,
                    csv_path: str | os.PathLike[str] = DEFAULT_CSV) -> list[Path]:
    """Write the converted records to `output_dir/<key>.json`; remove records no longer made."""
    store = ResultsStore(output_dir)
    records = convert(csv_path)
    paths = []
    for record in records:
        body = {k: v for k, v in record.items() if k not in ("schema_version", "key")}
        paths.append(store.write(record["key"], body))
    keep = {p.name for p in paths}
    for stale in Path(output_dir).glob("*.json"):
        if stale.name not in keep:
            stale.unlink()
    return paths

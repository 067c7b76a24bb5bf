"""Six papers' published numbers as results-schema records (`source: "paper"`), in
`results/reference/`.

The papers' tables are hand-transcribed CSVs in `results/papers/` (a copy of
`../shared/reference/`; schema and caveats in its README): LLaVA-Scissor, FastVID, HoliTom,
VidCom2, FlashVID and DyCoke. `convert` turns one paper's CSV into one record per (table, base
model, method, retention, lmms-eval task), the way docs/results_schema.md describes paper rows:

- `settings.model`: the paper's base model name, with the checkpoint it was released as and its
  LLM dimensions (`BASE_MODELS`, for FLOPs) and the frame count the paper's note states;
  `settings.compressor.name`: our registry name where the paper's method is the one we run
  (`Paper.methods`), else the paper's own name (`PDrop`, `FlashVID`, `HoliTom` with its in-LLM
  merge, ...); `settings.retention` and `retention.target`: the paper's retention_pct / 100 (null
  for the full model, as for our `none`, and where the paper prints none).
- `settings.task`: the lmms-eval task of the benchmark (`PAPER_TASKS`); columns that average over
  several benchmarks (`Avg`, `Avg_rel_pct`, ...) and FLOPs columns have task null.
- `metrics`: the paper's column names, `{"value": score, "stderr": null}`.
- `versions`: the code versions are unknown (null); `paper` and `table` name the source, so the
  same method and retention in two tables are two records.
- `reference`: the paper's name, arXiv id, table, the paper's own method and base-model names,
  the retention as printed and what the paper means by retention, the CSV file, its source and
  the note of every cell (`notes`: column -> note).
- the key is `records.store.run_key(settings, versions)`, as for our runs.

`write_reference` writes all six (and removes stale records); `scissorbench reference` runs it.
"""

from __future__ import annotations

import csv
import os
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from records.store import SCHEMA_VERSION, ResultsStore, run_key

__all__ = [
    "BASE_MODELS",
    "DEFAULT_CSV",
    "PAPER",
    "PAPERS",
    "PAPERS_DIR",
    "PAPER_METHODS",
    "PAPER_MODELS",
    "PAPER_TASKS",
    "REFERENCE_DIR",
    "Paper",
    "backbone_of",
    "convert",
    "convert_all",
    "our_model_of",
    "paper_model_of",
    "write_reference",
]

_ROOT = Path(__file__).resolve().parents[1]
PAPERS_DIR = _ROOT / "results" / "papers"
REFERENCE_DIR = _ROOT / "results" / "reference"


@dataclass(frozen=True)
class Paper:
    """One paper whose tables are reference records: where its CSV is and how to read it."""

    id: str  # short name, as in `scissorbench reference papers=...`
    name: str  # the paper's method name
    arxiv: str  # `versions.paper` of its records
    csv: str  # file in results/papers/
    venue: str
    code: str | None  # the official repository
    retention: str  # what the paper means by retention (results/papers/README.md, Caveats)
    # paper method -> (our registry name, the parameters the paper states); a method not here
    # keeps the paper's name. The dense model's rows (note "dense model...") become `none`.
    methods: Mapping[str, tuple[str, dict[str, Any]]] = field(default_factory=dict)
    dense: tuple[str, ...] = ("Vanilla",)  # the paper's labels of the uncompressed model
    frames: int | None = None  # frame count where the notes state none


def _m(name: str, **params: Any) -> tuple[str, dict[str, Any]]:
    return name, params


PAPERS: dict[str, Paper] = {p.id: p for p in (
    Paper(
        "scissor", "LLaVA-Scissor", "arXiv:2506.21862v1", "llava_scissor_arxiv2506.21862v1.csv",
        "arXiv 2025", "HumanMLLM/LLaVA-Scissor",
        "share of visual tokens entering the LLM (retention ratio of the compressed sequence)",
        {"LLaVA-Scissor": _m("scc"), "SCC+Merge (LLaVA-Scissor)": _m("scc"),
         "FastV": _m("fastv", layer=3), "VisionZip": _m("visionzip"), "PLLaVA": _m("pllava"),
         "Random+Merge": _m("random", merge=True), "Uniform+Merge": _m("uniform", merge=True),
         "L2Norm+Merge": _m("l2norm", merge=True)},
        dense=(), frames=32),
    Paper(
        "fastvid", "FastVID", "arXiv:2503.11187", "fastvid_arxiv2503.11187.csv", "NeurIPS 2025",
        "LunarShen/FastVID",
        "share of video tokens entering the LLM; A%/B% for in-LLM pruning (the last stage kept)",
        # FastVID's VisionZip* prunes after LLaVA-OV's pooling, as ours does; its VisionZip
        # prunes before the pooling, which we do not run. Its PruneVID* is PruneVid's input
        # stage, as ours; its PruneVID adds the pruning at LLM layer 10.
        {"FastVID": _m("fastvid"), "VisionZip*": _m("visionzip"), "DyCoke": _m("dycoke"),
         "PruneVID*": _m("prunevid"), "FastV": _m("fastv")}),
    Paper(
        "holitom", "HoliTom", "arXiv:2505.21334", "holitom_arxiv2505.21334.csv", "NeurIPS 2025",
        "cokeshao/HoliTom",
        "share of video tokens entering the LLM (FastV and PDrop at the FLOPs-matched block)",
        # ours is HoliTom's pre-LLM stage only, the paper's "w/o M" row
        {"HoliTom (w/o M)": _m("holitom"), "VisionZip": _m("visionzip"),
         "PruneVid": _m("prunevid"), "DyCoke": _m("dycoke"), "FastVID": _m("fastvid"),
         "FastV": _m("fastv")}),
    Paper(
        "vidcom2", "VidCom2", "arXiv:2505.14454", "vidcom2_arxiv2505.14454.csv", "EMNLP 2025",
        "xuyang-liu16/VidCom2",
        "equivalent retention ratio: visual tokens averaged over all LLM layers",
        {"VidCom2": _m("vidcom2"), "VisionZip": _m("visionzip"), "DyCoke": _m("dycoke"),
         "FastVID": _m("fastvid"), "FastV": _m("fastv"), "Random": _m("random")},
        dense=("Upper Bound",)),
    Paper(
        "flashvid", "FlashVID", "arXiv:2602.08024", "flashvid_arxiv2602.08024.csv", "ICLR 2026",
        "Fanziyang-v/FlashVID",
        "R: the average visual-token budget per LLM layer (FlashVID keeps 1.25R before the LLM "
        "and prunes at layer 20)",
        # FlashVID's PruneVID prunes before the LLM and inside it (layer 10): not ours
        {"VisionZip": _m("visionzip"), "FastVID": _m("fastvid"), "FastV": _m("fastv")}),
    Paper(
        "dycoke", "DyCoke", "arXiv:2411.15024", "dycoke_arxiv2411.15024.csv", "CVPR 2025",
        "KD-TAO/DyCoke",
        "retained ratio (final), including the decode-time KV pruning; the pre-LLM share is "
        "about 77.5/62.5/47.5% for K=0.3/0.5/0.7",
        {"FastV": _m("fastv")},
        dense=("Full Tokens",)),
)}

# Kept names of the Scissor-only API (reporting.tables' paper layouts).
PAPER = PAPERS["scissor"].arxiv
DEFAULT_CSV = PAPERS_DIR / PAPERS["scissor"].csv
PAPER_METHODS = PAPERS["scissor"].methods

_QWEN2_7B = {"layers": 28, "hidden": 3584, "ffn": 18944}
# Each paper's base model: the checkpoint it was released as, our model config of that
# checkpoint (None where we have none) and the LLM dimensions (for analytic FLOPs; None for a
# mixture of experts, whose FLOPs the dense formula does not give).
BASE_MODELS: dict[str, dict[str, Any]] = {
    "LLaVA-OV-7B-enhanced": {"config": "llava_scissor_baseline_7b",
                             "pretrained": "BBBBCHAN/LLaVA-Scissor-baseline-7B",
                             "llm": _QWEN2_7B, "backbone": "LLaVA-OV-7B-enhanced"},
    "LLaVA-OV-0.5B-enhanced": {"config": "llava_scissor_baseline_0.5b",
                               "pretrained": "BBBBCHAN/LLaVA-Scissor-baseline-0.5B",
                               "llm": {"layers": 24, "hidden": 896, "ffn": 4864},
                               "backbone": "LLaVA-OV-0.5B-enhanced"},
    "LLaVA-OV-0.5B": {"config": "llava_ov_0.5b",
                      "pretrained": "lmms-lab/llava-onevision-qwen2-0.5b-ov",
                      "llm": {"layers": 24, "hidden": 896, "ffn": 4864}},
    "LLaVA-OV-7B": {"config": "llava_ov_7b", "pretrained": "lmms-lab/llava-onevision-qwen2-7b-ov",
                    "llm": _QWEN2_7B},
    "LLaVA-OV-72B": {"config": "llava_ov_72b",
                     "pretrained": "lmms-lab/llava-onevision-qwen2-72b-ov-sft",
                     "llm": {"layers": 80, "hidden": 8192, "ffn": 29568}},
    "LLaVA-Video-7B": {"config": "llava_video_7b", "pretrained": "lmms-lab/LLaVA-Video-7B-Qwen2",
                       "llm": _QWEN2_7B},
    "Qwen2-VL-7B": {"config": None, "pretrained": "Qwen/Qwen2-VL-7B-Instruct", "llm": _QWEN2_7B},
    "Qwen2.5-VL-7B": {"config": "qwen2_5_vl_7b", "pretrained": "Qwen/Qwen2.5-VL-7B-Instruct",
                      "llm": _QWEN2_7B},
    "Qwen3-VL-8B": {"config": "qwen3_vl_8b", "pretrained": "Qwen/Qwen3-VL-8B-Instruct",
                    "llm": {"layers": 36, "hidden": 4096, "ffn": 12288}},
    "Qwen3-VL-32B": {"config": None, "pretrained": "Qwen/Qwen3-VL-32B-Instruct",
                     "llm": {"layers": 64, "hidden": 5120, "ffn": 25600}},
    "Qwen3-VL-30B-A3B": {"config": None, "pretrained": "Qwen/Qwen3-VL-30B-A3B-Instruct",
                         "llm": None},
}
PAPER_MODELS = {k: v for k, v in BASE_MODELS.items() if k.endswith("-enhanced")}

# The benchmark part of a paper column (before the first "_") -> lmms-eval task; a column in
# `_TASK_OF_COLUMN` overrides it.
PAPER_TASKS = {
    "MVBench": "mvbench", "EgoSchema": "egoschema", "MLVU": "mlvu_dev", "VideoMME": "videomme",
    "VideoMMMU": "video_mmmu", "NextQA": "nextqa_mc_test", "ActivityNet-QA": "activitynetqa",
    "ActivityNet": "activitynetqa", "VideoChatGPT": "videochatgpt",
    "LongVideoBench": "longvideobench_val_v", "PerceptionTest": "perceptiontest_val_mc",
    "VideoDC": "video_dc499",
}
_TASK_OF_COLUMN = {"EgoSchema_subset": "egoschema_subset", "VideoMME_wsubs": "videomme_w_subtitle"}
_AGGREGATES = {"avg_relative_pct", "avg_rel", "avg_perf_ratio_pct", "FLOPs_TFLOPs",
               "FLOPs_ratio_pct", "Avg", "Avg_rel_pct", "VideoMME_rel_pct"}
_FLOPS_CONVENTION = (
    "as printed by the paper, each its own way (see the cell's note); not comparable across "
    "papers. The LLaVA-Scissor Table 5 counts FastV's 4nd^2 + 2n^2d + 2ndm per layer plus the "
    "decode of 100 tokens, visual tokens only"
)
_FRAMES = re.compile(r"\b(\d+) frames\b")


def paper_model_of(model: str) -> str | None:
    """The LLaVA-Scissor paper's base model run from our model config `model` (None if none)."""
    return next((p for p, m in PAPER_MODELS.items() if m["config"] == model), None)


def our_model_of(paper_model: str) -> str | None:
    """Our model config of a paper's base model (None where we have none)."""
    entry = BASE_MODELS.get(paper_model)
    return None if entry is None else entry["config"]


def backbone_of(model: str) -> str:
    """The backbone name a model is shown under: a paper's base-model name for a paper model or
    our config of one (`llava_ov_7b` -> `LLaVA-OV-7B`), else the name itself (`micro`)."""
    if model in BASE_MODELS:
        return model
    return next((name for name, m in BASE_MODELS.items()
                 if m["config"] == model and not name.endswith("-enhanced")), model)


def _task(column: str) -> str | None:
    if column in _AGGREGATES:
        return None
    task = _TASK_OF_COLUMN.get(column) or PAPER_TASKS.get(column.split("_")[0])
    if task is None:
        raise ValueError(f"paper column {column!r} names no known benchmark; add it to "
                         "reporting.reference.PAPER_TASKS")
    return task


def _method(paper: Paper, row: Mapping[str, str]) -> tuple[str, dict[str, Any]]:
    label = row["method"]
    note = row.get("note") or ""
    if label.endswith("(full)") or label in paper.dense or note.startswith("dense model"):
        return "none", {}
    name, params = paper.methods.get(label, (label, {}))
    return name, dict(params)


def _frames(paper: Paper, note: str) -> int | None:
    found = _FRAMES.search(note)
    return int(found.group(1)) if found else paper.frames


def _table_frames(paper: Paper, rows: list[dict[str, str]]) -> dict[tuple[str, str], int]:
    """(table, base model) -> its frame count, where the notes that state one agree (a note
    often states it on the dense row only); a table whose rows differ keeps each row's own."""
    stated: dict[tuple[str, str], set[int]] = defaultdict(set)
    for row in rows:
        found = _FRAMES.search(row.get("note") or "")
        if found:
            stated[(row["table"], row["base_model"])].add(int(found.group(1)))
    return {ident: next(iter(counts)) for ident, counts in stated.items() if len(counts) == 1}


def _retention(text: str) -> float | None:
    return float(text) / 100 if text.strip() else None


def convert(paper: Paper | str = "scissor", csv_path: str | os.PathLike[str] | None = None
            ) -> list[dict[str, Any]]:
    """One paper's CSV (default: its file in results/papers/) as complete schema records (with
    `schema_version` and `key`)."""
    paper = PAPERS[paper] if isinstance(paper, str) else paper
    path = Path(csv_path) if csv_path is not None else PAPERS_DIR / paper.csv
    groups: dict[tuple, dict[str, Any]] = {}
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    frames = _table_frames(paper, rows)
    for row in rows:
        note = row.get("note") or ""
        name, params = _method(paper, row)
        ident = (row["table"], row["base_model"], row["method"], row["retention_pct"].strip(),
                 _task(row["benchmark"]),
                 frames.get((row["table"], row["base_model"])) or _frames(paper, note))
        group = groups.setdefault(ident, {"metrics": {}, "notes": {}, "sources": set(),
                                          "name": name, "params": params})
        if row["benchmark"] in group["metrics"]:
            raise ValueError(f"{path.name}: duplicate paper cell {ident} {row['benchmark']}")
        group["metrics"][row["benchmark"]] = float(row["score"])
        if note:
            group["notes"][row["benchmark"]] = note
        if row.get("source"):
            group["sources"].add(row["source"])
    records = [_record(paper, path, ident, group) for ident, group in groups.items()]
    keys = [r["key"] for r in records]
    if len(set(keys)) != len(keys):
        raise ValueError(f"{path.name}: two paper records share a key; the conversion lost a "
                         "distinction")
    return records


def _record(paper: Paper, path: Path, ident: tuple, group: dict[str, Any]) -> dict[str, Any]:
    table, base_model, paper_method, printed, task, frames = ident
    if base_model not in BASE_MODELS:
        raise ValueError(f"{path.name}: unknown base model {base_model!r}; add it to "
                         "reporting.reference.BASE_MODELS")
    model = BASE_MODELS[base_model]
    name = group["name"]
    target = _retention(printed)
    settings = {
        "model": {"name": base_model, "pretrained": model["pretrained"], "dtype": None,
                  "max_frames_num": frames, "video_newline": False,
                  "llm": None if model["llm"] is None else dict(model["llm"])},
        "compressor": {"name": name, "params": group["params"]},
        "retention": None if name == "none" else target,
        "task": task,
        "limit": None,
        "seed": None,
    }
    versions = {"lmms-eval": None, "transformers": None, "torch": None, "git_commit": None,
                "paper": paper.arxiv, "table": table}
    return {
        "schema_version": SCHEMA_VERSION,
        "key": run_key(settings, versions),
        "source": "paper",
        "status": "finished",
        "error": None,
        "settings": settings,
        "versions": versions,
        "reference": {
            "paper": paper.name, "arxiv": paper.arxiv, "venue": paper.venue, "table": table,
            "code": paper.code, "paper_model": base_model, "paper_method": paper_method,
            "retention_printed": printed or None, "retention_definition": paper.retention,
            "file": paper.csv, "source": "; ".join(sorted(group["sources"])) or None,
            "notes": dict(group["notes"]),
        },
        "started_at": None, "finished_at": None, "duration_s": None,
        "metrics": {col: {"value": value, "stderr": None}
                    for col, value in group["metrics"].items()},
        "samples": {"count": None, "failed": None, "failures": []},
        "retention": {"target": target, "mean": None, "min": None, "max": None},
        "tokens": {"visual_mean": None, "fed_mean": None},
        "flops": {"prefill_mean": None, "prefill_ratio_mean": None,
                  "convention": _FLOPS_CONVENTION},
        "timings": {},
        "peak_memory_bytes": None,
    }


def convert_all(papers: Iterable[str] | None = None,
                papers_dir: str | os.PathLike[str] = PAPERS_DIR) -> list[dict[str, Any]]:
    """The records of every paper in `papers` (default: all six), from `papers_dir`."""
    chosen = list(PAPERS) if papers is None else list(papers)
    unknown = [p for p in chosen if p not in PAPERS]
    if unknown:
        raise ValueError(f"unknown paper {unknown[0]!r}; choose from {sorted(PAPERS)}")
    records: list[dict[str, Any]] = []
    for paper in chosen:
        records += convert(paper, Path(papers_dir) / PAPERS[paper].csv)
    keys = [r["key"] for r in records]
    if len(set(keys)) != len(keys):
        raise ValueError("two papers' records share a key")
    return records


def write_reference(output_dir: str | os.PathLike[str] = REFERENCE_DIR,
                    papers_dir: str | os.PathLike[str] = PAPERS_DIR,
                    papers: Iterable[str] | None = None) -> list[Path]:
    """Write the papers' records to `output_dir/<key>.json`; remove records no longer made."""
    store = ResultsStore(output_dir)
    paths = []
    for record in convert_all(papers, papers_dir):
        body = {k: v for k, v in record.items() if k not in ("schema_version", "key")}
        paths.append(store.write(record["key"], body))
    keep = {p.name for p in paths}
    for stale in Path(output_dir).glob("*.json"):
        if stale.name not in keep:
            stale.unlink()
    return paths


def per_paper(records: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """How many records each paper has (for the CLI's summary line)."""
    counts: dict[str, int] = defaultdict(int)
    for record in records:
        counts[(record.get("reference") or {}).get("paper") or "?"] += 1
    return dict(counts)

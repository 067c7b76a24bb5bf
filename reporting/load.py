"""Read results-schema records (docs/results_schema.md) into one tidy frame.

One row per (record, metric); a record without metrics (a failed run) still gives one row, with
`metric` and `value` missing, so failures stay visible. Nothing is filled in: a value the record
does not have is missing (NaN/None) in the frame, never 0.

`target_retention` is the record's target; `retention`, the x of every table and figure, is the
target, 1.0 for the full model (`none`), and the achieved mean in SCC's threshold mode (no
target), rounded to 4 decimals. `label` is the method, with the differing parameters appended
(`random[merge=true]`) where one source has a method with several parameter sets. `table` is the
paper's table for `source: "paper"` records (`versions.table`), else missing, and `paper` the
paper's name (`reference.paper`). `positions` is our model's position policy (null: the
backbone's default); where a frame holds one model under several policies, `model` names the
policy, `micro (contiguous)`, so no table averages over two settings. `lmms_eval`,
`transformers`, `torch`, `git_commit` and `lock` are what ran (`versions`).

Any file can be in a results folder: one that is not a readable schema-1 record is skipped, two
files of one key give one record (`records.store.deduplicate`), and a metric that is inf or nan
is missing; each is named in a warning (logger "scissorbench.report" / "scissorbench.records")
and counted by `read_folders`, whose `Loaded.summary` the report prints.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from records.schema import nonfinite_metrics
from records.store import ResultsStore, deduplicate

__all__ = ["COLUMNS", "Loaded", "canonical_params", "load_records", "read_folders",
           "records_frame", "results_folders"]

log = logging.getLogger("scissorbench.report")

COLUMNS = [
    "key", "source", "status", "ok", "error", "paper", "table", "paper_method", "model",
    "positions", "method", "fidelity",
    "official_code", "params", "label", "seed", "limit", "target_retention", "retention",
    "achieved_retention_mean",
    "achieved_retention_min", "achieved_retention_max", "task", "metric", "value", "stderr",
    "prefill_flops", "flops_ratio", "tokens_visual", "tokens_fed", "samples", "failed",
    "peak_memory_bytes", "llm_layers", "llm_hidden", "llm_ffn", "max_frames", "duration_s",
    "started_at", "lmms_eval", "transformers", "torch", "git_commit", "lock", "path",
]
"""Fixed columns; timing columns (`timing_<name>`, per-sample means in seconds) follow them."""


def canonical_params(params: Mapping[str, Any] | None) -> str:
    """Compressor parameters as a canonical JSON string (sorted keys, no spaces)."""
    return json.dumps(dict(params or {}), sort_keys=True, separators=(",", ":"))


@dataclass
class Loaded:
    """What `read_folders` read: the records kept (with their files) and what it left out."""

    records: list[tuple[dict[str, Any], Path]] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)  # (file, why)
    duplicates: list[Path] = field(default_factory=list)  # copies of a key not used

    @property
    def files(self) -> int:
        """How many `*.json` files were read."""
        return len(self.records) + len(self.skipped) + len(self.duplicates)

    @property
    def nonfinite(self) -> list[tuple[str, str]]:
        """(key, metric) of every inf/nan metric, shown as missing."""
        return [(r["key"], m) for r, _ in self.records for m in nonfinite_metrics(r)]

    def summary(self) -> str:
        """One line: files read, records used, files skipped and why, copies, inf/nan."""
        why = Counter(reason.split(" (")[0] for _, reason in self.skipped)  # detail: warnings
        reasons = "; ".join(f"{n} {reason}" for reason, n in why.most_common(5))
        more = "; ..." if len(why) > 5 else ""
        parts = [f"read {self.files} files: {len(self.records)} records",
                 f"{len(self.skipped)} skipped" + (f" ({reasons}{more})" if reasons else "")]
        if self.duplicates:
            parts.append(f"{len(self.duplicates)} duplicate copies of a key ignored")
        if self.nonfinite:
            parts.append(f"{len(self.nonfinite)} inf/nan metric values shown as missing")
        return ", ".join(parts)


def results_folders(roots: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """The results folders under each root: the root if it holds records, else every folder
    below it that does (`results/demo` -> its `<model>/<policy>/runs`); hidden folders
    (`.features`, `.samples`, ...) are not results."""
    found: list[Path] = []
    for root in map(Path, roots):
        if not root.is_dir():
            raise FileNotFoundError(f"results folder not found: {root}")
        if any(root.glob("*.json")):
            found.append(root)
            continue
        below = sorted({p.parent for p in root.rglob("*.json")
                        if not any(part.startswith(".") for part in p.relative_to(root).parts)})
        found += below
    return found


def read_folders(*dirs: str | os.PathLike[str]) -> Loaded:
    """The records of the given results folders, one per key over all of them.

    A file that is not a readable schema-1 record is skipped and a second file of a key is
    ignored (`records.store`, each with a warning), so one bad file never stops a report; a
    folder that does not exist is an error, so a mistyped path does not pass as "no results".
    """
    found, skipped = [], []
    for folder in dirs:
        root = Path(folder)
        if not root.is_dir():
            raise FileNotFoundError(f"results folder not found: {root}")
        scan = ResultsStore(root).scan()
        found += scan.records
        skipped += scan.skipped
    kept, dropped = deduplicate(found)
    return Loaded([(record, path) for path, record in kept], skipped, dropped)


def load_records(*dirs: str | os.PathLike[str]) -> pd.DataFrame:
    """Every record in the given results folders (`<dir>/<key>.json`) as a tidy frame
    (`read_folders`: bad files skipped, one record per key, inf/nan metrics missing)."""
    return records_frame(read_folders(*dirs).records)


def records_frame(records: Iterable[Mapping[str, Any] | tuple[Mapping[str, Any], Path]]
                  ) -> pd.DataFrame:
    """The tidy frame of records given as dicts (or (dict, path) pairs)."""
    rows: list[dict[str, Any]] = []
    for item in records:
        record, path = item if isinstance(item, tuple) else (item, None)
        rows += _rows(record, path)
    df = pd.DataFrame(rows)
    timing = sorted(c for c in df.columns if c.startswith("timing_"))
    df = df.reindex(columns=COLUMNS + timing)
    for col in ("value", "stderr", "target_retention", "retention", "prefill_flops",
                "flops_ratio", "achieved_retention_mean", "achieved_retention_min",
                "achieved_retention_max", "tokens_visual", "tokens_fed", *timing):
        number = pd.to_numeric(df[col], errors="coerce").astype(float)
        df[col] = number.where(number.abs() != math.inf)  # inf is no number to show
    for col in ("seed", "limit", "samples", "failed", "peak_memory_bytes", "llm_layers",
                "llm_hidden", "llm_ffn", "max_frames"):
        df[col] = pd.to_numeric(df[col], errors="coerce").astype("Int64")
    df["model"] = _models(df)
    df["label"] = _labels(df)
    return df


def _models(df: pd.DataFrame) -> pd.Series:
    """`model`, with ` (<policy>)` appended to our runs of a model that the frame holds under
    more than one position policy (an explicit `original` or `contiguous` beside each other or
    beside the backbone's default, null): each policy is its own model in every table."""
    models = df["model"].astype(object).copy()
    ours = df[(df["source"] == "ours") & df["model"].notna()]
    for model, group in ours.groupby("model"):
        policy = group["positions"]
        if policy.fillna("").nunique() < 2:
            continue
        named = group.index[policy.notna()]
        models.loc[named] = [f"{model} ({p})" for p in policy.loc[named]]
    return models


def _get(mapping: Any, *path: str) -> Any:
    for name in path:
        if not isinstance(mapping, Mapping):
            return None
        mapping = mapping.get(name)
    return mapping


def _official_code(provenance: Any) -> str | None:
    """"owner/name@commit8" of a record's provenance; None when it names no official code."""
    if not isinstance(provenance, Mapping) or not provenance.get("repo"):
        return None
    return f"{provenance['repo']}@{str(provenance.get('commit', ''))[:8]}"


def _rows(record: Mapping[str, Any], path: Path | None) -> list[dict[str, Any]]:
    settings = record.get("settings") or {}
    method = _get(settings, "compressor", "name")
    target = _get(record, "retention", "target")
    if target is None:
        target = settings.get("retention")
    achieved = _get(record, "retention", "mean")
    if target is not None:
        retention = target
    elif method == "none":
        retention = 1.0  # the full model
    else:
        retention = achieved  # threshold mode: the count emerged per video
    base = {
        "key": record.get("key"),
        "source": record.get("source"),
        "status": record.get("status"),
        "ok": record.get("status") == "finished",
        "error": record.get("error"),
        "paper": _get(record, "reference", "paper"),
        "paper_method": _get(record, "reference", "paper_method"),
        "table": _get(record, "versions", "table"),
        "model": _get(settings, "model", "name"),
        "positions": _get(settings, "model", "positions"),
        "method": method,
        "fidelity": _get(record, "provenance", "fidelity"),
        "official_code": _official_code(record.get("provenance")),
        "params": canonical_params(_get(settings, "compressor", "params")),
        "seed": settings.get("seed"),
        "limit": settings.get("limit"),
        "target_retention": target,
        "retention": None if retention is None else round(float(retention), 4),
        "achieved_retention_mean": achieved,
        "achieved_retention_min": _get(record, "retention", "min"),
        "achieved_retention_max": _get(record, "retention", "max"),
        "task": settings.get("task"),
        "prefill_flops": _get(record, "flops", "prefill_mean"),
        "flops_ratio": _get(record, "flops", "prefill_ratio_mean"),
        "tokens_visual": _get(record, "tokens", "visual_mean"),
        "tokens_fed": _get(record, "tokens", "fed_mean"),
        "samples": _get(record, "samples", "count"),
        "failed": _get(record, "samples", "failed"),
        "peak_memory_bytes": record.get("peak_memory_bytes"),
        "llm_layers": _get(settings, "model", "llm", "layers"),
        "llm_hidden": _get(settings, "model", "llm", "hidden"),
        "llm_ffn": _get(settings, "model", "llm", "ffn"),
        "max_frames": _get(settings, "model", "max_frames_num"),
        "duration_s": record.get("duration_s"),
        "started_at": record.get("started_at"),
        "lmms_eval": _get(record, "versions", "lmms-eval"),
        "transformers": _get(record, "versions", "transformers"),
        "torch": _get(record, "versions", "torch"),
        "git_commit": _get(record, "versions", "git_commit"),
        "lock": _get(record, "versions", "lock"),
        "path": None if path is None else str(path),
    }
    for name, value in (record.get("timings") or {}).items():
        base[f"timing_{name}"] = value
    metrics = record.get("metrics") or {}
    if not metrics:
        return [{**base, "metric": None, "value": None, "stderr": None}]
    _warn_nonfinite(record, path)
    return [
        {**base, "metric": name, "value": _finite(_get(m, "value")),
         "stderr": _finite(_get(m, "stderr"))}
        for name, m in metrics.items()
    ]


def _finite(value: Any) -> Any:
    """`value`, or None for inf, -inf and nan (shown as missing, never as "inf")."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


def _warn_nonfinite(record: Mapping[str, Any], path: Path | None) -> None:
    names = nonfinite_metrics(record)
    if names:
        where = f" ({path})" if path else ""
        log.warning("record %s%s: metric %s is inf or nan; shown as missing",
                    record.get("key"), where, ", ".join(names))


def _labels(df: pd.DataFrame) -> pd.Series:
    """`method`, or `method[k=v,...]` naming the parameters that differ where a source holds
    one method with several parameter sets."""
    labels = df["method"].astype(object).copy()
    if df.empty:
        return labels
    for (_source, method), group in df.groupby(["source", "method"], dropna=True):
        variants = sorted(group["params"].unique())
        if len(variants) < 2:
            continue
        parsed = {v: json.loads(v) for v in variants}
        keys = sorted({k for p in parsed.values() for k in p})
        differ = [k for k in keys if len({json.dumps(p.get(k)) for p in parsed.values()}) > 1]
        for variant, p in parsed.items():
            text = ",".join(f"{k}={json.dumps(p.get(k))}" for k in differ)
            labels.loc[group.index[group["params"] == variant]] = f"{method}[{text}]"
    return labels

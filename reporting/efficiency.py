"""Efficiency tables: what a method saves in FLOPs, time and memory, measured one way.

One table per model from our own records only (`source == "ours"`: the papers' FLOPs and
latencies come from other conventions and machines and are not comparable), laid out like
VidCom2's efficiency table (Table 4: method, retention, prefill time, total latency / TTFT,
peak memory, speedup) and FlashVID's Table 6 (tokens, TFLOPs, prefill latency, speedup).
Rows are method x retention, the full model (`none`) first, then the methods in the paper's
order (`tables.method_order`), retentions from high to low. Per row, over the finished runs of
that (label, retention) (every task and seed; `runs` says how many):

- tokens fed: visual tokens the LLM receives at layer 0 (mean; FastV feeds all N_v);
- prefill TFLOPs, FLOPs %: the records' prefill FLOPs (mean, FastV convention, text included)
  and their ratio to the uncompressed model (mean of the per-run ratios);
- video decode / vision / compress / prefill / decode / TTFT s: the per-sample mean seconds
  of each stage (mean over runs; TTFT is measured, `harness.lmms_model`, not summed here);
- peak memory GiB: the largest of the runs' peaks;
- prefill speedup: the full model's prefill seconds / this row's (measured; 1 on the full
  model), beside the predicted speedup 1 / FLOPs ratio.

A value no run recorded stays missing (NaN), never 0; so does a speedup without a full-model
row. Runs of one row should cover the same tasks as the full model's, or the speedup compares
different videos.
"""

from __future__ import annotations

import math

import pandas as pd

from reporting.tables import method_order, pct, to_markdown

__all__ = ["EFFICIENCY_COLUMNS", "efficiency_markdown", "efficiency_tables"]

_STAGES = {"video decode s": "video_decode", "vision s": "vision", "compress s": "compress",
           "prefill s": "prefill", "decode s": "decode", "TTFT s": "ttft"}
"""Table column -> timing name (the frame's `timing_<name>_s`, per-sample means)."""

EFFICIENCY_COLUMNS = ["method", "retention", "runs", "tokens fed", "prefill TFLOPs",
                      "FLOPs %", *_STAGES, "peak memory GiB", "prefill speedup",
                      "predicted speedup"]

_DECIMALS = {"tokens fed": 0, "prefill TFLOPs": 2, "FLOPs %": 1, **dict.fromkeys(_STAGES, 4),
             "peak memory GiB": 2, "prefill speedup": 2, "predicted speedup": 2}
"""Decimals of each number column in `efficiency_markdown`."""


def efficiency_tables(frame: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """{model: efficiency table} from the tidy frame of `reporting.load.records_frame`, one
    row per (method label, retention) of our finished runs (module docstring), the columns
    `EFFICIENCY_COLUMNS`; models sorted (a model under two position policies is two models,
    `records_frame`'s `micro (contiguous)`)."""
    runs = _runs(frame)
    return {str(model): _table(group) for model, group in runs.groupby("model", sort=True)}


def _runs(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per finished run of ours: the frame has one per (record, metric), and a
    record's rows differ only in the metric's name, value and stderr."""
    ours = frame[(frame["source"] == "ours") & frame["ok"].fillna(False).astype(bool)]
    ours = ours.drop(columns=["metric", "value", "stderr"]).drop_duplicates()
    return ours[ours["model"].notna()]


def _timing(runs: pd.DataFrame, name: str) -> pd.Series:
    """The per-sample mean seconds of stage `name` per run; NaN where it was not recorded."""
    column = f"timing_{name}_s"
    if column not in runs.columns:
        return pd.Series(math.nan, index=runs.index, dtype=float)
    return pd.to_numeric(runs[column], errors="coerce").astype(float)


def _table(runs: pd.DataFrame) -> pd.DataFrame:
    """The efficiency table of one model's runs (module docstring)."""
    values = pd.DataFrame({
        "method": runs["label"], "retention": runs["retention"].astype(float),
        "tokens fed": runs["tokens_fed"].astype(float),
        "prefill TFLOPs": runs["prefill_flops"].astype(float) / 1e12,
        "FLOPs %": runs["flops_ratio"].astype(float) * 100,
        **{column: _timing(runs, name) for column, name in _STAGES.items()},
        "peak memory GiB": pd.to_numeric(runs["peak_memory_bytes"]).astype(float) / 2**30,
    })
    grouped = values.groupby(["method", "retention"], dropna=False, sort=False)
    means = grouped.mean()  # NaN only where no run of the row has the value
    means["peak memory GiB"] = grouped["peak memory GiB"].max()
    means.insert(0, "runs", grouped.size())
    table = _ordered(means.reset_index(), runs)
    table["prefill speedup"] = _full_prefill(table, runs) / table["prefill s"]
    table["predicted speedup"] = 100 / table["FLOPs %"]
    return table[EFFICIENCY_COLUMNS].reset_index(drop=True)


def _ordered(table: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """Rows with the full model first, then methods in the paper's order (variants of one
    method by label), each from the highest retention down."""
    methods = runs.drop_duplicates("label").set_index("label")["method"]
    rank = {m: i for i, m in enumerate(method_order(["none", *methods]))}
    table = table.assign(
        _method=table["method"].map(methods).map(rank),
        _retention=-table["retention"].fillna(-math.inf),
    )
    table = table.sort_values(["_method", "method", "_retention"], kind="stable")
    return table.drop(columns=["_method", "_retention"])


def _full_prefill(table: pd.DataFrame, runs: pd.DataFrame) -> float:
    """The full model's prefill seconds (its row at retention 1, else its first), NaN if the
    model has no full-model run."""
    labels = set(runs.loc[runs["method"] == "none", "label"])
    full = table[table["method"].isin(labels)]
    if full.empty:
        return math.nan
    at_one = full[full["retention"] == 1.0]
    return float((at_one if not at_one.empty else full)["prefill s"].iloc[0])


def efficiency_markdown(tables: dict[str, pd.DataFrame]) -> str:
    """The tables as Markdown, a `### <model>` heading each; retentions as percentages,
    each number column at its own precision, a missing value as an em dash."""
    parts = []
    for model, table in tables.items():
        parts.append(f"### {model}\n\n{to_markdown(_formatted(table))}")
    return "\n".join(parts)


def _formatted(table: pd.DataFrame) -> pd.DataFrame:
    """Cells as text (None where missing), so that each column keeps its own decimals."""
    out = table.astype(object).copy()
    out["retention"] = [None if pd.isna(r) else pct(float(r)) for r in table["retention"]]
    for column, decimals in _DECIMALS.items():
        out[column] = [None if pd.isna(v) else f"{float(v):.{decimals}f}" for v in table[column]]
    return out

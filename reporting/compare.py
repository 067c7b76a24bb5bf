"""Ours beside every paper that reported the same cell, on the absolute and the relative scale.

A *cell* is (backbone, benchmark, method, retention). Each paper re-ran its own baselines and its
own dense model (LLaVA-OV-7B on MVBench: 56.9, 58.3 or 58.0), so a score is also given relative
to the full model *of the same source*: a paper's cell over that paper's dense row in the same
table (same base model, frame count and benchmark), ours over our `none` run of the same model
config and position policy. Cross-paper comparisons are made on that relative scale.

- `scored`: one row per (entry, backbone, benchmark, method, label, retention), where an entry is
  `ours` or one paper's table: the mean score over seeds, the entry's full-model score, the
  score as % of it, and the analytic prefill FLOPs of the visual tokens (`analytic_prefill`,
  one formula for every source: `reporting.cost.analytic_flops`).
- `paper_vs_ours`: every paper cell that ours also has, as paper / ours / delta and relative
  paper / ours / delta, with what the paper means by retention.
"""

from __future__ import annotations

import pandas as pd

from reporting.cost import analytic_flops
from reporting.reference import PAPERS, backbone_of

__all__ = ["COMPARE_COLUMNS", "SCORED_COLUMNS", "paper_vs_ours", "scored"]

# One full-model score per (entry, model, frames, benchmark).
_ENTRY = ["source", "paper", "table", "model", "positions", "max_frames", "benchmark"]
_CELL = [*_ENTRY, "method", "label", "retention"]
# Per cell, the first row's value (equal over a cell's seeds): what ran, what it cost.
_FIRST = ["analytic_prefill", "prefill_flops", "flops_ratio", "tokens_fed", "fidelity",
          "official_code", "lmms_eval", "transformers", "torch", "git_commit", "lock"]
SCORED_COLUMNS = ["entry", "backbone", *_CELL, "paper_method", "score", "full", "relative",
                  "seeds", "keys", *_FIRST]
COMPARE_COLUMNS = [
    "backbone", "benchmark", "method", "retention", "paper", "table", "paper_method", "ours",
    "paper_score", "ours_score", "delta", "paper_full", "ours_full", "paper_relative",
    "ours_relative", "delta_relative", "paper_frames", "ours_frames", "retention_definition",
    "ours_keys",
]


def _entry(row: pd.Series) -> str:
    return "ours" if row["source"] == "ours" else f"{row['paper']} {row['table']}"


def _backbone(row: pd.Series) -> str:
    """The paper's base-model name of our config (`llava_ov_7b` -> `LLaVA-OV-7B`); a model
    `records_frame` named with its position policy, or without a paper counterpart, as is."""
    return backbone_of(str(row["model"]))


def scored(aligned: pd.DataFrame) -> pd.DataFrame:
    """Mean score over seeds per cell of every entry, with its full-model score and % of it."""
    done = aligned[(aligned["status"] == "finished") & aligned["score"].notna()].copy()
    if done.empty:
        return pd.DataFrame(columns=SCORED_COLUMNS)
    done["analytic_prefill"] = analytic_flops(done)
    first = {c: "first" for c in ["paper_method", *_FIRST] if c in done.columns}
    cells = (done.groupby(_CELL, dropna=False, sort=False)
             .agg(score=("score", "mean"), seeds=("score", "size"),
                  keys=("key", lambda k: ",".join(sorted(set(map(str, k))))), **{
                      c: (c, how) for c, how in first.items()})
             .reset_index())
    full = (cells[cells["method"] == "none"].groupby(_ENTRY, dropna=False)["score"].first()
            .rename("full"))
    cells = cells.merge(full.reset_index(), on=_ENTRY, how="left")
    # a full model scoring 0 gives no relative score (missing, never inf)
    cells["relative"] = 100 * cells["score"] / cells["full"].where(cells["full"] != 0)
    cells["entry"] = cells.apply(_entry, axis=1)
    cells["backbone"] = cells.apply(_backbone, axis=1)
    return cells.reindex(columns=SCORED_COLUMNS)


def paper_vs_ours(cells: pd.DataFrame) -> pd.DataFrame:
    """Every paper cell that ours also ran (same backbone, benchmark, method and retention):
    paper / ours / delta, absolute and relative to each source's own full model."""
    paper = cells[cells["source"] == "paper"]
    ours = cells[cells["source"] == "ours"]
    if paper.empty or ours.empty:
        return pd.DataFrame(columns=COMPARE_COLUMNS)
    on = ["backbone", "benchmark", "method", "retention"]
    both = paper.merge(ours, on=on, suffixes=("_p", "_o"))
    if both.empty:
        return pd.DataFrame(columns=COMPARE_COLUMNS)
    definition = {p.name: p.retention for p in PAPERS.values()}
    out = pd.DataFrame({
        **{c: both[c] for c in on},
        "paper": both["paper_p"], "table": both["table_p"],
        "paper_method": both["paper_method_p"], "ours": both["label_o"],
        "paper_score": both["score_p"], "ours_score": both["score_o"],
        "delta": both["score_o"] - both["score_p"],
        "paper_full": both["full_p"], "ours_full": both["full_o"],
        "paper_relative": both["relative_p"], "ours_relative": both["relative_o"],
        "delta_relative": both["relative_o"] - both["relative_p"],
        "paper_frames": both["max_frames_p"], "ours_frames": both["max_frames_o"],
        "retention_definition": both["paper_p"].map(definition),
        "ours_keys": both["keys_o"],
    })
    return out.sort_values(on + ["paper", "table"]).reset_index(drop=True)

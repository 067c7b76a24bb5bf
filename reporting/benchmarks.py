"""Which lmms-eval task and metric of ours lines up with which column of the paper.

Our records carry lmms-eval's results as `"metric,filter"` keys of the task that ran; the paper's
records (`results/reference/`) carry the paper's column names (`MVBench_AS`, `EgoSchema`, ...).
`BENCHMARKS` names one benchmark per paper column and says where our number for it comes from
and how to bring it to the paper's units (the paper reports percentages, and 0-5 judge scores for
ActivityNet-QA's score and VideoChatGPT). `align` turns a frame of `load_records` into one row per
(run, benchmark) with `score` in the paper's units, for ours and the paper alike.

Verified against lmms-eval 0.7.3 (`lmms_eval/tasks/<dir>/`, metric names from each task YAML's
`metric_list`, scales from the aggregation functions in the same folder's `utils.py`):

- `mvbench/mvbench.yaml`: a *group* of 20 subtasks (`mvbench_action_sequence`, ...), each with
  `mvbench_accuracy`, aggregated by `mvbench_aggregate_results` as `100 * correct / answered`
  (0-100). The group has no `aggregate_metric_list`, so lmms-eval's
  `evaluator_utils.consolidate_group_results` gives the group `mvbench` no metric of its own.
  The paper's MVBench average is the unweighted mean of its 20 subtask columns (Table 3, full
  model: 1248.5 / 20 = 62.425 -> 62.43), so `MVBench` is derived as that mean when no group-level
  number is recorded.
- `videomme/videomme.yaml`: `videomme_perception_score` (`videomme_aggregate_results`,
  `100 * correct / answered`, 0-100).
- `mlvu/mlvu_dev.yaml`: `mlvu_percetion_score` (sic, lmms-eval's spelling), the mean over the 7
  task types of `100 * accuracy` (`mlvu_aggregate_results_dev`, 0-100).
- `egoschema/egoschema.yaml`: `submission`, the grading server's accuracy `* 100`
  (`egoschema_aggregate_mc`, 0-100). `egoschema_subset.yaml`: `score`, `correct / n`
  (`egoschema_aggregate_score`, 0-1); the 500-question subset is not the paper's column and is
  kept as its own benchmark.
- `nextqa/nextqa_mc_test.yaml`: `exact_match`, `aggregation: mean` of booleans (0-1).
- `activitynetqa/activitynetqa_generation.yaml`: `gpt_eval_accuracy` (`accuracy * 100`, 0-100)
  and `gpt_eval_score` (mean integer judge score, 0-5).
- `videochatgpt/_videochatgpt.yaml`: a group of `videochatgpt_gen`
  (`gpt_eval_score_correctness` = CI, `gpt_eval_score_detailed_orientation` = DO,
  `gpt_eval_score_context` = CU), `videochatgpt_temporal` (`gpt_eval_score_temporal` = TU) and
  `videochatgpt_consistency` (`gpt_eval_score_consistency` = CO), each a mean 0-5 judge score;
  no group aggregate. The paper's average is the mean of the five (full model: 3.264 -> 3.26).
- `videommmu/video_mmmu.yaml`: a group of `video_mmmu_adaptation`, `_comprehension`,
  `_perception`, each `mmmu_acc` (`videommmu_aggregate_results`, instance-level accuracy, 0-1);
  no group aggregate. The overall number is the size-weighted mean; the three tracks have 300
  questions each, so the plain mean of the three.
- `longvideobench/longvideobench_val_v.yaml`: `lvb_acc`, the instance-level accuracy
  (`longvideobench_aggregate_results`, 0-1). `perceptiontest/val/perceptiontest_mc.yaml`:
  `accuracy` (`perceptiontest_val_aggregate_accuracy`, correct / n, 0-1).
  `video_detail_description/video_detail_description.yaml` (task `video_dc499`, the papers'
  VideoDC): `gpt_eval_score` (mean judge score, 0-5). `videomme/videomme_w_subtitle.yaml`:
  `videomme_perception_score` (0-100). VideoMME's short/medium/long columns exist in the papers
  only: lmms-eval logs them, but records no metric for them.
- ours, `tasks/synthetic_video_qa/*.yaml`: `synthetic_video_qa` and `synthetic_video_qa_mc`,
  `accuracy`, `aggregation: mean` (0-1); no paper column.

A group's number is read from the group's own record when the runner stores one (task `mvbench`,
metric `mvbench_accuracy,none`), else from the subtasks' records (task `mvbench_action_sequence`,
same metric), and a derived benchmark (MVBench, VideoChatGPT, VideoMMMU) is the mean of its parts
when all parts of a run are present.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

__all__ = [
    "BENCHMARKS",
    "Benchmark",
    "MVBENCH_SUBTASKS",
    "align",
    "benchmark_of_paper_column",
    "headline",
]


@dataclass(frozen=True)
class Benchmark:
    """One benchmark column: where our number comes from and the paper's names for it."""

    name: str  # our id, also the display name (the paper's column where there is one)
    sources: tuple[tuple[str, str], ...]  # (lmms-eval task, "metric,filter") of ours, in order
    scale: float  # ours * scale = the paper's units
    paper_columns: tuple[str, ...] = ()  # the paper's column names for it (any table)
    unit: str = "%"  # "%" (0-100) or "0-5" (GPT-judge score)
    parts: tuple[str, ...] = ()  # derived: the mean of these benchmarks when sources are absent
    headline: bool = True  # False: a part of another benchmark (MVBench subtasks, ...)


# Paper column suffix -> lmms-eval subtask of MVBench (the paper's Table 3 abbreviations).
MVBENCH_SUBTASKS = {
    "AS": "action_sequence", "AP": "action_prediction", "AA": "action_antonym",
    "FA": "fine_grained_action", "UA": "unexpected_action", "OE": "object_existence",
    "OI": "object_interaction", "OS": "object_shuffle", "MD": "moving_direction",
    "AL": "action_localization", "ST": "scene_transition", "AC": "action_count",
    "MC": "moving_count", "MA": "moving_attribute", "SC": "state_change",
    "FP": "fine_grained_pose", "CO": "character_order", "EN": "egocentric_navigation",
    "ER": "episodic_reasoning", "CI": "counterfactual_inference",
}

_VCG = {  # paper column suffix -> (lmms-eval subtask, metric)
    "CI": ("videochatgpt_gen", "gpt_eval_score_correctness,none"),
    "DO": ("videochatgpt_gen", "gpt_eval_score_detailed_orientation,none"),
    "CU": ("videochatgpt_gen", "gpt_eval_score_context,none"),
    "TU": ("videochatgpt_temporal", "gpt_eval_score_temporal,none"),
    "CO": ("videochatgpt_consistency", "gpt_eval_score_consistency,none"),
}
_MMMU_TRACKS = ("adaptation", "comprehension", "perception")


def _table() -> dict[str, Benchmark]:
    b: list[Benchmark] = []
    for abbr, sub in MVBENCH_SUBTASKS.items():
        b.append(Benchmark(f"MVBench_{abbr}", ((f"mvbench_{sub}", "mvbench_accuracy,none"),), 1.0,
                           (f"MVBench_{abbr}",), headline=False))
    b.append(Benchmark("MVBench", (("mvbench", "mvbench_accuracy,none"),), 1.0,
                       ("MVBench_avg", "MVBench"),
                       parts=tuple(f"MVBench_{a}" for a in MVBENCH_SUBTASKS)))
    b += [
        Benchmark("EgoSchema", (("egoschema", "submission,none"),), 1.0, ("EgoSchema",)),
        Benchmark("EgoSchema-subset", (("egoschema_subset", "score,none"),), 100.0,
                  ("EgoSchema_subset",)),
        Benchmark("MLVU", (("mlvu_dev", "mlvu_percetion_score,none"),), 1.0, ("MLVU",)),
        Benchmark("VideoMME", (("videomme", "videomme_perception_score,none"),), 1.0,
                  ("VideoMME",)),
        Benchmark("VideoMME-subs", (("videomme_w_subtitle", "videomme_perception_score,none"),),
                  1.0, ("VideoMME_wsubs",)),
        Benchmark("LongVideoBench", (("longvideobench_val_v", "lvb_acc,none"),), 100.0,
                  ("LongVideoBench",)),
        Benchmark("PerceptionTest", (("perceptiontest_val_mc", "accuracy,none"),), 100.0,
                  ("PerceptionTest",)),
        Benchmark("VideoDC", (("video_dc499", "gpt_eval_score,none"),), 1.0, ("VideoDC",),
                  unit="0-5"),
    ]
    # lmms-eval's videomme logs no per-duration metric: the papers' columns only
    b += [Benchmark(f"VideoMME_{d}", (), 1.0, (f"VideoMME_{d}",), headline=False)
          for d in ("short", "medium", "long")]
    for track in _MMMU_TRACKS:
        b.append(Benchmark(f"VideoMMMU_{track}", ((f"video_mmmu_{track}", "mmmu_acc,none"),),
                           100.0, headline=False))
    b.append(Benchmark("VideoMMMU", (("video_mmmu", "mmmu_acc,none"),), 100.0, ("VideoMMMU",),
                       parts=tuple(f"VideoMMMU_{t}" for t in _MMMU_TRACKS)))
    b += [
        Benchmark("NextQA", (("nextqa_mc_test", "exact_match,none"),), 100.0, ("NextQA",)),
        Benchmark("ActivityNet-QA_acc", (("activitynetqa", "gpt_eval_accuracy,none"),), 1.0,
                  ("ActivityNet-QA_acc",)),
        Benchmark("ActivityNet-QA_score", (("activitynetqa", "gpt_eval_score,none"),), 1.0,
                  ("ActivityNet-QA_score",), unit="0-5"),
    ]
    for abbr, (sub, metric) in _VCG.items():
        b.append(Benchmark(f"VideoChatGPT_{abbr}", ((sub, metric), ("videochatgpt", metric)),
                           1.0, (f"VideoChatGPT_{abbr}",), unit="0-5", headline=False))
    b.append(Benchmark("VideoChatGPT", (), 1.0, ("VideoChatGPT_avg", "VideoChatGPT"), unit="0-5",
                       parts=tuple(f"VideoChatGPT_{a}" for a in _VCG)))
    b += [
        Benchmark("synthetic_video_qa", (("synthetic_video_qa", "accuracy,none"),), 100.0),
        Benchmark("synthetic_video_qa_mc", (("synthetic_video_qa_mc", "accuracy,none"),), 100.0),
    ]
    return {x.name: x for x in b}


BENCHMARKS: dict[str, Benchmark] = _table()
_BY_SOURCE = {src: bm for bm in BENCHMARKS.values() for src in bm.sources}
_BY_PAPER_COLUMN = {col: bm for bm in BENCHMARKS.values() for col in bm.paper_columns}


def benchmark_of_paper_column(column: str) -> Benchmark | None:
    """The benchmark a paper column measures (`MVBench_avg` -> MVBench); None for aggregates."""
    return _BY_PAPER_COLUMN.get(column)


def headline() -> list[str]:
    """Benchmarks that stand on their own (no subtasks), in table order."""
    return [name for name, bm in BENCHMARKS.items() if bm.headline]


# Columns that identify one run configuration; seeds are averaged over later, not here.
RUN_COLUMNS = ["source", "paper", "table", "paper_method", "model", "positions", "method",
               "label", "params", "retention", "seed", "key", "status"]


def align(records: pd.DataFrame, dedupe: bool = True) -> pd.DataFrame:
    """One row per (run, benchmark) with `score` (and `stderr`) in the paper's units.

    Ours: each (task, metric) found in `BENCHMARKS` sources, times the benchmark's scale; then
    derived benchmarks (`parts`) as the mean of their parts where a run has all of them and no
    number of its own. Paper: each column with a benchmark (relative and FLOPs columns are not
    benchmarks and are left out). Rows of failed runs are kept with their status. `dedupe`
    keeps a paper number printed in two tables of one paper once (for plots); without it every
    table keeps its own rows (each table's cells against its own dense row).
    """
    columns = [*RUN_COLUMNS, "fidelity", "official_code", "benchmark", "score", "stderr",
               "prefill_flops", "flops_ratio", "tokens_fed", "lmms_eval", "transformers",
               "torch", "git_commit", "lock",
               "achieved_retention_mean", "tokens_visual", "llm_layers", "llm_hidden", "llm_ffn",
               "max_frames"]
    if records.empty:
        return pd.DataFrame(columns=columns)
    df = records[records["metric"].notna()].copy()
    for col in RUN_COLUMNS:  # a frame built by hand may lack the newer columns
        if col not in df.columns:
            df[col] = None
    bench, scale = [], []
    for source, task, metric in zip(df["source"], df["task"], df["metric"], strict=True):
        bm = _BY_PAPER_COLUMN.get(metric) if source == "paper" else _BY_SOURCE.get((task, metric))
        bench.append(bm.name if bm else None)
        scale.append(1.0 if (bm is None or source == "paper") else bm.scale)
    df["benchmark"] = bench
    df["score"] = df["value"] * pd.Series(scale, index=df.index)
    df["stderr"] = df["stderr"] * pd.Series(scale, index=df.index)
    df = df[df["benchmark"].notna()]
    df = _derive(df)
    keep = [c for c in columns if c in df.columns]
    # A paper number can appear in two tables (Table 4's SCC row repeats Tables 1-3): keep one;
    # a different number or frame count of the same setting in another table is kept.
    ident = ["source", "paper", "model", "method", "params", "retention", "seed", "max_frames",
             "benchmark", "score", "key"]
    out = df[keep].copy()
    if not dedupe:
        return out.reset_index(drop=True)
    paper = out["source"] == "paper"
    deduped = out[paper].drop_duplicates(subset=[c for c in ident if c != "key"])
    return pd.concat([out[~paper], deduped]).reset_index(drop=True)


def _derive(df: pd.DataFrame) -> pd.DataFrame:
    """Add derived benchmarks (mean of parts) per run configuration where missing."""
    config = ["source", "paper", "table", "paper_method", "model", "positions", "method",
              "label", "params", "retention", "seed"]
    extra = []
    for bm in BENCHMARKS.values():
        if not bm.parts:
            continue
        parts = df[df["benchmark"].isin(bm.parts) & (df["status"] == "finished")]
        if parts.empty:
            continue
        have = df[df["benchmark"] == bm.name]
        for ident, group in parts.groupby(config, dropna=False, sort=False):
            if group["benchmark"].nunique() < len(bm.parts):
                continue
            mask = pd.Series(True, index=have.index)
            for col, val in zip(config, ident, strict=True):
                mask &= have[col].isna() if pd.isna(val) else have[col] == val
            if mask.any():
                continue
            row = group.iloc[0].copy()
            row["benchmark"] = bm.name
            row["metric"] = f"mean of {len(bm.parts)} parts"
            row["score"] = group.groupby("benchmark")["score"].mean().mean()
            row["stderr"] = float("nan")
            row["key"] = ",".join(sorted(group["key"].astype(str).unique()))
            extra.append(row)
    if extra:
        df = pd.concat([df, pd.DataFrame(extra)], ignore_index=True)
    return df

"""A small sweep of results-schema records (docs/results_schema.md) for the reporting tests.

Model llava_scissor_baseline_7b (so the paper's layouts line up), methods none / scc / fastv /
pllava at 50, 35, 10% on two tasks: mvbench (`mvbench_accuracy`, 0-100) and nextqa_mc_test
(`exact_match`, 0-1). scc at 35% has two seeds; visionzip at 35% on mvbench failed; pllava at
10% on nextqa_mc_test was never run (the missing cell).
"""

from __future__ import annotations

from pathlib import Path

from records.store import ResultsStore, run_key
from reporting.cost import estimate

MODEL = {"name": "llava_scissor_baseline_7b", "pretrained": "BBBBCHAN/LLaVA-Scissor-baseline-7B",
         "dtype": "bfloat16", "attn_implementation": "sdpa", "max_frames_num": 32,
         "video_newline": False, "llm": {"layers": 28, "hidden": 3584, "ffn": 18944}}
PARAMS = {"none": {}, "scc": {"tau": None, "tau_temporal": None, "epsilon": None, "seed": 0,
                              "merge": True},
          "fastv": {"layer": 3}, "pllava": {"keep_aspect": True},
          "visionzip": {"dominant_ratio": 0.84375}}
TASKS = {"mvbench": "mvbench_accuracy,none", "nextqa_mc_test": "exact_match,none"}
# (method, retention, seed) -> score per task, in lmms-eval's units (mvbench 0-100, nextqa 0-1)
SCORES = {
    ("none", None, 0): {"mvbench": 60.0, "nextqa_mc_test": 0.80},
    ("scc", 0.5, 0): {"mvbench": 59.5, "nextqa_mc_test": 0.79},
    ("scc", 0.35, 0): {"mvbench": 57.0, "nextqa_mc_test": 0.78},
    ("scc", 0.35, 1): {"mvbench": 59.0, "nextqa_mc_test": 0.78},
    ("scc", 0.1, 0): {"mvbench": 55.0, "nextqa_mc_test": 0.76},
    ("fastv", 0.5, 0): {"mvbench": 59.0, "nextqa_mc_test": 0.795},
    ("fastv", 0.35, 0): {"mvbench": 58.0, "nextqa_mc_test": 0.78},
    ("fastv", 0.1, 0): {"mvbench": 52.0, "nextqa_mc_test": 0.74},
    ("pllava", 0.5, 0): {"mvbench": 58.5, "nextqa_mc_test": 0.79},
    ("pllava", 0.35, 0): {"mvbench": 57.5, "nextqa_mc_test": 0.77},
    ("pllava", 0.1, 0): {"mvbench": 51.0},  # nextqa_mc_test at 10%: never run
}
FAILED = ("visionzip", 0.35, 0, "mvbench")
VERSIONS = {"lmms-eval": "0.7.3", "transformers": "4.57.0", "torch": "2.14.1",
            "git_commit": "0123456789abcdef"}


def record(method: str, retention: float | None, seed: int, task: str,
           value: float | None) -> tuple[str, dict]:
    """(key, record body) of one run; value None makes a failed run."""
    settings = {"model": MODEL, "compressor": {"name": method, "params": PARAMS[method]},
                "retention": retention, "task": task, "limit": None, "seed": seed}
    est = estimate(28, 3584, 18944, retention, layer=PARAMS[method].get("layer", 0), text=120)
    ok = value is not None
    n = 200 if ok else 0
    body = {
        "source": "ours",
        "status": "finished" if ok else "failed",
        "error": None if ok else "RuntimeError: CUDA out of memory",
        "settings": settings,
        "versions": VERSIONS,
        "started_at": "2026-11-23T20:00:00Z", "finished_at": "2026-11-23T20:10:00Z",
        "duration_s": 600.0,
        "metrics": {TASKS[task]: {"value": value, "stderr": 0.5 if task == "mvbench" else 0.01}}
        if ok else {},
        "samples": {"count": n, "failed": 0, "failures": []},
        "retention": {"target": retention,
                      "mean": (retention or 1.0) if ok else None,
                      "min": (retention or 1.0) if ok else None,
                      "max": (retention or 1.0) if ok else None},
        "tokens": {"visual_mean": 6272.0 if ok else None,
                   "fed_mean": float(est.kept) if ok else None},
        "flops": {"prefill_mean": float(est.prefill) if ok else None,
                  "prefill_ratio_mean": est.prefill_ratio if ok else None,
                  "convention": "FastV: 4nd^2 + 2n^2d + 2ndm per layer, prefill, text included"},
        "timings": {"video_decode_s": 0.2, "vision_s": 0.05, "compress_s": 0.01,
                    "prefill_s": 0.3 * (retention or 1.0), "decode_s": 0.1} if ok else {},
        "peak_memory_bytes": 17179869184 if ok else None,
    }
    return run_key(settings, VERSIONS), body


def write_sweep(root: Path) -> Path:
    """Write the fixture sweep into `root` (a results folder) and return it."""
    store = ResultsStore(root)
    for (method, retention, seed), scores in SCORES.items():
        for task, value in scores.items():
            store.write(*record(method, retention, seed, task, value))
    method, retention, seed, task = FAILED
    store.write(*record(method, retention, seed, task, None))
    return root


def n_records() -> int:
    return sum(len(s) for s in SCORES.values()) + 1


def ours_record(model: str, method: str, retention: float | None, task: str, metric: str,
                value: float) -> dict:
    """A complete finished record of ours (with `schema_version` and `key`) for one metric on
    a model config of a paper's base model (`llava_ov_7b`, ...), the lock hash included."""
    settings = {"model": {"name": model, "max_frames_num": 32,
                          "llm": {"layers": 28, "hidden": 3584, "ffn": 18944}},
                "compressor": {"name": method, "params": {}}, "retention": retention,
                "task": task, "limit": None, "seed": 0}
    versions = {**VERSIONS, "lock": "0123abcd"}
    return {"schema_version": 1, "key": run_key(settings, versions), "source": "ours",
            "status": "finished", "settings": settings, "versions": versions,
            "metrics": {metric: {"value": value, "stderr": None}},
            "retention": {"target": retention},
            "timings": {"prefill_s": 0.3 * (retention or 1.0), "vision_s": 0.05},
            "tokens": {"visual_mean": 6272.0, "fed_mean": 6272.0 * (retention or 1.0)}}


def write_records(root: Path, records: list[dict]) -> Path:
    """Write complete records (`ours_record`) into the results folder `root`."""
    store = ResultsStore(root)
    for record in records:
        store.write(record["key"], {k: v for k, v in record.items()
                                    if k not in ("schema_version", "key")})
    return root

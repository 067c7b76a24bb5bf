"""Efficiency measured one way: the time to first token in every sample record, the CUDA-event
stage clock, and the efficiency tables of the reporting layer against hand-computed cases."""

from __future__ import annotations

import copy
import math
import types

import numpy as np
import pandas as pd
import pytest
from reporting_fixtures import record

import harness
from backbones.decoder import _EventClock
from harness.lmms_model import ScissorBench
from records.store import ResultsStore
from reporting import load_records, records_frame
from reporting.efficiency import EFFICIENCY_COLUMNS, efficiency_markdown, efficiency_tables
from runners.evaluate import _record as run_record
from synthetic.task import build_dataset

FRAMES = 4
MODEL = "llava_scissor_baseline_7b"  # the fixtures' model: L = 28, d = 3584, m = 18944
L, D, M, TEXT, N_V = 28, 3584, 18944, 120, 6272  # the fixtures' text tokens and 32 x 196


# ------------------------------------------------------------------ time to first token
@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    build_dataset(root / "synthetic_video_qa", n=2, seed=0)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SCISSORBENCH_DATA", str(root))
        yield root


@pytest.fixture(scope="module")
def evaluated(tiny, data_root) -> dict[str, list[dict]]:
    """The sample records of 2 generated answers and 1 four-choice question (uniform at 50%)
    of the tiny model, through lmms-eval."""
    from lmms_eval.evaluator import simple_evaluate
    from lmms_eval.tasks import TaskManager

    manager = TaskManager(include_path=harness.tasks_dir(), include_defaults=False)
    out = {}
    for task, limit in (("synthetic_video_qa", 2), ("synthetic_video_qa_mc", 1)):
        model = ScissorBench(pretrained=tiny, compressor="uniform", retention=0.5,
                             max_frames_num=FRAMES)
        simple_evaluate(model=model, tasks=[task], limit=limit, task_manager=manager,
                        bootstrap_iters=0, gen_kwargs="max_new_tokens=3")
        out[task] = model.records
    return out


@pytest.mark.parametrize("task", ["synthetic_video_qa", "synthetic_video_qa_mc"])
def test_ttft_spans_the_stages_before_the_first_token(evaluated, task):
    """On the CPU every stage is a perf_counter interval inside the measured TTFT interval, so
    TTFT >= their sum, and the gaps between them are bookkeeping (well under 50 ms)."""
    records = evaluated[task]
    assert len(records) == (2 if task == "synthetic_video_qa" else 4)
    for rec in records:
        t = rec["timings"]
        stages = t["video_decode"] + t["vision"] + t["compress"] + t["prefill"]
        assert t["ttft"] >= t["prefill"] > 0
        assert stages <= t["ttft"] + 1e-9
        assert t["ttft"] - stages < 0.05, t
    if task == "synthetic_video_qa_mc":  # a reused video: no decode, tower or compressor
        for rec in records[1:]:
            assert rec["prepared_reused"] and rec["timings"]["vision"] == 0.0
            assert rec["timings"]["ttft"] - rec["timings"]["prefill"] < 0.05


def test_ttft_reaches_the_run_record_and_the_tidy_frame(evaluated):
    """runners.evaluate averages every timing name it finds: `ttft_s` is the samples' mean,
    and the tidy frame carries it as `timing_ttft_s`, the efficiency table as TTFT s."""
    samples = evaluated["synthetic_video_qa"]
    settings = {"retention": 0.5, "compressor": {"name": "uniform", "params": {}},
                "model": {"name": "tiny"}, "task": "synthetic_video_qa"}
    run = types.SimpleNamespace(settings=settings, task="synthetic_video_qa")
    results = {"results": {"synthetic_video_qa": {"accuracy,none": 0.5}}}
    body = run_record(run, results, samples, None)
    mean = sum(s["timings"]["ttft"] for s in samples) / len(samples)
    assert body["timings"]["ttft_s"] == pytest.approx(mean)
    frame = records_frame([{**body, "key": "k"}])
    assert frame["timing_ttft_s"].iloc[0] == pytest.approx(mean)
    (table,) = efficiency_tables(frame).values()
    assert table["TTFT s"].iloc[0] == pytest.approx(mean)


# ------------------------------------------------------------------------ CUDA event clock
class _FakeEvent:
    """A recorded CUDA event at a known time (ms); elapsed times come back as float32 ms,
    as cudaEventElapsedTime gives them."""

    def __init__(self, ms: float) -> None:
        self.ms = ms

    def synchronize(self) -> None:
        pass

    def elapsed_time(self, end: _FakeEvent) -> float:
        return float(np.float32(end.ms - self.ms))


def test_event_clock_differences_are_event_elapsed_times_over_an_hour():
    """Readings 1 s apart for an hour, then a 1 ms stage: its time is the events' 1 ms to the
    microsecond (one anchor for the hour would round float32 ms to 0.25 ms)."""
    times = [1000.0 * s for s in range(3601)] + [3_600_000.0 + 1.0123, 3_600_000.0 + 2.5123]
    events = iter(_FakeEvent(t) for t in times)
    clock = _EventClock(lambda: next(events))
    readings = [clock.now() for _ in times]
    for i in (0, 9, 10, 11, 3599):  # across anchor moves too (every 10 s)
        assert readings[i + 1] - readings[i] == pytest.approx(1.0, abs=1e-6)
    assert readings[-2] - readings[-3] == pytest.approx(0.0010123, abs=1e-6)
    assert readings[-1] - readings[-2] == pytest.approx(0.0015, abs=1e-6)
    assert readings[-1] - readings[0] == pytest.approx(3600.0025123, abs=1e-4)


# -------------------------------------------------------------------------- the tables
def _f(n: int) -> int:
    """One decoder layer over n tokens, FastV's convention (METHODS.md section 8)."""
    return 4 * n * D * D + 2 * n * n * D + 2 * n * D * M


def _flops(kept: int, layer: int = 0) -> int:
    """Prefill FLOPs of the fixtures' 7B with `kept` visual tokens from layer `layer` on."""
    return layer * _f(N_V + TEXT) + (L - layer) * _f(kept + TEXT)


# (method, retention, seed, task) -> timings (s) and peak memory (bytes) written in the record
GIB = 2**30
RUNS = {
    ("none", None, 0, "mvbench"): ({"video_decode_s": 0.2, "vision_s": 0.06, "compress_s": 0.0,
                                    "prefill_s": 0.40, "decode_s": 0.1, "ttft_s": 0.70}, 16),
    ("none", None, 0, "nextqa_mc_test"): ({"video_decode_s": 0.1, "vision_s": 0.04,
                                           "compress_s": 0.0, "prefill_s": 0.30,
                                           "decode_s": 0.3, "ttft_s": 0.48}, 18),
    ("scc", 0.5, 0, "mvbench"): ({"video_decode_s": 0.2, "vision_s": 0.06, "compress_s": 0.02,
                                  "prefill_s": 0.20, "decode_s": 0.1, "ttft_s": 0.50}, 12),
    ("scc", 0.5, 0, "nextqa_mc_test"): ({"video_decode_s": 0.1, "vision_s": 0.04,
                                         "compress_s": 0.04, "prefill_s": 0.10,
                                         "decode_s": 0.3, "ttft_s": 0.30}, 11),
    ("scc", 0.35, 0, "mvbench"): ({"prefill_s": 0.14, "ttft_s": 0.4}, 10),
    ("scc", 0.35, 1, "mvbench"): ({"prefill_s": 0.10, "ttft_s": 0.3}, 10),
    ("fastv", 0.1, 0, "mvbench"): ({"video_decode_s": 0.2, "prefill_s": 0.16}, None),  # no TTFT
}


@pytest.fixture(scope="module")
def tables(tmp_path_factory) -> dict[str, pd.DataFrame]:
    """The sweep above written with the reporting fixtures' records, plus a failed run and a
    paper record of the same model (both left out), read back by `load_records`."""
    store = ResultsStore(tmp_path_factory.mktemp("efficiency"))
    for (method, retention, seed, task), (timings, peak) in RUNS.items():
        key, body = record(method, retention, seed, task, 50.0)
        body["timings"] = timings
        body["peak_memory_bytes"] = None if peak is None else peak * GIB
        store.write(key, body)
    store.write(*record("visionzip", 0.35, 0, "mvbench", None))  # failed: no row
    key, body = record("pllava", 0.1, 0, "mvbench", 50.0)
    paper = copy.deepcopy(body)
    paper.update(source="paper", timings={"prefill_s": 0.001})
    store.write(key[:-1] + "x", paper)  # the paper's rows: not comparable, no row
    frame = load_records(store.root)
    assert set(frame["source"]) == {"ours", "paper"} and (~frame["ok"]).any()
    return efficiency_tables(frame)


def test_one_table_per_model_full_model_first_then_the_papers_order(tables):
    assert list(tables) == [MODEL]
    table = tables[MODEL]
    assert list(table.columns) == EFFICIENCY_COLUMNS
    assert list(zip(table["method"], table["retention"], table["runs"], strict=True)) == [
        ("none", 1.0, 2), ("fastv", 0.1, 1), ("scc", 0.5, 2), ("scc", 0.35, 2)]


def test_values_by_hand(tables):
    t = tables[MODEL].set_index(["method", "retention"])
    full, scc, fastv = t.loc[("none", 1.0)], t.loc[("scc", 0.5)], t.loc[("fastv", 0.1)]
    # tokens and FLOPs: M = round(r x 6272), text 120 tokens, FastV K = 3
    assert scc["tokens fed"] == 3136 and fastv["tokens fed"] == 627
    assert full["prefill TFLOPs"] == pytest.approx(_flops(N_V) / 1e12)
    assert scc["prefill TFLOPs"] == pytest.approx(_flops(3136) / 1e12)
    assert scc["FLOPs %"] == pytest.approx(100 * _flops(3136) / _flops(N_V))
    assert fastv["FLOPs %"] == pytest.approx(100 * _flops(627, layer=3) / _flops(N_V))
    assert full["FLOPs %"] == pytest.approx(100.0)
    # stage seconds: means over the row's runs (two tasks; two seeds at 35%)
    assert full["prefill s"] == pytest.approx(0.35) and full["TTFT s"] == pytest.approx(0.59)
    assert scc["compress s"] == pytest.approx(0.03) and scc["decode s"] == pytest.approx(0.2)
    assert t.loc[("scc", 0.35), "prefill s"] == pytest.approx(0.12)
    assert scc["peak memory GiB"] == 12.0 and full["peak memory GiB"] == 18.0  # the largest
    # speedups: measured = full prefill / this prefill; predicted = 1 / FLOPs ratio
    assert full["prefill speedup"] == 1.0
    assert scc["prefill speedup"] == pytest.approx(0.35 / 0.15)
    assert fastv["prefill speedup"] == pytest.approx(0.35 / 0.16)
    assert scc["predicted speedup"] == pytest.approx(_flops(N_V) / _flops(3136))
    assert full["predicted speedup"] == pytest.approx(1.0)


def test_missing_values_stay_missing(tables):
    t = tables[MODEL].set_index(["method", "retention"])
    fastv = t.loc[("fastv", 0.1)]
    for column in ("TTFT s", "vision s", "compress s", "decode s", "peak memory GiB"):
        assert math.isnan(fastv[column]), column
    assert fastv["video decode s"] == pytest.approx(0.2)
    assert math.isnan(t.loc[("scc", 0.35), "vision s"])


def test_without_a_full_model_no_speedup_is_measured(tables, tmp_path):
    store = ResultsStore(tmp_path)
    store.write(*record("scc", 0.5, 0, "mvbench", 50.0))
    (table,) = efficiency_tables(load_records(tmp_path)).values()
    assert math.isnan(table["prefill speedup"].iloc[0])
    assert table["predicted speedup"].iloc[0] == pytest.approx(_flops(N_V) / _flops(3136))


def test_markdown_has_a_heading_per_model_and_dashes_for_missing(tables):
    text = efficiency_markdown(tables)
    lines = text.splitlines()
    assert lines[0] == f"### {MODEL}"
    header = next(line for line in lines if line.startswith("| method"))
    assert "| TTFT s |" in header and "| prefill speedup | predicted speedup |" in header
    rows = [line.strip("| ").split(" | ") for line in lines
            if line.startswith("| ") and line != header]
    cells = {f"{r[0]} {r[1]}": r for r in rows}
    full, fastv = cells["none 100%"], cells["fastv 10%"]
    assert full[EFFICIENCY_COLUMNS.index("prefill speedup")] == "1.00"
    assert full[EFFICIENCY_COLUMNS.index("prefill s")] == "0.3500"
    assert fastv[EFFICIENCY_COLUMNS.index("TTFT s")] == "\u2014"
    assert "0" not in fastv[EFFICIENCY_COLUMNS.index("peak memory GiB")]

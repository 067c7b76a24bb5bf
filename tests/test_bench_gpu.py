"""benchmarks.bench_gpu on the CPU at its reduced size: every requested row, finite times, the
FLOPs prediction of reporting.cost.estimate, speedup 1 for the full model, skips said."""

from __future__ import annotations

import json
import math

import pytest

import compressors
from benchmarks import bench_gpu
from reporting.cost import estimate

METHODS = ["none", "uniform", "fastv", "dycoke", "scc_official"]
RETENTION = 0.25
FRAMES = 8
# the reduced 0.5b: 4 LLM layers 64 wide, FFN 128; 112 px / 14 px patches = 8 x 8, pooled 4 x 4
LAYERS, HIDDEN, FFN, PER_FRAME = 4, 64, 128, 16


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> tuple[list[dict], str, dict]:
    """(rows returned, printed text, the --json file) of one reduced run."""
    import contextlib
    import io

    path = tmp_path_factory.mktemp("bench") / "rows.json"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rows = bench_gpu.main(["--reduced", "--device", "cpu", "--dims", "0.5b", "--methods",
                               *METHODS, "--retentions", str(RETENTION), "--repeat", "2",
                               "--new-tokens", "4", "--json", str(path)])
    return rows, out.getvalue(), json.loads(path.read_text())


def _row(rows: list[dict], method: str) -> dict:
    (row,) = [r for r in rows if r["method"] == method]
    return row


def test_every_requested_row_is_printed_and_written(bench):
    rows, text, written = bench
    assert [(r["method"], r["retention"]) for r in rows] == [
        ("none", 1.0), *((m, RETENTION) for m in METHODS[1:])]
    assert written["rows"] == json.loads(json.dumps(rows))
    assert written["settings"]["frames"] == FRAMES and written["settings"]["dtype"] == "float32"
    lines = text.splitlines()
    for row in rows:
        prefix = f"{row['method']:<12} {row['retention'] * 100:>4g}%"
        assert sum(line.startswith(prefix) for line in lines) == 1, prefix


def test_times_are_finite_and_ttft_spans_the_stages(bench):
    rows, _, _ = bench
    for row in rows:
        if "skipped" in row:
            continue
        stages = [row[s] for s in ("vision", "compress", "prefill", "decode", "ttft")]
        assert all(math.isfinite(s) and s >= 0 for s in stages), row
        assert row["prefill"] > 0 and row["ttft"] >= row["prefill"]
        # medians of different samples, so only roughly: TTFT = vision + compress + prefill
        assert row["ttft"] == pytest.approx(row["vision"] + row["compress"] + row["prefill"],
                                            rel=0.5)
        assert row["peak_memory_bytes"] > 0 and row["visual"] == FRAMES * PER_FRAME


def test_prediction_is_the_cost_estimate_and_the_full_model_is_1(bench):
    rows, text, _ = bench
    full = _row(rows, "none")
    assert full["speedup"] == 1.0 and full["predicted_speedup"] == 1.0
    n_v = FRAMES * PER_FRAME
    for method in ("uniform", "fastv"):  # both hand on exactly M = round(r N_v) tokens
        row = _row(rows, method)
        layer = compressors.defaults("fastv")["layer"] if method == "fastv" else 0
        est = estimate(LAYERS, HIDDEN, FFN, RETENTION, layer=layer, frames=FRAMES,
                       tokens_per_frame=PER_FRAME, text=row["text"])
        assert est.kept == compressors.budget(RETENTION, n_v) == row["kept"]
        assert row["fed"] == (n_v if method == "fastv" else est.kept)
        assert row["predicted_speedup"] == pytest.approx(1 / est.prefill_ratio, rel=1e-12)
        assert row["speedup"] == pytest.approx(full["prefill"] / row["prefill"])
        assert row["measured_over_predicted"] == pytest.approx(
            row["speedup"] * est.prefill_ratio)
        line = next(x for x in text.splitlines() if x.startswith(f"{method:<12}"))
        assert f"{1 / est.prefill_ratio:.2f}x" in line.split()


def test_methods_that_cannot_run_are_skipped_with_their_reason(bench):
    rows, text, _ = bench
    assert "minimum" in _row(rows, "dycoke")["skipped"]  # 25% < 3/8 on 8 frames
    assert "threshold only" in _row(rows, "scc_official")["skipped"]
    assert text.count("skipped:") == 2

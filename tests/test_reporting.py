"""The reporting layer on a fixture sweep: tidy rows, missing cells, % of full, the paper's
layouts, figures, the HTML report and the paper's records in results/reference."""

import base64
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from matplotlib.colors import is_color_like, to_hex
from matplotlib.image import imread
from reporting_fixtures import FAILED, SCORES, TASKS, n_records, write_sweep

import compressors
from reporting import align, load_records
from reporting.benchmarks import BENCHMARKS, benchmark_of_paper_column
from reporting.load import canonical_params, records_frame
from reporting.plots import (
    COLUMN_WIDTH,
    DPI,
    HEIGHT,
    method_color,
    plot_accuracy_vs_flops,
    plot_accuracy_vs_retention,
    plot_relative_average,
    save_figure,
)
from reporting.reference import REFERENCE_DIR, convert_all
from reporting.report import build_report
from reporting.tables import (
    average_table,
    benchmark_table,
    paper_layout,
    relative_table,
    summarize,
    write_table,
)

MODEL = "llava_scissor_baseline_7b"
PAPER_MODEL = "LLaVA-OV-7B-enhanced"


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    return write_sweep(tmp_path_factory.mktemp("sweep") / "runs")


@pytest.fixture(scope="module")
def records(runs) -> pd.DataFrame:
    return load_records(runs)


@pytest.fixture(scope="module")
def aligned(records) -> pd.DataFrame:
    return align(records)


@pytest.fixture(scope="module")
def with_paper(records) -> tuple[pd.DataFrame, pd.DataFrame]:
    both = pd.concat([records, load_records(REFERENCE_DIR)], ignore_index=True)
    return both, align(both)


# --- loading ------------------------------------------------------------------------------------

def test_one_row_per_record_and_metric_failed_runs_kept(records):
    assert records["key"].nunique() == n_records()
    assert len(records) == n_records()  # one metric per finished record, one row for the failure
    failed = records[records["status"] == "failed"]
    assert len(failed) == 1 and not failed["ok"].any()
    row = failed.iloc[0]
    assert (row["method"], row["target_retention"], row["task"]) == (FAILED[0], FAILED[1],
                                                                     FAILED[3])
    assert pd.isna(row["metric"]) and pd.isna(row["value"]) and "memory" in row["error"]
    for col in ("source", "model", "method", "params", "target_retention",
                "achieved_retention_mean", "achieved_retention_min", "achieved_retention_max",
                "task", "metric", "value", "stderr", "prefill_flops", "flops_ratio", "samples",
                "failed", "status", "key", "timing_prefill_s", "timing_video_decode_s"):
        assert col in records.columns, col


def test_values_params_and_retention_as_recorded(records):
    none = records[(records["method"] == "none") & (records["task"] == "nextqa_mc_test")].iloc[0]
    assert none["value"] == 0.80 and none["metric"] == TASKS["nextqa_mc_test"]
    assert pd.isna(none["target_retention"]) and none["retention"] == 1.0  # the full model
    scc = records[records["method"] == "scc"].iloc[0]
    assert scc["params"] == canonical_params({"merge": True, "seed": 0, "tau": None,
                                              "tau_temporal": None, "epsilon": None})
    assert json.loads(scc["params"])["merge"] is True
    assert canonical_params({"b": 1, "a": None}) == '{"a":null,"b":1}'


def test_missing_folder_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="results folder not found"):
        load_records(tmp_path / "nope")


def test_align_scales_to_the_paper_units(aligned):
    nextqa = aligned[(aligned["benchmark"] == "NextQA") & (aligned["method"] == "none")]
    assert nextqa["score"].tolist() == [pytest.approx(80.0)]  # exact_match 0.80 -> 80%
    mvbench = aligned[(aligned["benchmark"] == "MVBench") & (aligned["method"] == "none")]
    assert mvbench["score"].tolist() == [pytest.approx(60.0)]  # already 0-100


def test_benchmarks_cover_every_paper_benchmark_column():
    csv_columns = {"ActivityNet-QA_acc", "ActivityNet-QA_score", "NextQA", "EgoSchema", "MLVU",
                   "VideoMME", "VideoMMMU", "MVBench", "MVBench_avg", "VideoChatGPT",
                   "VideoChatGPT_avg", *(f"VideoChatGPT_{d}" for d in "CI DO CU TU CO".split()),
                   "MVBench_AS", "MVBench_CI"}
    for column in csv_columns:
        assert benchmark_of_paper_column(column) is not None, column
    assert benchmark_of_paper_column("avg_relative_pct") is None
    assert BENCHMARKS["synthetic_video_qa"].sources == (("synthetic_video_qa", "accuracy,none"),)


def test_group_benchmarks_are_derived_from_their_parts():
    rows = []
    for i, (sub, metric) in enumerate([("videochatgpt_gen", "gpt_eval_score_correctness,none"),
                                       ("videochatgpt_gen", "gpt_eval_score_context,none"),
                                       ("videochatgpt_gen",
                                        "gpt_eval_score_detailed_orientation,none"),
                                       ("videochatgpt_temporal", "gpt_eval_score_temporal,none"),
                                       ("videochatgpt_consistency",
                                        "gpt_eval_score_consistency,none")]):
        rows.append({"source": "ours", "status": "finished", "model": "m", "method": "none",
                     "label": "none", "params": "{}", "retention": 1.0, "seed": 0,
                     "key": f"k{i}", "table": None, "task": sub, "metric": metric,
                     "value": 3.0 + i * 0.1, "stderr": None})
    out = align(pd.DataFrame(rows))
    vcg = out[out["benchmark"] == "VideoChatGPT"]
    assert vcg["score"].tolist() == [pytest.approx(3.2)]


# --- tables -------------------------------------------------------------------------------------

def test_mean_over_seeds_and_percent_of_full_by_hand(aligned):
    scores = benchmark_table(aligned, "MVBench", MODEL)
    assert scores.loc["scc", "35%"] == pytest.approx((57.0 + 59.0) / 2)
    rel = relative_table(aligned, "MVBench", MODEL)
    assert rel.loc["scc", "35%"] == pytest.approx(100 * 58.0 / 60.0)  # 96.67
    assert rel.loc["none", "100%"] == pytest.approx(100.0)
    summary = summarize(aligned)
    seeds = summary[(summary["label"] == "scc") & (summary["retention"] == 0.35)
                    & (summary["benchmark"] == "MVBench")]["seeds"]
    assert seeds.tolist() == [2]


def test_missing_cells_stay_missing_in_every_format(aligned, tmp_path):
    table = benchmark_table(aligned, "NextQA", MODEL)
    assert math.isnan(table.loc["pllava", "10%"])  # never run
    mv = benchmark_table(aligned, "MVBench", MODEL)
    assert "visionzip" not in mv.index or math.isnan(mv.loc["visionzip", "35%"])  # failed
    md, csv, tex = write_table(table, tmp_path / "nextqa", caption="NextQA")
    col = list(table.columns).index("10%") + 1  # +1 for the method column

    md_row = next(line for line in md.read_text().splitlines() if line.startswith("| pllava |"))
    md_cells = [c.strip() for c in md_row.strip("|").split("|")]
    assert md_cells[col] == "\u2014"

    csv_row = next(line for line in csv.read_text().splitlines() if line.startswith("pllava,"))
    assert csv_row.split(",")[col] == ""

    tex_row = next(line for line in tex.read_text().splitlines() if line.startswith("pllava &"))
    tex_cells = [c.strip() for c in tex_row.rstrip("\\ ").split("&")]
    assert tex_cells[col] == "---"
    for cell in (md_cells[col], csv_row.split(",")[col], tex_cells[col]):
        assert cell not in ("0", "0.0", "0.00", "nan")
    assert r"\toprule" in tex.read_text() and r"\bottomrule" in tex.read_text()


def test_average_needs_every_benchmark(aligned):
    avg = average_table(aligned, MODEL)
    assert avg.loc["scc", "35%"] == pytest.approx((100 * 58 / 60 + 100 * 78 / 80) / 2)
    assert math.isnan(avg.loc["pllava", "10%"])  # NextQA missing at 10%


# --- the paper's layouts -----------------------------------------------------------------------

def _cell(layout: pd.DataFrame, method: str, retention: str, row: str, column: str) -> float:
    hit = layout[(layout["method"] == method) & (layout["retention"] == retention)
                 & (layout["row"] == row)]
    assert len(hit) == 1, (method, retention, row)
    return hit.iloc[0][column]


def test_paper_layouts_hold_the_papers_numbers(with_paper):
    records, aligned = with_paper
    t2 = paper_layout(records, aligned, "table2")
    assert _cell(t2, "scc", "35%", "paper", "EgoSchema") == pytest.approx(57.94)
    t1 = paper_layout(records, aligned, "table1")
    assert _cell(t1, "none", "100%", "paper", "ActivityNet-QA_acc") == pytest.approx(48.09)
    assert _cell(t1, "visionzip", "10%", "paper", "avg_relative_pct") == pytest.approx(82.7)
    t3 = paper_layout(records, aligned, "table3")
    assert _cell(t3, "none", "100%", "paper", "MVBench_avg") == pytest.approx(62.43)
    t5 = paper_layout(records, aligned, "table5")
    assert _cell(t5, "fastv", "35%", "paper", "FLOPs_TFLOPs") == pytest.approx(16.1)
    t7 = paper_layout(records, aligned, "table7")
    assert _cell(t7, "scc", "5%", "paper", "MVBench") == pytest.approx(49.60)
    assert math.isnan(_cell(t7, "fastv", "10%", "paper", "MLVU"))  # the paper's own gap


def test_paper_layouts_show_ours_and_delta(with_paper):
    records, aligned = with_paper
    t3 = paper_layout(records, aligned, "table3")
    assert _cell(t3, "scc", "35%", "ours", "MVBench_avg") == pytest.approx(58.0)
    assert _cell(t3, "scc", "35%", "\u0394", "MVBench_avg") == pytest.approx(58.0 - 61.98)
    assert math.isnan(_cell(t3, "scc", "35%", "ours", "MVBench_AS"))  # no subtask records
    t1 = paper_layout(records, aligned, "table1")
    assert _cell(t1, "scc", "35%", "ours", "NextQA") == pytest.approx(78.0)
    assert math.isnan(_cell(t1, "scc", "35%", "ours", "avg_relative_pct"))  # needs all 8
    t5 = paper_layout(records, aligned, "table5")
    assert round(_cell(t5, "fastv", "35%", "ours", "FLOPs_TFLOPs"), 1) == 16.1
    assert "DyCoke" in set(t5["method"])
    assert not ((t5["method"] == "DyCoke") & (t5["row"] != "paper")).any()  # paper only


# --- figures ------------------------------------------------------------------------------------

def test_figures_are_png_and_pdf_at_column_width(with_paper, tmp_path):
    _, aligned = with_paper
    figures = {
        "retention": plot_accuracy_vs_retention(aligned, "MVBench", MODEL, PAPER_MODEL),
        "flops": plot_accuracy_vs_flops(aligned, "NextQA", MODEL, PAPER_MODEL),
        "relative": plot_relative_average(aligned, MODEL, PAPER_MODEL),
    }
    for name, fig in figures.items():
        png, pdf = save_figure(fig, tmp_path / name)
        assert png.stat().st_size > 10_000 and pdf.stat().st_size > 5_000
        height, width = imread(png).shape[:2]
        assert (width, height) == (round(COLUMN_WIDTH * DPI), round(HEIGHT * DPI))
        head = pdf.read_bytes()
        assert head.startswith(b"%PDF")
        box = re.search(rb"/MediaBox \[\s*0 0 ([\d.]+) ([\d.]+)", head)
        assert box and float(box[1]) == pytest.approx(COLUMN_WIDTH * 72)


def test_one_colour_per_method(with_paper):
    # every method of ours and of the paper has a colour of its own; a paper's name for one of
    # ours (DyCoke, dycoke) is the same method and has the same colour
    methods = [*compressors.available(), "DyCoke"]
    colours = [method_color(m) for m in methods]
    assert all(is_color_like(c) for c in colours)
    distinct = {m.lower() for m in methods}
    assert len(set(colours)) == len(distinct), dict(zip(methods, colours, strict=True))
    assert method_color("DyCoke") == method_color("dycoke")
    # a method without a fixed colour gets the same one in another session (no salted hash)
    script = "from reporting.plots import method_color; print(method_color('SomeNewMethod'))"
    others = {
        subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                       env={**os.environ, "PYTHONHASHSEED": seed}).stdout.strip()
        for seed in ("1", "2")
    }
    assert others == {method_color("SomeNewMethod")}
    # in a figure, ours (solid) and the paper's (dashed) lines of a method share its colour:
    # MVBench has none, scc, fastv and pllava from both sources (visionzip's run failed)
    _, aligned = with_paper
    ax = plot_accuracy_vs_retention(aligned, "MVBench", MODEL, PAPER_MODEL).axes[0]
    solid = {to_hex(line.get_color()) for line in ax.lines if line.get_linestyle() == "-"}
    dashed = {to_hex(line.get_color()) for line in ax.lines if line.get_linestyle() == "--"}
    assert len(solid) == len(dashed) == 4 and solid == dashed


# --- report -------------------------------------------------------------------------------------

def test_html_report_is_one_file_with_tables_and_inline_figures(runs, tmp_path):
    report = build_report(runs, tmp_path / "report", reference=True)
    text = report.html.read_text()
    assert text.count('<img src="data:image/png;base64,') == sum(
        1 for p in report.figures if p.suffix == ".png")
    first = re.search(r'data:image/png;base64,([A-Za-z0-9+/=]+)"', text)[1]
    assert base64.b64decode(first).startswith(b"\x89PNG")
    assert re.search(r"<img src=\"(?!data:)", text) is None  # nothing outside the file
    assert "<table>" in text and "57.94" in text and "RuntimeError: CUDA out of memory" in text
    names = {p.relative_to(tmp_path / "report").as_posix() for p in report.tables}
    assert {f"tables/{MODEL}/MVBench.md", f"tables/{MODEL}/NextQA_relative.tex",
            "tables/paper_table2.csv", "tables/runs.md"} <= names
    assert all(p.stat().st_size > 0 for p in report.tables + report.figures)


# --- the paper's records ------------------------------------------------------------------------

def test_reference_files_equal_a_fresh_conversion():
    fresh = {r["key"]: r for r in convert_all()}  # the six papers' CSVs in results/papers
    stored = {p.stem: json.loads(p.read_text()) for p in REFERENCE_DIR.glob("*.json")}
    assert stored.keys() == fresh.keys(), "run `scissorbench reference` to regenerate"
    for key, record in fresh.items():
        assert stored[key] == record, key


def test_reference_records_follow_the_schema():
    records = load_records(REFERENCE_DIR)
    records = records[records["path"].map(lambda p: json.loads(Path(p).read_text())["versions"]
                                          ["paper"] == "arXiv:2506.21862v1")]
    assert len(records) == 681  # every row of the paper's CSV, one metric each
    assert set(records["source"]) == {"paper"} and records["ok"].all()
    full = records[(records["table"] == "table2_long_video") & (records["method"] == "none")]
    assert set(full["retention"]) == {1.0} and full["target_retention"].tolist()[0] == 1.0
    fastv = records[records["method"] == "fastv"]
    assert set(fastv["params"]) == {'{"layer":3}'}


def test_fixture_scores_match_the_fixture_definition(aligned):
    # guards the fixture itself: every defined score appears once per seed in the aligned frame
    expected = sum(len(s) for s in SCORES.values())
    assert len(aligned[aligned["source"] == "ours"]) == expected


def test_relative_to_a_full_model_scoring_zero_is_missing_not_inf():
    import pandas as pd

    from reporting.tables import summarize

    rows = pd.DataFrame({
        "source": ["ours"] * 2, "model": ["m"] * 2, "benchmark": ["b"] * 2,
        "method": ["none", "scc"], "label": ["none", "scc"], "retention": [1.0, 0.5],
        "score": [0.0, 25.0], "stderr": [None, None], "prefill_flops": [None, None],
        "status": ["finished"] * 2,
    })
    relative = summarize(rows).set_index("method")["relative"]
    assert relative.isna().all()


def test_a_model_under_two_position_policies_is_two_models():
    """Runs of one model config under its default policy (null) and an explicit one are never
    averaged together: the explicit one is named `model (policy)`; one policy alone keeps the
    plain name (so a per-folder table still filters on the config name)."""
    from reporting_fixtures import ours_record

    def run(positions, value):
        record = ours_record("micro", "scc", 0.5, "synthetic_video_qa", "accuracy,none", value)
        record["settings"]["model"]["positions"] = positions
        return record

    both = records_frame([run(None, 0.8), run("contiguous", 0.6)])
    assert sorted(both["model"]) == ["micro", "micro (contiguous)"]
    assert both.set_index("model").loc["micro (contiguous)", "value"] == 0.6
    alone = records_frame([run("original", 0.8)])
    assert alone["model"].tolist() == ["micro"]

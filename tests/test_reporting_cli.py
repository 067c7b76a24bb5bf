"""`scissorbench flops`, `report` and `reference`: key=value arguments, one-line errors.

The FLOPs formulas themselves are tested in test_flops.py; here the command must reproduce the
paper's Table 5 from configs/model/*.yaml and configs/compressor/*.yaml alone.
"""

import json
import re

import pytest
from paper_reference import paper_rows, table5, tracked_records
from reporting_fixtures import write_sweep

from scissorbench.cli import main


def _tflops(capsys, *args: str) -> tuple[float, float]:
    assert main(["flops", *args]) == 0
    out = capsys.readouterr().out
    prefill = float(re.search(r"^prefill\s+([\d.]+) TFLOPs", out, re.M)[1])
    total = float(re.search(r"^paper total\s+([\d.]+) TFLOPs", out, re.M)[1])
    return prefill, total


@pytest.mark.parametrize(
    ("args", "row"),
    [
        (["compressor=none"], ("none", 100)),  # the full model
        (["compressor=fastv", "retention=0.5"], ("fastv", 50)),  # K = 3 from its config
        (["compressor=fastv", "retention=0.35"], ("fastv", 35)),
        (["compressor=visionzip", "retention=0.1"], ("visionzip", 10)),  # pre-LLM
    ],
)
def test_flops_command_reproduces_paper_table5(capsys, args, row):
    paper = table5()[(*row, "FLOPs_TFLOPs")]  # the paper's number, not one of ours
    _, total = _tflops(capsys, "model=llava_ov_7b", *args)
    assert round(total, 1) == pytest.approx(paper, abs=1e-9)


def test_flops_command_costs_pllava_by_the_tokens_its_grid_feeds(capsys):
    """The paper's PLLaVA row (3.9 at 10%) assumes the full budget of 627 tokens; PLLaVA's
    largest pooled grid within it is 32 x 6 x 3 = 576 tokens, which is what is costed."""
    from harness.flops import paper_total

    _, total = _tflops(capsys, "model=llava_ov_7b", "compressor=pllava", "retention=0.1")
    assert total == pytest.approx(paper_total(28, 3584, 18944, 6272, 576) / 1e12, abs=5e-4)
    assert round(total, 1) < table5()[("pllava", 10, "FLOPs_TFLOPs")]


def test_flops_command_options(capsys):
    prefill_k0, total_k0 = _tflops(capsys, "model=llava_ov_7b", "compressor=fastv",
                                   "retention=0.1", "layer=0")
    _, pre_llm = _tflops(capsys, "model=llava_ov_7b", "compressor=visionzip", "retention=0.1")
    assert total_k0 == pre_llm  # FastV at K=0 is a pre-LLM method
    prefill_full, _ = _tflops(capsys, "model=llava_ov_7b")
    prefill_16, _ = _tflops(capsys, "model=llava_ov_7b", "frames=16")
    assert prefill_16 < prefill_full / 2  # attention is quadratic in n
    with_text, _ = _tflops(capsys, "model=llava_ov_7b", "text=200")
    assert with_text > prefill_full
    _, small = _tflops(capsys, "model=llava_ov_0.5b")
    assert small < 5


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["model=llava_ov_7b", "compressor=fastv"], "needs retention"),
        (["model=llava_ov_7b", "compressor=fastv", "retention=1.5"], "retention"),
        (["model=llava_ov_7b", "colour=red"], "colour"),
        (["model=tiny", "compressor=none"], "no `llm"),
        (["model=nope"], "unknown model"),
        (["model=llava_ov_7b", "compressor=fastv", "retention=abc"], "abc"),
        (["compressor=fastv"], "model=..."),
        (["llava_ov_7b"], "key=value"),
    ],
)
def test_flops_command_errors_in_one_line(capsys, args, message):
    assert main(["flops", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_report_command_writes_everything(tmp_path, capsys):
    runs = write_sweep(tmp_path / "runs")
    out = tmp_path / "report"
    assert main(["report", f"results_dir={runs}", f"output_dir={out}", "reference=true"]) == 0
    assert (out / "report.html").is_file()
    assert (out / "tables" / "paper_table7.tex").is_file()
    assert len(list((out / "figures").rglob("*.png"))) == len(list((out / "figures")
                                                                   .rglob("*.pdf"))) > 0
    assert "report.html" in capsys.readouterr().out
    assert main(["report", f"results_dir={tmp_path / 'missing'}"]) == 2


# the paper's columns that average over several benchmarks, or are FLOPs: no task of their own
_AGGREGATES = {"avg_relative_pct", "avg_rel", "avg_perf_ratio_pct", "FLOPs_TFLOPs",
               "FLOPs_ratio_pct"}


def _benchmark(column: str) -> str | None:
    if column in _AGGREGATES:
        return None
    prefix = column.split("_")[0]
    return "ActivityNet-QA" if prefix == "ActivityNet" else prefix  # one lmms-eval task


def test_reference_command_writes_records(tmp_path, capsys):
    """One record per (table, base model, method, retention, benchmark), counted here from the
    paper's rows; the files are the tracked results/reference/ ones."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "stale.json").write_text("{}")
    assert main(["reference", f"output_dir={out}", "papers=[scissor]"]) == 0
    assert not (out / "stale.json").exists()
    groups = {(r["table"], r["base_model"], r["method"], r["retention_pct"],
               _benchmark(r["benchmark"])) for r in paper_rows()}
    written = {p.name: json.loads(p.read_text()) for p in out.glob("*.json")}
    assert len(written) == len(groups)
    assert written == tracked_records()

"""`scissorbench flops`, `report` and `reference`: key=value arguments, one-line errors.

The FLOPs formulas themselves are tested in test_flops.py; here the command must reproduce the
paper's Table 5 from configs/model/*.yaml and configs/compressor/*.yaml alone.
"""

import re

import pytest
from reporting_fixtures import write_sweep

from scissorbench.cli import main


def _tflops(capsys, *args: str) -> tuple[float, float]:
    assert main(["flops", *args]) == 0
    out = capsys.readouterr().out
    prefill = float(re.search(r"^prefill\s+([\d.]+) TFLOPs", out, re.M)[1])
    total = float(re.search(r"^paper total\s+([\d.]+) TFLOPs", out, re.M)[1])
    return prefill, total


@pytest.mark.parametrize(
    ("args", "paper"),
    [
        (["compressor=none"], 41.4),  # the full model
        (["compressor=fastv", "retention=0.5"], 21.4),  # K = 3 from configs/compressor/fastv
        (["compressor=fastv", "retention=0.35"], 16.1),
        (["compressor=visionzip", "retention=0.1"], 3.9),  # pre-LLM
        (["compressor=pllava", "retention=0.1"], 3.9),
    ],
)
def test_flops_command_reproduces_paper_table5(capsys, args, paper):
    _, total = _tflops(capsys, "model=llava_ov_7b", *args)
    assert round(total, 1) == paper


def test_flops_command_options(capsys):
    prefill_k0, total_k0 = _tflops(capsys, "model=llava_ov_7b", "compressor=fastv",
                                   "retention=0.1", "layer=0")
    _, pre_llm = _tflops(capsys, "model=llava_ov_7b", "compressor=pllava", "retention=0.1")
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


def test_reference_command_writes_records(tmp_path, capsys):
    from reporting.reference import DEFAULT_CSV

    if not DEFAULT_CSV.exists():
        pytest.skip(f"paper CSV not found: {DEFAULT_CSV}")
    (tmp_path / "stale.json").write_text("{}")
    assert main(["reference", f"output_dir={tmp_path}"]) == 0
    assert not (tmp_path / "stale.json").exists()
    assert len(list(tmp_path.glob("*.json"))) == 339

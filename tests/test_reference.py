"""The six papers' CSVs as reference records, checked against the CSVs read with the csv module.

Oracle: the tracked CSVs in results/papers/ (hand-transcribed from the papers), read here
without the reporting code; the method names the tests expect are written from each paper's
README caveats (FastVID's VisionZip* prunes after pooling, HoliTom's "w/o M" is its pre-LLM
stage), not imported from reporting.reference.
"""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from pathlib import Path

import pytest
from reporting_fixtures import ours_record, write_records

from reporting.benchmarks import align
from reporting.compare import paper_vs_ours, scored
from reporting.load import load_records, records_frame
from reporting.reference import REFERENCE_DIR
from scissorbench.cli import main

ROOT = Path(__file__).resolve().parents[1]
PAPERS = ROOT / "results" / "papers"
FILES = {  # arXiv id -> CSV
    "arXiv:2506.21862v1": "llava_scissor_arxiv2506.21862v1.csv",
    "arXiv:2503.11187": "fastvid_arxiv2503.11187.csv",
    "arXiv:2505.21334": "holitom_arxiv2505.21334.csv",
    "arXiv:2505.14454": "vidcom2_arxiv2505.14454.csv",
    "arXiv:2602.08024": "flashvid_arxiv2602.08024.csv",
    "arXiv:2411.15024": "dycoke_arxiv2411.15024.csv",
}


def _rows(name: str) -> list[dict[str, str]]:
    with (PAPERS / name).open(newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def stored() -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(REFERENCE_DIR.glob("*.json"))]


def test_every_csv_cell_is_one_metric_of_one_record(stored):
    by_paper: dict[str, list[dict]] = defaultdict(list)
    for record in stored:
        by_paper[record["versions"]["paper"]].append(record)
    assert set(by_paper) == set(FILES)
    for arxiv, name in FILES.items():
        rows = _rows(name)
        cells = defaultdict(list)
        for record in by_paper[arxiv]:
            ref = record["reference"]
            for column, metric in record["metrics"].items():
                cells[(ref["table"], ref["paper_model"], ref["paper_method"],
                       ref["retention_printed"] or "", column)].append(metric["value"])
        assert sum(map(len, cells.values())) == len(rows), name
        for row in rows:
            ident = (row["table"], row["base_model"], row["method"], row["retention_pct"],
                     row["benchmark"])
            assert cells[ident] == [float(row["score"])], (name, ident)


def test_records_keep_the_papers_retention_definition_note_and_source(stored):
    fastvid = [r for r in stored if r["reference"]["paper"] == "FastVID"]
    fastv = next(r for r in fastvid if r["reference"]["table"] == "table1_llava_ov_7b"
                 and r["reference"]["paper_method"] == "FastV"
                 and r["reference"]["retention_printed"] == "25" and "MVBench" in r["metrics"])
    assert "100%/25%" in fastv["reference"]["notes"]["MVBench"]
    assert "video tokens entering the LLM" in fastv["reference"]["retention_definition"]
    assert fastv["reference"]["source"].startswith("arXiv 2503.11187")
    assert fastv["settings"]["retention"] == 0.25 and fastv["settings"]["task"] == "mvbench"
    dycoke = {r["reference"]["retention_definition"] for r in stored
              if r["reference"]["paper"] == "DyCoke"}
    assert len(dycoke) == 1 and "decode-time KV pruning" in dycoke.pop()


def test_method_names_map_to_ours_only_where_the_method_isours_record(stored):
    names = {(r["reference"]["paper"], r["reference"]["paper_method"]):
             r["settings"]["compressor"]["name"] for r in stored}
    assert names[("FastVID", "VisionZip*")] == "visionzip"  # after pooling, as ours
    assert names[("FastVID", "VisionZip")] == "VisionZip"  # before pooling: not ours
    assert names[("HoliTom", "HoliTom (w/o M)")] == "holitom"  # the pre-LLM stage only
    assert names[("HoliTom", "HoliTom")] == "HoliTom"  # with the in-LLM merge: not ours
    assert names[("VidCom2", "Upper Bound")] == "none"
    assert names[("DyCoke", "Full Tokens")] == "none"
    assert names[("FlashVID", "FlashVID")] == "FlashVID"
    assert names[("VidCom2", "VidCom2")] == "vidcom2"


def test_dycoke_table2_rows_without_a_printed_retention_have_none(stored):
    rows = [r for r in _rows(FILES["arXiv:2411.15024"]) if not r["retention_pct"]]
    assert rows  # DyCoke Table 2 prints no retention for FastV and PruMerge
    blank = [r for r in stored if r["reference"]["paper"] == "DyCoke"
             and r["reference"]["retention_printed"] is None]
    assert blank and all(r["settings"]["retention"] is None for r in blank)


def test_reference_command_rejects_an_unknown_paper(tmp_path, capsys):
    assert main(["reference", "papers=[fastvid,nope]", f"output_dir={tmp_path}"]) == 2
    assert "unknown paper 'nope'" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


# --- ours beside the papers ------------------------------------------------------------------

def _dense(rows: list[dict[str, str]], table: str, model: str, benchmark: str) -> float:
    return next(float(r["score"]) for r in rows if r["table"] == table
                and r["base_model"] == model and r["benchmark"] == benchmark
                and (r["note"] or "").startswith("dense model"))


def test_ours_beside_every_paper_that_reported_the_cell():
    """FastV at 25% on LLaVA-OV-7B MVBench is in four papers' tables, each with its own dense
    score: paper / ours / delta and the relative scale, computed here from the CSVs."""
    ours = [ours_record("llava_ov_7b", "none", None, "mvbench", "mvbench_accuracy,none", 60.0),
            ours_record("llava_ov_7b", "fastv", 0.25, "mvbench", "mvbench_accuracy,none",
                        57.0)]
    frame = records_frame(ours + [r for r, _ in _reference_records()])
    table = paper_vs_ours(scored(align(frame, dedupe=False)))
    fastv = table[(table["method"] == "fastv") & (table["benchmark"] == "MVBench")]
    expected = {}
    for arxiv, name in FILES.items():
        rows = _rows(name)
        for r in rows:
            if (r["base_model"], r["method"], r["retention_pct"], r["benchmark"]) == (
                    "LLaVA-OV-7B", "FastV", "25", "MVBench"):
                full = _dense(rows, r["table"], "LLaVA-OV-7B", "MVBench")
                expected[(arxiv, r["table"])] = (float(r["score"]), full)
    assert len(expected) == 4  # FastVID, HoliTom, VidCom2, FlashVID
    arxiv_of = {"FastVID": "arXiv:2503.11187", "HoliTom": "arXiv:2505.21334",
                "VidCom2": "arXiv:2505.14454", "FlashVID": "arXiv:2602.08024"}
    got = {(arxiv_of[row["paper"]], row["table"]): row for row in fastv.to_dict("records")}
    assert set(got) == set(expected)
    for ident, (paper, full) in expected.items():
        row = got[ident]
        assert row["paper_score"] == pytest.approx(paper)
        assert row["ours_score"] == pytest.approx(57.0)
        assert row["delta"] == pytest.approx(57.0 - paper)
        assert row["paper_relative"] == pytest.approx(100 * paper / full)
        assert row["ours_relative"] == pytest.approx(100 * 57.0 / 60.0)
        assert row["delta_relative"] == pytest.approx(100 * 57.0 / 60.0 - 100 * paper / full)
    full_rows = table[(table["method"] == "none") & (table["benchmark"] == "MVBench")]
    assert set(full_rows["paper_relative"]) == {100.0}
    assert {"VidCom2", "FastVID"} <= set(full_rows["paper"])  # both print 56.9 for it


def _reference_records():
    from reporting.load import read_folders

    return read_folders(REFERENCE_DIR).records


def test_report_with_references_writes_the_comparison(tmp_path):
    runs = write_records(tmp_path / "runs", [
        ours_record("llava_ov_7b", "none", None, "mvbench", "mvbench_accuracy,none", 60.0),
        ours_record("llava_ov_7b", "fastv", 0.25, "mvbench", "mvbench_accuracy,none", 57.0)])
    out = tmp_path / "report"
    assert main(["report", f"results_dir={runs}", f"output_dir={out}", "reference=true"]) == 0
    rows = list(csv.DictReader((out / "tables" / "paper_vs_ours.csv").open()))
    papers = {r["paper"] for r in rows if r["method"] == "fastv"}
    assert papers == {"FastVID", "HoliTom", "VidCom2", "FlashVID"}
    assert "paper_vs_ours" in (out / "report.html").read_text()
    assert len(load_records(runs)) == 2

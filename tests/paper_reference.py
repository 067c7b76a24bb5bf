"""The paper's numbers for the tests, read without the reporting code.

Source: the paper's CSV in `../shared/reference/` (beside the repository) when it is there, else
the tracked records in `results/reference/`, which every clone has; the tests never skip for want
of `../shared`.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAPER_CSV = ROOT.parent / "shared" / "reference" / "llava_scissor_arxiv2506.21862v1.csv"
TRACKED = ROOT / "results" / "reference"
COLUMNS = ("table", "base_model", "method", "retention_pct", "benchmark", "score")

# paper method -> (registry name, parameters the paper states); written here from the paper's
# method descriptions, not imported from reporting.reference
_METHODS = {
    "LLaVA-Scissor": ("scc", {}),
    "FastV": ("fastv", {"layer": 3}),
    "VisionZip": ("visionzip", {}),
    "PLLaVA": ("pllava", {}),
    "Random+Merge": ("random", {"merge": True}),
    "Uniform+Merge": ("uniform", {"merge": True}),
    "L2Norm+Merge": ("l2norm", {"merge": True}),
}


def registry_name(paper_method: str) -> str:
    """Our compressor name of a paper method ("none" for the full model, else the paper's)."""
    if paper_method.endswith("(full)"):
        return "none"
    if paper_method == "SCC+Merge (LLaVA-Scissor)":
        return "scc"
    return _METHODS.get(paper_method, (paper_method, {}))[0]


def _paper_method(record: dict) -> str:
    compressor = record["settings"]["compressor"]
    if compressor["name"] == "none":
        return f"{record['settings']['model']['name']} (full)"
    for paper, (name, params) in _METHODS.items():
        if (name, params) == (compressor["name"], compressor["params"]):
            return paper
    return compressor["name"]


def _rows_from_records() -> list[dict[str, str]]:
    rows = []
    for path in sorted(TRACKED.glob("*.json")):
        record = json.loads(path.read_text())
        pct = round(100 * record["retention"]["target"])
        for column, metric in record["metrics"].items():
            rows.append({
                "table": record["versions"]["table"],
                "base_model": record["settings"]["model"]["name"],
                "method": _paper_method(record),
                "retention_pct": str(pct),
                "benchmark": column,
                "score": repr(metric["value"]),
            })
    return rows


def paper_rows() -> list[dict[str, str]]:
    """The paper's cells as CSV rows (columns `COLUMNS`)."""
    if PAPER_CSV.exists():
        with PAPER_CSV.open(newline="") as handle:
            return list(csv.DictReader(handle))
    return _rows_from_records()


def paper_csv(directory: Path) -> Path:
    """A path to the paper's CSV: the real one, else one rebuilt from the tracked records."""
    if PAPER_CSV.exists():
        return PAPER_CSV
    path = Path(directory) / PAPER_CSV.name
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, COLUMNS)
        writer.writeheader()
        writer.writerows(_rows_from_records())
    return path


def table5() -> dict[tuple[str, int, str], float]:
    """Table 5 (FLOPs): (registry name, retention %, column) -> the paper's value."""
    return {
        (registry_name(r["method"]), int(r["retention_pct"]), r["benchmark"]): float(r["score"])
        for r in paper_rows()
        if r["table"] == "table5_flops"
    }

"""The paper's numbers for the tests, read without the reporting code.

Source: the paper's CSV as tracked in `results/papers/` (a copy of `../shared/reference/`), read
with the csv module; `TRACKED` is the folder of the converted records, `results/reference/`.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAPER_CSV = ROOT / "results" / "papers" / "llava_scissor_arxiv2506.21862v1.csv"
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


def paper_rows() -> list[dict[str, str]]:
    """The paper's cells as CSV rows (columns `COLUMNS`)."""
    with PAPER_CSV.open(newline="") as handle:
        return list(csv.DictReader(handle))


def tracked_records(arxiv: str = "arXiv:2506.21862v1") -> dict[str, dict]:
    """The tracked records of one paper (default: LLaVA-Scissor), file name -> record."""
    out = {}
    for path in sorted(TRACKED.glob("*.json")):
        record = json.loads(path.read_text())
        if record["versions"]["paper"] == arxiv:
            out[path.name] = record
    return out


def table5() -> dict[tuple[str, int, str], float]:
    """Table 5 (FLOPs): (registry name, retention %, column) -> the paper's value."""
    return {
        (registry_name(r["method"]), int(r["retention_pct"]), r["benchmark"]): float(r["score"])
        for r in paper_rows()
        if r["table"] == "table5_flops"
    }

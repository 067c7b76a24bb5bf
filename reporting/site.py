"""The static leaderboard site: one folder that opens from `file://` with no network.

    output_dir/
      index.html             per backbone and benchmark: methods ranked by mean % of the full
                             model across retentions, accuracy-vs-retention and -vs-FLOPs curves;
                             the efficiency tables (ours); ours beside the papers; filters
      methods/<method>.html  one page per method: paper, official code and commit, fidelity,
                             knobs, retention mapping, the papers that report it
      assets/                plotly.min.js (from the installed plotly package), site.js, site.css
      data.js                the cells and curves the page draws (a script, as file:// pages
                             cannot fetch JSON)

Every score cell says where it came from (`title` on hover, the provenance panel on click): ours
(run keys, lmms-eval / transformers / torch versions, git commit, lock hash, the port's
fidelity) or a paper (paper, table, the paper's own method name, its retention definition and the
cell's transcription note). Rendering: Jinja2 templates (`reporting/site/`), Plotly.js for the
curves; nothing is fetched at view time.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import jinja2
import pandas as pd

from reporting.benchmarks import BENCHMARKS, align
from reporting.compare import paper_vs_ours, scored
from reporting.efficiency import efficiency_tables
from reporting.load import Loaded, read_folders, records_frame, results_folders
from reporting.reference import PAPERS, REFERENCE_DIR, backbone_of

__all__ = ["FLOPS_FORMULA", "Site", "build_site", "method_info"]

_HERE = Path(__file__).resolve().parent
_TEMPLATES = _HERE / "site"
_ROOT = _HERE.parent
FLOPS_FORMULA = (
    "prefill FLOPs of the visual tokens, one formula for every source (FastV's, METHODS.md "
    "section 8): K F(N_v) + (L - K) F(M), F(n) = 4nd^2 + 2n^2d + 2ndm, with L layers, hidden d, "
    "FFN m of the backbone's LLM, N_v = frames x 196 visual tokens (the recorded count for ours), "
    "M = retention x N_v kept, K the pruning layer (0 before the LLM); text tokens not counted"
)


@dataclass
class Site:
    """What `build_site` wrote and read."""

    index: Path
    pages: list[Path] = field(default_factory=list)
    read: Loaded = field(default_factory=Loaded)
    methods: list[str] = field(default_factory=list)
    sections: int = 0


def build_site(results_dirs: Sequence[str | os.PathLike[str]], output_dir: str | os.PathLike[str],
               reference: bool = True,
               reference_dir: str | os.PathLike[str] = REFERENCE_DIR) -> Site:
    """Read our records (and the papers' if `reference`) and write the site to `output_dir`."""
    out = Path(output_dir)
    folders = results_folders(results_dirs) + ([Path(reference_dir)] if reference else [])
    loaded = read_folders(*folders)
    records = records_frame(loaded.records)
    cells = scored(align(records, dedupe=False))
    cells = cells[cells["benchmark"].map(lambda b: BENCHMARKS[b].headline)]
    by_key = {r["key"]: r for r, _ in loaded.records}
    rows = [_cell(c, by_key) for c in cells.to_dict("records")]
    sections = _sections(rows)
    methods = sorted({r["method"] for r in rows})
    page_of = {m: f"methods/{_slug(m)}.html" for m in methods}
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    context = {
        "stamp": stamp, "sections": sections, "formula": FLOPS_FORMULA,
        "backbones": sorted({s["backbone"] for s in sections}),
        "benchmarks": sorted({s["benchmark"] for s in sections}),
        "retentions": sorted({r["retention_label"] for r in rows if r["method"] != "none"},
                             key=lambda r: -1.0 if r == NOT_PRINTED else float(r),
                             reverse=True),
        "methods": [(m, page_of[m]) for m in methods if m in _harness()],
        "paper_methods": [(m, page_of[m]) for m in methods if m not in _harness()],
        "page_of": page_of,
        "efficiency": _efficiency(records), "comparison": _comparison(paper_vs_ours(cells)),
        "summary": loaded.summary(), "folders": [str(f) for f in folders],
        "papers": [{"name": p.name, "arxiv": p.arxiv, "venue": p.venue, "code": p.code,
                    "retention": p.retention} for p in PAPERS.values()],
    }
    site = Site(index=out / "index.html", read=loaded, methods=methods, sections=len(sections))
    _write(out, context, {m: method_info(m, rows) for m in methods}, site)
    return site


def _write(out: Path, context: dict[str, Any], pages: dict[str, dict[str, Any]],
           site: Site) -> None:
    """The folder: assets, data.js, index.html and one page per method (the method pages of
    an earlier build in the same folder are removed first, so none is stale)."""
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(_TEMPLATES),
                             autoescape=jinja2.select_autoescape(["html", "j2"]),
                             undefined=jinja2.StrictUndefined)
    _assets(out)
    charts = {s["id"]: s["chart"] for s in context["sections"]}
    (out / "data.js").write_text("window.SCISSORBENCH = " + json.dumps(
        {"charts": charts}, default=_json) + ";\n")
    site.index.write_text(env.get_template("index.html.j2").render(**context))
    folder = out / "methods"
    folder.mkdir(exist_ok=True)
    for stale in folder.glob("*.html"):
        stale.unlink()
    for method, info in pages.items():
        path = out / context["page_of"][method]
        path.write_text(env.get_template("method.html.j2").render(stamp=context["stamp"], **info))
        site.pages.append(path)


def _harness() -> set[str]:
    import compressors

    return set(compressors.available())


def _json(value: Any) -> Any:
    return None if isinstance(value, float) and math.isnan(value) else str(value)


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in text)


def _assets(out: Path) -> None:
    """Bundle what the page needs: Plotly.js from the installed plotly package, our JS/CSS."""
    import plotly

    assets = out / "assets"
    assets.mkdir(parents=True, exist_ok=True)
    bundle = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    if not bundle.is_file():
        raise FileNotFoundError(f"plotly.min.js not found in the plotly package ({bundle}); "
                                "reinstall plotly (pip install -c requirements.lock plotly)")
    shutil.copyfile(bundle, assets / "plotly.min.js")
    for name in ("site.js", "site.css"):
        shutil.copyfile(_TEMPLATES / name, assets / name)


def _num(value: Any) -> float | None:
    return float(value) if _present(value) else None


NOT_PRINTED = "n/p"
"""The retention label of a paper cell whose paper prints no retention (DyCoke Table 2)."""


def _pct(retention: float | None) -> str:
    return NOT_PRINTED if retention is None else f"{100 * retention:.4g}"


def _provenance(cell: Mapping[str, Any], by_key: Mapping[str, dict]) -> str:
    """One line saying where a cell's number came from."""
    keys = [k for k in str(cell["keys"]).split(",") if k]
    if cell["source"] == "ours":
        parts = [f"ours: run {', '.join(keys)}",
                 f"lmms-eval {cell['lmms_eval']}", f"transformers {cell['transformers']}",
                 f"torch {cell['torch']}", f"commit {str(cell['git_commit'])[:12]}",
                 f"lock {cell['lock']}"]
        if _present(cell.get("fidelity")):
            parts.append(f"fidelity {cell['fidelity']}"
                         + (f" ({cell['official_code']})" if _present(cell['official_code'])
                            else ""))
        if cell["seeds"] > 1:
            parts.append(f"mean of {cell['seeds']} seeds")
        return "; ".join(parts)
    record = by_key.get(keys[0], {}) if keys else {}
    ref = record.get("reference") or {}
    columns = BENCHMARKS[cell["benchmark"]].paper_columns
    note = next((ref.get("notes", {}).get(c) for c in columns if ref.get("notes", {}).get(c)), "")
    parts = [f"paper: {ref.get('paper')} ({ref.get('arxiv')}, {ref.get('venue')}), "
             f"table {ref.get('table')}",
             f"printed as {ref.get('paper_method')!r} at "
             f"{ref.get('retention_printed') or 'no printed'}% retention",
             f"retention there: {ref.get('retention_definition')}", f"record {keys[0]}"]
    if note:
        parts.append(f"note: {note}")
    return "; ".join(parts)


def _present(value: Any) -> bool:
    """Whether `value` is there: not None, NaN or pandas' NA."""
    return value is not None and not pd.isna(value)


def _cell(cell: Mapping[str, Any], by_key: Mapping[str, dict]) -> dict[str, Any]:
    """A score cell for the templates: where it sits, what it says, where it came from."""
    ours = cell["source"] == "ours"
    shown = cell["label"] if ours else cell["paper_method"]
    return {
        "backbone": cell["backbone"], "benchmark": cell["benchmark"], "entry": cell["entry"],
        "source": "ours" if ours else "paper", "method": cell["method"],
        "shown": str(shown),
        "retention": _num(cell["retention"]), "retention_label": _pct(_num(cell["retention"])),
        "score": _num(cell["score"]), "relative": _num(cell["relative"]),
        "flops": _num(cell["analytic_prefill"]), "frames": _num(cell["max_frames"]),
        "provenance": _provenance(cell, by_key),
    }


def _sections(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One section per (backbone, benchmark): the ranking table and the two curves."""
    frame = pd.DataFrame(rows)
    if frame.empty:
        return []
    sections = []
    for (backbone, benchmark), group in frame.groupby(["backbone", "benchmark"], sort=True):
        ident = _slug(f"{backbone}__{benchmark}")
        known = sorted({r for r in group["retention"].dropna() if r < 1.0}, reverse=True)
        retentions = [_pct(r) for r in known] + (
            [NOT_PRINTED] if group["retention"].isna().any() else [])
        lines = []
        for (entry, shown, method), line in group.groupby(["entry", "shown", "method"],
                                                           sort=False):
            by_r = {r["retention_label"]: r for r in line.to_dict("records")}
            relative = [by_r[r]["relative"] for r in retentions
                        if r in by_r and by_r[r]["relative"] is not None]
            lines.append({
                "entry": entry, "shown": shown, "method": method,
                "source": line["source"].iloc[0],
                "full": method == "none",
                "cells": [by_r.get(r) for r in retentions],
                "full_cell": by_r.get("100"),
                "mean": sum(relative) / len(relative) if relative else None,
                "covered": len(relative),
                "retentions": " ".join(by_r),
            })
        ranked = sorted([x for x in lines if not x["full"]],
                        key=lambda x: (x["mean"] is None, -(x["mean"] or 0), x["shown"]))
        for rank, line in enumerate(ranked, 1):
            line["rank"] = rank if line["mean"] is not None else None
        unit = BENCHMARKS[benchmark].unit
        sections.append({
            "id": ident, "backbone": backbone, "benchmark": benchmark, "unit": unit,
            "retentions": [(r, r if r == NOT_PRINTED else f"{r}%") for r in retentions],
            "full": [x for x in lines if x["full"]], "ranked": ranked,
            "chart": _chart(lines, unit),
        })
    return sections


def _chart(lines: list[dict[str, Any]], unit: str) -> dict[str, Any]:
    """The curves of one section: per line, score against retention % and against TFLOPs."""
    traces = []
    for line in lines:
        points = [c for c in [*line["cells"], line["full_cell"]]
                  if c and c["score"] is not None and c["retention"] is not None]
        points.sort(key=lambda c: c["retention"])
        traces.append({
            "name": f"{line['shown']} · {line['entry']}", "source": line["source"],
            "retention": [100 * c["retention"] for c in points],
            "tflops": [None if c["flops"] is None else c["flops"] / 1e12 for c in points],
            "score": [c["score"] for c in points],
            "text": [c["provenance"] for c in points],
        })
    return {"unit": unit, "traces": traces}


def _efficiency(records: pd.DataFrame) -> list[dict[str, Any]]:
    """Our efficiency tables, per backbone, as rows for the template."""
    out = []
    for model, table in efficiency_tables(records).items():
        named = any(name is not None for name in table.index.names)
        frame = table.reset_index() if named else table
        rows = []
        for row in frame.to_dict("records"):
            retention = row.get("retention")
            rows.append({"cells": [_fmt(v) for v in row.values()],
                         "retention": "" if not _present(retention) else _pct(float(retention))})
        out.append({"backbone": backbone_of(str(model)), "model": model,
                    "columns": list(frame.columns), "rows": rows})
    return out


def _comparison(table: pd.DataFrame) -> dict[str, Any]:
    columns = [c for c in table.columns if c not in ("ours_keys",)]
    rows = [{"cells": [_fmt(r[c]) for c in columns], "backbone": r["backbone"],
             "benchmark": r["benchmark"], "retention": _pct(float(r["retention"])),
             "title": f"ours: run {r['ours_keys']}"} for r in table.to_dict("records")]
    return {"columns": columns, "rows": rows}


def _fmt(value: Any) -> str:
    """A table value as shown: 4 significant digits, exponent form for very large or small
    numbers, an em dash for a missing one (never 0)."""
    if not _present(value):
        return "—"
    if isinstance(value, float):
        small = value != 0 and abs(value) < 1e-3
        return f"{value:.3e}" if small or abs(value) >= 1e5 else f"{value:.4g}"
    return str(value)


def method_info(method: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """What a method's page says: the registry's provenance and knobs where the harness has the
    method, the docs' note, and the papers (and tables) that report it."""
    import compressors

    info: dict[str, Any] = {"method": method, "in_harness": method in compressors.available()}
    if info["in_harness"]:
        prov = compressors.provenance(method)
        info["provenance"] = prov
        config = _ROOT / "configs" / "compressor" / f"{method}.yaml"
        info["config"] = config.read_text() if config.is_file() else ""
        info["defaults"] = compressors.defaults(method)
        doc = _ROOT / "docs" / "methods" / f"{method}.md"
        module = __import__(f"compressors.{method}", fromlist=["__doc__"])
        info["note_html"] = _markdown(doc.read_text()) if doc.is_file() else ""
        info["docstring_html"] = _markdown((module.__doc__ or "").strip())
    reported = sorted({(r["entry"], r["shown"], r["backbone"]) for r in rows
                       if r["method"] == method and r["source"] == "paper"})
    info["reported"] = [{"entry": e, "shown": s, "backbone": b} for e, s, b in reported]
    info["ours"] = sorted({(r["backbone"], r["retention_label"]) for r in rows
                           if r["method"] == method and r["source"] == "ours"})
    return info


def _markdown(text: str) -> str:
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark").enable("table").render(text)

"""Every table and figure of a results folder, plus one self-contained HTML file to share.

    output_dir/
      report.html                         tables inline, figures as base64 PNG
      tables/runs.{md,csv,tex}            every run, its status and error
      tables/<model>/<benchmark>.*        score, methods x retention
      tables/<model>/<benchmark>_relative.*   % of the full model
      tables/<model>/average_relative.*   mean % of full over the full model's benchmarks
      tables/paper_table{1,2,3,5,7}.*     paper / ours / delta (reference=true)
      tables/paper_vs_ours.*              every paper cell ours also ran, six papers: paper /
                                          ours / delta, absolute and relative (reference=true)
      tables/efficiency/<model>.*         stage times, TTFT, peak memory, speedups (ours)
      figures/<model>/<benchmark>_vs_retention.{png,pdf}, <benchmark>_vs_flops.*,
      figures/<model>/relative_average.*
"""

from __future__ import annotations

import base64
import html
import os
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from reporting.benchmarks import BENCHMARKS, align
from reporting.compare import paper_vs_ours, scored
from reporting.efficiency import efficiency_tables
from reporting.load import Loaded, read_folders, records_frame, results_folders
from reporting.plots import (
    plot_accuracy_vs_flops,
    plot_accuracy_vs_retention,
    plot_relative_average,
    save_figure,
)
from reporting.reference import REFERENCE_DIR, paper_model_of
from reporting.tables import (
    PAPER_TABLES,
    average_table,
    benchmark_table,
    method_order,
    paper_layout,
    pct,
    relative_table,
    to_html,
    write_table,
)

__all__ = ["Report", "build_report", "runs_table"]


@dataclass
class Report:
    """What `build_report` wrote."""

    html: Path
    tables: list[Path] = field(default_factory=list)
    figures: list[Path] = field(default_factory=list)
    read: Loaded = field(default_factory=Loaded)  # files read, skipped, duplicates, inf/nan


@dataclass
class _Section:
    title: str
    parts: list[str] = field(default_factory=list)


def _slug(text: str) -> str:
    """A file name for `text`: `micro (contiguous)` -> `micro_contiguous`."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")


def runs_table(records: pd.DataFrame) -> pd.DataFrame:
    """One row per run of ours: what it ran, its status and why it failed."""
    ours = records[records["source"] == "ours"].drop_duplicates("key")
    if ours.empty:
        return pd.DataFrame(columns=["key", "model", "method", "retention", "task", "seed",
                                     "status", "samples", "failed", "error"])
    table = ours.assign(retention=ours["retention"].map(lambda r: pct(r) if pd.notna(r) else None),
                        error=ours["error"].map(lambda e: None if pd.isna(e) else str(e)[:120]))
    table = table[["key", "model", "label", "retention", "task", "seed", "status", "samples",
                   "failed", "error"]].rename(columns={"label": "method"})
    return table.sort_values(["status", "model", "task", "method"]).reset_index(drop=True)


def build_report(results_dir: str | os.PathLike[str], output_dir: str | os.PathLike[str],
                 reference: bool = False,
                 reference_dir: str | os.PathLike[str] = REFERENCE_DIR) -> Report:
    """Load `results_dir` (its records, or those of every folder below it that holds some, as
    `results/demo`'s `<model>/<policy>/runs`; `reporting.load.results_folders`) and the papers'
    records if `reference`, write everything; files
    that are no record are skipped and counted in `Report.read`, never a crash."""
    out = Path(output_dir)
    loaded = read_folders(*results_folders([results_dir]),
                          *([reference_dir] if reference else []))
    records = records_frame(loaded.records)
    aligned = align(records)
    report = Report(html=out / "report.html", read=loaded)
    sections = [_runs_section(records, out, report)]
    ours = aligned[aligned["source"] == "ours"]
    for model in sorted(ours["model"].dropna().unique()):
        sections.append(_model_section(aligned, model, reference, out, report))
    sections.append(_efficiency_section(records, out, report))
    if reference:
        sections.append(_paper_section(records, aligned, out, report))
        sections.append(_comparison_section(records, out, report))
    report.html.parent.mkdir(parents=True, exist_ok=True)
    report.html.write_text(_html(sections, results_dir, records, loaded))
    return report


def _runs_section(records: pd.DataFrame, out: Path, report: Report) -> _Section:
    runs = runs_table(records)
    report.tables += write_table(runs.set_index("key"), out / "tables" / "runs", "Runs")
    failed = int((runs["status"] == "failed").sum())
    section = _Section("Runs")
    section.parts.append(f"<p>{len(runs)} runs, {len(runs) - failed} finished, "
                         f"{failed} failed (failed runs are listed; their cells are missing in "
                         "every table).</p>")
    section.parts.append(to_html(runs.set_index("key")))
    return section


def _model_section(aligned: pd.DataFrame, model: str, reference: bool, out: Path,
                   report: Report) -> _Section:
    paper_model = paper_model_of(model) if reference else None
    tables, figures = out / "tables" / _slug(model), out / "figures" / _slug(model)
    section = _Section(f"Model {model}" + (f" (paper: {paper_model})" if paper_model else ""))
    avg = average_table(aligned, model)
    if not avg.empty:
        caption = f"{model}: mean % of the full model"
        report.tables += write_table(avg, tables / "average_relative", caption, decimals=1)
        section.parts += [f"<h3>{html.escape(caption)}</h3>", to_html(avg, decimals=1)]
        section.parts.append(_figure(plot_relative_average(aligned, model, paper_model),
                                     figures / "relative_average", report))
    have = aligned[(aligned["source"] == "ours") & (aligned["model"] == model)]["benchmark"]
    for benchmark in [b for b in BENCHMARKS if b in set(have)]:
        scores = benchmark_table(aligned, benchmark, model)
        rel = relative_table(aligned, benchmark, model)
        unit = "0-5 score" if BENCHMARKS[benchmark].unit == "0-5" else "%"
        caption = f"{model}, {benchmark} ({unit}), mean over seeds"
        report.tables += write_table(scores, tables / _slug(benchmark), caption)
        report.tables += write_table(rel, tables / f"{_slug(benchmark)}_relative",
                                     f"{model}, {benchmark}, % of the full model", decimals=1)
        section.parts += [f"<h3>{html.escape(benchmark)}</h3>", to_html(scores),
                          "<p>% of the full model:</p>", to_html(rel, decimals=1)]
        section.parts.append(_figure(
            plot_accuracy_vs_retention(aligned, benchmark, model, paper_model),
            figures / f"{_slug(benchmark)}_vs_retention", report))
        section.parts.append(_figure(
            plot_accuracy_vs_flops(aligned, benchmark, model, paper_model),
            figures / f"{_slug(benchmark)}_vs_flops", report))
    return section


def _paper_section(records: pd.DataFrame, aligned: pd.DataFrame, out: Path,
                   report: Report) -> _Section:
    section = _Section("The paper's tables: paper, ours, delta (ours - paper)")
    for name, spec in PAPER_TABLES.items():
        layout = paper_layout(records, aligned, name)
        if layout.empty:
            continue
        layout = layout.set_index(["method", "retention", "row"])
        report.tables += write_table(layout, out / "tables" / f"paper_{name}", spec.title)
        section.parts += [f"<h3>{html.escape(spec.title)}</h3>", to_html(layout)]
    return section


def _comparison_section(records: pd.DataFrame, out: Path, report: Report) -> _Section:
    """Ours beside each of the six papers that reported the same cell (reporting.compare)."""
    table = paper_vs_ours(scored(align(records, dedupe=False)))
    section = _Section("Ours beside the papers (paper_vs_ours): paper / ours / delta, and "
                       "relative to each source's own full model")
    shown = table.drop(columns=["ours_keys"])
    report.tables += write_table(shown, out / "tables" / "paper_vs_ours",
                                 "Ours beside every paper that reported the same cell")
    if table.empty:
        section.parts.append("<p>No cell of ours matches a paper's (same backbone, benchmark, "
                             "method and retention).</p>")
    else:
        section.parts.append(to_html(shown))
    return section


def _efficiency_section(records: pd.DataFrame, out: Path, report: Report) -> _Section:
    """Stage times, time to first token, peak memory and speedups of our runs, per model."""
    section = _Section("Efficiency (ours, per sample)")
    tables = efficiency_tables(records)
    for model, table in tables.items():
        report.tables += write_table(table, out / "tables" / "efficiency" / _slug(str(model)),
                                     f"Efficiency, {model}")
        section.parts += [f"<h3>{html.escape(str(model))}</h3>", to_html(table)]
    if not tables:
        section.parts.append("<p>No runs of ours.</p>")
    return section


def _figure(fig, stem: Path, report: Report) -> str:
    paths = save_figure(fig, stem)
    report.figures += paths
    data = base64.b64encode(paths[0].read_bytes()).decode("ascii")
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(stem.name)}">'
            f"<figcaption>{html.escape(stem.name)}</figcaption></figure>")


_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 13px; }
th, td { padding: 2px 8px; border-bottom: 1px solid #ddd; }
th { border-bottom: 2px solid #444; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.missing { text-align: center; color: #999; }
figure { display: inline-block; margin: 0 1em 1em 0; }
figure img { width: 495px; }
figcaption { font-size: 12px; color: #666; }
"""


def _read_note(loaded: Loaded) -> str:
    """What was read, and every file left out and why (the warnings, kept with the report)."""
    left = [f"<li><code>{html.escape(str(p))}</code>: {html.escape(why)}</li>"
            for p, why in loaded.skipped]
    left += [f"<li><code>{html.escape(str(p))}</code>: a second copy of a key, ignored</li>"
             for p in loaded.duplicates]
    items = f"<ul>{''.join(left)}</ul>" if left else ""
    return f"<p>{html.escape(loaded.summary())}.</p>{items}"


def _html(sections: list[_Section], results_dir: str | os.PathLike[str],
          records: pd.DataFrame, loaded: Loaded) -> str:
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    methods = ", ".join(method_order(records.loc[records["source"] == "ours", "method"]
                                     .dropna().unique()))
    body = [f"<h1>scissorbench report</h1><p>Results: <code>{html.escape(str(results_dir))}"
            f"</code>, generated {stamp}. Methods: {html.escape(methods) or 'none yet'}. "
            "Scores are in the paper's units (% or 0-5 judge score); missing cells are "
            "&mdash;, never 0.</p>", _read_note(loaded)]
    for s in sections:
        body.append(f"<h2>{html.escape(s.title)}</h2>")
        body += s.parts
    return ("<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>scissorbench report"
            f"</title><style>{_CSS}</style></head><body>{''.join(body)}</body></html>\n")

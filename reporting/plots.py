"""Figures at paper column width (3.3 in), PNG and PDF, one colour per method everywhere.

Ours: solid lines, filled markers. The paper: dashed lines, hollow markers, same colour. The
full model (`none`) is a horizontal line (ours solid, the paper's dashed) since it has one
retention. `method_color` is the single palette: every figure, the notebook and the HTML report
take colours from it.
"""

from __future__ import annotations

import io
import os
import zlib
from collections.abc import Sequence
from pathlib import Path

import matplotlib as mpl
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FixedLocator, FuncFormatter, LogLocator, NullFormatter, NullLocator

from reporting.benchmarks import BENCHMARKS
from reporting.cost import analytic_flops
from reporting.tables import average_table, full_model_benchmarks, method_order, summarize

__all__ = [
    "COLUMN_WIDTH",
    "figure_png",
    "method_color",
    "method_marker",
    "plot_accuracy_vs_flops",
    "plot_accuracy_vs_retention",
    "plot_relative_average",
    "save_figure",
]

COLUMN_WIDTH = 3.3  # inches, one column of a two-column paper
HEIGHT = 2.6
DPI = 200
_STYLE = {
    "font.size": 8, "axes.titlesize": 8, "axes.labelsize": 8, "xtick.labelsize": 7,
    "ytick.labelsize": 7, "legend.fontsize": 7, "lines.linewidth": 1.2, "lines.markersize": 4,
    "axes.spines.top": False, "axes.spines.right": False, "savefig.dpi": DPI,
    "pdf.fonttype": 42,
}

# Okabe-Ito colours for the methods of the paper and its ablation, Tol's for the newer methods
# (a paper's "DyCoke" and our `dycoke` are one method: one colour); others get a stable colour
# from the method's name (the same in every figure and session).
_COLORS = {
    "none": "#000000", "scc": "#D55E00", "fastv": "#0072B2", "visionzip": "#009E73",
    "pllava": "#E69F00", "DyCoke": "#CC79A7", "dycoke": "#CC79A7", "uniform": "#56B4E9",
    "random": "#999999", "l2norm": "#8C564B", "fastvid": "#117733", "holitom": "#882255",
    "prunevid": "#44AA99", "vidcom2": "#332288", "scc_official": "#DDCC77",
}
_FALLBACK = ["#332288", "#117733", "#44AA99", "#88CCEE", "#DDCC77", "#CC6677", "#AA4499",
             "#882255", "#661100", "#6699CC"]
_MARKERS = {"none": "o", "scc": "o", "fastv": "s", "visionzip": "^", "pllava": "D",
            "DyCoke": "v", "dycoke": "v", "uniform": "<", "random": ">", "l2norm": "P",
            "fastvid": "*", "holitom": "h", "prunevid": "p", "vidcom2": "d", "scc_official": "o"}
_VARIANT_STYLES = ["-", "-.", ":", (0, (5, 1, 1, 1, 1, 1))]


def method_color(method: str) -> str:
    """The colour of a method (compressor name) in every figure."""
    if method in _COLORS:
        return _COLORS[method]
    return _FALLBACK[zlib.crc32(method.encode()) % len(_FALLBACK)]


def method_marker(method: str) -> str:
    return _MARKERS.get(method, "X")


def save_figure(fig: Figure, stem: str | os.PathLike[str]) -> list[Path]:
    """Write `stem`.png and `stem`.pdf at the figure's size (3.3 x 2.6 in; PNG at 200 dpi)."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [stem.with_suffix(".png"), stem.with_suffix(".pdf")]
    with mpl.rc_context(_STYLE):
        for path in paths:
            fig.savefig(path, dpi=DPI)
    return paths


def figure_png(fig: Figure, dpi: int = DPI) -> bytes:
    """The figure as PNG bytes (for notebooks: `IPython.display.Image(figure_png(fig))`)."""
    buffer = io.BytesIO()
    with mpl.rc_context(_STYLE):
        fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def _figure() -> tuple[Figure, Axes]:
    """A figure on the Agg canvas, outside pyplot (no global state, any session backend)."""
    fig = Figure(figsize=(COLUMN_WIDTH, HEIGHT), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def _rows(aligned: pd.DataFrame, benchmark: str, model: str | None,
          paper_model: str | None) -> pd.DataFrame:
    summary = summarize(aligned)
    summary = summary[summary["benchmark"] == benchmark]
    ours = summary[(summary["source"] == "ours")
                   & ((summary["model"] == model) if model else True)]
    paper = summary[(summary["source"] == "paper") & (summary["model"] == paper_model)]
    return pd.concat([ours, _beside(paper, ours)]) if paper_model else ours


_PAPER_MAIN = ("none", "fastv", "DyCoke", "pllava", "visionzip", "scc")


def _beside(paper: pd.DataFrame, ours: pd.DataFrame) -> pd.DataFrame:
    """The paper's rows of the methods ours has; without ours, the paper's main comparison
    (Tables 1-3, 5, 7), not its ablation rows."""
    methods = set(ours["method"]) if not ours.empty else set(_PAPER_MAIN)
    return paper[paper["method"].isin(methods)]


def _draw(ax: Axes, rows: pd.DataFrame, x: str, y: str) -> None:
    """One line per (source, label); the full model as a horizontal line."""
    for source in ("paper", "ours"):
        mine = rows[rows["source"] == source]
        dashed = source == "paper"
        for method in method_order(mine["method"]):
            labels = sorted(mine.loc[mine["method"] == method, "label"].unique())
            for i, label in enumerate(labels):
                line = mine[mine["label"] == label].dropna(subset=[x, y]).sort_values(x)
                if line.empty:
                    continue
                color = method_color(method)
                if method == "none" and x == "retention":
                    ax.axhline(line[y].mean(), color=color, lw=0.8,
                               ls="--" if dashed else "-", alpha=0.6 if dashed else 0.8,
                               zorder=1)
                    continue
                style = "--" if dashed else _VARIANT_STYLES[i % len(_VARIANT_STYLES)]
                ax.plot(line[x], line[y], ls=style, color=color, marker=method_marker(method),
                        mfc="white" if dashed else color, mec=color, alpha=0.75 if dashed else 1,
                        zorder=2 if dashed else 3)


def _legend(fig: Figure, rows: pd.DataFrame) -> None:
    handles = []
    ours = rows[rows["source"] == "ours"]
    for method in method_order(rows["method"]):
        labels = sorted(ours.loc[ours["method"] == method, "label"].unique()) or [method]
        for i, label in enumerate(labels):
            name = "full model" if method == "none" else _short(label)
            paper_only = ours.empty  # draw the handle the way the paper's lines are drawn
            handles.append(Line2D([], [], color=method_color(method),
                                  marker=None if method == "none" else method_marker(method),
                                  mfc="white" if paper_only else method_color(method),
                                  ls="--" if paper_only else
                                  _VARIANT_STYLES[i % len(_VARIANT_STYLES)], label=name))
    if (rows["source"] == "paper").any() and not ours.empty:
        handles += [Line2D([], [], color="0.3", ls="-", marker="o", label="ours"),
                    Line2D([], [], color="0.3", ls="--", marker="o", mfc="white",
                           label="paper")]
    widest = max((len(h.get_label()) for h in handles), default=0)
    ncol = max(1, min(4, 40 // (widest + 4)))
    lines = -(-len(handles) // ncol)
    if lines > 3:  # grow the figure rather than squeeze the axes
        fig.set_size_inches(COLUMN_WIDTH, HEIGHT + 0.14 * (lines - 3))
    fig.legend(handles=handles, loc="outside lower center", ncol=ncol, frameon=False,
               handlelength=1.8, columnspacing=0.9, fontsize=7)


def _short(label: str, width: int = 30) -> str:
    return label if len(label) <= width else label[: width - 1] + "\u2026"


def _retention_axis(ax: Axes, retentions: Sequence[float]) -> None:
    ticks = sorted({round(r * 100, 2) for r in retentions})
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticklabels([f"{t:g}" for t in ticks])
    ax.set_xlabel("retained visual tokens (%)")


def _unit(benchmark: str) -> str:
    bm = BENCHMARKS.get(benchmark)
    return "score (0-5)" if bm is not None and bm.unit == "0-5" else "accuracy (%)"


def plot_accuracy_vs_retention(aligned: pd.DataFrame, benchmark: str, model: str | None = None,
                               paper_model: str | None = None) -> Figure:
    """Score vs retention (log x) for one benchmark: a line per method, the paper dashed."""
    rows = _rows(aligned, benchmark, model, paper_model)
    with mpl.rc_context(_STYLE):
        fig, ax = _figure()
        _draw(ax, rows.assign(retention=rows["retention"] * 100), "retention", "score")
        _retention_axis(ax, rows.dropna(subset=["score"])["retention"])
        ax.set_ylabel(f"{benchmark} {_unit(benchmark)}")
        ax.set_title(_title(benchmark, model, paper_model))
        ax.grid(True, lw=0.3, alpha=0.5)
        _legend(fig, rows.dropna(subset=["score"]))
    return fig


def plot_accuracy_vs_flops(aligned: pd.DataFrame, benchmark: str, model: str | None = None,
                           paper_model: str | None = None) -> Figure:
    """Score vs prefill TFLOPs (log x). Ours: the measured prefill FLOPs of the run (text tokens
    included) where recorded, else analytic; the paper: analytic, visual tokens only (FastV
    convention, METHODS.md section 8)."""
    rows = aligned[(aligned["status"] == "finished") & (aligned["benchmark"] == benchmark)]
    rows = rows[((rows["source"] == "ours") & ((rows["model"] == model) if model else True))
                | ((rows["source"] == "paper") & (rows["model"] == paper_model))].copy()
    rows = pd.concat([rows[rows["source"] == "ours"],
                      _beside(rows[rows["source"] == "paper"], rows[rows["source"] == "ours"])])
    analytic = analytic_flops(rows)
    rows["prefill_flops"] = rows["prefill_flops"].where(rows["prefill_flops"].notna(), analytic)
    summary = summarize(rows)
    summary["tflops"] = summary["prefill_flops"] / 1e12
    with mpl.rc_context(_STYLE):
        fig, ax = _figure()
        _draw(ax, summary, "tflops", "score")
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("prefill TFLOPs")
        ax.set_ylabel(f"{benchmark} {_unit(benchmark)}")
        ax.set_title(_title(benchmark, model, paper_model))
        ax.grid(True, which="both", lw=0.3, alpha=0.5)
        _legend(fig, summary.dropna(subset=["tflops", "score"]))
    return fig


def plot_relative_average(aligned: pd.DataFrame, model: str | None = None,
                          paper_model: str | None = None,
                          benchmarks: Sequence[str] | None = None) -> Figure:
    """Mean % of the full model over benchmarks vs retention; the paper over the same set."""
    ours = average_table(aligned, model, benchmarks)
    frames = [_long(ours, "ours")]
    if paper_model:
        chosen = benchmarks or _benchmarks_of(aligned, model)
        paper = _long(average_table(aligned, paper_model, chosen or None, source="paper"),
                      "paper")
        frames.append(_beside(paper, frames[0]))
    rows = pd.concat(frames, ignore_index=True)
    with mpl.rc_context(_STYLE):
        fig, ax = _figure()
        _draw(ax, rows, "retention", "relative")
        shown = rows.dropna(subset=["relative"])
        if not shown.empty:
            _retention_axis(ax, shown["retention"] / 100)
        ax.set_ylabel("mean % of full model")
        names = list(benchmarks or _benchmarks_of(aligned, model)
                     or _benchmarks_of(aligned, paper_model, "paper"))
        listed = ", ".join(names)
        ax.set_title(f"{model or paper_model or 'all models'}: "
                     + (listed if len(listed) <= 32 else f"{len(names)} benchmarks"))
        ax.grid(True, lw=0.3, alpha=0.5)
        _legend(fig, shown)
    return fig


def _benchmarks_of(aligned: pd.DataFrame, model: str | None, source: str = "ours") -> list[str]:
    summary = summarize(aligned)
    summary = summary[(summary["source"] == source)
                      & ((summary["model"] == model) if model else True)]
    return full_model_benchmarks(summary)


def _long(table: pd.DataFrame, source: str) -> pd.DataFrame:
    """A methods x retention table back to rows (retention in %)."""
    if table.empty:
        return pd.DataFrame(columns=["source", "method", "label", "retention", "relative"])
    long = table.reset_index().melt(id_vars="method", var_name="retention",
                                    value_name="relative")
    long["retention"] = long["retention"].str.rstrip("%").astype(float)
    long["label"] = long["method"]
    long["method"] = long["label"].str.split("[", n=1).str[0]
    long["source"] = source
    return long


def _title(benchmark: str, model: str | None, paper_model: str | None) -> str:
    if model is None and paper_model:
        return f"{benchmark}, paper ({paper_model})"
    return f"{benchmark}, {model or 'all models'}" + (" vs paper" if paper_model else "")

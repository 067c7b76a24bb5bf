"""Tables from aligned records: per benchmark, averages, and the paper's layouts.

Every table is a plain DataFrame whose missing cells are NaN; the writers render them as an
em dash (Markdown, HTML), `---` (LaTeX) or an empty field (CSV), never as 0. Scores are means
over seeds of finished runs, in the paper's units (`benchmarks.align`). "% of full" is a score
divided by the score of method `none` (retention 1.0) of the same source, model and benchmark.
"""

from __future__ import annotations

import html
import math
import numbers
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from reporting.benchmarks import BENCHMARKS, MVBENCH_SUBTASKS, benchmark_of_paper_column
from reporting.cost import analytic_flops
from reporting.reference import our_model_of

__all__ = [
    "PAPER_TABLES",
    "PaperTable",
    "average_table",
    "benchmark_table",
    "compare",
    "full_model_benchmarks",
    "leaderboard",
    "method_order",
    "paper_layout",
    "relative_table",
    "summarize",
    "to_html",
    "to_latex",
    "to_markdown",
    "write_table",
]

MISSING = "\u2014"  # em dash
METHOD_ORDER = ["none", "fastv", "DyCoke", "pllava", "visionzip", "scc", "uniform", "random",
                "l2norm"]


def method_order(methods: Iterable[str]) -> list[str]:
    """Known methods in the paper's order, then the rest alphabetically."""
    methods = list(dict.fromkeys(methods))
    known = [m for m in METHOD_ORDER if m in methods]
    return known + sorted(m for m in methods if m not in METHOD_ORDER)


def _label_order(summary: pd.DataFrame) -> list[str]:
    pairs = summary[["method", "label"]].drop_duplicates()
    order = {m: i for i, m in enumerate(method_order(pairs["method"]))}
    pairs = pairs.assign(_o=pairs["method"].map(order)).sort_values(["_o", "label"])
    return list(pairs["label"])


def pct(retention: float) -> str:
    """0.35 -> '35%'."""
    return f"{round(retention * 100, 2):g}%"


# --- summaries --------------------------------------------------------------------------------

_GROUP = ["source", "model", "method", "label", "retention", "benchmark"]


def summarize(aligned: pd.DataFrame) -> pd.DataFrame:
    """Mean score over seeds of finished runs per (source, model, label, retention, benchmark),
    with `seeds` (how many runs), `prefill_flops` (mean), `relative` (% of full) and the
    method's `fidelity` to its official code as its records state it."""
    ok = aligned[(aligned["status"] == "finished") & aligned["score"].notna()]
    if ok.empty:
        return pd.DataFrame(columns=[*_GROUP, "score", "stderr", "seeds", "prefill_flops",
                                     "relative", "fidelity"])
    if "fidelity" not in ok.columns:
        ok = ok.assign(fidelity=None)
    summary = (ok.groupby(_GROUP, dropna=False)
               .agg(score=("score", "mean"), stderr=("stderr", "mean"), seeds=("score", "size"),
                    prefill_flops=("prefill_flops", "mean"), fidelity=("fidelity", "first"))
               .reset_index())
    full = (summary[summary["method"] == "none"]
            .groupby(["source", "model", "benchmark"])["score"].mean().rename("full"))
    summary = summary.join(full, on=["source", "model", "benchmark"])
    # a full model scoring 0 has no "% of" (missing, not inf)
    summary["relative"] = 100.0 * summary["score"] / summary["full"].where(summary["full"] != 0)
    return summary.drop(columns="full")


def _select(summary: pd.DataFrame, model: str | None, source: str) -> pd.DataFrame:
    rows = summary[summary["source"] == source]
    return rows if model is None else rows[rows["model"] == model]


def benchmark_table(aligned: pd.DataFrame, benchmark: str, model: str | None = None,
                    source: str = "ours", value: str = "score") -> pd.DataFrame:
    """Methods (rows) x retention (columns, high to low) of one benchmark: `value` is "score"
    (the paper's units) or "relative" (% of the full model)."""
    rows = _select(summarize(aligned), model, source)
    rows = rows[rows["benchmark"] == benchmark]
    return _pivot(rows, value)


def relative_table(aligned: pd.DataFrame, benchmark: str, model: str | None = None,
                   source: str = "ours") -> pd.DataFrame:
    """`benchmark_table` as % of the full model."""
    return benchmark_table(aligned, benchmark, model, source, value="relative")


def _pivot(rows: pd.DataFrame, value: str) -> pd.DataFrame:
    if rows.empty:
        return pd.DataFrame(index=pd.Index([], name="method"))
    table = rows.pivot_table(index="label", columns="retention", values=value, aggfunc="mean",
                             dropna=False)
    table = table.reindex(index=_label_order(rows), columns=sorted(table.columns, reverse=True))
    table.columns = [pct(c) for c in table.columns]
    table.index.name = "method"
    return table


def average_table(aligned: pd.DataFrame, model: str | None = None,
                  benchmarks: Sequence[str] | None = None, source: str = "ours",
                  reference_source: str | None = None) -> pd.DataFrame:
    """Mean % of the full model over `benchmarks`, methods x retention.

    By default the benchmarks are the headline ones the full model (`none`) of
    `reference_source` (default: `source`) has; a cell is missing unless its row has every one
    of them, so all cells average the same set.
    """
    summary = summarize(aligned)
    rows = _select(summary, model, source)
    if benchmarks is None:
        basis = _select(summary, model, reference_source or source)
        benchmarks = full_model_benchmarks(basis)
    rows = rows[rows["benchmark"].isin(benchmarks)]
    if rows.empty or not benchmarks:
        return pd.DataFrame(index=pd.Index([], name="method"))
    per = rows.pivot_table(index=["method", "label", "retention"], columns="benchmark",
                           values="relative", aggfunc="mean")
    per = per.reindex(columns=list(benchmarks))
    mean = per.mean(axis=1).where(per.notna().all(axis=1)).rename("relative").reset_index()
    return _pivot(mean, "relative")


def full_model_benchmarks(summary: pd.DataFrame) -> list[str]:
    """Headline benchmarks the full model has (in BENCHMARKS order)."""
    have = set(summary.loc[(summary["method"] == "none") & summary["score"].notna(), "benchmark"])
    return [b for b, bm in BENCHMARKS.items() if bm.headline and b in have]


def leaderboard(aligned: pd.DataFrame, benchmark: str, model: str | None = None,
                source: str = "ours") -> pd.DataFrame:
    """Every (method, retention) of one benchmark, best score first."""
    rows = _select(summarize(aligned), model, source)
    rows = rows[rows["benchmark"] == benchmark]
    board = rows.assign(retention=rows["retention"].map(pct),
                        prefill_tflops=rows["prefill_flops"] / 1e12)
    board = board[["label", "fidelity", "retention", "score", "stderr", "relative", "seeds",
                   "prefill_tflops"]].rename(columns={"label": "method",
                                                      "relative": "% of full"})
    return board.sort_values("score", ascending=False).reset_index(drop=True)


def compare(aligned: pd.DataFrame, a: str, b: str, model: str | None = None,
            source: str = "ours", benchmarks: Sequence[str] | None = None) -> pd.DataFrame:
    """Method (label) `b` against `a` per benchmark and retention: both scores, both % of
    full and delta = b - a; a retention where either is missing keeps its missing cells."""
    rows = _select(summarize(aligned), model, source)
    if benchmarks is not None:
        rows = rows[rows["benchmark"].isin(benchmarks)]
    index = ["benchmark", "retention"]
    left = rows[rows["label"] == a].set_index(index)[["score", "relative"]]
    right = rows[rows["label"] == b].set_index(index)[["score", "relative"]]
    both = left.join(right, how="outer", lsuffix=f" {a}", rsuffix=f" {b}")
    both[f"\u0394 score ({b} - {a})"] = both[f"score {b}"] - both[f"score {a}"]
    both = both.rename(columns={f"relative {a}": f"% of full {a}",
                                f"relative {b}": f"% of full {b}"})
    both = both.reset_index()
    order = {name: i for i, name in enumerate(BENCHMARKS)}
    both = both.sort_values(["benchmark", "retention"], key=lambda c: c.map(order)
                            if c.name == "benchmark" else -c)
    both["retention"] = both["retention"].map(pct)
    return both.set_index(index)


# --- the paper's layouts ------------------------------------------------------------------------

@dataclass(frozen=True)
class PaperTable:
    """One of the paper's tables: its record `table`, base model and columns."""

    table: str
    title: str
    paper_model: str
    columns: tuple[str, ...]
    avg_column: str | None = None  # the paper's average-relative column, if any
    avg_of: tuple[str, ...] = ()  # the columns that average covers (checked on the paper)


_T1 = ("ActivityNet-QA_acc", "ActivityNet-QA_score", "VideoChatGPT_CI", "VideoChatGPT_DO",
       "VideoChatGPT_CU", "VideoChatGPT_TU", "VideoChatGPT_CO", "VideoChatGPT_avg", "NextQA")
_T2 = ("EgoSchema", "MLVU", "VideoMME", "VideoMMMU")
_T7 = ("VideoChatGPT", "MVBench", "MLVU", "VideoMME", "EgoSchema")
PAPER_TABLES: dict[str, PaperTable] = {
    "table1": PaperTable(
        "table1_video_qa", "Table 1: video QA, LLaVA-OV-7B-enhanced", "LLaVA-OV-7B-enhanced",
        _T1, "avg_relative_pct", tuple(c for c in _T1 if c != "VideoChatGPT_avg")),
    "table2": PaperTable(
        "table2_long_video", "Table 2: long video, LLaVA-OV-7B-enhanced",
        "LLaVA-OV-7B-enhanced", _T2, "avg_relative_pct", _T2),
    "table3": PaperTable(
        "table3_mvbench", "Table 3: MVBench, LLaVA-OV-7B-enhanced", "LLaVA-OV-7B-enhanced",
        (*(f"MVBench_{a}" for a in MVBENCH_SUBTASKS), "MVBench_avg")),
    "table5": PaperTable(
        "table5_flops", "Table 5: FLOPs (prefill + 100 decoded tokens, visual tokens only)",
        "LLaVA-OV-7B-enhanced", ("FLOPs_TFLOPs", "FLOPs_ratio_pct", "avg_perf_ratio_pct")),
    "table7": PaperTable(
        "table7_0.5b", "Table 7: LLaVA-OV-0.5B-enhanced", "LLaVA-OV-0.5B-enhanced", _T7,
        "avg_relative_pct", _T7),
}
"""The paper's average-relative column is the mean over `avg_of` of score / full-model score
(verified on the CSV: Tables 2 and 7 within rounding, Table 1 over its 8 columns other than
the VideoChatGPT average, within 0.1)."""


def paper_layout(records: pd.DataFrame, aligned: pd.DataFrame, name: str,
                 model: str | None = None) -> pd.DataFrame:
    """The paper's table `name` ("table1", ...) with rows paper / ours / delta per (method,
    retention): paper = the reference records of that table; ours = finished runs of our
    `model` (default: our config of the paper's base model), mean over seeds, in the paper's
    units; delta = ours - paper. Methods ours did not run get a paper row only; rows ours ran
    that the paper lacks get an empty paper row.

    The average-relative column of ours is computed the paper's way over the same columns and
    is missing unless all of them are present. Table 5: ours' TFLOPs are the same analytic
    convention at our achieved retention; its average is over the headline benchmarks our full
    model has.
    """
    spec = PAPER_TABLES[name]
    model = model or our_model_of(spec.paper_model)
    cols = list(spec.columns) + ([spec.avg_column] if spec.avg_column else [])
    paper = records[(records["source"] == "paper") & (records["table"] == spec.table)
                    & records["metric"].isin(cols)]
    paper_cells = paper.pivot_table(index=["method", "retention"], columns="metric",
                                    values="value", aggfunc="first")
    ours = _ours_cells(aligned, spec, model)
    keys = set(paper_cells.index) | {(m, r) for m, _, r in ours.index}
    order = {m: i for i, m in enumerate(method_order(k[0] for k in keys))}
    rows = []
    for method, retention in sorted(keys, key=lambda k: (-k[1], order[k[0]])):
        p = (paper_cells.loc[(method, retention)] if (method, retention) in paper_cells.index
             else pd.Series(dtype=float))
        rows.append({"method": method, "retention": pct(retention), "row": "paper",
                     **{c: p.get(c) for c in cols}})
        mine = ours[(ours.index.get_level_values(0) == method)
                    & (ours.index.get_level_values(2) == retention)]
        for (_, label, _), o in mine.iterrows():
            tag = "" if label == method else f" {label}"
            rows.append({"method": method, "retention": pct(retention), "row": f"ours{tag}",
                         **{c: o.get(c, math.nan) for c in cols}})
            rows.append({"method": method, "retention": pct(retention), "row": f"\u0394{tag}",
                         **{c: o.get(c, math.nan) - p.get(c, math.nan) for c in cols}})
    table = pd.DataFrame(rows, columns=["method", "retention", "row", *cols])
    table[cols] = table[cols].astype(float)
    return table


def _ours_cells(aligned: pd.DataFrame, spec: PaperTable, model: str | None) -> pd.DataFrame:
    """Our values in the paper's columns, index (method, label, retention)."""
    summary = summarize(aligned)
    rows = _select(summary, model, "ours")
    if rows.empty or model is None:
        return pd.DataFrame(index=pd.MultiIndex.from_tuples([], names=["method", "label",
                                                                       "retention"]))
    index = ["method", "label", "retention"]
    by_bench = rows.pivot_table(index=index, columns="benchmark", values="score", aggfunc="mean")
    rel = rows.pivot_table(index=index, columns="benchmark", values="relative", aggfunc="mean")
    out = pd.DataFrame(index=by_bench.index)
    for col in spec.columns:
        bm = benchmark_of_paper_column(col)
        if bm is not None:
            out[col] = by_bench[bm.name] if bm.name in by_bench else math.nan
    if spec.avg_column:
        names = [benchmark_of_paper_column(c).name for c in spec.avg_of]
        part = rel.reindex(columns=names)
        out[spec.avg_column] = part.mean(axis=1).where(part.notna().all(axis=1))
    if spec.table == "table5_flops":
        out = _ours_flops(aligned, rows, model, rel)
    return out.dropna(how="all")


def _ours_flops(aligned: pd.DataFrame, rows: pd.DataFrame, model: str,
                rel: pd.DataFrame) -> pd.DataFrame:
    runs = aligned[(aligned["source"] == "ours") & (aligned["model"] == model)
                   & (aligned["status"] == "finished")]
    runs = runs.assign(total=analytic_flops(runs, total=True))
    index = ["method", "label", "retention"]
    tflops = runs.groupby(index)["total"].mean() / 1e12
    out = pd.DataFrame({"FLOPs_TFLOPs": tflops})
    full = out.loc[out.index.get_level_values(0) == "none", "FLOPs_TFLOPs"]
    out["FLOPs_ratio_pct"] = 100 * out["FLOPs_TFLOPs"] / full.mean() if len(full) else math.nan
    names = full_model_benchmarks(rows)
    part = rel.reindex(columns=names)
    avg = part.mean(axis=1).where(part.notna().all(axis=1)) if names else math.nan
    out["avg_perf_ratio_pct"] = avg
    return out


# --- writers ----------------------------------------------------------------------------------

def _cell(value: object, decimals: int, signed: bool = False) -> str | None:
    """Formatted number or text; None for a missing value."""
    if value is None or (not isinstance(value, str) and bool(pd.isna(value))):
        return None
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return f"{int(value):+d}" if signed else str(int(value))
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return f"{value:+.{decimals}f}" if signed else f"{value:.{decimals}f}"
    return str(value)


def _rows(df: pd.DataFrame, decimals: int) -> tuple[list[str], list[list[str | None]]]:
    flat = df.reset_index() if _has_named_index(df) else df
    header = [str(c) for c in flat.columns]
    signed_rows = flat["row"].astype(str).str.startswith("\u0394") if "row" in flat else None
    body = []
    for i, (_, row) in enumerate(flat.iterrows()):
        signed = bool(signed_rows.iloc[i]) if signed_rows is not None else False
        body.append([_cell(v, decimals, signed) for v in row.tolist()])
    return header, body


def _has_named_index(df: pd.DataFrame) -> bool:
    return any(name is not None for name in df.index.names)


def to_markdown(df: pd.DataFrame, decimals: int = 2) -> str:
    """A GitHub Markdown table; missing cells are an em dash."""
    header, body = _rows(df, decimals)
    numeric = [all(_is_number(r[j]) for r in body if r[j] is not None) and
               any(r[j] is not None for r in body) for j in range(len(header))]
    lines = ["| " + " | ".join(h.replace("|", "\\|") for h in header) + " |",
             "|" + "|".join("---:" if n else "---" for n in numeric) + "|"]
    for r in body:
        lines.append("| " + " | ".join(MISSING if c is None else c.replace("|", "\\|")
                                       for c in r) + " |")
    return "\n".join(lines) + "\n"


def _is_number(text: str | None) -> bool:
    try:
        float(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False
    return True


_LATEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
                  "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}",
                  "^": r"\textasciicircum{}", "\u0394": r"$\Delta$", MISSING: "---"}


def _latex(text: str) -> str:
    return "".join(_LATEX_ESCAPES.get(ch, ch) for ch in text)


def to_latex(df: pd.DataFrame, decimals: int = 2, caption: str | None = None) -> str:
    """A booktabs tabular (in a table environment when a caption is given); missing = ---."""
    header, body = _rows(df, decimals)
    numeric = [all(_is_number(r[j]) for r in body if r[j] is not None) and
               any(r[j] is not None for r in body) for j in range(len(header))]
    spec = "".join("r" if n else "l" for n in numeric)
    lines = [rf"\begin{{tabular}}{{{spec}}}", r"\toprule",
             " & ".join(_latex(h) for h in header) + r" \\", r"\midrule"]
    for r in body:
        lines.append(" & ".join("---" if c is None else _latex(c) for c in r) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    if caption:
        lines = [r"\begin{table}[t]", r"\centering", r"\small", *lines,
                 rf"\caption{{{_latex(caption)}}}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def to_html(df: pd.DataFrame, decimals: int = 2) -> str:
    """An HTML table; missing cells are an em dash."""
    header, body = _rows(df, decimals)
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    rows = []
    for r in body:
        cells = "".join(
            f'<td class="missing">{MISSING}</td>' if c is None
            else f'<td class="num">{html.escape(c)}</td>' if _is_number(c)
            else f"<td>{html.escape(c)}</td>" for c in r)
        rows.append(f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def write_table(df: pd.DataFrame, stem: str | os.PathLike[str], caption: str | None = None,
                decimals: int = 2) -> list[Path]:
    """Write `stem`.md, .csv (missing = empty field) and .tex; return the paths."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    md, csv, tex = (stem.with_suffix(s) for s in (".md", ".csv", ".tex"))
    title = f"**{caption}**\n\n" if caption else ""
    md.write_text(title + to_markdown(df, decimals))
    (df.reset_index() if _has_named_index(df) else df).to_csv(csv, index=False, na_rep="")
    tex.write_text(to_latex(df, decimals, caption))
    return [md, csv, tex]

"""The reporting subcommands of `scissorbench`, Hydra-style `key=value` arguments:

    scissorbench flops model=llava_ov_7b compressor=fastv retention=0.35 [frames=32] [layer=3]
    scissorbench report results_dir=results/runs output_dir=results/report [reference=true]
    scissorbench reference [papers=[fastvid,dycoke]] [papers_dir=results/papers]
                           [output_dir=results/reference]
    scissorbench leaderboard results_dir=results/demo output_dir=results/site [reference=true]

Each command's settings are a structured config (dataclass) checked before anything runs: an
unknown key, a wrong type or a missing required value fails in one line with exit code 2.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from omegaconf import MISSING, OmegaConf
from omegaconf.errors import OmegaConfBaseException

__all__ = ["FlopsConfig", "LeaderboardConfig", "ReferenceConfig", "ReportConfig", "flops",
           "leaderboard", "reference", "report"]

_CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@dataclass
class FlopsConfig:
    """Analytic FLOPs of a model x compressor x retention (METHODS.md section 8)."""

    model: str = MISSING  # configs/model/<model>.yaml, its `llm: {layers, hidden, ffn}`
    compressor: str = "none"  # configs/compressor/<compressor>.yaml (its `layer`: FastV's K)
    retention: float | None = None  # share of visual tokens kept; required unless none
    frames: int = 32
    tokens_per_frame: int = 196
    text: int = 0  # text tokens on top; 0 = the paper's Table 5 (visual tokens only)
    layer: int | None = None  # pruning layer K; default: the compressor config's, else 0
    generated: int = 100  # R, decoded tokens in the paper-convention total


@dataclass
class ReportConfig:
    """Tables, figures and one HTML file from a results folder."""

    results_dir: str = "results/runs"  # its records, or every folder below it holding some
    output_dir: str = "results/report"
    reference: bool = False  # add the paper's numbers (results/reference) and its layouts
    reference_dir: str = ""  # default: the repository's results/reference


@dataclass
class ReferenceConfig:
    """Convert the six papers' CSVs (results/papers/) into records in results/reference."""

    papers: list[str] | None = None  # default: all (scissor, fastvid, holitom, vidcom2, ...)
    papers_dir: str = ""  # default: reporting.reference.PAPERS_DIR
    output_dir: str = ""  # default: reporting.reference.REFERENCE_DIR


@dataclass
class LeaderboardConfig:
    """The static leaderboard site (opens from file://): ours beside the papers' references."""

    results_dir: list[str] = MISSING  # folders of our records, or folders above them
    output_dir: str = "results/site"
    reference: bool = True  # add the six papers' records (results/reference)
    reference_dir: str = ""  # default: the repository's results/reference


class _UsageError(ValueError):
    pass


def _parse(schema: type, argv: list[str], prog: str) -> Any:
    """`key=value` arguments merged onto the dataclass `schema`; None after printing help."""
    if any(a in ("-h", "--help") for a in argv):
        print(f"usage: {prog} " + " ".join(
            f"{f.name}=..." if f.default is MISSING else f"[{f.name}={f.default}]"
            for f in fields(schema)))
        print((schema.__doc__ or "").strip())
        return None
    loose = [a for a in argv if "=" not in a]
    if loose:
        raise _UsageError(f"arguments are key=value, got {loose[0]!r}")
    try:
        cfg = OmegaConf.merge(OmegaConf.structured(schema), OmegaConf.from_dotlist(argv))
        missing = sorted(OmegaConf.missing_keys(cfg))
        if missing:
            raise _UsageError(f"missing required value: {missing[0]}=...")
        return OmegaConf.to_object(cfg)
    except OmegaConfBaseException as err:
        raise _UsageError(str(err).splitlines()[0]) from None


def _run(prog: str, schema: type, argv: list[str], body) -> int:
    try:
        cfg = _parse(schema, argv, prog)
        if cfg is None:
            return 0
        return body(cfg)
    except _UsageError as err:
        print(f"{prog}: error: {err} (see '{prog} --help')", file=sys.stderr)
        return 2


# --- flops ------------------------------------------------------------------------------------

def _yaml(group: str, name: str) -> dict:
    path = _CONFIGS / group / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in (_CONFIGS / group).glob("*.yaml"))
        raise _UsageError(f"unknown {group} {name!r}; choose one of {known}")
    data = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    if isinstance(data, dict) and "defaults" in data:  # e.g. scc_tau extends scc
        base = next((d for d in data["defaults"] if isinstance(d, str) and d != "_self_"), None)
        data = {**(_yaml(group, base) if base else {}), **data}
    return data if isinstance(data, dict) else {}


def _flops(cfg: FlopsConfig) -> int:
    from reporting.cost import estimate

    model = _yaml("model", cfg.model)
    llm = model.get("llm")
    if not isinstance(llm, dict) or not {"layers", "hidden", "ffn"} <= set(llm):
        raise _UsageError(f"model {cfg.model!r} has no `llm: {{layers, hidden, ffn}}` in "
                          f"configs/model/{cfg.model}.yaml")
    compressor = _yaml("compressor", cfg.compressor)
    retention = None if cfg.compressor == "none" else cfg.retention
    if cfg.compressor != "none" and retention is None:
        raise _UsageError(f"compressor {cfg.compressor!r} needs retention=... in (0, 1]")
    layer = cfg.layer if cfg.layer is not None else int(compressor.get("layer") or 0)
    if not 0 <= layer <= llm["layers"]:
        raise _UsageError(f"layer must be in [0, {llm['layers']}], got {layer}")
    for name in ("frames", "tokens_per_frame"):
        if getattr(cfg, name) < 1:
            raise _UsageError(f"{name} must be >= 1")
    if cfg.text < 0 or cfg.generated < 0:
        raise _UsageError("text and generated must be >= 0")
    try:
        kept, note = _kept_tokens(cfg, compressor, retention)
        est = estimate(llm["layers"], llm["hidden"], llm["ffn"], retention, layer=layer,
                       frames=cfg.frames, tokens_per_frame=cfg.tokens_per_frame, text=cfg.text,
                       generated=cfg.generated, kept=kept)
    except ValueError as err:
        raise _UsageError(str(err)) from None
    where = "before the LLM" if layer == 0 else f"from LLM layer {layer}"
    print(f"model      {cfg.model}: L={est.layers}, d={est.hidden}, m={est.ffn}")
    print(f"compressor {cfg.compressor}" + ("" if retention is None else
                                           f", retention {retention:g}, pruning {where}"))
    print(f"tokens     {est.visual} visual ({cfg.frames} frames x {cfg.tokens_per_frame}), "
          f"{est.kept} kept ({100 * est.kept / est.visual:.2f}%{note}), {est.text} text")
    print(f"prefill      {est.prefill / 1e12:8.3f} TFLOPs  {100 * est.prefill_ratio:6.2f}% of "
          f"uncompressed ({est.prefill_full / 1e12:.3f} TFLOPs)")
    print(f"paper total  {est.total / 1e12:8.3f} TFLOPs  {100 * est.total_ratio:6.2f}% of "
          f"uncompressed ({est.total_full / 1e12:.3f} TFLOPs), prefill + decode of "
          f"{est.generated} tokens")
    print("convention: FastV, F(n) = 4nd^2 + 2n^2d + 2ndm per layer; prefill K F(n) + (L-K) "
          "F(n'); decode L R ((4d^2 + 2dm) + 2 (d n' + d (R+1)/2)) (METHODS.md section 8)")
    return 0


def _kept_tokens(cfg: FlopsConfig, compressor: dict[str, Any],
                 retention: float | None) -> tuple[int | None, str]:
    """(visual tokens the method really hands on, a note saying how they were counted).

    Asks the compressor itself (`expected_tokens`): PLLaVA's pooled grid falls short of M; a
    threshold-mode method's count depends on the video, so the budget of `retention` stands in.
    """
    import compressors

    params = {k: v for k, v in compressor.items() if k not in ("_target_", "name")}
    if retention is not None:
        params["retention"] = retention
    built = compressors.build(compressor.get("name", cfg.compressor), **params)
    side = math.isqrt(cfg.tokens_per_frame)
    grid = (side, side) if side * side == cfg.tokens_per_frame else (1, cfg.tokens_per_frame)
    kept = built.expected_tokens(cfg.frames, grid)
    if kept is None:
        return None, "; the video sets the count, the budget stands in"
    budget = cfg.frames * cfg.tokens_per_frame if retention is None else compressors.budget(
        retention, cfg.frames * cfg.tokens_per_frame)
    if kept == budget:
        return kept, ""
    return kept, f" of a budget of {budget}: what {built.name} feeds"


def flops(argv: list[str]) -> int:
    """Analytic FLOPs of model x compressor x retention, and the ratio to the full model."""
    return _run("scissorbench flops", FlopsConfig, argv, _flops)


# --- report, reference, leaderboard -----------------------------------------------------------

def _require_folders(named: list[tuple[str, str]], reference_dir: str | None) -> None:
    """Every (setting, folder) and the reference folder (if given) must exist: a mistyped path
    is an error, not an empty report."""
    for name, folder in named + ([("reference_dir", reference_dir)] if reference_dir else []):
        if not Path(folder).is_dir():
            raise _UsageError(f"{name} {folder!r} is not a folder")


def _report(cfg: ReportConfig) -> int:
    from reporting.reference import REFERENCE_DIR
    from reporting.report import build_report

    reference_dir = cfg.reference_dir or str(REFERENCE_DIR)
    _require_folders([("results_dir", cfg.results_dir)], reference_dir if cfg.reference else None)
    result = build_report(cfg.results_dir, cfg.output_dir, reference=cfg.reference,
                          reference_dir=reference_dir)
    print(f"[report] {result.read.summary()}")
    print(f"[report] {len(result.tables)} table files, {len(result.figures)} figure files "
          f"in {cfg.output_dir}")
    print(f"[report] {result.html}")
    return 0


def report(argv: list[str]) -> int:
    """Write every table and figure of a results folder and a single-file HTML report."""
    return _run("scissorbench report", ReportConfig, argv, _report)


def _reference(cfg: ReferenceConfig) -> int:
    import json

    from reporting.reference import PAPERS, PAPERS_DIR, REFERENCE_DIR, per_paper, write_reference

    chosen = list(PAPERS) if cfg.papers is None else list(cfg.papers)
    unknown = [p for p in chosen if p not in PAPERS]
    if unknown:
        raise _UsageError(f"unknown paper {unknown[0]!r}; choose from {sorted(PAPERS)}")
    folder = Path(cfg.papers_dir or PAPERS_DIR)
    for paper in chosen:
        if not (folder / PAPERS[paper].csv).is_file():
            raise _UsageError(f"paper CSV not found: {folder / PAPERS[paper].csv} (papers_dir= "
                              "names the folder of the papers' CSVs)")
    out = cfg.output_dir or REFERENCE_DIR
    try:
        paths = write_reference(out, folder, chosen)
    except ValueError as err:
        raise _UsageError(str(err)) from None
    counts = per_paper(json.loads(p.read_text()) for p in paths)
    print(f"[reference] {len(paths)} records in {out}: "
          + ", ".join(f"{name} {n}" for name, n in counts.items()))
    return 0


def reference(argv: list[str]) -> int:
    """Convert the six papers' CSVs into results-schema records (results/reference)."""
    return _run("scissorbench reference", ReferenceConfig, argv, _reference)


def _leaderboard(cfg: LeaderboardConfig) -> int:
    from reporting.load import results_folders
    from reporting.reference import REFERENCE_DIR
    from reporting.site import build_site

    reference_dir = cfg.reference_dir or str(REFERENCE_DIR)
    _require_folders([("results_dir", f) for f in cfg.results_dir],
                     reference_dir if cfg.reference else None)
    if not results_folders(cfg.results_dir) and not cfg.reference:
        raise _UsageError(f"no records under {cfg.results_dir} and reference=false: nothing to "
                          "show")
    site = build_site(cfg.results_dir, cfg.output_dir, reference=cfg.reference,
                      reference_dir=reference_dir)
    print(f"[leaderboard] {site.read.summary()}")
    print(f"[leaderboard] {site.sections} (backbone, benchmark) boards, {len(site.pages)} method "
          f"pages in {cfg.output_dir}")
    print(f"[leaderboard] file://{site.index.resolve()}")
    return 0


def leaderboard(argv: list[str]) -> int:
    """Write the static leaderboard site of results folders plus the papers' references."""
    # `results_dir=a` or `results_dir=[a,b]`: one folder is a list of one
    argv = [f"results_dir=[{a.split('=', 1)[1]}]" if a.startswith("results_dir=") and
            not a.split("=", 1)[1].startswith("[") else a for a in argv]
    return _run("scissorbench leaderboard", LeaderboardConfig, argv, _leaderboard)

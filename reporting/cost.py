"""Analytic FLOPs of a model x compressor x retention (harness.flops, METHODS.md section 8).

`estimate` is the calculator behind `scissorbench flops`; `analytic_flops` applies it to rows of
records (for the paper's points, which carry no measured FLOPs, and for Table 5).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import pandas as pd

from compressors import budget
from harness.flops import (
    PAPER_GENERATED,
    decode_flops,
    layer_flops,
    prefill_flops,
    pruned_tokens_per_layer,
)

__all__ = ["DEFAULT_FRAMES", "TOKENS_PER_FRAME", "Estimate", "analytic_flops", "estimate",
           "pruning_layer"]

DEFAULT_FRAMES = 32
TOKENS_PER_FRAME = 196  # 14 x 14 after LLaVA-OneVision's 2x2 pooling (METHODS.md section 1)


@dataclass(frozen=True)
class Estimate:
    """FLOPs of one setting and of the same model uncompressed (n = all visual tokens)."""

    layers: int
    hidden: int
    ffn: int
    visual: int  # visual tokens without compression, N_v
    kept: int  # visual tokens after compression, M
    layer: int  # pruning layer K (0: before the LLM)
    text: int  # text tokens counted on top of the visual ones
    generated: int  # R, decoded tokens in the paper-convention total
    prefill: int
    prefill_full: int
    total: int  # prefill + decode of R tokens (the paper's Table 5 convention)
    total_full: int

    @property
    def prefill_ratio(self) -> float:
        return self.prefill / self.prefill_full

    @property
    def total_ratio(self) -> float:
        return self.total / self.total_full


def estimate(layers: int, hidden: int, ffn: int, retention: float | None, *, layer: int = 0,
             frames: int = DEFAULT_FRAMES, tokens_per_frame: int = TOKENS_PER_FRAME,
             text: int = 0, generated: int = PAPER_GENERATED,
             kept: int | None = None) -> Estimate:
    """FLOPs with `kept` visual tokens after compression: the count the method really hands on
    (`compressors.Compressor.expected_tokens`, e.g. PLLaVA's pooled grid), by default the budget
    M = max(1, round(r N_v)) (`compressors.budget`; retention None: all kept).

    Layers < `layer` compute on all N_v + text tokens, the others on kept + text; `text` = 0 is
    the paper's convention (Table 5 counts visual tokens only).
    """
    visual = frames * tokens_per_frame
    if kept is None:
        kept = visual if retention is None else budget(retention, visual)
    if not 1 <= kept <= visual:
        raise ValueError(f"kept tokens must be in [1, {visual}], got {kept}")
    n, n_kept = visual + text, kept + text
    prefill = prefill_flops(pruned_tokens_per_layer(layers, n, n_kept, layer), hidden, ffn)
    prefill_full = layers * layer_flops(n, hidden, ffn)
    return Estimate(
        layers=layers, hidden=hidden, ffn=ffn, visual=visual, kept=kept, layer=layer, text=text,
        generated=generated, prefill=prefill, prefill_full=prefill_full,
        total=prefill + decode_flops(layers, hidden, ffn, n_kept, generated),
        total_full=prefill_full + decode_flops(layers, hidden, ffn, n, generated),
    )


def pruning_layer(params: dict[str, Any] | str | None) -> int:
    """The LLM layer a compressor prunes at: its `layer` parameter (FastV), else 0."""
    if isinstance(params, str):
        params = json.loads(params)
    value = (params or {}).get("layer")
    return int(value) if value is not None else 0


def analytic_flops(rows: pd.DataFrame, total: bool = False) -> pd.Series:
    """Per row, the analytic prefill (or paper-convention total) FLOPs, visual tokens only.

    Needs the model's `llm_*` dimensions and a retention (the achieved mean where recorded,
    else the target); N_v is the recorded visual-token mean, else `max_frames` x 196, else
    32 x 196. Missing where a dimension is unknown (e.g. the tiny test model).
    """
    out = []
    for _, r in rows.iterrows():
        dims = [r.get("llm_layers"), r.get("llm_hidden"), r.get("llm_ffn")]
        retention = _first(r.get("achieved_retention_mean"), r.get("retention"))
        if any(_missing(d) for d in dims) or retention is None:
            out.append(math.nan)
            continue
        visual = _first(r.get("tokens_visual"))
        frames = _first(r.get("max_frames")) or DEFAULT_FRAMES
        if visual is not None:
            frames, per_frame = 1, round(visual)
        else:
            per_frame = TOKENS_PER_FRAME
        est = estimate(int(dims[0]), int(dims[1]), int(dims[2]), min(1.0, retention),
                       layer=pruning_layer(r.get("params")), frames=int(frames),
                       tokens_per_frame=int(per_frame))
        out.append(float(est.total if total else est.prefill))
    return pd.Series(out, index=rows.index, dtype=float)


def _missing(value: Any) -> bool:
    return value is None or bool(pd.isna(value))


def _first(*values: Any) -> float | None:
    for v in values:
        if not _missing(v):
            return float(v)
    return None

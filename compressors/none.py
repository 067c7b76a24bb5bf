"""The uncompressed model: every visual token reaches the LLM.

Not a method from a paper but the reference row of every table ("full model", retention 100%):
the identity on the [T, N, D] tokens, flattened in (frame, token) order, so that the harness
runs the baseline through the same code path as every compressor.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from compressors._core import Compressed, Grid, check_retention, check_video
from compressors.registry import register


def _check(params: dict[str, Any]) -> None:
    retention = params["retention"]
    if retention is not None and check_retention(retention) != 1.0:
        raise ValueError(
            f"compressor 'none' is the full model and keeps every token; got retention="
            f"{retention}: drop retention (or set retention=1.0), or pick a compressor"
        )


@register("none", check=_check, count=lambda frames, grid, params: frames * grid[0] * grid[1])
def none(video: Tensor, *, grid: Grid | None = None, retention: float | None = None) -> Compressed:
    """All T*N tokens of a video [T, N, D] as [T*N, D]; assignment and kept are arange(T*N).

    retention: None or 1.0 (anything else is an error: this is the full model).
    """
    _check({"retention": retention})
    check_video(video)
    flat = video.reshape(-1, video.shape[-1])
    index = torch.arange(flat.shape[0], device=video.device)
    return Compressed(flat, index, flat.shape[0], kept=index)

"""PLLaVA pooling: adaptive average pooling of the [T, H, W] token grid.

Paper: Xu et al., "PLLaVA: Parameter-free LLaVA Extension from Images to Videos for Video Dense
Captioning", arXiv 2404.16994. Official code: github.com/magic-research/PLLaVA.

PLLaVA extends an image LLM to video by pooling each frame's token grid (and optionally time)
with `adaptive_avg_pool3d`, which smooths the dominant high-norm tokens that make naive frame
concatenation fail and shrinks the token count. Here the pooled grid is chosen from the budget
M = budget(retention, T*H*W), by `choose_grid`:

- time: T' = T when M >= T (PLLaVA pools space, not time), else T' = M and H' = W' = 1;
- space: among (h, w) with 1 <= h <= H, 1 <= w <= W and T' * h * w <= M, the most cells h * w;
  ties go to the aspect closest to H / W (smallest |log((h / w) / (H / W))|), then to larger h;
- keep_aspect=False (the default) fills the budget, as METHODS.md section 6 asks (the grid with
  the most cells <= M): on 32 frames of 14 x 14 that is 14 x 7 = 98 cells a frame (50%) for
  r = 0.5, 11 x 6 = 66 (33.7%; 68 allowed) for 0.35 and 6 x 3 = 18 (9.2%; 19 allowed, but
  19 = 19 x 1 does not fit a 14-wide grid) for 0.1.
  keep_aspect=True (PLLaVA's own square 24 x 24 -> 12 x 12 pooling) keeps only grids with
  h = round(w * H / W) (Python's round), plus 1 x 1, which always fits, as a last resort: 9 x 9
  (41%) for r = 0.5, 8 x 8 (33%) for 0.35 and 4 x 4 (8.2%) for 0.1, short of the budget.

The output has T' * H' * W' <= M tokens (record the achieved retention). Pooling is computed in
float32 and returned in the input dtype, in (t, h, w) order. Overlapping adaptive windows make a
token fall in up to two cells per axis; `assignment` names the cell whose window contains the
token's centre, cell floor((i + 1/2) * H' / H) on each axis (always one of the windows holding
token i, and symmetric under flipping the axis).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from compressors._core import Compressed, Grid, budget, check_video, resolve_grid
from compressors._params import require_retention
from compressors.registry import Reference, register


def _check(params: dict[str, Any]) -> None:
    require_retention("pllava", params["retention"])
    if params["keep_aspect"] not in (True, False):
        raise ValueError(f"keep_aspect must be true or false, got {params['keep_aspect']!r}")


def choose_grid(
    budget: int, frames: int, height: int, width: int, keep_aspect: bool = False
) -> tuple[int, int, int]:
    """The pooled grid (T', H', W') for a budget of `budget` tokens (module docstring rule)."""
    if min(budget, frames, height, width) < 1:
        raise ValueError(
            f"choose_grid needs positive budget, frames, height, width; got "
            f"{(budget, frames, height, width)}"
        )
    if budget < frames:
        return budget, 1, 1
    cells = budget // frames
    aspect = height / width
    best: tuple[Any, ...] | None = None
    for h in range(1, height + 1):
        for w in range(1, min(width, cells // h) + 1):
            if keep_aspect and h != round(w * aspect) and (h, w) != (1, 1):
                continue
            key = (h * w, -abs(math.log(h / w / aspect)), h)
            if best is None or key > best[0]:
                best = (key, h, w)
    assert best is not None  # (1, 1) always fits
    return frames, best[1], best[2]


def _count(frames: int, grid: tuple[int, int], params: dict[str, Any]) -> int:
    """T' * H' * W': the tokens PLLaVA feeds for this geometry (<= M)."""
    total = frames * grid[0] * grid[1]
    size = choose_grid(budget(params["retention"], total), frames, *grid, params["keep_aspect"])
    return math.prod(size)


def _cell(size: int, pooled: int, device: torch.device) -> Tensor:
    """[size] the pooled index whose adaptive window holds each input index's centre."""
    return ((2 * torch.arange(size, device=device) + 1) * pooled) // (2 * size)


@register(
    "pllava", check=_check, count=_count, fidelity="variant",
    reference=Reference("magic-research/PLLaVA", "6f49fd281a855c4fa3103595ba2800a4dce7ec88",
                        "models/pllava/modeling_pllava.py",
                        "adaptive_avg_pool3d as the official code; the pooled grid chosen from "
                        "the budget (keep_aspect=true: the official square grids)",
                        paper="arXiv:2404.16994, "
                              "PLLaVA: Parameter-free LLaVA Extension from Images to Videos"),
)
def pllava(
    video: Tensor,
    *,
    grid: Grid | None = None,
    retention: float | None = None,
    keep_aspect: bool = False,
) -> Compressed:
    """Average-pool a video [T, N, D] (N = H * W, `grid` = (H, W)) to [T' * H' * W', D].

    keep_aspect: only pooled grids with the input's aspect ratio (plus 1 x 1).
    info["grid"] = [T', H', W'].
    """
    _check({"retention": retention, "keep_aspect": keep_aspect})
    check_video(video)
    frames, per_frame, dim = video.shape
    height, width = resolve_grid(per_frame, grid)
    size = choose_grid(budget(retention, frames * per_frame), frames, height, width, keep_aspect)
    cube = video.float().reshape(frames, height, width, dim).permute(3, 0, 1, 2)
    pooled = F.adaptive_avg_pool3d(cube, size)  # [D, T', H', W']
    tokens = pooled.reshape(dim, -1).T.to(video.dtype)
    axes = zip((frames, height, width), size, strict=True)
    t, h, w = (_cell(n, p, video.device) for n, p in axes)
    assignment = (t[:, None, None] * size[1] + h[None, :, None]) * size[2] + w[None, None, :]
    return Compressed(
        tokens.contiguous(), assignment.flatten(), frames * per_frame, info={"grid": list(size)}
    )

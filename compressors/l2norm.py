"""L2-norm selection: keep the M visual tokens with the largest feature norm.

A baseline of LLaVA-Scissor's ablation (Sun et al., arXiv 2506.21862, Table 4b; official code
github.com/HumanMLLM/LLaVA-Scissor): large-norm tokens are often taken as salient (or as the
"register"-like outliers ViTs produce), so ranking by ||x||_2 is the cheapest content-aware
selection. Norms are computed in float32; ties go to the lower flat index (a stable sort), so the
choice is deterministic. With `merge=True` every token is then averaged into its most similar
kept token (SCC step 3).
"""

from __future__ import annotations

import torch
from torch import Tensor

from compressors._core import Compressed, Grid, budget, check_video, select
from compressors._params import needs_retention, require_retention
from compressors.registry import register


@register("l2norm", check=needs_retention("l2norm"))
def l2norm(
    video: Tensor,
    *,
    grid: Grid | None = None,
    retention: float | None = None,
    merge: bool = False,
) -> Compressed:
    """Keep the M = budget(retention, T*N) largest-norm tokens of a video [T, N, D] -> [M, D].

    merge: average every token into its most similar kept token (SCC step 3).
    """
    retention = require_retention("l2norm", retention)
    check_video(video)
    norms = video.reshape(-1, video.shape[-1]).float().norm(dim=-1)
    order = torch.sort(norms, descending=True, stable=True).indices
    return select(video, order[: budget(retention, norms.numel())], merge=merge)

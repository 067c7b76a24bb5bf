"""Random sampling: M tokens drawn uniformly without replacement from the T*N visual tokens.

A content-blind baseline of LLaVA-Scissor (Sun et al., arXiv 2506.21862, Table 4b; official code
github.com/HumanMLLM/LLaVA-Scissor). The draw is a permutation from a CPU `torch.Generator`
seeded with `seed`, moved to the tensor's device afterwards, so the same seed keeps the same
tokens on every device and dtype. With `merge=True` every token is then averaged into its most
similar kept token (SCC step 3).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from compressors._core import Compressed, Grid, budget, check_video, select
from compressors._params import integer_at_least, require_retention
from compressors.registry import register


def _check(params: dict[str, Any]) -> None:
    require_retention("random", params["retention"])
    integer_at_least("seed", params["seed"], 0)


@register("random", check=_check)
def random(
    video: Tensor,
    *,
    grid: Grid | None = None,
    retention: float | None = None,
    merge: bool = False,
    seed: int = 0,
) -> Compressed:
    """Keep M = budget(retention, T*N) random tokens of a video [T, N, D] -> [M, D].

    merge: average every token into its most similar kept token (SCC step 3).
    seed:  seeds the draw (identical on every device).
    """
    _check({"retention": retention, "seed": seed})
    check_video(video)
    total = video.shape[0] * video.shape[1]
    generator = torch.Generator().manual_seed(seed)
    kept = torch.randperm(total, generator=generator)[: budget(retention, total)]
    return select(video, kept.to(video.device), merge=merge)

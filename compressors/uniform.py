"""Uniform sampling: M tokens at evenly spaced positions of the [T, N] token grid.

A content-blind baseline of LLaVA-Scissor (Sun et al., arXiv 2506.21862, Table 4b; official code
github.com/HumanMLLM/LLaVA-Scissor). The budget is spread over frames first and space second:
frame t receives q_t tokens, the split of M over T frames from `frame_quotas` (as even as
possible; the extra tokens go to evenly spaced frames), and within the frame the q_t tokens sit
at the centres of q_t equal strides of the N tokens, positions floor((j + 1/2) * N / q_t) for
j = 0..q_t-1 (computed in integers). Every frame is covered when M >= T; since frames with the
same quota pick the same positions, the samples line up over time (no jitter between frames).
With `merge=True` every token is then averaged into its most similar kept token (SCC step 3).
"""

from __future__ import annotations

import torch
from torch import Tensor

from compressors._core import Compressed, Grid, budget, check_video, frame_quotas, select
from compressors._params import needs_retention, require_retention
from compressors.registry import register


def uniform_indices(frames: int, per_frame: int, total: int, device=None) -> Tensor:
    """[total] sorted flat indices into [frames * per_frame], evenly spread (module docstring)."""
    quotas = frame_quotas(total, frames, device=device)
    frame = torch.repeat_interleave(torch.arange(frames, device=device), quotas)
    start = torch.cumsum(quotas, 0) - quotas
    rank = torch.arange(total, device=device) - start[frame]
    position = ((2 * rank + 1) * per_frame) // (2 * quotas[frame])
    return frame * per_frame + position


@register("uniform", check=needs_retention("uniform"))
def uniform(
    video: Tensor,
    *,
    grid: Grid | None = None,
    retention: float | None = None,
    merge: bool = False,
) -> Compressed:
    """Keep M = budget(retention, T*N) evenly spaced tokens of a video [T, N, D] -> [M, D].

    merge: average every token into its most similar kept token (SCC step 3).
    """
    retention = require_retention("uniform", retention)
    check_video(video)
    frames, per_frame, _ = video.shape
    kept = uniform_indices(frames, per_frame, budget(retention, frames * per_frame), video.device)
    return select(video, kept, merge=merge)

"""Shared vocabulary of every compressor: the output record, budgets and the merge step.

Nothing here knows about models or harnesses; every function takes and returns tensors and
works on any device and floating dtype.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

Grid = tuple[int, int]


@dataclass(frozen=True)
class Compressed:
    """What a compressor hands the LLM, and how it relates to the input tokens.

    tokens:      [M, D] the visual tokens the LLM receives, in the order it receives them.
    assignment:  [T*N] long; for each input token, the output index that represents it, or -1
                 when the token is dropped without a representative.
    kept:        [M] long flat input indices the output tokens were selected from (selection
                 methods only; None where outputs are means or pools).
    num_input:   T*N, the uncompressed count N_v.
    info:        method-specific facts worth recording (tau used, pooled grid, ...).
    representative: [M] long flat input index whose position each output token takes
                 (METHODS.md section 11) where the method names one for merged tokens (SCC:
                 the component's highest-degree node; VisionZip: a contextual token's
                 target); None: `kept` for a selection, else the first input token assigned.
    """

    tokens: Tensor
    assignment: Tensor
    num_input: int
    kept: Tensor | None = None
    info: dict[str, float | int | list[int]] = field(default_factory=dict)
    representative: Tensor | None = None

    @property
    def num_output(self) -> int:
        return int(self.tokens.shape[0])

    @property
    def achieved_retention(self) -> float:
        return self.num_output / self.num_input


def check_retention(retention: float) -> float:
    """Validate a retention ratio r in (0, 1]."""
    if isinstance(retention, bool) or not isinstance(retention, (int, float)):
        raise ValueError(f"retention must be a number in (0, 1], got {retention!r}")
    if not (0.0 < float(retention) <= 1.0) or math.isnan(retention):
        raise ValueError(
            f"retention must be in (0, 1], got {retention}; e.g. retention=0.35 keeps 35% of the "
            "visual tokens"
        )
    return float(retention)


def budget(retention: float, num_tokens: int) -> int:
    """Token budget M = max(1, round(r * N_v)) (METHODS.md section 2)."""
    return max(1, round(check_retention(retention) * num_tokens))


def check_video(video: Tensor) -> Tensor:
    """Validate a video feature tensor [T, N, D]; reject other ranks, non-floats, NaN and inf."""
    if not isinstance(video, Tensor):
        raise ValueError(f"video must be a torch.Tensor of shape [T, N, D], got {type(video)}")
    if video.dim() != 3:
        raise ValueError(
            f"video must have shape [T, N, D] (frames, tokens per frame, channels), got "
            f"{tuple(video.shape)}; add a frame axis with video[None] for a single image"
        )
    if not video.is_floating_point():
        raise ValueError(f"video must be a floating tensor, got dtype {video.dtype}")
    if min(video.shape) == 0:
        raise ValueError(f"video has an empty axis: shape {tuple(video.shape)}")
    if not torch.isfinite(video).all():
        raise ValueError(
            "video contains NaN or inf values; check the features fed to the compressor"
        )
    return video


def resolve_grid(num_tokens: int, grid: Grid | None) -> Grid:
    """The (H, W) layout of N tokens per frame; square by default."""
    if grid is None:
        side = math.isqrt(num_tokens)
        if side * side != num_tokens:
            raise ValueError(
                f"{num_tokens} tokens per frame is not a square; pass grid=(H, W) with H*W = N"
            )
        return side, side
    h, w = (int(v) for v in grid)
    if h <= 0 or w <= 0 or h * w != num_tokens:
        raise ValueError(f"grid {tuple(grid)} does not match {num_tokens} tokens per frame")
    return h, w


def normalize(x: Tensor) -> Tensor:
    """Unit-norm rows in float32; zero vectors stay zero (cosine 0 with everything)."""
    x = x.float()
    return x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def frame_quotas(total: int, frames: int, device: torch.device | None = None) -> Tensor:
    """Split `total` over `frames` as evenly as possible; extras go to evenly spaced frames."""
    base, extra = divmod(total, frames)
    quotas = torch.full((frames,), base, dtype=torch.long, device=device)
    if extra:
        spots = ((torch.arange(extra, device=device) + 0.5) * frames / extra).long()
        quotas[spots] += 1
    return quotas


def merge_into(flat: Tensor, reps: Tensor) -> tuple[Tensor, Tensor]:
    """SCC step 3: assign every token to its most similar representative and average them in.

    flat: [K, D] tokens; reps: [M, D] representatives.
    Returns (out [M, D], assignment [K]) with out_j = (reps_j + sum of assigned) / (1 + count_j).
    """
    sim = normalize(flat) @ normalize(reps).T
    assignment = sim.argmax(dim=1)
    sums = reps.float().index_add(0, assignment, flat.float())
    counts = torch.bincount(assignment, minlength=reps.shape[0]).to(sums.dtype) + 1
    return (sums / counts[:, None]).to(flat.dtype), assignment


def select(video: Tensor, kept: Tensor, merge: bool = False, **info) -> Compressed:
    """Build the output of a selection method from kept flat indices (kept in input order)."""
    flat = video.reshape(-1, video.shape[-1])
    kept = kept.sort().values
    if merge:
        tokens, assignment = merge_into(flat, flat[kept])
    else:
        tokens = flat[kept]
        assignment = torch.full((flat.shape[0],), -1, dtype=torch.long, device=flat.device)
        assignment[kept] = torch.arange(kept.numel(), device=flat.device)
    return Compressed(tokens, assignment, flat.shape[0], kept=kept, info=dict(info))

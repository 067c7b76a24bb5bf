"""VisionZip: a few dominant tokens plus a few merged contextual tokens per frame.

Paper: Yang et al., "VisionZip: Longer is Better but Not Necessary in Vision Language Models",
CVPR 2025. Official code: github.com/dvlab-research/VisionZip (`visionzip/clip_encoder.py`).

Most visual tokens receive little attention and repeat their neighbours, so VisionZip keeps,
per frame, the d tokens that gather the most attention (dominant) and summarises the rest into
c contextual tokens: the remaining tokens (in input order) are split into c targets, taken at a
uniform stride (step = max(1, n_remaining // c), targets = arange(0, n_remaining, step)[:c]),
and the others, each assigned to its most cosine-similar target. As in the official code, a
contextual token is the target **plus** the plain mean of the tokens assigned to it
(target + sum(assigned) / max(1, count)), not a mean that includes the target; a target with
nothing assigned stays itself. The paper splits a budget 5.4 : 1 (e.g. 54 + 10 of 64).

Here (METHODS.md section 5) the method runs after projection and pooling, per frame: frame t gets
the quota m_t of `frame_quotas(M, T)`, with d_t = round(m_t * dominant_ratio) dominant tokens
(Python's round, as `budget`) and c_t = m_t - d_t contextual ones; since m_t <= N there are
always at least c_t remaining tokens, so the output has exactly M tokens. Importance is a model
signal (for SigLIP, which has no [CLS], the attention each patch receives; the official CLIP code
uses the [CLS] attention); ties go to the lower index. Two differences from the official code:
the similarity used for assignment is the cosine of the compressed features themselves (the
official code uses the head-averaged attention keys of the vision layer), and all arithmetic is
in float32. Output per frame: dominant tokens in input order, then contextual tokens in target
order; frames in order. Each output's position (`representative`, METHODS.md section 11): a
dominant token's own, a contextual token's target's.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from compressors._core import Compressed, Grid, budget, check_video, frame_quotas, normalize
from compressors._params import require_retention
from compressors.registry import Reference, register


def _check(params: dict[str, Any]) -> None:
    require_retention("visionzip", params["retention"])
    ratio = params["dominant_ratio"]
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0 <= ratio <= 1:
        raise ValueError(
            f"dominant_ratio is the dominant share of each frame's budget, in [0, 1] (the paper's "
            f"5.4:1 split is 0.84375), got {ratio!r}"
        )


def split_quota(quota: int, dominant_ratio: float) -> tuple[int, int]:
    """(dominant, contextual) token counts of one frame's quota."""
    dominant = min(quota, max(0, round(quota * dominant_ratio)))
    return dominant, quota - dominant


def _gather(x: Tensor, index: Tensor) -> Tensor:
    """x [G, N, D], index [G, K] -> [G, K, D]."""
    return x.gather(1, index[..., None].expand(-1, -1, x.shape[-1]))


def _frames(x: Tensor, importance: Tensor, dominant: int,
            contextual: int) -> tuple[Tensor, Tensor, Tensor]:
    """VisionZip on G frames sharing one quota.

    x: [G, N, D] float32 features; importance: [G, N].
    Returns (tokens [G, dominant + contextual, D], slot [G, N], source [G, dominant +
    contextual]): the output slot within its frame that represents each input token (-1 if
    none, which happens only when contextual = 0), and the input token (within the frame) each
    output stands for: a dominant token itself, a contextual token its target.
    """
    group, per_frame, _ = x.shape
    device = x.device
    slot = torch.full((group, per_frame), -1, dtype=torch.long, device=device)
    order = torch.sort(importance.float(), dim=1, descending=True, stable=True).indices
    dom = order[:, :dominant].sort(dim=1).values  # [G, d], input order
    slot.scatter_(1, dom, torch.arange(dominant, device=device).expand(group, -1))
    tokens, source = [_gather(x, dom)], [dom]
    if contextual:
        is_rest = torch.ones(group, per_frame, dtype=torch.bool, device=device)
        is_rest.scatter_(1, dom, False)
        rest = torch.arange(per_frame, device=device).expand(group, -1)[is_rest]
        rest = rest.view(group, per_frame - dominant)  # remaining tokens, input order
        n_rest = rest.shape[1]
        step = max(1, n_rest // contextual)
        is_target = torch.zeros(n_rest, dtype=torch.bool, device=device)
        is_target[torch.arange(0, n_rest, step, device=device)[:contextual]] = True
        targets, others = rest[:, is_target], rest[:, ~is_target]  # [G, c], [G, n_rest - c]
        x_t, x_o = _gather(x, targets), _gather(x, others)
        nearest = (normalize(x_o) @ normalize(x_t).transpose(1, 2)).argmax(dim=2)  # [G, n_o]
        # one-hot products rather than scatter_add: the same sums, deterministic on GPUs
        one_hot = torch.nn.functional.one_hot(nearest, contextual).float()  # [G, n_o, c]
        sums = one_hot.transpose(1, 2) @ x_o
        counts = one_hot.sum(dim=1).clamp_min(1)
        tokens.append(x_t + sums / counts[..., None])
        slot.scatter_(
            1, targets, dominant + torch.arange(contextual, device=device).expand(group, -1)
        )
        slot.scatter_(1, others, dominant + nearest)
        source.append(targets)
    return torch.cat(tokens, dim=1), slot, torch.cat(source, dim=1)


@register(
    "visionzip", signals=("importance",), check=_check, fidelity="variant",
    reference=Reference("dvlab-research/VisionZip", "3151f6df4fca36a4cd1c985e5956e725b1f9ad02",
                        "visionzip/clip_encoder.py",
                        "official code for CLIP image towers ([CLS] attention, key similarity); "
                        "here per frame after projection, feature cosine, SigLIP importance",
                        paper="arXiv:2412.04467, "
                              "VisionZip: Longer is Better but Not Necessary in Vision Language "
                              "Models (CVPR 2025)"),
)
def visionzip(
    video: Tensor,
    *,
    grid: Grid | None = None,
    retention: float | None = None,
    dominant_ratio: float = 5.4 / 6.4,
    importance: Tensor | None = None,
) -> Compressed:
    """Compress a video [T, N, D] to M = budget(retention, T*N) VisionZip tokens [M, D].

    dominant_ratio: share of each frame's quota given to dominant tokens (paper: 5.4 / 6.4).
    importance:     [T, N] (or [T*N]) attention each token receives (a model signal).
    assignment maps dominant tokens to themselves and every other token to its frame's
    contextual token (targets to their own); info records the dominant / contextual counts.
    """
    _check({"retention": retention, "dominant_ratio": dominant_ratio})
    check_video(video)
    frames, per_frame, dim = video.shape
    if importance is None:
        raise ValueError("visionzip needs the model signal 'importance' ([T, N])")
    if importance.numel() != frames * per_frame or importance.dim() not in (1, 2):
        raise ValueError(
            f"visionzip importance has shape {tuple(importance.shape)}; expected ({frames}, "
            f"{per_frame}) to match the video [T, N, D] = {tuple(video.shape)}"
        )
    importance = importance.to(video.device).reshape(frames, per_frame)
    if not importance.is_floating_point() or not torch.isfinite(importance).all():
        raise ValueError("visionzip importance must be a finite floating tensor (no NaN or inf)")

    total = budget(retention, frames * per_frame)
    quotas = frame_quotas(total, frames)
    start = torch.cumsum(quotas, 0) - quotas
    x = video.float()
    tokens = x.new_empty(total, dim)
    assignment = torch.full((frames, per_frame), -1, dtype=torch.long, device=video.device)
    representative = torch.empty(total, dtype=torch.long, device=video.device)
    counts = {"dominant": 0, "contextual": 0}
    for quota in sorted(set(quotas.tolist()) - {0}):
        dominant, contextual = split_quota(quota, dominant_ratio)
        members = (quotas == quota).nonzero().flatten().to(video.device)
        out, slot, source = _frames(x[members], importance[members], dominant, contextual)
        first = start.to(video.device)[members]
        rows = first[:, None] + torch.arange(quota, device=video.device)
        tokens[rows.flatten()] = out.reshape(-1, dim)
        representative[rows.flatten()] = (members[:, None] * per_frame + source).flatten()
        assignment[members] = torch.where(slot >= 0, slot + first[:, None], -1)
        counts["dominant"] += dominant * members.numel()
        counts["contextual"] += contextual * members.numel()
    return Compressed(tokens.to(video.dtype), assignment.flatten(), frames * per_frame, info=counts,
                      representative=representative)

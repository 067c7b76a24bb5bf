"""VidCom2: frame-uniqueness budgets, then each frame's most distinctive tokens (attention-free).

Paper: Liu, Wang, Ma and Zhang, "Video Compression Commander: Plug-and-Play Inference
Acceleration for Video Large Language Models", EMNLP 2025 (arXiv 2505.14454). Official code:
github.com/xuyang-liu16/VidCom2, branch `main` at commit
944a17d14f4848ad080a65eab2b0711a760fa154 (`token_compressor/vidcom2/vidcom2.py`,
`vidcom2_compression` and its helpers; called for LLaVA-OneVision from
`token_compressor/vidcom2/models/llava.py`, the `mm_newline_position == "one_token"` branch, on
the flattened [T*196, D] pooled projector features, `base_scale = R_RATIO`). This file is our
own implementation of that procedure, not a copy.

Frames that differ from the rest of the video get a larger share of the budget, and within a
frame the tokens least like both the video and the frame are kept, as they are (no merging).
Per video [T, N, D], in the features' dtype (`score_dtype="input"`, as the official float16
evaluation) or in float32:
1. Channels: the int(D * channel_ratio) channels of lowest variance over all T*N tokens
   (population variance; official ratio 0.5), in ascending variance; every token is cut to them
   and L2-normalised (`F.normalize`, eps 1e-12).
2. Scores: g(x, c) = sum over a in (1/8, 1/4, 1/2, 1, 2) of exp(-|x - c|^2 / (2a)), against
   the video centre (mean of all normalised tokens), s_v [T, N], and against the token's frame
   centre, s_f [T, N].
3. Frame budgets: uniqueness u_t = -mean_n s_v; p = softmax((u - max u) / temperature)
   (official 0.01, so p is nearly one-hot on real videos); scale_t = min(1, r (1 + p_t - mean p));
   k_t = max(1, round(scale_t * N)) (round half to even, computed in the score dtype), capped
   at N (in bfloat16 a product can round above an N it cannot represent; the official topk
   would then fail).
4. Selection: in each frame the k_t tokens of lowest s_v + s_f (the most distinctive); output
   the raw input tokens in input order (frames in order, ascending index within a frame).

Retention mapping: base_scale = r (the official `R_RATIO`). budget_mode="official" keeps
sum_t k_t tokens, which is not M = budget(r, T*N): the rounding of the nearly one-hot budgets
falls short (1554 of 1568 at 25% on 32 real frames of 196, METHODS.md 13), the clamp at 1
loses budget above r ~ 0.5, the floor of one token a frame exceeds M when r*N < 0.5 (T tokens
at least; at N = 1 every token is kept), and at r = 1 the frames below the mean uniqueness keep
fewer than N. budget_mode="exact" keeps exactly M: from the official selection it tops up with
the unselected tokens of lowest s_v + s_f over the whole video, or trims the selected tokens of
highest s_v + s_f, so it differs from the official output by |M - sum k_t| tokens only (at
r = 1 it keeps every token). Ties everywhere go to the lower index (stable sorts): lower
channel index at equal variance, lower token index at equal score.

No model signal: VidCom2 works on the features alone. `grid` is not used (only N matters); it
is checked against N when given.

Deviations from the official code:
- 196 tokens a frame is hard-coded for LLaVA-OneVision (`MODEL_SPECS["llava_ov"]`); here N is
  read from the input (the official Qwen paths take it as `frame_token_len`, same function).
- Ties: the official `torch.topk(..., sorted=False)` picks among equal scores (and equal channel
  variances) in an unspecified, device-dependent order; here the lower index wins. In float32
  ties are rare; in float16 (the official dtype) equal scores at a frame's
  cut-off are common, so float16 selections can differ from a CUDA run among tied tokens.
- With D < 2 (channel_ratio 0.5) no channel is selected, as in the official code: every score
  ties, budgets are uniform (k_t = round(r N)) and the lowest indices are kept.
- score_dtype="float32" is an option the official code does not have (scores and budgets in
  float32 for any input dtype).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from compressors._core import Compressed, Grid, budget, check_video, resolve_grid, select
from compressors._params import require_retention
from compressors.registry import Reference, register

BUDGET_MODES = ("official", "exact")
SCORE_DTYPES = ("input", "float32")
ALPHAS = (0.125, 0.25, 0.5, 1.0, 2.0)  # the official 2**k, k = -3..1: kernel widths 2a


def _number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)


def _check(params: dict[str, Any]) -> None:
    require_retention("vidcom2", params["retention"])
    if params["budget_mode"] not in BUDGET_MODES:
        raise ValueError(
            f"budget_mode must be one of {BUDGET_MODES} ('official': the official count, sum of "
            f"the per-frame budgets; 'exact': exactly budget(r, T*N) tokens), got "
            f"{params['budget_mode']!r}"
        )
    temperature = params["temperature"]
    if not _number(temperature) or temperature <= 0:
        raise ValueError(
            f"temperature is the softmax temperature of the frame budgets, a number > 0 "
            f"(official 0.01), got {temperature!r}"
        )
    ratio = params["channel_ratio"]
    if not _number(ratio) or not 0 < ratio <= 1:
        raise ValueError(
            f"channel_ratio is the share of lowest-variance channels scored, in (0, 1] "
            f"(official 0.5), got {ratio!r}"
        )
    if params["score_dtype"] not in SCORE_DTYPES:
        raise ValueError(
            f"score_dtype must be one of {SCORE_DTYPES} ('input': scores and budgets in the "
            f"features' dtype, as the official float16 run; 'float32'), got "
            f"{params['score_dtype']!r}"
        )


def _count(frames: int, grid: tuple[int, int], params: dict[str, Any]) -> int | None:
    """M in exact mode; None in official mode, whose count depends on the video."""
    if params["budget_mode"] == "exact":
        return budget(params["retention"], frames * grid[0] * grid[1])
    return None


def _kernel(x: Tensor, centre: Tensor) -> Tensor:
    """Multi-scale Gaussian similarity [..., N] of tokens x [..., N, C] to a centre."""
    dist = ((x - centre) ** 2).sum(dim=-1)
    total = torch.zeros_like(dist)
    for a in ALPHAS:
        total = total + torch.exp(-dist / (2 * a))
    return total


def scores(video: Tensor, channel_ratio: float = 0.5) -> tuple[Tensor, Tensor]:
    """(s_video, s_frame), each [T, N], of a video [T, N, D] in its own dtype (steps 1-2)."""
    frames, per_frame, dim = video.shape
    flat = video.reshape(-1, dim)
    variance = flat.var(dim=0, unbiased=False)
    channels = variance.argsort(stable=True)[: int(dim * channel_ratio)]
    x = F.normalize(flat[:, channels].view(frames, per_frame, -1), dim=-1)
    return _kernel(x, x.mean(dim=(0, 1), keepdim=True)), _kernel(x, x.mean(dim=1, keepdim=True))


def frame_budgets(
    uniqueness: Tensor, retention: float, per_frame: int, temperature: float = 0.01
) -> Tensor:
    """[T] long tokens kept per frame (step 3) from the frame uniqueness [T]."""
    probs = torch.softmax((uniqueness - uniqueness.max()) / temperature, dim=0)
    scales = (retention * (1 + probs - probs.mean())).clamp(max=1.0)
    return (scales * per_frame).round().long().clamp(1, per_frame)


def _lowest(score: Tensor, quotas: Tensor) -> Tensor:
    """[T, N] bool: the quotas[t] lowest scores of each frame (ties: lower index)."""
    order = score.argsort(dim=1, stable=True)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(score.shape[1], device=score.device).expand_as(order))
    return rank < quotas.to(score.device)[:, None]


def _to_exact(keep: Tensor, score: Tensor, target: int) -> Tensor:
    """Top up with the lowest unselected scores or trim the highest selected ones (whole video,
    ties: lower index ranks first) until `target` tokens are kept."""
    keep = keep.clone()
    missing = target - int(keep.sum())
    if missing:
        order = score.argsort(stable=True)
        if missing > 0:
            order = order[~keep[order]]
            keep[order[:missing]] = True
        else:
            order = order[keep[order]]
            keep[order[missing:]] = False
    return keep


@register(
    "vidcom2",
    check=_check,
    count=_count,
    reference=Reference(
        repo="xuyang-liu16/VidCom2",
        commit="944a17d14f4848ad080a65eab2b0711a760fa154",
        file="token_compressor/vidcom2/vidcom2.py",
        note="LLaVA-OneVision path: token_compressor/vidcom2/models/llava.py (one_token branch); "
        "tokens per frame from the input instead of the hard-coded 196; ties to the lower index",
        paper="arXiv:2505.14454, "
              "Video Compression Commander: Plug-and-Play Inference Acceleration for Video LLMs "
              "(EMNLP 2025)",
    ),
    fidelity="official",
)
def vidcom2(
    video: Tensor,
    *,
    grid: Grid | None = None,
    retention: float | None = None,
    budget_mode: str = "official",
    temperature: float = 0.01,
    channel_ratio: float = 0.5,
    score_dtype: str = "input",
) -> Compressed:
    """Keep each frame's most distinctive tokens of a video [T, N, D] -> tokens [K, D].

    retention:     r, the official base_scale (R_RATIO).
    budget_mode:   "official" (K = sum of the per-frame budgets) or "exact" (K = M =
                   budget(r, T*N), topped up or trimmed by score over the whole video).
    temperature:   softmax temperature of the frame budgets (official 0.01).
    channel_ratio: share of lowest-variance channels scored (official 0.5).
    score_dtype:   "input" (scores and budgets in the features' dtype; official: float16) or
                   "float32".
    info: target_tokens (M), official_tokens (sum of the per-frame budgets), frame_tokens (kept
    per frame), channels (scored), and the knobs used.
    """
    params = dict(retention=retention, budget_mode=budget_mode, temperature=temperature,
                  channel_ratio=channel_ratio, score_dtype=score_dtype)
    _check(params)
    check_video(video)
    frames, per_frame, dim = video.shape
    if grid is not None:
        resolve_grid(per_frame, grid)
    work = video if score_dtype == "input" else video.float()
    s_video, s_frame = scores(work, channel_ratio)
    quotas = frame_budgets(-s_video.mean(dim=-1), retention, per_frame, temperature)
    distinct = s_video + s_frame
    keep = _lowest(distinct, quotas).flatten()
    target = budget(retention, frames * per_frame)
    if budget_mode == "exact":
        keep = _to_exact(keep, distinct.flatten(), target)
    kept = keep.nonzero().flatten()
    return select(
        video, kept, target_tokens=target, official_tokens=int(quotas.sum()),
        frame_tokens=keep.view(frames, per_frame).sum(dim=1).tolist(),
        channels=int(dim * channel_ratio), **params,
    )

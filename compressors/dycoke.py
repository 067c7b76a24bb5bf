"""DyCoke token temporal merging (TTM): prune each frame's tokens that repeat a reference frame.

Paper: Tao et al., "DyCoke: Dynamic Compression of Tokens for Fast Video Large Language Models",
CVPR 2025. Official code: github.com/KD-TAO/DyCoke at commit
dd7463498203479d0ff6f2d29c4e72928c0af244 (HEAD of 22 Nov 2025), `llava/model/llava_arch.py`
(last changed in 35cc532c16f74a04b3f653c3bf50f59d8e505154): `dycole_ttm` (sic; lines 35-91),
called on LLaVA-OneVision's pooled video features (lines 386-390, `one_token` newline branch:
[T * 196, D] after `get_2dPool`, before the image newline is appended) with
`dycoke_k` = 0.7 (the lmms-eval default of `lmms_eval/models/llava_onevision.py`, line 92).
This file is our own implementation of that procedure, not a copy. Only TTM, the pre-LLM stage
that every third-party comparison reports, is here; DyCoke's second stage, the dynamic KV-cache
pruning during decoding (`dycoke_pruning` in `modeling_qwen2.py`, `dycoke_l`, `dycoke_p`), is
out of scope.

The procedure on a video [T, N, D] with pruning ratio k (each pruned frame keeps
n = int((1 - k) * N) tokens, the official float expression):
1. Pairs: frame 2j + 1 is pruned against frame 2j (for 2j + 1 < T), by the cosine similarity of
   each token with the token at the same position, computed as
   `cosine_similarity(normalize(a), normalize(b))` (the official double normalisation).
2. Windows: for i in `range(0, T - 4, 4)` (the official bound), frame i + 2 is pruned against
   frame i instead, by `cosine_similarity(a, b)` of the raw tokens. The bound is one window short
   of the paper's: at T = 32 frames 0, 4, ..., 28 **and 30** stay whole (9 of 32), so even k = 1
   keeps 9 / 32 = 28.1% of the tokens and k = 0.7 keeps 9 * 196 + 23 * 58 = 3098 (49.4%).
3. A pruned frame keeps its n tokens of lowest similarity (the most changed), in ascending
   similarity order (`topk(n, largest=False)`, sorted); every other frame passes whole, in
   position order. Output: frame by frame, in frame order. Selection only: dropped tokens are not
   averaged into anything (their `assignment` is -1).

Every frame is whole or pruned by geometry alone, so the count is a function of (T, N, n):
W whole frames and P = T - W pruned ones give W * N + P * n tokens (`official_count`), between
W * N and T * N. The reachable minimum retention is W / T (`minimum_retention`: 28.1% at T = 32,
31.3% at 16, 37.5% at 8, 50% at 2 and 4, 100% at 1; tending to 1/4).

Retention mapping: M = budget(r, T * N); n is the integer in [0, N] whose count W * N + P * n is
closest to M (ties: the smaller n), reported as k = 1 - n / N (nudged by one float step where
needed so that int((1 - k) * N) == n). A retention with M < W * N is unreachable: ValueError
naming the minimum and the fix (both modes). Without a retention, `k` sets n directly as the
official code does (k = 0.7: lmms-eval's default).

budget_mode:
- "official" (default): the official count W * N + P * n (achieved count in the output and info).
- "exact": exactly M tokens for M >= W * N. The whole frames stay whole; the P pruned frames share
  B = M - W * N: each keeps its q = B // P lowest-similarity tokens, and the B % P pruned frames
  whose (q + 1)-th lowest similarity is smallest keep one more (ties: earlier frame). This is the
  official selection at the nearest count topped up with the least similar next tokens, or
  trimmed of the most similar last ones. Below W * N it is not defined (DyCoke never prunes the
  anchor frames) and raises like "official".

Signals: none (the similarities are those of the compressed features themselves).

Deviations, all outside the official geometry (T = 32, even, in lmms-eval's `load_video`) or at
exact ties:
- T <= 4: the official code crashes (`torch.stack` of an empty list of window similarities; at
  T = 1 of pair similarities too); here those stages are simply empty (T = 1: one whole frame).
- odd T: the official pair loop `range(0, T - 1, 2)` never appends the last frame, so it drops
  frame T - 1 entirely; here it passes whole (an unpaired first-of-pair frame, as the loop over
  pairs would leave it), so retention 1.0 keeps every token.
- ties: `topk`'s order among equal similarities is unspecified (CPU and CUDA differ); here ties
  go to the lower position (stable sort). In float32 exact ties are rare; in float16 they are
  common at the cut-off.
- `similarity_dtype`: "float32" (default) computes the similarities in float32; "input" in the
  features' dtype, as the official code in its float16 run (where a zero token has similarity NaN,
  which `topk(largest=False)` ranks above every number, so it is pruned first; here NaN ranks as
  +inf, the same). Outputs are the input tokens themselves, in the input dtype.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from compressors._core import Compressed, Grid, budget, check_video, resolve_grid
from compressors.registry import Reference, register

BUDGET_MODES = ("official", "exact")
SIMILARITY_DTYPES = ("float32", "input")


def _check(params: dict[str, Any]) -> None:
    retention, k = params["retention"], params["k"]
    if k is not None:
        if isinstance(k, bool) or not isinstance(k, (int, float)) or not 0.0 <= k <= 1.0:
            raise ValueError(
                f"k is DyCoke's pruning ratio in [0, 1] (each pruned frame keeps int((1 - k) * N) "
                f"tokens; lmms-eval's default 0.7), got {k!r}"
            )
        if retention is not None:
            raise ValueError(
                f"dycoke takes retention or k, not both (got retention={retention}, k={k}): "
                "retention sets k to the count closest to the budget; drop one of them"
            )
    elif retention is None:
        raise ValueError(
            "dycoke needs a token budget: pass retention in (0, 1] (k is then solved from it), or "
            "retention=null with k=0.7 for the official knob"
        )
    if params["budget_mode"] not in BUDGET_MODES:
        raise ValueError(
            f"budget_mode must be one of {BUDGET_MODES} ('official': the official count; 'exact': "
            f"exactly budget(retention, T*N) tokens), got {params['budget_mode']!r}"
        )
    if params["budget_mode"] == "exact" and retention is None:
        raise ValueError("budget_mode='exact' needs a retention (k alone sets the official count)")
    if params["similarity_dtype"] not in SIMILARITY_DTYPES:
        raise ValueError(
            f"similarity_dtype must be one of {SIMILARITY_DTYPES} ('float32': similarities in "
            f"float32; 'input': in the features' dtype, as the official float16 run), got "
            f"{params['similarity_dtype']!r}"
        )


def layout(frames: int) -> dict[int, tuple[int, int]]:
    """The pruned frames of a T-frame video: {frame: (reference frame, stage 1 or 2)}.

    Stage 1: odd frames against their predecessor; stage 2: frame i + 2 against frame i for i in
    range(0, T - 4, 4) (the official bound). Every other frame stays whole.
    """
    pruned = {f: (f - 1, 1) for f in range(1, frames, 2)}
    for i in range(0, frames - 4, 4):
        pruned[i + 2] = (i, 2)
    return dict(sorted(pruned.items()))


def whole_frames(frames: int) -> list[int]:
    """The frames DyCoke never prunes (0, 4, 8, ... and the one the official bound misses)."""
    pruned = layout(frames)
    return [f for f in range(frames) if f not in pruned]


def minimum_retention(frames: int) -> float:
    """The smallest retention DyCoke reaches on T frames: whole frames / T (k = 1)."""
    return len(whole_frames(frames)) / frames


def official_count(frames: int, per_frame: int, kept_per_pruned: int) -> int:
    """W * N + P * n: the tokens DyCoke hands on with n tokens kept per pruned frame."""
    whole = len(whole_frames(frames))
    return whole * per_frame + (frames - whole) * kept_per_pruned


def kept_per_pruned_frame(k: float, per_frame: int) -> int:
    """The official n = int((1 - k) * N)."""
    return int((1 - k) * per_frame)


def _check_reachable(target: int, frames: int, per_frame: int, retention: float) -> None:
    floor = official_count(frames, per_frame, 0)
    if target < floor:
        whole = whole_frames(frames)
        rmin = math.ceil(minimum_retention(frames) * 1e6) / 1e6
        raise ValueError(
            f"dycoke cannot reach retention {retention} (M = {target} of {frames * per_frame} "
            f"tokens) on T={frames} frames of N={per_frame} tokens: its minimum is {floor} tokens "
            f"(retention {len(whole)}/{frames} = {floor / (frames * per_frame):.4f}, at k=1), "
            f"since frames {whole} are never pruned. Use retention >= {rmin} for this geometry "
            "(more frames lower it towards 1/4), or a compressor that reaches lower budgets"
        )


def solve_kept(target: int, frames: int, per_frame: int) -> int:
    """The n in [0, N] whose official count is closest to `target` (ties: the smaller n)."""
    floor = official_count(frames, per_frame, 0)
    pruned = frames - len(whole_frames(frames))
    if pruned == 0:
        return per_frame
    lo = max(0, min(per_frame, (target - floor) // pruned))
    hi = min(per_frame, lo + 1)
    over = abs(official_count(frames, per_frame, hi) - target)
    return lo if abs(official_count(frames, per_frame, lo) - target) <= over else hi


def ratio_for(kept: int, per_frame: int) -> float:
    """A pruning ratio k with int((1 - k) * N) == kept: 1 - kept / N, nudged if rounding bites."""
    k = 1 - kept / per_frame
    while kept_per_pruned_frame(k, per_frame) < kept:
        k = math.nextafter(k, -math.inf)
    return k


def _count(frames: int, grid: tuple[int, int], params: dict[str, Any]) -> int:
    """The tokens DyCoke hands on for T frames of an (H, W) grid (raises if unreachable)."""
    per_frame = grid[0] * grid[1]
    retention = params["retention"]
    if retention is None:
        return official_count(frames, per_frame, kept_per_pruned_frame(params["k"], per_frame))
    target = budget(retention, frames * per_frame)
    _check_reachable(target, frames, per_frame, retention)
    if params["budget_mode"] == "exact":
        return target
    return official_count(frames, per_frame, solve_kept(target, frames, per_frame))


def similarities(video: Tensor, similarity_dtype: str = "float32") -> tuple[list[int], Tensor]:
    """(pruned frames, similarity [P, N] float32) of each pruned frame's tokens to its reference.

    Stage-1 frames use cosine(normalize(a), normalize(b)), stage-2 frames cosine(a, b), as the
    official code; NaN (a zero token in float16) becomes +inf, ranked last as by `topk`.
    """
    x = video.float() if similarity_dtype == "float32" else video
    plan = layout(video.shape[0])
    pruned = list(plan)
    device = video.device
    ref = torch.tensor([plan[f][0] for f in pruned], dtype=torch.long, device=device)
    second = torch.tensor([plan[f][1] == 2 for f in pruned], dtype=torch.bool, device=device)
    a, b = x[ref], x[torch.tensor(pruned, dtype=torch.long, device=device)]
    pairs = F.cosine_similarity(F.normalize(a, p=2, dim=-1), F.normalize(b, p=2, dim=-1), dim=-1)
    windows = F.cosine_similarity(a, b, dim=-1)
    sims = torch.where(second[:, None], windows, pairs)
    return pruned, sims.float().nan_to_num(nan=math.inf)


def _quotas(sims: Tensor, order: Tensor, extra_total: int) -> Tensor:
    """Exact mode: [P] tokens per pruned frame summing to extra_total (module docstring rule)."""
    pruned, per_frame = sims.shape
    base, rest = divmod(extra_total, pruned)
    quotas = torch.full((pruned,), base, dtype=torch.long, device=sims.device)
    if rest:
        nxt = sims.gather(1, order[:, base : base + 1]).flatten()  # (q + 1)-th lowest
        winners = torch.sort(nxt, stable=True).indices[:rest]
        quotas[winners] += 1
    return quotas


@register(
    "dycoke",
    check=_check,
    count=_count,
    reference=Reference(
        repo="KD-TAO/DyCoke",
        commit="dd7463498203479d0ff6f2d29c4e72928c0af244",
        file="llava/model/llava_arch.py",
        note="dycole_ttm (TTM, pre-LLM) on LLaVA-OneVision's pooled features; the KV-cache "
        "pruning stage is not ported",
        paper="arXiv:2411.15024, "
              "DyCoke: Dynamic Compression of Tokens for Fast Video Large Language Models (CVPR "
              "2025)",
    ),
    fidelity="official",
)
def dycoke(
    video: Tensor,
    *,
    grid: Grid | None = None,
    retention: float | None = None,
    k: float | None = None,
    budget_mode: str = "official",
    similarity_dtype: str = "float32",
) -> Compressed:
    """DyCoke TTM on a video [T, N, D] -> [M', D] selected tokens (module docstring).

    retention:   sets the per-pruned-frame count n to the official count closest to
                 budget(retention, T*N); None: use k.
    k:           the official pruning ratio (n = int((1 - k) * N)); only with retention=None.
    budget_mode: "official" (W*N + P*n tokens) or "exact" (budget(retention, T*N) tokens).
    similarity_dtype: "float32" or "input" (the features' dtype, as the official float16 run).
    `kept` lists the flat input indices in output order; info records target_tokens (M, or the
    official count with k alone), k, kept_per_pruned_frame (the official n), pruned_frame_tokens
    (per pruned frame, what was kept: n each, or q / q + 1 in exact mode), official_tokens
    (W*N + P*n), whole_frames and minimum_retention.
    """
    _check(dict(retention=retention, k=k, budget_mode=budget_mode,
                similarity_dtype=similarity_dtype))
    check_video(video)
    frames, per_frame, dim = video.shape
    if grid is not None:
        resolve_grid(per_frame, grid)
    total = frames * per_frame
    if retention is None:
        kept_n = kept_per_pruned_frame(k, per_frame)
        target = official_count(frames, per_frame, kept_n)
    else:
        target = budget(retention, total)
        _check_reachable(target, frames, per_frame, retention)
        kept_n = solve_kept(target, frames, per_frame)
        k = ratio_for(kept_n, per_frame)

    pruned, sims = similarities(video, similarity_dtype)
    order = torch.sort(sims, dim=1, stable=True).indices  # [P, N] ascending, ties: lower index
    quotas = torch.full((len(pruned),), kept_n, dtype=torch.long, device=video.device)
    if budget_mode == "exact" and pruned:
        quotas = _quotas(sims, order, target - official_count(frames, per_frame, 0))
    row = {f: j for j, f in enumerate(pruned)}
    pieces = []
    for f in range(frames):
        if f in row:
            pieces.append(f * per_frame + order[row[f], : int(quotas[row[f]])])
        else:
            pieces.append(f * per_frame + torch.arange(per_frame, device=video.device))
    kept = torch.cat(pieces)
    assignment = torch.full((total,), -1, dtype=torch.long, device=video.device)
    assignment[kept] = torch.arange(kept.numel(), device=video.device)
    info = {
        "target_tokens": target,
        "k": float(k),
        "kept_per_pruned_frame": kept_n,
        "pruned_frame_tokens": quotas.tolist(),
        "official_tokens": official_count(frames, per_frame, kept_n),
        "whole_frames": whole_frames(frames),
        "minimum_retention": minimum_retention(frames),
    }
    tokens = video.reshape(total, dim)[kept]
    return Compressed(tokens, assignment, total, kept=kept, info=info)

"""FastVID: dynamic segments, salient tokens and density-peak context tokens merged per segment.

Paper: Shen et al., "FastVID: Dynamic Density Pruning for Fast Video Large Language Models",
NeurIPS 2025. Official code: github.com/LunarShen/FastVID at commit
a40a109cb8df20e8c2c17c6850f8269717369990 (HEAD of 10 Nov 2025), LLaVA-OneVision path
`fastvid_llavaonevision/`: the FastVID block of `Qwen2Model.forward` in
`LLaVA-NeXT/llava/model/language_model/modeling_qwen2.py` (lines 900-1075, last changed in
ea8b57e4bbb5478645879c17d182880b445bf968), its signals from `SigLipVisionAbstract` in
`multimodal_encoder/siglip_encoder.py` and `encode_images` / `get_attn_2dPool` in
`llava/model/llava_arch.py`; knobs from `scripts/eval.sh`. Our own implementation, not a copy.

Consecutive frames of a video repeat each other, and within a frame a few tokens carry the
detail while the rest are redundant context. FastVID, on a video [T, N, D] (the post-projector,
post-pooling tokens the LLM receives, before its first layer), with r the retention:
1. **DySeg.** Cosine similarity of consecutive frames' global features s_t = cos(g_t, g_t+1)
   (t < T-1). A cut after frame t wherever s_t < tau, plus after the c-1 lowest s_t; cuts
   split the frames into segments.
2. **Budgets.** R = int(N * r) tokens a frame; C = int(R * d) context, S = R - C salient.
3. **ATS.** Per frame, the S tokens of highest `head_attention` are kept unchanged (salient).
4. **STPrune (density peaks).** Per frame, over its N - S remaining tokens (its pool):
   dist = euclidean / sqrt(D); density rho = exp(-mean of the squared distances to the 4
   nearest, itself included); delta = distance to the nearest denser token (the frame's
   largest distance for the densest); score = delta * rho.
5. **Anchor distribution.** A segment of L frames gets C * L context tokens, on
   a = ceil(L / p) anchor frames (every p-th frame counted back from its last), each
   q = floor(C * L / a). A frame with q == C (every one-frame segment) takes its top-C pool
   tokens by score and merges its own pool into them; an anchor with q > C takes its top-q and
   merges the pool of its **whole segment** (every frame's remaining tokens, its own included)
   into them, each anchor separately, so a token of a segment with two anchors enters one
   context token of each. Non-anchor frames keep no context tokens.
6. **DTM merge.** Each pool token goes to its most cosine-similar target; a target with k
   tokens assigned (itself usually among them) becomes w * target + (1 - w) * mean(assigned),
   w = max(1 / (k + 1), beta): 0.6 target + 0.4 mean at the defaults (k = 0: itself).
7. Output: salient and context tokens sorted by original flat index (position order), `kept` =
   those indices (a context token's is its target's, the position the official code gives it).

Defaults (`scripts/eval.sh`, `lmms_eval/models/llava_onevision.py`): c = `fastvid_DySeg_c` 8,
tau = `fastvid_DySeg_tau` 0.9, d = `fastvid_STPrune_d` 0.4, p = `fastvid_DTM_p` 4,
beta = `fastvid_DTM_beta` 0.6; here `dyseg_c`, `dyseg_tau`, `stprune_d`, `dtm_p`, `dtm_beta`.

**Retention.** r is the official `fastvid_retention_ratio` itself: R = int(N r) a frame.
`budget_mode="official"` hands over the official count K = T * S + sum of the context quotas,
always K <= T * R <= M = budget(r, T*N) (the floors: 1565 of 1568 at 25%, 32 x 196). With
`budget_mode="exact"` the M - K missing tokens are the highest-`head_attention` tokens that are
neither salient nor context targets (whole video, ties to the lower flat index), taken after the
targets are chosen and before the merge, kept unchanged like salient tokens and taken out of
the pools they would have been merged from: exactly M tokens, the official choice otherwise.

**Signals** (the adapter computes them once per video, per frame, from the vision tower):
- `frame_features` [T, C]: for each frame, the vision tower's output that feeds the projector
  (LLaVA-OneVision: SigLIP-so400m-patch14-384 with its last encoder layer removed, i.e. the
  output of encoder layer 26 of 27, `hidden_states[-1]` of the truncated tower, [729, 1152],
  before the projector and pooling) passed through the **original SigLIP checkpoint's**
  `vision_model.post_layernorm` and `vision_model.head` (`SigLipMultiheadAttentionPoolingHead`:
  a learned probe attends over the 729 tokens with 16-head `nn.MultiheadAttention`, then
  residual + MLP(layernorm)); the pooled output [1152]. The official code loads those two
  modules from `mm_vision_tower` (google/siglip-so400m-patch14-384) in float16, because the
  LLaVA-OneVision tower has them removed (head = Identity, post_layernorm unused). Only the
  cosine of consecutive frames is used, so any width C works.
- `head_attention` [T, N] (or [T*N]): the same head's attention weights, as
  `nn.MultiheadAttention` returns them by default (`average_attn_weights=True`: softmax of the
  probe's single query over the 729 keys, averaged over the 16 heads), [T, 1, 729] -> viewed
  [T, 1, 27, 27] -> `F.interpolate(size=(ceil(27 / 2), ceil(27 / 2)) = (14, 14),
  mode="bilinear", align_corners=False)` (the same bilinear resize as the features' 2x2
  pooling) -> row-major [T, 196]. Not renormalised. Any other grid: resize to the video's (H, W).

**Deviations from the official code**, each only where it would crash, tie or round:
- Ties. The official code adds `torch.rand(...) * 1e-6` to the densities and leaves top-k ties
  to `torch.topk`. Here every ranking is a stable sort, ties to the lower index: salient
  tokens, the c-1 lowest similarities, scores, top-up tokens; a token counts as denser than an
  equally dense one when its pool position is lower (a jitter smaller than any gap, decreasing
  with the index; unlike the official jitter it never reorders densities closer than 1e-6, and
  the score uses rho itself). Without exact ties the choices coincide (see the fixtures);
  merge ties go to the target ranked first by score, as the official argmax does.
- Crashes. The official code fails when T < c, T = 1 included (`topk(c - 1)` of T - 1
  similarities), when an anchor's quota exceeds its pool (q > N - S: a 4-frame segment from
  r = 0.46 at N = 196), and when a pool has fewer than 4 tokens. Here: min(c - 1, T - 1) cuts,
  anchors capped at their pool, min(4, pool) neighbours. r = 1 returns every token unchanged
  (the uncompressed input; the official code would crash or merge there); where the official
  count is 0 (N r < 1), official mode keeps the single top-up token so the LLM gets one.
- Precision. The official code runs the LLM in float16: distances and densities in float32 (as
  here), but the merge cosines, sums and weights in float16 (its 0.6 is float16 0.6001).
  Here everything after the input is float32, cast back to the input dtype at the end. DySeg's
  cosines are float32 here (float16 officially; only similarities within ~5e-4 of tau differ).
  A zero vector gets cosine 0 (the official division gives NaN).

`assignment`: salient, context-target and top-up tokens map to their own output; a pool token
to the context token it was merged into (in a segment with several anchors, the most similar of
its representatives, ties to the earlier anchor); tokens merged nowhere (non-salient tokens
when C = 0, or the non-anchor frames of a segment whose anchors have q == C, which happens for
p = 2) are -1. `grid` is only checked against N (head_attention already lies on it).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from compressors._core import Compressed, Grid, budget, check_video, normalize, resolve_grid
from compressors._params import integer_at_least, require_retention
from compressors.registry import Reference, register

BUDGET_MODES = ("official", "exact")
NEIGHBOURS = 4  # the official density uses the 4 nearest tokens, itself included


def _unit(name: str, value: Any, hint: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ValueError(f"{name} must be a number in [0, 1] ({hint}), got {value!r}")
    return float(value)


def _check(params: dict[str, Any]) -> None:
    require_retention("fastvid", params["retention"])
    integer_at_least("dyseg_c", params["dyseg_c"], 1)
    integer_at_least("dtm_p", params["dtm_p"], 1)
    tau = params["dyseg_tau"]
    if isinstance(tau, bool) or not isinstance(tau, (int, float)) or not -1 <= tau <= 1:
        raise ValueError(f"dyseg_tau is a cosine threshold in [-1, 1] (official 0.9), got {tau!r}")
    _unit("stprune_d", params["stprune_d"], "context share of a frame's tokens, official 0.4")
    _unit("dtm_beta", params["dtm_beta"], "least weight of a context token's target, official 0.6")
    if params["budget_mode"] not in BUDGET_MODES:
        raise ValueError(
            f"budget_mode must be one of {BUDGET_MODES} ('official': the official code's count; "
            f"'exact': exactly budget(r, T*N) tokens), got {params['budget_mode']!r}"
        )


def _count(frames: int, grid: tuple[int, int], params: dict[str, Any]) -> int | None:
    """Tokens handed on: M in exact mode and at r = 1; None in official mode (the count depends
    on the segments, i.e. on the video)."""
    retention, total = params.get("retention"), frames * grid[0] * grid[1]
    if retention is None:
        return None
    if retention >= 1.0 or params.get("budget_mode") == "exact":
        return budget(retention, total)
    return None


def frame_budgets(per_frame: int, retention: float, d: float) -> tuple[int, int, int]:
    """(R, S, C) of one frame: R = int(N r) retained, C = int(R d) context, S = R - C salient."""
    retained = int(per_frame * retention)
    context = int(retained * d)
    return retained, retained - context, context


def segments(frame_features: Tensor, c: int, tau: float) -> list[int]:
    """DySeg: segment lengths (in frame order, summing to T) from global features [T, C].

    Cut after frame t where cos(g_t, g_t+1) < tau, and after the min(c - 1, T - 1) lowest
    similarities (ties: the earlier transition)."""
    frames = frame_features.shape[0]
    g = normalize(frame_features)
    sim = (g[:-1] * g[1:]).sum(dim=1)
    cut = sim < tau
    lowest = torch.sort(sim, stable=True).indices[: min(c - 1, frames - 1)]
    cut[lowest] = True
    ends = [*cut.nonzero().flatten().tolist(), frames - 1]
    return [end - start for start, end in zip([-1, *ends[:-1]], ends, strict=True)]


def context_quotas(sizes: list[int], context: int, p: int) -> list[int]:
    """Context tokens of each frame: a segment of L frames puts floor(C L / ceil(L / p)) on
    every p-th frame counted back from its last frame, 0 on the others."""
    quotas: list[int] = []
    for length in sizes:
        share = context * length // ((length + p - 1) // p)
        quotas += [share if (length - 1 - k) % p == 0 else 0 for k in range(length)]
    return quotas


def density_scores(pool: Tensor) -> Tensor:
    """Density-peak scores [G, n] of G pools of n tokens [G, n, D] (float32).

    rho = exp(-mean squared distance to the min(4, n) nearest, itself included), distances
    euclidean / sqrt(D); delta = distance to the nearest denser token (ties in rho: the lower
    position is denser), the pool's largest distance for its densest; score = delta * rho."""
    groups, n, dim = pool.shape
    dist = torch.cdist(pool, pool) / dim**0.5
    nearest = torch.topk(dist, min(NEIGHBOURS, n), dim=-1, largest=False).values
    rho = torch.exp(-(nearest**2).mean(dim=-1))
    order = torch.sort(rho, dim=-1, descending=True, stable=True).indices
    rank = torch.empty_like(order).scatter_(
        1, order, torch.arange(n, device=pool.device).expand(groups, -1)
    )
    denser = rank[:, None, :] < rank[:, :, None]  # [g, i, j]: j is denser than i
    farthest = dist.flatten(1).max(dim=-1).values[:, None, None]
    delta = torch.where(denser, dist, farthest).min(dim=-1).values
    return delta * rho


def dtm_merge(members: Tensor, live: Tensor, targets: Tensor, beta: float
              ) -> tuple[Tensor, Tensor, Tensor]:
    """Merge G groups of tokens [G, P, D] (those where `live` [G, P] is True) into their
    targets [G, K, D] (float32, K >= 1); members [1, P, D] with live [1, P] go to every group.

    Each live member goes to its most cosine-similar target (ties: the first target); a target
    with k members becomes w * target + (1 - w) * mean(members), w = max(1 / (k + 1), beta).
    Returns (merged [G, K, D], nearest [G, P], its cosine [G, P], -inf where not live)."""
    cos = normalize(members) @ normalize(targets).transpose(1, 2)
    best, nearest = cos.max(dim=2)
    one_hot = torch.nn.functional.one_hot(nearest, targets.shape[1]).to(members.dtype)
    one_hot = one_hot * live[..., None]
    counts = one_hot.sum(dim=1)[..., None]  # [G, K, 1]
    mean = (one_hot.transpose(1, 2) @ members) / counts.clamp_min(1)
    weight = (1 / (counts + 1)).clamp(min=beta)
    best = best.masked_fill(~live, -math.inf)
    return weight * targets + (1 - weight) * mean, nearest, best


def _signals(frame_features: Tensor | None, head_attention: Tensor | None, frames: int,
             per_frame: int, device: torch.device) -> tuple[Tensor, Tensor]:
    if frame_features is None or head_attention is None:
        raise ValueError("fastvid needs the model signals 'frame_features' ([T, C]) and "
                         "'head_attention' ([T, N])")
    if frame_features.dim() != 2 or frame_features.shape[0] != frames:
        raise ValueError(f"fastvid frame_features has shape {tuple(frame_features.shape)}; "
                         f"expected ({frames}, C): one global feature per frame")
    if head_attention.dim() not in (1, 2) or head_attention.numel() != frames * per_frame:
        raise ValueError(f"fastvid head_attention has shape {tuple(head_attention.shape)}; "
                         f"expected ({frames}, {per_frame}) to match the video [T, N, D]")
    for name, s in (("frame_features", frame_features), ("head_attention", head_attention)):
        if not s.is_floating_point() or not torch.isfinite(s).all():
            raise ValueError(f"fastvid {name} must be a finite floating tensor (no NaN or inf)")
    return frame_features.to(device).float(), head_attention.to(device).float().reshape(
        frames, per_frame)


def _identity(video: Tensor, **info: Any) -> Compressed:
    flat = video.reshape(-1, video.shape[-1])
    index = torch.arange(flat.shape[0], device=video.device)
    return Compressed(flat.clone(), index, flat.shape[0], kept=index.clone(), info=dict(info))


@register(
    "fastvid",
    signals=("frame_features", "head_attention"),
    check=_check,
    count=_count,
    reference=Reference(
        repo="LunarShen/FastVID",
        commit="a40a109cb8df20e8c2c17c6850f8269717369990",
        file="fastvid_llavaonevision/LLaVA-NeXT/llava/model/language_model/modeling_qwen2.py",
        note="FastVID block of Qwen2Model.forward (lines 900-1075); signals from "
        "SigLipVisionAbstract (multimodal_encoder/siglip_encoder.py) and get_attn_2dPool "
        "(llava_arch.py); LLaVA-OneVision path",
        paper="arXiv:2503.11187, "
              "FastVID: Dynamic Density Pruning for Fast Video Large Language Models (NeurIPS "
              "2025)",
    ),
    fidelity="official",
)
def fastvid(
    video: Tensor,
    *,
    grid: Grid | None = None,
    retention: float | None = None,
    dyseg_c: int = 8,
    dyseg_tau: float = 0.9,
    stprune_d: float = 0.4,
    dtm_p: int = 4,
    dtm_beta: float = 0.6,
    budget_mode: str = "official",
    frame_features: Tensor | None = None,
    head_attention: Tensor | None = None,
) -> Compressed:
    """Compress a video [T, N, D] with FastVID; tokens [K, D] in original position order.

    dyseg_c, dyseg_tau: DySeg's least segment count and similarity threshold.
    stprune_d:          context share of each frame's R = int(N r) tokens.
    dtm_p, dtm_beta:    anchor spacing within a segment; least weight of a context token's target.
    budget_mode:        "official" (K <= M tokens, the official count) or "exact" (M tokens).
    frame_features:     [T, C] global SigLIP feature per frame (module docstring).
    head_attention:     [T, N] SigLIP attention-pooling-head probe attention on the token grid.
    info records the budgets, the segments, the official count and the top-up.
    """
    params = {"retention": retention, "dyseg_c": dyseg_c, "dyseg_tau": dyseg_tau,
              "stprune_d": stprune_d, "dtm_p": dtm_p, "dtm_beta": dtm_beta,
              "budget_mode": budget_mode}
    _check(params)
    check_video(video)
    frames, per_frame, dim = video.shape
    device = video.device
    if grid is not None:
        resolve_grid(per_frame, grid)
    feats, attention = _signals(frame_features, head_attention, frames, per_frame, device)
    total = frames * per_frame
    target = budget(retention, total)
    knobs = {k: v for k, v in params.items() if k not in ("retention", "budget_mode")}
    if retention >= 1.0:
        return _identity(video, target_tokens=target, official_tokens=total, **knobs)

    sizes = segments(feats, dyseg_c, dyseg_tau)
    retained, salient_n, context_n = frame_budgets(per_frame, retention, stprune_d)
    quotas = context_quotas(sizes, context_n, dtm_p)
    x = video.float()
    flat_x = x.reshape(total, dim)

    # ATS: salient tokens; the rest of each frame is its pool (ascending token order)
    by_attention = torch.sort(attention, dim=1, descending=True, stable=True).indices
    is_salient = torch.zeros(frames, per_frame, dtype=torch.bool, device=device)
    is_salient.scatter_(1, by_attention[:, :salient_n], True)
    pool_n = per_frame - salient_n
    pool = torch.arange(per_frame, device=device).expand(frames, -1)[~is_salient]
    pool = pool.view(frames, pool_n) + per_frame * torch.arange(frames, device=device)[:, None]

    # STPrune: context targets per frame by density-peak score, best first
    takes = [context_n if q == context_n else min(q, pool_n) if q > context_n else 0
             for q in quotas]
    targets: list[Tensor] = [pool.new_empty(0)] * frames
    if max(takes, default=0) > 0:
        scores = density_scores(flat_x[pool])
        ranked = torch.gather(pool, 1, torch.sort(scores, dim=1, descending=True,
                                                  stable=True).indices)
        targets = [ranked[f, :k] for f, k in enumerate(takes)]
    chosen = torch.zeros(total, dtype=torch.bool, device=device)
    chosen[is_salient.flatten()] = True
    for t in targets:
        chosen[t] = True
    official = int(chosen.sum())

    # top-up (exact mode; official mode only where the official count is 0)
    need = target - official if budget_mode == "exact" else max(0, 1 - official)
    ranked_all = torch.sort(attention.flatten(), descending=True, stable=True).indices
    extra = ranked_all[~chosen[ranked_all]][:need]
    chosen[extra] = True

    # DTM: frames with q == C merge their own pool, batched; the anchors (q > C) of a segment
    # each merge the pool of the whole segment
    values = flat_x.clone()
    rep = torch.full((total,), -1, dtype=torch.long, device=device)
    free = torch.ones(total, dtype=torch.bool, device=device)
    free[extra] = False
    groups: list[tuple[list[int], Tensor, bool]] = []  # (target frames, members, shared)
    alone = [f for f in range(frames) if quotas[f] == context_n and takes[f] > 0]
    if alone:
        groups.append((alone, pool[alone], False))
    start = 0
    for length in sizes:
        anchors = [f for f in range(start, start + length) if quotas[f] > context_n]
        if anchors:
            members = pool[start:start + length].flatten()
            groups.append((anchors, members[None], True))  # broadcast over anchors
        start += length
    for owners, members, shared in groups:
        tgt = torch.stack([targets[f] for f in owners])  # [G, K] flat indices
        merged, nearest, best = dtm_merge(flat_x[members], free[members], flat_x[tgt], dtm_beta)
        values[tgt.flatten()] = merged.reshape(-1, dim)
        reps = torch.gather(tgt, 1, nearest)  # [G, P] each member's target in each group
        if shared:  # one segment's anchors: the most similar representative, earliest on ties
            pick = best.argmax(dim=0, keepdim=True)
            members, reps, best = members[:1], reps.gather(0, pick), best.gather(0, pick)
        live = best > -math.inf
        rep[members[live]] = reps[live]

    kept = chosen.nonzero().flatten()  # ascending flat index = position order
    rep[kept] = kept
    slot = torch.full((total,), -1, dtype=torch.long, device=device)
    slot[kept] = torch.arange(kept.numel(), device=device)
    assignment = torch.where(rep >= 0, slot[rep.clamp_min(0)], -1)
    info = {
        "target_tokens": target,
        "official_tokens": official,
        "top_up": int(extra.numel()),
        "retain_per_frame": retained,
        "salient_per_frame": salient_n,
        "context_per_frame": context_n,
        "segments": sizes,
        "context_quotas": takes,
        "unrepresented": int((assignment < 0).sum()),
        "budget_mode": budget_mode,
        **knobs,
    }
    return Compressed(values[kept].to(video.dtype), assignment, total, kept=kept, info=info)

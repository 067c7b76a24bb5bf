"""HoliTom before the LLM: static temporal windows, then per-window token merging ("w/o M").

Paper: Shao et al., "HoliTom: Holistic Token Merging for Fast Video Large Language Models",
NeurIPS 2025. Official code: github.com/cokeshao/HoliTom at commit
e9b2972f6895c9e7d7fe74eb8c3a2ecaab8056e0, `holitom/llava_arch.py` (`select_static_windows`,
`get_static_dynamic_features`, `holitom`, `merge_tokens_by_attention_density`,
`merge_tokens_by_density`, `cluster_dpc_knn`, `merge_tokens_by_clustering` and the video branch
of `prepare_inputs_labels_for_multimodal`, lines 370-407), with the vision attention from
`LLaVA-NeXT/llava/model/multimodal_encoder/siglip_encoder.py` (`WRAPPER=holitom`). Only the
pre-LLM stage is here: the paper's "HoliTom (w/o M)" row, which the official script runs without
`HOLITOM_k`/`HOLITOM_r`; the inner-LLM merge at decoder layer 18 is out of scope. This file is
our own implementation of that procedure on the LLaVA-OneVision path, not a copy.

What it computes on a video [T, N, D] (post-projector, pooled features) with retention r:
1. Temporal similarity: `sim[t, n]` = cosine of token n in frame t and in frame t + 1
   ([T-1, N]). Token n is static over frames s..e when `sim[t, n] > static_tau` (the official
   `T`, the paper's tau) for every t in s..e-1.
2. Static windows by dynamic programming: partition the frames into consecutive windows
   maximising the sum over windows of (static tokens of the window) x (window length - 1), the
   tokens that averaging the static ones removes (`reduced`); windows of at most
   `max_window_size` frames; a window is taken only when it strictly beats the best split
   ending one frame earlier (ties keep the shorter window), as the official loop does.
3. Retention rescaling: r' = min(r / ((T N - reduced) / (T N)), 1), the share of what is left
   after the static averaging that the rest keeps (so the output can undershoot r T N once
   `reduced` exceeds (1 - r) T N: 1,240 of 1,568 tokens on one real clip at 25%).
4. Per window s..e (length W > 1): every static token is the plain mean of its W frames; the
   n_s means are clustered by DPC-kNN into round(n_s r') centres (Python's round) and merged:
   a centre with members becomes beta * centre + (1 - beta) * mean(members) (the centre not in
   the mean), a centre without members stays itself. DPC-kNN (`cluster_dpc_knn`): distances
   `cdist / sqrt(D)`; density exp(-mean of the squared distances to the k' = min(k, centres)
   nearest, self included) plus 1e-6 uniform noise; each token's distance to the nearest denser
   token (the largest distance for the densest); the centres are the top scores
   distance x density; every other token joins its nearest centre (ties: the earliest).
   Each of the W frames keeps its ceil(n_d r') dynamic tokens (of n_d = N - n_s) with the
   highest vision attention. A window of one frame keeps ceil(N r') tokens of its frame by
   attention (no static tokens).
5. Output, as the official code with LLaVA-OneVision's `one_token` newline (not `grid`): window
   by window, the window's cluster tokens (ascending position of their centre), then its frames
   in order, each frame's kept tokens in ascending position. The official code renumbers the
   visual tokens contiguously (original positions are not kept); so does the LLM here.
   `kept` is None (cluster tokens are means); `assignment` maps every static input token (all W
   frames) to its cluster's token and every kept dynamic token to itself; dropped dynamic
   tokens are -1 (and static ones whose window got no centre, round(n_s r') = 0).

Official count C = sum over windows of round(n_s r') + W ceil(n_d r') (ceil(N r') for a single
frame), which depends on the video: `count=` returns None in "official" mode.

Retention mapping: the official `RETAIN_RATIO` is r (the official scripts pair r = 0.10 with
T = 0.65 and 0.15-0.25 with T = 0.8, the code's default); `budget_mode`:
- "official": the official count C (recorded as `info["official_tokens"]`, achieved retention
  C / (T N)).
- "exact": exactly M = budget(r, T N). The counts are the official ones, adjusted by one token
  per group (a window's static group, or one frame's dynamic tokens) in passes: with
  q_g = size_g M / (T N - reduced) a group's fair share, trim the groups with the largest
  count - q_g (count > 0) while above M, top up those with the largest q_g - count
  (count < size) while below M; ties go to the earlier group. When M exceeds what is left after
  averaging (T N - reduced, so r' = 1 and every group is full), the M - (T N - reduced)
  missing tokens are static input tokens restored as they are into their frame's kept tokens
  (position order), the highest-attention ones among every static token's copies but its
  lowest-attention one (which its window mean keeps representing; ties: the earliest frame),
  so no mean is left representing nothing; their assignment moves from the window mean to
  themselves (`info["restored"]`).
At r = 1 every token passes unchanged (both modes): the official code would still average the
static tokens, but retention 1 is the uncompressed model in this project.

Signal: `importance` [T, N] (the project's signal, which is what the official code uses): in the
last vision layer whose output the features use (SigLIP with its last layer removed: layer 26 of
27, `attentions[-1]` of the truncated tower), the softmax attention each patch *receives*,
averaged over heads and then over queries ([T, 729]), pooled to the token grid like the features
(LLaVA-OneVision's `get_2dPool`, bilinear 27x27 -> 14x14).

Deviations from the official code, all for determinism or robustness:
- Arithmetic in float32 (the official evaluation runs float16: its similarities, window means
  and merged tokens are float16, its attention is averaged in float16 after a float32
  softmax, so thresholds near static_tau and attention ties can flip); the output is cast
  back to the input dtype.
- The density noise is drawn from a `torch.Generator` seeded with `seed` on the CPU (one
  `rand(1, n_s)` per window with centres, in window order, as the official calls draw), not
  from the unseeded global generator: `torch.manual_seed(seed)` before the official CPU call
  gives the same draws.
- Not a deviation: top-k is `torch.topk` as officially (exact ties, e.g. equal DPC
  scores, go where topk puts them on that device, deterministically), nearest centres by
  `argmin` (first minimum). Member sums use one-hot products (deterministic on GPUs), so cluster
  tokens match the official ones to float rounding, not bit for bit.
- D (the official share of each dynamic frame's quota given to contextual DPC-kNN clusters) is
  only 0: the official code crashes for D > 0 (`pos.masked_select(mask.unsqueeze(-1))`
  broadcasts [W, n] against [W, n, 1]), so `d != 0` is rejected at build time.
- r = 1 short-circuits to the identity (above).
- If the official count is 0 (possible only when every window is wholly static and every
  round(n_s r') is 0, e.g. one token a frame), the first window keeps one centre: the official
  code would hand the LLM no visual token.
Tiny inputs degrade gracefully: T = 1 is one single-frame window; a window with no dynamic
token keeps only its clusters; N = 1 works. `grid` is not read (only the frame axis is).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from compressors._core import Compressed, Grid, budget, check_video
from compressors._params import integer_at_least, require_retention
from compressors.registry import Reference, register

BUDGET_MODES = ("official", "exact")
_NOISE = 1e-6  # the official density noise scale


def _check(params: dict[str, Any]) -> None:
    require_retention("holitom", params["retention"])
    tau = params["static_tau"]
    if isinstance(tau, bool) or not isinstance(tau, (int, float)) or not -1.0 <= tau <= 1.0:
        raise ValueError(
            f"static_tau is the cosine threshold for a static token in [-1, 1] (official T = 0.8; "
            f"its script uses 0.65 at 10% retention), got {tau!r}"
        )
    beta = params["beta"]
    if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not 0.0 <= beta <= 1.0:
        raise ValueError(
            f"beta is the centre's weight in a merged cluster token, in [0, 1] (official 0.6), "
            f"got {beta!r}"
        )
    integer_at_least("k (DPC-kNN neighbours, official 7)", params["k"], 1)
    d = params["d"]
    if isinstance(d, bool) or not isinstance(d, (int, float)) or d != 0:
        raise ValueError(
            f"d (the official D, contextual share of each dynamic frame) must be 0, got {d!r}: "
            "the official code crashes for D > 0 (pos.masked_select broadcast in "
            "merge_tokens_by_attention_density), so there is no official behaviour to follow; "
            "use d=0 (the official default)"
        )
    integer_at_least("max_window_size (frames, official 1024)", params["max_window_size"], 1)
    if params["budget_mode"] not in BUDGET_MODES:
        raise ValueError(
            f"budget_mode must be one of {BUDGET_MODES} ('official': the official code's own "
            f"count; 'exact': exactly budget(r, T*N) tokens), got {params['budget_mode']!r}"
        )
    integer_at_least("seed (of the density noise)", params["seed"], 0)


def _count(frames: int, grid: tuple[int, int], params: dict[str, Any]) -> int | None:
    total = frames * grid[0] * grid[1]
    if params["retention"] == 1.0 or params["budget_mode"] == "exact":
        return budget(params["retention"], total)
    return None  # the official count depends on the video's static windows


def temporal_similarity(x: Tensor) -> Tensor:
    """Cosine of each token with the same position in the next frame: [T, N, D] -> [T-1, N]."""
    normed = F.normalize(x, p=2, dim=-1)
    return F.cosine_similarity(normed[:-1], normed[1:], dim=-1)


def static_runs(sim: Tensor, tau: float) -> Tensor:
    """run[t, n]: how many consecutive frame pairs from t on keep token n static ([T, N], long);
    token n is static over frames s..e exactly when run[s, n] >= e - s."""
    above = (sim > tau).long()
    run = torch.zeros(sim.shape[0] + 1, sim.shape[1], dtype=torch.long, device=sim.device)
    for t in range(sim.shape[0] - 1, -1, -1):
        run[t] = (run[t + 1] + 1) * above[t]
    return run


def static_windows(run: Tensor, max_window_size: int) -> tuple[list[tuple[int, int]], int]:
    """The official dynamic programme: windows (start, end) covering all frames, and the tokens
    their static averaging removes, sum of static(s, e) x (e - s)."""
    frames = run.shape[0]
    lengths = torch.arange(1, frames, device=run.device)
    # static[s, L - 1]: tokens static over the window s..s+L
    static = (run[:, :, None] >= lengths).sum(dim=1).tolist()
    best = [0] * frames
    start = [0] * frames
    for i in range(frames):
        value, first = (best[i - 1] if i > 0 else 0), i
        for size in range(2, min(i + 1, max_window_size) + 1):
            j = i - size  # the window is j+1..i
            candidate = (best[j] if j >= 0 else 0) + static[j + 1][size - 2] * (size - 1)
            if candidate > value:
                value, first = candidate, j + 1
        best[i], start[i] = value, first
    windows, i = [], frames - 1
    while i >= 0:
        windows.append((start[i], i))
        i = start[i] - 1
    return windows[::-1], best[-1]


def _top(score: Tensor, count: int) -> Tensor:
    """Indices of the `count` largest entries of each row, ascending. `torch.topk`, as the
    official code: exact ties go wherever topk puts them on that device."""
    return torch.topk(score, count, dim=-1).indices.sort(dim=-1).values


def dpc_knn_centres(x: Tensor, count: int, k: int, noise: Tensor) -> tuple[Tensor, Tensor]:
    """DPC-kNN cluster centres of tokens x [L, D] (float32): (centres [count] ascending, dist
    [L, L]). noise [L] is the tie-breaking density noise, uniform in [0, 1)."""
    dist = torch.cdist(x[None], x[None])[0] / (x.shape[-1] ** 0.5)
    nearest = torch.topk(dist, min(k, count), dim=-1, largest=False).values
    density = (-(nearest**2).mean(dim=-1)).exp() + noise * _NOISE
    denser = density[None, :] > density[:, None]  # [i, j]: j is denser than i
    parent = torch.where(denser, dist, dist.max()).min(dim=-1).values
    return _top(parent * density, count), dist


def merge_clusters(x: Tensor, centres: Tensor, dist: Tensor, beta: float) -> tuple[Tensor, Tensor]:
    """Merge tokens x [L, D] into their nearest centre: (tokens [C, D], owner [L] in 0..C-1)."""
    count = centres.numel()
    is_centre = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
    is_centre[centres] = True
    owner = torch.empty(x.shape[0], dtype=torch.long, device=x.device)
    owner[centres] = torch.arange(count, device=x.device)
    others = (~is_centre).nonzero().flatten()
    nearest = dist[others][:, centres].argmin(dim=-1)  # first minimum: the earliest centre
    owner[others] = nearest
    one_hot = F.one_hot(nearest, count).float()  # [L - C, C]
    members = one_hot.sum(dim=0)
    mean = (one_hot.T @ x[others]) / members.clamp_min(1)[:, None]
    merged = beta * x[centres] + (1 - beta) * mean
    return torch.where(members[:, None] > 0, merged, x[centres]), owner


def _adjust(counts: list[int], sizes: list[int], target: int) -> list[int]:
    """Official group counts moved to sum to `target`, one token per group and pass."""
    count = torch.tensor(counts, dtype=torch.float64)
    size = torch.tensor(sizes, dtype=torch.float64)
    share = size * target / size.sum()
    while (gap := target - int(count.sum())) != 0:
        room = count < size if gap > 0 else count > 0
        if not room.any():
            raise RuntimeError(f"holitom cannot place {target} tokens in groups of sizes {sizes}")
        need = torch.where(room, (share - count) * (1 if gap > 0 else -1), -math.inf)
        order = torch.sort(need, descending=True, stable=True).indices
        count[order[: min(abs(gap), int(room.sum()))]] += 1 if gap > 0 else -1
    return [int(c) for c in count.tolist()]


def _groups(
    windows: list[tuple[int, int]], statics: list[Tensor], per_frame: int, rescaled: float
) -> tuple[list[int], list[int]]:
    """(sizes, official counts) of the token groups in output order: per window its static
    group (W > 1: round(n_s r')), then one dynamic group per frame (ceil(n_d r') each)."""
    sizes, counts = [], []
    for (s, e), static in zip(windows, statics, strict=True):
        n_static = int(static.sum())
        if e > s:
            sizes.append(n_static)
            counts.append(round(n_static * rescaled))
        sizes += [per_frame - n_static] * (e - s + 1)
        counts += [math.ceil((per_frame - n_static) * rescaled)] * (e - s + 1)
    return sizes, counts


def _assemble(
    x: Tensor,
    attention: Tensor,
    windows: list[tuple[int, int]],
    statics: list[Tensor],
    counts: list[int],
    restore: Tensor,
    k: int,
    beta: float,
    seed: int,
) -> tuple[Tensor, Tensor]:
    """The output tokens [C, D] window by window, and the assignment [T, N]."""
    frames, per_frame, dim = x.shape
    device = x.device
    gen = torch.Generator().manual_seed(seed)
    tokens: list[Tensor] = []
    assignment = torch.full((frames, per_frame), -1, dtype=torch.long, device=device)
    positions = torch.arange(per_frame, device=device)
    slot, group = 0, 0
    for (s, e), static in zip(windows, statics, strict=True):
        if e > s:
            centres_wanted, group = counts[group], group + 1
            if centres_wanted > 0:
                means = x[s : e + 1, static].mean(dim=0)  # [n_s, D]
                noise = torch.rand(1, means.shape[0], generator=gen)[0].to(device)
                centres, dist = dpc_knn_centres(means, centres_wanted, k, noise)
                merged, owner = merge_clusters(means, centres, dist, beta)
                tokens.append(merged)
                assignment[s : e + 1, static] = slot + owner
                slot += centres_wanted
        dynamic = positions[~static]
        for t in range(s, e + 1):
            chosen, group = dynamic[_top(attention[t, dynamic], counts[group])], group + 1
            if restore[t].any():
                chosen = torch.cat([chosen, restore[t].nonzero().flatten()]).sort().values
            tokens.append(x[t, chosen])
            assignment[t, chosen] = slot + torch.arange(chosen.numel(), device=device)
            slot += chosen.numel()
    return (torch.cat(tokens) if tokens else x.new_empty(0, dim)), assignment


def _restorable(attention: Tensor, windows: list[tuple[int, int]], statics: list[Tensor]) -> Tensor:
    """Attention [T*N] of the static input tokens exact mode may restore, -inf elsewhere: every
    copy of a static token but its lowest-attention one (ties: the earliest frame), which its
    window mean keeps representing; T N - reduced + (these) = T N."""
    score = torch.full_like(attention, -math.inf)
    for (s, e), static in zip(windows, statics, strict=True):
        if e > s:
            copies = attention[s : e + 1, static]  # [W, n_s]
            kept = copies.argmin(dim=0)
            copies = copies.scatter(0, kept[None], -math.inf)
            score[s : e + 1, static] = copies
    return score.flatten()


def _identity(video: Tensor, **info: Any) -> Compressed:
    flat = video.reshape(-1, video.shape[-1])
    index = torch.arange(flat.shape[0], device=video.device)
    return Compressed(flat.clone(), index, flat.shape[0], info=dict(info))


@register(
    "holitom",
    signals=("importance",),
    check=_check,
    count=_count,
    reference=Reference(
        "cokeshao/HoliTom",
        "e9b2972f6895c9e7d7fe74eb8c3a2ecaab8056e0",
        "holitom/llava_arch.py",
        "pre-LLM stage only (the paper's w/o M); vision attention from "
        "LLaVA-NeXT/llava/model/multimodal_encoder/siglip_encoder.py",
        paper="arXiv:2505.21334, "
              "HoliTom: Holistic Token Merging for Fast Video Large Language Models (NeurIPS 2025)",
    ),
    fidelity="official",
)
def holitom(
    video: Tensor,
    *,
    grid: Grid | None = None,
    retention: float | None = None,
    static_tau: float = 0.8,
    beta: float = 0.6,
    k: int = 7,
    d: float = 0.0,
    max_window_size: int = 1024,
    budget_mode: str = "official",
    seed: int = 0,
    importance: Tensor | None = None,
) -> Compressed:
    """Compress a video [T, N, D] with HoliTom's pre-LLM stage -> tokens [C, D] (module docstring).

    static_tau:      cosine threshold above which a token is static between two frames (the
                     official T, 0.8; named so as not to read as a threshold-mode `tau`).
    beta:            centre weight of a merged cluster token (0.6).
    k:               DPC-kNN neighbours for the density (7; min(k, centres) are used).
    d:               the official D; only 0 (D > 0 crashes the official code).
    max_window_size: longest static window in frames (1024: unlimited in practice).
    budget_mode:     "official" (its own count) or "exact" (exactly budget(r, T*N) tokens).
    seed:            seed of the 1e-6 density noise (the official noise is unseeded).
    importance:      [T, N] (or [T*N]) vision attention each token receives (a model signal).
    grid is not used: the method reads only the frame axis and token positions.
    """
    _check({"retention": retention, "static_tau": static_tau, "beta": beta, "k": k, "d": d,
            "max_window_size": max_window_size, "budget_mode": budget_mode, "seed": seed})
    check_video(video)
    frames, per_frame, dim = video.shape
    if importance is None:
        raise ValueError("holitom needs the model signal 'importance' ([T, N])")
    if importance.numel() != frames * per_frame or importance.dim() not in (1, 2):
        raise ValueError(
            f"holitom importance has shape {tuple(importance.shape)}; expected ({frames}, "
            f"{per_frame}) to match the video [T, N, D] = {tuple(video.shape)}"
        )
    if not importance.is_floating_point() or not torch.isfinite(importance).all():
        raise ValueError("holitom importance must be a finite floating tensor (no NaN or inf)")
    device = video.device
    attention = importance.to(device).reshape(frames, per_frame).float()
    total = frames * per_frame
    target = budget(retention, total)
    knobs = {"static_tau": static_tau, "beta": beta, "k": k, "d": d,
             "max_window_size": max_window_size, "budget_mode": budget_mode, "seed": seed,
             "target_tokens": target}
    if retention == 1.0:
        return _identity(video, official_tokens=total, **knobs)

    x = video.float()
    run = static_runs(temporal_similarity(x), static_tau)
    windows, reduced = static_windows(run, max_window_size)
    rescaled = min(retention / ((total - reduced) / total), 1)
    statics = [run[s] >= e - s if e > s else torch.zeros_like(run[0], dtype=torch.bool)
               for s, e in windows]  # [N] bool per window: its static tokens
    sizes, counts = _groups(windows, statics, per_frame, rescaled)
    official = sum(counts)
    if official == 0:  # every window fully static and round(n_s r') = 0: keep one centre
        counts[next(g for g, size in enumerate(sizes) if size > 0)] = 1
    left = total - reduced
    restore = torch.zeros(frames, per_frame, dtype=torch.bool, device=device)
    if budget_mode == "exact" and target > left:  # then r' = 1: every group is full
        restore.view(-1)[_top(_restorable(attention, windows, statics), target - left)] = True
    elif budget_mode == "exact":
        counts = _adjust(counts, sizes, target)

    tokens, assignment = _assemble(x, attention, windows, statics, counts, restore, k, beta, seed)
    info = {**knobs, "official_tokens": official, "reduced": reduced,
            "rescaled_retention": rescaled, "static_tokens": sum(int(m.sum()) for m in statics),
            "restored": int(restore.sum()), "window_lengths": [e - s + 1 for s, e in windows]}
    return Compressed(tokens.to(video.dtype), assignment.flatten(), total, info=info)

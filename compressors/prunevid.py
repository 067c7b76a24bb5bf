"""PruneVid, pre-LLM stage: temporal segments, static tokens merged, DPC-kNN clusters.

Paper: Huang, Zhou and Han, "PruneVid: Visual Token Pruning for Efficient Video Large Language
Models", Findings of ACL 2025 (arXiv 2412.16117). Official code: github.com/Visual-AI/PruneVid
at commit b12600c6176c606ee4b6b7d9e26f4aa46d0dfd42, `models/pllava/modeling_pllava.py`:
`cluster_dpc_knn`, `refine_clusters`, `segment_lengths`, and the methods `merge_frames_dynamic`,
`spatial_merge_tokens`, `compute_cluster_vectors` of `PllavaForConditionalGeneration`. The
official code exists only for PLLaVA (16 frames of 12 x 12 pooled tokens, bfloat16), so this is
a port of that procedure to any [T, N, D] post-projector video; our own implementation, not a
copy. The paper's second stage (inside the LLM, PLLaVA layer 10: keep the fraction alpha = 0.4
of each segment's static and each frame's dynamic tokens by text-to-visual attention,
`elastic_cache.VTPWindowCache`) is out of scope: this compressor is the pre-LLM stage only.

Steps, for a video x [T, N, D]:
1. Temporal segments. DPC-kNN (below) clusters the T frame means (mean over the N tokens) into
   int(T * temporal_segment_ratio) clusters. The labels are refined as `refine_clusters` does:
   per label, its maximal runs of consecutive frames; the longest run(s) keep the label (every
   run of the maximal length, if several), the others are relabelled, and a label whose longest
   run is one frame is relabelled entirely; then, left to right, each relabelled run takes the
   label of the longer neighbouring run (lengths counted on the labels as relabelled so far;
   equal lengths: the left one; no neighbour at all: label 0). A segment is a maximal run of
   one label (`segment_lengths`), so a label may give several segments.
2. Static tokens, per segment of W frames: the mean cosine similarity of each location over
   the W(W-1) ordered pairs of distinct frames, computed as the official code does,
   (sum over all frame pairs of cos - W) / (W(W-1)); locations above `static_tau` (the
   official `tau`, the `threshold` of `merge_frames_dynamic`) are static. The segment's static
   tokens are the means over its W frames at the static locations (one group, location
   order); the other locations give each frame a dynamic group.
3. Spatial clusters: a group of n > 14 tokens is clustered by DPC-kNN into max(1,
   int(n * cluster_ratio)) clusters, each replaced by the plain mean of its members; a group
   of 14 or fewer tokens is kept as is. Merged tokens are ordered by their cluster centre's
   score (highest first), kept ones by location.
4. Output: segment by segment, its static tokens, then each frame's dynamic tokens in frame
   order (the official `final_features`). Every output token is the plain mean of the input
   tokens assigned to it.
DPC-kNN (`cluster_dpc_knn`) of n points in D channels: distances d = cdist / sqrt(D) (float32);
density rho_i = exp(-mean of the squared distances to the knn nearest points, self included);
delta_i = distance to the nearest point of strictly higher density (the largest distance of the
set for the densest); score = delta * rho; the `clusters` highest scores are the centres; every
point goes to its nearest centre (ties: the higher-scored centre), each centre to itself.

Retention mapping (official mode): cluster_ratio = retention (the paper's default 0.5 is
retention 0.5), static_tau and temporal_segment_ratio at their official defaults. The count
depends on the video: each group keeps about r of its tokens and static tokens count once per
segment rather than once per frame, so the achieved retention is below r (at r = 0.5: 37% and
25% on two of the fixtures, see docs/methods/prunevid.md); groups of 14 or fewer tokens keep
all theirs, which lifts it at low r on small grids. `info["target_tokens"]` is M = budget(r,
T*N); the output has the official count. r = 1 is the uncompressed video (every token once,
in input order), as for every method.

Exact mode (`budget_mode="exact"`): the same segments, static split and clustering, with the
per-group cluster counts set to land on exactly M tokens. Let P be the tokens after the
temporal merge (static locations once per segment, dynamic ones once per frame). If P < M,
static locations are turned dynamic in ascending order of their similarity (ties: segment,
then location), each adding W - 1 tokens, until P >= M (static_tau raised for this video).
Then M is apportioned over all groups in proportion to their size (floor of M * n / P, the rest
by largest remainder, ties to the earlier group in output order): a group keeping all its n
tokens is kept as is (location order), one keeping 0 < k < n is clustered into k DPC-kNN
clusters, one keeping none is dropped (assignment -1; only when M is smaller than the number of
groups). The 14-token rule does not apply in exact mode: every group scales by M / P.

Signals: none; the method uses the features alone. `grid` is not used (groups are token sets).
Positions: `representative` is left None (the first input token of each output), as the
official PLLaVA code numbers the visual tokens sequentially.

Deviations from the official code, and why:
- Deterministic ties: the official code adds unseeded `torch.rand * 1e-6` to the densities; we
  add nothing and break ties by index (stable sort of the scores, lower index first; a point of
  equal density is not "higher"). On the fixtures the noise changed no output (5 seeds each).
- Tiny inputs, where the official code fails: knn is min(knn, n) (the official top-k fails for
  T < 7 frames), at least one temporal cluster (int(T * 0.25) = 0 for T < 4) and one spatial
  cluster (int(n * r) = 0 for r < 1/n); a one-frame segment has no static tokens (the official
  0 / 0 is NaN in exact arithmetic, a rounding-dependent +-inf in practice).
- Precision: `compute_dtype="float32"` (default) runs the similarities and means in float32 and
  casts the output back; `"input"` runs them in the features' dtype, as the official code does
  in bfloat16 (distances are float32 in both, as officially). In bfloat16, similarities near
  static_tau round across it and DPC scores tie more often: on the bfloat16 fixtures float32
  keeps the same segments and counts but assigns 0.3-6% of the tokens differently; "input"
  reproduces the official bfloat16 output bit for bit on the CPU.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from compressors._core import Compressed, Grid, budget, check_video
from compressors._params import integer_at_least, require_retention
from compressors.registry import Reference, register

BUDGET_MODES = ("official", "exact")
COMPUTE_DTYPES = ("float32", "input")
SMALL_GROUP = 14  # official: groups of at most 14 tokens are never clustered


def _check(params: dict[str, Any]) -> None:
    require_retention("prunevid", params["retention"])
    tau = params["static_tau"]
    if isinstance(tau, bool) or not isinstance(tau, (int, float)) or not -1.0 <= tau <= 1.0:
        raise ValueError(
            f"static_tau is the cosine threshold above which a location is static, in [-1, 1] "
            f"(the official tau, 0.8), got {tau!r}"
        )
    ratio = params["temporal_segment_ratio"]
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0.0 < ratio <= 1.0:
        raise ValueError(
            f"temporal_segment_ratio is the number of frame clusters per frame, in (0, 1] "
            f"(official 0.25: 4 clusters for 16 frames), got {ratio!r}"
        )
    integer_at_least("knn", params["knn"], 1)
    if params["budget_mode"] not in BUDGET_MODES:
        raise ValueError(
            f"budget_mode must be one of {BUDGET_MODES} ('official': the official count, "
            f"which depends on the video; 'exact': exactly M tokens), got "
            f"{params['budget_mode']!r}"
        )
    if params["compute_dtype"] not in COMPUTE_DTYPES:
        raise ValueError(
            f"compute_dtype must be one of {COMPUTE_DTYPES} ('float32'; 'input': the features' "
            f"dtype, as the official bfloat16 code), got {params['compute_dtype']!r}"
        )


def _count(frames: int, grid: tuple[int, int], params: dict[str, Any]) -> int | None:
    """M in exact mode and at r = 1; None in official mode (the count depends on the video)."""
    retention = params.get("retention")
    if retention is None:
        return None
    if retention == 1.0 or params["budget_mode"] == "exact":
        return budget(retention, frames * grid[0] * grid[1])
    return None


def dpc_knn(x: Tensor, clusters: int, knn: int) -> tuple[Tensor, Tensor]:
    """DPC-kNN of G point sets x [G, n, D] into `clusters` (1..n) clusters each.

    Returns (labels [G, n] in 0..clusters-1, centres [G, clusters]): cluster j's centre is the
    point with the j-th highest score delta * rho (ties: lower index).
    """
    groups, n, dim = x.shape
    xf = x.float()
    dist = torch.cdist(xf, xf) / dim**0.5
    nearest = torch.topk(dist, k=min(knn, n), dim=-1, largest=False).values
    density = (-(nearest**2).mean(dim=-1)).exp()
    higher = density[:, None, :] > density[:, :, None]  # [g, i, j]: rho_j > rho_i
    farthest = dist.flatten(1).max(dim=-1).values[:, None, None]
    delta = torch.where(higher, dist, farthest).min(dim=-1).values
    score = delta * density
    centres = torch.sort(score, dim=-1, descending=True, stable=True).indices[:, :clusters]
    to_centres = dist.gather(1, centres[..., None].expand(-1, -1, n))  # [g, clusters, n]
    labels = to_centres.argmin(dim=1)
    labels.scatter_(1, centres, torch.arange(clusters, device=x.device).expand(groups, -1))
    return labels, centres


def cluster_means(x: Tensor, labels: Tensor, clusters: int) -> Tensor:
    """Plain means [G, clusters, D] of x [G, n, D] by labels [G, n], in x's dtype (one-hot
    products, as the official `compute_cluster_vectors`; no cluster is empty)."""
    one_hot = F.one_hot(labels, clusters).to(x.dtype)  # [G, n, clusters]
    sums = one_hot.transpose(1, 2) @ x
    return sums / one_hot.sum(dim=1)[..., None]


def refine_labels(labels: list[int]) -> list[int]:
    """The official `refine_clusters` on one sequence of frame labels (see the module doc)."""
    n = len(labels)
    runs: dict[int, list[tuple[int, int]]] = {}
    start = 0
    for i in range(1, n + 1):
        if i == n or labels[i] != labels[start]:
            runs.setdefault(labels[start], []).append((start, i))
            start = i
    out = list(labels)
    for spans in runs.values():
        longest = max(end - begin for begin, end in spans)
        for begin, end in spans:
            if longest == 1 or end - begin != longest:
                out[begin:end] = [-1] * (end - begin)
    i = 0
    while i < n:
        if out[i] != -1:
            i += 1
            continue
        begin = i
        while i < n and out[i] == -1:
            i += 1
        left = right = None
        left_len = right_len = 0
        if begin > 0:
            left = out[begin - 1]
            j = begin - 1
            while j >= 0 and out[j] == left:
                j -= 1
            left_len = begin - 1 - j
        if i < n:
            right = out[i]
            j = i
            while j < n and out[j] == right:
                j += 1
            right_len = j - i
        if right_len > left_len or left is None:
            label = right if right is not None else 0
        else:
            label = left
        out[begin:i] = [label] * (i - begin)
    return out


def temporal_segments(x: Tensor, ratio: float, knn: int) -> list[int]:
    """Segment lengths (in frame order) of a video x [T, N, D] in the compute dtype."""
    frames = x.shape[0]
    clusters = min(frames, max(1, int(frames * ratio)))
    labels, _ = dpc_knn(x.mean(dim=1)[None], clusters, knn)
    refined = refine_labels(labels[0].tolist())
    lengths, start = [], 0
    for i in range(1, frames + 1):
        if i == frames or refined[i] != refined[start]:
            lengths.append(i - start)
            start = i
    return lengths


def static_similarity(segment: Tensor) -> Tensor:
    """Mean cross-frame cosine similarity [N] of each location of a segment [W, N, D], as the
    official code computes it; -inf for a one-frame segment (no static tokens)."""
    width = segment.shape[0]
    if width < 2:
        return segment.new_full(segment.shape[1:2], float("-inf"))
    unit = F.normalize(segment, p=2, dim=-1)
    sim = torch.einsum("wlc,tlc->wtl", unit, unit)
    return (sim.sum(dim=1) - 1).sum(dim=0) / (width * (width - 1))


def _official_clusters(size: int, ratio: float) -> int:
    return size if size <= SMALL_GROUP else max(1, int(size * ratio))


def _apportion(sizes: list[int], total: int) -> list[int]:
    """Split `total` (<= sum(sizes)) over groups in proportion to their sizes: floors, then the
    rest by largest remainder (ties: earlier group)."""
    whole = sum(sizes)
    if total >= whole:
        return list(sizes)
    shares = [total * n // whole for n in sizes]
    rests = [total * n % whole for n in sizes]
    extra = total - sum(shares)
    for g in sorted(range(len(sizes)), key=lambda g: (-rests[g], g))[:extra]:
        shares[g] += 1
    return shares


def _merged(static: list[Tensor], widths: list[int], per_frame: int) -> int:
    """P: tokens after the temporal merge (static locations once, dynamic ones per frame)."""
    return sum(w * per_frame - (w - 1) * int(m.sum()) for m, w in zip(static, widths, strict=True))


def _unmerge(static: list[Tensor], sims: list[Tensor], widths: list[int],
             target: int) -> tuple[list[Tensor], int]:
    """Exact mode with P < M: turn the least similar static locations dynamic (ties: segment,
    then location), each adding W - 1 tokens, until P >= M. Returns the masks and the count."""
    where = [m.nonzero().flatten() for m in static]
    values = torch.cat([sim[w].float() for sim, w in zip(sims, where, strict=True)])
    owners = torch.cat([torch.full_like(w, s) for s, w in enumerate(where)])
    gains = torch.cat([torch.full_like(w, widths[s] - 1) for s, w in enumerate(where)])
    order = torch.sort(values, stable=True).indices
    short = target - _merged(static, widths, static[0].numel())
    turned = int((torch.cumsum(gains[order], 0) < short).sum()) + 1
    static = [m.clone() for m in static]
    chosen = order[:turned]
    places = torch.cat(where)[chosen]
    for s, loc in zip(owners[chosen].tolist(), places.tolist(), strict=True):
        static[s][loc] = False
    return static, turned


def _reduce(x: Tensor, clusters: int, knn: int) -> tuple[Tensor, Tensor]:
    """Tokens [G, k, D] and labels [G, n] of G equal-size groups x [G, n, D] kept to k tokens:
    as they are (k = n, location order) or DPC-kNN cluster means (0 < k < n, score order)."""
    groups, size, _ = x.shape
    if clusters == size:
        return x, torch.arange(size, device=x.device).expand(groups, -1)
    labels, _ = dpc_knn(x, clusters, knn)
    return cluster_means(x, labels, clusters), labels


@register(
    "prunevid",
    check=_check,
    count=_count,
    reference=Reference(
        repo="Visual-AI/PruneVid",
        commit="b12600c6176c606ee4b6b7d9e26f4aa46d0dfd42",
        file="models/pllava/modeling_pllava.py",
        note="official code exists only for PLLaVA (16 frames x 12x12 tokens, bfloat16); this is "
             "its pre-LLM stage (merge_frames_dynamic) on [T, N, D] features; the in-LLM "
             "attention selection (alpha 0.4 at layer 10) is not included",
        paper="arXiv:2412.16117, "
              "PruneVid: Visual Token Pruning for Efficient Video Large Language Models",
    ),
    fidelity="port",
)
def prunevid(
    video: Tensor,
    *,
    grid: Grid | None = None,
    retention: float | None = None,
    static_tau: float = 0.8,
    temporal_segment_ratio: float = 0.25,
    knn: int = 7,
    budget_mode: str = "official",
    compute_dtype: str = "float32",
) -> Compressed:
    """Compress a video [T, N, D] with PruneVid's pre-LLM stage to [M', D] tokens.

    retention:   the cluster ratio (official mode) and the budget M = budget(r, T*N) (exact).
    static_tau:  static threshold on the mean cross-frame cosine (the official tau, 0.8).
    temporal_segment_ratio: frame clusters per frame (official 0.25).
    knn:         neighbours of the DPC-kNN density, temporal and spatial (official 7).
    budget_mode: "official" (the official count, video-dependent) or "exact" (exactly M).
    compute_dtype: "float32" or "input" (the features' dtype, as the official bfloat16 run).
    assignment maps every input token to the output token that represents it (-1 only for a
    group dropped in exact mode); info records the segments, the static locations and tokens
    per segment, the merged count P and the cluster ratio.
    """
    _check(dict(retention=retention, static_tau=static_tau,
                temporal_segment_ratio=temporal_segment_ratio, knn=knn, budget_mode=budget_mode,
                compute_dtype=compute_dtype))
    check_video(video)
    frames, per_frame, dim = video.shape
    total = frames * per_frame
    target = budget(retention, total)
    device = video.device
    info: dict[str, Any] = {"target_tokens": target, "static_tau": float(static_tau),
                            "temporal_segment_ratio": float(temporal_segment_ratio), "knn": knn}
    if retention == 1.0:  # the uncompressed video
        info.update(cluster_ratio=1.0, segments=[frames], merged_tokens=total)
        flat = video.reshape(total, dim).clone()
        return Compressed(flat, torch.arange(total, device=device), total, info=info)

    x = video.float() if compute_dtype == "float32" else video
    widths = temporal_segments(x, temporal_segment_ratio, knn)
    starts = [sum(widths[:s]) for s in range(len(widths))]
    segments = [x[a:a + w] for a, w in zip(starts, widths, strict=True)]
    sims = [static_similarity(seg) for seg in segments]
    static = [sim > static_tau for sim in sims]
    merged = _merged(static, widths, per_frame)
    info.update(merged_tokens=merged, unmerged_locations=0)
    exact = budget_mode == "exact"
    if exact and merged < target:
        static, info["unmerged_locations"] = _unmerge(static, sims, widths, target)
        merged = _merged(static, widths, per_frame)

    sizes = []  # group sizes in output order: per segment, static then each frame's dynamic
    for mask, width in zip(static, widths, strict=True):
        sizes += [int(mask.sum())] + [per_frame - int(mask.sum())] * width
    if exact:
        keep = _apportion(sizes, target)
        info["cluster_ratio"] = min(1.0, target / merged)
    else:
        keep = [_official_clusters(n, retention) if n else 0 for n in sizes]
        info["cluster_ratio"] = float(retention)

    tokens = x.new_empty(sum(keep), dim)
    assignment = torch.full((frames, per_frame), -1, dtype=torch.long, device=device)
    offset, g = 0, 0
    info.update(segments=widths, static_locations=[], static_tokens=[], dynamic_tokens=[])
    for start, seg, mask in zip(starts, segments, static, strict=True):
        width = seg.shape[0]
        where, rest = mask.nonzero().flatten(), (~mask).nonzero().flatten()
        info["static_locations"].append(int(where.numel()))
        info["static_tokens"].append(keep[g])
        if keep[g]:
            out, labels = _reduce(seg[:, where].mean(dim=0)[None], keep[g], knn)
            tokens[offset:offset + keep[g]] = out[0]
            assignment[start:start + width, where] = offset + labels[0]
            offset += keep[g]
        dynamic = torch.tensor(keep[g + 1:g + 1 + width], device=device)
        info["dynamic_tokens"].append(int(dynamic.sum()))
        firsts = offset + torch.cumsum(dynamic, 0) - dynamic
        for k in sorted(set(dynamic.tolist()) - {0}):
            chosen = (dynamic == k).nonzero().flatten()
            out, labels = _reduce(seg[chosen][:, rest], k, knn)
            rows = firsts[chosen, None] + torch.arange(k, device=device)
            tokens[rows.flatten()] = out.reshape(-1, dim)
            assignment[(start + chosen)[:, None], rest] = firsts[chosen, None] + labels
        offset += int(dynamic.sum())
        g += 1 + width
    return Compressed(tokens.to(video.dtype), assignment.flatten(), total, info=info)

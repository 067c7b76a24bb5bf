"""SCC: Semantic Connected Components, the compressor of LLaVA-Scissor.

Paper: Sun et al., "LLaVA-Scissor: Token Compression with Semantic Connected Components for
Video LLMs", arXiv 2506.21862. Official code: github.com/HumanMLLM/LLaVA-Scissor.

Tokens whose cosine similarity exceeds a threshold tau are linked; each connected component of
that graph is one semantic region and is replaced by the mean of its tokens. This runs first
within each frame (spatial), then over the per-frame representatives of all frames together
(temporal), so a region that persists over time collapses to one token. Finally every original
token is assigned to its most similar representative and averaged into it (merge), so no
token's information is simply discarded.

Two modes (METHODS.md section 3):
- threshold mode (`tau`): the paper's setting; the token count emerges from tau per video.
- budget mode (`retention`): tau is searched per video (a bracketing search on the two-stage
  count, guided by the spatial stage's spanning trees; at most `_MAX_PROBES` passes), then
  the temporal stage of the best probe with at least M components is cut to exactly M by
  single linkage: its strongest cross-component links are added in order (ties: lower pair
  index) until M components remain, which is the temporal stage at a slightly lower threshold
  `tau_temporal`. Both thresholds are recorded.

Components are exact by default (a partition of all tokens), computed on the tensor's device by
min-label hooking with pointer jumping (no per-edge Python loop). `epsilon` switches on the
paper's sampling approximation, seeded: only edges touching min(n, ceil(ln n / eps^2)) sampled
nodes are used; tokens linked to none form singletons.
Components are ordered by the index of their highest-degree node (ties: lowest index).

`similarity_dtype` sets the precision of the two threshold graphs: "float32" (default) computes
the normalisation, the cosine similarities and the `> tau` comparison in float32 whatever the
input dtype; "input" computes them in the features' own dtype (e.g. float16), as the official
code does when the evaluation runs in float16 end to end, where rounding near tau flips edges
(METHODS.md section 10). Component means and the merge step stay in float32 either way; for the
official procedure in full (its sampling, collection step and float16 means) see `scc_official`.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from compressors._core import Compressed, Grid, budget, check_video, merge_into, normalize
from compressors.registry import Reference, register

_GROW = 1.5  # a base pass short of M tokens is retried with at most 1.5x its spatial tokens
_START = 1.5  # the budget search first tries the tau whose spatial stage keeps 1.5 M tokens
_MAX_PROBES = 16  # passes the budget search may spend before landing (most reuse the base)
_SLACK = 0.05  # stop searching once a probe gives M to (1 + _SLACK) * M + _MIN_SLACK tokens
_MIN_SLACK = 8
SIMILARITY_DTYPES = ("float32", "input")


def _check(params: dict[str, Any]) -> None:
    retention, tau = params["retention"], params["tau"]
    if (retention is None) == (tau is None):
        raise ValueError(
            "scc needs exactly one of retention (budget mode, e.g. retention=0.35) or tau "
            "(threshold mode, e.g. tau=0.9)"
        )
    if retention is not None and params["tau_temporal"] is not None:
        raise ValueError("tau_temporal applies to threshold mode only; drop it or use tau=...")
    for name in ("tau", "tau_temporal"):
        value = params[name]
        if value is not None and not -1.0 <= float(value) <= 1.0:
            raise ValueError(f"{name} is a cosine threshold in [-1, 1], got {value}")
    eps = params["epsilon"]
    if eps is not None and not 0.0 < float(eps) < 1.0:
        raise ValueError(f"epsilon must be in (0, 1) (the paper uses 0.05), got {eps}")
    if params["similarity_dtype"] not in SIMILARITY_DTYPES:
        raise ValueError(
            f"similarity_dtype must be one of {SIMILARITY_DTYPES} ('float32': thresholds in "
            f"float32; 'input': in the features' dtype), got {params['similarity_dtype']!r}"
        )


def connected_components(num_nodes: int, src: Tensor, dst: Tensor) -> Tensor:
    """Label each node with the smallest node index of its component.

    src, dst: [E] long edge endpoints. Roots hook onto the smaller label across every edge,
    then pointer jumping flattens the forest; repeated until no edge joins two labels.
    """
    labels = torch.arange(num_nodes, device=src.device)
    if src.numel() == 0:
        return labels
    while True:
        lu, lv = labels[src], labels[dst]
        hooked = labels.scatter_reduce(0, lu, lv, "amin").scatter_reduce(0, lv, lu, "amin")
        while True:
            jumped = hooked[hooked]
            if torch.equal(jumped, hooked):
                break
            hooked = jumped
        if torch.equal(hooked, labels):
            return labels
        labels = hooked


def _ordered_groups(labels: Tensor, degree: Tensor) -> tuple[Tensor, int, Tensor]:
    """Renumber components 0..k-1 by the index of their highest-degree node (ties: lowest)
    -> (group of each node, k, [k] each group's highest-degree node: its representative)."""
    n = labels.numel()
    idx = torch.arange(n, device=labels.device)
    score = degree.long() * n + (n - 1 - idx)
    best = torch.full_like(idx, -1).scatter_reduce(0, labels, score, "amax")
    is_root = labels == idx
    key_node = n - 1 - best[is_root] % n
    roots = idx[is_root]
    rank = torch.empty_like(idx)
    rank[roots[key_node.argsort()]] = torch.arange(roots.numel(), device=labels.device)
    return rank[labels], roots.numel(), key_node.sort().values


def _smallest_member(labels: Tensor) -> Tensor:
    """Relabel components (any ids in 0..n-1) by their smallest node index."""
    idx = torch.arange(labels.numel(), device=labels.device)
    first = torch.full_like(idx, labels.numel()).scatter_reduce(0, labels, idx, "amin")
    return first[labels]


def _sample_mask(batch: int, n: int, epsilon: float, seed: int, device: torch.device) -> Tensor:
    """[batch, n] bool: the nodes whose edges the epsilon approximation keeps."""
    k = min(n, math.ceil(math.log(n) / epsilon**2)) if n > 1 else n
    gen = torch.Generator().manual_seed(seed)
    picks = torch.stack([torch.randperm(n, generator=gen)[:k] for _ in range(batch)])
    mask = torch.zeros(batch, n, dtype=torch.bool)
    mask.scatter_(1, picks, True)
    return mask.to(device)


def _partition(
    sim: Tensor, threshold: float, epsilon: float | None, seed: int
) -> tuple[Tensor, int, Tensor]:
    """Ordered components of the graphs sim > threshold, one graph per leading index.

    sim: [B, n, n] cosine similarities. Returns (group [B*n], number of groups, each group's
    highest-degree node [k] in 0..B*n-1); groups of graph b come before those of graph b + 1.
    """
    batch, n, _ = sim.shape
    adj = sim > threshold
    b, i, j = adj.triu_(diagonal=1).nonzero(as_tuple=True)
    src, dst = b * n + i, b * n + j
    self_loops = (sim.diagonal(dim1=1, dim2=2) > threshold).flatten().long()
    degree = self_loops + torch.bincount(src, minlength=batch * n) + torch.bincount(
        dst, minlength=batch * n
    )
    if epsilon is not None:
        picked = _sample_mask(batch, n, epsilon, seed, sim.device).flatten()
        keep = picked[src] | picked[dst]
        src, dst = src[keep], dst[keep]
    labels = connected_components(batch * n, src, dst)
    return _ordered_groups(labels, degree)


def _means(x: Tensor, group: Tensor, k: int) -> Tensor:
    """Plain mean of the rows of x [n, D] in each of k groups."""
    sums = torch.zeros(k, x.shape[1], dtype=x.dtype, device=x.device).index_add_(0, group, x)
    return sums / torch.bincount(group, minlength=k).to(x.dtype)[:, None]


def _cosine(x: Tensor, in_dtype: bool = False) -> Tensor:
    """Cosine similarities [..., n, n] of the rows of x [..., n, D].

    in_dtype: normalise and multiply in x's own dtype, unclamped (the official code's arithmetic);
    otherwise in float32, clamped to [-1, 1].
    """
    if in_dtype:
        xn = x / x.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(x.dtype).tiny)
        return xn @ xn.transpose(-1, -2)
    xn = normalize(x)
    return (xn @ xn.transpose(-1, -2)).clamp_(-1.0, 1.0)


class _Pass:
    """One spatial + temporal pass at a given tau, keeping what budget landing needs.

    With `base`, a pass at a higher tau, the spatial components here are unions of the base's
    (threshold graphs are nested), so the representatives and their inner products are
    size-weighted sums of the base's: no new [K, K, D] product is needed. With `sim_dtype` (the
    input's dtype, similarity_dtype="input") the temporal similarities are instead those of the
    representatives cast to that dtype.
    """

    def __init__(
        self, flat: Tensor, spatial_sim: Tensor, tau: float, tau_temporal: float,
        epsilon: float | None, seed: int, base: _Pass | None = None,
        sim_dtype: torch.dtype | None = None,
    ) -> None:
        self.tau, self.tau_temporal = tau, tau_temporal
        self.spatial, k, self.spatial_keys = _partition(spatial_sim, tau, epsilon, seed)
        self.sizes = torch.bincount(self.spatial, minlength=k).to(flat.dtype)
        if base is None:
            self.reps = _means(flat, self.spatial, k)
            self.gram = self.reps @ self.reps.T
        else:
            self.reps, self.gram = base._coarsen(self.spatial, self.sizes)
        if sim_dtype is None:
            norms = self.gram.diagonal().clamp_min(1e-24).sqrt()
            sim = (self.gram / norms[:, None]).div_(norms[None, :]).clamp_(-1.0, 1.0)
        else:
            sim = _cosine(self.reps.to(sim_dtype), in_dtype=True)
        self.temporal_sim = sim[None]
        self.temporal, self.count, self.temporal_keys = _partition(
            self.temporal_sim, tau_temporal, epsilon, seed + 1
        )

    @property
    def num_spatial(self) -> int:
        return self.reps.shape[0]

    def _coarsen(self, spatial: Tensor, sizes: Tensor) -> tuple[Tensor, Tensor]:
        """Representatives [k, D] and inner products [k, k] of a coarser spatial partition.

        A coarse mean is the size-weighted mean of the base means it contains, so its inner
        products are sums of size-weighted base inner products.
        """
        if not hasattr(self, "_weighted"):
            self._weighted = self.gram * self.sizes[:, None] * self.sizes[None, :]
            self._weighted_reps = self.reps * self.sizes[:, None]
        k = sizes.numel()
        parent = torch.zeros(self.num_spatial, dtype=torch.long, device=spatial.device)
        parent.scatter_(0, self.spatial, spatial)
        reps = self._weighted_reps.new_zeros(k, self.reps.shape[1])
        reps.index_add_(0, parent, self._weighted_reps).div_(sizes[:, None])
        rows = self._weighted.new_zeros(k, self.num_spatial).index_add_(0, parent, self._weighted)
        gram = rows.new_zeros(k, k).index_add_(1, parent, rows)
        return reps, gram.div_(sizes[:, None]).div_(sizes[None, :])


def _cut_to(sim: Tensor, group: Tensor, count: int, target: int) -> tuple[Tensor, float]:
    """Single-linkage: join groups along their strongest links until `target` groups remain.

    sim: [n, n] similarities of the n nodes; group: [n] in 0..count-1. Adds the strongest
    cross-group node pairs in order (ties: lower flat pair index) as a prefix of the sorted
    list, the shortest prefix that leaves exactly `target` groups. Returns node labels (smallest
    member index) and the weight of the last link used.
    """
    n = sim.shape[0]
    cross = torch.triu(group[:, None] != group[None, :], diagonal=1)
    weights = sim.masked_fill(~cross, -math.inf).flatten()
    available_pairs = int(cross.sum())
    take = min(available_pairs, 4 * (count - target) + 64)
    while True:
        vals, idx = weights.topk(take)
        order = torch.argsort(idx)  # lower pair index first among equal weights
        vals, idx = vals[order], idx[order]
        order = torch.sort(vals, descending=True, stable=True).indices
        vals, idx = vals[order], idx[order]
        src, dst = group[idx // n], group[idx % n]
        length = count - target
        while length <= take:
            labels = connected_components(count, src[:length], dst[:length])
            remaining = int((labels == torch.arange(count, device=labels.device)).sum())
            if remaining == target:
                return _smallest_member(labels[group]), float(vals[length - 1])
            length += remaining - target
        if take == available_pairs:
            raise AssertionError("single linkage ran out of links; the graph is disconnected")
        take = min(available_pairs, 2 * take)


def _spanning_weights(spatial_sim: Tensor) -> Tensor:
    """Edge weights of each frame's maximum spanning tree, pooled and sorted descending.

    The spatial stage at tau has exactly T*N - #(weights > tau) components (single linkage),
    so these [T*(N-1)] numbers price any tau without another pass. Prim's algorithm, batched
    over frames: N - 1 steps of [T, N] vector operations.
    """
    frames, n, _ = spatial_sim.shape
    rows = torch.arange(frames, device=spatial_sim.device)
    in_tree = torch.zeros(frames, n, dtype=torch.bool, device=spatial_sim.device)
    in_tree[:, 0] = True
    best = spatial_sim[:, 0].clone()
    weights = []
    for _ in range(n - 1):
        pick = best.masked_fill(in_tree, -math.inf).argmax(dim=1)
        weights.append(best[rows, pick])
        in_tree[rows, pick] = True
        best = torch.maximum(best, spatial_sim[rows, pick])
    if not weights:
        return spatial_sim.new_empty(0)
    return torch.cat(weights).sort(descending=True).values


def _tau_for_count(weights: Tensor, num_tokens: int, count: int) -> float:
    """A tau at which the spatial stage has about `count` components."""
    links = min(max(num_tokens - count, 0), weights.numel())
    if links == 0:
        return 1.0
    if links == weights.numel():
        return float(weights[-1]) - 1e-6
    upper, lower = float(weights[links - 1]), float(weights[links])
    return (upper + lower) / 2


def _search(
    flat: Tensor, spatial_sim: Tensor, target: int, epsilon: float | None, seed: int,
    sim_dtype: torch.dtype | None = None,
) -> tuple[_Pass, int]:
    """Find a tau whose two-stage count lands at or just above `target` tokens.

    First a full pass at a tau high enough to give at least `target` tokens (the base; it starts
    where the spatial stage alone keeps 1.5 M tokens and grows by at most 1.5x until it
    suffices). Probes below it reuse the base's inner products. The first assumes the
    temporal stage keeps the base's ratio; then the log of the final count is interpolated
    against the spatial count, a smoother variable than tau (regula
    falsi with the Illinois step against one-sided stalls), and the spatial spanning trees
    turn the wanted spatial count back into a tau.
    """
    weights = _spanning_weights(spatial_sim.float())
    frames, num_tokens = spatial_sim.shape[0], flat.shape[0]
    tau = _tau_for_count(weights, num_tokens, min(num_tokens, math.ceil(_START * target)))
    base, probes = _Pass(flat, spatial_sim, tau, tau, epsilon, seed, sim_dtype=sim_dtype), 1
    while base.count < target:
        grow = math.ceil(base.num_spatial * min(target / base.count, _GROW))
        tau = _tau_for_count(weights, num_tokens, min(num_tokens, grow))
        tau = tau if tau > base.tau else (base.tau + 1.0) / 2
        base = _Pass(flat, spatial_sim, tau, tau, epsilon, seed, sim_dtype=sim_dtype)
        probes += 1

    wanted = math.log(target * (1 + _SLACK / 2))
    # bracket ends: [tau, spatial count, log final count - wanted]
    lo = [-1.0, frames, -wanted]  # everything linked: one token
    hi = [base.tau, base.num_spatial, math.log(base.count) - wanted]
    best, last_side = base, 0
    while best.count > target * (1 + _SLACK) + _MIN_SLACK and probes < _MAX_PROBES:
        if last_side == 0:  # first step: assume the temporal stage keeps its current ratio
            spatial = math.exp(wanted) * base.num_spatial / base.count
        else:
            frac = min(max(-lo[2] / (hi[2] - lo[2]), 0.05), 0.95)
            spatial = lo[1] + frac * (hi[1] - lo[1])
        tau = _tau_for_count(weights, num_tokens, round(spatial))
        if not lo[0] < tau < hi[0]:
            tau = (lo[0] + hi[0]) / 2
        current = _Pass(flat, spatial_sim, tau, tau, epsilon, seed, base=base,
                        sim_dtype=sim_dtype)
        probes += 1
        point = [tau, current.num_spatial, math.log(current.count) - wanted]
        side = 1 if current.count >= target else -1
        if side > 0:
            hi, best = point, current
        else:
            lo = point
        if side == last_side:  # Illinois: the stale end's residual is halved
            (lo if side > 0 else hi)[2] /= 2
        last_side = side
    return best, probes


@register(
    "scc", check=_check, fidelity="variant",
    reference=Reference("HumanMLLM/LLaVA-Scissor", "b63354c81e55c82e5d48ced3c993454183b79425",
                        "llava/model/llava_arch_zip.py",
                        "exact components (no epsilon sampling by default), a budget mode, "
                        "float32 thresholds by default; scc_official is the step-by-step port",
                        paper="arXiv:2506.21862, "
                              "LLaVA-Scissor: Token Compression with Semantic Connected "
                              "Components for Video LLMs"),
)
def scc(
    video: Tensor,
    *,
    grid: Grid | None = None,
    retention: float | None = None,
    tau: float | None = None,
    tau_temporal: float | None = None,
    epsilon: float | None = None,
    seed: int = 0,
    merge: bool = True,
    similarity_dtype: str = "float32",
) -> Compressed:
    """Compress a video [T, N, D] to semantic-connected-component tokens [M, D].

    retention:    budget mode, exactly M = max(1, round(retention * T * N)) tokens.
    tau:          threshold mode, the paper's cosine threshold (official default 0.9).
    tau_temporal: threshold for the temporal stage (threshold mode; default: tau).
    epsilon:      the paper's sampling approximation (0.05); None for exact components.
    seed:         seeds the epsilon sampling.
    merge:        add step 3 (every token averaged into its most similar representative);
                  False is the paper's "spatial + temporal" ablation.
    similarity_dtype: "float32" (thresholds compared in float32) or "input" (normalisation,
                  cosine similarities and `> tau` in the features' dtype, as the official code
                  in a float16 evaluation).
    """
    _check(dict(retention=retention, tau=tau, tau_temporal=tau_temporal, epsilon=epsilon,
                similarity_dtype=similarity_dtype))
    check_video(video)
    frames, per_frame, dim = video.shape
    flat = video.reshape(-1, dim).float()
    num_input = flat.shape[0]
    target = budget(retention, num_input) if retention is not None else None
    if target == num_input:
        return Compressed(
            video.reshape(-1, dim), torch.arange(num_input, device=video.device), num_input,
            info={"tau": 1.0, "tau_temporal": 1.0, "spatial_tokens": num_input, "probes": 0,
                  "similarity_dtype": similarity_dtype},
        )

    sim_dtype = video.dtype if similarity_dtype == "input" else None
    if sim_dtype is None:
        spatial_sim = _cosine(flat.view(frames, per_frame, dim))
    else:
        spatial_sim = _cosine(video, in_dtype=True)
    if target is None:
        result = _Pass(flat, spatial_sim, tau, tau if tau_temporal is None else tau_temporal,
                       epsilon, seed, sim_dtype=sim_dtype)
        temporal, count, keys, probes = result.temporal, result.count, result.temporal_keys, 0
    else:
        result, probes = _search(flat, spatial_sim, target, epsilon, seed, sim_dtype)
        temporal, count, keys = result.temporal, result.count, result.temporal_keys
        if count > target:
            labels, result.tau_temporal = _cut_to(result.temporal_sim[0], temporal, count, target)
            degree = (result.temporal_sim[0] >= result.tau_temporal).sum(-1)
            temporal, count, keys = _ordered_groups(labels, degree)
    # a final token's position (METHODS.md section 11): its temporal component's
    # highest-degree spatial token, whose own highest-degree frame token it is
    representative = result.spatial_keys[keys]

    reps = _means(result.reps, temporal, count)
    info = {
        "tau": result.tau,
        "tau_temporal": result.tau_temporal,
        "spatial_tokens": result.num_spatial,
        "probes": probes,
        "similarity_dtype": similarity_dtype,
    }
    if merge:
        tokens, assignment = merge_into(flat, reps)
    else:
        tokens, assignment = reps, temporal[result.spatial]
    return Compressed(tokens.to(video.dtype), assignment, num_input, info=info,
                      representative=representative)

"""SCC as the official LLaVA-Scissor code computes it, step for step (threshold mode only).

Paper: Sun et al., "LLaVA-Scissor: Token Compression with Semantic Connected Components for
Video LLMs", arXiv 2506.21862. Official code: github.com/HumanMLLM/LLaVA-Scissor at commit
b63354c81e55c82e5d48ced3c993454183b79425 (`llava/model/llava_arch_zip.py`, last changed in
cdf85f4e8619442ed2324b78a5308576f0ad5e7d): `UnionFind`, `approximate_components` and the
`mm_use_zip` branch of `prepare_inputs_labels_for_multimodal`. This file is our own
implementation of that procedure, not a copy; `compressors.scc` is the exact method.

The procedure, per video [T, N, D], everything in the features' dtype:
1. Spatial: per frame, `cos > tau` (normalise by the L2 norm, matmul), then the components
   below; each component -> `mean` of its members; concatenated in frame order.
2. Temporal: the same on the concatenated means (same tau, same epsilon).
3. Merge: every input token goes to the argmax-cosine representative; out_j = (R_j + sum of
   its tokens) / (1 + count_j).

Components (`approximate_components`): sample k = min(n, ceil(ln n / eps^2)) nodes with
`numpy.random.choice(n, k, replace=False)` (the global legacy generator; here a
`numpy.random.RandomState(seed)`, drawn once per graph in the same order: frames 0..T-1, then the
temporal graph, so `np.random.seed(seed)` before the official call gives the same draws). Only
edges from sampled nodes to their neighbours are unioned (union by rank, path halving, in sampled
order, neighbours ascending); nodes neither sampled nor adjacent to a sampled node become
singletons. Components are collected as `np.where(parent == root)` for the roots of the sampled
nodes, after one `find` per sampled node; they are sorted by their highest-degree node (ties:
lowest index), degrees counting the diagonal.

The quirk: `parent` is never flattened. Path halving leaves a node pointing at its grandparent,
so a node whose parent is not its root after those finds (a non-sampled node two or more links
below its root, or a sampled one three or more below, in a tree of rank 3 or more) is in no
component: it is left out of every component mean (our `info["dropped"]`), although the merge
step still averages it into its nearest representative. Sampling is active only from
ln(n)/eps^2 nodes on (3,234 for eps 0.05): never for a 196-token frame, but in the temporal
stage of a long video (32 frames at high tau keep more than 3,234 spatial tokens); then the
unsampled edges also split components and uncovered nodes become singletons. On the benchmark's
region features (32 x 196 x 896, `benchmarks/features.py`) at tau 0.95: 4,001 spatial tokens,
338 input tokens dropped from the means, 3,376 output tokens against `scc`'s 3,361; at tau 0.9
(3,221 spatial tokens, no sampling) both give 2,082. Below the threshold every node is sampled,
so the component count is exact and equals `scc`'s; a sampled node three links deep could in
principle still be dropped, which no small test graph showed. `scc` instead computes the exact
partition (every token in exactly one mean) in float32 by default (`similarity_dtype="input"`
for the official float16 thresholds), with float32 means.

A zero token is given cosine 0 (the official division gives NaN); the per-edge loop runs in
Python on the CPU, as the official one does, so this is slow at low tau.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from compressors._core import Compressed, Grid, check_video
from compressors.registry import Reference, register


def _check(params: dict[str, Any]) -> None:
    if params["retention"] is not None:
        raise ValueError(
            "scc_official is the official threshold-mode procedure and has no budget mode "
            f"(got retention={params['retention']}): drop retention (retention=null) and set "
            "tau, or use compressor 'scc' with retention=... for exactly M tokens"
        )
    tau = params["tau"]
    if isinstance(tau, bool) or not isinstance(tau, (int, float)) or not -1.0 <= tau <= 1.0:
        raise ValueError(f"tau is a cosine threshold in [-1, 1] (official 0.9), got {tau!r}")
    eps = params["epsilon"]
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0.0 < eps < 1.0:
        raise ValueError(f"epsilon must be in (0, 1) (the official 0.05), got {eps!r}")
    seed = params["seed"]
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")


def sample_size(n: int, epsilon: float) -> int:
    """Nodes the official sampling keeps from a graph of n nodes: min(n, ceil(ln n / eps^2))."""
    return min(n, int(np.ceil(np.log(n) / epsilon**2))) if n > 0 else 0


def _find(parent: list[int], x: int) -> int:
    while parent[x] != x:
        parent[x] = parent[parent[x]]  # path halving: x now points at its grandparent
        x = parent[x]
    return x


def components(adj: np.ndarray, epsilon: float, rng: np.random.RandomState) -> list[list[int]]:
    """The official approximate components of a boolean adjacency [n, n], sorted.

    Members whose parent is not their root after the collection finds are in none of them.
    """
    n = adj.shape[0]
    if n == 0:
        return []
    sampled = rng.choice(n, size=sample_size(n, epsilon), replace=False)
    covered = np.zeros(n, dtype=bool)
    covered[sampled] = True
    parent, rank = list(range(n)), [0] * n
    for i in sampled.tolist():
        neighbours = np.flatnonzero(adj[i])
        covered[neighbours] = True
        for j in neighbours.tolist():
            ri, rj = _find(parent, i), _find(parent, j)
            if ri == rj:
                continue
            if rank[ri] < rank[rj]:
                parent[ri] = rj
            else:
                parent[rj] = ri
                if rank[ri] == rank[rj]:
                    rank[ri] += 1
    roots = sorted({_find(parent, i) for i in sampled.tolist()})
    flat_parent = np.asarray(parent)
    groups = [np.flatnonzero(flat_parent == root).tolist() for root in roots]
    groups += [[k] for k in np.flatnonzero(~covered).tolist()]
    degree = np.count_nonzero(adj, axis=1)
    return sorted(groups, key=lambda members: min(members, key=lambda v: (-degree[v], v)))


def _adjacency(x: Tensor, tau: float) -> np.ndarray:
    """cos(x, x) > tau for x [..., n, D], computed in x's dtype, as a numpy bool array."""
    xn = x / x.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(x.dtype).tiny)
    return (xn @ xn.transpose(-1, -2) > tau).cpu().numpy()


def _stage(
    x: Tensor, adj: np.ndarray, epsilon: float, rng: np.random.RandomState
) -> tuple[Tensor, list[list[int]]]:
    """Component means [k, D] of the rows of x [n, D] (in x's dtype) and the components."""
    groups = components(adj, epsilon, rng)
    index = [torch.tensor(g, dtype=torch.long, device=x.device) for g in groups]
    return torch.stack([x[i].mean(dim=0) for i in index]), groups


@register(
    "scc_official", check=_check, has_budget=False, fidelity="official",
    reference=Reference("HumanMLLM/LLaVA-Scissor", "b63354c81e55c82e5d48ced3c993454183b79425",
                        "llava/model/llava_arch_zip.py",
                        paper="arXiv:2506.21862, "
                              "LLaVA-Scissor: Token Compression with Semantic Connected "
                              "Components for Video LLMs"),
)
def scc_official(
    video: Tensor,
    *,
    grid: Grid | None = None,
    retention: float | None = None,
    tau: float = 0.9,
    epsilon: float = 0.05,
    seed: int = 0,
) -> Compressed:
    """Compress a video [T, N, D] to [M, D] as the official LLaVA-Scissor code does.

    retention: not supported (None): the count emerges from tau; use `scc` for a budget.
    tau:       the cosine threshold of both stages (the official README's 0.9; its code's
               fallback when the checkpoint config sets none is 0.95).
    epsilon:   the sampling tolerance (official 0.05).
    seed:      seeds the numpy generator that draws the sampled nodes.
    info:      tau, epsilon, seed, spatial_tokens, and `dropped`: the flat indices of the
               input tokens in no final component mean (left out spatially, or members of a
               spatial component left out temporally), sorted.
    """
    _check(dict(retention=retention, tau=tau, epsilon=epsilon, seed=seed))
    check_video(video)
    frames, per_frame, dim = video.shape
    rng = np.random.RandomState(seed)
    spatial_adj = _adjacency(video, tau)
    means, owners = [], []
    for f in range(frames):
        reps, groups = _stage(video[f], spatial_adj[f], epsilon, rng)
        means.append(reps)
        owners += [[f * per_frame + m for m in g] for g in groups]
    spatial = torch.cat(means)
    reps, groups = _stage(spatial, _adjacency(spatial, tau), epsilon, rng)

    flat = video.reshape(-1, dim)
    covered = np.zeros(flat.shape[0], dtype=bool)
    for g in groups:
        for s in g:
            covered[owners[s]] = True
    assignment, tokens = _merge(flat, reps)
    info = {
        "tau": float(tau),
        "epsilon": float(epsilon),
        "seed": int(seed),
        "spatial_tokens": int(spatial.shape[0]),
        "dropped": np.flatnonzero(~covered).tolist(),
    }
    return Compressed(tokens, assignment, flat.shape[0], info=info)


def _merge(flat: Tensor, reps: Tensor) -> tuple[Tensor, Tensor]:
    """The official merge in the input dtype: (assignment [K], out [M, D])."""
    tiny = torch.finfo(flat.dtype).tiny
    sim = (flat / flat.norm(dim=1, keepdim=True).clamp_min(tiny)) @ (
        reps / reps.norm(dim=1, keepdim=True).clamp_min(tiny)
    ).T
    closest = sim.argmax(dim=1)
    sums = torch.zeros_like(reps).scatter_add_(0, closest[:, None].expand(-1, flat.shape[1]), flat)
    counts = torch.bincount(closest, minlength=reps.shape[0]).float() + 1
    out = reps + sums
    out /= counts[:, None]
    return closest, out

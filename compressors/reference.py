"""A straightforward SCC (METHODS.md section 3), written for clarity, not speed.

Per-edge union-find in Python over similarity matrices moved to the CPU, structured as the
official LLaVA-Scissor code is (neighbour lists, union by rank over numpy arrays, members
gathered per root), with exact components instead of its sampling. It is the oracle the
tests compare `compressors.scc` against, and the baseline of `benchmarks/bench_scc.py`.
`dtype` sets the precision of the threshold graphs (normalisation, similarities, `> tau`):
float32 by default, or e.g. float16 as `scc(similarity_dtype="input")` on float16 features.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from compressors._core import Compressed


class _UnionFind:
    """Union by rank with path halving over numpy arrays, as the official code keeps it."""

    def __init__(self, size: int) -> None:
        self.parent = np.arange(size, dtype=np.int64)
        self.rank = np.zeros(size, dtype=np.int32)

    def find(self, x: int) -> int:
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def union(self, x: int, y: int) -> None:
        rx, ry = self.find(x), self.find(y)
        if rx == ry:
            return
        if self.rank[rx] < self.rank[ry]:
            rx, ry = ry, rx
        self.parent[ry] = rx
        if self.rank[rx] == self.rank[ry]:
            self.rank[rx] += 1


def _cos(x: Tensor) -> Tensor:
    xn = x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return xn @ xn.T


def components(x: Tensor, tau: float, dtype: torch.dtype = torch.float32) -> list[list[int]]:
    """Components of cos(x, x) > tau in `dtype`, ordered by their highest-degree node (ties:
    lowest).

    Like the official code: each node's neighbour list, one union per (directed) edge, then
    every node's root and the members gathered per root.
    """
    adj = (_cos(x.to(dtype)) > tau).cpu().numpy()
    n = adj.shape[0]
    uf = _UnionFind(n)
    for i in range(n):
        for j in np.nonzero(adj[i])[0]:
            uf.union(i, int(j))
    roots = np.array([uf.find(i) for i in range(n)])
    groups = [np.nonzero(roots == root)[0].tolist() for root in np.unique(roots)]
    degree = adj.sum(axis=1)

    def key(members: list[int]) -> int:
        return min(members, key=lambda node: (-degree[node], node))

    return sorted(groups, key=key)


def scc_reference(
    video: Tensor, tau: float, tau_temporal: float | None = None, merge: bool = True,
    dtype: torch.dtype = torch.float32,
) -> Compressed:
    """SCC threshold mode on a video [T, N, D], step by step as METHODS.md writes it.

    dtype: precision of the threshold graphs (means and merge stay in float32).
    """
    frames, per_frame, dim = video.shape
    flat = video.reshape(-1, dim).float()
    spatial, owner = [], []
    for f in range(frames):
        frame = flat[f * per_frame : (f + 1) * per_frame]
        for members in components(frame, tau, dtype):
            spatial.append(frame[members].mean(dim=0))
            owner.append([f * per_frame + m for m in members])
    s = torch.stack(spatial)
    reps, assignment = [], torch.empty(flat.shape[0], dtype=torch.long)
    temporal = components(s, tau if tau_temporal is None else tau_temporal, dtype)
    for out_index, members in enumerate(temporal):
        reps.append(s[members].mean(dim=0))
        for m in members:
            assignment[owner[m]] = out_index
    r = torch.stack(reps)
    if merge:
        assignment = (_cos_between(flat, r)).argmax(dim=1)
        tokens = torch.stack([
            (r[j] + flat[assignment == j].sum(dim=0)) / (1 + int((assignment == j).sum()))
            for j in range(r.shape[0])
        ])
    else:
        tokens = r
    return Compressed(tokens.to(video.dtype), assignment.to(video.device), flat.shape[0])


def _cos_between(a: Tensor, b: Tensor) -> Tensor:
    an = a / a.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    bn = b / b.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return an @ bn.T

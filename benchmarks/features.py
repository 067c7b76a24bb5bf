"""Synthetic video features with the similarity structure SCC sees in a real video LLM.

Each frame is a mosaic of regions (Voronoi cells around moving seeds); a region's tokens share
a slowly drifting embedding plus per-token noise whose strength depends on the region's texture
(flat regions are near-duplicates, busy ones are not), so neighbouring tokens of one object are
similar, objects persist over frames, and cosine similarities spread over [-0.1, 1].
"""

from __future__ import annotations

import torch
from torch import Tensor


def region_video(
    frames: int = 32,
    height: int = 14,
    width: int = 14,
    dim: int = 896,
    regions: int = 48,
    noise: float = 0.42,
    drift: float = 0.3,
    flat_share: float = 0.6,
    seed: int = 0,
) -> Tensor:
    """Features [frames, height * width, dim]; defaults put SCC at tau = 0.9 near 1/3 retention."""
    gen = torch.Generator().manual_seed(seed)
    seeds = torch.rand(regions, 2, generator=gen) * torch.tensor([height, width])
    velocity = (torch.rand(regions, 2, generator=gen) - 0.5) * 0.3
    embed = torch.randn(regions, dim, generator=gen)
    embed = embed / embed.norm(dim=-1, keepdim=True)
    # most regions are flat (sky, wall, floor: near-duplicate tokens), the rest busy texture
    flat = torch.rand(regions, generator=gen) < flat_share
    texture = torch.where(flat, 0.2 * torch.rand(regions, generator=gen), torch.ones(regions))
    ys, xs = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    cells = torch.stack([ys, xs], -1).reshape(-1, 2).float() + 0.5
    out = []
    for _ in range(frames):
        owner = torch.cdist(cells, seeds).argmin(dim=1)
        level = noise * texture[owner, None] * (0.5 + torch.rand(cells.shape[0], 1, generator=gen))
        tokens = embed[owner] + level * torch.randn(cells.shape[0], dim, generator=gen) / dim**0.5
        out.append(tokens)
        seeds = seeds + velocity
        embed = embed + drift * torch.randn(regions, dim, generator=gen) / dim**0.5
        embed = embed / embed.norm(dim=-1, keepdim=True)
    return torch.stack(out)

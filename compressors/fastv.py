"""FastV: prune the visual tokens that the prompt stops attending to, inside the LLM.

Paper: Chen et al., "An Image is Worth 1/2 Tokens After Layer 2: Plug-and-Play Inference
Acceleration for Large Vision-Language Models", ECCV 2024. Official code:
github.com/pkunlp-icler/FastV.

Deep LLM layers attend very little to most visual tokens, so FastV runs the first K decoder
layers on the full sequence, reads at layer K-1 the attention the last prompt token pays to
every visual token (averaged over heads), and from layer K on keeps only the top-M visual tokens
by that attention, in their original order and with their original position ids. This module is
the tensor core of that step: given the visual hidden states at layer K, [T, N, D], and the
attention row, it picks the kept tokens. Reaching into the decoder (hidden states, the attention
row from the layer's own q/k, position ids, KV cache) is the model adapter's job, which may call
`keep_indices` directly. The FastV paper uses K=2; the LLaVA-Scissor comparison K=3 (default).
Ties in attention go to the lower index.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from compressors._core import Compressed, Grid, budget, check_video, select
from compressors._params import integer_at_least, require_retention
from compressors.registry import Reference, register


def _check(params: dict[str, Any]) -> None:
    require_retention("fastv", params["retention"])
    integer_at_least("layer", params["layer"], 1)


def keep_indices(attention: Tensor, budget: int) -> Tensor:
    """Sorted [budget] long indices of the largest entries of `attention` (flattened).

    attention: [T*N] (or [T, N]) attention of the last prompt token to each visual token.
    Ties go to the lower index; the result is in original (ascending) order.
    """
    scores = attention.reshape(-1)
    if not scores.is_floating_point() or not torch.isfinite(scores).all():
        raise ValueError("fastv attention must be a finite floating tensor (no NaN or inf)")
    if not 1 <= budget <= scores.numel():
        raise ValueError(f"fastv budget must be in [1, {scores.numel()}], got {budget}")
    order = torch.sort(scores.float(), descending=True, stable=True).indices
    return order[:budget].sort().values


@register(
    "fastv", stage="in_llm", signals=("attention",), check=_check, fidelity="port",
    reference=Reference("pkunlp-icler/FastV", "d1659729b5bf1be225e99ee15783deeea80f63b1",
                        "src/FastV/llava-hf/transformers/src/transformers/models/llama/"
                        "modeling_llama.py",
                        "official code for LLaVA-1.5 (LLaMA); here inside each backbone's "
                        "decoder loop, K = 3 as LLaVA-Scissor compares it",
                        paper="arXiv:2403.06764, "
                              "An Image is Worth 1/2 Tokens After Layer 2 (ECCV 2024)"),
)
def fastv(
    video: Tensor,
    *,
    grid: Grid | None = None,
    retention: float | None = None,
    layer: int = 3,
    attention: Tensor | None = None,
) -> Compressed:
    """Keep the M = budget(retention, T*N) most-attended visual hidden states.

    video:     [T, N, D] visual hidden states entering decoder layer `layer` (K).
    layer:     K, the first decoder layer that sees only the kept tokens (>= 1).
    attention: [T, N] or [T*N] attention of the last prompt token to each visual token at
               layer K-1, averaged over heads (a model signal).
    Returns the kept hidden states [M, D] in original order; `kept` holds their flat indices.
    """
    _check({"retention": retention, "layer": layer})
    check_video(video)
    if attention is None:
        raise ValueError("fastv needs the model signal 'attention' ([T, N] or [T*N])")
    frames, per_frame, _ = video.shape
    total = frames * per_frame
    if tuple(attention.shape) not in ((frames, per_frame), (total,)):
        raise ValueError(
            f"fastv attention has shape {tuple(attention.shape)}; expected ({frames}, "
            f"{per_frame}) or ({total},) to match the video [T, N, D] = {tuple(video.shape)}"
        )
    kept = keep_indices(attention.to(video.device), budget(retention, total))
    return select(video, kept, layer=layer)

"""FLOPs of an LLM decoder under visual-token pruning, in the FastV convention.

The convention of FastV (Chen et al., ECCV 2024), reused by DyCoke and LLaVA-Scissor (Eq. 9),
METHODS.md section 8. One decoder layer over n tokens with hidden width d and FFN width m costs

    F(n) = 4 n d^2 + 2 n^2 d + 2 n d m

(attention projections, attention scores and mix, FFN; multiply-adds counted once, no
embeddings, norms or LM head). Prefill with pruning at layer K from n to n' tokens costs
K F(n) + (L - K) F(n') (K = 0 for methods that compress before the LLM), and decoding R tokens
after it

    L R ((4 d^2 + 2 d m) + 2 (d n' + d (R + 1) / 2)).

What n counts: the paper's Table 5 (LLaVA-OV-7B, L = 28, d = 3584, m = 18944) is reproduced by
counting **visual tokens only** (n = 6272 for 32 frames x 196 tokens, R = 100): full model 41.4
TFLOPs, FastV K = 3 at 50% 21.4 and at 35% 16.1, pre-LLM at 10% 3.9. Adding even 50 text tokens
moves the full model to 41.8, so the paper's n excludes the prompt (tests/test_flops.py checks
these numbers; the paper's FLOPs ratios are taken from its rounded TFLOPs). Rows not reproduced
from a nominal ratio: FastV at 10% (paper 8.1; this formula gives 7.9 with M = 627 at K = 3;
8.1 would need M of about 670, i.e. 10.7%; K = 2 gives 6.6, K = 4 9.3); the LLaVA-Scissor and
DyCoke rows, whose token counts vary per video (threshold mode): their achieved counts, not the
nominal ratio, set the FLOPs.
Functions here take whatever counts they are given; `paper_total` uses the paper's convention.
All arithmetic is exact integer arithmetic (d (R + 1) is an integer).
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "PAPER_GENERATED",
    "decode_flops",
    "layer_flops",
    "paper_total",
    "prefill_flops",
    "pruned_tokens_per_layer",
]

PAPER_GENERATED = 100
"""R, the number of generated tokens the paper's totals include."""


def layer_flops(n: int, d: int, m: int) -> int:
    """F(n) = 4 n d^2 + 2 n^2 d + 2 n d m: one decoder layer over n tokens."""
    return 4 * n * d * d + 2 * n * n * d + 2 * n * d * m


def prefill_flops(tokens_per_layer: Sequence[int], d: int, m: int) -> int:
    """Sum of F(n_l) over the decoder layers, n_l = tokens that layer l computes on."""
    return sum(layer_flops(int(n), d, m) for n in tokens_per_layer)


def pruned_tokens_per_layer(layers: int, n: int, n_prime: int, k: int = 0) -> list[int]:
    """Tokens per layer when layers < k see n tokens and layers >= k see n_prime (k = 0: all)."""
    if not 0 <= k <= layers:
        raise ValueError(f"pruning layer k must be in [0, {layers}], got {k}")
    return [n] * k + [n_prime] * (layers - k)


def decode_flops(
    layers: int, d: int, m: int, n_prime: int, generated: int = PAPER_GENERATED
) -> int:
    """L R ((4 d^2 + 2 d m) + 2 (d n' + d (R + 1) / 2)): R decode steps over a cache of n'."""
    per_layer_step = 4 * d * d + 2 * d * m
    # sum over steps of attention to the cache: 2 (d n' + d (R + 1) / 2) = 2 d n' + d (R + 1)
    attention = 2 * d * n_prime + d * (generated + 1)
    return layers * generated * (per_layer_step + attention)


def paper_total(
    layers: int,
    d: int,
    m: int,
    n: int,
    n_prime: int | None = None,
    k: int = 0,
    generated: int = PAPER_GENERATED,
) -> int:
    """Prefill plus decode FLOPs as in the paper's Table 5: K F(n) + (L-K) F(n') + decode(n').

    n:       visual tokens of the uncompressed model (the paper counts no text tokens);
    n_prime: visual tokens after compression (default n, the full model);
    k:       the pruning layer (FastV: 3; pre-LLM methods: 0).
    """
    n_prime = n if n_prime is None else n_prime
    prefill = prefill_flops(pruned_tokens_per_layer(layers, n, n_prime, k), d, m)
    return prefill + decode_flops(layers, d, m, n_prime, generated)

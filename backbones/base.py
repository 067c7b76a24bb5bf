"""The model-adapter interface: what the harness asks of a video LLM, whatever its architecture.

A model adapter knows how to reach a model's visual features, its decoder layers, its position
ids and its KV cache; compressors (`compressors/`) know nothing of models. The harness calls

    prepared = llm.prepare(frames, compressor, retention)      # vision tower + pre-LLM method
    text, acc = llm.generate(prepared, prompt)                  # greedy, KV cache
    logprob, is_greedy, acc = llm.loglikelihood(prepared, context, continuation)

and reads the per-sample `Accounting` (METHODS.md section 2: N_v, tokens fed to the LLM,
tokens per decoder layer, achieved retention; timings and peak memory). `Prepared` is one video
encoded once, reusable across the several requests lmms-eval makes for the same document.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "POSITIONS", "Accounting", "Prefill", "Prepared", "VideoLLM", "check_positions",
    "representatives",
]

# Position-id policies after a pre-LLM compressor (METHODS.md section 11): "original" keeps each
# fed token's position in the full, uncompressed sequence; "contiguous" renumbers the
# compressed sequence as if it were the whole prompt (LLaVA-Scissor). None: the backbone's own.
POSITIONS = ("original", "contiguous")


@dataclass
class Accounting:
    """What one request cost and how many visual tokens it used (per sample).

    visual_tokens:      N_v, visual tokens before compression (T x tokens per frame after the
                        model's own pooling; separators such as a video newline not counted).
    visual_tokens_fed:  visual tokens the LLM receives at layer 0 (M for pre-LLM methods, N_v
                        for in-LLM methods such as FastV).
    prompt_tokens:      whole prefill length at layer 0 (text + visual + separators).
    tokens_per_layer:   prefill sequence length at each decoder layer (FastV: shorter from K).
    timings:            seconds: "vision", "compress", "prefill", "decode".
    peak_memory_bytes:  torch.cuda.max_memory_allocated on CUDA (since `prepare`), else the
                        process's maximum resident set size.
    generated_tokens:   new tokens decoded (0 for loglikelihood).
    scored_tokens:      loglikelihood: continuation tokens whose log-probabilities were summed.
    first_logits_at:    the host's time.perf_counter() once the first token's logits were
                        ready (the harness measures time to first token from it); None if unset.
    """

    visual_tokens: int
    visual_tokens_fed: int
    prompt_tokens: int
    tokens_per_layer: list[int]
    timings: dict[str, float]
    peak_memory_bytes: int
    generated_tokens: int = 0
    scored_tokens: int = 0
    first_logits_at: float | None = None

    @property
    def text_tokens(self) -> int:
        """Prefill tokens that are not visual (text and separators)."""
        return self.prompt_tokens - self.visual_tokens_fed

    @property
    def achieved_retention(self) -> float:
        """Visual tokens in the layers after compression / N_v (FastV: kept after K / N_v)."""
        if not self.visual_tokens:
            return 1.0
        final = self.tokens_per_layer[-1] if self.tokens_per_layer else self.prompt_tokens
        return (final - self.text_tokens) / self.visual_tokens


@dataclass
class Prepared:
    """One video, encoded (and compressed, for pre-LLM methods) once.

    visual:        [V, D] the visual tokens spliced into the prompt at the video placeholder, in
                   the LLM's dtype and device: M tokens after a pre-LLM compressor, all N_v
                   frame tokens for the full model and for in-LLM methods (FastV).
    frames:        T, frames encoded.
    visual_tokens: N_v = T x tokens per frame.
    compressor:    the method applied; None for the full model.
    in_llm:        for in-LLM methods, what the decoder loop needs (FastV: {"layer": K,
                   "budget": M}); None otherwise.
    timings:       seconds: "vision" (preprocessing, tower, projector, pooling, and the
                   importance map when the method asks for one), "compress" (the pre-LLM
                   method; FastV's selection happens in the prefill).
    info:          facts of the compression (the compressor's `out.info`, achieved retention).
    grid:          (H, W) of this video's per-frame token grid where it varies per video
                   (Qwen2.5-VL); None: the adapter's fixed `grid`.
    source_index:  [V] long, the input token (of the N_v) whose position each fed visual token
                   takes under `positions="original"` (`representatives`; arange(N_v) when
                   nothing is dropped before the LLM); None: unused.
    rope:          adapter-specific position facts (Qwen2.5-VL: {"second_per_grid_t": s};
                   Qwen3-VL adds "timestamps", the seconds of each temporal patch).
    deepstack:     Qwen3-VL: [L, V, D] the DeepStack features of the fed tokens (fed order),
                   added to their hidden states after decoder layers 0..L-1; None elsewhere.
    """

    visual: Tensor
    frames: int
    visual_tokens: int
    compressor: Any = None
    in_llm: dict[str, int] | None = None
    timings: dict[str, float] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    grid: tuple[int, int] | None = None
    source_index: Tensor | None = None
    rope: dict[str, Any] | None = None
    deepstack: Tensor | None = None

    @property
    def visual_tokens_fed(self) -> int:
        return int(self.visual.shape[0])


@dataclass
class Prefill:
    """The prompt's forward pass, as the decoder loop ran it.

    logits:           [vocab] next-token logits at the last prompt position (float32).
    length:           full prompt length S (position id of the next token).
    tokens_per_layer: sequence length each decoder layer computed on.
    visual_start:     index of the first visual token in the prompt.
    kept:             FastV: [M] sorted indices into the N_v visual tokens kept from layer K on.
    attention:        FastV: [N_v] float32 attention of the last prompt token to each visual
                      token at layer K-1, averaged over heads.
    cache:            the KV cache after the prompt (per-layer lengths follow tokens_per_layer).
    """

    logits: Tensor
    length: int
    tokens_per_layer: list[int]
    visual_start: int
    kept: Tensor | None = None
    attention: Tensor | None = None
    cache: Any = None


class VideoLLM(ABC):
    """A video LLM with compression inside; one subclass per model family.

    tokens_per_frame:  N, visual tokens per frame after the model's own pooling.
    grid:              (H, W) of those tokens, H * W = N.
    num_layers, hidden_size, intermediate_size: the LLM's L, d and FFN width m (FLOPs).
    positions:         the position-id policy after a pre-LLM compressor, resolved: one of
                       `POSITIONS` (the adapter's default when none was asked for).
    """

    positions: str
    tokens_per_frame: int
    grid: tuple[int, int]
    num_layers: int
    hidden_size: int
    intermediate_size: int

    @abstractmethod
    def prepare(
        self, frames: np.ndarray, compressor: Any = None, retention: float | None = None
    ) -> Prepared:
        """Encode uint8 frames [T, H, W, 3] and apply a pre-LLM compressor (if any)."""

    @abstractmethod
    def prefill(self, prepared: Prepared, prompt: str, *, cache: bool = True) -> Prefill:
        """Run the prompt (video + `prompt`) through the LLM, pruning inside if in-LLM."""

    @abstractmethod
    def generate(
        self,
        prepared: Prepared,
        prompt: str,
        *,
        max_new_tokens: int = 32,
        until: list[str] | None = None,
    ) -> tuple[str, Accounting]:
        """Greedy answer to `prompt` about the prepared video."""

    @abstractmethod
    def loglikelihood(
        self, prepared: Prepared, context: str, continuation: str
    ) -> tuple[float, bool, Accounting]:
        """(sum of log p(continuation tokens), whether the continuation is the greedy decode)."""


def check_positions(positions: str | None) -> str | None:
    """`positions` if it is None or one of `POSITIONS`, else ValueError listing the choices."""
    if positions is not None and positions not in POSITIONS:
        raise ValueError(
            f"positions must be one of {POSITIONS} (or None: the backbone's default), "
            f"got {positions!r}"
        )
    return positions


def representatives(kept: Tensor | None, assignment: Tensor, count: int,
                    representative: Tensor | None = None) -> Tensor:
    """[M] input index whose position each output token takes: the method's own
    `representative` where it names one (SCC's highest-degree node, VisionZip's target), else
    `kept` for a selection, else the first input token assigned to each output (an output
    nobody maps to: its predecessor's).

    kept, representative: [M] long or None; assignment: [K] long (output index per input
    token, -1: none)."""
    if representative is not None:
        return representative.long().cpu()
    if kept is not None:
        return kept.long().cpu()
    assignment = assignment.long().cpu()
    first = torch.full((count,), assignment.numel(), dtype=torch.long)
    order = torch.arange(assignment.numel())
    valid = assignment >= 0
    first.scatter_reduce_(0, assignment[valid], order[valid], reduce="amin")
    for j in range(count):
        if first[j] == assignment.numel():
            first[j] = first[j - 1] if j else 0
    return first

"""The decoder loop every adapter shares: greedy generation and log-likelihood with a KV cache.

An adapter (`backbones.llava_onevision`, `backbones.qwen2_5_vl`) knows its model's visual
features, prompt layout and positions, and implements `prepare`, `prompt_embeddings`,
`prefill` and `step`; this base class holds what is the same for every decoder-only LLM behind
them: the stop tokens, the per-layer call with the KV cache (an explicit causal mask under
eager attention, which has no `is_causal`), logits cut to the tokenizer's real vocabulary (the
official loader shrinks the embeddings to len(tokenizer); converted checkpoints keep padded
rows), FastV's attention row of the last prompt token recomputed from a layer's own q/k, the
in-LLM plan and the model signals of a compressor (which the adapter computes, only those
asked for, in `encode_signals`; `encoded=` hands `prepare` a cached encoding instead),
`generate`, `loglikelihood` and the per-sample accounting.
"""

from __future__ import annotations

import functools
import inspect
import math
import resource
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor

import compressors
from backbones.base import (
    Accounting,
    Prefill,
    Prepared,
    VideoLLM,
    check_positions,
    representatives,
)
from compressors.fastv import keep_indices

__all__ = ["DecoderAdapter"]

_IM_END = "<|im_end|>"


class DecoderAdapter(VideoLLM):
    """What every adapter's decoder loop shares (module docstring). A subclass calls
    `_init_decoder(model, processor, positions=..., default=...)` in its `__init__` and
    implements `prepare`, `prompt_embeddings`, `prefill` and `step` (and `encode_signals`).

    SIGNALS:         the model signals a pre-LLM compressor can ask this adapter for.
    DERIVED_SIGNALS: those of them `prepare` computes from the features themselves (so a
                     cached encoding need not hold them).
    """

    SIGNALS: tuple[str, ...] = ("importance",)
    DERIVED_SIGNALS: tuple[str, ...] = ()

    def _init_decoder(
        self, model: Any, processor: Any, *, positions: str | None, default: str
    ) -> None:
        """The LLM's dimensions, stop tokens, vocabulary, attention kind and cache keyword;
        the position-id policy (`positions`, None: the adapter's `default`)."""
        self.positions = check_positions(positions) or default
        self.model = model.eval()
        self.processor = processor
        self.tokenizer = processor.tokenizer
        text = model.config.text_config
        self.num_layers = int(text.num_hidden_layers)
        self.hidden_size = int(text.hidden_size)
        self.intermediate_size = int(text.intermediate_size)
        self._lm = model.model.language_model
        if getattr(self._lm, "has_sliding_layers", False):
            raise NotImplementedError(
                "backbones: sliding-window attention layers are not supported by the decoder loop"
            )
        self._stop_ids = self._stop_token_ids()
        self.vocab_size = min(len(self.tokenizer), int(model.lm_head.out_features))
        self._eager = getattr(self._lm.config, "_attn_implementation", "sdpa") == "eager"
        self._cache_kwarg = _cache_kwarg(self._lm.layers[0])

    @property
    def device(self) -> torch.device:
        return self._lm.embed_tokens.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self._lm.embed_tokens.weight.dtype

    def _stop_token_ids(self) -> set[int]:
        ids: set[int] = set()
        eos = getattr(self.model.generation_config, "eos_token_id", None)
        ids.update([eos] if isinstance(eos, int) else list(eos or []))
        for token in (self.tokenizer.eos_token, _IM_END, "<|endoftext|>"):
            if token is None:
                continue
            token_id = self.tokenizer.convert_tokens_to_ids(token)
            if isinstance(token_id, int) and token_id != self.tokenizer.unk_token_id:
                ids.add(token_id)
        return ids

    def _in_llm_plan(self, compressor: Any, n_v: int) -> dict[str, int]:
        if compressor.name != "fastv":
            raise NotImplementedError(
                f"backbones: in-LLM compressor {compressor.name!r} has no decoder hook here "
                "(implemented: fastv)"
            )
        layer = int(compressor.params.get("layer", 3))
        if not 1 <= layer < self.num_layers:
            raise ValueError(
                f"fastv layer K={layer} must be in [1, {self.num_layers - 1}] for this "
                f"{self.num_layers}-layer LLM"
            )
        return {"layer": layer, "budget": compressors.budget(compressor.params["retention"], n_v)}

    def check_signals(self, compressor: Any) -> None:
        """Raise NotImplementedError now (before any video) if `compressor` asks for a signal
        this adapter cannot compute before the LLM (`SIGNALS`)."""
        missing = [n for n in self.tower_signals(compressor) if n not in self.SIGNALS]
        if missing:
            raise NotImplementedError(
                f"backbones: compressor {compressor.name!r} needs signal(s) {missing}, which "
                f"this adapter does not provide before the LLM (it provides: "
                f"{', '.join(self.SIGNALS)})"
            )

    def tower_signals(self, compressor: Any) -> tuple[str, ...]:
        """The signals `encode_signals` must compute for `prepare` to apply `compressor`: its
        declared ones (none for the full model and in-LLM methods) except those `prepare`
        derives from the features themselves (`DERIVED_SIGNALS`)."""
        if compressor is None or compressor.name == "none" or compressor.stage == "in_llm":
            return ()
        return tuple(n for n in compressor.signals if n not in self.DERIVED_SIGNALS)

    def encode(self, frames: np.ndarray, *, importance: bool = False) -> tuple[Tensor, Any]:
        """(features, importance or None) of uint8 frames: `encode_signals` with only the
        importance, if asked (the form the sweep's feature cache and the tests read)."""
        video, signals = self.encode_signals(frames, ("importance",) if importance else ())
        return video, signals.get("importance")

    def encode_signals(self, frames: np.ndarray, signals: tuple[str, ...] = ()
                       ) -> tuple[Tensor, dict[str, Tensor]]:
        """(features, {name: signal}) of uint8 frames, the signals of `signals` only."""
        raise NotImplementedError(f"{type(self).__name__} does not encode videos by itself")

    def _derived_signals(self, video: Tensor, names: tuple[str, ...]) -> dict[str, Tensor]:
        """The `DERIVED_SIGNALS` among `names`, from the features [T, N, D]; none here."""
        return {}

    def _encoded(self, frames: Any, compressor: Any, encoded: Any) -> tuple[Tensor, dict]:
        """(features, signals) for `prepare`: encoded now from `frames`, or taken from
        `encoded` = (features, {name: signal}) (a sweep's feature cache; the older form
        (features, importance or None) is read too), checked to hold what `compressor` needs."""
        wanted = self.tower_signals(compressor)
        if encoded is None:
            return self.encode_signals(_check_frames(frames), wanted)
        video, signals = encoded
        if not isinstance(signals, dict):
            signals = {} if signals is None else {"importance": signals}
        missing = [n for n in wanted if signals.get(n) is None]
        if missing:
            raise ValueError(f"the cached features lack the {', '.join(missing)} this "
                             "compressor needs")
        signals = {n: s.to(self.device) for n, s in signals.items() if s is not None}
        return video.to(self.device, self.dtype), signals

    def _compress(self, compressor: Any, video: Tensor, grid: tuple[int, int] | None,
                  signals: dict[str, Tensor] | Tensor | None
                  ) -> tuple[Tensor, dict[str, int] | None, dict[str, Any], Tensor]:
        """What `prepare` hands the LLM for features [T, N, D]: (visual tokens [V, D], the
        in-LLM plan or None, the compression's info with its achieved retention, the input
        token whose position each fed token takes [V]). The full model and in-LLM methods
        feed every token; a pre-LLM method gets its signals and the grid."""
        n_v = video.shape[0] * video.shape[1]
        if compressor is None:
            return video.reshape(n_v, -1), None, {"achieved_retention": 1.0}, torch.arange(n_v)
        if compressor.stage == "in_llm":
            plan = self._in_llm_plan(compressor, n_v)
            info = {"achieved_retention": plan["budget"] / n_v, "layer": plan["layer"]}
            return video.reshape(n_v, -1), plan, info, torch.arange(n_v)
        result = compressor(video, grid=grid, **self._signals(compressor, signals, video))
        index = representatives(result.kept, result.assignment, result.num_output,
                                result.representative)
        info = {**result.info, "achieved_retention": result.achieved_retention}
        return result.tokens.to(self.dtype), None, info, index

    def _signals(self, compressor: Any, available: dict[str, Tensor] | Tensor | None,
                 video: Tensor | None = None) -> dict[str, Tensor]:
        """The keyword signals of a pre-LLM `compressor` from those computed (`available`: a
        dict, or the importance tensor alone, or None) and, for `DERIVED_SIGNALS`, from the
        features [T, N, D] `video`."""
        if not isinstance(available, dict):
            available = {} if available is None else {"importance": available}
        if video is not None:
            derived = tuple(n for n in compressor.signals if n in self.DERIVED_SIGNALS)
            available = {**available, **self._derived_signals(video, derived)}
        missing = [n for n in compressor.signals if available.get(n) is None]
        if missing:
            raise NotImplementedError(
                f"backbones: compressor {compressor.name!r} needs signal(s) {missing}, which "
                f"this adapter does not provide before the LLM (it provides: "
                f"{', '.join(self.SIGNALS)})"
            )
        return {n: available[n] for n in compressor.signals}

    def encode_text(self, text: str) -> list[int]:
        """Token ids of `text`, no special tokens added (Qwen2 has no BOS)."""
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _embed(self, ids: list[int]) -> Tensor:
        """[len(ids), D] input embeddings."""
        index = torch.tensor(ids, dtype=torch.long, device=self.device)
        return self._lm.embed_tokens(index)

    def _causal_mask(self, length: int) -> Tensor | None:
        """The prefill's attention mask: None where the kernel is causal by itself (SDPA's
        `is_causal`, FlashAttention), an additive [1, 1, S, S] causal mask under eager attention,
        which otherwise lets every position attend to the whole sequence. A 1-token decode step
        attends to its whole cache either way."""
        if not self._eager or length == 1:
            return None
        blocked = torch.ones(length, length, dtype=torch.bool, device=self.device).triu(1)
        mask = torch.zeros(length, length, dtype=self.dtype, device=self.device)
        return mask.masked_fill(blocked, torch.finfo(self.dtype).min)[None, None]

    def _layer(
        self,
        layer: Any,
        hidden: Tensor,
        rotary: tuple[Tensor, Tensor],
        cache: Any,
        mask: Tensor | None = None,
    ) -> Tensor:
        out = layer(
            hidden,
            attention_mask=mask,
            position_ids=None,  # rotary is applied through position_embeddings
            use_cache=cache is not None,
            position_embeddings=rotary,
            **{self._cache_kwarg: cache},
        )
        return out[0] if isinstance(out, tuple) else out

    def _logits(self, hidden: Tensor) -> Tensor:
        """[1, D] last hidden state -> [vocab] float32 logits over the tokenizer's ids only
        (padded embedding rows never win argmax nor enter a log-softmax)."""
        return self.model.lm_head(self._lm.norm(hidden)).float()[0, : self.vocab_size]

    def last_token_attention(
        self, layer_index: int, hidden: Tensor, rotary: tuple[Tensor, Tensor]
    ) -> Tensor:
        """[S] attention probabilities of the last position to every position, head-averaged.

        hidden: [1, S, D] input hidden states of decoder layer `layer_index`; rotary: its
        (cos, sin), each [1, S, head_dim]. Recomputed from the layer's own projections: q for the
        last position, k for all (GQA: kv heads repeated; Qwen3: q/k RMS-normed per head);
        softmax in float32 over every key (the last position sees the whole causal prefix).
        """
        layer = self._lm.layers[layer_index]
        attn = layer.self_attn
        head_dim = attn.head_dim
        x = layer.input_layernorm(hidden)
        length = x.shape[1]
        q = attn.q_proj(x[:, -1:]).view(1, 1, -1, head_dim)
        k = attn.k_proj(x).view(1, length, -1, head_dim)
        if hasattr(attn, "q_norm"):  # Qwen3: RMS norm of q and k per head, before the rotary
            q, k = attn.q_norm(q), attn.k_norm(k)
        q, k = q.transpose(1, 2), k.transpose(1, 2)  # [1, H, 1, hd], [1, KV, S, hd]
        cos, sin = rotary
        q = _rotate(q.float(), cos[:, -1:].float(), sin[:, -1:].float())
        k = _rotate(k.float(), cos.float(), sin.float())
        k = k.repeat_interleave(attn.num_key_value_groups, dim=1)  # [1, H, S, hd]
        scores = (q @ k.transpose(-1, -2)) * attn.scaling  # [1, H, 1, S]
        return scores.softmax(dim=-1).mean(dim=1)[0, 0]

    def _decoder_layers(
        self, hidden: Tensor, rotary: tuple[Tensor, Tensor], kv: Any, visual_rows: Tensor,
        plan: dict[str, int] | None, deepstack: Tensor | None = None,
    ) -> tuple[Tensor, list[int], Tensor | None, Tensor | None]:
        """The prompt through every decoder layer: the one loop of every adapter's prefill.

        hidden: [1, S, D] prompt embeddings; rotary: their (cos, sin); visual_rows: [V] prompt
        rows of the fed visual tokens, in their order. FastV (`plan` {layer: K, budget: M}):
        the last token's attention over the visual rows at layer K-1 picks the M kept
        (`keep_indices`), and from layer K on every other visual row leaves (text, separators
        and newlines stay). DeepStack (`deepstack` [L, V, D], Qwen3-VL): feature l is added to
        the visual rows after layer l, and a pruned row's features leave with it.
        Returns the last hidden states, the length each layer computed on, and FastV's kept
        indices [M] and attention [V] (None without FastV).
        """
        cos, sin = rotary
        prune_at = (plan or {}).get("layer")
        lengths: list[int] = []
        kept = attention = None
        mask = self._causal_mask(hidden.shape[1])
        for index, layer in enumerate(self._lm.layers):
            if index == prune_at:  # drop the visual rows FastV did not keep, nothing else
                keep = keep_visual_rows(visual_rows, kept, hidden.shape[1])
                hidden, cos, sin = hidden[:, keep], cos[:, keep], sin[:, keep]
                if deepstack is not None:
                    deepstack = deepstack[:, kept.to(deepstack.device)]
                visual_rows = torch.searchsorted(keep, visual_rows[kept.to(keep.device)])
                mask = self._causal_mask(hidden.shape[1])
            if prune_at is not None and index == prune_at - 1:
                attention = self.last_token_attention(index, hidden, (cos, sin))[visual_rows]
                kept = keep_indices(attention, plan["budget"])
            lengths.append(int(hidden.shape[1]))
            hidden = self._layer(layer, hidden, (cos, sin), kv, mask)
            if deepstack is not None and index < len(deepstack):
                hidden = hidden.clone()
                hidden[0, visual_rows] += deepstack[index].to(hidden.dtype)
        return hidden, lengths, kept, attention

    def generate(
        self,
        prepared: Prepared,
        prompt: str,
        *,
        max_new_tokens: int = 32,
        until: list[str] | None = None,
    ) -> tuple[str, Accounting]:
        """Greedy decoding with the KV cache; stops at an end-of-turn token, after
        `max_new_tokens`, or at the first `until` string (which is cut off the answer).

        The accounting's `first_logits_at` is the host's `time.perf_counter()` once the first
        token's logits are computed: a caller that read the clock when the request began
        (before its video was decoded) measures the time to first token from it."""
        until = [s for s in (until or []) if s]
        started = _now(self.device)
        pre = self.prefill(prepared, prompt)
        prefill = _now(self.device) - started
        first_logits_at = time.perf_counter()  # `_now` waited for the prefill's logits

        started = _now(self.device)
        tokens: list[int] = []
        logits, position = pre.logits, pre.length
        while len(tokens) < max_new_tokens:
            token = int(logits.argmax())
            if token in self._stop_ids:
                break
            tokens.append(token)
            if until and any(s in self._decode(tokens) for s in until):
                break
            if len(tokens) < max_new_tokens:
                logits = self.step(token, position, pre.cache)
                position += 1
        text = self._decode(tokens)
        cut = [text.index(s) for s in until if s in text]
        text = text[: min(cut)] if cut else text
        decode = _now(self.device) - started
        acc = self._accounting(prepared, pre, prefill, decode, generated=len(tokens))
        acc.first_logits_at = first_logits_at
        return text, acc

    def loglikelihood(
        self, prepared: Prepared, context: str, continuation: str
    ) -> tuple[float, bool, Accounting]:
        """(sum of log p(continuation tokens | video, context), all tokens greedy) + accounting
        (`first_logits_at`: as `generate`, when the first scored token's logits were ready)."""
        after_text = self.split_prompt(context)[1]
        after, tail = self.encode_text(after_text), self.encode_text(after_text + continuation)
        if tail[: len(after)] == after and len(tail) > len(after):
            target = tail[len(after) :]
        else:
            target = self.encode_text(continuation)
        if not target:
            raise ValueError("loglikelihood needs a non-empty continuation")

        started = _now(self.device)
        pre = self.prefill(prepared, context)
        prefill = _now(self.device) - started
        first_logits_at = time.perf_counter()  # the first scored token's logits are ready
        started = _now(self.device)
        logprob, greedy = 0.0, True
        logits, position = pre.logits, pre.length
        for i, token in enumerate(target):
            logprob += float(torch.log_softmax(logits, dim=-1)[token])
            greedy = greedy and int(logits.argmax()) == token
            if i + 1 < len(target):
                logits = self.step(token, position, pre.cache)
                position += 1
        decode = _now(self.device) - started
        acc = self._accounting(prepared, pre, prefill, decode, generated=0)
        acc.scored_tokens = len(target)
        acc.first_logits_at = first_logits_at
        return logprob, greedy, acc

    def _decode(self, tokens: list[int]) -> str:
        return self.tokenizer.decode(tokens, skip_special_tokens=True)

    def _accounting(
        self, prepared: Prepared, pre: Prefill, prefill: float, decode: float, generated: int
    ) -> Accounting:
        return Accounting(
            visual_tokens=prepared.visual_tokens,
            visual_tokens_fed=prepared.visual_tokens_fed,
            prompt_tokens=pre.length,
            tokens_per_layer=list(pre.tokens_per_layer),
            timings={**prepared.timings, "prefill": prefill, "decode": decode},
            peak_memory_bytes=_peak_memory(self.device),
            generated_tokens=generated,
        )


# ------------------------------------------------------------------------------ helpers
@functools.cache
def _offset_cache() -> Any:
    """A `DynamicCache` class that also carries the decode position offset: the position id of
    the next token minus the count of tokens fed (0 when the fed sequence is numbered as a
    whole; full - fed length when positions continue from the uncompressed sequence)."""
    from transformers import DynamicCache

    class OffsetCache(DynamicCache):
        offset: int = 0

    return OffsetCache


def _cache_kwarg(layer: Any) -> str:
    """The decoder layer's name for its KV cache: `cache` from transformers 5.24 on (where
    `past_key_values` is deprecated for removal in 5.40), `past_key_values` before."""
    names = inspect.signature(layer.forward).parameters
    return "cache" if "cache" in names else "past_key_values"


def _rotate(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotary embedding (rotate-half form) of x [B, H, S, hd] with cos/sin [B, S, hd]."""
    cos, sin = cos[:, None], sin[:, None]
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


def keep_visual_rows(visual_rows: Tensor, kept: Tensor, length: int) -> Tensor:
    """Sorted prompt rows kept from FastV's layer K on: every row that is not a visual token
    (text, separators, newlines) and the visual rows `visual_rows[kept]`."""
    keep = torch.ones(length, dtype=torch.bool, device=visual_rows.device)
    keep[visual_rows] = False
    keep[visual_rows[kept.to(visual_rows.device)]] = True
    return keep.nonzero().flatten()


def _check_frames(frames: Any) -> np.ndarray:
    if isinstance(frames, torch.Tensor):
        frames = frames.cpu().numpy()
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or not len(frames):
        raise ValueError(
            f"frames must be uint8 [T, H, W, 3] with T >= 1, got {frames.dtype} {frames.shape}"
        )
    return frames


def _bind(compressor: Any, retention: float | None) -> Any:
    """The compressor to apply (None for the full model), with `retention` bound if given."""
    if compressor is None or compressor.name == "none":
        return None
    bound = compressor.params.get("retention")
    if retention is None or (bound is not None and math.isclose(bound, retention)):
        return compressor
    if bound is not None:
        raise ValueError(
            f"retention {retention} disagrees with the compressor's own retention {bound}"
        )
    return compressors.build(compressor.name, **{**compressor.params, "retention": retention})


def _now(device: torch.device) -> float:
    """A stage clock in seconds, read once the device has finished its queued work; only the
    difference of two readings on one device means anything (a stage's time).

    CPU: `time.perf_counter`. CUDA: the device's CUDA-event timeline (`_EventClock`), so a
    stage's time is the `elapsed_time` between CUDA events recorded at its two ends, the time
    the device's stream took; the host still waits at each end (a stage's float is needed at
    once), so stages never overlap and a host-clock interval around them (TTFT) spans them."""
    if device.type == "cuda":
        return _event_clock(device).now()
    return time.perf_counter()


_REANCHOR_S = 10.0
"""How far the event clock reads from its anchor before moving it: CUDA gives elapsed times
as float32 milliseconds, whose resolution at 10 s is 1 us (at one hour, 0.25 ms)."""


class _EventClock:
    """Seconds on one CUDA stream's timeline, read from CUDA events.

    `now()` records an event (`record`: a callable returning a freshly recorded event), waits
    for it and returns the anchor event's reading plus the elapsed time from the anchor, so
    the difference of two readings is the elapsed time between their two events, to the
    float32 resolution of an elapsed time under `_REANCHOR_S` (1 us). The anchor moves to the
    newest event once that is `_REANCHOR_S` away, taking its reading with it, so differences
    across a move are kept."""

    def __init__(self, record: Callable[[], Any]) -> None:
        self._record = record
        self._anchor: Any = None
        self._anchor_s = 0.0

    def now(self) -> float:
        event = self._record()
        event.synchronize()
        if self._anchor is None:
            self._anchor = event
            return self._anchor_s
        elapsed = self._anchor.elapsed_time(event) / 1000.0  # milliseconds -> seconds
        if elapsed < _REANCHOR_S:
            return self._anchor_s + elapsed
        self._anchor, self._anchor_s = event, self._anchor_s + elapsed
        return self._anchor_s


_EVENT_CLOCKS: dict[torch.device, _EventClock] = {}


def _event_clock(device: torch.device) -> _EventClock:
    """The event clock of a CUDA device (one per device, on its current stream)."""
    index = device.index if device.index is not None else torch.cuda.current_device()
    device = torch.device("cuda", index)
    if device not in _EVENT_CLOCKS:
        _EVENT_CLOCKS[device] = _EventClock(functools.partial(_recorded_event, device))
    return _EVENT_CLOCKS[device]


def _recorded_event(device: torch.device) -> Any:
    """A timing CUDA event recorded now on `device`'s current stream."""
    event = torch.cuda.Event(enable_timing=True)
    event.record(torch.cuda.current_stream(device))
    return event


def _peak_memory(device: torch.device) -> int:
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)  # macOS: bytes, Linux: KiB


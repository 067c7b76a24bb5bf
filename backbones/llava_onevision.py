"""LLaVA-OneVision (transformers' `LlavaOnevisionForConditionalGeneration`) as a `VideoLLM`.

The adapter reaches into the model in these places and nowhere else:

1. **Visual features** (`prepare`): the processor's video preprocessing (or, with
   `preprocess="llava_next"`, LLaVA-NeXT's own: `backbones.preprocess`), then the model's own
   `get_video_features` (vision tower at `vision_feature_layer` with the configured select
   strategy -> projector -> 2x2 bilinear `apply_pooling`), whose trailing `image_newline` is set
   aside: features [T, N, D], N = ceil(h/2) * ceil(w/2) for an h x w patch grid (27x27 -> 14x14
   = 196 for SigLIP-384). A pre-LLM compressor turns them into the M tokens [M, D] the LLM sees.
2. **VisionZip importance** (METHODS.md section 5): SigLIP has no [CLS], so importance is the
   attention each patch *receives* in the last vision layer used for the features, averaged
   over heads and queries and pooled like the features -> [T, N]. A forward pre-hook captures
   that layer's input; its `layer_norm1`, `q_proj`, `k_proj` give the one attention map. The
   tower itself runs unchanged (SDPA), and only when the compressor asks for `importance`.
3. **FastVID's signals** (`frame_features`, `head_attention`; `backbones.siglip_head`): a
   forward pre-hook captures the projector's input [T, P, Dv] (the truncated tower's output,
   the official `hidden_states[-1]`), which goes through the ORIGINAL SigLIP checkpoint's
   `post_layernorm` + attention-pooling head (`vision_head`, e.g.
   google/siglip-so400m-patch14-384, loaded on first use in the model's dtype): its pooled
   vector per frame, and its head-averaged probe attention [T, P] viewed [T, 1, h, w] and
   resized bilinearly (align_corners=False) to the token grid, as FastVID's
   `get_attn_2dPool` (github.com/LunarShen/FastVID at a40a109,
   `fastvid_llavaonevision/LLaVA-NeXT/llava/model/llava_arch.py`, with
   `SigLipVisionAbstract` in `multimodal_encoder/siglip_encoder.py`). The official code
   handles only the square 27x27 grid and bilinear pooling; here any (h, w) is resized to
   the adapter's grid. Computed only when a compressor asks for them.
4. **The decoder loop** (`prefill`, decode steps): our own loop over
   `model.model.language_model.layers`: embed -> rotary (cos, sin for every position) -> layers
   -> norm -> `lm_head`, with `attention_mask=None` (batch size 1: SDPA's `is_causal` covers the
   prefill; a 1-token decode step attends to its whole cache; under eager attention, which has
   no `is_causal`, an explicit causal mask) and a `DynamicCache`, whose layers
   hold their own lengths. Pre-LLM methods run it unpruned. **FastV** (METHODS.md section 4): at
   layer K-1 the attention probabilities of the last prompt token to every visual token,
   averaged over heads, are recomputed from that layer's own `q_proj`/`k_proj` on its
   `input_layernorm` output with its rotary embedding (q for the last position, k for all; GQA
   kv heads repeated; softmax over all keys, text included, in float32), so the model keeps
   SDPA/FlashAttention; `compressors.fastv.keep_indices` picks the top M = budget(r, N_v); the
   other visual tokens leave the hidden states and the cos/sin rows, so layers >= K compute on
   the shorter sequence with the ORIGINAL position ids. Layers < K cache every position, layers
   >= K only the kept ones; decode positions continue from the full prompt length.

**Positions after a pre-LLM compressor** (METHODS.md section 11; `positions`, 1-D rotary):
`"contiguous"` (the default, as LLaVA-Scissor's official code: the compressed sequence goes
through LLaVA-NeXT's `prepare_inputs_labels_for_multimodal`, which numbers it 0..S'-1 as if it
were the whole prompt; decoding continues from S'); `"original"`: each fed visual token keeps
the position it had in the full, uncompressed sequence, `visual_start + source index` (a
selection: its own index; a merged token: its representative's, `backbones.base.representatives`),
the newline and the text after the video keep their full-sequence positions, and decoding
continues from the full sequence's length (the cache's `offset`, N_v - M). FastV prunes inside
the LLM and keeps its original positions under either policy (nothing is dropped before it, so
both number the prompt 0..S-1), as does the full model.

Prompt (lmms-eval `llava_onevision` with the `qwen_2` conversation, which the paper used):

    <|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n<|im_start|>user\\n<video>\\n
    {prompt}<|im_end|>\\n<|im_start|>assistant\\n

built here as a string for every checkpoint rather than with the processor's chat template:
checkpoint templates differ (llava-hf's adds no default system prompt and places whitespace its
own way), and the paper's numbers come from this exact string. If the prompt already holds one
`<video>` or `<image>` placeholder the video goes there instead (as lmms-eval does). The
placeholder is replaced by exactly the visual tokens the LLM receives (spliced as embeddings),
then, with `video_newline=True`, the model's `image_newline` (transformers' and lmms-eval's
layout); the paper presets use `video_newline=False` (flat). Text is tokenized without special
tokens added (Qwen2 has no BOS), the placeholder's two sides separately (special tokens split
the text anyway, so the ids equal the processor's).

`loglikelihood(context, continuation)`: the context prompt is prefilled (FastV's "last prompt
token" is the last token of the assistant header, as in generation), then the continuation's
tokens are fed one at a time through the cache; the result is the sum of their log-probs
(no `<|im_end|>` appended) and whether each is the greedy choice. Continuation ids are the tail
of tokenizing context-tail + continuation together (as lm-eval), else the continuation alone.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from backbones.base import Prefill, Prepared
from backbones.decoder import (
    DecoderAdapter,
    _bind,
    _check_frames,
    _now,
    _offset_cache,
)
from backbones.preprocess import PREPROCESS, llava_next_pixels, pixel_settings
from backbones.siglip_head import HEAD_SIGNALS, SiglipHead

__all__ = ["SYSTEM_PROMPT", "LlavaOnevisionAdapter"]

SYSTEM_PROMPT = "You are a helpful assistant."
_IM_START, _IM_END = "<|im_start|>", "<|im_end|>"
_IMPORTANCE_CHUNK = 4  # frames per chunk of the vision attention map (memory: chunk x H x P^2)


class LlavaOnevisionAdapter(DecoderAdapter):
    """A loaded `LlavaOnevisionForConditionalGeneration` + its processor (see module docstring).

    video_newline: append the model's `image_newline` embedding after the video (transformers'
                   layout) instead of the flat layout of the paper.
    preprocess:    "hf" (the processor's video preprocessing) or "llava_next" (LLaVA-NeXT's
                   SigLIP processor, `backbones.preprocess.llava_next_pixels`, with the
                   processor's size, mean and std).
    positions:     "contiguous" (None: the default, LLaVA-Scissor's renumbering) or "original"
                   (full-sequence positions; module docstring).
    vision_head:   hub id or directory of the SigLIP checkpoint whose `post_layernorm` + head
                   give FastVID's `frame_features` / `head_attention` (module docstring, item
                   3); loaded on first use; None: those signals are unavailable.
    """

    DEFAULT_POSITIONS = "contiguous"
    SIGNALS = ("importance", *HEAD_SIGNALS)

    def __init__(
        self,
        model: Any,
        processor: Any,
        *,
        video_newline: bool = False,
        preprocess: str = "hf",
        positions: str | None = None,
        vision_head: str | None = None,
    ) -> None:
        if preprocess not in PREPROCESS:
            raise ValueError(f"preprocess must be one of {PREPROCESS}, got {preprocess!r}")
        self._init_decoder(model, processor, positions=positions, default=self.DEFAULT_POSITIONS)
        self.video_newline = bool(video_newline)
        self.preprocess = preprocess
        self._pixel_settings = pixel_settings(processor) if preprocess == "llava_next" else None
        config = model.config
        vision = config.vision_config
        side = vision.image_size // vision.patch_size
        self._patch_grid = (side, side)
        self.grid = (math.ceil(side / 2), math.ceil(side / 2))
        self.tokens_per_frame = self.grid[0] * self.grid[1]
        self.vision_head = vision_head
        self._head: SiglipHead | None = None

    # ---------------------------------------------------------------- properties



    # ------------------------------------------------------------------- prepare
    @torch.inference_mode()
    def prepare(
        self,
        frames: np.ndarray | None,
        compressor: Any = None,
        retention: float | None = None,
        *,
        encoded: tuple[Tensor, Any] | None = None,
    ) -> Prepared:
        """Encode uint8 frames [T, H, W, 3]; apply a pre-LLM compressor (see the module doc).

        compressor: a `compressors.Compressor`; None or "none" runs the full model. Pre-LLM
                    methods get the features [T, N, D] and the signals they declare
                    (`importance` [T, N], `frame_features` [T, C], `head_attention` [T, N]),
                    only those computed; in-LLM methods (FastV) are remembered for the decoder
                    loop.
        retention:  the target r; if the compressor was built without one, it is bound here
                    (it must agree with the compressor's own when both are given).
        encoded:    (features [T, N, D], {name: signal}) from an earlier `encode_signals` of
                    the same video (a sweep's feature cache; (features, importance or None)
                    as from `encode` is read too), holding what the compressor asks for;
                    `frames` is then unused.
        """
        compressor = _bind(compressor, retention)
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        started = _now(self.device)
        video, signals = self._encoded(frames, compressor, encoded)
        num_frames = video.shape[0]
        vision = _now(self.device) - started

        started = _now(self.device)
        n_v = num_frames * self.tokens_per_frame
        visual, in_llm, info, index = self._compress(compressor, video, self.grid, signals)
        compress = _now(self.device) - started
        return Prepared(
            visual=visual,
            frames=num_frames,
            visual_tokens=n_v,
            compressor=compressor,
            in_llm=in_llm,
            timings={"vision": vision, "compress": compress},
            info=info,
            source_index=index.cpu(),
        )



    @torch.inference_mode()
    def encode_signals(self, frames: np.ndarray, signals: tuple[str, ...] = ()
                       ) -> tuple[Tensor, dict[str, Tensor]]:
        """Features [T, N, D] of uint8 frames [T, H, W, 3] and the signals named in `signals`
        (float32): `importance` [T, N], `frame_features` [T, C], `head_attention` [T, N].

        Pixel values as `self.preprocess` says (the processor's video preprocessing, or
        LLaVA-NeXT's SigLIP steps), then the model's own `get_video_features` (tower ->
        projector -> 2x2 bilinear pooling); its trailing newline is set aside. The tower runs
        once; hooks capture what the signals need (nothing when none is asked for).
        """
        frames = _check_frames(frames)
        num_frames = frames.shape[0]
        pixels = self._pixel_values(frames)  # [1, T, 3, S, S]
        with self._capture(signals) as captured:
            out = self.model.model.get_video_features(pixel_values_videos=pixels, return_dict=True)
        pooled = out.pooler_output  # [1, T*N + 1, D]: frame tokens, then image_newline
        video = pooled[0, :-1].reshape(num_frames, self.tokens_per_frame, -1)
        return video, self._tower_signals(signals, captured)

    @contextmanager
    def _capture(self, signals: tuple[str, ...]) -> Iterator[dict]:
        """Capture, while the tower runs, the importance layer's input ("input", if
        `importance` is asked for) and the projector's input ("projector", if a head signal
        is); unknown names fail first (`check_signals`' message)."""
        unknown = [n for n in signals if n not in self.SIGNALS]
        if unknown:
            raise NotImplementedError(
                f"backbones: signal(s) {unknown} are not provided before the LLM (this adapter "
                f"provides: {', '.join(self.SIGNALS)})"
            )
        if any(n in HEAD_SIGNALS for n in signals):
            self._siglip_head()  # loaded (or its error raised) before the tower runs
        with self._capture_vision_input("importance" in signals) as captured, \
                self._capture_projector_input(any(n in HEAD_SIGNALS for n in signals)) as tower:
            yield captured
        captured.update(tower)

    def _tower_signals(self, signals: tuple[str, ...], captured: dict) -> dict[str, Tensor]:
        """{name: signal} of the asked `signals` from what `_capture` captured."""
        out: dict[str, Tensor] = {}
        if "importance" in signals:
            out["importance"] = self._importance(captured["input"])
        if any(n in HEAD_SIGNALS for n in signals):
            head = self._head_signals(captured["projector"])
            out.update({n: head[n] for n in HEAD_SIGNALS if n in signals})
        return out

    def _pixel_values(self, frames: np.ndarray) -> Tensor:
        """[1, T, 3, S, S] pixel values of uint8 frames [T, H, W, 3] as `self.preprocess` says,
        in the model's device and dtype."""
        if self._pixel_settings is not None:
            pixels = llava_next_pixels(frames, **self._pixel_settings)[None]
        else:
            pixels = self.processor.video_processor(videos=[frames], return_tensors="pt")
            pixels = pixels["pixel_values_videos"]
        return pixels.to(self.device, self.dtype)

    # --------------------------------------------------------- vision importance
    def _vision_layers(self) -> Any:
        tower = self.model.model.vision_tower
        model = getattr(tower, "vision_model", tower)
        return model.encoder.layers

    def _importance_layer(self) -> int:
        """Index of the last vision encoder layer whose output the features use."""
        count = len(self._vision_layers())
        chosen = self.model.config.vision_feature_layer
        chosen = [chosen] if isinstance(chosen, int) else list(chosen)
        index = max(c % (count + 1) for c in chosen)  # into hidden_states (embeddings first)
        if index == 0:
            raise ValueError("vision_feature_layer selects the embeddings: no attention to use")
        return index - 1

    @contextmanager
    def _capture_vision_input(self, active: bool) -> Iterator[dict]:
        """Capture the input hidden states [T, P, Dv] of the importance layer while active."""
        captured: dict[str, Tensor] = {}
        if not active:
            yield captured
            return
        layer = self._vision_layers()[self._importance_layer()]

        def hook(module: Any, args: tuple, kwargs: dict) -> None:
            captured["input"] = args[0] if args else kwargs["hidden_states"]

        handle = layer.register_forward_pre_hook(hook, with_kwargs=True)
        try:
            yield captured
        finally:
            handle.remove()

    def _importance(self, hidden: Tensor) -> Tensor:
        """Attention each patch receives, head- and query-averaged, pooled: [T, P, Dv] -> [T, N].

        Computed from the importance layer's own layer_norm1, q_proj, k_proj (float32 softmax).
        """
        layer = self._vision_layers()[self._importance_layer()]
        attn = layer.self_attn
        frames, patches, _ = hidden.shape
        heads, head_dim = attn.num_heads, attn.head_dim
        received = []
        for chunk in hidden.split(_IMPORTANCE_CHUNK):
            x = layer.layer_norm1(chunk)
            q = attn.q_proj(x).view(len(chunk), patches, heads, head_dim).transpose(1, 2)
            k = attn.k_proj(x).view(len(chunk), patches, heads, head_dim).transpose(1, 2)
            scores = (q.float() @ k.float().transpose(-1, -2)) * attn.scale  # [c, H, P, P]
            received.append(scores.softmax(dim=-1).mean(dim=1).mean(dim=1))  # [c, P]
        received = torch.cat(received)
        if self.model.config.vision_feature_select_strategy == "default":
            received = received[:, 1:]  # a [CLS]-style first token is not a patch
        return self._pool(received.reshape(frames, *self._patch_grid, 1))[..., 0]

    def _pool(self, x: Tensor) -> Tensor:
        """The model's 2x2 bilinear pooling (`apply_pooling`): [T, h, w, C] -> [T, N, C]."""
        pooled = F.interpolate(x.permute(0, 3, 1, 2), size=list(self.grid), mode="bilinear")
        return pooled.permute(0, 2, 3, 1).reshape(x.shape[0], self.tokens_per_frame, -1)

    # ------------------------------------------------------- FastVID's SigLIP head
    def _siglip_head(self) -> SiglipHead:
        """The `vision_head` checkpoint's post_layernorm + head, loaded once, in the model's
        device and dtype (the official code runs it in float16 with the model)."""
        if self._head is None:
            if self.vision_head is None:
                raise ValueError(
                    f"backbones: the signals {HEAD_SIGNALS} (FastVID) come from the original "
                    "SigLIP checkpoint's attention-pooling head, which this model's tower has "
                    "dropped, and vision_head is not set: set the model config's `vision_head: "
                    "google/siglip-so400m-patch14-384` (or ScissorBench(vision_head=...), "
                    "backbones.load(..., vision_head=...)) to the SigLIP checkpoint the tower "
                    "was cut from"
                )
            self._head = SiglipHead.load(self.vision_head, device=self.device, dtype=self.dtype)
        return self._head

    def check_signals(self, compressor: Any) -> None:
        """As `DecoderAdapter.check_signals`, and a head signal needs `vision_head` set (the
        head itself loads on first use)."""
        super().check_signals(compressor)
        if self.vision_head is None and set(self.tower_signals(compressor)) & set(HEAD_SIGNALS):
            self._siglip_head()  # raises the error naming vision_head

    @contextmanager
    def _capture_projector_input(self, active: bool) -> Iterator[dict]:
        """Capture the projector's input [T, P, Dv] (the tower output at `vision_feature_layer`,
        select strategy applied: the official `hidden_states[-1]`) while active."""
        captured: dict[str, Tensor] = {}
        if not active:
            yield captured
            return

        def hook(module: Any, args: tuple) -> None:
            captured["projector"] = args[0]

        handle = self.model.model.multi_modal_projector.register_forward_pre_hook(hook)
        try:
            yield captured
        finally:
            handle.remove()

    def _head_signals(self, hidden: Tensor) -> dict[str, Tensor]:
        """FastVID's `frame_features` [T, C] and `head_attention` [T, N] (float32) from the
        tower output [T, P, Dv]: the SigLIP head (`backbones.siglip_head`), its attention
        [T, P] viewed [T, h, w] and pooled to the token grid (`_pool_head_attention`)."""
        features, attention = self._siglip_head()(hidden)
        height, width = self._patch_grid
        if attention.shape[1] != height * width:
            raise ValueError(
                f"the head attends over {attention.shape[1]} tokens, not the {height}x{width} "
                "patch grid (vision_feature_select_strategy must keep every patch)"
            )
        grid = attention.reshape(attention.shape[0], height, width, 1)
        return {"frame_features": features, "head_attention": self._pool_head_attention(grid)}

    def _pool_head_attention(self, attention: Tensor) -> Tensor:
        """[T, h, w, 1] -> [T, N]: `get_attn_2dPool` of FastVID's LLaVA-OneVision code
        (`fastvid_llavaonevision/.../llava_arch.py`): bilinear (align_corners=False) to
        (ceil(h/2), ceil(w/2)), as the features' `apply_pooling`; not renormalised."""
        return self._pool(attention)[..., 0]

    # -------------------------------------------------------------------- prompt
    def split_prompt(self, prompt: str) -> tuple[str, str]:
        """Text before and after the video: the qwen_2 conversation (module docstring).
        Training (`synthetic.train`) builds its sequences with it too."""
        placeholders = [self.processor.video_token, self.processor.image_token]
        present = [p for p in placeholders if p in prompt]
        if present:
            token = present[0]
            if sum(prompt.count(p) for p in placeholders) != 1:
                raise ValueError("the prompt may hold at most one <video>/<image> placeholder")
            user_before, user_after = prompt.split(token)
        else:
            user_before, user_after = "", "\n" + prompt
        before = f"{_IM_START}system\n{SYSTEM_PROMPT}{_IM_END}\n{_IM_START}user\n{user_before}"
        after = f"{user_after}{_IM_END}\n{_IM_START}assistant\n"
        return before, after



    def prompt_embeddings(self, prepared: Prepared, prompt: str) -> tuple[Tensor, int]:
        """(inputs_embeds [1, S, D], index of the first visual token) for `prompt`."""
        before, after = (self.encode_text(text) for text in self.split_prompt(prompt))
        parts = [self._embed(before), prepared.visual.to(self.device, self.dtype)]
        if self.video_newline:
            parts.append(self.model.model.image_newline[None].to(self.dtype))
        parts.append(self._embed(after))
        return torch.cat(parts)[None], len(before)

    def position_ids(self, prepared: Prepared, start: int, length: int) -> tuple[Tensor, int]:
        """([1, S'] position ids of the fed prompt, decode offset) under `self.positions`.

        contiguous: 0..S'-1, offset 0. original: the full sequence's positions (visual tokens
        at `start + source_index`, what follows the video shifted by N_v - M), offset N_v - M:
        the next token's position is the full sequence's length."""
        positions = torch.arange(length, device=self.device)
        if self.positions == "contiguous" or prepared.source_index is None:
            return positions[None], 0
        fed, shift = prepared.visual_tokens_fed, prepared.visual_tokens - prepared.visual_tokens_fed
        positions[start : start + fed] = start + prepared.source_index.to(self.device)
        positions[start + fed :] += shift
        return positions[None], shift

    def _frame_positions(self, prepared: Prepared, start: int) -> Tensor:
        """[V] prompt indices of the fed visual tokens, in their order: here one block from
        `start` (a separator, if any, follows it)."""
        return start + torch.arange(prepared.visual_tokens_fed, device=self.device)

    # ------------------------------------------------------------- decoder loop
    @torch.inference_mode()
    def prefill(self, prepared: Prepared, prompt: str, *, cache: bool = True) -> Prefill:
        """Run the prompt through every decoder layer (FastV: prune at layer K).

        Returns the next-token logits, the per-layer lengths and, for FastV, the attention row
        [N_v] and kept indices [M]; `cache=True` keeps the KV cache for decoding.
        """
        embeds, start = self.prompt_embeddings(prepared, prompt)
        length = embeds.shape[1]
        positions, offset = self.position_ids(prepared, start, length)
        cos, sin = self._lm.rotary_emb(embeds, positions)  # [1, S, head_dim] each
        kv = _offset_cache()(config=self._lm.config) if cache else None
        if kv is not None:
            kv.offset = offset
        hidden, lengths, kept, attention = self._decoder_layers(
            embeds, (cos, sin), kv, self._frame_positions(prepared, start), prepared.in_llm)
        return Prefill(
            logits=self._logits(hidden[:, -1]),
            length=length,
            tokens_per_layer=lengths,
            visual_start=start,
            kept=kept,
            attention=attention,
            cache=kv,
        )

    @torch.inference_mode()
    def step(self, token: int, position: int, cache: Any) -> Tensor:
        """Feed one token through the cache at prompt-relative `position` (the count of tokens
        fed; its position id adds the cache's `offset`); [vocab] float32 next-token logits."""
        hidden = self._embed([token])[None]  # [1, 1, D]
        position += getattr(cache, "offset", 0)
        rotary = self._lm.rotary_emb(hidden, torch.tensor([[position]], device=self.device))
        for layer in self._lm.layers:
            hidden = self._layer(layer, hidden, rotary, cache)
        return self._logits(hidden[:, -1])

    # ----------------------------------------------------------------- requests





# ------------------------------------------------------------------------------ helpers











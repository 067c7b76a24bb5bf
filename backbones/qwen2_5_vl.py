"""Qwen2.5-VL (transformers' `Qwen2_5_VLForConditionalGeneration`) as a `VideoLLM`.

Follows transformers 5.24's `Qwen2_5_VLForConditionalGeneration` (vision tower, placeholder
splice, `get_rope_index`, decoding with `rope_deltas`) and lmms-eval 0.7.3's `qwen2_5_vl`
model (its video pixel bounds and its chat message). The adapter reaches into the model in
these places:

1. **Visual tokens** (`encode`): the checkpoint's processor (Qwen2VLVideoProcessor: smart
   resize to multiples of patch x merge within [min_pixels, max_pixels], frames padded by
   repeating the last one when T is odd, temporal patches of 2) gives `pixel_values_videos`,
   `video_grid_thw` and `second_per_grid_ts`; the model's own `get_video_features` (patch embed,
   window / full attention blocks, 2x2 patch merger) gives the tokens, row-major per temporal
   patch: [T', H' * W', D] with T' = ceil(T / 2) and the merged grid (H', W'), which varies with
   the frame size (`Prepared.grid`). Pixel bounds default to lmms-eval's (min_pixels 256*28*28,
   max_pixels 1605632), counted in merged tokens (256 and 2048 tokens' worth of
   (patch x merge)^2 pixels) so that a toy patch size scales them. VisionZip's importance is
   the attention each patch receives in the last vision block (full attention in the 7B),
   averaged over heads and queries, then over the 2x2 patches of each merged token.
2. **Positions** (METHODS.md section 11): M-RoPE ids of the FULL sequence (all N_v video pads)
   from the model's own `get_rope_index`; the LLM receives, for a pre-LLM compressor, the
   positions of the tokens it keeps: a selection (`out.kept`) keeps its tokens' (t, h, w); a
   merged token takes its representative's (`Compressed.representative`: SCC's
   highest-degree node, VisionZip's target for a contextual token; for a method that names
   none, e.g. PLLaVA's pools, the first input token assigned to it, the window's top-left; an
   output with no assigned token takes its
   predecessor's. Text keeps its full-sequence positions; decoding continues from the full
   sequence (`rope_deltas`), so compression never shifts the text. This is `positions=
   "original"`, the default, as FastVID, FlashVID, VidCom2 and LightCompress run Qwen2.5-VL.
   `positions="contiguous"` renumbers a compressed sequence as LLaVA-Scissor does on
   LLaVA-OneVision, as if it were the whole prompt: the M fed visual tokens no longer form a
   (T, H, W) grid, so they are numbered like text, t = h = w = their running index in the
   prompt (the first at `visual_start`), the text after them continues (t = h = w = visual_start
   + M, ...), and decoding continues from S', the compressed length: positions 0..S'-1 on all
   three axes, the rule `get_rope_index` applies to a prompt without a video. The policy
   applies to pre-LLM methods only: the full model (and `none`) and FastV, which prunes inside
   the LLM, always get the full sequence's M-RoPE ids.
3. **The decoder loop** (`prefill`, `step`): our own loop over the text model's layers, as in
   `backbones.llava_onevision` (embed, rotary cos/sin from the model's `rotary_emb` on the 3-D
   position ids, layers with a `DynamicCache`, norm, `lm_head`, logits cut to len(tokenizer);
   under eager attention an explicit causal mask). **FastV** prunes at layer K: the attention
   row of the last prompt token is recomputed from layer K-1's q/k with its M-RoPE rotary, and
   the dropped tokens leave the hidden states and the cos/sin rows (original positions kept).
4. **FastVID's signals**, as FastVID's own Qwen2.5-VL code computes them (github.com/LunarShen/
   FastVID at a40a109cb8df20e8c2c17c6850f8269717369990, `fastvid_qwen25vl/lmms-eval/lmms_eval/
   models/qwenvlutils/modeling_qwen2_5_vl.py`: `Qwen2_5_VLVisionFlashAttention2.forward` with
   `grid_thw`, the last block of `Qwen2_5_VisionTransformerPretrainedModel.forward`, and
   `Qwen2_5_VLForConditionalGeneration.forward`), not with a SigLIP head (the tower has none;
   `vision_head` does not apply): `frame_features` [T', D] is each temporal patch's mean
   merged token (`video_embeds.view(T', H'W', -1).mean(1)`, the tokens the LLM gets);
   `head_attention` [T', H' * W'] comes from the last vision block (a forward pre-hook, as
   for importance): norm1 -> qkv -> rotary, the query averaged over all the temporal patch's
   patches (a pseudo-[CLS]), the keys averaged over each merged token's 2x2 patches,
   softmax(q k^T / sqrt(head_dim)) over the temporal patch's H' * W' keys, averaged over heads,
   from the tower's window order back to row-major (`argsort(window_index)`). The official
   code computes it only under FlashAttention-2 and in the model's dtype (softmax in float32);
   here under any attention, the means, scores and softmax in float32. (The official
   Qwen2.5-VL block itself differs from the LLaVA-OneVision one that `compressors.fastvid`
   follows, e.g. its `fastvid_DySeg_ignore`; only the signals are taken from it.)

Prompt (lmms-eval `qwen2_5_vl`: system message, then the user turn with the video first and
the context as text, through the Qwen2-VL chat template, `add_generation_prompt=True`):

    <|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n<|im_start|>user\\n
    <|vision_start|><|video_pad|>...<|vision_end|>{prompt}<|im_end|>\\n<|im_start|>assistant\\n

(no newline between the video and the text; lmms-eval strips `<image>` from the context; so
does this adapter, and `<video>` likewise). Visual tokens are spliced as embeddings between
`<|vision_start|>` and `<|vision_end|>`. `generate`, `loglikelihood`, the layer call, logits
and accounting are the shared decoder loop's (`backbones.decoder.DecoderAdapter`): they only
call `prefill`, `step` and the accounting.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from backbones.base import Prefill, Prepared, representatives
from backbones.decoder import DecoderAdapter, _bind, _check_frames, _now, _offset_cache

__all__ = [
    "LMMS_MAX_TOKENS", "LMMS_MIN_TOKENS", "SYSTEM_PROMPT", "Qwen25VLAdapter", "representatives",
]

SYSTEM_PROMPT = "You are a helpful assistant."
LMMS_MIN_TOKENS = 256  # lmms-eval qwen2_5_vl min_pixels = 256 * 28 * 28
LMMS_MAX_TOKENS = 2048  # lmms-eval qwen2_5_vl max_pixels = 1605632 = 2048 * 28 * 28
_VIDEO_START, _VIDEO_END = "<|vision_start|>", "<|vision_end|>"


class Qwen25VLAdapter(DecoderAdapter):
    """A loaded `Qwen2_5_VLForConditionalGeneration` + its processor (see module docstring).

    min_pixels, max_pixels: per-frame pixel bounds of the video resize; None: lmms-eval's
                            defaults (`LMMS_MIN_TOKENS`, `LMMS_MAX_TOKENS` merged tokens).
    positions:              "original" (None: the default, full-sequence M-RoPE ids) or
                            "contiguous" (renumbered; module docstring, item 2).
    `grid` / `tokens_per_frame` are those of the last encoded video (they vary per video; each
    `Prepared` holds its own `grid`).
    """

    preprocess = "hf"
    DEFAULT_POSITIONS = "original"
    SIGNALS = ("importance", "frame_features", "head_attention")
    DERIVED_SIGNALS = ("frame_features",)

    def __init__(
        self,
        model: Any,
        processor: Any,
        *,
        min_pixels: int | None = None,
        max_pixels: int | None = None,
        positions: str | None = None,
    ) -> None:
        self._init_decoder(model, processor, positions=positions, default=self.DEFAULT_POSITIONS)
        vision = model.config.vision_config
        self._merge = int(vision.spatial_merge_size)
        self._temporal = int(vision.temporal_patch_size)
        unit = (int(vision.patch_size) * self._merge) ** 2
        self.pixels = {
            "shortest_edge": min_pixels or LMMS_MIN_TOKENS * unit,
            "longest_edge": max_pixels or LMMS_MAX_TOKENS * unit,
        }
        self.grid, self.tokens_per_frame = (0, 0), 0
        self._video_id = int(model.config.video_token_id)

    # ------------------------------------------------------------------- encode
    def processor_inputs(self, frames: np.ndarray) -> dict[str, Tensor]:
        """The processor's own video inputs for uint8 frames [T, H, W, 3]: pixel_values_videos
        [P, C*2*p*p], video_grid_thw [1, 3], second_per_grid_ts [1] (as lmms-eval calls it:
        no fps given, so the processor's default sampled fps)."""
        inputs = self.processor(
            text=[self.processor.video_token], videos=[_check_frames(frames)],
            videos_kwargs={"size": self.pixels}, return_tensors="pt",
        )
        return {k: inputs[k] for k in ("pixel_values_videos", "video_grid_thw",
                                      "second_per_grid_ts")}

    @torch.inference_mode()
    def encode_signals(self, frames: np.ndarray, signals: tuple[str, ...] = ()
                       ) -> tuple[Tensor, dict[str, Tensor]]:
        """(tokens [T', H', W', D], {name: signal}) of uint8 frames: the signals named in
        `signals`: `importance` and FastVID's `head_attention` (each [T', H' * W']) and
        `frame_features` [T', D] (float32; module docstring, item 4).

        Four-dimensional so that a cached encoding (the sweep's feature cache) keeps its grid;
        `second_per_grid_ts` is recomputed from T in `prepare` (the processor's rule)."""
        unknown = [n for n in signals if n not in self.SIGNALS]
        if unknown:
            raise NotImplementedError(
                f"backbones: signal(s) {unknown} are not provided before the LLM (this adapter "
                f"provides: {', '.join(self.SIGNALS)})"
            )
        inputs = self.processor_inputs(frames)
        grid_thw = inputs["video_grid_thw"].to(self.device)
        pixels = inputs["pixel_values_videos"].to(self.device, self.dtype)
        t, h, w = (int(x) for x in grid_thw[0])
        wanted = [n for n in signals if n in ("importance", "head_attention")]
        hook = self._capture_last_block() if wanted else None
        try:
            out = self.model.model.get_video_features(
                pixel_values_videos=pixels, video_grid_thw=grid_thw, return_dict=True
            )
        finally:
            captured = hook[1] if hook else None
            if hook:
                hook[0].remove()
        tokens = out.pooler_output[0].reshape(t, h // self._merge, w // self._merge, -1)
        self._last_vision = out  # Qwen3-VL reads its DeepStack features from it
        computed: dict[str, Tensor] = {}
        if "importance" in signals:
            computed["importance"] = self._importance(captured, grid_thw)
        if "head_attention" in signals:
            computed["head_attention"] = self._head_attention(captured, grid_thw)
        computed.update(self._derived_signals(tokens.flatten(1, 2), signals))
        return tokens, computed

    def _capture_last_block(self) -> tuple[Any, dict]:
        captured: dict[str, Any] = {}

        def hook(module: Any, args: tuple, kwargs: dict) -> None:
            captured["hidden"] = args[0] if args else kwargs["hidden_states"]
            captured["cu_seqlens"] = kwargs["cu_seqlens"]
            captured["rotary"] = kwargs["position_embeddings"]

        block = self.model.model.visual.blocks[-1]
        return block.register_forward_pre_hook(hook, with_kwargs=True), captured

    def _importance(self, captured: dict, grid_thw: Tensor) -> Tensor:
        """Attention each patch receives in the last vision block (its own attention segments),
        head- and query-averaged, averaged over each merged token's patches: [T', H'*W']."""
        from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import (
            apply_rotary_pos_emb_vision,
        )

        block = self.model.model.visual.blocks[-1]
        attn = block.attn
        x = block.norm1(captured["hidden"])
        q, k, _ = attn.qkv(x).float().reshape(len(x), 3, attn.num_heads, -1).unbind(1)
        cos, sin = captured["rotary"]
        q, k = apply_rotary_pos_emb_vision(q, k, cos, sin)
        bounds = captured["cu_seqlens"].tolist()
        received = torch.zeros(len(x), device=x.device)
        for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
            qs, ks = q[lo:hi].transpose(0, 1), k[lo:hi].transpose(0, 1)  # [H, n, hd]
            probs = ((qs @ ks.transpose(-1, -2)) * attn.scaling).softmax(dim=-1)
            received[lo:hi] = probs.mean(dim=0).mean(dim=0)
        merged = received.view(-1, self._merge**2).mean(dim=1)  # window order
        return self._row_major(merged, grid_thw)

    def _row_major(self, merged: Tensor, grid_thw: Tensor) -> Tensor:
        """[T' * H' * W'] values of the merged tokens in the tower's window order -> [T', H' * W']
        row-major (the order of the merger's output, `argsort(window_index)`)."""
        from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import get_vision_window_index

        visual = self.model.model.visual
        window_index, _ = get_vision_window_index(
            grid_thw, spatial_merge_size=self._merge, window_size=visual.window_size,
            patch_size=visual.patch_size, kwargs={},
        )
        merged = merged[torch.argsort(window_index.to(merged.device))]
        return merged.view(int(grid_thw[0, 0]), -1)

    def _head_attention(self, captured: dict, grid_thw: Tensor) -> Tensor:
        """FastVID's `head_attention` [T', H' * W'] (module docstring, item 4): in the last
        vision block, each temporal patch's mean query (a pseudo-[CLS]) attends to the mean
        key of each merged token's patches; softmax over the temporal patch's H' * W' keys,
        averaged over heads, reordered row-major."""
        from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import (
            apply_rotary_pos_emb_vision,
        )

        block = self.model.model.visual.blocks[-1]
        attn = block.attn
        x = block.norm1(captured["hidden"])
        q, k, _ = attn.qkv(x).reshape(len(x), 3, attn.num_heads, -1).unbind(1)  # [S, H, hd]
        q, k = apply_rotary_pos_emb_vision(q, k, *captured["rotary"])
        frames, heads, head_dim = int(grid_thw[0, 0]), attn.num_heads, q.shape[-1]
        q = q.float().transpose(0, 1).reshape(heads, frames, -1, head_dim).mean(2, keepdim=True)
        k = k.float().transpose(0, 1).reshape(heads, frames, -1, self._merge**2, head_dim)
        scores = (q @ k.mean(3).transpose(-1, -2)) * head_dim**-0.5  # [H, T', 1, H'W']
        probs = scores.softmax(dim=-1).mean(dim=2).mean(dim=0)  # [T', H'W'], window order
        return self._row_major(probs.reshape(-1), grid_thw)

    def _derived_signals(self, video: Tensor, names: tuple[str, ...]) -> dict[str, Tensor]:
        """FastVID's `frame_features` [T', D] (module docstring, item 4): each temporal patch's
        mean token, from the features [T', H' * W', D] themselves (float32)."""
        return {"frame_features": video.float().mean(dim=1)} if "frame_features" in names else {}

    # ------------------------------------------------------------------ prepare
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

        Compressors see [T', H'*W', D] with grid (H', W'). The prepared video holds its grid,
        `source_index` (the input token whose M-RoPE position each fed token takes) and the
        temporal interval (`rope`), from which the prefill rebuilds the full sequence's ids.
        encoded: (tokens [T', H', W', D], {name: signal}) from an earlier `encode_signals`
                 ((tokens, importance or None) from `encode` is read too).
        """
        compressor = _bind(compressor, retention)
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        started = _now(self.device)
        tokens, signals = self._encoded(frames, compressor, encoded)
        t, h, w, dim = tokens.shape
        self.grid, self.tokens_per_frame = (h, w), h * w
        video = tokens.reshape(t, h * w, dim)
        seconds = self._temporal / self._default_fps()
        vision = _now(self.device) - started

        started = _now(self.device)
        n_v = t * h * w
        visual, in_llm, info, index = self._compress(compressor, video, (h, w), signals)
        compress = _now(self.device) - started
        return Prepared(
            visual=visual, frames=t, visual_tokens=n_v, compressor=compressor, in_llm=in_llm,
            timings={"vision": vision, "compress": compress}, info=info, grid=(h, w),
            source_index=index.cpu(), rope={"second_per_grid_t": seconds},
        )

    def _default_fps(self) -> float:
        """The sampled fps the processor assumes for bare frames (no metadata, as lmms-eval
        passes them): `VideoMetadata.sampled_fps` without an fps, 24 in transformers 5.24."""
        from transformers.video_utils import VideoMetadata

        return float(VideoMetadata(total_num_frames=1).sampled_fps)

    # ------------------------------------------------------------------- prompt
    def split_prompt(self, prompt: str) -> tuple[str, str]:
        """Text before and after the video tokens (lmms-eval qwen2_5_vl's message)."""
        for placeholder in ("<image>", "<video>"):
            prompt = prompt.replace(placeholder, "")
        before = (f"<|im_start|>system\n{SYSTEM_PROMPT}<|im_end|>\n<|im_start|>user\n"
                  f"{_VIDEO_START}")
        after = f"{_VIDEO_END}{prompt}<|im_end|>\n<|im_start|>assistant\n"
        return before, after


    def prompt_ids(self, prompt: str) -> tuple[list[int], list[int]]:
        """(ids before the video, ids after it) of the full prompt."""
        before, after = self.split_prompt(prompt)
        return self.encode_text(before), self.encode_text(after)

    def full_positions(self, prepared: Prepared, before: int, after: int) -> tuple[Tensor, int]:
        """([3, S] M-RoPE ids of the full, uncompressed sequence, rope delta) from the model's
        own `get_rope_index` (video pads at [before, before + N_v))."""
        n_v = prepared.visual_tokens
        ids = torch.zeros(1, before + n_v + after, dtype=torch.long, device=self.device)
        ids[0, before : before + n_v] = self._video_id
        types = (ids == self._video_id).int() * 2
        h, w = prepared.grid
        grid_thw = torch.tensor([[prepared.frames, h * self._merge, w * self._merge]])
        seconds = torch.tensor([prepared.rope["second_per_grid_t"]])
        positions, delta = self.model.model.get_rope_index(
            ids, types, video_grid_thw=grid_thw.to(self.device), second_per_grid_ts=seconds
        )
        return positions[:, 0], int(delta.reshape(-1)[0])

    def prompt_embeddings(self, prepared: Prepared, prompt: str) -> tuple[Tensor, int, Tensor]:
        """(inputs_embeds [1, S', D], index of the first visual token, position ids [3, S'])
        under `self.positions` (module docstring, item 2)."""
        before, after = self.prompt_ids(prompt)
        start, n_v = len(before), prepared.visual_tokens
        parts = [self._embed(before), prepared.visual.to(self.device, self.dtype),
                 self._embed(after)]
        embeds = torch.cat(parts)[None]
        if self.positions == "contiguous" and _compressed_before_llm(prepared):
            positions = torch.arange(embeds.shape[1], device=self.device).expand(3, -1)
            return embeds, start, positions
        full, _ = self.full_positions(prepared, len(before), len(after))
        visual_pos = full[:, start : start + n_v][:, prepared.source_index.to(self.device)]
        positions = torch.cat([full[:, :start], visual_pos, full[:, start + n_v :]], dim=1)
        return embeds, start, positions

    # ------------------------------------------------------------- decoder loop

    @torch.inference_mode()
    def prefill(self, prepared: Prepared, prompt: str, *, cache: bool = True) -> Prefill:
        """Run the prompt through every decoder layer with M-RoPE ids (FastV: prune at K)."""
        embeds, start, positions = self.prompt_embeddings(prepared, prompt)
        length = embeds.shape[1]
        cos, sin = self._lm.rotary_emb(embeds, positions[:, None])  # [1, S, head_dim] each
        kv = _offset_cache()(config=self._lm.config) if cache else None
        if kv is not None:
            kv.offset = int(positions.max()) + 1 - length
        visual_rows = start + torch.arange(prepared.visual_tokens_fed, device=self.device)
        hidden, lengths, kept, attention = self._decoder_layers(
            embeds, (cos, sin), kv, visual_rows, prepared.in_llm)
        return Prefill(
            logits=self._logits(hidden[:, -1]), length=length, tokens_per_layer=lengths,
            visual_start=start, kept=kept, attention=attention, cache=kv,
        )

    @torch.inference_mode()
    def step(self, token: int, position: int, cache: Any) -> Tensor:
        """Feed one token through the cache at prompt-relative `position` (the count of tokens
        fed); its M-RoPE id is that plus the cache's offset (the full sequence's next id minus
        the fed length; 0 when contiguous), equal on all 3 axes."""
        hidden = self._embed([token])[None]
        ids = torch.full((3, 1, 1), position + cache.offset, device=self.device)
        rotary = self._lm.rotary_emb(hidden, ids)
        for layer in self._lm.layers:
            hidden = self._layer(layer, hidden, rotary, cache)
        return self._logits(hidden[:, -1])

    # ---------------------------------------------------------------- requests


def _compressed_before_llm(prepared: Prepared) -> bool:
    """Whether a pre-LLM method made the fed visual tokens (the positions policy applies)."""
    return prepared.compressor is not None and prepared.in_llm is None

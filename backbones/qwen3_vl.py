"""Qwen3-VL (transformers' `Qwen3VLForConditionalGeneration`) as a `VideoLLM`.

Follows transformers 5.24's `Qwen3VLModel` (vision tower with DeepStack taps, `get_rope_index`
with one grid per temporal patch, the text model's `_deepstack_process`) and lmms-eval 0.7.3's
`qwen3_vl` model (its pixel bounds, frames as the video). What differs from Qwen2.5-VL
(`backbones.qwen2_5_vl`, whose encode / positions / decoding rules this adapter shares):

1. **Prompt: one block per temporal patch.** Qwen3-VL separates the frames of a video with
   their timestamps in text: `<{t:.1f} seconds><|vision_start|><|video_pad|> x n
   <|vision_end|>` for each temporal patch, t the mean time of its two frames (the Qwen3-VL
   processor's `_calculate_timestamps`). The harness hands over frames without metadata, so t
   is computed from the frame's index at the processor's default 24 fps (the processor's own
   rule for bare frames; lmms-eval's `qwen3_vl` reads the video's fps through qwen-vl-utils,
   so its timestamps name real seconds). The blocks follow the ORIGINAL Qwen3-VL processor
   (transformers 4.57, the checkpoint's own code), which replaces the chat template's whole
   `<|vision_start|><|video_pad|><|vision_end|>` with them; transformers 5.24 replaces only the
   pad and leaves an extra start / end marker around the video, which this adapter does not
   copy. The text of every block stays whatever a compressor keeps (METHODS.md section 11).
2. **Compressed tokens stay in their frame's block**, in their original order: each fed token
   goes to the block of the input token whose position it takes (`Prepared.source_index`: a
   selection's own index, a merge's representative), sorted by that index (stable). A block
   whose tokens are all dropped keeps its timestamp and markers. Positions (`positions=
   "original"`, the default as on Qwen2.5-VL): the full sequence's ids from the model's own
   `get_rope_index`, taken at each fed row; "contiguous": 0..S'-1 on all three axes.
3. **DeepStack in lockstep.** The tower's DeepStack mergers give L extra features per visual
   token; the text model adds feature l to the visual rows' hidden states after decoder layer l
   (l < L). Each fed token gets the DeepStack features of the token whose position it takes,
   so a kept token keeps exactly its own and a merged token its representative's; FastV's
   pruning at layer K drops the pruned tokens' features too (K >= L on the 8B: 3 taps, K = 3).
   `encode` returns the visual tokens and the DeepStack features stacked, [1 + L, T', H', W', D],
   so that a cached encoding keeps them together.
4. Model signals (`importance` for VisionZip and HoliTom, FastVID's `head_attention` and
   `frame_features`) are Qwen2.5-VL's rules (`backbones.qwen2_5_vl`, item 4) on the last vision
   block, whose attention is full within each temporal patch (Qwen3-VL has no window
   attention, so nothing is reordered).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from backbones.base import Prefill, Prepared
from backbones.decoder import _bind, _check_frames, _offset_cache
from backbones.qwen2_5_vl import Qwen25VLAdapter

__all__ = ["DEFAULT_FPS", "Qwen3VLAdapter", "timestamps"]

DEFAULT_FPS = 24.0  # the Qwen3-VL processor's fps for frames without metadata
_START, _END = "<|vision_start|>", "<|vision_end|>"


def timestamps(frames: int, fps: float = DEFAULT_FPS, temporal: int = 2) -> list[float]:
    """Seconds of each temporal patch of `frames` frames (indices 0..T-1, padded to a multiple
    of `temporal` by repeating the last): the mean time of its first and last frame."""
    indices = list(range(frames)) + [frames - 1] * (-frames % temporal)
    seconds = [i / fps for i in indices]
    return [(seconds[i] + seconds[i + temporal - 1]) / 2 for i in range(0, len(seconds), temporal)]


class Qwen3VLAdapter(Qwen25VLAdapter):
    """A loaded `Qwen3VLForConditionalGeneration` + its processor (see module docstring).
    Arguments as `Qwen25VLAdapter` (lmms-eval qwen3_vl's pixel bounds are the same)."""

    def __init__(self, model: Any, processor: Any, **kwargs: Any) -> None:
        super().__init__(model, processor, **kwargs)
        self.deepstack_layers = len(model.config.vision_config.deepstack_visual_indexes)

    # ------------------------------------------------------------------- encode
    def processor_inputs(self, frames: np.ndarray) -> dict[str, Tensor]:
        """The processor's own video inputs for uint8 frames [T, H, W, 3]: pixel_values_videos
        [P, C*2*p*p] and video_grid_thw [1, 3] (frames as given: no resampling; the per-frame
        pixel cap of the reference qwen-vl-utils, which lmms-eval's qwen3_vl resizes with)."""
        out = self.processor.video_processor(
            videos=[_check_frames(frames)], size=self.pixels, do_sample_frames=False,
            cap_pixels_per_frame=True, return_tensors="pt",
        )
        return {k: out[k] for k in ("pixel_values_videos", "video_grid_thw")}

    @torch.inference_mode()
    def encode_signals(self, frames: np.ndarray, signals: tuple[str, ...] = ()
                       ) -> tuple[Tensor, dict[str, Tensor]]:
        """(visual tokens and DeepStack features [1 + L, T', H', W', D], {name: signal}) of
        uint8 frames [T, H, W, 3]; the signals as `Qwen25VLAdapter.encode_signals` computes
        them, on Qwen3-VL's row-major patches (no window reordering to undo)."""
        tokens, computed = super().encode_signals(frames, signals)
        deep = [f[0].reshape(tokens.shape) for f in self._last_vision.deepstack_features]
        self._last_vision = None
        return torch.stack([tokens, *deep]), computed

    def _row_major(self, merged: Tensor, grid_thw: Tensor) -> Tensor:
        """Qwen3-VL's tower keeps the merge units in row-major order: [T' * H' * W'] ->
        [T', H' * W'] as it is."""
        return merged.view(int(grid_thw[0, 0]), -1)

    # ------------------------------------------------------------------ prepare
    @torch.inference_mode()
    def prepare(
        self,
        frames: np.ndarray | None,
        compressor: Any = None,
        retention: float | None = None,
        *,
        encoded: tuple[Tensor, Tensor | None] | None = None,
    ) -> Prepared:
        """As `Qwen25VLAdapter.prepare` on the visual tokens; the DeepStack features of the fed
        tokens ride along in `Prepared.deepstack` ([L, V, D], fed order: each fed token's
        source token's; all N_v for FastV, which prunes them in the LLM)."""
        compressor = _bind(compressor, retention)
        stacked, signals = self._encoded(frames, compressor, encoded)
        prepared = super().prepare(None, compressor, encoded=(stacked[0], signals))
        t, h, w, dim = stacked.shape[1:]
        deep = stacked[1:].reshape(len(stacked) - 1, t * h * w, dim)
        index = prepared.source_index.to(self.device)
        prepared.rope = {**(prepared.rope or {}), "timestamps": timestamps(2 * t)}
        prepared.deepstack = deep[:, index] if prepared.in_llm is None else deep
        return prepared

    # ------------------------------------------------------------------- prompt
    def split_prompt(self, prompt: str) -> tuple[str, str]:
        """Text before and after the video blocks (lmms-eval qwen3_vl's message: system, then
        the video and the context in the user turn)."""
        before, after = super().split_prompt(prompt)
        return before[: -len(_START)], after[len(_END):]

    def _block_ids(self, prepared: Prepared) -> list[list[int]]:
        """Token ids of each temporal patch's timestamp + start marker (the end marker after)."""
        stamps = prepared.rope["timestamps"]
        return [self.encode_text(f"<{s:.1f} seconds>{_START}") for s in stamps]

    def full_sequence(self, prepared: Prepared, prompt: str) -> tuple[Tensor, Tensor]:
        """(ids [S] of the full, uncompressed prompt with video pads, its M-RoPE ids [3, S] from
        the model's own `get_rope_index`)."""
        before, after = self.split_prompt(prompt)
        h, w = prepared.grid
        pads = [self._video_id] * (h * w)
        end = self.encode_text(_END)
        ids = self.encode_text(before)
        for block in self._block_ids(prepared):
            ids += block + pads + end
        ids = torch.tensor(ids + self.encode_text(after), device=self.device)[None]
        types = (ids == self._video_id).int() * 2
        grid_thw = torch.tensor([[prepared.frames, h * self._merge, w * self._merge]])
        positions, _ = self.model.model.get_rope_index(
            ids, types, video_grid_thw=grid_thw.to(self.device)
        )
        return ids[0], positions[:, 0]

    def prompt_embeddings(self, prepared: Prepared, prompt: str) -> tuple[Tensor, Tensor, Tensor]:
        """(inputs_embeds [1, S', D], the fed visual tokens' rows [V] in S' (in source order),
        position ids [3, S']) under `self.positions` (module docstring, items 1-2)."""
        return self._sequence(prepared, prompt)[:3]

    def _sequence(self, prepared: Prepared, prompt: str) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """`prompt_embeddings` and the fed tokens' order by source index [V]."""
        ids, full = self.full_sequence(prepared, prompt)
        pad_rows = (ids == self._video_id).nonzero().flatten()
        source = prepared.source_index.to(self.device)
        order = torch.sort(source, stable=True).indices
        text_rows = (ids != self._video_id).nonzero().flatten()
        rows = torch.cat([text_rows, pad_rows[source[order]]])
        sequence = torch.sort(rows, stable=True).indices  # full row order
        embeds = torch.cat([self._embed(ids[text_rows].tolist()),
                            prepared.visual.to(self.device, self.dtype)[order]])[sequence]
        visual_at = torch.empty(len(rows), dtype=torch.long, device=self.device)
        visual_at[sequence] = torch.arange(len(rows), device=self.device)
        visual_rows = visual_at[len(text_rows):]  # row of fed token order[j] in S'
        if self.positions == "contiguous" and prepared.compressor is not None \
                and prepared.in_llm is None:
            positions = torch.arange(len(rows), device=self.device).expand(3, -1)
        else:
            positions = full[:, rows[sequence]]
        return embeds[None], visual_rows, positions, order

    # ------------------------------------------------------------- decoder loop
    @torch.inference_mode()
    def prefill(self, prepared: Prepared, prompt: str, *, cache: bool = True) -> Prefill:
        """The prompt through every decoder layer with M-RoPE ids; DeepStack feature l added to
        the visual rows after layer l; FastV prunes at K (its features leave with its rows)."""
        embeds, visual_rows, positions, order = self._sequence(prepared, prompt)
        deep = prepared.deepstack[:, order]  # [L, V, D] in the order of visual_rows
        length = embeds.shape[1]
        cos, sin = self._lm.rotary_emb(embeds, positions[:, None])
        kv = _offset_cache()(config=self._lm.config) if cache else None
        if kv is not None:
            kv.offset = int(positions.max()) + 1 - length
        hidden, lengths, kept, attention = self._decoder_layers(
            embeds, (cos, sin), kv, visual_rows, prepared.in_llm, deepstack=deep)
        return Prefill(
            logits=self._logits(hidden[:, -1]), length=length, tokens_per_layer=lengths,
            visual_start=int(visual_rows.min()) if len(visual_rows) else 0, kept=kept,
            attention=attention, cache=kv,
        )

"""LLaVA-Video (`lmms-lab/LLaVA-Video-7B-Qwen2`) as the LLaVA-NeXT code and lmms-eval run it.

LLaVA-Video ships in the LLaVA-NeXT layout and converts (`backbones.llava_next`) to the same
transformers class as LLaVA-OneVision, `LlavaOnevisionForConditionalGeneration`; the weights
and the decoder are the same kind, but the visual sequence is not. transformers' class pools
each frame bilinearly to ceil(27/2)^2 = 196 tokens and appends one newline after the video;
LLaVA-NeXT (`llava_arch.py` at df17966: `get_2dPool`, `add_token_per_grid`, the video branch
of `prepare_inputs_labels_for_multimodal`) run by lmms-eval 0.7.3's `llava_vid` computes
(METHODS.md section 12):

1. SigLIP with its last layer dropped -> `mlp2x_gelu` projector (the converted model's own
   tower at `vision_feature_layer` and `multi_modal_projector`);
2. `get_2dPool` with `mm_spatial_pool_mode`, which `llava_vid` OVERRIDES to "average" (its
   `mm_spatial_pool_mode="average"` argument with `overwrite=True`; LLaVA-Video's own config
   says "bilinear") at the default stride 2 (the video branch calls `get_2dPool(feat)` without
   a stride): `avg_pool2d`, 27x27 -> floor -> 13x13 = 169 tokens a frame;
3. `mm_newline_position="grid"` (`llava_vid`'s default, and the checkpoint's own):
   `add_token_per_grid`, one `image_newline` after every row of every frame: 13 x (13 + 1) =
   182 positions a frame, frames back to back, the last row's newline last (64 frames: 11,648).

How "as lmms-eval runs it" is represented: `video_layout(path)` reads the settings the
converter recorded in its marker (`llava_next.source_settings`); a checkpoint whose own
`mm_newline_position` is "grid" (LLaVA-Video; the LLaVA-OneVision releases say "one_token")
is one lmms-eval runs with `llava_vid`, so it gets `llava_vid`'s overrides (`LLAVA_VID`:
pool "average", stride 2, newline "grid"), whatever its config says about pooling; the
checkpoint's own values are kept beside them (`VideoLayout.checkpoint`) for the record.
`backbones.load` then builds `LlavaVideoAdapter`; every other checkpoint keeps
`LlavaOnevisionAdapter` unchanged.

**Compression acts on the frame tokens only**: features [T, 169, D] on the grid (13, 13);
N_v = T x 169 (the newlines are not counted, as in FastVID's `real_video_token_len = 64 * 13 *
13`). **Separators for the kept tokens**, as the reference methods' LLaVA-Video code places
them, and here: the fed tokens are put in their original order (sorted by the input token
whose position each takes, `Prepared.source_index`: its own index for a selection, the
representative for a merge; stable), and one `image_newline` follows the last fed token of
every frame row that keeps at least one token; a row with nothing kept gets no newline.
FastVID (github.com/LunarShen/FastVID, `fastvid_llavavideo/.../modeling_qwen2.py`: the
newline at `((index // 14) + 1) * 14 - 1` of every kept token, `torch.unique`, all sorted by
position) and HoliTom (github.com/cokeshao/HoliTom, `holitom/llava_arch.py`
`add_newline_token`: tokens sorted by position, `row = pos // grid_size`, a newline after each
non-empty row, per frame) do exactly this; they agree. With the full model every row is kept
and the sequence is `add_token_per_grid`'s. `video_newline=False` gives the flat layout
instead (frame tokens only, `mm_newline_position="no_token"`).

**FastV** (in the LLM) scores and drops frame tokens only: the newlines stay at every layer.

**FastVID's signals** (`frame_features`, `head_attention`): as `LlavaOnevisionAdapter` (the
SigLIP head of `vision_head` on the tower output that feeds the projector), but the head's
attention [T, 27, 27] is pooled as the LLaVA-Video path of the official code does
(github.com/LunarShen/FastVID at a40a109, `fastvid_llavavideo/LLaVA-NeXT/llava/model/
llava_arch.py` `get_attn_2dPool`): `avg_pool2d` with stride 2 to the features' 13x13 grid.

**Positions** (`positions`, METHODS.md section 11): "contiguous" (default: the compressed
sequence through LLaVA-NeXT's `prepare_inputs_labels_for_multimodal`, numbered 0..S'-1, as
HoliTom and every pre-LLM method on LLaVA-NeXT's code) or "original" (FastVID's: each fed
token and each kept newline keeps its position in the full 182-a-frame layout, the text after
the video its full-sequence position; decoding continues from the full length).

Prompt: lmms-eval `llava_vid` with `conv_template=qwen_1_5` (LLaVA-NeXT's `conv_qwen`, the
same object as `qwen_2`): `"<image>\\n" + question` in the ChatML conversation with the default
system prompt, i.e. the string `LlavaOnevisionAdapter.split_prompt` builds (no time
instruction: `add_time_instruction=False`, as the papers run it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from backbones.base import Prepared
from backbones.decoder import _check_frames
from backbones.llava_onevision import LlavaOnevisionAdapter

__all__ = ["LLAVA_VID", "POOL_MODES", "GridLayout", "LlavaVideoAdapter", "VideoLayout",
           "grid_layout", "video_layout"]

POOL_MODES = ("average", "max", "bilinear")  # get_2dPool's modes


@dataclass(frozen=True)
class VideoLayout:
    """How the LLaVA-NeXT code pools and lays out a video.

    pool:       `get_2dPool` mode ("average", "max": floor(h / stride); "bilinear":
                ceil(h / stride)).
    stride:     its stride.
    newline:    `mm_newline_position` ("grid" is the only one this adapter lays out).
    checkpoint: the checkpoint's own mm_* values before lmms-eval's overrides (the record).
    """

    pool: str = "average"
    stride: int = 2
    newline: str = "grid"
    checkpoint: dict[str, Any] = field(default_factory=dict, compare=False)


# lmms-eval 0.7.3 `llava_vid`'s overrides (mm_spatial_pool_mode="average",
# mm_spatial_pool_stride=2, mm_newline_position="grid", overwrite=True)
LLAVA_VID = VideoLayout(pool="average", stride=2, newline="grid")


def video_layout(path: str | Path) -> VideoLayout | None:
    """`LLAVA_VID` (with the checkpoint's own mm_* values recorded) for a converted LLaVA-NeXT
    checkpoint whose `mm_newline_position` is "grid" (a LLaVA-Video one, run by lmms-eval's
    `llava_vid`); None for anything else (LLaVA-OneVision's own layout applies)."""
    from backbones.llava_next import source_settings

    settings = source_settings(path)
    if not settings or settings.get("mm_newline_position") != "grid":
        return None
    own = {k: settings.get(k) for k in
           ("mm_spatial_pool_mode", "mm_spatial_pool_stride", "mm_newline_position")}
    return VideoLayout(LLAVA_VID.pool, LLAVA_VID.stride, LLAVA_VID.newline, checkpoint=own)


@dataclass
class GridLayout:
    """Where the fed frame tokens and their row newlines sit (`grid_layout`); offsets from the
    first visual position, all [V] or [K] long.

    token_offset / newline_offset: in the fed sequence (V tokens + K newlines = `length`).
    token_full / newline_full:     in the full, uncompressed layout (`full_length` positions).
    """

    token_offset: Tensor
    newline_offset: Tensor
    token_full: Tensor
    newline_full: Tensor
    length: int
    full_length: int


def grid_layout(source_index: Tensor, grid: tuple[int, int], frames: int) -> GridLayout:
    """The grid layout of V fed tokens whose positions come from `source_index` [V] (indices
    into the T*H*W frame tokens, non-decreasing): one newline after the last fed token of each
    (frame, row) that has any (module docstring). Full layout: frame t, row r, column c at
    t*H*(W+1) + r*(W+1) + c, the row's newline at column W."""
    rows, cols = grid
    source = source_index.long().cpu()
    if source.numel() and bool((source[1:] < source[:-1]).any()):
        raise ValueError("grid_layout needs the fed tokens in their original order")
    row = source // cols  # frame * rows + row
    full = row * (cols + 1) + source % cols
    _, inverse, counts = torch.unique_consecutive(row, return_inverse=True, return_counts=True)
    token_offset = torch.arange(source.numel()) + inverse
    last = torch.cumsum(counts, 0) - 1  # index of each row group's last token
    newline_offset = last + torch.arange(counts.numel()) + 1
    newline_full = row[last] * (cols + 1) + cols
    return GridLayout(
        token_offset=token_offset,
        newline_offset=newline_offset,
        token_full=full,
        newline_full=newline_full,
        length=int(source.numel() + counts.numel()),
        full_length=frames * rows * (cols + 1),
    )


class LlavaVideoAdapter(LlavaOnevisionAdapter):
    """A converted LLaVA-Video checkpoint (`LlavaOnevisionForConditionalGeneration`) with the
    LLaVA-NeXT code's pooling and grid layout (module docstring).

    layout:        the pooling and newline layout (`video_layout`; default `LLAVA_VID`).
    video_newline: True (default): the grid newlines; False: flat frame tokens only.
    preprocess, positions, vision_head: as `LlavaOnevisionAdapter`.
    """

    def __init__(
        self,
        model: Any,
        processor: Any,
        *,
        layout: VideoLayout = LLAVA_VID,
        video_newline: bool = True,
        preprocess: str = "llava_next",
        positions: str | None = None,
        vision_head: str | None = None,
    ) -> None:
        if layout.pool not in POOL_MODES:
            raise ValueError(f"pool must be one of {POOL_MODES}, got {layout.pool!r}")
        if layout.newline != "grid":
            raise NotImplementedError(
                f"backbones: mm_newline_position {layout.newline!r} (implemented: grid)"
            )
        super().__init__(
            model, processor, video_newline=video_newline, preprocess=preprocess,
            positions=positions, vision_head=vision_head,
        )
        self.layout = layout
        side, stride = self._patch_grid[0], int(layout.stride)
        pooled = -(-side // stride) if layout.pool == "bilinear" else side // stride
        self.grid = (pooled, pooled)
        self.tokens_per_frame = pooled * pooled

    # ---------------------------------------------------------------- features
    @torch.inference_mode()
    def encode_signals(self, frames: np.ndarray, signals: tuple[str, ...] = ()
                       ) -> tuple[Tensor, dict[str, Tensor]]:
        """Features [T, N, D] (N = 169 for SigLIP-384: tower -> projector -> `get_2dPool`) of
        uint8 frames [T, H, W, 3] and the signals named in `signals` (importance [T, N] pooled
        the same way; FastVID's frame_features [T, C] and head_attention [T, N])."""
        frames = _check_frames(frames)
        pixels = self._pixel_values(frames)[0]  # [T, 3, S, S]
        with self._capture(signals) as captured:
            patches = self._projected_patches(pixels)  # [T, h*w, D]
        video = self._pool(patches.reshape(patches.shape[0], *self._patch_grid, -1))
        return video, self._tower_signals(signals, captured)

    def _projected_patches(self, pixels: Tensor) -> Tensor:
        """The tower's features at `vision_feature_layer` (select strategy applied) through the
        projector: [T, 3, S, S] -> [T, h*w, D] (what `get_video_features` pools)."""
        inner, config = self.model.model, self.model.config
        out = inner.vision_tower(pixels, output_hidden_states=True, return_dict=True)
        chosen = config.vision_feature_layer
        if isinstance(chosen, int):
            hidden = out.hidden_states[chosen]
        else:
            hidden = torch.cat([out.hidden_states[i] for i in chosen], dim=-1)
        if config.vision_feature_select_strategy == "default":
            hidden = hidden[:, 1:]
        return inner.multi_modal_projector(hidden)

    def _pool(self, x: Tensor) -> Tensor:
        """`get_2dPool` in the layout's mode: [T, h, w, C] -> [T, N, C]."""
        grid = x.permute(0, 3, 1, 2)
        stride = int(self.layout.stride)
        if self.layout.pool == "average":
            pooled = F.avg_pool2d(grid, stride)
        elif self.layout.pool == "max":
            pooled = F.max_pool2d(grid, stride)
        else:
            pooled = F.interpolate(grid, size=list(self.grid), mode="bilinear")
        return pooled.permute(0, 2, 3, 1).reshape(x.shape[0], self.tokens_per_frame, -1)

    def _pool_head_attention(self, attention: Tensor) -> Tensor:
        """[T, h, w, 1] -> [T, N]: `get_attn_2dPool` of FastVID's LLaVA-Video code
        (github.com/LunarShen/FastVID at a40a109, `fastvid_llavavideo/LLaVA-NeXT/llava/model/
        llava_arch.py`): `avg_pool2d` with the layout's stride, 27x27 -> 13x13, the pooling of
        the features. The official code raises for any other mode; "bilinear" here resizes
        as LLaVA-OneVision's path does, "max" is refused (max-pooled weights mean nothing)."""
        if self.layout.pool == "max":
            raise NotImplementedError(
                "backbones: head_attention under max pooling (FastVID pools the head's "
                "attention by average, or bilinear on LLaVA-OneVision)"
            )
        return self._pool(attention)[..., 0]

    # ----------------------------------------------------------------- prepare
    def prepare(self, frames: Any, compressor: Any = None, retention: float | None = None,
                **kwargs: Any) -> Prepared:
        """As `LlavaOnevisionAdapter.prepare`, then the fed tokens in their original order
        (by `source_index`, stable), which the grid layout needs."""
        prepared = super().prepare(frames, compressor, retention, **kwargs)
        order = torch.sort(prepared.source_index, stable=True).indices
        if not torch.equal(order, torch.arange(order.numel())):
            prepared.visual = prepared.visual[order.to(prepared.visual.device)]
            prepared.source_index = prepared.source_index[order]
        return prepared

    def _grid(self, prepared: Prepared) -> GridLayout:
        return grid_layout(prepared.source_index, self.grid, prepared.frames)

    # ------------------------------------------------------------------ prompt
    def prompt_embeddings(self, prepared: Prepared, prompt: str) -> tuple[Tensor, int]:
        """(inputs_embeds [1, S, D], index of the first visual token): text, the fed frame
        tokens with their row newlines (`grid_layout`), text."""
        if not self.video_newline:
            return super().prompt_embeddings(prepared, prompt)
        before, after = (self.encode_text(text) for text in self.split_prompt(prompt))
        layout = self._grid(prepared)
        visual = prepared.visual.to(self.device, self.dtype)
        video = visual.new_empty(layout.length, visual.shape[-1])
        video[layout.token_offset.to(self.device)] = visual
        video[layout.newline_offset.to(self.device)] = self.model.model.image_newline.to(
            self.dtype
        )
        return torch.cat([self._embed(before), video, self._embed(after)])[None], len(before)

    def position_ids(self, prepared: Prepared, start: int, length: int) -> tuple[Tensor, int]:
        """([1, S'] position ids, decode offset): contiguous 0..S'-1, offset 0; original: the
        full layout's positions for the fed tokens and kept newlines, the text after the video
        shifted by (full video length - fed video length), which is the offset."""
        if not self.video_newline or self.positions == "contiguous":
            return super().position_ids(prepared, start, length)
        layout = self._grid(prepared)
        positions = torch.arange(length, device=self.device)
        positions[start + layout.token_offset.to(self.device)] = start + layout.token_full.to(
            self.device
        )
        positions[start + layout.newline_offset.to(self.device)] = (
            start + layout.newline_full.to(self.device)
        )
        shift = layout.full_length - layout.length
        positions[start + layout.length :] += shift
        return positions[None], shift

    def _frame_positions(self, prepared: Prepared, start: int) -> Tensor:
        """[V] prompt indices of the fed frame tokens (the newlines between them excluded)."""
        if not self.video_newline:
            return super()._frame_positions(prepared, start)
        return start + self._grid(prepared).token_offset.to(self.device)

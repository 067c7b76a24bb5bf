"""backbones.llava_video: LLaVA-Video in the LLaVA-NeXT layout, as LLaVA-NeXT and llava_vid run it.

A tiny checkpoint in the LLaVA-NeXT layout (test_llava_next's writer) with LLaVA-Video's flags
(`mm_newline_position: grid`, `mm_spatial_pool_mode: bilinear` in its config, which lmms-eval's
`llava_vid` overrides to average) is converted and loaded through `backbones.load`. The oracle
is written here from LLaVA-NeXT's steps over the ORIGINAL state dict: tower (2 of 3 layers) ->
mlp2x_gelu projector -> `get_2dPool` average, stride 2 (each 2x2 block's mean: 5x5 -> floor ->
2x2, as 27x27 -> 13x13) -> `add_token_per_grid` (a newline after every row of every frame:
2 x (2 + 1) = 6 positions a frame) -> Qwen2 (test_llava_next's reference) on the embeddings.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from test_llava_next import reference_logits, reference_vision

import backbones
import compressors
from backbones.llava_video import LLAVA_VID, LlavaVideoAdapter, grid_layout, video_layout
from backbones.tiny_llava_next import (
    CASES,
    FRAMES,
    GRID,
    HIDDEN,
    IMAGE,
    LLAVA_VIDEO_FLAGS,
    V_LAYERS,
    write_llava_next,
    write_tiny_llava_video,
)

POOLED = GRID // 2  # average pooling floors: 5 -> 2
PER_FRAME = POOLED * POOLED  # 4 frame tokens
ROW = POOLED + 1  # a row and its newline
QUESTION = "What is in the video?"


@pytest.fixture(scope="module")
def video_checkpoint(tmp_path_factory) -> tuple[Path, str]:
    """(LLaVA-NeXT source with LLaVA-Video's flags, converted directory)."""
    root = tmp_path_factory.mktemp("llava_video")
    src = write_tiny_llava_video(root / "tiny_llava_video")  # what model=tiny_llava_video writes
    config = json.loads((src / "config.json").read_text())
    assert {k: config[k] for k in LLAVA_VIDEO_FLAGS} == LLAVA_VIDEO_FLAGS
    return src, backbones.llava_next.ensure_converted(str(src), cache_dir=root / "cache")


@pytest.fixture(scope="module")
def llm(video_checkpoint) -> LlavaVideoAdapter:
    return backbones.load(video_checkpoint[1], video_newline=True)


def _frames(seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(FRAMES, IMAGE, IMAGE, 3), dtype=np.uint8)


# ------------------------------------------------------------------------------------------
# LLaVA-NeXT's steps, written here


def oracle_frame_tokens(sd, pixels) -> torch.Tensor:
    """tower -> projector -> get_2dPool(average, 2): [T, POOLED, POOLED, D]."""
    x = reference_vision(sd, pixels, V_LAYERS - 1)
    linear = torch.nn.functional.linear
    x = linear(x, sd["model.mm_projector.0.weight"], sd["model.mm_projector.0.bias"])
    x = torch.nn.functional.gelu(x)  # mlp2x_gelu: exact GELU
    x = linear(x, sd["model.mm_projector.2.weight"], sd["model.mm_projector.2.bias"])
    grid = x.view(x.shape[0], GRID, GRID, -1)
    out = torch.empty(x.shape[0], POOLED, POOLED, x.shape[-1])
    for r in range(POOLED):  # avg_pool2d, kernel = stride = 2: the last odd row/column dropped
        for c in range(POOLED):
            out[:, r, c] = grid[:, 2 * r : 2 * r + 2, 2 * c : 2 * c + 2].mean(dim=(1, 2))
    return out


def oracle_grid_sequence(tokens, newline) -> torch.Tensor:
    """add_token_per_grid: every row of every frame, then the newline: [T * H * (W + 1), D]."""
    rows = []
    for frame in tokens:
        for row in frame:
            rows.extend([*row, newline])
    return torch.stack(rows)


def _pixels(llm, frames) -> torch.Tensor:
    return llm._pixel_values(frames)[0].float()


def _prompt_ids(llm, prompt):
    before, after = llm.split_prompt(prompt)
    return llm.encode_text(before), llm.encode_text(after)


# ------------------------------------------------------------------------------------------
# Tests


def test_layout_read_from_the_marker_with_llava_vid_overrides(video_checkpoint, llm, tmp_path):
    _, converted = video_checkpoint
    layout = video_layout(converted)
    assert layout == LLAVA_VID and (layout.pool, layout.stride, layout.newline) == (
        "average", 2, "grid"
    )
    assert layout.checkpoint["mm_spatial_pool_mode"] == "bilinear"  # the override is recorded
    assert isinstance(llm, LlavaVideoAdapter) and llm.preprocess == "llava_next"
    assert llm.grid == (POOLED, POOLED) and llm.tokens_per_frame == PER_FRAME
    # an LLaVA-OneVision-layout checkpoint (one_token) keeps the LLaVA-OneVision adapter
    src = write_llava_next(tmp_path, **CASES["7b"])
    other = backbones.llava_next.ensure_converted(str(src), cache_dir=tmp_path / "cache")
    assert video_layout(other) is None
    plain = backbones.load(other)
    assert type(plain).__name__ == "LlavaOnevisionAdapter" and plain.tokens_per_frame == 9


def test_full_model_matches_llava_next(video_checkpoint, llm):
    src, _ = video_checkpoint
    sd = load_file(src / "model.safetensors")
    frames = _frames()
    with torch.no_grad():
        tokens = oracle_frame_tokens(sd, _pixels(llm, frames))
    prepared = llm.prepare(frames)
    assert prepared.visual_tokens == prepared.visual_tokens_fed == FRAMES * PER_FRAME  # 12
    torch.testing.assert_close(
        prepared.visual, tokens.reshape(-1, HIDDEN), atol=1e-5, rtol=0
    )
    # the visual sequence: 3 frames x 2 rows x (2 tokens + newline) = 18 positions
    embeds, start = llm.prompt_embeddings(prepared, QUESTION)
    before, after = _prompt_ids(llm, QUESTION)
    sequence = oracle_grid_sequence(tokens, sd["model.image_newline"])
    assert sequence.shape[0] == FRAMES * POOLED * ROW == 18
    assert start == len(before) and embeds.shape[1] == len(before) + 18 + len(after)
    torch.testing.assert_close(embeds[0, start : start + 18], sequence, atol=1e-5, rtol=0)
    newline_slots = [start + f * 2 * ROW + r * ROW + POOLED for f in range(3) for r in range(2)]
    for slot in newline_slots:
        torch.testing.assert_close(embeds[0, slot], sd["model.image_newline"], atol=0, rtol=0)
    # logits: LLaVA-NeXT's sequence through Qwen2 written from its description
    embed = sd["model.embed_tokens.weight"]
    with torch.no_grad():
        ref = reference_logits(sd, torch.cat([embed[before], sequence, embed[after]]))
    pre = llm.prefill(prepared, QUESTION)
    assert ref.std() > 0.2
    torch.testing.assert_close(pre.logits, ref[-1, : llm.vocab_size], atol=1e-5, rtol=0)
    assert pre.length == len(before) + 18 + len(after)
    # both position policies agree on the full model
    original = backbones.load(video_checkpoint[1], video_newline=True, positions="original")
    torch.testing.assert_close(original.prefill(prepared, QUESTION).logits, pre.logits)
    text, acc = llm.generate(prepared, QUESTION, max_new_tokens=3)
    assert acc.visual_tokens == 12 and acc.prompt_tokens == pre.length
    assert acc.text_tokens == len(before) + 6 + len(after)  # the 6 newlines count as text


class _Fixed:
    """A selection compressor keeping fixed flat indices, emitted in the given (unsorted)
    order: the hand-counted case."""

    name, stage, signals = "fixed", "pre_llm", ()

    def __init__(self, kept):
        self.kept = torch.tensor(kept)
        self.params = {"retention": 0.5}

    def __call__(self, video, grid=None):
        flat = video.reshape(-1, video.shape[-1])
        assignment = torch.full((flat.shape[0],), -1, dtype=torch.long)
        assignment[self.kept] = torch.arange(len(self.kept))
        return compressors.Compressed(
            tokens=flat[self.kept], assignment=assignment, num_input=flat.shape[0], kept=self.kept
        )


def test_compressed_tokens_keep_their_rows_newlines(video_checkpoint, llm):
    """Retention 0.5 of N_v = 12: M = 6. Kept {0, 1, 2} in frame 0 (rows 0 and 1), none in
    frame 1, {8, 9, 11} in frame 2 (rows 0 and 1): 4 newlines, so 6 + 4 = 10 positions."""
    frames = _frames()
    compressor = _Fixed([9, 0, 11, 2, 1, 8])
    prepared = llm.prepare(frames, compressor)
    full = llm.prepare(frames).visual
    assert prepared.visual_tokens_fed == 6 == compressors.budget(0.5, 12)
    assert prepared.source_index.tolist() == [0, 1, 2, 8, 9, 11]  # original order
    torch.testing.assert_close(prepared.visual, full[[0, 1, 2, 8, 9, 11]])
    embeds, start = llm.prompt_embeddings(prepared, QUESTION)
    before, after = _prompt_ids(llm, QUESTION)
    assert embeds.shape[1] == len(before) + 10 + len(after)
    newline = llm.model.model.image_newline
    expected = [full[0], full[1], newline, full[2], newline,
                full[8], full[9], newline, full[11], newline]
    torch.testing.assert_close(embeds[0, start : start + 10], torch.stack(expected))
    # original positions, full layout (6 a frame): 0, 1, [2], 3, [5] | 12, 13, [14], 16, [17]
    original = backbones.load(video_checkpoint[1], video_newline=True, positions="original")
    positions, offset = original.position_ids(prepared, start, embeds.shape[1])
    visual = (positions[0, start : start + 10] - start).tolist()
    assert visual == [0, 1, 2, 3, 5, 12, 13, 14, 16, 17]
    assert offset == 18 - 10 and positions[0, start + 10] == start + 18
    contiguous, offset = llm.position_ids(prepared, start, embeds.shape[1])
    assert offset == 0 and contiguous[0].tolist() == list(range(embeds.shape[1]))
    _, acc = llm.generate(prepared, QUESTION, max_new_tokens=2)
    assert acc.visual_tokens_fed == 6 and acc.prompt_tokens == len(before) + 10 + len(after)


@pytest.mark.parametrize("method", ["uniform", "scc", "pllava"])
def test_registered_compressors_at_half(llm, method):
    """uniform at 0.5 keeps tokens 1 and 3 of every frame (one in each row): M = 6 plus one
    newline per frame row, 6: 12 positions. Any method: M tokens, one newline per (frame, row)
    holding a fed token's source."""
    prepared = llm.prepare(_frames(), compressors.build(method, retention=0.5))
    embeds, start = llm.prompt_embeddings(prepared, QUESTION)
    before, after = _prompt_ids(llm, QUESTION)
    rows = len(set((prepared.source_index // POOLED).tolist()))
    assert embeds.shape[1] == len(before) + prepared.visual_tokens_fed + rows + len(after)
    if method == "uniform":
        assert prepared.source_index.tolist() == [1, 3, 5, 7, 9, 11] and rows == 6
    assert prepared.visual_tokens_fed == compressors.budget(0.5, 12) or method == "pllava"


def test_fastv_drops_frame_tokens_only(llm):
    prepared = llm.prepare(_frames(), compressors.build("fastv", retention=0.5, layer=1))
    pre = llm.prefill(prepared, QUESTION)
    before, after = _prompt_ids(llm, QUESTION)
    full = len(before) + 18 + len(after)
    assert pre.tokens_per_layer == [full, full - 6]  # M = 6 of 12 frame tokens kept
    assert pre.attention.shape == (12,) and pre.kept.shape == (6,)
    # the attention row is over the frame tokens, not the newlines: recompute it at layer 0
    embeds, start = llm.prompt_embeddings(prepared, QUESTION)
    positions, _ = llm.position_ids(prepared, start, embeds.shape[1])
    rotary = llm._lm.rotary_emb(embeds, positions)
    row = llm.last_token_attention(0, embeds, rotary)
    frame_slots = [start + f * 6 + r * 3 + c for f in range(3) for r in range(2) for c in range(2)]
    torch.testing.assert_close(pre.attention, row[frame_slots])
    _, acc = llm.generate(prepared, QUESTION, max_new_tokens=2)
    assert acc.achieved_retention == 0.5


@pytest.mark.parametrize(("layer_k", "retention"), [(1, 0.5), (1, 0.25)])
def test_fastv_dropping_equals_masking(llm, layer_k, retention):
    """FastV by dropping frame tokens equals keeping every row (newlines included) and masking
    the dropped frame tokens out of the keys of layers >= K, positions unchanged."""
    prepared = llm.prepare(_frames(), compressors.build("fastv", retention=retention,
                                                        layer=layer_k))
    pre = llm.prefill(prepared, QUESTION, cache=False)
    embeds, start = llm.prompt_embeddings(prepared, QUESTION)
    positions, _ = llm.position_ids(prepared, start, embeds.shape[1])
    lm = llm.model.model.language_model
    rotary = lm.rotary_emb(embeds, positions)
    frame_slots = torch.tensor([start + f * 6 + r * 3 + c for f in range(3) for r in range(2)
                                for c in range(2)])
    length = embeds.shape[1]
    causal = torch.full((length, length), float("-inf")).triu(1)
    dropped = torch.ones(len(frame_slots), dtype=torch.bool)
    dropped[pre.kept] = False
    pruned = causal.clone()
    pruned[:, frame_slots[dropped]] = float("-inf")
    hidden = embeds
    with torch.inference_mode():
        for index, layer in enumerate(lm.layers):
            mask = causal if index < layer_k else pruned
            hidden = layer(hidden, attention_mask=mask[None, None], position_embeddings=rotary)
        oracle = llm.model.lm_head(lm.norm(hidden[:, -1])).float()[0, : llm.vocab_size]
    torch.testing.assert_close(pre.logits, oracle, atol=1e-5, rtol=1e-5)


def test_grid_layout_by_hand():
    layout = grid_layout(torch.tensor([0, 1, 2, 8, 9, 11]), (2, 2), 3)
    assert layout.token_offset.tolist() == [0, 1, 3, 5, 6, 8]
    assert layout.newline_offset.tolist() == [2, 4, 7, 9]
    assert layout.token_full.tolist() == [0, 1, 3, 12, 13, 16]
    assert layout.newline_full.tolist() == [2, 5, 14, 17]
    assert (layout.length, layout.full_length) == (10, 18)
    # LLaVA-Video's geometry: 64 frames of 13x13, all kept -> 64 x 13 x 14 = 11,648 positions
    full = grid_layout(torch.arange(64 * 169), (13, 13), 64)
    assert full.length == full.full_length == 11648 and full.newline_offset.numel() == 64 * 13
    with pytest.raises(ValueError, match="original order"):
        grid_layout(torch.tensor([3, 1]), (2, 2), 1)


def test_so400m_geometry_169_a_frame():
    """27x27 SigLIP patches: average pooling at stride 2 floors to 13x13 = 169 (bilinear: 196)."""
    x = torch.zeros(2, 27, 27, 1)
    holder = type("H", (), {"layout": LLAVA_VID, "grid": (13, 13), "tokens_per_frame": 169})()
    assert LlavaVideoAdapter._pool(holder, x).shape == (2, 169, 1)


def test_flat_option_and_config(video_checkpoint):
    flat = backbones.load(video_checkpoint[1], video_newline=False)
    prepared = flat.prepare(_frames())
    embeds, start = flat.prompt_embeddings(prepared, QUESTION)
    before, after = _prompt_ids(flat, QUESTION)
    assert embeds.shape[1] == len(before) + 12 + len(after)
    from omegaconf import OmegaConf

    root = Path(__file__).resolve().parents[1]
    cfg = OmegaConf.load(root / "configs" / "model" / "llava_video_7b.yaml")
    assert cfg.pretrained == "lmms-lab/LLaVA-Video-7B-Qwen2" and cfg.max_frames_num == 64
    assert (cfg.dtype, cfg.preprocess, cfg.video_newline) == ("float16", "llava_next", True)
    assert dict(cfg.llm) == {"layers": 28, "hidden": 3584, "ffn": 18944}


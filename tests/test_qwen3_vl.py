"""backbones.qwen3_vl: Qwen3-VL's timestamps, DeepStack and M-RoPE under compression.

Oracles: the unmodified transformers `Qwen3VLForConditionalGeneration` on the same input ids
and pixel values (full model), and transformers' own `Qwen3VLTextModel` (its
`_deepstack_process` and rotary) fed, for a compressed video, the model's own DeepStack
features taken at the kept tokens' indices and the model's own `get_rope_index` ids of the full
sequence taken at the kept rows: what "pruned in lockstep" and `positions=original` mean.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import backbones
import compressors
from backbones.qwen3_vl import Qwen3VLAdapter, timestamps

PROMPT = "What happens in the video? Answer briefly."
FRAMES = 4


@pytest.fixture(scope="module")
def llm(tiny_qwen3) -> Qwen3VLAdapter:
    return backbones.load(tiny_qwen3)


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (FRAMES, 56, 56, 3), dtype=np.uint8)


def _model_features(llm, frames):
    inputs = llm.processor_inputs(frames)
    with torch.no_grad():
        out = llm.model.model.get_video_features(
            pixel_values_videos=inputs["pixel_values_videos"],
            video_grid_thw=inputs["video_grid_thw"], return_dict=True)
    return inputs, out.pooler_output[0], [f[0] for f in out.deepstack_features]


def test_load_dispatches_and_the_prompt_has_one_timestamped_block_per_patch(llm, frames):
    assert type(llm) is Qwen3VLAdapter and llm.positions == "original"
    assert llm.deepstack_layers == 2
    prepared = llm.prepare(frames)
    ids, _ = llm.full_sequence(prepared, PROMPT)
    text = llm.tokenizer.decode(ids)
    h, w = prepared.grid
    pads = "<|video_pad|>" * (h * w)
    # the original Qwen3-VL processor's blocks: (0/24 + 1/24) / 2 s and (2/24 + 3/24) / 2 s
    stamps = llm.processor._calculate_timestamps(list(range(FRAMES)), 24, 2)  # its own rule
    assert timestamps(FRAMES) == pytest.approx(stamps)
    assert stamps == pytest.approx([1 / 48, 5 / 48])
    assert text == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
        f"<0.0 seconds><|vision_start|>{pads}<|vision_end|>"
        f"<0.1 seconds><|vision_start|>{pads}<|vision_end|>"
        f"{PROMPT}<|im_end|>\n<|im_start|>assistant\n"
    )


def test_full_model_equals_transformers(llm, frames):
    prepared = llm.prepare(frames)
    ids, _ = llm.full_sequence(prepared, PROMPT)
    inputs = llm.processor_inputs(frames)
    with torch.no_grad():
        types = (ids == llm._video_id)[None].int() * 2
        out = llm.model(input_ids=ids[None], mm_token_type_ids=types, **inputs)
    ours = llm.prefill(prepared, PROMPT, cache=False).logits
    torch.testing.assert_close(ours, out.logits[0, -1, : llm.vocab_size].float(),
                               atol=1e-5, rtol=1e-5)


def test_greedy_with_cache_equals_transformers_generate(llm, frames):
    prepared = llm.prepare(frames)
    ids, _ = llm.full_sequence(prepared, PROMPT)
    inputs = llm.processor_inputs(frames)
    types = (ids == llm._video_id)[None].int() * 2
    with torch.no_grad():
        out = llm.model.generate(input_ids=ids[None], mm_token_type_ids=types, **inputs,
                                 max_new_tokens=5, do_sample=False, min_new_tokens=5)
    expected = out[0, ids.numel():].tolist()
    pre = llm.prefill(prepared, PROMPT)
    tokens = [int(pre.logits.argmax())]
    for _ in range(4):  # decoding continues from the full sequence's next id (rope delta)
        step = llm.step(tokens[-1], pre.length + len(tokens) - 1, pre.cache)
        tokens.append(int(step.argmax()))
    assert tokens == expected


@pytest.mark.parametrize("name", ["random", "l2norm", "dycoke"])
@pytest.mark.parametrize("retention", [0.5, 0.75])
def test_deepstack_and_positions_follow_the_kept_tokens(llm, frames, name, retention):
    """A selection at `retention`: our prefill equals transformers' text model fed the kept
    tokens, their own DeepStack features and their full-sequence M-RoPE ids."""
    if name == "dycoke" and retention < compressors.dycoke.minimum_retention(FRAMES // 2):
        pytest.skip("below DyCoke's reachable minimum for 2 temporal patches")
    compressor = compressors.build(name, retention=retention)
    prepared = llm.prepare(frames, compressor)
    inputs, tokens, deep = _model_features(llm, frames)
    kept = compressor(tokens.reshape(prepared.frames, -1, tokens.shape[-1]),
                      grid=prepared.grid).kept
    assert kept is not None and torch.equal(prepared.source_index, kept)
    ids, full = llm.full_sequence(prepared, PROMPT)
    pads = (ids == llm._video_id).nonzero().flatten()
    order = torch.sort(kept).values  # tokens sit in their frames in original order
    rows = torch.sort(torch.cat([(ids != llm._video_id).nonzero().flatten(), pads[order]])).values
    embeds = llm.model.model.language_model.embed_tokens(ids[rows])
    visual = torch.isin(rows, pads)
    embeds[visual] = tokens[order]
    with torch.no_grad():
        out = llm.model.model.language_model(
            inputs_embeds=embeds[None], position_ids=full[:, rows][:, None],
            visual_pos_masks=visual[None], deepstack_visual_embeds=[f[order] for f in deep])
        reference = llm.model.lm_head(out.last_hidden_state[:, -1]).float()[0, : llm.vocab_size]
        plain = llm.model.model.language_model(  # DeepStack matters: without it, other logits
            inputs_embeds=embeds[None], position_ids=full[:, rows][:, None])
        without = llm.model.lm_head(plain.last_hidden_state[:, -1]).float()[0, : llm.vocab_size]
    ours = llm.prefill(prepared, PROMPT, cache=False).logits
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(ours, without, atol=1e-3)
    assert torch.equal(prepared.deepstack, torch.stack([f[kept] for f in deep]))


def test_contiguous_policy_numbers_the_compressed_sequence(tiny_qwen3, frames):
    llm = backbones.load(tiny_qwen3, positions="contiguous")
    prepared = llm.prepare(frames, compressors.build("random", retention=0.5))
    embeds, _, positions = llm.prompt_embeddings(prepared, PROMPT)
    assert torch.equal(positions, torch.arange(embeds.shape[1]).expand(3, -1))
    full = llm.prepare(frames)  # the full model keeps the model's own ids under any policy
    _, rows, positions = llm.prompt_embeddings(full, PROMPT)
    assert not torch.equal(positions[0], positions[1])


@pytest.mark.parametrize("retention", [0.5, 0.25])
def test_fastv_prunes_the_deepstack_rows_with_the_tokens(llm, frames, retention):
    prepared = llm.prepare(frames, compressors.build("fastv", retention=retention, layer=3))
    pre = llm.prefill(prepared, PROMPT)
    n_v = prepared.visual_tokens
    budget = compressors.budget(retention, n_v)
    text = pre.tokens_per_layer[0] - n_v
    assert pre.tokens_per_layer == [n_v + text] * 3 + [budget + text]
    assert pre.kept.numel() == budget
    token = int(pre.logits.argmax())
    assert torch.isfinite(llm.step(token, pre.length, pre.cache)).all()


@pytest.mark.parametrize(("layer_k", "retention"), [(1, 0.25), (3, 0.5)])
def test_fastv_dropping_equals_masking(llm, frames, layer_k, retention):
    """FastV by dropping equals keeping every row and masking the dropped visual tokens out of
    the keys of layers >= K, with the full sequence's M-RoPE ids and the DeepStack features
    added to every visual row after layers 0..L-1 (K = 1: pruned rows still get theirs)."""
    prepared = llm.prepare(frames, compressors.build("fastv", retention=retention, layer=layer_k))
    pre = llm.prefill(prepared, PROMPT, cache=False)
    _, tokens, deep = _model_features(llm, frames)
    ids, full = llm.full_sequence(prepared, PROMPT)
    pads = (ids == llm._video_id).nonzero().flatten()
    lm = llm.model.model.language_model
    embeds = lm.embed_tokens(ids)
    embeds[pads] = tokens
    length = embeds.shape[0]
    causal = torch.full((length, length), float("-inf")).triu(1)
    dropped = torch.ones(len(pads), dtype=torch.bool)
    dropped[pre.kept] = False
    pruned = causal.clone()
    pruned[:, pads[dropped]] = float("-inf")
    rotary = lm.rotary_emb(embeds[None], full[:, None])
    hidden = embeds[None]
    with torch.inference_mode():
        for index, layer in enumerate(lm.layers):
            mask = causal if index < layer_k else pruned
            hidden = layer(hidden, attention_mask=mask[None, None], position_embeddings=rotary)
            if index < len(deep):
                hidden = hidden.clone()
                hidden[0, pads] += deep[index]
        oracle = llm.model.lm_head(lm.norm(hidden[:, -1])).float()[0, : llm.vocab_size]
    torch.testing.assert_close(pre.logits, oracle, atol=1e-5, rtol=1e-5)
    assert (pre.logits - llm.prefill(llm.prepare(frames), PROMPT).logits).abs().max() > 1e-4

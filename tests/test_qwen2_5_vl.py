"""backbones.qwen2_5_vl: the Qwen2.5-VL adapter computes what the model computes, with M-RoPE
positions kept where compression drops tokens.

A tiny random checkpoint (`backbones.tiny.write_tiny_qwen2_5_vl`, written once per session)
loads through `backbones.load`. Oracles: the stock `Qwen2_5_VLForConditionalGeneration` forward
and `generate` on the processor's own inputs (chat template, expanded video pads,
pixel_values_videos, video_grid_thw, second_per_grid_ts), the model's own `get_rope_index`
sliced by hand, and a masking decoder loop written here (FastV as masking, positions kept).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import backbones
import compressors
from backbones.qwen2_5_vl import Qwen25VLAdapter, representatives

PROMPT = "What happens in the video? Answer briefly."
FRAMES = 4


@pytest.fixture(scope="module")
def ckpt(tiny_qwen) -> Path:
    return Path(tiny_qwen)


@pytest.fixture(scope="module")
def llm(ckpt) -> Qwen25VLAdapter:
    return backbones.load(str(ckpt))


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (FRAMES, 56, 56, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def inputs(llm, frames) -> dict:
    """The processor's own inputs for lmms-eval qwen2_5_vl's message (system, video, text)."""
    message = [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": [{"type": "video"}, {"type": "text", "text": PROMPT}]},
    ]
    text = llm.processor.apply_chat_template(message, tokenize=False, add_generation_prompt=True)
    assert text == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
        f"<|vision_start|><|video_pad|><|vision_end|>{PROMPT}<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    return dict(llm.processor(text=[text], videos=[frames], return_tensors="pt"))


def _positions(llm, inputs) -> torch.Tensor:
    """[3, S] M-RoPE ids of the full sequence from the model's own get_rope_index."""
    keys = ("input_ids", "mm_token_type_ids", "video_grid_thw", "second_per_grid_ts")
    ids, types, grid, seconds = (inputs[k] for k in keys)
    positions, _ = llm.model.model.get_rope_index(
        ids, types, video_grid_thw=grid, second_per_grid_ts=seconds
    )
    return positions[:, 0]


def _masked_logits(llm, embeds, positions, start, n_v, kept, layer_k) -> torch.Tensor:
    """FastV as masking: every position kept, the dropped visual tokens masked out of the keys
    of layers >= K (a 4D additive mask), the original M-RoPE ids throughout."""
    lm = llm.model.model.language_model
    length = embeds.shape[1]
    rotary = lm.rotary_emb(embeds, positions[:, None])
    causal = torch.full((length, length), float("-inf")).triu(1)
    dropped = torch.ones(n_v, dtype=torch.bool)
    dropped[kept] = False
    pruned = causal.clone()
    pruned[:, start + dropped.nonzero().flatten()] = float("-inf")
    hidden = embeds
    with torch.inference_mode():
        for index, layer in enumerate(lm.layers):
            mask = causal if index < layer_k else pruned
            hidden = layer(hidden, attention_mask=mask[None, None], position_embeddings=rotary)
        return llm.model.lm_head(lm.norm(hidden[:, -1])).float()[0]


# ------------------------------------------------------------------------------ tests
def test_load_dispatches_by_model_type(ckpt, tiny, tmp_path):
    llm = backbones.load(str(ckpt))
    assert type(llm) is Qwen25VLAdapter and llm.num_layers == 4 and llm.hidden_size == 64
    llava = backbones.load(tiny)
    assert type(llava).__name__ == "LlavaOnevisionAdapter"
    with pytest.raises(OSError, match="cannot load"):
        backbones.load(str(tmp_path / "no-such-checkpoint"))


def test_encode_presents_temporal_patches_on_the_merged_grid(llm, frames, inputs):
    tokens, importance = llm.encode(frames, importance=True)
    t, h, w = (int(x) for x in inputs["video_grid_thw"][0])
    assert t == FRAMES // 2 and tokens.shape == (t, h // 2, w // 2, llm.hidden_size)
    assert importance.shape == (t, h * w // 4) and torch.isfinite(importance).all()
    # odd T: the processor pads by repeating the last frame, T' = ceil(T / 2)
    odd, _ = llm.encode(frames[:3])
    assert odd.shape[0] == 2
    prepared = llm.prepare(frames)
    assert prepared.grid == (h // 2, w // 2) and prepared.frames == t
    assert prepared.visual_tokens == (inputs["input_ids"] == llm.model.config.video_token_id).sum()


@pytest.mark.parametrize("name", [None, "none"])
def test_full_model_equals_transformers(llm, inputs, frames, name):
    compressor = None if name is None else compressors.build("none", retention=1.0)
    prepared = llm.prepare(frames, compressor)
    pre = llm.prefill(prepared, PROMPT)
    assert pre.length == inputs["input_ids"].shape[1]
    with torch.inference_mode():
        stock = llm.model(**inputs).logits[0, -1].float()[: llm.vocab_size]
    torch.testing.assert_close(pre.logits, stock, atol=1e-5, rtol=1e-5)
    # positions: the model's own get_rope_index on the processor's inputs
    _, _, positions = llm.prompt_embeddings(prepared, PROMPT)
    assert torch.equal(positions, _positions(llm, inputs))


def test_greedy_with_cache_equals_transformers_generate(llm, inputs, frames):
    steps = 6
    text, acc = llm.generate(llm.prepare(frames), PROMPT, max_new_tokens=steps)
    with torch.inference_mode():
        out = llm.model.generate(**inputs, max_new_tokens=steps, do_sample=False)
    tokens = out[0, inputs["input_ids"].shape[1] :].tolist()
    tokens = tokens[: next((i for i, t in enumerate(tokens) if t in llm._stop_ids), len(tokens))]
    assert len(tokens) >= 3, "the tiny model stopped too early for a meaningful check"
    assert acc.generated_tokens == len(tokens)
    assert text == llm.tokenizer.decode(tokens, skip_special_tokens=True)


@pytest.mark.parametrize("name", ["uniform", "random", "l2norm"])
def test_selection_keeps_original_positions(llm, inputs, frames, name):
    prepared = llm.prepare(frames, compressors.build(name, retention=0.3))
    embeds, start, positions = llm.prompt_embeddings(prepared, PROMPT)
    full = _positions(llm, inputs)
    n_v = prepared.visual_tokens
    kept = prepared.source_index
    assert kept.numel() == prepared.visual_tokens_fed == compressors.budget(0.3, n_v)
    expected = torch.cat(
        [full[:, :start], full[:, start + kept], full[:, start + n_v :]], dim=1
    )
    assert torch.equal(positions, expected)
    # the kept visual tokens are the model's own features at those indices
    tokens, _ = llm.encode(frames)
    torch.testing.assert_close(prepared.visual, tokens.reshape(n_v, -1)[kept])
    # decoding continues from the full sequence: the next id is max + 1 on every axis
    pre = llm.prefill(prepared, PROMPT)
    assert pre.length + pre.cache.offset == int(full.max()) + 1


def test_merged_tokens_take_their_first_assigned_position():
    assignment = torch.tensor([1, 0, 1, -1, 2, 0])
    assert representatives(None, assignment, 4).tolist() == [1, 0, 4, 4]
    assert representatives(torch.tensor([3, 5]), assignment, 2).tolist() == [3, 5]


@pytest.mark.parametrize(("layer_k", "retention"), [(1, 0.25), (2, 0.5), (3, 0.1)])
def test_fastv_dropping_equals_masking(llm, frames, layer_k, retention):
    prepared = llm.prepare(frames, compressors.build("fastv", retention=retention, layer=layer_k))
    pre = llm.prefill(prepared, PROMPT)
    n_v = prepared.visual_tokens
    assert pre.kept.shape == (compressors.budget(retention, n_v),)
    embeds, start, positions = llm.prompt_embeddings(prepared, PROMPT)
    oracle = _masked_logits(llm, embeds, positions, start, n_v, pre.kept, layer_k)
    torch.testing.assert_close(pre.logits, oracle, atol=1e-5, rtol=1e-5)
    full = llm.prefill(llm.prepare(frames), PROMPT).logits
    assert (pre.logits - full).abs().max() > 1e-4
    assert [layer.get_seq_length() for layer in pre.cache.layers] == pre.tokens_per_layer


def test_fastv_cached_greedy_equals_recomputed(llm, frames):
    """Greedy through the pruned KV cache = the masking oracle recomputed at every step, the
    new tokens at the full sequence's next M-RoPE ids."""
    steps = 5
    prepared = llm.prepare(frames, compressors.build("fastv", retention=0.3, layer=2))
    text, acc = llm.generate(prepared, PROMPT, max_new_tokens=steps)
    pre = llm.prefill(prepared, PROMPT, cache=False)
    embeds, start, positions = llm.prompt_embeddings(prepared, PROMPT)
    tokens: list[int] = []
    logits = pre.logits
    for _ in range(steps):
        token = int(logits.argmax())
        if token in llm._stop_ids:
            break
        tokens.append(token)
        new = llm.model.get_input_embeddings()(torch.tensor([tokens]))
        nxt = int(positions.max()) + 1 + torch.arange(len(tokens))
        pos = torch.cat([positions, nxt.expand(3, -1)], dim=1)
        logits = _masked_logits(llm, torch.cat([embeds, new], dim=1), pos, start,
                                prepared.visual_tokens, pre.kept, 2)
    assert len(tokens) >= 3
    assert text == llm.tokenizer.decode(tokens, skip_special_tokens=True)


@pytest.mark.parametrize("name", compressors.budgeted())
def test_every_budgeted_compressor_feeds_its_budget(llm, frames, name):
    exact = {"budget_mode": "exact"} if "budget_mode" in compressors.defaults(name) else {}
    compressor = compressors.build(name, retention=0.5, **exact)
    prepared = llm.prepare(frames, compressor)
    text, acc = llm.generate(prepared, PROMPT, max_new_tokens=2)
    n_v = prepared.visual_tokens
    expected = compressor.expected_tokens(prepared.frames, prepared.grid)  # PLLaVA: its grid
    if name != "pllava":
        assert expected == compressors.budget(0.5, n_v)
    if name == "fastv":
        assert acc.visual_tokens_fed == n_v
        assert acc.tokens_per_layer[-1] - acc.text_tokens == expected
    else:
        assert acc.visual_tokens_fed == expected == prepared.source_index.numel()
        assert acc.tokens_per_layer == [acc.prompt_tokens] * llm.num_layers
    assert acc.visual_tokens == n_v and acc.generated_tokens <= 2


def test_runner_sweeps_the_tiny_qwen_through_lmms_eval(tmp_path, monkeypatch):
    """`model=tiny_qwen2_5_vl` end to end: the runner writes the checkpoint, lmms-eval runs the
    synthetic task, and each record feeds the budget (FastV: all tokens at layer 0)."""
    from records.store import ResultsStore
    from runners.cli import command
    from synthetic.task import build_dataset

    build_dataset(tmp_path / "data" / "synthetic_video_qa", n=2, seed=0)
    monkeypatch.setenv("SCISSORBENCH_DATA", str(tmp_path / "data"))
    results = tmp_path / "runs"
    assert command(["-m", "model=tiny_qwen2_5_vl", "compressor=scc,fastv", "retention=0.5",
                    "limit=2", f"results_dir={results}"]) == 0
    records = {r["settings"]["compressor"]["name"]: r for r in ResultsStore(results).records()}
    assert set(records) == {"scc", "fastv"}
    for name, record in records.items():
        assert record["status"] == "finished" and record["samples"]["failed"] == 0
        visual = record["tokens"]["visual_mean"]
        fed = visual if name == "fastv" else compressors.budget(0.5, int(visual))
        assert record["tokens"]["fed_mean"] == fed and record["retention"]["mean"] == 0.5

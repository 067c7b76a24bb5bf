"""backbones: the LLaVA-OneVision adapter computes what the model computes, pruned where asked.

A tiny random checkpoint (backbones.tiny, written once per module) loads through the same
`backbones.load` as a hub checkpoint. Oracles are transformers' own code paths: the stock
`LlavaOnevisionForConditionalGeneration` forward (processor-expanded placeholders and
`pixel_values_videos`), eager attention with `output_attentions=True`, and plain decoder loops
written here (FastV as masking instead of dropping, greedy decoding without a cache).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import backbones
import compressors
from backbones.llava_onevision import LlavaOnevisionAdapter
from backbones.tiny import write_tiny_checkpoint

PROMPT = "What happens in the video? Answer briefly."
QWEN2 = (
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n<video>\n"
    "{prompt}<|im_end|>\n<|im_start|>assistant\n"
)
FRAMES = 4


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return write_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "ckpt", seed=0)


@pytest.fixture(scope="module")
def llm(ckpt, tiny_siglip_head) -> LlavaOnevisionAdapter:
    return backbones.load(str(ckpt), vision_head=tiny_siglip_head)  # fastvid's SigLIP head


@pytest.fixture(scope="module")
def llm_newline(llm) -> LlavaOnevisionAdapter:
    """The same weights, transformers' layout (one newline embedding after the video)."""
    return LlavaOnevisionAdapter(llm.model, llm.processor, video_newline=True,
                                 vision_head=llm.vision_head)


@pytest.fixture(scope="module")
def eager(ckpt):
    from transformers import LlavaOnevisionForConditionalGeneration

    return LlavaOnevisionForConditionalGeneration.from_pretrained(
        ckpt, attn_implementation="eager"
    ).eval()


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (FRAMES, 50, 70, 3), dtype=np.uint8)


def _build(name: str, retention: float, **params) -> compressors.Compressor | None:
    if name != "none" and "budget_mode" in compressors.defaults(name):
        params.setdefault("budget_mode", "exact")  # exactly the budget (official: its own count)
    return None if name == "none" else compressors.build(name, retention=retention, **params)


# --------------------------------------------------------------------------- oracles
def _hf_logits(llm, frames) -> torch.Tensor:
    """Stock transformers: processor-expanded <video> tokens + pixel_values_videos."""
    inputs = llm.processor(text=[QWEN2.format(prompt=PROMPT)], videos=[frames], return_tensors="pt")
    assert (inputs["input_ids"] == llm.model.config.video_token_id).sum() == (
        FRAMES * llm.tokens_per_frame + 1
    )
    with torch.inference_mode():
        return llm.model(**inputs).logits[0, -1].float()


def _hf_flat_logits(llm, frames) -> torch.Tensor:
    """transformers' language model on its own video features spliced without the newline."""
    inputs = llm.processor(text=[QWEN2.format(prompt=PROMPT)], videos=[frames], return_tensors="pt")
    ids = inputs["input_ids"][0]
    video = ids == llm.model.config.video_token_id
    keep = torch.ones_like(video)
    keep[video.nonzero().max()] = False  # drop the newline slot
    ids, video = ids[keep], video[keep]
    with torch.inference_mode():
        inner = llm.model.model
        features = inner.get_video_features(
            pixel_values_videos=inputs["pixel_values_videos"], return_dict=True
        ).pooler_output[0, :-1]
        embeds = inner.get_input_embeddings()(ids)
        embeds[video] = features
        hidden = inner.language_model(inputs_embeds=embeds[None]).last_hidden_state
        return llm.model.lm_head(hidden[:, -1]).float()[0]


def _masked_logits(llm, embeds, start, n_v, kept, layer_k) -> torch.Tensor:
    """FastV as masking: every position kept, the dropped visual tokens masked out of the keys
    of layers >= K (a 4D additive mask), original position ids throughout."""
    lm = llm.model.model.language_model
    length = embeds.shape[1]
    positions = torch.arange(length)[None]
    rotary = lm.rotary_emb(embeds, positions)
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
def test_tiny_checkpoint_loads_offline(ckpt):
    size = sum(f.stat().st_size for f in Path(ckpt).iterdir())
    assert size < 5 * 2**20
    code = (
        "import sys, backbones\n"
        "llm = backbones.load(sys.argv[1])\n"
        "print(type(llm).__name__, llm.tokens_per_frame, llm.grid, llm.num_layers)\n"
        "try:\n"
        "    backbones.load('no-such-org/no-such-model')\n"
        "except OSError as err:\n"
        "    print('OSError', 'cannot load' in str(err))\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-c", code, str(ckpt)], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.strip().splitlines()
    assert lines[-2] == "LlavaOnevisionAdapter 9 (3, 3) 4"
    assert lines[-1] == "OSError True"


def test_bad_dtype_fails_before_loading():
    with pytest.raises(ValueError, match="dtype"):
        backbones.load("/nonexistent", dtype="float8")


@pytest.mark.parametrize("name", ["none", *compressors.budgeted()])
def test_full_retention_equals_transformers(llm, llm_newline, frames, name):
    """Retention 1.0 through any method is the full model: transformers' own forward
    (newline layout), and transformers' language model on the flat layout."""
    compressor = _build(name, 1.0)
    prepared = llm_newline.prepare(frames, compressor)
    assert prepared.visual_tokens_fed == prepared.visual_tokens == FRAMES * 9
    ours = llm_newline.prefill(prepared, PROMPT).logits
    flat = llm.prefill(llm.prepare(frames, compressor), PROMPT).logits
    if name in ("visionzip", "dycoke"):
        # VisionZip orders each frame's tokens dominant-first, then contextual, and DyCoke a
        # pruned frame's tokens by ascending similarity (as their official code), so at r = 1
        # they feed the same tokens permuted within each frame: same multiset, other positions.
        full = llm.prepare(frames, None).visual.view(FRAMES, 9, -1)
        fed = prepared.visual.view(FRAMES, 9, -1)
        for f in range(FRAMES):
            assert torch.allclose(fed[f].sort(dim=0).values, full[f].sort(dim=0).values)
        return
    torch.testing.assert_close(ours, _hf_logits(llm, frames), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(flat, _hf_flat_logits(llm, frames), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(("layer_k", "retention"), [(1, 0.25), (2, 0.5), (3, 0.1), (3, 0.6)])
def test_fastv_dropping_equals_masking(llm, frames, layer_k, retention):
    prepared = llm.prepare(frames, compressors.build("fastv", retention=retention, layer=layer_k))
    pre = llm.prefill(prepared, PROMPT)
    n_v = prepared.visual_tokens
    budget = compressors.budget(retention, n_v)
    assert pre.kept.shape == (budget,) and bool((pre.kept.diff() > 0).all())
    embeds, start = llm.prompt_embeddings(prepared, PROMPT)
    oracle = _masked_logits(llm, embeds, start, n_v, pre.kept, layer_k)
    torch.testing.assert_close(pre.logits, oracle, atol=1e-5, rtol=1e-5)
    # and it is not the full model: pruning changed the answer distribution
    full = llm.prefill(llm.prepare(frames, None), PROMPT).logits
    assert (pre.logits - full).abs().max() > 1e-4


@pytest.mark.parametrize("layer_k", [1, 3])
def test_fastv_attention_row_equals_eager(llm, eager, frames, layer_k):
    assert llm.model.config._attn_implementation == "sdpa"  # not switched to eager
    prepared = llm.prepare(frames, compressors.build("fastv", retention=0.5, layer=layer_k))
    pre = llm.prefill(prepared, PROMPT)
    embeds, start = llm.prompt_embeddings(prepared, PROMPT)
    with torch.inference_mode():
        out = eager.model.language_model(inputs_embeds=embeds, output_attentions=True)
    row = out.attentions[layer_k - 1][0, :, -1].mean(dim=0)  # [S], averaged over heads
    torch.testing.assert_close(pre.attention, row[start : start + prepared.visual_tokens])
    assert torch.equal(pre.kept, compressors.fastv.keep_indices(pre.attention, pre.kept.numel()))
    assert pre.attention.std() > 1e-3  # far from uniform: the ranking means something


@pytest.mark.parametrize("name", ["none", "fastv", "scc"])
def test_cached_greedy_equals_recomputed(llm, frames, name):
    """Greedy tokens through the KV cache = greedy tokens recomputing the whole pruned forward
    (no cache) at every step, with FastV's kept set chosen once at the prompt."""
    steps = 6
    prepared = llm.prepare(frames, _build(name, 0.5))
    text, acc = llm.generate(prepared, PROMPT, max_new_tokens=steps)

    pre = llm.prefill(prepared, PROMPT, cache=False)
    embeds, start = llm.prompt_embeddings(prepared, PROMPT)
    layer_k = prepared.in_llm["layer"] if prepared.in_llm else llm.num_layers
    kept = pre.kept if pre.kept is not None else torch.arange(prepared.visual_tokens)
    tokens: list[int] = []
    logits = pre.logits
    for _ in range(steps):
        token = int(logits.argmax())
        if token in llm._stop_ids:
            break
        tokens.append(token)
        new = llm.model.get_input_embeddings()(torch.tensor([tokens]))
        full = torch.cat([embeds, new], dim=1)
        logits = _masked_logits(llm, full, start, prepared.visual_tokens, kept, layer_k)
    assert len(tokens) >= 3, "the tiny model stopped too early for a meaningful check"
    assert acc.generated_tokens == len(tokens)
    assert text == llm.tokenizer.decode(tokens, skip_special_tokens=True)


def test_fastv_cache_holds_per_layer_lengths(llm, frames):
    prepared = llm.prepare(frames, compressors.build("fastv", retention=0.3, layer=2))
    pre = llm.prefill(prepared, PROMPT)
    lengths = [layer.get_seq_length() for layer in pre.cache.layers]
    assert lengths == pre.tokens_per_layer
    token = int(pre.logits.argmax())
    step = llm.step(token, pre.length, pre.cache)
    assert [layer.get_seq_length() for layer in pre.cache.layers] == [n + 1 for n in lengths]
    assert torch.isfinite(step).all()


@pytest.mark.parametrize("name", ["none", *compressors.budgeted()])
@pytest.mark.parametrize("retention", [0.1, 0.3])
def test_accounting(llm, frames, name, retention):
    compressor = _build(name, retention)
    if name == "dycoke" and retention < compressors.dycoke.minimum_retention(FRAMES):
        with pytest.raises(ValueError, match="minimum"):  # its anchor frames stay whole
            llm.prepare(frames, compressor)
        return
    prepared = llm.prepare(frames, compressor)
    text, acc = llm.generate(prepared, PROMPT, max_new_tokens=2)
    n_v = FRAMES * llm.tokens_per_frame
    budget = compressors.budget(retention, n_v)
    assert acc.visual_tokens == n_v
    assert len(acc.tokens_per_layer) == llm.num_layers
    assert set(acc.timings) == {"vision", "compress", "prefill", "decode"}
    assert acc.peak_memory_bytes > 0 and acc.generated_tokens <= 2
    text_tokens = acc.prompt_tokens - acc.visual_tokens_fed
    if name == "fastv":
        k = compressor.params.get("layer", 3)
        assert acc.visual_tokens_fed == n_v
        assert acc.tokens_per_layer == [n_v + text_tokens] * k + [budget + text_tokens] * (
            llm.num_layers - k
        )
        assert acc.achieved_retention == budget / n_v
        return
    fed = n_v if name == "none" else budget
    if name == "pllava":  # the largest pooling grid with at most M cells, by hand:
        # 4 frames of 3 x 3 tokens; M = 4 (r = 0.1) leaves 1 cell a frame: 1 x 1; M = 11 (r = 0.3)
        # leaves 2: 1 x 2 when the budget is filled, 1 x 1 when only square grids are allowed
        assert (FRAMES, llm.grid, budget) in ((4, (3, 3), 4), (4, (3, 3), 11))
        keep_aspect = {**compressors.defaults("pllava"), **compressor.params}["keep_aspect"]
        cells = 1 if budget == 4 or keep_aspect else 2
        fed = FRAMES * cells
    assert acc.visual_tokens_fed == fed == prepared.visual.shape[0]
    assert acc.tokens_per_layer == [acc.prompt_tokens] * llm.num_layers
    assert acc.achieved_retention == pytest.approx(fed / n_v)
    assert acc.achieved_retention == pytest.approx(prepared.info["achieved_retention"])


def test_loglikelihood_sums_the_continuation_log_probs(llm, frames):
    prepared = llm.prepare(frames, compressors.build("fastv", retention=0.5))
    encode = lambda text: llm.tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    a, b = encode("ab")
    pre = llm.prefill(prepared, PROMPT)
    second = llm.step(a, pre.length, pre.cache)  # the cache now holds the prompt and "a"
    expected = float(pre.logits.log_softmax(-1)[a] + second.log_softmax(-1)[b])
    logprob, is_greedy, acc = llm.loglikelihood(prepared, PROMPT, "ab")
    assert logprob == pytest.approx(expected, rel=1e-5)
    assert is_greedy == (int(pre.logits.argmax()) == a and int(second.argmax()) == b)
    assert acc.generated_tokens == 0 and acc.tokens_per_layer == pre.tokens_per_layer
    # the greedy token (when it is text that encodes back to itself) is greedy
    greedy = int(pre.logits.argmax())
    if encode(llm.tokenizer.decode([greedy])) == [greedy]:
        top, top_greedy, _ = llm.loglikelihood(prepared, PROMPT, llm.tokenizer.decode([greedy]))
        assert top_greedy and top == pytest.approx(float(pre.logits.log_softmax(-1).max()))


def test_visionzip_importance_equals_eager_siglip(llm, eager, frames):
    features, importance = llm.encode(frames, importance=True)
    assert features.shape == (FRAMES, llm.tokens_per_frame, llm.hidden_size)
    assert importance.shape == (FRAMES, llm.tokens_per_frame)
    assert importance.dtype == torch.float32 and torch.isfinite(importance).all()

    pixels = llm.processor.video_processor(videos=[frames], return_tensors="pt")
    pixels = pixels["pixel_values_videos"][0]  # [T, 3, S, S]
    with torch.inference_mode():
        out = eager.model.vision_tower(pixels, output_attentions=True)
    # vision_feature_layer = -1: the features are the last layer's output
    received = out.attentions[-1].mean(dim=1).mean(dim=1)  # [T, P]: heads, then queries
    side = int(received.shape[1] ** 0.5)
    grid = received.view(FRAMES, 1, side, side)
    pooled = F.interpolate(grid, size=[(side + 1) // 2] * 2, mode="bilinear")
    torch.testing.assert_close(importance, pooled.reshape(FRAMES, -1))
    # the features are the model's own, unchanged by capturing the attention map
    plain, none = llm.encode(frames)
    assert none is None and torch.equal(plain, features)


def test_visionzip_through_prepare(llm, frames):
    prepared = llm.prepare(frames, compressors.build("visionzip", retention=0.3))
    assert prepared.visual_tokens_fed == compressors.budget(0.3, FRAMES * 9)
    assert prepared.info["dominant"] + prepared.info["contextual"] == prepared.visual_tokens_fed


def test_retention_is_bound_or_checked(llm, frames):
    unbound = compressors.Compressor("uniform")  # as built by hand, without a budget
    prepared = llm.prepare(frames, unbound, 0.5)
    assert prepared.visual_tokens_fed == compressors.budget(0.5, FRAMES * 9)
    with pytest.raises(ValueError, match="disagrees"):
        llm.prepare(frames, compressors.build("uniform", retention=0.3), 0.5)


def test_bad_inputs_fail_clearly(llm, frames):
    with pytest.raises(ValueError, match="uint8"):
        llm.prepare(frames.astype(np.float32))
    with pytest.raises(ValueError, match="layer K=4"):
        llm.prepare(frames, compressors.build("fastv", retention=0.5, layer=4))


def test_prompt_is_the_qwen2_conversation(llm, frames):
    prepared = llm.prepare(frames, None)
    embeds, start = llm.prompt_embeddings(prepared, PROMPT)
    before, after = QWEN2.format(prompt=PROMPT).split("<video>")
    ids = llm.tokenizer(before, add_special_tokens=False)["input_ids"]
    assert start == len(ids)
    tail = llm.tokenizer(after, add_special_tokens=False)["input_ids"]
    assert embeds.shape[1] == len(ids) + prepared.visual_tokens + len(tail)
    # a prompt holding its own placeholder gets the video there
    own, start_own = llm.prompt_embeddings(prepared, "<image>\n" + PROMPT)
    torch.testing.assert_close(own, embeds)
    assert start_own == start


def test_until_cuts_the_answer(llm, frames):
    prepared = llm.prepare(frames, None)
    text, acc = llm.generate(prepared, PROMPT, max_new_tokens=6)
    assert len(text) >= 2
    stop = text[1]
    cut, acc_cut = llm.generate(prepared, PROMPT, max_new_tokens=6, until=[stop])
    assert cut == text[: text.index(stop)] and acc_cut.generated_tokens <= acc.generated_tokens


def test_cli_writes_the_tiny_model(tmp_path):
    from scissorbench.cli import main

    assert main(["tiny-model", str(tmp_path / "m"), "--seed", "1"]) == 0
    assert (tmp_path / "m" / "model.safetensors").is_file()
    assert isinstance(backbones.load(str(tmp_path / "m")), backbones.VideoLLM)

"""The decoder loop as the official evaluation runs it: causal under every attention kernel,
scores over the tokenizer's real vocabulary only.

Oracles: transformers' own language model forward (it builds its own causal mask), the same
adapter under SDPA, and log-softmax over the first len(tokenizer) logits computed by hand.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import backbones
import compressors
from backbones.llava_onevision import LlavaOnevisionAdapter
from backbones.tiny import write_tiny_checkpoint

PROMPT = "What happens in the video? Answer briefly."


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return str(write_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "ckpt", seed=0))


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    return np.random.default_rng(1).integers(0, 256, (4, 40, 56, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def sdpa(ckpt):
    return backbones.load(ckpt, attn_implementation="sdpa")


@pytest.fixture(scope="module")
def eager(ckpt):
    return backbones.load(ckpt, attn_implementation="eager")


def _stock_last_logits(llm, embeds: torch.Tensor) -> torch.Tensor:
    """transformers' Qwen2 model on the same input embeddings (its own mask), then lm_head."""
    with torch.inference_mode():
        hidden = llm.model.model.language_model(inputs_embeds=embeds).last_hidden_state
        return llm.model.lm_head(hidden[:, -1]).float()[0]


def test_eager_prefill_is_causal_like_the_stock_model_and_sdpa(sdpa, eager, frames):
    assert eager.model.config.text_config._attn_implementation == "eager"
    prepared = eager.prepare(frames)
    embeds, _ = eager.prompt_embeddings(prepared, PROMPT)
    ours = eager.prefill(prepared, PROMPT).logits
    torch.testing.assert_close(ours, _stock_last_logits(eager, embeds), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ours, sdpa.prefill(sdpa.prepare(frames), PROMPT).logits,
                               atol=1e-5, rtol=1e-5)


def test_eager_and_sdpa_agree_on_loglikelihood_generation_and_fastv(sdpa, eager, frames):
    for compressor in (None, compressors.build("fastv", retention=0.25, layer=1)):
        a, b = sdpa.prepare(frames, compressor), eager.prepare(frames, compressor)
        lp_a, greedy_a, acc_a = sdpa.loglikelihood(a, PROMPT, " a red square")
        lp_b, greedy_b, acc_b = eager.loglikelihood(b, PROMPT, " a red square")
        assert lp_a == pytest.approx(lp_b, abs=1e-4) and greedy_a == greedy_b
        assert acc_a.tokens_per_layer == acc_b.tokens_per_layer
        assert sdpa.generate(a, PROMPT, max_new_tokens=6)[0] == eager.generate(
            b, PROMPT, max_new_tokens=6)[0]


def _pad_head(llm: LlavaOnevisionAdapter, extra: int, winner: int) -> LlavaOnevisionAdapter:
    """The model with `extra` padded vocabulary rows (as a converted checkpoint keeps them),
    each 10x the row of the real `winner` token, so they outscore every real id."""
    head = llm.model.lm_head
    vocab, dim = head.weight.shape
    bigger = torch.nn.Linear(dim, vocab + extra, bias=False)
    with torch.no_grad():
        bigger.weight[:vocab] = head.weight
        bigger.weight[vocab:] = 10.0 * head.weight[winner]
    llm.model.lm_head = bigger
    return LlavaOnevisionAdapter(llm.model, llm.processor)


def test_padded_vocabulary_rows_never_win_nor_count(ckpt, sdpa, frames):
    vocab = len(sdpa.tokenizer)
    reference = sdpa.prefill(sdpa.prepare(frames), PROMPT).logits  # unpadded: the oracle
    winner = int(reference.argmax())
    assert reference[winner] > 0
    padded = _pad_head(backbones.load(ckpt), extra=64, winner=winner)
    prepared = padded.prepare(frames)
    embeds, _ = padded.prompt_embeddings(prepared, PROMPT)
    assert int(_stock_last_logits(padded, embeds).argmax()) >= vocab  # without the cut
    logits = padded.prefill(prepared, PROMPT).logits
    assert logits.shape == (vocab,)
    torch.testing.assert_close(logits, reference)
    assert padded.generate(prepared, PROMPT, max_new_tokens=4)[0] == sdpa.generate(
        sdpa.prepare(frames), PROMPT, max_new_tokens=4)[0]
    logprob, greedy, _ = padded.loglikelihood(prepared, PROMPT, " red")
    assert (logprob, greedy) == pytest.approx(
        sdpa.loglikelihood(sdpa.prepare(frames), PROMPT, " red")[:2], abs=1e-5)

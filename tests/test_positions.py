"""The position-id policy (`positions`, METHODS.md section 11) on every backbone, as a run setting.

"original": each fed visual token keeps its position in the full, uncompressed sequence (a merged
token its representative's), text keeps its full-sequence positions, decoding continues from the
full length. "contiguous": the compressed sequence numbered as if it were the whole prompt.
Defaults: LLaVA-OneVision contiguous (LLaVA-Scissor), Qwen2.5-VL original (FastVID & co).

Oracles: transformers' own language models run on the adapter's embeddings with explicit
`position_ids` built here from the compressor's own output (`kept`, `assignment`), recomputed
without a cache for greedy decoding; the runner's plan and the lmms-eval model for the setting.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import backbones
import compressors
from backbones.llava_onevision import LlavaOnevisionAdapter
from backbones.qwen2_5_vl import Qwen25VLAdapter

PROMPT = "What happens in the video? Answer briefly."
FRAMES = 4


@pytest.fixture(scope="module")
def ckpt(tiny) -> Path:
    return Path(tiny)


@pytest.fixture(scope="module")
def llava(ckpt) -> LlavaOnevisionAdapter:
    return backbones.load(str(ckpt))


@pytest.fixture(scope="module")
def llava_original(llava) -> LlavaOnevisionAdapter:
    return LlavaOnevisionAdapter(llava.model, llava.processor, positions="original")


@pytest.fixture(scope="module")
def qwen(tiny_qwen) -> Qwen25VLAdapter:
    return backbones.load(tiny_qwen)


@pytest.fixture(scope="module")
def qwen_contiguous(qwen) -> Qwen25VLAdapter:
    return Qwen25VLAdapter(qwen.model, qwen.processor, positions="contiguous")


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (FRAMES, 56, 56, 3), dtype=np.uint8)


# --------------------------------------------------------------------------- oracles
def _sources(llm, frames, compressor) -> torch.Tensor:
    """[M] input index whose position each output takes, from the compressor's own output on
    the model's features: `kept` for a selection, else the lowest input index assigned."""
    features, _ = llm.encode(frames)
    out = compressor(features.reshape(FRAMES, llm.tokens_per_frame, -1), grid=llm.grid)
    if out.kept is not None:
        return out.kept
    return torch.tensor([int((out.assignment == j).nonzero().min()) for j in range(out.num_output)])


def _lm_logits(llm, embeds, position_ids) -> torch.Tensor:
    """transformers' language model (no cache) with explicit position ids -> last logits."""
    with torch.inference_mode():
        hidden = llm.model.model.language_model(
            inputs_embeds=embeds, position_ids=position_ids
        ).last_hidden_state
        return llm.model.lm_head(hidden[:, -1]).float()[0, : llm.vocab_size]


def _greedy_recomputed(llm, embeds, positions, next_position, steps) -> list[int]:
    """Greedy tokens recomputing the whole forward at each step, new tokens at next_position,
    next_position + 1, ... (positions: [..., S] of the prompt; 1-D or 3-D M-RoPE)."""
    tokens: list[int] = []
    logits = _lm_logits(llm, embeds, positions)
    for _ in range(steps):
        token = int(logits.argmax())
        if token in llm._stop_ids:
            break
        tokens.append(token)
        new = llm.model.get_input_embeddings()(torch.tensor([tokens]))
        nxt = (next_position + torch.arange(len(tokens))).expand(*positions.shape[:-1], -1)
        logits = _lm_logits(llm, torch.cat([embeds, new], dim=1), torch.cat([positions, nxt], -1))
    return tokens


def _llava_full_positions(llava, prepared, sources, start) -> tuple[torch.Tensor, int]:
    """([1, S'] the full sequence's positions at the fed rows, full length) built by hand."""
    before, after = llava.split_prompt(PROMPT)
    n_before, n_after = len(llava.encode_text(before)), len(llava.encode_text(after))
    assert n_before == start
    n_v = prepared.visual_tokens
    full = torch.arange(n_before + n_v + n_after)
    rows = torch.cat([full[:start], full[start + sources], full[start + n_v :]])
    return rows[None], len(full)


# ------------------------------------------------------------------- LLaVA-OneVision
def test_defaults_follow_the_reference_implementations(llava, qwen):
    assert llava.positions == "contiguous" and qwen.positions == "original"


@pytest.mark.parametrize("name", ["uniform", "pllava"])
def test_llava_original_equals_the_language_model_at_full_sequence_positions(
    llava, llava_original, frames, name
):
    compressor = compressors.build(name, retention=0.3)
    prepared = llava_original.prepare(frames, compressor)
    sources = _sources(llava, frames, compressor)
    assert torch.equal(prepared.source_index, sources)
    pre = llava_original.prefill(prepared, PROMPT)
    embeds, start = llava_original.prompt_embeddings(prepared, PROMPT)
    positions, full_length = _llava_full_positions(llava, prepared, sources, start)
    torch.testing.assert_close(pre.logits, _lm_logits(llava, embeds, positions),
                               atol=1e-5, rtol=1e-5)
    assert pre.length == embeds.shape[1] and pre.length + pre.cache.offset == full_length
    # the policy matters: renumbered positions give other logits
    contiguous = llava.prefill(prepared, PROMPT).logits
    assert (pre.logits - contiguous).abs().max() > 1e-4


def test_llava_original_cached_greedy_continues_from_the_full_length(
    llava, llava_original, frames
):
    steps = 6
    compressor = compressors.build("uniform", retention=0.3)
    prepared = llava_original.prepare(frames, compressor)
    text, acc = llava_original.generate(prepared, PROMPT, max_new_tokens=steps)
    embeds, start = llava_original.prompt_embeddings(prepared, PROMPT)
    positions, full_length = _llava_full_positions(
        llava, prepared, _sources(llava, frames, compressor), start
    )
    tokens = _greedy_recomputed(llava, embeds, positions, full_length, steps)
    assert len(tokens) >= 3, "the tiny model stopped too early for a meaningful check"
    assert acc.generated_tokens == len(tokens) and acc.prompt_tokens == embeds.shape[1]
    assert text == llava.tokenizer.decode(tokens, skip_special_tokens=True)


def test_llava_contiguous_is_the_language_model_with_default_positions(llava, frames):
    steps = 6
    prepared = llava.prepare(frames, compressors.build("uniform", retention=0.3))
    pre = llava.prefill(prepared, PROMPT)
    embeds, _ = llava.prompt_embeddings(prepared, PROMPT)
    with torch.inference_mode():
        hidden = llava.model.model.language_model(inputs_embeds=embeds).last_hidden_state
        stock = llava.model.lm_head(hidden[:, -1]).float()[0, : llava.vocab_size]
    torch.testing.assert_close(pre.logits, stock, atol=1e-5, rtol=1e-5)
    assert pre.cache.offset == 0
    text, _ = llava.generate(prepared, PROMPT, max_new_tokens=steps)
    length = embeds.shape[1]
    tokens = _greedy_recomputed(llava, embeds, torch.arange(length)[None], length, steps)
    assert len(tokens) >= 3 and text == llava.tokenizer.decode(tokens, skip_special_tokens=True)


# ------------------------------------------------------------------------ Qwen2.5-VL
def test_qwen_contiguous_equals_the_text_model_with_renumbered_positions(
    qwen, qwen_contiguous, frames
):
    """Contiguous on Qwen2.5-VL: t = h = w = the running index of the compressed prompt (visual
    tokens numbered like text), decoding from S'; `get_rope_index`'s rule without a video."""
    steps = 5
    prepared = qwen_contiguous.prepare(frames, compressors.build("uniform", retention=0.3))
    pre = qwen_contiguous.prefill(prepared, PROMPT)
    embeds, start, _ = qwen_contiguous.prompt_embeddings(prepared, PROMPT)
    length = embeds.shape[1]
    renumbered = torch.arange(length).view(1, 1, -1).expand(3, 1, -1)  # [3, B, S']
    torch.testing.assert_close(pre.logits, _lm_logits(qwen, embeds, renumbered),
                               atol=1e-5, rtol=1e-5)
    assert pre.length + pre.cache.offset == length  # decoding continues from S'
    text, _ = qwen_contiguous.generate(prepared, PROMPT, max_new_tokens=steps)
    tokens = _greedy_recomputed(qwen, embeds, renumbered, length, steps)
    assert len(tokens) >= 3 and text == qwen.tokenizer.decode(tokens, skip_special_tokens=True)
    # the default (original) is another numbering, so other logits
    original = qwen.prefill(qwen.prepare(frames, compressors.build("uniform", retention=0.3)),
                            PROMPT)
    assert (pre.logits - original.logits).abs().max() > 1e-4


# ------------------------------------------------ where the policy does not apply
@pytest.mark.parametrize("backbone", ["llava", "qwen"])
@pytest.mark.parametrize("name", ["none", "fastv"])
def test_both_policies_agree_without_pre_llm_compression(request, frames, backbone, name):
    """Retention 1.0 (`none`) and FastV (in the LLM, original positions) are the same model
    under either policy, on each backbone."""
    default = request.getfixturevalue(backbone)
    policies = {
        default.positions: default,
        **{p: type(default)(default.model, default.processor, positions=p)
           for p in backbones.POSITIONS if p != default.positions},
    }
    compressor = (compressors.build("none", retention=1.0) if name == "none"
                  else compressors.build("fastv", retention=0.3, layer=2))
    logits = {p: llm.prefill(llm.prepare(frames, compressor), PROMPT).logits
              for p, llm in policies.items()}
    assert set(logits) == set(backbones.POSITIONS)
    torch.testing.assert_close(logits["original"], logits["contiguous"], atol=0, rtol=0)


def test_llava_selection_at_retention_one_agrees_too(llava, llava_original, frames):
    compressor = compressors.build("uniform", retention=1.0)
    one = llava.prefill(llava.prepare(frames, compressor), PROMPT).logits
    two = llava_original.prefill(llava_original.prepare(frames, compressor), PROMPT).logits
    torch.testing.assert_close(one, two, atol=0, rtol=0)


# ------------------------------------------------------- the setting, end to end
def test_bad_positions_fail_before_loading(tmp_path):
    from harness.lmms_model import ScissorBench

    with pytest.raises(ValueError, match=r"positions must be one of \('original', 'contiguous'"):
        backbones.load("/nonexistent", positions="shuffled")
    with pytest.raises(ValueError, match="positions must be one of"):
        ScissorBench(pretrained="/nonexistent/checkpoint", compressor="none", positions="1d")


def test_load_takes_the_policy(ckpt):
    assert backbones.load(str(ckpt), positions="original").positions == "original"


def _compose(*overrides: str):
    from hydra import compose, initialize_config_dir

    import runners.schema  # noqa: F401  (registers the structured configs)

    configs = Path(__file__).resolve().parents[1] / "configs"
    with initialize_config_dir(str(configs), version_base="1.3"):
        return compose("config", overrides=list(overrides))


def test_plan_checks_and_keys_the_policy():
    from runners.plan import ConfigError, plan

    versions = {"torch": "x", "git_commit": "y"}
    key = lambda *o: plan(_compose(*o), versions)[0].key  # noqa: E731
    keys = {key(f"model.positions={p}") for p in ("null", "original", "contiguous")}
    assert len(keys) == 3
    (run,) = plan(_compose("model.positions=original"), versions)
    assert run.settings["model"]["positions"] == "original"
    with pytest.raises(ConfigError, match="model.positions must be one of"):
        plan(_compose("model.positions=shuffled"), versions)


def test_identity_and_records_carry_the_resolved_policy(ckpt):
    from harness.lmms_model import ScissorBench

    default = ScissorBench(pretrained=str(ckpt), compressor="uniform", retention=0.5,
                           max_frames_num=FRAMES)
    original = ScissorBench(pretrained=str(ckpt), compressor="uniform", retention=0.5,
                            max_frames_num=FRAMES, positions="original")
    explicit = ScissorBench(pretrained=str(ckpt), compressor="uniform", retention=0.5,
                            max_frames_num=FRAMES, positions="contiguous")
    assert default.identity()["positions"] == "contiguous" and repr(default) == repr(explicit)
    assert original.identity()["positions"] == "original" and repr(original) != repr(default)
    record = original._record({"doc_id": 0, "task": "t", "split": "s"})
    assert record["positions"] == "original"


def test_run_record_resolves_the_policy(tmp_path, monkeypatch):
    from records.store import ResultsStore
    from runners.cli import command
    from synthetic.task import build_dataset

    build_dataset(tmp_path / "data" / "synthetic_video_qa", n=1, seed=0)
    monkeypatch.setenv("SCISSORBENCH_DATA", str(tmp_path / "data"))
    results = tmp_path / "runs"
    assert command(["model=tiny", "compressor=uniform", "retention=0.5", "limit=1",
                    "model.positions=original", f"results_dir={results}"]) == 0
    (record,) = ResultsStore(results).records()
    assert record["status"] == "finished"
    assert record["settings"]["model"]["positions"] == "original"
    assert record["resolved"]["positions"] == "original"

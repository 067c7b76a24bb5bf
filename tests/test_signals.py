"""FastVID's model signals (`frame_features`, `head_attention`) from every tiny backbone.

Oracles: on LLaVA-OneVision and LLaVA-Video, transformers' own `SiglipVisionModel` head
(`head(post_layernorm(x))`) for the pooled features and a plain-torch recomputation of its
`nn.MultiheadAttention` weights from the head's state dict, on the tower's hidden states read
from the tower's own `output_hidden_states`, pooled as the official `get_attn_2dPool`
(bilinear to 3x3 on the tiny OneVision, 2x2 average on the tiny LLaVA-Video). On Qwen2.5-VL,
the official pseudo-[CLS] formula recomputed on the last block's input put back in row-major
patch order FIRST (the adapter reorders its output instead). Then fastvid end to end through
`prepare` + `generate`, the feature cache, and the errors when `vision_head` is missing.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import backbones
import compressors
from backbones.preprocess import llava_next_pixels, pixel_settings
from backbones.siglip_head import HEAD_SIGNALS

FRAMES = 4
PROMPT = "What happens in the video?"
RETENTIONS = [0.5, 0.25, 0.1]


@pytest.fixture(scope="module")
def llava(tiny, tiny_siglip_head):
    return backbones.load(tiny, vision_head=tiny_siglip_head)


@pytest.fixture(scope="module")
def video(tiny_llava_video, tiny_siglip_head):
    return backbones.load(tiny_llava_video, video_newline=True, vision_head=tiny_siglip_head)


@pytest.fixture(scope="module")
def qwen(tiny_qwen):
    return backbones.load(tiny_qwen)


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (FRAMES, 56, 56, 3), dtype=np.uint8)


@pytest.fixture(scope="module", params=["llava", "video", "qwen"])
def llm(request):
    return request.getfixturevalue(request.param)


# ---------------------------------------------------------------------------- oracles
def _siglip_oracle(head_path: str, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(pooled [T, C] by transformers' own head, attention [T, P] recomputed from its state
    dict: the probe's softmax over the keys per head, averaged over heads)."""
    from transformers import SiglipVisionModel

    ref = SiglipVisionModel.from_pretrained(head_path).eval()
    with torch.no_grad():
        x = ref.post_layernorm(hidden)
        pooled = ref.head(x)
    sd = ref.state_dict()
    width, heads = hidden.shape[-1], ref.config.num_attention_heads
    wq, wk, _ = sd["head.attention.in_proj_weight"].chunk(3)
    bq, bk, _ = sd["head.attention.in_proj_bias"].chunk(3)
    q = (sd["head.probe"][0, 0] @ wq.T + bq).view(heads, -1)  # [H, hd]
    k = (x @ wk.T + bk).view(*x.shape[:2], heads, -1)  # [T, P, H, hd]
    scores = torch.einsum("hd,tphd->thp", q, k) / (width // heads) ** 0.5
    return pooled, scores.softmax(dim=-1).mean(dim=1)


def _tower_hidden(llm, pixels: torch.Tensor) -> torch.Tensor:
    """[T, P, Dv] the tower's hidden states at `vision_feature_layer` (what feeds the
    projector), from the tower's own `output_hidden_states`."""
    config = llm.model.config
    assert config.vision_feature_select_strategy == "full"
    with torch.no_grad():
        out = llm.model.model.vision_tower(pixels, output_hidden_states=True)
    return out.hidden_states[config.vision_feature_layer]


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def _qwen_oracle(qwen, frames: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """(frame_features [T', D], head_attention [T', H'W']) by FastVID's Qwen2.5-VL formula
    (fastvid_qwen25vl modeling_qwen2_5_vl.py): mean merged token per temporal patch; mean
    query of the temporal patch against the mean key of each merged token's patches in the
    last block, softmax, head mean; computed after undoing the tower's window order."""
    from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import get_vision_window_index

    inputs = qwen.processor_inputs(frames)
    grid_thw = inputs["video_grid_thw"]
    visual = qwen.model.model.visual
    captured = {}

    def hook(module, args, kwargs):
        captured["hidden"] = args[0] if args else kwargs["hidden_states"]
        captured["rotary"] = kwargs["position_embeddings"]

    handle = visual.blocks[-1].register_forward_pre_hook(hook, with_kwargs=True)
    with torch.no_grad():
        out = qwen.model.model.get_video_features(
            pixel_values_videos=inputs["pixel_values_videos"], video_grid_thw=grid_thw,
            return_dict=True,
        )
    handle.remove()
    t = int(grid_thw[0, 0])
    tokens = out.pooler_output[0].reshape(t, -1, out.pooler_output[0].shape[-1])
    window, _ = get_vision_window_index(grid_thw, spatial_merge_size=2,
                                        window_size=visual.window_size,
                                        patch_size=visual.patch_size, kwargs={})
    order = torch.argsort(window)  # merged token (row-major) -> its slot in window order
    unit = 4  # 2x2 patches per merged token, consecutive
    patches = (order[:, None] * unit + torch.arange(unit)).reshape(-1)
    block = visual.blocks[-1]
    with torch.no_grad():
        x = block.norm1(captured["hidden"][patches])
        heads = block.attn.num_heads
        q, k, _ = block.attn.qkv(x).reshape(len(x), 3, heads, -1).unbind(1)
    cos, sin = (r[patches][:, None] for r in captured["rotary"])
    q, k = q * cos + _rotate_half(q) * sin, k * cos + _rotate_half(k) * sin  # [S, H, hd]
    hd = q.shape[-1]
    q = q.view(t, -1, heads, hd).mean(dim=1)  # [t, H, hd]
    k = k.view(t, -1, unit, heads, hd).mean(dim=2)  # [t, n, H, hd]
    scores = torch.einsum("thd,tnhd->thn", q, k) / hd**0.5
    return tokens.mean(dim=1), scores.softmax(dim=-1).mean(dim=1)


# ------------------------------------------------------------------------ the signals
def test_llava_onevision_signals_equal_the_siglip_head(llava, frames, tiny_siglip_head):
    features, signals = llava.encode_signals(frames, HEAD_SIGNALS)
    assert set(signals) == set(HEAD_SIGNALS)
    pixels = llava.processor.video_processor(videos=[frames], return_tensors="pt")
    hidden = _tower_hidden(llava, pixels["pixel_values_videos"][0])
    assert hidden.shape == (FRAMES, 36, 32)
    pooled, weights = _siglip_oracle(tiny_siglip_head, hidden)
    grid = F.interpolate(weights.view(FRAMES, 1, 6, 6), size=(3, 3), mode="bilinear",
                         align_corners=False)
    torch.testing.assert_close(signals["frame_features"], pooled)
    torch.testing.assert_close(signals["head_attention"], grid.reshape(FRAMES, 9))
    assert signals["head_attention"].shape == (FRAMES, llava.tokens_per_frame)
    assert all(torch.isfinite(s).all() and s.dtype == torch.float32 for s in signals.values())
    assert weights.std() > 1e-3  # far from uniform: the ranking means something
    plain, none = llava.encode(frames)  # capturing changes nothing
    assert none is None and torch.equal(plain, features)


def test_llava_video_signals_are_average_pooled(video, frames, tiny_siglip_head):
    features, signals = video.encode_signals(frames, ("importance", *HEAD_SIGNALS))
    assert set(signals) == {"importance", *HEAD_SIGNALS}
    pixels = llava_next_pixels(frames, **pixel_settings(video.processor))
    hidden = _tower_hidden(video, pixels.to(video.dtype))
    assert hidden.shape == (FRAMES, 25, 32)  # 5 x 5 patches
    pooled, weights = _siglip_oracle(tiny_siglip_head, hidden)
    grid = F.avg_pool2d(weights.view(FRAMES, 1, 5, 5), 2)  # the official LLaVA-Video pooling
    assert video.grid == (2, 2)
    torch.testing.assert_close(signals["frame_features"], pooled)
    torch.testing.assert_close(signals["head_attention"], grid.reshape(FRAMES, 4))
    importance = video.encode(frames, importance=True)[1]
    torch.testing.assert_close(signals["importance"], importance)


def test_qwen_signals_equal_the_official_formula(qwen, frames):
    tokens, signals = qwen.encode_signals(frames, ("head_attention", "frame_features"))
    t, h, w, _ = tokens.shape
    features, attention = _qwen_oracle(qwen, frames)
    assert signals["head_attention"].shape == (t, h * w) == attention.shape
    torch.testing.assert_close(signals["head_attention"], attention)
    torch.testing.assert_close(signals["frame_features"], features)
    torch.testing.assert_close(signals["head_attention"].sum(dim=1), torch.ones(t))
    assert attention.std() > 1e-4


def test_only_the_asked_signals_are_computed(llava, qwen, frames):
    assert llava.encode_signals(frames)[1] == {}
    assert set(llava.encode_signals(frames, ("head_attention",))[1]) == {"head_attention"}
    assert set(qwen.encode_signals(frames, ("importance",))[1]) == {"importance"}
    assert llava.tower_signals(compressors.build("fastvid", retention=0.5)) == HEAD_SIGNALS
    assert qwen.tower_signals(compressors.build("fastvid", retention=0.5)) == ("head_attention",)
    assert qwen.tower_signals(compressors.build("fastv", retention=0.5)) == ()


# ------------------------------------------------------------------------ end to end
@pytest.mark.parametrize("mode", ["official", "exact"])
@pytest.mark.parametrize("retention", RETENTIONS)
def test_fastvid_runs_on_every_backbone(llm, frames, retention, mode):
    compressor = compressors.build("fastvid", retention=retention, budget_mode=mode)
    prepared = llm.prepare(frames, compressor)
    text, acc = llm.generate(prepared, PROMPT, max_new_tokens=2)
    n_v = prepared.visual_tokens
    grid = prepared.grid or llm.grid
    expected = compressor.expected_tokens(prepared.frames, grid)
    if mode == "exact":
        assert expected == compressors.budget(retention, n_v)
    else:
        assert expected is None
        expected = acc.visual_tokens_fed
        assert 1 <= expected <= n_v
    assert acc.visual_tokens_fed == expected == prepared.source_index.numel()
    assert acc.tokens_per_layer == [acc.prompt_tokens] * llm.num_layers
    assert torch.isfinite(prepared.visual).all() and acc.generated_tokens <= 2


def test_cached_encoding_gives_the_same_prepared_video(llm, frames):
    compressor = compressors.build("fastvid", retention=0.25)
    direct = llm.prepare(frames, compressor)
    encoded = llm.encode_signals(frames, llm.tower_signals(compressor))
    cached = llm.prepare(None, compressor, encoded=encoded)
    assert torch.equal(cached.visual, direct.visual)
    assert torch.equal(cached.source_index, direct.source_index)
    with pytest.raises(ValueError, match="cached features lack the .*head_attention"):
        llm.prepare(None, compressor, encoded=llm.encode(frames, importance=True))


def test_feature_cache_stores_the_signals(tiny, tiny_siglip_head, frames, tmp_path):
    from harness.feature_cache import FeatureCache, content_key
    from harness.lmms_model import ScissorBench

    cache = FeatureCache(tmp_path, "m", FRAMES)
    key = content_key(frames)
    cache.save(key, torch.ones(2, 3, 4), {"importance": torch.ones(2, 3)})
    assert cache.load(key, ("importance",)) is not None
    assert cache.load(key, HEAD_SIGNALS) is None  # a miss: the entry lacks them

    model = ScissorBench(pretrained=tiny, compressor="fastvid", retention=0.25,
                         vision_head=tiny_siglip_head, feature_cache=str(tmp_path / "f"))
    need = model._cache_signals(model.compressor)
    assert need == HEAD_SIGNALS
    assert model._cached_features(key, need) is None
    model._encode_for_cache(frames, key, need)
    features, signals = model.features.load(key, need)
    assert set(signals) == {"importance", *HEAD_SIGNALS}
    prepared = model.llm.prepare(None, model.compressor, encoded=model._cached_features(key, need))
    direct = model.llm.prepare(frames, model.compressor)
    assert torch.equal(prepared.visual, direct.visual)
    assert model.identity()["vision_head"] == tiny_siglip_head
    assert "|head=" in model.features.model_id


# ---------------------------------------------------------------------------- errors
def test_missing_vision_head_is_a_clear_error(tiny, frames):
    bare = backbones.load(tiny)
    with pytest.raises(ValueError, match="vision_head is not set.*siglip-so400m"):
        bare.prepare(frames, compressors.build("fastvid", retention=0.5))
    bare.prepare(frames, compressors.build("visionzip", retention=0.5))  # others unaffected

    from harness.lmms_model import ScissorBench

    with pytest.raises(ValueError, match="vision_head"):
        ScissorBench(pretrained=tiny, compressor="fastvid", retention=0.5)
    scc = ScissorBench(pretrained=tiny, compressor="scc", retention=0.5)
    assert "vision_head" not in scc.identity()


def test_vision_head_is_refused_where_it_does_not_apply(tiny_qwen, tiny_siglip_head, tmp_path):
    with pytest.raises(ValueError, match="vision_head applies to LLaVA"):
        backbones.load(tiny_qwen, vision_head=tiny_siglip_head)
    with pytest.raises(OSError, match="vision_head=.*cannot load"):
        from backbones.siglip_head import SiglipHead

        SiglipHead.load(str(tmp_path / "nowhere"))


def test_run_keys_hash_vision_head_only_for_fastvid():
    from runners.plan import key_settings

    def settings(name: str, head: str | None) -> dict:
        model = {"name": "m", "pretrained": "hub/m", **({"vision_head": head} if head else {})}
        return {"model": model, "compressor": {"name": name, "params": {}}, "retention": 0.5}

    head = "google/siglip-so400m-patch14-384"
    assert key_settings(settings("scc", head)) == key_settings(settings("scc", None))
    assert key_settings(settings("fastvid", head))["model"]["vision_head"] == head

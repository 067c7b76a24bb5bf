"""backbones.llava_next: a LLaVA-NeXT checkpoint, converted, computes what LLaVA-NeXT computes.

The test writes a tiny random checkpoint in the LLaVA-NeXT layout (LlavaQwenForCausalLM names,
a SigLIP tower of 3 layers of which LLaVA-NeXT uses the first 2, mlp2x_gelu projector,
image_newline, a byte-level BPE tokenizer without image tokens), converts it, and compares the
transformers model with a reference written here in plain torch from LLaVA-NeXT's description,
reading the ORIGINAL state dict by its original names:
- vision (siglip_encoder.py): patch conv + position embedding, encoder layers 0 .. L-2 (the
  last layer is deleted), output of the last kept layer, no post_layernorm;
- projector (multimodal_projector/builder.py, mlp2x_gelu): linear, exact GELU, linear;
- pooling (llava_arch.py get_2dPool): bilinear interpolation of each frame's h x w grid to
  ceil(h/2) x ceil(w/2) (5x5 -> 3x3 here, like 27x27 -> 14x14);
- sequence (llava_arch.py, mm_newline_position "one_token"): [text, frame tokens, newline,
  text] through Qwen2 (RMSNorm, rotary attention with q/k/v bias and grouped KV, SwiGLU).
Everything runs in float32 on the CPU; features and logits must agree to 1e-5.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import types
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from backbones import llava_next
from backbones.llava_next import ConversionError, convert, ensure_converted
from backbones.tiny_llava_next import (  # the checkpoint's geometry, read by the oracle below
    CASES,
    EPS,
    FRAMES,
    GRID,
    HEADS,
    HIDDEN,
    IMAGE,
    KV_HEADS,
    LAYERS,
    PATCH,
    POOLED,
    THETA,
    V_HEADS,
    V_WIDTH,
    VISION,
    write_llava_next,
)

# LLaVA-NeXT's qwen_2 prompt (conversation.py conv_qwen, CHATML) for one video question, as
# lmms-eval's llava_onevision builds it: DEFAULT_IMAGE_TOKEN + "\n" + question.
QUESTION = "What is in the video?"
LLAVA_NEXT_PROMPT = (
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    f"<|im_start|>user\n<image>\n{QUESTION}<|im_end|>\n<|im_start|>assistant\n"
)

@pytest.fixture(scope="module", params=sorted(CASES))
def converted(request, tmp_path_factory) -> tuple[str, Path, Path]:
    """(case, LLaVA-NeXT source, converted directory)."""
    root = tmp_path_factory.mktemp(f"llava_next_{request.param}")
    src = write_llava_next(root, **CASES[request.param])
    return request.param, src, convert(src, root / "converted")


@pytest.fixture(scope="module")
def source_7b(tmp_path_factory) -> Path:
    return write_llava_next(tmp_path_factory.mktemp("src7b"), **CASES["7b"])


# ------------------------------------------------------------------------------------------
# LLaVA-NeXT, written from its description over the original state dict


def _attention(x, sd, p, heads):
    """SigLIP self-attention of [B, N, D] with the weights under prefix p."""
    b, n, d = x.shape
    head_dim = d // heads

    def proj(name):
        w, bias = sd[p + f"{name}.weight"], sd[p + f"{name}.bias"]
        return F.linear(x, w, bias).view(b, n, heads, head_dim).transpose(1, 2)

    q, k, v = proj("q_proj"), proj("k_proj"), proj("v_proj")
    weights = torch.softmax(q @ k.transpose(-1, -2) * head_dim**-0.5, dim=-1)
    out = (weights @ v).transpose(1, 2).reshape(b, n, d)
    return F.linear(out, sd[p + "out_proj.weight"], sd[p + "out_proj.bias"])


def reference_vision(sd, pixels, layers):
    """SigLIP encoder layers 0..layers-1, last hidden state, no post_layernorm: [T, N, D]."""
    x = F.conv2d(
        pixels,
        sd[VISION + "embeddings.patch_embedding.weight"],
        sd[VISION + "embeddings.patch_embedding.bias"],
        stride=PATCH,
    )
    x = x.flatten(2).transpose(1, 2) + sd[VISION + "embeddings.position_embedding.weight"]
    for i in range(layers):
        p = f"{VISION}encoder.layers.{i}."

        def ln(t, name, p=p):
            return F.layer_norm(
                t, (V_WIDTH,), sd[p + name + ".weight"], sd[p + name + ".bias"], eps=1e-6
            )

        x = x + _attention(ln(x, "layer_norm1"), sd, p + "self_attn.", V_HEADS)
        h = F.linear(ln(x, "layer_norm2"), sd[p + "mlp.fc1.weight"], sd[p + "mlp.fc1.bias"])
        h = F.gelu(h, approximate="tanh")  # SigLIP's gelu_pytorch_tanh
        x = x + F.linear(h, sd[p + "mlp.fc2.weight"], sd[p + "mlp.fc2.bias"])
    return x


def reference_video_features(sd, pixels, layers):
    """Vision -> mlp2x_gelu projector -> bilinear 2x2 pooling: [T, ceil(h/2)*ceil(w/2), D]."""
    x = reference_vision(sd, pixels, layers)
    x = F.linear(x, sd["model.mm_projector.0.weight"], sd["model.mm_projector.0.bias"])
    x = F.linear(F.gelu(x), sd["model.mm_projector.2.weight"], sd["model.mm_projector.2.bias"])
    t, _, d = x.shape
    grid = x.view(t, GRID, GRID, d).permute(0, 3, 1, 2)
    pooled = F.interpolate(grid, size=(POOLED, POOLED), mode="bilinear")
    return pooled.permute(0, 2, 3, 1).reshape(t, POOLED * POOLED, d)


def _rms(x, weight):
    return weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + EPS))


def _rotate(x, positions):
    """Rotary embedding of [H, S, d] (halves rotated, Qwen2/Llama convention)."""
    d = x.shape[-1]
    inv = 1.0 / THETA ** (torch.arange(0, d, 2, dtype=torch.float32) / d)
    angles = positions[:, None].float() * inv[None]
    cos, sin = torch.cat([angles, angles], -1).cos(), torch.cat([angles, angles], -1).sin()
    x1, x2 = x[..., : d // 2], x[..., d // 2 :]
    return x * cos + torch.cat([-x2, x1], -1) * sin


def reference_logits(sd, embeds):
    """Qwen2 over [S, hidden] input embeddings: logits [S, vocab]."""
    s = embeds.shape[0]
    positions = torch.arange(s)
    head_dim = HIDDEN // HEADS
    causal = torch.full((s, s), float("-inf")).triu(1)
    x = embeds
    for i in range(LAYERS):
        p = f"model.layers.{i}."
        h = _rms(x, sd[p + "input_layernorm.weight"])

        def proj(name, heads, h=h, p=p):
            out = F.linear(h, sd[p + f"self_attn.{name}.weight"], sd[p + f"self_attn.{name}.bias"])
            return out.view(s, heads, head_dim).transpose(0, 1)

        q = _rotate(proj("q_proj", HEADS), positions)
        k = _rotate(proj("k_proj", KV_HEADS), positions).repeat_interleave(HEADS // KV_HEADS, 0)
        v = proj("v_proj", KV_HEADS).repeat_interleave(HEADS // KV_HEADS, 0)
        weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(head_dim) + causal, dim=-1)
        attn = (weights @ v).transpose(0, 1).reshape(s, HIDDEN)
        x = x + F.linear(attn, sd[p + "self_attn.o_proj.weight"])
        h = _rms(x, sd[p + "post_attention_layernorm.weight"])
        gate = F.silu(F.linear(h, sd[p + "mlp.gate_proj.weight"]))
        x = x + F.linear(
            gate * F.linear(h, sd[p + "mlp.up_proj.weight"]), sd[p + "mlp.down_proj.weight"]
        )
    head = sd.get("lm_head.weight", sd["model.embed_tokens.weight"])
    return F.linear(_rms(x, sd["model.norm.weight"]), head)


# ------------------------------------------------------------------------------------------
# Tests


def _frames(seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(FRAMES, IMAGE, IMAGE, 3), dtype=np.uint8)


def test_converted_model_matches_llava_next(converted):
    from tokenizers import Tokenizer
    from transformers import AutoProcessor, LlavaOnevisionForConditionalGeneration

    case, src, dst = converted
    sd = load_file(src / "model.safetensors")
    tower_layers = json.loads(
        Path(json.loads((src / "config.json").read_text())["mm_vision_tower"])
        .joinpath("config.json")
        .read_text()
    )["num_hidden_layers"]
    used = tower_layers - 1  # LLaVA-NeXT deletes the tower's last layer

    model = LlavaOnevisionForConditionalGeneration.from_pretrained(dst, dtype=torch.float32)
    model.eval()
    processor = AutoProcessor.from_pretrained(dst)
    cfg = model.config
    assert cfg.vision_config.num_hidden_layers == used
    assert (cfg.vision_feature_layer, cfg.vision_feature_select_strategy) == (-1, "full")
    source_tok = Tokenizer.from_file(str(src / "tokenizer.json"))
    n_tokens = source_tok.get_vocab_size()
    tok = processor.tokenizer
    assert tok.convert_tokens_to_ids(["<image>", "<video>"]) == [n_tokens, n_tokens + 1]
    assert (cfg.image_token_id, cfg.video_token_id) == (n_tokens, n_tokens + 1)
    assert processor.num_image_tokens == GRID * GRID
    pinpoints = [[IMAGE, IMAGE], [IMAGE, 2 * IMAGE], [2 * IMAGE, IMAGE], [2 * IMAGE, 2 * IMAGE]]
    assert processor.image_processor.image_grid_pinpoints == pinpoints
    video_processor = processor.video_processor
    assert list(video_processor.image_mean) == [0.5] * 3 == list(video_processor.image_std)
    assert video_processor.size["height"] == video_processor.size["width"] == IMAGE

    # the chat template renders LLaVA-NeXT's qwen_2 prompt, with <video> for the placeholder
    messages = [
        {"role": "user", "content": [{"type": "video"}, {"type": "text", "text": QUESTION}]}
    ]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    assert prompt == LLAVA_NEXT_PROMPT.replace("<image>", "<video>")
    inputs = processor(text=prompt, videos=[_frames()], return_tensors="pt")
    pixels = inputs["pixel_values_videos"].float()
    assert pixels.shape == (1, FRAMES, 3, IMAGE, IMAGE)
    expected_pixels = torch.from_numpy(_frames()).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    assert torch.allclose(pixels[0], expected_pixels, atol=0.05)  # SigLIP mean = std = 0.5

    # LLaVA-NeXT's tokenizer_image_token: text chunks around the placeholder, features between
    before, after = LLAVA_NEXT_PROMPT.split("<image>")
    ids_before, ids_after = source_tok.encode(before).ids, source_tok.encode(after).ids
    n_video = FRAMES * POOLED * POOLED + 1  # frame tokens and one newline (one_token)
    expected_ids = ids_before + [cfg.video_token_id] * n_video + ids_after
    assert inputs["input_ids"][0].tolist() == expected_ids

    with torch.no_grad():
        ref_feats = reference_video_features(sd, pixels[0], used)
        out = model.model.get_video_features(pixel_values_videos=pixels)
        feats = out.pooler_output if hasattr(out, "pooler_output") else out
        assert feats.shape == (1, FRAMES * POOLED * POOLED + 1, HIDDEN)
        torch.testing.assert_close(
            feats[0, :-1].view(FRAMES, POOLED * POOLED, HIDDEN), ref_feats, atol=1e-5, rtol=0
        )
        torch.testing.assert_close(feats[0, -1], sd["model.image_newline"], atol=0, rtol=0)
        # the layer count matters: all 3 tower layers (or 1) would give other features
        if f"{VISION}encoder.layers.{tower_layers - 1}.mlp.fc1.weight" in sd:
            assert not torch.allclose(
                reference_video_features(sd, pixels[0], tower_layers), ref_feats, atol=1e-3
            )
        assert not torch.allclose(
            reference_video_features(sd, pixels[0], used - 1), ref_feats, atol=1e-3
        )

        embed = sd["model.embed_tokens.weight"]
        embeds = torch.cat(
            [
                embed[ids_before],
                ref_feats.reshape(-1, HIDDEN),
                sd["model.image_newline"][None],
                embed[ids_after],
            ]
        )
        ref = reference_logits(sd, embeds)
        logits = model(**inputs).logits[0]
    vocab = embed.shape[0]
    assert ref.std() > 0.2  # a comparison of something, not of zeros
    torch.testing.assert_close(logits[:, :vocab], ref, atol=1e-5, rtol=0)
    # no spare rows for <image>/<video> (case "0.5b"): the vocabulary grew by mean rows
    assert (logits.shape[1] > vocab) == (CASES[case]["spare_rows"] < 2)
    if logits.shape[1] > vocab:
        assert logits.shape[1] % 64 == 0
        grown = model.get_input_embeddings().weight
        torch.testing.assert_close(grown[vocab:], embed.mean(0).expand(grown.shape[0] - vocab, -1))


def test_ensure_converted_converts_once(source_7b, tmp_path, monkeypatch):
    calls = []
    real = llava_next.convert

    def counting(src, dst):
        calls.append(src)
        return real(src, dst)

    monkeypatch.setattr(llava_next, "convert", counting)
    cache = tmp_path / "cache"
    first = ensure_converted(str(source_7b), cache_dir=cache)
    second = ensure_converted(str(source_7b), cache_dir=cache)
    assert first == second and len(calls) == 1
    assert Path(first).parent == cache and Path(first).name.startswith("llava-next-tiny-")
    assert (Path(first) / "scissorbench_conversion.json").is_file()
    assert not list(cache.glob("*.partial-*"))
    # an already converted checkpoint, or anything not LLaVA-NeXT, is returned unchanged
    assert ensure_converted(first, cache_dir=cache) == first
    assert ensure_converted("no-such-org/no-such-model", cache_dir=cache) == (
        "no-such-org/no-such-model"
    )
    # new weights (another mtime) mean another conversion
    weights = source_7b / "model.safetensors"
    stat = weights.stat()
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    third = ensure_converted(str(source_7b), cache_dir=cache)
    assert third != first and len(calls) == 2


def test_ensure_converted_default_cache_and_hub_snapshot(source_7b, tmp_path, monkeypatch):
    import huggingface_hub.constants

    hub = tmp_path / "hub"
    repo = hub / "models--tiny-org--llava-next-tiny"
    shutil.copytree(source_7b, repo / "snapshots" / "0123abcd")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abcd")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(hub))
    monkeypatch.setenv("SCISSORBENCH_CACHE", str(tmp_path / "sb"))
    path = Path(ensure_converted("tiny-org/llava-next-tiny"))
    assert path.parent == tmp_path / "sb" / "converted"
    assert path.name.startswith("tiny-org--llava-next-tiny-")
    from transformers import LlavaOnevisionForConditionalGeneration

    LlavaOnevisionForConditionalGeneration.from_pretrained(path)


@pytest.mark.parametrize(
    ("edit", "named"),
    [
        ("drop", "model.mm_projector.2.weight"),
        ("drop", VISION + "encoder.layers.1.mlp.fc2.bias"),
        ("add", "model.faster_token"),
        ("add", VISION + "encoder.layers.7.mlp.fc1.weight"),
    ],
)
def test_missing_or_unexpected_weight_is_named(source_7b, tmp_path, edit, named):
    src = tmp_path / "edited"
    shutil.copytree(source_7b, src)
    sd = load_file(src / "model.safetensors")
    if edit == "drop":
        del sd[named]
    else:
        sd[named] = torch.zeros(HIDDEN)
    save_file(sd, src / "model.safetensors")
    kind = "missing" if edit == "drop" else "unexpected"
    with pytest.raises(ConversionError, match=rf"{kind}.*'{named}'"):
        convert(src, tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("merge", ["spatial_unpad", "flat"])
def test_image_newline_needed_only_with_unpad(source_7b, tmp_path, merge):
    """LLaVA-NeXT creates image_newline only when mm_patch_merge_type has "unpad"."""
    src = tmp_path / merge
    shutil.copytree(source_7b, src)
    sd = load_file(src / "model.safetensors")
    del sd["model.image_newline"]
    save_file(sd, src / "model.safetensors")
    config = json.loads((src / "config.json").read_text())
    (src / "config.json").write_text(json.dumps({**config, "mm_patch_merge_type": merge}))
    if merge == "flat":
        from transformers import LlavaOnevisionForConditionalGeneration

        model = LlavaOnevisionForConditionalGeneration.from_pretrained(convert(src, tmp_path / "o"))
        assert not model.model.image_newline.any()
    else:
        with pytest.raises(ConversionError, match="missing.*'model.image_newline'"):
            convert(src, tmp_path / "o")


def test_refuses_other_layouts(source_7b, tmp_path):
    with pytest.raises(ConversionError, match="not a LLaVA-NeXT checkpoint"):
        convert(tmp_path, tmp_path / "out")
    config = json.loads((source_7b / "config.json").read_text())
    src = tmp_path / "clip"
    shutil.copytree(source_7b, src)
    (src / "config.json").write_text(json.dumps({**config, "mm_vision_tower": "openai/clip"}))
    with pytest.raises(ConversionError, match="only SigLIP"):
        convert(src, tmp_path / "out")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    with pytest.raises(FileExistsError):
        convert(source_7b, tmp_path / "full")


def test_cli_convert(source_7b, tmp_path, capsys):
    from scissorbench.cli import main

    assert main(["convert", str(source_7b), str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "config.json").is_file()
    assert main(["convert", str(tmp_path / "nothing"), str(tmp_path / "out2")]) == 1
    assert "scissorbench convert: error:" in capsys.readouterr().err


@pytest.mark.parametrize("tower_config", ["hf_cache", "absent"])
def test_so400m_geometry(tmp_path, monkeypatch, tower_config):
    """The paper's tower: siglip-so400m-patch14-384 minus its last layer, 27x27 patches of width
    1152 (pooled to 14x14 = 196 per frame), from its cached config or LLaVA-NeXT's defaults."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    name = "google/siglip-so400m-patch14-384"
    if tower_config == "hf_cache":  # a full SigLIP config: the tower's part is vision_config
        snapshot = tmp_path / "models--google--siglip-so400m-patch14-384" / "snapshots" / "c0"
        snapshot.mkdir(parents=True)
        (snapshot.parents[1] / "refs").mkdir()
        (snapshot.parents[1] / "refs" / "main").write_text("c0")
        vision = {
            "hidden_size": 1152,
            "intermediate_size": 4304,
            "num_hidden_layers": 27,
            "num_attention_heads": 16,
            "image_size": 384,
            "patch_size": 14,
        }
        (snapshot / "config.json").write_text(
            json.dumps({"model_type": "siglip", "vision_config": vision})
        )
    shapes = {  # meta tensors: only shapes are read
        "embeddings.patch_embedding.weight": (1152, 3, 14, 14),
        "embeddings.position_embedding.weight": (729, 1152),
        "encoder.layers.0.mlp.fc1.weight": (4304, 1152),
    }
    state = {VISION + k: torch.empty(s, device="meta") for k, s in shapes.items()}
    vision, tower_layers, source = llava_next._vision_config({"mm_vision_tower": name}, state)
    assert (tower_layers, vision["num_hidden_layers"], vision["num_attention_heads"]) == (
        27,
        26,
        16,
    )
    assert (vision["image_size"], vision["patch_size"], vision["hidden_size"]) == (384, 14, 1152)
    # oracle: transformers' own SigLIP embeddings and LLaVA-OneVision pooling on this config
    from transformers import SiglipVisionConfig
    from transformers.models.llava_onevision.modeling_llava_onevision import LlavaOnevisionModel
    from transformers.models.siglip.modeling_siglip import SiglipVisionEmbeddings

    config = SiglipVisionConfig(**{k: v for k, v in vision.items() if k != "model_type"})
    with torch.device("meta"):
        embeddings = SiglipVisionEmbeddings(config)
    assert embeddings.num_patches == shapes["embeddings.position_embedding.weight"][0] == 729
    holder = types.SimpleNamespace(config=types.SimpleNamespace(vision_config=config))
    pooled = LlavaOnevisionModel.apply_pooling(holder, torch.zeros(2, 729, 1))
    assert pooled.shape == (2, 196, 1)  # the paper's 196 tokens per frame
    assert ("snapshots" in source) == (tower_config == "hf_cache")

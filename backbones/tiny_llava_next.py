"""A tiny random checkpoint in the LLaVA-NeXT layout (LlavaQwenForCausalLM), written offline.

The published LLaVA-OneVision, LLaVA-Scissor and LLaVA-Video checkpoints are in LLaVA-NeXT's
own layout, which `backbones.llava_next` converts. `write_llava_next` writes one at toy size:
LLaVA-NeXT's config keys, its state-dict names, a SigLIP tower config of 3 layers of which
LLaVA-NeXT uses the first 2 (its tower directory beside the checkpoint, "siglip" in the name as
LLaVA-NeXT requires), the mlp2x_gelu projector, `image_newline`, and a byte-level BPE tokenizer
in Qwen2's style without image tokens. `write_tiny_llava_video` adds LLaVA-Video-7B-Qwen2's
video flags (`mm_newline_position: grid`, bilinear pool mode in the config, which lmms-eval's
`llava_vid` overrides to average, stride 2, `add_faster_video` false): `model=tiny_llava_video`.
Both go through the same conversion and `from_pretrained` as the hub checkpoints.

Geometry: 76 px frames in 14 px patches = 5 x 5 (the 6 px border dropped, as 384 px gives
27 x 27); LLM 48 wide, 2 layers, 4 query / 2 key-value heads. The tests read the ORIGINAL
state dict by these names to build their plain-torch oracle (tests/test_llava_next.py).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from safetensors.torch import save_file

__all__ = ["CASES", "write_llava_next", "write_tiny_llava_video"]

# tiny SigLIP tower: 76 px / 14 px patches = 5x5 grid (the 6 px border is dropped, as 384 px
# gives 27x27), 3 layers of which LLaVA-NeXT uses 2
V_WIDTH, V_HEADS, V_FFN, V_LAYERS, IMAGE, PATCH = 32, 4, 48, 3, 76, 14
GRID = IMAGE // PATCH  # 5
POOLED = math.ceil(GRID / 2)
# tiny Qwen2
HIDDEN, HEADS, KV_HEADS, FFN, LAYERS, THETA, EPS = 48, 4, 2, 64, 2, 1e6, 1e-6
FRAMES = 3
VISION = "model.vision_tower.vision_tower.vision_model."
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
QWEN_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
CORPUS = [
    "You are a helpful assistant.",
    "What is in the video? Describe the video in detail.",
    "The person walks to the door, opens it and leaves the room.",
    "Answer with the option's letter from the given choices directly.",
] * 4
# Two layouts: "7b" keeps the shortened tower (what LLaVA-NeXT saves), an untied lm_head and
# room in the vocabulary; "0.5b" keeps the full tower (its last layer must be dropped), ties
# lm_head to the embedding (no lm_head.weight), stores a rotary inv_freq buffer, gives the
# pinpoints as a "(AxB)" range string and has no free rows for <image>/<video>.
CASES = {
    "7b": {"saved_layers": V_LAYERS - 1, "tied": False, "spare_rows": 20},
    "0.5b": {"saved_layers": V_LAYERS, "tied": True, "spare_rows": 0},
}


def _tokenizer(directory: Path) -> int:
    """A byte-level BPE tokenizer in Qwen2's style (tokenizer.json + tokenizer_config.json);
    returns its size."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN_SPLIT), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer)
    tok.save(str(directory / "tokenizer.json"))
    settings = {
        "tokenizer_class": "Qwen2Tokenizer",
        "bos_token": None,
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "unk_token": None,
        "model_max_length": 512,
        "add_prefix_space": False,
    }
    (directory / "tokenizer_config.json").write_text(json.dumps(settings))
    return tok.get_vocab_size()


def _weights(vocab: int, saved_layers: int, tied: bool, seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)

    def rand(*shape: int, scale: float = 0.15) -> torch.Tensor:
        return torch.randn(*shape, generator=gen) * scale

    def norm(n: int) -> torch.Tensor:
        return 1.0 + rand(n, scale=0.1)

    sd: dict[str, torch.Tensor] = {
        VISION + "embeddings.patch_embedding.weight": rand(V_WIDTH, 3, PATCH, PATCH, scale=0.05),
        VISION + "embeddings.patch_embedding.bias": rand(V_WIDTH),
        VISION + "embeddings.position_embedding.weight": rand(GRID * GRID, V_WIDTH, scale=0.5),
        VISION + "post_layernorm.weight": norm(V_WIDTH),  # never used by LLaVA-NeXT
        VISION + "post_layernorm.bias": rand(V_WIDTH),
    }
    for i in range(saved_layers):
        p = f"{VISION}encoder.layers.{i}."
        for name in ("q_proj", "k_proj", "v_proj", "out_proj"):
            sd[p + f"self_attn.{name}.weight"] = rand(V_WIDTH, V_WIDTH, scale=0.3)
            sd[p + f"self_attn.{name}.bias"] = rand(V_WIDTH)
        for name in ("layer_norm1", "layer_norm2"):
            sd[p + f"{name}.weight"], sd[p + f"{name}.bias"] = norm(V_WIDTH), rand(V_WIDTH)
        sd[p + "mlp.fc1.weight"], sd[p + "mlp.fc1.bias"] = rand(V_FFN, V_WIDTH), rand(V_FFN)
        sd[p + "mlp.fc2.weight"], sd[p + "mlp.fc2.bias"] = rand(V_WIDTH, V_FFN), rand(V_WIDTH)
    sd["model.mm_projector.0.weight"] = rand(HIDDEN, V_WIDTH, scale=0.3)
    sd["model.mm_projector.0.bias"] = rand(HIDDEN)
    sd["model.mm_projector.2.weight"] = rand(HIDDEN, HIDDEN, scale=0.3)
    sd["model.mm_projector.2.bias"] = rand(HIDDEN)
    sd["model.image_newline"] = rand(HIDDEN, scale=1.0)
    sd["model.embed_tokens.weight"] = rand(vocab, HIDDEN, scale=0.1)
    head_dim = HIDDEN // HEADS
    for i in range(LAYERS):
        p = f"model.layers.{i}."
        sd[p + "self_attn.q_proj.weight"] = rand(HIDDEN, HIDDEN, scale=0.3)
        sd[p + "self_attn.q_proj.bias"] = rand(HIDDEN)
        sd[p + "self_attn.k_proj.weight"] = rand(KV_HEADS * head_dim, HIDDEN, scale=0.3)
        sd[p + "self_attn.k_proj.bias"] = rand(KV_HEADS * head_dim)
        sd[p + "self_attn.v_proj.weight"] = rand(KV_HEADS * head_dim, HIDDEN, scale=0.3)
        sd[p + "self_attn.v_proj.bias"] = rand(KV_HEADS * head_dim)
        sd[p + "self_attn.o_proj.weight"] = rand(HIDDEN, HIDDEN, scale=0.3)
        sd[p + "mlp.gate_proj.weight"] = rand(FFN, HIDDEN, scale=0.3)
        sd[p + "mlp.up_proj.weight"] = rand(FFN, HIDDEN, scale=0.3)
        sd[p + "mlp.down_proj.weight"] = rand(HIDDEN, FFN, scale=0.3)
        sd[p + "input_layernorm.weight"] = norm(HIDDEN)
        sd[p + "post_attention_layernorm.weight"] = norm(HIDDEN)
    sd["model.norm.weight"] = norm(HIDDEN)
    if tied:  # older Qwen2 checkpoints also carry the rotary buffer
        sd["model.layers.0.self_attn.rotary_emb.inv_freq"] = rand(head_dim // 2)
    else:
        sd["lm_head.weight"] = rand(vocab, HIDDEN, scale=0.1)
    return sd


def write_llava_next(root: Path, saved_layers: int, tied: bool, spare_rows: int, *,
                     name: str = "llava-next-tiny", tower_name: str = "tiny-siglip",
                     seed: int = 0) -> Path:
    """A LLaVA-NeXT checkpoint directory `root`/`name` (its tower config in `root`/`tower_name`).

    saved_layers: tower layers stored (LLaVA-NeXT's 7B saves 2 of 3, the 0.5B all 3);
    tied: lm_head tied to the embedding (no lm_head.weight, a stale rotary buffer stored);
    spare_rows: embedding rows beyond the tokenizer (room for <image> / <video>).
    """
    root = Path(root)
    tower = root / tower_name  # mm_vision_tower: "siglip" in the name, as LLaVA-NeXT needs
    tower.mkdir(parents=True, exist_ok=True)
    tower_config = {
        "model_type": "siglip_vision_model",
        "hidden_size": V_WIDTH,
        "intermediate_size": V_FFN,
        "num_hidden_layers": V_LAYERS,
        "num_attention_heads": V_HEADS,
        "image_size": IMAGE,
        "patch_size": PATCH,
        "hidden_act": "gelu_pytorch_tanh",
        "layer_norm_eps": 1e-6,
    }
    (tower / "config.json").write_text(json.dumps(tower_config))
    src = root / name
    src.mkdir(parents=True, exist_ok=True)
    vocab = _tokenizer(src) + spare_rows
    pinpoints = (
        "(1x1),(1x2),(2x1),(2x2)"
        if tied
        else [[IMAGE, IMAGE], [IMAGE, 2 * IMAGE], [2 * IMAGE, IMAGE], [2 * IMAGE, 2 * IMAGE]]
    )
    config = {
        "architectures": ["LlavaQwenForCausalLM"],
        "model_type": "llava",
        "attention_dropout": 0.0,
        "bos_token_id": 0,
        "eos_token_id": 2,
        "hidden_act": "silu",
        "hidden_size": HIDDEN,
        "intermediate_size": FFN,
        "initializer_range": 0.02,
        "max_position_embeddings": 512,
        "max_window_layers": LAYERS,
        "num_attention_heads": HEADS,
        "num_hidden_layers": LAYERS,
        "num_key_value_heads": KV_HEADS,
        "rms_norm_eps": EPS,
        "rope_scaling": None,
        "rope_theta": THETA,
        "sliding_window": 512,
        "use_sliding_window": False,
        "tie_word_embeddings": tied,
        "torch_dtype": "float32",
        "use_cache": True,
        "vocab_size": vocab,
        "image_aspect_ratio": "anyres_max_9",
        "image_grid_pinpoints": pinpoints,
        "image_token_index": vocab,
        "mm_hidden_size": V_WIDTH,
        "mm_newline_position": "one_token",
        "mm_patch_merge_type": "spatial_unpad",
        "mm_projector_type": "mlp2x_gelu",
        "mm_spatial_pool_mode": "bilinear",
        "mm_spatial_pool_stride": 2,
        "mm_tunable_parts": "mm_vision_tower,mm_mlp_adapter,mm_language_model",
        "mm_use_im_patch_token": False,
        "mm_use_im_start_end": False,
        "mm_vision_select_feature": "patch",
        "mm_vision_select_layer": -2,
        "mm_vision_tower": str(tower.resolve()),
        "tokenizer_model_max_length": 512,
        "tokenizer_padding_side": "right",
        "use_mm_proj": True,
    }
    (src / "config.json").write_text(json.dumps(config, indent=2))
    save_file(_weights(vocab, saved_layers, tied, seed), src / "model.safetensors")
    return src


LLAVA_VIDEO_FLAGS = {
    "mm_newline_position": "grid",
    "mm_spatial_pool_mode": "bilinear",  # as LLaVA-Video's config.json; llava_vid: average
    "mm_spatial_pool_stride": 2,
    "add_faster_video": False,
    "faster_token_stride": 10,
}


def write_tiny_llava_video(path: str | Path, seed: int = 0) -> Path:
    """A tiny LLaVA-Video checkpoint (LLaVA-NeXT layout, LLaVA-Video-7B's flags and its
    shortened tower, untied head) at `path`, its tower in `path`/siglip-tower. Returns `path`."""
    path = Path(path)
    src = write_llava_next(path, **CASES["7b"], name=".", tower_name="siglip-tower", seed=seed)
    config = json.loads((src / "config.json").read_text())
    config.update(LLAVA_VIDEO_FLAGS)
    (src / "config.json").write_text(json.dumps(config, indent=2))
    return src

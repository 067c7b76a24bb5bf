"""A tiny random-weight LLaVA-OneVision checkpoint, written offline, loaded like a real one.

Tests, the demo runner and CI have no model hub, so `write_tiny_checkpoint(path)` writes a
complete transformers checkpoint of the real architecture at toy size: SigLIP tower -> 2-layer
MLP projector -> the model's own 2x2 bilinear pooling -> Qwen2 decoder, plus a processor
(video/image preprocessing, tokenizer, chat template). `backbones.load(path)` then goes through
exactly the code a hub checkpoint does (`from_pretrained`), so nothing is tested on a toy path.
Answers are noise; shapes, token counts, caches and equivalences are real.

Default geometry: 84 px frames, 14 px patches -> 6 x 6 = 36 patches -> pooled 3 x 3 = 9 tokens per
frame; vision 32 wide, 2 layers, 4 heads; LLM 64 wide, 4 layers (FastV's default K = 3 needs
K < L), 4 query heads over 2 key/value heads (GQA, as Qwen2), untied `lm_head`. The tokenizer is
byte-level BPE without merges (one token per byte, so any text encodes) plus the qwen_2 special
tokens <|endoftext|>, <|im_start|>, <|im_end|> and the placeholders <image>, <video>, built with
the `tokenizers` library. Weights are drawn with `initializer_range` 0.2 (not 0.02) so that
attention rows and logits are far from uniform and ties are unlikely. Seeded: the same seed
writes the same weights. About 0.6 MB.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from backbones.chat import CHAT_TEMPLATE

__all__ = [
    "CHAT_TEMPLATE",
    "SPECIAL_TOKENS",
    "build_model",
    "byte_tokenizer",
    "save_checkpoint",
    "wrap_tokenizer",
    "write_tiny_checkpoint",
    "write_tiny_qwen2_5_vl",
    "write_tiny_qwen3_vl",
]

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>", "<video>"]


def byte_tokenizer(extra: tuple[str, ...] = ()):
    """Byte-level BPE over the 256 byte symbols (no merges) + the special tokens (+ `extra`)."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {symbol: i for i, symbol in enumerate(sorted(alphabet))}
    return wrap_tokenizer(Tokenizer(models.BPE(vocab=vocab, merges=[])), extra=extra)


def wrap_tokenizer(
    core: Any, extra: tuple[str, ...] = (), chat_template: str = CHAT_TEMPLATE
) -> Any:
    """A `tokenizers.Tokenizer` (BPE model) as the fast tokenizer of a qwen_2-style checkpoint:
    byte-level pre-tokenizer and decoder, the special tokens (+ `extra`), the chat template."""
    from tokenizers import decoders, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    core.decoder = decoders.ByteLevel()
    core.add_special_tokens(SPECIAL_TOKENS + list(extra))
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        bos_token=None,
        model_max_length=4096,
        chat_template=chat_template,
    )


def write_tiny_checkpoint(path: str | Path, seed: int = 0, **geometry: Any) -> Path:
    """Write a random LLaVA-OneVision checkpoint (safetensors + processor) to `path`.

    `geometry` overrides `build_model`'s sizes; the default 84 px / 14 px patches give 6 x 6
    patches and 3 x 3 = 9 tokens per frame. Returns the path.
    """
    tokenizer = byte_tokenizer()
    model, processor = build_model(tokenizer, seed, **geometry)
    return save_checkpoint(model, processor, path)


def build_model(
    tokenizer: Any,
    seed: int = 0,
    *,
    vision_layers: int = 2,
    llm_layers: int = 4,
    image_size: int = 84,
    patch_size: int = 14,
    vision_hidden: int = 32,
    vision_heads: int = 4,
    hidden_size: int = 64,
    intermediate_size: int = 128,
    heads: int = 4,
    kv_heads: int = 2,
    initializer_range: float = 0.2,
) -> tuple[Any, Any]:
    """A freshly initialised `LlavaOnevisionForConditionalGeneration` of the given size around
    `tokenizer`, and its processor -> (model, processor). Seeded: same seed, same weights.

    `image_size / patch_size` patches per side, pooled to ceil(side / 2) per side.
    """
    import torch
    from transformers import GenerationConfig, LlavaOnevisionForConditionalGeneration

    if image_size % patch_size:
        raise ValueError(f"image_size {image_size} must be a multiple of patch_size {patch_size}")
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in SPECIAL_TOKENS}
    config = _config(
        ids, len(tokenizer), vision_layers=vision_layers, llm_layers=llm_layers,
        image_size=image_size, patch_size=patch_size, vision_hidden=vision_hidden,
        vision_heads=vision_heads, hidden_size=hidden_size,
        intermediate_size=intermediate_size, heads=heads, kv_heads=kv_heads,
        initializer_range=initializer_range,
    )
    torch.manual_seed(seed)
    model = LlavaOnevisionForConditionalGeneration(config).eval()
    with torch.no_grad():  # vision weights at the same scale as the LLM's
        for name, param in model.model.vision_tower.named_parameters():
            if name.endswith("weight") and param.dim() == 2:
                param.normal_(0.0, initializer_range)
    model.generation_config = GenerationConfig(
        eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"], do_sample=False
    )
    return model, _processor(tokenizer, config, image_size, patch_size)


def _config(ids: dict[str, int], vocab_size: int, *, vision_layers: int, llm_layers: int,
            image_size: int, patch_size: int, vision_hidden: int, vision_heads: int,
            hidden_size: int, intermediate_size: int, heads: int, kv_heads: int,
            initializer_range: float) -> Any:
    """The `LlavaOnevisionConfig`: a SigLIP tower without its head, a Qwen2 decoder with the
    tokenizer's special tokens, the full patch grid as the features (`build_model`'s sizes)."""
    from transformers import LlavaOnevisionConfig, Qwen2Config, SiglipVisionConfig

    vision = SiglipVisionConfig(
        hidden_size=vision_hidden,
        intermediate_size=2 * vision_hidden,
        num_hidden_layers=vision_layers,
        num_attention_heads=vision_heads,
        image_size=image_size,
        patch_size=patch_size,
        vision_use_head=False,
    )
    text = Qwen2Config(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=llm_layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=4096,
        initializer_range=initializer_range,
        tie_word_embeddings=False,
        bos_token_id=None,
        eos_token_id=ids["<|im_end|>"],
        pad_token_id=ids["<|endoftext|>"],
    )
    return LlavaOnevisionConfig(
        vision_config=vision.to_dict(),
        text_config=text.to_dict(),
        image_token_id=ids["<image>"],
        video_token_id=ids["<video>"],
        vision_feature_layer=-1,
        vision_feature_select_strategy="full",
        projector_hidden_act="gelu",
        multimodal_projector_bias=True,
        image_grid_pinpoints=[[image_size, image_size], [image_size, 2 * image_size]],
        vision_aspect_ratio="anyres_max_9",
        tie_word_embeddings=False,
        initializer_range=initializer_range,
    )


def _processor(tokenizer: Any, config: Any, image_size: int, patch_size: int) -> Any:
    from transformers import (
        LlavaOnevisionImageProcessor,
        LlavaOnevisionProcessor,
        LlavaOnevisionVideoProcessor,
    )

    common = {
        "size": {"height": image_size, "width": image_size},
        "image_mean": [0.5, 0.5, 0.5],
        "image_std": [0.5, 0.5, 0.5],
    }
    return LlavaOnevisionProcessor(
        image_processor=LlavaOnevisionImageProcessor(
            **common, image_grid_pinpoints=config.image_grid_pinpoints
        ),
        video_processor=LlavaOnevisionVideoProcessor(**common),
        tokenizer=tokenizer,
        num_image_tokens=(image_size // patch_size) ** 2,
        vision_feature_select_strategy="full",
        chat_template=CHAT_TEMPLATE,
        vision_aspect_ratio="anyres_max_9",
    )


def save_checkpoint(model: Any, processor: Any, path: str | Path) -> Path:
    """Write model (safetensors) and processor to `path` as `from_pretrained` reads them."""
    path = Path(path)
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


# ------------------------------------------------------------------------- Qwen2.5-VL
QWEN_VL_TOKENS = ("<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>")

# Qwen2-VL's conversation (the hub checkpoints' template, written here in our own words): the
# default system prompt, each image / video as <|vision_start|><|..._pad|><|vision_end|> where it
# stands in the content, text as is; no newline between the video and the text.
QWEN_VL_CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if loop.first and message['role'] != 'system' -%}"
    "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}"
    "{%- endif -%}"
    "{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{%- if message['content'] is string -%}{{ message['content'] }}"
    "{%- else -%}{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'image' -%}{{ '<|vision_start|><|image_pad|><|vision_end|>' }}"
    "{%- elif part['type'] == 'video' -%}{{ '<|vision_start|><|video_pad|><|vision_end|>' }}"
    "{%- elif part['type'] == 'text' -%}{{ part['text'] }}"
    "{%- endif -%}{%- endfor -%}{%- endif -%}"
    "{{ '<|im_end|>\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}"
)


def write_tiny_qwen2_5_vl(path: str | Path, seed: int = 0, **geometry: Any) -> Path:
    """Write a random `Qwen2_5_VLForConditionalGeneration` checkpoint (+ processor) to `path`.

    Toy sizes of the real architecture: a vision tower of 2 blocks (32 wide, 4 heads; 2 px
    patches, temporal patch 2, window attention in 16 px windows for block 0, full attention in
    block 1, the 2x2 patch merger to 64), a Qwen2 decoder of 4 layers (64 wide, 4 query / 2
    key-value heads, head_dim 16, M-RoPE sections [2, 3, 3] = head_dim / 2). The processor's
    video pixel bounds are lmms-eval's qwen2_5_vl defaults counted in merged tokens (256 and
    2048 tokens' worth of (patch x merge)^2 pixels; 200704 and 1605632 px on the 7B), so 56 x 56
    frames resize to 64 x 64: 32 x 32 patches, 16 x 16 = 256 tokens per temporal patch.
    `geometry` overrides `build_qwen2_5_vl`'s sizes. Returns the path.
    """
    tokenizer = byte_tokenizer(extra=QWEN_VL_TOKENS)
    tokenizer.chat_template = QWEN_VL_CHAT_TEMPLATE
    model, processor = build_qwen2_5_vl(tokenizer, seed, **geometry)
    return save_checkpoint(model, processor, path)


def build_qwen2_5_vl(
    tokenizer: Any,
    seed: int = 0,
    *,
    vision_layers: int = 2,
    llm_layers: int = 4,
    patch_size: int = 2,
    window_size: int = 16,
    vision_hidden: int = 32,
    vision_heads: int = 4,
    hidden_size: int = 64,
    intermediate_size: int = 128,
    heads: int = 4,
    kv_heads: int = 2,
    initializer_range: float = 0.2,
    tokens_per_second: int = 2,
    frame_tokens: tuple[int, int] = (256, 2048),
) -> tuple[Any, Any]:
    """A freshly initialised `Qwen2_5_VLForConditionalGeneration` around `tokenizer` and its
    processor -> (model, processor). Seeded: same seed, same weights.

    tokens_per_second: M-RoPE temporal ids per second of video (the 7B's 2).
    frame_tokens: the processor's (min, max) merged tokens per frame (lmms-eval's 256, 2048).
    """
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS + list(QWEN_VL_TOKENS)}
    head_dim = hidden_size // heads
    third = head_dim // 2 // 3
    mrope = [head_dim // 2 - 2 * third, third, third]
    vision = {
        "depth": vision_layers, "hidden_size": vision_hidden,
        "intermediate_size": 2 * vision_hidden, "num_heads": vision_heads,
        "patch_size": patch_size, "temporal_patch_size": 2, "spatial_merge_size": 2,
        "window_size": window_size, "out_hidden_size": hidden_size,
        "tokens_per_second": tokens_per_second,
        "fullatt_block_indexes": [vision_layers - 1], "initializer_range": initializer_range,
    }
    text = _qwen_text(len(tokenizer), ids, hidden_size, intermediate_size, llm_layers, heads,
                      kv_heads, initializer_range, {"mrope_section": mrope})
    model = _qwen_vl_model(Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, ids, vision,
                           text, seed, initializer_range)
    return model, _qwen_processor(tokenizer, patch_size, frame_tokens)


def _qwen_processor(tokenizer: Any, patch_size: int,
                    frame_tokens: tuple[int, int] = (256, 2048)) -> Any:
    """Qwen2.5-VL's processor at the tiny patch size; pixel bounds of `frame_tokens` merged
    tokens per frame (`write_tiny_qwen2_5_vl`)."""
    from transformers import Qwen2_5_VLProcessor, Qwen2VLImageProcessor, Qwen2VLVideoProcessor

    common = _qwen_processor_settings(patch_size, frame_tokens)
    return Qwen2_5_VLProcessor(
        image_processor=Qwen2VLImageProcessor(**common),
        video_processor=Qwen2VLVideoProcessor(**common, cap_pixels_per_frame=False),
        tokenizer=tokenizer,
        chat_template=QWEN_VL_CHAT_TEMPLATE,
    )


# --------------------------------------------------------------------------- Qwen3-VL
def write_tiny_qwen3_vl(path: str | Path, seed: int = 0, **geometry: Any) -> Path:
    """Write a random `Qwen3VLForConditionalGeneration` checkpoint (+ processor) to `path`.

    Toy sizes of the real architecture: a vision tower of 3 blocks (32 wide, 4 heads, 2 px
    patches, temporal patch 2, learned position grid of 16 x 16 interpolated per video, the 2x2
    merger to 64) with DeepStack taps after blocks 0 and 1 (the 8B's [8, 16, 24]: features fed
    to the first LLM layers), a Qwen3 decoder of 4 layers (64 wide, 4 query / 2 key-value heads,
    head_dim 16, q/k RMS norms, interleaved M-RoPE sections [4, 2, 2] = head_dim / 2). Pixel
    bounds as `write_tiny_qwen2_5_vl`. `geometry` overrides `build_qwen3_vl`. Returns the path.
    """
    tokenizer = byte_tokenizer(extra=QWEN_VL_TOKENS)
    tokenizer.chat_template = QWEN_VL_CHAT_TEMPLATE
    model, processor = build_qwen3_vl(tokenizer, seed, **geometry)
    return save_checkpoint(model, processor, path)


def build_qwen3_vl(
    tokenizer: Any,
    seed: int = 0,
    *,
    vision_layers: int = 3,
    deepstack: tuple[int, ...] = (0, 1),
    llm_layers: int = 4,
    patch_size: int = 2,
    vision_hidden: int = 32,
    vision_heads: int = 4,
    hidden_size: int = 64,
    intermediate_size: int = 128,
    heads: int = 4,
    kv_heads: int = 2,
    initializer_range: float = 0.2,
) -> tuple[Any, Any]:
    """A freshly initialised `Qwen3VLForConditionalGeneration` around `tokenizer` and its
    processor -> (model, processor). Seeded: same seed, same weights."""
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS + list(QWEN_VL_TOKENS)}
    head_dim = hidden_size // heads
    half = head_dim // 2
    mrope = [half - 2 * (half // 4), half // 4, half // 4]
    vision = {
        "depth": vision_layers, "hidden_size": vision_hidden,
        "intermediate_size": 2 * vision_hidden, "num_heads": vision_heads,
        "patch_size": patch_size, "temporal_patch_size": 2, "spatial_merge_size": 2,
        "out_hidden_size": hidden_size, "num_position_embeddings": 256,
        "deepstack_visual_indexes": list(deepstack), "initializer_range": initializer_range,
    }
    text = _qwen_text(len(tokenizer), ids, hidden_size, intermediate_size, llm_layers, heads,
                      kv_heads, initializer_range,
                      {"mrope_section": mrope, "mrope_interleaved": True}, head_dim=head_dim)
    model = _qwen_vl_model(Qwen3VLConfig, Qwen3VLForConditionalGeneration, ids, vision, text,
                           seed, initializer_range)
    return model, _qwen3_processor(tokenizer, patch_size)


def _qwen_text(vocab_size: int, ids: dict[str, int], hidden_size: int, intermediate_size: int,
               llm_layers: int, heads: int, kv_heads: int, initializer_range: float,
               rope: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """The text-model config both tiny Qwen-VL builders share: a 4096-position decoder with
    default RoPE (theta 1e4) plus `rope`'s M-RoPE keys, untied head, <|im_end|> to stop."""
    return {
        "vocab_size": vocab_size, "hidden_size": hidden_size,
        "intermediate_size": intermediate_size, "num_hidden_layers": llm_layers,
        "num_attention_heads": heads, "num_key_value_heads": kv_heads, **extra,
        "max_position_embeddings": 4096, "initializer_range": initializer_range,
        "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, **rope},
        "bos_token_id": None, "eos_token_id": ids["<|im_end|>"],
        "pad_token_id": ids["<|endoftext|>"], "tie_word_embeddings": False,
    }


def _qwen_processor_settings(patch_size: int, frame_tokens: tuple[int, int]) -> dict[str, Any]:
    """Image / video processor settings at `patch_size`: 2x2 merge, temporal patch 2, pixel
    bounds of `frame_tokens` (min, max) merged tokens per frame."""
    unit = (patch_size * 2) ** 2  # pixels of one merged token
    return {
        "patch_size": patch_size, "merge_size": 2, "temporal_patch_size": 2,
        "size": {"shortest_edge": frame_tokens[0] * unit, "longest_edge": frame_tokens[1] * unit},
    }


def _qwen_vl_model(config_class: Any, model_class: Any, ids: dict[str, int], vision: dict,
                   text: dict, seed: int, initializer_range: float) -> Any:
    """A seeded Qwen-VL model of `config_class` / `model_class` with the vision tower's
    matrices drawn at the LLM's scale and greedy generation ending at <|im_end|>."""
    import torch
    from transformers import GenerationConfig

    config = config_class(
        vision_config=vision, text_config=text, image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"], vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"], tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = model_class(config).eval()
    with torch.no_grad():  # vision weights at the same scale as the LLM's
        for name, param in model.model.visual.named_parameters():
            if name.endswith("weight") and param.dim() >= 2:
                param.normal_(0.0, initializer_range)
    model.generation_config = GenerationConfig(
        eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"], do_sample=False
    )
    return model


def _qwen3_processor(tokenizer: Any, patch_size: int) -> Any:
    """Qwen3-VL's processor at the tiny patch size; pixel bounds as `_qwen_processor`."""
    from transformers import Qwen2VLImageProcessor, Qwen3VLProcessor, Qwen3VLVideoProcessor

    common = _qwen_processor_settings(patch_size, (256, 2048))
    return Qwen3VLProcessor(
        image_processor=Qwen2VLImageProcessor(**common),
        video_processor=Qwen3VLVideoProcessor(**common),
        tokenizer=tokenizer,
        chat_template=QWEN_VL_CHAT_TEMPLATE,
    )

"""The micro video-LLMs: LLaVA-OneVision and Qwen2.5-VL at laptop size, own trained tokenizers.

A real `LlavaOnevisionForConditionalGeneration` (SigLIP tower -> 2-layer MLP projector -> 2x2
bilinear pooling -> Qwen2 decoder) small enough to train on two CPU cores in minutes
(`scissorbench train-micro`) and to ship in the repository (`checkpoints/micro`, loaded with
`from_pretrained` like any hub checkpoint: `model=micro`). It is trained on the project's
synthetic video QA (`synthetic.task`), so that, unlike the random `tiny` model, its
accuracy responds to what a compressor keeps.

Geometry (`GEOMETRY`): 64 px frames in 8 px patches -> 8 x 8 patches -> pooled 4 x 4 = 16 tokens
per frame, 8 frames -> 128 visual tokens; vision 96 wide x 2 layers; LLM 128 wide x 4 layers
(4 query heads over 2 key/value heads), so FastV's default K = 3 leaves one pruned layer.

The micro Qwen2.5-VL (`new_micro_qwen2_5_vl`, `QWEN_GEOMETRY`, `checkpoints/micro_qwen2_5_vl`,
`model=micro_qwen2_5_vl`) is a real `Qwen2_5_VLForConditionalGeneration` of the same widths:
8 px patches, temporal patch 2, 2x2 merger -> 64 px frames give 4 x 4 = 16 tokens per temporal
patch; 16 frames -> 8 temporal patches -> 128 visual tokens, as the LLaVA micro. Window attention
in 32 px windows in block 0, full attention in block 1 (as the 7B's last block); M-RoPE sections
[6, 5, 5] of head_dim 32. Its processor keeps frames at 64 x 64 (`min_pixels = max_pixels =
4096`, the model config passes the same bounds, as lmms-eval's `qwen2_5_vl` takes them).
`tokens_per_second` is 12, not the 7B's 2: the lmms-eval protocol passes bare frames, so the
processor assumes 24 fps, and 2 frames per temporal patch x 12 / 24 = one temporal id per patch;
at 2 the eight patches would share two ids and frame order would be invisible to the LLM.

The tokenizer is byte-level BPE (any text encodes) trained with the `tokenizers` library on the
task's own wording (system prompt, questions, options, answer instructions), so that a prompt is
about 60 tokens instead of about 250 single bytes.
"""

from __future__ import annotations

from typing import Any

from backbones.tiny import SPECIAL_TOKENS, build_model, wrap_tokenizer

__all__ = [
    "GEOMETRY", "QWEN_GEOMETRY", "QWEN_PIXELS", "VOCAB_SIZE", "corpus", "new_micro_model",
    "new_micro_qwen2_5_vl", "train_tokenizer",
]

GEOMETRY: dict[str, Any] = {
    "image_size": 64,
    "patch_size": 8,
    "vision_hidden": 96,
    "vision_layers": 2,
    "vision_heads": 4,
    "hidden_size": 128,
    "intermediate_size": 384,
    "llm_layers": 4,
    "heads": 4,
    "kv_heads": 2,
    "initializer_range": 0.02,
}
QWEN_GEOMETRY: dict[str, Any] = {
    "patch_size": 8,
    "window_size": 32,
    "vision_hidden": 96,
    "vision_layers": 2,
    "vision_heads": 4,
    "hidden_size": 128,
    "intermediate_size": 384,
    "llm_layers": 4,
    "heads": 4,
    "kv_heads": 2,
    "initializer_range": 0.02,
    "tokens_per_second": 12,
    "frame_tokens": (16, 16),
}
QWEN_PIXELS = 16 * (8 * 2) ** 2  # min = max pixels per frame: 16 merged tokens (64 x 64)
VOCAB_SIZE = 512


def corpus(seed: int = 1, items: int = 2000, system_prompt: str | None = None) -> list[str]:
    """The texts the tokenizer is trained on: the system prompt (LLaVA-OneVision's unless
    given), the prompts of `items` training questions (`synthetic.task`, split seed `seed`) and
    the answer letters."""
    from backbones.llava_onevision import SYSTEM_PROMPT
    from synthetic.task import LETTERS, format_open_prompt, format_prompt, make_item

    texts = [system_prompt or SYSTEM_PROMPT, "system\n", "user\n", "assistant\n", *LETTERS]
    for index in range(items):
        item = make_item(seed, index)
        texts.append(format_prompt(item.question, item.options))
        texts.append(format_open_prompt(item.question))
    return texts


def train_tokenizer(texts: list[str], vocab_size: int = VOCAB_SIZE, **wrap: Any) -> Any:
    """Byte-level BPE with `vocab_size` entries learned from `texts`, plus the special tokens and
    the qwen_2 chat template, as a transformers fast tokenizer. Deterministic for equal input."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    core.train_from_iterator(texts, trainer=trainer)
    return wrap_tokenizer(core, **wrap)


def new_micro_model(seed: int = 0, tokenizer: Any = None) -> tuple[Any, Any]:
    """An untrained micro model and its processor -> (model, processor); the tokenizer is
    trained on `corpus()` unless given. The special tokens come after the learned vocabulary."""
    tokenizer = tokenizer if tokenizer is not None else train_tokenizer(corpus())
    missing = [t for t in SPECIAL_TOKENS if tokenizer.convert_tokens_to_ids(t) is None]
    if missing:
        raise ValueError(f"the tokenizer lacks the special tokens {missing}")
    return build_model(tokenizer, seed, **GEOMETRY)


def new_micro_qwen2_5_vl(seed: int = 0, tokenizer: Any = None) -> tuple[Any, Any]:
    """An untrained micro Qwen2.5-VL and its processor -> (model, processor): `QWEN_GEOMETRY`,
    a tokenizer trained on `corpus()` with Qwen2-VL's system prompt, vision tokens and chat
    template unless given."""
    from backbones.qwen2_5_vl import SYSTEM_PROMPT
    from backbones.tiny import QWEN_VL_CHAT_TEMPLATE, QWEN_VL_TOKENS, build_qwen2_5_vl

    if tokenizer is None:
        tokenizer = train_tokenizer(corpus(system_prompt=SYSTEM_PROMPT), extra=QWEN_VL_TOKENS,
                                    chat_template=QWEN_VL_CHAT_TEMPLATE)
    return build_qwen2_5_vl(tokenizer, seed, **QWEN_GEOMETRY)

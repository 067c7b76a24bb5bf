"""The micro video-LLM: LLaVA-OneVision at laptop size, with its own trained tokenizer.

A real `LlavaOnevisionForConditionalGeneration` (SigLIP tower -> 2-layer MLP projector -> 2x2
bilinear pooling -> Qwen2 decoder) small enough to train on two CPU cores in minutes
(`scissorbench train-micro`) and to ship in the repository (`checkpoints/micro`, loaded with
`from_pretrained` like any hub checkpoint: `model=micro`). It is trained on the project's
synthetic video QA (`synthetic.task`), so that, unlike the random `tiny` model, its
accuracy responds to what a compressor keeps.

Geometry (`GEOMETRY`): 64 px frames in 8 px patches -> 8 x 8 patches -> pooled 4 x 4 = 16 tokens
per frame, 8 frames -> 128 visual tokens; vision 96 wide x 2 layers; LLM 128 wide x 4 layers
(4 query heads over 2 key/value heads), so FastV's default K = 3 leaves one pruned layer.

The tokenizer is byte-level BPE (any text encodes) trained with the `tokenizers` library on the
task's own wording (system prompt, questions, options, answer instructions), so that a prompt is
about 60 tokens instead of about 250 single bytes.
"""

from __future__ import annotations

from typing import Any

from backbones.tiny import SPECIAL_TOKENS, build_model, wrap_tokenizer

__all__ = ["GEOMETRY", "VOCAB_SIZE", "corpus", "new_micro_model", "train_tokenizer"]

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
VOCAB_SIZE = 512


def corpus(seed: int = 1, items: int = 2000) -> list[str]:
    """The texts the tokenizer is trained on: the system prompt, the prompts of `items` training
    questions (`synthetic.task`, split seed `seed`) and the answer letters."""
    from backbones.llava_onevision import SYSTEM_PROMPT
    from synthetic.task import LETTERS, format_open_prompt, format_prompt, make_item

    texts = [SYSTEM_PROMPT, "system\n", "user\n", "assistant\n", *LETTERS]
    for index in range(items):
        item = make_item(seed, index)
        texts.append(format_prompt(item.question, item.options))
        texts.append(format_open_prompt(item.question))
    return texts


def train_tokenizer(texts: list[str], vocab_size: int = VOCAB_SIZE) -> Any:
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
    return wrap_tokenizer(core)


def new_micro_model(seed: int = 0, tokenizer: Any = None) -> tuple[Any, Any]:
    """An untrained micro model and its processor -> (model, processor); the tokenizer is
    trained on `corpus()` unless given. The special tokens come after the learned vocabulary."""
    tokenizer = tokenizer if tokenizer is not None else train_tokenizer(corpus())
    missing = [t for t in SPECIAL_TOKENS if tokenizer.convert_tokens_to_ids(t) is None]
    if missing:
        raise ValueError(f"the tokenizer lacks the special tokens {missing}")
    return build_model(tokenizer, seed, **GEOMETRY)

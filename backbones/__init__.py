"""Model adapters: how to reach a video LLM's visual features, decoder layers and KV cache.

Compressors (`compressors/`) are pure tensor functions; an adapter applies one to a model:
before the LLM (on the pooled features [T, N, D]) or inside it (FastV at decoder layer K).

>>> import backbones, compressors
>>> llm = backbones.load("llava-hf/llava-onevision-qwen2-0.5b-ov-hf", dtype="bfloat16",
...                      device="cuda")
>>> prepared = llm.prepare(frames, compressors.build("scc", retention=0.1))   # [T, H, W, 3]
>>> text, acc = llm.generate(prepared, "What happens in the video?")
>>> acc.visual_tokens, acc.visual_tokens_fed, acc.tokens_per_layer, acc.achieved_retention

One adapter file per model family, over the shared decoder loop (`backbones.decoder`):
`LlavaOnevisionAdapter` (transformers' LLaVA-OneVision: SigLIP + projector + 2x2 bilinear
pooling + Qwen2), its subclass `LlavaVideoAdapter` (LLaVA-Video in the LLaVA-NeXT layout: 2x2
average pooling to 13x13 and a newline after every frame row, as lmms-eval's `llava_vid` runs
it) and `Qwen25VLAdapter` (Qwen2.5-VL: temporal patches, 2x2 merge, M-RoPE);
`load` picks one by the checkpoint's `model_type`. Each takes a position policy for pre-LLM
methods (`positions`: "original" or "contiguous", default what its references do).
`backbones.tiny` writes random toy checkpoints of both classes that load through the same code;
`backbones.llava_next` converts LLaVA-NeXT checkpoints (the paper's baselines), which `load`
does on the fly.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from backbones.base import POSITIONS, Accounting, Prefill, Prepared, VideoLLM, check_positions
from backbones.preprocess import PREPROCESS, check_preprocess

__all__ = [
    "DTYPES",
    "POSITIONS",
    "PREPROCESS",
    "Accounting",
    "Prefill",
    "Prepared",
    "VideoLLM",
    "check_positions",
    "TINY_CHECKPOINTS",
    "fingerprint",
    "load",
    "write_tiny",
]

DTYPES = ("float32", "bfloat16", "float16", "auto")


def load(
    pretrained: str,
    *,
    dtype: str = "float32",
    device: str = "cpu",
    attn_implementation: str = "sdpa",
    video_newline: bool = False,
    preprocess: str | None = None,
    positions: str | None = None,
    min_pixels: int | None = None,
    max_pixels: int | None = None,
    vision_head: str | None = None,
) -> VideoLLM:
    """Load a LLaVA-OneVision or Qwen2.5-VL checkpoint (hub id or local directory) as a
    `VideoLLM`; the adapter is chosen by the checkpoint config's `model_type`
    ("qwen2_5_vl": `Qwen25VLAdapter`, "qwen3_vl": `Qwen3VLAdapter`, anything else:
    `LlavaOnevisionAdapter`).

    pretrained:          hub id (e.g. "llava-hf/llava-onevision-qwen2-0.5b-ov-hf") or a local
                         directory; a LLaVA-NeXT checkpoint is converted once first
                         (`backbones.llava_next.ensure_converted`).
    dtype:               "float32", "bfloat16", "float16" or "auto" (the checkpoint's).
    attn_implementation: passed to `from_pretrained` ("sdpa", "flash_attention_2", "eager").
    video_newline:       append the model's newline embedding after the video (transformers'
                         layout); False is the paper's flat layout. On a LLaVA-Video
                         checkpoint (`backbones.llava_video.video_layout`: converted, its
                         `mm_newline_position` "grid"): True places `image_newline` after
                         every frame row that keeps a token, as LLaVA-NeXT, FastVID, HoliTom.
    preprocess:          how frames become pixel values: "llava_next" (LLaVA-NeXT's SigLIP
                         processor, PIL bicubic: `backbones.preprocess`) or "hf" (the
                         checkpoint's transformers processor). None: "llava_next" for a
                         checkpoint converted from the LLaVA-NeXT layout, else "hf". The
                         adapter's `preprocess` attribute says which ran.
    positions:           position ids after a pre-LLM compressor (METHODS.md section 11):
                         "original" (each fed token keeps its full-sequence position, text too,
                         decoding continues from the full length) or "contiguous" (the
                         compressed sequence numbered as the whole prompt). None: the
                         backbone's reference default, "contiguous" on LLaVA-OneVision
                         (LLaVA-Scissor), "original" on Qwen2.5-VL (FastVID, FlashVID, VidCom2,
                         LightCompress); the adapter's `positions` attribute says which.
    min_pixels, max_pixels: Qwen-VL only: per-frame pixel bounds of the processor's resize, as
                         lmms-eval's `qwen2_5_vl` model arguments; None: lmms-eval's defaults
                         (the adapter's `pixels` attribute says which ran). An error on other
                         backbones, whose frames are resized to the tower's fixed size.
    vision_head:         LLaVA only: hub id or directory of the SigLIP checkpoint whose
                         post_layernorm + attention-pooling head give FastVID's signals
                         (`backbones.siglip_head`; google/siglip-so400m-patch14-384 for the
                         real LLaVA checkpoints), loaded only when a compressor asks for them;
                         None: none. An error on Qwen-VL, whose FastVID signals come from its
                         own tower.
    Raises ValueError for a bad `dtype`, `preprocess` or `positions` before anything loads,
    and OSError
    naming `pretrained` when it is neither a directory nor loadable from the hub (offline: not
    in the local cache).
    """
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    check_preprocess(preprocess)
    check_positions(positions)
    for name, value in (("min_pixels", min_pixels), ("max_pixels", max_pixels)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                  or value < 1):
            raise ValueError(f"{name} must be a positive number of pixels, got {value!r}")
    if vision_head is not None and (not isinstance(vision_head, str) or not vision_head):
        raise ValueError(f"vision_head must be a SigLIP hub id or directory, got {vision_head!r}")
    import torch
    from transformers import AutoConfig, AutoProcessor, LlavaOnevisionForConditionalGeneration

    from backbones.llava_next import ensure_converted, is_converted
    from backbones.llava_onevision import LlavaOnevisionAdapter
    from backbones.llava_video import LlavaVideoAdapter, video_layout

    path = ensure_converted(pretrained)
    torch_dtype: Any = dtype if dtype == "auto" else getattr(torch, dtype)
    try:
        kind = getattr(AutoConfig.from_pretrained(path), "model_type", "llava_onevision")
        if kind in ("qwen2_5_vl", "qwen3_vl") and vision_head is not None:
            raise ValueError(
                f"vision_head applies to LLaVA (SigLIP) checkpoints only; {pretrained!r} is "
                f"{kind!r}, whose FastVID signals come from its own vision tower: remove it"
            )
        if kind in ("qwen2_5_vl", "qwen3_vl"):
            return _load_qwen_vl(kind, path, torch_dtype, device, attn_implementation,
                                 positions, min_pixels, max_pixels)
        if min_pixels is not None or max_pixels is not None:
            raise ValueError(
                f"min_pixels / max_pixels apply to Qwen-VL checkpoints only; {pretrained!r} is "
                f"{kind!r}, whose frames are resized to its vision tower's size: remove them"
            )
        processor = AutoProcessor.from_pretrained(path)
        model = LlavaOnevisionForConditionalGeneration.from_pretrained(
            path, dtype=torch_dtype, attn_implementation=attn_implementation
        )
    except OSError as err:
        raise OSError(
            f"backbones.load: cannot load {pretrained!r}: it is not a checkpoint directory and "
            f"could not be fetched from the Hugging Face hub (offline, or not in the local "
            f"cache?): {err}"
        ) from err
    model.to(device)
    if preprocess is None:
        preprocess = "llava_next" if is_converted(path) else "hf"
    layout = video_layout(path)
    if layout is not None:  # LLaVA-Video: LLaVA-NeXT's pooling and grid newlines
        return LlavaVideoAdapter(
            model, processor, layout=layout, video_newline=video_newline,
            preprocess=preprocess, positions=positions, vision_head=vision_head,
        )
    return LlavaOnevisionAdapter(
        model, processor, video_newline=video_newline, preprocess=preprocess, positions=positions,
        vision_head=vision_head,
    )


def _load_qwen_vl(
    kind: str, path: str, dtype: Any, device: str, attn_implementation: str,
    positions: str | None, min_pixels: int | None, max_pixels: int | None,
) -> VideoLLM:
    """A Qwen2.5-VL or Qwen3-VL checkpoint as `Qwen25VLAdapter` / `Qwen3VLAdapter` (its
    processor; lmms-eval's pixel bounds). `video_newline` and `preprocess` do not apply (the
    processor's preprocessing always)."""
    from transformers import (
        AutoProcessor,
        Qwen2_5_VLForConditionalGeneration,
        Qwen3VLForConditionalGeneration,
    )

    from backbones.qwen2_5_vl import Qwen25VLAdapter
    from backbones.qwen3_vl import Qwen3VLAdapter

    model_class, adapter = {
        "qwen2_5_vl": (Qwen2_5_VLForConditionalGeneration, Qwen25VLAdapter),
        "qwen3_vl": (Qwen3VLForConditionalGeneration, Qwen3VLAdapter),
    }[kind]
    processor = AutoProcessor.from_pretrained(path)
    model = model_class.from_pretrained(path, dtype=dtype, attn_implementation=attn_implementation)
    return adapter(model.to(device), processor, positions=positions, min_pixels=min_pixels,
                   max_pixels=max_pixels)


# The random checkpoints a model config can ask the runner to write (`create_if_missing`).
TINY_CHECKPOINTS = {
    "tiny": "backbones.tiny:write_tiny_checkpoint",
    "tiny_qwen2_5_vl": "backbones.tiny:write_tiny_qwen2_5_vl",
    "tiny_llava_video": "backbones.tiny_llava_next:write_tiny_llava_video",
    "tiny_qwen3_vl": "backbones.tiny:write_tiny_qwen3_vl",
}


def write_tiny(name: str, path: str | Path) -> Path:
    """Write the tiny checkpoint `name` (a key of `TINY_CHECKPOINTS`) to `path`."""
    import importlib

    if name not in TINY_CHECKPOINTS:
        raise ValueError(f"no tiny checkpoint {name!r}; known: {', '.join(TINY_CHECKPOINTS)}")
    module, function = TINY_CHECKPOINTS[name].split(":")
    return getattr(importlib.import_module(module), function)(path)


def fingerprint(pretrained: str) -> str | None:
    """A digest of a local checkpoint's config and weights; None for a hub id.

    Part of a run's key and of the feature cache's: a checkpoint retrained in place (e.g.
    `scissorbench train-micro --output checkpoints/micro`) must not reuse old results.
    """
    root = Path(pretrained)
    if not root.is_dir():
        return None
    digest = hashlib.sha256()
    for path in sorted(root.glob("*.json")) + sorted(root.glob("*.safetensors")):
        digest.update(path.name.encode())
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]

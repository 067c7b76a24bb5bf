"""Frame preprocessing as the reference implementation does it: LLaVA-NeXT's SigLIP processor.

The official LLaVA-Scissor / LLaVA-NeXT code (and lmms-eval's `llava_onevision` model) turns a
video's uint8 frames [T, H, W, 3] into pixel values with
`image_processor.preprocess(frames, return_tensors="pt")["pixel_values"]`, where the image
processor is LLaVA-NeXT's own `SigLipImageProcessor`
(`llava/model/multimodal_encoder/siglip_encoder.py`, lines 34-67 at github.com/LLaVA-VL/LLaVA-NeXT
commit df179663ae8b83207df100a1f7af24caec633ff9; identical in the LLaVA-Scissor fork
github.com/HumanMLLM/LLaVA-Scissor at b63354c81e55c82e5d48ced3c993454183b79425), built with its
defaults (`SigLipVisionTower.__init__`, line 548): size (384, 384), mean = std = (0.5, 0.5, 0.5),
resample PIL bicubic, rescale factor 1/255, channels first. Per frame it applies, in this order,
transformers' `image_transforms` functions:

1. `convert_to_rgb`, `to_numpy_array`: a uint8 RGB frame stays the same uint8 [H, W, 3] array.
2. `resize(size=(384, 384), resample=BICUBIC, data_format=FIRST)`: the uint8 array becomes a
   PIL image as it is (`Image.fromarray`, no rescaling: uint8 needs none), PIL's
   `Image.resize((width, height), BICUBIC, reducing_gap=None)` resamples it (PIL's own 8-bit
   rounding and clipping), and the result comes back as a uint8 array, moved to [3, S, S].
3. `rescale(scale=1/255)`: float64(x) * (1/255), then cast to float32.
4. `normalize(mean, std)`: (x - mean) / std in float32, mean and std as float32 per channel.
5. `to_channel_dimension_format(FIRST)`: already channels first; `BatchFeature` stacks the frames
   into a float32 tensor [T, 3, S, S] (the callers then cast it, e.g. `.half()`).

transformers' own LLaVA-OneVision video processor (`preprocess="hf"`) resizes uint8 tensors with
torchvision instead, which puts a fraction of a percent of the pixel values one level apart
(METHODS.md section 10); `llava_next_pixels` reproduces the steps above exactly (equal to the
bit; `tests/test_preprocess.py` checks it against a plain PIL computation and against the output
of the official processor, `tests/fixtures/preprocess/`). One deliberate difference: the
official code infers the channel axis from the array's shape, so a frame whose height is 1 or 3
is misread as channels-first (height 1 raises, height 3 gives other values); here frames are
always [H, W, 3].

The checkpoint decides size, mean, std and rescale factor (`pixel_settings(processor)` reads them
from its transformers processor), so a tiny test model with 84 px frames runs the same steps;
for the real LLaVA-NeXT checkpoints the converter writes the official values.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

__all__ = ["PREPROCESS", "check_preprocess", "llava_next_pixels", "pixel_settings"]

PREPROCESS = ("llava_next", "hf")  # LLaVA-NeXT's SigLIP processor; transformers' processor
BICUBIC = Image.Resampling.BICUBIC


def check_preprocess(value: str | None) -> str | None:
    """`value` if it is one of PREPROCESS (or None: the checkpoint's default), else ValueError."""
    if value is not None and value not in PREPROCESS:
        raise ValueError(f"preprocess must be one of {PREPROCESS} (or None), got {value!r}")
    return value


def llava_next_pixels(
    frames: np.ndarray,
    size: tuple[int, int] = (384, 384),
    mean: Sequence[float] = (0.5, 0.5, 0.5),
    std: Sequence[float] = (0.5, 0.5, 0.5),
    resample: Any = BICUBIC,
    rescale: float = 1 / 255,
) -> Tensor:
    """Pixel values float32 [T, 3, height, width] of uint8 frames [T, H, W, 3], computed as
    LLaVA-NeXT's `SigLipImageProcessor.preprocess` does (module docstring, steps 1-5).

    size: (height, width) of the output; mean, std: one value per channel; resample: a PIL
    resampling filter; rescale: the factor applied before normalising.
    """
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 [T, H, W, 3], got {frames.dtype} {frames.shape}")
    height, width = (int(s) for s in size)
    mean32 = np.asarray(mean, dtype=np.float32).reshape(3, 1, 1)
    std32 = np.asarray(std, dtype=np.float32).reshape(3, 1, 1)
    out = np.empty((len(frames), 3, height, width), dtype=np.float32)
    for i, frame in enumerate(frames):
        image = Image.fromarray(np.ascontiguousarray(frame))  # mode "RGB"
        resized = np.asarray(image.resize((width, height), resample=resample, reducing_gap=None))
        scaled = (resized.transpose(2, 0, 1).astype(np.float64) * rescale).astype(np.float32)
        out[i] = (scaled - mean32) / std32
    return torch.from_numpy(out)


def pixel_settings(processor: Any) -> dict[str, Any]:
    """`llava_next_pixels` keyword arguments (size, mean, std, rescale) from a transformers
    processor: its video processor's settings, else its image processor's (or the processor
    itself). The size must be a fixed height x width, as LLaVA-NeXT's processor resizes to."""
    source = getattr(processor, "video_processor", None) or getattr(
        processor, "image_processor", processor
    )
    size = getattr(source, "size", None)
    get = size.get if isinstance(size, dict) else lambda key: getattr(size, key, None)
    height, width = get("height"), get("width")
    if not height or not width:
        raise ValueError(
            f"preprocess='llava_next' needs the processor's size as height x width, got {size!r}"
        )
    mean, std = list(source.image_mean), list(source.image_std)
    if len(mean) != 3 or len(std) != 3:
        raise ValueError(f"image_mean and image_std need 3 values each, got {mean!r}, {std!r}")
    rescale = getattr(source, "rescale_factor", None)
    return {
        "size": (int(height), int(width)),
        "mean": tuple(float(m) for m in mean),
        "std": tuple(float(s) for s in std),
        "rescale": float(rescale) if rescale is not None else 1 / 255,
    }

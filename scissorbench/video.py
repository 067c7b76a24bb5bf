"""Reading videos into frames, sampled the way lmms-eval's `llava_onevision` model samples them.

Frame sampling is part of the evaluation protocol (METHODS.md section 1): `num_frames` indices
`np.linspace(0, n - 1, num_frames, dtype=int)` over all `n` frames, decoded with decord on the
CPU. Every file problem surfaces as one `VideoError` that names the path and the reason.
"""

from __future__ import annotations

import os
import re

import decord
import numpy as np

__all__ = ["VideoError", "frame_indices", "sample_frames"]


class VideoError(ValueError):
    """A video file that cannot be sampled: missing, empty, undecodable or without frames."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        super().__init__(f"cannot read video {os.fspath(path)!r}: {reason}")
        self.path = os.fspath(path)
        self.reason = reason


def frame_indices(total: int, num_frames: int) -> np.ndarray:
    """`num_frames` indices spread uniformly over `total` frames, first and last included.

    Same rule as lmms-eval's `llava_onevision.load_video`; indices repeat when the video has
    fewer frames than requested.
    """
    return np.linspace(0, total - 1, num_frames, dtype=int)


def sample_frames(path: str | os.PathLike, num_frames: int) -> np.ndarray:
    """Decode `num_frames` uniformly spaced frames of a video file -> [T, H, W, 3] uint8 RGB."""
    if isinstance(num_frames, bool) or not isinstance(num_frames, (int, np.integer)):
        raise TypeError(f"num_frames must be a positive integer, got {num_frames!r}")
    if num_frames < 1:
        raise ValueError(f"num_frames must be a positive integer, got {num_frames}")
    path = os.fspath(path)
    if not os.path.exists(path):
        raise VideoError(path, "no such file")
    if not os.path.isfile(path):
        raise VideoError(path, "not a regular file")
    if os.path.getsize(path) == 0:
        raise VideoError(path, "the file is empty (0 bytes)")
    try:
        reader = decord.VideoReader(path, ctx=decord.cpu(0))
    except Exception as err:  # decord raises RuntimeError or its own DECORDError
        detail = _short(err)
        reason = "decord cannot open it; is it a corrupt, truncated or non-video file?"
        raise VideoError(path, f"{reason} ({detail})" if detail else reason) from err
    total = len(reader)
    if total == 0:
        raise VideoError(path, "the video has zero frames")
    try:
        frames = reader.get_batch(frame_indices(total, num_frames).tolist()).asnumpy()
    except Exception as err:
        raise VideoError(path, f"decoding frames failed ({_short(err) or err!r})") from err
    return frames


def _short(err: Exception) -> str:
    """The informative part of a decord error ("" when it says no more than "Error reading")."""
    first = (str(err).strip().splitlines() or [""])[0]
    if first.startswith("Error reading"):
        return ""
    text = first.split("ERROR ", 1)[-1]  # drop decord's "[time] file.cc:line: Check failed" prefix
    return re.sub(r"^\[[\d:]+\] \S+:\d+: ", "", text).strip()

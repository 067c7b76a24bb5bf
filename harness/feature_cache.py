"""On-disk cache of a video's vision-side work, shared by every run of a sweep.

Decoded frames and vision-tower features (after projector and pooling, plus the VisionZip
importance) depend on the model, the video file and the frame count, not on the compressor or
the retention: a sweep of N pre-LLM configurations pays the vision side once per video.
A video file is keyed by its path, size and mtime (a hit skips decoding); frames that reach the
model in memory or as image files (frame folders, PIL lists) by a digest of the sampled frames
themselves (`content_key`), so different frames never share an entry.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

CONTENT = "frames-sha256:"


def content_key(frames: np.ndarray) -> str:
    """The cache key of sampled frames [T, H, W, 3]: a digest of their shape, dtype and bytes."""
    frames = np.ascontiguousarray(frames)
    digest = hashlib.sha256(f"{frames.shape}|{frames.dtype}|".encode())
    digest.update(frames.data)
    return CONTENT + digest.hexdigest()


class FeatureCache:
    """`<root>/<key>.pt` per (model, video file or `content_key`, frames); a changed file gets a
    new key."""

    def __init__(self, root: str | os.PathLike[str], model_id: str, frames: int) -> None:
        self.root = Path(root)
        self.model_id = model_id
        self.frames = frames

    def path(self, video: str) -> Path:
        if video.startswith(CONTENT):
            identity: list = [self.model_id, self.frames, video]
        else:
            stat = os.stat(video)
            identity = [
                self.model_id,
                self.frames,
                os.path.realpath(video),
                stat.st_size,
                stat.st_mtime_ns,
            ]
        digest = hashlib.sha256(json.dumps(identity).encode()).hexdigest()[:24]
        return self.root / f"{digest}.pt"

    def load(self, video: str, need_importance: bool) -> tuple[Tensor, Tensor | None] | None:
        """(features [T, N, D], importance [T, N] or None), or None on a miss."""
        path = self.path(video)
        try:
            data = torch.load(path, map_location="cpu", weights_only=True)
        except (FileNotFoundError, RuntimeError, EOFError):
            return None
        if need_importance and data.get("importance") is None:
            return None
        return data["features"], data.get("importance")

    def save(self, video: str, features: Tensor, importance: Tensor | None) -> None:
        """Store atomically (temporary file, then rename): readers never see half a file."""
        self.root.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.root, suffix=".tmp")
        os.close(fd)
        try:
            payload = {"features": features.detach().cpu(), "importance": None}
            if importance is not None:
                payload["importance"] = importance.detach().cpu()
            torch.save(payload, tmp)
            os.replace(tmp, self.path(video))
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

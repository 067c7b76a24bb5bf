"""On-disk cache of a video's vision-side work, shared by every run of a sweep.

Decoded frames and vision-tower features (after projector and pooling, plus the VisionZip
importance) depend on the model, the video file and the frame count, not on the compressor or
the retention: a sweep of N pre-LLM configurations pays the vision side once per video.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import torch
from torch import Tensor


class FeatureCache:
    """`<root>/<key>.pt` per (model, video file, frames); a changed file gets a new key."""

    def __init__(self, root: str | os.PathLike[str], model_id: str, frames: int) -> None:
        self.root = Path(root)
        self.model_id = model_id
        self.frames = frames

    def path(self, video: str) -> Path:
        stat = os.stat(video)
        identity = [self.model_id, self.frames, os.path.realpath(video), stat.st_size,
                    stat.st_mtime_ns]
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

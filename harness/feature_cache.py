"""On-disk cache of a video's vision-side work, shared by every run of a sweep.

Decoded frames and vision-tower features (after projector and pooling, plus the model signals
computed with them: the VisionZip importance always, FastVID's `frame_features` /
`head_attention` when a configuration asks for them) depend on the model, the video file and
the frame count, not on the compressor or the retention: a sweep of N pre-LLM configurations
pays the vision side once per video. An entry that lacks a signal a configuration needs is a
miss: that configuration encodes the video again, with the signals it needs, and overwrites
the entry (so it holds the importance and those signals). The model id names everything the
signals depend on beyond the checkpoint (a configuration that reads `vision_head`'s signals
adds that checkpoint to it, `ScissorBench._load_model`), so a changed head never meets stale
signals and no other configuration's entries move.
A video file is keyed by its path, size and mtime (a hit skips decoding); frames that reach the
model in memory or as image files (frame folders, PIL lists) by a digest of the sampled frames
themselves (`content_key`), so different frames never share an entry.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterable
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

    def load(self, video: str, need: Iterable[str] = ()
             ) -> tuple[Tensor, dict[str, Tensor]] | None:
        """(features [T, N, D], {name: signal}), or None on a miss: no entry, or one without
        every signal of `need` (entries written before signals had names hold `importance`)."""
        path = self.path(video)
        try:
            data = torch.load(path, map_location="cpu", weights_only=True)
        except (FileNotFoundError, RuntimeError, EOFError):
            return None
        signals = dict(data.get("signals") or {})
        if data.get("importance") is not None:
            signals.setdefault("importance", data["importance"])
        if any(signals.get(name) is None for name in need):
            return None
        return data["features"], signals

    def save(self, video: str, features: Tensor, signals: dict[str, Tensor | None]) -> None:
        """Store atomically (temporary file, then rename): readers never see half a file."""
        self.root.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.root, suffix=".tmp")
        os.close(fd)
        try:
            kept = {k: v.detach().cpu() for k, v in signals.items() if v is not None}
            payload = {"features": features.detach().cpu(), "importance": kept.get("importance"),
                       "signals": kept}
            torch.save(payload, tmp)
            os.replace(tmp, self.path(video))
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

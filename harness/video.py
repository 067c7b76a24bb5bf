"""Reading videos into frames, sampled the way lmms-eval's `llava_onevision` model samples them.

Frame sampling is part of the evaluation protocol (METHODS.md section 1): `num_frames` indices
`np.linspace(0, n - 1, num_frames, dtype=int)` over all `n` frames, decoded with decord on the
CPU. Every file problem surfaces as one `VideoError` that names the path and the reason.

`parse_visual` + `sample_visual` apply the same rule to every form a task's `doc_to_visual`
gives (lmms-eval 0.7.3), always giving uint8 [T, H, W, 3] RGB:

- `[video_path]` (every video task scissorbench supports): decord over all frames. Further
  paths are ignored (`Visual.ignored`), as `llava_onevision.load_video` reads `video_path[0]`.
- `[folder]` or a folder path (MVBench frame folders: `mvbench_doc_to_visual` on a data copy
  that keeps frames): its image files (`FRAME_SUFFIXES`) in natural name order (frame_2 before
  frame_10).
- `[frame paths]`: image files, in the order given; only the sampled ones are opened.
- `[PIL images]` or numpy frames (`mvbench_frames_doc_to_visual`, `longvideobench_*_i`), in the
  order given: linspace over the list (lmms-eval's `metadata: {task_type: video,
  sample_frames: N}` path; without it `llava_onevision` would treat them as separate images).
- a `.gif` path: its frames through PIL.
- dicts (e.g. moviechat's `{"video_path", "timestep"}`, which only its own model reads) and
  anything else: `VideoError`, as `llava_onevision` has no branch for them.

Frames of different sizes are resized (PIL bicubic) to the first one's size so they stack.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any

import decord
import numpy as np
from PIL import Image

__all__ = [
    "FRAME_SUFFIXES",
    "Visual",
    "VideoError",
    "check_frame_count",
    "frame_indices",
    "natural_key",
    "parse_visual",
    "sample_frames",
    "sample_visual",
]

FRAME_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


class VideoError(ValueError):
    """A visual that cannot be sampled: a missing, empty or undecodable file, a frame folder
    without images, or a form scissorbench does not read."""

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
    check_frame_count(num_frames)
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


# ------------------------------------------------------------------- every visual form
@dataclass(frozen=True)
class Visual:
    """What a document's `doc_to_visual` gave, resolved to one of three sources.

    kind:    "video" (one video file), "files" (frame image files) or "images" (in memory).
    label:   the path, the folder, or a description ("<16 PIL images>"), for records.
    items:   the video path, the frame paths in order, or the frames in order.
    ignored: further videos of the document that are not read.
    """

    kind: str
    label: str
    items: tuple
    ignored: int = 0

    @property
    def video(self) -> str | None:
        """The video file, when the visual is one (the feature cache keys by it)."""
        return self.items[0] if self.kind == "video" else None


def _is_image(item: Any) -> bool:
    return isinstance(item, Image.Image)


def _is_frame_array(item: Any) -> bool:
    return isinstance(item, np.ndarray) and item.ndim == 3 and item.shape[-1] in (3, 4)


def natural_key(name: str) -> list:
    """Sort key comparing digit runs as numbers: frame_2 < frame_10."""
    return [(0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", name) if t]


def _folder_frames(folder: str) -> tuple[str, ...]:
    try:
        names = os.listdir(folder)
    except OSError as err:
        raise VideoError(folder, f"cannot list the frame folder ({err.strerror or err})") from err
    names = [n for n in names if n.lower().endswith(FRAME_SUFFIXES)]
    if not names:
        raise VideoError(folder, f"the folder holds no frame images ({', '.join(FRAME_SUFFIXES)})")
    return tuple(os.path.join(folder, n) for n in sorted(names, key=natural_key))


def parse_visual(visual: Any) -> Visual:
    """Resolve a `doc_to_visual` result (module docstring); VideoError for what cannot be read."""
    if isinstance(visual, np.ndarray) and visual.ndim == 4:
        visual = list(visual)  # [T, H, W, 3] frames
    items = list(visual) if isinstance(visual, (list, tuple)) else [visual]
    items = [v for v in items if v is not None]
    if not items:
        raise VideoError("<none>", "the task gave no video for this document")
    if all(isinstance(v, (str, os.PathLike)) for v in items):
        paths = [os.fspath(v) for v in items]
        if all(p.lower().endswith(FRAME_SUFFIXES) for p in paths):
            label = paths[0] if len(paths) == 1 else f"<{len(paths)} frame files: {paths[0]}, ...>"
            return Visual("files", label, tuple(paths))
        if os.path.isdir(paths[0]):
            return Visual("files", paths[0], _folder_frames(paths[0]), len(paths) - 1)
        return Visual("video", paths[0], (paths[0],), len(paths) - 1)
    if all(_is_image(v) or _is_frame_array(v) for v in items):
        kind = "PIL images" if _is_image(items[0]) else "frames"
        return Visual("images", f"<{len(items)} {kind}>", tuple(items))
    kinds = sorted({type(v).__name__ for v in items})
    detail = ""
    if any(isinstance(v, dict) for v in items):
        keys = sorted({str(k) for v in items if isinstance(v, dict) for k in v})
        detail = f" (dict keys {keys}; lmms-eval's llava_onevision reads no dict form either)"
    raise VideoError(
        f"<{', '.join(kinds)}>",
        f"expected a video path, a frame folder, frame image paths or images, got {kinds}{detail}",
    )


def sample_visual(visual: Visual, num_frames: int) -> np.ndarray:
    """`num_frames` frames at `frame_indices` of the visual's frames -> [T, H, W, 3] uint8 RGB."""
    if visual.kind == "video":
        path = visual.items[0]
        if path.lower().endswith(".gif"):
            return _sample_gif(path, num_frames)
        return sample_frames(path, num_frames)
    check_frame_count(num_frames)
    index = frame_indices(len(visual.items), num_frames).tolist()
    if visual.kind == "files":
        frames = [_open_frame(visual.items[i]) for i in index]
    else:
        frames = [_as_rgb(visual.items[i], visual.label, i) for i in index]
    return _stack(frames)


def check_frame_count(value: Any, name: str = "num_frames") -> int:
    """`value` as a frame count: an integer >= 1 (bools and floats are not), else ValueError."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


def _open_frame(path: str) -> np.ndarray:
    if not os.path.isfile(path):
        raise VideoError(path, "no such frame file" if not os.path.exists(path) else "not a file")
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except Exception as err:  # PIL raises UnidentifiedImageError, OSError, ...
        raise VideoError(path, f"PIL cannot read the frame image ({_short(err) or err!r})") from err


def _as_rgb(frame: Any, label: str, index: int) -> np.ndarray:
    if _is_image(frame):
        return np.asarray(frame.convert("RGB"))
    array = np.asarray(frame)
    if array.dtype != np.uint8:
        raise VideoError(label, f"frame {index} is {array.dtype}, expected uint8")
    return np.ascontiguousarray(array[..., :3])


def _stack(frames: list[np.ndarray]) -> np.ndarray:
    height, width = frames[0].shape[:2]
    if any(f.shape[:2] != (height, width) for f in frames):
            frames = [
            f
            if f.shape[:2] == (height, width)
            else np.asarray(Image.fromarray(f).resize((width, height), Image.BICUBIC))
            for f in frames
        ]
    return np.stack(frames)


def _sample_gif(path: str, num_frames: int) -> np.ndarray:
    check_frame_count(num_frames)
    if not os.path.isfile(path):
        raise VideoError(path, "no such file" if not os.path.exists(path) else "not a regular file")
    try:
        with Image.open(path) as image:
            total = getattr(image, "n_frames", 1)
            frames = []
            for i in frame_indices(total, num_frames).tolist():
                image.seek(i)
                frames.append(np.asarray(image.convert("RGB")))
    except Exception as err:
        raise VideoError(path, f"PIL cannot read the gif ({_short(err) or err!r})") from err
    return _stack(frames)

"""A synthetic, offline video QA set whose answers are fixed by construction.

Each item is a short mp4 (default 64 x 64 px, 32 frames at 8 fps, H.264 via PyAV) of flat
coloured shapes on a dark background, with one four-option multiple-choice question. Seven
question types, cycled by item index so any 7 consecutive items cover all of them:

- ``colour``:    one shape drifting; "What colour is the <shape>?"
- ``direction``: one shape crossing the frame left/right/up/down; "In which direction ...?"
- ``order``:     three shapes appearing one after another (and staying); "What colour is the
                 shape that appears first/last?" (the fourth option's colour is not shown)
- ``count``:     1-4 shapes in separate quadrants; "How many shapes are in the video?"
- ``small``:     a large shape and a 5 x 5 px dot; "What colour is the small dot?" (small
                 content: pooling or sampling away a few tokens loses it)
- ``brief``:     one persistent shape and a second one visible in only 6 consecutive frames;
                 "What colour is the shape that appears only briefly?" (the steady shape's
                 colour is among the options; brief content: temporal merging or
                 dropping frames loses it; 6 of 32 frames is enough for any uniform sample of
                 at least 8 frames to contain one of them)
- ``change``:    one drifting shape that switches colour once, between a third and two thirds
                 of the way through; "What colour does the <shape> turn into?" (its first colour
                 is among the options: the last frames must survive, not just the first)

``colour``, ``direction``, ``order`` and ``count`` are easy (large, lasting content); ``small``,
``brief`` and ``change`` hinge on content that compression can lose. Answers are colours, counts
or directions, never shape kinds: at 64 px a model small enough to train on a laptop tells
colours apart far sooner than shapes. Splits are independent
draws: ``train`` (seed 1) for `scissorbench train-micro`, ``test`` (seed 0) held out.

Everything is a function of ``(seed, index)`` (``numpy.random.default_rng([seed, index])``) and
the encoder runs single-threaded, yet the files are not always byte-identical: 20 encodings of
one video in one process once gave 2 to 5 distinct files (decoded pixels up to 19 levels apart)
and another time 1, and two fresh generations of the test split differed in 6 of 210 videos.
The cause (PyAV's colour conversion or libx264) is not found yet; it moves a demo cell by about
one question.

``build_dataset(root, n, seed, split)`` writes ``root/videos/<split>_<index>.mp4`` and
``root/<split>.jsonl`` (one JSON object per line: id, video (relative to root), question_type,
question, options, answer (letter), answer_index, seed, index). The lmms-eval task in
``tasks/synthetic_video_qa`` reads it from the same data root (``data_root``: $SCISSORBENCH_DATA,
else the user cache ``~/.cache/scissorbench``).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "COLOURS",
    "LETTERS",
    "QUESTION_TYPES",
    "SHAPES",
    "SPLIT_SEEDS",
    "TEST_ITEMS",
    "TRAIN_ITEMS",
    "DATA_ENV",
    "Item",
    "accuracy_by_type",
    "build_dataset",
    "cache_root",
    "data_root",
    "dataset_dir",
    "extract_letter",
    "format_open_prompt",
    "format_prompt",
    "is_right",
    "make_item",
    "read_split",
    "render",
    "split_is_current",
    "write_video",
]

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (230, 30, 30),
    "green": (30, 200, 40),
    "blue": (40, 70, 240),
    "yellow": (240, 220, 30),
    "magenta": (220, 40, 220),
    "cyan": (30, 210, 220),
}
SHAPES = ("square", "circle", "triangle", "cross")
QUESTION_TYPES = ("colour", "direction", "order", "count", "small", "brief", "change")
LETTERS = "ABCD"
DIRECTIONS = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
BACKGROUND = (20, 20, 20)
BRIEF_FRAMES = 6
DATA_ENV = "SCISSORBENCH_DATA"
TEST_ITEMS = 210  # the held-out test split the runner writes: 30 questions of each type
TRAIN_ITEMS = 6000  # the train split of `scissorbench train-micro`
SPLIT_SEEDS = {"test": 0, "train": 1}  # independent draws: no training item is a test item
TASK_NAME = "synthetic_video_qa"
_POST_PROMPT = "Answer with the option's letter from the given choices directly."
_OPEN_POST_PROMPT = "Answer the question using a single word or phrase."


@dataclass(frozen=True)
class Shape:
    """One shape: kind, colour name, half-size in px, centre per frame, frames it is visible."""

    kind: str
    colour: str
    radius: int
    start: tuple[float, float]  # (x, y) centre at frame 0
    velocity: tuple[float, float]  # px per frame
    visible: tuple[int, int] = (0, 1 << 30)  # [first, last) frame

    def centre(self, t: int) -> tuple[float, float]:
        return self.start[0] + self.velocity[0] * t, self.start[1] + self.velocity[1] * t

    def describe(self) -> str:
        return f"{self.colour} {self.kind}"


@dataclass(frozen=True)
class Item:
    """A rendered-to-be video and its question; `answer` is the correct option's letter."""

    shapes: tuple[Shape, ...]
    question_type: str
    question: str
    options: tuple[str, ...]
    answer_index: int

    @property
    def answer(self) -> str:
        return LETTERS[self.answer_index]


def _mask(kind: str, cx: float, cy: float, r: int, size: int) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    dx, dy = xx - cx, yy - cy
    if kind == "square":
        return (np.abs(dx) <= r) & (np.abs(dy) <= r)
    if kind == "circle":
        return dx * dx + dy * dy <= r * r
    if kind == "triangle":  # apex up, base at cy + r
        return (dy >= -r) & (dy <= r) & (np.abs(dx) <= (dy + r) / 2)
    if kind == "cross":
        arm = max(1.0, r / 3)
        return ((np.abs(dx) <= arm) & (np.abs(dy) <= r)) | ((np.abs(dy) <= arm) & (np.abs(dx) <= r))
    raise ValueError(f"unknown shape {kind!r}; known: {SHAPES}")


def render(shapes: tuple[Shape, ...], frames: int = 32, size: int = 64) -> np.ndarray:
    """Draw the shapes (later ones on top) -> [frames, size, size, 3] uint8 RGB."""
    video = np.empty((frames, size, size, 3), dtype=np.uint8)
    video[:] = BACKGROUND
    for t in range(frames):
        for shape in shapes:
            if shape.visible[0] <= t < shape.visible[1]:
                cx, cy = shape.centre(t)
                video[t][_mask(shape.kind, cx, cy, shape.radius, size)] = COLOURS[shape.colour]
    return video


def write_video(path: str | os.PathLike, video: np.ndarray, fps: int = 8) -> None:
    """Encode [T, H, W, 3] uint8 RGB as H.264 mp4 (yuv420p, crf 12, one thread: reproducible)."""
    import av

    frames, height, width, _ = video.shape
    with av.open(os.fspath(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": "12", "preset": "medium"}
        stream.codec_context.thread_count = 1
        for t in range(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(video[t]), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def _options(
    rng: np.random.Generator, correct: str, pool: list[str]
) -> tuple[tuple[str, ...], int]:
    """Four options: `correct` plus three others from `pool` (distinct), shuffled."""
    others = [p for p in pool if p != correct]
    picked = [correct, *rng.choice(others, size=3, replace=False).tolist()]
    order = rng.permutation(4)
    options = tuple(picked[i] for i in order)
    return options, options.index(correct)


def _drift(rng: np.random.Generator, r: int, frames: int, size: int) -> tuple[tuple, tuple]:
    """A start and a slow velocity that keep a shape of half-size r inside the frame."""
    margin = r + 2
    velocity = tuple(float(v) for v in rng.uniform(-0.3, 0.3, size=2))
    lo = [margin - min(0.0, v * (frames - 1)) for v in velocity]
    hi = [size - 1 - margin - max(0.0, v * (frames - 1)) for v in velocity]
    start = tuple(float(rng.uniform(a, b)) for a, b in zip(lo, hi, strict=True))
    return start, velocity


def _colour_item(rng, frames, size) -> Item:
    kind = str(rng.choice(SHAPES))
    colour = str(rng.choice(list(COLOURS)))
    start, velocity = _drift(rng, 9, frames, size)
    options, answer = _options(rng, colour, list(COLOURS))
    shape = Shape(kind, colour, 9, start, velocity)
    return Item((shape,), "colour", f"What colour is the {kind}?", options, answer)


def _direction_item(rng, frames, size) -> Item:
    kind = str(rng.choice(SHAPES))
    colour = str(rng.choice(list(COLOURS)))
    direction = str(rng.choice(list(DIRECTIONS)))
    r = 7
    travel = size - 2 * (r + 4)  # from one side to the other
    ux, uy = DIRECTIONS[direction]
    speed = travel / (frames - 1)
    across = float(rng.uniform(r + 6, size - r - 7))
    first = (r + 4) if (ux + uy) > 0 else size - 1 - (r + 4)
    start = (first, across) if ux else (across, first)
    shape = Shape(kind, colour, r, start, (ux * speed, uy * speed))
    order = rng.permutation(4)
    options = tuple(list(DIRECTIONS)[i] for i in order)
    question = f"In which direction does the {colour} {kind} move?"
    return Item((shape,), "direction", question, options, options.index(direction))


def _distinct_objects(rng, count: int) -> list[tuple[str, str]]:
    colours = rng.choice(list(COLOURS), size=count, replace=False).tolist()
    kinds = rng.choice(SHAPES, size=count, replace=count > len(SHAPES)).tolist()
    return list(zip(kinds, colours, strict=True))


_QUADRANTS = ((0.27, 0.27), (0.73, 0.27), (0.27, 0.73), (0.73, 0.73))


def _quadrant_starts(rng, count: int, size: int, jitter: float) -> list[tuple[float, float]]:
    spots = rng.permutation(4)[:count]
    return [
        tuple(float(c * size + rng.uniform(-jitter, jitter)) for c in _QUADRANTS[s]) for s in spots
    ]


def _order_item(rng, frames, size) -> Item:
    objects = _distinct_objects(rng, 4)  # three shown, the fourth is a distractor option
    starts = _quadrant_starts(rng, 3, size, 3.0)
    onsets = [0, frames // 3, 2 * frames // 3]
    shapes = tuple(
        Shape(k, c, 7, start, (0.0, 0.0), (onset, 1 << 30))
        for (k, c), start, onset in zip(objects[:3], starts, onsets, strict=True)
    )
    which = str(rng.choice(["first", "last"]))
    correct = shapes[0] if which == "first" else shapes[-1]
    options, answer = _options(rng, correct.colour, [c for _, c in objects])
    question = f"What colour is the shape that appears {which}?"
    return Item(shapes, "order", question, options, answer)


def _count_item(rng, frames, size) -> Item:
    count = int(rng.integers(1, 5))
    objects = _distinct_objects(rng, count)
    starts = _quadrant_starts(rng, count, size, 2.0)
    shapes = tuple(
        Shape(k, c, 7, start, tuple(float(v) for v in rng.uniform(-0.1, 0.1, 2)))
        for (k, c), start in zip(objects, starts, strict=True)
    )
    options = ("1", "2", "3", "4")
    return Item(shapes, "count", "How many shapes are in the video?", options, count - 1)


def _small_item(rng, frames, size) -> Item:
    (big_kind, big_colour), (_, dot_colour) = _distinct_objects(rng, 2)
    big_start, dot_start = _quadrant_starts(rng, 2, size, 2.0)
    big = Shape(big_kind, big_colour, 11, big_start, (0.0, 0.0))
    # a 5 x 5 px square dot on even coordinates (survives 2 x 2 chroma subsampling)
    dot_xy = tuple(float(2 * round(v / 2)) for v in dot_start)
    dot = Shape("square", dot_colour, 2, dot_xy, (0.0, 0.0))
    others = [c for c in COLOURS if c not in (dot_colour, big_colour)]
    pool = [dot_colour, big_colour, *rng.choice(others, size=2, replace=False).tolist()]
    order = rng.permutation(4)
    options = tuple(pool[i] for i in order)
    question = "What colour is the small dot?"
    return Item((big, dot), "small", question, options, options.index(dot_colour))


def _brief_item(rng, frames, size) -> Item:
    kinds = rng.choice(SHAPES, size=2, replace=False).tolist()
    colours = rng.choice(list(COLOURS), size=2, replace=False).tolist()
    steady_start, brief_start = _quadrant_starts(rng, 2, size, 3.0)
    onset = int(rng.integers(frames // 4, frames - frames // 4 - BRIEF_FRAMES + 1))
    steady = Shape(kinds[0], colours[0], 8, steady_start, (0.0, 0.0))
    brief = Shape(kinds[1], colours[1], 8, brief_start, (0.0, 0.0), (onset, onset + BRIEF_FRAMES))
    others = [c for c in COLOURS if c not in colours]
    pool = [colours[1], colours[0], *rng.choice(others, size=2, replace=False).tolist()]
    order = rng.permutation(4)
    options = tuple(pool[i] for i in order)
    question = "What colour is the shape that appears only briefly?"
    return Item((steady, brief), "brief", question, options, options.index(colours[1]))


def _change_item(rng, frames, size) -> Item:
    kind = str(rng.choice(SHAPES))
    first, then = rng.choice(list(COLOURS), size=2, replace=False).tolist()
    start, velocity = _drift(rng, 8, frames, size)
    switch = int(rng.integers(frames // 3, 2 * frames // 3 + 1))
    shapes = (
        Shape(kind, first, 8, start, velocity, (0, switch)),
        Shape(kind, then, 8, start, velocity, (switch, 1 << 30)),
    )
    others = [c for c in COLOURS if c not in (first, then)]
    pool = [then, first, *rng.choice(others, size=2, replace=False).tolist()]
    order = rng.permutation(4)
    options = tuple(pool[i] for i in order)
    question = f"What colour does the {kind} turn into?"
    return Item(shapes, "change", question, options, options.index(then))


_MAKERS = {
    "colour": _colour_item,
    "direction": _direction_item,
    "order": _order_item,
    "count": _count_item,
    "small": _small_item,
    "brief": _brief_item,
    "change": _change_item,
}


def make_item(seed: int, index: int, frames: int = 32, size: int = 64) -> Item:
    """The item number `index` of the set drawn from `seed` (type: QUESTION_TYPES[index % 7])."""
    if frames < 3 * BRIEF_FRAMES or size < 48:
        raise ValueError(f"need at least {3 * BRIEF_FRAMES} frames and 48 px, got {frames}, {size}")
    rng = np.random.default_rng([seed, index])
    return _MAKERS[QUESTION_TYPES[index % len(QUESTION_TYPES)]](rng, frames, size)


def build_dataset(
    root: str | os.PathLike,
    n: int = 64,
    seed: int = 0,
    split: str = "test",
    frames: int = 32,
    size: int = 64,
    fps: int = 8,
) -> Path:
    """Write `n` items to `root/videos/` and their questions to `root/<split>.jsonl`; return it."""
    if n < 1:
        raise ValueError(f"n must be a positive integer, got {n}")
    if not re.fullmatch(r"[A-Za-z0-9_]+", split):
        raise ValueError(f"split must be a plain name (letters, digits, _), got {split!r}")
    root = Path(root)
    (root / "videos").mkdir(parents=True, exist_ok=True)
    rows = []
    for index in range(n):
        item = make_item(seed, index, frames, size)
        video = f"videos/{split}_{index:05d}.mp4"
        write_video(root / video, render(item.shapes, frames, size), fps)
        rows.append(
            {
                "id": f"{split}_{index:05d}",
                "video": video,
                "question_type": item.question_type,
                "question": item.question,
                "options": list(item.options),
                "answer": item.answer,
                "answer_index": item.answer_index,
                "seed": seed,
                "index": index,
            }
        )
    index_path = root / f"{split}.jsonl"
    tmp = index_path.with_suffix(".jsonl.tmp")
    with tmp.open("w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    tmp.replace(index_path)
    return index_path


def split_is_current(root: str | os.PathLike, split: str, seed: int, n: int = 1) -> bool:
    """Whether `root/<split>.jsonl` holds at least `n` items and each is what this code draws
    from `seed` (a split written by an older generator is stale), videos present."""
    if not (Path(root) / f"{split}.jsonl").is_file():
        return False
    rows = read_split(root, split)
    if len(rows) < n:
        return False
    for i, row in enumerate(rows):
        item = make_item(seed, i)
        if (row.get("index") != i or row.get("seed") != seed or row.get("question") != item.question
                or row.get("options") != list(item.options)
                or row.get("answer_index") != item.answer_index
                or not (Path(root) / row.get("video", "")).is_file()):
            return False
    return True


def read_split(root: str | os.PathLike, split: str = "test") -> list[dict]:
    """The question rows of `root/<split>.jsonl`, in order (row i is the split's item i)."""
    with (Path(root) / f"{split}.jsonl").open() as f:
        return [json.loads(line) for line in f if line.strip()]


def cache_root() -> Path:
    """The user cache folder for generated data: $XDG_CACHE_HOME/scissorbench when that is an
    absolute path, else ~/.cache/scissorbench (never the repository or the working directory)."""
    xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".cache"
    return base / "scissorbench"


def data_root(default: str | os.PathLike | None = None) -> Path:
    """scissorbench's data root: $SCISSORBENCH_DATA, else `default`, else the user cache
    (`cache_root`). The runner, `synth-data`, `train-micro`, the demo and the lmms-eval task all
    resolve it the same way, so they meet in one folder; the splits are deterministic, so one
    copy serves every results folder."""
    value = os.environ.get(DATA_ENV, "").strip()
    if value:
        return Path(value).expanduser()
    if default is not None:
        return Path(default).expanduser()
    return cache_root()


def dataset_dir(root: str | os.PathLike | None = None) -> Path:
    """Where the synthetic task lives: <data root>/synthetic_video_qa."""
    return (Path(root).expanduser() if root is not None else data_root()) / TASK_NAME


def format_prompt(question: str, options: list[str] | tuple[str, ...]) -> str:
    """Question, lettered options, and the answer instruction (Video-MME's wording)."""
    lines = [question, *(f"{LETTERS[i]}. {opt}" for i, opt in enumerate(options))]
    return "\n".join(lines) + "\n" + _POST_PROMPT


def format_open_prompt(question: str) -> str:
    """The question alone with LLaVA's short-answer instruction (training's open-ended form)."""
    return f"{question}\n{_OPEN_POST_PROMPT}"


_PREFIXES = re.compile(
    r"^\s*(the\s+)?(best\s+|correct\s+)?(answer|option)\s*(is|:)?\s*", flags=re.IGNORECASE
)


def extract_letter(response: str, options: list[str] | tuple[str, ...] = ()) -> str:
    """The option letter a free-form answer names ("" if none): "B", "(B) red", "Answer: B.",
    or an option's exact text ("red")."""
    text = _PREFIXES.sub("", response.strip()).strip()
    letters = LETTERS[: len(options)] if options else LETTERS
    match = re.match(rf"^\(?([{letters}])(?![A-Za-z])", text)
    if match:
        return match.group(1)
    lowered = text.lower().rstrip(".! ")
    for i, option in enumerate(options):
        if lowered == option.lower() or lowered == f"the {option.lower()}":
            return LETTERS[i]
    match = re.search(rf"(?<![A-Za-z])([{letters}])(?![A-Za-z])", text)
    return match.group(1) if match else ""


def is_right(response: str, row: dict) -> bool:
    """Whether a model's answer to `row` names its correct option (the task's scoring)."""
    return extract_letter(response or "", row["options"]) == row["answer"]


def accuracy_by_type(outcomes: list[tuple[str, bool]]) -> dict[str, float]:
    """Share right (0-1) per question type, in `QUESTION_TYPES` order, and in all ("all"; nan
    when empty), from (question type, right) pairs."""
    right: dict[str, list[bool]] = {kind: [] for kind in QUESTION_TYPES}
    for kind, ok in outcomes:
        right.setdefault(kind, []).append(ok)
    scores = {kind: float(np.mean(v)) for kind, v in right.items() if v}
    scores["all"] = float(np.mean([ok for _, ok in outcomes])) if outcomes else float("nan")
    return scores

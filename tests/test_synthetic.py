"""The synthetic video QA set: deterministic, right by construction, loadable by lmms-eval."""

import hashlib
import importlib.util
import json
import math

import numpy as np
import pytest

import harness
from harness.video import sample_frames
from scissorbench.cli import main
from synthetic.task import (
    BACKGROUND,
    BRIEF_FRAMES,
    COLOURS,
    LETTERS,
    QUESTION_TYPES,
    accuracy_by_type,
    build_dataset,
    data_root,
    dataset_dir,
    extract_letter,
    format_prompt,
    is_right,
    make_item,
    read_split,
)

N = 14  # two of each question type
FRAMES = 32


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth") / "synthetic_video_qa"
    index = build_dataset(root, n=N, seed=0)
    rows = [json.loads(line) for line in index.read_text().splitlines()]
    return root, rows


def _digest(root) -> str:
    h = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        if path.is_file():
            h.update(path.relative_to(root).as_posix().encode())
            h.update(path.read_bytes())
    return h.hexdigest()


def _colour_map(frame: np.ndarray) -> np.ndarray:
    """[H, W] index into COLOURS of each pixel's nearest palette colour, -1 for background."""
    palette = np.array([BACKGROUND, *COLOURS.values()], dtype=np.float64)
    dist = ((frame[:, :, None, :].astype(np.float64) - palette) ** 2).sum(-1)
    return dist.argmin(-1) - 1


def _pixels(frames: np.ndarray, colour: str) -> np.ndarray:
    """[T] count of pixels of `colour` per frame."""
    index = list(COLOURS).index(colour)
    return np.array([(_colour_map(f) == index).sum() for f in frames])


def _answer(row) -> str:
    return row["options"][row["answer_index"]]


def test_build_is_deterministic_to_the_byte(tmp_path, dataset):
    root, _ = dataset
    again = tmp_path / "again"
    build_dataset(again, n=N, seed=0)
    assert _digest(again) == _digest(root)
    other = tmp_path / "other"
    build_dataset(other, n=N, seed=1)
    assert (other / "test.jsonl").read_text() != (root / "test.jsonl").read_text()


def test_index_rows_are_well_formed(dataset):
    root, rows = dataset
    kinds = len(QUESTION_TYPES)
    assert [r["question_type"] for r in rows] == [QUESTION_TYPES[i % kinds] for i in range(N)]
    for i, row in enumerate(rows):
        assert row["index"] == i and (root / row["video"]).is_file()
        assert len(row["options"]) == 4 and len(set(row["options"])) == 4
        assert row["answer"] == LETTERS[row["answer_index"]]
    # the correct letter is not always the same
    assert len({r["answer"] for r in rows}) > 1


def test_videos_decode_to_the_frames_requested(dataset):
    root, rows = dataset
    frames = sample_frames(root / rows[0]["video"], FRAMES)
    assert frames.shape == (FRAMES, 64, 64, 3) and frames.dtype == np.uint8


def _rows_of(rows, kind):
    return [r for r in rows if r["question_type"] == kind]


def test_colour_answers(dataset):
    root, rows = dataset
    for row in _rows_of(rows, "colour"):
        frames = sample_frames(root / row["video"], 8)
        counts = {c: _pixels(frames, c).sum() for c in COLOURS}
        assert max(counts, key=counts.get) == _answer(row)


def test_direction_answers(dataset):
    root, rows = dataset
    for row in _rows_of(rows, "direction"):
        frames = sample_frames(root / row["video"], FRAMES)
        fg = [np.argwhere(_colour_map(f) >= 0).mean(0) for f in (frames[0], frames[-1])]
        dy, dx = fg[1] - fg[0]
        moved = (
            ("right" if dx > 0 else "left") if abs(dx) > abs(dy) else ("down" if dy > 0 else "up")
        )
        assert moved == _answer(row) and max(abs(dx), abs(dy)) > 20


def test_count_answers(dataset):
    root, rows = dataset
    for row in _rows_of(rows, "count"):
        frame = _colour_map(sample_frames(root / row["video"], 1)[0])
        quadrants = [frame[:32, :32], frame[:32, 32:], frame[32:, :32], frame[32:, 32:]]
        occupied = sum((q >= 0).sum() > 20 for q in quadrants)
        assert str(occupied) == _answer(row)


def test_small_dot_answers(dataset):
    root, rows = dataset
    for row in _rows_of(rows, "small"):
        frames = sample_frames(root / row["video"], 4)
        dot = _pixels(frames, _answer(row))
        assert np.all((dot >= 15) & (dot <= 40))  # a 5 x 5 px dot, give or take the codec
        others = [c for c in row["options"] if c != _answer(row)]
        assert max(_pixels(frames, c).max() for c in others) > 10 * dot.max()  # the big shape


def test_brief_answers(dataset):
    root, rows = dataset
    for row in _rows_of(rows, "brief"):
        item = make_item(row["seed"], row["index"])
        steady, brief = item.shapes
        assert brief.colour == _answer(row) and steady.colour in row["options"]
        frames = sample_frames(root / row["video"], FRAMES)
        shown = _pixels(frames, brief.colour) > 20
        assert shown.sum() == BRIEF_FRAMES and np.all(_pixels(frames, steady.colour) > 20)
        # any uniform sample of 8 frames still catches it
        assert _pixels(sample_frames(root / row["video"], 8), brief.colour).max() > 20


def test_order_answers(dataset):
    root, rows = dataset
    for row in _rows_of(rows, "order"):
        frames = sample_frames(root / row["video"], FRAMES)
        onsets = {}
        for option in row["options"]:  # colours
            shown = np.flatnonzero(_pixels(frames, option) > 20)
            if shown.size:
                onsets[option] = shown[0]
        assert len(onsets) == 3  # the fourth option is absent
        pick = min if "first" in row["question"] else max
        assert pick(onsets, key=onsets.get) == _answer(row)


def test_colour_change_answers(dataset):
    root, rows = dataset
    for row in _rows_of(rows, "change"):
        item = make_item(row["seed"], row["index"])
        first, then = (shape.colour for shape in item.shapes)
        frames = sample_frames(root / row["video"], 8)
        assert _pixels(frames[:1], first)[0] > 100 and _pixels(frames[:1], then)[0] == 0
        assert _pixels(frames[-1:], then)[0] > 100 and _pixels(frames[-1:], first)[0] == 0
        assert then == _answer(row) and first in row["options"]  # the old colour is a distractor


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        ("B", "B"),
        ("(C) green", "C"),
        ("Answer: D.", "D"),
        ("The answer is A", "A"),
        ("yellow", "A"),
        ("I think it is B.", "B"),
        ("", ""),
        ("no idea", ""),
    ],
)
def test_extract_letter(response, expected):
    assert extract_letter(response, ["yellow", "blue", "green", "magenta"]) == expected


def test_read_split_returns_the_index_rows_in_order(dataset):
    root, rows = dataset
    assert read_split(root) == rows and [r["index"] for r in rows] == list(range(N))


def test_answers_are_scored_per_question_type():
    row = {"options": ["red", "green", "blue", "cyan"], "answer": "C"}
    assert is_right("C", row) and is_right("blue", row) and not is_right("red", row)
    assert not is_right(None, row)
    scores = accuracy_by_type([("small", True), ("colour", False), ("small", False),
                               ("colour", False)])
    assert list(scores) == ["colour", "small", "all"]  # QUESTION_TYPES order, seen types only
    assert scores == {"colour": 0.0, "small": 0.5, "all": 0.25}
    assert math.isnan(accuracy_by_type([])["all"])


def test_prompt_lists_the_options():
    prompt = format_prompt("Q?", ["a", "b", "c", "d"])
    assert prompt.splitlines()[:5] == ["Q?", "A. a", "B. b", "C. c", "D. d"]
    assert prompt.endswith("letter from the given choices directly.")


def test_data_root_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("SCISSORBENCH_DATA", str(tmp_path))
    assert data_root() == tmp_path
    assert dataset_dir() == tmp_path / "synthetic_video_qa"
    monkeypatch.delenv("SCISSORBENCH_DATA")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert data_root() == tmp_path / "cache" / "scissorbench"  # the user cache, not the repo


def test_cli_synth_data(tmp_path, capsys):
    assert main(["synth-data", "--root", str(tmp_path), "--n", "3", "--seed", "5"]) == 0
    index = tmp_path / "synthetic_video_qa" / "test.jsonl"
    assert len(index.read_text().splitlines()) == 3
    assert str(index) in capsys.readouterr().out


def _task_utils():
    spec = importlib.util.spec_from_file_location(
        "synthetic_task_utils", f"{harness.tasks_dir()}/synthetic_video_qa/utils.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_task_scoring_functions():
    utils = _task_utils()
    doc = {"options": ["red", "green", "blue", "cyan"], "answer": "C", "answer_index": 2}
    assert utils.process_results(doc, ["C"]) == {"accuracy": 1.0}
    assert utils.process_results(doc, ["blue"]) == {"accuracy": 1.0}
    assert utils.process_results(doc, [""]) == {"accuracy": 0.0}
    assert utils.process_results_mc(doc, [(3, 0), (2, 0), (1, 1), (4, 0)]) == {"accuracy": 1.0}
    as_logged = ["(3.0, False)", "(2.0, False)", "(1.0, True)", "(4, 0)"]  # str() of plain tuples
    assert utils.process_results_mc(doc, as_logged) == {"accuracy": 1.0}
    failed = [(math.inf, False)] * 4
    assert utils.process_results_mc(doc, failed) == {"accuracy": 0.0}
    assert utils.process_results_mc(doc, [(1, 0), (2, 0), (1, 0), (2, 0)]) == {"accuracy": 0.0}


@pytest.fixture(scope="module")
def manager():
    from lmms_eval.tasks import TaskManager

    return TaskManager(include_path=harness.tasks_dir())


def test_lmms_eval_finds_and_loads_the_tasks(dataset, manager, monkeypatch):
    from lmms_eval.tasks import get_task_dict

    root, rows = dataset
    monkeypatch.setenv("SCISSORBENCH_DATA", str(root.parent))
    assert {"synthetic_video_qa", "synthetic_video_qa_mc"} <= set(manager.all_tasks)
    tasks = get_task_dict(["synthetic_video_qa", "synthetic_video_qa_mc"], manager)
    for task in tasks.values():
        docs = task.test_docs()
        assert len(docs) == N
        assert task.doc_to_visual(docs[0]) == [str(root / rows[0]["video"])]
        assert task.doc_to_text(docs[0]).startswith(rows[0]["question"])
    assert tasks["synthetic_video_qa"].doc_to_target(docs[0]) == rows[0]["answer"]
    assert tasks["synthetic_video_qa_mc"].doc_to_target(docs[0]) == rows[0]["answer_index"]


def test_missing_data_names_the_fix(tmp_path, manager, monkeypatch):
    from lmms_eval.tasks import get_task_dict

    monkeypatch.setenv("SCISSORBENCH_DATA", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="scissorbench synth-data"):
        get_task_dict(["synthetic_video_qa"], manager)

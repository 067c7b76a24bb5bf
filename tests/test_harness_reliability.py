"""Issue 13, harness side: failures are recorded not crashed, resumes reuse lmms-eval's response
cache across processes, long runs show progress, and scripts get an exit code they can trust.

Tiny random checkpoint (backbones.tiny) and the offline synthetic task, on CPU.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import harness
from harness.lmms_model import ScissorBench
from synthetic.task import build_dataset

REPO = Path(__file__).resolve().parents[1]
FRAMES = 4
DOCS = 4
MISSING = "test_00001.mp4"  # doc 1's video, deleted in the broken copies


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    build_dataset(root / "synthetic_video_qa", n=DOCS, seed=0)
    return root


@pytest.fixture(scope="module")
def manager():
    from lmms_eval.tasks import TaskManager

    return TaskManager(include_path=harness.tasks_dir(), include_defaults=False)


@pytest.fixture
def broken(data_root, tmp_path, monkeypatch) -> Path:
    """A copy of the data with doc 1's video deleted, as $SCISSORBENCH_DATA."""
    copy = tmp_path / "broken"
    shutil.copytree(data_root, copy)
    (copy / "synthetic_video_qa" / "videos" / MISSING).unlink()
    monkeypatch.setenv("SCISSORBENCH_DATA", str(copy))
    return copy


def _env(data: Path, **extra: str) -> dict[str, str]:
    env = {**os.environ, "SCISSORBENCH_DATA": str(data), "OMP_NUM_THREADS": "1", **extra}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    return env


# ------------------------------------------------ 1. a missing video with the feature cache on
def test_missing_video_with_feature_cache_is_a_failed_sample_lmms_eval(tiny, manager, broken,
                                                                       tmp_path):
    from lmms_eval.evaluator import simple_evaluate

    features = tmp_path / "features"
    model = ScissorBench(pretrained=tiny, compressor="uniform", retention=0.5,
                         max_frames_num=FRAMES, feature_cache=str(features))
    results = simple_evaluate(model=model, tasks=["synthetic_video_qa"], limit=3,
                              task_manager=manager, log_samples=True, bootstrap_iters=0,
                              gen_kwargs="max_new_tokens=3")
    errors = {r["doc_id"]: r["error"] for r in model.records}
    assert "no such file" in errors[1] and errors[0] is None and errors[2] is None
    assert len(results["samples"]["synthetic_video_qa"]) == 3
    assert "accuracy,none" in results["results"]["synthetic_video_qa"]
    assert len(list(features.glob("*.pt"))) == 2  # the readable videos were cached


def test_missing_video_with_feature_cache_is_a_failed_sample_runner(tiny, tmp_path,
                                                                    monkeypatch):
    import runners.evaluate
    from records.store import ResultsStore
    from runners.cli import command

    # the runner rewrites a synthetic split that lacks a video: keep the missing one missing
    monkeypatch.setattr(runners.evaluate, "_prepare_assets", lambda cfg, runs: None)
    data = tmp_path / "data"
    build_dataset(data / "synthetic_video_qa", n=2, seed=0, split="test")
    (data / "synthetic_video_qa" / "videos" / "test_00000.mp4").unlink()
    monkeypatch.setenv("SCISSORBENCH_DATA", str(data))
    results = tmp_path / "runs"
    args = ["compressor=uniform", "retention=0.5", "model=tiny", f"model.pretrained={tiny}",
            f"results_dir={results}", f"hydra.run.dir={results}/hydra", "limit=2",
            "feature_cache=true"]
    assert command(args) == 0
    (record,) = ResultsStore(results).records()
    assert record["status"] == "finished" and "accuracy,none" in record["metrics"]
    assert record["samples"]["count"] == 2 and record["samples"]["failed"] == 1
    assert "no such file" in record["samples"]["failures"][0]["error"]


# ------------------------------------------------ 2. resume from the response cache
def test_model_identity_is_its_settings_not_its_address(tiny, tmp_path):
    one = ScissorBench(pretrained=tiny, compressor="uniform", retention=0.5, max_frames_num=4)
    two = ScissorBench(pretrained=tiny, compressor="uniform", retention=0.5, max_frames_num=4,
                       records_path=str(tmp_path / "r.jsonl"),
                       feature_cache=str(tmp_path / "f"))
    other = ScissorBench(pretrained=tiny, compressor="uniform", retention=0.25, max_frames_num=4)
    assert repr(one) == str(two) and " at 0x" not in repr(one)
    assert repr(other) != repr(one)


_RESUMABLE = """
import os, signal, sys
from lmms_eval.evaluator import simple_evaluate
from lmms_eval.tasks import TaskManager
import harness
from harness.lmms_model import ScissorBench

tiny, records, cache, die_after = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
model = ScissorBench(pretrained=tiny, compressor="uniform", retention=0.5, max_frames_num=4,
                     records_path=records)
record, seen = model._record, []

def record_then_maybe_die(base, acc=None, error=None):
    out = record(base, acc, error)
    seen.append(base["task"])
    if die_after and seen.count("synthetic_video_qa_mc") == die_after:
        os.kill(os.getpid(), signal.SIGKILL)  # killed mid-task, as a preempted job
    return out

model._record = record_then_maybe_die
manager = TaskManager(include_path=harness.tasks_dir(), include_defaults=False)
for task in ("synthetic_video_qa", "synthetic_video_qa_mc"):  # one call per task, as runners
    simple_evaluate(model=model, tasks=[task], limit=3, task_manager=manager, use_cache=cache,
                    bootstrap_iters=0, gen_kwargs="max_new_tokens=3")
"""


def _tasks_of(records: Path) -> list[str]:
    return [json.loads(line)["task"] for line in records.read_text().splitlines()]


def test_killed_run_resumes_from_the_response_cache_in_a_new_process(tiny, data_root,
                                                                     tmp_path):
    script, records, cache = tmp_path / "run.py", tmp_path / "records.jsonl", tmp_path / "cache"
    script.write_text(_RESUMABLE)
    command = [sys.executable, str(script), tiny, str(records), str(cache)]
    killed = subprocess.run([*command, "5"], env=_env(data_root), capture_output=True,
                            timeout=300)
    assert killed.returncode == -9, killed.stderr.decode(errors="replace")[-3000:]
    first = _tasks_of(records)
    assert first.count("synthetic_video_qa") == 3 and first.count("synthetic_video_qa_mc") == 5
    rerun = subprocess.run([*command, "0"], env=_env(data_root), capture_output=True,
                           timeout=300)
    assert rerun.returncode == 0, rerun.stderr.decode(errors="replace")[-3000:]
    again = _tasks_of(records)[len(first):]
    assert again.count("synthetic_video_qa") == 0  # the finished task: all 3 from the cache
    # lmms-eval 0.7.3 stores responses only after the model returns the whole request list
    # (ResponseCache.execute); the model's own journal (its records file) answers the 5
    # requests the killed process finished, so only the other 7 are computed again
    assert again.count("synthetic_video_qa_mc") == 12 - 5


# ------------------------------------------------ 3. progress on rank 0 only
def _padding_requests(n: int) -> list:
    """lmms-eval's padding clones: the model skips them, so the bar costs no model call."""
    from lmms_eval.api.instance import Instance

    meta = {"task": "t", "repeats": 1, "__padding_only__": True}
    return [Instance(request_type="generate_until", arguments=("", {}, None, i, "t", "test"),
                     idx=0, metadata={**meta, "doc_id": i}) for i in range(n)]


@pytest.mark.parametrize(("rank", "shown"), [(0, True), (1, False)])
def test_progress_bar_on_rank_zero_only(tiny, capsys, rank, shown):
    model = ScissorBench(pretrained=tiny, compressor="none", max_frames_num=FRAMES)
    model._rank = rank
    capsys.readouterr()
    model.generate_until(_padding_requests(3))
    model.loglikelihood(_padding_requests(2))
    err = capsys.readouterr().err
    assert ("scissorbench generate_until" in err and "3/3" in err) is shown
    assert ("scissorbench loglikelihood" in err and "2/2" in err) is shown


# ------------------------------------------------ 4. an exit code scripts can trust
def _checked(*args: str) -> int:
    """`scissorbench lmms-eval ARGS` (in this process; lmms-eval runs in its child)."""
    from scissorbench.cli import main

    return main(["lmms-eval", *args])


def test_lmms_eval_wrapper_exit_codes(tiny, data_root, broken, tmp_path, monkeypatch):
    records = tmp_path / "records.jsonl"
    model_args = (f"pretrained={tiny},compressor=uniform,retention=0.5,"
                  f"max_frames_num={FRAMES},records_path={records}")
    common = ["--model", "scissorbench", "--model_args", model_args, "--include_path",
              harness.tasks_dir(), "--limit", "2", "--gen_kwargs", "max_new_tokens=3"]
    for name, value in _env(data_root).items():
        monkeypatch.setenv(name, value)
    good = ["--tasks", "synthetic_video_qa", "--output_path", str(tmp_path / "good")]
    assert _checked(*common, *good) == 0
    bad = ["--tasks", "no_such_task", "--output_path", str(tmp_path / "bad")]
    assert _checked(*common, *bad) == 1  # lmms-eval itself exits 0 here
    assert _checked(*common, "--tasks", "synthetic_video_qa") == 2  # no --output_path
    monkeypatch.setenv("SCISSORBENCH_DATA", str(broken))
    missing = ["--tasks", "synthetic_video_qa", "--output_path", str(tmp_path / "missing")]
    assert _checked(*common, *missing) == 1  # results written, but doc 1 failed


def test_lmms_eval_wrapper_failure_reasons(tmp_path):
    from scissorbench.checked_eval import failures

    out = tmp_path / "out" / "model"
    out.mkdir(parents=True)
    assert "no results file" in failures(0, out, {}, [])[0]  # lmms-eval swallowed an error
    (out / "x_results.json").write_text(json.dumps({"results": {"t": {"acc": 1.0}}}))
    assert failures(0, out, {}, []) == []
    before = {out / "x_results.json": (out / "x_results.json").stat().st_mtime_ns}
    assert failures(0, out, before, [])  # an old results file is no evidence
    assert failures(3, out, {}, ["t doc 1: no such file"]) == [
        "lmms-eval exited with code 3", "failed sample: t doc 1: no such file"]

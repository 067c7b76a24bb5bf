"""A sweep never hides a failure (issue 13): a record's status decides what reruns, every job is
validated before any model loads, errors are one line, concurrent sweeps share the work, records
are group-readable and a killed write leaves nothing behind."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

import runners.schema  # noqa: F401
from records.store import ResultsStore, code_versions
from runners.cli import CONFIGS, INTERRUPTED, command, validate
from runners.plan import ConfigError, plan

ROOT = Path(__file__).resolve().parents[1]
VERSIONS = {"torch": "x", "git_commit": "y"}


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    """A tiny checkpoint and a small synthetic data root shared by the module."""
    from backbones.tiny import write_tiny_checkpoint
    from synthetic.task import build_dataset

    root = tmp_path_factory.mktemp("assets")
    write_tiny_checkpoint(root / "tiny")
    build_dataset(root / "data" / "synthetic_video_qa", n=4, seed=0, split="test")
    return root


@pytest.fixture
def data_env(assets, monkeypatch):
    monkeypatch.setenv("SCISSORBENCH_DATA", str(assets / "data"))
    monkeypatch.setenv("HYDRA_FULL_ERROR", "0")  # restored after --debug sets it
    return assets


def _args(assets: Path, results: Path, *overrides: str, hydra: str = "hydra") -> list[str]:
    return [*overrides, "model=tiny", f"model.pretrained={assets / 'tiny'}",
            f"results_dir={results}", f"hydra.run.dir={results}/{hydra}",
            f"hydra.sweep.dir={results}/{hydra}-multirun", "limit=1"]


def _compose(*overrides: str):
    with initialize_config_dir(str(CONFIGS), version_base="1.3"):
        return compose("config", overrides=list(overrides))


def _failed_record(args: list[str]) -> str:
    """Write a failed record for the one run of `args` (as a crashed task leaves); its key."""
    from runners.evaluate import _record

    cfg = _compose(*[a for a in args if not a.startswith("hydra.")])
    (run,) = plan(cfg, code_versions())
    record = {**_record(run, None, [], "Boom: injected failure\nsecond line"),
              "finished_at": "2000-01-01T00:00:00+00:00"}
    ResultsStore(cfg.results_dir).write(run.key, record)
    return run.key


# --- 1. a record's status decides everything ------------------------------------------------

def test_failed_record_is_recomputed_unless_retry_failed_false(data_env, tmp_path, capsys):
    results = tmp_path / "runs"
    args = _args(data_env, results, "compressor=uniform", "retention=0.5")
    key = _failed_record(args)
    store = ResultsStore(results)
    assert command([*args, "retry_failed=false"]) == 1  # kept, and the sweep says so
    out = capsys.readouterr().out
    assert store.status(key) == "failed" and "0 finished" in out and "1 failed" in out
    assert "Boom: injected failure" in out and "second line" not in out
    assert str(results.resolve()) in out
    assert command(args) == 0  # retry_failed defaults to true: recomputed
    assert store.status(key) == "finished"
    assert "1 finished" in capsys.readouterr().out


def test_a_failed_job_makes_the_multirun_exit_non_zero_with_a_summary(data_env, tmp_path,
                                                                      monkeypatch, capsys):
    import lmms_eval.evaluator

    real, calls = lmms_eval.evaluator.simple_evaluate, []

    def first_fails(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("Boom: the first job's task")
        return real(*args, **kwargs)

    monkeypatch.setattr(lmms_eval.evaluator, "simple_evaluate", first_fails)
    results = tmp_path / "runs"
    assert command(_args(data_env, results, "-m", "compressor=uniform", "retention=0.5,0.1")) == 1
    out = capsys.readouterr().out
    assert "2 runs: 1 finished, 0 skipped (finished before), 0 running elsewhere, 1 failed" in out
    assert "RuntimeError: Boom: the first job's task" in out
    assert sorted(r["status"] for r in ResultsStore(results).records()) == ["failed", "finished"]


# --- 2. every job validated before any model loads ------------------------------------------

@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["model.max_frames_num=0"], "model.max_frames_num must be an integer >= 1, got 0"),
        (["model.max_frames_num=2.5"], "model.max_frames_num must be an integer"),
        (["model.attn_implementation=flash"], "model.attn_implementation must be one of"),
        (["model.pretrained=./no/such/checkpoint"], "no such directory; give a local"),
        (["task.names=[mvbenc]"], "did you mean mvbench"),
        (["compressor=scc_tau", "retention=0.5"], "exclude each other; drop retention"),
        (["compressor=scc", "compressor.tau=0.9", "retention=0.2"], "exclude each other"),
    ],
)
def test_bad_jobs_fail_in_plan_with_the_fix(overrides, message):
    with pytest.raises(ConfigError, match=message) as err:
        plan(_compose(*overrides), VERSIONS)
    assert "\n" not in str(err.value) and "Repo id" not in str(err.value)


def test_threshold_mode_defaults_retention_to_null():
    for overrides in (["compressor=scc_tau"], ["compressor=scc", "compressor.tau=0.8"],
                      ["compressor=scc_tau", "retention=null"]):
        (run,) = plan(_compose(*overrides), VERSIONS)
        assert run.settings["retention"] is None and run.settings["compressor"]["params"]["tau"]
    (run,) = plan(_compose("compressor=scc"), VERSIONS)
    assert run.settings["retention"] == 0.35


def test_a_local_pretrained_must_be_a_checkpoint(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "weights.bin").write_bytes(b"x")
    for path, message in [(tmp_path / "empty", "a directory without config.json"),
                          (tmp_path / "weights.bin", "is a file, not a checkpoint")]:
        with pytest.raises(ConfigError, match=message):
            plan(_compose(f"model.pretrained={path}"), VERSIONS)
    next_layout = tmp_path / "llava_next"  # what backbones.llava_next converts on load
    next_layout.mkdir()
    (next_layout / "config.json").write_text(json.dumps({"mm_vision_tower": "siglip"}))
    assert plan(_compose(f"model.pretrained={next_layout}"), VERSIONS)
    assert plan(_compose("model.pretrained=org/some-hub-model"), VERSIONS)  # a hub id as is


def test_results_dir_must_be_a_writable_folder(tmp_path):
    file = tmp_path / "a_file"
    file.write_text("")
    for results, message in [(file, "is a file, not a folder"),
                             (file / "runs", "is not writable")]:
        with pytest.raises(ConfigError, match=message):
            plan(_compose(f"results_dir={results}"), VERSIONS)
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "read_only"
        locked.mkdir(mode=0o555)
        with pytest.raises(ConfigError, match="is not writable"):
            plan(_compose(f"results_dir={locked}"), VERSIONS)


def test_a_wrong_type_says_what_the_field_takes(capsys):
    assert validate(["retention=abc"], multirun=False) == 1
    err = capsys.readouterr().err
    assert "retention must be a number in (0, 1] or null, got 'abc'" in err
    assert "Error merging override" not in err


# --- 3 and 4: one-line errors, loud failures, Ctrl-C ----------------------------------------

def test_results_dir_a_file_is_one_line_before_any_job(data_env, tmp_path, capsys):
    file = tmp_path / "runs"
    file.write_text("")
    assert command(_args(data_env, file, "compressor=uniform", "retention=0.5")) == 2
    err = capsys.readouterr().err
    assert "is a file, not a folder" in err and "Traceback" not in err


def test_a_record_that_cannot_be_written_fails_loudly(data_env, tmp_path, monkeypatch, capsys):
    def full(self, key, record):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ResultsStore, "write", full)
    results = tmp_path / "runs"
    assert command(_args(data_env, results, "compressor=uniform", "retention=0.5")) == 1
    captured = capsys.readouterr()
    assert "could not write the record" in captured.out + captured.err
    assert "No space left on device" in captured.out
    assert "Traceback" not in captured.out + captured.err


def test_a_model_that_does_not_load_fails_its_runs_not_the_cli(data_env, tmp_path, monkeypatch,
                                                               capsys):
    def broken(*args, **kwargs):
        raise OSError("weights truncated")

    monkeypatch.setattr("runners.evaluate._model", broken)
    results = tmp_path / "runs"
    assert command(_args(data_env, results, "compressor=uniform", "retention=0.5")) == 1
    (record,) = ResultsStore(results).records()
    assert record["status"] == "failed" and "weights truncated" in record["error"]
    assert "model did not load: OSError: weights truncated" in capsys.readouterr().out


def test_ctrl_c_is_one_line_and_exit_130(data_env, tmp_path, monkeypatch, capsys):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("runners.evaluate.execute", interrupted)
    args = _args(data_env, tmp_path / "runs", "compressor=uniform", "retention=0.5")
    assert command(args) == 130
    assert capsys.readouterr().err.strip().splitlines()[-1] == INTERRUPTED
    with pytest.raises(KeyboardInterrupt):  # --debug: the traceback
        command(["--debug", *args])


# --- 5. concurrent sweeps share the work ----------------------------------------------------

def test_a_run_locked_by_another_sweep_is_left_to_it(data_env, tmp_path, capsys):
    results = tmp_path / "runs"
    args = _args(data_env, results, "compressor=uniform", "retention=0.5")
    (run,) = plan(_compose(*[a for a in args if not a.startswith("hydra.")]), code_versions())
    lock = ResultsStore(results).lock(run.key)
    with lock.acquire():
        assert command(args) == 0
    assert "1 running elsewhere, 0 failed" in capsys.readouterr().out
    assert not ResultsStore(results).has(run.key)


def test_two_sweeps_started_together_compute_each_run_once(data_env, tmp_path):
    results = tmp_path / "runs"
    methods = "compressor=uniform,random,l2norm,visionzip"
    env = {**os.environ, "SCISSORBENCH_DATA": str(data_env / "data")}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "scissorbench.cli", "run",
             *_args(data_env, results, "-m", methods, "retention=0.5", hydra=f"hydra{i}")],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )
        for i in range(2)
    ]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    finished = [int(line.split(" finished")[0].rsplit(" ", 1)[1])
                for out in outs for line in out.splitlines() if " runs: " in line]
    assert sum(finished) == 4, outs  # each run computed by exactly one sweep
    records = list(ResultsStore(results).records())
    assert len(records) == 4 and all(r["status"] == "finished" for r in records)
    rows = [line for log in (results / ".samples").glob("*.jsonl")
            for line in log.read_text().splitlines() if line.strip()]
    assert len(rows) == 4  # one model call per (run, document): nothing evaluated twice


# --- 6. group-readable records, no stale temporary files ------------------------------------

def test_records_are_group_readable_and_stale_tmp_files_go(tmp_path):
    store = ResultsStore(tmp_path)
    mask = os.umask(0o022)
    try:
        path = store.write("k", {"status": "finished"})
    finally:
        os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o644
    stale, live = tmp_path / ".k.dead.tmp", tmp_path / ".k.live.tmp"
    stale.write_text("{")
    live.write_text("{")
    old = time.time() - 3600
    os.utime(stale, (old, old))
    assert store.remove_stale_tmp() == [stale]
    assert not stale.exists() and live.exists()


def test_a_sweep_removes_stale_tmp_files(data_env, tmp_path):
    results = tmp_path / "runs"
    results.mkdir()
    stale = results / ".0123456789abcdef.x.tmp"
    stale.write_text("{")
    old = time.time() - 3600
    os.utime(stale, (old, old))
    assert command(_args(data_env, results, "compressor=uniform", "retention=0.5")) == 0
    assert not stale.exists()

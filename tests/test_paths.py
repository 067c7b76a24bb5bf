"""Where things are, whatever the working directory: shipped assets under the package, generated
ones under results_dir, the synthetic data under $SCISSORBENCH_DATA or else the user cache."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

import harness
import runners.schema  # noqa: F401  registers `scissorbench.root`
from records.store import code_versions
from runners.cli import CONFIGS, command
from runners.plan import plan
from synthetic.task import SPLIT_SEEDS, TASK_NAME, build_dataset, data_root, dataset_dir

ROOT = Path(__file__).resolve().parents[1]


def _compose(*overrides: str):
    with initialize_config_dir(str(CONFIGS), version_base="1.3"):
        return compose("config", overrides=list(overrides))


def _snapshot(folder: Path) -> dict[str, int] | None:
    """Every file under `folder` and its mtime, or None when there is no such folder."""
    if not folder.exists():
        return None
    return {str(p): p.stat().st_mtime_ns for p in folder.rglob("*")}


@pytest.fixture
def elsewhere(tmp_path, monkeypatch):
    """A cwd outside the repository, no SCISSORBENCH_DATA, and a user cache in tmp_path."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.delenv("SCISSORBENCH_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return cwd


def test_micro_names_the_shipped_checkpoint_from_any_cwd(elsewhere):
    (run,) = plan(_compose("model=micro", "compressor=none", "retention=null"), code_versions())
    assert Path(run.settings["model"]["pretrained"]) == ROOT / "checkpoints" / "micro"
    assert run.versions.get("checkpoint")  # the local checkpoint's digest is part of the key


def test_tiny_checkpoint_follows_results_dir(elsewhere):
    cfg = _compose("model=tiny", f"results_dir={elsewhere / 'runs'}")
    assert Path(cfg.model.pretrained) == elsewhere / "runs" / ".models" / "tiny"


def test_data_root_defaults_to_the_user_cache(elsewhere, tmp_path, monkeypatch):
    assert data_root() == tmp_path / "cache" / "scissorbench"
    assert dataset_dir() == tmp_path / "cache" / "scissorbench" / TASK_NAME
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert data_root() == tmp_path / "home" / ".cache" / "scissorbench"
    monkeypatch.setenv("SCISSORBENCH_DATA", str(tmp_path / "mine"))
    assert dataset_dir() == tmp_path / "mine" / TASK_NAME


def test_lmms_eval_task_reads_the_split_where_the_runner_writes(elsewhere, tmp_path):
    from lmms_eval.tasks import TaskManager, get_task_dict

    build_dataset(dataset_dir(), n=3, seed=SPLIT_SEEDS["test"], split="test")  # as the runner does
    task = get_task_dict([TASK_NAME], TaskManager(include_path=harness.tasks_dir()))[TASK_NAME]
    docs = task.test_docs()
    assert len(docs) == 3
    assert Path(task.doc_to_visual(docs[0])[0]).parent.parent == (
        tmp_path / "cache" / "scissorbench" / TASK_NAME)


def test_a_micro_run_from_another_cwd_writes_data_to_the_cache_only(elsewhere, tmp_path):
    repo_data = _snapshot(ROOT / "data")
    results = tmp_path / "runs"
    code = command(["model=micro", "compressor=none", "retention=null", "limit=2",
                    f"results_dir={results}", f"hydra.run.dir={results}/hydra"])
    assert code == 0
    (record,) = [json.loads(p.read_text()) for p in results.glob("*.json")]
    assert record["status"] == "finished" and record["samples"]["count"] == 2
    assert (tmp_path / "cache" / "scissorbench" / TASK_NAME / "test.jsonl").is_file()
    assert not (elsewhere / "data").exists()
    assert _snapshot(ROOT / "data") == repo_data  # the repository's data/ neither made nor touched

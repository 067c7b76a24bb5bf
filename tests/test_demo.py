"""`make demo`: the micro model swept through the real runner, then leaderboard and figure; and
the training script behind the shipped weights."""

from __future__ import annotations

import json

import matplotlib.image
import pandas as pd
import pytest
from safetensors.torch import load_file

from scissorbench.cli import main
from scissorbench.demo import DEFAULT_RETENTIONS, demo_jobs
from synthetic.train import TrainConfig, train

SMALL = ["--compressors", "none,scc,random", "--retentions", "0.05", "--limit", "14"]


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory):
    """A small demo: the full model, SCC and random at 5%, on the first 14 held-out questions,
    on both micro models under both position policies."""
    root = tmp_path_factory.mktemp("demo")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SCISSORBENCH_DATA", str(root / "data"))
        code = main(["demo", *SMALL, "--output", str(root / "out")])
    assert code == 0
    return root / "out"


@pytest.fixture(scope="module")
def demo_dir(demo_root):
    return demo_root / "micro" / "contiguous"


def test_demo_sweeps_both_backbones_under_both_policies(demo_root):
    table = pd.read_csv(demo_root / "positions.csv")
    assert list(table.columns) == ["method", "retention", "micro original", "micro contiguous",
                                   "micro_qwen2_5_vl original", "micro_qwen2_5_vl contiguous"]
    full = table[table["method"] == "none"]
    assert (full.iloc[:, 2:] >= 85).all(axis=None)  # both trained models, not chance (25)
    # the full model has nothing to renumber: both policies give the same answers
    assert full["micro original"].item() == full["micro contiguous"].item()
    for model in ("micro", "micro_qwen2_5_vl"):
        for policy in ("original", "contiguous"):
            records = [json.loads(p.read_text())
                       for p in (demo_root / model / policy / "runs").glob("*.json")]
            assert {r["settings"]["model"]["positions"] for r in records} == {policy}
            assert {r["settings"]["model"]["name"] for r in records} == {model}
    # the four sweeps ran two at a time (--workers, default 2 here); the site covers them all
    index = (demo_root / "site" / "index.html").read_text()
    for backbone in ("micro (original)", "micro (contiguous)", "micro_qwen2_5_vl (original)",
                     "micro_qwen2_5_vl (contiguous)"):
        assert f'data-backbone="{backbone}"' in index


def test_demo_writes_leaderboard_figure_and_report(demo_dir):
    board = pd.read_csv(demo_dir / "leaderboard.csv")
    assert sorted(board["method"]) == ["none", "random", "scc"]
    assert board["score"].between(0, 100).all()
    full = board.loc[board["method"] == "none", "score"].item()
    assert full >= 85  # the trained model, not chance (25)
    image = matplotlib.image.imread(demo_dir / "accuracy_vs_retention.png")
    assert image.shape[0] > 200 and image.shape[1] > 200
    assert (demo_dir / "report" / "report.html").is_file()
    records = [json.loads(p.read_text()) for p in (demo_dir / "runs").glob("*.json")]
    assert len(records) == 3 and {r["status"] for r in records} == {"finished"}
    # every record says what its method follows; the leaderboard shows it
    import compressors

    for record in records:
        name = record["settings"]["compressor"]["name"]
        assert record["provenance"] == compressors.provenance(name)
    fidelity = dict(zip(board["method"], board["fidelity"], strict=True))
    assert fidelity == {"none": "baseline", "random": "baseline", "scc": "variant"}
    assert {r["samples"]["count"] for r in records} == {14}


def test_demo_rerun_skips_finished_runs(demo_root, demo_dir, capsys, monkeypatch):
    monkeypatch.setenv("SCISSORBENCH_DATA", str(demo_root.parent / "data"))
    before = {p: p.stat().st_mtime_ns for p in (demo_dir / "runs").glob("*.json")}
    assert main(["demo", *SMALL, "--models", "micro", "--positions", "contiguous",
                 "--output", str(demo_root)]) == 0
    assert {p: p.stat().st_mtime_ns for p in (demo_dir / "runs").glob("*.json")} == before
    assert "3/3" in capsys.readouterr().out


def test_demo_rejects_an_unknown_compressor_before_any_run(tmp_path, capsys):
    assert main(["demo", "--compressors", "scc,nope", "--output", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "nope" in err and "visionzip" in err  # names the bad one and the choices
    assert not (tmp_path / "runs").exists()


def test_default_sweep_is_every_budgeted_compressor_at_every_retention(tmp_path):
    import compressors

    methods = ["none", *compressors.budgeted()]
    jobs = demo_jobs("micro", methods, DEFAULT_RETENTIONS, tmp_path, None)
    assert DEFAULT_RETENTIONS == [1.0, 0.5, 0.35, 0.1, 0.05]
    assert len(jobs) == 1 + len(compressors.budgeted()) * 5  # `none` once
    assert "scc_official" not in methods  # threshold only: no retention to sweep
    # on 8 frames DyCoke keeps frames 0, 4 and 6 whole: 3/8 = 37.5% is its minimum
    eight = demo_jobs("micro", methods, DEFAULT_RETENTIONS, tmp_path, None, "original", 8)
    dycoke = [j[-1] for j in eight if "compressor=dycoke" in j]
    assert dycoke == ["retention=1", "retention=0.5"]
    assert all("model.positions=original" in j for j in eight)
    assert len(eight) == len(jobs) - 3


def test_training_is_reproducible_from_the_seed(tmp_path):
    cfg = TrainConfig(train_items=14, steps=2, batch_size=4, warmup=1, vision_steps=2,
                      vision_batch=2, eval_items=7)
    lines: list[str] = []
    a = train(tmp_path / "a", cfg, data_root=tmp_path / "data", log=lines.append)
    b = train(tmp_path / "b", cfg, data_root=tmp_path / "data", log=lambda _: None)
    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert wa.keys() == wb.keys() and all((wa[k] == wb[k]).all() for k in wa)
    report = json.loads((a / "training.json").read_text())
    assert report["config"]["steps"] == 2 and report["train_split"]["items"] == 14
    assert set(report["held_out_accuracy"]) >= {"all"}
    assert any("step 2/2" in line for line in lines)
    other = train(tmp_path / "c", TrainConfig(**{**cfg.__dict__, "seed": 1}),
                  data_root=tmp_path / "data", log=lambda _: None)
    wc = load_file(other / "model.safetensors")
    assert not all((wa[k] == wc[k]).all() for k in wa)

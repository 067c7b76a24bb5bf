"""The runner's config tree: every preset composes and validates; bad values fail early."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

import runners.schema  # noqa: F401
from runners.cli import _pin_gpus, sweep_overrides, validate
from runners.plan import ConfigError, plan

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
VERSIONS = {"torch": "x", "git_commit": "y"}


def _compose(*overrides: str):
    with initialize_config_dir(str(CONFIGS), version_base="1.3"):
        return compose("config", overrides=list(overrides))


def _stems(group: str) -> list[Path]:
    return sorted((CONFIGS / group).glob("*.yaml"))


@pytest.mark.parametrize("path", _stems("experiment"), ids=lambda p: p.stem)
def test_every_experiment_preset_expands_to_valid_jobs(path):
    jobs = sweep_overrides([f"+experiment={path.stem}"])
    assert len(jobs) >= 2
    assert validate([f"+experiment={path.stem}"], multirun=True) == 0


@pytest.mark.parametrize("path", _stems("task"), ids=lambda p: p.stem)
def test_every_task_config_plans_one_run_per_task(path):
    runs = plan(_compose(f"task={path.stem}"), VERSIONS)
    assert [r.task for r in runs] == list(_compose(f"task={path.stem}").task.names)
    assert len({r.key for r in runs}) == len(runs)


@pytest.mark.parametrize("path", _stems("model"), ids=lambda p: p.stem)
def test_every_model_config_plans(path):
    (run,) = plan(_compose(f"model={path.stem}"), VERSIONS)
    assert run.settings["model"]["name"] == path.stem


def test_paper_table2_preset_matches_the_paper_grid():
    jobs = sweep_overrides(["+experiment=paper_table2"])
    pairs = {(j[1], j[2]) for j in jobs}
    assert ("compressor=scc_paper", "retention=0.35") in pairs and len(pairs) == 15
    cfg = _compose("+experiment=paper_table2", "compressor=fastv", "retention=0.35")
    assert cfg.model.name == "llava_scissor_baseline_7b" and cfg.compressor.layer == 3
    assert list(cfg.task.names) == ["egoschema", "mlvu_dev", "videomme", "video_mmmu"]


def test_keys_separate_what_changes_the_numbers_and_merge_the_full_model():
    key = lambda *o: plan(_compose(*o), VERSIONS)[0].key  # noqa: E731
    assert key("retention=0.5") != key("retention=0.35")
    assert key("compressor=scc") != key("compressor=scc_tau")
    assert key("compressor=none", "retention=0.5") == key("compressor=none", "retention=0.1")
    # threshold mode: retention defaults to null (a retention given with tau is an error)
    assert key("compressor=scc_tau") == key("compressor=scc_tau", "retention=null")


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["retention=1.5"], "retention must be in"),
        (["retention=0"], "retention must be in"),
        (["retention=null"], "retention must be in"),
        (["compressor=scc", "compressor.epsilon=2"], "epsilon"),
        (["compressor=fastv", "compressor.layer=0"], "layer"),
        (["limit=0"], "limit must be"),
    ],
)
def test_bad_values_fail_before_any_model(overrides, message):
    with pytest.raises(ConfigError, match=message):
        plan(_compose(*overrides), VERSIONS)


def test_cli_reports_every_bad_job_of_a_sweep(capsys):
    bad = validate(["compressor=scc,fastv", "retention=0.5,7"], multirun=True)
    assert bad == 2
    err = capsys.readouterr().err
    assert "compressor=scc retention=7" in err and "compressor=fastv retention=7" in err


def test_unknown_compressor_lists_the_choices(capsys):
    from runners.cli import command

    assert command(["compressor=sccc"]) == 2
    err = capsys.readouterr().err
    assert "sccc" in err and "visionzip" in err and "scc_tau" in err


def test_gpus_are_pinned_round_robin(monkeypatch):
    class Job:
        def __init__(self, num):
            self.job = type("J", (), {"num": num})

    cfg = _compose("gpus=[0,1,2,3]", "gpus_per_job=2")
    for num, expected in [(0, "0,1"), (1, "2,3"), (2, "0,1")]:
        monkeypatch.setattr("runners.cli.HydraConfig.get", lambda n=num: Job(n))
        _pin_gpus(cfg)
        import os

        assert os.environ["CUDA_VISIBLE_DEVICES"] == expected


@pytest.mark.parametrize("path", _stems("experiment"), ids=lambda p: p.stem)
def test_paper_presets_run_as_the_official_evaluation(path):
    """float16 end to end, LLaVA-NeXT's preprocessing on the LLaVA backbones (a Qwen-VL model
    always takes its own processor), SCC thresholds in the features' dtype."""
    for job in sweep_overrides([f"+experiment={path.stem}"]):
        cfg = _compose(f"+experiment={path.stem}", *job[1:])
        assert cfg.model.dtype == "float16", job
        if not cfg.model.name.startswith("qwen"):
            assert cfg.model.preprocess == "llava_next", job
        if cfg.compressor.name == "scc":
            assert cfg.compressor.similarity_dtype == "input", job
            (run,) = plan(cfg, VERSIONS)[:1]
            assert run.settings["compressor"]["params"]["similarity_dtype"] == "input"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.dtype=float64", "model.dtype must be one of"),
        ("model.preprocess=pil", "model.preprocess must be one of"),
    ],
)
def test_model_options_fail_before_any_model_loads(override, message):
    with pytest.raises(ConfigError, match=message):
        plan(_compose(override), VERSIONS)

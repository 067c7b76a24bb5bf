"""The peers' paper-table presets (configs/experiment/{fastvid,flashvid,holitom,vidcom2,dycoke}_*)
against the papers' own tables.

Oracle: the hand-transcribed tables in results/papers/*.csv, read here with the csv module (the
table's base models, benchmarks, methods and the retention of every cell), the frame counts the
CSV notes state (else the official evaluation scripts, cited below), and
reporting.reference's `PAPERS[...].methods` (which of a paper's methods are our registry's) and
`BASE_MODELS` (our model config of a paper's base model). Every job of each preset is composed
with Hydra's compose API, sweeper params included; nothing loads a model.
"""

from __future__ import annotations

import csv
import functools
import re
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

import compressors
import runners.schema  # noqa: F401  registers run_schema and the resolvers
from reporting.reference import BASE_MODELS, PAPERS
from runners.cli import sweep_overrides, validate
from runners.plan import ConfigError, _table_cell, plan

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
PAPERS_DIR = ROOT / "results" / "papers"
VERSIONS = {"torch": "x", "git_commit": "y"}

# preset -> (reporting.reference paper id, the table in the paper's CSV)
PRESETS = {
    "fastvid_table1": ("fastvid", "table1_llava_ov_7b"),
    "fastvid_table2": ("fastvid", "table2_llava_video_7b"),
    "fastvid_table4": ("fastvid", "table4_qwen25_vl"),
    "flashvid_table1": ("flashvid", "table1_main"),
    "flashvid_table2": ("flashvid", "table2_qwen25_vl"),
    "holitom_main": ("holitom", "img_benchmark_llava_ov_7b"),
    "vidcom2_table2": ("vidcom2", "table2_main"),
    "dycoke_table1": ("dycoke", "table1_main"),
}
# Frames per (preset, paper base model) where the CSV notes state none: the official scripts.
FRAMES = {
    ("fastvid_table1", "LLaVA-OV-7B"): 32,  # FastVID fastvid_llavaonevision/scripts/eval.sh
    ("fastvid_table2", "LLaVA-Video-7B"): 64,  # FastVID fastvid_llavavideo/scripts/eval.sh
    ("flashvid_table1", "LLaVA-OV-7B"): 32,  # FlashVID playground --num-frames 32
    ("flashvid_table2", "Qwen2.5-VL-7B"): 32,  # FlashVID scripts/baseline/qwen2_5_vl.sh
    ("holitom_main", "LLaVA-OV-7B"): 32,  # HoliTom README: max_frames_num=32
    ("vidcom2_table2", "LLaVA-OV-7B"): 32,  # VidCom2 README: lmms-eval's default, 32
    ("vidcom2_table2", "LLaVA-Video-7B"): 64,  # VidCom2 README: max_frames_num=64
}
# The benchmark columns of the CSVs -> lmms-eval 0.7.3 task; averages and FLOPs are no task.
TASKS = {
    "MVBench": "mvbench", "LongVideoBench": "longvideobench_val_v", "MLVU": "mlvu_dev",
    "VideoMME": "videomme", "VideoMME_short": "videomme", "VideoMME_medium": "videomme",
    "VideoMME_long": "videomme", "VideoMME_wsubs": "videomme_w_subtitle",
    "EgoSchema": "egoschema", "EgoSchema_subset": "egoschema_subset", "NextQA": "nextqa_mc_test",
    "PerceptionTest": "perceptiontest_val_mc", "ActivityNet-QA_acc": "activitynetqa",
    "ActivityNet-QA_score": "activitynetqa", "VideoDC": "video_dc499",
}
AGGREGATES = {"Avg", "Avg_rel_pct", "FLOPs_TFLOPs", "FLOPs_ratio_pct", "VideoMME_rel_pct"}


def _compose(*overrides: str):
    with initialize_config_dir(str(CONFIGS), version_base="1.3"):
        return compose("config", overrides=list(overrides))


@functools.cache
def _experiment(preset: str):
    """The preset's `experiment` block, as composed."""
    return _compose(f"+experiment={preset}").experiment


@functools.cache
def _rows(preset: str) -> tuple[dict[str, str], ...]:
    paper, table = PRESETS[preset]
    with open(PAPERS_DIR / PAPERS[paper].csv, newline="") as handle:
        return tuple(r for r in csv.DictReader(handle) if r["table"] == table)


def _dense(row: dict[str, str]) -> bool:
    return (row.get("note") or "").startswith("dense model")


@functools.cache
def _jobs(preset: str) -> tuple:
    """Every job of `-m +experiment=<preset>`: (overrides, config, whether it is a cell)."""
    jobs = []
    for job in sweep_overrides([f"+experiment={preset}"]):
        cfg = _compose(*job)
        jobs.append((tuple(job), cfg, _table_cell(cfg)))
    return tuple(jobs)


def _cells(preset: str) -> set[tuple[str, str, float]]:
    """(model config, registry name, retention) of every job that runs, but the dense one."""
    return {(cfg.model.name, cfg.compressor.name, round(cfg.retention, 6))
            for _, cfg, cell in _jobs(preset) if cell and cfg.compressor.name != "none"}


def _ours(preset: str, method: str) -> str | None:
    """Our registry name of a paper method, by reporting.reference (None: not ours)."""
    entry = PAPERS[PRESETS[preset][0]].methods.get(method)
    return entry[0] if entry and entry[0] in compressors.available() else None


def _config_of(paper_model: str) -> str:
    return BASE_MODELS[paper_model]["config"]


def test_every_peer_preset_is_tested():
    stems = {p.stem for p in (CONFIGS / "experiment").glob("*.yaml")}
    peers = tuple(f"{paper}_" for paper in ("fastvid", "flashvid", "holitom", "vidcom2", "dycoke"))
    assert {s for s in stems if s.startswith(peers)} == set(PRESETS)


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_names_its_paper_and_table(preset):
    paper, table = PRESETS[preset]
    experiment = _experiment(preset)
    assert (experiment.paper, experiment.table) == (PAPERS[paper].name, table)
    assert _rows(preset), f"no rows of {table} in {PAPERS[paper].csv}"


@pytest.mark.parametrize("preset", PRESETS)
def test_base_models_are_the_tables(preset):
    bases = {r["base_model"] for r in _rows(preset)}
    experiment = _experiment(preset)
    assert set(experiment.models.values()) == bases
    for ours, base in experiment.models.items():
        assert _config_of(base) == ours
    swept = {cfg.model.name for _, cfg, _ in _jobs(preset)}
    assert swept == {_config_of(base) for base in bases}


@pytest.mark.parametrize("preset", PRESETS)
def test_frame_counts_are_the_papers(preset):
    models = _experiment(preset).models
    for _, cfg, _ in _jobs(preset):
        base = models[cfg.model.name]
        notes = [r["note"] for r in _rows(preset) if r["base_model"] == base]
        stated = {int(m) for n in notes for m in re.findall(r"(?<!up to )\b(\d+) frames\b", n)}
        capped = {int(m) for n in notes for m in re.findall(r"max (\d+) tokens", n)}
        frames = cfg.model.max_frames_num
        if capped:  # FastVID Table 4: 2 fps under a token cap, approximated by a fixed count
            assert (preset, base) not in FRAMES and not stated
            per_patch = cfg.model.max_pixels // (28 * 28)
            assert cfg.model.min_pixels == cfg.model.max_pixels
            assert frames // 2 * per_patch == capped.pop()  # 2 frames a temporal patch
        elif stated:
            assert {frames} == stated, (base, stated)
        else:
            assert frames == FRAMES[(preset, base)], base


@pytest.mark.parametrize("preset", PRESETS)
def test_tasks_are_the_tables_benchmarks(preset):
    benchmarks = {r["benchmark"] for r in _rows(preset)} - AGGREGATES
    for _, cfg, _ in _jobs(preset):
        assert set(cfg.task.names) == {TASKS[b] for b in benchmarks}
        assert len(cfg.task.names) == len(set(cfg.task.names))


@pytest.mark.parametrize("preset", PRESETS)
def test_methods_are_the_tables_ours_or_missing(preset):
    table = {r["method"] for r in _rows(preset) if not _dense(r)}
    experiment = _experiment(preset)
    methods = dict(experiment.methods)
    assert set(methods) == table
    for method, name in methods.items():  # as reporting.reference reads the paper
        assert (name if name in compressors.available() else None) == _ours(preset, method), method
    present = {name for name in methods.values() if name in compressors.available()}
    left_out = {e.method for e in experiment.left_out}
    swept = {cfg.compressor.name for _, cfg, cell in _jobs(preset) if cell} - {"none"}
    assert swept | left_out == present
    assert {cfg.compressor.name for _, cfg, _ in _jobs(preset)} - {"none"} == swept


@pytest.mark.parametrize("preset", PRESETS)
def test_retentions_are_the_tables_cells(preset):
    """The jobs that run are exactly the table's cells of our methods (retention_pct / 100),
    less the ones the preset leaves out (and says so)."""
    table = set()
    for r in _rows(preset):
        name = _ours(preset, r["method"])
        if name is not None and not _dense(r):
            retention = round(float(r["retention_pct"]) / 100, 6)
            table.add((_config_of(r["base_model"]), name, retention))
    experiment = _experiment(preset)
    left_out = {(e.model, e.method, round(e.retention, 6)) for e in experiment.left_out}
    assert _cells(preset) | left_out == table
    assert not _cells(preset) & left_out
    assert {c[2] for c in _cells(preset) | left_out} == {c[2] for c in table}
    # the dense row: the full model once per base model
    dense = [cfg.model.name for _, cfg, cell in _jobs(preset)
             if cell and cfg.compressor.name == "none"]
    assert sorted(dense) == sorted(experiment.models)


@pytest.mark.parametrize("preset", PRESETS)
def test_left_out_cells_are_below_dycokes_reachable_minimum(preset):
    from compressors.dycoke import minimum_retention

    for entry in _experiment(preset).left_out:
        frames = _compose(f"+experiment={preset}", f"model={entry.model}").model.max_frames_num
        assert entry.method == "dycoke" and entry.retention < minimum_retention(frames)
        assert f"{minimum_retention(frames):.3f}" in entry.why


@pytest.mark.parametrize("preset", PRESETS)
def test_llava_presets_run_as_the_official_evaluation(preset):
    for _, cfg, _ in _jobs(preset):
        assert cfg.model.dtype == "float16"
        if not cfg.model.name.startswith("qwen"):  # Qwen-VL: always its processor
            assert cfg.model.preprocess == "llava_next"


@pytest.fixture
def composed(monkeypatch):
    """`hydra.compose` answering a job of `_jobs` with its config composed there (the runner's
    `check` composes every job again; the same configs, without the second 100 ms each)."""
    import hydra

    real = hydra.compose
    known = {job: cfg for preset in PRESETS for job, cfg, _ in _jobs(preset)}

    def cached(config_name=None, overrides=(), return_hydra_config=False, **kwargs):
        hit = None if return_hydra_config else known.get(tuple(overrides))
        return hit if hit is not None else real(config_name, overrides=overrides,
                                                return_hydra_config=return_hydra_config, **kwargs)

    monkeypatch.setattr(hydra, "compose", cached)


@pytest.mark.parametrize("preset", PRESETS)
def test_planning_prints_the_missing_methods_and_proceeds(preset, capsys, composed):
    experiment = _experiment(preset)
    missing = [m for m, name in experiment.methods.items()
               if name is None or name not in compressors.available()]
    for multirun in (True, False):
        assert validate([f"+experiment={preset}"], multirun=multirun) == 0
        out, err = capsys.readouterr()
        lines = [line for line in out.splitlines()
                 if line.startswith(f"[run] {experiment.paper} {experiment.table}:")]
        assert len(lines) == 1 and "scissorbench run:" not in err, (out, err)
        named = lines[0].split("not run: ", 1)[1].split("; ")[0]
        assert named == (", ".join(missing) or "none")


def test_a_registry_name_the_harness_lacks_is_listed_missing_not_an_error(capsys):
    assert validate(["+experiment=flashvid_table1", "experiment.methods.FlashVID=flashvid"],
                    multirun=False) == 0
    assert "FlashVID (flashvid: not in the registry)" in capsys.readouterr().out


def test_a_preset_running_a_method_the_registry_lacks_fails_clearly(capsys):
    bad = ["+experiment=fastvid_table1", "+experiment.cells.llava_ov_7b.flashvid=[0.1]",
           "experiment.methods.VisionZip=flashvid"]
    with pytest.raises(ConfigError, match="cells name 'flashvid'.*not in the compressor registry"):
        plan(_compose(*bad), VERSIONS)
    assert validate(bad, multirun=False) == 1
    assert "not in the compressor registry" in capsys.readouterr().err
    # a sweep naming a compressor config that does not exist lists the choices
    assert validate(["+experiment=fastvid_table1", "compressor=flashvid"], multirun=False) == 1
    err = capsys.readouterr().err
    assert "compressor/flashvid" in err and "fastvid" in err


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["experiment.papr=FastVID"], "Key 'papr' not in 'Experiment'"),  # a typo'd key
        (["experiment.cells.llava_ov_7b.fastvid=[a]"], "fastvid"),
        (["experiment.cell=-1"], "experiment.cell must be >= 0"),
        (["compressor=scc"], "'scc' on model 'llava_ov_7b' is not a cell of FastVID"),
        (["model=llava_ov_0.5b"], "give one, e.g. retention="),
        (["experiment.methods.VisionZip=holitom"], r"maps table methods to \['holitom'\], which"),
        (["experiment.methods.FastV=null"], "cells name 'fastv', which is none of the table's"),
        (["+experiment.cells.llava_ov_7b.scc=[0.1]"], "none of the table's methods"),
    ],
)
def test_bad_blocks_and_jobs_outside_the_table_fail_before_any_model(overrides, message, capsys):
    assert validate(["+experiment=fastvid_table1", *overrides], multirun=False) == 1
    assert re.search(message, capsys.readouterr().err)


def test_a_typo_in_a_preset_file_is_an_error(tmp_path):
    import shutil

    shutil.copytree(CONFIGS, tmp_path / "configs")
    good = (CONFIGS / "experiment" / "fastvid_table1.yaml").read_text()
    assert "  table: table1_llava_ov_7b" in good
    bad = good.replace("  table: table1_llava_ov_7b", "  tabel: table1_llava_ov_7b")
    (tmp_path / "configs" / "experiment" / "typo.yaml").write_text(bad)
    with initialize_config_dir(str(tmp_path / "configs"), version_base="1.3"):
        with pytest.raises(Exception, match="tabel"):
            compose("config", overrides=["+experiment=typo"])


def test_a_given_retention_runs_every_method_once_at_it():
    jobs = sweep_overrides(["+experiment=fastvid_table2", "retention=0.2"])
    run = [cfg for cfg in (_compose(*job) for job in jobs) if _table_cell(cfg)]
    assert len(jobs) == 10 and sorted(cfg.compressor.name for cfg in run) == sorted(
        ["none", "fastvid", "visionzip", "dycoke", "fastv"])
    assert {cfg.retention for cfg in run} == {0.2}
    cfg = _compose("+experiment=fastvid_table1", "compressor=scc", "retention=0.2")
    assert [r.settings["retention"] for r in plan(cfg, VERSIONS)] == [0.2] * 4


def test_a_single_run_is_the_first_cell_of_the_papers_method():
    cfg = _compose("+experiment=fastvid_table1")
    assert (cfg.compressor.name, cfg.retention) == ("fastvid", 0.097)
    runs = plan(cfg, VERSIONS)
    assert {r.settings["retention"] for r in runs} == {0.097} and len(runs) == 4


def test_keys_ignore_the_preset():
    """A preset's cell is the same run, under the same key, as the job spelled out by hand."""
    preset = plan(_compose("+experiment=holitom_main", "compressor=visionzip",
                           "experiment.cell=2"), VERSIONS)
    by_hand = plan(_compose("model=llava_ov_7b", "model.preprocess=llava_next",
                            "compressor=visionzip", "retention=0.2", "task=holitom_main"),
                   VERSIONS)
    assert [r.key for r in preset] == [r.key for r in by_hand]


def test_runs_without_a_preset_have_no_block():
    cfg = _compose()
    assert cfg.experiment is None and cfg.retention == 0.35
    assert OmegaConf.select(cfg, "experiment.cells") is None

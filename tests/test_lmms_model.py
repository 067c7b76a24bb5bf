"""The lmms-eval model `scissorbench` end to end on the offline synthetic task, on CPU.

A tiny random checkpoint (backbones.tiny) stands in for LLaVA-OneVision: answers are noise, but
every path is real (frame sampling, vision tower, compressor, LLM, lmms-eval's evaluator).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import decord
import numpy as np
import pytest
import torch

import compressors
import harness
from compressors.reference import scc_reference
from harness.lmms_model import ScissorBench, parse_value
from synthetic.task import build_dataset

REPO = Path(__file__).resolve().parents[1]
FRAMES = 4  # frames sampled per video (the paper: 32); small keeps the suite fast
DOCS = 6  # one document of each question type
LIMIT = 2
RETENTIONS = (0.5, 0.35, 0.1)


# ---------------------------------------------------------------- arguments, no model needed
@pytest.mark.parametrize(
    ("text", "value"),
    [("true", True), ("False", False), ("none", None), ("3", 3), ("0.9", 0.9), ("scc", "scc")],
)
def test_parse_value(text, value):
    assert parse_value(text) == value and type(parse_value(text)) is type(value)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"compressor": "scc", "retention": 1.5}, "retention must be in"),
        ({"compressor": "scc", "retention": 0}, "retention must be in"),
        ({"compressor": "scc", "retention": "lots"}, "retention must be a number"),
        ({"compressor": "pllava"}, "needs a token budget"),
        ({"compressor": "scc", "retention": 0.5, "taux": 0.9}, r"no parameter\(s\) \['taux'\]"),
        ({"compressor": "fastv", "retention": 0.5, "layer": 0}, "layer must be an integer"),
        ({"compressor": "sccc", "retention": 0.5}, "available: .*scc"),
        ({"compressor": "none", "max_frames_num": 0}, "max_frames_num"),
        ({"compressor": "none", "dtype": "float8"}, "dtype"),
        ({"compressor": "none", "video_newline": "maybe"}, "video_newline"),
    ],
)
def test_bad_arguments_fail_before_the_model_loads(kwargs, message):
    # the checkpoint does not exist: reaching the loader would be a different error
    with pytest.raises(ValueError, match=message):
        ScissorBench(pretrained="/nonexistent/checkpoint", **kwargs)


def test_string_arguments_are_parsed_like_the_command_line():
    with pytest.raises(ValueError, match="tau"):  # "2" parsed to 2, then rejected by scc
        ScissorBench(pretrained="/nonexistent", compressor="scc", tau="2")


# ------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    build_dataset(root / "synthetic_video_qa", n=DOCS, seed=0)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SCISSORBENCH_DATA", str(root))
        yield root


@pytest.fixture(scope="module")
def manager():
    from lmms_eval.tasks import TaskManager

    return TaskManager(include_path=harness.tasks_dir(), include_defaults=False)


def _evaluate(model, manager, task="synthetic_video_qa", limit=LIMIT, **kwargs):
    from lmms_eval.evaluator import simple_evaluate

    results = simple_evaluate(
        model=model,
        tasks=[task],
        limit=limit,
        task_manager=manager,
        log_samples=True,
        bootstrap_iters=0,
        gen_kwargs="max_new_tokens=3",  # answers are noise anyway; decoding dominates CPU time
        **kwargs,
    )
    return results, results["samples"][task]


def _params(name: str, retention: float) -> dict:
    """The retention; exactly the budget for methods whose official count is their own (the
    official counts run end to end in tests/test_backbone_matrix.py)."""
    if name == "none":
        return {}
    exact = {"budget_mode": "exact"} if "budget_mode" in compressors.defaults(name) else {}
    return {"retention": retention, **exact}


def _layer_flops(n: int, config) -> int:
    d, m = config.hidden_size, config.intermediate_size
    return 4 * n * d * d + 2 * n * n * d + 2 * n * d * m


def _reference_scc_count(model, doc: dict, tau: float) -> int:
    """Tokens the step-by-step SCC (compressors.reference, METHODS.md section 3) keeps on this
    document's video: frames by lmms-eval's rule read with decord, features from the stock
    transformers video path (processor, get_video_features; the trailing newline dropped)."""
    reader = decord.VideoReader(doc["video_path"], ctx=decord.cpu(0))
    frames = reader.get_batch(np.linspace(0, len(reader) - 1, FRAMES, dtype=int).tolist())
    llm = model.llm
    pixels = llm.processor.video_processor(videos=[frames.asnumpy()], return_tensors="pt")
    with torch.no_grad():
        out = llm.model.model.get_video_features(
            pixel_values_videos=pixels["pixel_values_videos"].to(llm.model.dtype), return_dict=True
        )
    features = out.pooler_output[0, :-1].reshape(FRAMES, llm.tokens_per_frame, -1)
    return scc_reference(features, tau).tokens.shape[0]


CASES = [(name, r, {}) for name in ["none", *compressors.budgeted()] for r in RETENTIONS]
CASES += [("scc", None, {"tau": 0.9}), ("scc", None, {"tau": 0.98})]


# ------------------------------------------------------------------------ end to end
@pytest.mark.parametrize(("name", "retention", "extra"), CASES)
def test_every_compressor_end_to_end(tiny, data_root, manager, name, retention, extra,
                                     tiny_siglip_head):
    params = {**({} if retention is None else _params(name, retention)), **extra}
    if name == "fastvid":  # its SigLIP head's signals
        params.update(vision_head=tiny_siglip_head)
    model = ScissorBench(pretrained=tiny, compressor=name, max_frames_num=FRAMES, **params)
    if name == "dycoke" and retention < compressors.dycoke.minimum_retention(FRAMES):
        with pytest.raises(ValueError, match="cannot reach retention .* minimum"):
            _evaluate(model, manager)  # its anchor frames stay whole: a clear stop
        return
    results, samples = _evaluate(model, manager)
    assert len(samples) == LIMIT and "accuracy,none" in results["results"]["synthetic_video_qa"]
    assert len(model.records) == LIMIT
    per_frame = model.llm.tokens_per_frame
    n_v = FRAMES * per_frame
    text_config = model.llm.model.config.text_config
    for record, sample in zip(model.records, samples, strict=True):
        assert record["error"] is None and record["visual_tokens"] == n_v
        fed, per_layer = record["visual_tokens_fed"], record["visual_tokens_per_layer"]
        assert len(per_layer) == model.llm.num_layers
        if name == "none":
            expected = n_v
        elif name == "pllava":  # METHODS.md section 6: the most cells <= M, T' = T
            budget, (height, width) = compressors.budget(retention, n_v), model.llm.grid
            expected = max(FRAMES * h * w for h in range(1, height + 1)
                           for w in range(1, width + 1) if FRAMES * h * w <= budget)
        elif name == "scc" and retention is None:  # threshold mode: the count emerges from tau
            expected = _reference_scc_count(model, sample["doc"], extra["tau"])
        else:
            expected = compressors.budget(retention, n_v)
        if name == "fastv":
            layer = model.compressor.params.get("layer", compressors.defaults("fastv")["layer"])
            assert per_layer[:layer] == [n_v] * layer
            assert per_layer[layer:] == [expected] * (len(per_layer) - layer)
            assert fed == n_v
        else:
            assert fed == expected and per_layer == [expected] * len(per_layer)
        assert record["achieved_retention"] == pytest.approx(per_layer[-1] / n_v)
        # FLOPs by hand (METHODS.md section 8): F(n) = 4 n d^2 + 2 n^2 d + 2 n d m per layer,
        # n = visual tokens at that layer + the prompt's text tokens
        text = record["prompt_tokens"] - fed
        flops = sum(_layer_flops(v + text, text_config) for v in per_layer)
        full = len(per_layer) * _layer_flops(n_v + text, text_config)
        assert text > 0 and record["prefill_flops"] == flops
        assert record["prefill_flops_full"] == full
        assert record["prefill_flops_ratio"] == pytest.approx(flops / full)
        assert {"video_decode", "vision", "prefill"} <= set(record["timings"])
        counts = sample["token_counts"][0]
        assert counts["visual_tokens"] == n_v and counts["visual_tokens_fed"] == fed
        assert sample["resps"][0][0] == record["output"]


def test_in_llm_layer_is_checked_against_the_model_at_construction(tiny):
    with pytest.raises(ValueError, match=r"layer=99 must be in \[1, \d+\] for this"):
        ScissorBench(pretrained=tiny, compressor="fastv", retention=0.5, layer=99)


def test_entry_point_model_name_and_records_file(tiny, data_root, manager, tmp_path):
    records = tmp_path / "records.jsonl"
    args = (
        f"pretrained={tiny},compressor=scc,retention=0.35,max_frames_num={FRAMES},"
        f"merge=false,records_path={records}"
    )
    results, samples = _evaluate("scissorbench", manager, model_args=args)
    assert len(samples) == LIMIT
    lines = [json.loads(line) for line in records.read_text().splitlines()]
    assert [r["doc_id"] for r in lines] == [s["doc_id"] for s in samples]
    assert all(r["params"] == {"retention": 0.35, "merge": False} for r in lines)


def test_loglikelihood_multiple_choice(tiny, data_root, manager):
    model = ScissorBench(
        pretrained=tiny, compressor="uniform", retention=0.5, max_frames_num=FRAMES
    )
    results, samples = _evaluate(model, manager, task="synthetic_video_qa_mc")
    assert "accuracy,none" in results["results"]["synthetic_video_qa_mc"]
    for sample in samples:
        losses = [resp[0] for resp in sample["resps"]]
        assert len(losses) == 4 and all(isinstance(x, tuple) for x in losses)
        assert all(math.isfinite(loss) and loss > 0 for loss, _ in losses)
        best = min(range(4), key=lambda i: losses[i][0])
        assert sample["accuracy"] == float(best == sample["doc"]["answer_index"])
    # four choices per document; the video is decoded and compressed once per document
    assert len(model.records) == 4 * LIMIT
    assert [r["prepared_reused"] for r in model.records[:4]] == [False, True, True, True]


def _broken_copy(data_root: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "broken"
    shutil.copytree(data_root, copy)
    videos = copy / "synthetic_video_qa" / "videos"
    (videos / "test_00000.mp4").write_bytes(b"this is not an mp4 file" * 40)
    (videos / "test_00001.mp4").write_bytes(b"")
    (videos / "test_00002.mp4").unlink()
    return copy


@pytest.mark.parametrize("task", ["synthetic_video_qa", "synthetic_video_qa_mc"])
def test_unreadable_videos_are_recorded_failures(tiny, manager, data_root, tmp_path, task):
    broken = _broken_copy(data_root, tmp_path)
    model = ScissorBench(pretrained=tiny, compressor="scc", retention=0.35, max_frames_num=FRAMES)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SCISSORBENCH_DATA", str(broken))
        results, samples = _evaluate(model, manager, task=task, limit=4)
    errors = {}
    for record in model.records:
        errors.setdefault(record["doc_id"], record["error"])
    assert "decord cannot open it" in errors[0]
    assert "empty" in errors[1]
    assert "no such file" in errors[2]
    assert errors[3] is None
    for sample in samples[:3]:
        assert sample["accuracy"] == 0.0
        if task == "synthetic_video_qa":
            assert sample["resps"] == [[""]]
        else:
            assert all(resp[0][0] == math.inf for resp in sample["resps"])
    # the failures count as wrong answers in the mean over all 4, they are not left out of it
    assert len(samples) == 4 and samples[3]["accuracy"] in (0.0, 1.0)
    assert results["results"][task]["accuracy,none"] == samples[3]["accuracy"] / 4


def test_response_cache_keeps_answers_and_retries_failures(tiny, manager, data_root, tmp_path):
    """lmms-eval's use_cache: real answers are served from the cache on a rerun (so the model
    makes no new records for them); failed requests are not cached and run again."""
    broken = _broken_copy(data_root, tmp_path)
    model = ScissorBench(
        pretrained=tiny, compressor="uniform", retention=0.5, max_frames_num=FRAMES
    )
    cache = str(tmp_path / "cache")
    runs = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SCISSORBENCH_DATA", str(broken))
        for _ in range(2):
            first = len(model.records)
            results, _ = _evaluate(model, manager, "synthetic_video_qa_mc", 4, use_cache=cache)
            runs.append((results["results"]["synthetic_video_qa_mc"], model.records[first:]))
    (scores_1, records_1), (scores_2, records_2) = runs
    assert scores_2["accuracy,none"] == scores_1["accuracy,none"]
    assert len(records_1) == 16 and sum(r["error"] is None for r in records_1) == 4
    assert len(records_2) == 12 and all(r["error"] for r in records_2)


def _env(data_root: Path) -> dict:
    env = {**os.environ, "SCISSORBENCH_DATA": str(data_root), "OMP_NUM_THREADS": "1"}
    env["PYTHONPATH"] = os.pathsep.join(
        [str(REPO), *([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])]
    )
    return env


def test_two_processes_answer_like_one(tiny, data_root, tmp_path):
    script = [str(REPO / "tests" / "dp_eval.py"), "--pretrained", tiny, "--limit", "5"]
    bin_dir = Path(sys.executable).parent
    one, two = tmp_path / "one.json", tmp_path / "two.json"
    torchrun = [str(bin_dir / "torchrun"), "--standalone", "--nproc_per_node", "2"]
    commands = [
        [sys.executable, *script, "--out", str(one)],
        [*torchrun, *script, "--out", str(two)],
    ]
    runs = [
        subprocess.Popen(c, env=_env(data_root), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for c in commands
    ]  # one process and two processes side by side
    for run in runs:
        _, stderr = run.communicate(timeout=300)
        assert run.returncode == 0, stderr.decode(errors="replace")[-3000:]
    answers_one, answers_two = json.loads(one.read_text()), json.loads(two.read_text())
    assert sorted(answers_one) == [str(i) for i in range(5)]
    assert answers_two == answers_one
    ranks = sorted(tmp_path.glob("two.json.records.rank*.jsonl"))
    assert len(ranks) == 2
    docs = [json.loads(x)["doc_id"] for p in ranks for x in p.read_text().splitlines()]
    assert sorted(docs) == list(range(5))  # every document once, split over the two ranks


def test_lmms_eval_command_line(tiny, data_root, manager, tmp_path):
    out = tmp_path / "cli"
    command = [
        str(Path(sys.executable).parent / "lmms-eval"),
        "--model",
        "scissorbench",
        "--model_args",
        f"pretrained={tiny},compressor=scc,retention=0.35,max_frames_num={FRAMES}",
        "--tasks",
        "synthetic_video_qa",
        "--include_path",
        harness.tasks_dir(),
        "--limit",
        "4",
        "--output_path",
        str(out),
        "--log_samples",
    ]
    run = subprocess.run(command, env=_env(data_root), capture_output=True, text=True, timeout=300)
    # the CLI exits 0 even when the evaluation fails: the output files are the evidence
    assert run.returncode == 0, run.stderr[-3000:]
    results = list(out.rglob("*_results.json"))
    samples = list(out.rglob("*_samples_synthetic_video_qa.jsonl"))
    assert len(results) == 1 and len(samples) == 1, run.stderr[-3000:]
    scores = json.loads(results[0].read_text())["results"]["synthetic_video_qa"]
    logged = [json.loads(line) for line in samples[0].read_text().splitlines()]
    assert len(logged) == 4
    # oracle: the same model through the Python API answers the same and scores the same
    model = ScissorBench(pretrained=tiny, compressor="scc", retention=0.35, max_frames_num=FRAMES)
    from lmms_eval.evaluator import simple_evaluate

    api = simple_evaluate(model=model, tasks=["synthetic_video_qa"], limit=4,
                          task_manager=manager, log_samples=True)  # the CLI's generation settings
    api_samples = api["samples"]["synthetic_video_qa"]
    # (the samples file stores a filtered answer as a string, the Python API as [answer])
    answers = [[s["filtered_resps"]] for s in logged]
    assert answers == [s["filtered_resps"] for s in api_samples]
    assert [s["token_counts"] for s in logged] == [s["token_counts"] for s in api_samples]
    accuracy = sum(s["accuracy"] for s in logged) / 4
    assert scores["accuracy,none"] == pytest.approx(accuracy)
    assert api["results"]["synthetic_video_qa"]["accuracy,none"] == pytest.approx(accuracy)

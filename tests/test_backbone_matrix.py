"""Every compressor at three retentions, end to end through lmms-eval, on every tiny backbone
other than the LLaVA-OneVision one (tests/test_lmms_model.py covers that in more depth): the
tiny Qwen2.5-VL, the tiny Qwen3-VL and the tiny LLaVA-Video (LLaVA-NeXT layout, converted),
each loaded through `from_pretrained` like its hub checkpoint.

Oracle for the counts: the tokens each method feeds are what the compressor hands on for this
video's own geometry (`Compressor.expected_tokens`, the FLOPs' count, itself tested against
running the method in tests/test_budget_counts.py) or, for FastV, the budget kept from layer K;
N_v is T' x H' x W' read from the model's own vision features (not from the adapter).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import compressors
import harness
from harness.lmms_model import ScissorBench
from synthetic.task import build_dataset

RETENTIONS = [0.5, 0.25, 0.1]
FRAMES, LIMIT = 4, 2
METHODS = ["none", *compressors.budgeted()]
CASES = [(name, r) for name in METHODS for r in (RETENTIONS if name != "none" else [None])]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    build_dataset(root / "synthetic_video_qa", n=LIMIT, seed=0)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SCISSORBENCH_DATA", str(root))
        yield root


@pytest.fixture(scope="module")
def manager():
    from lmms_eval.tasks import TaskManager

    return TaskManager(include_path=harness.tasks_dir(), include_defaults=False)


@pytest.fixture(scope="module", params=["tiny_qwen", "tiny_qwen3", "tiny_llava_video"])
def checkpoint(request) -> tuple[str, str]:
    return request.param, request.getfixturevalue(request.param)


def _model_tokens(model: ScissorBench, frames) -> tuple[int, int, tuple[int, int]]:
    """(N_v, T', (H', W')) of one video from the model's own vision features."""
    llm = model.llm
    encoded, _ = llm.encode(frames)
    if encoded.dim() == 5:  # Qwen3-VL: [1 + DeepStack, T', H', W', D]
        encoded = encoded[0]
    if encoded.dim() == 4:  # Qwen2.5-VL: [T', H', W', D]
        t, h, w, _ = encoded.shape
    else:  # LLaVA-Video: [T, N, D] pooled frame tokens
        t, n = encoded.shape[:2]
        h, w = llm.grid
        assert h * w == n
    return t * h * w, t, (h, w)


@pytest.mark.parametrize(("name", "retention"), CASES)
def test_every_compressor_end_to_end(checkpoint, data_root, manager, name, retention,
                                     tiny_siglip_head):
    from lmms_eval.evaluator import simple_evaluate

    from harness.video import sample_frames

    kind, path = checkpoint
    params = {} if retention is None else {"retention": retention}
    newline = {"video_newline": True} if kind == "tiny_llava_video" else {}
    if name == "fastv" and kind == "tiny_llava_video":  # a 2-layer LLM: K = 1
        params["layer"] = 1
    if name == "fastvid" and kind == "tiny_llava_video":  # its SigLIP head's signals
        newline["vision_head"] = tiny_siglip_head
    model = ScissorBench(pretrained=path, compressor=name, max_frames_num=FRAMES, **params,
                         **newline)
    frames = FRAMES // 2 if kind.startswith("tiny_qwen") else FRAMES  # Qwen: patches of 2
    if name == "dycoke" and retention < compressors.dycoke.minimum_retention(frames):
        # its anchor frames stay whole: the run stops with the reachable minimum named
        with pytest.raises(ValueError, match="cannot reach retention .* minimum"):
            simple_evaluate(model=model, tasks=["synthetic_video_qa"], limit=LIMIT,
                            task_manager=manager, bootstrap_iters=0)
        return
    results = simple_evaluate(model=model, tasks=["synthetic_video_qa"], limit=LIMIT,
                              task_manager=manager, log_samples=True, bootstrap_iters=0,
                              gen_kwargs="max_new_tokens=2")
    samples = results["samples"]["synthetic_video_qa"]
    assert "accuracy,none" in results["results"]["synthetic_video_qa"]
    assert len(model.records) == LIMIT
    compressor = compressors.build(name, **params)
    for record, sample in zip(model.records, samples, strict=True):
        frames = sample_frames(sample["doc"]["video_path"], FRAMES)
        n_v, t, grid = _model_tokens(model, frames)
        assert record["error"] is None
        assert record["visual_tokens"] == n_v
        per_layer = record["visual_tokens_per_layer"]
        if name == "fastv":
            layer = compressor.params.get("layer", compressors.defaults("fastv")["layer"])
            budget = compressors.budget(retention, n_v)
            assert per_layer[:layer] == [n_v] * layer
            assert per_layer[layer:] == [budget] * (len(per_layer) - layer)
        else:
            expected = compressor.expected_tokens(t, grid)
            if expected is None:  # a count that depends on the video
                expected = per_layer[0]
                assert 1 <= expected <= n_v
            assert per_layer == [expected] * len(per_layer)
        assert record["achieved_retention"] == pytest.approx(per_layer[-1] / n_v)
        assert record["positions"] == ("original" if kind.startswith("tiny_qwen") else
                                       "contiguous")
        assert torch.isfinite(torch.tensor(record["prefill_flops"], dtype=torch.float64))

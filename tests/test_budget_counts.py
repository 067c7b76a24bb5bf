"""What each method really feeds: the count the FLOPs calculator uses equals the count the
method hands on when run, and PLLaVA fills its budget by default (METHODS.md sections 2, 6)."""

from __future__ import annotations

import math

import pytest
import torch

import compressors
from harness.flops import layer_flops
from reporting.cost import estimate
from scissorbench.cli import main

GEOMETRIES = [(32, (14, 14)), (8, (4, 4)), (3, (6, 10))]


def _features(frames: int, grid: tuple[int, int], seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(frames, grid[0] * grid[1], 16, generator=gen)


BUDGETED = [n for n in compressors.budgeted() if compressors.registry._entry(n).stage == "pre_llm"]


@pytest.mark.parametrize("name", BUDGETED)
@pytest.mark.parametrize("retention", [0.5, 0.1])
@pytest.mark.parametrize("frames,grid", GEOMETRIES[1:])
@pytest.mark.parametrize("mode", ["official", "exact"])
def test_expected_tokens_is_what_the_method_feeds(name, retention, frames, grid, mode):
    exact = {"budget_mode": mode} if "budget_mode" in compressors.defaults(name) else {}
    compressor = compressors.build(name, retention=retention, **exact)
    video = _features(frames, grid)
    signals = {s: torch.rand(frames, grid[0] * grid[1]) for s in compressor.signals}
    if name == "dycoke" and retention < compressors.dycoke.minimum_retention(frames):
        with pytest.raises(ValueError, match="retention"):  # the anchor frames stay whole
            compressor.expected_tokens(frames, grid)
        with pytest.raises(ValueError, match="retention"):
            compressor(video, grid=grid, **signals)
        return
    fed = compressor(video, grid=grid, **signals).tokens.shape[0]
    expected = compressor.expected_tokens(frames, grid)
    if exact.get("budget_mode") == "official":  # the official count: known or video-dependent
        assert expected is None or expected == fed
    else:
        assert expected == fed


def test_threshold_mode_count_is_unknown_and_none_keeps_all():
    assert compressors.build("scc", tau=0.9).expected_tokens(32, (14, 14)) is None
    assert compressors.build("scc_official").expected_tokens(32, (14, 14)) is None
    assert "scc_official" not in compressors.budgeted()
    assert compressors.build("none").expected_tokens(32, (14, 14)) == 6272


@pytest.mark.parametrize("retention,cells", [(0.5, (14, 7)), (0.35, (11, 6)), (0.1, (6, 3))])
def test_pllava_fills_the_budget_by_default(retention, cells):
    # Hand-computed: M = round(r * 6272) over 32 frames -> M // 32 cells a frame; the largest
    # h x w <= that with h, w <= 14 (ties: aspect closest to square).
    out = compressors.build("pllava", retention=retention)(_features(32, (14, 14)))
    assert out.info["grid"] == [32, *cells]
    assert out.tokens.shape[0] == 32 * math.prod(cells)
    square = compressors.build("pllava", retention=0.5, keep_aspect=True)(_features(32, (14, 14)))
    assert square.info["grid"] == [32, 9, 9]  # PLLaVA's own square pooling, 41% for 50%


def test_pllava_at_half_feeds_half():
    out = compressors.build("pllava", retention=0.5)(_features(32, (14, 14)))
    assert out.achieved_retention == 0.5


def test_estimate_uses_the_count_given():
    # 7B geometry; prefill of 576 tokens in every layer, by the formula written out here.
    est = estimate(28, 3584, 18944, 0.1, kept=576)
    assert est.kept == 576
    assert est.prefill == 28 * (4 * 576 * 3584**2 + 2 * 576**2 * 3584 + 2 * 576 * 3584 * 18944)
    assert estimate(28, 3584, 18944, 0.1).kept == 627  # the budget when no count is given
    with pytest.raises(ValueError, match="kept tokens"):
        estimate(28, 3584, 18944, 0.1, kept=0)


def test_flops_cli_reports_what_pllava_feeds(capsys):
    assert main(["flops", "model=llava_ov_7b", "compressor=pllava", "retention=0.1"]) == 0
    out = capsys.readouterr().out
    assert "576 kept (9.18% of a budget of 627: what pllava feeds)" in out
    prefill = 28 * layer_flops(576, 3584, 18944)
    assert f"{prefill / 1e12:8.3f} TFLOPs" in out
    assert main(["flops", "model=llava_ov_7b", "compressor=uniform", "retention=0.1"]) == 0
    assert "627 kept (10.00%)" in capsys.readouterr().out

"""fastvid against outputs of the official FastVID code (tests/fixtures/fastvid) and against
hand-computed cases of its steps."""

import math
from pathlib import Path

import pytest
import torch

import compressors
import compressors.fastvid  # noqa: F401  (registers the method)
from compressors.fastvid import (
    context_quotas,
    density_scores,
    dtm_merge,
    frame_budgets,
    segments,
)

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "fastvid"
CASES = sorted(p.stem for p in FIXTURES.glob("*.pt"))
RUNS = [(c, i) for c in CASES for i in range(len(torch.load(FIXTURES / f"{c}.pt")["results"]))]


def _load(case: str) -> dict:
    return torch.load(FIXTURES / f"{case}.pt", weights_only=True)


def _run(fixture: dict, retention: float, **params):
    c = compressors.build("fastvid", retention=retention, **{**fixture["params"], **params})
    return c(fixture["video"], frame_features=fixture["frame_features"],
             head_attention=fixture["head_attention"])


def _signals(frames: int, per_frame: int, seed: int = 0) -> dict:
    gen = torch.Generator().manual_seed(seed)
    return {"frame_features": torch.randn(frames, 8, generator=gen),
            "head_attention": torch.rand(frames, per_frame, generator=gen)}


def _angles(cosines: list[float]) -> torch.Tensor:
    """Unit 2-D frame features whose consecutive cosines are `cosines`."""
    angle = torch.tensor([0.0, *torch.tensor(cosines).double().acos().cumsum(0).tolist()])
    return torch.stack([angle.cos(), angle.sin()], dim=1).float()


# --- parity with the official code -------------------------------------------------------------

def test_fixtures_are_present_and_cover_the_branches():
    assert set(CASES) == {"scenes_196", "static_196", "small_grid", "fp16_196"}
    assert sum(p.stat().st_size for p in FIXTURES.iterdir()) < 1_000_000
    scenes, static = _load("scenes_196"), _load("static_196")
    for fixture, below in ((scenes, 8), (static, 0)):  # threshold cuts vs only the c-1 lowest
        g = torch.nn.functional.normalize(fixture["frame_features"], dim=1)
        assert int(((g[:-1] * g[1:]).sum(1) < 0.9).sum()) == below
    assert max(scenes["results"][0]["segments"]) >= 5  # a segment with two anchors
    assert _load("fp16_196")["video"].dtype == torch.float16


@pytest.mark.parametrize(("case", "index"), RUNS)
def test_reproduces_the_official_output(case, index):
    fixture = _load(case)
    expected = fixture["results"][index]
    out = _run(fixture, expected["retention"])
    assert out.num_output == expected["count"]
    assert torch.equal(out.kept, expected["kept"])  # same tokens, same (position) order
    assert out.tokens.dtype == fixture["video"].dtype
    tol = 1e-3 if fixture["video"].dtype == torch.float16 else 1e-6
    torch.testing.assert_close(out.tokens.float(), expected["tokens"].float(), atol=tol, rtol=tol)
    assert out.info["segments"] == expected["segments"]
    assert out.info["context_quotas"] == expected["quotas"]  # no anchor capped in these cases
    assert out.info["official_tokens"] == expected["count"] and out.info["top_up"] == 0


@pytest.mark.parametrize(("case", "index"), RUNS)
def test_assignment_is_consistent_with_kept(case, index):
    fixture = _load(case)
    out = _run(fixture, fixture["results"][index]["retention"])
    frames, per_frame, _ = fixture["video"].shape
    assert out.assignment.shape == (frames * per_frame,)
    assert torch.equal(out.assignment[out.kept], torch.arange(out.num_output))
    assert out.assignment.min() >= -1 and out.assignment.max() < out.num_output


def test_the_p2_quirk_leaves_tokens_unrepresented():
    fixture = _load("small_grid")  # r = 0.04: C = 1, p = 2, segments 3, 5, 2, 2
    out = _run(fixture, 0.04)
    assert out.info["context_quotas"] == [1, 0, 1, 1, 0, 1, 0, 1, 0, 2, 0, 2]
    unmerged = out.assignment.view(12, 64) < 0
    assert unmerged.sum(dim=1).tolist() == [0, 63, 0, 0, 63, 0, 63, 0, 0, 0, 0, 0]
    assert out.info["unrepresented"] == 189


# --- the steps, by hand -----------------------------------------------------------------------

def test_frame_budgets_follow_the_official_floors():
    assert frame_budgets(196, 0.25, 0.4) == (49, 30, 19)
    assert frame_budgets(196, 0.10, 0.4) == (19, 12, 7)
    assert frame_budgets(196, 0.35, 0.4) == (68, 41, 27)  # int(68.6) = 68
    assert frame_budgets(4, 0.2, 0.4) == (0, 0, 0)


def test_dyseg_cuts_below_tau_and_at_the_lowest_similarities():
    feats = _angles([0.95, 0.5, 0.99, 0.97])
    assert segments(feats, c=2, tau=0.9) == [2, 3]  # 0.5 is both below tau and the lowest
    assert segments(feats, c=3, tau=0.9) == [1, 1, 3]  # plus the next lowest, 0.95
    assert segments(feats, c=1, tau=0.98) == [1, 1, 2, 1]  # tau only: 0.95, 0.5, 0.97
    assert segments(feats, c=8, tau=0.0) == [1, 1, 1, 1, 1]  # T < c: every transition
    assert segments(feats[:1], c=8, tau=0.9) == [1]
    ties = _angles([0.8, 0.8, 0.8])
    assert segments(ties, c=2, tau=0.0) == [1, 3]  # ties: the earlier transition


def test_anchor_quotas_count_back_from_the_segment_end():
    # L = 5: ceil(5/4) = 2 anchors (frames 4 and 0) with floor(19*5/2) = 47; L = 3: one, 57
    assert context_quotas([5, 3, 1], 19, 4) == [47, 0, 0, 0, 47, 0, 0, 57, 19]
    assert context_quotas([8], 19, 4) == [0, 0, 0, 76, 0, 0, 0, 76]
    assert context_quotas([3], 1, 2) == [1, 0, 1]  # q == C: the p = 2 quirk
    # the shortfall: 32 frames at 25% in segments 5, 9, 3, 7, 8 -> 32 x 30 + 606 = 1566 of 1568
    quotas = context_quotas([5, 9, 3, 7, 8], 19, 4)
    assert 32 * 30 + sum(quotas) == 1566 < compressors.budget(0.25, 32 * 196)


def test_density_peak_scores_by_hand():
    pool = torch.tensor([[[0.0], [1.0], [3.0]]])  # D = 1; n = 3 < 4 neighbours: all of them
    rho = torch.tensor([math.exp(-10 / 3), math.exp(-5 / 3), math.exp(-13 / 3)])
    delta = torch.tensor([1.0, 3.0, 2.0])  # token 1 is the densest: the largest distance
    torch.testing.assert_close(density_scores(pool)[0], delta * rho)


def test_equal_densities_make_the_lower_position_the_peak():
    pool = torch.tensor([[[0.0], [0.0], [5.0]]])
    score = density_scores(pool)[0]
    assert score[1] == 0 and score[0] > 0  # token 1's nearest denser token is token 0


def test_dtm_merge_weights_by_hand():
    targets = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]]])
    members = torch.tensor([[[1.0, 0.0], [2.0, 0.1], [0.0, 1.0]]])
    live = torch.ones(1, 3, dtype=torch.bool)
    merged, nearest, _ = dtm_merge(members, live, targets, beta=0.6)
    assert nearest.tolist() == [[0, 0, 1]]
    # 2 members: w = max(1/3, 0.6); 1 member (itself): unchanged; none: unchanged
    torch.testing.assert_close(merged[0], torch.tensor([[1.2, 0.02], [0.0, 1.0], [-1.0, -1.0]]))
    merged, _, _ = dtm_merge(members, live, targets, beta=0.3)  # w = 1/3, then 1/2
    torch.testing.assert_close(merged[0, 0], torch.tensor([1 / 3 + 1.0, 0.1 / 3]))
    dead = torch.tensor([[True, False, True]])
    merged, _, best = dtm_merge(members, dead, targets, beta=0.6)
    torch.testing.assert_close(merged[0, 0], torch.tensor([1.0, 0.0]))
    assert best[0, 1] == -math.inf


def test_a_segment_merges_into_every_anchor():
    gen = torch.Generator().manual_seed(0)
    video = torch.randn(5, 16, 6, generator=gen)
    signals = {"frame_features": torch.ones(5, 4), "head_attention": torch.rand(5, 16)}
    c = compressors.build("fastvid", retention=0.5, dyseg_c=1)
    out = c(video, **signals)
    # one segment of 5: R = 8, C = 3, S = 5; anchors frames 4 and 0 with floor(15/2) = 7
    assert out.info["segments"] == [5] and out.info["context_quotas"] == [7, 0, 0, 0, 7]
    assert out.num_output == 5 * 5 + 14
    assert torch.bincount(out.kept // 16, minlength=5).tolist() == [12, 5, 5, 5, 12]
    assert (out.assignment >= 0).all()  # every token is represented ...
    frame = torch.arange(80) // 16
    merged = torch.ones(80, dtype=torch.bool)
    merged[out.kept] = False
    assert set((out.kept[out.assignment] // 16)[merged & (frame % 4 != 0)].tolist()) <= {0, 4}
    # ... and a middle frame's pool enters the context tokens of both anchors
    moved = video.clone()
    moved[2] += 0.5 * torch.randn(16, 6, generator=gen)
    salient_2 = out.kept[(out.kept // 16) == 2] % 16
    moved[2, salient_2] = video[2, salient_2]
    again = c(moved, **signals)
    assert torch.equal(again.kept, out.kept)
    changed = (again.tokens != out.tokens).any(dim=1)
    assert set((out.kept[changed] // 16).tolist()) == {0, 4}


def test_salient_ties_go_to_the_lower_index():
    video = torch.randn(1, 16, 4, generator=torch.Generator().manual_seed(1))
    signals = {"frame_features": torch.ones(1, 2), "head_attention": torch.ones(1, 16)}
    out = compressors.build("fastvid", retention=0.5, stprune_d=0.0)(video, **signals)
    assert out.kept.tolist() == list(range(8))  # S = 8, no context
    torch.testing.assert_close(out.tokens, video[0, :8])


# --- retention mapping, budget modes ----------------------------------------------------------

def test_exact_mode_tops_up_with_the_most_attended_remaining_tokens():
    fixture = _load("scenes_196")
    official = _run(fixture, 0.10)
    exact = _run(fixture, 0.10, budget_mode="exact")
    frames, per_frame, _ = fixture["video"].shape
    target = compressors.budget(0.10, frames * per_frame)
    assert exact.num_output == target and exact.info["top_up"] == target - official.num_output
    assert set(official.kept.tolist()) <= set(exact.kept.tolist())
    extra = sorted(set(exact.kept.tolist()) - set(official.kept.tolist()))
    flat = fixture["video"].reshape(-1, fixture["video"].shape[-1])
    slots = [exact.kept.tolist().index(i) for i in extra]
    torch.testing.assert_close(exact.tokens[slots], flat[extra])  # kept unchanged
    attention = fixture["head_attention"].flatten()
    rest = torch.ones_like(attention, dtype=torch.bool)
    rest[official.kept] = False
    assert attention[extra].min() >= attention[rest & ~torch.isin(
        torch.arange(attention.numel()), torch.tensor(extra))].max()


@pytest.mark.parametrize("retention", [0.01, 0.1, 0.25, 0.5, 0.77, 0.99])
def test_exact_mode_hands_over_exactly_the_budget(retention):
    video = torch.randn(6, 25, 5, generator=torch.Generator().manual_seed(2))
    out = compressors.build("fastvid", retention=retention, budget_mode="exact")(
        video, **_signals(6, 25))
    assert out.num_output == compressors.budget(retention, 150)
    assert out.info["official_tokens"] <= out.num_output


def test_official_count_never_exceeds_the_budget_and_keeps_one_token():
    video = torch.randn(4, 9, 3, generator=torch.Generator().manual_seed(3))
    for retention in (0.05, 0.3, 0.6, 0.9):
        out = compressors.build("fastvid", retention=retention)(video, **_signals(4, 9))
        assert 1 <= out.num_output <= compressors.budget(retention, 36)
    tiny = compressors.build("fastvid", retention=0.05)(video, **_signals(4, 9))
    assert tiny.info["official_tokens"] == 0 and tiny.num_output == 1  # int(9 * 0.05) = 0


def test_anchor_quota_is_capped_at_its_pool():
    # r = 0.5, one 4-frame segment: R = 98, C = 39, S = 59, q = 156 > 137: the official crashes
    video = torch.randn(4, 196, 8, generator=torch.Generator().manual_seed(4))
    signals = {"frame_features": torch.ones(4, 3), "head_attention": torch.rand(4, 196)}
    out = compressors.build("fastvid", retention=0.5, dyseg_c=1)(video, **signals)
    assert out.info["context_quotas"] == [0, 0, 0, 137]
    assert out.num_output == 4 * 59 + 137


def test_full_retention_is_the_identity():
    video = torch.randn(3, 16, 8)
    out = compressors.build("fastvid", retention=1.0)(video, **_signals(3, 16))
    assert torch.equal(out.tokens, video.reshape(-1, 8)) and torch.equal(out.kept, torch.arange(48))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_small_videos_in_low_precision(dtype):
    for frames, per_frame in ((1, 1), (1, 4), (2, 9), (5, 25)):
        video = torch.randn(frames, per_frame, 3).to(dtype)
        video[0, 0] = 0
        out = compressors.build("fastvid", retention=0.3)(video, **_signals(frames, per_frame))
        assert out.tokens.dtype == dtype and torch.isfinite(out.tokens.float()).all()


def test_count_and_provenance():
    c = compressors.build("fastvid", retention=0.25)
    assert c.expected_tokens(32, (14, 14)) is None  # depends on the segments
    exact = compressors.build("fastvid", retention=0.25, budget_mode="exact")
    assert exact.expected_tokens(32, (14, 14)) == 1568
    assert compressors.build("fastvid", retention=1.0).expected_tokens(2, (3, 3)) == 18
    prov = compressors.provenance("fastvid")
    assert prov["fidelity"] == "official" and prov["commit"].startswith("a40a109")


# --- bad inputs -------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"retention": None}, "needs a token budget"),
        ({"dyseg_c": 0}, "dyseg_c"),
        ({"dtm_p": 1.5}, "dtm_p"),
        ({"dyseg_tau": 2.0}, "dyseg_tau"),
        ({"stprune_d": -0.1}, "stprune_d"),
        ({"dtm_beta": True}, "dtm_beta"),
        ({"budget_mode": "budget"}, "budget_mode"),
    ],
)
def test_bad_parameters_fail_at_build(params, match):
    with pytest.raises(ValueError, match=match):
        compressors.build("fastvid", **{"retention": 0.25, **params})


def test_bad_inputs_fail_clearly():
    c = compressors.build("fastvid", retention=0.25)
    signals = _signals(2, 4)
    with pytest.raises(ValueError, match=r"\[T, N, D\]"):
        c(torch.randn(8, 3), **signals)
    nan = torch.randn(2, 4, 3)
    nan[0, 1, 2] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        c(nan, **signals)
    video = torch.randn(2, 4, 3)
    with pytest.raises(ValueError, match="needs the model signal"):
        c(video, frame_features=signals["frame_features"])
    with pytest.raises(ValueError, match="frame_features"):
        c(video, frame_features=torch.randn(3, 8), head_attention=signals["head_attention"])
    with pytest.raises(ValueError, match="head_attention"):
        c(video, frame_features=signals["frame_features"], head_attention=torch.rand(2, 5))
    bad = signals["head_attention"].clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        c(video, frame_features=signals["frame_features"], head_attention=bad)
    with pytest.raises(ValueError, match="grid"):
        c(video, grid=(3, 3), **signals)

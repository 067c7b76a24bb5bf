"""dycoke (DyCoke TTM) against outputs of the official `dycole_ttm` (tests/fixtures/dycoke), plus
plain-spec tests of its layout, retention mapping, exact mode and errors."""

from pathlib import Path

import pytest
import torch

import compressors
import compressors.dycoke  # noqa: F401  (registers "dycoke")
from compressors.dycoke import (
    kept_per_pruned_frame,
    layout,
    minimum_retention,
    official_count,
    ratio_for,
    similarities,
    solve_kept,
    whole_frames,
)

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "dycoke"
CASES = sorted(p.stem for p in FIXTURES.glob("*.pt"))
EXACT = [c for c in CASES if not c.endswith(("odd", "ties"))]
CONFIG = Path(__file__).resolve().parents[1] / "configs" / "compressor" / "dycoke.yaml"


def _load(case: str) -> dict:
    return torch.load(FIXTURES / f"{case}.pt", weights_only=True)


def _run(fixture: dict, **extra):
    knob = {"retention": fixture["retention"]} if fixture["retention"] is not None else {
        "k": fixture["k"]}
    return compressors.build(
        "dycoke", similarity_dtype=fixture["similarity_dtype"], **knob, **extra
    )(fixture["video"])


def _video(frames, per_frame, dim=8, seed=0, dtype=torch.float32):
    return torch.randn(frames, per_frame, dim, generator=torch.Generator().manual_seed(seed)).to(
        dtype)


# --- parity with the official code -------------------------------------------------------------


def test_fixtures_are_present_and_small():
    assert len(CASES) >= 8 and {"t9_n16_odd", "t8_n16_ties", "t16_n49_fp16"} <= set(CASES)
    assert sum(p.stat().st_size for p in FIXTURES.iterdir()) < 1_000_000


@pytest.mark.parametrize("case", EXACT)
def test_reproduces_the_official_output(case):
    fixture = _load(case)
    out = _run(fixture)
    assert out.num_output == fixture["count"]
    assert out.tokens.dtype == fixture["video"].dtype
    torch.testing.assert_close(out.tokens, fixture["tokens"], atol=0, rtol=0)
    assert out.kept.tolist() == fixture["kept"].tolist()  # order included
    assert out.info["k"] == fixture["k"]  # retention cases: the k the fixture ran with
    assert out.info["official_tokens"] == fixture["count"]


def test_odd_frame_count_keeps_the_last_frame_the_official_code_drops():
    fixture = _load("t9_n16_odd")
    out = _run(fixture)
    count, per_frame = fixture["count"], fixture["video"].shape[1]
    assert out.kept[:count].tolist() == fixture["kept"].tolist()
    assert out.kept[count:].tolist() == list(range(8 * per_frame, 9 * per_frame))
    assert out.num_output == count + per_frame


def test_exact_ties_keep_the_official_similarities_but_go_to_the_lower_position():
    fixture = _load("t8_n16_ties")  # every similarity is exactly 0 or 1
    out = _run(fixture)
    assert out.num_output == fixture["count"]
    video = fixture["video"]
    per_frame = video.shape[1]
    pruned, sims = similarities(video)
    flat_sim = torch.full((video.shape[0], per_frame), float("nan"))
    flat_sim[pruned] = sims
    flat_sim = flat_sim.flatten()
    ours, theirs = flat_sim[out.kept], flat_sim[fixture["kept"]]
    assert torch.equal(ours.isnan(), theirs.isnan())  # same whole frames
    torch.testing.assert_close(ours.nan_to_num(-1), theirs.nan_to_num(-1), atol=0, rtol=0)
    assert out.kept.tolist() != fixture["kept"].tolist()  # CPU topk orders ties its own way
    for f in pruned:  # ours: ascending similarity, then ascending position
        mine = out.kept[(out.kept // per_frame) == f]
        key = [(float(flat_sim[i]), int(i)) for i in mine]
        assert key == sorted(key)


def test_float16_run_matches_in_its_own_dtype():
    fixture = _load("t16_n49_fp16")  # similarity_dtype="input"; holds a zero token (NaN in fp16)
    assert (fixture["video"] == 0).all(-1).any()
    out = _run(fixture)
    assert out.kept.tolist() == fixture["kept"].tolist()
    zero = int((fixture["video"].reshape(-1, 32) == 0).all(-1).nonzero())
    assert out.assignment[zero] == -1  # NaN similarity ranks last, as with topk
    in_float32 = compressors.build("dycoke", k=fixture["k"])(fixture["video"])
    assert in_float32.num_output == fixture["count"]  # same count; the choice may differ slightly


# --- the method's steps, by hand ---------------------------------------------------------------


def test_layout_of_32_frames_leaves_nine_whole_frames():
    assert whole_frames(32) == [0, 4, 8, 12, 16, 20, 24, 28, 30]
    plan = layout(32)
    assert plan[1] == (0, 1) and plan[31] == (30, 1) and plan[26] == (24, 2)
    assert 30 not in plan  # range(0, T - 4, 4) stops at i = 24
    assert minimum_retention(32) == 9 / 32
    assert official_count(32, 196, kept_per_pruned_frame(0.7, 196)) == 3098  # 49.4%
    assert official_count(32, 196, kept_per_pruned_frame(1.0, 196)) == 1764  # 28.1%
    assert [minimum_retention(t) for t in (1, 2, 3, 4, 8, 16)] == [1, 0.5, 2 / 3, 0.5, 3 / 8,
                                                                   5 / 16]


def test_pruned_frames_keep_their_least_similar_tokens_in_ascending_order():
    # T = 6: frame 1 against 0 (pairs), frame 2 against 0 (window), frame 3 against 2, 5 against 4
    video = torch.zeros(6, 4, 2)
    video[..., 0] = 1.0
    angles = torch.tensor([0.3, 0.1, 0.9, 0.5])  # radians away from frame 0's tokens
    video[1] = torch.stack([angles.cos(), angles.sin()], -1)
    video[2] = torch.stack([angles.flip(0).cos(), angles.flip(0).sin()], -1)
    out = compressors.build("dycoke", k=0.5)(video)  # n = int(0.5 * 4) = 2
    assert out.info["whole_frames"] == [0, 4]
    per_frame = 4
    frame1 = out.kept[4:6] - per_frame
    frame2 = out.kept[6:8] - 2 * per_frame
    assert frame1.tolist() == [2, 3]  # the largest angles 0.9, 0.5: lowest cosine first
    assert frame2.tolist() == [1, 0]  # flipped angles [0.5, 0.9, 0.1, 0.3]
    assert out.assignment.view(6, 4)[1].tolist() == [-1, -1, 4, 5]


def test_stage_two_compares_against_the_window_anchor_not_the_pair():
    video = _video(8, 9, dim=4, seed=3)
    pruned, sims = similarities(video)
    row = pruned.index(2)
    expected = torch.nn.functional.cosine_similarity(video[0], video[2], dim=-1)
    torch.testing.assert_close(sims[row], expected, atol=0, rtol=0)


# --- retention mapping, count=, exact mode -----------------------------------------------------


def test_ratio_for_round_trips_through_the_official_int():
    for per_frame in range(1, 300):
        for kept in range(per_frame + 1):
            k = ratio_for(kept, per_frame)
            assert 0.0 <= k <= 1.0 and kept_per_pruned_frame(k, per_frame) == kept


@pytest.mark.parametrize("frames,per_frame", [(32, 196), (16, 49), (8, 9), (5, 4), (2, 1)])
def test_retention_picks_the_closest_official_count(frames, per_frame):
    total = frames * per_frame
    for retention in torch.linspace(minimum_retention(frames), 1.0, 23).tolist():
        target = compressors.budget(retention, total)
        best = solve_kept(target, frames, per_frame)
        gaps = [abs(official_count(frames, per_frame, n) - target) for n in range(per_frame + 1)]
        assert gaps[best] == min(gaps) and best == gaps.index(min(gaps))  # ties: smaller n


def test_count_is_registered_and_matches_the_output():
    video = _video(32, 49, seed=1)
    for params in ({"k": 0.7}, {"retention": 0.5}, {"retention": 0.3, "budget_mode": "exact"}):
        c = compressors.build("dycoke", **params)
        assert c.expected_tokens(32, (7, 7)) == c(video).num_output
    assert compressors.build("dycoke", k=0.7).expected_tokens(32, (14, 14)) == 3098


@pytest.mark.parametrize("frames,per_frame", [(32, 49), (9, 16), (4, 9), (2, 25)])
def test_exact_mode_hands_over_the_budget(frames, per_frame):
    video = _video(frames, per_frame, seed=frames)
    total = frames * per_frame
    for retention in torch.linspace(minimum_retention(frames), 1.0, 9).tolist():
        out = compressors.build("dycoke", retention=retention, budget_mode="exact")(video)
        assert out.num_output == compressors.budget(retention, total)
        assert out.assignment[out.kept].tolist() == list(range(out.num_output))


def test_exact_mode_tops_up_the_most_changed_frames():
    video = _video(8, 16, seed=5)
    pruned, sims = similarities(video)
    official = compressors.build("dycoke", retention=0.6)(video)
    n = official.info["kept_per_pruned_frame"]
    target = official.info["target_tokens"]
    out = compressors.build("dycoke", retention=0.6, budget_mode="exact")(video)
    quotas = torch.tensor(out.info["pruned_frame_tokens"])
    base = int(quotas.min())
    assert int(quotas.max()) - base <= 1 and int(quotas.sum()) == target - 3 * 16
    nxt = sims.sort(dim=1).values[:, base]
    extra = quotas > base
    if extra.any() and (~extra).any():
        assert nxt[extra].max() <= nxt[~extra].min()
    # within each frame the exact selection is a prefix/extension of the official one
    for f in pruned:
        mine = out.kept[out.kept // 16 == f].tolist()
        theirs = official.kept[official.kept // 16 == f].tolist()
        shorter, longer = sorted((mine, theirs), key=len)
        assert longer[: len(shorter)] == shorter and len(theirs) == n


# --- small shapes and the registry contract ----------------------------------------------------


@pytest.mark.parametrize("frames", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_tiny_videos_degrade_gracefully(frames, dtype):
    video = _video(frames, 4, dim=3, seed=frames, dtype=dtype)
    video[0, 0] = 0
    for mode in ("official", "exact"):
        for sim in ("float32", "input"):
            c = compressors.build("dycoke", retention=1.0, budget_mode=mode, similarity_dtype=sim)
            out = c(video)
            assert out.num_output == frames * 4 and out.tokens.dtype == dtype
            order = out.assignment.argsort()
            assert torch.equal(out.tokens[out.assignment[order]], video.reshape(-1, 3)[order])
            low = c.params | {"retention": minimum_retention(frames)}
            out = compressors.build("dycoke", **low)(video)
            assert out.num_output == len(whole_frames(frames)) * 4
            assert torch.isfinite(out.tokens.float()).all()
            assert out.assignment.min() >= -1 and out.assignment.max() < out.num_output



# --- errors ------------------------------------------------------------------------------------


def test_unreachable_retention_names_the_minimum_and_the_fix():
    c = compressors.build("dycoke", retention=0.2)
    with pytest.raises(ValueError, match=r"minimum is 1764 tokens.*retention >= 0\.28125"):
        c(_video(32, 196, dim=2))
    with pytest.raises(ValueError, match="retention >= 0.28125"):
        c.expected_tokens(32, (14, 14))
    with pytest.raises(ValueError, match="cannot reach"):
        compressors.build("dycoke", retention=0.2, budget_mode="exact")(_video(32, 196, dim=2))
    with pytest.raises(ValueError, match="cannot reach"):
        compressors.build("dycoke", retention=0.5)(_video(1, 4))  # one frame: nothing to prune


@pytest.mark.parametrize("params,match", [
    ({}, "needs a token budget"),
    ({"retention": 0.5, "k": 0.7}, "not both"),
    ({"k": 1.5}, r"k is DyCoke's pruning ratio in \[0, 1\]"),
    ({"k": True}, "pruning ratio"),
    ({"k": 0.7, "budget_mode": "exact"}, "needs a retention"),
    ({"retention": 0.5, "budget_mode": "closest"}, "budget_mode must be one of"),
    ({"retention": 0.5, "similarity_dtype": "float16"}, "similarity_dtype must be one of"),
    ({"retention": 0.0}, "retention"),
])
def test_bad_parameters_fail_at_build(params, match):
    with pytest.raises(ValueError, match=match):
        compressors.build("dycoke", **params)


def test_bad_videos_fail_before_compressing():
    c = compressors.build("dycoke", retention=0.5)
    with pytest.raises(ValueError, match="grid"):
        c(torch.randn(2, 4, 3), grid=(3, 3))

"""vidcom2 against outputs of the official VidCom2 code (tests/fixtures/vidcom2) and against
plain-spec checks of its steps: the Gaussian scores, the frame budgets, the selection."""

import math
from pathlib import Path

import pytest
import torch

import compressors
import compressors.vidcom2 as vidcom2

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "vidcom2"
CASES = sorted(p.stem for p in FIXTURES.glob("*.pt"))
TIED = "ties_r50_fp16"


def _load(case: str) -> dict:
    return torch.load(FIXTURES / f"{case}.pt", weights_only=True)


def _run(fixture: dict, **params):
    return compressors.build("vidcom2", retention=fixture["retention"], **params)(fixture["video"])


def _cutoff_ties(fixture: dict) -> int:
    """Frames whose last kept score equals their first dropped one (official counts)."""
    scores, quotas = fixture["scores"], fixture["per_frame"].tolist()
    ties = 0
    for row, k in zip(scores, quotas, strict=True):
        ordered = row.sort().values
        ties += int(k < row.numel() and bool(ordered[k - 1] == ordered[k]))
    return ties


def test_fixtures_cover_the_branches():
    assert sum(p.stat().st_size for p in FIXTURES.iterdir()) < 1_000_000
    fixtures = {c: _load(c) for c in CASES}
    assert len(fixtures) >= 6
    over = under = equal = capped = floored = 0
    for f in fixtures.values():
        frames, per_frame, _ = f["video"].shape
        target = compressors.budget(f["retention"], frames * per_frame)
        count = f["kept"].numel()
        over, under = over + (count > target), under + (count < target)
        equal += count == target
        capped += int((f["per_frame"] == per_frame).any())
        floored += int(bool((f["scales"].float() * per_frame < 0.5).any()))
    assert over and under and equal and capped and floored
    assert {f["video"].dtype for f in fixtures.values()} == {torch.float32, torch.float16}
    assert {f["video"].shape[1] for f in fixtures.values()} >= {196, 64, 49, 16}
    assert _cutoff_ties(fixtures[TIED]) >= 1
    assert all(_cutoff_ties(f) == 0 for c, f in fixtures.items() if c != TIED)


@pytest.mark.parametrize("case", CASES)
def test_scores_and_budgets_match_the_official_intermediates(case):
    fixture = _load(case)
    video = fixture["video"]
    s_video, s_frame = vidcom2.scores(video)
    assert s_video.dtype == video.dtype
    torch.testing.assert_close(s_video + s_frame, fixture["scores"], rtol=0, atol=1e-6)
    torch.testing.assert_close(-s_video.mean(dim=-1), fixture["uniqueness"], rtol=0, atol=1e-6)
    quotas = vidcom2.frame_budgets(fixture["uniqueness"], fixture["retention"], video.shape[1])
    assert quotas.tolist() == fixture["per_frame"].tolist()


@pytest.mark.parametrize("case", [c for c in CASES if c != TIED])
def test_reproduces_the_official_output(case):
    fixture = _load(case)
    out = _run(fixture)
    assert out.num_output == fixture["kept"].numel() == out.info["official_tokens"]
    assert out.info["frame_tokens"] == fixture["per_frame"].tolist()
    assert torch.equal(out.kept, fixture["kept"])  # same tokens, same order
    assert out.tokens.dtype == fixture["video"].dtype
    torch.testing.assert_close(out.tokens, fixture["tokens"], rtol=0, atol=0)


def test_float16_ties_differ_only_among_equal_scores_and_go_to_the_lower_index():
    fixture = _load(TIED)
    out = _run(fixture)
    per_frame = fixture["video"].shape[1]
    assert out.num_output == fixture["kept"].numel()
    assert out.info["frame_tokens"] == fixture["per_frame"].tolist()
    ours, official = set(out.kept.tolist()), set(fixture["kept"].tolist())
    assert ours != official  # the official CPU topk chose other tied tokens
    scores = fixture["scores"]
    for t, (row, k) in enumerate(zip(scores, fixture["per_frame"].tolist(), strict=True)):
        cut = row.sort().values[k - 1]
        frame = range(t * per_frame, (t + 1) * per_frame)
        mine = {i - t * per_frame for i in ours if i in frame}
        theirs = {i - t * per_frame for i in official if i in frame}
        assert {n for n in mine if row[n] < cut} == {n for n in theirs if row[n] < cut}
        tied = (row == cut).nonzero().flatten().tolist()
        chosen = sorted(n for n in mine if row[n] == cut)
        assert chosen == tied[: len(chosen)]  # the lowest indices among the tied tokens
    flat = fixture["video"].reshape(-1, fixture["video"].shape[-1])
    assert torch.equal(out.tokens, flat[out.kept])


@pytest.mark.parametrize("case", CASES)
def test_exact_mode_changes_only_the_difference(case):
    fixture = _load(case)
    out = _run(fixture, budget_mode="exact")
    frames, per_frame, dim = fixture["video"].shape
    target = compressors.budget(fixture["retention"], frames * per_frame)
    assert out.num_output == target == out.info["target_tokens"]
    official = _run(fixture)
    ours, theirs = set(out.kept.tolist()), set(official.kept.tolist())
    score = fixture["scores"].flatten().float()
    if len(theirs) < target:  # top-up with the lowest unselected scores
        added = ours - theirs
        assert theirs <= ours and len(added) == target - len(theirs)
        rest = set(range(frames * per_frame)) - ours
        assert max(score[list(added)]) <= min(score[list(rest)])
    else:  # trim the highest selected scores
        removed = theirs - ours
        assert ours <= theirs and len(removed) == len(theirs) - target
        if removed:
            assert min(score[list(removed)]) >= max(score[list(ours)])
    flat = fixture["video"].reshape(-1, dim)
    assert torch.equal(out.tokens, flat[out.kept])


def test_kernel_is_the_sum_of_five_gaussians():
    x = torch.tensor([[[0.6, 0.8], [0.0, 1.0]]])
    centre = torch.zeros(1, 1, 2)
    got = vidcom2._kernel(x, centre)
    want = sum(math.exp(-1.0 / (2 * a)) for a in (0.125, 0.25, 0.5, 1.0, 2.0))
    torch.testing.assert_close(got, torch.full((1, 2), want))
    assert vidcom2._kernel(centre, centre).item() == 5.0


def test_scores_use_only_the_lowest_variance_channels():
    gen = torch.Generator().manual_seed(0)
    video = torch.randn(3, 9, 6, generator=gen) * torch.tensor([1, 9, 1, 9, 1, 9.0])
    other = video.clone()
    other[..., 1::2] = torch.randn(3, 9, 3, generator=gen) * 9  # still the high-variance half
    for a, b in zip(vidcom2.scores(video), vidcom2.scores(other), strict=True):
        torch.testing.assert_close(a, b)
    low = video[..., 0::2]
    x = low / low.norm(dim=-1, keepdim=True)
    d_video = ((x - x.mean(dim=(0, 1))) ** 2).sum(-1)
    want = sum(torch.exp(-d_video / (2 * a)) for a in (0.125, 0.25, 0.5, 1.0, 2.0))
    torch.testing.assert_close(vidcom2.scores(video)[0], want)


def test_frame_budgets_by_hand():
    # one clearly more unique frame takes p ~ 1: scales r * (1 + 1 - 1/2) and r * (1 - 1/2)
    assert vidcom2.frame_budgets(torch.tensor([0.0, 1.0]), 0.2, 10).tolist() == [1, 3]
    # equal uniqueness: uniform softmax, every frame gets round(r * N) (half to even)
    assert vidcom2.frame_budgets(torch.zeros(4), 0.25, 10).tolist() == [2, 2, 2, 2]
    assert vidcom2.frame_budgets(torch.zeros(4), 0.35, 10).tolist() == [4, 4, 4, 4]
    # the clamp at 1 and the floor of one token a frame
    assert vidcom2.frame_budgets(torch.tensor([0.0, 1.0]), 0.8, 10).tolist() == [4, 10]
    assert vidcom2.frame_budgets(torch.zeros(3), 0.01, 10).tolist() == [1, 1, 1]
    # the temperature: at 1.0 a 0.01 difference barely moves the budgets
    soft = vidcom2.frame_budgets(torch.tensor([0.0, 0.01]), 0.5, 100, temperature=1.0)
    assert soft.tolist() == [50, 50]


def test_the_unique_frame_and_the_outlier_token_win():
    gen = torch.Generator().manual_seed(3)
    video = 1 + 0.05 * torch.randn(4, 16, 8, generator=gen)
    # frame 2 changes direction as a whole, by the same amount in every channel
    video[2] += 0.5 * torch.tensor([1.0, -1.0]).repeat(4)
    video[1, 5] += 0.5 * torch.tensor([-1.0, 1.0]).repeat(4)  # one odd token in frame 1
    out = compressors.build("vidcom2", retention=0.25)(video)
    budgets = out.info["frame_tokens"]
    assert budgets[2] == max(budgets) > 4 and sum(budgets) == 16
    assert 16 + 5 in out.kept.tolist()


def test_full_retention_keeps_every_token_in_exact_mode_only():
    video = torch.randn(3, 16, 8, generator=torch.Generator().manual_seed(1))
    exact = compressors.build("vidcom2", retention=1.0, budget_mode="exact")(video)
    assert torch.equal(exact.tokens, video.reshape(-1, 8))
    assert torch.equal(exact.assignment, torch.arange(48))
    official = compressors.build("vidcom2", retention=1.0)(video)
    assert official.num_output < 48  # frames below the mean uniqueness get scale < 1


def test_selection_contract_and_dtypes():
    gen = torch.Generator().manual_seed(2)
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        video = torch.randn(5, 25, 6, generator=gen).to(dtype)
        video[0, 0] = 0
        for mode in ("official", "exact"):
            out = compressors.build("vidcom2", retention=0.3, budget_mode=mode)(video)
            assert out.tokens.dtype == dtype and torch.isfinite(out.tokens.float()).all()
            flat = video.reshape(-1, 6)
            assert torch.equal(out.tokens, flat[out.kept])
            assert torch.equal(out.kept, out.kept.sort().values)
            dropped = torch.ones(125, dtype=torch.bool)
            dropped[out.kept] = False
            assert (out.assignment[dropped] == -1).all()
            assert torch.equal(out.assignment[out.kept], torch.arange(out.num_output))
        again = compressors.build("vidcom2", retention=0.3, score_dtype="float32")(video)
        assert again.tokens.dtype == dtype and again.info["score_dtype"] == "float32"


@pytest.mark.parametrize("shape", [(1, 1, 1), (1, 4, 1), (3, 1, 2), (2, 9, 1), (1, 16, 3)])
def test_tiny_shapes_degrade_gracefully(shape):
    frames, per_frame, _ = shape
    video = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    for retention in (0.01, 0.5, 1.0):
        out = compressors.build("vidcom2", retention=retention)(video)
        assert 1 <= out.num_output <= frames * per_frame
        assert len(out.info["frame_tokens"]) == frames and min(out.info["frame_tokens"]) >= 1
        exact = compressors.build("vidcom2", retention=retention, budget_mode="exact")(video)
        assert exact.num_output == compressors.budget(retention, frames * per_frame)
    if per_frame == 1:  # one token a frame: the floor of one keeps them all
        assert compressors.build("vidcom2", retention=0.01)(video).num_output == frames


def test_count_is_the_budget_in_exact_mode_and_unknown_in_official_mode():
    exact = compressors.build("vidcom2", retention=0.25, budget_mode="exact")
    assert exact.expected_tokens(32, (14, 14)) == 1568
    assert compressors.build("vidcom2", retention=0.25).expected_tokens(32, (14, 14)) is None


def test_registry_entry_and_config():
    info = compressors.provenance("vidcom2")
    assert info["fidelity"] == "official" and info["commit"].startswith("944a17d")
    assert compressors.build("vidcom2", retention=0.5).signals == ()


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"retention": None}, "needs a token budget"),
        ({"budget_mode": "strict"}, "budget_mode"),
        ({"temperature": 0.0}, "temperature"),
        ({"temperature": float("inf")}, "temperature"),
        ({"channel_ratio": 0.0}, "channel_ratio"),
        ({"channel_ratio": 1.5}, "channel_ratio"),
        ({"channel_ratio": True}, "channel_ratio"),
        ({"score_dtype": "float16"}, "score_dtype"),
    ],
)
def test_bad_parameters_fail_at_build(params, message):
    with pytest.raises(ValueError, match=message):
        compressors.build("vidcom2", **{"retention": 0.25, **params})


def test_bad_inputs_fail_clearly():
    c = compressors.build("vidcom2", retention=0.25)
    with pytest.raises(ValueError, match="grid"):
        c(torch.randn(2, 16, 4), grid=(3, 5))
    assert c(torch.randn(2, 12, 4), grid=(3, 4)).num_input == 24  # non-square with a grid
    assert c(torch.randn(2, 12, 4)).num_input == 24  # the layout is not needed
    with pytest.raises(ValueError, match="signal"):
        c(torch.randn(2, 4, 3), importance=torch.rand(2, 4))

"""holitom against outputs of the official HoliTom code (tests/fixtures/holitom), plus the
method's distinctive steps on hand-made inputs."""

import math
from pathlib import Path

import pytest
import torch

import compressors
import compressors.holitom  # noqa: F401  (registers "holitom")
from compressors.holitom import (
    dpc_knn_centres,
    merge_clusters,
    static_runs,
    static_windows,
    temporal_similarity,
)

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "holitom"
CASES = sorted(p.stem for p in FIXTURES.glob("*.pt"))
CONFIG = Path(__file__).resolve().parents[1] / "configs" / "compressor" / "holitom.yaml"


def _load(case: str) -> dict:
    return torch.load(FIXTURES / f"{case}.pt", weights_only=True)


def _run(fixture: dict, **params):
    c = compressors.build(
        "holitom", retention=fixture["retention"], static_tau=fixture["tau"], beta=fixture["beta"],
        k=fixture["k"], max_window_size=fixture["max_window_size"], seed=fixture["seed"], **params
    )
    return c(fixture["video"], importance=fixture["importance"])


def _sources(assignment: torch.Tensor, slots: int) -> list[list[int]]:
    """For each output slot, the flat input indices assigned to it (ascending)."""
    sources = [[] for _ in range(slots)]
    for index, slot in enumerate(assignment.tolist()):
        if slot >= 0:
            sources[slot].append(index)
    return sources


# ------------------------------------------------------------------ official parity


def test_fixtures_are_present_and_cover_the_branches():
    assert len(CASES) >= 5
    assert sum(p.stat().st_size for p in FIXTURES.iterdir()) < 1_000_000
    fixtures = [_load(c) for c in CASES]
    lengths = [[e - s + 1 for s, e in f["windows"]] for f in fixtures]
    assert any(len(ls) > 1 and max(ls) > 1 for ls in lengths)  # several multi-frame windows
    assert any(set(ls) == {1} for ls in lengths)  # no static window at all
    assert any(f["retain_ratio"] == 1.0 for f in fixtures)  # static-heavy: r' capped, undershoot
    assert any(f["max_window_size"] < 1024 for f in fixtures)
    assert any(0 < len(c) < 7 for f in fixtures for c in f["centres"])  # k' = centres < k
    assert len({f["retention"] for f in fixtures}) >= 3


@pytest.mark.parametrize("case", CASES)
def test_reproduces_the_official_tokens(case):
    fixture = _load(case)
    out = _run(fixture)
    assert out.num_output == fixture["tokens"].shape[0] == out.info["official_tokens"]
    assert out.tokens.dtype == fixture["video"].dtype
    torch.testing.assert_close(out.tokens, fixture["tokens"], atol=1e-6, rtol=1e-6)
    assert out.info["reduced"] == fixture["total_reduced"]
    assert out.info["rescaled_retention"] == fixture["retain_ratio"]
    assert out.info["window_lengths"] == [e - s + 1 for s, e in fixture["windows"]]


@pytest.mark.parametrize("case", CASES)
def test_reproduces_the_official_windows_and_centres(case):
    fixture = _load(case)
    x, tau = fixture["video"], fixture["tau"]
    run = static_runs(temporal_similarity(x), tau)
    windows, reduced = static_windows(run, fixture["max_window_size"])
    assert [list(w) for w in windows] == fixture["windows"] and reduced == fixture["total_reduced"]
    gen = torch.Generator().manual_seed(fixture["seed"])
    centres = iter(fixture["centres"])
    for s, e in windows:
        if e == s:
            continue
        static = run[s] >= e - s
        official = next(centres)
        means = x[s : e + 1, static].mean(dim=0)
        noise = torch.rand(1, means.shape[0], generator=gen)[0]
        got, _ = dpc_knn_centres(means, len(official), fixture["k"], noise)
        assert static.nonzero().flatten()[got].tolist() == official  # frame positions
    assert next(centres, None) is None


@pytest.mark.parametrize("case", CASES)
def test_selects_the_official_dynamic_tokens_in_order(case):
    fixture = _load(case)
    out = _run(fixture)
    per_frame = fixture["video"].shape[1]
    sources = _sources(out.assignment, out.num_output)
    slot, centres = 0, iter(fixture["centres"])
    for (s, e), dynamic in zip(fixture["windows"], fixture["dynamic"], strict=True):
        if e > s:
            slot += len(next(centres))
        for t, positions in zip(range(s, e + 1), dynamic, strict=True):
            for pos in positions:  # each kept dynamic token represents itself alone
                assert sources[slot] == [t * per_frame + pos]
                slot += 1
    assert slot == out.num_output


@pytest.mark.parametrize("case", CASES)
def test_exact_mode_lands_on_the_budget(case):
    fixture = _load(case)
    out = _run(fixture, budget_mode="exact")
    frames, per_frame, dim = fixture["video"].shape
    assert out.num_output == compressors.budget(fixture["retention"], frames * per_frame)
    assert out.info["official_tokens"] == fixture["tokens"].shape[0]
    assert out.tokens.shape[1] == dim and torch.isfinite(out.tokens).all()
    counts = torch.bincount(out.assignment[out.assignment >= 0], minlength=out.num_output)
    assert (counts > 0).all()  # every output token represents some input token
    assert out.info["restored"] == (
        max(0, out.num_output - (frames * per_frame - fixture["total_reduced"]))
    )


# ------------------------------------------------------------------ the method's steps


def test_static_runs_use_a_strict_threshold():
    sim = torch.tensor([[0.8, 0.9, 0.95], [0.9, 0.5, 0.95]])  # [T-1 = 2, N = 3]
    run = static_runs(sim, 0.8)
    assert run.tolist() == [[0, 1, 2], [1, 0, 1], [0, 0, 0]]


def test_dynamic_programme_maximises_static_tokens_times_length_minus_one():
    # token 0 static over frames 0..3, token 1 never: one window removes 1 x 3 tokens
    run = static_runs(torch.tensor([[0.9, 0.1], [0.9, 0.1], [0.9, 0.1]]), 0.8)
    assert static_windows(run, 1024) == ([(0, 3)], 3)
    assert static_windows(run, 2) == ([(0, 1), (2, 3)], 2)  # at most 2 frames a window
    assert static_windows(run, 1) == ([(0, 0), (1, 1), (2, 2), (3, 3)], 0)
    assert static_windows(static_runs(torch.zeros(0, 4), 0.8), 1024) == ([(0, 0)], 0)
    # token 1 also static over 2..3: (0..1) + (2..3) = 1 + 2 ties (0..3) = 3; shorter kept
    run = static_runs(torch.tensor([[0.9, 0.1], [0.9, 0.1], [0.9, 0.9]]), 0.8)
    assert static_windows(run, 1024) == ([(0, 1), (2, 3)], 3)


def test_dynamic_programme_keeps_the_shorter_split_on_ties():
    # frames 0..2: token 0 static over 0..2 (1 x 2 = 2), token 1 over 1..2 (1 x 1 = 1)
    run = static_runs(torch.tensor([[0.9, 0.1], [0.9, 0.9]]), 0.8)
    # (0..2): 1 token x 2 = 2; (0..1) + (2): 1; (0) + (1..2): 2 x 1 = 2: a tie, the shorter wins
    windows, reduced = static_windows(run, 1024)
    assert reduced == 2 and windows == [(0, 0), (1, 2)]


def test_merge_is_beta_centre_plus_the_mean_of_the_members():
    x = torch.tensor([[0.0, 0.0], [1.0, 0.0], [3.0, 0.0], [10.0, 0.0]])
    centres = torch.tensor([0, 3])
    dist = torch.cdist(x, x)
    tokens, owner = merge_clusters(x, centres, dist, 0.6)
    assert owner.tolist() == [0, 0, 0, 1]
    torch.testing.assert_close(tokens, torch.tensor([[0.8, 0.0], [10.0, 0.0]]))  # 0.4 * mean 2


def test_dpc_knn_picks_one_centre_per_dense_group():
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(6, 4, generator=gen) * 0.01
    b = torch.randn(5, 4, generator=gen) * 0.01 + 5.0
    x = torch.cat([a, b, torch.full((1, 4), 20.0)])  # two groups and an outlier
    # mutual nearest neighbours have equal densities: the noise breaks the tie, as officially
    centres, _ = dpc_knn_centres(x, 2, 3, torch.rand(x.shape[0], generator=gen))
    assert (centres[0] < 6) and (6 <= centres[1] < 11)


def test_static_video_undershoots_in_official_mode_and_restores_in_exact_mode():
    gen = torch.Generator().manual_seed(0)
    frame = torch.randn(1, 4, 8, generator=gen)
    video = frame.expand(4, 4, 8).clone()  # every token static over all 4 frames
    importance = torch.rand(4, 4, generator=gen)
    out = compressors.build("holitom", retention=0.5)(video, importance=importance)
    # reduced = 4 x 3 = 12 of 16: r' = min(0.5 / (4 / 16), 1) = 1 -> the 4 window means
    assert out.info["reduced"] == 12 and out.info["rescaled_retention"] == 1
    assert out.num_output == 4 and out.info["target_tokens"] == 8
    torch.testing.assert_close(out.tokens, frame[0])
    assert out.assignment.view(4, 4).tolist() == [[0, 1, 2, 3]] * 4
    exact = compressors.build("holitom", retention=0.5, budget_mode="exact")(
        video, importance=importance
    )
    assert exact.num_output == 8 and exact.info["restored"] == 4
    counts = torch.bincount(exact.assignment, minlength=8)
    assert (counts > 0).all() and exact.assignment.min() >= 0


@pytest.mark.parametrize("case", CASES)
def test_official_count_is_round_static_plus_ceil_dynamic(case):
    fixture = _load(case)
    out = _run(fixture)
    frames, per_frame, _ = fixture["video"].shape
    total = frames * per_frame
    r = fixture["retention"] / ((total - fixture["total_reduced"]) / total)
    assert out.info["rescaled_retention"] == min(r, 1)
    run = static_runs(temporal_similarity(fixture["video"]), fixture["tau"])
    expected = 0
    for s, e in fixture["windows"]:
        n_static = int((run[s] >= e - s).sum()) if e > s else 0
        expected += round(n_static * min(r, 1)) + (e - s + 1) * math.ceil(
            (per_frame - n_static) * min(r, 1)
        )
    assert out.num_output == expected


def test_full_retention_is_the_identity():
    video = torch.randn(3, 16, 8)
    video[1] = video[0]  # would be static in the official code
    for mode in ("official", "exact"):
        out = compressors.build("holitom", retention=1.0, budget_mode=mode)(
            video, importance=torch.rand(3, 16)
        )
        assert torch.equal(out.tokens, video.reshape(-1, 8))
        assert out.assignment.tolist() == list(range(48))


@pytest.mark.parametrize("mode", ["official", "exact"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_tiny_videos_keep_the_contract(mode, dtype):
    for seed in range(40):
        gen = torch.Generator().manual_seed(seed)
        frames = 1 + seed % 5
        per_frame = [1, 4, 9, 16, 25][seed % 5]
        retention = 0.01 + 0.99 * torch.rand(1, generator=gen).item()
        video = torch.randn(frames, per_frame, 1 + seed % 6, generator=gen)
        if seed % 3 == 0:  # static-heavy
            video = video[:1] + 0.01 * torch.randn(video.shape, generator=gen)
        video = video.to(dtype)
        video[0, 0] = 0
        importance = torch.rand(frames, per_frame, generator=gen)
        c = compressors.build("holitom", retention=retention, budget_mode=mode)
        out = c(video, importance=importance)
        if mode == "exact":
            assert out.num_output == compressors.budget(retention, frames * per_frame)
        assert out.num_output >= 1 and out.tokens.dtype == dtype
        assert torch.isfinite(out.tokens.float()).all()
        assert out.assignment.min() >= -1 and out.assignment.max() < out.num_output
        again = c(video, importance=importance)
        assert torch.equal(out.tokens, again.tokens)
        assert torch.equal(out.assignment, again.assignment)


def test_expected_tokens_follow_the_budget_mode():
    assert compressors.build("holitom", retention=0.25).expected_tokens(32, (14, 14)) is None
    exact = compressors.build("holitom", retention=0.25, budget_mode="exact")
    assert exact.expected_tokens(32, (14, 14)) == 1568
    assert compressors.build("holitom", retention=1.0).expected_tokens(32, (14, 14)) == 6272



# ------------------------------------------------------------------ bad inputs


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"d": 0.5}, "crashes"),
        ({"static_tau": 1.5}, "static_tau"),
        ({"beta": -0.1}, "beta"),
        ({"k": 0}, "k "),
        ({"max_window_size": 0}, "max_window_size"),
        ({"budget_mode": "budget"}, "budget_mode"),
        ({"seed": -1}, "seed"),
    ],
)
def test_bad_parameters_fail_at_build(params, message):
    with pytest.raises(ValueError, match=message):
        compressors.build("holitom", retention=0.25, **params)


def test_retention_is_required():
    with pytest.raises(ValueError, match="retention"):
        compressors.build("holitom")


def test_bad_inputs_fail_clearly():
    c = compressors.build("holitom", retention=0.25)
    with pytest.raises(ValueError, match=r"\[T, N, D\]"):
        c(torch.randn(16, 8), importance=torch.rand(1, 16))
    nan = torch.randn(2, 4, 3)
    nan[1, 2, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        c(nan, importance=torch.rand(2, 4))
    with pytest.raises(ValueError, match="importance"):
        c(torch.randn(2, 4, 3), importance=torch.rand(2, 5))
    with pytest.raises(ValueError, match="importance"):
        c(torch.randn(2, 4, 3))
    bad = torch.rand(2, 4)
    bad[0, 0] = float("inf")
    with pytest.raises(ValueError, match="importance"):
        c(torch.randn(2, 4, 3), importance=bad)

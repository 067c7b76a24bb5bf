"""prunevid against outputs of the official PruneVid code (tests/fixtures/prunevid), plus the
method's distinctive steps, its retention mapping, exact mode and bad inputs."""

from pathlib import Path

import pytest
import torch

import compressors
import compressors.prunevid  # noqa: F401  registers "prunevid"
from compressors.prunevid import dpc_knn, refine_labels, static_similarity, temporal_segments

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "prunevid"
CASES = sorted(p.stem for p in FIXTURES.glob("*.pt") if p.stem != "parts")
RUNS = [(case, i) for case in CASES
        for i in range(len(torch.load(FIXTURES / f"{case}.pt", weights_only=True)["runs"]))]
CONFIG = Path(__file__).resolve().parents[1] / "configs" / "compressor" / "prunevid.yaml"


def _load(name: str) -> dict:
    return torch.load(FIXTURES / f"{name}.pt", weights_only=True)


def _build(retention: float, **params):
    return compressors.build("prunevid", retention=retention, **params)


def _member_means(video: torch.Tensor, out) -> torch.Tensor:
    flat = video.reshape(-1, video.shape[-1]).float()
    kept = out.assignment >= 0
    sums = torch.zeros(out.num_output, flat.shape[1]).index_add(0, out.assignment[kept], flat[kept])
    return sums / torch.bincount(out.assignment[kept], minlength=out.num_output)[:, None]


# --- the official outputs -------------------------------------------------------------------

def test_fixtures_are_present_and_cover_the_branches():
    assert {"scenes", "scenes_bf16", "static_heavy", "dynamic", "large_grid"} <= set(CASES)
    assert sum(p.stat().st_size for p in FIXTURES.iterdir()) < 1_000_000
    runs = [run for case in CASES for run in _load(case)["runs"]]
    assert any(run["raw_labels"] != run["refined_labels"] for run in runs)  # refinement acts
    assert any(len(run["window_sizes"]) >= 3 for run in runs)  # several segments
    assert any(0 in run["static_sizes"] for run in runs)  # a segment without static tokens
    assert all(run["noise_changes"] == 0 for run in runs)  # the official 1e-6 noise is inert
    heavy = _load("static_heavy")["runs"][0]  # dynamic groups of <= 14 tokens kept whole
    assert heavy["dynamic_sizes"] == [6 * 11, 2 * 8]


@pytest.mark.parametrize("case, run", RUNS)
def test_reproduces_the_official_output(case, run):
    fixture = _load(case)
    official = fixture["runs"][run]
    out = _build(official["cluster_ratio"], compute_dtype="input")(fixture["video"])
    assert out.tokens.dtype == fixture["video"].dtype
    assert out.info["segments"] == official["window_sizes"]
    assert out.info["static_tokens"] == official["static_sizes"]
    assert out.info["dynamic_tokens"] == official["dynamic_sizes"]
    assert torch.equal(out.tokens, official["tokens"])  # bit for bit, order included
    assert out.assignment.min() >= 0


@pytest.mark.parametrize("case, run", [r for r in RUNS if not r[0].endswith("bf16")])
def test_float32_cases_match_in_the_default_precision(case, run):
    fixture = _load(case)
    official = fixture["runs"][run]
    out = _build(official["cluster_ratio"])(fixture["video"])
    torch.testing.assert_close(out.tokens, official["tokens"], atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("case, run", [r for r in RUNS if r[0].endswith("bf16")])
def test_bfloat16_in_float32_keeps_the_counts_and_most_clusters(case, run):
    """Official bf16 similarities and means vs ours in float32: the same segments and counts,
    a few tokens assigned differently (rounding near static_tau and near DPC ties)."""
    fixture = _load(case)
    official = fixture["runs"][run]
    video = fixture["video"]
    f32 = _build(official["cluster_ratio"])(video)
    bf16 = _build(official["cluster_ratio"], compute_dtype="input")(video)
    assert f32.info["segments"] == official["window_sizes"]
    assert f32.num_output == official["tokens"].shape[0]
    assert (f32.assignment == bf16.assignment).float().mean() > 0.9


def test_refine_labels_matches_the_official_refine_clusters():
    parts = _load("parts")
    for labels, refined in zip(parts["labels"], parts["refined"], strict=True):
        assert refine_labels(labels.tolist()) == refined.tolist()


def test_dpc_knn_matches_the_official_cluster_dpc_knn():
    for case in _load("parts")["dpc"]:
        labels, centres = dpc_knn(case["x"][None], case["clusters"], knn=7)
        assert torch.equal(labels[0], case["labels"])
        assert torch.equal(labels[0, centres[0]], torch.arange(case["clusters"]))


def test_fixture_frame_labels_give_the_official_segments():
    for case in CASES:
        fixture = _load(case)
        run = fixture["runs"][0]
        assert refine_labels(run["raw_labels"]) == run["refined_labels"]
        x = fixture["video"] if case.endswith("bf16") else fixture["video"].float()
        assert temporal_segments(x, 0.25, 7) == run["window_sizes"]


# --- the method's steps, by hand ------------------------------------------------------------

@pytest.mark.parametrize(
    "labels, refined",
    [
        ([0, 0, 1, 1, 0, 0, 0, 2], [1, 1, 1, 1, 0, 0, 0, 0]),  # shorter run, trailing singleton
        ([0, 0, 1, 2, 2], [0, 0, 0, 2, 2]),  # equal neighbours: the left one
        ([0, 1, 2, 3], [0, 0, 0, 0]),  # all singletons: label 0
        ([0, 0, 1, 1, 1, 0, 0], [0, 0, 1, 1, 1, 0, 0]),  # two longest runs both kept
        ([2, 0, 0, 1, 1, 1, 3, 1, 1], [0, 0, 0, 1, 1, 1, 1, 1, 1]),
        ([5], [0]),
    ],
)
def test_refine_labels_by_hand(labels, refined):
    assert refine_labels(labels) == refined


def test_dpc_knn_splits_two_blobs_and_ranks_the_denser_first():
    gen = torch.Generator().manual_seed(0)
    big = 0.1 * torch.randn(10, 4, generator=gen)
    small = 5 + 0.3 * torch.randn(5, 4, generator=gen)
    labels, centres = dpc_knn(torch.cat([big, small])[None], 2, knn=3)
    assert labels[0, :10].tolist() == [0] * 10 and labels[0, 10:].tolist() == [1] * 5
    assert centres[0, 0] < 10 <= centres[0, 1]


def test_dpc_knn_ties_go_to_the_lower_index():
    # identical points: equal densities and scores; the official top-k (and its noise) picks
    # centres arbitrarily, the port picks the lowest indices
    labels, centres = dpc_knn(torch.zeros(1, 5, 3), 2, knn=3)
    assert centres[0].tolist() == [0, 1] and labels[0].tolist() == [0, 1, 0, 0, 0]


def test_static_similarity_is_the_mean_over_distinct_frame_pairs():
    gen = torch.Generator().manual_seed(1)
    seg = torch.randn(3, 5, 8, generator=gen)
    unit = torch.nn.functional.normalize(seg, dim=-1)
    pairs = [(a, b) for a in range(3) for b in range(3) if a != b]
    expected = torch.stack([(unit[a] * unit[b]).sum(-1) for a, b in pairs]).mean(0)
    torch.testing.assert_close(static_similarity(seg), expected)
    assert torch.isneginf(static_similarity(seg[:1])).all()  # one frame: nothing static


def test_output_is_static_tokens_then_each_frames_dynamic_tokens():
    gen = torch.Generator().manual_seed(2)
    video = torch.randn(2, 4, 6, generator=gen)
    video[1, :2] = video[0, :2]  # locations 0, 1 static; 2, 3 opposite in the two frames
    video[1, 2:] = -video[0, 2:]
    out = _build(0.5)(video)  # 2 frames: one segment; groups of <= 14 tokens kept whole
    assert out.info["segments"] == [2] and out.info["static_locations"] == [2]
    expected = torch.cat([video[0, :2], video[0, 2:], video[1, 2:]])
    torch.testing.assert_close(out.tokens, expected)
    assert out.assignment.tolist() == [0, 1, 2, 3, 0, 1, 4, 5]


@pytest.mark.parametrize("per_frame, kept", [(14, 14), (15, 7), (30, 15)])
def test_groups_of_14_or_fewer_are_never_clustered(per_frame, kept):
    gen = torch.Generator().manual_seed(3)
    frame = torch.randn(per_frame, 8, generator=gen)
    video = torch.stack([frame, -frame])  # nothing static
    out = _build(0.5)(video)
    assert out.info["dynamic_tokens"] == [2 * kept]
    if per_frame <= 14:
        torch.testing.assert_close(out.tokens, video.reshape(-1, 8))


@pytest.mark.parametrize("case", ["scenes", "static_heavy", "large_grid"])
@pytest.mark.parametrize("mode", ["official", "exact"])
def test_every_output_token_is_the_mean_of_its_inputs(case, mode):
    video = _load(case)["video"]
    out = _build(0.3, budget_mode=mode)(video)
    torch.testing.assert_close(out.tokens, _member_means(video, out), atol=1e-5, rtol=1e-5)


# --- retention mapping, exact mode, count ---------------------------------------------------

def test_official_mode_uses_the_retention_as_cluster_ratio():
    fixture = _load("scenes")
    for run in fixture["runs"]:
        out = _build(run["cluster_ratio"])(fixture["video"])
        assert out.info["cluster_ratio"] == run["cluster_ratio"]
        assert out.info["target_tokens"] == compressors.budget(run["cluster_ratio"], 16 * 144)
        assert out.num_output == run["tokens"].shape[0] < out.info["target_tokens"]


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("retention", [0.05, 0.25, 0.5, 0.9])
def test_exact_mode_hands_over_exactly_m_tokens(case, retention):
    video = _load(case)["video"]
    out = _build(retention, budget_mode="exact")(video)
    assert out.num_output == compressors.budget(retention, video.shape[0] * video.shape[1])
    assert out.tokens.dtype == video.dtype and out.assignment.min() >= 0


def test_exact_mode_unmerges_the_least_static_locations_when_short():
    video = _load("static_heavy")["video"]  # 251 merged tokens of 512
    official = _build(0.9)(video)
    exact = _build(0.9, budget_mode="exact")(video)
    assert official.info["merged_tokens"] == 251 and exact.num_output == 461
    assert exact.info["unmerged_locations"] > 0
    assert sum(exact.info["static_locations"]) < sum(official.info["static_locations"])


def test_exact_mode_drops_whole_groups_only_below_one_token_a_group():
    gen = torch.Generator().manual_seed(4)
    video = torch.randn(4, 9, 5, generator=gen)
    out = _build(0.02, budget_mode="exact")(video)  # M = 1 of 36, at least 2 groups
    assert out.num_output == 1 and (out.assignment == -1).any()
    assert (out.assignment >= -1).all() and (out.assignment <= 0).all()


@pytest.mark.parametrize("mode", ["official", "exact"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_full_retention_is_the_uncompressed_video(mode, dtype):
    video = torch.randn(5, 16, 4).to(dtype)
    out = _build(1.0, budget_mode=mode)(video)
    assert torch.equal(out.tokens, video.reshape(-1, 4))
    assert torch.equal(out.assignment, torch.arange(80))


@pytest.mark.parametrize("frames, per_frame", [(1, 1), (1, 25), (2, 4), (3, 16), (5, 25)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("mode", ["official", "exact"])
def test_tiny_inputs_degrade_gracefully(frames, per_frame, dtype, mode):
    gen = torch.Generator().manual_seed(frames * 31 + per_frame)
    video = torch.randn(frames, per_frame, 3, generator=gen).to(dtype)
    video[0, 0] = 0
    for retention in (0.01, 0.3, 0.99):
        c = _build(retention, budget_mode=mode, compute_dtype="input")
        out, again = c(video), c(video)
        assert out.tokens.dtype == dtype and torch.isfinite(out.tokens.float()).all()
        assert torch.equal(out.tokens, again.tokens)
        assert out.assignment.min() >= -1 and out.assignment.max() < out.num_output
        if mode == "exact":
            assert out.num_output == compressors.budget(retention, frames * per_frame)


def test_count_is_known_in_exact_mode_only():
    assert _build(0.25).expected_tokens(32, (14, 14)) is None
    assert _build(0.25, budget_mode="exact").expected_tokens(32, (14, 14)) == 1568
    assert _build(1.0).expected_tokens(32, (14, 14)) == 6272


def test_registered_as_a_port_with_its_reference():
    info = compressors.provenance("prunevid")
    assert info["fidelity"] == "port" and "PruneVid" in info["repo"]
    assert info["commit"] == "b12600c6176c606ee4b6b7d9e26f4aa46d0dfd42"
    assert "PLLaVA" in info["note"]



# --- bad inputs -----------------------------------------------------------------------------

@pytest.mark.parametrize(
    "params, message",
    [
        ({"retention": None}, "needs a token budget"),
        ({"static_tau": 1.5}, "static_tau"),
        ({"static_tau": "high"}, "static_tau"),
        ({"temporal_segment_ratio": 0.0}, "temporal_segment_ratio"),
        ({"knn": 0}, "knn"),
        ({"knn": 2.5}, "knn"),
        ({"budget_mode": "budget"}, "budget_mode.*exact"),
        ({"compute_dtype": "float16"}, "compute_dtype"),
    ],
)
def test_bad_parameters_fail_at_build(params, message):
    with pytest.raises(ValueError, match=message):
        compressors.build("prunevid", **{"retention": 0.5, **params})

"""SCC against hand-built videos with known components, the plain reference, and its budget."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import compressors
from compressors.reference import scc_reference
from compressors.scc import _partition, _spanning_weights, _tau_for_count

E1, E2, E3 = torch.eye(3)


def three_clusters() -> torch.Tensor:
    """Two frames of three orthogonal directions; frame 1 holds a double-length e3 token."""
    return torch.stack([
        torch.stack([E1, E1, E2, 2 * E3]),
        torch.stack([E1, E3, E3, E2]),
    ])


def test_three_orthogonal_clusters_exact_tokens():
    out = compressors.build("scc", tau=0.9)(three_clusters())
    # spatial: [e1, e2, 2e3 | e1, e3, e2]; temporal: {e1}, {e2}, {2e3, e3} -> R = e1, e2, 1.5 e3
    # merge: out_j = (R_j + assigned tokens) / (1 + count_j)
    expected = torch.stack([E1, E2, (1.5 + 2 + 1 + 1) / 4 * E3])
    torch.testing.assert_close(out.tokens, expected)
    assert out.assignment.tolist() == [0, 0, 1, 2, 0, 2, 2, 1]
    assert out.info["spatial_tokens"] == 6


def test_without_merge_returns_component_means():
    out = compressors.build("scc", tau=0.9, merge=False)(three_clusters())
    torch.testing.assert_close(out.tokens, torch.stack([E1, E2, 1.5 * E3]))
    assert out.assignment.tolist() == [0, 0, 1, 2, 0, 2, 2, 1]


def _angle(deg: float) -> torch.Tensor:
    return torch.tensor([math.cos(math.radians(deg)), math.sin(math.radians(deg)), 0.0])


def test_components_ordered_by_highest_degree_node():
    # chain 0 - 2 - 3 (node 2 has the highest degree), node 1 alone: the chain's key is node 2,
    # so the lone node 1 comes first although the chain holds the smallest index.
    frame = torch.stack([_angle(0), E3, _angle(20), _angle(40)])
    out = compressors.build("scc", tau=math.cos(math.radians(25)), merge=False)(frame[None])
    assert out.assignment.tolist() == [1, 0, 1, 1]
    torch.testing.assert_close(out.tokens[0], E3)


def test_chain_is_one_component_although_ends_are_dissimilar():
    frame = torch.stack([_angle(0), _angle(20), _angle(40), _angle(60)])
    out = compressors.build("scc", tau=math.cos(math.radians(25)), merge=False)(frame[None])
    assert out.num_output == 1


def _clustered(seed: int, frames: int, per_frame: int, dim: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    centers = torch.randn(5, dim, generator=gen)
    owner = torch.randint(0, 5, (frames, per_frame), generator=gen)
    return centers[owner] + 0.3 * torch.randn(frames, per_frame, dim, generator=gen)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("tau", [0.3, 0.8, 0.95])
def test_threshold_mode_matches_plain_reference(seed, tau):
    video = _clustered(seed, frames=4, per_frame=16, dim=8)
    for merge in (True, False):
        ours = compressors.build("scc", tau=tau, merge=merge)(video)
        ref = scc_reference(video, tau, merge=merge)
        torch.testing.assert_close(ours.tokens, ref.tokens, atol=1e-5, rtol=1e-5)
        assert torch.equal(ours.assignment, ref.assignment)


def test_separate_temporal_threshold_matches_reference():
    video = _clustered(7, frames=6, per_frame=9, dim=6)
    ours = compressors.build("scc", tau=0.9, tau_temporal=0.6)(video)
    ref = scc_reference(video, 0.9, tau_temporal=0.6)
    torch.testing.assert_close(ours.tokens, ref.tokens, atol=1e-5, rtol=1e-5)
    assert ours.info["tau_temporal"] == 0.6


videos = st.tuples(
    st.integers(1, 5), st.integers(1, 25), st.integers(1, 8), st.integers(0, 2**16)
)


DTYPES = st.sampled_from([torch.float32, torch.float16, torch.bfloat16])


@settings(max_examples=60, deadline=None)
@given(videos, st.floats(0.001, 1.0), DTYPES)
def test_budget_mode_is_exact(shape, retention, dtype):
    frames, per_frame, dim, seed = shape
    video = _clustered(seed, frames, per_frame, dim).to(dtype)
    out = compressors.build("scc", retention=retention)(video)
    target = compressors.budget(retention, frames * per_frame)
    assert out.tokens.shape == (target, dim)
    assert out.tokens.dtype == dtype
    assert torch.isfinite(out.tokens).all()
    assert out.assignment.shape == (frames * per_frame,)
    assert out.assignment.min() >= 0 and out.assignment.max() < target


@settings(max_examples=30, deadline=None)
@given(videos, st.floats(0.01, 1.0))
def test_budget_without_merge_is_a_partition(shape, retention):
    frames, per_frame, dim, seed = shape
    video = _clustered(seed, frames, per_frame, dim)
    out = compressors.build("scc", retention=retention, merge=False)(video)
    counts = torch.bincount(out.assignment, minlength=out.num_output)
    assert (counts > 0).all() and counts.sum() == frames * per_frame
    # every output token is the mean of the spatial means it gathers: it lies in their span
    flat = video.reshape(-1, dim)
    for j in range(out.num_output):
        members = flat[out.assignment == j]
        assert torch.linalg.matrix_rank(torch.cat([members, out.tokens[j : j + 1]])) <= max(
            1, torch.linalg.matrix_rank(members)
        )


def test_budget_mode_records_thresholds_consistent_with_threshold_mode():
    video = _clustered(3, frames=8, per_frame=25, dim=16)
    out = compressors.build("scc", retention=0.2)(video)
    assert out.num_output == compressors.budget(0.2, 200)
    assert -1.0 <= out.info["tau_temporal"] <= out.info["tau"] <= 1.0
    at_tau = compressors.build("scc", tau=out.info["tau"])(video)
    assert at_tau.num_output >= out.num_output  # landing only ever merges further


def test_retention_one_is_identity():
    video = _clustered(0, 3, 16, 8)
    out = compressors.build("scc", retention=1.0)(video)
    assert torch.equal(out.tokens, video.reshape(-1, 8))
    assert out.assignment.tolist() == list(range(48))


def test_zero_and_duplicate_tokens_give_no_nan():
    video = torch.zeros(4, 9, 5)
    video[1] = 1.0  # a static frame of duplicates
    for params in ({"retention": 0.1}, {"retention": 0.5}, {"tau": 0.9}):
        out = compressors.build("scc", **params)(video)
        assert torch.isfinite(out.tokens).all()
        if "retention" in params:
            assert out.num_output == compressors.budget(params["retention"], 36)


def test_static_video_collapses_over_time():
    frame = _clustered(1, 1, 16, 8)
    out = compressors.build("scc", tau=0.9, merge=False)(frame.repeat(6, 1, 1))
    single = compressors.build("scc", tau=0.9, merge=False)(frame)
    assert out.num_output == single.num_output


def test_epsilon_mode_is_seeded_and_partitions_every_token():
    video = _clustered(5, frames=2, per_frame=400, dim=4)  # 400 > ln(400)/0.2^2 -> sampling
    def build(seed):
        return compressors.build("scc", tau=0.9, epsilon=0.2, seed=seed, merge=False)
    a, b, c = build(0)(video), build(0)(video), build(1)(video)
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.assignment, b.assignment)
    assert (a.assignment >= 0).all()
    assert not torch.equal(a.assignment, c.assignment)
    exact = compressors.build("scc", tau=0.9, merge=False)(video)
    assert a.num_output >= exact.num_output  # fewer edges, never fewer components


def test_epsilon_mode_with_full_sample_is_exact():
    video = _clustered(2, frames=3, per_frame=16, dim=6)  # 16 < ln(16)/0.05^2: every node sampled
    approx = compressors.build("scc", tau=0.8, epsilon=0.05)(video)
    exact = compressors.build("scc", tau=0.8)(video)
    assert torch.equal(approx.tokens, exact.tokens)


@pytest.mark.parametrize("tau", [0.2, 0.5, 0.8, 0.9, 0.99])
def test_spanning_trees_price_the_spatial_count(tau):
    video = _clustered(4, frames=5, per_frame=30, dim=8)
    sim = torch.nn.functional.normalize(video, dim=-1)
    sim = (sim @ sim.transpose(1, 2)).clamp(-1, 1)
    weights = _spanning_weights(sim)
    _, count, _ = _partition(sim, tau, None, 0)
    assert count == 150 - int((weights > tau).sum())
    _, at_guess, _ = _partition(sim, _tau_for_count(weights, 150, count), None, 0)
    assert at_guess == count


@pytest.mark.parametrize(
    "params, message",
    [
        ({}, "exactly one of retention"),
        ({"retention": 0.5, "tau": 0.9}, "exactly one of retention"),
        ({"tau": 1.5}, "cosine threshold"),
        ({"retention": 0.5, "tau_temporal": 0.8}, "threshold mode only"),
        ({"tau": 0.9, "epsilon": 0.0}, "epsilon"),
        ({"retention": 0.0}, "retention must be in"),
        ({"retention": float("nan")}, "retention must be in"),
        ({"tau": 0.9, "gamma": 1}, "no parameter"),
    ],
)
def test_bad_parameters_fail_at_build(params, message):
    with pytest.raises(ValueError, match=message):
        compressors.build("scc", **params)


def test_bad_inputs_fail_clearly():
    c = compressors.build("scc", tau=0.9)
    with pytest.raises(ValueError, match=r"\[T, N, D\]"):
        c(torch.randn(10, 4))
    with pytest.raises(ValueError, match="NaN"):
        c(torch.full((2, 4, 3), float("nan")))
    with pytest.raises(ValueError, match="floating"):
        c(torch.ones(2, 4, 3, dtype=torch.long))

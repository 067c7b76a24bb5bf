"""scc_official against outputs of the official LLaVA-Scissor code (tests/fixtures/scc_official)
and against the exact `scc`."""

from pathlib import Path

import numpy as np
import pytest
import torch

import compressors
from compressors.scc_official import _adjacency, _stage, components, sample_size

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "scc_official"
CASES = sorted(p.stem for p in FIXTURES.glob("*.pt"))
SAMPLED = [c for c in CASES if "sampled" in c]
FULL = [c for c in CASES if "full_sample" in c]


def _load(case: str) -> dict:
    return torch.load(FIXTURES / f"{case}.pt", weights_only=True)


def _official(fixture: dict):
    return compressors.build(
        "scc_official", tau=fixture["tau"], epsilon=fixture["epsilon"], seed=fixture["seed"]
    )(fixture["video"])


def test_fixtures_are_present_and_show_the_quirk():
    assert len(SAMPLED) >= 3 and len(FULL) >= 2
    assert all(_load(c)["dropped"] for c in SAMPLED)  # each sampled case drops members
    assert sum(p.stat().st_size for p in FIXTURES.iterdir()) < 1_000_000


@pytest.mark.parametrize("case", CASES)
def test_reproduces_the_official_output(case):
    fixture = _load(case)
    out = _official(fixture)
    assert out.num_output == fixture["tokens"].shape[0]
    assert out.tokens.dtype == fixture["video"].dtype
    torch.testing.assert_close(out.tokens, fixture["tokens"], atol=1e-6, rtol=1e-6)
    assert out.info["dropped"] == fixture["dropped"]
    assert out.info["spatial_tokens"] == sum(map(len, fixture["spatial_components"]))
    frames, per_frame, _ = fixture["video"].shape
    assert out.assignment.shape == (frames * per_frame,) and out.assignment.min() >= 0


@pytest.mark.parametrize("case", CASES)
def test_reproduces_the_official_components(case):
    fixture = _load(case)
    video, eps = fixture["video"], fixture["epsilon"]
    rng = np.random.RandomState(fixture["seed"])
    adj = _adjacency(video, fixture["tau"])
    means = []
    for f in range(video.shape[0]):
        reps, groups = _stage(video[f], adj[f], eps, rng)
        assert groups == fixture["spatial_components"][f]
        means.append(reps)
    spatial = torch.cat(means)
    got = components(_adjacency(spatial, fixture["tau"]), eps, rng)
    assert got == fixture["temporal_components"]


@pytest.mark.parametrize("case", CASES)
def test_exact_scc_drops_nothing_on_the_same_graphs(case):
    fixture = _load(case)
    video = fixture["video"]
    exact = compressors.build("scc", tau=fixture["tau"], merge=False)(video)
    counts = torch.bincount(exact.assignment, minlength=exact.num_output)
    assert exact.assignment.min() >= 0 and (counts > 0).all()
    assert int(counts.sum()) == video.shape[0] * video.shape[1]


@pytest.mark.parametrize("case", FULL)
def test_below_the_sampling_threshold_counts_equal_scc(case):
    fixture = _load(case)
    out = _official(fixture)
    exact = compressors.build("scc", tau=fixture["tau"], similarity_dtype="input")(fixture["video"])
    assert out.num_output == exact.num_output
    assert out.info["spatial_tokens"] == exact.info["spatial_tokens"]
    assert out.info["dropped"] == []
    torch.testing.assert_close(out.tokens, exact.tokens, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("seed", range(3))
def test_below_the_threshold_on_random_videos_counts_equal_scc(seed):
    gen = torch.Generator().manual_seed(seed)
    centers = torch.randn(6, 8, generator=gen)
    video = centers[torch.randint(0, 6, (4, 49), generator=gen)]
    video = video + 0.4 * torch.randn(4, 49, 8, generator=gen)
    for tau in (0.5, 0.8, 0.95):
        official = compressors.build("scc_official", tau=tau, seed=seed)(video)
        exact = compressors.build("scc", tau=tau)(video)
        assert official.num_output == exact.num_output


def test_sampling_starts_at_3234_nodes_for_the_papers_epsilon():
    assert sample_size(3233, 0.05) == 3233
    assert sample_size(3234, 0.05) == 3233
    assert sample_size(196, 0.05) == 196


def test_seeded_and_seed_dependent():
    fixture = _load("temporal_sampled")
    def run(seed):
        return compressors.build("scc_official", tau=0.95, epsilon=0.3, seed=seed)(fixture["video"])

    a, b, c = run(1), run(1), run(2)
    assert torch.equal(a.tokens, b.tokens) and a.info == b.info
    assert a.info["dropped"] != c.info["dropped"] or a.num_output != c.num_output


@pytest.mark.parametrize(
    "params, message",
    [
        ({"retention": 0.35}, "no budget mode.*'scc'"),
        ({"tau": 1.5}, "cosine threshold"),
        ({"tau": "high"}, "cosine threshold"),
        ({"epsilon": 0.0}, "epsilon"),
        ({"seed": -1}, "seed"),
        ({"tau_temporal": 0.8}, "no parameter"),
    ],
)
def test_bad_parameters_fail_at_build(params, message):
    with pytest.raises(ValueError, match=message):
        compressors.build("scc_official", **params)


def test_threshold_mode_without_retention_builds():
    out = compressors.build("scc_official", retention=None)(torch.randn(2, 9, 4))
    assert out.info["tau"] == 0.9 and out.info["epsilon"] == 0.05

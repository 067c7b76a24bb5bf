"""SCC's `similarity_dtype`: thresholds in float32 (default) or in the features' own dtype."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import compressors
from compressors.reference import scc_reference

TAU = 0.9


def near_tau_pairs(frames: int = 24) -> torch.Tensor:
    """float16 [frames, 2, 2 * frames]: frame f holds e_2f and a token at cosine ~TAU to it.

    The cosines sweep TAU - 2e-3 .. TAU + 2e-3, a few float16 steps (4.9e-4 near 0.9) either
    side, so float16 and float32 arithmetic disagree on some of these edges. Each frame lies in
    its own plane, so the temporal stage joins nothing and every flipped edge shows in the count.
    """
    video = torch.zeros(frames, 2, 2 * frames)
    for f in range(frames):
        c = TAU - 2e-3 + 4e-3 * f / (frames - 1)
        video[f, 0, 2 * f] = 1.0
        video[f, 1, 2 * f], video[f, 1, 2 * f + 1] = c, math.sqrt(1 - c * c)
    return video.half()


def _clustered(seed: int, frames: int, per_frame: int, dim: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    centers = torch.randn(5, dim, generator=gen)
    owner = torch.randint(0, 5, (frames, per_frame), generator=gen)
    return centers[owner] + 0.3 * torch.randn(frames, per_frame, dim, generator=gen)


def _scc(video, similarity_dtype, **params):
    return compressors.build("scc", similarity_dtype=similarity_dtype, **params)(video)


def test_float16_rounding_near_tau_flips_edges():
    video = near_tau_pairs()
    half = scc_reference(video, TAU, merge=False, dtype=torch.float16)
    single = scc_reference(video, TAU, merge=False)
    assert half.num_output != single.num_output  # the case is sensitive to the dtype
    ours_half = _scc(video, "input", tau=TAU, merge=False)
    ours_single = _scc(video, "float32", tau=TAU, merge=False)
    assert ours_half.num_output == half.num_output
    assert torch.equal(ours_half.assignment, half.assignment)
    assert ours_single.num_output == single.num_output
    assert torch.equal(ours_single.assignment, single.assignment)
    assert ours_half.info["similarity_dtype"] == "input"


def test_default_is_float32():
    video = near_tau_pairs()
    default = compressors.build("scc", tau=TAU)(video)
    assert default.info["similarity_dtype"] == "float32"
    assert torch.equal(default.tokens, _scc(video, "float32", tau=TAU).tokens)
    assert compressors.defaults("scc")["similarity_dtype"] == "float32"


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("tau", [0.5, 0.8, 0.95])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_input_dtype_matches_plain_reference(seed, tau, dtype):
    video = _clustered(seed, frames=4, per_frame=16, dim=8).to(dtype)
    for merge in (True, False):
        ours = _scc(video, "input", tau=tau, merge=merge)
        ref = scc_reference(video, tau, merge=merge, dtype=dtype)
        assert ours.num_output == ref.num_output
        assert torch.equal(ours.assignment, ref.assignment)
        torch.testing.assert_close(ours.tokens, ref.tokens, atol=2e-3, rtol=2e-3)
        assert ours.tokens.dtype == dtype


def test_float32_input_is_unchanged_by_the_option():
    video = _clustered(9, frames=3, per_frame=16, dim=8)
    a, b = _scc(video, "float32", tau=0.8), _scc(video, "input", tau=0.8)
    assert a.num_output == b.num_output and torch.equal(a.assignment, b.assignment)


@settings(max_examples=20, deadline=None)
@given(st.integers(1, 4), st.integers(1, 25), st.integers(2, 8), st.integers(0, 2**16),
       st.floats(0.01, 1.0), st.sampled_from([torch.float16, torch.bfloat16]))
def test_budget_mode_in_input_dtype_is_exact(frames, per_frame, dim, seed, retention, dtype):
    video = _clustered(seed, frames, per_frame, dim).to(dtype)
    out = _scc(video, "input", retention=retention)
    assert out.num_output == compressors.budget(retention, frames * per_frame)
    assert torch.isfinite(out.tokens).all() and out.tokens.dtype == dtype
    assert out.assignment.min() >= 0


@pytest.mark.parametrize("value", ["float16", "fp32", None, torch.float16])
def test_bad_similarity_dtype_fails_at_build(value):
    with pytest.raises(ValueError, match=r"similarity_dtype must be one of .*float32.*input"):
        compressors.build("scc", tau=0.9, similarity_dtype=value)

"""The baselines (none, uniform, random, l2norm) and the compared methods (FastV, VisionZip,
PLLaVA) against hand-computed examples, plain per-frame references and their budgets."""

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

import compressors
from compressors.fastv import fastv, keep_indices
from compressors.pllava import choose_grid
from compressors.uniform import uniform
from compressors.visionzip import split_quota, visionzip

METHODS = ["none", "uniform", "random", "l2norm", "fastv", "visionzip", "pllava"]
BUDGETED = [m for m in METHODS if m != "none"]
EXACT = ["uniform", "random", "l2norm", "fastv", "visionzip"]  # pllava: at most M
CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "compressor"


def video(frames=4, per_frame=16, dim=8, seed=0) -> torch.Tensor:
    """Values exact in float32, float16 and bfloat16 alike."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(frames, per_frame, dim, generator=gen).bfloat16().float()


def signals(name: str, x: torch.Tensor, seed: int = 1) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    score = torch.rand(x.shape[0], x.shape[1], generator=gen)
    return {"fastv": {"attention": score}, "visionzip": {"importance": score}}.get(name, {})


def run(name: str, x: torch.Tensor, grid=None, **params) -> compressors.Compressed:
    return compressors.build(name, **params)(x, grid=grid, **signals(name, x))


# --- budgets -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", EXACT)
@pytest.mark.parametrize("retention", [0.01, 0.1, 0.35, 0.5, 0.77, 1.0])
def test_exact_budget(name, retention):
    x = video(frames=5, per_frame=16)
    out = run(name, x, retention=retention)
    assert out.num_output == compressors.budget(retention, 80) == out.tokens.shape[0]
    assert out.num_input == 80 and out.assignment.shape == (80,)
    assert int(out.assignment.max()) < out.num_output
    if out.kept is not None:
        assert torch.equal(out.kept, out.kept.unique())  # distinct and sorted
        torch.testing.assert_close(out.tokens, x.reshape(-1, 8)[out.kept])


@settings(max_examples=40, deadline=None)
@given(
    frames=st.integers(1, 5),
    side=st.integers(1, 5),
    dim=st.integers(1, 4),
    retention=st.floats(0.001, 1.0),
    seed=st.integers(0, 100),
)
def test_budgets_on_random_shapes(frames, side, dim, retention, seed):
    x = video(frames, side * side, dim, seed)
    target = compressors.budget(retention, x.shape[0] * x.shape[1])
    for name in EXACT:
        out = run(name, x, retention=retention)
        assert out.num_output == target, name
        assert out.assignment.min() >= -1 and out.assignment.max() < target
    pooled = run("pllava", x, retention=retention)
    assert pooled.num_output == math.prod(pooled.info["grid"]) <= target
    assert (pooled.assignment >= 0).all()


def test_none_is_identity():
    x = video()
    out = compressors.build("none")(x)
    assert torch.equal(out.tokens, x.reshape(-1, 8))
    assert torch.equal(out.assignment, torch.arange(64)) and out.info == {}
    assert compressors.build("none", retention=1.0)(x).num_output == 64
    with pytest.raises(ValueError, match="full model"):
        compressors.build("none", retention=0.5)


# --- uniform, random, l2norm ---------------------------------------------------------------


def test_uniform_positions_are_stride_centres():
    out = compressors.build("uniform", retention=0.25)(video(frames=2, per_frame=16))
    # 8 tokens, 4 per frame at floor((j + 1/2) * 16 / 4) = 2, 6, 10, 14
    assert out.kept.tolist() == [2, 6, 10, 14, 18, 22, 26, 30]


@settings(max_examples=30, deadline=None)
@given(frames=st.integers(1, 12), per_frame=st.integers(1, 30), extra=st.integers(0, 400))
def test_uniform_covers_every_frame(frames, per_frame, extra):
    total = frames * per_frame
    keep = min(total, frames + extra)
    x = video(frames, per_frame, 2)
    out = uniform(x, retention=keep / total)
    frame = out.kept // per_frame
    counts = torch.bincount(frame, minlength=frames)
    assert out.num_output == keep
    assert counts.min() >= 1 and counts.max() - counts.min() <= 1


def test_uniform_merge_is_hand_computed():
    x = torch.tensor([[[2.0, 0.1], [1.0, 0.0], [0.2, 2.0], [0.0, 1.0]]])
    out = compressors.build("uniform", retention=0.5, merge=True)(x)
    # kept: positions 1 and 3; token 0 joins [1, 0], token 2 joins [0, 1]; each kept token is
    # also assigned to itself: out_j = (kept_j + sum assigned) / (1 + count_j)
    assert out.kept.tolist() == [1, 3]
    assert out.assignment.tolist() == [0, 0, 1, 1]
    expected = torch.tensor([[1 + 1 + 2, 0 + 0 + 0.1], [0 + 0 + 0.2, 1 + 1 + 2]]) / 3
    torch.testing.assert_close(out.tokens, expected)


def test_random_is_seeded():
    x = video(frames=4, per_frame=25)
    first = run("random", x, retention=0.2, seed=3)
    again = run("random", x.half(), retention=0.2, seed=3)
    other = run("random", x, retention=0.2, seed=4)
    assert torch.equal(first.kept, again.kept)
    assert not torch.equal(first.kept, other.kept)


def test_random_draws_uniformly_without_replacement():
    # over 1000 seeds each of the 100 tokens is kept ~ Binomial(1000, 0.2): 200 +- 12.6; a fixed,
    # biased or repeating draw lands far outside 200 +- 60 (4.7 standard deviations)
    x = video(frames=4, per_frame=25, dim=2)
    counts = torch.zeros(100)
    for seed in range(1000):
        kept = run("random", x, retention=0.2, seed=seed).kept
        assert len(set(kept.tolist())) == 20  # without replacement
        counts[kept] += 1
    assert counts.sum() == 20_000 and (counts - 200).abs().max() < 60


def test_l2norm_keeps_largest_norms_ties_to_lower_index():
    x = torch.tensor([[3.0, 0.0], [0.0, 1.0], [3.0, 4.0], [0.0, 3.0], [0.0, -3.0]])[None]
    out = compressors.build("l2norm", retention=0.4)(x)  # norms 3, 1, 5, 3, 3; keep 2
    assert out.kept.tolist() == [0, 2]
    assert out.assignment.tolist() == [0, -1, 1, -1, -1]
    assert compressors.build("l2norm", retention=0.8)(x).kept.tolist() == [0, 2, 3, 4]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name", BUDGETED)
def test_dtype_in_dtype_out(name, dtype):
    x = video()
    reference = run(name, x, retention=0.3)
    out = run(name, x.to(dtype), retention=0.3)
    assert out.tokens.dtype == dtype
    assert torch.equal(out.assignment, reference.assignment)
    torch.testing.assert_close(out.tokens, reference.tokens.to(dtype))


# --- FastV ---------------------------------------------------------------------------------


def test_fastv_keep_indices_hand_row():
    row = torch.tensor([0.1, 0.5, 0.2, 0.5, 0.05, 0.3])
    assert keep_indices(row, 3).tolist() == [1, 3, 5]
    assert keep_indices(row, 1).tolist() == [1]  # tie between 1 and 3: lower index
    assert keep_indices(torch.tensor([0.3, 0.1, 0.3, 0.3]), 2).tolist() == [0, 2]
    with pytest.raises(ValueError):
        keep_indices(row, 7)
    with pytest.raises(ValueError):
        keep_indices(torch.tensor([0.1, float("nan")]), 1)


def test_fastv_selects_hidden_states_in_original_order():
    x = video(frames=2, per_frame=4)
    attention = torch.tensor([[0.0, 0.9, 0.1, 0.2], [0.8, 0.0, 0.3, 0.05]])
    out = compressors.build("fastv", retention=0.5, layer=2)(x, attention=attention)
    assert out.kept.tolist() == [1, 3, 4, 6]
    torch.testing.assert_close(out.tokens, x.reshape(-1, 8)[[1, 3, 4, 6]])
    flat = compressors.build("fastv", retention=0.5)(x, attention=attention.flatten())
    assert torch.equal(flat.kept, out.kept)
    assert compressors.build("fastv", retention=0.5).stage == "in_llm"


def test_fastv_validates_layer_and_attention():
    with pytest.raises(ValueError, match="layer"):
        compressors.build("fastv", retention=0.5, layer=0)
    x = video(frames=2, per_frame=4)
    with pytest.raises(ValueError, match="shape"):
        fastv(x, retention=0.5, attention=torch.rand(7))
    with pytest.raises(ValueError, match="finite"):
        fastv(x, retention=0.5, attention=torch.full((2, 4), float("inf")))
    with pytest.raises(ValueError, match="attention"):
        fastv(x, retention=0.5)


# --- VisionZip -----------------------------------------------------------------------------


def test_visionzip_hand_example():
    # remaining after dominant {1, 3}: [0, 2, 4, 5, 6, 7]; step 6 // 2 = 3 -> targets 0 and 5
    x = torch.tensor([
        [1.0, 0.0], [-1.0, 0.0], [2.0, 0.2], [5.0, 5.0],
        [0.1, 1.0], [0.0, 3.0], [3.0, 0.0], [0.0, 1.0],
    ])[None]
    importance = torch.tensor([[0.1, 0.9, 0.2, 0.8, 0.3, 0.1, 0.4, 0.2]])
    compressor = compressors.build("visionzip", retention=0.5, dominant_ratio=0.5)
    out = compressor(x, importance=importance)
    expected = torch.tensor([
        [-1.0, 0.0], [5.0, 5.0],  # dominant, input order
        [1.0 + (2.0 + 3.0) / 2, 0.0 + (0.2 + 0.0) / 2],  # target 0 + mean of tokens 2, 6
        [0.0 + (0.1 + 0.0) / 2, 3.0 + (1.0 + 1.0) / 2],  # target 5 + mean of tokens 4, 7
    ])
    torch.testing.assert_close(out.tokens, expected)
    assert out.assignment.tolist() == [2, 0, 2, 1, 3, 3, 2, 3]
    assert out.info == {"dominant": 2, "contextual": 2}
    assert out.kept is None


def _visionzip_frame(x, importance, dominant, contextual):
    """The official per-image steps, one frame at a time, with Python lists."""
    order = sorted(range(len(importance)), key=lambda i: (-float(importance[i]), i))
    dom = sorted(order[:dominant])
    rest = [i for i in range(len(importance)) if i not in dom]
    tokens, slot = [x[i] for i in dom], {i: k for k, i in enumerate(dom)}
    if contextual:
        step = max(1, len(rest) // contextual)
        picks = list(range(0, len(rest), step))[:contextual]
        targets = [rest[p] for p in picks]
        unit = F.normalize(x, dim=-1)
        groups = {t: [] for t in targets}
        for i in rest:
            if i not in groups:
                sims = torch.stack([unit[i] @ unit[t] for t in targets])
                groups[targets[int(sims.argmax())]].append(i)
        for j, t in enumerate(targets):
            members = groups[t]
            mean = x[members].mean(0) if members else torch.zeros_like(x[t])
            tokens.append(x[t] + mean)
            for i in [t, *members]:
                slot[i] = dominant + j
    return torch.stack(tokens), [slot.get(i, -1) for i in range(len(importance))]


@settings(max_examples=25, deadline=None)
@given(
    frames=st.integers(1, 4),
    per_frame=st.sampled_from([4, 9, 16]),
    retention=st.floats(0.05, 1.0),
    ratio=st.sampled_from([0.0, 0.5, 5.4 / 6.4, 1.0]),
    seed=st.integers(0, 50),
)
def test_visionzip_matches_per_frame_reference(frames, per_frame, retention, ratio, seed):
    x = video(frames, per_frame, 3, seed)
    importance = signals("visionzip", x, seed)["importance"]
    out = visionzip(x, retention=retention, dominant_ratio=ratio, importance=importance)
    quotas = compressors._core.frame_quotas(out.num_output, frames).tolist()
    tokens, assignment, offset = [], [], 0
    for t, quota in enumerate(quotas):
        if quota == 0:
            assignment += [-1] * per_frame
            continue
        frame_tokens, slots = _visionzip_frame(x[t], importance[t], *split_quota(quota, ratio))
        tokens.append(frame_tokens)
        assignment += [s + offset if s >= 0 else -1 for s in slots]
        offset += quota
    torch.testing.assert_close(out.tokens, torch.cat(tokens))
    assert out.assignment.tolist() == assignment


def test_visionzip_dominant_are_top_importance_per_frame():
    x = video(frames=3, per_frame=16, seed=5)
    importance = torch.rand(3, 16, generator=torch.Generator().manual_seed(9))
    out = compressors.build("visionzip", retention=0.5)(x, importance=importance)
    # 24 tokens, 8 per frame: round(8 * 0.84375) = 7 dominant + 1 contextual
    assert out.info == {"dominant": 21, "contextual": 3}
    for t in range(3):
        top = importance[t].topk(7).indices.sort().values
        torch.testing.assert_close(out.tokens[8 * t : 8 * t + 7], x[t, top])
        assert out.assignment[16 * t + top].tolist() == list(range(8 * t, 8 * t + 7))
    assert (out.assignment >= 0).all()


def test_visionzip_validates():
    with pytest.raises(ValueError, match="dominant_ratio"):
        compressors.build("visionzip", retention=0.5, dominant_ratio=1.5)
    x = video()
    with pytest.raises(ValueError, match="importance"):
        visionzip(x, retention=0.5)
    with pytest.raises(ValueError, match="shape"):
        visionzip(x, retention=0.5, importance=torch.rand(4, 15))


# --- PLLaVA --------------------------------------------------------------------------------


def test_choose_grid_examples():
    # 2195 / 32 -> 68 cells per frame; 68 has no factorisation within 14 x 14, 66 = 11 x 6 does
    assert choose_grid(2195, 32, 14, 14) == (32, 11, 6)
    assert choose_grid(2195, 32, 14, 14, keep_aspect=True) == (32, 8, 8)
    assert choose_grid(627, 32, 14, 14) == (32, 6, 3)  # 19 -> 18 cells, 6 x 3 beats 9 x 2
    assert choose_grid(627, 32, 14, 14, keep_aspect=True) == (32, 4, 4)
    assert choose_grid(3136, 32, 14, 14) == (32, 14, 7)
    assert choose_grid(6272, 32, 14, 14) == (32, 14, 14)
    assert choose_grid(20, 32, 14, 14) == (20, 1, 1)
    assert choose_grid(64, 1, 6, 12, keep_aspect=True) == (1, 5, 10)
    assert choose_grid(2, 1, 1, 14, keep_aspect=True) == (1, 1, 1)  # 1 x 14 needs 14 cells


def _grid_by_the_spec(budget: int, frames: int, height: int, width: int,
                      keep_aspect: bool) -> tuple[int, int, int]:
    """METHODS.md section 6: T' = T (M < T: M frames of 1 x 1); among the h x w grids with
    T' * h * w <= M (keep_aspect: only those of the input's aspect, h = round(w * H / W), or
    1 x 1), the most cells, then the aspect closest to H / W, then the larger h."""
    if budget < frames:
        return budget, 1, 1
    fits = [
        (h, w) for h in range(1, height + 1) for w in range(1, width + 1)
        if frames * h * w <= budget
        and (not keep_aspect or h == round(w * height / width) or h == w == 1)
    ]
    best = min(fits, key=lambda g: (-g[0] * g[1], abs(math.log(g[0] / g[1] * width / height)),
                                    -g[0]))
    return frames, *best


def _window(i: int, n: int, p: int) -> tuple[int, int]:
    """The adaptive pooling window of output i of p over n inputs:
    [floor(i n / p), ceil((i + 1) n / p))."""
    return (i * n) // p, -((-(i + 1) * n) // p)


@pytest.mark.parametrize("keep_aspect", [True, False])
@pytest.mark.parametrize("retention", [0.05, 0.1, 0.35, 0.5, 1.0])
@pytest.mark.parametrize("grid", [(4, 4), (3, 5)])
def test_pllava_is_adaptive_avg_pool3d(retention, grid, keep_aspect):
    x = video(frames=6, per_frame=grid[0] * grid[1], dim=5)
    out = compressors.build("pllava", retention=retention, keep_aspect=keep_aspect)(x, grid=grid)
    size = tuple(out.info["grid"])
    budget = max(1, round(retention * (6 * x.shape[1])))  # M = max(1, round(r N_v))
    assert size == _grid_by_the_spec(budget, 6, *grid, keep_aspect)
    cube = x.reshape(6, *grid, 5)
    windows = [[_window(i, n, p) for i in range(p)] for n, p in zip((6, *grid), size, strict=True)]
    pooled = torch.stack([  # each cell: the mean of its adaptive window, in (t, h, w) order
        cube[t0:t1, h0:h1, w0:w1].mean(dim=(0, 1, 2))
        for t0, t1 in windows[0] for h0, h1 in windows[1] for w0, w1 in windows[2]
    ])
    torch.testing.assert_close(out.tokens, pooled)
    # each token's cell is one whose adaptive window holds it, on every axis
    t, h, w = torch.meshgrid(*(torch.arange(n) for n in (6, *grid)), indexing="ij")
    cell = out.assignment.view(6, *grid)
    parts = (cell // (size[1] * size[2]), cell // size[2] % size[1], cell % size[2])
    for index, part, n, p in zip((t, h, w), parts, (6, *grid), size, strict=False):
        assert ((part * n) // p <= index).all() and (index < -((-(part + 1) * n) // p)).all()


def test_pllava_centre_rule_is_symmetric():
    out = compressors.build("pllava", retention=0.5)(video(frames=1, per_frame=9, dim=2))
    assert out.info["grid"] == [1, 2, 2]
    # 3 -> 2 cells per axis: the middle row/column is in both windows, its centre in the second
    assert out.assignment.tolist() == [0, 1, 1, 2, 3, 3, 2, 3, 3]


# --- configs and errors --------------------------------------------------------------------


@pytest.mark.parametrize("name", METHODS)
def test_config_mirrors_defaults(name):
    config = yaml.safe_load((CONFIGS / f"{name}.yaml").read_text())
    assert config.pop("_target_") == "compressors.build"
    assert config.pop("name") == name
    expected = {k: v for k, v in compressors.defaults(name).items() if k != "retention"}
    assert config == expected


@pytest.mark.parametrize("name", METHODS)
@pytest.mark.parametrize("retention", [0, 1.5, float("nan"), -0.1, True])
def test_bad_retention_fails_at_build(name, retention):
    with pytest.raises(ValueError, match="retention"):
        compressors.build(name, retention=retention)


@pytest.mark.parametrize("name", BUDGETED)
def test_missing_retention_fails_at_build_and_call(name):
    with pytest.raises(ValueError, match="retention=0.35"):
        compressors.build(name)
    fn = compressors.registry._entry(name).fn
    with pytest.raises(ValueError, match="retention=0.35"):
        fn(video(), **signals(name, video()))


@pytest.mark.parametrize("name", METHODS)
def test_bad_inputs(name):
    params = {} if name == "none" else {"retention": 0.5}
    compressor = compressors.build(name, **params)
    x = video()
    bad = x.clone()
    bad[1, 2, 3] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        compressor(bad, **signals(name, x))
    with pytest.raises(ValueError, match=r"\[T, N, D\]"):
        compressor(x[0], **signals(name, x))
    if compressor.signals:
        with pytest.raises(ValueError, match="signal"):
            compressor(x)
    else:
        with pytest.raises(ValueError, match="signal"):
            compressor(x, attention=torch.rand(4, 16))


def test_pllava_fills_the_budget_by_default_and_keeps_the_aspect_on_request():
    x = torch.randn(32, 196, 4)
    filled = compressors.build("pllava", retention=0.5)(x)  # 3136 = 50% of 6272, 98 a frame
    assert filled.info["grid"] == [32, 14, 7] and filled.num_output == 3136
    square = compressors.build("pllava", retention=0.35, keep_aspect=True)(x)
    assert square.info["grid"] == [32, 8, 8]

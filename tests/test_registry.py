"""Contract tests generated from the registry and the config tree: a new entry is tested here
without new test code."""

from pathlib import Path

import pytest
import torch
import yaml
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import compressors

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "compressor"
BUDGETED = compressors.budgeted()  # every method with a budget mode (not none, scc_official)
SWEPT = ["none", *BUDGETED]  # what a retention sweep runs


def _signals(name: str, frames: int, per_frame: int, gen: torch.Generator) -> dict:
    wanted = compressors.build(name, **_params(name, 0.5)).signals
    shapes = {"importance": (frames, per_frame), "attention": (frames * per_frame,),
              "head_attention": (frames, per_frame), "frame_features": (frames, 12)}
    return {s: torch.rand(shapes[s], generator=gen) for s in wanted}


def _params(name: str, retention: float, mode: str = "exact") -> dict:
    """A retention for the budgeted methods (in `mode`, "exact" or "official", for the methods
    whose official count is not the budget: `budget_mode`); the full model and threshold-only
    methods run on their defaults."""
    if name not in BUDGETED:
        return {}
    exact = {"budget_mode": mode} if "budget_mode" in compressors.defaults(name) else {}
    return {"retention": retention, **exact}


def _reachable(name: str, frames: int, retention: float) -> bool:
    """Whether the method can hand on budget(retention) tokens of `frames` frames: DyCoke never
    prunes its anchor frames (METHODS.md section 13)."""
    if name == "dycoke":
        return retention >= compressors.dycoke.minimum_retention(frames)
    return True


def _grid(per_frame: int) -> tuple[int, int]:
    side = int(per_frame**0.5)
    return (side, side)


def test_registry_lists_every_method_of_the_design():
    expected = {"scc", "fastv", "visionzip", "pllava", "uniform", "random", "l2norm", "none",
                "holitom", "dycoke", "vidcom2", "fastvid", "prunevid"}
    assert expected <= set(compressors.available())


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(ValueError, match="available: .*scc"):
        compressors.build("sccc", retention=0.5)


@pytest.mark.parametrize("name", compressors.available())
def test_each_entry_has_a_mirroring_config(name):
    path = CONFIGS / f"{name}.yaml"
    assert path.exists(), f"configs/compressor/{name}.yaml is missing"
    config = yaml.safe_load(path.read_text())
    assert config.pop("_target_") == "compressors.build"
    assert config.pop("name") == name
    defaults = compressors.defaults(name)
    defaults.pop("retention", None)  # a top-level config value, not a compressor one
    assert config == defaults


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_compressor_config_instantiates(path):
    with initialize_config_dir(str(CONFIGS.parent), version_base="1.3"):
        cfg = compose(overrides=[f"+compressor={path.stem}"])
    name = cfg.compressor.name
    threshold_mode = cfg.compressor.get("tau") is not None
    retention = None if threshold_mode or name == "none" else 0.5
    c = instantiate(cfg.compressor, **({"retention": retention} if retention else {}))
    assert isinstance(c, compressors.Compressor) and c.name == name
    video = torch.randn(4, 16, 8)
    gen = torch.Generator().manual_seed(0)
    out = c(video, **_signals(name, 4, 16, gen))
    assert out.tokens.shape[1] == 8


@settings(max_examples=25, deadline=None)
@given(
    st.sampled_from(BUDGETED),
    st.integers(1, 5),
    st.sampled_from([1, 4, 9, 16, 25]),
    st.integers(1, 6),
    st.floats(0.01, 1.0),
    st.sampled_from([torch.float32, torch.float16, torch.bfloat16]),
    st.integers(0, 1000),
)
@pytest.mark.parametrize("mode", ["exact", "official"])
def test_budget_and_assignment_contract(mode, name, frames, per_frame, dim, retention, dtype,
                                        seed):
    assume(_reachable(name, frames, retention))
    gen = torch.Generator().manual_seed(seed)
    video = torch.randn(frames, per_frame, dim, generator=gen).to(dtype)
    video[0, 0] = 0  # a zero token must not produce NaN
    signals = _signals(name, frames, per_frame, gen)
    c = compressors.build(name, **_params(name, retention, mode))
    out = c(video, **signals)
    target = compressors.budget(retention, frames * per_frame)
    expected = c.expected_tokens(frames, _grid(per_frame))
    if name == "pllava":  # the largest pooling grid with at most M cells
        assert 1 <= out.num_output <= target
    elif c.params.get("budget_mode", "exact") == "official":  # the official code's own count
        assert 1 <= out.num_output <= frames * per_frame
        assert expected is None or out.num_output == expected
    else:
        assert out.num_output == target == expected
    assert out.tokens.dtype == dtype and out.tokens.shape[1] == dim
    assert torch.isfinite(out.tokens.float()).all()
    assert out.assignment.dtype == torch.long and out.assignment.shape == (frames * per_frame,)
    assert out.assignment.min() >= -1 and out.assignment.max() < out.num_output
    assert out.num_input == frames * per_frame
    again = c(video, **signals)
    assert torch.equal(out.tokens, again.tokens) and torch.equal(out.assignment, again.assignment)


@pytest.mark.parametrize("name", BUDGETED)
@pytest.mark.parametrize("retention", [0.0, -0.1, 1.5, float("nan"), "half", None])
def test_bad_retention_fails_at_build(name, retention):
    with pytest.raises(ValueError, match="retention"):
        compressors.build(name, retention=retention)


@pytest.mark.parametrize("name", compressors.available())
def test_bad_videos_fail_before_compressing(name):
    c = compressors.build(name, **_params(name, 0.5))
    gen = torch.Generator().manual_seed(0)
    with pytest.raises(ValueError, match=r"\[T, N, D\]"):
        c(torch.randn(16, 8), **_signals(name, 1, 16, gen))
    nan = torch.randn(2, 4, 3)
    nan[1, 2, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        c(nan, **_signals(name, 2, 4, gen))


@pytest.mark.parametrize("name", SWEPT)
def test_full_retention_keeps_every_token(name):
    video = torch.randn(3, 16, 8)
    gen = torch.Generator().manual_seed(1)
    out = compressors.build(name, **_params(name, 1.0))(video, **_signals(name, 3, 16, gen))
    assert out.num_output == 48
    flat = video.reshape(-1, 8)
    # every input token reaches the LLM unchanged, each exactly once
    order = out.assignment.argsort()
    torch.testing.assert_close(out.tokens[out.assignment[order]], flat[order])


FIXTURES = Path(__file__).resolve().parent / "fixtures"


@pytest.mark.parametrize("name", compressors.available())
def test_every_method_states_its_provenance(name):
    """Each entry says what it follows; a method with official-output fixtures was checked
    against the commit its registry entry names (the fixture README states that commit)."""
    p = compressors.provenance(name)
    assert p["fidelity"] in compressors.registry.FIDELITIES
    if p["fidelity"] == "baseline":
        assert p["repo"] == "" and not (FIXTURES / name).exists()
        return
    assert p["repo"].count("/") == 1 and len(p["commit"]) == 40 and p["file"]
    assert p["url"] == f"https://github.com/{p['repo']}/blob/{p['commit']}/{p['file']}"
    if p["fidelity"] == "port":
        assert p["note"], f"{name}: a port says which backbone the official code is for"
    readme = FIXTURES / name / "README.md"
    if readme.exists():
        assert p["commit"] in readme.read_text()


def test_new_methods_carry_official_fixtures():
    for name in ("fastvid", "holitom", "dycoke", "prunevid", "vidcom2", "scc_official"):
        assert list((FIXTURES / name).glob("*.pt")), f"{name} has no official-output fixtures"


def test_a_reference_must_name_a_repository_and_commit():
    with pytest.raises(ValueError, match="owner/name"):
        compressors.Reference("https://github.com/a/b", "0" * 40, "f.py")
    with pytest.raises(ValueError, match="40-digit"):
        compressors.Reference("a/b", "abc", "f.py")
    with pytest.raises(ValueError, match="names no reference"):
        compressors.register("nowhere", fidelity="official")(lambda video, **kw: None)


def test_readme_method_table_states_each_methods_provenance():
    """The README's method table names every registered method with the registry's fidelity
    and the commit it follows."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    rows = {line.split("|")[1].strip().strip("`"): line.split("|")[2:4]
            for line in readme.splitlines() if line.startswith("| `")}
    for name in compressors.available():
        assert name in rows, f"README method table lacks {name}"
        fidelity, source = (cell.strip() for cell in rows[name])
        p = compressors.provenance(name)
        assert fidelity.split()[0] == p["fidelity"], name
        assert (p["commit"][:8] in source) if p["commit"] else source == "-", name

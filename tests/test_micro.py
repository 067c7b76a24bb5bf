"""The shipped micro video-LLM: loads offline like a hub checkpoint, answers the held-out
questions, and its accuracy feels what a compressor throws away."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

import backbones
import compressors
from compressors._core import budget, select
from harness.video import sample_frames
from synthetic.micro import corpus, train_tokenizer
from synthetic.task import (
    QUESTION_TYPES,
    SPLIT_SEEDS,
    accuracy_by_type,
    build_dataset,
    format_prompt,
    is_right,
    read_split,
)

ROOT = Path(__file__).resolve().parents[1]
CHECKPOINT = ROOT / "checkpoints" / "micro"
SUBSET = 70  # the first 70 held-out questions: 10 of each type
FRAMES = 8


@pytest.fixture(scope="module")
def micro():
    return backbones.load(str(CHECKPOINT))


@pytest.fixture(scope="module")
def held_out(tmp_path_factory):
    root = tmp_path_factory.mktemp("data") / "synthetic_video_qa"
    build_dataset(root, n=SUBSET, seed=SPLIT_SEEDS["test"], split="test")
    return [(row, sample_frames(root / row["video"], FRAMES)) for row in read_split(root)]


@dataclass
class BackgroundOnly:
    """A deliberately bad pre-LLM compressor: keeps the tokens nearest the video's median token
    (the empty background), so no shape, colour or motion survives."""

    retention: float
    name: str = "background_only"
    stage: str = "pre_llm"
    signals: tuple = ()
    params: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.params = {"retention": self.retention}

    def __call__(self, video, grid=None, **signals):
        flat = video.reshape(-1, video.shape[-1])
        distance = (flat - flat.median(dim=0).values).norm(dim=-1)
        kept = distance.argsort()[: budget(self.retention, flat.shape[0])]
        return select(video, kept)


def _accuracy(llm, held_out, compressor=None) -> tuple[float, dict[str, float]]:
    outcomes = []
    for row, frames in held_out:
        prepared = llm.prepare(frames, compressor)
        text, _ = llm.generate(prepared, format_prompt(row["question"], row["options"]),
                               max_new_tokens=4)
        outcomes.append((row["question_type"], is_right(text, row)))
    per_type = accuracy_by_type(outcomes)
    return per_type.pop("all"), per_type


def test_checkpoint_is_small_and_complete():
    weights = CHECKPOINT / "model.safetensors"
    assert weights.is_file() and weights.stat().st_size <= 25 * 2**20
    for name in ("config.json", "tokenizer.json", "processor_config.json", "training.json"):
        assert (CHECKPOINT / name).is_file(), name
    report = json.loads((CHECKPOINT / "training.json").read_text())
    assert report["held_out_accuracy"]["all"] >= 0.9


def test_loads_offline_through_the_hub_code_path(micro, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = micro.model
    assert type(model).__name__ == "LlavaOnevisionForConditionalGeneration"
    assert micro.tokens_per_frame == 16 and micro.num_layers == 4
    again = backbones.load(str(CHECKPOINT)).model.state_dict()  # offline, from the folder alone
    # oracle: the tensors in the file, under transformers' LLaVA-OneVision key layout by hand
    with safe_open(CHECKPOINT / "model.safetensors", "pt") as weights:
        stored = {_loaded_name(k): weights.get_tensor(k) for k in weights.keys()}
    assert stored.keys() == again.keys() and len(stored) > 50
    for name, tensor in stored.items():
        assert torch.equal(again[name], tensor), name


def _loaded_name(stored: str) -> str:
    """language_model.lm_head.* -> lm_head.*, language_model.model.* -> model.language_model.*,
    anything else (vision tower, projector, image newline) -> model.*"""
    if stored.startswith("language_model.lm_head."):
        return stored.removeprefix("language_model.")
    if stored.startswith("language_model.model."):
        return "model.language_model." + stored.removeprefix("language_model.model.")
    return "model." + stored


def test_tokenizer_is_the_one_the_training_script_trains(micro):
    trained = train_tokenizer(corpus())
    assert trained.get_vocab() == micro.tokenizer.get_vocab()
    prompt = format_prompt("What colour is the small dot?", ["red", "blue", "green", "cyan"])
    assert len(micro.encode_text(prompt)) < 40  # words, not bytes


def test_full_retention_answers_the_held_out_questions(micro, held_out):
    overall, per_type = _accuracy(micro, held_out)
    assert overall >= 0.9, per_type
    assert set(per_type) == set(QUESTION_TYPES)


def test_compression_that_keeps_nothing_relevant_hurts(micro, held_out):
    full, _ = _accuracy(micro, held_out)
    bad, per_type = _accuracy(micro, held_out, BackgroundOnly(0.1))
    assert bad <= full - 0.3 and bad <= 0.6, per_type


def test_a_real_compressor_beats_the_bad_one_at_the_same_budget(micro, held_out):
    scc, _ = _accuracy(micro, held_out, compressors.build("scc", retention=0.1))
    bad, _ = _accuracy(micro, held_out, BackgroundOnly(0.1))
    assert scc >= bad + 0.2


def test_model_config_matches_the_checkpoint(micro):
    from omegaconf import OmegaConf

    import runners.schema  # noqa: F401  registers `scissorbench.root`, which names the checkpoint

    cfg = OmegaConf.load(ROOT / "configs" / "model" / "micro.yaml")
    assert Path(cfg.pretrained) == CHECKPOINT and cfg.max_frames_num == FRAMES
    text = micro.model.config.text_config
    assert (cfg.llm.layers, cfg.llm.hidden, cfg.llm.ffn) == (
        text.num_hidden_layers, text.hidden_size, text.intermediate_size)

"""Fixtures shared by the test modules."""

from __future__ import annotations

import pytest

from backbones.tiny import write_tiny_checkpoint, write_tiny_qwen2_5_vl, write_tiny_qwen3_vl
from backbones.tiny_llava_next import write_tiny_llava_video


@pytest.fixture(scope="session")
def tiny(tmp_path_factory) -> str:
    """A tiny random LLaVA-OneVision checkpoint (seed 0), written once per test session; tests
    read it and never change it."""
    path = tmp_path_factory.mktemp("tiny") / "ckpt"
    write_tiny_checkpoint(str(path), seed=0)
    return str(path)


@pytest.fixture(scope="session")
def tiny_qwen(tmp_path_factory) -> str:
    """A tiny random Qwen2.5-VL checkpoint (seed 0), written once per test session."""
    return str(write_tiny_qwen2_5_vl(tmp_path_factory.mktemp("tiny_qwen") / "ckpt", seed=0))


@pytest.fixture(scope="session")
def tiny_llava_video(tmp_path_factory) -> str:
    """A tiny random LLaVA-Video checkpoint in the LLaVA-NeXT layout (what model=tiny_llava_video
    writes), written once per test session; `backbones.load` converts it on first use."""
    return str(write_tiny_llava_video(tmp_path_factory.mktemp("tiny_llava_video") / "ckpt"))


@pytest.fixture(scope="session")
def tiny_qwen3(tmp_path_factory) -> str:
    """A tiny random Qwen3-VL checkpoint (seed 0, DeepStack taps), written once per session."""
    return str(write_tiny_qwen3_vl(tmp_path_factory.mktemp("tiny_qwen3") / "ckpt", seed=0))


@pytest.fixture(scope="session")
def tiny_siglip_head(tmp_path_factory) -> str:
    """A tiny random SigLIP checkpoint with its attention-pooling head, as wide as the tiny
    LLaVA towers (32): the `vision_head` of FastVID's signals, written once per session."""
    from backbones.siglip_head import write_tiny_siglip_head

    return str(write_tiny_siglip_head(tmp_path_factory.mktemp("siglip_head") / "ckpt", 32))

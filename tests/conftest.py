"""Fixtures shared by the test modules."""

from __future__ import annotations

import pytest

from backbones.tiny import write_tiny_checkpoint


@pytest.fixture(scope="session")
def tiny(tmp_path_factory) -> str:
    """A tiny random LLaVA-OneVision checkpoint (seed 0), written once per test session; tests
    read it and never change it."""
    path = tmp_path_factory.mktemp("tiny") / "ckpt"
    write_tiny_checkpoint(str(path), seed=0)
    return str(path)

"""Shared fixtures for the model tests: one text encoder per test run, small configs."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from morphcam.model.config import ModelConfig
from morphcam.model.text import TextEncoder

from helpers.models import randomized  # noqa: F401  (the model tests import it from here)


@pytest.fixture(scope="session", autouse=True)
def _two_threads():
    torch.set_num_threads(2)


@pytest.fixture(scope="session")
def text_encoder() -> TextEncoder:
    """MiniLM loads in about two seconds: every test shares this instance."""
    return TextEncoder(text_tokens=ModelConfig.from_name("tiny").text_tokens)


def small_config(**overrides) -> ModelConfig:
    """The tiny preset shrunk for fast tests (same structure, fewer and narrower layers)."""
    base = dict(
        name="test",
        ae_channels=(8, 8, 8),
        ae_decoder_channels=(8, 8, 8),
        latent_channels=4,
        dim=32,
        n_layers=2,
        n_heads=2,
        ffn_dim=64,
        width=32,
        height=32,
    )
    base.update(overrides)
    return dataclasses.replace(ModelConfig.from_name("tiny"), **base)



"""Models for tests: networks whose every path affects the output."""
from __future__ import annotations

import dataclasses

import torch

from morphcam.model.config import ModelConfig
from morphcam.model.network import RestyleModel


def randomized(config: ModelConfig, seed: int = 0) -> RestyleModel:
    """A model whose gates and output layer are not zero (as a fresh one's are), so every path
    affects the output. Returned in eval mode."""
    torch.manual_seed(seed)
    model = RestyleModel(config)
    with torch.no_grad():
        for p in model.dit.parameters():
            p.normal_(0.0, 0.2 if p.dim() > 1 else 0.1)
    return model.eval()


def tiny_stream_config(**overrides) -> ModelConfig:
    """The tiny preset narrowed for stream tests at 32x32: 2 layers of width 32, 1 sink frame,
    a window of 2; ``overrides`` on top."""
    base = dict(name="test", ae_channels=(8, 8, 8), ae_decoder_channels=(8, 8, 8), latent_channels=4, dim=32,
                n_layers=2, n_heads=2, ffn_dim=64, sink_frames=1, window_frames=2, width=32, height=32)
    return dataclasses.replace(ModelConfig.from_name("tiny"), **{**base, **overrides})

"""Presets, derived sizes and validation of ModelConfig."""
from __future__ import annotations

import dataclasses

import pytest

from morphcam.model.config import ModelConfig


def test_presets_and_derived_sizes():
    assert ModelConfig.preset_names() == ("tiny", "small", "wan-1.3b-shape")
    tiny = ModelConfig.from_name("tiny")
    assert tiny.latent_stride == 8 and tiny.head_dim == tiny.dim // tiny.n_heads
    assert tiny.frames_per_step == 1
    wan = ModelConfig.from_name("wan-1.3b-shape")
    assert (wan.n_layers, wan.dim, wan.n_heads, wan.head_dim, wan.ffn_dim) == (30, 1536, 12, 128, 8960)
    assert wan.tokens_per_frame(832, 480) == 1560
    assert ModelConfig.from_name("tiny", window_frames=6).cache_frames == 1 + 6 + 1


def test_unknown_preset_lists_valid_ones():
    with pytest.raises(ValueError, match="tiny, small, wan-1.3b-shape"):
        ModelConfig.from_name("huge")


def test_invalid_combinations_are_explained():
    tiny = ModelConfig.from_name("tiny")
    with pytest.raises(ValueError, match="multiples of frames_per_step"):
        dataclasses.replace(tiny, frames_per_step=3, sink_frames=1, window_frames=6)
    with pytest.raises(ValueError, match="1 to 4 steps"):
        dataclasses.replace(tiny, sigmas=(1.0, 0.8, 0.6, 0.4, 0.2))
    with pytest.raises(ValueError, match="frame_positions"):
        dataclasses.replace(tiny, window_frames=20)
    with pytest.raises(ValueError, match="multiples of 16"):
        tiny.latent_size(250, 144)


def test_json_round_trip():
    cfg = ModelConfig.from_name("small")
    assert ModelConfig.from_json(cfg.to_json()) == cfg

"""Steady noise: a session under a deterministic style draws the same noise every frame (so a still
input converges to a still output), generative styles and free prompts keep fresh noise, and a
prompt switch moves a session between the two."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from morphcam.model.config import ModelConfig
from morphcam.model.generator import StreamGenerator
from morphcam.model.prompt_snap import PromptSnap, builtin_wordings
from morphcam.model.text import TextEncoder
from helpers.models import randomized


@pytest.fixture(scope="module")
def parts():
    cfg = dataclasses.replace(
        ModelConfig.from_name("tiny"), name="test", ae_channels=(8, 8, 8), ae_decoder_channels=(8, 8, 8),
        latent_channels=4, dim=32, n_layers=2, n_heads=2, ffn_dim=64, window_frames=2, width=32, height=32,
    )
    return randomized(cfg).requires_grad_(False), TextEncoder(cfg.text_tokens)


def noises(gen, session, n=3):
    """The noise each of ``n`` frames drew, (n, ...)."""
    frame = torch.zeros(1, 1, 3, 32, 32)
    out = []
    for _ in range(n):
        inputs = gen.prepare([session], frame)
        out.append(inputs.noise[0].clone())
        gen.forward([session], inputs)
        gen.finish([session])
    return torch.stack(out)


def test_off_draws_fresh_noise_and_on_the_same(parts):
    model, text = parts
    fresh = noises(StreamGenerator(model, text), StreamGenerator(model, text).open_session(32, 32, "thermal camera", seed=3))
    assert not torch.equal(fresh[0], fresh[1])
    on = StreamGenerator(model, text, steady_noise="on")
    steady = noises(on, on.open_session(32, 32, "make it snow", seed=3))
    assert torch.equal(steady[0], steady[1]) and torch.equal(steady[1], steady[2])
    assert torch.equal(steady[0], fresh[0])  # the first frame is the same draw either way


def test_a_still_input_gives_a_still_output_once_the_window_is_full(parts):
    model, text = parts
    gen = StreamGenerator(model, text, steady_noise="on")
    s = gen.open_session(32, 32, "pencil sketch", seed=1)
    frame = torch.rand(1, 1, 3, 32, 32) * 2 - 1
    outs = [gen.step([s], frame) for _ in range(12)]
    late = max(float((outs[i] - outs[i - 1]).abs().max()) for i in range(9, 12))
    early = float((outs[1] - outs[0]).abs().max())
    assert late < 1e-4 < early  # the history settles; with fresh noise every frame differs


@pytest.mark.parametrize("prompt,steady", [
    ("thermal camera", True), ("pencil sketch", True), ("original", True),
    ("snowfall", False), ("add sparks", False), ("a cyberpunk city", False),
    ([("pencil sketch", 0.5), ("sepia old film", 0.5)], True), ([("pencil sketch", 0.5), ("rain", 0.5)], False),
])
def test_auto_follows_the_style(parts, prompt, steady):
    model, text = parts
    gen = StreamGenerator(model, text, steady_noise="auto")
    assert gen.open_session(32, 32, prompt, seed=0).steady is steady


def test_auto_sees_the_snapped_wording_and_prompt_switches(parts):
    model, text = parts
    snap = PromptSnap(builtin_wordings(), 0.6)
    gen = StreamGenerator(model, text, prompt_snap=snap, steady_noise="auto")
    s = gen.open_session(32, 32, "make it look like an old silent film", seed=0)  # snaps to a sepia wording
    assert s.steady
    gen.set_prompt(s, "make it snow")
    assert not s.steady
    gen.set_prompt(s, "pencil sketch", mode="transition", transition_frames=4)
    assert s.steady
    unsnapped = StreamGenerator(model, text, steady_noise="auto")  # no style has that exact wording
    assert not unsnapped.open_session(32, 32, "make it look like an old silent film").steady


def test_bad_setting_is_refused(parts):
    model, text = parts
    with pytest.raises(ValueError, match="steady_noise must be one of"):
        StreamGenerator(model, text, steady_noise="sometimes")

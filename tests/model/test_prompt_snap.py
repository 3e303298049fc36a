"""Prompt snapping with the real text encoder: paraphrases run as a trained wording of their style,
other looks run as typed, and the generator embeds the snapped wording."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from morphcam.model.config import ModelConfig
from morphcam.model.generator import StreamGenerator
from morphcam.model.prompt_snap import PromptSnap, builtin_wordings
from morphcam.model.teachers import TEACHERS
from morphcam.model.text import TextEncoder
from helpers.models import randomized


@pytest.fixture(scope="module")
def encoder():
    return TextEncoder(ModelConfig.from_name("tiny").text_tokens)


def test_the_table_holds_training_wordings_only():
    table = set(builtin_wordings())
    for teacher in TEACHERS.values():
        assert set(teacher.train_prompts) <= table
        assert not set(teacher.heldout_paraphrases) & table  # held-out wordings stay unseen


@pytest.mark.parametrize("text,style", [("make it snow", "snowfall"), ("make it pop art", "halftone pop art"),
                                        ("like an old silent film", "sepia old film")])
def test_a_paraphrase_runs_as_a_training_wording_of_its_style(encoder, text, style):
    wording, sim = PromptSnap(builtin_wordings(), 0.6).resolve(text, encoder)
    assert wording in TEACHERS[style].train_prompts and wording != text
    assert 0.6 <= sim <= 1.0


@pytest.mark.parametrize("text", ["lego bricks", "a marble statue"])
def test_an_unrelated_look_runs_as_typed(encoder, text):
    wording, sim = PromptSnap(builtin_wordings(), 0.6).resolve(text, encoder)
    assert wording == text and sim < 0.6


def test_a_trained_wording_stays_itself(encoder):
    assert PromptSnap(builtin_wordings(), 0.6).resolve("pencil sketch", encoder)[0] == "pencil sketch"


@pytest.mark.parametrize("threshold", [0.0, -0.5, 1.5])
def test_bad_thresholds_are_refused(threshold):
    with pytest.raises(ValueError, match="threshold"):
        PromptSnap(builtin_wordings(), threshold)


def test_the_generator_embeds_the_snapped_wording(encoder):
    cfg = dataclasses.replace(ModelConfig.from_name("tiny"), name="test", dim=32, n_layers=1, n_heads=2, ffn_dim=64)
    model = randomized(cfg).requires_grad_(False)
    snap = PromptSnap(builtin_wordings(), 0.6)
    plain, snapping = StreamGenerator(model, encoder), StreamGenerator(model, encoder, prompt_snap=snap)
    wording, _ = snap.resolve("make it snow", encoder)
    assert torch.equal(snapping.embed("make it snow").pooled, plain.embed(wording).pooled)
    assert not torch.equal(plain.embed("make it snow").pooled, plain.embed(wording).pooled)
    blend = snapping.embed([("make it snow", 0.5), ("lego bricks", 0.5)])  # blends snap per prompt
    assert torch.allclose(blend.pooled, plain.embed([(wording, 0.5), ("lego bricks", 0.5)]).pooled)

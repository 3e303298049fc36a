"""Small configs and clip sources for the training tests (no tests here).

``FacecamClips`` stands in for the synthetic data where a test must not depend on the
teachers: the procedural face cam as input and a fixed colour transform as target.
"""
from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import torch

from morphcam.daemon.sample import facecam_frame
from morphcam.model.config import ModelConfig
from morphcam.model.train import TrainConfig

PROMPTS = ("a comic book drawing", "a thermal camera image")


def tiny_model(**overrides) -> ModelConfig:
    """The tiny preset with two narrow layers: same structure, a fraction of the cost."""
    base = dict(
        name="test", ae_channels=(8, 16, 16), ae_decoder_channels=(16, 8, 8), latent_channels=4,
        dim=32, n_layers=2, n_heads=2, ffn_dim=64, width=64, height=64,
    )
    base.update(overrides)
    return dataclasses.replace(ModelConfig.from_name("tiny"), **base)


def train_config(tmp_path, **overrides) -> TrainConfig:
    base = dict(
        model=tiny_model(), steps=4, batch_size=2, frames=4, width=64, height=64, out_dir=str(tmp_path / "run"),
        warmup_steps=1, lr=2e-3, log_interval=2, eval_interval=2, eval_batches=1, ckpt_interval=2,
        device="cpu", quiet=True,
    )
    base.update(overrides)
    return TrainConfig(**base)


class FacecamClips:
    """ClipBatch-like batches: face-cam clips at random times; target = channels reversed and
    brightened for the first prompt, inverted for the second."""

    def __init__(self, frames: int = 4, width: int = 64, height: int = 64, seed: int = 0) -> None:
        self.frames, self.width, self.height = frames, width, height
        self.generator = torch.Generator().manual_seed(seed)

    def sample(self, batch_size: int) -> SimpleNamespace:
        starts = torch.rand(batch_size, generator=self.generator) * 4.0
        which = torch.randint(0, len(PROMPTS), (batch_size,), generator=self.generator)
        clips = torch.stack([
            torch.stack([
                torch.from_numpy(facecam_frame(float(s) + k / 30, self.width, self.height)).permute(2, 0, 1)
                for k in range(self.frames)
            ])
            for s in starts
        ]).float() / 127.5 - 1.0
        targets = torch.where(
            (which == 0).view(-1, 1, 1, 1, 1), (clips.flip(2) * 0.8 + 0.2).clamp(-1, 1), -clips
        )
        return SimpleNamespace(
            inputs=clips, targets=targets, prompts=[PROMPTS[int(i)] for i in which],
            styles=[str(int(i)) for i in which], seeds=torch.zeros(batch_size, dtype=torch.long),
        )


class FixedBatch:
    """The same batch every time (overfit checks)."""

    def __init__(self, batch) -> None:
        self.batch = batch

    def sample(self, batch_size: int):
        return self.batch

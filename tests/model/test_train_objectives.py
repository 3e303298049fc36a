"""Diffusion forcing, history augmentation and the block-causal loss; both stages overfit."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from morphcam.model.train.forcing import BLUR, NOISE, NONE, ROLLOUT, degrade_history, draw_forcing
from morphcam.model.train.loop import PromptEmbeddings, Trainer
from morphcam.model.train.objectives import DenoiserObjective

from .conftest import randomized
from .test_train_support import FacecamClips, FixedBatch, tiny_model, train_config

SHAPE = (4, 8, 4, 8, 8)  # B, T, C, h, w


def _draw(config, seed=0):
    return draw_forcing(config, SHAPE, torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed), "cpu")


@pytest.mark.parametrize("sampling", ["logit_normal", "uniform"])
def test_each_frame_gets_its_own_noise_level(tmp_path, sampling):
    cfg = train_config(tmp_path, stage="denoiser", noise_sampling=sampling, sampler_prob=0.0)
    d = _draw(cfg)
    assert d.sigma.shape == SHAPE[:2] and d.step.shape == SHAPE[:2]
    assert ((d.sigma > 0) & (d.sigma < 1)).all()
    assert ((d.step >= 0) & (d.step <= d.sigma)).all()
    assert len(torch.unique(d.sigma)) == d.sigma.numel()  # no two frames share a level
    big = draw_forcing(cfg, (512, 8, 1, 2, 2), torch.Generator().manual_seed(1), torch.Generator().manual_seed(1), "cpu")
    levels = big.sigma
    assert abs(float(levels.mean()) - 0.5) < 0.03
    # Independent per frame: neighbouring frames' levels are uncorrelated.
    corr = torch.corrcoef(torch.stack((levels[:, :-1].flatten(), levels[:, 1:].flatten())))[0, 1]
    assert abs(float(corr)) < 0.05
    assert _draw(cfg).sigma.equal(d.sigma)  # seeded: the same step draws the same levels


def test_a_share_of_frames_trains_at_the_sampler_levels(tmp_path):
    """sampler_prob of the frames sit exactly on the streaming sampler's levels (sigmas at the
    default strength) with its step sizes; the rest keep their random levels."""
    mc = dataclasses.replace(tiny_model(), sigmas=(1.0, 0.5), default_strength=0.8)
    cfg = train_config(tmp_path, stage="denoiser", model=mc, sampler_prob=0.4)
    d = draw_forcing(cfg, (512, 8, 1, 2, 2), torch.Generator().manual_seed(1), torch.Generator().manual_seed(1), "cpu")
    at_hi = torch.isclose(d.sigma, torch.tensor(0.8))
    at_lo = torch.isclose(d.sigma, torch.tensor(0.4))
    share = float((at_hi | at_lo).float().mean())
    assert abs(share - 0.4) < 0.03
    assert abs(float(at_hi.float().mean()) - 0.2) < 0.03  # both levels equally likely
    assert torch.allclose(d.step[at_hi], torch.tensor(0.4)) and torch.allclose(d.step[at_lo], torch.tensor(0.4))
    rest = ~(at_hi | at_lo)
    assert ((d.step[rest] >= 0) & (d.step[rest] <= d.sigma[rest])).all()
    assert len(torch.unique(d.sigma[rest])) == int(rest.sum())  # still one random level per frame
    off = draw_forcing(train_config(tmp_path, stage="denoiser", model=mc, sampler_prob=0.0), (512, 8, 1, 2, 2),
                       torch.Generator().manual_seed(1), torch.Generator().manual_seed(1), "cpu")
    assert not torch.isclose(off.sigma, torch.tensor(0.8)).any()
    with pytest.raises(ValueError, match="sampler_prob"):
        train_config(tmp_path, sampler_prob=1.5)


@pytest.mark.parametrize("kind", [NOISE, BLUR, ROLLOUT])
def test_history_augmentation_changes_only_history_frames(tmp_path, kind):
    cfg = train_config(tmp_path, stage="denoiser")
    g = torch.Generator().manual_seed(3)
    x0 = torch.randn(SHAPE, generator=g)
    history = torch.zeros(SHAPE[:2], dtype=torch.bool)
    history[0, :3] = True
    history[2, :1] = True  # clip 1 and 3 are not augmented
    d = dataclasses.replace(
        _draw(cfg), history=history, kind=torch.tensor([kind, NONE, kind, NONE]),
        extra_std=torch.full((4,), 0.3), needs_rollout=kind == ROLLOUT,
    )
    rollout = torch.randn(SHAPE, generator=g) if kind == ROLLOUT else None
    out = degrade_history(x0, d, blur_factor=2, rollout=rollout)
    assert out[~history].equal(x0[~history])  # bit for bit
    changed = (out - x0).abs().amax(dim=(2, 3, 4)) > 1e-3
    assert changed[history].all()


def test_loss_is_block_causal(tmp_path, text_encoder):
    """Changing later frames (inputs, targets, noise, levels) leaves earlier frames' losses alone."""
    mc = tiny_model(sink_frames=1, window_frames=2)
    # Random levels only: a frame at the sampler's level 1.0 is pure noise, and changing its
    # target would (rightly) change nothing downstream.
    cfg = train_config(tmp_path, stage="denoiser", model=mc, frames=6, sampler_prob=0.0)
    objective = DenoiserObjective(randomized(mc), cfg)
    batch = FacecamClips(frames=6).sample(2)
    pooled, tokens = PromptEmbeddings(text_encoder, torch.device("cpu"))(batch.prompts)
    h, w = mc.latent_size(64, 64)
    no_aug = dataclasses.replace(cfg, history=dataclasses.replace(cfg.history, prob=0.0))
    d = draw_forcing(no_aug, (2, 6, mc.latent_channels, h, w), torch.Generator(), torch.Generator().manual_seed(2), "cpu")
    with torch.no_grad():
        _, before = objective(batch.inputs, batch.targets, pooled, tokens, d)
        inputs, targets = batch.inputs.clone(), batch.targets.clone()
        inputs[:, 4:] = -inputs[:, 4:]
        targets[:, 4:] = 0.0
        sigma = d.sigma.clone()
        sigma[:, 4:] = 0.9
        noise = d.noise.clone()
        noise[:, 4:] = 2.0
        _, after = objective(inputs, targets, pooled, tokens, dataclasses.replace(d, sigma=sigma, noise=noise))
    torch.testing.assert_close(after[:, :4], before[:, :4], rtol=1e-5, atol=1e-6)
    assert (after[:, 4:] - before[:, 4:]).abs().min() > 1e-4
    # With the window of two, frame 5 no longer sees frame 1: changing frame 1 changes frames 1..4 only.
    targets = batch.targets.clone()
    targets[:, 1] = 0.0
    with torch.no_grad():
        _, mid = objective(batch.inputs, targets, pooled, tokens, d)
    torch.testing.assert_close(mid[:, 0], before[:, 0], rtol=1e-5, atol=1e-6)
    assert (mid[:, 1:4] - before[:, 1:4]).abs().min() > 1e-6
    torch.testing.assert_close(mid[:, 5], before[:, 5], rtol=1e-5, atol=1e-6)


def _losses(trainer: Trainer, n: int) -> list[float]:
    return [float(trainer.train_step()[0]) for _ in range(n)]


def test_autoencoder_overfits_a_batch(tmp_path):
    batch = FacecamClips(frames=2, seed=4).sample(1)
    cfg = train_config(tmp_path, stage="autoencoder", frames=2, lr=3e-3, warmup_steps=0, steps=1000, eval_batches=0)
    losses = _losses(Trainer(cfg, source=FixedBatch(batch)), 30)
    assert losses[-1] < 0.75 * losses[0], losses


def test_denoiser_overfits_a_batch(tmp_path, text_encoder):
    batch = FacecamClips(frames=3, seed=5).sample(2)
    cfg = train_config(tmp_path, stage="denoiser", frames=3, lr=3e-3, warmup_steps=0, steps=1000, eval_batches=0)
    losses = _losses(Trainer(cfg, source=FixedBatch(batch), text_encoder=text_encoder), 40)
    first, last = sum(losses[:8]) / 8, sum(losses[-8:]) / 8
    assert last < 0.7 * first, losses


def test_self_rollout_of_some_clips_equals_rolling_out_all(tmp_path):
    """Only the clips that use a rollout history are rolled out; each clip's rollout is its own."""
    mc = tiny_model()
    objective = DenoiserObjective(randomized(mc), train_config(tmp_path, stage="denoiser", model=mc))
    g = torch.Generator().manual_seed(7)
    cond, noise = torch.randn(3, 4, 4, 4, 4, generator=g), torch.randn(3, 4, 4, 4, 4, generator=g)
    pooled, tokens = torch.randn(3, mc.text_dim, generator=g), torch.randn(3, mc.text_tokens, mc.text_dim, generator=g)
    every = objective.self_rollout(cond, noise, pooled, tokens, steps=2)
    rows = torch.tensor([0, 2])
    some = objective.self_rollout(cond[rows], noise[rows], pooled[rows], tokens[rows], steps=2)
    torch.testing.assert_close(some, every[rows], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(every, objective.self_rollout(cond, noise, pooled, tokens, steps=1))

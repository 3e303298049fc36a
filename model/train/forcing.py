"""Diffusion forcing draws and history augmentation for the denoiser stage.

Every frame of a clip gets its own noise level (diffusion forcing), so one block-causal forward
trains every mix of clean-ish history and noisy present the stream will meet. History
augmentation then degrades the clean latents of the context frames (extra noise, blur, or the
model's own predictions) so the network learns to correct a drifting history instead of
copying it.

All randomness of a step comes from two generators seeded by (seed, rank, step): host-side
choices from a CPU generator (so no device sync decides a branch) and tensors from a
generator on the training device.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..host import to_device
from .config import TrainConfig

# History kinds per clip.
NONE, NOISE, BLUR, ROLLOUT = 0, 1, 2, 3


def step_seed(seed: int, rank: int, step: int, stream: int = 0) -> int:
    """A 63-bit seed for one (run seed, rank, step, stream): the same on resume, different per rank."""
    h = (seed * 0x9E3779B97F4A7C15 + rank * 0xBF58476D1CE4E5B9 + step * 0x94D049BB133111EB + stream) % 2**64
    h ^= h >> 31
    return (h * 0xD6E8FEB86659FD93 % 2**64) >> 1


def sample_sigmas(config: TrainConfig, shape: tuple[int, ...], gen: torch.Generator, device) -> torch.Tensor:
    """Independent noise levels in (0, 1), logit-normal or uniform. Returns ``shape`` (e.g. (B, T))."""
    if config.noise_sampling == "logit_normal":
        u = torch.randn(shape, generator=gen, device=device) * config.logit_std + config.logit_mean
        return torch.sigmoid(u)
    # Uniform, kept off the exact ends where the target is degenerate.
    return torch.rand(shape, generator=gen, device=device).clamp(1e-4, 1 - 1e-4)


def loss_weights(sigma: torch.Tensor, weighting: str) -> torch.Tensor:
    """Per-frame weight of the velocity MSE. sigma: (B, T) -> (B, T).

    ``uniform``: plain velocity MSE. ``x0``: sigma**2, i.e. the MSE of the implied clean latent
    ``x - sigma * v``. ``cosmap``: the weighting of SD3's cosine-map schedule.
    """
    if weighting == "uniform":
        return torch.ones_like(sigma)
    if weighting == "x0":
        return sigma.square()
    if weighting == "cosmap":
        return 2.0 / (math.pi * (1 - 2 * sigma + 2 * sigma.square()))
    raise ValueError(f"unknown loss weighting {weighting!r}")


def sampler_levels(config: TrainConfig) -> tuple[list[float], list[float]]:
    """The noise levels a streamed frame goes through and the step size passed at each: the
    preset's ``sigmas`` scaled by its default strength. Returns (levels, steps), host floats."""
    mc = config.model
    levels = [mc.default_strength * s for s in (*mc.sigmas, 0.0)]
    return levels[:-1], [a - b for a, b in zip(levels[:-1], levels[1:])]


def _at_sampler_levels(
    config: TrainConfig, sigma: torch.Tensor, step: torch.Tensor, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Move a ``sampler_prob`` share of the frames (independently) onto the sampler's levels, each
    level equally likely, with the sampler's step size. sigma, step: (B, T) -> (B, T), (B, T)."""
    levels, steps = sampler_levels(config)
    device = sigma.device
    pick = torch.rand(sigma.shape, generator=gen, device=device) < config.sampler_prob
    idx = torch.randint(len(levels), sigma.shape, generator=gen, device=device)
    # Pinned, asynchronous copies of host floats: nothing waits for the queued GPU work.
    lv = to_device(torch.tensor(levels, dtype=sigma.dtype), device)[idx]
    st = to_device(torch.tensor(steps, dtype=step.dtype), device)[idx]
    # A level of exactly 0 (strength 0) has no target worth learning: keep the random draw there.
    pick &= lv > 0
    return torch.where(pick, lv, sigma), torch.where(pick, st, step)


@dataclass
class ForcingDraw:
    """The random choices of one denoiser step for a batch of B clips of T latent frames.

    sigma, step: (B, T) noise level and step-size conditioning per frame
    noise: (B, T, C, h, w) the flow-matching noise
    history: (B, T) bool, True for frames whose clean latent is degraded
    kind: (B,) long, the degradation of each clip (NONE, NOISE, BLUR or ROLLOUT)
    extra_std: (B,) std of the NOISE kind; extra_noise, rollout_noise: (B, T, C, h, w)
    rollout_rows: (R,) long, the clips that use ROLLOUT (only they are rolled out)
    needs_rollout: host-side flag, R > 0 (decided without a device sync)
    """

    sigma: torch.Tensor
    step: torch.Tensor
    noise: torch.Tensor
    history: torch.Tensor
    kind: torch.Tensor
    extra_std: torch.Tensor
    extra_noise: torch.Tensor
    rollout_noise: torch.Tensor
    rollout_rows: torch.Tensor
    needs_rollout: bool


def draw_forcing(
    config: TrainConfig, latent_shape: tuple[int, ...], host_gen: torch.Generator, dev_gen: torch.Generator, device
) -> ForcingDraw:
    """Draw sigmas, noise and the history augmentation for latents of ``latent_shape`` (B, T, C, h, w)."""
    b, t = latent_shape[:2]
    hist = config.history
    sigma = sample_sigmas(config, (b, t), dev_gen, device)
    # The plain flow-matching target does not depend on the step size; drawing it in [0, sigma]
    # covers the sizes the sampler passes, so a later shortcut stage starts from a model that has
    # seen them.
    step = torch.rand((b, t), generator=dev_gen, device=device) * sigma
    if config.sampler_prob > 0:
        sigma, step = _at_sampler_levels(config, sigma, step, dev_gen)
    noise = torch.randn(latent_shape, generator=dev_gen, device=device)
    extra_noise = torch.randn(latent_shape, generator=dev_gen, device=device)
    rollout_noise = torch.randn(latent_shape, generator=dev_gen, device=device)

    augment = torch.rand(b, generator=host_gen) < hist.prob
    odds = torch.tensor(hist.kind_weights, dtype=torch.float)
    kind = torch.where(augment, torch.multinomial(odds, b, replacement=True, generator=host_gen) + 1, NONE)
    split = torch.randint(1, t, (b,), generator=host_gen)  # frames [0, split) are history; >= 1 frame stays
    history = (torch.arange(t)[None, :] < split[:, None]) & augment[:, None]
    extra_std = torch.rand(b, generator=host_gen) * hist.noise_max
    return ForcingDraw(
        sigma=sigma,
        step=step,
        noise=noise,
        history=to_device(history, device),
        kind=to_device(kind, device),
        extra_std=to_device(extra_std, device),
        extra_noise=extra_noise,
        rollout_noise=rollout_noise,
        rollout_rows=to_device((kind == ROLLOUT).nonzero().flatten(), device),
        needs_rollout=bool((kind == ROLLOUT).any()),
    )


def degrade_history(
    x0: torch.Tensor, draw: ForcingDraw, blur_factor: int, rollout: torch.Tensor | None = None
) -> torch.Tensor:
    """Clean latents with the history frames degraded; every other frame is returned bit for bit.

    x0: (B, T, C, h, w); rollout: (B, T, C, h, w) the model's own predictions (needed when
    ``draw.needs_rollout``). Returns (B, T, C, h, w).
    """
    b, t, c, h, w = x0.shape
    k = draw.kind.view(b, 1, 1, 1, 1)
    noisy = x0 + draw.extra_std.view(b, 1, 1, 1, 1) * draw.extra_noise
    if blur_factor > 1 and h % blur_factor == 0 and w % blur_factor == 0:
        small = F.avg_pool2d(x0.flatten(0, 1), blur_factor)
        blurred = F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False).view_as(x0)
    else:
        blurred = x0
    degraded = torch.where(k == NOISE, noisy, torch.where(k == BLUR, blurred, x0))
    if rollout is not None:
        degraded = torch.where(k == ROLLOUT, rollout.to(x0.dtype), degraded)
    elif draw.needs_rollout:
        raise ValueError("the draw asks for a self-rollout history but no rollout was given")
    return torch.where(draw.history.view(b, t, 1, 1, 1), degraded, x0)

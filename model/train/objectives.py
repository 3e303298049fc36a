"""The two training objectives as modules, so DistributedDataParallel can wrap either.

``AutoencoderObjective``: reconstruction of input and target frames (L1 + L2 + image-gradient
L1) plus a term that keeps each latent channel near unit RMS, the scale of the denoiser's noise.

``DenoiserObjective``: flow matching with diffusion forcing over whole clips. The frozen
autoencoder encodes inputs (conditioning) and targets (clean latents), unless the batch comes
as latents already (``encoded``: a clip pool with ``pool_latents`` encoded them once); one
block-causal forward of the DiT (``BlockCausalContext``: sink + window visibility, as in
streaming) predicts every frame's velocity at once; history frames may be degraded first.
Nothing past the encoder reads pixels: history augmentation and self-rollouts work on latents.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..attention import BlockCausalContext
from ..network import RestyleModel
from ..sampler import euler_step, noise_latent
from .config import TrainConfig
from .forcing import ForcingDraw, degrade_history, loss_weights


def image_gradient_l1(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """L1 between the horizontal and vertical finite differences of two (N, 3, H, W) images:
    cheap, and it keeps edges sharp where plain L1/L2 settle for blur."""
    dx = (a[..., :, 1:] - a[..., :, :-1]) - (b[..., :, 1:] - b[..., :, :-1])
    dy = (a[..., 1:, :] - a[..., :-1, :]) - (b[..., 1:, :] - b[..., :-1, :])
    return dx.abs().mean() + dy.abs().mean()


class AutoencoderObjective(nn.Module):
    def __init__(self, model: RestyleModel, config: TrainConfig) -> None:
        super().__init__()
        self.model = model
        self.config = config

    def forward(self, inputs: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """inputs, targets: (B, T, 3, H, W) in [-1, 1]; both are reconstructed so styled frames
        are representable too. Returns (loss, (4,) detached [l1, l2, grad, latent_rms])."""
        cfg, ae = self.config, self.model.autoencoder
        frames = torch.cat((inputs, targets), dim=1).flatten(0, 1)
        z = ae.encode(frames)
        recon = ae.reconstruct(z).float()  # unclamped, so saturated pixels still get gradients
        frames = frames.float()
        l1 = (recon - frames).abs().mean()
        l2 = (recon - frames).square().mean()
        grad = image_gradient_l1(recon, frames)
        # Per channel, so no channel is left too faint for the denoiser's unit noise to leave it any signal.
        rms = z.float().square().mean(dim=(0, 2, 3)).sqrt()  # (C,)
        scale = (rms - 1).square().mean()
        loss = l1 + cfg.l2_weight * l2 + cfg.grad_weight * grad + cfg.latent_rms_weight * scale
        return loss, torch.stack((l1, l2, grad, rms.mean())).detach()


class DenoiserObjective(nn.Module):
    def __init__(self, model: RestyleModel, config: TrainConfig) -> None:
        super().__init__()
        self.model = model
        self.config = config
        # Masks and frame indices depend only on the clip's shape; building them copies small
        # tensors to the device, which on CUDA would wait for the queued work every forward.
        self._contexts: dict[tuple, BlockCausalContext] = {}
        # The compiled clip forward (config.compile), used where gradients flow: the training
        # forward, whose shapes never change. A bound method, so it is no submodule and the
        # model's parameter names stay as they are. Self-rollouts and evals (no gradients, a
        # batch size that varies) run eagerly rather than compiling a graph per size.
        self._compiled = torch.compile(model.dit.forward, dynamic=False) if config.compile else None

    @torch.no_grad()
    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """(B, T, 3, H, W) -> (B, T, C, h, w) float32 latents of the frozen autoencoder."""
        return self.model.autoencoder.encode(frames.flatten(0, 1)).unflatten(0, frames.shape[:2]).float()

    def context(self, n_frames: int, latent_hw: tuple[int, int], device) -> BlockCausalContext:
        key = (n_frames, tuple(latent_hw), str(device))
        if key not in self._contexts:
            p = self.model.config.patch_size
            n = (latent_hw[0] // p) * (latent_hw[1] // p)
            self._contexts[key] = BlockCausalContext(self.model.config, n_frames, n, device)
        return self._contexts[key]

    def predict(
        self, x: torch.Tensor, cond: torch.Tensor, sigma: torch.Tensor, step: torch.Tensor,
        pooled: torch.Tensor, tokens: torch.Tensor,
    ) -> torch.Tensor:
        """One block-causal clip forward: velocity of every frame. x, cond: (B, T, C, h, w);
        sigma, step: (B, T); pooled: (B, text_dim); tokens: (B, L, text_dim). Returns x's shape."""
        ctx = self.context(x.shape[1], x.shape[-2:], x.device)
        forward = self._compiled if self._compiled is not None and torch.is_grad_enabled() else self.model.dit
        return forward(x, cond, sigma, step, pooled, tokens, ctx)

    @torch.no_grad()
    def self_rollout(
        self, cond: torch.Tensor, noise: torch.Tensor, pooled: torch.Tensor, tokens: torch.Tensor, steps: int
    ) -> torch.Tensor:
        """The model's own few-step predictions for every frame, sampled as the stream does
        (input latent noised to the default strength, then Euler steps), all frames in parallel
        with each frame seeing the others' intermediate states. Returns (B, T, C, h, w)."""
        b, t = cond.shape[:2]
        mc = self.model.config
        # The sampler's levels at the default strength, as host floats: filling device tensors
        # from them copies nothing from the host.
        levels = [mc.default_strength * s for s in (*mc.sigmas[:steps], 0.0)]

        def full(value: float, *shape: int) -> torch.Tensor:
            return torch.full(shape, value, device=cond.device)

        x = noise_latent(cond, noise, full(levels[0], b))
        for s_now, s_next in zip(levels[:-1], levels[1:]):
            v = self.predict(x, cond, full(s_now, b, t), full(s_now - s_next, b, t), pooled, tokens)
            x = euler_step(x, v.float(), full(s_now, b), full(s_next, b))
        return x

    def noisy_clip(
        self, inputs: torch.Tensor, targets: torch.Tensor, pooled: torch.Tensor, tokens: torch.Tensor,
        draw: ForcingDraw, encoded: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Latents of a clip as the denoiser sees them: (cond, x0, x), each (B, T, C, h, w), with
        ``x`` the (history-degraded) clean latents noised to each frame's ``draw.sigma``.
        ``encoded``: inputs and targets are already float32 latents (B, T, C, h, w), not frames."""
        cfg = self.config
        cond, x0 = (inputs, targets) if encoded else (self.encode(inputs), self.encode(targets))
        rollout = None
        if draw.needs_rollout:  # only the clips that use it: a rollout costs 1-2 extra forwards
            rows = draw.rollout_rows
            own = self.self_rollout(
                cond[rows], draw.rollout_noise[rows], pooled[rows], tokens[rows], cfg.history.rollout_steps
            )
            rollout = torch.zeros_like(x0).index_copy_(0, rows, own)
        history_x0 = degrade_history(x0, draw, cfg.history.blur_factor, rollout)
        s = draw.sigma[..., None, None, None]
        return cond, x0, torch.lerp(history_x0, draw.noise, s)

    def weighted_loss(self, per_frame: torch.Tensor, draw: ForcingDraw) -> torch.Tensor:
        """Mean of the per-frame losses (B, T), history frames down-weighted, by noise level."""
        cfg = self.config
        frame_w = torch.where(draw.history, cfg.history.loss_weight, 1.0) * loss_weights(draw.sigma, cfg.loss_weighting)
        active = torch.where(draw.history, cfg.history.loss_weight, 1.0).sum().clamp_min(1.0)
        return (per_frame * frame_w).sum() / active

    def forward(
        self, inputs: torch.Tensor, targets: torch.Tensor, pooled: torch.Tensor, tokens: torch.Tensor,
        draw: ForcingDraw, encoded: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """inputs, targets: (B, T, 3, H, W), or with ``encoded`` their latents (B, T, C, h, w);
        pooled: (B, text_dim); tokens: (B, L, text_dim).

        Returns (loss, per-frame velocity MSE (B, T), detached, before weighting)."""
        cond, x0, x = self.noisy_clip(inputs, targets, pooled, tokens, draw, encoded)
        target = draw.noise - x0  # the clean latent, not the degraded one: correct the drift
        v = self.predict(x, cond, draw.sigma, draw.step, pooled, tokens).float()
        per_frame = (v - target).square().mean(dim=(2, 3, 4))  # (B, T)
        return self.weighted_loss(per_frame, draw), per_frame.detach()

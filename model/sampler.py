"""Flow-matching Euler sampling with step-size conditioning.

Convention: ``x_sigma = (1 - sigma) * x0 + sigma * noise``; the network predicts the velocity
``noise - x0``; an Euler step from ``sigma`` to ``sigma_next`` is ``x + (sigma_next - sigma) * v``.
The step size ``sigma - sigma_next`` is given to the network too, so a shortcut-distilled
model can take one or two large steps.
"""
from __future__ import annotations

import torch


def sigma_schedule(sigmas: tuple[float, ...], strength: torch.Tensor) -> torch.Tensor:
    """Per-session noise levels, the config's steps scaled by strength, ending at 0.

    strength: (B,) in [0, 1]. Returns (B, len(sigmas) + 1).
    """
    base = torch.tensor((*sigmas, 0.0), device=strength.device, dtype=strength.dtype)
    return strength[:, None] * base[None, :]


def noise_latent(z: torch.Tensor, noise: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """The starting output latent: the input latent noised to ``sigma``.

    z, noise: (B, F, C, h, w); sigma: (B,).
    """
    s = sigma.view(-1, *([1] * (z.dim() - 1)))
    return torch.lerp(z, noise, s)


def euler_step(x: torch.Tensor, v: torch.Tensor, sigma: torch.Tensor, sigma_next: torch.Tensor) -> torch.Tensor:
    """x, v: (B, F, C, h, w); sigma, sigma_next: (B,). Returns x at ``sigma_next``."""
    d = (sigma_next - sigma).view(-1, *([1] * (x.dim() - 1)))
    return torch.addcmul(x, v, d)

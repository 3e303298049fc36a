"""Per-frame autoencoder: 8x spatial down, no temporal compression, a small fast decoder.

One camera frame in gives one latent frame out, so the stream never buffers frames. The
decoder is narrower than the encoder because it runs on every output frame at full
resolution, where its first layers dominate the cost.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelConfig


class FrameAutoencoder(nn.Module):
    """RGB frames in [-1, 1] <-> latents with ``latent_channels`` channels at 1/8 resolution."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        enc: list[nn.Module] = []
        c_in = 3
        for c in config.ae_channels:
            # Stride-2 conv halves the size; a second conv at the new size adds capacity cheaply.
            enc += [nn.Conv2d(c_in, c, 3, stride=2, padding=1), nn.SiLU(), nn.Conv2d(c, c, 3, padding=1), nn.SiLU()]
            c_in = c
        enc.append(nn.Conv2d(c_in, config.latent_channels, 1))
        self.encoder = nn.Sequential(*enc)

        c_in = config.ae_decoder_channels[0]
        dec: list[nn.Module] = [nn.Conv2d(config.latent_channels, c_in, 3, padding=1), nn.SiLU()]
        last = len(config.ae_decoder_channels) - 1
        for i, c in enumerate(config.ae_decoder_channels):
            # A 2x2 stride-2 transposed conv upsamples at a quarter of the cost of upsample + 3x3 conv;
            # the 3x3 conv after it mixes space, except at full resolution, where it would cost the most.
            dec += [nn.ConvTranspose2d(c_in, c, 2, stride=2), nn.SiLU()]
            if i < last:
                dec += [nn.Conv2d(c, c, 3, padding=1), nn.SiLU()]
            c_in = c
        dec.append(nn.Conv2d(c_in, 3, 3, padding=1))
        self.decoder = nn.Sequential(*dec)
        # Linear paths around the convolutions (``ae_skip``): the frame's cell averages into the
        # latent and a bilinear upsampling of a latent projection out of it. They carry the low
        # frequencies from the first step, so the convolutions only learn the detail; without them
        # the small network sits below a plain 8x average-and-upsample for thousands of steps.
        self.skip_in = nn.Conv2d(3, config.latent_channels, 1) if config.ae_skip else None
        self.skip_out = nn.Conv2d(config.latent_channels, 3, 1) if config.ae_skip else None

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """frames: (B, 3, H, W) in [-1, 1] -> latents (B, C, H/8, W/8)."""
        z = self.encoder(frames)
        if self.skip_in is not None:
            z = z + self.skip_in(F.avg_pool2d(frames, self.config.latent_stride))
        return z

    def reconstruct(self, latents: torch.Tensor) -> torch.Tensor:
        """latents: (B, C, h, w) -> frames (B, 3, 8h, 8w), not clamped (training takes gradients
        through saturated pixels)."""
        out = self.decoder(latents)
        if self.skip_out is not None:
            out = out + F.interpolate(self.skip_out(latents), scale_factor=self.config.latent_stride,
                                      mode="bilinear", align_corners=False)
        return out

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """latents: (B, C, h, w) -> frames (B, 3, 8h, 8w), clamped to [-1, 1]."""
        return self.reconstruct(latents).clamp(-1.0, 1.0)

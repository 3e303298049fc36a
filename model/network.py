"""The trainable bundle: frame autoencoder plus denoiser, one state dict, one config."""
from __future__ import annotations

from torch import nn

from .autoencoder import FrameAutoencoder
from .config import ModelConfig
from .dit import CausalDiT


class RestyleModel(nn.Module):
    """``autoencoder`` (frames <-> latents) and ``dit`` (latent velocity); what a checkpoint holds."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.autoencoder = FrameAutoencoder(config)
        self.dit = CausalDiT(config)

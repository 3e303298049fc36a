"""Models for tests: networks whose every path affects the output."""
from __future__ import annotations

import torch

from morphcam.model.config import ModelConfig
from morphcam.model.network import RestyleModel


def randomized(config: ModelConfig, seed: int = 0) -> RestyleModel:
    """A model whose gates and output layer are not zero (as a fresh one's are), so every path
    affects the output. Returned in eval mode."""
    torch.manual_seed(seed)
    model = RestyleModel(config)
    with torch.no_grad():
        for p in model.dit.parameters():
            p.normal_(0.0, 0.2 if p.dim() > 1 else 0.1)
    return model.eval()

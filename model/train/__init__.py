"""Training: the frame autoencoder, then the denoiser (flow matching with diffusion forcing and
history augmentation), then shortcut distillation to 1-2 steps and architecture-aware pruning;
one loop for a laptop test or many GPUs under torchrun.

Main entry points: ``TrainConfig`` and ``Trainer``; ``morphcam train`` on the command line.
"""
from .config import HistoryAugment, PruneSettings, ShortcutDistill, TrainConfig
from .loop import Trainer

__all__ = ["HistoryAugment", "PruneSettings", "ShortcutDistill", "TrainConfig", "Trainer"]

"""Training data: synthetic paired clips (``SyntheticClips``) and a user's own paired clips
(``PairedClipFolder``), both as ``ClipBatch`` es of (B, T, 3, H, W) tensors in [-1, 1]::

    data = SyntheticClips(ClipSpec(frames=8, width=256, height=144), seed=0, device="cuda")
    batch = data.sample(16)  # batch.inputs, batch.targets, batch.prompts, batch.styles, batch.seeds
    held_out = SyntheticClips(ClipSpec(), split="eval", seed=0)  # held-out photos and wordings
"""
from .clips import ClipBatch, ClipSpec, SyntheticClips
from .folder import PairedClipError, PairedClipFolder

__all__ = ["ClipBatch", "ClipSpec", "PairedClipError", "PairedClipFolder", "SyntheticClips"]

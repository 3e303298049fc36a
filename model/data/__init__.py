"""Training data: synthetic paired clips (``SyntheticClips``) and a user's own paired clips
(``PairedClipFolder``), both as ``ClipBatch`` es of (B, T, 3, H, W) tensors in [-1, 1]."""
from .clips import ClipBatch, ClipSpec, SyntheticClips
from .folder import PairedClipError, PairedClipFolder

__all__ = ["ClipBatch", "ClipSpec", "PairedClipError", "PairedClipFolder", "SyntheticClips"]

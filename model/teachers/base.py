"""``StyleTeacher``: one named style's prompts plus the procedural function that draws it."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import Tensor

from ..host import to_device
from .ops import hash_int

# A look sees frames folded to (N, 3, H, W) in [0, 1], with each frame's time (N,) in seconds
# and seed (N,) int64, and returns (N, 3, H, W). It must be a pure function of those.
Look = Callable[[Tensor, Tensor, Tensor], Tensor]


def fold_seeds(seed: int | Tensor, batch: int, device: torch.device) -> Tensor:
    """Any integer seed, or one per clip, as (B,) int64 in [0, 2**31): high bits are hashed in
    rather than dropped, so seeds that differ only above bit 31 still differ."""
    if isinstance(seed, Tensor):
        s = to_device(seed, device, torch.int64).reshape(-1)
        if s.numel() == 1:
            s = s.expand(batch)
        if s.numel() != batch:
            raise ValueError(f"seed has {s.numel()} values for a batch of {batch} clips: pass an int or a (B,) tensor")
    else:
        s = torch.full((batch,), int(seed) % (1 << 63), dtype=torch.int64, device=device)
    return (s & 0x7FFFFFFF) ^ hash_int(s >> 31)


@dataclass(frozen=True)
class StyleTeacher:
    """A named style: its canonical prompt, training and held-out paraphrases, and its look.

    Calling it restyles clips: ``frames`` (B, T, 3, H, W) float in [0, 1], ``times`` (B, T)
    seconds and ``seed`` (an int, or (B,) int64, one per clip) -> (B, T, 3, H, W) in [0, 1].
    The result depends only on those three (no global random state), on any device.
    Generative styles (``generative=True``) overlay particles whose positions depend on
    (seed, time) only, never on the frame.
    """

    name: str
    prompt: str
    paraphrases: tuple[str, ...]
    heldout_paraphrases: tuple[str, ...]
    generative: bool
    description: str
    look: Look = field(repr=False, compare=False)

    @property
    def train_prompts(self) -> tuple[str, ...]:
        """Every wording training may use: the canonical prompt and the training paraphrases."""
        return (self.prompt, *self.paraphrases)

    @torch.no_grad()
    def __call__(self, frames: Tensor, times: Tensor, seed: int | Tensor) -> Tensor:
        if frames.dim() != 5 or frames.shape[2] != 3:
            raise ValueError(f"frames must be (B, T, 3, H, W), got {tuple(frames.shape)}")
        b, t, _, h, w = frames.shape
        if tuple(times.shape) != (b, t):
            raise ValueError(f"times must be (B, T) = {(b, t)}, got {tuple(times.shape)}")
        device = frames.device
        seeds = fold_seeds(seed, b, device).repeat_interleave(t)  # (B*T,): each frame carries its clip's seed
        x = frames.reshape(b * t, 3, h, w).float().clamp(0, 1)
        out = self.look(x, to_device(times, device, torch.float32).reshape(b * t), seeds)
        return out.clamp(0, 1).reshape(b, t, 3, h, w).to(frames.dtype)

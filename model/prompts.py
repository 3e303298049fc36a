"""Prompt conditioning of one session: blends, hard cuts and timed transitions.

A blend of up to four prompts is the weighted mean of their token states (weights normalised
to sum to 1) and the renormalised weighted mean of their unit pooled vectors. A transition
interpolates (lerp, or slerp per vector) from the conditioning in force when it starts to the
target, one step per generated frame, and lands on the target tensors exactly at frame N.
"""
from __future__ import annotations

from typing import Sequence

import torch

from .text import TextEmbedding

MAX_BLEND = 4
INTERPOLATIONS = ("lerp", "slerp")


def blend(embeddings: Sequence[TextEmbedding], weights: Sequence[float]) -> TextEmbedding:
    """Weighted blend of 1 to ``MAX_BLEND`` prompt embeddings (weights > 0, any scale)."""
    if not 1 <= len(embeddings) <= MAX_BLEND or len(weights) != len(embeddings):
        raise ValueError(f"a blend takes 1 to {MAX_BLEND} prompts with one weight each")
    if any(not w > 0 for w in weights):
        raise ValueError(f"blend weights must be > 0, got {list(weights)}")
    if len(embeddings) == 1:
        return embeddings[0]
    total = float(sum(weights))
    w = [float(x) / total for x in weights]
    pooled = sum(wi * e.pooled for wi, e in zip(w, embeddings))
    tokens = sum(wi * e.tokens for wi, e in zip(w, embeddings))
    return TextEmbedding(pooled=torch.nn.functional.normalize(pooled, dim=-1), tokens=tokens)


def slerp(a: torch.Tensor, b: torch.Tensor, t: float, eps: float = 1e-4) -> torch.Tensor:
    """Spherical interpolation along the last axis; falls back to lerp for (anti)parallel rows."""
    an = torch.nn.functional.normalize(a.float(), dim=-1)
    bn = torch.nn.functional.normalize(b.float(), dim=-1)
    dot = (an * bn).sum(-1, keepdim=True).clamp(-1.0, 1.0)
    theta = torch.acos(dot)
    sin = torch.sin(theta)
    use_lerp = sin.abs() < eps
    safe = torch.where(use_lerp, torch.ones_like(sin), sin)
    wa = torch.where(use_lerp, torch.full_like(sin, 1 - t), torch.sin((1 - t) * theta) / safe)
    wb = torch.where(use_lerp, torch.full_like(sin, t), torch.sin(t * theta) / safe)
    return (wa * a.float() + wb * b.float()).to(a.dtype)


class PromptState:
    """The conditioning a session uses for its next frame.

    ``pooled`` (text_dim,) and ``tokens`` (text_tokens, text_dim) are preallocated and written in
    place; ``advance()`` is called once per generated frame before they are read.
    """

    def __init__(self, embedding: TextEmbedding) -> None:
        self.pooled = embedding.pooled.clone()
        self.tokens = embedding.tokens.clone()
        self.target = embedding
        self._source: TextEmbedding | None = None
        self._frames = 0
        self._done = 0
        self._interpolation = "lerp"

    @property
    def in_transition(self) -> bool:
        return self._source is not None

    def cut(self, embedding: TextEmbedding) -> None:
        """Switch immediately (also ends any transition in progress)."""
        self.target, self._source = embedding, None
        self.pooled.copy_(embedding.pooled)
        self.tokens.copy_(embedding.tokens)

    def start_transition(self, embedding: TextEmbedding, frames: int, interpolation: str = "slerp") -> None:
        """Move from the current conditioning to ``embedding`` over ``frames`` generated frames."""
        if frames < 1:
            raise ValueError("a transition needs frames >= 1")
        if interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {INTERPOLATIONS}, got {interpolation!r}")
        self._source = TextEmbedding(pooled=self.pooled.clone(), tokens=self.tokens.clone())
        self.target, self._frames, self._done, self._interpolation = embedding, frames, 0, interpolation

    def advance(self) -> None:
        """Move a transition on by one frame; frame N of N uses the target exactly."""
        if self._source is None:
            return
        self._done += 1
        if self._done >= self._frames:
            self.cut(self.target)
            return
        t = self._done / self._frames
        src, dst = self._source, self.target
        if self._interpolation == "lerp":
            self.pooled.copy_(torch.lerp(src.pooled, dst.pooled, t))
            self.tokens.copy_(torch.lerp(src.tokens, dst.tokens, t))
        else:
            self.pooled.copy_(slerp(src.pooled, dst.pooled, t))
            self.tokens.copy_(slerp(src.tokens, dst.tokens, t))

"""Prompt snapping: run a wording the model never saw as the nearest wording it was trained on.

A small denoiser learns its prompts as points: trained on a few wordings per style, it follows
those wordings and generalises poorly to others, even where the text encoder itself places a new
wording right beside a trained one (all-MiniLM-L6-v2 puts 46 of the 48 held-out paraphrases of
the built-in styles nearest a training wording of their own style). ``PromptSnap`` uses the
encoder's judgement directly: a prompt whose pooled embedding has cosine similarity of at least
``threshold`` with a trained wording is embedded as that wording; anything further away (a look
the model was never taught) is embedded as typed.

Only wordings the model was trained on belong in the table: for the built-in styles that is each
style's canonical prompt and training paraphrases (``builtin_wordings``), never the held-out ones.
"""
from __future__ import annotations

import logging
from typing import Callable, Sequence

import torch

from .text import TextEmbedding

log = logging.getLogger(__name__)

DEFAULT_THRESHOLD = 0.6
"""Cosine similarity of pooled MiniLM embeddings. Held-out paraphrases of the built-in styles reach
0.46-0.92 to their nearest training wording; unrelated looks ("lego bricks", "a marble statue",
"x-ray") stay at 0.33-0.54, so 0.6 snaps most paraphrases and leaves other looks alone."""


def builtin_wordings() -> tuple[str, ...]:
    """Every wording the built-in styles train on: canonical prompts and training paraphrases."""
    from .teachers import TEACHERS

    return tuple(w for teacher in TEACHERS.values() for w in teacher.train_prompts)


class PromptSnap:
    """Maps a prompt to the nearest of ``wordings`` when it is within ``threshold`` (cosine).

    ``embed`` is the text encoder (text -> ``TextEmbedding``); the wordings' embeddings are made on
    first use and kept.
    """

    def __init__(self, wordings: Sequence[str], threshold: float = DEFAULT_THRESHOLD) -> None:
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"a prompt-snap threshold is a cosine similarity in (0, 1], got {threshold}")
        if not wordings:
            raise ValueError("prompt snapping needs at least one trained wording")
        self.wordings = tuple(dict.fromkeys(w.strip() for w in wordings))
        self.threshold = float(threshold)
        self._table: torch.Tensor | None = None  # (W, text_dim) unit rows

    def _unit(self, emb: TextEmbedding) -> torch.Tensor:
        v = emb.pooled.detach().float().reshape(-1).cpu()
        return v / v.norm().clamp_min(1e-12)

    def resolve(self, text: str, embed: Callable[[str], TextEmbedding]) -> tuple[str, float]:
        """(the wording to embed, its similarity to ``text``): ``text`` itself and its best
        similarity when nothing trained is within the threshold."""
        if self._table is None:
            self._table = torch.stack([self._unit(embed(w)) for w in self.wordings])
        sims = self._table @ self._unit(embed(text))
        best = int(sims.argmax())
        sim = float(sims[best])
        if sim >= self.threshold and self.wordings[best] != text.strip():
            log.debug("prompt %r runs as the trained wording %r (similarity %.2f)", text, self.wordings[best], sim)
            return self.wordings[best], sim
        return text, sim

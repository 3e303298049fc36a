"""Where training clips come from, and how a source's random state is saved for exact resume.

A clip source is anything with ``sample(batch_size) -> ClipBatch`` (``morphcam.model.data``):
``SyntheticClips`` for ``data = "synthetic"``, else ``PairedClipFolder`` over the folder.
Sources keep their own random generators; ``source_state`` / ``restore_source`` capture them
(through the source's ``state_dict`` when it has one, else through every torch or numpy
generator among its attributes) so a resumed run draws the very batches it would have drawn.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from .config import TrainConfig


class ClipSource(Protocol):
    def sample(self, batch_size: int) -> Any:
        """A ClipBatch: inputs, targets (B, T, 3, H, W) in [-1, 1], prompts (B strings)."""
        ...


def make_source(config: TrainConfig, split: str, rank: int, device: torch.device | str) -> ClipSource:
    """The configured clip source for ``split`` ("train" or "eval"), seeded per rank."""
    from ..data import ClipSpec

    spec = ClipSpec(frames=config.frames, width=config.width, height=config.height, fps=config.fps)
    # Different ranks and splits must not draw the same clips.
    seed = config.seed * 1_000_003 + rank * 2 + (split == "eval")
    if config.data == "synthetic":
        from ..data import SyntheticClips

        mix = {"still_prob": config.still_prob, "style_weights": config.style_weights} if split == "train" else {}
        return SyntheticClips(spec, split=split, seed=seed, device=device, **mix)
    if not Path(config.data).is_dir():
        raise FileNotFoundError(f'--data {config.data}: no such folder; pass "synthetic" or a folder of paired clips')
    try:
        from ..data import PairedClipFolder
    except ImportError:
        raise ValueError("this morphcam cannot read paired-clip folders yet: train with --data synthetic") from None
    # A user's folder has no held-out split: eval draws its own (seeded) clips from it.
    return PairedClipFolder(config.data, spec, device=device, seed=seed)


def make_train_source(config: TrainConfig, rank: int, device: torch.device | str) -> ClipSource:
    """The training source: the configured one, behind a ``ClipPool`` when ``pool_size`` > 0."""
    source = make_source(config, "train", rank, device)
    if config.pool_size:
        from .pool import ClipPool

        return ClipPool(source, config.pool_size, config.pool_refresh, seed=config.seed * 7919 + rank, device=device)
    return source


def _generators(source: object) -> dict[str, Any]:
    return {
        name: value
        for name, value in sorted(vars(source).items())
        if isinstance(value, (torch.Generator, np.random.Generator))
    }


def source_state(source: object) -> dict[str, Any]:
    """Everything random about ``source`` as tensors and plain values (safe for weights_only loads)."""
    if hasattr(source, "state_dict"):
        return {"state_dict": source.state_dict()}
    out: dict[str, Any] = {}
    for name, gen in _generators(source).items():
        out[name] = gen.get_state() if isinstance(gen, torch.Generator) else gen.bit_generator.state
    return {"generators": out}


def restore_source(source: object, state: dict[str, Any]) -> None:
    """Undo ``source_state``: put the generators back where they were."""
    if "state_dict" in state:
        source.load_state_dict(state["state_dict"])
        return
    gens = _generators(source)
    for name, saved in state.get("generators", {}).items():
        if name not in gens:
            raise ValueError(f"the saved data-source state names a generator {name!r} the source does not have")
        gen = gens[name]
        if isinstance(gen, torch.Generator):
            gen.set_state(saved)
        else:
            gen.bit_generator.state = saved

"""Files a run writes: the resumable training state and the exported model, both atomically.

``train_state.pt`` (torch.save, loadable with ``weights_only=True``) holds everything a resumed
run needs to continue exactly: model, EMA, optimizer and scheduler states, the step, the RNG
states of torch and of every rank's data source, and the config. ``model.safetensors`` is the
EMA model in the generator's own checkpoint format (``save_checkpoint``), float16 for shipping,
so ``morphcam serve --checkpoint`` loads it. A write goes to a temporary file in the same
folder and is renamed into place, so a run killed mid-write leaves the previous file intact.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from ..checkpoint import CHECKPOINT_FILENAME, load_checkpoint, read_checkpoint, save_checkpoint
from ..config import ModelConfig
from ..network import RestyleModel

STATE_FILENAME = "train_state.pt"
LOG_FILENAME = "log.jsonl"
BEST_FILENAME = "best.safetensors"  # the EMA export at the lowest held-out loss of a run


def _replace_atomically(tmp: Path, path: Path) -> None:
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())  # the bytes reach the disk before the name points at them
    os.replace(tmp, path)


def save_state(state: dict[str, Any], out_dir: str | Path) -> Path:
    path = Path(out_dir) / STATE_FILENAME
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    _replace_atomically(tmp, path)
    return path


def load_state(out_dir: str | Path) -> dict[str, Any] | None:
    """The saved training state of ``out_dir`` (on the CPU), or None if it has none.

    It stays on the CPU: RNG states must, and ``load_state_dict`` copies weights and optimizer
    moments onto the device of the parameters they belong to."""
    path = Path(out_dir) / STATE_FILENAME
    if not path.is_file():
        return None
    return torch.load(path, map_location="cpu", weights_only=True)


def export_model(
    model: RestyleModel, out_dir: str | Path, dtype: torch.dtype = torch.float16, name: str = CHECKPOINT_FILENAME
) -> Path:
    """Write ``model`` as ``out_dir/name`` (default ``model.safetensors``) in the generator's checkpoint format."""
    path = Path(out_dir) / name
    tmp = save_checkpoint(model, path.with_name(path.stem + ".tmp.safetensors"), dtype=dtype)
    _replace_atomically(tmp, path)
    return path


# Fields that steer sampling only: a checkpoint fits a model that differs from it in these.
SAMPLER_FIELDS = frozenset({"name", "sigmas", "default_strength", "cache_refresh"})


def _state_path(source: str | Path) -> Path | None:
    """The training state ``source`` names (a run folder's or a .pt file), or None."""
    path = Path(source)
    state_path = path / STATE_FILENAME if path.is_dir() else path
    return state_path if state_path.suffix == ".pt" and state_path.is_file() else None


def init_model_config(source: str | Path) -> ModelConfig:
    """The model config held by a run folder, a training state or an exported checkpoint."""
    state_path = _state_path(source)
    if state_path is not None:
        from .config import TrainConfig

        state = torch.load(state_path, map_location="cpu", weights_only=True)
        return TrainConfig.from_json(state["config"]).model
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(f"--init {source}: no such run folder or checkpoint")
    config, _ = read_checkpoint(path / CHECKPOINT_FILENAME if path.is_dir() else path)
    return config


def load_init_model(source: str | Path) -> RestyleModel:
    """A float32 model with the config and weights (the EMA ones of a training state) of ``source``."""
    model = RestyleModel(init_model_config(source))
    init_weights(model, source)
    return model


def init_weights(model: RestyleModel, source: str | Path) -> None:
    """Load weights into ``model`` from an exported checkpoint (file or run folder) or a training
    state (its EMA weights). The source's model config must match ``model``'s."""
    path = Path(source)
    state_path = path / STATE_FILENAME if path.is_dir() else path
    if state_path.suffix == ".pt" and state_path.is_file():
        from .config import TrainConfig

        state = torch.load(state_path, map_location="cpu", weights_only=True)
        _check_same(TrainConfig.from_json(state["config"]).model, model.config, source)
        model.load_state_dict(state["ema"])
        return
    config, _ = read_checkpoint(path / CHECKPOINT_FILENAME if path.is_dir() else path)
    _check_same(config, model.config, source)
    loaded = load_checkpoint(source, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())


def _check_same(found: ModelConfig, wanted: ModelConfig, source: str | Path) -> None:
    if found != wanted:
        diff = [k for k in found.__dataclass_fields__
                if getattr(found, k) != getattr(wanted, k) and k not in SAMPLER_FIELDS]
        if diff:
            raise ValueError(
                f"--init {source} holds a {found.name!r} model that differs from the {wanted.name!r} being trained "
                f"in {diff}: pass the same --preset (and --ae-skip, if it had one) it was trained with"
            )

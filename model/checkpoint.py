"""Checkpoints: safetensors files with the ModelConfig embedded in their metadata.

A checkpoint source is a local ``.safetensors`` file, a local folder holding
``model.safetensors``, or a Hugging Face repo id (``org/name`` or ``org/name@revision``)
resolved through ``huggingface_hub`` from the local cache only: nothing is ever downloaded at
run time. Without a checkpoint, ``load_model`` uses the default weights shipped in
``model/weights/<preset>.safetensors`` and falls back to random weights (with a warning) when
that file is absent.
"""
from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import torch

from .config import ModelConfig
from .network import RestyleModel

log = logging.getLogger(__name__)

CHECKPOINT_FILENAME = "model.safetensors"
CONFIG_KEY = "morphcam.config"
FORMAT_KEY = "morphcam.format"
FORMAT_VERSION = "1"
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+(@[\w./-]+)?$")


class CheckpointError(ValueError):
    """A checkpoint exists but cannot be used (corrupt, truncated, or not matching its config)."""


def default_checkpoint_path(preset: str) -> Path:
    """Where the shipped default weights of ``preset`` live (may not exist)."""
    return Path(__file__).resolve().parent / "weights" / f"{preset}.safetensors"


def save_checkpoint(model: RestyleModel, path: str | Path, dtype: torch.dtype | None = None) -> Path:
    """Write ``model``'s weights (optionally cast, e.g. to float16 for shipping) with its config."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {
        k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).detach().cpu().contiguous()
        for k, v in model.state_dict().items()
    }
    save_file(tensors, str(path), metadata={CONFIG_KEY: model.config.to_json(), FORMAT_KEY: FORMAT_VERSION})
    return path


def resolve_checkpoint(source: str | Path, cache_dir: str | Path | None = None) -> Path:
    """Local path of a checkpoint given as a file, a folder, or a Hugging Face repo id (offline).

    ``cache_dir`` defaults to ``$HF_HUB_CACHE`` as set when called (else the library default).
    """
    path = Path(source).expanduser()
    if path.is_dir():
        path = path / CHECKPOINT_FILENAME
        if not path.is_file():
            raise FileNotFoundError(
                f"checkpoint folder {source} has no {CHECKPOINT_FILENAME}: point at the .safetensors file"
            )
        return path
    if path.is_file():
        return path
    text = str(source)
    if _REPO_ID.match(text) and not text.endswith(".safetensors"):
        return _from_hub_cache(text, cache_dir)
    raise FileNotFoundError(
        f"checkpoint {source} not found: pass an existing .safetensors file, a folder, or a repo id org/name"
    )


def _from_hub_cache(repo: str, cache_dir: str | Path | None) -> Path:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    repo_id, _, revision = repo.partition("@")
    cache_dir = cache_dir or os.environ.get("HF_HUB_CACHE") or None
    try:
        # local_files_only: a running daemon never downloads; the cache is filled ahead of time.
        return Path(
            hf_hub_download(
                repo_id, CHECKPOINT_FILENAME, revision=revision or None, cache_dir=cache_dir, local_files_only=True
            )
        )
    except LocalEntryNotFoundError as e:
        raise FileNotFoundError(
            f"{repo_id}{'@' + revision if revision else ''} is not in the local Hugging Face cache"
            f"{' ' + str(cache_dir) if cache_dir else ''}: fetch it first with "
            f"`huggingface-cli download {repo_id} {CHECKPOINT_FILENAME}`, or pass a local path"
        ) from e


def read_checkpoint(path: str | Path) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    """Config and tensors of a checkpoint file; CheckpointError if truncated or not ours."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} not found")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises its own error types for every kind of damage
        raise CheckpointError(
            f"checkpoint {path} is truncated or not a safetensors file ({e}): re-download or re-export it"
        ) from e
    if CONFIG_KEY not in metadata:
        raise CheckpointError(
            f"checkpoint {path} has no embedded morphcam config: save it with morphcam.model.checkpoint.save_checkpoint"
        )
    try:
        config = ModelConfig.from_json(metadata[CONFIG_KEY])
    except (ValueError, TypeError) as e:
        raise CheckpointError(f"checkpoint {path} has an unusable config: {e}") from e
    return config, tensors


def load_checkpoint(
    source: str | Path,
    config: ModelConfig | None = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    cache_dir: str | Path | None = None,
) -> RestyleModel:
    """A ``RestyleModel`` from a checkpoint. ``config`` (default: the embedded one) must match the
    tensors' shapes, else CheckpointError names the mismatching tensors."""
    path = resolve_checkpoint(source, cache_dir)
    embedded, tensors = read_checkpoint(path)
    config = config or embedded
    model = RestyleModel(config)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    wrong = [
        f"{k}: file {tuple(tensors[k].shape)} vs config {tuple(v.shape)}"
        for k, v in expected.items()
        if k in tensors and tensors[k].shape != v.shape
    ]
    if missing or unexpected or wrong:
        details = "; ".join(
            part
            for part in (
                f"missing {missing[:5]}" if missing else "",
                f"unexpected {unexpected[:5]}" if unexpected else "",
                f"shape mismatch {wrong[:5]}" if wrong else "",
            )
            if part
        )
        raise CheckpointError(
            f"checkpoint {path} does not fit config {config.name!r} ({details}): load it with the config it "
            f"was saved with (omit the preset override) or retrain"
        )
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in tensors.items()})
    return model.to(device=device, dtype=dtype).eval()


def load_model(
    preset: str = "tiny",
    checkpoint: str | Path | None = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> RestyleModel:
    """The model the daemon serves: ``checkpoint`` if given (its embedded config wins), else the
    shipped default weights of ``preset``, else random weights with a warning."""
    if checkpoint is not None:
        model = load_checkpoint(checkpoint, device=device, dtype=dtype)
        if model.config.name != preset:
            log.info("checkpoint %s holds a %r model; preset %r ignored", checkpoint, model.config.name, preset)
        return model
    config = ModelConfig.from_name(preset)
    default = default_checkpoint_path(preset)
    if default.is_file():
        return load_checkpoint(default, device=device, dtype=dtype)
    log.warning(
        "no trained weights for preset %r (expected %s): using random weights, so the output is not a "
        "style yet; pass a checkpoint to load trained weights",
        preset,
        default.name,
    )
    return RestyleModel(config).to(device=device, dtype=dtype).eval()

"""Checkpoints: round trips through a file, a folder and an offline HF cache; clear errors."""
from __future__ import annotations

import dataclasses
import logging

import pytest
import torch

from morphcam.model import checkpoint as ckpt
from morphcam.model.checkpoint import CheckpointError, load_checkpoint, load_model, save_checkpoint

from .conftest import randomized, small_config


@pytest.fixture()
def saved(tmp_path):
    model = randomized(small_config())
    path = save_checkpoint(model, tmp_path / "model.safetensors")
    return model, path


def _same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_round_trip_file_and_folder(saved):
    model, path = saved
    for source in (path, path.parent, str(path)):
        loaded = load_checkpoint(source)
        assert loaded.config == model.config
        assert _same_weights(loaded, model)


def test_float16_export_loads_as_float32(tmp_path):
    model = randomized(small_config())
    path = save_checkpoint(model, tmp_path / "half.safetensors", dtype=torch.float16)
    loaded = load_checkpoint(path)
    assert next(loaded.parameters()).dtype == torch.float32
    w = model.state_dict()["dit.patch_in.weight"]
    torch.testing.assert_close(loaded.state_dict()["dit.patch_in.weight"], w, rtol=1e-3, atol=1e-3)


def test_offline_hub_cache(saved, tmp_path, monkeypatch):
    model, path = saved
    cache = tmp_path / "hub"
    repo = cache / "models--someorg--morphcam-test"
    rev = "0123456789abcdef0123456789abcdef01234567"
    snap = repo / "snapshots" / rev
    snap.mkdir(parents=True)
    (snap / "model.safetensors").write_bytes(path.read_bytes())
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(rev)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert _same_weights(load_checkpoint("someorg/morphcam-test"), model)
    assert _same_weights(load_checkpoint(f"someorg/morphcam-test@{rev}"), model)
    with pytest.raises(FileNotFoundError, match="not in the local Hugging Face cache"):
        load_checkpoint("someorg/absent-model")


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        load_checkpoint(tmp_path / "nope.safetensors")
    with pytest.raises(FileNotFoundError, match="has no model.safetensors"):
        load_checkpoint(tmp_path)


@pytest.mark.parametrize("keep", [0.5, 0.999, 20])
def test_truncated_file(saved, tmp_path, keep):
    _, path = saved
    data = path.read_bytes()
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(data[: int(len(data) * keep)] if keep < 1 else data[:keep])
    with pytest.raises(CheckpointError, match="truncated"):
        load_checkpoint(bad)


def test_shapes_that_do_not_match_the_config(saved):
    _, path = saved
    other = dataclasses.replace(small_config(), dim=64)
    with pytest.raises(CheckpointError, match="shape mismatch.*does not fit|does not fit.*shape mismatch"):
        load_checkpoint(path, config=other)


def test_file_without_config(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(path))
    with pytest.raises(CheckpointError, match="no embedded morphcam config"):
        load_checkpoint(path)


def test_default_weights_fall_back_to_random_with_warning(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(ckpt, "default_checkpoint_path", lambda preset: tmp_path / f"{preset}.safetensors")
    with caplog.at_level(logging.WARNING, logger="morphcam.model.checkpoint"):
        model = load_model("tiny")
    assert model.config.name == "tiny"
    assert "random weights" in caplog.text
    # Once the file exists, it is what loads.
    small = randomized(small_config(name="tiny"))
    save_checkpoint(small, tmp_path / "tiny.safetensors")
    assert _same_weights(load_model("tiny"), small)

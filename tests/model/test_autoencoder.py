"""The frame autoencoder's optional skip paths: wiring, checkpoints, and the training flag."""
from __future__ import annotations

import dataclasses
import json

import torch
import torch.nn.functional as F

from morphcam.daemon.cli import main as morphcam
from morphcam.model.autoencoder import FrameAutoencoder
from morphcam.model.checkpoint import load_model, read_checkpoint, save_checkpoint
from morphcam.model.config import ModelConfig
from morphcam.model.network import RestyleModel

from .test_train_support import tiny_model


def _frames(seed: int = 0) -> torch.Tensor:
    return torch.rand(2, 3, 32, 48, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_skip_paths_carry_cell_averages_in_and_a_bilinear_upsampling_out():
    """With the convolutions' last layers zeroed and the skips set to copy the three colours,
    the autoencoder is exactly an 8x average followed by a bilinear upsampling."""
    cfg = dataclasses.replace(tiny_model(), ae_skip=True)
    ae = FrameAutoencoder(cfg)
    c = cfg.latent_channels
    with torch.no_grad():
        for last in (ae.encoder[-1], ae.decoder[-1]):
            last.weight.zero_()
            last.bias.zero_()
        ae.skip_in.weight.zero_()
        ae.skip_in.bias.zero_()
        ae.skip_out.weight.zero_()
        ae.skip_out.bias.zero_()
        for i in range(3):
            ae.skip_in.weight[i, i] = 1.0
            ae.skip_out.weight[i, i] = 1.0
    x = _frames()
    z = ae.encode(x)
    assert z.shape == (2, c, 4, 6)
    torch.testing.assert_close(z[:, :3], F.avg_pool2d(x, 8))
    want = F.interpolate(F.avg_pool2d(x, 8), scale_factor=8, mode="bilinear", align_corners=False)
    torch.testing.assert_close(ae.reconstruct(z), want)
    torch.testing.assert_close(ae.decode(z), want.clamp(-1, 1))
    # The skips are real paths: changing them changes the output.
    with torch.no_grad():
        ae.skip_out.weight[0, 0] = 0.5
    assert not torch.allclose(ae.reconstruct(z), want)


def test_without_the_option_nothing_changes():
    cfg = tiny_model()
    ae = FrameAutoencoder(cfg)
    assert ae.skip_in is None and ae.skip_out is None
    assert not any("skip" in name for name, _ in ae.named_parameters())
    assert "ae_skip" not in json.loads(cfg.to_json())  # configs without it stay readable by older releases
    skip = dataclasses.replace(cfg, ae_skip=True)
    assert json.loads(skip.to_json())["ae_skip"] is True
    assert ModelConfig.from_json(skip.to_json()) == skip and ModelConfig.from_json(cfg.to_json()) == cfg


def test_a_checkpoint_with_skip_paths_loads_with_them(tmp_path):
    cfg = dataclasses.replace(tiny_model(), ae_skip=True)
    torch.manual_seed(0)
    model = RestyleModel(cfg).eval()
    path = save_checkpoint(model, tmp_path / "skip.safetensors")
    config, tensors = read_checkpoint(path)
    assert config.ae_skip and "autoencoder.skip_in.weight" in tensors
    loaded = load_model(cfg.name, path)
    x = _frames(1)
    with torch.no_grad():
        torch.testing.assert_close(loaded.autoencoder.decode(loaded.autoencoder.encode(x)),
                                   model.autoencoder.decode(model.autoencoder.encode(x)))


def test_training_flag_shapes_both_stages_and_a_mismatch_is_named(tmp_path, capsys):
    ae, dn = tmp_path / "ae", tmp_path / "dn"
    common = ["--preset", "tiny", "--steps", "1", "--batch", "1", "--frames", "2", "--size", "64x48",
              "--device", "cpu", "--eval-batches", "0", "--log-interval", "1", "--quiet"]
    assert morphcam(["train", "autoencoder", "--ae-skip", "--out", str(ae), *common]) == 0
    assert read_checkpoint(ae / "model.safetensors")[0].ae_skip
    assert morphcam(["train", "denoiser", "--init", str(ae), "--out", str(dn), *common]) == 2
    assert "--ae-skip" in capsys.readouterr().err
    assert morphcam(["train", "denoiser", "--ae-skip", "--init", str(ae), "--out", str(dn), *common]) == 0
    assert read_checkpoint(dn / "model.safetensors")[0].ae_skip
    assert morphcam(["train", "shortcut", "--ae-skip", "--init", str(dn), "--out", str(tmp_path / "sc"), *common]) == 2
    assert "takes its model from --init" in capsys.readouterr().err

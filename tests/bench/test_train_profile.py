"""bench/train_profile.py on a CPU: a tiny denoiser run with a latent pool profiles, and its report
has every category with shares that add up to one."""
from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import pytest

from morphcam.daemon.sample import facecam_frame
from morphcam.model.config import ModelConfig
from morphcam.model.teachers.preview import write_png

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from train_profile import CATEGORIES, classify, main  # noqa: E402


def test_cpu_smoke_run_reports_every_category(tmp_path, capsys, monkeypatch):
    # The tiny preset narrowed (same structure): the flags name a preset, the test wants it small.
    preset = ModelConfig.from_name

    def narrow(name, **overrides):
        return dataclasses.replace(preset(name, **overrides), ae_channels=(8, 16, 16), ae_decoder_channels=(16, 8, 8),
                                   latent_channels=4, dim=32, n_layers=2, n_heads=2, ffn_dim=64)

    monkeypatch.setattr(ModelConfig, "from_name", staticmethod(narrow))
    # A one-prompt folder of paired frames: no photos to load, one prompt to embed.
    look = tmp_path / "clips" / "negative"
    for role in ("input", "target"):
        (look / role).mkdir(parents=True)
        for i in range(4):
            frame = facecam_frame(i / 30, 64, 32)
            write_png(str(look / role / f"{i:03d}.png"), frame if role == "input" else 255 - frame)
    (look / "prompt.txt").write_text("a photo negative\n")
    out = tmp_path / "profile.json"
    assert main(["denoiser", "--data", str(tmp_path / "clips"), "--device", "cpu", "--size", "64x32", "--batch", "2",
                 "--frames", "2", "--pool", "4", "--pool-refresh", "2", "--pool-latents", "--warmup-steps", "1",
                 "--profile-steps", "2", "--quiet", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert tuple(report["categories"]) == CATEGORIES
    assert sum(c["share"] for c in report["categories"].values()) == pytest.approx(1.0, abs=1e-6)
    # The tiny step's time is mostly the DiT's and the optimizer's; a latent pool is encoded as clips come in.
    for cat in ("dit_gemm", "attention", "optimizer_ema", "clip_making", "autoencoder"):
        assert report["categories"][cat]["s_per_step"] > 0, cat
    assert 0 < report["data_s_per_step"] < report["s_per_step"]
    assert report["gpu_busy"] is None and report["time_kind"] == "op self CPU"
    assert 1 <= len(report["top"]) <= 15 and report["pool_bytes"]["frames"] == 0
    assert report["pool_bytes"]["latents"] > 0 and "s/step" in capsys.readouterr().out


def test_classify_reads_scopes_before_op_names():
    assert classify(["aten::mm", "aten::linear"]) == "dit_gemm"
    assert classify(["aten::mm", "aten::linear", "morphcam.autoencoder"]) == "autoencoder"
    assert classify(["aten::lerp_", "aten::_foreach_lerp_"]) == "optimizer_ema"
    assert classify(["aten::bmm", "aten::scaled_dot_product_attention"]) == "attention"
    assert classify(["aten::copy_", "aten::to", "morphcam.batch_draw"]) == "clip_making"
    assert classify(["aten::copy_"], kernel="Memcpy HtoD (Pageable -> Device)") == "other"
    assert classify(["aten::normal_"]) == "other"
    assert classify(["aten::native_layer_norm"]) == "elementwise_norm"
    # GPU kernels: Triton glue in a no-grad DiT forward belongs to no aten op, only to the scope.
    assert classify(["morphcam.dit"], kernel="_layer_norm_modulate_kernel") == "elementwise_norm"
    assert classify(["morphcam.dit"], kernel="_attention_fwd_kernel") == "attention"
    assert classify(["aten::addmm", "aten::linear", "morphcam.dit"], kernel="nvjet_tst_128x64_64x8") == "dit_gemm"

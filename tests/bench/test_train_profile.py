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
from train_profile import CATEGORIES, classify, main, timed_items  # noqa: E402


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
    # Host time by scope: the batch draw (which encodes the new clips: the autoencoder inside it)
    # takes host time, within the profiled step; no sync report without a GPU.
    host = report["host_s_per_step"]
    assert set(host) == {"batch_draw", "dit_eager_forwards", "autoencoder"}
    assert 0 < host["batch_draw"] < report["profiled_s_per_step"] and host["autoencoder"] > 0
    assert report["sync_sites_per_step"] is None


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


def test_scope_ranges_on_the_device_timeline_are_not_counted_as_device_time():
    """The profiler puts each record_function range on the GPU timeline too, spanning its kernels;
    counting those as device work once made the busy share exceed 100%."""
    from types import SimpleNamespace

    from torch.autograd import DeviceType

    def device_event(us, annotation=False):
        return SimpleNamespace(device_type=DeviceType.CUDA, is_user_annotation=annotation,
                               time_range=SimpleNamespace(elapsed_us=lambda: us))

    kernel = SimpleNamespace(name="nvjet_tst_128x64_64x8", duration=30.0)
    op = SimpleNamespace(device_type=DeviceType.CPU, kernels=[kernel], name="aten::mm", cpu_parent=None)
    events = [op, device_event(30.0), device_event(10.0), device_event(40.0, annotation=True)]
    items, total = timed_items(events, on_gpu=True)
    assert total == 40.0  # the two kernels, not the 40 us scope around them
    assert items == [("nvjet_tst_128x64_64x8", "dit_gemm", 30.0), ("(device time no op claims)", "other", 10.0)]

"""The training loop: exact resume, clear config errors, and `morphcam train` end to end."""
from __future__ import annotations

import dataclasses
import json
import os

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from morphcam.daemon.cli import main as morphcam
from morphcam.model.train import TrainConfig, Trainer
from morphcam.model.train.state import STATE_FILENAME

from .test_train_support import FacecamClips, tiny_model, train_config


def _trainer(cfg, text_encoder):
    return Trainer(cfg, source=FacecamClips(frames=cfg.frames, seed=cfg.seed),
                   eval_source=FacecamClips(frames=cfg.frames, seed=99), text_encoder=text_encoder)


def test_resume_continues_exactly(tmp_path, text_encoder):
    """N steps straight == N/2 steps, stop, resume for N/2 (model, EMA and optimizer alike)."""
    history = dataclasses.replace(TrainConfig().history, prob=1.0, kind_weights=(1.0, 1.0, 2.0))
    base = dict(stage="denoiser", steps=4, frames=3, history=history)
    straight = _trainer(train_config(tmp_path / "a", **base), text_encoder)
    straight.train()
    first = _trainer(train_config(tmp_path / "b", **base), text_encoder)
    first.train(stop_at=2)
    assert first.step == 2
    resumed = _trainer(train_config(tmp_path / "b", resume=True, **base), text_encoder)
    assert resumed.step == 2
    resumed.train()
    for name, ref in straight.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[name], ref), name
    for name, ref in straight.ema.state_dict().items():
        assert torch.equal(resumed.ema.state_dict()[name], ref), name
    logs = [json.loads(line) for line in (tmp_path / "b" / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logs if r["event"] == "train"] == [2, 4]
    assert {"loss", "lr", "s_per_step", "frames_per_s"} <= set(logs[0]) and len(logs[0]["frame_mse"]) == 3
    assert all(0 < r["data_s_per_step"] < r["s_per_step"] for r in logs if r["event"] == "train")


def test_existing_run_needs_resume_and_same_settings(tmp_path, text_encoder):
    cfg = train_config(tmp_path, stage="autoencoder", steps=1, eval_batches=0)
    _trainer(cfg, text_encoder).train()
    with pytest.raises(ValueError, match="--resume"):
        _trainer(cfg, text_encoder)
    changed = dataclasses.replace(cfg, resume=True, lr=1e-2)
    with pytest.raises(ValueError, match=r"\['lr'\]"):
        _trainer(changed, text_encoder)


@pytest.mark.parametrize(
    "overrides,message",
    [
        (dict(stage="diffusion"), "stage must be one of"),
        (dict(steps=0), "steps must be a positive integer"),
        (dict(lr=-1.0), "lr must be > 0"),
        (dict(width=100), "multiples of 16"),
        (dict(precision="fp8"), "precision must be one of"),
        (dict(noise_sampling="beta"), "noise_sampling must be one of"),
        (dict(ema_decay=1.0), r"ema_decay must be in \[0, 1\)"),
        (dict(stage="denoiser", frames=1), "at least 2 frames"),
        (dict(still_prob=-0.1), r"still_prob must be in \[0, 1\]"),
        (dict(style_weights={"cubism": 2.0}), "unknown styles"),
        (dict(style_weights={"comic": -2.0}), "numbers >= 0"),
        (dict(data="clips_folder", still_prob=0.2), "shape the synthetic clips"),
    ],
)
def test_bad_config_values_are_named(tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        train_config(tmp_path, **overrides)


def test_bad_history_settings_are_named(tmp_path):
    with pytest.raises(ValueError, match="rollout_steps must be 1 or 2"):
        train_config(tmp_path, history=dataclasses.replace(TrainConfig().history, rollout_steps=3))


def test_config_round_trips_through_json(tmp_path):
    cfg = train_config(tmp_path, stage="denoiser", model=tiny_model(sink_frames=2, window_frames=2))
    assert TrainConfig.from_json(cfg.to_json()) == cfg


def test_cli_reports_bad_flags(tmp_path, capsys):
    assert morphcam(["train", "denoiser", "--steps", "0", "--out", str(tmp_path)]) == 2
    assert "steps must be a positive integer" in capsys.readouterr().err
    assert morphcam(["train", "denoiser", "--style-weight", "oil painting", "--out", str(tmp_path)]) == 2
    assert "write STYLE=WEIGHT" in capsys.readouterr().err


def test_cli_mix_flags_reach_the_training_clips_only(tmp_path):
    import argparse

    from morphcam.model.train.cli import add_arguments, config_from_args
    from morphcam.model.train.sources import make_source

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["denoiser", "--init", "x", "--still-prob", "0.25", "--style-weight", "oil painting=2",
                              "--style-weight", "comic = 3", "--size", "64x48", "--out", str(tmp_path)])
    cfg = config_from_args(args)
    assert cfg.still_prob == 0.25 and cfg.style_weights == {"oil painting": 2.0, "comic": 3.0}
    assert TrainConfig.from_json(cfg.to_json()) == cfg
    train, evals = make_source(cfg, "train", 0, "cpu"), make_source(cfg, "eval", 0, "cpu")
    assert train.still_prob == 0.25 and train._style_p is not None
    assert evals.still_prob == 0.0 and evals._style_p is None  # eval losses stay comparable across runs


def test_cli_trains_a_checkpoint_the_daemon_serves(tmp_path):
    from morphcam.daemon.generator_pipeline import GeneratorPipeline
    from morphcam.daemon.sample import facecam_frame

    ae, dn = tmp_path / "ae", tmp_path / "dn"
    common = ["--preset", "tiny", "--steps", "2", "--batch", "1", "--frames", "2", "--size", "64x48",
              "--device", "cpu", "--eval-batches", "1", "--eval-interval", "2", "--log-interval", "1", "--quiet"]
    no_eval = ["--eval-batches", "0"]
    assert morphcam(["train", "autoencoder", "--out", str(ae), *common, *no_eval]) == 0
    assert morphcam(["train", "denoiser", "--init", str(ae), "--out", str(dn), *common]) == 0
    ckpt = dn / "model.safetensors"
    assert (dn / STATE_FILENAME).is_file() and ckpt.stat().st_size <= 25 * 2**20
    records = [json.loads(line) for line in (dn / "log.jsonl").read_text().splitlines()]
    assert [r["event"] for r in records] == ["train", "train", "eval", "done"]
    assert records[2]["eval_loss"] > 0 and records[2]["eval_loss_sampler"] > 0
    # The denoiser run started from the autoencoder run's weights and kept them frozen.
    from morphcam.model.checkpoint import read_checkpoint

    _, a = read_checkpoint(ae / "model.safetensors")
    _, d = read_checkpoint(ckpt)
    assert all(torch.equal(a[k], d[k]) for k in a if k.startswith("autoencoder."))
    assert not all(torch.equal(a[k], d[k]) for k in a if k.startswith("dit."))

    pipeline = GeneratorPipeline.load(checkpoint=str(ckpt), device="cpu")
    from morphcam.daemon.pipeline import PromptChange, SessionParams

    pipeline.open_session("s", SessionParams(64, 48, PromptChange.single("comic"), seed=1))
    out = pipeline.step([("s", facecam_frame(0.0, 64, 48))])[0]
    assert not isinstance(out, Exception) and out.shape == (48, 64, 3)
    # A second invocation continues the run instead of starting over.
    assert morphcam(["train", "denoiser", "--init", str(ae), "--out", str(dn), "--resume", *common[:2],
                     "--steps", "3", *common[4:], *no_eval]) == 0
    assert json.loads((dn / "log.jsonl").read_text().splitlines()[-1])["step"] == 3
    assert os.listdir(dn) and not any(name.endswith(".tmp") for name in os.listdir(dn))


def test_cli_names_a_missing_data_folder(tmp_path, capsys):
    missing = tmp_path / "no-such-clips"
    assert morphcam(["train", "autoencoder", "--data", str(missing), "--out", str(tmp_path / "o"), "--device", "cpu",
                     "--size", "64x48", "--quiet"]) == 2
    assert "no such folder" in capsys.readouterr().err


def test_cli_trains_on_a_folder_of_ones_own_paired_clips(tmp_path):
    """The same command trains on a user's folder: real videos written with PyAV, a prompt file."""
    from morphcam.daemon.sample import facecam_frame
    from morphcam.daemon.video import VideoWriter

    example = tmp_path / "clips" / "my-look"
    example.mkdir(parents=True)
    with VideoWriter(example / "input.mp4", 64, 48, 30) as src, VideoWriter(example / "target.mp4", 64, 48, 30) as dst:
        for i in range(6):
            frame = facecam_frame(i / 30, 64, 48)
            src.write(frame)
            dst.write(255 - frame)  # the look to learn: a negative
    (example / "prompt.txt").write_text("a photo negative\ninverted colours\n")
    out = tmp_path / "ae"
    assert morphcam(["train", "autoencoder", "--data", str(tmp_path / "clips"), "--out", str(out), "--preset", "tiny",
                     "--steps", "2", "--batch", "1", "--frames", "2", "--size", "64x48", "--device", "cpu",
                     "--eval-batches", "0", "--log-interval", "1", "--quiet"]) == 0
    events = [json.loads(line)["event"] for line in (out / "log.jsonl").read_text().splitlines()]
    assert events[:2] == ["train", "train"] and (out / "model.safetensors").is_file()


def test_the_sampler_level_eval_moves_only_the_noise_levels(tmp_path, text_encoder):
    """With every training frame already at the sampler's levels the two evals are the same
    number; with none, the sampler-level eval differs (it draws other levels)."""
    at_levels = _trainer(train_config(tmp_path / "a", stage="denoiser", steps=1, frames=3, sampler_prob=1.0), text_encoder)
    assert at_levels.evaluate_sampler_levels() == at_levels.evaluate()
    mixed = _trainer(train_config(tmp_path / "b", stage="denoiser", steps=1, frames=3, sampler_prob=0.0), text_encoder)
    assert mixed.evaluate_sampler_levels() != mixed.evaluate()


@pytest.mark.parametrize("lr", [5e-3, 0.5])  # held-out loss falling throughout; rising after a while
def test_the_best_held_out_export_is_kept_across_a_resume(tmp_path, text_encoder, lr):
    """``best.safetensors`` is the EMA export at the lowest eval loss: each eval that beats every
    earlier one (before and after a resume) is flagged and re-exported, no other."""
    base = dict(stage="denoiser", steps=6, frames=3, eval_interval=1, lr=lr, ema_decay=0.0)
    first = _trainer(train_config(tmp_path, **base), text_encoder)
    first.train(stop_at=2)
    resumed = _trainer(train_config(tmp_path, resume=True, **base), text_encoder)
    assert resumed.best_eval == first.best_eval < float("inf")
    resumed.train()
    run = tmp_path / "run"
    evals = [r for r in map(json.loads, (run / "log.jsonl").read_text().splitlines()) if r["event"] == "eval"]
    assert [r["step"] for r in evals] == [1, 2, 3, 4, 5, 6]
    best = float("inf")
    for r in evals:
        assert r.get("best", False) == (r["eval_loss"] < best), r
        best = min(best, r["eval_loss"])
    assert resumed.best_eval == best
    assert all(r.get("best") for r in evals) == (lr < 0.1)  # the large rate overshoots: some evals lose
    last_is_best = evals[-1].get("best", False)
    best_w, last_w = load_file(run / "best.safetensors"), load_file(run / "model.safetensors")
    # (the files' bytes may differ where they hold the same: the metadata's key order is not fixed)
    assert all(torch.equal(best_w[k], last_w[k]) for k in last_w) == last_is_best
    with safe_open(run / "best.safetensors", "pt") as f:
        assert json.loads(f.metadata()["morphcam.config"])["name"] == "test"
    assert not list(run.glob("*.tmp.safetensors"))

"""A clip pool that keeps latents (``pool_latents``): the same steps without the encoder, resume,
the pool's memory in the log, and the settings it refuses."""
from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch

from morphcam.daemon.cli import main as morphcam
from morphcam.model.checkpoint import save_checkpoint
from morphcam.model.data import SyntheticClips
from morphcam.model.train import TrainConfig, Trainer
from morphcam.model.train.pool import ClipPool, LatentClipBatch

from .conftest import randomized
from .test_train_pool import SPEC, Recording, photo_dir  # noqa: F401  (photo_dir is a fixture)
from .test_train_support import FacecamClips, tiny_model, train_config

T, SIZE = SPEC.frames, SPEC.width  # 2-frame 32x32 clips


def _config(tmp_path, stage="denoiser", **overrides):
    """A pooled run of ``stage`` from a randomized model (non-zero outputs, so rollouts matter)."""
    mc = tiny_model(width=SIZE, height=SIZE)
    init = tmp_path / "init.safetensors"
    if not init.exists():
        save_checkpoint(randomized(mc), init)
    history = dataclasses.replace(TrainConfig().history, prob=1.0, kind_weights=(1.0, 1.0, 2.0))
    base = dict(stage=stage, model=mc, init=str(init), frames=T, width=SIZE, height=SIZE, batch_size=2,
                pool_size=4, pool_refresh=1, eval_batches=0, history=history, out_dir=str(tmp_path / "run"))
    base.update(overrides)
    return train_config(tmp_path, **base)


def _encoded_frames(trainer: Trainer) -> list[int]:
    """A one-element list counting the frames that go through the trainer's encoder."""
    seen = [0]

    def count(module, args, out) -> None:
        seen[0] += args[0].shape[0]

    trainer.model.autoencoder.encoder.register_forward_hook(count)
    return seen


@pytest.mark.parametrize("stage", ["denoiser", "shortcut"])
def test_latent_pool_gives_the_frame_pools_losses_and_encodes_each_clip_once(tmp_path, text_encoder, photo_dir, stage):
    """Same seeds: the same loss step by step (fp32 on the CPU), while the encoder sees each pooled
    frame once, as its clip comes in, and never inside a step."""
    runs = {}
    for latents in (False, True):
        cfg = _config(tmp_path, stage, pool_latents=latents, out_dir=str(tmp_path / f"run-{latents}"))
        pool = ClipPool(Recording(photo_dir, seed=5), size=4, refresh=1, seed=1, chunk=2)
        trainer = Trainer(cfg, source=pool, text_encoder=text_encoder)
        seen = _encoded_frames(trainer)
        losses, added = [], []
        for _ in range(3):
            before = seen[0]
            losses.append(trainer.train_step()[0])
            added.append(seen[0] - before)
        runs[latents] = trainer, torch.stack(losses), added
    (frame_run, frame_losses, frame_added), (latent_run, latent_losses, latent_added) = runs[False], runs[True]
    # The loss hardly moves with the latents (the noise dominates it): compare those directly below.
    torch.testing.assert_close(latent_losses, frame_losses, rtol=1e-6, atol=0)
    per_clip = 2 * T  # inputs and targets
    assert frame_added == [2 * per_clip] * 3  # the batch's two clips, every step
    # The fill's 4 clips, then the 2 clips of the chunk refreshed at step 2, then nothing.
    assert latent_added == [4 * per_clip, 2 * per_clip, 0]
    # Both pools are in the same state: the same clips come out, as latents of the uint8-rounded frames
    # (encoding the unrounded frames instead is off by about 1e-6 here: hence the tight tolerance).
    frames, latents = frame_run.source.sample(4), latent_run.source.sample(4)
    assert isinstance(latents, LatentClipBatch) and latents.prompts == frames.prompts
    encode = frame_run.objective.encode
    torch.testing.assert_close(latents.inputs, encode(frames.inputs), rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(latents.targets, encode(frames.targets), rtol=1e-6, atol=1e-7)
    assert frame_run.source.memory() == {"frames": 2 * 4 * T * 3 * SIZE * SIZE, "latents": 0}  # uint8
    assert latent_run.source.memory() == {"frames": 0, "latents": 2 * 4 * T * 4 * 4 * 4 * 4}  # float32 on the CPU


def test_latent_pool_run_resumes_with_a_refilled_pool_and_logs_its_memory(tmp_path, text_encoder, photo_dir):
    def pool():
        src = SyntheticClips(SPEC, split="train", seed=3, image_dirs=[str(photo_dir)], bundled_photos=False)
        return ClipPool(src, size=4, refresh=1, seed=2)

    cfg = _config(tmp_path, steps=4, pool_latents=True)
    first = Trainer(cfg, source=pool(), text_encoder=text_encoder)
    first.train(stop_at=2)
    saved = first.source.state_dict()
    resumed = Trainer(dataclasses.replace(cfg, resume=True), source=pool(), text_encoder=text_encoder)
    assert resumed.step == 2 and not resumed.source.filled and resumed.source.encoder is not None
    assert torch.equal(resumed.source.generator.get_state(), saved["generator"])
    assert torch.equal(resumed.source.source._rng.get_state(), saved["source"]["generators"]["_rng"])
    summary = resumed.train()
    assert summary["step"] == 4 and math.isfinite(summary["loss"])
    logs = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    pools = [r for r in logs if r["event"] == "pool"]
    assert [r["step"] for r in pools] == [1, 3]  # once per process, after its pool filled
    assert all(r["latents"] and r["frame_bytes"] == 0 and r["latent_bytes"] == 2 * 4 * T * 4 * 4 * 4 * 4 for r in pools)


def test_pool_latents_settings_that_cannot_work_are_named(tmp_path, text_encoder, capsys):
    with pytest.raises(ValueError, match="frozen autoencoder"):
        train_config(tmp_path, stage="autoencoder", pool_size=4, pool_latents=True)
    with pytest.raises(ValueError, match="pool_size"):
        train_config(tmp_path, stage="denoiser", pool_latents=True)
    cfg = _config(tmp_path, pool_latents=True)
    with pytest.raises(ValueError, match="ClipPool"):  # a source of one's own that is not a pool
        Trainer(cfg, source=FacecamClips(frames=T, width=SIZE, height=SIZE), text_encoder=text_encoder)
    # Where the encoder runs is not part of what a run computes: a resumed run may switch it.
    assert cfg.mismatches(dataclasses.replace(cfg, pool_latents=False)) == []
    assert TrainConfig.from_json(cfg.to_json()) == cfg
    assert morphcam(["train", "autoencoder", "--pool", "8", "--pool-latents", "--device", "cpu", "--quiet",
                     "--out", str(tmp_path / "o")]) == 2
    assert "frozen autoencoder" in capsys.readouterr().err
    assert morphcam(["train", "denoiser", "--pool-latents", "--device", "cpu", "--quiet",
                     "--out", str(tmp_path / "o")]) == 2
    assert "--pool" in capsys.readouterr().err

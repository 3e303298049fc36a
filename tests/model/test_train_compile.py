"""``compile``: the denoiser's clip forward and backward through torch.compile give the eager
step's losses and weights, keep the checkpoint's names, and are refused where they do nothing."""
from __future__ import annotations

import argparse
import dataclasses

import pytest
import torch

from morphcam.model.checkpoint import load_checkpoint
from morphcam.model.train import Trainer
from morphcam.model.train.cli import add_arguments, config_from_args

from .test_train_pool_latents import _config
from .test_train_pool import photo_dir  # noqa: F401  (a fixture)
from .test_train_support import FacecamClips


def _trainer(tmp_path, text_encoder, compiled: bool) -> Trainer:
    cfg = _config(tmp_path, compile=compiled, pool_size=0, out_dir=str(tmp_path / f"run-{compiled}"))
    source = FacecamClips(frames=cfg.frames, width=cfg.width, height=cfg.height, seed=4)
    return Trainer(cfg, source=source, text_encoder=text_encoder)


def _grads(trainer: Trainer) -> dict[str, torch.Tensor]:
    """The DiT's gradients of one loss on the next batch (the step-0 draws), then cleared."""
    loss, _ = trainer._loss(trainer.objective, trainer.source.sample(trainer.config.batch_size), 0, 0)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in trainer.model.dit.named_parameters() if p.grad is not None}
    trainer.optimizer.zero_grad(set_to_none=True)
    return grads


def test_compiled_steps_match_eager_steps_and_export_the_same_names(tmp_path, text_encoder):
    """Same seeds and data: the compiled forward's gradients and the compiled run's losses follow
    the eager ones (fp32 on the CPU, inductor's own kernels: close, not bit-equal), the training
    forward does go through the compiled function, and the export keeps the plain names."""
    torch._dynamo.reset()
    eager, compiled = _trainer(tmp_path, text_encoder, False), _trainer(tmp_path, text_encoder, True)
    assert eager.objective._compiled is None
    calls = []
    fn = compiled.objective._compiled
    compiled.objective._compiled = lambda *a: calls.append(1) or fn(*a)

    want, got = _grads(eager), _grads(compiled)
    assert calls, "the training forward did not go through the compiled function"
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 1
    assert set(got) == set(want) and len(want) > 20
    for name, g in want.items():
        torch.testing.assert_close(got[name], g, rtol=1e-3, atol=1e-4 * float(g.abs().max()) + 1e-9,
                                   msg=lambda m: f"{name}: {m}")

    losses = {t: torch.stack([t.train_step()[0] for _ in range(3)]) for t in (eager, compiled)}
    torch.testing.assert_close(losses[compiled], losses[eager], rtol=1e-4, atol=1e-6)
    assert len(calls) == 4  # the gradient check's forward and the three steps': no rollouts here

    compiled.save()
    model = load_checkpoint(tmp_path / "run-True" / "model.safetensors")
    assert set(model.state_dict()) == set(eager.model.state_dict())
    torch._dynamo.reset()


def test_compile_is_refused_for_stages_without_a_clip_forward(tmp_path, text_encoder):
    with pytest.raises(ValueError, match="compile is for the denoiser and prune"):
        _config(tmp_path, stage="autoencoder", compile=True, init=None)
    cfg = _config(tmp_path, compile=True)
    resumed = dataclasses.replace(cfg, compile=False, resume=True)
    assert not cfg.mismatches(resumed), "a run may resume with or without compile"


def test_compile_flag_reaches_the_config():
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    base = ["denoiser", "--out", "x", "--init", "m.safetensors"]
    assert config_from_args(parser.parse_args([*base, "--compile"])).compile
    assert not config_from_args(parser.parse_args(base)).compile

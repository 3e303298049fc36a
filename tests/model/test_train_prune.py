"""Pruning: units that add nothing go without a trace, tile-multiple shapes, the normal loader
and the stream take the cut model, the stage end to end with its report, clear errors."""
from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from morphcam.daemon.cli import main as morphcam
from morphcam.model.attention import BlockCausalContext
from morphcam.model.checkpoint import load_checkpoint, save_checkpoint
from morphcam.model.config import ModelConfig
from morphcam.model.generator import StreamGenerator
from morphcam.model.train.config import PruneSettings
from morphcam.model.train.loop import PromptEmbeddings
from morphcam.model.train.prune import (
    activation_importance, magnitude_importance, prune_model, pruned_config,
)

from .conftest import randomized
from .test_train_support import FacecamClips, tiny_model, train_config

MC = tiny_model(n_heads=4, ffn_dim=64)  # dim 32: four heads of 8


def _with_dead_units(seed=0):
    """A random model in which, per block, two self-attention heads, two cross-attention heads
    and 32 FFN units (different ones per block) add nothing to the residual stream.
    Returns (model, {layer: (dead heads, dead cross heads, dead units)})."""
    model = randomized(MC, seed)
    g = torch.Generator().manual_seed(seed + 1)
    dead = {}
    with torch.no_grad():
        for i, blk in enumerate(model.dit.blocks):
            heads, cross = torch.randperm(4, generator=g)[:2], torch.randperm(4, generator=g)[:2]
            units = torch.randperm(64, generator=g)[:32]
            for h in heads.tolist():
                blk.attn_out.weight[:, h * 8:(h + 1) * 8] = 0
            for h in cross.tolist():
                blk.cross_out.weight[:, h * 8:(h + 1) * 8] = 0
            blk.ffn_out.weight[:, units] = 0
            dead[i] = (set(heads.tolist()), set(cross.tolist()), set(units.tolist()))
    return model, dead


def _forward(model, seed=3):
    g = torch.Generator().manual_seed(seed)
    x, cond = torch.randn(2, 3, 4, 4, 4, generator=g), torch.randn(2, 3, 4, 4, 4, generator=g)
    sigma, step = torch.rand(2, 3, generator=g), torch.rand(2, 3, generator=g) * 0.5
    pooled, tokens = torch.randn(2, MC.text_dim, generator=g), torch.randn(2, MC.text_tokens, MC.text_dim, generator=g)
    with torch.no_grad():
        return model.dit(x, cond, sigma, step, pooled, tokens, BlockCausalContext(model.config, 3, 4, "cpu"))


@pytest.mark.parametrize("kind", ["magnitude", "activation"])
def test_pruning_units_that_add_nothing_leaves_the_output_unchanged(tmp_path, text_encoder, kind):
    model, dead = _with_dead_units()
    if kind == "magnitude":
        scores = magnitude_importance(model)
    else:
        cfg = train_config(tmp_path, stage="denoiser", model=MC, frames=3)
        batches = [FacecamClips(frames=3, seed=s).sample(2) for s in range(2)]
        scores = activation_importance(model, cfg, batches, PromptEmbeddings(text_encoder, torch.device("cpu")), "cpu")
    for i, (heads, cross, units) in dead.items():
        assert {h for h in range(4) if scores.attn[i, h] == 0} == heads
        assert {h for h in range(4) if scores.cross[i, h] == 0} == cross
        assert {u for u in range(64) if scores.ffn[i, u] == 0} == units
    target = pruned_config(MC, PruneSettings(heads=2, ffn_dim=32, tile=16))
    pruned = prune_model(model, target, scores)
    torch.testing.assert_close(_forward(pruned), _forward(model), rtol=1e-5, atol=1e-5)
    # Keeping the dead units instead of the live ones does change it: the check can fail.
    wrong = prune_model(model, target, dataclasses.replace(scores, ffn=-scores.ffn))
    assert (_forward(wrong) - _forward(model)).abs().max() > 1e-3


def test_pruned_checkpoint_loads_with_tile_multiple_shapes_and_streams_the_same(tmp_path, text_encoder):
    model, _ = _with_dead_units(seed=4)
    target = pruned_config(MC, PruneSettings(heads=2, ffn_dim=32, tile=16))
    path = save_checkpoint(prune_model(model, target, magnitude_importance(model)), tmp_path / "p.safetensors")
    loaded = load_checkpoint(path)  # the normal loader, the embedded config
    cfg = loaded.config
    assert (cfg.n_heads, cfg.head_dim, cfg.attn_dim, cfg.ffn_dim, cfg.dim) == (2, 8, 16, 32, 32)
    assert cfg.attn_dim % 16 == 0 and cfg.ffn_dim % 16 == 0
    blk = loaded.dit.blocks[0]
    assert blk.qkv.weight.shape == (48, 32) and blk.attn_out.weight.shape == (32, 16)
    assert blk.cross_kv.weight.shape == (32, 32) and blk.ffn_in.weight.shape == (32, 32)
    assert blk.frame_emb.shape == (MC.frame_positions, 2, 8)
    # The stream (KV ring cache with two heads) gives the full model's frames.
    outs = []
    for m in (model, loaded):
        gen = StreamGenerator(m, text_encoder)
        session = gen.open_session(64, 64, "a comic book drawing", seed=7)
        frames = torch.linspace(-1, 1, 3 * 64 * 64).view(1, 1, 3, 64, 64)
        outs.append(torch.cat([gen.step([session], frames * (k + 1) / 3) for k in range(3)]))
    torch.testing.assert_close(outs[1], outs[0], rtol=1e-4, atol=1e-4)


def test_unpruned_configs_serialise_as_before():
    tiny = ModelConfig.from_name("tiny")
    assert "attn_head_dim" not in tiny.to_json() and tiny.attn_dim == tiny.dim
    pruned = pruned_config(tiny, PruneSettings(heads=3))
    assert pruned.attn_dim == 192 and pruned.head_dim == 64 and pruned.name == "tiny-pruned"
    assert ModelConfig.from_json(pruned.to_json()) == pruned


@pytest.mark.parametrize(
    "settings,message",
    [
        (PruneSettings(heads=8), "has only 4 heads"),
        (PruneSettings(heads=3, tile=128), r"3 x 64 = 192, not a multiple of --tile 128: pass one of --heads 2, 4"),
        (PruneSettings(ffn_dim=2048), "cannot widen"),
        (PruneSettings(ffn_dim=500), "not a multiple of --tile 64: pass e.g. 448 or 512"),
        (PruneSettings(heads=4, ffn_dim=1024), "keep every size"),
    ],
)
def test_sizes_that_cannot_be_cut_are_named(settings, message):
    with pytest.raises(ValueError, match=message):
        pruned_config(ModelConfig.from_name("tiny"), settings)


def test_cli_prunes_fine_tunes_and_reports(tmp_path, capsys):
    model, _ = _with_dead_units(seed=2)
    init = save_checkpoint(model, tmp_path / "init.safetensors")
    out = tmp_path / "pr"
    common = ["--steps", "2", "--batch", "1", "--frames", "2", "--size", "64x64", "--device", "cpu",
              "--eval-batches", "1", "--eval-interval", "2", "--log-interval", "1", "--calib-batches", "1", "--quiet"]
    args = ["train", "prune", "--init", str(init), "--heads", "2", "--ffn-dim", "32", "--tile", "16", "--out", str(out)]
    assert morphcam([*args, *common]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report == json.loads((out / "prune_report.json").read_text())
    before, after = report["before"], report["after"]
    assert (before["n_heads"], before["ffn_dim"], after["n_heads"], after["ffn_dim"]) == (4, 64, 2, 32)
    assert after["params"] < before["params"] and before["step_ms"] > 0 and after["step_ms"] > 0
    # The dead units went, so cutting them cost nothing before the fine-tune.
    assert report["pruned"]["eval_loss"] == pytest.approx(before["eval_loss"], rel=1e-4)
    assert load_checkpoint(out).config == load_checkpoint(out / "pruned.safetensors").config
    assert load_checkpoint(out).config.n_heads == 2
    assert morphcam([*args, "--resume", *common[2:], "--steps", "3"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["fine_tune_steps"] == 3


@pytest.mark.parametrize(
    "flags,message",
    [
        ([], "needs a smaller heads or ffn_dim"),
        (["--heads", "3", "--tile", "16"], "3 x 8 = 24, not a multiple of --tile 16: pass one of --heads 2, 4"),
        (["--ffn-dim", "-4"], "non-negative integer"),
        (["--heads", "2", "--tile", "0"], "tile must be >= 1"),
    ],
)
def test_cli_names_bad_prune_flags(tmp_path, capsys, flags, message):
    init = save_checkpoint(randomized(MC), tmp_path / "init.safetensors")
    assert morphcam(["train", "prune", "--init", str(init), *flags, "--out", str(tmp_path / "o"), "--device", "cpu",
                     "--quiet"]) == 2
    assert message in capsys.readouterr().err

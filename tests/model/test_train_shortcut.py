"""Shortcut distillation: exact teacher targets, the draws, distillation that works, resume, CLI."""
from __future__ import annotations

import dataclasses
import json
import re

import pytest
import torch

from morphcam.daemon.cli import main as morphcam
from morphcam.model.attention import BlockCausalContext
from morphcam.model.checkpoint import load_checkpoint, save_checkpoint
from morphcam.model.generator import StreamGenerator
from morphcam.model.train import Trainer
from morphcam.model.train.config import ShortcutDistill
from morphcam.model.train.forcing import draw_forcing
from morphcam.model.train.loop import PromptEmbeddings
from morphcam.model.train.objectives import DenoiserObjective
from morphcam.model.train.shortcut import PairedContext, ShortcutObjective, draw_shortcut

from .conftest import randomized
from .test_train_support import FacecamClips, FixedBatch, tiny_model, train_config


def _clip(mc, b=2, t=5, hw=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    lat = lambda: torch.randn(b, t, mc.latent_channels, hw, hw, generator=g)  # noqa: E731
    return dict(x=lat(), cond=lat(), sigma=torch.rand(b, t, generator=g), step=torch.rand(b, t, generator=g) * 0.5,
                pooled=torch.randn(b, mc.text_dim, generator=g), tokens=torch.randn(b, mc.text_tokens, mc.text_dim, generator=g))


def test_paired_context_moves_each_frame_with_its_context_held():
    """Query row frame j == a plain block-causal forward where only frame j took the query inputs."""
    mc = tiny_model(sink_frames=1, window_frames=2)
    dit = randomized(mc).dit
    c, q = _clip(mc), _clip(mc, seed=1)
    t, n = 5, 4
    base = BlockCausalContext(mc, t, n, "cpu")
    pair = lambda a, b: torch.cat((a, b))  # noqa: E731
    with torch.no_grad():
        out = dit(pair(c["x"], q["x"]), pair(c["cond"], c["cond"]), pair(c["sigma"], q["sigma"]),
                  pair(c["step"], q["step"]), pair(c["pooled"], c["pooled"]), pair(c["tokens"], c["tokens"]),
                  PairedContext(base))
        plain = dit(c["x"], c["cond"], c["sigma"], c["step"], c["pooled"], c["tokens"], base)
        torch.testing.assert_close(out[:2], plain, rtol=1e-4, atol=1e-5)
        for j in range(t):
            mixed = {k: c[k].clone() for k in ("x", "sigma", "step")}
            for k in mixed:
                mixed[k][:, j] = q[k][:, j]
            ref = dit(mixed["x"], c["cond"], mixed["sigma"], mixed["step"], c["pooled"], c["tokens"], base)
            torch.testing.assert_close(out[2:, j], ref[:, j], rtol=1e-4, atol=1e-5)
            assert (out[2:, j] - plain[:, j]).abs().max() > 1e-3  # the query inputs did matter


def _shortcut_config(tmp_path, init, mc, **shortcut):
    return train_config(tmp_path, stage="shortcut", model=mc, init=str(init), frames=3,
                        shortcut=ShortcutDistill(**shortcut))


def test_draw_puts_consistency_clips_on_large_steps_and_the_sampler_schedule(tmp_path):
    mc = tiny_model(sigmas=(1.0, 0.5))
    cfg = _shortcut_config(tmp_path, "x.safetensors", mc, consistency=0.5, schedule_prob=0.5, min_step=1 / 64)
    shape = (256, 6, 1, 2, 2)
    forcing = draw_forcing(cfg, shape, torch.Generator().manual_seed(0), torch.Generator().manual_seed(0), "cpu")
    d = draw_shortcut(cfg, forcing, torch.Generator().manual_seed(1), torch.Generator().manual_seed(1), "cpu")
    c = d.consistency
    assert d.n_rows == int(c.sum()) and abs(d.n_rows / 256 - 0.5) < 0.1 and d.rows.tolist() == c.nonzero().flatten().tolist()
    sig, step = d.forcing.sigma, d.forcing.step
    assert torch.equal(sig[~c], forcing.sigma[~c]) and (step[~c] == 1 / 64).all()  # plain flow matching
    assert (step[c] >= 2 / 64 - 1e-6).all() and (sig[c] >= step[c] - 1e-6).all() and (sig[c] <= 1).all()
    on_schedule = (torch.isclose(sig, torch.tensor(1.0)) | torch.isclose(sig, torch.tensor(0.5))) & torch.isclose(
        step, torch.tensor(0.5))
    assert abs(float(on_schedule[c].float().mean()) - 0.5) < 0.08
    assert d.forcing.noise is forcing.noise  # the rest of the forcing draw is reused as is


def test_without_consistency_clips_the_loss_is_flow_matching_at_the_smallest_step(tmp_path, text_encoder):
    mc = tiny_model()
    model = randomized(mc)
    cfg = _shortcut_config(tmp_path, "x.safetensors", mc, consistency=0.0)
    batch = FacecamClips(frames=3, seed=2).sample(2)
    pooled, tokens = PromptEmbeddings(text_encoder, torch.device("cpu"))(batch.prompts)
    forcing = draw_forcing(cfg, (2, 3, 4, 8, 8), torch.Generator().manual_seed(0), torch.Generator().manual_seed(0), "cpu")
    d = draw_shortcut(cfg, forcing, torch.Generator(), torch.Generator().manual_seed(0), "cpu")
    with torch.no_grad():
        loss, stats = ShortcutObjective(model, cfg, teacher=model)(batch.inputs, batch.targets, pooled, tokens, d)
        ref, _ = DenoiserObjective(model, cfg)(batch.inputs, batch.targets, pooled, tokens,
                                               dataclasses.replace(forcing, step=torch.full((2, 3), 1 / 128)))
    torch.testing.assert_close(loss, ref)
    assert stats[3] == 0 and stats[1] == 6


def _init_checkpoint(tmp_path, mc, seed=0):
    model = randomized(mc, seed)
    with torch.no_grad():  # a gentler random network: the test distils it, it need not be wild
        for p in model.dit.parameters():
            p.mul_(0.5)
    return save_checkpoint(model, tmp_path / "init.safetensors")


def test_one_step_moves_toward_the_teachers_two_half_steps(tmp_path, text_encoder):
    """Distilling for sigmas (1.0,) against the frozen starting weights: the student's single step
    from pure noise gets much closer to the teacher's two half steps (same context)."""
    mc = tiny_model(sigmas=(1.0,))
    init = _init_checkpoint(tmp_path, mc)
    cfg = dataclasses.replace(
        _shortcut_config(tmp_path, init, mc, consistency=1.0, schedule_prob=1.0, teacher="frozen"),
        lr=3e-3, warmup_steps=0, steps=1000, eval_batches=0, history=dataclasses.replace(
            train_config(tmp_path).history, prob=0.0))
    batch = FacecamClips(frames=3, seed=5).sample(2)
    trainer = Trainer(cfg, source=FixedBatch(batch), text_encoder=text_encoder)
    objective = trainer.objective
    pooled, tokens = trainer.text(batch.prompts)
    cond = objective.encode(batch.inputs)
    x = torch.randn(cond.shape, generator=torch.Generator().manual_seed(9))
    ones = torch.ones(cond.shape[:2])

    def gap() -> float:
        return float(objective.one_step_gap(x, cond, ones, ones, pooled, tokens).mean())

    before = gap()
    for _ in range(20):
        trainer.train_step()
    after = gap()
    assert after < 0.5 * before, (before, after)


def test_resume_continues_exactly(tmp_path, text_encoder):
    mc = tiny_model(sigmas=(1.0, 0.5))
    init = _init_checkpoint(tmp_path, mc)
    base = dict(consistency=0.5, teacher="ema")

    def trainer(folder, resume=False):
        cfg = dataclasses.replace(_shortcut_config(tmp_path / folder, init, mc, **base), steps=4, resume=resume)
        return Trainer(cfg, source=FacecamClips(frames=3, seed=1), eval_source=FacecamClips(frames=3, seed=9),
                       text_encoder=text_encoder)

    straight = trainer("a")
    straight.train()
    first = trainer("b")
    first.train(stop_at=2)
    resumed = trainer("b", resume=True)
    assert resumed.step == 2
    resumed.train()
    for name, ref in straight.ema.state_dict().items():
        assert torch.equal(resumed.ema.state_dict()[name], ref), name
    logs = [json.loads(line) for line in (tmp_path / "b" / "run" / "log.jsonl").read_text().splitlines()]
    assert {"flow_mse", "consistency_mse"} <= set(logs[0])


def test_cli_exports_the_distilled_sampler_steps(tmp_path, text_encoder):
    init = _init_checkpoint(tmp_path, tiny_model())  # a (1.0, 0.5) model
    out = tmp_path / "sc"
    common = ["--steps", "2", "--batch", "1", "--frames", "2", "--size", "64x64", "--device", "cpu",
              "--eval-batches", "0", "--log-interval", "1", "--consistency", "1.0", "--quiet"]
    assert morphcam(["train", "shortcut", "--init", str(init), "--sigmas", "1.0", "--out", str(out), *common]) == 0
    model = load_checkpoint(out)  # the normal loader; its sampler is now one step
    assert model.config.sigmas == (1.0,) and model.config.n_heads == 2
    gen = StreamGenerator(model, text_encoder)
    session = gen.open_session(64, 64, "a comic book drawing", seed=0)
    frame = gen.step([session], torch.zeros(1, 1, 3, 64, 64))
    assert frame.shape == (1, 1, 3, 64, 64) and torch.isfinite(frame).all()
    steps = ["--steps", "3"]
    assert morphcam(["train", "shortcut", "--init", str(init), "--sigmas", "1.0", "--out", str(out), "--resume",
                     *common[2:], *steps]) == 0
    assert json.loads((out / "log.jsonl").read_text().splitlines()[-1])["step"] == 3


@pytest.mark.parametrize(
    "flags,message",
    [
        (["shortcut"], "pass --init"),
        (["shortcut", "--init", "{missing}"], "no such run folder"),
        (["shortcut", "--init", "{init}", "--sigmas", "0.5", "1.0"], "sigmas must be decreasing"),
        (["shortcut", "--init", "{init}", "--consistency", "1.5"], r"consistency must be in \[0, 1\]"),
        (["shortcut", "--init", "{init}", "--min-step", "0"], "min_step must be in"),
        (["denoiser", "--sigmas", "1.0"], "shortcut-stage flag"),
        (["denoiser", "--teacher", "frozen"], "used by the shortcut stage only"),
    ],
)
def test_cli_names_bad_flags(tmp_path, capsys, flags, message):
    init = _init_checkpoint(tmp_path, tiny_model())
    flags = [f.format(init=init, missing=tmp_path / "nope") for f in flags]
    assert morphcam(["train", *flags, "--out", str(tmp_path / "o"), "--device", "cpu", "--quiet"]) == 2
    assert re.search(message, capsys.readouterr().err)


@pytest.mark.slow
def test_two_gloo_ranks_distil_in_step(tmp_path):
    """torchrun with two CPU processes: the teacher stays outside DDP and the ranks stay identical."""
    import os
    import subprocess
    import sys

    init = _init_checkpoint(tmp_path, tiny_model())
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "morphcam.model.train.cli", "shortcut", "--init", str(init), "--sigmas", "1.0", "--steps", "2",
           "--batch", "2", "--frames", "2", "--size", "64x64", "--device", "cpu", "--eval-batches", "0",
           "--log-interval", "1", "--out", str(out), "--quiet"]
    proc = subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    done = json.loads((out / "log.jsonl").read_text().splitlines()[-1])
    assert done["step"] == 2 and len(set(done["rank_checksums"])) == 1 and len(done["rank_checksums"]) == 2

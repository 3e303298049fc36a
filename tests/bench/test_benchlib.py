"""bench/benchlib.py on a CPU: the step as torch.compile traces it (AOT autograd, no inductor, to
stay fast) computes what the eager step computes, with and without the split of cache writes."""
from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from benchlib import SplitCaches, count_flops, plain_forward, step_bytes  # noqa: E402

from morphcam.model.config import ModelConfig  # noqa: E402
from morphcam.model.generator import StreamGenerator  # noqa: E402
from helpers.models import randomized  # noqa: E402
from morphcam.model.text import TextEncoder  # noqa: E402


@pytest.fixture(scope="module")
def gen():
    cfg = dataclasses.replace(
        ModelConfig.from_name("tiny"), name="test", ae_channels=(8, 8, 8), ae_decoder_channels=(8, 8, 8),
        latent_channels=4, dim=32, n_layers=2, n_heads=2, ffn_dim=64, window_frames=2, width=32, height=32,
    )
    return StreamGenerator(randomized(cfg).requires_grad_(False), TextEncoder(cfg.text_tokens))


@pytest.mark.parametrize("split", [False, True])
def test_compiled_step_equals_eager(gen, split):
    torch._dynamo.reset()
    caches_for = (lambda ss, i: SplitCaches([s.cache for s in ss])) if split else None
    forward = torch.compile(plain_forward(gen, caches_for), backend="aot_eager")
    ref, s = (gen.open_session(32, 32, "comic", seed=3) for _ in range(2))
    inputs = gen.new_inputs(1, 32, 32)
    for _ in range(4):  # the ring (1 sink + 2 window + 1) wraps
        frame = torch.rand(1, 1, 3, 32, 32) * 2 - 1
        want = gen.step([ref], frame)
        gen.prepare([s], frame, into=inputs)
        with torch.no_grad():
            got = forward([s], inputs)
        gen.finish([s])
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(s.cache.k, ref.cache.k, rtol=1e-5, atol=1e-5)
    assert int(s.cache.pos) == 4


def test_flops_and_bytes(gen):
    s = gen.open_session(32, 32, "comic", seed=0)
    flops = count_flops(lambda: gen.step([s], torch.zeros(1, 1, 3, 32, 32)))
    cfg = gen.config
    # At least the DiT's per-token linears: 2 FLOPs per weight per token, per Euler step.
    linear = sum(m.weight.numel() for blk in gen.model.dit.blocks for m in blk.modules() if isinstance(m, torch.nn.Linear)
                 and m is not blk.cross_kv)
    assert flops >= 2 * linear * cfg.tokens_per_frame(32, 32) * len(cfg.sigmas)
    dit = sum(p.numel() * 4 for p in gen.model.dit.parameters())
    assert step_bytes(gen.model, [s.cache], 2, 0) >= 2 * (dit + s.cache.k.numel() * 8)

"""Token-major attention on the Triton path: QK-norm/RoPE stores q as (B, L, H, Dh) memory, the
ring attention kernels read it through its strides and write their output the same way, so the
block's ``transpose(1, 2).reshape`` before the output projection is a view, not a copy; and the
stream computes what the torch path computes."""
from __future__ import annotations


import pytest
import torch

from helpers.models import randomized, tiny_stream_config
from morphcam.kernels import dispatch
from morphcam.model import attention as attention_module
from morphcam.model import cache_batch
from morphcam.model.attention import BlockCausalContext, empty_token_major
from morphcam.model.cache_batch import LaneCaches, LanePool
from morphcam.model.config import ModelConfig
from morphcam.model.generator import StreamGenerator
from morphcam.model.text import TextEncoder


@pytest.fixture(scope="module")
def text_encoder():
    return TextEncoder(text_tokens=ModelConfig.from_name("tiny").text_tokens)


_config = tiny_stream_config


class _Watch:
    """Records every attention call's q and output, and every output projection's input."""

    def __init__(self, monkeypatch, model) -> None:
        self.calls: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.projected: list[torch.Tensor] = []
        for cls in (attention_module.StreamContext, attention_module.BlockCausalContext, cache_batch.LaneContext):
            monkeypatch.setattr(cls, "attend", self._wrap(cls.attend))
        for blk in model.dit.blocks:
            blk.attn_out.register_forward_pre_hook(lambda mod, args: self.projected.append(args[0]))

    def _wrap(self, attend):
        def watched(ctx, layer, q, k, v, frame_emb):
            out = attend(ctx, layer, q, k, v, frame_emb)
            self.calls.append((q, out))
            return out

        return watched

    def check_no_copies(self) -> None:
        assert self.calls and len(self.projected) == len(self.calls)
        for (q, a), x in zip(self.calls, self.projected):
            assert q.transpose(1, 2).is_contiguous(), "q is not token-major"
            assert a.transpose(1, 2).is_contiguous(), "the attention output is not token-major"
            # The projection reads the attention output's own memory: the reshape was a view.
            assert x.data_ptr() == a.data_ptr() and x.untyped_storage().data_ptr() == a.untyped_storage().data_ptr()
        self.calls.clear()
        self.projected.clear()


def _stream(gen, sessions, frames, caches_for=None):
    """Steps ``sessions`` through ``frames`` (steps, B, F, 3, H, W); returns the outputs stacked."""
    outs = []
    for f in frames:
        if caches_for is None:
            outs.append(gen.step(sessions, f))
            continue
        inputs = gen.prepare(sessions, f)
        outs.append(gen.forward(sessions, inputs, caches_for(inputs)))
        gen.finish(sessions)
    return torch.stack(outs)


@pytest.mark.parametrize("sessions", [1, 2])
def test_stream_attention_makes_no_copies(sessions, text_encoder, monkeypatch, device):
    """One session (the kernel's output passed on as it is) and two (each row written into a
    token-major output): the same frames as the torch path, and no transposing copy per layer."""
    model = randomized(_config()).to(device)
    gen = StreamGenerator(model, text_encoder)
    frames = torch.rand(4, sessions, 1, 3, 32, 32, device=device) * 2 - 1  # the 1 + 2 slot ring wraps
    outs = {}
    for backend in ("torch", "triton"):
        opened = [gen.open_session(32, 32, "pencil sketch", seed=3 + i) for i in range(sessions)]
        watch = _Watch(monkeypatch, model) if backend == "triton" else None
        with dispatch.force(backend):
            outs[backend] = _stream(gen, opened, frames)
        if watch is not None:
            watch.check_no_copies()
    assert outs["torch"].abs().mean() > 1e-2
    torch.testing.assert_close(outs["triton"], outs["torch"], rtol=1e-4, atol=1e-4)


def test_lane_attention_makes_no_copies(text_encoder, monkeypatch, device):
    """Sessions in the lanes of one pool: one batched attention launch, token-major output."""
    cfg = _config()
    model = randomized(cfg).to(device)
    gen = StreamGenerator(model, text_encoder)
    frames = torch.rand(3, 2, 1, 3, 32, 32, device=device) * 2 - 1
    own = [gen.open_session(32, 32, "comic", seed=i) for i in range(2)]
    pool = LanePool(cfg, cfg.latent_size(32, 32), 2, device, torch.float32)
    lanes = [pool.acquire() for _ in range(2)]
    laned = [gen.open_session(32, 32, "comic", seed=i, cache=c) for i, (_, c) in enumerate(lanes)]

    def lane_caches(inputs):
        with torch.inference_mode():  # prepare's buffers are inference tensors
            inputs.lanes.copy_(torch.tensor([lane for lane, _ in lanes], device=device))
        return LaneCaches(pool, inputs.lanes)

    with dispatch.force("torch"):
        want = _stream(gen, own, frames)
    watch = _Watch(monkeypatch, model)
    with dispatch.force("triton"):
        got = _stream(gen, laned, frames, lane_caches)
    watch.check_no_copies()
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_block_causal_output_is_token_major(device):
    """The clip forward's context allocates its output token-major whatever q's layout."""
    cfg = _config()
    n, frames, h, dh = 4, 3, cfg.n_heads, cfg.head_dim
    context = BlockCausalContext(cfg, frames, n, device)
    q, k, v = torch.randn(3, 1, h, frames * n, dh, device=device).unbind(0)  # contiguous (B, H, L, Dh)
    emb = torch.randn(cfg.frame_positions, h, dh, device=device)
    out = context.attend(0, q, k, v, emb)
    assert out.transpose(1, 2).is_contiguous()
    token_major = empty_token_major(q).copy_(q)
    torch.testing.assert_close(context.attend(0, token_major, k, v, emb), out, rtol=0, atol=0)

"""Streaming through the KV ring cache equals one block-causal forward over the whole clip."""
from __future__ import annotations

import pytest
import torch

from morphcam.model.attention import BlockCausalContext, StreamContext
from morphcam.model.kv_cache import KVRingCache

from .conftest import randomized, small_config

H = W = 4  # latent size: 2x2 patches -> 4 tokens per frame


def _clip(config, n_frames, seed=1):
    g = torch.Generator().manual_seed(seed)
    c = config.latent_channels
    x = torch.randn(1, n_frames, c, H, W, generator=g)
    cond = torch.randn(1, n_frames, c, H, W, generator=g)
    sigma = torch.rand(1, n_frames, generator=g)  # diffusion forcing: one noise level per frame
    step = torch.rand(1, n_frames, generator=g) * sigma
    pooled = torch.randn(1, config.text_dim, generator=g)
    tokens = torch.randn(1, config.text_tokens, config.text_dim, generator=g)
    return x, cond, sigma, step, pooled, tokens


@pytest.mark.parametrize(
    "sink,window,per_step,n_frames",
    [
        (1, 8, 1, 6),  # nothing evicted
        (0, 8, 1, 5),  # no sink, nothing evicted
        (1, 2, 1, 9),  # eviction: the mask keeps frame 0 plus the last two
        (2, 4, 2, 12),  # chunks of two frames, eviction
        (3, 3, 3, 12),  # LongLive-like chunks of three
    ],
)
def test_stream_matches_block_causal_forward(sink, window, per_step, n_frames):
    cfg = small_config(sink_frames=sink, window_frames=window, frames_per_step=per_step)
    dit = randomized(cfg).dit
    x, cond, sigma, step, pooled, tokens = _clip(cfg, n_frames)
    n = (H // cfg.patch_size) * (W // cfg.patch_size)
    with torch.no_grad():
        full = dit(x, cond, sigma, step, pooled, tokens, BlockCausalContext(cfg, n_frames, n, "cpu"))
        cache = KVRingCache(cfg, (H, W), "cpu", torch.float32)
        ctx = StreamContext([cache])
        outs = []
        for c in range(0, n_frames, per_step):
            s = slice(c, c + per_step)
            cache.begin_chunk()
            # Run an extra, different step first: the chunk's slots are overwritten in place.
            dit(torch.randn_like(x[:, s]), cond[:, s], sigma[:, s] * 0.5, step[:, s], pooled, tokens, ctx)
            outs.append(dit(x[:, s], cond[:, s], sigma[:, s], step[:, s], pooled, tokens, ctx))
            cache.commit()
    streamed = torch.cat(outs, dim=1)
    assert full.abs().mean() > 1e-2  # the comparison is not between two zeros
    torch.testing.assert_close(streamed, full, rtol=1e-4, atol=1e-5)


def test_mask_is_what_makes_them_equal():
    """Sanity: with eviction, a full-history forward differs from the stream."""
    cfg = small_config(sink_frames=1, window_frames=2)
    wide = small_config(sink_frames=1, window_frames=12)
    dit = randomized(cfg).dit
    x, cond, sigma, step, pooled, tokens = _clip(cfg, 8)
    with torch.no_grad():
        a = dit(x, cond, sigma, step, pooled, tokens, BlockCausalContext(cfg, 8, 4, "cpu"))
        b = dit(x, cond, sigma, step, pooled, tokens, BlockCausalContext(wide, 8, 4, "cpu"))
    torch.testing.assert_close(a[:, :4], b[:, :4])  # the first frames see the same frames
    assert (a[:, -1] - b[:, -1]).abs().max() > 1e-3


def test_future_frames_do_not_leak():
    cfg = small_config(sink_frames=1, window_frames=4)
    dit = randomized(cfg).dit
    x, cond, sigma, step, pooled, tokens = _clip(cfg, 5)
    x2 = x.clone()
    x2[:, 3:] += 1.0
    with torch.no_grad():
        a = dit(x, cond, sigma, step, pooled, tokens, BlockCausalContext(cfg, 5, 4, "cpu"))
        b = dit(x2, cond, sigma, step, pooled, tokens, BlockCausalContext(cfg, 5, 4, "cpu"))
    torch.testing.assert_close(a[:, :3], b[:, :3])
    assert (a[:, 3:] - b[:, 3:]).abs().max() > 1e-3


def test_training_forward_backward_with_diffusion_forcing():
    """The clip forward trains: gradients reach every denoiser parameter through the mask."""
    cfg = small_config(sink_frames=1, window_frames=2)
    model = randomized(cfg)
    model.train()
    x, cond, sigma, step, pooled, tokens = _clip(cfg, 5)
    v = model.dit(x, cond, sigma, step, pooled, tokens, BlockCausalContext(cfg, 5, 4, "cpu"))
    v.square().mean().backward()
    missing = [n for n, p in model.dit.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing

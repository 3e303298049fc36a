"""10,000 stream steps: constant memory, no NaN, bounded positions, buffers never reallocated."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from morphcam.model.config import ModelConfig
from morphcam.model.generator import StreamGenerator

from .conftest import randomized


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        import os

        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.slow
def test_ten_thousand_steps(text_encoder):
    # The tiny preset's cache settings at 16x16 with two of its layers and one Euler step, on one
    # thread (these tensors are too small to gain from two), so 10,000 steps take well under a
    # minute; the cache logic does not depend on depth, width or frame size.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _run(text_encoder)
    finally:
        torch.set_num_threads(threads)


def _run(text_encoder):
    cfg = dataclasses.replace(ModelConfig.from_name("tiny"), n_layers=2, sigmas=(1.0,))
    gen = StreamGenerator(randomized(cfg), text_encoder)
    session = gen.open_session(16, 16, "pencil sketch", seed=0)
    cache = session.cache
    pointers = cache.storage_pointers()
    frames = torch.rand(1, 1, 3, 16, 16) * 2 - 1
    top = cfg.frame_positions - 1
    rss = []
    for i in range(10_000):
        out = gen.step([session], frames)
        if i % 1000 == 999:
            assert torch.isfinite(out).all(), f"NaN at step {i}"
            assert torch.isfinite(cache.k).all() and torch.isfinite(cache.v).all()
            assert int(cache.frame_idx.min()) >= 0 and int(cache.frame_idx.max()) <= top
            assert cache.storage_pointers() == pointers
            rss.append(_rss_bytes())
    assert cache.frames_seen == 10_000
    assert int(cache.token_valid[:, 0].sum()) == cfg.cache_frames  # full, never more
    # Memory is flat: after warm-up, RSS moves by less than a few MB over 8,000 steps.
    assert max(rss[1:]) - rss[1] < 8 * 2**20, [r / 2**20 for r in rss]

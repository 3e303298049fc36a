"""bench/longlive_shape.py's settings at tiny sizes on a CPU: chunks of 3 frames, 4 steps plus the
cache-refresh pass (5 DiT forwards), 3 sinks + 6 window + 3 chunk frames attended, 512 text tokens;
every attention choice computes the same chunk."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from longlive_shape import Chunk, longlive_config, short_kernel_name, tally_kernels  # noqa: E402

from morphcam.model.generator import StreamGenerator  # noqa: E402
from helpers.models import randomized  # noqa: E402
from morphcam.model.text import TextEncoder  # noqa: E402


@pytest.fixture(scope="module")
def gen():
    cfg = longlive_config("tiny", name="test", ae_channels=(8, 8, 8), ae_decoder_channels=(8, 8, 8), latent_channels=4,
                          dim=32, n_layers=2, n_heads=2, ffn_dim=64, width=32, height=32, frame_positions=16)
    assert (cfg.frames_per_step, cfg.sink_frames, cfg.cache_frames, cfg.text_tokens) == (3, 3, 12, 512)
    assert len(cfg.sigmas) == 4 and cfg.cache_refresh
    return StreamGenerator(randomized(cfg).requires_grad_(False), TextEncoder(cfg.text_tokens))


def test_five_forwards_per_chunk_and_the_refresh_pass_fills_the_cache(gen):
    calls = []
    hook = gen.model.dit.register_forward_hook(lambda m, args, out: calls.append(args[2].flatten().tolist()))
    try:
        chunk = Chunk(gen, "math", 32, 32)
        out = chunk.run()
    finally:
        hook.remove()
    assert len(calls) == 5 and calls[-1] == [0.0] * 3, "4 Euler steps, then one pass at noise level 0"
    cache = chunk.session.cache
    assert int(cache.pos) == 3 and cache.frames_seen == 3
    # The cache keeps the refresh pass's inputs: the clean chunk at noise level 0.
    torch.testing.assert_close(cache.x_in[:3], out[0])
    assert torch.equal(cache.sigma[:3], torch.zeros(3))
    assert gen.model.dit.blocks[0].cross_kv(torch.zeros(1, 512, 32)).shape == (1, 512, 64)  # 512 text tokens


@pytest.mark.parametrize("attention,write_in_attend", [("math", False), ("math", True), ("ring", True)])
def test_attention_choices_compute_the_same_chunks(gen, attention, write_in_attend):
    ref, other = Chunk(gen, "ring", 32, 32, seed=4), Chunk(gen, attention, 32, 32, seed=4)
    other.write_in_attend = write_in_attend
    for _ in range(4):  # the window fills after 3 chunks; SDPA then runs without a mask in the 4th
        torch.testing.assert_close(other.run(), ref.run(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(other.session.cache.k, ref.session.cache.k, rtol=1e-5, atol=1e-5)


def test_short_kernel_names_keep_the_operation():
    name = ("void at::native::elementwise_kernel<128, 4, at::native::gpu_kernel_impl_nocast<at::native::"
            "CUDAFunctor_add<c10::BFloat16> >(at::TensorIteratorBase&, at::native::CUDAFunctor_add<c10::BFloat16> const&)"
            "::{lambda(int)#1}>(int, at::native::gpu_kernel_impl_nocast<...>)")
    assert "CUDAFunctor_add" not in name[:90]  # what a plain cut lost
    short = short_kernel_name(name)
    assert short.startswith("elementwise_kernel<128, 4, gpu_kernel_impl_nocast<CUDAFunctor_add<c10::BFloat16>")
    assert len(short) == 110 and short_kernel_name("_gelu_kernel") == "_gelu_kernel"


def test_tally_kernels_splits_by_kind_and_ranks_the_rest():
    long_name = "void at::native::elementwise_kernel<128, 4, " + "x" * 200
    kernels = [("sm90_xmma_gemm_bf16bf16_bf16f32", 1000.0, 20), ("_ring_attention_kernel", 5000.0, 10),
               ("_gelu_kernel", 300.0, 60), ("Memset (Device)", 10.0, 5), (long_name, 700.0, 30)]
    split, top = tally_kernels(kernels, forwards=10, top=2)
    assert split == pytest.approx({"attention": 0.5, "gemm": 0.1, "other": 0.101})  # ms per forward
    assert [r["kernel"] for r in top] == [short_kernel_name(long_name), "_gelu_kernel"]
    assert top[0]["us_per_forward"] == pytest.approx(70.0) and top[0]["calls_per_forward"] == pytest.approx(3.0)
    assert tally_kernels(kernels, forwards=10)[1][-1]["kernel"] == "Memset (Device)"  # every "other" kernel fits in 15


def test_fp8_arm_converts_the_model_and_measures_its_price():
    """The FP8 arm's conversion (on its own model: it converts in place): every chunk's output
    within FP8's error of the bf16 one's, and not equal to it."""
    from longlive_shape import convert_to_fp8

    from morphcam.model.fp8 import FP8Linear

    cfg = longlive_config("tiny", name="test", ae_channels=(8, 8, 8), ae_decoder_channels=(8, 8, 8), latent_channels=4,
                          dim=32, n_layers=2, n_heads=2, ffn_dim=64, width=32, height=32, frame_positions=16)
    gen = StreamGenerator(randomized(cfg).requires_grad_(False), TextEncoder(cfg.text_tokens))
    errors = convert_to_fp8(gen, "ring", 32, 32, chunks=4)
    assert len(errors) == 4 and all(1e-3 < e < 0.1 for e in errors), errors
    assert isinstance(gen.model.dit.blocks[0].ffn_in, FP8Linear)

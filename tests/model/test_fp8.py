"""FP8 linears: the layer is the dequantized product, a converted denoiser follows the float one
within FP8's error (and is not the float one), the FFN's GELU moves into the quantization, the
norms in front of FP8 linears write their rows in e4m3 themselves, stream steps run on a converted
model, and bad uses are refused with what to do."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from helpers.models import randomized, tiny_stream_config
from morphcam.kernels import dispatch
from morphcam.model import ops
from morphcam.model.attention import BlockCausalContext
from morphcam.model.dit import DiTBlock
from morphcam.model.fp8 import FP8_LINEARS, FP8Linear, QuantizedRows, to_fp8
from morphcam.model.generator import StreamGenerator
from morphcam.model.text import TextEncoder

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
DTYPE = torch.bfloat16 if DEVICE == "cuda" else torch.float32  # the GPU's row-wise FP8 GEMM writes bf16


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm())


def test_fp8_linear_is_the_dequantized_product():
    torch.manual_seed(0)
    lin = nn.Linear(48, 80)
    x = torch.randn(2, 7, 48) * torch.logspace(-2, 1, 7)[:, None]
    fp8 = FP8Linear(lin)
    with torch.no_grad():
        y = fp8(x)
        q, s = ops.quantize_rows(x)
        want = (q.float() * s) @ (fp8.weight_q.float() * fp8.weight_scale.t()).t() + lin.bias
        float_y = lin(x)
    assert y.shape == (2, 7, 80) and y.dtype == torch.float32
    torch.testing.assert_close(y.view(-1, 80), want, rtol=1e-5, atol=1e-5)
    assert 1e-3 < _rel(y, float_y) < 0.06  # e4m3 on both operands: a few percent, not zero
    assert not any(p.dtype.is_floating_point and p.dtype != torch.float8_e4m3fn and p.numel() == 48 * 80
                   for p in fp8.buffers())  # no float copy of the weight stays behind
    with torch.no_grad():  # an input already quantized gives the same result
        assert torch.equal(fp8(QuantizedRows(q, s, (2, 7))), y)


def _clip_inputs(cfg, b=2, t=3, seed=1):
    g = torch.Generator().manual_seed(seed)
    hw = cfg.latent_size(32, 32)
    x, cond = torch.randn(2, b, t, cfg.latent_channels, *hw, generator=g).unbind(0)
    sigma, step = torch.rand(2, b, t, generator=g).unbind(0)
    pooled = torch.randn(b, cfg.text_dim, generator=g)
    tokens = torch.randn(b, cfg.text_tokens, cfg.text_dim, generator=g)
    n = (hw[0] // cfg.patch_size) * (hw[1] // cfg.patch_size)
    return [a.to(DEVICE, DTYPE) for a in (x, cond, sigma, step, pooled, tokens)], BlockCausalContext(cfg, t, n, DEVICE)


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_converted_denoiser_follows_the_float_one(backend, monkeypatch):
    cfg = tiny_stream_config(text_tokens=16)
    dit = randomized(cfg).dit.to(DEVICE, DTYPE)
    fp8 = to_fp8(copy.deepcopy(dit))
    for blk in fp8.blocks:
        assert all(isinstance(getattr(blk, n), FP8Linear) for n in FP8_LINEARS)
        assert isinstance(blk.cross_kv, nn.Linear)  # once per chunk, on the prompt: left in float
    args, ctx = _clip_inputs(cfg)

    def no_linear_gelu(*a, **k):
        raise AssertionError("the FP8 FFN applies its GELU in the quantization, not after a float GEMM")

    with torch.no_grad(), dispatch.force(backend):
        want = dit(*args, ctx)
        monkeypatch.setattr(ops, "linear_gelu", no_linear_gelu)
        got = fp8(*args, ctx)
    assert torch.isfinite(got).all()
    assert 1e-3 < _rel(got, want) < 0.1, _rel(got, want)


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_norms_hand_quantized_rows_to_fp8_linears(backend, monkeypatch):
    """The residual norms in front of qkv (every block's but the first's: its input norm adds
    nothing), cross_q and ffn_in write e4m3 rows and scales themselves: the output is bit for bit
    that of each norm writing h and the FP8 linear quantizing it, and on the Triton path a forward
    of L blocks runs 3L + 1 standalone quantizations instead of 6L, with the same 3L norms."""
    cfg = tiny_stream_config(text_tokens=16, n_layers=3)
    dtype = torch.bfloat16 if DEVICE == "cuda" else torch.float32  # a GPU's FP8 GEMM writes bf16
    fp8 = to_fp8(randomized(cfg).dit.to(DEVICE, dtype))
    args, ctx = _clip_inputs(cfg)
    args = [a.to(dtype) for a in args]
    calls = []
    real = dispatch.kernel
    monkeypatch.setattr(dispatch, "kernel", lambda name: calls.append(name) or real(name))

    def norm_then_quantize(self, linear, lead, x, y, gate, shift, scale, affine=False):
        """The block as it was: every norm writes h, each FP8 linear quantizes its input itself."""
        x, h = ops.residual_norm(x, y, gate, shift, scale, self.eps, affine)
        return x, h.view(*lead, h.shape[-1])

    def count(names):
        return {name: names.count(name) for name in ("residual_norm", "quantize_rows")}

    with torch.no_grad(), dispatch.force(backend):
        fused = fp8(*args, ctx)
        fused_calls, calls[:] = count(calls), []
        monkeypatch.setattr(DiTBlock, "_residual_norm_into", norm_then_quantize)
        unfused = fp8(*args, ctx)
    assert torch.isfinite(fused).all() and torch.equal(fused, unfused)
    n = cfg.n_layers
    if backend == "torch":
        assert calls == []
    else:
        assert count(calls) == {"residual_norm": 3 * n, "quantize_rows": 6 * n}, count(calls)
        assert fused_calls == {"residual_norm": 3 * n, "quantize_rows": 3 * n + 1}, fused_calls


def test_stream_steps_on_a_converted_model():
    """A converted generator streams through its KV caches (the ring wraps) close to the float one."""
    cfg = tiny_stream_config(text_tokens=16)
    model = randomized(cfg).to(DEVICE, DTYPE)
    gens = [StreamGenerator(m, TextEncoder(cfg.text_tokens, torch.device(DEVICE), DTYPE))
            for m in (model, copy.deepcopy(model))]
    to_fp8(gens[1].model.dit)
    frames = torch.rand(1, cfg.frames_per_step, 3, 32, 32, generator=torch.Generator().manual_seed(4)).to(DEVICE, DTYPE)
    sessions = [g.open_session(32, 32, "comic", seed=2) for g in gens]
    for _ in range(cfg.sink_frames + cfg.window_frames + 2):
        outs = [g.step([s], frames) for g, s in zip(gens, sessions)]
    assert torch.isfinite(outs[1]).all() and _rel(outs[1], outs[0]) < 0.1


def test_bad_uses_are_refused():
    with pytest.raises(ValueError, match="multiples of 16"):
        FP8Linear(nn.Linear(40, 24))
    dit = randomized(tiny_stream_config(text_tokens=16)).dit
    with pytest.raises(ValueError, match="unknown block linears"):
        to_fp8(dit, names=("qkv", "ffn"))
    if DEVICE == "cuda":
        with pytest.raises(ValueError, match="bfloat16"):
            to_fp8(dit.to("cuda", torch.float16))


@pytest.mark.gpu
def test_bf16_on_the_gpu_and_in_a_cuda_graph():
    """bf16 on FP8 tensor cores: a converted forward near the bf16 one, eagerly and replayed from
    a CUDA graph (the quantization kernels and the FP8 GEMMs are captured)."""
    from morphcam.model.fp8 import fp8_supported

    if not fp8_supported("cuda"):
        pytest.skip("no FP8 tensor cores on this GPU")
    cfg = tiny_stream_config(text_tokens=16, dim=64, ffn_dim=256)
    dit = randomized(cfg).dit.to("cuda", torch.bfloat16)
    fp8 = to_fp8(copy.deepcopy(dit))
    args, ctx = _clip_inputs(cfg)
    with torch.no_grad(), dispatch.force("triton"):
        want = dit(*args, ctx)
        got = fp8(*args, ctx)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = fp8(*args, ctx)
        graph.replay()
        torch.cuda.synchronize()
    assert 1e-3 < _rel(got, want) < 0.1
    assert torch.equal(out, got)

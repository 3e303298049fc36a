"""The FFN's GEMM with its GELU: routing, the 2-D view handed to ``torch._addmm_activation``,
the network's output through either path, and (GPU) the cuBLASLt epilogue in bf16."""
from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from helpers.models import randomized
from morphcam.kernels import dispatch
from morphcam.model.attention import BlockCausalContext
from morphcam.model import ops
from morphcam.model.config import ModelConfig


def _tanh_addmm_activation(bias, mat1, mat2, *, use_gelu=False):
    """What ``torch._addmm_activation`` computes on CUDA, in plain torch (a CPU stand-in)."""
    assert use_gelu
    return F.gelu(torch.addmm(bias, mat1, mat2), approximate="tanh")


def _reference(x, w, b):
    return F.gelu(F.linear(x, w, b), approximate="tanh")


def test_epilogue_only_for_cuda_inference():
    x = torch.zeros(2, 3)
    with torch.no_grad(), dispatch.force("triton"):
        assert not dispatch.use_gemm_epilogue(x)  # CPU: its _addmm_activation uses the erf GELU
    if torch.cuda.is_available():
        y = x.cuda()
        with torch.no_grad():
            assert dispatch.use_gemm_epilogue(y)
            with dispatch.gemm_epilogues(False):
                assert not dispatch.use_gemm_epilogue(y)
            with dispatch.force("torch"):
                assert not dispatch.use_gemm_epilogue(y)
        assert not dispatch.use_gemm_epilogue(y)  # autograd records: the plain GEMM and GELU


@pytest.mark.parametrize("shape", [(5, 8), (2, 3, 5, 8), (1, 1, 1, 8)])
def test_addmm_gelu_views_x_as_2d(shape):
    """On a CPU ``_addmm_activation`` applies the erf GELU: compare with that."""
    x, w, b = torch.randn(shape), torch.randn(16, 8), torch.randn(16)
    want = F.gelu(F.linear(x, w, b))
    torch.testing.assert_close(ops.addmm_gelu(x, w, b), want, rtol=1e-5, atol=1e-5)
    xt = torch.randn(*shape[:-2], 8, shape[-2]).transpose(-1, -2)  # a non-contiguous x
    torch.testing.assert_close(ops.addmm_gelu(xt, w, b), F.gelu(F.linear(xt, w, b)), rtol=1e-5, atol=1e-5)


def test_linear_gelu_routes(monkeypatch, device):
    """On the kernels' device (the interpreter's CPU, or the GPU): reference, GELU kernel, fused."""
    x, w, b = (torch.randn(2, 3, 8), torch.randn(16, 8), torch.randn(16))
    want = _reference(x, w, b).to(device)
    x, w, b = x.to(device), w.to(device), b.to(device)
    torch.testing.assert_close(ops.linear_gelu(x, w, b), want, rtol=1e-5, atol=1e-5)  # grad mode: the reference
    calls = []
    real = dispatch.kernel
    monkeypatch.setattr(dispatch, "kernel", lambda name: calls.append(name) or real(name))
    with torch.no_grad(), dispatch.force("triton"), dispatch.gemm_epilogues(False):  # the GELU kernel after the GEMM
        torch.testing.assert_close(ops.linear_gelu(x, w, b), want, rtol=1e-5, atol=1e-5)
    assert calls == ["gelu"]
    monkeypatch.setattr(dispatch, "use_gemm_epilogue", lambda x: True)
    monkeypatch.setattr(torch, "_addmm_activation", _tanh_addmm_activation)
    torch.testing.assert_close(ops.linear_gelu(x, w, b), want, rtol=1e-5, atol=1e-5)
    assert calls == ["gelu"]  # the fused path runs no separate GELU


def test_network_output_unchanged_through_the_fused_path(monkeypatch):
    cfg = dataclasses.replace(ModelConfig.from_name("tiny"), name="test", dim=32, n_layers=2, n_heads=2, ffn_dim=64)
    dit = randomized(cfg).dit.eval()
    assert {"blocks.0.ffn_in.weight", "blocks.0.ffn_in.bias", "blocks.0.ffn_out.weight"} <= set(dit.state_dict())
    b, t, c, h, w = 1, 2, cfg.latent_channels, 8, 8
    g = torch.Generator().manual_seed(0)
    x, cond = torch.randn(2, b, t, c, h, w, generator=g)
    sigma, step = torch.rand(b, t, generator=g), torch.full((b, t), 0.25)
    pooled, tokens = torch.randn(b, cfg.text_dim, generator=g), torch.randn(b, 4, cfg.text_dim, generator=g)
    n = (h // cfg.patch_size) * (w // cfg.patch_size)
    args = (x, cond, sigma, step, pooled, tokens, BlockCausalContext(cfg, t, n, "cpu"))
    with torch.no_grad():
        want = dit(*args)
        monkeypatch.setattr(dispatch, "use_gemm_epilogue", lambda x: True)
        monkeypatch.setattr(torch, "_addmm_activation", _tanh_addmm_activation)
        got = dit(*args)
    assert want.abs().mean() > 1e-3
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.gpu
@pytest.mark.parametrize("rows,k,m", [(4680, 1536, 8960), (1, 8, 16), (3, 8, 5), (7, 2, 2)])
def test_epilogue_bf16(rows, k, m, rel_error):
    dev, bf = "cuda", torch.bfloat16
    x = torch.randn(1, rows, k, device=dev, dtype=bf)
    w = torch.randn(m, k, device=dev, dtype=bf) / k**0.5
    b = torch.randn(m, device=dev, dtype=bf)
    with torch.no_grad():
        assert dispatch.use_gemm_epilogue(x)
        fused = ops.linear_gelu(x, w, b)
        with dispatch.gemm_epilogues(False):
            separate = ops.linear_gelu(x, w, b)
    assert fused.shape == (1, rows, m) and fused.dtype == bf
    want = _reference(x.float(), w.float(), b.float())
    assert rel_error(fused, want) < 1e-2
    assert rel_error(fused, separate) < 1e-2

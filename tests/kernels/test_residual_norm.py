"""The residual + LayerNorm kernel against its reference and against the unfused ops; the
block's torch path unchanged by the fused op, and the op's routing. With ``quantize``: the e4m3
rows and scales are those of ``quantize_rows`` on the unfused kernel's h, exactly."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from helpers.models import randomized
from helpers.tensors import wan_norm_inputs

from morphcam.kernels import dispatch
from morphcam.kernels.quantize_rows import E4M3_MAX, quantize_rows, quantize_rows_ref
from morphcam.kernels.residual_norm import residual_norm, residual_norm_ref
from morphcam.model import ops
from morphcam.model.attention import BlockCausalContext
from morphcam.model.config import ModelConfig
from morphcam.model.dit import DiTBlock

SHAPES = [(1, 1, 12, 32), (2, 1, 20, 48), (2, 3, 5, 64), (1, 2, 7, 96)]  # (B, T, N, D); D = 48, 96 not powers of two
DTYPES = [(torch.float32, 1e-5), (torch.float16, 2e-3), (torch.bfloat16, 1e-2)]


def _inputs(shape, dtype, device, gated, affine, seed=0):
    """x, y and the modulation as the network makes them: gate, shift and scale are strided
    views of one (B, T, 6, D) tensor; affine shift/scale are a (D,) bias and weight."""
    b, t, n, d = shape
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(shape, generator=g) * 3 + 1).to(device, dtype)
    y = torch.randn(shape, generator=g).to(device, dtype)
    shift, scale, gate = (torch.randn(b, t, 6, d, generator=g) * 0.5).to(device, dtype).unsqueeze(3).unbind(2)[:3]
    if affine:
        shift, scale = (torch.randn(2, d, generator=g) * 0.5 + torch.tensor([[0.0], [1.0]])).to(device, dtype).unbind(0)
    return x, y, gate if gated else None, shift, scale


def _double(t):
    return None if t is None else t.double()


def _ulps(out: torch.Tensor, ref: torch.Tensor, x: torch.Tensor, y: torch.Tensor, gate: torch.Tensor | None) -> float:
    """Largest error of the sum ``out`` in units of the last place of its dtype at the size of
    the operands (an add of nearly cancelling terms is exact only to that)."""
    size = x.double().abs() + (y.double() if gate is None else y.double() * gate.double()).abs()
    err = (out.double() - ref.double()).abs() / (size.clamp_min(1e-3) * torch.finfo(out.dtype).eps)
    return float(err.max())


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype,tol", DTYPES)
@pytest.mark.parametrize("gated", [True, False], ids=["gate", "plain"])
@pytest.mark.parametrize("affine", [False, True], ids=["modulate", "affine"])
def test_residual_norm_matches_reference(shape, dtype, tol, gated, affine, device, rel_error):
    x, y, gate, shift, scale = _inputs(shape, dtype, device, gated, affine, seed=sum(shape))
    x_out, h = residual_norm(x, y, gate, shift, scale, 1e-6, affine)
    assert x_out.shape == h.shape == x.shape and x_out.dtype == h.dtype == dtype
    assert x_out.is_contiguous() and h.is_contiguous()
    ref_x, ref_h = residual_norm_ref(x.double(), y.double(), _double(gate), shift.double(), scale.double(), 1e-6, affine)
    # The stream is one rounding of the exact sum (Triton's interpreter truncates to bf16: one ulp).
    assert _ulps(x_out, ref_x, x, y, gate) <= 1.0
    assert rel_error(h, ref_h) < tol
    # The norm reads the stream as stored: against the reference from the stored x_out, h is
    # as close as its own rounding allows.
    zero = torch.zeros_like(x_out, dtype=torch.float64)
    _, from_stored = residual_norm_ref(x_out.double(), zero, None, shift.double(), scale.double(), 1e-6, affine)
    assert rel_error(h, from_stored) < tol


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("affine", [False, True], ids=["modulate", "affine"])
def test_norm_reads_the_rounded_stream(dtype, affine, device, rel_error):
    """Rows of large mean and small spread: rounding the sum to 16 bits moves every value by a
    large part of the spread, so only a norm of the stored sum matches the unfused ops."""
    shape = (1, 2, 6, 48)
    x, y, gate, shift, scale = _inputs(shape, dtype, device, True, affine, seed=7)
    base = 1000.0 if dtype == torch.float16 else 100.0  # a last place of 0.5 in either
    x = (torch.randn(shape, generator=torch.Generator().manual_seed(8)) + base).to(device, dtype)
    x_out, h = residual_norm(x, y, gate, shift, scale, 1e-6, affine)
    ref_x, ref_h = residual_norm_ref(x, y, gate, shift, scale, 1e-6, affine)  # the unfused ops in dtype
    assert _ulps(x_out, ref_x, x, y, gate) <= 1.0
    zero = torch.zeros_like(x_out, dtype=torch.float64)
    _, from_stored = residual_norm_ref(x_out.double(), zero, None, shift.double(), scale.double(), 1e-6, affine)
    exact = torch.addcmul(x.double(), y.double(), gate.double())
    _, from_exact = residual_norm_ref(exact, zero, None, shift.double(), scale.double(), 1e-6, affine)
    assert rel_error(h, from_stored) < 1e-2
    assert rel_error(from_exact, from_stored) > 0.05  # five times the tolerance: the test tells them apart
    if dtype == torch.float16:  # the interpreter rounds float16 as the GPU and torch do
        assert torch.equal(x_out, ref_x)
        assert rel_error(h, ref_h) < 5e-3


def test_residual_norm_checks_affine_shapes(device):
    x, y, gate, shift, scale = _inputs((1, 1, 4, 32), torch.float32, device, True, False)
    with pytest.raises(ValueError, match="affine"):
        residual_norm(x, y, gate, shift, scale, 1e-6, affine=True)  # per-frame (B, T, 1, D), not (D,)


def test_ops_routes_residual_norm(device, monkeypatch):
    calls = []
    real = dispatch.kernel
    monkeypatch.setattr(dispatch, "kernel", lambda name: calls.append(name) or real(name))
    for gated, affine in ((True, True), (False, False)):
        x, y, gate, shift, scale = _inputs((2, 2, 3, 48), torch.float32, device, gated, affine, seed=3)
        want = residual_norm_ref(x, y, gate, shift, scale, 1e-6, affine)
        with torch.no_grad(), dispatch.force("torch"):
            for got, ref in zip(ops.residual_norm(x, y, gate, shift, scale, 1e-6, affine), want):
                torch.testing.assert_close(got, ref, rtol=0, atol=0)
        assert calls == []  # the torch leg calls no kernel
        with torch.no_grad(), dispatch.force("triton"):
            for got, ref in zip(ops.residual_norm(x, y, gate, shift, scale, 1e-6, affine), want):
                torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
        assert calls == ["residual_norm"]
        calls.clear()


def test_ops_torch_path_is_the_unfused_ops():
    """Bit for bit the add then the norm as the network computed them before fusing."""
    x, y, gate, shift, scale = _inputs((2, 3, 5, 48), torch.bfloat16, "cpu", True, False, seed=5)
    w, b = (torch.randn(2, 48) * 0.5 + 1).bfloat16().unbind(0)
    with torch.no_grad(), dispatch.force("torch"):
        x1 = ops.gated_residual(x, y, gate)
        want = x1, ops.layer_norm(x1, w, b, 1e-6)
        got = ops.residual_norm(x, y, gate, b, w, 1e-6, affine=True)
        for a, c in zip(got, want):
            assert torch.equal(a, c)
        x2 = x + y
        want = x2, ops.layer_norm_modulate(x2, shift, scale, 1e-6)
        got = ops.residual_norm(x, y, None, shift, scale, 1e-6)
        for a, c in zip(got, want):
            assert torch.equal(a, c)
    # And it keeps autograd (training takes this path).
    xg = x.float().requires_grad_()
    with dispatch.force("triton"):
        x_out, h = ops.residual_norm(xg, y.float(), gate.float(), b.float(), w.float(), 1e-6, affine=True)
    (x_out.sum() + h.square().sum()).backward()
    assert xg.grad is not None


def _unfused_block_forward(self, x, mod, text, rope, context, cross=None, kv_only=False, pending=None, defer=False):
    """``DiTBlock.forward`` as it was before the fused op: each add, then its norm, and the
    block's FFN residual added at once. Asked to ``defer`` it (as the network now does), it
    hands on a zero branch instead, which the next norm's add leaves exactly as it is."""
    assert cross is None and not kv_only
    if pending is not None:  # only ever the zero branch of the line below
        x = ops.gated_residual(x, *pending)
    b, t, n, d = x.shape
    shift1, scale1, gate1, shift2, scale2, gate2 = (mod + self.modulation).unsqueeze(3).unbind(2)
    h = ops.layer_norm_modulate(x, shift1, scale1, self.eps)
    q, k, v = self.qkv(h).view(b, t * n, 3, -1).unbind(2)
    q, k, v = self._heads(q), self._heads(k), self._heads(v)
    q, k = ops.qk_norm_rope(q, k, v, self.q_norm, self.k_norm, *rope, self.eps, context.ring_slots(self.layer))
    a = context.attend(self.layer, q, k, v, self.frame_emb)
    x = ops.gated_residual(x, self.attn_out(a.transpose(1, 2).reshape(b, t, n, -1)), gate1)
    h = ops.layer_norm(x, self.cross_norm.weight, self.cross_norm.bias, self.eps).view(b, t * n, d)
    ck, cv = self.cross_kv(text).chunk(2, dim=-1)
    c = ops.attention(self._heads(self.cross_q(h)), self._heads(ck), self._heads(cv))
    x = x + self.cross_out(c.transpose(1, 2).reshape(b, t, n, -1))
    h = ops.layer_norm_modulate(x, shift2, scale2, self.eps)
    ffn = ops.linear_gelu(h, self.ffn_in.weight, self.ffn_in.bias)
    out = ops.gated_residual(x, self.ffn_out(ffn), gate2)
    return (out, (torch.zeros_like(out), gate2)) if defer else out


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_network_torch_path_unchanged(dtype, monkeypatch):
    """A clip forward of the whole denoiser, bit for bit the unfused blocks' output."""
    cfg = dataclasses.replace(
        ModelConfig.from_name("tiny"), name="test", ae_channels=(8, 8, 8), ae_decoder_channels=(8, 8, 8),
        latent_channels=4, dim=48, n_layers=2, n_heads=2, ffn_dim=64, sink_frames=1, window_frames=2,
        width=32, height=32,
    )
    dit = randomized(cfg).dit.to(dtype)
    g = torch.Generator().manual_seed(1)
    b, t, hw = 2, 3, 8
    x, cond = (torch.randn(2, b, t, cfg.latent_channels, hw, hw, generator=g).to(dtype)).unbind(0)
    sigma, step = torch.rand(2, b, t, generator=g).unbind(0)
    pooled = torch.randn(b, cfg.text_dim, generator=g).to(dtype)
    tokens = torch.randn(b, cfg.text_tokens, cfg.text_dim, generator=g).to(dtype)
    ctx = BlockCausalContext(cfg, t, (hw // cfg.patch_size) ** 2, "cpu")
    with torch.no_grad(), dispatch.force("torch"):
        fused = dit(x, cond, sigma, step, pooled, tokens, ctx)
        monkeypatch.setattr(DiTBlock, "forward", _unfused_block_forward)
        unfused = dit(x, cond, sigma, step, pooled, tokens, ctx)
    assert fused.abs().mean() > 1e-2
    assert torch.equal(fused, unfused)


def test_every_residual_add_runs_with_a_norm_on_the_triton_path(monkeypatch, device):
    """Per forward of L blocks: 3L fused add + norm kernels (two in each block, each FFN residual
    with the next block's input norm or the output norm), one plain norm (the first block's input),
    and no gated residual of its own; the result equals the torch path."""
    cfg = dataclasses.replace(
        ModelConfig.from_name("tiny"), name="test", ae_channels=(8, 8, 8), ae_decoder_channels=(8, 8, 8),
        latent_channels=4, dim=32, n_layers=3, n_heads=2, ffn_dim=64, sink_frames=1, window_frames=2,
        width=32, height=32,
    )
    dit = randomized(cfg).dit.to(device)
    g = torch.Generator().manual_seed(2)
    b, t, hw = 1, 2, 8
    x, cond = torch.randn(2, b, t, cfg.latent_channels, hw, hw, generator=g).to(device).unbind(0)
    sigma, step = torch.rand(2, b, t, generator=g).to(device).unbind(0)
    pooled = torch.randn(b, cfg.text_dim, generator=g).to(device)
    tokens = torch.randn(b, cfg.text_tokens, cfg.text_dim, generator=g).to(device)
    ctx = BlockCausalContext(cfg, t, (hw // cfg.patch_size) ** 2, device)
    calls = []
    real = dispatch.kernel
    monkeypatch.setattr(dispatch, "kernel", lambda name: calls.append(name) or real(name))
    with torch.no_grad(), dispatch.force("triton"):
        fused = dit(x, cond, sigma, step, pooled, tokens, ctx)
    counts = {name: calls.count(name) for name in ("residual_norm", "layer_norm_modulate", "gated_residual")}
    assert counts == {"residual_norm": 3 * cfg.n_layers, "layer_norm_modulate": 1, "gated_residual": 0}, counts
    with torch.no_grad(), dispatch.force("torch"):
        plain = dit(x, cond, sigma, step, pooled, tokens, ctx)
    torch.testing.assert_close(fused, plain, rtol=1e-4, atol=1e-4)


# --- with quantize: h written as e4m3 rows with one float32 scale each --------------------------


def _same_quantization(q, s, q2, s2, exact: bool, rtol: float = 1e-6) -> None:
    """Two quantizations of one h. ``exact`` (the interpreter): the same scales and e4m3 values
    (compared as values: +0 and -0 are one). Compiled on a GPU, the fused and the plain kernel may
    contract h's multiply-adds differently (h one float32 unit apart, or one bf16 rounding the
    other way): scales within ``rtol``, under 1% of the elements on a neighbouring e4m3 value."""
    if exact:
        assert torch.equal(s, s2) and torch.equal(q.float(), q2.float())
        return
    torch.testing.assert_close(s, s2, rtol=rtol, atol=0)
    differ = q.float() != q2.float()
    assert differ.float().mean() < 0.01
    assert torch.all((q.float() - q2.float()).abs()[differ] <= q2.float().abs()[differ] / 8 + 2.0**-9)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype,tol", DTYPES[:2], ids=["float32", "float16"])
@pytest.mark.parametrize("gated,affine", [(True, False), (False, False), (True, True)], ids=["gate", "plain", "affine"])
def test_quantized_h_is_the_reference_quantization(shape, dtype, tol, gated, affine, device, rel_error):
    """q and scale are ``quantize_rows_ref`` of the h the kernel writes without ``quantize``, exactly
    (q compared as values: +0 and -0 are one value). The whole torch reference's h is rounded
    differently (the existing tests hold it to a tolerance), so against it the scales agree to that
    tolerance and few elements take a neighbouring e4m3 value."""
    x, y, gate, shift, scale = _inputs(shape, dtype, device, gated, affine, seed=sum(shape))
    x_q, (q, s) = residual_norm(x, y, gate, shift, scale, 1e-6, affine, quantize=True)
    m = x.numel() // x.shape[-1]
    assert q.dtype == torch.float8_e4m3fn and q.shape == (m, shape[-1]) and q.is_contiguous()
    assert s.dtype == torch.float32 and s.shape == (m, 1)
    x_out, h = residual_norm(x, y, gate, shift, scale, 1e-6, affine)
    q_ref, s_ref = quantize_rows_ref(h)
    assert torch.equal(x_q, x_out)
    _same_quantization(q, s, q_ref, s_ref, exact=device == "cpu")
    assert torch.all(q.float().abs().amax(dim=1) == E4M3_MAX)  # each row's largest lands on e4m3's largest

    _, (q_full, s_full) = residual_norm_ref(x, y, gate, shift, scale, 1e-6, affine, quantize=True)
    assert rel_error(s, s_full) < tol
    # Where the two h differ by a rounding, an element may land on the next e4m3 value (1/8 apart).
    assert (q.float() != q_full.float()).float().mean() < 0.02
    assert rel_error(q.float() * s, q_full.float() * s_full) < 0.02


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("gated,affine", [(True, False), (False, False), (True, True)], ids=["gate", "plain", "affine"])
def test_fused_quantize_is_norm_then_quantize_rows(dtype, gated, affine, device):
    """The fused kernel against the two kernels it replaces: the same stream, scales and e4m3 values
    (bf16 too: both round h to bf16 before quantizing; compiled, see ``_same_quantization``)."""
    x, y, gate, shift, scale = _inputs((2, 3, 5, 64), dtype, device, gated, affine, seed=11)
    x_q, (q, s) = residual_norm(x, y, gate, shift, scale, 1e-6, affine, quantize=True)
    x_out, h = residual_norm(x, y, gate, shift, scale, 1e-6, affine)
    q2, s2 = quantize_rows(h)
    assert torch.equal(x_q, x_out)
    _same_quantization(q, s, q2, s2, exact=device == "cpu", rtol=1e-6 if dtype == torch.float32 else 2.0**-7)


def test_ops_routes_quantized_residual_norm(device, monkeypatch):
    """``ops.residual_norm(..., quantize=True)``: the torch path is the unfused ops then
    ``quantize_rows``'s torch math (bit for bit the reference); the Triton path is the one fused
    kernel, no separate quantization."""
    calls = []
    real = dispatch.kernel
    monkeypatch.setattr(dispatch, "kernel", lambda name: calls.append(name) or real(name))
    for gated, affine in ((True, True), (False, False)):
        x, y, gate, shift, scale = _inputs((2, 2, 3, 48), torch.float32, device, gated, affine, seed=3)
        ref_x, (ref_q, ref_s) = residual_norm_ref(x, y, gate, shift, scale, 1e-6, affine, quantize=True)
        with torch.no_grad(), dispatch.force("torch"):
            x_t, (q_t, s_t) = ops.residual_norm(x, y, gate, shift, scale, 1e-6, affine, quantize=True)
            _, h_t = ops.residual_norm(x, y, gate, shift, scale, 1e-6, affine)
            q_u, s_u = ops.quantize_rows(h_t)
        assert calls == []
        assert torch.equal(x_t, ref_x) and torch.equal(s_t, ref_s) and torch.equal(q_t.float(), ref_q.float())
        assert torch.equal(s_t, s_u) and torch.equal(q_t.float(), q_u.float())
        with torch.no_grad(), dispatch.force("triton"):
            x_k, (q_k, s_k) = ops.residual_norm(x, y, gate, shift, scale, 1e-6, affine, quantize=True)
        assert calls == ["residual_norm"]
        calls.clear()
        want_q, want_s = residual_norm(x, y, gate, shift, scale, 1e-6, affine, quantize=True)[1]
        assert torch.equal(s_k, want_s) and torch.equal(q_k.float(), want_q.float())


@pytest.mark.gpu
@pytest.mark.parametrize("gated,affine", [(True, False), (True, True), (False, False)], ids=["gate", "affine", "plain"])
def test_quantized_bf16_at_the_wan_shape(gated, affine, rel_error):
    """bf16 at the wan-1.3b-shape forward's size (4680 tokens x 1536, three frames), compiled: the
    fused kernel's bytes are the unfused kernel's h through ``quantize_rows`` (the hardware cast
    both ways), and near the torch reference's."""
    x, y, gate, shift, scale = wan_norm_inputs(gated, affine)
    b, t, n, d = x.shape
    x_q, (q, s) = residual_norm(x, y, gate, shift, scale, 1e-6, affine, quantize=True)
    x_out, h = residual_norm(x, y, gate, shift, scale, 1e-6, affine)
    q2, s2 = quantize_rows(h)
    assert q.shape == (b * t * n, d) and s.shape == (b * t * n, 1)
    assert torch.equal(x_q, x_out)
    _same_quantization(q, s, q2, s2, exact=False, rtol=2.0**-7)
    _, (q_ref, s_ref) = residual_norm_ref(x, y, gate, shift, scale, 1e-6, affine, quantize=True)
    assert rel_error(s, s_ref) < 1e-2
    # bf16 h rounds differently from torch's LayerNorm in a few percent of the elements (then a
    # neighbouring e4m3 value); the values stay within e4m3's step
    assert (q.float() != q_ref.float()).float().mean() < 0.1
    assert rel_error(q.float() * s, q_ref.float() * s_ref) < 0.03

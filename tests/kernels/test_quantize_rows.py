"""Row-wise FP8 quantization: the kernel against its reference (exact e4m3 bytes and scales on fresh
random rows, through the GELU too), the network's torch path against the reference, and the
dequantized values against the input."""
from __future__ import annotations

import pytest
import torch

from morphcam.kernels import dispatch, quantize_rows as quantize_module
from morphcam.kernels.quantize_rows import E4M3_MAX, quantize_rows, quantize_rows_ref
from morphcam.model import ops

# (rows, K): small, not powers of two, and wide; each in every launch layout (whole rows in
# registers, or two passes over tiles: the path of rows over 16384 too).
SHAPES = [(1, 16), (5, 96), (33, 48), (7, 1100), (18, 2048)]


def _rows(shape, dtype, device, seed):
    """Rows of very different magnitudes, one of them all zeros and one with a single outlier."""
    g = torch.Generator().manual_seed(seed)
    m, k = shape
    x = torch.randn(m, k, generator=g) * torch.logspace(-3, 2, m)[:, None]
    x[m // 2] = 0.0
    if m > 2:
        x[-1, k // 3] = 900.0
    return x.to(device, dtype)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def _bytes(q: torch.Tensor) -> torch.Tensor:
    return q.view(torch.uint8)


@pytest.mark.parametrize("layout", quantize_module.LAYOUTS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("shape", SHAPES)
def test_kernel_is_the_reference(shape, dtype, layout, device):
    x = _rows(shape, dtype, device, seed=shape[1])
    q, scale = quantize_rows(x, layout=layout)
    q_ref, scale_ref = quantize_rows_ref(x)
    assert q.dtype == torch.float8_e4m3fn and q.shape == shape and scale.shape == (shape[0], 1)
    assert torch.equal(scale, scale_ref)
    assert torch.equal(_bytes(q), _bytes(q_ref))
    assert torch.all(q[shape[0] // 2].float() == 0) and torch.isfinite(q.float()).all()
    # each row's largest magnitude lands on e4m3's largest finite value
    nonzero = x.float().abs().amax(dim=1) > 0
    assert torch.all(q.float().abs().amax(dim=1)[nonzero] == E4M3_MAX)


@pytest.mark.parametrize("layout", ["row", "tiles"])
@pytest.mark.parametrize("shape", [(5, 96), (7, 1100)])
def test_gelu_kernel_matches_the_reference(shape, layout, device):
    """The kernel's GELU is the same tanh formula computed another way: scales agree to float32
    rounding, and an element may round to the neighbouring e4m3 value, rarely (values compared:
    a GELU that underflows gives -0 from one formula and +0 from the other)."""
    x = _rows(shape, torch.float32, device, seed=3)
    q, scale = quantize_rows(x, gelu=True, layout=layout)
    q_ref, scale_ref = quantize_rows_ref(x, gelu=True)
    torch.testing.assert_close(scale, scale_ref, rtol=1e-6, atol=0)
    differ = q.float() != q_ref.float()
    assert differ.float().mean() < 0.01
    step = (q.float() - q_ref.float()).abs()[differ]
    assert torch.all(step <= q_ref.float().abs()[differ] / 8 + 2.0**-9)  # one e4m3 step at most


def test_strided_rows_and_leading_dims(device):
    """A (B, T, N, K) input and a view with a row stride wider than K read the same rows."""
    base = torch.randn(2, 3, 5, 80, device=device)
    view = base[..., :64]
    q, scale = quantize_rows(view)
    q_ref, scale_ref = quantize_rows_ref(view.contiguous())
    assert q.shape == (30, 64) and torch.equal(_bytes(q), _bytes(q_ref)) and torch.equal(scale, scale_ref)


@pytest.mark.parametrize("gelu", [False, True])
def test_ops_routes_and_dequantizes(gelu, device):
    """``ops.quantize_rows``: the kernel on the Triton path, its own torch math elsewhere, the
    same bytes; ``q * scale`` within e4m3's half step (1/16 relative) of the input."""
    x = _rows((9, 96), torch.float32, device, seed=5)
    with torch.no_grad(), dispatch.force("torch"):
        q_t, s_t = ops.quantize_rows(x, gelu)
    with torch.no_grad(), dispatch.force("triton"):
        q_k, s_k = ops.quantize_rows(x, gelu)
    q_ref, s_ref = quantize_rows_ref(x, gelu)
    assert torch.equal(_bytes(q_t), _bytes(q_ref)) and torch.equal(s_t, s_ref)
    if not gelu:
        assert torch.equal(_bytes(q_k), _bytes(q_ref))
    target = torch.nn.functional.gelu(x, approximate="tanh") if gelu else x
    deq = q_t.float() * s_t
    assert torch.all((deq - target).abs() <= target.abs() / 16 + s_t * 2.0**-9 + 1e-12)


@pytest.mark.gpu
@pytest.mark.parametrize("k,gelu", [(1536, False), (8960, True)])
def test_bf16_at_the_wan_shape(k, gelu):
    """bf16 rows as the wan-1.3b-shape forward makes them (4680 tokens): the compiled kernel's
    hardware cast against torch's."""
    x = (torch.randn(4680, k, device="cuda") * 2).to(torch.bfloat16)
    q, scale = quantize_rows(x, gelu)
    q_ref, scale_ref = quantize_rows_ref(x, gelu)
    if gelu:  # the compiled GELU takes the GPU's approximate tanh (~2^-11 relative)
        torch.testing.assert_close(scale, scale_ref, rtol=1e-3, atol=0)
        assert (q.float() != q_ref.float()).float().mean() < 0.03
        assert _rel(q.float() * scale, q_ref.float() * scale_ref) < 0.03
    else:
        assert torch.equal(scale, scale_ref) and torch.equal(_bytes(q), _bytes(q_ref))


def test_layouts_are_named_alike_and_rows_too_wide_take_tiles(monkeypatch, device):
    assert ops.QUANTIZE_LAYOUTS == quantize_module.LAYOUTS
    with pytest.raises(ValueError, match="unknown quantize layout"):
        quantize_module.launch_layout(96, "columns")
    assert quantize_module.launch_layout(8960, "row")[1] == 16384  # the wan FFN's row, whole
    assert quantize_module.launch_layout(20000, "row") == quantize_module.launch_layout(20000, "tiles")
    monkeypatch.setattr(quantize_module, "MAX_ROW_TILE", 256)
    x = _rows((6, 1100), torch.float32, device, seed=9)
    q, s = quantize_rows(x)  # the "row" layout now reads the rows in tiles: the same bytes
    q_ref, s_ref = quantize_rows_ref(x)
    assert torch.equal(_bytes(q), _bytes(q_ref)) and torch.equal(s, s_ref)

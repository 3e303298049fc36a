"""LayerNorm + adaLN modulate, gated residual and GELU kernels against their references."""
from __future__ import annotations

import pytest
import torch

from morphcam.kernels.gated_residual import gated_residual, gated_residual_ref
from morphcam.kernels.gelu import gelu, gelu_ref
from morphcam.kernels.layer_norm_modulate import layer_norm_modulate, layer_norm_modulate_ref

SHAPES = [(1, 1, 12, 32), (2, 1, 20, 48), (2, 3, 5, 64)]  # (B, T, N, D); D = 48 is not a power of two
DTYPES = [(torch.float32, 1e-5), (torch.float16, 2e-3)]


def _mod(b, t, d, dtype, device):
    """Shift, scale and gate as the network makes them: strided views of one (B, T, 6, D) tensor."""
    mod = torch.randn(b, t, 6, d, device=device, dtype=dtype) * 0.5
    return mod.unsqueeze(3).unbind(2)[:3]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype,tol", DTYPES)
def test_layer_norm_modulate(shape, dtype, tol, device, rel_error):
    b, t, n, d = shape
    x = torch.randn(shape, device=device, dtype=dtype) * 3 + 1
    shift, scale, _ = _mod(b, t, d, dtype, device)
    out = layer_norm_modulate(x, shift, scale, 1e-6)
    ref = layer_norm_modulate_ref(x.double(), shift.double(), scale.double(), 1e-6)
    assert out.shape == x.shape and out.dtype == dtype
    assert rel_error(out, ref) < tol


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype,tol", DTYPES)
def test_gated_residual(shape, dtype, tol, device, rel_error):
    b, t, n, d = shape
    x, y = torch.randn(shape, device=device, dtype=dtype), torch.randn(shape, device=device, dtype=dtype)
    _, _, gate = _mod(b, t, d, dtype, device)
    out = gated_residual(x, y, gate)
    assert rel_error(out, gated_residual_ref(x.double(), y.double(), gate.double())) < tol


@pytest.mark.parametrize("numel", [7, 4096 + 5])
@pytest.mark.parametrize("dtype,tol", DTYPES)
def test_gelu(numel, dtype, tol, device, rel_error):
    x = torch.randn(numel, device=device, dtype=dtype) * 4
    x[0] = 30.0  # the tails: tanh saturates to exactly +-1
    if numel > 1:
        x[1] = -30.0
    out = gelu(x.view(-1, 1) if numel % 2 else x)
    assert rel_error(out.view(-1), gelu_ref(x.double())) < tol

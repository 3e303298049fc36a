"""tanh-approximated GELU, computed in fp32 registers and stored once in the input's dtype."""
from __future__ import annotations

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

BLOCK = 1024  # a frame's FFN activations are ~150k-600k elements: ~150-600 programs


@triton.jit
def _gelu_kernel(
    x_ptr,  # reads x, flat, contiguous
    out_ptr,  # writes gelu(x), flat, contiguous
    numel,
    BLOCK: tl.constexpr,
):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < numel
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    u = 0.7978845608028654 * (x + 0.044715 * x * x * x)  # sqrt(2 / pi) * (x + 0.044715 x^3)
    # tanh(u) = 1 - 2 / (exp(2u) + 1); |u| <= 15 already gives +-1 in fp32, and the clamp keeps exp finite.
    u = tl.minimum(tl.maximum(u, -15.0), 15.0)
    th = 1.0 - 2.0 / (tl.exp(2.0 * u) + 1.0)
    tl.store(out_ptr + offs, (0.5 * x * (1.0 + th)).to(out_ptr.dtype.element_ty), mask=mask)


def gelu(x: torch.Tensor) -> torch.Tensor:
    """x: any shape. Returns tanh-GELU of x, same shape and dtype."""
    x = x.contiguous()
    out = torch.empty_like(x)
    _gelu_kernel[(triton.cdiv(x.numel(), BLOCK),)](x, out, x.numel(), BLOCK=BLOCK, num_warps=4)
    return out


def gelu_ref(x: torch.Tensor) -> torch.Tensor:
    """The torch reference (model/ops.py's math)."""
    return F.gelu(x, approximate="tanh")

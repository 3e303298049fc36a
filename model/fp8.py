"""FP8 linears for inference on GPUs with FP8 tensor cores (Ada, Hopper and newer).

``to_fp8(dit)`` swaps a denoiser's block linears for ``FP8Linear``: weights stored once in e4m3
with one scale per output channel, each input row quantized on the fly with its own scale
(``ops.quantize_rows``), the product on FP8 tensor cores (``ops.linear_fp8``) with the bias added
and the result in the model's dtype. The FFN's GELU moves from the first GEMM's epilogue into the
quantization of the second GEMM's input (``FP8Linear.gelu_quantized``), so the wide activation is
written once at a byte per element.

At `wan-1.3b-shape` sizes the FP8 GEMMs run at about twice the bf16 rate (``bench/fp8_gemm.py``).
Small models gain nothing: their GEMMs are too small to be bound by the tensor cores. Inference
only: there is no backward, and a converted model is not saved (convert after loading).
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import torch
from torch import nn

from ..kernels import dispatch
from . import ops

# The block linears converted by default: every GEMM a forward runs per token. The prompt's
# cross-attention K/V (``cross_kv``) stay: they run once per chunk on the text tokens.
FP8_LINEARS = ("qkv", "attn_out", "cross_q", "cross_out", "ffn_in", "ffn_out")


class QuantizedRows(NamedTuple):
    """An activation already in FP8: q (M, K) e4m3, scale (M, 1) float32, and the leading shape
    of the tensor it came from (its rows flattened into M)."""

    q: torch.Tensor
    scale: torch.Tensor
    lead: tuple[int, ...]


class FP8Linear(nn.Module):
    """``nn.Linear``'s forward with e4m3 weights (scales per output channel) and e4m3 inputs
    (scales per row). Built from a trained ``nn.Linear``; holds no float copy of the weight."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        n, k = linear.weight.shape
        if n % 16 or k % 16:
            raise ValueError(f"FP8 GEMMs need both sizes of a linear to be multiples of 16, got {n}x{k}: "
                             "keep this layer in bf16 (leave it out of to_fp8's names)")
        # The weight once, by the torch math: the kernel's bytes, without timing its launch layouts
        # for a shape that is quantized only here.
        with torch.no_grad(), dispatch.force("torch"):
            weight_q, weight_scale = ops.quantize_rows(linear.weight.detach())
        self.in_features, self.out_features = k, n
        self.register_buffer("weight_q", weight_q)
        self.register_buffer("weight_scale", weight_scale.t().contiguous())  # (1, N)
        bias = linear.bias.detach().clone() if linear.bias is not None else None
        self.register_buffer("bias", bias)
        self.out_dtype = linear.weight.dtype

    def forward(self, x: torch.Tensor | QuantizedRows) -> torch.Tensor:
        """x: (..., K) float, or the ``QuantizedRows`` of one. Returns (..., N) in the model's dtype."""
        if not isinstance(x, QuantizedRows):
            x = QuantizedRows(*ops.quantize_rows(x), tuple(x.shape[:-1]))
        y = ops.linear_fp8(x.q, x.scale, self.weight_q, self.weight_scale, self.bias, self.out_dtype)
        return y.view(*x.lead, self.out_features)

    def gelu_quantized(self, x: torch.Tensor | QuantizedRows) -> QuantizedRows:
        """``gelu(self(x))`` (tanh), handed on quantized for the next FP8 linear (the FFN's second half)."""
        y = self(x)
        return QuantizedRows(*ops.quantize_rows(y, gelu=True), tuple(y.shape[:-1]))

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, e4m3"


def fp8_supported(device: torch.device | str) -> bool:
    """FP8 tensor cores on this device: CUDA with compute capability 8.9 or newer, or the CPU
    (``torch._scaled_mm`` runs there too, slowly: for tests)."""
    device = torch.device(device)
    if device.type == "cpu":
        return True
    return device.type == "cuda" and torch.cuda.get_device_capability(device) >= (8, 9)


def fp8_unavailable(dit: nn.Module, names: Sequence[str] = FP8_LINEARS) -> str | None:
    """Why ``dit`` cannot serve with FP8 linears here, or None: it needs a CUDA device with FP8
    tensor cores, bfloat16 weights, and sizes that are multiples of 16. (``to_fp8`` itself also
    converts on a CPU, slowly, for tests.)"""
    return _fp8_problem(dit, names, allow_cpu=False)


def _fp8_problem(dit: nn.Module, names: Sequence[str], allow_cpu: bool) -> str | None:
    p = next(dit.parameters())
    if p.device.type == "cpu" and allow_cpu:
        pass
    elif p.device.type != "cuda":
        return f"FP8 linears run on a CUDA GPU with FP8 tensor cores; the model is on {p.device}"
    elif not fp8_supported(p.device):
        cap = ".".join(map(str, torch.cuda.get_device_capability(p.device)))
        return f"{torch.cuda.get_device_name(p.device)} (compute capability {cap}) has no FP8 tensor cores (8.9 or newer)"
    elif p.dtype != torch.bfloat16:
        return (f"FP8 linears on a GPU need a bfloat16 model, this one is {p.dtype}: load it in bfloat16 "
                f"(the daemon: model.dtype = \"bfloat16\" or \"auto\")")
    for blk in dit.blocks:
        for name in names:
            lin = getattr(blk, name)
            if isinstance(lin, nn.Linear) and (lin.in_features % 16 or lin.out_features % 16):
                return f"{name} is {lin.in_features} -> {lin.out_features}; FP8 GEMMs need multiples of 16"
    return None


def to_fp8(dit: nn.Module, names: Sequence[str] = FP8_LINEARS) -> nn.Module:
    """Swap each block's linears named in ``names`` for ``FP8Linear``, in place. Returns ``dit``.

    ``dit``: a ``CausalDiT`` in inference (its weights do not change afterwards). On a GPU the
    model must be bfloat16 (the row-wise FP8 GEMM writes bf16); a CPU computes the same product
    from the dequantized operands (tests)."""
    unknown = set(names) - set(FP8_LINEARS)
    if unknown:
        raise ValueError(f"unknown block linears {sorted(unknown)}; choose from {FP8_LINEARS}")
    reason = _fp8_problem(dit, names, allow_cpu=True)
    if reason is not None:
        raise ValueError(reason)
    for blk in dit.blocks:
        for name in names:
            lin = getattr(blk, name)
            if isinstance(lin, nn.Linear):
                setattr(blk, name, FP8Linear(lin))
    return dit

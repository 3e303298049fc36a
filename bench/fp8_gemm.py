"""Does FP8 pay for the large GEMMs on Hopper? The `wan-1.3b-shape` block's linears, bf16 against
FP8 (e4m3) through ``torch._scaled_mm``, with the cost of quantizing the activations beside them.

Shapes: one forward of LongLive's chunk, 4680 token rows (3 latent frames x 1560 tokens), dim
1536, FFN 8960: QKV (1536 -> 4608), the attention and cross-attention projections
(1536 -> 1536), the FFN's two halves (1536 -> 8960 with its GELU, 8960 -> 1536).

Arms per shape, each timed with L2 flushed between calls (median of triton's do_bench):
  bf16            F.linear (the FFN's first half: cuBLASLt's GEMM + bias + GELU epilogue)
  fp8 tensor      one scale per tensor, fast accumulation (the GEMM alone, inputs already FP8)
  fp8 tensor acc  the same with accumulation promoted at every tile (use_fast_accum=False)
  fp8 row         one scale per activation row and per weight column (rowwise), fast accumulation
  quantize        the activation's own cost: row amax, scale and cast, as eager torch ops and as
                  one torch.compile'd kernel
Also the relative error of each FP8 output against bf16 on the same random inputs, and the FP8
matmul ceiling (8192^3) beside the bf16 one.

    python bench/fp8_gemm.py --out fp8.json
"""
from __future__ import annotations

import argparse
import json

import torch
import torch.nn.functional as F

from benchlib import bench_ms

E4M3 = torch.float8_e4m3fn
E4M3_MAX = 448.0
SHAPES = {  # name: (K, N)
    "qkv": (1536, 4608),
    "proj": (1536, 1536),
    "ffn_in": (1536, 8960),
    "ffn_out": (8960, 1536),
}


def quantize_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(M, K) bf16 -> (M, K) e4m3 and its (M, 1) float32 dequantization scales."""
    amax = x.abs().amax(dim=1, keepdim=True).float().clamp_min(1e-12)
    scale = amax / E4M3_MAX
    return (x.float() / scale).to(E4M3), scale


def quantize_tensor(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    scale = (x.abs().amax().float().clamp_min(1e-12) / E4M3_MAX)
    return (x.float() / scale).to(E4M3), scale


def rel_err(y: torch.Tensor, ref: torch.Tensor) -> float:
    return float((y.float() - ref.float()).norm() / ref.float().norm())


def one_shape(name: str, rows: int, k: int, n: int) -> dict:
    dev = "cuda"
    x = torch.randn(rows, k, device=dev, dtype=torch.bfloat16)
    if name == "ffn_out":  # the GELU's output: mostly small, some large positives
        x = F.gelu(x * 2, approximate="tanh").to(torch.bfloat16)
    w = (torch.randn(n, k, device=dev) / k**0.5).to(torch.bfloat16)
    b = (torch.randn(n, device=dev) * 0.1).to(torch.bfloat16)
    flops = 2 * rows * k * n
    out: dict = {"shape": [rows, k, n], "GFLOP": flops / 1e9}

    if name == "ffn_in":
        ref = torch._addmm_activation(b, x, w.t(), use_gelu=True)
        ms = bench_ms(lambda: torch._addmm_activation(b, x, w.t(), use_gelu=True))
    else:
        ref = F.linear(x, w, b)
        ms = bench_ms(lambda: F.linear(x, w, b))
    out["bf16_ms"] = ms

    xq_t, sx_t = quantize_tensor(x)
    wq_t, sw_t = quantize_tensor(w)
    xq_r, sx_r = quantize_rows(x)
    wq_r, sw_r = quantize_rows(w)  # per output channel
    post = (lambda y: F.gelu(y, approximate="tanh")) if name == "ffn_in" else (lambda y: y)

    def mm_tensor(fast: bool):
        return torch._scaled_mm(xq_t, wq_t.t(), scale_a=sx_t, scale_b=sw_t, bias=b,
                                out_dtype=torch.bfloat16, use_fast_accum=fast)

    def mm_rows():
        return torch._scaled_mm(xq_r, wq_r.t(), scale_a=sx_r, scale_b=sw_r.t().contiguous(), bias=b,
                                out_dtype=torch.bfloat16, use_fast_accum=True)

    arms = {"fp8_tensor": lambda: mm_tensor(True), "fp8_tensor_acc": lambda: mm_tensor(False),
            "fp8_row": mm_rows}
    for arm, fn in arms.items():
        try:
            y = post(fn())
            out[f"{arm}_ms"] = bench_ms(fn)
            out[f"{arm}_rel_err"] = rel_err(y, ref)
        except RuntimeError as e:  # an arm this build or GPU does not support
            out[f"{arm}_error"] = str(e).splitlines()[0][:200]
    out["bf16_TFLOPs"] = flops / out["bf16_ms"] / 1e9
    for arm in arms:
        if f"{arm}_ms" in out:
            out[f"{arm}_TFLOPs"] = flops / out[f"{arm}_ms"] / 1e9
    out["quantize_rows_eager_ms"] = bench_ms(lambda: quantize_rows(x))
    compiled = torch.compile(quantize_rows, dynamic=False)
    compiled(x)
    out["quantize_rows_compiled_ms"] = bench_ms(lambda: compiled(x))
    out["activation_MB"] = x.numel() * x.element_size() / 1e6
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=4680, help="token rows per GEMM (3 frames x 1560)")
    ap.add_argument("--out", default=None, help="write the figures as JSON here")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("fp8_gemm.py needs a CUDA GPU (Hopper or newer for FP8)")
    torch.manual_seed(0)
    res: dict = {"device": torch.cuda.get_device_name(), "torch": torch.__version__}
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    res["bf16_ceiling_TFLOPs"] = 2 * 8192**3 / bench_ms(lambda: a @ a.t()) / 1e9
    aq = a.to(E4M3)
    one = torch.ones((), device="cuda")
    res["fp8_ceiling_TFLOPs"] = 2 * 8192**3 / bench_ms(
        lambda: torch._scaled_mm(aq, aq.t(), scale_a=one, scale_b=one, out_dtype=torch.bfloat16,
                                 use_fast_accum=True)) / 1e9
    del a, aq
    print(f"ceilings: bf16 {res['bf16_ceiling_TFLOPs']:.0f}, fp8 {res['fp8_ceiling_TFLOPs']:.0f} TFLOP/s")
    res["shapes"] = {}
    for name, (k, n) in SHAPES.items():
        r = one_shape(name, args.rows, k, n)
        res["shapes"][name] = r
        cells = [f"bf16 {r['bf16_ms'] * 1e3:.0f} us ({r['bf16_TFLOPs']:.0f} TF/s)"]
        for arm in ("fp8_tensor", "fp8_tensor_acc", "fp8_row"):
            if f"{arm}_ms" in r:
                cells.append(f"{arm} {r[f'{arm}_ms'] * 1e3:.0f} us ({r[f'{arm}_TFLOPs']:.0f}, "
                             f"err {r[f'{arm}_rel_err']:.4f})")
            else:
                cells.append(f"{arm}: {r[f'{arm}_error']}")
        cells.append(f"quantize eager {r['quantize_rows_eager_ms'] * 1e3:.0f} us, "
                     f"compiled {r['quantize_rows_compiled_ms'] * 1e3:.0f} us")
        print(f"{name} {r['shape']}: " + "; ".join(cells))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()

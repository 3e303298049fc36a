"""Does FP8 attention pay on Hopper? The `wan-1.3b-shape` steady attention (one forward of LongLive's
chunk: 4680 queries x 18,720 keys x 12 heads x 128) through cuDNN and FLASH in bf16 against
``kernels.attention_fp8`` at several launches: Q @ K^T in e4m3 with P @ V in e4m3 ("fp8") or bf16
("fp8 qk"), Q @ K^T in int8 as SageAttention does ("int8 qk", "int8 qk, fp8 pv"), and the same
kernel on bf16 operands ("bf16"), with the cost of quantizing the inputs
(eager torch ops and ``ops.quantize_rows``) beside them.

Accuracy: each output's relative L2 error against float32 attention of the same bf16 inputs.
Timing: triton's do_bench (L2 flushed between calls), median.

    python bench/fp8_attention.py --out fp8_attention.json
"""
from __future__ import annotations

import argparse
import json
import math

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from benchlib import bench_ms
from morphcam.kernels.attention_fp8 import attention_fp8
from morphcam.model import ops

E4M3 = torch.float8_e4m3fn
LAUNCHES = [  # block_m, block_n, num_warps, num_stages
    (128, 128, 8, 2), (128, 128, 8, 3), (128, 128, 8, 4), (128, 64, 8, 3), (128, 64, 4, 3),
    (64, 128, 4, 3), (64, 64, 4, 4), (128, 256, 8, 2),
]


def rel_err(y: torch.Tensor, ref: torch.Tensor) -> float:
    return float((y.float() - ref.float()).norm() / ref.float().norm())


def int8_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(M, K) -> (M, K) int8 and (M, 1) float32 scales, amax / 127 per row (SageAttention's Q/K)."""
    scale = (x.float().abs().amax(dim=1, keepdim=True) * (1.0 / 127.0)).clamp_min(1e-30)
    return torch.round(x.float() * (1.0 / scale)).to(torch.int8), scale


def quantize_inputs(q, k, v, block_n: int, pv_fp8: bool, qk_int8: bool = False):
    """q: (H, Lq, D) token-major; k, v: (H, L, D) -> the operands of ``attention_fp8`` (keys padded)."""
    h, lq, d = q.shape
    length = k.shape[1]
    padded = -(-length // block_n) * block_n
    rows = int8_rows if qk_int8 else ops.quantize_rows
    q8, qs = rows(q.transpose(0, 1).reshape(lq * h, d))
    q8, qs = q8.view(lq, h, d).transpose(0, 1), qs.view(lq, h).t()
    kp = F.pad(k, (0, 0, 0, padded - length))
    k8, ks = rows(kp.reshape(h * padded // block_n, block_n * d))
    k8, ks = k8.view(h, padded, d), ks.view(h, padded // block_n)
    vp = F.pad(v, (0, 0, 0, padded - length))
    if pv_fp8:
        vs = (vp.abs().amax(dim=1).float() * (1.0 / 448.0)).clamp_min(1e-30)
        v8 = (vp.float() * (1.0 / vs[:, None, :])).to(E4M3).transpose(1, 2).contiguous()
    else:
        v8, vs = vp, None
    bias = torch.zeros(padded, device=q.device)
    bias[length:] = float("-inf")
    return q8, qs, k8, ks, v8, vs, bias


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--heads", type=int, default=12)
    ap.add_argument("--queries", type=int, default=4680)
    ap.add_argument("--keys", type=int, default=18720)
    ap.add_argument("--head-dim", type=int, default=128)
    ap.add_argument("--logit-scale", type=float, default=2.0, help="query scale: peakier attention than unit")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.manual_seed(0)
    h, lq, length, d = args.heads, args.queries, args.keys, args.head_dim
    dev, bf = "cuda", torch.bfloat16
    q = (torch.randn(lq, h, d, device=dev) * args.logit_scale).to(bf).transpose(0, 1)  # token-major
    k = torch.randn(h, length, d, device=dev, dtype=bf) + 0.3 * torch.randn(h, 1, d, device=dev, dtype=bf)
    v = torch.randn(h, length, d, device=dev, dtype=bf)
    flops = 4 * h * lq * length * d
    ref = F.scaled_dot_product_attention(q.float()[None], k.float()[None], v.float()[None])[0]
    rows = []

    def record(name: str, ms: float, out: torch.Tensor | None, **extra) -> None:
        row = dict(arm=name, ms=round(ms, 4), tflops=round(flops / ms / 1e9, 1), **extra)
        if out is not None:
            row["rel_err"] = round(rel_err(out, ref), 5)
        rows.append(row)
        print(json.dumps(row), flush=True)

    for name, backend in (("cudnn bf16", SDPBackend.CUDNN_ATTENTION), ("flash bf16", SDPBackend.FLASH_ATTENTION)):
        with sdpa_kernel(backend):
            fn = lambda: F.scaled_dot_product_attention(q[None], k[None], v[None])  # noqa: E731
            record(name, bench_ms(fn), fn()[0])
    for bn in sorted({launch[1] for launch in LAUNCHES}):
        for pv in (True, False):
            ms = bench_ms(lambda: quantize_inputs(q, k, v, bn, pv))
            rows.append(dict(arm=f"quantize (block_n {bn}, {'fp8' if pv else 'bf16'} values)", ms=round(ms, 4)))
            print(json.dumps(rows[-1]), flush=True)
    for bm, bn, warps, stages in LAUNCHES:
        launch = dict(block_m=bm, num_warps=warps, num_stages=stages)
        for arm, pv, i8 in (("fp8", True, False), ("fp8 qk", False, False), ("int8 qk, fp8 pv", True, True),
                            ("int8 qk", False, True)):
            ops_ = quantize_inputs(q, k, v, bn, pv, i8)
            try:
                fn = lambda: attention_fp8(*ops_, bn, bf, **launch)  # noqa: E731
                record(arm, bench_ms(fn), fn(), block_n=bn, **launch)
            except Exception as exc:  # a launch that does not fit (shared memory, registers)
                rows.append(dict(arm=arm, block_n=bn, **launch, error=str(exc).splitlines()[0][:200]))
                print(json.dumps(rows[-1]), flush=True)
        if bn in (64, 128) and stages == 3:
            pad = -(-length // bn) * bn - length
            kp, vp = F.pad(k, (0, 0, 0, pad)), F.pad(v, (0, 0, 0, pad))
            ones_q = torch.ones(h, lq, device=dev)
            ones_k = torch.ones(h, kp.shape[1] // bn, device=dev)
            bias = torch.zeros(kp.shape[1], device=dev)
            bias[length:] = float("-inf")
            try:
                fn = lambda: attention_fp8(q, ones_q, kp, ones_k, vp, None, bias, bn, bf, **launch)  # noqa: E731
                record("bf16", bench_ms(fn), fn(), block_n=bn, **launch)
            except Exception as exc:
                print(json.dumps(dict(arm="bf16", block_n=bn, **launch, error=str(exc)[:200])), flush=True)
    best = {}
    for row in rows:
        if "tflops" in row and (row["arm"] not in best or row["ms"] < best[row["arm"]]["ms"]):
            best[row["arm"]] = row
    print("best per arm:", json.dumps(best, indent=1))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(dict(shape=dict(heads=h, queries=lq, keys=length, head_dim=d), rows=rows, best=best), f, indent=1)


if __name__ == "__main__":
    main()

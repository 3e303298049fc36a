"""Compile every Triton kernel for sm_90 (H100/H200) on any machine, no GPU needed, and read the SASS.

Reports per kernel and block configuration whether the matrix products use wgmma (HGMMA) or
mma (HMMA), and how many local-memory instructions (LDL/STL: spills or register arrays indexed
at run time) the compiler emitted. The wrappers' block choices keep that count at zero.

    python bench/kernel_sass.py
"""
from __future__ import annotations

import os
import re
import subprocess
import tempfile
import warnings


def main() -> None:
    os.environ.pop("TRITON_INTERPRET", None)  # interpreted functions cannot be compiled
    warnings.filterwarnings("ignore")
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from morphcam.kernels import gated_residual, gelu, layer_norm_modulate, qk_norm_rope, residual_norm, ring_attention

    cuobjdump = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    target = GPUTarget("cuda", 90, 32)

    def report(name, fn, sig, consts, warps, stages=3):
        signature = {**sig, **{k: "constexpr" for k in consts}}
        k = triton.compile(ASTSource(fn=fn, signature=signature, constexprs=consts), target=target,
                           options={"num_warps": warps, "num_stages": stages})
        with tempfile.NamedTemporaryFile("wb", suffix=".cubin") as f:
            f.write(k.asm["cubin"])
            f.flush()
            sass = subprocess.run([cuobjdump, "-sass", f.name], capture_output=True, text=True).stdout
        local = len(re.findall(r"\b(?:LDL|STL)(?:\.[A-Z0-9]+)*\b", sass))
        mma = "HGMMA" if "HGMMA" in sass else ("HMMA" if "HMMA" in sass else "-")
        print(f"| {name} | {warps} | {mma} | {local} |", flush=True)

    print("| kernel (bf16, sm_90) | warps | matrix instr. | LDL/STL |")
    print("|---|---|---|---|")
    p = "*bf16"
    for d in (256, 512, 1536):
        bd = triton.next_power_of_2(d)
        bm = max(1, min(64, 2048 // bd))
        warps = 4 if bd <= 1024 else 8
        rows = {"M": "i32", "D": "i32", "N": "i32", "T": "i32"}
        report(f"layer_norm_modulate D={d}", layer_norm_modulate._layer_norm_modulate_kernel,
               {"x_ptr": p, "shift_ptr": p, "scale_ptr": p, "out_ptr": p, **rows, "stride_x": "i32",
                "shift_sb": "i32", "shift_st": "i32", "scale_sb": "i32", "scale_st": "i32", "eps": "fp32"},
               {"BLOCK_M": bm, "BLOCK_D": bd}, warps)
        report(f"gated_residual D={d}", gated_residual._gated_residual_kernel,
               {"x_ptr": p, "y_ptr": p, "gate_ptr": p, "out_ptr": p, **rows, "gate_sb": "i32", "gate_st": "i32"},
               {"BLOCK_M": bm, "BLOCK_D": bd}, 4)
        for gate, affine in ((True, True), (False, False)):  # the block's two calls
            for quant in (False, True):  # h in bf16, or e4m3 rows for an FP8 linear
                report(f"residual_norm D={d} gate={gate} affine={affine} quant={quant}",
                       residual_norm._residual_norm_kernel,
                       {"x_ptr": p, "y_ptr": p, "gate_ptr": p, "shift_ptr": p, "scale_ptr": p, "x_out_ptr": p,
                        "h_ptr": "*fp8e4nv" if quant else p, "h_scale_ptr": "*fp32" if quant else p, **rows,
                        "gate_sb": "i32", "gate_st": "i32", "shift_sb": "i32", "shift_st": "i32",
                        "scale_sb": "i32", "scale_st": "i32", "eps": "fp32"},
                       {"HAS_GATE": gate, "AFFINE": affine, "QUANT": quant, "ROUND": False,
                        "BLOCK_M": bm, "BLOCK_D": bd}, warps)
    report("gelu", gelu._gelu_kernel, {"x_ptr": p, "out_ptr": p, "numel": "i32"}, {"BLOCK": gelu.BLOCK}, 4)
    strides = {f"s{t}_{a}": "i32" for t in "qkvo" for a in "bhl"}  # q, k, v in; o: q (and k) out
    for block_l in (16, 32):
        for ring in (False, True):
            report(f"qk_norm_rope Dh=64 BLOCK_L={block_l} ring={ring}", qk_norm_rope._qk_norm_rope_kernel,
                   {"q_ptr": p, "k_ptr": p, "v_ptr": p, "qw_ptr": p, "kw_ptr": p, "cos_ptr": p, "sin_ptr": p,
                    "q_out_ptr": p, "k_out_ptr": p, "v_out_ptr": p, "slot_ptr": "*i64", "lane_ptr": "*i64",
                    "H": "i32", "L": "i32", "N": "i32", "ring_rows": "i32", "lane_stride": "i32", **strides,
                    "eps": "fp32"},
                   {"DH": 64, "BLOCK_L": block_l, "WRITE_RING": ring, "LANES": False}, 4)
    for block_m, warps in ((16, 2), (32, 4), (64, 8)):
        report(f"ring_attention Dh=64 BLOCK_M={block_m} BLOCK_N=64", ring_attention._ring_attention_kernel,
               {"q_ptr": p, "k_ptr": p, "v_ptr": p, "fidx_ptr": "*i64", "valid_ptr": "*u8", "emb_ptr": p,
                "out_ptr": p, "lane_ptr": "*i64", "H": "i32", "Lq": "i32", "S": "i32", "N": "i32",
                "lane_stride": "i32", **{f"s{t}_{a}": "i32" for t in "qo" for a in "bhl"}, "qk_scale": "fp32"},
               {"DH": 64, "BLOCK_M": block_m, "BLOCK_N": 64, "IEEE": False, "LANES": False}, warps, 2)


if __name__ == "__main__":
    main()

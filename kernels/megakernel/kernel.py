"""The persistent mega-kernel: one ``@triton.jit`` program per SM walks its queue of tiles.

For each queued instruction a program waits until its (at most two) counters reach their targets
(volatile reads in a bounded spin, then an acquire read), runs the tile, and adds one to its own stage's
counter (a release add). A CTA barrier before the signal makes every thread's stores part of
the release; one after the wait spreads the acquire to every thread. If a wait spins more than
``max_spin`` times, or another program has already failed, the program records the failure in
``error`` ([code, instruction, program, launches]) and skips the rest of its queue, so a hang ends
as an error the host sees (``MegakernelExecutor`` then falls back) instead of a frozen stream. The
flag stays set afterwards, and a launch that finds it set runs in *safe mode*: program 0 alone
walks the whole table in order (listed stage by stage whatever the number of programs, a valid
topological order, so no waits), the others return. A CUDA graph captured with the kernel inside
thus keeps making correct frames, on one SM, until it is recaptured on the network. Safe mode
needs the step's prologue first, as a replay runs it: the tiles add to the residual stream ``x``
in place, so a failed launch leaves it part-way through the layers.

The grid never exceeds the SM count, so every program is resident and the waits can progress.
Under ``TRITON_INTERPRET=1`` (CPU tests) it runs with a single program.
"""
from __future__ import annotations

import math
from dataclasses import fields

import triton
import triton.language as tl

from .buffers import StepBuffers, Weights
from .program import FIELDS, Norm, Op, Program, Shape
from .tiles import attn_part_tile, attn_reduce_tile, cross_tile, ln_tile, mm_tile, qk_rope_tile

ERROR_TIMEOUT = 1  # error[0]: a wait spun max_spin times (or saw another program fail)


@triton.jit
def _megakernel(
    instr,  # reads the instruction table (I, FIELDS) int32
    queues,  # reads the per-program queues (P, QMAX) int32 instruction indices
    queue_len,  # reads each program's queue length (P,) int32
    counters,  # reads and increments the dependency counters (n_counters,) int32, zeroed before launch
    error,  # writes [code, instruction, program] on a watchdog timeout, counts launches in [3]; (4,) int32
    # Weights (stacked over layers; see buffers.Weights)
    w_qkv, b_qkv,  # reads (L, 3A, D), (L, 3A); A = H * DH, the attention width
    q_norm, k_norm,  # reads (L, DH) each
    frame_emb,  # reads (L, P, H, DH)
    w_o, b_o,  # reads (L, D, A), (L, D)
    w_cq, b_cq,  # reads (L, A, D), (L, A)
    w_ckv, b_ckv,  # reads (L, 2A, D), (L, 2A)
    w_co, b_co,  # reads (L, D, A), (L, D)
    w_f1, b_f1,  # reads (L, FFN, D), (L, FFN)
    w_f2, b_f2,  # reads (L, D, FFN), (L, D)
    w_out, b_out,  # reads (PO, D), (PO,)
    # Step buffers (see buffers.StepBuffers)
    x,  # reads and writes the residual stream (M, D)
    h,  # writes and reads the normalised rows (M, D); unused with FUSE_NORMS
    qkv,  # writes and reads (M, 3A)
    q,  # writes and reads the rotated queries (H, M, DH)
    attn,  # writes and reads the self/cross attention output (M, A)
    cq,  # writes and reads the cross queries (M, A)
    ckv,  # writes and reads the prompt's keys and values (LT, 2A)
    ffn,  # writes and reads the FFN activations (M, FFN)
    out,  # writes patch_out's output (M, PO)
    part_acc,  # writes and reads attention partials (S, H, M, DH) fp32
    part_ml,  # writes and reads partial max and sum (2, S, H, M) fp32
    norm_ac,  # reads the norms' (L + 1, 3, 2, T, D) tables
    gates,  # reads the residual gates (L, 2, T, D)
    text,  # reads the projected prompt tokens (LT, D)
    cos, sin,  # read the RoPE tables (N, DH / 2)
    ring_k, ring_v,  # write (chunk slots) and read the rings (lanes, L, H, S * N, DH), this step's lane
    frame_idx,  # reads each slot's frame index (lanes, S) long
    token_valid,  # reads (lanes, S, N) uint8
    slot_idx,  # reads the chunk's slots (lanes, T) long
    lane,  # reads the lane this step uses (1,) long
    QMAX, n_instr, max_spin, last, eps, sm_scale,  # last: run tiles with index <= last only (the rest just signal)
    M, T, N, S, LT, PO, FP,
    L, D: tl.constexpr, AD: tl.constexpr, H: tl.constexpr, DH: tl.constexpr, FFN: tl.constexpr,
    BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, BKV: tl.constexpr, BD: tl.constexpr,
    BLT: tl.constexpr, LN_ROWS: tl.constexpr, IEEE: tl.constexpr, FUSE_NORMS: tl.constexpr,
):
    pid = tl.program_id(0)
    if pid == 0:
        tl.atomic_add(error + 3, 1)  # launches: the host sees a captured graph still replaying this kernel
    # A flag left set by an earlier failure: safe mode, program 0 runs every tile in table order.
    safe = (tl.atomic_add(error, 0, sem="acquire") != 0).to(tl.int32)
    ok = tl.full((), 1, tl.int32)
    ln = tl.load(lane).to(tl.int64)  # the ring buffers of this step's lane
    ring_k += ln * L * H * S * N * DH
    ring_v += ln * L * H * S * N * DH
    frame_idx += ln * S
    token_valid += ln * S * N
    slot_idx += ln * T
    n_items = tl.load(queue_len + pid)
    if safe != 0:
        n_items = tl.where(pid == 0, n_instr, 0)
    for i in range(0, n_items):
        idx = i
        if safe == 0:
            idx = tl.load(queues + pid * QMAX + i)
        row = instr + idx * 10  # FIELDS
        op = tl.load(row + 0)
        layer = tl.load(row + 1)
        a = tl.load(row + 2)
        b = tl.load(row + 3)
        c = tl.load(row + 4)
        signal = tl.load(row + 9)
        for w in tl.static_range(2):  # (wait0, target0), (wait1, target1)
            wait = tl.load(row + 5 + 2 * w)
            target = tl.load(row + 6 + 2 * w)
            if (ok != 0) & (wait >= 0) & (safe == 0):
                # Spin on plain volatile reads (served by L2, no read-modify-write traffic on the
                # counter the other programs are adding to), then one acquire for the ordering.
                cnt = tl.load(counters + wait, volatile=True)
                err = tl.load(error, volatile=True)
                spins = tl.full((), 0, tl.int32)
                while (cnt < target) & (err == 0) & (spins < max_spin):
                    cnt = tl.load(counters + wait, volatile=True)
                    err = tl.load(error, volatile=True)
                    spins += 1
                cnt = tl.atomic_add(counters + wait, 0, sem="acquire")
                if (cnt < target) | (err != 0):  # timed out, or another program did: stop here
                    old = tl.atomic_cas(error, 0, 1)  # ERROR_TIMEOUT; the first failure names itself
                    if old == 0:
                        tl.store(error + 1, idx)
                        tl.store(error + 2, pid)
                    ok = tl.zeros_like(ok)
        tl.debug_barrier()
        if (ok != 0) & (idx <= last):
            lay = layer.to(tl.int64)
            # With FUSE_NORMS the matmuls of program.FUSED_NORM read x and normalise it themselves.
            src = h
            if FUSE_NORMS:
                src = x
            ac = norm_ac + lay * 3 * 2 * T * D  # this layer's (3, 2, T, D) norm tables
            if op == 0:  # Op.LN (only without FUSE_NORMS)
                if not FUSE_NORMS:
                    ln_tile(x, h, ac + b * 2 * T * D, a, M, T, N, eps, D, BM, BD, LN_ROWS)
            elif op == 1:  # Op.MM_QKV (norm ATTN)
                mm_tile(src, w_qkv + lay * 3 * AD * D, b_qkv + lay * 3 * AD, qkv, b_qkv, ac, M, 3 * AD, D, a, b, N,
                        T, eps, 0, FUSE_NORMS, BM, BN, BK, IEEE)
            elif op == 2:  # Op.QK_ROPE
                qk_rope_tile(qkv, q_norm + lay * DH, k_norm + lay * DH, cos, sin, slot_idx, q,
                             ring_k + lay * H * S * N * DH, ring_v + lay * H * S * N * DH,
                             b, a, M, N, S, eps, AD, DH, BM)
            elif op == 3:  # Op.ATTN_PART
                attn_part_tile(q, ring_k + lay * H * S * N * DH, ring_v + lay * H * S * N * DH, frame_idx,
                               token_valid, frame_emb + lay * FP * H * DH, part_acc, part_ml,
                               b, c, a, M, H, S, N, sm_scale, DH, BM, BKV, IEEE)
            elif op == 4:  # Op.ATTN_REDUCE
                attn_reduce_tile(part_acc, part_ml, attn, b, a, M, H, S, DH, BM)
            elif op == 5:  # Op.MM_O: x += gate1 * (attn @ Wo^T + b)
                mm_tile(attn, w_o + lay * D * AD, b_o + lay * D, x, gates + lay * 2 * T * D, ac, M, D, AD, a, b, N,
                        T, eps, 2, False, BM, BN, BK, IEEE)
            elif op == 6:  # Op.MM_CKV
                mm_tile(text, w_ckv + lay * 2 * AD * D, b_ckv + lay * 2 * AD, ckv, b_ckv, ac, LT, 2 * AD, D, a, b, N,
                        T, eps, 0, False, BM, BN, BK, IEEE)
            elif op == 7:  # Op.MM_CQ (norm CROSS)
                mm_tile(src, w_cq + lay * AD * D, b_cq + lay * AD, cq, b_cq, ac + 2 * T * D, M, AD, D, a, b, N,
                        T, eps, 0, FUSE_NORMS, BM, BN, BK, IEEE)
            elif op == 8:  # Op.CROSS_ATTN
                cross_tile(cq, ckv, attn, b, a, M, LT, sm_scale, AD, DH, BM, BLT, IEEE)
            elif op == 9:  # Op.MM_CO: x += attn @ Wco^T + b
                mm_tile(attn, w_co + lay * D * AD, b_co + lay * D, x, b_co, ac, M, D, AD, a, b, N,
                        T, eps, 3, False, BM, BN, BK, IEEE)
            elif op == 10:  # Op.MM_F1: gelu (norm FFN)
                mm_tile(src, w_f1 + lay * FFN * D, b_f1 + lay * FFN, ffn, b_f1, ac + 2 * 2 * T * D, M, FFN, D, a, b, N,
                        T, eps, 1, FUSE_NORMS, BM, BN, BK, IEEE)
            elif op == 11:  # Op.MM_F2: x += gate2 * (ffn @ W2^T + b)
                mm_tile(ffn, w_f2 + lay * D * FFN, b_f2 + lay * D, x, gates + (lay * 2 + 1) * T * D, ac, M, D, FFN,
                        a, b, N, T, eps, 2, False, BM, BN, BK, IEEE)
            else:  # Op.MM_OUT (norm ATTN at layer = L: the final adaLN)
                mm_tile(src, w_out, b_out, out, b_out, ac, M, PO, D, a, b, N, T, eps, 0, FUSE_NORMS, BM, BN, BK, IEEE)
        if ok != 0:
            tl.debug_barrier()  # every thread's stores happen before the release below
            tl.atomic_add(counters + signal, 1, sem="release")


def constexprs(shape: Shape, exact: bool, fuse_norms: bool = True) -> dict[str, int | bool]:
    """The kernel's compile-time sizes for ``shape`` (``exact``: fp32 with IEEE dots; ``fuse_norms``:
    the program's layout, see ``compile_program``)."""
    s = shape
    return dict(
        D=s.dim, AD=s.attn_width, H=s.n_heads, DH=s.head_dim, FFN=s.ffn_dim,
        BM=s.block_m, BN=s.block_n, BK=s.block_k, BKV=s.block_kv, BD=triton.next_power_of_2(s.dim),
        BLT=max(16, triton.next_power_of_2(s.text_tokens)),
        LN_ROWS=min(s.block_m, max(1, 4096 // triton.next_power_of_2(s.dim))),  # ~4k fp32 values at a time
        IEEE=exact, FUSE_NORMS=fuse_norms,
    )


def compile_report(shape: Shape, dtype: str = "bf16", arch: int = 90, num_warps: int = 8,
                   fuse_norms: bool = True) -> dict:
    """Compile the kernel for ``sm_<arch>`` without a GPU (Triton's bundled ptxas) and report shared
    memory, local-memory instructions (spills), the matrix instructions and the synchronisation
    the PTX uses. Needs TRITON_INTERPRET unset when this module was imported."""
    import os
    import re
    import subprocess
    import tempfile

    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    ptr = "*" + dtype
    sig = {"instr": "*i32", "queues": "*i32", "queue_len": "*i32", "counters": "*i32", "error": "*i32"}
    sig.update({f.name: ptr for f in fields(Weights)})
    sig.update({f.name: ptr for f in fields(StepBuffers)})
    sig.update(part_acc="*fp32", part_ml="*fp32", frame_idx="*i64", token_valid="*u8", slot_idx="*i64", lane="*i64")
    sig.update({n: "i32" for n in ("QMAX", "n_instr", "max_spin", "last")}, eps="fp32", sm_scale="fp32")
    sig.update({n: "i32" for n in ("M", "T", "N", "S", "LT", "PO", "FP", "L")})
    consts = constexprs(shape, dtype == "fp32", fuse_norms)
    names = list(sig) + list(consts)
    attrs = {(names.index(n),): [["tt.divisibility", 16]] for n, t in sig.items() if t.startswith("*")}
    src = ASTSource(fn=_megakernel, signature={**sig, **{k: "constexpr" for k in consts}}, constexprs=consts, attrs=attrs)
    k = triton.compile(src, target=GPUTarget("cuda", arch, 32), options={"num_warps": num_warps, "num_stages": 3})
    cuobjdump = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    with tempfile.NamedTemporaryFile("wb", suffix=".cubin") as f:
        f.write(k.asm["cubin"])
        f.flush()
        sass = subprocess.run([cuobjdump, "-sass", f.name], capture_output=True, text=True).stdout
    ptx = k.asm["ptx"]
    return {
        "arch": arch, "shared_bytes": k.metadata.shared,
        "local_memory_instructions": len(re.findall(r"\b(?:LDL|STL)(?:\.[A-Z0-9]+)*\b", sass)),
        "mma": "HGMMA" if "HGMMA" in sass else ("HMMA" if "HMMA" in sass else "-"),
        "acquire_loads": len(re.findall(r"ld\.global\.gpu\.acquire", ptx)),
        "release_adds": len(re.findall(r"red\.global\.gpu\.release\.add", ptx)),
        "volatile_spin_loads": ptx.count("ld.volatile.global"),
        "barrier_before_release": bool(re.search(r"bar\.sync[^\n]*\n(?:(?!ld\.|st\.)[^\n]*\n){0,8}?[^\n]*red\.global\.gpu\.release", ptx)),
    }


def launch(program: Program, weights: Weights, bufs: StepBuffers, counters, error, eps: float,
           max_spin: int = 1 << 22, last: int | None = None, num_warps: int = 8) -> None:
    """Run ``program`` (already on the buffers' device) with one Triton program per queue.

    counters: (n_counters,) int32, zeroed here; error: (4,) int32, left as it is (zeroed once by the
    caller, checked after the step); last: run only instructions 0..last (diffs).
    """
    s = program.shape
    if FIELDS != 10 or Op.MM_OUT != 12 or Norm.FFN != 2:
        raise RuntimeError("the kernel's opcode literals are out of date with program.Op")
    counters.zero_()
    last = len(program.instructions) - 1 if last is None else last
    exact = bufs.x.dtype.itemsize == 4
    _megakernel[(program.n_programs,)](
        program.instructions, program.queues, program.queue_len, counters, error,
        **{f.name: getattr(weights, f.name) for f in fields(weights)},
        **{f.name: getattr(bufs, f.name) for f in fields(bufs)},
        QMAX=program.queues.shape[1], n_instr=len(program.instructions), max_spin=max_spin, last=last, eps=eps, sm_scale=1.0 / math.sqrt(s.head_dim),
        M=s.rows, T=s.frames, N=s.tokens_per_frame, S=s.slots, LT=s.text_tokens, PO=s.out_dim, FP=s.frame_positions,
        L=s.n_layers, **constexprs(s, exact, program.fuse_norms), num_warps=num_warps,
    )

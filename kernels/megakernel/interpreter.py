"""The reference executor: runs a ``Program``'s instructions one by one in plain torch.

Each instruction computes exactly the tile the Triton kernel computes (same rows, columns,
heads and slots, fp32 math, stored in the buffers' dtype), in instruction-table order, which
is a valid topological order. ``run(..., stop_after=i)`` stops after instruction ``i``, so a
diff can find the first tile where two executors part.
"""
from __future__ import annotations

import math
import random

import torch
import torch.nn.functional as F

from .buffers import StepBuffers, Weights
from .program import FUSED_NORM, SIGNAL, WAITS, Op, Program


def _ln_rows(bufs: StepBuffers, layer: int, which: int, r0: int, r1: int, n: int, eps: float) -> torch.Tensor:
    """Norm ``which`` of x's rows r0..r1, rounded to h's dtype (what an LN tile stores, and what a
    fused matmul tile feeds its dot)."""
    x = bufs.x[r0:r1].float()
    y = F.layer_norm(x, (x.shape[-1],), eps=eps)
    frame = torch.arange(r0, r1, device=x.device) // n
    a, c = bufs.norm_ac[layer, which, 0, frame].float(), bufs.norm_ac[layer, which, 1, frame].float()
    return (y * a + c).to(bufs.h.dtype)


def _gelu(y: torch.Tensor) -> torch.Tensor:
    return F.gelu(y, approximate="tanh")


class Interpreter:
    """Executes instructions of ``program`` on ``bufs`` with ``weights`` (fp32 math per tile)."""

    def __init__(self, program: Program, weights: Weights, eps: float) -> None:
        self.program, self.w, self.eps = program, weights, eps
        self.table = program.instructions.tolist()

    def run(self, bufs: StepBuffers, stop_after: int | None = None) -> None:
        """Run instructions 0..stop_after (all by default)."""
        self.lane = int(bufs.lane[0])  # the reference may read back from the device
        last = len(self.table) - 1 if stop_after is None else min(stop_after, len(self.table) - 1)
        for i in range(last + 1):
            self.execute(bufs, i)

    def simulate(self, bufs: StepBuffers, seed: int = 0) -> list[int]:
        """Run every instruction in a random order the waits allow, the way the persistent kernel's
        programs could interleave: at each step a random program whose next instruction's waits are
        met runs it and signals. A missing dependency shows up as a difference from ``run``; a
        deadlock (no program can go on) raises RuntimeError. Returns the order."""
        self.lane = int(bufs.lane[0])
        rng = random.Random(seed)
        queues = [self.program.queues[p, :n].tolist() for p, n in enumerate(self.program.queue_len.tolist())]
        pos = [0] * len(queues)
        counters = [0] * self.program.n_counters
        order: list[int] = []

        def ready(p: int) -> bool:
            if pos[p] >= len(queues[p]):
                return False
            row = self.table[queues[p][pos[p]]]
            return all(row[w] < 0 or counters[row[w]] >= row[t] for w, t in WAITS)

        while len(order) < len(self.table):
            candidates = [p for p in range(len(queues)) if ready(p)]
            if not candidates:
                raise RuntimeError(f"deadlock after {len(order)} of {len(self.table)} instructions")
            p = rng.choice(candidates)
            index = queues[p][pos[p]]
            self.execute(bufs, index)
            counters[self.table[index][SIGNAL]] += 1
            pos[p] += 1
            order.append(index)
        return order

    def execute(self, bufs: StepBuffers, index: int) -> None:
        op, layer, a, b, c = self.table[index][:5]
        s = self.program.shape
        r0, r1 = a, min(a + s.block_m, s.rows)
        op = Op(op)
        if op == Op.LN:
            bufs.h[r0:r1] = _ln_rows(bufs, layer, b, r0, r1, s.tokens_per_frame, self.eps)
        elif op == Op.QK_ROPE:
            self._qk_rope(bufs, layer, b, r0, r1)
        elif op == Op.ATTN_PART:
            self._attn_part(bufs, layer, b, c, r0, r1)
        elif op == Op.ATTN_REDUCE:
            self._attn_reduce(bufs, b, r0, r1)
        elif op == Op.CROSS_ATTN:
            self._cross(bufs, b, r0, r1)
        else:
            self._matmul(bufs, op, layer, a, b)

    # ---- tiles ----------------------------------------------------------------------------------
    def _matmul(self, bufs: StepBuffers, op: Op, layer: int, r0: int, c0: int) -> None:
        w, s = self.w, self.program.shape
        if op == Op.MM_OUT:  # layer == n_layers: the final projection has no layer index
            a, wt, bias, out = bufs.h, w.w_out, w.b_out, bufs.out
        else:
            a, out = {
                Op.MM_QKV: (bufs.h, bufs.qkv), Op.MM_O: (bufs.attn, bufs.x), Op.MM_CKV: (bufs.text, bufs.ckv),
                Op.MM_CQ: (bufs.h, bufs.cq), Op.MM_CO: (bufs.attn, bufs.x), Op.MM_F1: (bufs.h, bufs.ffn),
                Op.MM_F2: (bufs.ffn, bufs.x),
            }[op]
            name = {Op.MM_QKV: "qkv", Op.MM_O: "o", Op.MM_CKV: "ckv", Op.MM_CQ: "cq", Op.MM_CO: "co",
                    Op.MM_F1: "f1", Op.MM_F2: "f2"}[op]
            wt, bias = getattr(w, f"w_{name}")[layer], getattr(w, f"b_{name}")[layer]
        r1, c1 = min(r0 + s.block_m, a.shape[0]), min(c0 + s.block_n, wt.shape[0])
        if self.program.fuse_norms and op in FUSED_NORM:  # the tile normalises x's rows itself
            rows = _ln_rows(bufs, layer, FUSED_NORM[op], r0, r1, s.tokens_per_frame, self.eps)
        else:
            rows = a[r0:r1]
        y = rows.float() @ wt[c0:c1].float().T + bias[c0:c1].float()
        if op == Op.MM_F1:
            y = _gelu(y)
        elif op in (Op.MM_O, Op.MM_F2):
            frame = torch.arange(r0, r1, device=y.device) // s.tokens_per_frame
            gate = bufs.gates[layer, 0 if op == Op.MM_O else 1][frame][:, c0:c1].float()
            y = out[r0:r1, c0:c1].float() + gate * y
        elif op == Op.MM_CO:
            y = out[r0:r1, c0:c1].float() + y
        out[r0:r1, c0:c1] = y.to(out.dtype)

    def _qk_rope(self, bufs: StepBuffers, layer: int, head: int, r0: int, r1: int) -> None:
        s = self.program.shape
        d, dh, n = s.attn_width, s.head_dim, s.tokens_per_frame
        cols = slice(head * dh, (head + 1) * dh)
        rows = torch.arange(r0, r1, device=bufs.x.device)
        cos, sin = bufs.cos[rows % n].float(), bufs.sin[rows % n].float()

        def norm_rope(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
            x = F.rms_norm(x.float(), (dh,), weight.float(), self.eps)
            x1, x2 = x.unflatten(-1, (-1, 2)).unbind(-1)
            return torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1).flatten(-2)

        qkv = bufs.qkv[r0:r1]
        bufs.q[head, r0:r1] = norm_rope(qkv[:, cols], self.w.q_norm[layer]).to(bufs.q.dtype)
        k = norm_rope(qkv[:, d + cols.start : d + cols.stop], self.w.k_norm[layer])
        dest = bufs.slot_idx[self.lane, rows // n] * n + rows % n
        bufs.ring_k[self.lane, layer, head, dest] = k.to(bufs.ring_k.dtype)
        bufs.ring_v[self.lane, layer, head, dest] = qkv[:, 2 * d + cols.start : 2 * d + cols.stop].to(bufs.ring_v.dtype)

    def _attn_part(self, bufs: StepBuffers, layer: int, head: int, slot: int, r0: int, r1: int) -> None:
        s = self.program.shape
        n, dh = s.tokens_per_frame, s.head_dim
        q = bufs.q[head, r0:r1].float()
        keys = slice(slot * n, (slot + 1) * n)
        lane = self.lane
        e = self.w.frame_emb[layer, bufs.frame_idx[lane, slot], head].float()
        k = bufs.ring_k[lane, layer, head, keys].float() + e
        scores = (q @ k.T) / math.sqrt(dh)
        scores = scores.masked_fill(bufs.token_valid[lane, slot][None, :] == 0, float("-inf"))
        m = scores.amax(dim=1).clamp_min(-1.0e30)  # finite for an empty slot, as in the kernel
        p = torch.exp(scores - m[:, None])
        bufs.part_ml[0, slot, head, r0:r1] = m
        bufs.part_ml[1, slot, head, r0:r1] = p.sum(dim=1)
        bufs.part_acc[slot, head, r0:r1] = p @ bufs.ring_v[lane, layer, head, keys].float()

    def _attn_reduce(self, bufs: StepBuffers, head: int, r0: int, r1: int) -> None:
        dh = self.program.shape.head_dim
        m, l = bufs.part_ml[0, :, head, r0:r1], bufs.part_ml[1, :, head, r0:r1]  # (S, rows)
        scale = torch.exp(m - m.amax(dim=0, keepdim=True))
        acc = (bufs.part_acc[:, head, r0:r1] * scale[..., None]).sum(dim=0)
        denom = (l * scale).sum(dim=0)
        out = acc / torch.where(denom > 0, denom, torch.ones_like(denom))[:, None]
        bufs.attn[r0:r1, head * dh : (head + 1) * dh] = out.to(bufs.attn.dtype)

    def _cross(self, bufs: StepBuffers, head: int, r0: int, r1: int) -> None:
        s = self.program.shape
        d, dh = s.attn_width, s.head_dim
        cols = slice(head * dh, (head + 1) * dh)
        q = bufs.cq[r0:r1, cols].float()
        k = bufs.ckv[:, cols].float()
        v = bufs.ckv[:, d + cols.start : d + cols.stop].float()
        p = torch.softmax((q @ k.T) / math.sqrt(dh), dim=-1)
        bufs.attn[r0:r1, cols] = (p @ v).to(bufs.attn.dtype)


"""Keys with each cache slot's frame-index offset added, for attention kernels that cannot add it
themselves (SDPA's cuDNN and FLASH backends read plain keys).

PyTorch's broadcast add of the (slots, heads, head_dim) offsets over a whole cache runs in its
generic, unvectorised elementwise kernel (about 100 us per layer at wan-1.3b-shape's 18,720 keys x
1,536); this one reads each key once and each slot's offset once per tile.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _frame_offset_keys_kernel(
    k_ptr,  # reads keys (H, S * N, DH), contiguous
    emb_ptr,  # reads frame_emb (P, H, DH), contiguous
    idx_ptr,  # reads frame_idx (S,) int64: the frame index of each slot
    out_ptr,  # writes keys + frame_emb[frame_idx[slot], head] (H, S * N, DH), contiguous
    H,
    S,
    N,
    DH,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    hs = tl.program_id(0)  # (head, slot)
    head, slot = hs // S, hs % S
    rows = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    cols = tl.arange(0, BLOCK_D)
    col_ok = cols < DH
    mask = (rows < N)[:, None] & col_ok[None, :]
    frame = tl.load(idx_ptr + slot)
    emb = tl.load(emb_ptr + (frame * H + head) * DH + cols, mask=col_ok, other=0.0).to(tl.float32)
    offs = (hs.to(tl.int64) * N + rows[:, None]) * DH + cols[None, :]
    k = tl.load(k_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    tl.store(out_ptr + offs, (k + emb[None, :]).to(out_ptr.dtype.element_ty), mask=mask)


def frame_offset_keys(k: torch.Tensor, frame_emb: torch.Tensor, frame_idx: torch.Tensor) -> torch.Tensor:
    """k: (H, S * N, Dh), the keys of S slots of N tokens; frame_emb: (P, H, Dh); frame_idx: (S,)
    long. Returns k with ``frame_emb[frame_idx[s], h]`` added to every key of slot s, head h."""
    h, length, dh = k.shape
    s = frame_idx.shape[0]
    n = length // s
    k, frame_emb = k.contiguous(), frame_emb.contiguous()
    out = torch.empty_like(k)
    block_d = triton.next_power_of_2(dh)
    block_n = max(1, min(triton.next_power_of_2(n), 8192 // block_d))
    _frame_offset_keys_kernel[(h * s, triton.cdiv(n, block_n))](
        k, frame_emb, frame_idx, out, h, s, n, dh, BLOCK_N=block_n, BLOCK_D=block_d, num_warps=4
    )
    return out


def frame_offset_keys_ref(k: torch.Tensor, frame_emb: torch.Tensor, frame_idx: torch.Tensor) -> torch.Tensor:
    """The torch reference (model/ops.py's math)."""
    s = frame_idx.shape[0]
    keys = k.unflatten(1, (s, -1)) + frame_emb[frame_idx].transpose(0, 1)[:, :, None, :]
    return keys.flatten(1, 2)

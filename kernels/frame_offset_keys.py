"""Keys with each cache slot's frame-index offset added, for attention kernels that cannot add it
themselves (SDPA's cuDNN and FLASH backends read plain keys).

PyTorch's broadcast add of the (slots, heads, head_dim) offsets over a whole cache runs in its
generic, unvectorised elementwise kernel (about 100 us per layer at wan-1.3b-shape's 18,720 keys x
1,536); this one reads each key once and each slot's offset once per tile. With ``slots`` it
rewrites only those slots of an existing output: between the forwards of one chunk only the chunk's
own keys change, so a cache keeps its offset keys and refreshes the chunk's slots alone.
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
    slots_ptr,  # reads the slots to write (G,) int64 when SLOTS (else unused; G == S)
    out_ptr,  # writes keys + frame_emb[frame_idx[slot], head] (H, S * N, DH), contiguous
    H,
    S,
    G,
    N,
    DH,
    SLOTS: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    hg = tl.program_id(0)  # (head, g): the g-th slot written
    head, g = hg // G, hg % G
    if SLOTS:
        slot = tl.load(slots_ptr + g)
    else:
        slot = g
    hs = head * S + slot
    rows = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    cols = tl.arange(0, BLOCK_D)
    col_ok = cols < DH
    mask = (rows < N)[:, None] & col_ok[None, :]
    frame = tl.load(idx_ptr + slot)
    emb = tl.load(emb_ptr + (frame * H + head) * DH + cols, mask=col_ok, other=0.0).to(tl.float32)
    offs = (hs.to(tl.int64) * N + rows[:, None]) * DH + cols[None, :]
    k = tl.load(k_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    tl.store(out_ptr + offs, (k + emb[None, :]).to(out_ptr.dtype.element_ty), mask=mask)


def _check_out(k: torch.Tensor, slots: torch.Tensor | None, out: torch.Tensor | None) -> None:
    if slots is not None and out is None:
        raise ValueError("frame_offset_keys: writing only some slots needs the output to write them into (out=)")
    if out is not None and (out.shape != k.shape or out.dtype != k.dtype or not out.is_contiguous()):
        raise ValueError(f"frame_offset_keys: out must be a contiguous {k.dtype} tensor of shape {tuple(k.shape)}")


def frame_offset_keys(
    k: torch.Tensor,
    frame_emb: torch.Tensor,
    frame_idx: torch.Tensor,
    slots: torch.Tensor | None = None,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """k: (H, S * N, Dh), the keys of S slots of N tokens; frame_emb: (P, H, Dh); frame_idx: (S,)
    long. Returns k with ``frame_emb[frame_idx[s], h]`` added to every key of slot s, head h, in
    ``out`` if given (contiguous, k's shape). With ``slots`` ((G,) long, on the device) only those
    slots are computed and written into ``out``, which is then required; the rest of it is kept."""
    _check_out(k, slots, out)
    h, length, dh = k.shape
    s = frame_idx.shape[0]
    n = length // s
    k, frame_emb = k.contiguous(), frame_emb.contiguous()
    out = torch.empty_like(k) if out is None else out
    g = s if slots is None else slots.shape[0]
    block_d = triton.next_power_of_2(dh)
    block_n = max(1, min(triton.next_power_of_2(n), 8192 // block_d))
    _frame_offset_keys_kernel[(h * g, triton.cdiv(n, block_n))](
        k, frame_emb, frame_idx, frame_idx if slots is None else slots, out, h, s, g, n, dh,
        SLOTS=slots is not None, BLOCK_N=block_n, BLOCK_D=block_d, num_warps=4,
    )
    return out


def frame_offset_keys_ref(
    k: torch.Tensor,
    frame_emb: torch.Tensor,
    frame_idx: torch.Tensor,
    slots: torch.Tensor | None = None,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """The torch reference (model/ops.py's math)."""
    _check_out(k, slots, out)
    s = frame_idx.shape[0]
    if slots is None:
        keys = (k.unflatten(1, (s, -1)) + frame_emb[frame_idx].transpose(0, 1)[:, :, None, :]).flatten(1, 2)
        return keys if out is None else out.copy_(keys)
    # Only the named slots, written in place (index_copy_: no read of the slots back to the host).
    chunk = k.unflatten(1, (s, -1)).index_select(1, slots) + frame_emb[frame_idx[slots]].transpose(0, 1)[:, :, None, :]
    out.unflatten(1, (s, -1)).index_copy_(1, slots, chunk.to(out.dtype))
    return out

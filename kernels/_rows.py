"""Shared helpers of the row-wise kernels' wrappers (no Triton import here)."""
from __future__ import annotations

import torch


def frame_rows(mod: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, int, int]:
    """A per-frame modulation ``mod`` (B, T, 1, D) as row-group strides over ``x`` (B, T, N, D).

    Returns (mod with unit last stride, stride of B, stride of T): the kernels read row ``r``'s
    modulation at ``b * sb + t * st`` with ``(b, t) = divmod(r // N, T)``, so the strided views
    that ``unbind`` produces are read in place.
    """
    if mod.shape != (x.shape[0], x.shape[1], 1, x.shape[3]):
        raise ValueError(f"modulation of shape {tuple(mod.shape)} does not fit x of shape {tuple(x.shape)}")
    if mod.stride(-1) != 1:
        mod = mod.contiguous()
    sb = mod.stride(0) if mod.shape[0] > 1 else 0
    st = mod.stride(1) if mod.shape[1] > 1 else 0
    return mod, sb, st


def row_block(d_block: int, target: int = 2048) -> int:
    """Rows per program so a tile holds about ``target`` elements (a power of two, 1 to 64).

    Small tiles on purpose: a frame is a few hundred rows, and the latency of one launch is
    lowest when every SM gets a program or two rather than a few SMs getting all the rows.
    """
    return max(1, min(64, target // d_block))

"""Host-to-device copies that never make the host wait for the GPU.

A plain ``tensor.to("cuda")`` (or ``torch.tensor(values, device="cuda")``) from pageable host
memory synchronises: the host stops until every kernel queued before the copy has run. In a
training step that draws its batch with small host-made tensors (indices, per-clip random
parameters, colour tables), each such copy drains the GPU's queue, so the GPU idles while the
host prepares the next work. Staging through pinned memory and copying asynchronously keeps the
copy in stream order (kernels queued after it see the data) without the wait; the pinned block is
held by PyTorch's caching host allocator until the copy has finished.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


def to_device(t: Tensor, device: torch.device | str, dtype: torch.dtype | None = None) -> Tensor:
    """``t.to(device, dtype)``, asynchronous when a host tensor goes to a CUDA device."""
    device = torch.device(device)
    if dtype is not None and t.dtype != dtype and t.device.type == "cpu":
        t = t.to(dtype)  # cast on the host: the copy then moves the final bytes
    if device.type == "cuda" and t.device.type == "cpu":
        return t.contiguous().pin_memory().to(device, dtype, non_blocking=True)
    return t.to(device, dtype)


def device_tensor(values: Any, device: torch.device | str, dtype: torch.dtype | None = None) -> Tensor:
    """``torch.tensor(values, device=device, dtype=dtype)`` without the host waiting for the GPU."""
    return to_device(torch.tensor(values, dtype=dtype), device)

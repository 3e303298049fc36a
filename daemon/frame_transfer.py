"""uint8 frames to the model's device and back, with the pixel conversions done on the device.

On a GPU a 512x288 frame crosses the bus as 442 KB of uint8 (not 1.8 MB of float32) from a
pinned buffer, is scaled to [-1, 1] there, and comes back as uint8 with one finiteness flag
per frame; numpy only copies bytes. The arithmetic is the one the daemon always used
(``x / 127.5 - 1`` in float32 in, ``clip((y + 1) * 127.5 + 0.5, 0, 255)`` truncated to uint8
out), so outputs do not depend on where it runs.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch


class FrameTransfer:
    """Staging buffers for batches of up to any size at one padded frame size, grown on demand."""

    def __init__(self, device: torch.device, width: int, height: int) -> None:
        self.device, self.width, self.height = device, width, height
        self._pin = device.type == "cuda"
        self._host_in: torch.Tensor | None = None  # (B, H, W, 3) uint8, pinned on CUDA
        self._host_out: torch.Tensor | None = None  # (B, H, W, 3) uint8
        self._host_ok: torch.Tensor | None = None  # (B,) bool

    def reserve(self, b: int) -> None:
        """Make the buffers for batches of up to ``b`` frames now, not on the first such batch."""
        self._buffers(b)

    def _buffers(self, b: int) -> None:
        if self._host_in is not None and len(self._host_in) >= b:
            return
        shape = (b, self.height, self.width, 3)
        self._host_in = torch.empty(shape, dtype=torch.uint8, pin_memory=self._pin)
        self._host_out = torch.empty(shape, dtype=torch.uint8, pin_memory=self._pin)
        self._host_ok = torch.empty(b, dtype=torch.bool, pin_memory=self._pin)

    @torch.inference_mode()
    def upload(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """images: uint8 (h, w, 3) with h <= H, w <= W (edge pixels repeated up to H x W).

        Returns (B, 1, 3, H, W) float32 in [-1, 1] on the device."""
        b = len(images)
        self._buffers(b)
        host = self._host_in[:b].numpy()
        for i, img in enumerate(images):
            h, w = img.shape[:2]
            host[i, :h, :w] = img
            if w < self.width:
                host[i, :h, w:] = img[:, -1:]
            if h < self.height:
                host[i, h:] = host[i, h - 1 : h]
        x = self._host_in[:b].to(self.device, non_blocking=True)
        return x.permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)[:, None]

    @torch.inference_mode()
    def download(self, out: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """out: (B, 1, 3, H, W) in [-1, 1] on the device. Returns uint8 (B, H, W, 3) and the
        per-frame all-finite flags (B,), as numpy views of buffers the next call overwrites."""
        b = out.shape[0]
        self._buffers(b)
        y = out[:, 0].to(torch.float32, copy=True)
        ok = torch.isfinite(y).flatten(1).all(1)
        pixels = y.add_(1.0).mul_(127.5).add_(0.5).clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
        self._host_out[:b].copy_(pixels, non_blocking=True)
        self._host_ok[:b].copy_(ok, non_blocking=True)
        if self._pin:
            torch.cuda.current_stream(self.device).synchronize()
        return self._host_out[:b].numpy(), self._host_ok[:b].numpy()

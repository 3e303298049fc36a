"""Image metrics for evaluation: MSE, PSNR, SSIM and frame-to-frame change, in plain torch.

Every function takes RGB frames in [0, 1] shaped (N, 3, H, W) and returns one value per frame
(N,) unless it says otherwise, so callers can average over any subset (drift windows, strides).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor
import torch.nn.functional as F

# Identical frames have infinite PSNR; JSON has no infinity and a mean over frames would be
# infinite too, so the MSE is floored at 1e-10, which caps PSNR at 100 dB.
PSNR_CAP_DB = 100.0
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_MODE = "mean over R, G, B channels"


def _check(a: Tensor, b: Tensor) -> None:
    if a.shape != b.shape or a.dim() != 4:
        raise ValueError(f"expected two (N, C, H, W) tensors of one shape, got {tuple(a.shape)} and {tuple(b.shape)}")


def mse(a: Tensor, b: Tensor) -> Tensor:
    """Mean squared error per frame: (N, C, H, W) x2 -> (N,) float32."""
    _check(a, b)
    return (a.float() - b.float()).square().flatten(1).mean(1)


def psnr(a: Tensor, b: Tensor) -> Tensor:
    """PSNR in dB per frame for signals in [0, 1]: (N, C, H, W) x2 -> (N,), capped at PSNR_CAP_DB."""
    floor = 10.0 ** (-PSNR_CAP_DB / 10.0)
    return -10.0 * torch.log10(mse(a, b).clamp_min(floor))


def gaussian_window(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> Tensor:
    """Normalised 1-D Gaussian (size,); SSIM filters with it along each axis in turn."""
    x = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    g = torch.exp(-x.square() / (2 * sigma * sigma))
    return g / g.sum()


def _blur(x: Tensor, g: Tensor) -> Tensor:
    """Separable 'valid' Gaussian filter of (N, C, H, W), each channel on its own."""
    c = x.shape[1]
    x = F.conv2d(x, g.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(x, g.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def ssim(a: Tensor, b: Tensor) -> Tensor:
    """SSIM per frame (Wang et al. 2004: 11x11 Gaussian window, sigma 1.5, K1 0.01, K2 0.03,
    data range 1), computed on each RGB channel and averaged over channels and the valid
    window positions: (N, 3, H, W) x2 -> (N,). Frames smaller than 11 pixels use a window
    that fits."""
    _check(a, b)
    a, b = a.float(), b.float()
    size = min(SSIM_WINDOW, a.shape[-1], a.shape[-2])
    size -= 1 - size % 2  # keep the window odd so it stays centred
    g = gaussian_window(size).to(a.device)
    c1, c2 = 0.01**2, 0.03**2
    mu_a, mu_b = _blur(a, g), _blur(b, g)
    var_a = _blur(a * a, g) - mu_a.square()
    var_b = _blur(b * b, g) - mu_b.square()
    cov = _blur(a * b, g) - mu_a * mu_b
    num = (2 * mu_a * mu_b + c1) * (2 * cov + c2)
    den = (mu_a.square() + mu_b.square() + c1) * (var_a + var_b + c2)
    return (num / den).flatten(1).mean(1)


def frame_change(frames: Tensor, previous: Tensor | None = None) -> Tensor:
    """Mean absolute difference of each frame from the one before: (T, C, H, W) -> (T - 1,),
    or (T,) when ``previous`` (C, H, W), the frame before the first, is given (chunked runs)."""
    if previous is not None:
        frames = torch.cat([previous[None].to(frames), frames])
    return (frames[1:].float() - frames[:-1].float()).abs().flatten(1).mean(1)


def mean_or_none(values: list[float]) -> float | None:
    """Mean of finite values, None for an empty list (JSON null rather than NaN)."""
    values = [v for v in values if math.isfinite(v)]
    return sum(values) / len(values) if values else None

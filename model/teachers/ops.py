"""Image operations the teachers share, batched over any leading shape.

Images are ``(N, C, H, W)`` float tensors in [0, 1] unless said otherwise; the teachers fold
``(B, T)`` into ``N``. Randomness is a counter-based integer hash of (seed, time tick, index),
not a stateful generator, so every teacher is a pure function of (frame, time, seed) and
gives the same pixels on CPU and GPU.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from ..host import device_tensor

_M31 = 0x7FFFFFFF
_LUMA = (0.299, 0.587, 0.114)


def hash_int(x: Tensor) -> Tensor:
    """A 31-bit integer hash of an int64 tensor (elementwise).

    Values are kept below 2**31 and multipliers below 2**27, so products never overflow int64
    on any device.
    """
    x = x & _M31
    x = (((x >> 16) ^ x) * 0x45D9F3B) & _M31
    x = (((x >> 16) ^ x) * 0x45D9F3B) & _M31
    return (x >> 16) ^ x


def hash_mix(*keys: Tensor | int) -> Tensor:
    """Hash several integer keys (broadcast together) into one 31-bit integer tensor."""
    h: Tensor | None = None
    for i, k in enumerate(keys):
        k = torch.as_tensor(k, dtype=torch.int64) if not isinstance(k, Tensor) else k.to(torch.int64)
        salt = 0x9E3779B * (i + 1)  # distinct per argument position, so (a, b) != (b, a)
        h = hash_int(k + salt) if h is None else hash_int(h ^ hash_int(k + salt))
    assert h is not None, "hash_mix needs at least one key"
    return h


def uniform(*keys: Tensor | int) -> Tensor:
    """Deterministic uniform floats in [0, 1) from integer keys (broadcast together)."""
    return (hash_mix(*keys) & 0xFFFFFF).to(torch.float32) / float(1 << 24)


def luma(img: Tensor) -> Tensor:
    """(N, 3, H, W) -> (N, 1, H, W) Rec. 601 brightness."""
    r, g, b = img.unbind(1)
    return (_LUMA[0] * r + _LUMA[1] * g + _LUMA[2] * b).unsqueeze(1)


def saturate(img: Tensor, amount: float) -> Tensor:
    """Scale saturation: 0 gives grey, 1 the input, >1 more colourful. (N, 3, H, W)."""
    y = luma(img)
    return (y + (img - y) * amount).clamp(0, 1)


def gaussian_kernel(sigma: float, device: torch.device, dtype: torch.dtype) -> Tensor:
    radius = max(1, int(math.ceil(2.5 * sigma)))
    x = torch.arange(-radius, radius + 1, device=device, dtype=dtype)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def blur(img: Tensor, sigma: float, sigma_y: float | None = None) -> Tensor:
    """Separable Gaussian blur with edge padding, ``sigma`` across and ``sigma_y`` (default:
    the same) down; (N, C, H, W) -> same."""
    sigma_y = sigma if sigma_y is None else sigma_y
    n, c, h, w = img.shape
    if min(sigma, sigma_y) >= 3.0 and min(h, w) >= 32:
        # Wide blurs run at half resolution (a quarter of the work, half the taps); the
        # result is smooth anyway, so bilinear upsampling loses nothing visible.
        half = blur(F.avg_pool2d(img, 2, ceil_mode=True), sigma / 2, sigma_y / 2)
        return F.interpolate(half, size=(h, w), mode="bilinear", align_corners=False)
    # One depthwise convolution over all N*C planes: far faster on CPU than a batch of
    # single-channel images, and the same on GPU.
    g = n * c
    x = img.reshape(1, g, h, w)
    if sigma > 0:
        k = gaussian_kernel(sigma, img.device, img.dtype)
        r = k.numel() // 2
        x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="replicate"), k.view(1, 1, 1, -1).expand(g, 1, 1, -1), groups=g)
    if sigma_y > 0:
        k = gaussian_kernel(sigma_y, img.device, img.dtype)
        r = k.numel() // 2
        x = F.conv2d(F.pad(x, (0, 0, r, r), mode="replicate"), k.view(1, 1, -1, 1).expand(g, 1, -1, 1), groups=g)
    return x.reshape(n, c, h, w)


def box_mean(img: Tensor, size: int) -> Tensor:
    """Mean over a centred ``size`` x ``size`` window (odd size), edge padded; same shape."""
    r = size // 2
    return F.avg_pool2d(F.pad(img, (r, r, r, r), mode="replicate"), size, stride=1)


def sobel(gray: Tensor) -> Tensor:
    """Gradient magnitude of (N, 1, H, W) brightness; same shape, roughly in [0, 4]."""
    k = device_tensor([[1.0, 0.0, -1.0], [2.0, 0.0, -2.0], [1.0, 0.0, -1.0]], gray.device, gray.dtype)
    weights = torch.stack([k, k.t()]).unsqueeze(1)  # (2, 1, 3, 3): d/dx, d/dy
    g = F.conv2d(F.pad(gray, (1, 1, 1, 1), mode="replicate"), weights)
    return g.pow(2).sum(1, keepdim=True).add(1e-12).sqrt()


def posterize(img: Tensor, levels: int) -> Tensor:
    """Round each channel to ``levels`` evenly spaced values."""
    return torch.round(img * (levels - 1)) / (levels - 1)


def colormap(value: Tensor, palette: Tensor) -> Tensor:
    """Piecewise-linear colour map: (N, 1, H, W) in [0, 1] and (K, 3) stops -> (N, 3, H, W)."""
    k = palette.shape[0]
    pos = value.clamp(0, 1).squeeze(1) * (k - 1)
    lo = pos.floor().long().clamp(max=k - 2)
    frac = (pos - lo).unsqueeze(-1)
    out = palette[lo] * (1 - frac) + palette[lo + 1] * frac  # (N, H, W, 3)
    return out.permute(0, 3, 1, 2)


def nearest_colour(img: Tensor, palette: Tensor) -> Tensor:
    """Replace each pixel by the closest palette entry: (N, 3, H, W), (K, 3) -> (N, 3, H, W)."""
    d = (img.unsqueeze(1) - palette.view(1, -1, 3, 1, 1)).pow(2).sum(2)  # (N, K, H, W)
    idx = d.argmin(1)
    return palette[idx].permute(0, 3, 1, 2)


def kuwahara(img: Tensor, radius: int) -> Tensor:
    """Kuwahara filter: each pixel takes the mean colour of the least varied of its four
    (radius+1)^2 quadrants. Box means come from one avg_pool per statistic. (N, 3, H, W)."""
    _, _, h, w = img.shape
    r = radius
    y = luma(img)
    stats = torch.cat([img, y, y * y], 1)  # (N, 5, H, W): colour means, brightness mean and mean square
    m = F.avg_pool2d(F.pad(stats, (r, r, r, r), mode="replicate"), r + 1, stride=1)  # (N, 5, H+r, W+r)
    # m[i, j] averages rows i-r..i and columns j-r..j of the image: the four quadrants of
    # pixel (y, x) are m[y, x], m[y, x+r], m[y+r, x], m[y+r, x+r].
    corners = ((0, 0), (0, r), (r, 0), (r, r))
    var = torch.stack([m[:, 4, oy : oy + h, ox : ox + w] - m[:, 3, oy : oy + h, ox : ox + w] ** 2
                       for oy, ox in corners], 1)  # (N, 4, H, W)
    best = var.argmin(1, keepdim=True)  # (N, 1, H, W)
    out = m[:, :3, :h, :w]
    for i, (oy, ox) in enumerate(corners[1:], 1):  # select by where(): no (N, 4, 3, H, W) copy
        out = torch.where(best == i, m[:, :3, oy : oy + h, ox : ox + w], out)
    return out


def pixel_grid(n: int, h: int, w: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """Integer row and column indices, each (1, 1, H, W) int64 (broadcast over N)."""
    ys = torch.arange(h, device=device).view(1, 1, h, 1).expand(1, 1, h, w)
    xs = torch.arange(w, device=device).view(1, 1, 1, w).expand(1, 1, h, w)
    return ys, xs


def vignette(h: int, w: int, strength: float, device: torch.device) -> Tensor:
    """(1, 1, H, W) darkening towards the corners: 1 in the centre, 1 - strength at the corners."""
    yy = torch.linspace(-1, 1, h, device=device).view(h, 1)
    xx = torch.linspace(-1, 1, w, device=device).view(1, w)
    r2 = (xx**2 + yy**2) / 2
    return (1 - strength * r2).clamp(0, 1).view(1, 1, h, w)

"""Generative looks: particles over a mildly restyled frame.

Each particle's position is a closed-form function of (seed, particle index, time): nothing is
simulated step by step, so any frame of any clip can be drawn on its own and the motion is
smooth and consistent between frames. Positions never read the frame, so the model cannot
copy them from its input; it has to carry them forward from its own history.

Particles are splatted bilinearly (sub-pixel motion stays smooth) into one channel per layer
with ``scatter_add`` and then blurred to their size: no per-particle or per-pixel Python loops.
Counts scale with frame area and sizes with frame width, relative to 256x144.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ..host import device_tensor
from . import ops

TAU = 2 * math.pi


def _params(seeds: Tensor, layer: int, count: int, key: int) -> Tensor:
    """(N, P) uniform per-particle parameters: frames with the same seed share them."""
    idx = torch.arange(count, device=seeds.device).view(1, count)
    return ops.uniform(seeds.view(-1, 1), layer, idx, key)


def _count(base: int, h: int, w: int) -> int:
    return max(1, round(base * h * w / (256 * 144)))


def splat(px: Tensor, py: Tensor, weight: Tensor, h: int, w: int) -> Tensor:
    """Bilinear splat of points into images: px, py, weight (N, P) (pixel coordinates)
    -> (N, 1, H, W). Points (or parts of them) outside the frame are dropped."""
    n = px.shape[0]
    x0, y0 = px.floor(), py.floor()
    fx, fy = px - x0, py - y0
    out = torch.zeros(n, h * w, device=px.device, dtype=px.dtype)
    for dx, dy, wt in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)), (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
        xi, yi = x0.long() + dx, y0.long() + dy
        inside = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
        flat = (yi.clamp(0, h - 1) * w + xi.clamp(0, w - 1))
        out.scatter_add_(1, flat, wt * weight * inside)
    return out.view(n, 1, h, w)


def _wrap(v: Tensor, margin: float) -> Tensor:
    """Wrap a coordinate into [-margin, 1 + margin) so particles leave one edge and re-enter
    the other fully outside the frame (no popping in or out on screen)."""
    span = 1 + 2 * margin
    return torch.remainder(v + margin, span) - margin


def _glow(points: Tensor, sigma: float) -> Tensor:
    """Blur splatted points to a soft disc whose centre is about 1 for one particle."""
    return ops.blur(points, sigma) * (TAU * sigma * sigma if sigma > 0.5 else 1.0)


@dataclass(frozen=True)
class Layer:
    """One depth layer of particles (sizes at 256 pixels across, speeds in frame heights/s)."""

    count: int
    size: float
    speed: float
    strength: float


_SNOW = (Layer(170, 0.6, 0.10, 0.55), Layer(80, 1.1, 0.18, 0.8), Layer(30, 2.0, 0.30, 1.0))
_RAIN = (Layer(220, 0.5, 1.1, 0.22), Layer(90, 0.7, 1.7, 0.4))


def snow_alpha(times: Tensor, seeds: Tensor, h: int, w: int) -> Tensor:
    """Snowflake coverage (N, 1, H, W) in [0, 1] at each frame's time and seed."""
    s = w / 256.0
    t = times.view(-1, 1)
    wind = (ops.uniform(seeds, 97).view(-1, 1) - 0.5) * 0.12  # frame widths per second
    alpha = torch.zeros(times.shape[0], 1, h, w, device=times.device)
    for i, layer in enumerate(_SNOW):
        p = _count(layer.count, h, w)
        u, v, sp, ph, fr = (_params(seeds, i, p, k) for k in range(5))
        y = _wrap(v + layer.speed * (0.8 + 0.4 * sp) * t, 0.05)
        sway = 0.012 * torch.sin(TAU * (0.2 + 0.4 * fr) * t + TAU * ph)
        x = _wrap(u + wind * t * (0.5 + layer.speed * 3) + sway, 0.05)
        alpha = alpha + layer.strength * _glow(splat(x * w, y * h, torch.ones_like(x), h, w), layer.size * s)
    return alpha.clamp(0, 1)


def rain_alpha(times: Tensor, seeds: Tensor, h: int, w: int) -> Tensor:
    """Rain streak coverage (N, 1, H, W): each drop is drawn as the segment it travels in
    one 1/30 s exposure, so streak length follows speed."""
    s = w / 256.0
    t = times.view(-1, 1, 1)
    slant = (ops.uniform(seeds, 101).view(-1, 1, 1) - 0.5) * 0.5  # dx/dy of the fall, fixed per clip
    along = torch.linspace(-1.0, 0.0, 10, device=times.device).view(1, 1, 10)  # back along the streak
    alpha = torch.zeros(times.shape[0], 1, h, w, device=times.device)
    for i, layer in enumerate(_RAIN):
        p = _count(layer.count, h, w)
        u, v, sp = (_params(seeds, 10 + i, p, k).unsqueeze(-1) for k in range(3))
        speed = layer.speed * (0.85 + 0.3 * sp)  # frame heights per second
        fall = v + speed * (t + along / 30.0)
        y = _wrap(fall, 0.15)
        # The horizontal drift follows the unwrapped fall, so a drop keeps its line.
        x = _wrap(u + slant * fall * h / w, 0.1)
        pts = splat((x * w).flatten(1), (y * h).flatten(1), torch.ones_like(x).expand_as(y).flatten(1), h, w)
        alpha = alpha + layer.strength * _glow(pts, layer.size * s)
    return alpha.clamp(0, 1)


def firefly_light(times: Tensor, seeds: Tensor, h: int, w: int) -> Tensor:
    """Glow (N, 1, H, W) of slowly wandering, softly blinking fireflies."""
    s = w / 256.0
    t = times.view(-1, 1)
    p = _count(28, h, w)
    u, v, a1, a2, f1, f2, fb, pb = (_params(seeds, 20, p, k) for k in range(8))
    x = u + 0.05 * torch.sin(TAU * (0.08 + 0.15 * f1) * t + TAU * a1) + 0.02 * torch.sin(TAU * 0.45 * t + TAU * a2)
    y = v + 0.06 * torch.sin(TAU * (0.07 + 0.12 * f2) * t + TAU * a2) + 0.02 * torch.cos(TAU * 0.38 * t + TAU * a1)
    blink = (torch.sin(TAU * (0.15 + 0.3 * fb) * t + TAU * pb) * 1.6 + 0.4).clamp(0, 1)
    pts = splat(_wrap(x, 0.05) * w, _wrap(y, 0.05) * h, blink, h, w)
    return (_glow(pts, 0.9 * s) + 0.2 * _glow(pts, 3.5 * s)).clamp(0, 1.5)


def spark_light(times: Tensor, seeds: Tensor, h: int, w: int) -> Tensor:
    """Glow (N, 1, H, W) of embers rising from the bottom, fading and flickering as they go."""
    s = w / 256.0
    t = times.view(-1, 1, 1)
    p = _count(60, h, w)
    u, v, sp, ph, fl = (_params(seeds, 30, p, k).unsqueeze(-1) for k in range(5))
    trail = torch.linspace(-1.0, 0.0, 4, device=times.device).view(1, 1, 4)
    tt = t + trail / 30.0
    rise = torch.remainder(v + (0.25 + 0.35 * sp) * tt, 1.0)  # 0 at the bottom edge, 1 at the top
    y = 1.05 - 1.1 * rise
    x = u + 0.04 * torch.sin(TAU * (0.5 + 0.8 * fl) * tt + TAU * ph) + 0.05 * rise * (ph - 0.5)
    heat = (1 - rise) ** 1.5 * (0.65 + 0.35 * torch.sin(TAU * (6 + 6 * fl) * tt + TAU * ph))
    weight = heat * (0.4 + 0.6 * (trail + 1))  # the head of the trail is brightest
    pts = splat((x * w).flatten(1), (y * h).flatten(1), weight.flatten(1), h, w)
    return (_glow(pts, 0.7 * s) + 0.2 * _glow(pts, 3.0 * s)).clamp(0, 1.5)


def _rgb(values: tuple[float, float, float], x: Tensor) -> Tensor:
    return device_tensor(values, x.device, x.dtype).view(1, 3, 1, 1)


def snowfall(x: Tensor, times: Tensor, seeds: Tensor) -> Tensor:
    base = ops.saturate(x, 0.7) * _rgb((0.9, 0.96, 1.04), x) + 0.06  # cold, hazy winter light
    a = snow_alpha(times, seeds, x.shape[2], x.shape[3])
    return base * (1 - a) + _rgb((0.97, 0.98, 1.0), x) * a


def rain(x: Tensor, times: Tensor, seeds: Tensor) -> Tensor:
    base = ops.blur(ops.saturate(x, 0.6), 0.6 * x.shape[-1] / 256) * _rgb((0.72, 0.78, 0.88), x) + 0.04
    a = rain_alpha(times, seeds, x.shape[2], x.shape[3])
    return base * (1 - a) + _rgb((0.8, 0.85, 0.92), x) * a


def fireflies(x: Tensor, times: Tensor, seeds: Tensor) -> Tensor:
    base = ops.saturate(x, 0.8) * _rgb((0.38, 0.42, 0.55), x)  # dusk: dark and blue
    return base + firefly_light(times, seeds, x.shape[2], x.shape[3]) * _rgb((0.8, 1.0, 0.3), x)


def sparks(x: Tensor, times: Tensor, seeds: Tensor) -> Tensor:
    base = x * _rgb((0.85, 0.68, 0.55), x)  # firelit: warm and a little darker
    return base + spark_light(times, seeds, x.shape[2], x.shape[3]) * _rgb((1.0, 0.55, 0.15), x)

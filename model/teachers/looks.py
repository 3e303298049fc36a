"""Deterministic looks: each maps frames (N, 3, H, W) in [0, 1], times (N,) and seeds (N,)
to restyled frames (N, 3, H, W).

Sizes (blur widths, block sizes) scale with the frame width relative to 256 pixels, so a
style looks the same at 256x144 and 512x288. Noise that belongs to the medium (paper, canvas)
depends on the seed only; noise that belongs to time (film grain, sensor noise) also depends
on the frame's tick, so it changes from frame to frame yet repeats exactly for a given time.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..host import device_tensor
from . import ops


def _scale(x: Tensor) -> float:
    return x.shape[-1] / 256.0


def _rgb(values: tuple[float, float, float], x: Tensor) -> Tensor:
    return device_tensor(values, x.device, x.dtype).view(1, 3, 1, 1)


def _pixel_noise(x: Tensor, seeds: Tensor, *keys: Tensor | int) -> Tensor:
    """(N, 1, H, W) uniform noise keyed by each frame's seed, extra keys and pixel position."""
    n, _, h, w = x.shape
    ys, xs = ops.pixel_grid(n, h, w, x.device)
    return ops.uniform(seeds.view(n, 1, 1, 1), *keys, ys, xs)


def _ticks(times: Tensor, rate: float) -> Tensor:
    """(N,) integer frame ticks at ``rate`` per second; the small offset keeps exact frame times
    (k / rate) on tick k despite rounding."""
    return torch.floor(times * rate + 1e-3).to(torch.int64)


def original(x: Tensor, times: Tensor, seeds: Tensor) -> Tensor:
    return x


def pencil_sketch(x: Tensor, times: Tensor, seeds: Tensor) -> Tensor:
    s = _scale(x)
    g = ops.luma(x)
    # Colour dodge of the brightness by its blurred negative: flat areas go white, edges dark.
    dodge = (g / (1 - ops.blur(1 - g, 2.0 * s) + 1e-3)).clamp(0, 1) ** 3
    n, _, h, w = x.shape
    ys, xs = ops.pixel_grid(n, h, w, x.device)
    hatch = 0.5 + 0.5 * torch.sin((xs + ys).float() * (6.283 / (4.0 * s)))  # diagonal strokes
    shade = 1 - (0.45 - g).clamp(min=0) * 1.2 * hatch  # hatching only in the darker tones
    paper = 0.95 + 0.05 * ops.blur(_pixel_noise(x, seeds, 11), 0.7 * s)
    tone = dodge * shade * paper
    return tone * _rgb((1.0, 0.98, 0.94), x)


def thermal_camera(x: Tensor, times: Tensor, seeds: Tensor) -> Tensor:
    # Warm (red) surfaces read hotter than their brightness alone, as skin does on a heat camera.
    heat = ops.blur(0.55 * ops.luma(x) + 0.45 * x[:, :1], 1.5 * _scale(x))
    heat = ((heat - 0.12) / 0.78).clamp(0, 1)
    iron = device_tensor(
        [[0.0, 0.0, 0.0], [0.15, 0.0, 0.38], [0.55, 0.0, 0.58], [0.88, 0.15, 0.12],
         [1.0, 0.55, 0.0], [1.0, 0.88, 0.2], [1.0, 1.0, 0.92]],
        x.device, x.dtype,
    )
    return ops.colormap(heat, iron)


def night_vision(x: Tensor, times: Tensor, seeds: Tensor) -> Tensor:
    n, _, h, w = x.shape
    amp = (ops.luma(x) * 1.35).clamp(0, 1) ** 0.9  # image intensifier: dark scenes lifted
    bloom = ops.blur(amp**3, 3.0 * _scale(x))
    grain = _pixel_noise(x, seeds, _ticks(times, 30.0).view(n, 1, 1, 1), 23) - 0.5
    ys, _ = ops.pixel_grid(n, h, w, x.device)
    scan = 1 - 0.08 * (ys % 2).float()
    v = ((amp + 0.5 * bloom + 0.22 * grain) * scan * ops.vignette(h, w, 0.9, x.device)).clamp(0, 1)
    return v * _rgb((0.3, 1.0, 0.35), x) + 0.03


def comic(x: Tensor, times: Tensor, seeds: Tensor) -> Tensor:
    s = _scale(x)
    smooth = ops.saturate(ops.kuwahara(ops.blur(x, 0.8 * s), max(2, round(2 * s))), 1.5)
    # Flat colour: quantize brightness to a few bands but keep each pixel's hue, so shading
    # becomes cel bands of the same colour rather than posterized rainbows.
    g = ops.luma(smooth).clamp(min=1e-3)
    bands = (torch.floor(g * 4) + 0.6) / 4
    flat = (smooth * (bands / g)).clamp(0, 1)
    edges = ops.sobel(ops.blur(ops.luma(x), 1.0 * s))
    ink = ((edges - 0.22) * 6).clamp(0, 1)
    ink = F.max_pool2d(ink, 3, stride=1, padding=1) if s >= 1.5 else ink  # keep lines bold on big frames
    return flat * (1 - ink)


def oil_painting(x: Tensor, times: Tensor, seeds: Tensor) -> Tensor:
    s = _scale(x)
    paint = ops.kuwahara(ops.saturate((x - 0.5) * 1.15 + 0.5, 1.5), max(3, round(5 * s)))
    # Brush strokes: noise smeared into short horizontal or vertical dabs (which, by patch,
    # from a seed-fixed blotch mask), lit from the top left like ridges of thick paint.
    noise = _pixel_noise(x, seeds, 31)
    pick = ops.blur(_pixel_noise(x, seeds, 37), 4.0 * s)
    pick = ((pick - pick.mean((2, 3), keepdim=True)) * 20 + 0.5).clamp(0, 1)
    strokes = ops.blur(noise, 2.5 * s, 0.5 * s) * pick + ops.blur(noise, 0.5 * s, 2.5 * s) * (1 - pick) - 0.5
    g = ops.luma(paint) + 0.25 * strokes
    relief = g - F.pad(g, (1, 0, 1, 0), mode="replicate")[..., :-1, :-1]
    return paint * (1.0 + 0.5 * strokes) + 1.5 * relief


_PICO8 = (
    (0.0, 0.0, 0.0), (0.114, 0.169, 0.325), (0.494, 0.145, 0.325), (0.0, 0.529, 0.318),
    (0.671, 0.322, 0.212), (0.373, 0.341, 0.310), (0.761, 0.765, 0.780), (1.0, 0.945, 0.910),
    (1.0, 0.0, 0.302), (1.0, 0.639, 0.0), (1.0, 0.925, 0.153), (0.0, 0.894, 0.212),
    (0.161, 0.678, 1.0), (0.514, 0.463, 0.612), (1.0, 0.467, 0.659), (1.0, 0.800, 0.667),
)


def pixel_art(x: Tensor, times: Tensor, seeds: Tensor) -> Tensor:
    n, _, h, w = x.shape
    block = max(2, round(5 * _scale(x)))
    small = F.interpolate(x, size=(max(1, h // block), max(1, w // block)), mode="area")
    palette = device_tensor(_PICO8, x.device, x.dtype)
    small = ops.nearest_colour(ops.saturate(small, 1.3), palette)
    return F.interpolate(small, size=(h, w), mode="nearest")


def neon_edges(x: Tensor, times: Tensor, seeds: Tensor) -> Tensor:
    s = _scale(x)
    n, _, h, w = x.shape
    soft = ops.blur(x, 1.0 * s)
    edges = ((ops.sobel(ops.luma(soft)) - 0.08) * 4).clamp(0, 1)
    # Tube colour: the scene's own hue pushed to full strength; grey parts get a cyan-magenta sweep.
    chroma = soft - ops.luma(soft)
    vivid = (0.5 + chroma * 4).clamp(0, 1)
    vivid = vivid / vivid.amax(1, keepdim=True).clamp(min=1e-3)
    sweep = torch.linspace(0, 1, w, device=x.device, dtype=x.dtype).view(1, 1, 1, w)
    cyan_magenta = torch.cat([sweep, 1 - sweep, torch.ones_like(sweep)], 1)
    amount = (chroma.abs().amax(1, keepdim=True) * 6).clamp(0, 1)
    colour = vivid * amount + cyan_magenta * (1 - amount)
    lines = edges * colour
    return lines + 1.4 * ops.blur(lines, 3.0 * s)


def sepia_old_film(x: Tensor, times: Tensor, seeds: Tensor) -> Tensor:
    n, _, h, w = x.shape
    s = _scale(x)
    tick = _ticks(times, 24.0).view(n, 1, 1, 1)  # film runs at 24 frames per second
    sd = seeds.view(n, 1, 1, 1)
    g = ((ops.luma(x) - 0.5) * 1.15 + 0.5).clamp(0, 1)
    flicker = 0.92 + 0.16 * ops.uniform(sd, tick, 41)
    grain = ops.blur(_pixel_noise(x, seeds, tick, 43), 0.5 * s) - 0.5
    ys, xs = ops.pixel_grid(n, h, w, x.device)
    # A few vertical scratches per film frame, each at a hashed column with a slight wobble.
    k = torch.arange(3, device=x.device).view(1, 3, 1, 1)
    col = ops.uniform(sd, tick, k, 47) * w
    on = (ops.uniform(sd, tick, k, 53) < 0.55).float()
    wobble = 1.5 * s * torch.sin(ys.float() / (17.0 * s) + 6.283 * ops.uniform(sd, tick, k, 59))
    scratch = (torch.exp(-(((xs - col - wobble) / (0.6 * s)) ** 2)) * on).amax(1, keepdim=True)
    # Dust: dark specks at hashed places, different on every film frame.
    d = torch.arange(4, device=x.device).view(1, 4, 1, 1)
    dy, dx = ops.uniform(sd, tick, d, 61) * h, ops.uniform(sd, tick, d, 67) * w
    rad = (0.8 + 1.8 * ops.uniform(sd, tick, d, 71)) * s
    dust = (((ys - dy) ** 2 + (xs - dx) ** 2) < rad**2).float().amax(1, keepdim=True)
    tone = (g * flicker + 0.14 * grain) * ops.vignette(h, w, 0.7, x.device)
    tone = (tone + 0.35 * scratch) * (1 - 0.7 * dust)
    return tone * _rgb((1.07, 0.85, 0.6), x) + _rgb((0.05, 0.03, 0.0), x)


def blueprint(x: Tensor, times: Tensor, seeds: Tensor) -> Tensor:
    s = _scale(x)
    n, _, h, w = x.shape
    edges = ops.sobel(ops.blur(ops.luma(x), 1.0 * s))
    lines = ((edges - 0.1) * 5).clamp(0, 1)
    ys, xs = ops.pixel_grid(n, h, w, x.device)
    step = max(4, round(16 * s))
    grid = (((ys % step) == 0) | ((xs % step) == 0)).float() * 0.22
    ink = torch.maximum(lines, grid)
    paper = _rgb((0.07, 0.25, 0.56), x) * (0.93 + 0.1 * ops.blur(_pixel_noise(x, seeds, 79), 1.5 * s))
    return paper * (1 - ink) + _rgb((0.9, 0.95, 1.0), x) * ink


def watercolor(x: Tensor, times: Tensor, seeds: Tensor) -> Tensor:
    s = _scale(x)
    wash = ops.kuwahara(ops.blur(x, 1.2 * s), max(2, round(3 * s)))
    # Colour bleeds unevenly: a blotchy, seed-fixed mask mixes in a wider blur.
    blotch = ops.blur(_pixel_noise(x, seeds, 83), 5.0 * s)
    blotch = ((blotch - blotch.mean((2, 3), keepdim=True)) * 14 + 0.5).clamp(0, 1)
    wash = wash * (1 - blotch) + ops.blur(wash, 4.0 * s) * blotch
    # Washes are laid in a few flat layers of pigment; thin pigment lets the paper show through.
    g = ops.luma(wash).clamp(min=1e-3)
    layered = wash * ((torch.floor(g * 5) + 0.5) / 5 / g) * 0.5 + wash * 0.5
    pale = 1 - (1 - ops.saturate(layered, 1.4)).clamp(0, 1) * 0.6
    rim = ((ops.sobel(ops.luma(layered)) - 0.04) * 2.5).clamp(0, 0.45)  # pigment pools at wash edges
    grain = ops.blur(_pixel_noise(x, seeds, 89), 0.8 * s)
    return (pale * (1 - rim) - 0.08 * (grain - 0.5)) * _rgb((1.0, 0.99, 0.96), x)


def halftone_pop_art(x: Tensor, times: Tensor, seeds: Tensor) -> Tensor:
    n, _, h, w = x.shape
    s = _scale(x)
    cell = max(4, round(6 * s))
    bold = ops.posterize(ops.saturate((x - 0.5) * 1.3 + 0.5, 2.0), 3)
    dark = 1 - ops.luma(F.avg_pool2d(x, cell, stride=cell, ceil_mode=True))  # one value per dot cell
    dark = dark.repeat_interleave(cell, 2).repeat_interleave(cell, 3)[..., :h, :w]
    ys, xs = ops.pixel_grid(n, h, w, x.device)
    cy = (ys // cell).float() * cell + (cell - 1) / 2
    cx = (xs // cell).float() * cell + (cell - 1) / 2
    dist = ((ys - cy) ** 2 + (xs - cx) ** 2).sqrt()
    radius = 0.75 * cell * dark  # darker cells, bigger dots
    dot = (radius - dist + 0.5).clamp(0, 1)
    paper = 0.45 + 0.6 * bold  # bright, flat colour between the dots
    edges = ((ops.sobel(ops.blur(ops.luma(x), 1.2 * s)) - 0.3) * 5).clamp(0, 1)
    return paper * (1 - 0.8 * dot) * (1 - edges)

"""A procedural face-cam scene: a head and shoulders swaying in front of a textured wall.

The daemon renders its style thumbnails from it, and the repository's sample clip is made
from it (tests/data/make_sample_clip.py), so both work with no image files at all.
"""
from __future__ import annotations

import numpy as np


def facecam_frame(t: float, width: int = 256, height: int = 144) -> np.ndarray:
    """RGB uint8 (height, width, 3) at time ``t`` seconds; deterministic."""
    W, H = width, height
    s = W / 256.0  # the scene is laid out for 256 pixels across
    y, x = np.mgrid[0:H, 0:W].astype(np.float32)
    wall = 0.55 + 0.12 * np.sin(x / (9.0 * s)) * np.sin(y / (7.0 * s)) + 0.15 * (y / H)
    img = np.stack([wall * 0.75, wall * 0.8, wall * 0.95], axis=-1)
    img[(x > 20 * s) & (x < 70 * s) & (y > 18 * s) & (y < 70 * s)] = (0.85, 0.7, 0.35)  # a picture on the wall
    cx = W / 2 + 18 * s * np.sin(2 * np.pi * t / 2.0)
    cy = H * 0.42 + 4 * s * np.sin(2 * np.pi * t / 1.3)
    shoulders = ((x - cx) / (70 * s)) ** 2 + ((y - H * 1.05) / (40 * s)) ** 2 < 1
    img[shoulders] = (0.2, 0.3, 0.55)
    head = ((x - cx) / (26 * s)) ** 2 + ((y - cy) / (33 * s)) ** 2 < 1
    shade = 0.9 - 0.25 * ((x - cx) / (26 * s))
    img[head] = np.stack([0.93 * shade, 0.72 * shade, 0.6 * shade], axis=-1)[head]
    img[head & (y < cy - 16 * s)] = (0.25, 0.15, 0.08)  # hair
    blink = 1.0 if (t % 1.7) > 0.12 else 0.2
    for dx in (-9 * s, 9 * s):
        eye = ((x - cx - dx) / (3.5 * s)) ** 2 + ((y - cy + 4 * s) / (3.0 * s * blink)) ** 2 < 1
        img[eye] = (0.1, 0.1, 0.12)
    img[(np.abs(x - cx) < 8 * s) & (np.abs(y - cy - 14 * s) < 1.5 * s)] = (0.55, 0.2, 0.2)  # mouth
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)

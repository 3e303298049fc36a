"""Writes sample_256x144.mp4: a 3 s procedural face-cam scene (a head and shoulders that sway in
front of a textured wall), used by the README's first command and by the tests.

Run: python tests/data/make_sample_clip.py
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from morphcam.daemon.video import VideoWriter

W, H, FPS, SECONDS = 256, 144, 30, 3


def scene(t: float) -> np.ndarray:
    y, x = np.mgrid[0:H, 0:W].astype(np.float32)
    wall = 0.55 + 0.12 * np.sin(x / 9.0) * np.sin(y / 7.0) + 0.15 * (y / H)
    img = np.stack([wall * 0.75, wall * 0.8, wall * 0.95], axis=-1)
    img[(x > 20) & (x < 70) & (y > 18) & (y < 70)] = (0.85, 0.7, 0.35)  # a picture frame on the wall
    cx = W / 2 + 18 * np.sin(2 * np.pi * t / 2.0)
    cy = H * 0.42 + 4 * np.sin(2 * np.pi * t / 1.3)
    shoulders = ((x - cx) / 70) ** 2 + ((y - H * 1.05) / 40) ** 2 < 1
    img[shoulders] = (0.2, 0.3, 0.55)
    head = ((x - cx) / 26) ** 2 + ((y - cy) / 33) ** 2 < 1
    shade = 0.9 - 0.25 * ((x - cx) / 26)
    img[head] = np.stack([0.93 * shade, 0.72 * shade, 0.6 * shade], axis=-1)[head]
    hair = head & (y < cy - 16)
    img[hair] = (0.25, 0.15, 0.08)
    blink = 1.0 if (t % 1.7) > 0.12 else 0.2
    for dx in (-9, 9):
        eye = ((x - cx - dx) / 3.5) ** 2 + ((y - cy + 4) / (3.0 * blink)) ** 2 < 1
        img[eye] = (0.1, 0.1, 0.12)
    mouth = (np.abs(x - cx) < 8) & (np.abs(y - cy - 14) < 1.5)
    img[mouth] = (0.55, 0.2, 0.2)
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


def main() -> None:
    out = Path(__file__).with_name("sample_256x144.mp4")
    with VideoWriter(out, W, H, FPS, crf=23) as writer:
        for i in range(FPS * SECONDS):
            writer.write(scene(i / FPS))
    print(f"wrote {out} ({out.stat().st_size} bytes)")


if __name__ == "__main__":
    main()

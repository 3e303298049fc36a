"""Writes sample_256x144.mp4: 3 s of the procedural face-cam scene, used by the README's first
command and by the tests.

Run: python tests/data/make_sample_clip.py
"""
from __future__ import annotations

from pathlib import Path

from morphcam.daemon.sample import facecam_frame
from morphcam.daemon.video import VideoWriter

W, H, FPS, SECONDS = 256, 144, 30, 3


def main() -> None:
    out = Path(__file__).with_name("sample_256x144.mp4")
    with VideoWriter(out, W, H, FPS, crf=23) as writer:
        for i in range(FPS * SECONDS):
            writer.write(facecam_frame(i / FPS, W, H))
    print(f"wrote {out} ({out.stat().st_size} bytes)")


if __name__ == "__main__":
    main()

"""Contact sheet of every style: ``python -m morphcam.model.teachers.preview OUT.png``.

One row per style in table order (the first row is the input), one column per moment: the
first three columns are consecutive frames at 30 fps (so particle motion can be checked by
eye), the last two are later. The scene is the procedural face cam the daemon's thumbnails use.
"""
from __future__ import annotations

import argparse
from fractions import Fraction

import av
import numpy as np
import torch

from morphcam.daemon.sample import facecam_frame

from . import TEACHERS

TIMES = (0.0, 1 / 30, 2 / 30, 0.5, 1.5)


def contact_sheet(width: int = 256, height: int = 144, seed: int = 0, gap: int = 2) -> np.ndarray:
    """RGB uint8 (rows * (height + gap), columns * (width + gap), 3) sheet of every teacher."""
    frames = np.stack([facecam_frame(t, width, height) for t in TIMES])  # (T, H, W, 3)
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float().div(255).unsqueeze(0)  # (1, T, 3, H, W)
    times = torch.tensor(TIMES).view(1, -1)
    rows = [x] + [teacher(x, times, seed) for teacher in TEACHERS.values()]
    sheet = np.zeros((len(rows) * (height + gap), len(TIMES) * (width + gap), 3), np.uint8)
    for r, clip in enumerate(rows):
        imgs = (clip[0].permute(0, 2, 3, 1).clamp(0, 1) * 255).round().byte().numpy()
        for c, img in enumerate(imgs):
            y, x0 = r * (height + gap), c * (width + gap)
            sheet[y : y + height, x0 : x0 + width] = img
    return sheet


def write_png(path: str, rgb: np.ndarray) -> None:
    """Write an RGB uint8 (H, W, 3) array as a PNG with PyAV."""
    with av.open(path, "w", format="image2") as container:
        stream = container.add_stream("png", rate=Fraction(1))
        stream.width, stream.height, stream.pix_fmt = rgb.shape[1], rgb.shape[0], "rgb24"
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", help="PNG file to write")
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--height", type=int, default=144)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    write_png(args.out, contact_sheet(args.width, args.height, args.seed))
    print("rows: input, " + ", ".join(TEACHERS) + f"; columns: t = {', '.join(f'{t:.3f}' for t in TIMES)} s")


if __name__ == "__main__":
    main()

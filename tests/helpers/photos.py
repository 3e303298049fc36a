"""Folders of small pictures for the data and pool tests, so no test needs the bundled photos."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from morphcam.daemon.sample import facecam_frame
from morphcam.model.teachers.preview import write_png


def photo_folder(folder: Path, n: int = 10, width: int = 96, height: int = 64, seed: int = 0,
                 time_step: float = 0.1, prefix: str = "pic") -> Path:
    """``n`` PNGs: the face cam at ``time_step`` apart, darkened and speckled by ``seed``'s noise."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        img = facecam_frame(time_step * i, width, height) // 2 + rng.integers(0, 120, (height, width, 3), dtype=np.uint8)
        write_png(str(folder / f"{prefix}{i}.png"), img)
    return folder

"""Pixel formats on the wire."""
from __future__ import annotations

import numpy as np
import pytest

from morphcam.daemon import frames


def _image(w=64, h=48):
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 255 // w, y * 255 // h, (x + y) * 255 // (w + h)], axis=-1).astype(np.uint8)


@pytest.mark.parametrize("fmt,tol", [("rgb24", 0), ("nv12", 6), ("i420", 6), ("jpeg", 6)])
def test_round_trip(fmt, tol):
    img = _image()
    data = frames.encode(img, fmt)
    if frames.expected_bytes(fmt, 64, 48) is not None:
        assert len(data) == frames.expected_bytes(fmt, 64, 48)
    back = frames.decode(data, fmt, 64, 48)
    assert back.shape == (48, 64, 3) and np.abs(back.astype(int) - img).mean() <= tol


def test_jpeg_quality_changes_size():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    assert len(frames.encode(img, "jpeg", 95)) > len(frames.encode(img, "jpeg", 20))


@pytest.mark.parametrize("fmt,w,h,message", [
    ("bgr", 64, 48, "unknown pixel format"), ("rgb24", 8, 8, "too small"), ("i420", 63, 48, "even width"),
])
def test_check_size(fmt, w, h, message):
    with pytest.raises(frames.FrameError, match=message):
        frames.check_size(fmt, w, h)


def test_bad_bytes():
    with pytest.raises(frames.FrameError, match="must be 9216 bytes, got 10"):
        frames.decode(b"0" * 10, "rgb24", 64, 48)
    jpeg = frames.encode(_image(), "jpeg")
    with pytest.raises(frames.FrameError, match="corrupt JPEG"):
        frames.decode(jpeg[: len(jpeg) // 2], "jpeg", 64, 48)
    with pytest.raises(frames.FrameError, match="not a JPEG"):
        frames.decode(b"GIF89a....", "jpeg", 64, 48)
    with pytest.raises(frames.FrameError, match="is 64x48, the session is 32x32"):
        frames.decode(jpeg, "jpeg", 32, 32)

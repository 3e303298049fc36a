"""Frame bytes <-> RGB arrays for the wire's pixel formats (RGB24, NV12, I420, JPEG), via PyAV.

PyAV is imported only where a conversion needs it: RGB24 frames never load it.

Every decode checks the byte count (or the decoded size) against the session's size and
raises ``FrameError`` with a message that says what was expected. Torch-free: the client and
the bridge use this module too.
"""
from __future__ import annotations

from fractions import Fraction

import numpy as np

FORMATS = ("rgb24", "nv12", "i420", "jpeg")
_AV_YUV = {"nv12": "nv12", "i420": "yuv420p"}


class FrameError(ValueError):
    """Frame bytes that do not match the session's size or pixel format."""


def check_size(fmt: str, width: int, height: int) -> None:
    """Raise FrameError when ``fmt`` cannot carry a ``width`` x ``height`` frame."""
    if fmt not in FORMATS:
        raise FrameError(f"unknown pixel format {fmt!r}; use one of {', '.join(FORMATS)}")
    if width < 16 or height < 16:
        raise FrameError(f"frame size {width}x{height} is too small; the minimum is 16x16")
    if fmt != "rgb24" and (width % 2 or height % 2):
        raise FrameError(f"{fmt} needs an even width and height, got {width}x{height}")


def expected_bytes(fmt: str, width: int, height: int) -> int | None:
    """Exact byte count of a raw frame, or None for JPEG (variable)."""
    if fmt == "rgb24":
        return width * height * 3
    if fmt in _AV_YUV:
        return width * height * 3 // 2
    return None


def decode(data: bytes, fmt: str, width: int, height: int) -> np.ndarray:
    """Bytes in ``fmt`` -> RGB ``uint8`` array ``(height, width, 3)``."""
    want = expected_bytes(fmt, width, height)
    if want is not None and len(data) != want:
        raise FrameError(f"{fmt} frame of {width}x{height} must be {want} bytes, got {len(data)}")
    if fmt == "rgb24":
        return np.frombuffer(data, dtype=np.uint8).reshape(height, width, 3)
    import av

    if fmt in _AV_YUV:
        planes = np.frombuffer(data, dtype=np.uint8).reshape(height * 3 // 2, width)
        frame = av.VideoFrame.from_ndarray(planes, format=_AV_YUV[fmt])
        return frame.to_ndarray(format="rgb24")
    return _decode_jpeg(data, width, height)


def _decode_jpeg(data: bytes, width: int, height: int) -> np.ndarray:
    import av

    if len(data) < 4 or data[:2] != b"\xff\xd8":
        raise FrameError("not a JPEG image (no start-of-image marker)")
    codec = av.CodecContext.create("mjpeg", "r")
    codec.options = {"err_detect": "explode"}  # refuse damaged data rather than conceal it
    try:
        frames = codec.decode(av.Packet(data)) + codec.decode(None)
    except (av.FFmpegError, ValueError) as exc:
        raise FrameError(f"corrupt JPEG image: {exc}") from None
    if len(frames) != 1:
        raise FrameError(f"corrupt JPEG image: decoded {len(frames)} pictures, expected 1")
    frame = frames[0]
    if (frame.width, frame.height) != (width, height):
        raise FrameError(f"JPEG image is {frame.width}x{frame.height}, the session is {width}x{height}")
    return frame.to_ndarray(format="rgb24")


def encode(rgb: np.ndarray, fmt: str, jpeg_quality: int = 85) -> bytes:
    """RGB ``uint8`` array ``(H, W, 3)`` -> bytes in ``fmt``."""
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise FrameError(f"expected a uint8 (H, W, 3) array, got {rgb.dtype} {rgb.shape}")
    if fmt == "rgb24":
        return np.ascontiguousarray(rgb).tobytes()
    import av

    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
    if fmt in _AV_YUV:
        return frame.reformat(format=_AV_YUV[fmt]).to_ndarray().tobytes()
    if fmt == "jpeg":
        return _encode_jpeg(frame, jpeg_quality)
    raise FrameError(f"unknown pixel format {fmt!r}; use one of {', '.join(FORMATS)}")


def _encode_jpeg(frame, quality: int) -> bytes:
    import av

    codec = av.CodecContext.create("mjpeg", "w")
    codec.width, codec.height = frame.width, frame.height
    codec.pix_fmt = "yuvj420p"
    codec.time_base = Fraction(1, 30)
    # JPEG quality 1..100 onto the encoder's quantiser scale 31..2 (lower is better).
    q = int(round(2 + (100 - min(max(quality, 1), 100)) * 29 / 99))
    codec.options = {"qmin": str(q), "qmax": str(q)}
    packets = codec.encode(frame.reformat(format="yuvj420p")) + codec.encode(None)
    return b"".join(bytes(p) for p in packets)


def resize(rgb: np.ndarray, width: int) -> np.ndarray:
    """Scale an RGB frame to ``width`` pixels across (even height, aspect kept)."""
    import av

    h, w = rgb.shape[:2]
    height = max(2, round(h * width / w / 2) * 2)
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
    return frame.reformat(width=width, height=height, format="rgb24").to_ndarray()

"""Reading and writing video files and image folders with PyAV (RGB uint8 frames)."""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import av
import numpy as np

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


class MediaError(ValueError):
    """An input or output file that cannot be used; the message says why."""


@dataclass(frozen=True)
class MediaInfo:
    width: int
    height: int
    fps: float
    frames: int | None  # None when the container does not say


def _images(folder: Path) -> list[Path]:
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise MediaError(f"{folder} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    return files


def _read_image(path: Path) -> av.VideoFrame:
    try:
        with av.open(str(path)) as container:
            return next(container.decode(video=0))
    except (av.FFmpegError, StopIteration) as exc:
        raise MediaError(f"cannot read image {path}: {exc}") from None


def probe(path: str | Path, folder_fps: float = 30.0) -> MediaInfo:
    """Size, rate and frame count of a video file or image folder."""
    p = Path(path)
    if not p.exists():
        raise MediaError(f"{p} does not exist")
    if p.is_dir():
        files = _images(p)
        first = _read_image(files[0])
        return MediaInfo(first.width, first.height, folder_fps, len(files))
    try:
        with av.open(str(p)) as container:
            if not container.streams.video:
                raise MediaError(f"{p} has no video stream")
            s = container.streams.video[0]
            rate = float(s.average_rate or s.guessed_rate or 30)
            return MediaInfo(s.codec_context.width, s.codec_context.height, rate, s.frames or None)
    except av.FFmpegError as exc:
        raise MediaError(f"cannot open {p} as video: {exc}") from None


def read_frames(path: str | Path, size: tuple[int, int] | None = None) -> Iterator[np.ndarray]:
    """RGB frames (H, W, 3) of a video file or of a folder's images in name order, scaled to
    ``size`` (width, height) when given."""
    p = Path(path)

    def convert(frame: av.VideoFrame) -> np.ndarray:
        if size is not None and (frame.width, frame.height) != size:
            frame = frame.reformat(width=size[0], height=size[1], format="rgb24")
        return frame.to_ndarray(format="rgb24")

    if p.is_dir():
        for f in _images(p):
            yield convert(_read_image(f))
        return
    try:
        with av.open(str(p)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for frame in container.decode(stream):
                yield convert(frame)
    except av.FFmpegError as exc:
        raise MediaError(f"cannot decode {p}: {exc}") from None


class VideoWriter:
    """H.264 (or MPEG-4 where libx264 is missing) into any container PyAV knows by suffix."""

    def __init__(self, path: str | Path, width: int, height: int, fps: float, crf: int = 20) -> None:
        self.path = Path(path)
        if self.path.suffix.lower() not in (".mp4", ".mkv", ".mov", ".avi", ".webm", ".ts"):
            raise MediaError(f"output {self.path} needs a video suffix: .mp4, .mkv, .mov, .avi, .webm or .ts")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._container = av.open(str(self.path), mode="w")
        rate = Fraction(fps).limit_denominator(1001)
        codec = "libvpx-vp9" if self.path.suffix.lower() == ".webm" else "libx264"
        try:
            self._stream = self._container.add_stream(codec, rate=rate)
        except (av.FFmpegError, ValueError):
            self._stream = self._container.add_stream("mpeg4", rate=rate)
        self._stream.width, self._stream.height = width, height
        self._stream.pix_fmt = "yuv420p"
        if codec == "libx264":
            self._stream.options = {"crf": str(crf), "preset": "veryfast"}
        self.frames = 0

    def write(self, rgb: np.ndarray) -> None:
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        self.frames += 1

    def close(self) -> None:
        for packet in self._stream.encode(None):
            self._container.mux(packet)
        self._container.close()

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

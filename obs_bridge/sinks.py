"""Frame sinks: a virtual camera (pyvirtualcam), an MPEG-TS stream over UDP, or a file.

A sink is opened once with the frame size and rate, then gets RGB uint8 frames of shape
(H, W, 3) from one thread. ``write`` must not block for long: the relay calls it for every
frame it shows, styled or passed through.
"""
from __future__ import annotations

import logging
from fractions import Fraction
from typing import Any, Callable

import av
import numpy as np

from morphcam.obs_bridge.settings import SinkSettings

log = logging.getLogger(__name__)

# x264 settings for live output: no lookahead, no B-frames, an I-frame every second.
LIVE_X264 = {"preset": "ultrafast", "tune": "zerolatency"}


class FrameSink:
    """Base of all sinks: ``open``, ``write`` per frame, ``close``."""

    def __init__(self, settings: SinkSettings) -> None:
        self.settings = settings
        self.frames_written = 0

    def open(self, width: int, height: int, fps: float) -> None:
        raise NotImplementedError

    def write(self, image: np.ndarray, capture_time_ns: int) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def describe(self) -> str:
        return self.settings.kind


class VirtualCameraSink(FrameSink):
    """pyvirtualcam: v4l2loopback on Linux, the OBS Virtual Camera or Unity Capture elsewhere."""

    def __init__(self, settings: SinkSettings) -> None:
        super().__init__(settings)
        self._cam: Any = None
        self._convert: Callable[[np.ndarray], np.ndarray] = lambda x: x

    def open(self, width: int, height: int, fps: float) -> None:
        import pyvirtualcam  # imported here: it probes devices at import on some systems

        fmt = pyvirtualcam.PixelFormat[self.settings.pixel_format]
        self._convert = _converter(fmt.name, width, height)
        backend = self.settings.backend or None
        # Checked here: pyvirtualcam raises KeyError from a half-built Camera whose __del__ then fails.
        if backend is not None and backend not in pyvirtualcam.camera.BACKENDS:
            raise RuntimeError(
                f"pyvirtualcam has no backend {backend!r} on this system: "
                f"set bridge.sink.backend to one of {sorted(pyvirtualcam.camera.BACKENDS)} or leave it empty"
            )
        try:
            self._cam = pyvirtualcam.Camera(width, height, fps, fmt=fmt, device=self.settings.device or None, backend=backend)
        except RuntimeError as e:
            raise RuntimeError(
                f"no virtual camera could be opened ({e}). On Linux run install/linux/setup-v4l2loopback.sh; "
                "on Windows/macOS start OBS once and install its Virtual Camera; or use bridge.sink.kind = \"udp\"."
            ) from None
        log.info("virtual camera %s (%s) open", self._cam.device, self._cam.backend)

    def write(self, image: np.ndarray, capture_time_ns: int) -> None:
        self._cam.send(self._convert(image))
        self.frames_written += 1

    def close(self) -> None:
        if self._cam is not None:
            self._cam.close()
            self._cam = None

    def describe(self) -> str:
        return f"virtualcam {self._cam.device}" if self._cam is not None else "virtualcam"


def _converter(fmt: str, width: int, height: int) -> Callable[[np.ndarray], np.ndarray]:
    """RGB (H, W, 3) -> the layout pyvirtualcam wants for ``fmt``; PyAV's swscale does the YUV ones."""
    if fmt == "RGB":
        return np.ascontiguousarray
    if fmt == "BGR":
        return lambda x: np.ascontiguousarray(x[:, :, ::-1])
    if fmt == "GRAY":
        return lambda x: av.VideoFrame.from_ndarray(x, format="rgb24").reformat(format="gray").to_ndarray()
    if fmt == "RGBA":
        return lambda x: np.concatenate([x, np.full(x.shape[:2] + (1,), 255, np.uint8)], axis=2)
    av_fmt = {"I420": "yuv420p", "NV12": "nv12", "YUYV": "yuyv422", "UYVY": "uyvy422"}[fmt]

    def convert(x: np.ndarray) -> np.ndarray:
        frame = av.VideoFrame.from_ndarray(x, format="rgb24").reformat(format=av_fmt)
        return np.concatenate([np.asarray(p).reshape(-1) for p in _plane_bytes(frame, width, height)])

    return convert


def _plane_bytes(frame: Any, width: int, height: int) -> list[np.ndarray]:
    """The planes of ``frame`` without their row padding."""
    out = []
    for plane in frame.planes:
        row = np.frombuffer(plane, np.uint8).reshape(plane.height, plane.line_size)
        out.append(row[:, : plane.width * _bytes_per_pixel(frame.format.name, len(out))])
    return out


def _bytes_per_pixel(av_fmt: str, plane: int) -> int:
    return {"nv12": (1, 2), "yuyv422": (2,), "uyvy422": (2,)}.get(av_fmt, (1, 1, 1))[plane]


class EncodedSink(FrameSink):
    """H.264 through PyAV into a container: MPEG-TS over UDP, or a file."""

    def _target(self) -> tuple[str, str | None]:
        raise NotImplementedError

    def open(self, width: int, height: int, fps: float) -> None:
        target, fmt = self._target()
        self._container = av.open(target, mode="w", format=fmt)
        rate = Fraction(fps).limit_denominator(1001)
        self._stream = self._container.add_stream("libx264", rate=rate, options=dict(LIVE_X264))
        self._stream.width, self._stream.height = width, height
        self._stream.pix_fmt = "yuv420p"
        self._stream.bit_rate = self.settings.bitrate_kbps * 1000
        self._stream.codec_context.gop_size = max(1, round(fps))
        # Timestamps come from the capture clock at 90 kHz, not from a fixed frame rate: frames
        # closer than 1/fps apart must still get distinct, growing timestamps.
        self._stream.time_base = Fraction(1, 90000)
        self._stream.codec_context.time_base = Fraction(1, 90000)
        self._t0: int | None = None
        self._last_pts = -1

    def write(self, image: np.ndarray, capture_time_ns: int) -> None:
        # pts from the capture clock keeps the original timing; it must only grow.
        if self._t0 is None:
            self._t0 = capture_time_ns
        pts = max((capture_time_ns - self._t0) * 9 // 100_000, self._last_pts + 1)
        self._last_pts = pts
        frame = av.VideoFrame.from_ndarray(image, format="rgb24")
        frame.pts, frame.time_base = pts, self._stream.time_base
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        self.frames_written += 1

    def close(self) -> None:
        container = getattr(self, "_container", None)
        if container is None:
            return
        try:
            for packet in self._stream.encode(None):
                container.mux(packet)
        finally:
            container.close()
            self._container = None


class UdpStreamSink(EncodedSink):
    """MPEG-TS over UDP, for an OBS Media Source (``ffmpeg_source``, input_format mpegts)."""

    def _target(self) -> tuple[str, str | None]:
        return self.settings.url, "mpegts"

    def describe(self) -> str:
        return f"udp {self.settings.url}"


class FileSink(EncodedSink):
    """A video file; the container follows the file's extension."""

    def _target(self) -> tuple[str, str | None]:
        return self.settings.path, None

    def describe(self) -> str:
        return f"file {self.settings.path}"


SINKS: dict[str, Callable[[SinkSettings], FrameSink]] = {
    "virtualcam": VirtualCameraSink,
    "udp": UdpStreamSink,
    "file": FileSink,
}


def make_sink(settings: SinkSettings) -> FrameSink:
    """The sink that ``settings.kind`` names, not yet opened."""
    try:
        return SINKS[settings.kind](settings)
    except KeyError:
        raise ValueError(f"unknown sink kind {settings.kind!r}: use one of {', '.join(SINKS)}") from None

"""Frame sources: a capture device, OBS's UDP MPEG-TS output, or a looping video file.

Each source decodes on its own thread with PyAV, scales to the bridge's size, stamps each
frame with its capture time (``time.monotonic_ns()``) and keeps only the newest frame: a slow
consumer sees fewer frames, never older ones. A stream that fails or ends is opened again
after a short pause, so a restarted OBS or an unplugged camera heals by itself.
"""
from __future__ import annotations

import logging
import platform
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

import av
import numpy as np

from morphcam.obs_bridge.settings import SourceSettings

log = logging.getLogger(__name__)

# PyAV's input format for capture devices, by OS.
DEVICE_FORMATS = {"Linux": "v4l2", "Windows": "dshow", "Darwin": "avfoundation"}
# The option each capture format uses for what the camera sends ("mjpeg", "yuyv422", ...).
INPUT_FORMAT_OPTION = {"v4l2": "input_format", "dshow": "vcodec", "avfoundation": "pixel_format"}
# Low-latency demuxing of a live MPEG-TS stream (measured: first frame ~1.3 s after OBS starts).
STREAM_OPTIONS = {"fflags": "nobuffer", "flags": "low_delay"}
RETRY_PAUSE_S = 0.5


@dataclass(frozen=True)
class Frame:
    """One captured frame: ``image`` is RGB uint8 of shape (H, W, 3)."""

    seq: int
    capture_time_ns: int  # time.monotonic_ns() when the frame was decoded
    image: np.ndarray


class LatestFrame:
    """A one-slot mailbox: ``put`` replaces, ``wait_newer`` blocks until a newer frame exists."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._frame: Frame | None = None

    def put(self, frame: Frame) -> None:
        with self._cond:
            self._frame = frame
            self._cond.notify_all()

    def wait_newer(self, after_seq: int, timeout: float) -> Frame | None:
        """The newest frame with ``seq > after_seq``, waiting up to ``timeout`` s; else None."""
        with self._cond:
            self._cond.wait_for(lambda: self._frame is not None and self._frame.seq > after_seq, timeout)
            frame = self._frame
        return frame if frame is not None and frame.seq > after_seq else None


class FrameSource:
    """Decodes a PyAV input on a thread into a ``LatestFrame``. Use ``start()``/``stop()``."""

    def __init__(self, settings: SourceSettings, width: int, height: int) -> None:
        self.settings = settings
        self.width, self.height = width, height
        self.frames = LatestFrame()
        self.frames_read = 0
        self.last_error = ""
        self._seq = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # What to open; subclasses say.
    def _open(self) -> Any:
        raise NotImplementedError

    _paced = False  # files are paced at the nominal rate; live inputs come at their own
    _loops = False  # an ended input is opened again after a pause (files: at once, if looping)

    def start(self) -> "FrameSource":
        self._thread = threading.Thread(target=self._run, name=f"source-{self.settings.kind}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.settings.open_timeout_s + 2.0)

    def __enter__(self) -> "FrameSource":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def read(self, after_seq: int = 0, timeout: float = 1.0) -> Frame | None:
        """The newest frame newer than ``after_seq``, or None after ``timeout`` seconds."""
        return self.frames.wait_newer(after_seq, timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with self._open() as container:
                    self.last_error = ""
                    self._decode(container)
                if not self._loops and not self._stop.is_set():
                    log.info("source %s ended; opening it again", self.settings.kind)
            except (av.error.FFmpegError, OSError) as e:  # a missing stream or device: retry
                if self._stop.is_set():
                    return  # interrupted by stop()
                self.last_error = str(e)
                log.warning("source %s: %s; retrying in %.1f s", self.settings.kind, e, RETRY_PAUSE_S)
            except Exception as e:  # never let the reader thread die silently
                self.last_error = f"{type(e).__name__}: {e}"
                log.exception("source %s failed; retrying", self.settings.kind)
            if not self._loops:
                self._stop.wait(RETRY_PAUSE_S)

    def _decode(self, container: Any) -> None:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        period_ns = int(1e9 / self.settings.fps) if self._paced and self.settings.fps > 0 else 0
        next_due = time.monotonic_ns()
        for frame in container.decode(stream):
            if self._stop.is_set():
                return
            if period_ns:  # files play at their nominal rate, like a camera would
                delay = next_due - time.monotonic_ns()
                if delay > 0 and self._stop.wait(delay / 1e9):
                    return
                next_due = max(next_due + period_ns, time.monotonic_ns() - period_ns)
            image = frame.to_ndarray(width=self.width, height=self.height, format="rgb24")
            self._seq += 1
            self.frames_read += 1
            self.frames.put(Frame(self._seq, time.monotonic_ns(), image))


class FileSource(FrameSource):
    """A video file, played at ``fps`` and looped (demos and tests)."""

    _paced = True

    @property
    def _loops(self) -> bool:
        return self.settings.loop

    def _open(self) -> Any:
        return av.open(self.settings.path)

    def _decode(self, container: Any) -> None:
        super()._decode(container)
        if not self.settings.loop:
            self._stop.set()


class StreamSource(FrameSource):
    """A live MPEG-TS stream, e.g. OBS's Custom Output (FFmpeg) to udp://127.0.0.1:5600."""

    def _open(self) -> Any:
        t = self.settings.open_timeout_s
        return av.open(self.settings.url, format="mpegts", options=dict(STREAM_OPTIONS), timeout=(t, t))


class DeviceSource(FrameSource):
    """A capture device: a webcam or the OBS Virtual Camera (v4l2, dshow, avfoundation)."""

    def _open(self) -> Any:
        fmt = self.settings.device_format or DEVICE_FORMATS.get(platform.system(), "")
        if not fmt:
            raise OSError(f"no capture format known for {platform.system()}: set bridge.source.device_format")
        options = {"framerate": f"{self.settings.fps:g}"}
        if self.settings.video_size:
            options["video_size"] = self.settings.video_size
        if self.settings.input_format:
            options[INPUT_FORMAT_OPTION.get(fmt, "input_format")] = self.settings.input_format
        t = self.settings.open_timeout_s
        return av.open(self.settings.device, format=fmt, options=options, timeout=(t, t))


SOURCES: dict[str, Callable[[SourceSettings, int, int], FrameSource]] = {
    "file": FileSource,
    "udp": StreamSource,
    "device": DeviceSource,
}


def make_source(settings: SourceSettings, width: int, height: int) -> FrameSource:
    """The source that ``settings.kind`` names, not yet started."""
    try:
        return SOURCES[settings.kind](settings, width, height)
    except KeyError:
        raise ValueError(f"unknown source kind {settings.kind!r}: use one of {', '.join(SOURCES)}") from None

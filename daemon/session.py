"""A live session: its settings, the newest-frame input slot, the output queue and statistics.

Threads: the gRPC reader (event loop) puts frames in; the worker thread takes them out and
delivers results back onto the event loop. Everything shared between the two sits behind
``Session._lock``; the output queue is only touched on the event loop.
"""
from __future__ import annotations

import asyncio
import collections
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .pipeline import PromptChange, SessionParams


@dataclass(frozen=True)
class SessionSettings:
    """The validated, protobuf-free form of a session's opening message."""

    width: int
    height: int
    prompt: PromptChange | str = "original"  # plain text is taken as one prompt
    name: str = ""
    input_format: str = "rgb24"
    output_format: str = ""  # "" = same as input_format
    fps: float = 30.0
    strength: float | None = None
    seed: int | None = None
    drop_policy: str = "latest"  # "latest" or "block"
    jpeg_quality: int = 85

    def __post_init__(self) -> None:
        if isinstance(self.prompt, str):
            object.__setattr__(self, "prompt", PromptChange.single(self.prompt))
        if not self.output_format:
            object.__setattr__(self, "output_format", self.input_format)
        if self.drop_policy not in ("latest", "block"):
            raise ValueError(f"drop_policy must be 'latest' or 'block', got {self.drop_policy!r}")

    def params(self) -> SessionParams:
        return SessionParams(self.width, self.height, self.prompt, self.strength, self.seed)


@dataclass
class PendingFrame:
    seq: int
    capture_time_ns: int
    rgb: np.ndarray  # (H, W, 3) uint8
    received_ns: int  # time.monotonic_ns() at receipt of the request
    decode_us: int
    taken_ns: int = 0


@dataclass
class Output:
    """One processed frame on its way back to the client."""

    frame: PendingFrame
    rgb: np.ndarray
    model_us: int
    batch_size: int


@dataclass
class Failure:
    """Ends the stream with a gRPC status."""

    code: str  # a grpc.StatusCode name
    message: str


END = object()  # the input is closed and every taken frame has been answered


class RateWindow:
    """Events per second and latency percentiles over the last ``seconds``."""

    def __init__(self, seconds: float = 5.0, size: int = 4096) -> None:
        self.seconds = seconds
        self._events: collections.deque[tuple[float, float]] = collections.deque(maxlen=size)

    def add(self, now: float, value: float = 0.0) -> None:
        self._events.append((now, value))

    def _recent(self, now: float) -> list[tuple[float, float]]:
        return [e for e in self._events if now - e[0] <= self.seconds]

    def rate(self, now: float) -> float:
        recent = self._recent(now)
        if len(recent) < 2:
            return 0.0
        return (len(recent) - 1) / max(recent[-1][0] - recent[0][0], 1e-6)

    def percentile(self, now: float, q: float) -> float:
        values = [v for _, v in self._recent(now)]
        return float(np.percentile(values, q)) if values else 0.0


@dataclass
class SessionStats:
    frames_in: int = 0
    frames_out: int = 0
    dropped: int = 0
    inputs: RateWindow = field(default_factory=RateWindow)
    outputs: RateWindow = field(default_factory=RateWindow)  # value: total latency in ms


class Session:
    """State of one stream. Created on the event loop, shared with the worker thread."""

    def __init__(self, session_id: str, settings: SessionSettings, loop: asyncio.AbstractEventLoop,
                 output_capacity: int) -> None:
        self.id = session_id
        self.settings = settings
        self.prompt = settings.prompt
        self.strength = settings.strength
        self.seed = settings.seed
        self.enabled = True
        self.activity: collections.deque[tuple[float, str, str]] = collections.deque(maxlen=50)
        self.last_input: np.ndarray | None = None  # newest frame answered, for previews
        self.last_output: np.ndarray | None = None
        self.stats = SessionStats()
        self.closed = False
        self._loop = loop
        self._lock = threading.Lock()
        self._pending: PendingFrame | None = None
        self._last_input = 0.0  # monotonic time of the newest frame put
        self._period: float | None = None  # smoothed time between input frames, once two came
        self._inflight = 0  # taken by the worker, output not yet consumed by the stream
        self._capacity = output_capacity
        self._out: asyncio.Queue[Any] = asyncio.Queue()
        self._slot_free = asyncio.Event()
        self._slot_free.set()
        self._wake_worker: Any = None  # set by the worker on registration

    def record(self, origin: str, action: str) -> None:
        """Note a control change in the session's activity log (newest last)."""
        self.activity.append((time.time(), origin or "client", action))

    # -- event loop side -------------------------------------------------------------------
    def put(self, frame: PendingFrame) -> bool:
        """Offer the newest frame; returns True when an older frame was dropped for it."""
        with self._lock:
            dropped = self._pending is not None
            self._pending = frame
            self.stats.frames_in += 1
            now = time.monotonic()
            if self._last_input:
                gap = now - self._last_input
                self._period = gap if self._period is None else 0.8 * self._period + 0.2 * gap
            self._last_input = now
            self.stats.inputs.add(self._last_input)
            if dropped:
                self.stats.dropped += 1
            self._slot_free.clear()
        if self._wake_worker is not None:
            self._wake_worker()
        return dropped

    async def wait_slot_free(self) -> None:
        """For the BLOCK policy: return once the worker has taken the pending frame."""
        await self._slot_free.wait()

    async def next_output(self) -> Any:
        """The next Output, Failure or END, in order."""
        item = await self._out.get()
        if isinstance(item, Output):
            with self._lock:
                self._inflight -= 1
            if self._wake_worker is not None:
                self._wake_worker()  # room in the output queue again
        return item

    def fail(self, code: str, message: str) -> None:
        self._out.put_nowait(Failure(code, message))

    def busy(self) -> bool:
        with self._lock:
            return self._pending is not None or self._inflight > 0

    def finish(self) -> None:
        self._out.put_nowait(END)

    # -- worker side ------------------------------------------------------------------------
    def ready(self) -> bool:
        """A frame is waiting and the client has room for its result."""
        with self._lock:
            return not self.closed and self._pending is not None and self._inflight < self._capacity

    def expects_frame(self, now: float, deadline: float) -> bool:
        """No frame waiting yet, but streaming with room for a result and, by its input rate, its
        next frame due by ``deadline`` (or its rate is not known yet): worth waiting for."""
        with self._lock:
            if self.closed or self._pending is not None or self._inflight >= self._capacity:
                return False
            if now - self._last_input > 1.0:
                return False
            # 0.9: a frame a little early for its period still counts as due.
            return self._period is None or self._last_input + 0.9 * self._period <= deadline

    def take(self) -> PendingFrame | None:
        with self._lock:
            frame, self._pending = self._pending, None
            if frame is not None:
                self._inflight += 1
                frame.taken_ns = time.monotonic_ns()
        self._loop.call_soon_threadsafe(self._slot_free.set)
        return frame

    def deliver(self, item: Output | Failure) -> None:
        """Hand a result to the event loop (thread-safe)."""
        if isinstance(item, Failure):
            with self._lock:
                self._inflight -= 1
        try:
            self._loop.call_soon_threadsafe(self._out.put_nowait, item)
        except RuntimeError:
            pass  # the loop is gone: the daemon is shutting down

    def status(self) -> dict[str, Any]:
        now = time.monotonic()
        s = self.stats
        return {
            "id": self.id, "name": self.settings.name, "width": self.settings.width,
            "height": self.settings.height, "fps_in": s.inputs.rate(now), "fps_out": s.outputs.rate(now),
            "latency_p50_ms": s.outputs.percentile(now, 50), "latency_p99_ms": s.outputs.percentile(now, 99),
            "frames_in": s.frames_in, "frames_out": s.frames_out, "dropped": s.dropped,
            "prompt": self.prompt, "enabled": self.enabled, "strength": self.strength,
        }

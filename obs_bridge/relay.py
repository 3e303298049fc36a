"""The fail-open relay: source -> daemon -> sink, newest frame only, never stalling.

Each source frame is submitted to the daemon's live stream (``submit`` never blocks) and kept
until its styled result comes back. The sink gets, in capture order:
- the styled frame, when it arrives;
- the original frame, when the daemon is disconnected (at once) or has not answered within
  ``deadline_ms`` of the frame's capture (slow, erroring, or just killed).
A daemon a little slower than the source skips some frames; while styled frames are flowing
(one shown within the last ``deadline_ms``) a skipped frame is dropped rather than shown
unstyled, so the output never flickers between styled and original frames.
So the output keeps its rate while the daemon is down and styled frames resume by themselves
when the stream reconnects. A frame older than one already shown is never shown.
"""
from __future__ import annotations

import collections
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from morphcam.obs_bridge.settings import RelaySettings
from morphcam.obs_bridge.sinks import FrameSink
from morphcam.obs_bridge.sources import Frame, FrameSource

log = logging.getLogger(__name__)
TICK_S = 0.004  # how often pending frames are checked against the deadline
MAX_PENDING = 16  # frames awaiting a result; older ones are forgotten (they can never be shown)
HISTORY = 512


class Stream(Protocol):
    """What the relay needs of ``morphcam.daemon.client.LiveStream``."""

    connected: bool

    def submit(self, frame: np.ndarray, capture_time_ns: int | None = None) -> int: ...

    def get_output(self, timeout: float | None = 0) -> Any: ...


@dataclass(frozen=True)
class Shown:
    """One frame handed to the sink."""

    time_ns: int  # time.monotonic_ns() when written
    capture_time_ns: int
    styled: bool  # False: the original frame, passed through


class Relay:
    """Moves frames on its own thread: ``start()``/``stop()``. Counters are for status and tests."""

    def __init__(self, source: FrameSource, stream: Stream, sink: FrameSink, settings: RelaySettings) -> None:
        self.source, self.stream, self.sink, self.settings = source, stream, sink, settings
        self.styled = 0
        self.passthrough = 0
        self.sink_errors = 0
        self.history: collections.deque[Shown] = collections.deque(maxlen=HISTORY)
        self._pending: collections.OrderedDict[int, Frame] = collections.OrderedDict()
        self._last_source_seq = 0
        self._last_shown_capture = -1
        self._styled_until_ns = 0  # styled frames count as flowing until then
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> "Relay":
        self._thread = threading.Thread(target=self._run, name="relay", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.step()
            except Exception:  # the relay must outlive any single failure
                log.exception("relay step failed")
                self._stop.wait(0.05)

    def step(self) -> None:
        """One round: take a new source frame, collect results, show what is due."""
        frame = self.source.read(self._last_source_seq, timeout=0 if self._pending else 0.05)
        if frame is not None:
            self._last_source_seq = frame.seq
            self._submit(frame)
        output = self.stream.get_output(timeout=TICK_S if self._pending and frame is None else 0)
        if output is not None:
            self._show_styled(output)
        self._show_overdue()

    def _submit(self, frame: Frame) -> None:
        if not self.stream.connected:
            self._show(frame.image, frame.capture_time_ns, styled=False)
            return
        seq = self.stream.submit(frame.image, frame.capture_time_ns)
        self._pending[seq] = frame
        while len(self._pending) > MAX_PENDING:
            self._pending.popitem(last=False)

    def _show_styled(self, output: Any) -> None:
        frame = self._pending.pop(output.seq, None)
        # Results for frames already replaced by newer ones are dropped with them.
        for seq in [s for s in self._pending if s < output.seq]:
            del self._pending[seq]
        if output.image is None:
            return
        capture = frame.capture_time_ns if frame is not None else output.capture_time_ns
        self._show(output.image, capture, styled=True)

    def _show_overdue(self) -> None:
        if not self._pending:
            return
        now = time.monotonic_ns()
        deadline_ns = int(self.settings.deadline_ms * 1e6)
        if self.stream.connected:
            due = [s for s, f in self._pending.items() if now - f.capture_time_ns >= deadline_ns]
        else:
            due = list(self._pending)  # the stream is down: nothing pending will come back
        if not due:
            return
        newest = self._pending[due[-1]]
        for seq in due:
            del self._pending[seq]
        if self.stream.connected and now < self._styled_until_ns:
            return  # styled frames are flowing: drop the frames the daemon skipped
        self._show(newest.image, newest.capture_time_ns, styled=False)

    def _show(self, image: np.ndarray, capture_time_ns: int, styled: bool) -> None:
        if capture_time_ns <= self._last_shown_capture:
            return  # never go back in time
        self._last_shown_capture = capture_time_ns
        try:
            self.sink.write(image, capture_time_ns)
        except Exception as e:
            self.sink_errors += 1
            if self.sink_errors in (1, 10) or self.sink_errors % 1000 == 0:
                log.warning("sink %s failed to take a frame (%d so far): %s", self.sink.describe(), self.sink_errors, e)
            return
        if styled:
            self.styled += 1
            self._styled_until_ns = time.monotonic_ns() + int(self.settings.deadline_ms * 1e6)
        else:
            self.passthrough += 1
        self.history.append(Shown(time.monotonic_ns(), capture_time_ns, styled))

"""A live session that never blocks its caller and reconnects by itself.

The caller ``submit``s frames and polls ``get_output``; a background thread owns the gRPC
stream. Only the newest frame waits to be sent and only the newest result waits to be taken;
at most ``max_inflight`` frames are on their way at once, so latency does not pile up in
transport buffers. When the stream fails (daemon down, restarted, erroring) the thread
reconnects with exponential backoff and reopens the session with the current prompt,
strength and on/off state. Fail-open (passing the original frame on) is the caller's choice:
``get_output`` simply returns None when no new result came in time.
"""
from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections import deque
from typing import Any

import grpc
import numpy as np

from morphcam.protos.v1 import morphcam_pb2 as pb

from . import convert
from .client import DaemonClient, DaemonError, OutputFrame, _frame_request, _update_message
from .pipeline import PromptChange
from .session import SessionSettings

log = logging.getLogger(__name__)


class LiveStream:
    def __init__(self, address: str, settings: SessionSettings, token: str | None = None,
                 max_inflight: int = 2, backoff_s: tuple[float, float] = (0.05, 2.0),
                 reply_timeout_s: float = 5.0) -> None:
        self.settings = settings
        self.max_inflight = max_inflight
        self.reply_timeout_s = reply_timeout_s  # frames in flight and no answer this long: reconnect
        self.backoff_s = backoff_s
        self._client = DaemonClient(address, token)
        self._cond = threading.Condition()
        self._stop = False
        self._frame: tuple[int, int, np.ndarray] | None = None  # (seq, capture ns, image) not yet sent
        self._controls: deque[pb.StreamRequest] = deque()
        self._output: OutputFrame | None = None
        self._inflight = 0
        self._last_reply = time.monotonic()
        self._seq = 0
        self._enabled: bool | None = None
        self._call: Any = None
        self._thread: threading.Thread | None = None
        self.session_id: str | None = None
        self.pipeline: str | None = None
        self.connected = False
        self.last_error: str = ""
        self.reconnects = 0
        self.frames_sent = 0
        self.frames_received = 0
        self.frames_skipped = 0  # replaced by a newer frame before they could be sent

    # -- caller side ------------------------------------------------------------------------
    def start(self) -> "LiveStream":
        self._thread = threading.Thread(target=self._run, name="morphcam-livestream", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        call = self._call
        if call is not None:
            call.cancel()
        if self._thread is not None:
            self._thread.join(timeout)
        self._client.close()

    def __enter__(self) -> "LiveStream":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def submit(self, image: np.ndarray, capture_time_ns: int | None = None) -> int:
        """Queue ``image`` (RGB uint8 (H, W, 3)) as the newest frame; returns its seq. Never blocks."""
        with self._cond:
            self._seq += 1
            if self._frame is not None:
                self.frames_skipped += 1
            self._frame = (self._seq, capture_time_ns if capture_time_ns is not None else time.time_ns(), image)
            self._cond.notify_all()
            return self._seq

    def get_output(self, timeout: float | None = 0) -> OutputFrame | None:
        """The newest result not yet taken; waits up to ``timeout`` seconds (None: forever)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._output is None and not self._stop:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                self._cond.wait(remaining)
            out, self._output = self._output, None
            return out

    def set_prompt(self, prompt: PromptChange | str, origin: str = "") -> None:
        """Switch the prompt now; remembered and reapplied after a reconnect. ``origin`` names
        who asked, for the session's activity log."""
        change = PromptChange.single(prompt) if isinstance(prompt, str) else prompt
        with self._cond:
            # A reopened session starts from this prompt directly (no transition to replay).
            self.settings = dataclasses.replace(self.settings, prompt=PromptChange(change.prompts))
            self._controls.append(pb.StreamRequest(prompt=convert.prompt_to_proto(change, origin)))
            self._cond.notify_all()

    def update(self, *, strength: float | None = None, seed: int | None = None, enabled: bool | None = None,
               reset: bool = False, origin: str = "") -> None:
        """Change strength, seed, on/off or reset; remembered and reapplied after a reconnect."""
        with self._cond:
            if strength is not None:
                self.settings = dataclasses.replace(self.settings, strength=strength)
            if seed is not None:
                self.settings = dataclasses.replace(self.settings, seed=seed)
            if enabled is not None:
                self._enabled = enabled
            self._controls.append(pb.StreamRequest(update=_update_message(strength, seed, enabled, reset, origin)))
            self._cond.notify_all()

    # -- the thread -------------------------------------------------------------------------
    def _requests(self):
        with self._cond:
            settings = self.settings
            self._controls.clear()  # the open message carries the current state
            if self._enabled is False:
                self._controls.append(pb.StreamRequest(update=_update_message(None, None, False, False)))
        yield pb.StreamRequest(open=convert.settings_to_proto(settings))
        while True:
            with self._cond:
                while not self._stop and not self._controls and (self._frame is None or self._inflight >= self.max_inflight):
                    if self._inflight and time.monotonic() - self._last_reply > self.reply_timeout_s:
                        # A daemon that holds the call open but answers nothing: start afresh.
                        self.last_error = f"no answer for {self.reply_timeout_s:g} s with frames in flight"
                        if self._call is not None:
                            self._call.cancel()
                        return
                    self._cond.wait(0.25)
                if self._stop:
                    return
                if self._controls:
                    msg = self._controls.popleft()
                    frame = None
                else:
                    msg = None
                    frame, self._frame = self._frame, None
                    self._inflight += 1
            if frame is not None:
                seq, capture_ns, image = frame
                msg = _frame_request(settings, image, seq, capture_ns)
                self.frames_sent += 1
            yield msg

    def _run(self) -> None:
        delay = self.backoff_s[0]
        while True:
            with self._cond:
                if self._stop:
                    return
                self._inflight = 0
                self._last_reply = time.monotonic()
            opened = False
            try:
                self._call = self._client.open_stream(self._requests())
                for reply in self._call:
                    kind = reply.WhichOneof("kind")
                    if kind == "opened":
                        opened = True
                        self._last_reply = time.monotonic()
                        self.session_id, self.pipeline = reply.opened.session_id, reply.opened.pipeline
                        self.connected = True
                        delay = self.backoff_s[0]
                        log.info("live stream connected: session %s (%s)", self.session_id, self.pipeline)
                    elif kind == "frame":
                        out = OutputFrame.from_proto(reply.frame)
                        with self._cond:
                            self._inflight = max(0, self._inflight - 1)
                            self._last_reply = time.monotonic()
                            self._output = out
                            self.frames_received += 1
                            self._cond.notify_all()
                self.last_error = "the daemon ended the stream"
            except grpc.RpcError as err:
                if err.code() != grpc.StatusCode.CANCELLED or not self.last_error.startswith("no answer"):
                    self.last_error = str(DaemonError.from_rpc(err))
            except Exception as exc:  # a frame that cannot be encoded, say: report, reconnect
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("live stream error: %s", self.last_error)
            finally:
                self.connected = False
                if self._call is not None:
                    self._call.cancel()
            with self._cond:
                if self._stop:
                    return
                if opened:
                    log.warning("live stream lost (%s); reconnecting", self.last_error)
                self.reconnects += 1
                self._cond.wait(delay)
            delay = min(delay * 2, self.backoff_s[1])

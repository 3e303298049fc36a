"""Python client of the daemon, for the bridge and for users' own tools. Torch-free.

- ``DaemonClient``: control calls (prompt, update, styles, status) and ``transform`` — an
  ordered, lossless stream for files.
- ``LiveStream``: a live session on a background thread. ``submit`` never blocks, only the
  newest frame is kept, and the stream reconnects by itself (with backoff) after the daemon
  restarts, reopening the session with its current prompt and settings.
"""
from __future__ import annotations

import dataclasses
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator

import grpc
import numpy as np

from morphcam.protos.v1 import morphcam_pb2 as pb
from morphcam.protos.v1 import morphcam_pb2_grpc as pb_grpc

from . import convert, frames
from .pipeline import PresetInfo, PromptChange, StyleInfo
from .session import SessionSettings

log = logging.getLogger(__name__)
DEFAULT_ADDRESS = "127.0.0.1:50051"


class DaemonError(RuntimeError):
    """A call the daemon refused or could not answer; ``code`` is the gRPC status code."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message

    @classmethod
    def from_rpc(cls, err: grpc.RpcError) -> "DaemonError":
        code = err.code() if callable(getattr(err, "code", None)) else grpc.StatusCode.UNKNOWN
        details = err.details() if callable(getattr(err, "details", None)) else str(err)
        return cls(code, details or "")


def normalize_address(address: str) -> str:
    """"/run/x.sock" and "unix:///run/x.sock" -> "unix:/run/x.sock"; "host:port" unchanged."""
    if address.startswith("/"):
        return f"unix:{address}"
    if address.startswith("unix://"):
        return "unix:" + address[len("unix://"):]
    return address


StreamSettings = SessionSettings  # the name clients know it by


@dataclass(frozen=True)
class OutputFrame:
    seq: int
    capture_time_ns: int
    width: int
    height: int
    format: str
    data: bytes
    image: np.ndarray | None  # RGB uint8 (H, W, 3)
    timings: dict[str, int] = field(default_factory=dict)
    dropped_total: int = 0

    @classmethod
    def from_proto(cls, msg: pb.OutputFrame) -> "OutputFrame":
        fmt = convert.FORMAT_NAMES[msg.format]
        image = frames.decode(msg.data, fmt, msg.width, msg.height)
        t = msg.timings
        timings = {k: getattr(t, k) for k in ("decode_us", "queue_us", "model_us", "encode_us", "total_us", "batch_size")}
        return cls(msg.seq, msg.capture_time_ns, msg.width, msg.height, fmt, msg.data, image, timings,
                   msg.dropped_total)


def _frame_request(settings: SessionSettings, image: np.ndarray | bytes, seq: int, capture_ns: int) -> pb.StreamRequest:
    data = image if isinstance(image, bytes) else frames.encode(image, settings.input_format, settings.jpeg_quality)
    return pb.StreamRequest(frame=pb.InputFrame(seq=seq, capture_time_ns=capture_ns, data=data))


def _update_message(strength: float | None, seed: int | None, enabled: bool | None, reset: bool,
                    origin: str = "") -> pb.SessionUpdate:
    msg = pb.SessionUpdate(reset=reset, origin=origin)
    if strength is not None:
        msg.strength = strength
    if seed is not None:
        msg.seed = seed
    if enabled is not None:
        msg.enabled = enabled
    return msg


def _session_ref(session: str) -> pb.SessionRef:
    """Ids are 12 hex digits; anything else is taken as a session name."""
    if len(session) == 12 and all(c in "0123456789abcdef" for c in session):
        return pb.SessionRef(id=session)
    return pb.SessionRef(name=session)


class DaemonClient:
    """Blocking client. Unary calls wait (up to ``timeout_s``) for a daemon that is restarting."""

    def __init__(self, address: str = DEFAULT_ADDRESS, token: str | None = None, timeout_s: float = 5.0,
                 max_message_mb: float = 32.0) -> None:
        self.address = normalize_address(address)
        self.timeout_s = timeout_s
        limit = int(max_message_mb * 1024 * 1024)
        self._channel = grpc.insecure_channel(self.address, options=[
            ("grpc.max_receive_message_length", limit), ("grpc.max_send_message_length", limit)])
        self._stub = pb_grpc.MorphcamStub(self._channel)
        self.metadata = (("authorization", f"Bearer {token}"),) if token else ()

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> "DaemonClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _call(self, method: Any, request: Any) -> Any:
        try:
            return method(request, timeout=self.timeout_s, metadata=self.metadata, wait_for_ready=True)
        except grpc.RpcError as err:
            raise DaemonError.from_rpc(err) from None

    def wait_ready(self, timeout_s: float = 10.0) -> bool:
        """True once the daemon answers, False after ``timeout_s``."""
        try:
            grpc.channel_ready_future(self._channel).result(timeout=timeout_s)
            return True
        except grpc.FutureTimeoutError:
            return False

    def set_prompt(self, session: str, prompt: PromptChange | str, origin: str = "") -> None:
        """Change the prompt of the live session with this id or name. ``origin`` names who
        asked (e.g. "chat:alice") in the session's activity log."""
        change = PromptChange.single(prompt) if isinstance(prompt, str) else prompt
        self._call(self._stub.SetPrompt, pb.SetPromptRequest(session=_session_ref(session),
                                                             prompt=convert.prompt_to_proto(change, origin)))

    def update_session(self, session: str, *, strength: float | None = None, seed: int | None = None,
                       enabled: bool | None = None, reset: bool = False, origin: str = "") -> None:
        self._call(self._stub.UpdateSession, pb.UpdateSessionRequest(
            session=_session_ref(session), update=_update_message(strength, seed, enabled, reset, origin)))

    def list_styles(self) -> list[StyleInfo]:
        reply = self._call(self._stub.ListStyles, pb.ListStylesRequest())
        return [StyleInfo(s.name, s.prompt, s.description) for s in reply.styles]

    def list_presets(self) -> list[PresetInfo]:
        reply = self._call(self._stub.ListPresets, pb.ListPresetsRequest())
        return [PresetInfo(p.name, p.description) for p in reply.presets]

    def status(self) -> pb.GetStatusResponse:
        return self._call(self._stub.GetStatus, pb.GetStatusRequest())

    def open_stream(self, requests: Iterable[pb.StreamRequest]) -> Any:
        """The raw bidirectional call (for tools that build their own messages)."""
        return self._stub.Stream(iter(requests), metadata=self.metadata)

    def transform(self, settings: SessionSettings, images: Iterable[np.ndarray | bytes],
                  capture_times_ns: Iterable[int] | None = None) -> Iterator[OutputFrame]:
        """Every frame of ``images`` through the daemon, in order, none dropped."""
        settings = dataclasses.replace(settings, drop_policy="block")
        times = iter(capture_times_ns) if capture_times_ns is not None else None

        def requests() -> Iterator[pb.StreamRequest]:
            yield pb.StreamRequest(open=convert.settings_to_proto(settings))
            for seq, image in enumerate(images):
                t = next(times) if times is not None else time.time_ns()
                yield _frame_request(settings, image, seq, t)

        call = self.open_stream(requests())
        try:
            for reply in call:
                if reply.WhichOneof("kind") == "frame":
                    yield OutputFrame.from_proto(reply.frame)
        except grpc.RpcError as err:
            raise DaemonError.from_rpc(err) from None
        finally:
            call.cancel()


from .livestream import LiveStream  # noqa: E402  (re-exported: the client API in one place)

__all__ = ["DaemonClient", "DaemonError", "LiveStream", "OutputFrame", "StreamSettings", "normalize_address"]

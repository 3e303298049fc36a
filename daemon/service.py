"""The gRPC servicer: translates messages and calls sessions and the worker, nothing more."""
from __future__ import annotations

import asyncio
import functools
import logging
import time
import uuid
from typing import Any, AsyncIterator

import grpc

from morphcam.protos.v1 import morphcam_pb2 as pb
from morphcam.protos.v1 import morphcam_pb2_grpc as pb_grpc

from . import convert, frames, version
from .config import Config
from .metrics import Metrics
from .pipeline import PromptChange
from .session import END, Failure, Output, PendingFrame, Session
from .worker import BatchWorker

log = logging.getLogger(__name__)


class ServiceError(Exception):
    """An error with the gRPC status it maps to."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code


def _status_of(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    if isinstance(exc, ServiceError):
        return exc.code, str(exc)
    if isinstance(exc, (ValueError, frames.FrameError)):
        return grpc.StatusCode.INVALID_ARGUMENT, str(exc)
    log.exception("internal error", exc_info=exc)
    return grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}: {exc}"


def unary(method):
    """Map exceptions of a unary handler to a status with a clear message."""

    @functools.wraps(method)
    async def wrapper(self, request, context):
        try:
            return await method(self, request, context)
        except Exception as exc:
            code, message = _status_of(exc)
            await context.abort(code, message)

    return wrapper


class MorphcamService(pb_grpc.MorphcamServicer):
    def __init__(self, config: Config, worker: BatchWorker, metrics: Metrics) -> None:
        self.config = config
        self.worker = worker
        self.metrics = metrics
        self.sessions: dict[str, Session] = {}
        self.started = time.monotonic()
        self.draining = False
        metrics.set_fps_source(self._total_fps)

    def _total_fps(self) -> float:
        now = time.monotonic()
        return sum(s.stats.outputs.rate(now) for s in list(self.sessions.values()))

    # -- session table ----------------------------------------------------------------------
    def find(self, ref: pb.SessionRef) -> Session:
        kind = ref.WhichOneof("ref")
        if kind == "id" and ref.id in self.sessions:
            return self.sessions[ref.id]
        if kind == "name" and ref.name:
            for s in self.sessions.values():
                if s.settings.name == ref.name:
                    return s
        if kind is None:
            raise ServiceError(grpc.StatusCode.INVALID_ARGUMENT, "name the session by id or name")
        what = ref.id if kind == "id" else ref.name
        raise ServiceError(grpc.StatusCode.NOT_FOUND, f"no live session {kind} {what!r}")

    async def _open(self, msg: pb.SessionSettings) -> Session:
        if self.draining:
            raise ServiceError(grpc.StatusCode.UNAVAILABLE, "the daemon is shutting down; retry shortly")
        limits = self.config.session
        settings = convert.settings_from_proto(msg, max_width=limits.max_width, max_height=limits.max_height,
                                               max_prompt_chars=limits.max_prompt_chars)
        if len(self.sessions) >= self.config.server.max_sessions:
            raise ServiceError(grpc.StatusCode.RESOURCE_EXHAUSTED,
                               f"the daemon serves at most {self.config.server.max_sessions} sessions; close one "
                               "or raise server.max_sessions")
        if settings.name and any(s.settings.name == settings.name for s in self.sessions.values()):
            raise ServiceError(grpc.StatusCode.ALREADY_EXISTS, f"a session named {settings.name!r} is already live")
        session = Session(uuid.uuid4().hex[:12], settings, asyncio.get_running_loop(), limits.output_queue)
        await asyncio.to_thread(self.worker.pipeline.prepare_prompt, settings.prompt)  # off the frame loop
        await asyncio.wrap_future(self.worker.call(
            lambda: self.worker.pipeline.open_session(session.id, settings.params())))
        self.sessions[session.id] = session
        self.worker.add(session)
        self.metrics.sessions.set(len(self.sessions))
        log.info("session %s opened (%s, %dx%d %s, prompt %r)", session.id, settings.name or "unnamed",
                 settings.width, settings.height, settings.input_format, settings.prompt.label)
        return session

    def _close(self, session: Session) -> None:
        """Free the session at once; the pipeline's state is freed on the worker thread."""
        if session.closed:
            return
        session.closed = True
        self.worker.remove(session)
        self.sessions.pop(session.id, None)
        self.metrics.sessions.set(len(self.sessions))
        self.worker.call(lambda: self.worker.pipeline.close_session(session.id))
        log.info("session %s closed (%d in, %d out, %d dropped)", session.id, session.stats.frames_in,
                 session.stats.frames_out, session.stats.dropped)

    # -- control: the one implementation behind gRPC and the panel ----------------------------
    async def set_prompt(self, session: Session, change: PromptChange, origin: str = "") -> None:
        """Validate and apply a prompt change; it takes effect before the session's next frame."""
        convert.check_prompt(change, self.config.session.max_prompt_chars)
        # New text is embedded here, beside the frame loop; the switch on the loop then finds it
        # cached and holds no one's frames up for the text encoder.
        await asyncio.to_thread(self.worker.pipeline.prepare_prompt, change)
        await asyncio.wrap_future(self.worker.call(lambda: self.worker.pipeline.set_prompt(session.id, change)))
        session.prompt = change
        session.record(origin, f"prompt {change.mode}: {change.label}"
                       + (f" over {change.transition_frames} frames" if change.mode == "transition" else ""))
        log.info("session %s prompt -> %r (%s) by %s", session.id, change.label, change.mode, origin or "client")

    async def update(self, session: Session, *, strength: float | None = None, seed: int | None = None,
                     enabled: bool | None = None, reset: bool = False, origin: str = "") -> None:
        """Strength, seed, on/off and reset of a running session."""
        if strength is not None and not 0.0 <= strength <= 1.0:
            raise ValueError(f"strength must be within 0..1, got {strength}")
        if seed is not None and not 0 <= seed < 2**63:
            raise ValueError(f"seed must be within 0..2^63-1, got {seed}")
        pipeline = self.worker.pipeline

        def apply() -> None:
            if strength is not None or seed is not None:
                pipeline.set_params(session.id, strength=strength, seed=seed)
            if reset:
                pipeline.reset(session.id)

        await asyncio.wrap_future(self.worker.call(apply))
        changes = []
        if strength is not None:
            session.strength = strength
            changes.append(f"strength {strength:g}")
        if seed is not None:
            session.seed = seed
            changes.append(f"seed {seed}")
        if enabled is not None:
            session.enabled = enabled
            changes.append("effect on" if enabled else "effect off")
        if reset:
            changes.append("reset")
        if changes:
            session.record(origin, ", ".join(changes))

    async def _set_prompt_proto(self, session: Session, spec: pb.PromptSpec) -> None:
        await self.set_prompt(session, convert.prompt_from_proto(spec, self.config.session.max_prompt_chars),
                              spec.origin)

    async def _update_proto(self, session: Session, update: pb.SessionUpdate) -> None:
        await self.update(session, strength=update.strength if update.HasField("strength") else None,
                          seed=update.seed if update.HasField("seed") else None,
                          enabled=update.enabled if update.HasField("enabled") else None,
                          reset=update.reset, origin=update.origin)

    @unary
    async def SetPrompt(self, request: pb.SetPromptRequest, context) -> pb.SetPromptResponse:
        await self._set_prompt_proto(self.find(request.session), request.prompt)
        return pb.SetPromptResponse()

    @unary
    async def UpdateSession(self, request: pb.UpdateSessionRequest, context) -> pb.UpdateSessionResponse:
        await self._update_proto(self.find(request.session), request.update)
        return pb.UpdateSessionResponse()

    @unary
    async def ListStyles(self, request, context) -> pb.ListStylesResponse:
        styles = await asyncio.wrap_future(self.worker.call(self.worker.pipeline.styles))
        return pb.ListStylesResponse(styles=[pb.Style(name=s.name, prompt=s.prompt, description=s.description)
                                             for s in styles])

    @unary
    async def ListPresets(self, request, context) -> pb.ListPresetsResponse:
        presets = await asyncio.wrap_future(self.worker.call(self.worker.pipeline.presets))
        return pb.ListPresetsResponse(presets=[pb.Preset(name=p.name, description=p.description) for p in presets])

    @unary
    async def GetStatus(self, request, context) -> pb.GetStatusResponse:
        p = self.worker.pipeline
        out = pb.GetStatusResponse(pipeline=p.name, device=p.device, model_note=p.note,
                                   uptime_s=time.monotonic() - self.started, version=version())
        for s in list(self.sessions.values()):
            st = s.status()
            prompt = st.pop("prompt")
            st["strength"] = st["strength"] or 0.0
            activity = [pb.Activity(time_unix=t, origin=o, action=a) for t, o, a in list(s.activity)[-20:]]
            out.sessions.append(pb.SessionStatus(**st, prompt=convert.prompt_to_proto(prompt).prompts,
                                                 activity=activity))
        return out

    # -- the stream -------------------------------------------------------------------------
    async def Stream(self, request_iterator: AsyncIterator[pb.StreamRequest], context) -> AsyncIterator[pb.StreamResponse]:
        try:
            first = await anext(request_iterator, None)
            if first is None:
                return
            if first.WhichOneof("kind") != "open":
                raise ServiceError(grpc.StatusCode.INVALID_ARGUMENT,
                                   "the first message of a stream must be `open` with the session settings")
            session = await self._open(first.open)
        except Exception as exc:
            code, message = _status_of(exc)
            self.metrics.errors.labels(code.name).inc()
            await context.abort(code, message)
            return
        reader = asyncio.create_task(self._read(session, request_iterator), name=f"read-{session.id}")
        try:
            yield pb.StreamResponse(opened=pb.SessionOpened(session_id=session.id, pipeline=self.worker.pipeline.name,
                                                            device=self.worker.pipeline.device))
            while True:
                item = await session.next_output()
                if item is END:
                    return
                if isinstance(item, Failure):
                    code = getattr(grpc.StatusCode, item.code)
                    self.metrics.errors.labels(code.name).inc()
                    await context.abort(code, item.message)
                    return
                yield pb.StreamResponse(frame=await self._encode(session, item))
        finally:
            reader.cancel()
            self._close(session)

    async def _encode(self, session: Session, item: Output) -> pb.OutputFrame:
        s = session.settings
        t0 = time.perf_counter_ns()
        if s.output_format == "rgb24":
            data = frames.encode(item.rgb, "rgb24")
        else:  # PyAV releases the GIL: other sessions keep going meanwhile
            data = await asyncio.to_thread(frames.encode, item.rgb, s.output_format, s.jpeg_quality)
        encode_us = (time.perf_counter_ns() - t0) // 1000
        f = item.frame
        queue_us = max(0, f.taken_ns - f.received_ns) // 1000 - f.decode_us
        total_us = (time.monotonic_ns() - f.received_ns) // 1000
        session.last_input, session.last_output = f.rgb, item.rgb  # for the panel's preview
        session.stats.frames_out += 1
        session.stats.outputs.add(time.monotonic(), total_us / 1000)
        m = self.metrics
        m.frames_out.inc()
        m.stage.labels("decode").observe(f.decode_us / 1e6)
        m.stage.labels("queue").observe(max(queue_us, 0) / 1e6)
        m.stage.labels("encode").observe(encode_us / 1e6)
        m.stage.labels("total").observe(total_us / 1e6)
        h, w = item.rgb.shape[:2]
        return pb.OutputFrame(
            seq=f.seq, capture_time_ns=f.capture_time_ns, format=convert.FORMAT_VALUES[s.output_format],
            width=w, height=h, data=data, dropped_total=session.stats.dropped,
            timings=pb.StageTimings(decode_us=f.decode_us, queue_us=max(queue_us, 0), model_us=item.model_us,
                                    encode_us=encode_us, total_us=total_us, batch_size=item.batch_size))

    async def _read(self, session: Session, requests: AsyncIterator[pb.StreamRequest]) -> None:
        """Consume the client's messages until it half-closes; errors end the stream."""
        s = session.settings
        try:
            async for req in requests:
                kind = req.WhichOneof("kind")
                if kind == "frame":
                    if s.drop_policy == "block":  # a file: the frame enters once the previous one is taken
                        await session.wait_slot_free()
                    received = time.monotonic_ns()
                    data = req.frame.data
                    t0 = time.perf_counter_ns()
                    if s.input_format in ("rgb24", "nv12", "i420") and len(data) < 1 << 20:
                        rgb = frames.decode(data, s.input_format, s.width, s.height)
                    else:
                        rgb = await asyncio.to_thread(frames.decode, data, s.input_format, s.width, s.height)
                    decode_us = (time.perf_counter_ns() - t0) // 1000
                    self.metrics.frames_in.inc()
                    if session.put(PendingFrame(req.frame.seq, req.frame.capture_time_ns, rgb, received, decode_us)):
                        self.metrics.dropped.inc()
                elif kind == "prompt":
                    await self._set_prompt_proto(session, req.prompt)
                elif kind == "update":
                    await self._update_proto(session, req.update)
                else:
                    raise ServiceError(grpc.StatusCode.INVALID_ARGUMENT,
                                       f"unexpected `{kind}` message: a stream is opened only once")
            while session.busy():  # the client half-closed: answer what it sent, then end
                await asyncio.sleep(0.002)
            session.finish()
        except asyncio.CancelledError:
            raise
        except grpc.aio.AbortError:
            pass  # the call already ended with its status (a failed frame, say)
        except Exception as exc:
            if session.closed:
                return
            code, message = _status_of(exc)
            session.fail(code.name, message)

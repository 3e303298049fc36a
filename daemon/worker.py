"""The one thread that owns the pipeline (and so the GPU).

It alternates between running queued commands (open, close, prompt changes: anything that
touches pipeline state) and stepping one batch made of the newest frame of every session that
is ready. Sessions are taken round-robin so that none starves when there are more ready
sessions than ``max_batch``.
"""
from __future__ import annotations

import concurrent.futures
import logging
import threading
import time
from typing import Any, Callable

from .metrics import Metrics
from .pipeline import Pipeline
from .session import Failure, Output, Session

log = logging.getLogger(__name__)


class BatchWorker:
    """Runs ``pipeline`` on one background thread; all pipeline calls go through it."""

    def __init__(self, pipeline: Pipeline, metrics: Metrics, max_batch: int = 16, batch_wait_s: float = 0.004) -> None:
        self.pipeline = pipeline
        self.metrics = metrics
        self.max_batch = max_batch
        self.batch_wait_s = batch_wait_s
        self._sessions: list[Session] = []
        self._commands: list[tuple[Callable[[], Any], concurrent.futures.Future]] = []
        self._cond = threading.Condition()
        self._stop = False
        self._rr = 0  # round-robin start index
        self._thread = threading.Thread(target=self._run, name="morphcam-worker", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def call(self, fn: Callable[[], Any]) -> concurrent.futures.Future:
        """Run ``fn`` on the worker thread before the next batch; returns its future."""
        future: concurrent.futures.Future = concurrent.futures.Future()
        with self._cond:
            if self._stop:
                future.set_exception(RuntimeError("the daemon is shutting down"))
                return future
            self._commands.append((fn, future))
            self._cond.notify_all()
        return future

    def add(self, session: Session) -> None:
        session._wake_worker = self.wake
        with self._cond:
            self._sessions.append(session)
            self._cond.notify_all()

    def remove(self, session: Session) -> None:
        with self._cond:
            if session in self._sessions:
                self._sessions.remove(session)

    # -- the thread -------------------------------------------------------------------------
    def _ready(self) -> list[Session]:
        n = len(self._sessions)
        order = [self._sessions[(self._rr + i) % n] for i in range(n)] if n else []
        ready = [s for s in order if s.ready()][: self.max_batch]
        self._rr = (self._rr + 1) % max(n, 1)
        return ready

    def _gather(self) -> None:
        """With the lock held and something ready: wait up to ``batch_wait_s`` for other streaming
        sessions' next frames, so that they share this step instead of each waiting a whole step
        for the next one (which halves their rate when the step is long). Only frames due within
        the wait are waited for: a lone stream, a batch already full or complete, and streams whose
        next frame comes later (staggered 30 fps streams) start the step at once."""
        deadline = time.monotonic() + self.batch_wait_s
        while not self._stop and not self._commands:
            now = time.monotonic()
            if now >= deadline or sum(s.ready() for s in self._sessions) >= self.max_batch:
                return
            if not any(s.expects_frame(now, deadline) for s in self._sessions):
                return
            self._cond.wait(deadline - now)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stop and not self._commands and not any(s.ready() for s in self._sessions):
                    self._cond.wait(0.5)
                if self.batch_wait_s > 0 and not self._commands:
                    self._gather()
                if self._stop:
                    commands, self._commands = self._commands, []
                    for _, future in commands:
                        future.set_exception(RuntimeError("the daemon is shutting down"))
                    return
                commands, self._commands = self._commands, []
                batch = self._ready()
            for fn, future in commands:
                if future.set_running_or_notify_cancel():
                    try:
                        future.set_result(fn())
                    except BaseException as exc:  # handed to the caller, who maps it to a status
                        future.set_exception(exc)
            if batch:
                self._step(batch)

    def _step(self, sessions: list[Session]) -> None:
        taken = [(s, s.take()) for s in sessions]
        taken = [(s, f) for s, f in taken if f is not None]
        styled = [(s, f) for s, f in taken if s.enabled]
        results: dict[int, Any] = {}
        model_us = 0
        if styled:
            t0 = time.perf_counter_ns()
            try:
                outs = self.pipeline.step([(s.id, f.rgb) for s, f in styled])
                if len(outs) != len(styled):
                    raise RuntimeError(f"pipeline returned {len(outs)} frames for {len(styled)}")
            except Exception as exc:  # a pipeline bug must not kill the worker
                log.exception("pipeline step failed")
                outs = [exc] * len(styled)
            model_us = (time.perf_counter_ns() - t0) // 1000
            self.metrics.stage.labels("model").observe(model_us / 1e6)
            self.metrics.batch_size.observe(len(styled))
            for (s, _), out in zip(styled, outs):
                results[id(s)] = out
        for s, f in taken:
            out = results.get(id(s), f.rgb)  # disabled sessions pass through
            if isinstance(out, Exception):
                code = "INVALID_ARGUMENT" if isinstance(out, ValueError) else "INTERNAL"
                s.deliver(Failure(code, f"frame {f.seq}: {out}"))
            else:
                s.deliver(Output(f, out, model_us if s.enabled else 0, len(styled)))

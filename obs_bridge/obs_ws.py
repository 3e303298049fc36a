"""A connection to obs-websocket 5 through obsws-python, wrapped against its known faults.

obsws-python 1.8.0, seen against a real OBS: an exception in an event callback silently ends
the event thread; a request client shared by threads hands replies to the wrong caller (it
never checks ids); a timed-out request leaves its late reply to be read by the next one;
nothing reconnects after OBS exits; without host/port/password it reads a config.toml from the
working folder; and it logs the password. So here: every callback is guarded, one lock per
request client, a reply of the wrong type or a timeout drops the connection, a watchdog thread
reconnects, the address and password are always passed, and the password is redacted from logs.
"""
from __future__ import annotations

import logging
import os
import re
import socket
import threading
from typing import Any, Callable

from morphcam.obs_bridge.settings import ObsSettings

log = logging.getLogger(__name__)

EventHandler = Callable[[str, dict[str, Any]], None]
# Event subscriptions: General (CustomEvent, ExitStarted) and Scenes.
EVENT_SUBS = (1 << 0) | (1 << 2)
# Events the bridge reacts to; obsws-python dispatches on the callback's __name__.
EVENTS = ("CurrentProgramSceneChanged", "CustomEvent", "ExitStarted")


class ObsUnavailable(RuntimeError):
    """OBS is not connected right now; the watchdog is trying again."""


class ObsRequestError(RuntimeError):
    """OBS answered a request with an error status."""

    def __init__(self, request: str, code: int, comment: str) -> None:
        super().__init__(f"OBS refused {request}: code {code} {comment}".rstrip())
        self.request, self.code, self.comment = request, code, comment


class _RedactPassword(logging.Filter):
    """obsws-python logs its connection parameters, password included."""

    _pattern = re.compile(r"password='[^']*'")

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "password=" in message:
            record.msg, record.args = self._pattern.sub("password='***'", message), None
        return True


def _install_redaction() -> None:
    target = logging.getLogger("obsws_python")
    if not any(isinstance(f, _RedactPassword) for f in target.filters):
        target.addFilter(_RedactPassword())
        for child in ("baseclient.ObsClient", "reqs.ReqClient", "events.EventClient"):
            logging.getLogger(f"obsws_python.{child}").addFilter(_RedactPassword())


def snake_case(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


class ObsConnection:
    """Requests and events over obs-websocket, reconnecting by itself. ``start()``/``stop()``."""

    def __init__(
        self,
        settings: ObsSettings,
        on_event: EventHandler | None = None,
        on_connect: Callable[["ObsConnection"], None] | None = None,
    ) -> None:
        self.settings = settings
        self.on_event = on_event
        self.on_connect = on_connect
        self.connects = 0
        self.last_error = ""
        self._req: Any = None
        self._events: Any = None
        self._req_lock = threading.Lock()
        self._state = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def connected(self) -> bool:
        return self._req is not None

    def password(self) -> str:
        return self.settings.password or os.environ.get("OBS_WEBSOCKET_PASSWORD", "")

    def start(self) -> "ObsConnection":
        _install_redaction()
        self._thread = threading.Thread(target=self._watchdog, name="obs-watchdog", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        with self._state:
            self._state.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=self.settings.timeout_s + 2.0)
        self._drop("closed")

    def connect_once(self) -> bool:
        """One connection attempt without the watchdog (for checks); ``close()`` afterwards."""
        _install_redaction()
        self._connect()
        return self.connected

    def close(self) -> None:
        self._drop("closed")

    def wait_connected(self, timeout: float) -> bool:
        with self._state:
            return self._state.wait_for(lambda: self.connected or self._stop.is_set(), timeout) and self.connected

    def request(self, name: str, data: dict[str, Any] | None = None) -> dict[str, Any]:
        """Send request ``name``; its responseData (camelCase keys). Raises ObsUnavailable or ObsRequestError."""
        with self._req_lock:
            client = self._req
            if client is None:
                raise ObsUnavailable(f"OBS is not connected ({self.last_error or 'connecting'})")
            try:
                reply = client.base_client.req(name, data)
            except Exception as e:  # timeout, closed socket: the stream of replies is out of step now
                self._drop(f"{name} failed: {type(e).__name__}: {e}")
                raise ObsUnavailable(f"OBS request {name} failed ({e}); reconnecting") from None
            if reply.get("requestType") != name:
                self._drop(f"{name} got a reply to {reply.get('requestType')}")
                raise ObsUnavailable(f"OBS replied out of step to {name}; reconnecting")
        status = reply.get("requestStatus", {})
        if not status.get("result"):
            raise ObsRequestError(name, int(status.get("code", 0)), str(status.get("comment", "")))
        return reply.get("responseData", {}) or {}

    # --- connection management ---

    def _watchdog(self) -> None:
        while not self._stop.is_set():
            if self._req is None:
                self._connect()
            elif not self._healthy():
                self._drop(self.last_error or "health check failed")
                continue  # try again at once: OBS may be back already
            self._stop.wait(self.settings.reconnect_interval_s)

    def _healthy(self) -> bool:
        events = self._events
        if events is None or not events.worker.is_alive():
            self.last_error = "the OBS event connection closed"
            return False
        try:
            self.request("GetVersion")
        except (ObsUnavailable, ObsRequestError):
            return False
        return True

    def _connect(self) -> None:
        import obsws_python  # imported here so that importing the bridge stays light

        s = self.settings
        try:  # a cheap probe first, so a stopped OBS costs no tracebacks in obsws-python's log
            socket.create_connection((s.host, s.port), timeout=s.timeout_s).close()
        except OSError as e:
            self.last_error = f"cannot reach obs-websocket at {s.host}:{s.port} ({e}): is OBS running with its WebSocket server on?"
            return
        kwargs = dict(host=s.host, port=s.port, password=self.password(), timeout=s.timeout_s)
        req = events = None
        try:
            req = obsws_python.ReqClient(**kwargs)
            events = obsws_python.EventClient(subs=EVENT_SUBS, **kwargs)
        except Exception as e:
            for client in (req, events):
                _close(client)
            self.last_error = _explain(e, s)
            log.warning("OBS: %s", self.last_error)
            return
        events.callback.register([self._guarded(name) for name in EVENTS])
        with self._state:
            self._req, self._events = req, events
            self.connects += 1
            self.last_error = ""
            self._state.notify_all()
        log.info("connected to OBS at %s:%d (connection %d)", s.host, s.port, self.connects)
        if self.on_connect is not None:
            try:
                self.on_connect(self)
            except Exception:
                log.exception("OBS on-connect hook failed")

    def _drop(self, reason: str) -> None:
        with self._state:
            req, events = self._req, self._events
            self._req = self._events = None
        if req is not None or events is not None:
            if self._stop.is_set() or reason == "closed":
                log.info("OBS connection closed")
            else:
                log.warning("OBS connection lost: %s", reason)
                self.last_error = reason
        _close(req)
        _close(events)  # no join: this may run on the event thread itself

    def _guarded(self, event: str) -> Callable[[Any], None]:
        def callback(data: Any) -> None:
            try:
                if self.on_event is not None:
                    fields = {k: getattr(data, k) for k in data.attrs()} if hasattr(data, "attrs") else {}
                    self.on_event(event, fields)
            except Exception:  # an exception here would end obsws-python's event thread for good
                log.exception("handling OBS event %s failed", event)

        callback.__name__ = f"on_{snake_case(event)}"
        return callback


def _close(client: Any) -> None:
    if client is None:
        return
    try:
        client.base_client.ws.close()
    except Exception:
        pass


def _explain(error: Exception, s: ObsSettings) -> str:
    text = f"{type(error).__name__}: {error}"
    if "authentication" in text or "identify" in text or "4009" in text:
        return (
            f"obs-websocket at {s.host}:{s.port} refused the password ({text}): set [obs] password or "
            "$OBS_WEBSOCKET_PASSWORD to the one in OBS > Tools > WebSocket Server Settings"
        )
    return f"cannot connect to obs-websocket at {s.host}:{s.port} ({text})"

"""The control panel: a small web page and JSON API served by the daemon on localhost.

OBS docks it (Docks > Custom Browser Docks); a browser opens it too. Every change it makes
goes through ``MorphcamService.set_prompt`` / ``update`` — the same code as gRPC SetPrompt.

Security: bound off loopback, the panel refuses to start without the daemon's token, and then
every API call needs ``Authorization: Bearer <token>`` (the page takes it from the URL's
``#token=`` fragment, which browsers never send to the server). Changes must be JSON POSTs
with an ``X-Morphcam: 1`` header, which a foreign web page cannot send without a CORS
preflight that this server never grants; without a token, the Host header must name this
server (no DNS rebinding).
"""
from __future__ import annotations

import asyncio
import hmac
import json
import logging
import re
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from . import frames
from .config import ConfigError, PanelConfig, is_loopback
from .pipeline import INTERPOLATIONS, PROMPT_MODES, PromptChange, SessionParams, WeightedPrompt
from .sample import facecam_frame

log = logging.getLogger(__name__)
STATIC = {"/": ("index.html", "text/html; charset=utf-8"), "/panel.js": ("panel.js", "text/javascript"),
          "/panel.css": ("panel.css", "text/css")}
_SESSION_ROUTE = re.compile(r"^/api/sessions/([0-9a-f]{12})/(prompt|update|preview\.jpg)$")
_THUMB_ROUTE = re.compile(r"^/api/styles/([^/]{1,64})/thumbnail\.jpg$")


class PanelError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _prompt_from_json(body: dict[str, Any]) -> PromptChange:
    prompts = body.get("prompts")
    if prompts is None and isinstance(body.get("text"), str):
        prompts = [{"text": body["text"]}]
    if not isinstance(prompts, list) or not prompts:
        raise PanelError(400, "give `text` or a list `prompts` of {text, weight}")
    items = []
    for p in prompts:
        if not isinstance(p, dict) or not isinstance(p.get("text"), str):
            raise PanelError(400, "each prompt needs a `text` string")
        weight = p.get("weight", 1.0)
        if not isinstance(weight, (int, float)) or isinstance(weight, bool):
            raise PanelError(400, "a prompt's `weight` must be a number")
        items.append(WeightedPrompt(p["text"], float(weight)))
    mode = body.get("mode", "cut")
    frames_n = body.get("transition_frames", 0)
    interpolation = body.get("interpolation", "slerp")
    if mode not in PROMPT_MODES or interpolation not in INTERPOLATIONS or not isinstance(frames_n, int):
        raise PanelError(400, f"mode must be one of {PROMPT_MODES}, interpolation one of {INTERPOLATIONS}, "
                              "transition_frames an integer")
    return PromptChange(tuple(items), mode=mode, transition_frames=frames_n, interpolation=interpolation)


class PanelApp:
    """What the HTTP handler calls; runs the daemon's coroutines on the daemon's loop."""

    def __init__(self, service, loop: asyncio.AbstractEventLoop, config: PanelConfig, token: str) -> None:
        self.service = service
        self.loop = loop
        self.config = config
        self.token = token
        self._thumbnails: dict[str, bytes] = {}
        self._thumb_lock = threading.Lock()

    def run(self, coro, timeout: float = 10.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def _session(self, session_id: str):
        session = self.service.sessions.get(session_id)
        if session is None:
            raise PanelError(404, f"no live session {session_id}")
        return session

    # -- reads ------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        p = self.service.worker.pipeline
        sessions = []
        for s in list(self.service.sessions.values()):
            st = s.status()
            prompt = st.pop("prompt")
            st.update(prompts=[{"text": w.text, "weight": w.weight} for w in prompt.prompts], mode=prompt.mode,
                      seed=s.seed, input_format=s.settings.input_format, fps=s.settings.fps,
                      activity=[{"time": t, "origin": o, "action": a} for t, o, a in list(s.activity)[-12:]])
            sessions.append(st)
        return {"pipeline": p.name, "device": p.device, "note": p.note, "sessions": sessions,
                "uptime_s": time.monotonic() - self.service.started}

    def styles(self) -> list[dict[str, str]]:
        styles = self.service.worker.call(self.service.worker.pipeline.styles).result(10)
        return [{"name": s.name, "prompt": s.prompt, "description": s.description} for s in styles]

    def preview(self, session_id: str, side: str) -> bytes:
        session = self._session(session_id)
        image = session.last_input if side == "input" else session.last_output
        if image is None:
            raise PanelError(404, "no frame yet")
        return frames.encode(frames.resize(image, min(self.config.preview_width, image.shape[1])), "jpeg", 80)

    def thumbnail(self, name: str) -> bytes:
        """The style rendered by the model on the built-in face-cam scene (cached per style)."""
        with self._thumb_lock:
            if name in self._thumbnails:
                return self._thumbnails[name]
        styles = {s["name"]: s["prompt"] for s in self.styles()}
        if name not in styles:
            raise PanelError(404, f"no style named {name!r}")
        pipeline = self.service.worker.pipeline

        def render():
            sid = f"thumbnail-{uuid.uuid4().hex[:8]}"
            # Small and short: this runs on the worker, between live frames, once per style.
            pipeline.open_session(sid, SessionParams(160, 96, PromptChange.single(styles[name]), seed=0))
            try:
                out = None
                for i in range(2):  # a little history, as a live stream has
                    out = pipeline.step([(sid, facecam_frame(0.5 + i / 30, 160, 96))])[0]
                if isinstance(out, Exception):
                    raise out
                return out
            finally:
                pipeline.close_session(sid)

        image = self.service.worker.call(render).result(60)
        data = frames.encode(image, "jpeg", 85)
        with self._thumb_lock:
            self._thumbnails[name] = data
        return data

    # -- changes ----------------------------------------------------------------------------
    def set_prompt(self, session_id: str, body: dict[str, Any]) -> None:
        session = self._session(session_id)
        try:
            change = _prompt_from_json(body)
        except ValueError as exc:
            raise PanelError(400, str(exc)) from None
        self.run(self.service.set_prompt(session, change, origin="panel"))

    def update(self, session_id: str, body: dict[str, Any]) -> None:
        session = self._session(session_id)
        kinds = {"strength": (int, float), "seed": int, "enabled": bool, "reset": bool}
        for key, value in body.items():
            if key not in kinds:
                raise PanelError(400, f"unknown field {key!r}; use strength, seed, enabled, reset")
            if not isinstance(value, kinds[key]) or (key in ("strength", "seed") and isinstance(value, bool)):
                raise PanelError(400, f"{key} has the wrong type")
        self.run(self.service.update(session, strength=body.get("strength"), seed=body.get("seed"),
                                     enabled=body.get("enabled"), reset=body.get("reset", False), origin="panel"))


class _Handler(BaseHTTPRequestHandler):
    server_version = "morphcam-panel"
    app: PanelApp  # set on the subclass made per server
    allowed_hosts: frozenset[str]

    def log_message(self, fmt: str, *args: Any) -> None:
        log.debug("panel %s " + fmt, self.client_address[0], *args)

    def _send(self, status: int, body: bytes, ctype: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Content-Security-Policy", "default-src 'self'; img-src 'self' blob:; frame-ancestors 'none'")
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, obj: Any) -> None:
        self._send(status, json.dumps(obj).encode(), "application/json")

    def _check(self, api: bool, change: bool) -> None:
        if not self.app.token and self.headers.get("Host", "") not in self.allowed_hosts:
            raise PanelError(403, "unexpected Host header: open the panel at its own address")
        if api and self.app.token:
            given = self.headers.get("Authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {self.app.token}".encode()):
                raise PanelError(401, "this panel needs the daemon's token: open it as http://HOST:PORT/#token=TOKEN")
        if change and (self.headers.get("X-Morphcam") != "1"
                       or not self.headers.get("Content-Type", "").startswith("application/json")):
            raise PanelError(403, "changes must be JSON requests from the panel page (X-Morphcam: 1)")

    def _body(self) -> dict[str, Any]:
        length = int(self.headers.get("Content-Length") or 0)
        limit = self.app.config.max_body_kb * 1024
        if length > limit:
            raise PanelError(413, f"request body of {length} bytes is over the limit of {limit}")
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
        except (ValueError, UnicodeDecodeError):
            raise PanelError(400, "the request body is not valid JSON") from None
        if not isinstance(body, dict):
            raise PanelError(400, "the request body must be a JSON object")
        return body

    def _handle(self, method: str) -> None:
        url = urlsplit(self.path)
        try:
            if method == "GET" and url.path in STATIC:
                self._check(api=False, change=False)
                name, ctype = STATIC[url.path]
                self._send(200, resources.files("morphcam.daemon").joinpath("panel_static", name).read_bytes(), ctype)
                return
            self._check(api=True, change=method == "POST")
            route = _SESSION_ROUTE.match(url.path)
            thumb = _THUMB_ROUTE.match(url.path)
            if method == "GET" and url.path == "/api/status":
                self._json(200, self.app.status())
            elif method == "GET" and url.path == "/api/styles":
                self._json(200, self.app.styles())
            elif method == "GET" and thumb:
                self._send(200, self.app.thumbnail(unquote(thumb.group(1))), "image/jpeg")
            elif method == "GET" and route and route.group(2) == "preview.jpg":
                side = parse_qs(url.query).get("side", ["output"])[0]
                if side not in ("input", "output"):
                    raise PanelError(400, "side must be input or output")
                self._send(200, self.app.preview(route.group(1), side), "image/jpeg")
            elif method == "POST" and route and route.group(2) in ("prompt", "update"):
                body = self._body()
                getattr(self.app, "set_prompt" if route.group(2) == "prompt" else "update")(route.group(1), body)
                self._json(200, {"ok": True})
            else:
                raise PanelError(404, f"no such page: {method} {url.path}")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the page went away
        except PanelError as exc:
            self._json(exc.status, {"error": str(exc)})
        except ValueError as exc:  # the daemon's own validation (prompt rules, ranges)
            self._json(400, {"error": str(exc)})
        except Exception as exc:
            log.exception("panel request failed")
            self._json(500, {"error": f"internal error: {type(exc).__name__}"})

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")


class PanelServer:
    """The panel's HTTP server on its own thread."""

    def __init__(self, service, loop: asyncio.AbstractEventLoop, config: PanelConfig, token: str) -> None:
        host, _, port = config.address.rpartition(":")
        if not is_loopback(config.address) and not token:
            raise ConfigError(f"refusing to serve the panel on {config.address} without a token: set server.token "
                              "or keep panel.address on 127.0.0.1")
        app = PanelApp(service, loop, config, token)
        self._httpd = ThreadingHTTPServer((host.strip("[]"), int(port)), _Handler)
        self._httpd.daemon_threads = True
        bound = self._httpd.server_address[1]
        hosts = {f"{host}:{bound}", f"127.0.0.1:{bound}", f"localhost:{bound}", f"[::1]:{bound}"}
        self._httpd.RequestHandlerClass = type("PanelHandler", (_Handler,), {"app": app, "allowed_hosts": frozenset(hosts)})
        self.port = bound
        self.url = f"http://{host}:{bound}/"
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="morphcam-panel", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

"""The daemon process: gRPC servers (unix socket and/or TCP), health, reflection, metrics, drain.

``Daemon`` runs on an asyncio loop; ``DaemonThread`` runs one on a background thread, for
``morphcam transform`` and for tests.
"""
from __future__ import annotations

import asyncio
import contextlib
import errno
import hmac
import logging
import os
import socket
import threading
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from morphcam.protos.v1 import morphcam_pb2 as pb
from morphcam.protos.v1 import morphcam_pb2_grpc as pb_grpc

from .config import Config, ConfigError, is_loopback, resolve_token
from .metrics import Metrics
from .pipeline import Pipeline, build_pipeline
from .service import MorphcamService
from .worker import BatchWorker

log = logging.getLogger(__name__)
SERVICE = pb.DESCRIPTOR.services_by_name["Morphcam"].full_name
_OPEN_METHODS = ("/grpc.health.v1.Health/", "/grpc.reflection.")


class TokenAuth(grpc.aio.ServerInterceptor):
    """Refuses calls without ``authorization: Bearer <token>`` (health and reflection stay open)."""

    def __init__(self, token: str) -> None:
        self._expected = f"Bearer {token}".encode()

    async def intercept_service(self, continuation, details):
        handler = await continuation(details)
        if handler is None or details.method.startswith(_OPEN_METHODS):
            return handler
        given = dict(details.invocation_metadata or ()).get("authorization", "")
        if hmac.compare_digest(given.encode() if isinstance(given, str) else given, self._expected):
            return handler

        async def deny(request, context):
            await context.abort(grpc.StatusCode.UNAUTHENTICATED,
                                "this daemon needs a token: send metadata 'authorization: Bearer <token>' "
                                "(morphcam clients: --token or MORPHCAM_TOKEN)")

        factory = {
            (False, False): grpc.unary_unary_rpc_method_handler,
            (False, True): grpc.unary_stream_rpc_method_handler,
            (True, False): grpc.stream_unary_rpc_method_handler,
            (True, True): grpc.stream_stream_rpc_method_handler,
        }[(handler.request_streaming, handler.response_streaming)]
        return factory(deny, request_deserializer=handler.request_deserializer,
                       response_serializer=handler.response_serializer)


def _claim_unix_socket(path: str) -> None:
    """Remove a stale socket file; refuse when another daemon listens on it."""
    p = Path(path)
    if not p.exists():
        p.parent.mkdir(parents=True, exist_ok=True)
        return
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError as exc:
        if exc.errno in (errno.ECONNREFUSED, errno.ENOENT):
            p.unlink(missing_ok=True)
            return
        raise
    else:
        raise ConfigError(f"another process is listening on {path}: stop it or choose server.unix_socket")
    finally:
        probe.close()


class Daemon:
    """One daemon: build with a config (and optionally a ready pipeline), ``await start()``."""

    def __init__(self, config: Config, pipeline: Pipeline | None = None, environ: dict[str, str] | None = None) -> None:
        self.config = config
        self.metrics = Metrics()
        self._pipeline = pipeline
        self._environ = dict(os.environ if environ is None else environ)
        self._servers: list[grpc.aio.Server] = []
        self._health = health.aio.HealthServicer()
        self._metrics_http = None
        self.panel = None
        self.worker: BatchWorker | None = None
        self.service: MorphcamService | None = None
        self.addresses: list[str] = []
        self._stopped = asyncio.Event()

    def _check_binding(self) -> str:
        s, panel = self.config.server, self.config.panel
        if not s.unix_socket and not s.address:
            raise ConfigError("nothing to listen on: set server.unix_socket and/or server.address")
        token = resolve_token(s, self._environ)
        if s.address and not is_loopback(s.address) and not token:
            raise ConfigError(f"refusing to listen on {s.address} without a token: set server.token or the "
                              f"{s.token_env} environment variable, or listen on 127.0.0.1")
        if panel.address and not is_loopback(panel.address) and not token:
            raise ConfigError(f"refusing to serve the panel on {panel.address} without a token: set server.token "
                              "or keep panel.address on 127.0.0.1")
        return token

    async def start(self) -> None:
        token = self._check_binding()
        s = self.config.server
        if self._pipeline is None:
            self._pipeline = await asyncio.to_thread(build_pipeline, self.config.model)
        # Before the worker starts (it is the pipeline's only caller afterwards) and before the
        # health service says SERVING: a stream at a warm size then replays ready work from frame 1.
        await asyncio.to_thread(self._pipeline.warm, self.config.warm_frame_sizes())
        self.metrics.watch_builds(self._pipeline.build_counts)
        self.worker = BatchWorker(self._pipeline, self.metrics, self.config.model.max_batch,
                                  self.config.model.batch_wait_ms / 1000)
        self.worker.start()
        self.service = MorphcamService(self.config, self.worker, self.metrics)
        max_bytes = int(s.max_message_mb * 1024 * 1024)
        options = [("grpc.max_receive_message_length", max_bytes), ("grpc.max_send_message_length", max_bytes),
                   ("grpc.so_reuseport", 0)]
        targets: list[tuple[str, list]] = []
        if s.unix_socket:
            _claim_unix_socket(s.unix_socket)
            targets.append((f"unix:{s.unix_socket}", []))
        if s.address:
            targets.append((s.address, [TokenAuth(token)] if token else []))
        names = (SERVICE, health.SERVICE_NAME, reflection.SERVICE_NAME)
        try:
            for address, interceptors in targets:
                server = grpc.aio.server(interceptors=interceptors, options=options)
                pb_grpc.add_MorphcamServicer_to_server(self.service, server)
                health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
                reflection.enable_server_reflection(names, server)
                port = server.add_insecure_port(address)
                if address.startswith("unix:"):
                    os.chmod(address[5:], 0o600)  # only this user may talk to the socket
                else:
                    address = f"{address.rsplit(':', 1)[0]}:{port}"
                await server.start()
                self._servers.append(server)
                self.addresses.append(address)
        except RuntimeError as exc:
            await self._shutdown(0)
            raise ConfigError(f"cannot listen on {targets[len(self._servers)][0]}: {exc} (address in use?)") from exc
        if s.metrics_address:
            self._start_metrics(s.metrics_address)
        if self.config.panel.address:
            self._start_panel(token)
        for name in ("", SERVICE):
            await self._health.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info("morphcam daemon serving %s on %s (pipeline %s on %s%s)", SERVICE, ", ".join(self.addresses),
                 self._pipeline.name, self._pipeline.device, f"; {self._pipeline.note}" if self._pipeline.note else "")

    def _start_metrics(self, address: str) -> None:
        from prometheus_client import start_http_server

        host, _, port = address.rpartition(":")
        try:
            self._metrics_http, _ = start_http_server(int(port), addr=host, registry=self.metrics.registry)
        except OSError as exc:
            log.warning("metrics endpoint %s not started: %s (set server.metrics_address)", address, exc)

    def _start_panel(self, token: str) -> None:
        from .panel import PanelServer

        try:
            self.panel = PanelServer(self.service, asyncio.get_running_loop(), self.config.panel, token)
        except OSError as exc:
            log.warning("panel %s not started: %s (set panel.address)", self.config.panel.address, exc)
            return
        self.panel.start()
        log.info("control panel at %s", self.panel.url)

    @property
    def metrics_port(self) -> int | None:
        return self._metrics_http.server_port if self._metrics_http else None

    async def stop(self, grace: float | None = None) -> None:
        """Drain: refuse new streams, give running ones ``grace`` seconds, then cancel them."""
        grace = self.config.server.grace_s if grace is None else grace
        if self.service is not None:
            self.service.draining = True
        with contextlib.suppress(Exception):
            await self._health.enter_graceful_shutdown()
        log.info("draining (grace %.1f s, %d sessions)", grace, len(self.service.sessions) if self.service else 0)
        await self._shutdown(grace)

    async def _shutdown(self, grace: float) -> None:
        await asyncio.gather(*(srv.stop(grace) for srv in self._servers), return_exceptions=True)
        self._servers.clear()
        if self.worker is not None:
            await asyncio.to_thread(self.worker.stop)
        if self.panel is not None:
            self.panel.stop()
            self.panel = None
        if self._metrics_http is not None:
            self._metrics_http.shutdown()
            self._metrics_http.server_close()
            self._metrics_http = None
        if self.config.server.unix_socket:
            Path(self.config.server.unix_socket).unlink(missing_ok=True)
        self._stopped.set()

    async def wait(self) -> None:
        await self._stopped.wait()


class DaemonThread:
    """A daemon on a background thread with its own event loop: ``with DaemonThread(cfg) as d:``."""

    def __init__(self, config: Config, pipeline: Pipeline | None = None, environ: dict[str, str] | None = None) -> None:
        self.daemon = Daemon(config, pipeline, environ)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="morphcam-daemon", daemon=True)

    def start(self, timeout: float = 120.0) -> "DaemonThread":
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.daemon.start(), self._loop).result(timeout)
        return self

    def stop(self, grace: float = 0.0, timeout: float = 30.0) -> None:
        if self._thread.is_alive():
            try:
                asyncio.run_coroutine_threadsafe(self.daemon.stop(grace), self._loop).result(timeout)
            finally:
                self._loop.call_soon_threadsafe(self._loop.stop)
                self._thread.join(timeout)
                self._loop.close()

    @property
    def address(self) -> str:
        """The first address served (unix socket when there is one)."""
        return self.daemon.addresses[0]

    def session_count(self) -> int:
        return len(self.daemon.service.sessions) if self.daemon.service else 0

    def __enter__(self) -> "DaemonThread":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

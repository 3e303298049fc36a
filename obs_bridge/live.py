"""``morphcam live``: a source through the daemon into a sink, styled from OBS, hotkeys and chat.

    morphcam live --config morphcam.toml

Reads [bridge], [obs] and [chat] of the product's TOML file. The daemon (``morphcam serve``)
runs separately; while it is down, slow or failing the original frames pass through and the
bridge reconnects by itself. Never imports torch.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import signal
import threading
import time
from typing import Any

from morphcam.obs_bridge.control import StreamControl, StyleController
from morphcam.obs_bridge.daemon_child import DaemonChild
from morphcam.obs_bridge.hotkeys import HotkeyListener
from morphcam.obs_bridge.obs_control import ObsControl
from morphcam.obs_bridge.relay import Relay
from morphcam.obs_bridge.settings import BridgeSettings, ObsSettings, load_sections
from morphcam.obs_bridge.sinks import make_sink
from morphcam.obs_bridge.sources import make_source

log = logging.getLogger(__name__)
STATUS_EVERY_S = 10.0
DEVICE_PREFIXES = ("/dev/video", "video=")  # --source values that name a capture device


class LiveBridge:
    """Everything ``morphcam live`` runs, started and stopped in order. Usable from tests."""

    def __init__(self, bridge: BridgeSettings, obs: ObsSettings, chat: Any = None, config_path: str | None = None) -> None:
        bridge.check_runnable()
        if obs.enabled and obs.media_source.create and bridge.sink.kind != "udp":
            log.warning("[obs.media_source] create = true shows the bridge's UDP stream, but [bridge.sink] kind "
                        "is %r: set it to \"udp\" or the Media Source stays empty", bridge.sink.kind)
        self.bridge, self.obs, self.chat_settings, self.config_path = bridge, obs, chat, config_path
        self.daemon_child: DaemonChild | None = None
        self.stream: Any = None
        self.client: Any = None
        self.controller: StyleController | None = None
        self.relay: Relay | None = None
        self.hotkeys: HotkeyListener | None = None
        self.obs_control: ObsControl | None = None
        self.chat: Any = None
        self._parts: list[Any] = []  # started parts, stopped in reverse

    def start(self) -> "LiveBridge":
        from morphcam.daemon.client import DaemonClient, StreamSettings
        from morphcam.daemon.livestream import LiveStream

        b = self.bridge
        token = b.token or os.environ.get("MORPHCAM_TOKEN") or None
        try:
            if b.start_daemon:
                self.daemon_child = DaemonChild(self.config_path).start()
                self._parts.append(self.daemon_child)
            session = StreamSettings(
                b.width, b.height, prompt=b.prompt, name=b.session_name, fps=b.source.fps, strength=b.strength
            )
            self.client = DaemonClient(b.daemon, token=token, timeout_s=2.0)
            self.stream = LiveStream(b.daemon, session, token=token)
            self.stream.start()
            self._parts += [self.client, self.stream]
            self.controller = StyleController(
                StreamControl(self.stream, self.client),
                styles=b.styles,
                scene_prompts=self.obs.scene_prompts,
                strength=b.strength,
                strength_step=b.strength_step,
                mode=b.switch_mode,
                transition_frames=b.transition_frames,
            )
            sink = make_sink(b.sink)
            sink.open(b.width, b.height, b.source.fps)
            self._parts.append(sink)
            source = make_source(b.source, b.width, b.height).start()
            self._parts.append(source)
            self.relay = Relay(source, self.stream, sink, b.relay).start()
            self._parts.append(self.relay)
            if b.hotkeys.enabled:
                self.hotkeys = HotkeyListener(b.hotkeys, self.controller.run_action).start()
                self._parts.append(self.hotkeys)
            if self.obs.enabled:
                self.obs_control = ObsControl(self.obs, self.controller).start()
                self._parts.append(self.obs_control)
            if self.chat_settings is not None:
                from morphcam.obs_bridge.chat import start_chat

                self.chat = start_chat(self.chat_settings, self.controller)
                if self.chat is not None:
                    self._parts.append(self.chat)
        except BaseException:
            self.stop()
            raise
        log.info("live: %s -> daemon %s -> %s", b.source.kind, b.daemon, sink.describe())
        return self

    def stop(self) -> None:
        while self._parts:
            part = self._parts.pop()
            try:
                (getattr(part, "stop", None) or part.close)()
            except Exception:
                log.exception("stopping %s failed", type(part).__name__)

    def __enter__(self) -> "LiveBridge":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def status(self) -> dict[str, Any]:
        relay = self.relay
        return {
            "daemon_connected": bool(self.stream is not None and self.stream.connected),
            "styled": relay.styled if relay else 0,
            "passthrough": relay.passthrough if relay else 0,
            "sink_errors": relay.sink_errors if relay else 0,
            "prompt": self.controller.prompt.label if self.controller and self.controller.prompt else self.bridge.prompt,
            "obs_connected": bool(self.obs_control and self.obs_control.connection.connected),
            "hotkeys_received": self.hotkeys.received if self.hotkeys else 0,
            "daemon_starts": self.daemon_child.starts if self.daemon_child else 0,
        }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", "-c", help="the product's TOML file ([bridge], [obs], [chat]); defaults without")
    parser.add_argument("--daemon", help='override [bridge] daemon, e.g. "unix:/run/user/1000/morphcam.sock"')
    parser.add_argument("--source", metavar="FILE_OR_URL", help="override the source: a video file, a udp:// URL or a camera (/dev/video0, video=NAME)")
    parser.add_argument("--sink", metavar="FILE_OR_URL", help="override the sink: a video file, a udp:// URL or 'virtualcam'")
    parser.add_argument("--prompt", help="prompt at start")
    parser.add_argument("--duration", type=float, default=0.0, help="stop after this many seconds (0: run until Ctrl+C)")


def _overrides(args: argparse.Namespace, bridge: BridgeSettings) -> BridgeSettings:
    changes: dict[str, Any] = {}
    if args.daemon:
        changes["daemon"] = args.daemon
    if args.prompt:
        changes["prompt"] = args.prompt
    if args.source:
        if "://" in args.source:
            changes["source"] = dataclasses.replace(bridge.source, kind="udp", url=args.source)
        elif args.source.startswith(DEVICE_PREFIXES):
            changes["source"] = dataclasses.replace(bridge.source, kind="device", device=args.source)
        else:
            changes["source"] = dataclasses.replace(bridge.source, kind="file", path=args.source)
    if args.sink:
        if args.sink == "virtualcam":
            changes["sink"] = dataclasses.replace(bridge.sink, kind="virtualcam")
        elif "://" in args.sink:
            changes["sink"] = dataclasses.replace(bridge.sink, kind="udp", url=args.sink)
        else:
            changes["sink"] = dataclasses.replace(bridge.sink, kind="file", path=args.sink)
    return dataclasses.replace(bridge, **changes) if changes else bridge


def _sections() -> dict[str, type]:
    from morphcam.daemon.config import LogConfig, ServerConfig
    from morphcam.obs_bridge.chat.settings import ChatSettings

    return {"bridge": BridgeSettings, "obs": ObsSettings, "chat": ChatSettings, "log": LogConfig, "server": ServerConfig}


def check_daemon_child(bridge: BridgeSettings, server: Any) -> None:
    """With start_daemon, the bridge must dial an address the child daemon listens on."""
    served = {server.address} if server.address else set()
    if server.unix_socket:
        served |= {f"unix:{server.unix_socket}", server.unix_socket, f"unix://{server.unix_socket}"}
    if bridge.start_daemon and bridge.daemon not in served:
        raise ValueError(
            f"bridge.start_daemon is on, but bridge.daemon = {bridge.daemon!r} is not where [server] listens "
            f"({', '.join(sorted(served)) or 'nowhere'}): make them the same"
        )


def run(args: argparse.Namespace) -> int:
    from morphcam.daemon.config import ConfigError
    from morphcam.daemon.logs import setup_logging

    try:
        sections = load_sections(args.config, _sections())
        setup_logging(sections["log"])
        bridge = _overrides(args, sections["bridge"])
        check_daemon_child(bridge, sections["server"])
        live = LiveBridge(bridge, sections["obs"], sections["chat"], config_path=args.config)
    except (ConfigError, ValueError) as e:
        log.error("%s", e)
        return 2
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            live.start()
        except (OSError, RuntimeError, ValueError) as e:
            log.error("cannot start: %s", e)
            return 1
        ends = time.monotonic() + args.duration if args.duration > 0 else float("inf")
        while not stop.wait(min(STATUS_EVERY_S, max(0.0, ends - time.monotonic()))):
            log.info("status: %s", live.status())
            if time.monotonic() >= ends:
                break
        log.info("stopping: %s", live.status())
        return 0
    finally:
        live.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)

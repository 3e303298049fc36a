"""Receives hotkey presses that the morphcam OBS script forwards over localhost UDP.

Each datagram is one JSON object, ``{"v": 1, "action": "next_style"}``; the action runs on
the controller. Malformed datagrams are logged and dropped; the listener never stops on them.
"""
from __future__ import annotations

import json
import logging
import socket
import threading
from typing import Callable

from morphcam.obs_bridge.settings import HotkeySettings

log = logging.getLogger(__name__)
MAX_DATAGRAM = 4096


class HotkeyListener:
    """A UDP socket on ``settings.host:settings.port`` and a thread calling ``on_action(name)``."""

    def __init__(self, settings: HotkeySettings, on_action: Callable[[str], object]) -> None:
        self.settings = settings
        self.on_action = on_action
        self.received = 0
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    @property
    def port(self) -> int:
        """The bound port (useful when settings asked for port 0)."""
        return self._sock.getsockname()[1] if self._sock else self.settings.port

    def start(self) -> "HotkeyListener":
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.bind((self.settings.host, self.settings.port))
        except OSError as e:
            sock.close()
            raise OSError(
                f"cannot listen for hotkeys on {self.settings.host}:{self.settings.port} ({e}): another bridge "
                "may be running; stop it or change [bridge.hotkeys] port (and the port in the OBS script's settings)"
            ) from None
        sock.settimeout(0.2)
        self._sock = sock
        self._thread = threading.Thread(target=self._run, name="hotkeys", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _run(self) -> None:
        assert self._sock is not None
        while not self._stop.is_set():
            try:
                data, peer = self._sock.recvfrom(MAX_DATAGRAM)
            except (socket.timeout, TimeoutError):
                continue
            except OSError:
                return
            try:
                message = json.loads(data)
                action = message["action"]
            except (ValueError, KeyError, TypeError):
                log.warning("dropped a malformed hotkey datagram from %s: %r", peer, data[:100])
                continue
            self.received += 1
            try:
                self.on_action(str(action))
            except Exception:  # a failing action must not end the listener
                log.exception("hotkey action %r failed", action)

"""What chat acts on, and the thread that does it without ever blocking chat or the relay.

``ControlTarget`` (defined with the OBS control, ``morphcam.obs_bridge.control``) is the
interface the bridge implements over the daemon's gRPC client. Its calls may block on the network, so chat never calls it
directly: ``TargetDispatcher`` keeps the newest pending action of each kind and applies it from
its own thread. A flood therefore costs at most one pending action per kind, and a failing or
slow target is logged, never raised into chat or the bridge.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Callable

from morphcam.daemon.pipeline import PromptChange, StyleInfo
from morphcam.obs_bridge.control import ControlTarget

__all__ = ["ControlTarget", "TargetDispatcher"]

log = logging.getLogger(__name__)


class TargetDispatcher:
    """Applies actions on a ``ControlTarget`` from one worker thread; every public method is
    thread-safe and returns at once. The newest pending action of each kind replaces older ones.
    """

    def __init__(self, target: ControlTarget, styles_refresh_s: float = 30.0) -> None:
        self._target = target
        self._refresh_s = styles_refresh_s
        self._cond = threading.Condition()
        self._pending: dict[str, Callable[[], None]] = {}
        self._busy = False
        self._stop = False
        self._thread: threading.Thread | None = None
        self._styles: tuple[StyleInfo, ...] = ()
        self._refresh_due = 0.0  # monotonic time of the next styles() call; 0: at once
        self.applied = {"prompt": 0, "enabled": 0, "strength": 0}  # actions applied, per kind
        self.failures = 0  # target calls that raised

    # ---- called from any thread -------------------------------------------------------------
    def start(self) -> None:
        with self._cond:
            if self._thread is not None:
                return
            self._stop = False
            self._thread = threading.Thread(target=self._run, name="morphcam-chat-target", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
            thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout)

    def set_prompt(self, change: PromptChange, origin: str = "") -> None:
        self._submit("prompt", lambda: self._target.set_prompt(change, origin=origin))

    def set_enabled(self, enabled: bool, origin: str = "") -> None:
        self._submit("enabled", lambda: self._target.set_enabled(enabled, origin=origin))

    def set_strength(self, strength: float, origin: str = "") -> None:
        self._submit("strength", lambda: self._target.set_strength(strength, origin=origin))

    def styles(self) -> tuple[StyleInfo, ...]:
        """The styles as last fetched from the target (empty until the first fetch)."""
        return self._styles

    def refresh_styles(self) -> None:
        with self._cond:
            self._refresh_due = 0.0
            self._cond.notify_all()

    def flush(self, timeout: float = 2.0) -> bool:
        """Wait until nothing is pending; True when that happened within ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._pending or self._busy or self._refresh_due == 0.0:
                left = deadline - time.monotonic()
                if left <= 0 or self._thread is None:
                    return False
                self._cond.wait(left)
        return True

    # ---- the worker ---------------------------------------------------------------------------
    def _submit(self, kind: str, action: Callable[[], None]) -> None:
        with self._cond:
            self._pending[kind] = action
            self._cond.notify_all()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stop and not self._pending and time.monotonic() < self._refresh_due:
                    self._cond.wait(max(0.0, self._refresh_due - time.monotonic()))
                if self._stop:
                    return
                actions = list(self._pending.items())
                self._pending.clear()
                refresh = time.monotonic() >= self._refresh_due
                self._busy = True
            if refresh:
                self._fetch_styles()
            for kind, action in actions:
                try:
                    action()
                    self.applied[kind] += 1
                except Exception as exc:  # a chat action must never take the bridge down
                    self.failures += 1
                    log.warning("chat: the control target failed to apply %s: %s", kind, exc)
            with self._cond:
                self._busy = False
                if refresh:
                    self._refresh_due = time.monotonic() + self._refresh_s
                self._cond.notify_all()

    def _fetch_styles(self) -> None:
        try:
            self._styles = tuple(self._target.styles())
        except Exception as exc:
            self.failures += 1
            log.warning("chat: could not list styles from the control target (keeping %d known): %s",
                        len(self._styles), exc)

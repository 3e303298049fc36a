"""Run the daemon as a child of ``morphcam live`` (``[bridge] start_daemon = true``).

One command for a streamer: the bridge starts ``morphcam serve`` with the same config file and
starts it again if it exits; meanwhile the relay passes frames through. The daemon stays a
separate process, so the bridge process never imports torch.
"""
from __future__ import annotations

import logging
import subprocess
import sys
import threading
import time

log = logging.getLogger(__name__)
RESTART_DELAY_S = (0.5, 10.0)  # first and longest pause before starting a daemon that exited
STABLE_S = 30.0  # a daemon that ran this long before exiting is restarted after the first pause again


class DaemonChild:
    """Keeps one ``morphcam serve`` process running: ``start()``/``stop()``."""

    def __init__(self, config_path: str | None, stop_grace_s: float = 10.0) -> None:
        self.command = [sys.executable, "-m", "morphcam.daemon.cli", "serve"]
        if config_path:
            self.command += ["--config", config_path]
        self.stop_grace_s = stop_grace_s
        self.starts = 0
        self.proc: subprocess.Popen | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    @property
    def pid(self) -> int | None:
        proc = self.proc
        return proc.pid if proc is not None and proc.poll() is None else None

    def start(self) -> "DaemonChild":
        self._thread = threading.Thread(target=self._run, name="daemon-child", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        with self._lock:
            proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.terminate()  # SIGTERM: the daemon drains its streams, then exits
            try:
                proc.wait(self.stop_grace_s)
            except subprocess.TimeoutExpired:
                log.warning("the daemon did not stop in %.0f s; killing it", self.stop_grace_s)
                proc.kill()
                proc.wait(5)
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        delay = RESTART_DELAY_S[0]
        while not self._stop.is_set():
            with self._lock:
                if self._stop.is_set():
                    return
                try:
                    self.proc = subprocess.Popen(self.command)
                except OSError as e:
                    log.error("cannot start the daemon (%s): %s", " ".join(self.command), e)
                    return
                self.starts += 1
            log.info("started the daemon (pid %d)", self.proc.pid)
            started = time.monotonic()
            code = self.proc.wait()
            if self._stop.is_set():
                return
            log.warning("the daemon exited with code %s; starting it again in %.1f s (frames pass through meanwhile)",
                        code, delay)
            if time.monotonic() - started > STABLE_S:
                delay = RESTART_DELAY_S[0]
            if self._stop.wait(delay):
                return
            delay = min(delay * 2, RESTART_DELAY_S[1])

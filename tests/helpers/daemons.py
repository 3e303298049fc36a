"""Helpers for tests that run real daemons (in-process on a unix socket and a loopback port)."""
from __future__ import annotations

import threading
import time

import numpy as np

from morphcam.daemon.config import Config
from morphcam.daemon.pipeline import PassthroughPipeline
from morphcam.daemon.server import DaemonThread


class DelayPipeline(PassthroughPipeline):
    """Passthrough that takes ``delay_s`` per step and records batch sizes (to test batching/drops)."""

    name = "delay"

    def __init__(self, delay_s: float = 0.0) -> None:
        super().__init__()
        self.delay_s = delay_s
        self.batches: list[int] = []
        self.prompts: dict[str, object] = {}

    def step(self, batch):
        self.batches.append(len(batch))
        if self.delay_s:
            time.sleep(self.delay_s)
        return super().step(batch)

    def set_prompt(self, session_id, change):
        super().set_prompt(session_id, change)
        self.prompts[session_id] = change


class StylePipeline(DelayPipeline):
    """A delay pipeline that lists a few named styles (for the panel's style buttons)."""

    def styles(self):
        from morphcam.daemon.pipeline import StyleInfo

        return [StyleInfo("original", "original"), StyleInfo("pencil sketch", "a pencil sketch"),
                StyleInfo("thermal", "thermal camera")]


def make_config(tmp_path, panel: str = "", **server) -> Config:
    """Unix socket in tmp_path, free loopback ports; the panel only where a test asks for it."""
    defaults = dict(unix_socket=str(tmp_path / "d.sock"), address="127.0.0.1:0", metrics_address="127.0.0.1:0",
                    grace_s=1.0)
    defaults.update(server)
    return Config().replace("server", **defaults).replace("panel", address=panel)


def address_of(daemon: DaemonThread, transport: str) -> str:
    return next(a for a in daemon.daemon.addresses if a.startswith("unix:") == (transport == "unix"))


def wait_until(predicate, timeout: float = 5.0, interval: float = 0.01) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def open_fed_streams(client, n: int, width: int = 64, height: int = 48) -> tuple[list, list]:
    """``n`` open Stream calls, each fed from its own queue (put requests; put None to end it).
    Returns (feeds, calls); every call has already answered ``opened``."""
    import queue

    from morphcam.protos.v1 import morphcam_pb2 as pb

    feeds = [queue.Queue() for _ in range(n)]

    def requests(q):
        yield pb.StreamRequest(open=pb.SessionSettings(width=width, height=height))
        while (item := q.get()) is not None:
            yield item

    calls = [client.open_stream(requests(q)) for q in feeds]
    for call in calls:
        assert next(call).WhichOneof("kind") == "opened"
    return feeds, calls


def frames(n: int, width: int = 64, height: int = 48, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(n)]


class Streamer(threading.Thread):
    """Keeps a live stream going on a thread; counts outputs (to show other sessions are unaffected)."""

    def __init__(self, address: str, name: str = "bystander", width: int = 64, height: int = 48) -> None:
        super().__init__(daemon=True)
        from morphcam.daemon.client import LiveStream, StreamSettings

        self.stream = LiveStream(address, StreamSettings(width, height, "original", name=name))
        self.image = frames(1, width, height)[0]
        self.outputs = 0
        self._halt = threading.Event()

    def run(self) -> None:
        self.stream.start()
        while not self._halt.is_set():
            self.stream.submit(self.image)
            if self.stream.get_output(0.05) is not None:
                self.outputs += 1

    def stop(self) -> None:
        self._halt.set()
        self.join(5)
        self.stream.stop()

"""Fail-open relay against real daemons: one killed mid-stream and restarted (``morphcam serve``
as a subprocess on the same unix socket), and one whose pipeline is slower than the deadline.

Frames come from a real video file through PyAV and go to a real video file; the relay's
history says which written frames were styled (a daemon result) and which passed through.
"""
from __future__ import annotations

import time

import av
import numpy as np
import pytest

from morphcam.obs_bridge.live import LiveBridge
from morphcam.obs_bridge.settings import BridgeSettings, HotkeySettings, ObsSettings, SinkSettings, SourceSettings

pytestmark = pytest.mark.timeout(90)
FAIL_OPEN_MS = 100


def wait_for(predicate, timeout: float, interval: float = 0.01):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


def bridge_settings(address: str, video, out) -> BridgeSettings:
    return BridgeSettings(
        daemon=address,
        width=160,
        height=96,
        source=SourceSettings(kind="file", path=str(video), fps=30.0),
        sink=SinkSettings(kind="file", path=str(out)),
        hotkeys=HotkeySettings(enabled=False),
    )


def max_gap_ms(shown, since_ns: int = 0) -> float:
    times = [s.time_ns for s in shown if s.time_ns >= since_ns]
    return max(np.diff(times), default=0) / 1e6


def test_daemon_killed_frames_pass_through_then_styled_resume(daemon_process, test_video, tmp_path):
    out = tmp_path / "out.mkv"
    with LiveBridge(bridge_settings(daemon_process.address, test_video, out), ObsSettings()) as live:
        relay = live.relay
        assert wait_for(lambda: relay.styled >= 15, 20), live.status()

        killed_ns = time.monotonic_ns()
        daemon_process.kill()
        # Within 100 ms of the kill, original frames reach the sink.
        assert wait_for(lambda: any(not s.styled and s.time_ns > killed_ns for s in relay.history), 2)
        first_passthrough = next(s for s in relay.history if not s.styled and s.time_ns > killed_ns)
        assert (first_passthrough.time_ns - killed_ns) / 1e6 < FAIL_OPEN_MS
        time.sleep(1.0)
        down = [s for s in relay.history if s.time_ns > killed_ns]
        assert sum(not s.styled for s in down) >= 20, live.status()  # ~30 fps of originals
        assert max_gap_ms(relay.history, killed_ns - 100_000_000) < FAIL_OPEN_MS

        restarted_ns = time.monotonic_ns()
        daemon_process.start()
        # Styled frames come back without restarting the bridge (the stream reconnects itself).
        assert wait_for(lambda: sum(s.styled and s.time_ns > restarted_ns for s in relay.history) >= 10, 15), live.status()
        assert live.stream.reconnects >= 1
        assert max_gap_ms(relay.history, killed_ns - 100_000_000) < FAIL_OPEN_MS
        written = relay.styled + relay.passthrough
    with av.open(str(out)) as container:  # the sink's file holds every frame shown, decodable
        assert sum(1 for _ in container.decode(video=0)) == written


class SlowPipeline:
    """Builds a passthrough pipeline that takes 250 ms per frame (slower than the deadline)."""

    @staticmethod
    def make():
        from morphcam.daemon.pipeline import PassthroughPipeline

        class Slow(PassthroughPipeline):
            def step(self, batch):
                time.sleep(0.25)
                return super().step(batch)

        return Slow()


def test_daemon_slower_than_deadline_output_keeps_its_rate(test_video, tmp_path):
    from morphcam.daemon.config import Config, ModelConfig, ServerConfig
    from morphcam.daemon.server import DaemonThread

    config = Config({
        "server": ServerConfig(unix_socket=str(tmp_path / "slow.sock"), address="", metrics_address=""),
        "model": ModelConfig(pipeline="passthrough"),
    })
    with DaemonThread(config, SlowPipeline.make()) as daemon:
        with LiveBridge(bridge_settings(daemon.address, test_video, tmp_path / "out.mp4"), ObsSettings()) as live:
            assert wait_for(lambda: live.stream.connected, 10)
            start_ns = time.monotonic_ns()
            time.sleep(1.5)
            shown = [s for s in live.relay.history if s.time_ns > start_ns]
    assert len(shown) >= 30, len(shown)  # ~30 fps although the daemon manages 4
    assert max_gap_ms(shown) < FAIL_OPEN_MS + 34
    assert sum(not s.styled for s in shown) > len(shown) * 0.8

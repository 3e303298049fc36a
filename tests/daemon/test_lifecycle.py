"""The daemon as its own process: SIGTERM drains, and clients reconnect after a restart."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import grpc
import pytest

from helpers.daemons import frames, wait_until
from morphcam.daemon.client import DaemonClient, DaemonError, LiveStream, StreamSettings


def _serve(socket_path: str, tmp_path, grace_s: float = 3.0) -> subprocess.Popen:
    config = tmp_path / "morphcam.toml"
    config.write_text(f'[server]\nunix_socket = "{socket_path}"\naddress = ""\nmetrics_address = ""\n'
                      f'grace_s = {grace_s}\n\n[model]\npipeline = "passthrough"\n')
    proc = subprocess.Popen([sys.executable, "-m", "morphcam.daemon.cli", "serve", "--config", str(config)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    with DaemonClient(f"unix:{socket_path}") as client:
        if not client.wait_ready(30):
            proc.kill()
            pytest.fail(f"daemon did not start: {proc.communicate()[0]}")
    return proc


def test_sigterm_drains_running_streams(tmp_path):
    sock = str(tmp_path / "d.sock")
    proc = _serve(sock, tmp_path, grace_s=3.0)
    received: list[float] = []
    error: list[BaseException] = []
    image = frames(1)[0]

    def slow_file():
        for _ in range(40):  # ~2 s of frames: finishes inside the 3 s grace
            time.sleep(0.05)
            yield image

    def run():
        try:
            with DaemonClient(f"unix:{sock}") as client:
                for _ in client.transform(StreamSettings(64, 48), slow_file()):
                    received.append(time.monotonic())
        except BaseException as exc:
            error.append(exc)

    t = threading.Thread(target=run)
    t.start()
    assert wait_until(lambda: len(received) >= 5, timeout=10)
    sent_at = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    with DaemonClient(f"unix:{sock}", timeout_s=2) as late:  # new work is refused while draining
        with pytest.raises((DaemonError, grpc.RpcError)):
            list(late.transform(StreamSettings(64, 48), frames(2)))
    t.join(15)
    out, _ = proc.communicate(timeout=15)
    assert not error, error
    assert len(received) == 40, "the running stream finished within the grace period"
    assert any(r > sent_at + 0.5 for r in received)
    assert proc.returncode == 0, out
    assert "SIGTERM: draining" in out and "daemon stopped" in out
    assert not os.path.exists(sock)


def test_sigterm_cancels_endless_streams_after_grace(tmp_path):
    sock = str(tmp_path / "d.sock")
    proc = _serve(sock, tmp_path, grace_s=1.0)
    with LiveStream(f"unix:{sock}", StreamSettings(64, 48, name="cam"), backoff_s=(0.05, 0.2)) as live:
        image = frames(1)[0]
        live.submit(image)
        assert live.get_output(10) is not None
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
        assert time.monotonic() - t0 < 4.0
        assert proc.returncode == 0
        assert wait_until(lambda: not live.connected, timeout=3)


def test_clients_reconnect_after_a_restart(tmp_path):
    sock = str(tmp_path / "d.sock")
    proc = _serve(sock, tmp_path)
    image = frames(1)[0]
    try:
        with LiveStream(f"unix:{sock}", StreamSettings(64, 48, "pencil sketch", name="cam"),
                        backoff_s=(0.05, 0.3)) as live:
            live.submit(image)
            assert live.get_output(10) is not None
            first_id = live.session_id
            live.set_prompt("oil painting")
            live.update(enabled=False)
            proc.kill()
            proc.wait(10)
            assert wait_until(lambda: not live.connected, timeout=5)
            live.submit(image)
            assert live.get_output(0.3) is None  # nothing comes back while the daemon is down
            proc = _serve(sock, tmp_path)
            assert wait_until(lambda: live.connected, timeout=10), live.last_error
            assert live.session_id != first_id
            deadline = time.monotonic() + 10
            out = None
            while out is None and time.monotonic() < deadline:
                live.submit(image)
                out = live.get_output(0.2)
            assert out is not None, "frames flow again without restarting the client"
            with DaemonClient(f"unix:{sock}") as client:
                s = client.status().sessions[0]
                assert [p.text for p in s.prompt] == ["oil painting"], "the current prompt is restored"
                assert not s.enabled, "on/off is restored"
                client.set_prompt("cam", "watercolor")
            assert live.reconnects >= 1
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)

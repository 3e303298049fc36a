"""``morphcam live`` and ``morphcam doctor`` as commands: torch stays out of the bridge process,
a file runs through a real daemon into a file, and config mistakes are reported by key."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import av
import pytest

from helpers.daemons import wait_until as wait_for
from morphcam.daemon.client import DaemonClient, DaemonError

pytestmark = pytest.mark.timeout(120)


def run_python(code: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=timeout)


def test_bridge_modules_do_not_import_torch():
    done = run_python("""
        import sys
        import morphcam.obs_bridge.live, morphcam.obs_bridge.doctor
        import morphcam.daemon.client, morphcam.daemon.livestream
        assert "torch" not in sys.modules, "the bridge imported torch"
        print("clean")
    """)
    assert done.returncode == 0 and "clean" in done.stdout, done.stderr


def test_live_file_through_daemon_to_file_without_torch(daemon_process, test_video, tmp_path):
    config = tmp_path / "morphcam.toml"
    out = tmp_path / "out.mp4"
    config.write_text(textwrap.dedent(f"""
        [bridge]
        daemon = "{daemon_process.address}"
        width = 160
        height = 96
        prompt = "ink sketch"
        [bridge.source]
        kind = "file"
        path = "{test_video}"
        [bridge.sink]
        kind = "file"
        path = "{out}"
        [bridge.hotkeys]
        enabled = false
    """))
    done = run_python(f"""
        import sys
        from morphcam.daemon.cli import main
        rc = main(["live", "--config", {str(config)!r}, "--duration", "2.5"])
        assert "torch" not in sys.modules, "morphcam live imported torch"
        sys.exit(rc)
    """)
    assert done.returncode == 0, done.stderr[-3000:]
    with av.open(str(out)) as container:
        frames = sum(1 for _ in container.decode(video=0))
    assert frames >= 40, frames  # ~2.5 s at 30 fps (minus the first connection)


def test_live_reports_config_mistakes_by_key(tmp_path):
    config = tmp_path / "bad.toml"
    config.write_text('[bridge.source]\nkind = "file"\npth = "x.mp4"\n')
    done = subprocess.run([sys.executable, "-m", "morphcam.daemon.cli", "live", "--config", str(config)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "bridge.source.pth" in done.stderr
    config.write_text('[bridge.source]\nkind = "file"\n')
    done = subprocess.run([sys.executable, "-m", "morphcam.daemon.cli", "live", "--config", str(config)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "bridge.source.path" in done.stderr
    config.write_text('[server]\naddress = "127.0.0.1:50999"\n[bridge]\nstart_daemon = true\n'
                      '[bridge.source]\npath = "x.mp4"\n')
    done = subprocess.run([sys.executable, "-m", "morphcam.daemon.cli", "live", "--config", str(config)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "bridge.daemon" in done.stderr and "127.0.0.1:50999" in done.stderr


def children(pid: int) -> set[int]:
    found = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found |= {int(c) for c in (task / "children").read_text().split()}
        except OSError:
            continue
    return found


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="reads child processes from /proc (Linux)")
def test_live_starts_its_daemon_and_restarts_it(test_video, tmp_path):
    sock = tmp_path / "child.sock"
    config = tmp_path / "morphcam.toml"
    config.write_text(textwrap.dedent(f"""
        [server]
        unix_socket = "{sock}"
        address = ""
        metrics_address = ""
        [model]
        pipeline = "passthrough"
        [bridge]
        daemon = "unix:{sock}"
        start_daemon = true
        width = 160
        height = 96
        [bridge.source]
        kind = "file"
        path = "{test_video}"
        [bridge.sink]
        kind = "file"
        path = "{tmp_path / 'out.mkv'}"
        [bridge.hotkeys]
        enabled = false
    """))
    log = (tmp_path / "live.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "morphcam.daemon.cli", "live", "--config", str(config)],
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        with DaemonClient(f"unix:{sock}", timeout_s=2) as client:
            def frames_out() -> int:
                try:
                    sessions = client.status().sessions
                except DaemonError:
                    return 0
                return sessions[0].frames_out if sessions else 0

            assert wait_for(lambda: frames_out() > 10, 30), (tmp_path / "live.log").read_text()[-3000:]
            (first,) = children(proc.pid)
            os.kill(first, signal.SIGKILL)  # the daemon crashes; the bridge starts it again
            assert wait_for(lambda: children(proc.pid) - {first}, 15), (tmp_path / "live.log").read_text()[-3000:]
            assert wait_for(lambda: frames_out() > 10, 30), (tmp_path / "live.log").read_text()[-3000:]
        (second,) = children(proc.pid)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0
        assert not Path(f"/proc/{second}").exists() or "zombie" in Path(f"/proc/{second}/status").read_text()
        assert "started the daemon" in (tmp_path / "live.log").read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)

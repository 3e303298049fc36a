"""``morphcam live`` and ``morphcam doctor`` as commands: torch stays out of the bridge process,
a file runs through a real daemon into a file, and config mistakes are reported by key."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import av
import pytest

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

"""install/: the scripts run as a user would run them, inside a temporary HOME."""
from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from morphcam.obs_bridge.obs_script_install import SCRIPT_NAME, obs_config_dir

INSTALL = Path(__file__).resolve().parents[2] / "install"
pytestmark = pytest.mark.timeout(60)


def run(args, env, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=30, **kw)


@pytest.fixture
def home(tmp_path) -> dict[str, str]:
    # This interpreter's bin folder first, so a virtual environment's morphcam and python are found.
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    env = {**os.environ, "PATH": path, "PYTHON": sys.executable,
           "HOME": str(tmp_path / "home"), "XDG_CONFIG_HOME": str(tmp_path / "home" / ".config")}
    Path(env["XDG_CONFIG_HOME"]).mkdir(parents=True)
    return env


def test_shell_scripts_parse():
    for script in [*INSTALL.glob("*.sh"), *INSTALL.glob("linux/*.sh")]:
        assert os.stat(script).st_mode & stat.S_IXUSR, f"{script.name} is not executable"
        done = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
        assert done.returncode == 0, (script.name, done.stderr)


def test_obs_script_installer_adds_script_to_every_collection(home):
    scenes = Path(home["XDG_CONFIG_HOME"]) / "obs-studio" / "basic" / "scenes"
    scenes.mkdir(parents=True)
    (scenes / "Streaming.json").write_text(json.dumps({"name": "Streaming", "sources": []}))
    (scenes / "Meetings.json").write_text(json.dumps({"name": "Meetings", "sources": []}))
    done = run([str(INSTALL / "install-obs-script.sh"), "--port", "47123"], home)
    assert done.returncode == 0, done.stderr
    script = obs_config_dir(home) / "morphcam" / SCRIPT_NAME
    assert script.exists() and "obs_hotkey_register_frontend" in script.read_text()
    for name in ("Streaming", "Meetings"):
        entries = json.loads((scenes / f"{name}.json").read_text())["modules"]["scripts-tool"]
        assert entries == [{"path": str(script), "settings": {"port": 47123}}]
    again = run([str(INSTALL / "install-obs-script.sh"), "--port", "47123"], home)
    assert again.returncode == 0 and "added to scene collection" not in again.stdout


def test_service_installer_fills_in_the_unit_templates(home):
    morphcam = shutil.which("morphcam", path=home["PATH"])
    if morphcam is None:
        pytest.skip("the morphcam command is not installed (pip install -e .)")
    config = Path(home["XDG_CONFIG_HOME"]) / "morphcam" / "morphcam.toml"
    done = run([str(INSTALL / "linux" / "install-services.sh"), str(config)], home)
    assert done.returncode == 0, done.stderr
    assert config.exists()  # the example config, to be edited
    units = Path(home["XDG_CONFIG_HOME"]) / "systemd" / "user"
    for unit, command in (("morphcam-daemon.service", "serve"), ("morphcam-live.service", "live")):
        text = (units / unit).read_text()
        assert "@MORPHCAM@" not in text and "@CONFIG@" not in text
        assert f"{morphcam} {command} --config {config}" in text

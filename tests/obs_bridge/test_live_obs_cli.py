"""``morphcam live`` as a user runs it: a process configured by one TOML file, with the real
headless OBS (the session fixture) and a ``morphcam serve`` process; stopped with Ctrl+C."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from morphcam.daemon.client import DaemonClient

pytestmark = pytest.mark.timeout(120)


def wait_for(predicate, timeout: float, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return True
        except Exception:
            pass
        time.sleep(interval)
    return False


def prompt_of(client: DaemonClient) -> str:
    sessions = client.status().sessions
    return sessions[0].prompt[0].text if sessions else ""


def test_morphcam_live_process_with_obs(obs, daemon_process, udp_port, tmp_path):
    # Its own port into OBS: a Media Source keeps its UDP port bound while it exists.
    config = tmp_path / "morphcam.toml"
    config.write_text(textwrap.dedent(f"""
        [bridge]
        daemon = "{daemon_process.address}"
        width = 320
        height = 180
        styles = ["ink sketch", "oil painting"]
        [bridge.source]
        kind = "udp"
        url = "udp://127.0.0.1:{obs.udp_out_port}"
        open_timeout_s = 2.0
        [bridge.sink]
        kind = "udp"
        url = "udp://127.0.0.1:{udp_port}?pkt_size=1316"
        [bridge.hotkeys]
        port = {obs.hotkey_port}
        [obs]
        enabled = true
        port = {obs.ws_port}
        start_output = true
        [obs.scene_prompts]
        Red = "red chalk"
        Green = "green glass"
        [obs.media_source]
        create = true
        input_name = "morphcam cli"
        scene = "Plain"
        url = "udp://127.0.0.1:{udp_port}"
    """))
    client = obs.client()
    client.send("SetCurrentProgramScene", {"sceneName": "Red"})
    env = {**os.environ, "OBS_WEBSOCKET_PASSWORD": obs.password}  # the password from the environment
    log = (tmp_path / "live.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "morphcam.daemon.cli", "live", "--config", str(config)],
                            env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        with DaemonClient(daemon_process.address) as daemon:
            # On connect the bridge applies the current scene's prompt and starts OBS's output.
            assert wait_for(lambda: prompt_of(daemon) == "red chalk", 20), (tmp_path / "live.log").read_text()
            client.send("SetCurrentProgramScene", {"sceneName": "Green"})
            assert wait_for(lambda: prompt_of(daemon) == "green glass", 5)
            client.send("TriggerHotkeyByName", {"hotkeyName": "morphcam.style_2"})
            assert wait_for(lambda: prompt_of(daemon) == "oil painting", 5)
            assert wait_for(lambda: daemon.status().sessions[0].frames_out > 10, 20), (tmp_path / "live.log").read_text()
        assert client.send("GetRecordStatus", raw=True)["outputActive"]
        proc.send_signal(signal.SIGINT)
        assert proc.wait(20) == 0
        # It stops the output it started; OBS itself keeps running.
        assert wait_for(lambda: not client.send("GetRecordStatus", raw=True)["outputActive"], 5)
        text = (tmp_path / "live.log").read_text()
        assert "Traceback" not in text and obs.password not in text
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        client.send("SetCurrentProgramScene", {"sceneName": "Red"})
        if "morphcam cli" in [i["inputName"] for i in client.send("GetInputList", raw=True)["inputs"]]:
            client.send("RemoveInput", {"inputName": "morphcam cli"})
        client.disconnect()

"""The bridge against a real OBS 29 (obs-websocket 5.1) running headless under Xvfb.

One OBS (the session fixture ``obs``), one in-process daemon with the passthrough pipeline and
one ``LiveBridge`` serve every test here: OBS's Recording output sends its program as MPEG-TS
over UDP to the bridge, the bridge sends frames through the daemon and streams them back into an
OBS Media Source it creates itself. Scene switches, hotkeys (through the installed OBS script)
and CustomEvents change the daemon session's prompt. The restart test runs last: it kills OBS.
"""
from __future__ import annotations

import base64
import io
import time

import av
import numpy as np
import pytest

from morphcam.daemon.client import DaemonClient
from morphcam.obs_bridge.live import LiveBridge
from morphcam.obs_bridge.settings import (
    BridgeSettings, HotkeySettings, MediaSourceSettings, ObsSettings, RelaySettings, SinkSettings, SourceSettings,
)

pytestmark = pytest.mark.timeout(120)

STYLES = ("ink sketch", "forest watercolor", "neon noir")
SCENE_PROMPTS = {"Red": "crimson woodcut", "Green": "green pastel"}
MEDIA = "morphcam output"


def wait_for(predicate, timeout: float, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    return predicate()


def session_prompt(client: DaemonClient) -> str:
    sessions = client.status().sessions
    return sessions[0].prompt[0].text if sessions and sessions[0].prompt else ""


def screenshot(obs_client, source: str) -> np.ndarray:
    reply = obs_client.send(
        "GetSourceScreenshot", {"sourceName": source, "imageFormat": "png", "imageWidth": 64, "imageHeight": 36}, raw=True
    )
    png = base64.b64decode(reply["imageData"].split(",", 1)[1])
    with av.open(io.BytesIO(png)) as container:
        return next(container.decode(video=0)).to_ndarray(format="rgb24")


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    from morphcam.daemon.config import Config, ModelConfig, ServerConfig
    from morphcam.daemon.server import DaemonThread

    sock = tmp_path_factory.mktemp("daemon") / "d.sock"
    config = Config({
        "server": ServerConfig(unix_socket=str(sock), address="", metrics_address=""),
        "model": ModelConfig(pipeline="passthrough"),
    })
    with DaemonThread(config) as d:
        yield d


@pytest.fixture(scope="module")
def bridge(obs, daemon):
    settings = BridgeSettings(
        daemon=daemon.address,
        width=320,
        height=180,
        styles=STYLES,
        source=SourceSettings(kind="udp", url=f"udp://127.0.0.1:{obs.udp_out_port}", open_timeout_s=2.0),
        sink=SinkSettings(kind="udp", url=f"udp://127.0.0.1:{obs.udp_in_port}?pkt_size=1316"),
        relay=RelaySettings(deadline_ms=150.0),
        hotkeys=HotkeySettings(port=obs.hotkey_port),
    )
    obs_settings = ObsSettings(
        enabled=True,
        port=obs.ws_port,
        password=obs.password,
        reconnect_interval_s=0.5,
        scene_prompts=SCENE_PROMPTS,
        start_output=True,
        media_source=MediaSourceSettings(create=True, input_name=MEDIA, scene="Plain", url=f"udp://127.0.0.1:{obs.udp_in_port}"),
    )
    with LiveBridge(settings, obs_settings) as live:
        assert live.obs_control.connection.wait_connected(20), live.obs_control.connection.last_error
        yield live


@pytest.fixture(scope="module")
def daemon_client(daemon):
    with DaemonClient(daemon.address) as client:
        yield client


@pytest.fixture
def obs_client(obs):
    client = obs.client()
    yield client
    client.disconnect()


def test_scene_switch_changes_daemon_prompt(bridge, obs_client, daemon_client):
    obs_client.send("SetCurrentProgramScene", {"sceneName": "Green"})
    assert wait_for(lambda: session_prompt(daemon_client) == "green pastel", 5), session_prompt(daemon_client)
    obs_client.send("SetCurrentProgramScene", {"sceneName": "Red"})
    assert wait_for(lambda: session_prompt(daemon_client) == "crimson woodcut", 5), session_prompt(daemon_client)


def test_hotkey_through_installed_script_changes_prompt(bridge, obs_client, daemon_client):
    names = obs_client.send("GetHotkeyList", raw=True)["hotkeys"]
    assert "morphcam.style_2" in names and "morphcam.next_style" in names
    obs_client.send("TriggerHotkeyByName", {"hotkeyName": "morphcam.style_2"})
    assert wait_for(lambda: session_prompt(daemon_client) == STYLES[1], 5), session_prompt(daemon_client)
    obs_client.send("TriggerHotkeyByName", {"hotkeyName": "morphcam.next_style"})
    assert wait_for(lambda: session_prompt(daemon_client) == STYLES[2], 5), session_prompt(daemon_client)
    assert bridge.hotkeys.received >= 2


def test_custom_event_changes_prompt(bridge, obs_client, daemon_client):
    obs_client.send("BroadcastCustomEvent", {"eventData": {"morphcam": {"prompt": "stained glass"}}})
    assert wait_for(lambda: session_prompt(daemon_client) == "stained glass", 5), session_prompt(daemon_client)
    # Events for other tools are ignored; a bad command is logged, and the next one still works.
    obs_client.send("BroadcastCustomEvent", {"eventData": {"other-tool": {"prompt": "no"}}})
    obs_client.send("BroadcastCustomEvent", {"eventData": {"morphcam": {"action": "no-such-action"}}})
    obs_client.send("BroadcastCustomEvent", {"eventData": {"morphcam": {"style": 1}}})
    assert wait_for(lambda: session_prompt(daemon_client) == STYLES[0], 5), session_prompt(daemon_client)


def test_obs_output_through_daemon_into_media_source(bridge, obs, obs_client, daemon_client):
    obs_client.send("SetCurrentProgramScene", {"sceneName": "Red"})
    # OBS -> UDP -> bridge -> daemon -> bridge -> UDP -> OBS Media Source.
    assert wait_for(lambda: bridge.relay.styled > 10, 20), (bridge.status(), bridge.relay.source.last_error)
    assert daemon_client.status().sessions[0].frames_out > 10
    inputs = obs_client.send("GetInputList", {"inputKind": "ffmpeg_source"}, raw=True)["inputs"]
    assert MEDIA in [i["inputName"] for i in inputs]
    red = np.array(obs.scenes["Red"], float)

    def shows_red() -> bool:
        image = screenshot(obs_client, MEDIA).reshape(-1, 3).astype(float)
        return bool(np.abs(np.median(image, axis=0) - red).max() < 25)

    assert wait_for(shows_red, 10, interval=0.2), screenshot(obs_client, MEDIA).reshape(-1, 3).mean(0)


def test_obs_killed_and_restarted_bridge_reconnects(bridge, obs, daemon_client):
    connection = bridge.obs_control.connection
    before = connection.connects
    obs.kill()
    assert wait_for(lambda: not connection.connected, 10), "the bridge did not notice that OBS died"
    obs.start()
    assert wait_for(lambda: connection.connects > before and connection.connected, 20), connection.last_error
    client = obs.client()
    try:
        client.send("SetCurrentProgramScene", {"sceneName": "Green"})
        assert wait_for(lambda: session_prompt(daemon_client) == "green pastel", 5), session_prompt(daemon_client)
        client.send("TriggerHotkeyByName", {"hotkeyName": "morphcam.style_3"})
        assert wait_for(lambda: session_prompt(daemon_client) == STYLES[2], 5), session_prompt(daemon_client)
        # The bridge recreated its Media Source and restarted OBS's output by itself (asynchronously:
        # the restart may still be under way when the prompts have already gone through).
        assert wait_for(lambda: client.send("GetRecordStatus", raw=True)["outputActive"], 10)
        styled = bridge.relay.styled
        assert wait_for(lambda: bridge.relay.styled > styled + 10, 20), bridge.status()
    finally:
        client.disconnect()

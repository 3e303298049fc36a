"""Style control through a real daemon session: hotkey actions, CustomEvent commands, the
localhost hotkey listener, and the action table shared with the OBS script."""
from __future__ import annotations

import ast
import json
import socket
import time

import numpy as np
import pytest

from helpers.daemons import wait_until as wait_for
from morphcam.daemon.client import DaemonClient, StreamSettings
from morphcam.daemon.livestream import LiveStream
from morphcam.obs_bridge.control import ACTIONS, StreamControl, StyleController
from morphcam.obs_bridge.hotkeys import HotkeyListener
from morphcam.obs_bridge.obs_script_install import add_to_collection, bundled_script
from morphcam.obs_bridge.settings import HotkeySettings

pytestmark = pytest.mark.timeout(60)
STYLES = ("ink", "snow", "neon")


@pytest.fixture
def session(daemon_thread):
    """A live session at the daemon, fed frames, with a controller over it."""
    client = DaemonClient(daemon_thread.address)
    stream = LiveStream(daemon_thread.address, StreamSettings(64, 48, name="live")).start()
    assert wait_for(lambda: stream.connected)
    stream.submit(np.zeros((48, 64, 3), np.uint8))
    controller = StyleController(StreamControl(stream, client), styles=STYLES, strength=0.5, strength_step=0.1)

    def state():
        s = client.status().sessions[0]
        return [p.text for p in s.prompt], s.enabled, round(s.strength, 3)

    yield controller, state
    stream.stop()
    client.close()


def test_actions_drive_the_daemon_session(session):
    controller, state = session
    steps = [
        ("style_2", lambda s: s[0] == ["snow"]),
        ("next_style", lambda s: s[0] == ["neon"]),
        ("next_style", lambda s: s[0] == ["ink"]),  # wraps around
        ("previous_style", lambda s: s[0] == ["neon"]),
        ("effect_off", lambda s: s[1] is False),
        ("effect_toggle", lambda s: s[1] is True),
        ("strength_up", lambda s: s[2] == 0.6),
        ("strength_down", lambda s: s[2] == 0.5),
    ]
    for action, expected in steps:
        assert controller.run_action(action)
        assert wait_for(lambda: expected(state())), (action, state())
    assert not controller.run_action("no-such-action")
    controller.run_action("style_9")  # an empty slot is logged, nothing changes
    assert state()[0] == ["neon"]
    with DaemonClient(controller.target._client.address) as client:  # the daemon logs who asked
        origins = [a.origin for a in client.status().sessions[0].activity]
    assert "hotkey:style_2" in origins and "hotkey:strength_down" in origins


def test_commands_drive_the_daemon_session(session):
    controller, state = session
    controller.on_command({"prompt": "oil painting"})
    assert wait_for(lambda: state()[0] == ["oil painting"])
    controller.on_command({"prompts": [{"text": "ink", "weight": 2}, {"text": "snow"}], "mode": "transition",
                           "transition_frames": 10})
    assert wait_for(lambda: state()[0] == ["ink", "snow"])
    controller.on_command({"strength": 0.25, "enabled": False})
    assert wait_for(lambda: state()[1:] == (False, 0.25))
    controller.on_scene("nope")  # a scene with no prompt changes nothing
    controller.scene_prompts["Just Chatting"] = "soft watercolor"
    assert controller.on_scene("Just Chatting")
    assert wait_for(lambda: state()[0] == ["soft watercolor"])
    with DaemonClient(controller.target._client.address) as client:
        origins = [a.origin for a in client.status().sessions[0].activity]
    assert "obs-event" in origins and origins[-1] == "scene:Just Chatting"
    controller.on_command({"style": "original"})  # the daemon's named style
    assert wait_for(lambda: state()[0] == ["original"])
    for bad in ({"colour": "red"}, {"style": "nope"}, "text"):
        with pytest.raises(ValueError):
            controller.on_command(bad)


def test_scene_prompts(session):
    controller, state = session
    controller.scene_prompts = {"Gaming": "neon"}
    assert controller.on_scene("Gaming")
    assert not controller.on_scene("Unmapped")
    assert wait_for(lambda: state()[0] == ["neon"])


def test_hotkey_listener_runs_actions_and_drops_garbage(udp_port):
    seen = []
    listener = HotkeyListener(HotkeySettings(port=udp_port), seen.append).start()
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for payload in (b"not json", b'{"no": "action"}', json.dumps({"v": 1, "action": "next_style"}).encode()):
                s.sendto(payload, ("127.0.0.1", udp_port))
        assert wait_for(lambda: seen == ["next_style"])
        with pytest.raises(OSError, match=r"\[bridge.hotkeys\] port"):
            HotkeyListener(HotkeySettings(port=udp_port), seen.append).start()
    finally:
        listener.stop()


def test_obs_script_registers_every_action():
    tree = ast.parse(bundled_script().read_text())
    assign = next(n for n in tree.body if isinstance(n, ast.Assign) and n.targets[0].id == "ACTIONS")
    names = []
    for element in assign.value.elts:
        if isinstance(element, ast.Starred):  # the generated style slots
            names += [f"style_{i}" for i in range(1, 10)]
        else:
            names.append(element.elts[0].value)
    assert names == list(ACTIONS)


def test_installer_adds_the_script_once(tmp_path):
    collection: dict = {"name": "x", "modules": {"scripts-tool": [{"path": "/elsewhere/other.py", "settings": {}}]}}
    script = tmp_path / "morphcam_hotkeys.py"
    assert add_to_collection(collection, script, 47011)
    assert not add_to_collection(collection, script, 47011)
    assert add_to_collection(collection, script, 47012)
    entries = collection["modules"]["scripts-tool"]
    assert len(entries) == 2 and entries[1] == {"path": str(script), "settings": {"port": 47012}}

"""``ObsConnection`` and ``morphcam doctor`` against the session's real headless OBS: the
wrappers around obsws-python's faults hold, and doctor says what to fix."""
from __future__ import annotations

import dataclasses
import logging
import threading
import time

import pytest

from helpers.daemons import wait_until as wait_for
from morphcam.obs_bridge.doctor import FAIL, OK, SKIP, Setup, check_daemon, check_obs, check_ports, diagnose
from morphcam.obs_bridge.obs_ws import ObsConnection, ObsRequestError, ObsUnavailable
from morphcam.obs_bridge.settings import BridgeSettings, HotkeySettings, ObsSettings

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def obs_settings(obs) -> ObsSettings:
    return ObsSettings(enabled=True, port=obs.ws_port, password=obs.password, reconnect_interval_s=0.5)


def test_failing_event_handler_does_not_end_the_event_thread(obs, obs_settings):
    seen = []

    def handler(event, data):
        seen.append(data)
        if len(seen) == 1:
            raise RuntimeError("a bug in a handler")

    connection = ObsConnection(obs_settings, on_event=handler).start()
    client = obs.client()
    try:
        assert connection.wait_connected(10), connection.last_error
        for i in range(2):
            client.send("BroadcastCustomEvent", {"eventData": {"n": i}})
        assert wait_for(lambda: len(seen) == 2), seen
        assert [d["n"] for d in seen] == [0, 1]
    finally:
        client.disconnect()
        connection.stop()


def test_requests_from_many_threads_get_their_own_replies(obs_settings):
    connection = ObsConnection(obs_settings).start()
    assert connection.wait_connected(10), connection.last_error
    wrong = []

    def worker(request, key):
        for _ in range(40):
            if key not in connection.request(request):
                wrong.append(request)

    threads = [threading.Thread(target=worker, args=a) for a in
               [("GetVersion", "obsVersion"), ("GetSceneList", "scenes"), ("GetStats", "cpuUsage"), ("GetVideoSettings", "baseWidth")]]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert not wrong
        with pytest.raises(ObsRequestError) as refused:
            connection.request("SetCurrentProgramScene", {"sceneName": "no such scene"})
        assert refused.value.code == 600  # ResourceNotFound
    finally:
        connection.stop()
    with pytest.raises(ObsUnavailable):
        connection.request("GetVersion")


def test_password_is_not_logged(obs_settings, caplog):
    caplog.set_level(logging.DEBUG)
    connection = ObsConnection(obs_settings)
    try:
        assert connection.connect_once()
    finally:
        connection.close()
    assert obs_settings.password not in caplog.text


def test_doctor_reports_obs_script_and_wrong_password(obs_settings):
    bridge = BridgeSettings(hotkeys=HotkeySettings(enabled=False))
    findings = {f.check: f for f in check_obs(Setup(bridge, obs_settings))}
    assert findings["obs websocket"].status == OK and "29." in findings["obs websocket"].detail
    assert findings["obs script"].status == OK
    bad = check_obs(Setup(bridge, dataclasses.replace(obs_settings, password="wrong")))
    assert bad[0].status == FAIL and "password" in bad[0].detail + bad[0].fix
    closed = check_obs(Setup(bridge, dataclasses.replace(obs_settings, port=1)))
    assert closed[0].status == FAIL and "WebSocket Server Settings" in closed[0].fix
    assert check_obs(Setup(bridge, ObsSettings()))[0].status == SKIP


def test_doctor_daemon_and_ports(daemon_thread, udp_port):
    up = check_daemon(Setup(BridgeSettings(daemon=daemon_thread.address), ObsSettings()))
    assert up[0].detail.endswith("pipeline passthrough on cpu; configured: model.pipeline = passthrough")
    down = check_daemon(Setup(BridgeSettings(daemon="unix:/nonexistent/morphcam.sock"), ObsSettings()))
    assert down[0].status == FAIL and "morphcam serve" in down[0].fix
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as busy:
        busy.bind(("127.0.0.1", udp_port))
        ports = check_ports(Setup(BridgeSettings(hotkeys=HotkeySettings(port=udp_port)), ObsSettings()))
    assert ports[0].status == FAIL and "[bridge.hotkeys] port" in ports[0].fix


def test_doctor_gpu_probe_runs_in_a_subprocess():
    import sys

    had_torch = "torch" in sys.modules
    findings = diagnose(Setup(BridgeSettings(), ObsSettings()))
    checks = {f.check for f in findings}
    assert {"gpu", "triton"} <= checks or "torch" in checks
    assert ("torch" in sys.modules) == had_torch
    assert all(f.fix for f in findings if f.status == FAIL)

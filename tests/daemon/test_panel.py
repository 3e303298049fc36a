"""The control panel's HTTP API against a real daemon: the same control path as gRPC, and refusals."""
from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from helpers.daemons import StylePipeline, frames
from morphcam.daemon.client import DaemonClient, LiveStream, StreamSettings


def call(url, body=None, headers=None, method=None):
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    h = {"X-Morphcam": "1", "Content-Type": "application/json"} if body is not None else {}
    h.update(headers or {})
    req = urllib.request.Request(url, data=data, headers=h, method=method)
    try:
        with urllib.request.urlopen(req, timeout=30) as res:
            return res.status, res.read(), res.headers
    except urllib.error.HTTPError as err:
        return err.code, err.read(), err.headers


@pytest.fixture
def live_panel(start_daemon):
    pipeline = StylePipeline()
    daemon = start_daemon(pipeline, panel="127.0.0.1:0")
    live = LiveStream(daemon.address, StreamSettings(64, 48, "original", name="facecam")).start()
    live.submit(frames(1)[0])
    assert live.get_output(5) is not None
    yield daemon, pipeline, live, daemon.daemon.panel.url
    live.stop()


def test_page_status_styles_and_previews(live_panel):
    daemon, pipeline, live, url = live_panel
    status, body, headers = call(url)
    assert status == 200 and b'<script src="/panel.js">' in body
    assert "default-src 'self'" in headers["Content-Security-Policy"]
    for asset in ("panel.js", "panel.css"):
        assert call(url + asset)[0] == 200
    st = json.loads(call(url + "api/status")[1])
    assert st["pipeline"] == "delay" and st["sessions"][0]["name"] == "facecam"
    styles = json.loads(call(url + "api/styles")[1])
    assert [s["name"] for s in styles] == ["original", "pencil sketch", "thermal"]
    sid = live.session_id
    for side in ("input", "output"):
        status, jpeg, headers = call(url + f"api/sessions/{sid}/preview.jpg?side={side}")
        assert status == 200 and jpeg[:2] == b"\xff\xd8" and headers["Content-Type"] == "image/jpeg"
    status, thumb, _ = call(url + "api/styles/pencil%20sketch/thumbnail.jpg")
    assert status == 200 and thumb[:2] == b"\xff\xd8"
    assert pipeline.batches, "the thumbnail was rendered by the pipeline"
    assert call(url + "api/styles/nope/thumbnail.jpg")[0] == 404


def test_changes_go_through_the_daemon_control_path(live_panel):
    daemon, pipeline, live, url = live_panel
    sid = live.session_id
    status, body, _ = call(url + f"api/sessions/{sid}/prompt",
                           {"prompts": [{"text": "oil painting", "weight": 2}, {"text": "snowfall"}],
                            "mode": "transition", "transition_frames": 20, "interpolation": "lerp"})
    assert status == 200, body
    assert pipeline.prompts[sid].mode == "transition" and pipeline.prompts[sid].prompts[0].weight == 2
    assert call(url + f"api/sessions/{sid}/update", {"strength": 0.3, "enabled": False, "seed": 7})[0] == 200
    with DaemonClient(daemon.address) as client:  # what gRPC sees is what the panel did
        s = client.status().sessions[0]
        assert [p.text for p in s.prompt] == ["oil painting", "snowfall"]
        assert not s.enabled and abs(s.strength - 0.3) < 1e-6
        client.set_prompt("facecam", "watercolor", origin="chat:alice")
    activity = json.loads(call(url + "api/status")[1])["sessions"][0]["activity"]
    assert [a["origin"] for a in activity][-3:] == ["panel", "panel", "chat:alice"]
    assert "watercolor" in activity[-1]["action"]


@pytest.mark.parametrize("body,status,message", [
    ({"text": "x" * 100_000}, 413, "over the limit"),
    ({"text": "x" * 3000}, 400, "3000 characters is too long; the limit is 2000"),
    ({"text": "<script>alert(1)</script>"}, 400, "may not contain markup"),
    ({"text": "   "}, 400, "must not be empty"),
    ({"text": "a", "mode": "explode"}, 400, "mode must be one of"),
    ({"prompts": [{"text": "a"}] * 5}, 400, "1 to 4 prompts"),
    ({"nope": 1}, 400, "give `text`"),
    (b"{not json", 400, "not valid JSON"),
    (b"x" * (65 * 1024), 413, "over the limit"),
])
def test_bad_prompts_are_refused(live_panel, body, status, message):
    daemon, pipeline, live, url = live_panel
    got, reply, _ = call(url + f"api/sessions/{live.session_id}/prompt", body)
    assert got == status and message in json.loads(reply)["error"]
    assert live.session_id not in pipeline.prompts, "nothing was applied"
    live.submit(frames(1)[0])
    assert live.get_output(5) is not None, "the stream is unaffected"


def test_bad_updates_and_unknown_sessions(live_panel):
    daemon, pipeline, live, url = live_panel
    sid = live.session_id
    assert call(url + f"api/sessions/{sid}/update", {"strength": 4})[0] == 400
    assert call(url + f"api/sessions/{sid}/update", {"strength": True})[0] == 400
    assert call(url + f"api/sessions/{sid}/update", {"volume": 1})[0] == 400
    assert call(url + "api/sessions/0123456789ab/prompt", {"text": "a"})[0] == 404
    assert call(url + "api/nothing")[0] == 404


def test_forged_requests_are_refused(live_panel):
    daemon, pipeline, live, url = live_panel
    target = url + f"api/sessions/{live.session_id}/prompt"
    # A form post from another web site: no custom header, not JSON.
    status, body, _ = call(target, b"text=hacked", headers={"Content-Type": "application/x-www-form-urlencoded",
                                                            "X-Morphcam": ""})
    assert status == 403 and "X-Morphcam" in json.loads(body)["error"]
    # DNS rebinding: a foreign name that resolves to 127.0.0.1.
    status, body, _ = call(url + "api/status", headers={"Host": "evil.example:80"})
    assert status == 403 and "Host" in json.loads(body)["error"]
    assert live.session_id not in pipeline.prompts


def test_token_is_required_when_set(start_daemon):
    daemon = start_daemon(StylePipeline(), panel="127.0.0.1:0", token="s3cret")
    url = daemon.daemon.panel.url
    assert call(url)[0] == 200  # the page itself; it reads the token from its #fragment
    status, body, _ = call(url + "api/status")
    assert status == 401 and "#token=" in json.loads(body)["error"]
    assert call(url + "api/status", headers={"Authorization": "Bearer wrong"})[0] == 401
    assert call(url + "api/status", headers={"Authorization": "Bearer s3cret"})[0] == 200


def test_panel_off_loopback_needs_a_token(tmp_path):
    import asyncio

    from helpers.daemons import make_config
    from morphcam.daemon.config import ConfigError
    from morphcam.daemon.server import Daemon

    config = make_config(tmp_path, panel="0.0.0.0:0")
    with pytest.raises(ConfigError, match="panel on 0.0.0.0:0 without a token"):
        asyncio.run(Daemon(config, StylePipeline(), environ={}).start())

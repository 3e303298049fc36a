"""The IRC client against an in-process fake Twitch server on loopback (Twitch itself cannot be
reached from tests): login, tags and roles, PING/PONG, malformed and hostile input, reconnects,
rate limits, TLS. Every wait is bounded."""
from __future__ import annotations

import dataclasses
import logging
import shutil
import ssl
import subprocess
import time

import pytest

from helpers.daemons import wait_until as wait
from helpers.fake_twitch import FakeTwitchServer, RecordingTarget
from morphcam.obs_bridge.chat.service import ChatService, start_chat
from morphcam.obs_bridge.chat.settings import ChatSettings, ConnectionSettings, RateSettings

pytestmark = pytest.mark.timeout(30)

FAST = ConnectionSettings(connect_timeout_s=2.0, ping_interval_s=30.0, pong_timeout_s=2.0,
                          reconnect_initial_s=0.05, reconnect_max_s=0.4)


def chat_settings(port: int, **kw) -> ChatSettings:
    base = dict(enabled=True, channel="streamer", host="127.0.0.1", port=port, tls=False, connection=FAST)
    base.update(kw)
    return ChatSettings(**base)


@pytest.fixture
def server():
    with FakeTwitchServer() as srv:
        yield srv


@pytest.fixture
def running():
    services = []

    def _run(settings: ChatSettings, target=None, **kw) -> tuple[ChatService, RecordingTarget]:
        target = target or RecordingTarget()
        svc = ChatService(settings, target, **kw)
        svc.start()
        services.append(svc)
        assert svc.client.wait_joined(5), "the client did not join"
        assert svc.controller.dispatcher.flush(2)
        return svc, target

    yield _run
    for svc in services:
        svc.stop()


def applied(svc: ChatService, target: RecordingTarget, method: str, n: int = 1) -> list:
    assert wait(lambda: len(target.of(method)) >= n), f"{method} was not applied {n} times"
    return target.of(method)


def test_anonymous_login_with_tags_and_roles_end_to_end(server, running):
    svc, target = running(chat_settings(server.port))
    lines = [line.split(" ")[0] for _, line in server.received]
    assert lines[:4] == ["CAP", "NICK", "USER", "CAP"] and "PASS" not in lines  # CAP END after the ACK
    assert svc.client.nick.startswith("justinfan") and svc.client.tags_enabled
    assert server.wait_joined("streamer")
    server.say("viewer", "!morph off", "streamer")  # refused: viewers may not
    server.say("viewer", "!style anime", "streamer", badges="subscriber/3")
    server.say("themod", "!morph off", "streamer", badges="moderator/1")
    assert applied(svc, target, "set_enabled") == [False]
    assert [c.label for c in target.of("set_prompt")] == ["anime cel shading"]
    assert svc.controller.refused["role"] == 1
    assert svc.client.say("hello") is False  # anonymous is read-only


def test_token_login_sends_pass_and_never_logs_it(server, running, caplog):
    with caplog.at_level(logging.DEBUG, logger="morphcam.obs_bridge.chat"):
        svc, _ = running(chat_settings(server.port, nick="MyBot"), environ={"TWITCH_OAUTH_TOKEN": "s3cr3t"})
    assert server.lines_from_clients("PASS") == ["PASS oauth:s3cr3t"]
    assert server.lines_from_clients("NICK") == ["NICK mybot"]
    assert not svc.client.anonymous
    assert "s3cr3t" not in caplog.text


def test_missing_token_falls_back_to_anonymous_with_a_clear_warning(server, running, caplog):
    with caplog.at_level(logging.WARNING):
        svc, _ = running(chat_settings(server.port, nick="mybot"), environ={})
    assert svc.client.anonymous
    assert "export TWITCH_OAUTH_TOKEN=" in caplog.text


def test_answers_server_pings_and_pings_an_idle_server(server, running):
    conn = dataclasses.replace(FAST, ping_interval_s=0.3)
    svc, _ = running(chat_settings(server.port, connection=conn))
    server.ping("tmi.twitch.tv-123")
    assert wait(lambda: "PONG :tmi.twitch.tv-123" in server.lines_from_clients("PONG")
                or "PONG tmi.twitch.tv-123" in server.lines_from_clients("PONG"))
    assert wait(lambda: server.lines_from_clients("PING"), 3)  # keepalive
    assert svc.client.stats.connects == 1  # answered, so no reconnect


def test_unanswered_keepalive_reconnects():
    conn = dataclasses.replace(FAST, ping_interval_s=0.2, pong_timeout_s=0.3)
    with FakeTwitchServer(answer_pings=False) as srv:
        svc = ChatService(chat_settings(srv.port, connection=conn), RecordingTarget())
        svc.start()
        try:
            assert wait(lambda: svc.client.stats.connects >= 2, 5)
        finally:
            svc.stop()


def test_malformed_long_and_invalid_utf8_lines_are_survived(server, running):
    svc, target = running(chat_settings(server.port))
    assert server.wait_joined("streamer")
    hostile = [
        b"\r\n", b"\n", b"garbage without command\r\n", b"@only-tags\r\n", b":prefix-only\r\n",
        b"\x00\x01\x02\xff\xfe\r\n",
        b"@badges=broadcaster/1 :evil!evil@x PRIVMSG #streamer :!morph off \xff\xfe\xc0\x80\r\n",
        server.privmsg_line("v", "!style \xe2\x82 broken", "streamer").replace(b"\xe2\x82", b"\xe2\x82"),
        b"@badges=moderator/1 :m!m@m PRIVMSG #streamer :!style caf\xe9\r\n",  # latin-1, not UTF-8
        b"@" + b"a=" + b"x" * 20000 + b" :big!big@x PRIVMSG #streamer :!morph off\r\n",  # over the line limit
        b"PRIVMSG #streamer :" + b"y" * 100_000,  # no newline yet: dropped while it grows
        b"more of the same" * 100 + b"\r\n",
        server.privmsg_line("x" * 600, "!style " + "z" * 3000, "streamer", badges="moderator/1"),
        b":v!v@v PRIVMSG #other :!style anime\r\n",  # another channel
    ]
    server.send_lines(hostile, "streamer")
    server.say("viewer", "!style snowfall", "streamer")  # still listening afterwards
    assert [c.label for c in applied(svc, target, "set_prompt")] == ["gentle snowfall at night"]
    stats = svc.client.stats
    assert stats.malformed >= 3 and stats.oversized >= 2 and stats.bad_utf8 >= 2
    assert stats.connects == 1 and stats.handler_errors == 0
    assert target.of("set_enabled") == []  # "!morph off \ufffd..." is a usage error; the big line was dropped
    assert svc.controller.refused["too-long"] == 1 and svc.controller.refused["characters"] == 1


def test_disconnect_then_reconnect_and_rejoin(server, running):
    svc, target = running(chat_settings(server.port))
    assert server.wait_joined("streamer")
    server.disconnect_all()
    assert wait(lambda: svc.client.stats.joins >= 2, 5)
    assert server.wait_joined("streamer")
    server.say("viewer", "!style snowfall", "streamer")
    assert applied(svc, target, "set_prompt")[0].label == "gentle snowfall at night"
    assert svc.client.stats.connects == 2


def test_twitch_reconnect_notice(server, running):
    svc, _ = running(chat_settings(server.port))
    assert server.wait_joined("streamer")
    server.send_reconnect()
    assert wait(lambda: svc.client.stats.joins >= 2, 5)


def test_reconnect_backoff_grows_to_its_cap():
    with FakeTwitchServer(accept=False) as srv:
        svc = ChatService(chat_settings(srv.port), RecordingTarget())
        svc.start()
        try:
            assert srv.wait_for(lambda: len(srv.connection_times) >= 6, 6)
        finally:
            svc.stop()
        t = srv.connection_times
        gaps = [b - a for a, b in zip(t, t[1:])]
        # Waits of 0.05, 0.1, 0.2, 0.4, 0.4 s, each with jitter in [0.5, 1] of it.
        assert gaps[0] < 0.15 and max(gaps) <= 0.4 + 0.2 and gaps[3] >= 0.18


def test_stop_returns_promptly_even_while_reconnecting():
    with FakeTwitchServer(accept=False) as srv:
        conn = dataclasses.replace(FAST, reconnect_initial_s=5.0, reconnect_max_s=5.0)
        svc = start_chat(chat_settings(srv.port, connection=conn), RecordingTarget())
        assert srv.wait_for(lambda: srv.connection_times, 3)
        t0 = time.monotonic()
        svc.stop()
        assert time.monotonic() - t0 < 1.0
        assert not svc.client._thread.is_alive()


def test_start_chat_does_nothing_when_disabled():
    assert start_chat(ChatSettings(), RecordingTarget()) is None


def test_sends_respect_the_rate_limit(server, running):
    rate = RateSettings(messages=3, mod_messages=6, window_s=0.6, queue=10)
    svc, _ = running(chat_settings(server.port, nick="bot", rate=rate), environ={"TWITCH_OAUTH_TOKEN": "t"})
    assert all(svc.client.say(f"message {i}") for i in range(8))
    assert wait(lambda: len(server.lines_from_clients("PRIVMSG")) == 8, 5)
    times = [t for t, line in server.received if line.startswith("PRIVMSG")]
    for i, t in enumerate(times):  # never more than 3 in any 0.6 s window (0.1 s for loopback jitter)
        assert sum(1 for u in times[i:] if u - t < 0.6 - 0.1) <= 3
    assert times[-1] - times[0] >= 1.2 - 0.05
    assert [svc.client.say("x") for _ in range(12)].count(False) == 2  # the queue holds 10


def test_the_mod_rate_applies_when_the_bot_is_a_moderator(running):
    rate = RateSettings(messages=2, mod_messages=5, window_s=5.0, queue=10)
    with FakeTwitchServer(bot_badges="moderator/1") as srv:
        svc, _ = running(chat_settings(srv.port, nick="bot", rate=rate), environ={"TWITCH_OAUTH_TOKEN": "t"})
        assert wait(lambda: svc.client.is_mod, 2)
        for i in range(8):
            svc.client.say(f"m{i}")
        assert wait(lambda: len(srv.lines_from_clients("PRIVMSG")) == 5, 3)
        time.sleep(0.3)
        assert len(srv.lines_from_clients("PRIVMSG")) == 5


def test_styles_reply_goes_through_the_rate_limited_queue(server, running):
    rate = RateSettings(messages=1, mod_messages=1, window_s=30.0, queue=2)
    svc, _ = running(chat_settings(server.port, nick="bot", rate=rate), environ={"TWITCH_OAUTH_TOKEN": "t"})
    assert server.wait_joined("streamer")
    server.say("boss", "!styles", "streamer", badges="broadcaster/1")
    server.say("boss", "!styles", "streamer", badges="broadcaster/1")
    assert wait(lambda: server.lines_from_clients("PRIVMSG"), 3)
    time.sleep(0.3)
    assert server.lines_from_clients("PRIVMSG") == [
        "PRIVMSG #streamer :Styles (type !style NAME): anime, oil paint, snowfall"]


def test_cap_refused_degrades_to_plain_irc(running):
    with FakeTwitchServer(ack_tags=False) as srv:
        svc, target = running(chat_settings(srv.port))
        assert not svc.client.tags_enabled
        assert srv.wait_joined("streamer")
        srv.say("somemod", "!morph off", "streamer", badges="moderator/1")  # sent without tags: no role
        srv.say("streamer", "!morph off", "streamer")  # the channel's owner is still the broadcaster
        assert applied(svc, target, "set_enabled") == [False]
        assert svc.controller.refused["role"] == 1


def test_a_failing_handler_does_not_stop_the_client(server):
    calls = []

    def boom(_msg):
        calls.append(1)
        raise RuntimeError("bug")

    from morphcam.obs_bridge.chat.client import TwitchChatClient

    client = TwitchChatClient(chat_settings(server.port), on_message=boom)
    client.start()
    try:
        assert client.wait_joined(5) and server.wait_joined("streamer")
        server.say("a", "one", "streamer")
        server.say("a", "two", "streamer")
        assert wait(lambda: len(calls) == 2)
        assert client.stats.handler_errors == 2 and client.stats.connects == 1
    finally:
        client.stop()


@pytest.fixture
def tls_contexts(tmp_path):
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed: it makes the test certificate (apt-get install openssl)")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True, timeout=20)
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, key)
    client_ctx = ssl.create_default_context(cafile=str(cert))
    return server_ctx, client_ctx


def test_tls(tls_contexts, running):
    server_ctx, client_ctx = tls_contexts
    with FakeTwitchServer(ssl_context=server_ctx) as srv:
        svc, target = running(chat_settings(srv.port, tls=True), ssl_context=client_ctx)
        assert srv.wait_joined("streamer")
        srv.say("viewer", "!style anime", "streamer")
        assert applied(svc, target, "set_prompt")[0].label == "anime cel shading"


def test_tls_refuses_an_untrusted_certificate(tls_contexts, caplog):
    server_ctx, _ = tls_contexts
    with FakeTwitchServer(ssl_context=server_ctx) as srv:
        with caplog.at_level(logging.WARNING):
            svc = start_chat(chat_settings(srv.port, tls=True), RecordingTarget())
            try:
                assert wait(lambda: "CERTIFICATE_VERIFY_FAILED" in caplog.text, 5)
                assert not svc.client.joined.is_set()
            finally:
                svc.stop()

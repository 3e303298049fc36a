"""Plain-IRC smoke test of the chat client against a real IRC server, ngircd, on loopback.

ngircd refuses Twitch's tags (CAP NAK), so this checks what plain IRC carries: registration after
the refused CAP, JOIN, channel PRIVMSGs turned into commands (the channel's owner is the
broadcaster, everyone else just "everyone"), and PING/PONG both ways. The test starts its own
ngircd on a free port with its own config file, never the system one on 6667.
ngircd comes from install/dev-deps.sh; without the binary the test is skipped.
"""
from __future__ import annotations

import shutil
import socket
import subprocess
import time

import pytest

from helpers.daemons import wait_until as wait
from helpers.fake_twitch import RecordingTarget
from morphcam.obs_bridge.chat.service import ChatService
from morphcam.obs_bridge.chat.settings import ChatSettings, ConnectionSettings

pytestmark = pytest.mark.timeout(40)

SERVER_PING_S = 5  # ngircd's smallest PingTimeout


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Ngircd:
    """Our own ngircd: its own config file in ``tmp_path``, a free loopback port, no daemonizing."""

    def __init__(self, binary: str, tmp_path) -> None:
        self.binary, self.tmp = binary, tmp_path
        self.port = _free_port()
        self.conf = tmp_path / "ngircd.conf"
        self.conf.write_text(f"""[Global]
Name = irc.morphcam.test
Info = morphcam chat smoke test
AdminInfo1 = morphcam tests
AdminEMail = tests@morphcam.invalid
Listen = 127.0.0.1
Ports = {self.port}
PidFile = {tmp_path / "ngircd.pid"}
MotdPhrase = "morphcam test server"
HelpFile = {tmp_path / "none.txt"}
[Limits]
MaxNickLength = 31
PingTimeout = {SERVER_PING_S}
PongTimeout = 10
MaxConnectionsIP = 0
[Options]
PAM = no
Ident = no
DNS = no
""")
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        log = open(self.tmp / "ngircd.log", "ab")
        self.proc = subprocess.Popen([self.binary, "--nodaemon", "--config", str(self.conf)],
                                     stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    pytest.fail(f"ngircd did not start: {(self.tmp / 'ngircd.log').read_text()[-2000:]}")
                time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self.proc = None


@pytest.fixture
def ngircd(tmp_path):
    binary = shutil.which("ngircd") or next(
        (p for p in ("/usr/sbin/ngircd", "/usr/local/sbin/ngircd") if shutil.which(p)), None)
    if binary is None:
        pytest.skip("ngircd is not installed: run install/dev-deps.sh (apt-get install ngircd)")
    server = Ngircd(binary, tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


class Viewer:
    """A plain IRC user typing in the channel."""

    def __init__(self, port: int, nick: str) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.file = self.sock.makefile("rb")
        self.send(f"NICK {nick}", f"USER {nick} 0 * :{nick}")
        self.expect(" 001 ")

    def send(self, *lines: str) -> None:
        self.sock.sendall("".join(line + "\r\n" for line in lines).encode())

    def expect(self, needle: str) -> str:
        while True:
            line = self.file.readline().decode("utf-8", "replace")
            if not line:
                raise AssertionError(f"connection closed before {needle!r}")
            if line.startswith("PING"):
                self.send("PONG" + line[4:].rstrip())
            if needle in line:
                return line

    def close(self) -> None:
        self.send("QUIT :bye")
        self.sock.close()


def test_plain_irc_against_ngircd(ngircd):
    conn = ConnectionSettings(connect_timeout_s=3.0, ping_interval_s=60.0, pong_timeout_s=3.0,
                              reconnect_initial_s=0.1, reconnect_max_s=0.5)
    settings = ChatSettings(enabled=True, channel="streamer", host="127.0.0.1", port=ngircd.port, tls=False,
                            connection=conn)
    target = RecordingTarget()
    svc = ChatService(settings, target)
    svc.start()
    viewers = []
    try:
        assert svc.client.wait_joined(10), "did not join on ngircd"
        assert not svc.client.tags_enabled  # CAP NAK: degraded to plain IRC
        owner, viewer = Viewer(ngircd.port, "streamer"), Viewer(ngircd.port, "someviewer")
        viewers += [owner, viewer]
        for v in viewers:
            v.send("JOIN #streamer")
            v.expect(" 366 ")
        viewer.send("PRIVMSG #streamer :!morph off")  # refused: no role on plain IRC
        viewer.send("PRIVMSG #streamer :!style snowfall")
        assert wait(lambda: target.of("set_prompt"), 5)
        owner.send("PRIVMSG #streamer :!morph off")  # the channel's owner is the broadcaster
        assert wait(lambda: target.of("set_enabled") == [False], 5)
        assert [c.label for c in target.of("set_prompt")] == ["gentle snowfall at night"]
        assert svc.controller.refused["role"] == 1
        # ngircd PINGs a client idle for PingTimeout seconds; the client answers and stays connected.
        assert wait(lambda: svc.client.stats.pongs_sent >= 1, SERVER_PING_S + 5)
        assert svc.client.stats.connects == 1 and svc.client.stats.malformed == 0
    finally:
        for v in viewers:
            v.close()
        svc.stop()


def test_keepalive_ping_is_answered_by_ngircd(ngircd):
    conn = ConnectionSettings(connect_timeout_s=3.0, ping_interval_s=0.3, pong_timeout_s=1.0,
                              reconnect_initial_s=0.1, reconnect_max_s=0.5)
    settings = ChatSettings(enabled=True, channel="streamer", host="127.0.0.1", port=ngircd.port, tls=False,
                            connection=conn)
    svc = ChatService(settings, RecordingTarget())
    svc.start()
    try:
        assert svc.client.wait_joined(10)
        time.sleep(1.5)  # several keepalive PINGs; a missing PONG would reconnect after 1 s
        assert svc.client.stats.connects == 1
    finally:
        svc.stop()


def test_a_restarted_server_is_rejoined(ngircd):
    conn = ConnectionSettings(connect_timeout_s=3.0, reconnect_initial_s=0.1, reconnect_max_s=0.3)
    settings = ChatSettings(enabled=True, channel="streamer", host="127.0.0.1", port=ngircd.port, tls=False,
                            connection=conn)
    target = RecordingTarget()
    svc = ChatService(settings, target)
    svc.start()
    try:
        assert svc.client.wait_joined(10)
        ngircd.stop()
        assert wait(lambda: not svc.client.joined.is_set(), 5)
        time.sleep(0.5)  # a few refused connects with backoff
        ngircd.start()
        assert wait(lambda: svc.client.stats.joins >= 2, 5)
        viewer = Viewer(ngircd.port, "streamer")
        viewer.send("JOIN #streamer", "PRIVMSG #streamer :!style anime")
        assert wait(lambda: target.of("set_prompt"), 5)
        viewer.close()
    finally:
        svc.stop()

"""A fake Twitch IRC server, in-process on loopback, for tests and benchmarks.

It is a fake because Twitch itself cannot be reached from tests (and must not be flooded from a
benchmark): it speaks the part of Twitch's IRC that the client uses — ``CAP REQ`` for
``twitch.tv/tags`` (acknowledged, or refused like a plain IRC server), ``PASS``/``NICK`` login
with a welcome, ``JOIN`` with ``USERSTATE``/``ROOMSTATE``, ``PING``/``PONG``, tagged ``PRIVMSG``
with badges, and ``RECONNECT`` — and lets a test script chat, send raw bytes (malformed lines,
invalid UTF-8, very long lines), flood, and drop connections. Plain or TLS.
"""
from __future__ import annotations

import itertools
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from morphcam.obs_bridge.chat.protocol import escape_tag_value, parse_line

_ids = itertools.count(1)


@dataclass
class _Client:
    sock: socket.socket
    nick: str = ""
    password: str = ""
    tags: bool = False
    channels: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def send(self, data: bytes) -> None:
        with self.lock:
            self.sock.sendall(data)


class FakeTwitchServer:
    """Usage: ``with FakeTwitchServer() as server: ... server.port ...``."""

    def __init__(self, ack_tags: bool = True, ssl_context: ssl.SSLContext | None = None,
                 bot_badges: str = "", accept: bool = True, answer_pings: bool = True) -> None:
        """``ack_tags``: acknowledge Twitch's capabilities (False: refuse them, as ngircd does).
        ``bot_badges``: the badges in the bot's own USERSTATE, e.g. "moderator/1".
        ``accept``: False closes every new connection at once (to test reconnect backoff).
        ``answer_pings``: False leaves the client's PINGs unanswered, like a dead link."""
        self.ack_tags = ack_tags
        self.bot_badges = bot_badges
        self.accept = accept
        self.answer_pings = answer_pings
        self._ssl = ssl_context
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.05)
        self.port = self._listener.getsockname()[1]
        self._clients: list[_Client] = []
        self._lock = threading.Condition()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.received: list[tuple[float, str]] = []  # (monotonic time, line) from clients
        self.connection_times: list[float] = []  # monotonic time of each accepted connection

    # ---- lifecycle -------------------------------------------------------------------------------
    def start(self) -> "FakeTwitchServer":
        self._spawn(self._accept_loop)
        return self

    def stop(self) -> None:
        self._stop.set()
        self.disconnect_all()
        self._listener.close()
        for t in self._threads:
            t.join(2.0)

    def __enter__(self) -> "FakeTwitchServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ---- what a test does -----------------------------------------------------------------------
    def privmsg_line(self, user: str, text: str, channel: str, badges: str = "", tags: bool = True,
                     extra_tags: dict[str, str] | None = None) -> bytes:
        """A channel message as Twitch would relay it, with tags when ``tags``."""
        line = f":{user}!{user}@{user}.tmi.twitch.tv PRIVMSG #{channel} :{text}"
        if tags:
            names = {b.split("/")[0] for b in badges.split(",") if b}
            values = {
                "badge-info": "", "badges": badges, "color": "#1E90FF", "display-name": user.capitalize(),
                "emotes": "", "first-msg": "0", "flags": "", "id": f"00000000-0000-0000-0000-{next(_ids):012d}",
                "mod": "1" if "moderator" in names else "0", "room-id": "1000",
                "subscriber": "1" if "subscriber" in names else "0", "tmi-sent-ts": str(int(time.time() * 1000)),
                "turbo": "0", "user-id": str(abs(hash(user)) % 10**8), "user-type": "mod" if "moderator" in names else "",
            }
            values.update(extra_tags or {})
            line = "@" + ";".join(f"{k}={escape_tag_value(v)}" for k, v in values.items()) + " " + line
        return line.encode("utf-8") + b"\r\n"

    def say(self, user: str, text: str, channel: str, badges: str = "", extra_tags: dict[str, str] | None = None) -> None:
        """``user`` writes ``text`` in ``channel``; every client that joined it receives it."""
        for c in self._joined(channel):
            self._safe_send(c, self.privmsg_line(user, text, channel, badges, c.tags, extra_tags))

    def send_lines(self, lines: list[bytes], channel: str | None = None) -> None:
        """Raw bytes in one write to every client (that joined ``channel``, when given)."""
        data = b"".join(lines)
        for c in (self._joined(channel) if channel else self._snapshot()):
            self._safe_send(c, data)

    def ping(self, token: str = "tmi.twitch.tv") -> None:
        self.send_lines([f"PING :{token}\r\n".encode()])

    def send_reconnect(self) -> None:
        """Twitch's notice before it restarts a server: the client must reconnect."""
        self.send_lines([b":tmi.twitch.tv RECONNECT\r\n"])

    def disconnect_all(self) -> None:
        for c in self._snapshot():
            try:
                c.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            c.sock.close()
        with self._lock:
            self._clients.clear()

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
        from helpers.daemons import wait_until

        return wait_until(predicate, timeout)

    def wait_joined(self, channel: str, timeout: float = 5.0) -> bool:
        return self.wait_for(lambda: bool(self._joined(channel)), timeout)

    def lines_from_clients(self, command: str) -> list[str]:
        with self._lock:
            lines = [line for _, line in self.received]
        return [line for line in lines if line.split(" ", 1)[0].upper() == command]

    @property
    def client_count(self) -> int:
        with self._lock:
            return len(self._clients)

    # ---- server side ----------------------------------------------------------------------------
    def _spawn(self, fn, *args) -> None:
        t = threading.Thread(target=fn, args=args, daemon=True, name="fake-twitch")
        t.start()
        self._threads.append(t)

    def _snapshot(self) -> list[_Client]:
        with self._lock:
            return list(self._clients)

    def _joined(self, channel: str) -> list[_Client]:
        return [c for c in self._snapshot() if channel.lower() in c.channels]

    def _safe_send(self, c: _Client, data: bytes) -> None:
        try:
            c.send(data)
        except OSError:
            pass

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                sock, _ = self._listener.accept()
            except (socket.timeout, OSError):
                continue
            with self._lock:
                self.connection_times.append(time.monotonic())
            if not self.accept:
                sock.close()
                continue
            self._spawn(self._serve, sock)

    def _serve(self, sock: socket.socket) -> None:
        try:
            if self._ssl is not None:
                sock = self._ssl.wrap_socket(sock, server_side=True)
            sock.settimeout(0.1)
        except (OSError, ssl.SSLError):
            sock.close()
            return
        client = _Client(sock)
        with self._lock:
            self._clients.append(client)
        buf = b""
        while not self._stop.is_set():
            try:
                data = sock.recv(4096)
            except socket.timeout:
                continue
            except OSError:
                break
            if not data:
                break
            buf += data
            while b"\n" in buf:
                raw, buf = buf.split(b"\n", 1)
                line = raw.rstrip(b"\r").decode("utf-8", "replace")
                with self._lock:
                    self.received.append((time.monotonic(), line))
                try:
                    self._reply(client, line)
                except OSError:
                    break
        with self._lock:
            if client in self._clients:
                self._clients.remove(client)
        sock.close()

    def _reply(self, c: _Client, line: str) -> None:
        msg = parse_line(line)
        if msg is None:
            return
        host = ":tmi.twitch.tv"
        if msg.command == "CAP" and msg.params[:1] == ("REQ",):
            verdict = "ACK" if self.ack_tags else "NAK"
            c.tags = self.ack_tags and "twitch.tv/tags" in msg.trailing.split()
            c.send(f"{host} CAP * {verdict} :{msg.trailing}\r\n".encode())
        elif msg.command == "PASS":
            c.password = msg.trailing
        elif msg.command == "NICK":
            c.nick = msg.trailing.lower()
            welcome = [f"{host} {n:03d} {c.nick} :Welcome, GLHF!" for n in (1, 2, 3, 4)]
            welcome += [f"{host} 375 {c.nick} :-", f"{host} 372 {c.nick} :You are in a maze of twisty passages.",
                        f"{host} 376 {c.nick} :>"]
            c.send(("\r\n".join(welcome) + "\r\n").encode())
        elif msg.command == "JOIN":
            channel = msg.trailing.lstrip("#").lower()
            me = f":{c.nick}!{c.nick}@{c.nick}.tmi.twitch.tv"
            lines = [f"{me} JOIN #{channel}", f":{c.nick}.tmi.twitch.tv 353 {c.nick} = #{channel} :{c.nick}",
                     f":{c.nick}.tmi.twitch.tv 366 {c.nick} #{channel} :End of /NAMES list"]
            if c.tags:
                lines.append(f"@badge-info=;badges={self.bot_badges};color=;display-name={c.nick};emote-sets=0;"
                             f"mod={int('moderator' in self.bot_badges)};subscriber=0;user-type= "
                             f"{host} USERSTATE #{channel}")
                lines.append(f"@emote-only=0;followers-only=-1;r9k=0;room-id=1000;slow=0;subs-only=0 "
                             f"{host} ROOMSTATE #{channel}")
            c.channels.add(channel)
            c.send(("\r\n".join(lines) + "\r\n").encode())
        elif msg.command == "PING" and self.answer_pings:
            c.send(f"{host} PONG tmi.twitch.tv :{msg.trailing}\r\n".encode())


class RecordingTarget:
    """A control target that records what chat asked for (thread-safe), optionally slowly."""

    def __init__(self, styles: list | None = None, delay_s: float = 0.0, fail: bool = False) -> None:
        from morphcam.daemon.pipeline import StyleInfo

        self._styles = styles if styles is not None else [
            StyleInfo("anime", "anime cel shading", "flat colours, ink lines"),
            StyleInfo("oil paint", "thick oil paint strokes"),
            StyleInfo("snowfall", "gentle snowfall at night"),
        ]
        self.delay_s = delay_s
        self.fail = fail
        self.calls: list[tuple[float, str, object]] = []  # (monotonic time, method, argument)
        self._lock = threading.Lock()
        self.origins: list[str] = []  # who asked, per call, as the daemon's activity log would show

    def _record(self, method: str, arg: object) -> None:
        if self.delay_s:
            time.sleep(self.delay_s)
        if self.fail:
            raise ConnectionError("the daemon is down")
        with self._lock:
            self.calls.append((time.monotonic(), method, arg))

    def styles(self) -> list:
        if self.fail:
            raise ConnectionError("the daemon is down")
        return list(self._styles)

    def set_prompt(self, change, origin: str = "") -> None:
        self.origins.append(origin)
        self._record("set_prompt", change)

    def set_enabled(self, enabled: bool, origin: str = "") -> None:
        self.origins.append(origin)
        self._record("set_enabled", enabled)

    def set_strength(self, strength: float, origin: str = "") -> None:
        self.origins.append(origin)
        self._record("set_strength", strength)

    def of(self, method: str) -> list:
        with self._lock:
            return [arg for _, m, arg in self.calls if m == method]

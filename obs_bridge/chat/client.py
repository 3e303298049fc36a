"""A Twitch IRC client in its own thread: TLS or plain, tags, PING/PONG, reconnect, rate limits.

Written on the standard library: Twitch's IRC is a few commands, and the client must own its
threading and failure handling (never block the relay, never raise into the bridge).

The thread connects, asks for Twitch's tags (``CAP REQ``; a server that refuses them, such as a
plain IRC server, still works without roles), logs in with an OAuth token or anonymously
(``justinfan<digits>``, read-only), joins the channel and hands each channel message to
``on_message``. When the connection drops it reconnects with exponential backoff and jitter.
``say`` queues a message; the thread sends it when Twitch's rate limit allows.
"""
from __future__ import annotations

import collections
import logging
import random
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from typing import Callable, Mapping

from .protocol import ChatMessage, IrcMessage, chat_message, format_line, parse_line, roles_from_tags
from .settings import ChatSettings, anonymous_nick

log = logging.getLogger(__name__)

_POLL_S = 0.05  # longest the thread sleeps in recv before it checks the queue, keepalive and stop


class ChatConnectionError(Exception):
    """The connection ended or could not be made; the client reconnects after a backoff."""


@dataclass
class ClientStats:
    """Counters, written by the client's thread only."""

    connects: int = 0  # successful TCP (+TLS) connections
    joins: int = 0  # times the channel was joined
    lines: int = 0  # lines received
    malformed: int = 0  # lines that were not IRC, skipped
    oversized: int = 0  # lines longer than max_line_bytes, dropped
    bad_utf8: int = 0  # lines that were not valid UTF-8 (decoded with replacement characters)
    messages: int = 0  # channel messages handed on
    handler_errors: int = 0  # exceptions raised by on_message or on_tick, logged and swallowed
    pongs_sent: int = 0  # PINGs from the server answered
    sent: int = 0  # chat messages sent
    send_dropped: int = 0  # chat messages refused because the queue was full or the login is anonymous


class SlidingWindow:
    """At most ``limit`` events in any ``window_s`` seconds."""

    def __init__(self, limit: int, window_s: float) -> None:
        self.limit = limit
        self.window_s = window_s
        self._times: collections.deque[float] = collections.deque()

    def try_acquire(self, now: float) -> bool:
        while self._times and now - self._times[0] >= self.window_s:
            self._times.popleft()
        if len(self._times) >= self.limit:
            return False
        self._times.append(now)
        return True


class TwitchChatClient:
    """Reads one Twitch channel in a background thread. ``start``, ``stop`` and ``say`` are
    thread-safe and return at once (``stop`` waits for the thread at most ``timeout``)."""

    def __init__(
        self,
        settings: ChatSettings,
        on_message: Callable[[ChatMessage], None],
        on_tick: Callable[[], None] | None = None,
        ssl_context: ssl.SSLContext | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        """``on_message`` and ``on_tick`` run on the client's thread and must not block; exceptions
        they raise are logged. ``ssl_context`` overrides the default (system CAs) for TLS."""
        self.settings = settings
        self._on_message = on_message
        self._on_tick = on_tick
        self._ssl_context = ssl_context
        self._token = settings.token(environ)
        if settings.nick and not self._token:
            log.warning("chat: chat.nick is %r but $%s is empty, so chat is read anonymously and the bot "
                        "cannot reply; export %s=<OAuth token with chat:read and chat:edit scopes>",
                        settings.nick, settings.token_env, settings.token_env)
        self.anonymous = not (settings.nick and self._token)
        self.nick = anonymous_nick() if self.anonymous else settings.nick.lower()
        self.stats = ClientStats()
        self.tags_enabled = False  # the server acknowledged Twitch's tags on this connection
        self.is_mod = False  # the bot is a moderator or the broadcaster: the higher rate limit applies
        self.joined = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._outbox: collections.deque[str] = collections.deque()
        self._sock: socket.socket | None = None
        self._registered = False  # the server welcomed us on this connection
        self._joined_once = False  # this connection reached the channel: the backoff starts over
        self._limiter = SlidingWindow(settings.rate.messages, settings.rate.window_s)
        self._handlers: dict[str, Callable[[IrcMessage], None]] = {
            "PING": self._on_ping,
            "CAP": self._on_cap,
            "001": self._on_welcome,
            "421": self._on_unknown_command,
            "432": self._on_bad_nick,
            "433": self._on_bad_nick,
            "JOIN": self._on_join,
            "PRIVMSG": self._on_privmsg,
            "USERSTATE": self._on_userstate,
            "NOTICE": self._on_notice,
            "RECONNECT": self._on_reconnect,
            "ERROR": self._on_error,
        }

    # ---- public, any thread ---------------------------------------------------------------------
    def start(self) -> None:
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="morphcam-chat-irc", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        sock = self._sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)  # wakes a blocked recv at once
            except OSError:
                pass
        thread = self._thread
        if thread is not None:
            thread.join(timeout)

    def say(self, text: str) -> bool:
        """Queue a message to the channel; False when it cannot be sent (anonymous, queue full)."""
        text = " ".join(text.split())
        with self._lock:
            if self.anonymous or not text or len(self._outbox) >= self.settings.rate.queue:
                self.stats.send_dropped += 1
                return False
            self._outbox.append(text[:500])
        return True

    def wait_joined(self, timeout: float) -> bool:
        return self.joined.wait(timeout)

    # ---- the thread -----------------------------------------------------------------------------
    def _run(self) -> None:
        conn = self.settings.connection
        backoff = conn.reconnect_initial_s
        while not self._stop.is_set():
            try:
                self._session()
            except (OSError, ChatConnectionError, ssl.SSLError) as exc:
                if not self._stop.is_set():
                    log.warning("chat: connection to %s:%d lost: %s", self.settings.host, self.settings.port, exc)
            except Exception:  # a bug must not end chat for the rest of the stream
                log.exception("chat: unexpected error in the IRC client")
            finally:
                self._close()
            if self._stop.is_set():
                break
            if self._joined_once:
                backoff = conn.reconnect_initial_s  # it worked: start the backoff over
            wait = backoff * random.uniform(0.5, 1.0)
            log.info("chat: reconnecting in %.1f s", wait)
            self._stop.wait(wait)
            backoff = min(backoff * 2, conn.reconnect_max_s)

    def _session(self) -> None:
        s, conn = self.settings, self.settings.connection
        self._joined_once = False
        self.tags_enabled = False
        self.is_mod = False
        self._registered = False
        raw = socket.create_connection((s.host, s.port), timeout=conn.connect_timeout_s)
        try:
            sock = raw
            if s.tls:
                ctx = self._ssl_context or ssl.create_default_context()
                sock = ctx.wrap_socket(raw, server_hostname=s.host)
        except BaseException:
            raw.close()
            raise
        self._sock = sock
        self.stats.connects += 1
        if self._stop.is_set():
            return
        sock.settimeout(_POLL_S)
        self._send_line("CAP", "REQ", "twitch.tv/tags twitch.tv/commands")
        if self._token:
            self._send_line("PASS", self._token, log_as="PASS ***")
        self._send_line("NICK", self.nick)
        self._send_line("USER", self.nick, "0", "*", self.nick)  # plain IRC needs it; Twitch ignores it
        started = last_rx = time.monotonic()
        ping_sent: float | None = None
        buf = bytearray()
        discarding = False
        while not self._stop.is_set():
            try:
                data = sock.recv(65536)
            except (socket.timeout, ssl.SSLWantReadError):
                data = None
            now = time.monotonic()
            if data == b"":
                raise ChatConnectionError("the server closed the connection")
            if data:
                last_rx, ping_sent = now, None
                buf += data
                discarding = self._drain_lines(buf, discarding)
            if not self._registered and now - started > conn.connect_timeout_s:
                raise ChatConnectionError(f"no welcome from the server within {conn.connect_timeout_s:g} s")
            if ping_sent is None and now - last_rx > conn.ping_interval_s:
                self._send_line("PING", "keepalive")
                ping_sent = now
            elif ping_sent is not None and now - ping_sent > conn.pong_timeout_s:
                raise ChatConnectionError(f"no answer to PING within {conn.pong_timeout_s:g} s")
            self._flush_outbox(now)
            self._tick()

    def _drain_lines(self, buf: bytearray, discarding: bool) -> bool:
        """Handle every complete line in ``buf``; returns whether the tail is an oversized line."""
        limit = self.settings.connection.max_line_bytes
        start = 0
        while True:
            end = buf.find(b"\n", start)
            if end < 0:
                break
            line = bytes(buf[start:end])
            start = end + 1
            if discarding:  # the tail of an oversized line
                discarding = False
                continue
            if len(line) > limit:
                self.stats.oversized += 1
                continue
            self._handle_raw(line)
        del buf[:start]
        if len(buf) > limit:
            self.stats.oversized += 1
            log.debug("chat: dropping a line longer than %d bytes", limit)
            buf.clear()
            discarding = True
        return discarding

    def _handle_raw(self, raw: bytes) -> None:
        raw = raw.rstrip(b"\r")
        if not raw:
            return
        self.stats.lines += 1
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            self.stats.bad_utf8 += 1
            line = raw.decode("utf-8", errors="replace")
        msg = parse_line(line)
        if msg is None:
            self.stats.malformed += 1
            log.debug("chat: skipping a line that is not IRC: %.80r", line)
            return
        handler = self._handlers.get(msg.command)
        if handler is not None:
            handler(msg)

    # ---- IRC commands ---------------------------------------------------------------------------
    def _on_ping(self, msg: IrcMessage) -> None:
        self._send_line("PONG", msg.trailing or "tmi.twitch.tv")
        self.stats.pongs_sent += 1

    def _on_cap(self, msg: IrcMessage) -> None:
        if len(msg.params) < 2:
            return
        sub = msg.params[1].upper()
        if sub == "ACK":
            self.tags_enabled = "twitch.tv/tags" in msg.trailing.split()
            self._send_line("CAP", "END")
        elif sub == "NAK":
            self._degrade("the server refused Twitch's tags (CAP NAK)")
            self._send_line("CAP", "END")

    def _on_unknown_command(self, msg: IrcMessage) -> None:
        if len(msg.params) >= 2 and msg.params[1].upper() == "CAP":
            self._degrade("the server does not know CAP")

    def _degrade(self, why: str) -> None:
        self.tags_enabled = False
        log.info("chat: %s; reading plain IRC: roles are 'everyone' plus the channel's owner", why)

    def _on_welcome(self, msg: IrcMessage) -> None:
        self._registered = True
        if msg.params:
            self.nick = msg.params[0].lower()
        self._send_line("JOIN", "#" + self.settings.channel)

    def _on_bad_nick(self, msg: IrcMessage) -> None:
        if self.anonymous and not self._registered:
            self.nick = anonymous_nick()
            self._send_line("NICK", self.nick)
        else:
            raise ChatConnectionError(f"the server refused the nick {self.nick!r}: {msg.trailing}; "
                                      "set chat.nick to the bot's Twitch login")

    def _on_join(self, msg: IrcMessage) -> None:
        if msg.nick.lower() == self.nick and msg.params and msg.params[0].lower() == "#" + self.settings.channel:
            self._joined_once = True
            self.stats.joins += 1
            self.joined.set()
            log.info("chat: joined #%s as %s (%s, tags %s)", self.settings.channel, self.nick,
                     "read-only" if self.anonymous else "can reply", "on" if self.tags_enabled else "off")

    def _on_privmsg(self, msg: IrcMessage) -> None:
        cm = chat_message(msg)
        if cm is None or cm.channel != self.settings.channel:
            return
        self.stats.messages += 1
        try:
            self._on_message(cm)
        except Exception:
            self.stats.handler_errors += 1
            log.exception("chat: the message handler failed on a message from %s", cm.user)

    def _on_userstate(self, msg: IrcMessage) -> None:
        roles = roles_from_tags(msg.tags, self.nick, self.settings.channel)
        self.is_mod = bool(roles & {"moderator", "broadcaster"})
        rate = self.settings.rate
        self._limiter.limit = rate.mod_messages if self.is_mod else rate.messages

    def _on_notice(self, msg: IrcMessage) -> None:
        text = msg.trailing
        if "authentication failed" in text.lower() or "improperly formatted auth" in text.lower():
            raise ChatConnectionError(f"Twitch refused the login ({text}); check ${self.settings.token_env} "
                                      "(a user access token of chat.nick with chat:read and chat:edit)")
        log.info("chat: notice from the server: %s", text)

    def _on_reconnect(self, msg: IrcMessage) -> None:
        raise ChatConnectionError("the server asked us to reconnect")

    def _on_error(self, msg: IrcMessage) -> None:
        raise ChatConnectionError(f"the server closed the link: {msg.trailing}")

    # ---- output ---------------------------------------------------------------------------------
    def _flush_outbox(self, now: float) -> None:
        if not self.joined.is_set():
            return
        while True:
            with self._lock:
                if not self._outbox or not self._limiter.try_acquire(now):
                    return
                text = self._outbox.popleft()
            self._send_line("PRIVMSG", "#" + self.settings.channel, text)
            self.stats.sent += 1

    def _send_line(self, command: str, *params: str, log_as: str | None = None) -> None:
        sock = self._sock
        if sock is None:
            return
        line = format_line(command, *params)
        log.debug("chat: > %s", log_as or line)
        sock.settimeout(self.settings.connection.connect_timeout_s)  # a full send buffer must not fail the write
        try:
            sock.sendall(line.encode("utf-8") + b"\r\n")
        finally:
            sock.settimeout(_POLL_S)

    def _tick(self) -> None:
        if self._on_tick is None:
            return
        try:
            self._on_tick()
        except Exception:
            self.stats.handler_errors += 1
            log.exception("chat: the tick handler failed")

    def _close(self) -> None:
        self.joined.clear()
        sock, self._sock = self._sock, None
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass

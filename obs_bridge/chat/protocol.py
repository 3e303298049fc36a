"""IRC lines with IRCv3 tags, as Twitch speaks them, and the chat message they carry.

Parsing never raises: a line that is not IRC gives ``None`` and the caller skips it. Formatting
refuses what would break the line framing (CR, LF, NUL), so chat text can never inject a command.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

_TAG_UNESCAPES = {":": ";", "s": " ", "\\": "\\", "r": "\r", "n": "\n"}
_TAG_ESCAPES = {";": "\\:", " ": "\\s", "\\": "\\\\", "\r": "\\r", "\n": "\\n"}
# Twitch's badges that grant a role; founders are subscribers from the start.
_BADGE_ROLES = {
    "broadcaster": "broadcaster",
    "moderator": "moderator",
    "vip": "vip",
    "subscriber": "subscriber",
    "founder": "subscriber",
}


@dataclass(frozen=True)
class IrcMessage:
    """One parsed line: ``@tags :prefix COMMAND params... :trailing``."""

    command: str  # upper-case, e.g. "PRIVMSG" or "001"
    params: tuple[str, ...] = ()
    prefix: str = ""  # "nick!user@host" or a server name; empty when absent
    tags: Mapping[str, str] = field(default_factory=dict)

    @property
    def nick(self) -> str:
        return self.prefix.split("!", 1)[0]

    @property
    def trailing(self) -> str:
        return self.params[-1] if self.params else ""


@dataclass(frozen=True)
class ChatMessage:
    """A message in the channel, with the sender's roles worked out from its tags."""

    channel: str  # without '#'
    user: str  # login, lower-case
    text: str
    roles: frozenset[str]  # always contains "everyone"
    display_name: str = ""
    tags: Mapping[str, str] = field(default_factory=dict)


def unescape_tag_value(value: str) -> str:
    out = []
    i = 0
    while i < len(value):
        ch = value[i]
        if ch == "\\":
            i += 1
            if i < len(value):  # a lone trailing backslash is dropped, as IRCv3 says
                out.append(_TAG_UNESCAPES.get(value[i], value[i]))
        else:
            out.append(ch)
        i += 1
    return "".join(out)


def escape_tag_value(value: str) -> str:
    return "".join(_TAG_ESCAPES.get(ch, ch) for ch in value)


def parse_line(line: str) -> IrcMessage | None:
    """Parse one line (without CR LF); ``None`` when it is not a well-formed IRC line."""
    rest = line.strip("\r\n")
    tags: dict[str, str] = {}
    if rest.startswith("@"):
        raw_tags, _, rest = rest[1:].partition(" ")
        for item in raw_tags.split(";"):
            if item:
                key, _, value = item.partition("=")
                tags[key] = unescape_tag_value(value)
        rest = rest.lstrip(" ")
    prefix = ""
    if rest.startswith(":"):
        prefix, _, rest = rest[1:].partition(" ")
        rest = rest.lstrip(" ")
    trailing = None
    if " :" in rest:
        rest, _, trailing = rest.partition(" :")
    elif rest.startswith(":"):
        return None
    words = rest.split()
    if not words:
        return None
    command = words[0].upper()
    if not (command.isalpha() or (command.isdigit() and len(command) == 3)) or not command.isascii():
        return None
    params = words[1:]
    if trailing is not None:
        params.append(trailing)
    return IrcMessage(command=command, params=tuple(params), prefix=prefix, tags=tags)


def format_line(command: str, *params: str) -> str:
    """One IRC line without CR LF; the last parameter may contain spaces."""
    for p in (command, *params):
        if any(c in p for c in "\r\n\0"):
            raise ValueError("IRC parameters must not contain CR, LF or NUL")
    parts = [command]
    for i, p in enumerate(params):
        last = i == len(params) - 1
        if last and (not p or " " in p or p.startswith(":")):
            parts.append(":" + p)
        elif " " in p or not p or p.startswith(":"):
            raise ValueError(f"only the last IRC parameter may be empty or contain spaces: {p!r}")
        else:
            parts.append(p)
    return " ".join(parts)


def roles_from_tags(tags: Mapping[str, str], user: str, channel: str) -> frozenset[str]:
    """Roles from Twitch's ``badges`` and ``mod`` tags; the channel's owner is the broadcaster.

    Without tags (plain IRC) everyone but the channel's owner is just "everyone".
    """
    roles = {"everyone"}
    for badge in tags.get("badges", "").split(","):
        role = _BADGE_ROLES.get(badge.split("/", 1)[0])
        if role:
            roles.add(role)
    if tags.get("mod") == "1":
        roles.add("moderator")
    if tags.get("subscriber") == "1":
        roles.add("subscriber")
    if tags.get("vip") == "1":
        roles.add("vip")
    if user and user == channel:
        roles.add("broadcaster")
    return frozenset(roles)


def chat_message(msg: IrcMessage) -> ChatMessage | None:
    """The channel message a PRIVMSG carries; ``None`` for anything else, CTCP included."""
    if msg.command != "PRIVMSG" or len(msg.params) < 2 or not msg.params[0].startswith("#"):
        return None
    text = msg.params[-1]
    if text.startswith("\x01"):  # CTCP, such as /me: not a command
        return None
    user = (msg.tags.get("login") or msg.nick).lower()
    if not user:
        return None
    channel = msg.params[0][1:].lower()
    return ChatMessage(
        channel=channel,
        user=user,
        text=text,
        roles=roles_from_tags(msg.tags, user, channel),
        display_name=msg.tags.get("display-name") or msg.nick,
        tags=msg.tags,
    )

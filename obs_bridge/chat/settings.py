"""Settings of the Twitch chat control: the ``[chat]`` section of the TOML config.

Frozen dataclasses, one per sub-section, with tuples rather than lists. ``ChatSettings.from_dict``
builds them from parsed TOML and rejects unknown keys by their dotted name; the product-wide
loader may use it or construct the dataclasses itself (lists are turned into tuples either way).
"""
from __future__ import annotations

import dataclasses
import os
import random
import re
import typing
from dataclasses import dataclass
from typing import Any, Mapping

from morphcam.daemon.pipeline import INTERPOLATIONS, PROMPT_MODES

ROLES = ("broadcaster", "moderator", "vip", "subscriber", "everyone")
COMMAND_NAMES = ("style", "styles", "morph", "strength")

_PRIVILEGED = ("broadcaster", "moderator")
_LOGIN = re.compile(r"[a-z0-9_]{1,25}")  # Twitch logins: channel and bot names


def _tuple_field(name: str, obj: Any) -> None:
    """Freeze a list given by a TOML parser into a tuple."""
    value = getattr(obj, name)
    if isinstance(value, list):
        object.__setattr__(obj, name, tuple(value))


def _check_roles(where: str, roles: tuple[str, ...]) -> None:
    for role in roles:
        if role not in ROLES:
            raise ValueError(f"{where}: unknown role {role!r}; use some of {', '.join(ROLES)}")


@dataclass(frozen=True)
class CommandPolicy:
    """Who may run one chat command, and how often."""

    roles: tuple[str, ...] = ("everyone",)
    """Roles allowed to run it (from the user's badges)."""
    user_cooldown_s: float = 30.0
    """One user waits this long between two accepted uses."""
    global_cooldown_s: float = 5.0
    """Everyone waits this long after any accepted use."""
    enabled: bool = True
    """False: the command is ignored."""

    def __post_init__(self) -> None:
        _tuple_field("roles", self)
        _check_roles("chat.commands.*.roles", self.roles)
        if self.user_cooldown_s < 0 or self.global_cooldown_s < 0:
            raise ValueError("chat.commands.*: cooldowns must be >= 0 seconds")


@dataclass(frozen=True)
class CommandsSettings:
    """One policy per command; the command words themselves follow ``ChatSettings.prefix``."""

    style: CommandPolicy = CommandPolicy()
    """!style NAME_OR_PROMPT: switch the style."""
    styles: CommandPolicy = CommandPolicy(user_cooldown_s=60.0, global_cooldown_s=30.0)
    """!styles: list them in chat."""
    morph: CommandPolicy = CommandPolicy(roles=_PRIVILEGED, user_cooldown_s=0.0, global_cooldown_s=2.0)
    """!morph on|off."""
    strength: CommandPolicy = CommandPolicy(roles=_PRIVILEGED + ("vip",), user_cooldown_s=10.0, global_cooldown_s=5.0)
    """!strength N."""
    cooldown_exempt_roles: tuple[str, ...] = ("broadcaster", "moderator")
    """Roles that skip every cooldown."""

    def __post_init__(self) -> None:
        _tuple_field("cooldown_exempt_roles", self)
        _check_roles("chat.commands.cooldown_exempt_roles", self.cooldown_exempt_roles)

    def policy(self, command: str) -> CommandPolicy:
        return getattr(self, command)


@dataclass(frozen=True)
class PromptSettings:
    """What a ``!style`` may ask for, and how the switch is made."""

    free_roles: tuple[str, ...] = ("broadcaster", "moderator", "vip")
    """May type any prompt; others pick a listed style."""
    max_chars: int = 120
    """Longest free-form prompt, in characters."""
    allowed_punctuation: str = " ,.'-&!?()"
    """Besides letters and digits (any script), the only characters allowed."""
    mode: str = "recache"
    """How the daemon switches: one of cut, recache, transition."""
    transition_frames: int = 0
    """Frames of a "transition" switch (mode = "transition" only)."""
    interpolation: str = "slerp"
    """Lerp or slerp, for "transition"."""

    def __post_init__(self) -> None:
        _tuple_field("free_roles", self)
        _check_roles("chat.prompts.free_roles", self.free_roles)
        if self.max_chars < 1:
            raise ValueError("chat.prompts.max_chars must be >= 1")
        if self.mode not in PROMPT_MODES:
            raise ValueError(f"chat.prompts.mode must be one of {PROMPT_MODES}, got {self.mode!r}")
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"chat.prompts.interpolation must be one of {INTERPOLATIONS}")
        if self.mode == "transition" and self.transition_frames < 1:
            raise ValueError("chat.prompts.mode = 'transition' needs chat.prompts.transition_frames >= 1")


@dataclass(frozen=True)
class BlocklistSettings:
    """Words no prompt may contain, and users whose commands are ignored."""

    words: tuple[str, ...] = ()
    """Case-insensitive; matched as whole words or phrases in prompts and style names."""
    users: tuple[str, ...] = ()
    """Twitch logins (case-insensitive) whose commands are ignored."""

    def __post_init__(self) -> None:
        _tuple_field("words", self)
        _tuple_field("users", self)


@dataclass(frozen=True)
class StrengthSettings:
    """Range accepted by ``!strength N``."""

    min: float = 0.0
    """Smallest value chat may set."""
    max: float = 1.0
    """Largest value chat may set."""

    def __post_init__(self) -> None:
        if not self.min <= self.max:
            raise ValueError("chat.strength: min must be <= max")


@dataclass(frozen=True)
class VoteSettings:
    """Vote mode: ``!style`` casts a vote; the most-voted style wins every ``interval_s``."""

    enabled: bool = False
    """False: every accepted !style applies at once."""
    interval_s: float = 30.0
    """Length of one voting round."""
    min_votes: int = 1
    """A round with fewer votes for its winner changes nothing."""
    bypass_roles: tuple[str, ...] = ("broadcaster",)
    """Their !style applies at once, without a vote."""
    announce: bool = True
    """Say the winner in chat (needs a token)."""

    def __post_init__(self) -> None:
        _tuple_field("bypass_roles", self)
        _check_roles("chat.vote.bypass_roles", self.bypass_roles)
        if self.interval_s <= 0:
            raise ValueError("chat.vote.interval_s must be > 0")
        if self.min_votes < 1:
            raise ValueError("chat.vote.min_votes must be >= 1")


@dataclass(frozen=True)
class RateSettings:
    """Twitch's limits on what a bot sends; going over gets it ignored for about 30 minutes."""

    messages: int = 20
    """Messages per window as a normal user."""
    mod_messages: int = 100
    """Messages per window when the bot is a moderator or the broadcaster."""
    window_s: float = 30.0
    """The sliding window."""
    queue: int = 10
    """Messages waiting to be sent; newer ones are dropped when full."""

    def __post_init__(self) -> None:
        if self.messages < 1 or self.mod_messages < 1 or self.window_s <= 0 or self.queue < 1:
            raise ValueError("chat.rate: messages, mod_messages and queue must be >= 1, window_s > 0")


@dataclass(frozen=True)
class ConnectionSettings:
    """Timeouts, keepalive and reconnect backoff."""

    connect_timeout_s: float = 10.0
    """TCP + TLS connect, and waiting for the server's welcome."""
    ping_interval_s: float = 60.0
    """Send a PING after this long without hearing from the server."""
    pong_timeout_s: float = 10.0
    """Reconnect when our PING gets no answer within this long."""
    reconnect_initial_s: float = 1.0
    """First wait before reconnecting; doubles on each failure."""
    reconnect_max_s: float = 60.0
    """Longest wait between reconnects."""
    max_line_bytes: int = 16384
    """Longer lines from the server are dropped (Twitch's tags stay far below)."""

    def __post_init__(self) -> None:
        if min(self.connect_timeout_s, self.ping_interval_s, self.pong_timeout_s, self.reconnect_initial_s) <= 0:
            raise ValueError("chat.connection: timeouts, ping_interval_s and reconnect_initial_s must be > 0")
        if self.reconnect_max_s < self.reconnect_initial_s:
            raise ValueError("chat.connection.reconnect_max_s must be >= reconnect_initial_s")
        if self.max_line_bytes < 512:
            raise ValueError("chat.connection.max_line_bytes must be >= 512")


@dataclass(frozen=True)
class ChatSettings:
    """The ``[chat]`` section: Twitch chat commands that change the style."""

    enabled: bool = False
    """Connect to chat at all."""
    channel: str = ""
    """Twitch channel to read, without '#', e.g. your login."""
    host: str = "irc.chat.twitch.tv"
    """IRC server."""
    port: int = 6697
    """6697 with TLS, 6667 without."""
    tls: bool = True
    """Encrypt the connection (keep on for Twitch)."""
    nick: str = ""
    """Bot login; empty: anonymous, read-only (justinfan<digits>), no replies."""
    token_env: str = "TWITCH_OAUTH_TOKEN"
    """Environment variable holding the bot's OAuth token (never the file)."""
    prefix: str = "!"
    """Commands start with this, e.g. "!style"."""
    reply: bool = True
    """Answer !styles and announce vote winners (needs nick and token)."""
    commands: CommandsSettings = CommandsSettings()
    """[chat.commands.*]: roles and cooldowns per command."""
    prompts: PromptSettings = PromptSettings()
    """[chat.prompts]: free-form prompts and limits."""
    blocklist: BlocklistSettings = BlocklistSettings()
    """[chat.blocklist]."""
    strength: StrengthSettings = StrengthSettings()
    """[chat.strength]."""
    vote: VoteSettings = VoteSettings()
    """[chat.vote]."""
    rate: RateSettings = RateSettings()
    """[chat.rate]: what the bot may send."""
    connection: ConnectionSettings = ConnectionSettings()
    """[chat.connection]."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "channel", self.channel.strip().lstrip("#").lower())
        object.__setattr__(self, "nick", self.nick.strip().lower())
        if self.enabled and not self.channel:
            raise ValueError("chat.channel is empty: set it to the Twitch channel to read, e.g. your login")
        for key, value in (("channel", self.channel), ("nick", self.nick)):
            if value and not _LOGIN.fullmatch(value):
                raise ValueError(f"chat.{key} = {value!r} is not a Twitch login (letters, digits and _, at most 25)")
        if not 1 <= self.port <= 65535:
            raise ValueError(f"chat.port must be 1..65535, got {self.port}")
        if not self.prefix or any(c.isspace() for c in self.prefix):
            raise ValueError("chat.prefix must be non-empty and without spaces, e.g. '!'")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ChatSettings":
        """Build from a parsed ``[chat]`` table; unknown keys raise ``ValueError`` naming them."""
        return _from_dict(cls, data, "chat")

    def token(self, environ: Mapping[str, str] | None = None) -> str | None:
        """The OAuth token from ``token_env`` as ``oauth:...``, or None when unset or empty."""
        env = os.environ if environ is None else environ
        raw = env.get(self.token_env, "").strip() if self.token_env else ""
        if not raw:
            return None
        return raw if raw.startswith("oauth:") else f"oauth:{raw}"


def anonymous_nick(rng: random.Random | None = None) -> str:
    """Twitch's read-only login: ``justinfan`` and digits, no token needed."""
    return f"justinfan{(rng or random).randint(10000, 99999)}"


def _from_dict(cls: type, data: Mapping[str, Any], where: str) -> Any:
    if not isinstance(data, Mapping):
        raise ValueError(f"{where} must be a table, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"unknown key {where}.{unknown[0]}; known keys: {', '.join(sorted(names))}")
    kwargs = {}
    for key, value in data.items():
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            kwargs[key] = _from_dict(hint, value, f"{where}.{key}")
        else:
            kwargs[key] = _check_type(hint, value, f"{where}.{key}")
    return cls(**kwargs)


def _check_type(hint: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise ValueError(f"{where} must be a list of strings")
        return tuple(value)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(hint, type) and not (isinstance(value, hint) and not (hint is int and isinstance(value, bool))):
        raise ValueError(f"{where} must be {hint.__name__}, got {value!r}")
    return value


__all__ = [
    "ROLES",
    "COMMAND_NAMES",
    "ChatSettings",
    "CommandPolicy",
    "CommandsSettings",
    "PromptSettings",
    "BlocklistSettings",
    "StrengthSettings",
    "VoteSettings",
    "RateSettings",
    "ConnectionSettings",
    "anonymous_nick",
]

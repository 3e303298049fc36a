"""Chat commands: a table from command word to handler, gated by roles, cooldowns and limits.

``ChatController.handle`` is called with every channel message (from the IRC thread, or any
thread: it takes a lock) and returns at once; what it accepts reaches the control target through
``TargetDispatcher``'s thread. Every accepted command is logged at INFO with the user, the command
and the resulting prompt; refusals are counted and logged at DEBUG, so a flood cannot fill the log.
"""
from __future__ import annotations

import logging
import math
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Callable

from morphcam.daemon.pipeline import PromptChange, WeightedPrompt

from .policy import Cooldowns, PromptRules, Rejected, find_style
from .protocol import ChatMessage
from .settings import ChatSettings
from .target import ControlTarget, TargetDispatcher
from .vote import VoteRound

log = logging.getLogger(__name__)

TWITCH_MAX_MESSAGE = 450  # Twitch cuts messages at 500 characters; keep a margin
_SWITCHES = {"on": True, "off": False, "1": True, "0": False, "true": True, "false": False}


@dataclass(frozen=True)
class Outcome:
    """What became of one command."""

    command: str
    user: str
    accepted: bool
    reason: str = ""  # why it was refused: role, cooldown, blocked-user, blocklist, too-long, characters,
    # usage, unknown-style, range (strength), error (a bug, logged)
    action: str = ""  # what it did: prompt, vote, enabled, strength, list
    prompt: str = ""  # the resulting prompt (or "on"/"off", the strength), for logs


Handler = Callable[[ChatMessage, str, float], Outcome]


class ChatController:
    """Turns chat messages into control actions within policy."""

    def __init__(
        self,
        settings: ChatSettings,
        target: ControlTarget,
        say: Callable[[str], bool] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``say`` sends a chat message without blocking (the IRC client's ``say``); None: silent."""
        self.settings = settings
        self.dispatcher = TargetDispatcher(target)
        self._say = say if settings.reply else None
        self._clock = clock
        self._lock = threading.Lock()
        self._cooldowns = Cooldowns()
        self._rules = PromptRules(settings)
        self._blocked_users = frozenset(u.lower() for u in settings.blocklist.users)
        self._round: VoteRound | None = None
        self.refused: Counter[str] = Counter()  # refusals by reason
        self.accepted: Counter[str] = Counter()  # accepted commands by command word
        self._commands: dict[str, Handler] = {
            "style": self._style,
            "styles": self._styles,
            "morph": self._morph,
            "strength": self._strength,
        }

    def start(self) -> None:
        self.dispatcher.start()

    def stop(self) -> None:
        self.dispatcher.stop()

    # ---- entry points ---------------------------------------------------------------------------
    def handle(self, msg: ChatMessage) -> Outcome | None:
        """Act on one message; None when it is not one of our commands. Never raises."""
        text = msg.text.strip()
        prefix = self.settings.prefix
        if not text.startswith(prefix):
            return None
        word, _, arg = text[len(prefix):].partition(" ")
        name = word.lower()
        handler = self._commands.get(name)
        policy = self.settings.commands.policy(name) if handler else None
        if handler is None or not policy.enabled:
            return None
        try:
            with self._lock:
                outcome = self._run(name, handler, policy, msg, arg.strip())
        except Exception:  # a bug here must not stop chat, let alone the bridge
            log.exception("chat: command %r from %s failed", name, msg.user)
            return Outcome(name, msg.user, False, reason="error")
        if outcome.accepted:
            self.accepted[name] += 1
            log.info("chat command accepted: user=%s command=%s%s prompt=%r action=%s",
                     msg.user, prefix, name, outcome.prompt, outcome.action)
        else:
            self.refused[outcome.reason] += 1
            log.debug("chat command refused: user=%s command=%s%s reason=%s", msg.user, prefix, name, outcome.reason)
        return outcome

    def tick(self) -> None:
        """Close the vote round when it is due. Call often (the IRC client does, a few times a second)."""
        with self._lock:
            now = self._clock()
            if self._round is None or now < self._round.ends_at:
                return
            result, self._round = self._round.result(), None
        if result is None or result.votes < self.settings.vote.min_votes:
            return
        self.dispatcher.set_prompt(result.change, origin="chat:vote")
        log.info("chat vote won: prompt=%r votes=%d of %d voters", result.label, result.votes, result.voters)
        if self.settings.vote.announce:
            self._send(f"Vote: {result.label} wins with {result.votes} of {result.voters} votes")

    # ---- policy around every command ------------------------------------------------------------
    def _run(self, name: str, handler: Handler, policy, msg: ChatMessage, arg: str) -> Outcome:
        if msg.user in self._blocked_users:
            return Outcome(name, msg.user, False, reason="blocked-user")
        if not msg.roles & set(policy.roles):
            return Outcome(name, msg.user, False, reason="role")
        now = self._clock()
        exempt = bool(msg.roles & set(self.settings.commands.cooldown_exempt_roles))
        try:
            if not exempt:
                # In vote mode a vote waits only for the user's own cooldown: the round is the global limit.
                self._cooldowns.check(name, msg.user, policy, now, use_global=not self._votes(name, msg))
            outcome = handler(msg, arg, now)
        except Rejected as rej:
            return Outcome(name, msg.user, False, reason=rej.reason)
        self._cooldowns.record(name, msg.user, policy, now)
        return outcome

    def _votes(self, name: str, msg: ChatMessage) -> bool:
        vote = self.settings.vote
        return name == "style" and vote.enabled and not msg.roles & set(vote.bypass_roles)

    # ---- the commands ---------------------------------------------------------------------------
    def _style(self, msg: ChatMessage, arg: str, now: float) -> Outcome:
        if not arg:
            raise Rejected("usage", f"{self.settings.prefix}style NAME")
        self._rules.check_blocklist(arg)
        style = find_style(self.dispatcher.styles(), arg)
        if style is not None:
            text, label = style.prompt, style.name
        elif msg.roles & set(self.settings.prompts.free_roles):
            text = label = self._rules.check_free_prompt(arg)
        else:
            raise Rejected("unknown-style", f"no style named {arg!r}")
        p = self.settings.prompts
        change = PromptChange(prompts=(WeightedPrompt(text),), mode=p.mode,
                              transition_frames=p.transition_frames, interpolation=p.interpolation)
        if self._votes("style", msg):
            if self._round is None:
                self._round = VoteRound(now + self.settings.vote.interval_s)
            self._round.cast(msg.user, label, change)
            return Outcome("style", msg.user, True, action="vote", prompt=text)
        self.dispatcher.set_prompt(change, origin=f"chat:{msg.user}")
        return Outcome("style", msg.user, True, action="prompt", prompt=text)

    def _styles(self, msg: ChatMessage, arg: str, now: float) -> Outcome:
        names = [s.name for s in self.dispatcher.styles()]
        if not names:
            self._send("No styles are listed yet.")
        else:
            for chunk in _chunks(f"Styles (type {self.settings.prefix}style NAME): ", names):
                self._send(chunk)
        return Outcome("styles", msg.user, True, action="list", prompt=", ".join(names))

    def _morph(self, msg: ChatMessage, arg: str, now: float) -> Outcome:
        enabled = _SWITCHES.get(arg.lower())
        if enabled is None:
            raise Rejected("usage", f"{self.settings.prefix}morph on|off")
        self.dispatcher.set_enabled(enabled, origin=f"chat:{msg.user}")
        return Outcome("morph", msg.user, True, action="enabled", prompt="on" if enabled else "off")

    def _strength(self, msg: ChatMessage, arg: str, now: float) -> Outcome:
        try:
            value = float(arg)
        except ValueError:
            raise Rejected("usage", f"{self.settings.prefix}strength NUMBER") from None
        lim = self.settings.strength
        if not math.isfinite(value) or not lim.min <= value <= lim.max:
            raise Rejected("range", f"strength must be between {lim.min:g} and {lim.max:g}")
        self.dispatcher.set_strength(value, origin=f"chat:{msg.user}")
        return Outcome("strength", msg.user, True, action="strength", prompt=f"{value:g}")

    def _send(self, text: str) -> None:
        if self._say is not None:
            try:
                self._say(text)
            except Exception as exc:
                log.warning("chat: could not queue a reply: %s", exc)


def _chunks(head: str, items: list[str]) -> list[str]:
    """``head`` plus comma-separated items, split into messages Twitch accepts."""
    out, line = [], head
    for item in items:
        piece = item if line == head else ", " + item
        if len(line) + len(piece) > TWITCH_MAX_MESSAGE and line != head:
            out.append(line)
            line, piece = "", item
        line += piece[: TWITCH_MAX_MESSAGE]
    out.append(line)
    return out

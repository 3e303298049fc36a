"""Who may do what, how often, and which prompts chat may ask for.

Pure logic with an injected clock: no threads, no I/O, so it is tested exactly.
"""
from __future__ import annotations

import re

from morphcam.daemon.pipeline import StyleInfo

from .settings import ChatSettings, CommandPolicy

_SEPARATORS = re.compile(r"[\W_]+", re.UNICODE)
_MAX_TRACKED_USERS = 10_000  # per-user cooldown entries kept before old ones are pruned


class Rejected(Exception):
    """A command refused by policy; ``reason`` is a short machine-readable word."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class Cooldowns:
    """Per-user and global cooldowns per command, from the time of the last accepted use."""

    def __init__(self) -> None:
        self._global: dict[str, float] = {}
        self._user: dict[tuple[str, str], float] = {}

    def check(self, command: str, user: str, policy: CommandPolicy, now: float, use_global: bool = True) -> None:
        """Raise ``Rejected("cooldown")`` while either cooldown runs."""
        last = self._global.get(command)
        if use_global and last is not None and now - last < policy.global_cooldown_s:
            raise Rejected("cooldown", f"!{command} is cooling down for everyone")
        last = self._user.get((command, user))
        if last is not None and now - last < policy.user_cooldown_s:
            raise Rejected("cooldown", f"!{command} is cooling down for {user}")

    def record(self, command: str, user: str, policy: CommandPolicy, now: float) -> None:
        self._global[command] = now
        self._user[(command, user)] = now
        if len(self._user) > _MAX_TRACKED_USERS:
            self._prune(policy, now)

    def _prune(self, policy: CommandPolicy, now: float) -> None:
        # Entries past the longest cooldown can go; user cooldowns are per command but bounded by it.
        horizon = max(policy.user_cooldown_s, 3600.0)
        self._user = {k: t for k, t in self._user.items() if now - t < horizon}


def normalize_words(text: str) -> str:
    """Case-folded words separated by single spaces, with a space at each end, for phrase search."""
    return " " + " ".join(_SEPARATORS.split(text.casefold())).strip() + " "


class PromptRules:
    """Length, characters and the blocklist, for free-form prompts and style names alike."""

    def __init__(self, settings: ChatSettings) -> None:
        self._prompts = settings.prompts
        self._blocked = tuple(normalize_words(w) for w in settings.blocklist.words if w.strip())
        self._allowed_punct = frozenset(settings.prompts.allowed_punctuation)

    def check_blocklist(self, text: str) -> None:
        """Whole words and phrases only, so "bad" does not block "badge"; spelled-out words
        ("b.a.d", "b a d") are joined first so they cannot slip through."""
        words = normalize_words(text)
        joined = _join_single_letters(words)
        for phrase in self._blocked:
            if phrase in words or phrase in joined:
                raise Rejected("blocklist", "the prompt contains a blocked word")

    def check_free_prompt(self, text: str) -> str:
        """The prompt, stripped, or ``Rejected`` saying which limit it broke."""
        text = " ".join(text.split())
        if not text:
            raise Rejected("usage", "an empty prompt")
        if len(text) > self._prompts.max_chars:
            raise Rejected("too-long", f"a prompt has at most {self._prompts.max_chars} characters")
        bad = next((c for c in text if not (c.isalnum() or c in self._allowed_punct)), None)
        if bad is not None:
            raise Rejected("characters", f"character {bad!r} is not allowed in prompts")
        self.check_blocklist(text)
        return text


def _join_single_letters(words: str) -> str:
    out: list[str] = []
    run = ""
    for token in words.split():
        if len(token) == 1:
            run += token
            continue
        if run:
            out.append(run)
            run = ""
        out.append(token)
    if run:
        out.append(run)
    return " " + " ".join(out) + " "


def find_style(styles: tuple[StyleInfo, ...], query: str) -> StyleInfo | None:
    """The listed style named ``query`` (case and separators ignored), or None."""
    key = normalize_words(query)
    for style in styles:
        if normalize_words(style.name) == key:
            return style
    return None

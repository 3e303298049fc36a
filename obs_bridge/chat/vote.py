"""Vote mode: each user's latest ``!style`` in a round is their vote; the most-voted one wins."""
from __future__ import annotations

from dataclasses import dataclass

from morphcam.daemon.pipeline import PromptChange


@dataclass(frozen=True)
class VoteResult:
    label: str  # what won, as shown in chat and logs
    change: PromptChange
    votes: int
    voters: int  # users who voted in the round, for any option


class VoteRound:
    """Votes of one round. Not thread-safe: the controller holds its lock around it."""

    def __init__(self, ends_at: float) -> None:
        self.ends_at = ends_at
        self._by_user: dict[str, str] = {}  # user -> label
        self._changes: dict[str, PromptChange] = {}  # label -> change
        self._first_seen: dict[str, int] = {}  # label -> order of its first vote, to break ties

    def cast(self, user: str, label: str, change: PromptChange) -> None:
        self._by_user[user] = label
        self._changes.setdefault(label, change)
        self._first_seen.setdefault(label, len(self._first_seen))

    def result(self) -> VoteResult | None:
        """The winner (ties go to the option voted for first), or None without votes."""
        if not self._by_user:
            return None
        counts: dict[str, int] = {}
        for label in self._by_user.values():
            counts[label] = counts.get(label, 0) + 1
        label = max(counts, key=lambda k: (counts[k], -self._first_seen[k]))
        return VoteResult(label, self._changes[label], counts[label], len(self._by_user))

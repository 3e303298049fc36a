"""Chat commands within policy: roles, cooldowns, free-form prompts, limits, blocklist, votes, logs.

The controller runs on a fake clock; its target actions go through the real dispatcher thread.
"""
from __future__ import annotations

import logging

import pytest

from morphcam.obs_bridge.chat.controller import ChatController
from helpers.fake_twitch import RecordingTarget
from morphcam.obs_bridge.chat.protocol import ChatMessage
from morphcam.obs_bridge.chat.settings import (
    BlocklistSettings,
    ChatSettings,
    CommandPolicy,
    CommandsSettings,
    PromptSettings,
    VoteSettings,
)

pytestmark = pytest.mark.timeout(30)

ROLE_SETS = {
    "everyone": frozenset({"everyone"}),
    "subscriber": frozenset({"everyone", "subscriber"}),
    "vip": frozenset({"everyone", "vip"}),
    "moderator": frozenset({"everyone", "moderator"}),
    "broadcaster": frozenset({"everyone", "broadcaster"}),
}


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def msg(user: str, text: str, role: str = "everyone") -> ChatMessage:
    return ChatMessage(channel="streamer", user=user, text=text, roles=ROLE_SETS[role])


@pytest.fixture
def make():
    made = []

    def _make(settings: ChatSettings | None = None, target: RecordingTarget | None = None):
        clock = Clock()
        target = target or RecordingTarget()
        said: list[str] = []
        ctl = ChatController(settings or ChatSettings(), target, say=lambda t: said.append(t) or True, clock=clock)
        ctl.start()
        assert ctl.dispatcher.flush(2.0)  # styles fetched
        made.append(ctl)
        return ctl, target, clock, said

    yield _make
    for ctl in made:
        ctl.stop()


def prompts(target: RecordingTarget, ctl: ChatController) -> list[str]:
    assert ctl.dispatcher.flush(2.0)
    return [c.label for c in target.of("set_prompt")]


def test_listed_style_for_everyone_free_prompt_only_for_allowed_roles(make):
    ctl, target, clock, _ = make()
    assert ctl.handle(msg("viewer", "!style Oil  Paint")).accepted
    ctl.dispatcher.flush()
    clock.t += 60
    out = ctl.handle(msg("viewer2", "!style a cat made of clouds"))
    assert (out.accepted, out.reason) == (False, "unknown-style")
    out = ctl.handle(msg("vipper", "!style a cat made of clouds", "vip"))
    assert out.accepted and out.prompt == "a cat made of clouds"
    assert prompts(target, ctl) == ["thick oil paint strokes", "a cat made of clouds"]
    change = target.of("set_prompt")[0]
    assert change.mode == "recache"
    assert target.origins == ["chat:viewer", "chat:vipper"], "the daemon's activity log names the chatter"


@pytest.mark.parametrize("command,role,ok", [
    ("!morph off", "everyone", False), ("!morph off", "subscriber", False), ("!morph off", "vip", False),
    ("!morph off", "moderator", True), ("!morph off", "broadcaster", True),
    ("!strength 0.5", "everyone", False), ("!strength 0.5", "vip", True),
    ("!style anime", "everyone", True), ("!styles", "everyone", True),
])
def test_roles_per_command(make, command, role, ok):
    ctl, *_ = make()
    out = ctl.handle(msg("u", command, role))
    assert out.accepted is ok
    assert out.reason == ("" if ok else "role")


def test_roles_are_configurable(make):
    s = ChatSettings(commands=CommandsSettings(style=CommandPolicy(roles=("subscriber", "moderator"))))
    ctl, *_ = make(s)
    assert ctl.handle(msg("a", "!style anime")).reason == "role"
    assert ctl.handle(msg("b", "!style anime", "subscriber")).accepted


def test_user_and_global_cooldowns(make):
    s = ChatSettings(commands=CommandsSettings(style=CommandPolicy(user_cooldown_s=30, global_cooldown_s=5)))
    ctl, target, clock, _ = make(s)
    assert ctl.handle(msg("a", "!style anime")).accepted
    assert ctl.handle(msg("b", "!style snowfall")).reason == "cooldown"  # global
    clock.t += 5
    assert ctl.handle(msg("a", "!style snowfall")).reason == "cooldown"  # a's own
    assert ctl.handle(msg("b", "!style snowfall")).accepted
    clock.t += 25
    assert ctl.handle(msg("a", "!style anime")).accepted
    # Exempt roles skip both; a refused command does not start a cooldown.
    assert ctl.handle(msg("boss", "!style snowfall", "broadcaster")).accepted
    assert ctl.handle(msg("c", "!style nosuchstyle")).reason == "cooldown"
    clock.t += 5
    assert ctl.handle(msg("c", "!style nosuchstyle")).reason == "unknown-style"
    assert ctl.handle(msg("c", "!style anime")).accepted
    assert prompts(target, ctl)[-1] == "anime cel shading"


def test_cooldowns_are_per_command(make):
    ctl, _, _, said = make()
    assert ctl.handle(msg("m", "!morph off", "moderator")).accepted
    assert ctl.handle(msg("v", "!style anime")).accepted
    assert ctl.handle(msg("v", "!styles")).accepted
    assert said and said[0].startswith("Styles (type !style NAME): anime, oil paint, snowfall")


@pytest.mark.parametrize("text,reason", [
    ("x" * 121, "too-long"),
    ("a cat <script>", "characters"),
    ("tab\there", ""),  # whitespace is collapsed
    ("emoji 🐱 cat", "characters"),
    ("bad \ufffd utf8", "characters"),
    ("ctrl \x07 bell", "characters"),
    ("a cat in gore", "blocklist"),
    ("G.O.R.E forest", "blocklist"),
    ("NSFW", "blocklist"),
    ("gorgeous forest", ""),  # whole words only
    ("Café au lait, ÉTÉ", ""),  # letters of any script
])
def test_free_prompt_limits_and_blocklist(make, text, reason):
    s = ChatSettings(blocklist=BlocklistSettings(words=("gore", "nsfw")))
    ctl, *_ = make(s)
    out = ctl.handle(msg("mod", "!style " + text, "moderator"))
    assert out.reason == reason, out
    assert out.accepted is (reason == "")


def test_blocklist_also_guards_listed_style_names_and_users(make):
    from morphcam.daemon.pipeline import StyleInfo

    target = RecordingTarget(styles=[StyleInfo("gore fest", "blood")])
    s = ChatSettings(blocklist=BlocklistSettings(words=("gore",), users=("SpamBot",)))
    ctl, *_ = make(s, target)
    assert ctl.handle(msg("v", "!style gore fest")).reason == "blocklist"
    assert ctl.handle(msg("spambot", "!style anime", "moderator")).reason == "blocked-user"


def test_prompt_length_is_configurable(make):
    ctl, *_ = make(ChatSettings(prompts=PromptSettings(max_chars=10)))
    assert ctl.handle(msg("m", "!style eleven char", "moderator")).reason == "too-long"


@pytest.mark.parametrize("arg,ok", [("0.4", True), ("1", True), ("0", True), ("1.5", False), ("-0.1", False),
                                    ("nan", False), ("inf", False), ("lots", False), ("", False)])
def test_strength_range(make, arg, ok):
    ctl, target, *_ = make()
    out = ctl.handle(msg("m", f"!strength {arg}", "moderator"))
    assert out.accepted is ok
    ctl.dispatcher.flush()
    assert target.of("set_strength") == ([float(arg)] if ok else [])


def test_morph_on_off_and_usage(make):
    ctl, target, clock, _ = make()
    assert ctl.handle(msg("m", "!morph maybe", "moderator")).reason == "usage"
    assert ctl.handle(msg("m", "!MORPH OFF", "moderator")).accepted
    ctl.dispatcher.flush()
    clock.t += 3
    assert ctl.handle(msg("m", "!morph on", "moderator")).accepted
    ctl.dispatcher.flush()
    assert target.of("set_enabled") == [False, True]


def test_not_commands_are_ignored(make):
    ctl, target, *_ = make()
    for text in ["hello", "style anime", "!", "!unknown x", "! style anime", "?style anime"]:
        assert ctl.handle(msg("v", text)) is None
    ctl.dispatcher.flush()
    assert target.calls == []


def test_prefix_and_disabled_commands(make):
    s = ChatSettings(prefix="~mc", commands=CommandsSettings(styles=CommandPolicy(enabled=False)))
    ctl, *_ = make(s)
    assert ctl.handle(msg("v", "!style anime")) is None
    assert ctl.handle(msg("v", "~mcstyles")) is None
    assert ctl.handle(msg("v", "~mcstyle anime")).accepted


def test_every_accepted_command_is_logged_with_user_command_and_prompt(make, caplog):
    ctl, *_ = make()
    with caplog.at_level(logging.INFO, logger="morphcam.obs_bridge.chat"):
        ctl.handle(msg("alice", "!style anime"))
        ctl.handle(msg("bob", "!style snowfall"))  # refused: global cooldown
    accepted = [r.getMessage() for r in caplog.records if "accepted" in r.getMessage()]
    assert accepted == ["chat command accepted: user=alice command=!style prompt='anime cel shading' action=prompt"]
    assert ctl.refused["cooldown"] == 1


def test_a_failing_target_never_raises_into_chat(make, caplog):
    ctl, target, clock, _ = make(target=RecordingTarget(fail=True))
    with caplog.at_level(logging.WARNING):
        assert ctl.handle(msg("m", "!morph off", "moderator")).accepted
        assert ctl.dispatcher.flush()
    assert ctl.dispatcher.failures >= 2  # styles() and set_enabled()
    assert any("failed to apply enabled" in r.getMessage() for r in caplog.records)
    assert ctl.handle(msg("v", "!style anime")).reason == "unknown-style"  # no styles known


def test_vote_mode_most_voted_wins_each_round(make):
    s = ChatSettings(vote=VoteSettings(enabled=True, interval_s=10, min_votes=2),
                     commands=CommandsSettings(style=CommandPolicy(user_cooldown_s=1, global_cooldown_s=5)))
    ctl, target, clock, said = make(s)
    for user, style in [("a", "anime"), ("b", "snowfall"), ("c", "snowfall"), ("d", "anime"), ("e", "anime")]:
        out = ctl.handle(msg(user, f"!style {style}"))  # votes skip the global cooldown
        assert out.accepted and out.action == "vote"
    clock.t += 2
    assert ctl.handle(msg("e", "!style snowfall")).accepted  # e changes its vote: 2 vs 3
    ctl.tick()
    assert prompts(target, ctl) == []  # the round is still open
    clock.t += 8
    ctl.tick()
    assert prompts(target, ctl) == ["gentle snowfall at night"]
    assert said == ["Vote: snowfall wins with 3 of 5 votes"]
    # The next round opens with the next vote; one vote is below min_votes.
    clock.t += 5
    assert ctl.handle(msg("a", "!style anime")).accepted
    clock.t += 10
    ctl.tick()
    assert prompts(target, ctl) == ["gentle snowfall at night"]
    # The broadcaster bypasses the vote.
    out = ctl.handle(msg("boss", "!style oil paint", "broadcaster"))
    assert out.action == "prompt"
    assert prompts(target, ctl)[-1] == "thick oil paint strokes"


def test_vote_ties_go_to_the_first_voted(make):
    ctl, target, clock, _ = make(ChatSettings(vote=VoteSettings(enabled=True, interval_s=1)))
    ctl.handle(msg("a", "!style snowfall"))
    ctl.handle(msg("b", "!style anime"))
    clock.t += 1
    ctl.tick()
    assert prompts(target, ctl) == ["gentle snowfall at night"]


def test_transition_mode_carries_into_the_prompt_change(make):
    s = ChatSettings(prompts=PromptSettings(mode="transition", transition_frames=12, interpolation="lerp"))
    ctl, target, *_ = make(s)
    ctl.handle(msg("v", "!style anime"))
    ctl.dispatcher.flush()
    (change,) = target.of("set_prompt")
    assert (change.mode, change.transition_frames, change.interpolation) == ("transition", 12, "lerp")


def test_style_list_is_split_into_twitch_sized_messages(make):
    from morphcam.daemon.pipeline import StyleInfo

    many = [StyleInfo(f"style number {i:03d}", f"prompt {i}") for i in range(80)]
    ctl, _, _, said = make(target=RecordingTarget(styles=many))
    ctl.handle(msg("v", "!styles"))
    assert len(said) > 1 and all(len(m) <= 450 for m in said)
    assert ", ".join(said).count("style number") == 80


def test_a_slow_target_gets_only_the_newest_action_of_each_kind(make):
    ctl, target, clock, _ = make(ChatSettings(), RecordingTarget(delay_s=0.2))
    for i, style in enumerate(["anime", "oil paint", "snowfall", "anime", "snowfall"]):
        clock.t += 10
        assert ctl.handle(msg(f"u{i}", f"!style {style}")).accepted  # returns at once
    assert ctl.dispatcher.flush(3.0)
    labels = [c.label for c in target.of("set_prompt")]
    assert len(labels) <= 2 and labels[-1] == "gentle snowfall at night"

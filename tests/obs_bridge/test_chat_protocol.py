"""IRC line parsing with Twitch's tags, and roles from badges."""
from __future__ import annotations

import pytest

from morphcam.obs_bridge.chat.protocol import (
    chat_message,
    escape_tag_value,
    format_line,
    parse_line,
    roles_from_tags,
    unescape_tag_value,
)

TWITCH_LINE = (
    "@badge-info=subscriber/8;badges=moderator/1,subscriber/6;color=#0D4200;display-name=Some\\sMod;"
    "emotes=;mod=1;room-id=1337;subscriber=1;user-type=mod "
    ":somemod!somemod@somemod.tmi.twitch.tv PRIVMSG #streamer :!style oil paint"
)

pytestmark = pytest.mark.timeout(30)


def test_parses_a_tagged_privmsg():
    msg = parse_line(TWITCH_LINE)
    assert msg.command == "PRIVMSG"
    assert msg.params == ("#streamer", "!style oil paint")
    assert msg.nick == "somemod"
    assert msg.tags["display-name"] == "Some Mod"
    assert msg.tags["emotes"] == ""
    cm = chat_message(msg)
    assert cm.user == "somemod" and cm.channel == "streamer" and cm.text == "!style oil paint"
    assert cm.roles == {"everyone", "moderator", "subscriber"}


@pytest.mark.parametrize("value", ["a;b c\\d", "", "tail\\", "line\r\nbreak", "ünïcødé ✓"])
def test_tag_escaping_round_trips(value):
    assert unescape_tag_value(escape_tag_value(value)) == value


def test_unescape_follows_ircv3():
    assert unescape_tag_value("a\\sb\\:c\\\\d\\x") == "a b;c\\dx"
    assert unescape_tag_value("dangling\\") == "dangling"


@pytest.mark.parametrize("line", [
    "", " ", "@", "@a=b", "@a=b ", ":prefix", ":prefix ", ":only :trailing", "!!! nonsense",
    "@tags :prefix 12 x", "PRIV-MSG #a :b", "\x00\x01", ":" + "x" * 5000, "ÄÖÜ #chan :x",
])
def test_malformed_lines_give_none_and_never_raise(line):
    assert parse_line(line) is None


def test_odd_but_valid_lines():
    assert parse_line("PING").params == ()
    assert parse_line("PING :tmi.twitch.tv").trailing == "tmi.twitch.tv"
    assert parse_line("privmsg #a :b").command == "PRIVMSG"
    assert parse_line("@=;;a :srv 001 me :hi").tags == {"": "", "a": ""}
    assert parse_line(":srv 353 me = #chan :a b c").params == ("me", "=", "#chan", "a b c")


def test_format_refuses_line_breaks_so_chat_cannot_inject_commands():
    assert format_line("PRIVMSG", "#c", "hello there") == "PRIVMSG #c :hello there"
    assert format_line("PRIVMSG", "#c", ":)") == "PRIVMSG #c ::)"
    with pytest.raises(ValueError):
        format_line("PRIVMSG", "#c", "hi\r\nQUIT")
    with pytest.raises(ValueError):
        format_line("PRIVMSG", "#c d", "x")


@pytest.mark.parametrize("tags,user,expected", [
    ({"badges": "broadcaster/1"}, "someone", {"broadcaster"}),
    ({}, "streamer", {"broadcaster"}),  # plain IRC: the channel's owner
    ({"badges": "vip/1"}, "v", {"vip"}),
    ({"badges": "founder/0"}, "f", {"subscriber"}),
    ({"mod": "1"}, "m", {"moderator"}),
    ({"badges": "premium/1,glhf-pledge/1"}, "x", set()),
    ({"badges": ""}, "x", set()),
    ({"badges": ",,/,moderator"}, "x", {"moderator"}),
])
def test_roles_from_badges(tags, user, expected):
    assert roles_from_tags(tags, user, "streamer") == frozenset(expected | {"everyone"})


def test_ctcp_and_non_channel_messages_are_not_chat():
    assert chat_message(parse_line(":a!a@a PRIVMSG #c :\x01ACTION !style anime\x01")) is None
    assert chat_message(parse_line(":a!a@a PRIVMSG me :!style anime")) is None
    assert chat_message(parse_line(":a!a@a NOTICE #c :!style anime")) is None
    assert chat_message(parse_line("PRIVMSG #c :no prefix")) is None

"""The [chat] settings: defaults, TOML, unknown keys, clear errors, the token from the environment."""
from __future__ import annotations

import dataclasses
import tomllib

import pytest

from morphcam.obs_bridge.chat.settings import ChatSettings, CommandPolicy

pytestmark = pytest.mark.timeout(30)

SAMPLE = """
[chat]
enabled = true
channel = "#MyChannel"
host = "irc.chat.twitch.tv"
port = 6697
tls = true
nick = "mybot"
token_env = "TWITCH_OAUTH_TOKEN"
prefix = "!"

[chat.commands]
cooldown_exempt_roles = ["broadcaster", "moderator"]
[chat.commands.style]
roles = ["everyone"]
user_cooldown_s = 30
global_cooldown_s = 5
[chat.commands.strength]
roles = ["broadcaster", "moderator", "vip"]

[chat.prompts]
free_roles = ["broadcaster", "moderator", "vip"]
max_chars = 80
mode = "transition"
transition_frames = 15

[chat.blocklist]
words = ["gore", "nsfw"]
users = ["spambot"]

[chat.vote]
enabled = true
interval_s = 20
"""


def test_sample_toml_loads_into_frozen_tuples():
    s = ChatSettings.from_dict(tomllib.loads(SAMPLE)["chat"])
    assert s.channel == "mychannel"
    assert s.commands.style.global_cooldown_s == 5.0 and isinstance(s.commands.style.global_cooldown_s, float)
    assert s.blocklist.words == ("gore", "nsfw")
    assert isinstance(s.prompts.free_roles, tuple)
    assert s.vote.enabled and s.vote.interval_s == 20
    assert s.commands.morph == CommandsDefaults.morph  # untouched sections keep their defaults
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.channel = "other"  # type: ignore[misc]


CommandsDefaults = ChatSettings().commands


@pytest.mark.parametrize("data,needle", [
    ({"chanel": "x"}, "chat.chanel"),
    ({"commands": {"style": {"role": ["everyone"]}}}, "chat.commands.style.role"),
    ({"vote": {"enabled": True, "every": 3}}, "chat.vote.every"),
])
def test_unknown_keys_are_named(data, needle):
    with pytest.raises(ValueError, match=needle.replace(".", r"\.")):
        ChatSettings.from_dict(data)


@pytest.mark.parametrize("data,needle", [
    ({"enabled": True}, "chat.channel is empty"),
    ({"commands": {"style": {"roles": ["admin"]}}}, "unknown role 'admin'"),
    ({"port": 0}, "chat.port"),
    ({"port": "6697"}, "chat.port must be int"),
    ({"tls": 1}, "chat.tls must be bool"),
    ({"blocklist": {"words": "nsfw"}}, "list of strings"),
    ({"prompts": {"mode": "transition"}}, "transition_frames"),
    ({"prefix": ""}, "chat.prefix"),
    ({"channel": "my channel"}, "not a Twitch login"),
    ({"nick": "bot\r\nQUIT"}, "not a Twitch login"),
    ({"vote": {"interval_s": 0}}, "interval_s"),
])
def test_bad_values_say_what_to_fix(data, needle):
    with pytest.raises(ValueError, match=needle):
        ChatSettings.from_dict(data)


def test_lists_become_tuples_when_built_directly():
    p = CommandPolicy(roles=["vip"])  # type: ignore[arg-type]
    assert p.roles == ("vip",)
    hash(ChatSettings())  # frozen all the way down


def test_token_comes_from_the_environment_not_the_file():
    s = ChatSettings(nick="bot", token_env="MY_TOKEN")
    assert s.token({}) is None
    assert s.token({"MY_TOKEN": "  "}) is None
    assert s.token({"MY_TOKEN": "abc123"}) == "oauth:abc123"
    assert s.token({"MY_TOKEN": "oauth:abc123"}) == "oauth:abc123"
    assert "token" not in {f.name for f in dataclasses.fields(ChatSettings)}

"""A flood of 1,000 chat messages in one second, through the fake Twitch server (Twitch itself
cannot be reached from tests): every prompt change stays within policy, the client keeps up and
stays connected, and a 30 fps loop on another thread keeps its pace.

Timing of the bridge's relay under a flood is measured by bench/chat_flood.py, not asserted here;
the loop check below only catches chat holding the interpreter for whole frames.
"""
from __future__ import annotations

import dataclasses
import random
import threading
import time

import pytest

from morphcam.obs_bridge.chat.client import TwitchChatClient
from morphcam.obs_bridge.chat.controller import ChatController
from helpers.fake_twitch import FakeTwitchServer, RecordingTarget
from morphcam.obs_bridge.chat.settings import (
    BlocklistSettings,
    ChatSettings,
    CommandPolicy,
    CommandsSettings,
    ConnectionSettings,
)

pytestmark = pytest.mark.timeout(30)

BADGES = {"viewer": "", "sub": "subscriber/6", "vip": "vip/1", "mod": "moderator/1"}
STYLE_COOLDOWN = CommandPolicy(user_cooldown_s=0.5, global_cooldown_s=0.1)


def flood(server: FakeTwitchServer, n: int) -> list[bytes]:
    rng = random.Random(1)
    kinds = ["viewer"] * 80 + ["sub"] * 14 + ["vip"] * 4 + ["mod"] * 2
    texts = [
        lambda: "!style " + rng.choice(["anime", "oil paint", "snowfall", "nosuch"]),
        lambda: "!style a cat made of " + rng.choice(["clouds", "gore", "neon light"]),
        lambda: "!morph " + rng.choice(["on", "off"]),
        lambda: "!strength " + rng.choice(["0.3", "0.7", "2"]),
        lambda: "just chatting " + "lol " * rng.randint(0, 20),
        lambda: "!style " + "z" * rng.randint(200, 3000),
    ]
    lines = []
    for _ in range(n):
        kind = rng.choice(kinds)
        text = rng.choices(texts, [45, 15, 10, 10, 15, 5])[0]()
        lines.append(server.privmsg_line(f"{kind}{rng.randint(0, 200)}", text, "streamer", BADGES[kind]))
    return lines


class FrameLoop(threading.Thread):
    """30 fps on its own thread, recording how late each tick runs."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.lateness: list[float] = []
        self.stop_event = threading.Event()

    def run(self) -> None:
        due = time.monotonic()
        while not self.stop_event.is_set():
            due += 1 / 30
            self.stop_event.wait(max(0.0, due - time.monotonic()))
            self.lateness.append(time.monotonic() - due)


def test_a_flood_of_1000_messages_in_one_second_stays_within_policy():
    settings = ChatSettings(
        enabled=True, channel="streamer", host="127.0.0.1", tls=False,
        commands=CommandsSettings(style=STYLE_COOLDOWN),
        blocklist=BlocklistSettings(words=("gore",)),
        connection=ConnectionSettings(connect_timeout_s=3.0),
    )
    target = RecordingTarget()
    seen: list[tuple[float, object, object]] = []  # (when, message, outcome)
    with FakeTwitchServer() as server:
        settings = dataclasses.replace(settings, port=server.port)
        controller = ChatController(settings, target)

        def on_message(msg):
            out = controller.handle(msg)
            seen.append((time.monotonic(), msg, out))

        client = TwitchChatClient(settings, on_message=on_message, on_tick=controller.tick)
        controller.start()
        client.start()
        loop = FrameLoop()
        try:
            assert client.wait_joined(5) and server.wait_joined("streamer")
            assert controller.dispatcher.flush(2)
            lines = flood(server, 1000)
            loop.start()
            start = time.monotonic()
            for i in range(0, 1000, 50):  # 20 bursts of 50 over one second
                time.sleep(max(0.0, start + i / 1000 - time.monotonic()))
                server.send_lines(lines[i:i + 50], "streamer")
            assert server.wait_for(lambda: client.stats.messages == 1000, 10), client.stats
            drained = time.monotonic() - start
            time.sleep(0.2)
            assert controller.dispatcher.flush(3)
        finally:
            loop.stop_event.set()
            client.stop()
            controller.stop()
            loop.join(2)

    assert drained < 3.0  # the client keeps up with the flood
    assert client.stats.connects == 1 and client.stats.handler_errors == 0

    accepted = [(t, m, o) for t, m, o in seen if o is not None and o.accepted]
    styles = [(t, m, o) for t, m, o in accepted if o.command == "style"]
    assert styles, "nothing got through at all"
    exempt = {"broadcaster", "moderator"}
    # Roles: each accepted command came from a role allowed to run it.
    for _, m, o in accepted:
        allowed = set(getattr(settings.commands, o.command).roles)
        assert m.roles & allowed, (m.user, o.command)
    # Free-form prompts only from allowed roles, within limits, never blocked words.
    listed = {s.prompt for s in target.styles()}
    for _, m, o in styles:
        assert "gore" not in o.prompt and len(o.prompt) <= settings.prompts.max_chars
        if o.prompt not in listed:
            assert m.roles & set(settings.prompts.free_roles), (m.user, o.prompt)
    # Cooldowns: non-exempt accepted styles at least global_cooldown_s apart, and per user.
    plain = [(t, m) for t, m, _ in styles if not m.roles & exempt]
    slack = 0.02  # the spy's timestamp is taken just after the controller's
    for (t1, _), (t2, _) in zip(plain, plain[1:]):
        assert t2 - t1 >= STYLE_COOLDOWN.global_cooldown_s - slack
    last: dict[str, float] = {}
    for t, m in plain:
        assert t - last.get(m.user, -1e9) >= STYLE_COOLDOWN.user_cooldown_s - slack
        last[m.user] = t
    assert len(plain) <= drained / STYLE_COOLDOWN.global_cooldown_s + 1
    # What reached the target: no more changes than accepted, ending on the last accepted one.
    applied = target.of("set_prompt")
    assert 1 <= len(applied) <= len(styles)
    assert applied[-1].label == styles[-1][2].prompt
    assert not any("gore" in c.label for c in applied)
    # The other thread's 30 fps loop never lost a whole frame to chat.
    assert len(loop.lateness) >= 25 and max(loop.lateness) < 0.25, max(loop.lateness)

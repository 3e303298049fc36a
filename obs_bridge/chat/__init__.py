"""Twitch chat control: chat commands change the stream's style within the streamer's policy.

``TwitchChatClient`` reads chat over IRC in its own thread, ``ChatController`` applies roles,
cooldowns, limits and the blocklist, and ``TargetDispatcher`` applies what passes to a
``ControlTarget`` from another thread, so neither chat nor a slow target can block the relay.
Channel-point redemptions (EventSub) are not implemented; ``ChatController.handle`` accepts any
``ChatMessage`` and is where such a trigger would feed in.
"""
from .client import ClientStats, TwitchChatClient
from .controller import ChatController, Outcome
from .protocol import ChatMessage, IrcMessage, parse_line
from .service import ChatService, start_chat
from .settings import ChatSettings
from .target import ControlTarget, TargetDispatcher

__all__ = [
    "ChatController",
    "ChatMessage",
    "ChatService",
    "ChatSettings",
    "ClientStats",
    "ControlTarget",
    "IrcMessage",
    "Outcome",
    "TargetDispatcher",
    "TwitchChatClient",
    "parse_line",
    "start_chat",
]

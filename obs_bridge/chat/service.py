"""Chat wired up: the IRC client feeds the controller, the controller drives the control target."""
from __future__ import annotations

import logging
import ssl
from typing import Mapping

from .client import TwitchChatClient
from .controller import ChatController
from .settings import ChatSettings
from .target import ControlTarget

log = logging.getLogger(__name__)


class ChatService:
    """Twitch chat control for ``morphcam live``: ``start`` and ``stop`` return promptly, and
    nothing here blocks or raises into the caller once started."""

    def __init__(
        self,
        settings: ChatSettings,
        target: ControlTarget,
        ssl_context: ssl.SSLContext | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.settings = settings
        self.client: TwitchChatClient
        self.controller = ChatController(settings, target, say=self._say)
        self.client = TwitchChatClient(settings, on_message=self.controller.handle, on_tick=self.controller.tick,
                                       ssl_context=ssl_context, environ=environ)

    def _say(self, text: str) -> bool:
        return self.client.say(text)

    def start(self) -> None:
        self.controller.start()
        self.client.start()
        log.info("chat: reading #%s on %s:%d (%s)", self.settings.channel, self.settings.host,
                 self.settings.port, "TLS" if self.settings.tls else "plain")

    def stop(self, timeout: float = 2.0) -> None:
        self.client.stop(timeout)
        self.controller.stop()

    def status(self) -> dict:
        """Counters for the bridge's status page and logs."""
        return {
            "joined": self.client.joined.is_set(),
            "tags": self.client.tags_enabled,
            "anonymous": self.client.anonymous,
            "client": dict(vars(self.client.stats)),
            "accepted": dict(self.controller.accepted),
            "refused": dict(self.controller.refused),
            "applied": dict(self.controller.dispatcher.applied),
        }


def start_chat(settings: ChatSettings, target: ControlTarget, **kwargs) -> ChatService | None:
    """Start chat control when ``settings.enabled``; None otherwise. Never raises for network
    trouble: the client keeps reconnecting in the background."""
    if not settings.enabled:
        return None
    service = ChatService(settings, target, **kwargs)
    service.start()
    return service

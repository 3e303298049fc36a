"""Style control: hotkey actions, scene prompts and CustomEvent commands, all looked up in tables.

Every input (an OBS hotkey forwarded by the OBS script, a scene switch, a CustomEvent from a
Stream Deck, chat) goes through one ``StyleController``, which drives a ``ControlTarget``: the
live daemon session (``StreamControl``). The controller is itself a ``ControlTarget``, and chat
is handed the controller, so a chat change and a hotkey press see the same strength and state.
"""
from __future__ import annotations

import logging
import threading
from typing import Any, Callable, Protocol, Sequence, runtime_checkable

from morphcam.daemon.pipeline import PromptChange, StyleInfo, WeightedPrompt

log = logging.getLogger(__name__)


@runtime_checkable
class ControlTarget(Protocol):
    """What hotkeys, scenes, OBS events and chat drive: the daemon session of ``morphcam live``
    (or a test's stand-in). Implementations may block on the network. ``origin`` says who asked
    ("hotkey:next_style", "scene:Just Chatting", "chat:alice"); the daemon keeps it in the
    session's activity log, which the control panel shows."""

    def styles(self) -> list[StyleInfo]:
        """The listed styles anyone may pick by name."""
        ...

    def set_prompt(self, change: PromptChange, origin: str = "") -> None:
        """Switch the stream's prompt."""
        ...

    def set_enabled(self, enabled: bool, origin: str = "") -> None:
        """Turn restyling on, or off (the original frames pass through)."""
        ...

    def set_strength(self, strength: float, origin: str = "") -> None:
        """How strongly the input is restyled."""
        ...


class StreamControl:
    """A ``ControlTarget`` over a running ``LiveStream``: changes go in-stream and are re-applied
    by the stream after a reconnect. Styles come from the daemon (``ListStyles``), cached."""

    def __init__(self, stream: Any, client: Any) -> None:
        self._stream = stream
        self._client = client
        self._styles: list[StyleInfo] = []

    def styles(self) -> list[StyleInfo]:
        if not self._styles:
            try:
                self._styles = list(self._client.list_styles())
            except Exception as e:  # daemon down: no styles yet, ask again next time
                log.warning("cannot list the daemon's styles (%s); is `morphcam serve` running?", e)
        return list(self._styles)

    def set_prompt(self, change: PromptChange, origin: str = "") -> None:
        self._stream.set_prompt(change, origin=origin)

    def set_enabled(self, enabled: bool, origin: str = "") -> None:
        self._stream.update(enabled=enabled, origin=origin)

    def set_strength(self, strength: float, origin: str = "") -> None:
        self._stream.update(strength=strength, origin=origin)


# Hotkey actions, by name. The OBS script registers "morphcam.<name>" for each of these.
ACTIONS: dict[str, Callable[["StyleController"], None]] = {
    "next_style": lambda c: c.step_style(+1),
    "previous_style": lambda c: c.step_style(-1),
    **{f"style_{i}": (lambda c, i=i: c.select_slot(i)) for i in range(1, 10)},
    "effect_on": lambda c: c.set_enabled(True),
    "effect_off": lambda c: c.set_enabled(False),
    "effect_toggle": lambda c: c.set_enabled(not c.enabled),
    "strength_up": lambda c: c.nudge_strength(+1),
    "strength_down": lambda c: c.nudge_strength(-1),
}


class StyleController:
    """Turns actions, scenes and commands into calls on a ``ControlTarget``. Thread-safe."""

    def __init__(
        self,
        target: ControlTarget,
        *,
        styles: Sequence[str] = (),
        scene_prompts: dict[str, str] | None = None,
        strength: float = 0.5,
        strength_step: float = 0.1,
        mode: str = "cut",
        transition_frames: int = 15,
    ) -> None:
        self.target = target
        self.scene_prompts = dict(scene_prompts or {})
        self.strength = strength
        self.strength_step = strength_step
        self.enabled = True
        self.prompt: PromptChange | None = None
        self._styles = tuple(styles)
        self._index = -1
        self._mode = mode
        self._transition_frames = transition_frames if mode == "transition" else 0
        self._lock = threading.RLock()
        self._origin = ""  # who asked, while an entry point runs (under the lock)

    # --- entry points (each input calls one of these) ---

    def run_action(self, name: str) -> bool:
        """Run hotkey action ``name``; False (and a log line) for an unknown name."""
        action = ACTIONS.get(name)
        if action is None:
            log.warning("unknown action %r (known: %s)", name, ", ".join(ACTIONS))
            return False
        with self._lock:
            self._origin = f"hotkey:{name}"
            try:
                action(self)
            finally:
                self._origin = ""
        return True

    def on_scene(self, scene: str) -> bool:
        """OBS switched to ``scene``: apply its prompt if the scene map has one."""
        prompt = self.scene_prompts.get(scene)
        if prompt is None:
            return False
        self.apply_prompt(prompt, origin=f"scene:{scene}")
        return True

    def on_command(self, command: dict[str, Any]) -> None:
        """A CustomEvent command, e.g. {"prompt": "oil painting"}, {"action": "next_style"},
        {"style": 3}, {"strength": 0.4}, {"enabled": false},
        {"prompts": [{"text": "ink", "weight": 2}, {"text": "snow"}], "mode": "transition", "transition_frames": 30}."""
        if not isinstance(command, dict):
            raise ValueError(f"a command is a JSON object, got {type(command).__name__}")
        handled = False
        with self._lock:
            self._origin = "obs-event"
            try:
                for key, handler in COMMANDS.items():
                    if key in command:
                        handler(self, command[key], command)
                        handled = True
            finally:
                self._origin = ""
        if not handled:
            raise ValueError(f"command {command!r} has none of the keys {', '.join(COMMANDS)}")

    # --- the ControlTarget interface, so chat shares this controller's state (slot, strength, on/off) ---

    def styles(self) -> list[StyleInfo]:
        return self.target.styles()

    def set_prompt(self, change: PromptChange, origin: str = "") -> None:
        self.apply_prompt(change, origin=origin)

    # --- operations ---

    def apply_prompt(self, prompt: str | PromptChange, mode: str | None = None, transition_frames: int | None = None,
                     origin: str = "") -> None:
        if isinstance(prompt, str):
            mode = mode or self._mode
            frames = transition_frames if transition_frames is not None else self._transition_frames
            prompt = PromptChange((WeightedPrompt(prompt),), mode=mode, transition_frames=frames if mode == "transition" else 0)
        with self._lock:
            self.target.set_prompt(prompt, origin=origin or self._origin)
            self.prompt = prompt
        log.info("prompt -> %s (%s)", prompt.label, prompt.mode)

    def style_prompts(self) -> tuple[str, ...]:
        """The prompts that slots and next/previous walk through."""
        return self._styles or tuple(s.prompt for s in self.target.styles())

    def select_slot(self, slot: int) -> None:
        prompts = self.style_prompts()
        if not 1 <= slot <= len(prompts):
            log.warning("style slot %d is empty (%d styles known)", slot, len(prompts))
            return
        with self._lock:
            self._index = slot - 1
            self.apply_prompt(prompts[self._index])

    def step_style(self, delta: int) -> None:
        prompts = self.style_prompts()
        if not prompts:
            log.warning("no styles known yet: is the daemon running?")
            return
        with self._lock:
            start = self._index if self._index >= 0 else (-1 if delta > 0 else 0)
            self._index = (start + delta) % len(prompts)
            self.apply_prompt(prompts[self._index])

    def select_style(self, name_or_slot: Any) -> None:
        if isinstance(name_or_slot, int) and not isinstance(name_or_slot, bool):
            self.select_slot(name_or_slot)
            return
        for style in self.target.styles():
            if style.name == name_or_slot:
                self.apply_prompt(style.prompt)
                return
        raise ValueError(f"unknown style {name_or_slot!r}")

    def set_enabled(self, enabled: bool, origin: str = "") -> None:
        with self._lock:
            self.target.set_enabled(bool(enabled), origin=origin or self._origin)
            self.enabled = bool(enabled)

    def set_strength(self, strength: float, origin: str = "") -> None:
        strength = min(1.0, max(0.0, float(strength)))
        with self._lock:
            self.target.set_strength(strength, origin=origin or self._origin)
            self.strength = strength

    def nudge_strength(self, direction: int) -> None:
        with self._lock:
            self.set_strength(round(self.strength + direction * self.strength_step, 4))


def _prompt_command(c: StyleController, value: Any, command: dict[str, Any]) -> None:
    c.apply_prompt(str(value), command.get("mode"), command.get("transition_frames"))


def _blend_command(c: StyleController, value: Any, command: dict[str, Any]) -> None:
    prompts = tuple(WeightedPrompt(str(p["text"]), float(p.get("weight", 1.0))) for p in value)
    mode = command.get("mode", "cut")
    frames = int(command.get("transition_frames", 0 if mode != "transition" else 15))
    c.apply_prompt(PromptChange(prompts, mode=mode, transition_frames=frames))


def _action_command(c: StyleController, value: Any, command: dict[str, Any]) -> None:
    if not c.run_action(str(value)):
        raise ValueError(f"unknown action {value!r}")


# CustomEvent command keys and what each does with its value.
COMMANDS: dict[str, Callable[[StyleController, Any, dict[str, Any]], None]] = {
    "action": _action_command,
    "prompt": _prompt_command,
    "prompts": _blend_command,
    "style": lambda c, v, _: c.select_style(v),
    "strength": lambda c, v, _: c.set_strength(v),
    "enabled": lambda c, v, _: c.set_enabled(bool(v)),
}

"""The interface between the daemon and whatever turns frames into frames.

The daemon's worker thread is the only caller of a pipeline: every method runs on that one
thread, between batches, so a pipeline needs no locks. Frames are ``uint8`` RGB arrays of
shape ``(H, W, 3)``. Protobuf types never reach a pipeline; these plain dataclasses do.

``PassthroughPipeline`` returns its inputs: the daemon serves it when no model is configured
or the model failed to load, so streams keep flowing (fail open).
"""
from __future__ import annotations

import abc
import logging
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

log = logging.getLogger(__name__)

PROMPT_MODES = ("cut", "recache", "transition")
INTERPOLATIONS = ("lerp", "slerp")
MAX_BLEND = 4


@dataclass(frozen=True)
class WeightedPrompt:
    text: str
    weight: float = 1.0


@dataclass(frozen=True)
class PromptChange:
    """A prompt (or a blend of up to four) and how to switch to it."""

    prompts: tuple[WeightedPrompt, ...]
    mode: str = "cut"  # one of PROMPT_MODES
    transition_frames: int = 0  # "transition": frames until the target is reached exactly
    interpolation: str = "slerp"  # one of INTERPOLATIONS

    def __post_init__(self) -> None:
        if not 1 <= len(self.prompts) <= MAX_BLEND:
            raise ValueError(f"a prompt blend has 1 to {MAX_BLEND} prompts, got {len(self.prompts)}")
        if self.mode not in PROMPT_MODES:
            raise ValueError(f"prompt mode must be one of {PROMPT_MODES}, got {self.mode!r}")
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {INTERPOLATIONS}, got {self.interpolation!r}")
        if self.mode == "transition" and self.transition_frames < 1:
            raise ValueError("a transition needs transition_frames >= 1")
        for p in self.prompts:
            if not p.text.strip():
                raise ValueError("a prompt must not be empty")
            if not p.weight > 0:
                raise ValueError(f"prompt weights must be > 0, got {p.weight}")

    @classmethod
    def single(cls, text: str) -> "PromptChange":
        return cls(prompts=(WeightedPrompt(text),))

    @property
    def label(self) -> str:
        """Short human-readable form, for logs and status."""
        if len(self.prompts) == 1:
            return self.prompts[0].text
        return " + ".join(f"{p.weight:g}*{p.text}" for p in self.prompts)


@dataclass(frozen=True)
class SessionParams:
    """What a pipeline needs to open a session."""

    width: int
    height: int
    prompt: PromptChange
    strength: float | None = None  # None: the model's default
    seed: int | None = None  # None: random


@dataclass(frozen=True)
class StyleInfo:
    name: str
    prompt: str
    description: str = ""


@dataclass(frozen=True)
class PresetInfo:
    name: str
    description: str = ""


class Pipeline(abc.ABC):
    """Frames in, frames out, for many sessions at once. Called from one thread only
    (``prepare_prompt`` excepted)."""

    name: str = "pipeline"
    device: str = "cpu"
    note: str = ""  # why this pipeline is serving, when it is a fallback

    @abc.abstractmethod
    def open_session(self, session_id: str, params: SessionParams) -> None:
        """Allocate the session's state. Raise ValueError for settings it cannot serve."""

    @abc.abstractmethod
    def close_session(self, session_id: str) -> None:
        """Free the session's state. Unknown ids are ignored."""

    @abc.abstractmethod
    def step(self, batch: Sequence[tuple[str, np.ndarray]]) -> list[np.ndarray | Exception]:
        """One output frame per (session_id, frame (H, W, 3) uint8) in ``batch``, same order.

        A frame that fails yields its exception in its place; the other frames still succeed.
        """

    @abc.abstractmethod
    def set_prompt(self, session_id: str, change: PromptChange) -> None:
        """Switch the session's prompt as ``change.mode`` says."""

    def prepare_prompt(self, change: PromptChange) -> None:
        """Do ahead, on the caller's thread, the slow part of a later ``set_prompt`` or
        ``open_session`` with ``change`` (embedding new prompt text), so that the change itself,
        on the frame loop's thread, does not hold up other sessions' frames. The one method that
        may be called from another thread; it must not change any session. Raise ValueError for
        a prompt the pipeline cannot take."""

    def set_params(self, session_id: str, strength: float | None = None, seed: int | None = None) -> None:
        """Change strength and/or seed; ``None`` leaves a value as it is."""

    def reset(self, session_id: str) -> None:
        """Forget the session's history."""

    def styles(self) -> list[StyleInfo]:
        return []

    def presets(self) -> list[PresetInfo]:
        return []

    def warm(self, sizes: Sequence[tuple[int, int]]) -> None:
        """Build ahead of time what the first frame of a stream at each (width, height) of
        ``sizes`` would build, and keep it while no stream uses it. Must not change any output."""

    def build_counts(self) -> dict[str, int]:
        """How often each kind of lazily built state was built so far (metrics and tests)."""
        return {}


@dataclass
class _PassthroughSession:
    params: SessionParams
    prompt: PromptChange = field(init=False)

    def __post_init__(self) -> None:
        self.prompt = self.params.prompt


class PassthroughPipeline(Pipeline):
    """Returns every frame unchanged: the daemon's fail-open pipeline."""

    name = "passthrough"

    def __init__(self, note: str = "") -> None:
        self.note = note
        self._sessions: dict[str, _PassthroughSession] = {}

    def open_session(self, session_id: str, params: SessionParams) -> None:
        self._sessions[session_id] = _PassthroughSession(params)

    def close_session(self, session_id: str) -> None:
        self._sessions.pop(session_id, None)

    def step(self, batch: Sequence[tuple[str, np.ndarray]]) -> list[np.ndarray | Exception]:
        out: list[np.ndarray | Exception] = []
        for session_id, frame in batch:
            if session_id not in self._sessions:
                out.append(KeyError(f"unknown session {session_id}"))
            else:
                out.append(frame)
        return out

    def set_prompt(self, session_id: str, change: PromptChange) -> None:
        self._sessions[session_id].prompt = change

    def styles(self) -> list[StyleInfo]:
        return [StyleInfo("original", "original", "the input, unchanged")]


def build_pipeline(model) -> Pipeline:
    """The pipeline that ``model`` (a ``config.ModelConfig``) asks for, or passthrough when it
    cannot be loaded: the daemon keeps streams alive and says why in its status."""
    if model.pipeline == "passthrough":
        return PassthroughPipeline(note="configured: model.pipeline = passthrough")
    try:
        from .generator_pipeline import GeneratorPipeline

        pipeline = GeneratorPipeline.load(preset=model.preset, checkpoint=model.checkpoint or None,
                                          device=model.device, dtype=model.dtype, cuda_graphs=model.cuda_graphs,
                                          lanes=model.max_batch if model.cuda_graphs else 0,
                                          prompt_snap=model.prompt_snap, steady_noise=model.steady_noise,
                                          fp8_linears=model.fp8_linears)
        if model.executor != "graph":
            # The reason for a fallback is logged; warm up again so the first frame does not compile.
            if pipeline.generator.use_executor(model.executor) is None:
                pipeline.warmup()
        return pipeline
    except Exception as exc:  # fail open: any load failure serves frames unchanged
        log.error("model %s could not be loaded, serving passthrough: %s", model.preset, exc)
        return PassthroughPipeline(note=f"model {model.preset!r} failed to load: {exc}")

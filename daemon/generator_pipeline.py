"""The daemon's diffusion pipeline: ``Pipeline`` on top of ``morphcam.model.StreamGenerator``.

Frames arrive as ``uint8`` RGB ``(H, W, 3)`` arrays (float arrays in [0, 1] are accepted too)
and leave as ``uint8``. A step groups the batch by frame size, runs each group through the
generator in one batch, and puts an exception in the slot of any frame that cannot be served
(unknown session, wrong size, non-finite pixels, a failing group) while the rest succeed.
Style names from ``styles()`` may be used as prompts; they map to their canonical prompt.
Any frame size is served: frames are padded (edge pixels repeated) up to the model's size
multiple (16 for the presets, so 1920x1080 runs at 1920x1088) and the output is cropped back.
On CUDA each group of sessions replays a captured CUDA graph of the whole frame
(``CudaGraphRunner``, one per group, captured on the group's first frame); with
``cuda_graphs=False``, or if a capture fails, steps run eagerly.
"""
from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from morphcam.model.checkpoint import load_model
from morphcam.model.config import PRESET_DESCRIPTIONS, ModelConfig
from morphcam.model.cuda_graph import CudaGraphRunner
from morphcam.model.generator import StreamGenerator, StreamSession
from morphcam.model.styles import STYLES, style_prompt

from .pipeline import Pipeline, PresetInfo, PromptChange, SessionParams, StyleInfo

log = logging.getLogger(__name__)

_DTYPES = {
    "float32": torch.float32, "fp32": torch.float32,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    "float16": torch.float16, "fp16": torch.float16,
}


def _resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"device {device!r} asked for but no CUDA GPU is visible: use device = \"cpu\" or \"auto\""
            )
        dev = torch.device("cuda", dev.index or 0)
    return dev


def _resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of auto, {', '.join(_DTYPES)}; got {dtype!r}")
    return _DTYPES[dtype]


@dataclass
class _Session:
    """A generator session plus the client's frame size (the generator's may be padded)."""

    stream: StreamSession
    width: int
    height: int


def _prompts(change: PromptChange) -> list[tuple[str, float]]:
    return [(style_prompt(p.text), p.weight) for p in change.prompts]


class GeneratorPipeline(Pipeline):
    """Serves the diffusion generator to the daemon. Build it with ``GeneratorPipeline.load``."""

    # Captured graphs kept at once (each holds its own intermediates); the oldest goes first.
    MAX_GRAPHS = 8

    def __init__(self, generator: StreamGenerator, preset: str, cuda_graphs: bool = True) -> None:
        self.generator = generator
        self.name = f"generator:{preset}"
        dev = generator.device
        self.device = f"{dev.type}:{dev.index or 0}" if dev.type == "cuda" else dev.type
        self._sessions: dict[str, _Session] = {}
        self.cuda_graphs = cuda_graphs and dev.type == "cuda"
        # One runner per group of sessions (by identity, in batch order) and frame size.
        self._runners: dict[tuple, CudaGraphRunner] = {}

    @classmethod
    def load(
        cls,
        preset: str = "tiny",
        checkpoint: str | None = None,
        device: str = "auto",
        dtype: str = "auto",
        cuda_graphs: bool = True,
    ) -> "GeneratorPipeline":
        """Load the model (``checkpoint``, else the preset's shipped weights, else random weights).

        ``cuda_graphs``: on a CUDA device, replay each group's frames as one captured graph.
        """
        ModelConfig.from_name(preset)  # unknown presets fail here, naming the valid ones
        dev = _resolve_device(device)
        model = load_model(preset, checkpoint, device=dev, dtype=_resolve_dtype(dtype, dev))
        if model.config.frames_per_step != 1:
            raise ValueError(
                f"model {model.config.name!r} generates {model.config.frames_per_step} frames per step; the "
                f"daemon streams one frame at a time: use a checkpoint with frames_per_step = 1"
            )
        pipeline = cls(StreamGenerator(model), model.config.name, cuda_graphs=cuda_graphs)
        pipeline.warmup()
        return pipeline

    def warmup(self, width: int = 256, height: int = 144) -> None:
        """One short throwaway stream, so that the first real frame does not pay for loading the
        text encoder and for the device's first-use set-up (seconds on a GPU)."""
        from .sample import facecam_frame

        session_id = "warmup"
        self.open_session(session_id, SessionParams(width, height, PromptChange.single("original"), seed=0))
        try:
            for i in range(2):
                out = self.step([(session_id, facecam_frame(i / 30, width, height))])[0]
                if isinstance(out, Exception):
                    raise out
        finally:
            self.close_session(session_id)

    # ---- sessions ---------------------------------------------------------------------------
    def open_session(self, session_id: str, params: SessionParams) -> None:
        if params.width < 1 or params.height < 1:
            raise ValueError(f"frame size {params.width}x{params.height} is empty")
        m = self.generator.config.frame_multiple
        session = self.generator.open_session(
            -(-params.width // m) * m,
            -(-params.height // m) * m,
            _prompts(params.prompt),
            strength=params.strength,
            seed=params.seed,
        )
        self._sessions[session_id] = _Session(session, params.width, params.height)

    def close_session(self, session_id: str) -> None:
        entry = self._sessions.pop(session_id, None)
        if entry is not None:  # its graphs point at its cache: free them
            self._runners = {k: r for k, r in self._runners.items() if entry.stream not in r.sessions}

    def _session(self, session_id: str) -> StreamSession:
        return self._entry(session_id).stream

    def _entry(self, session_id: str) -> _Session:
        try:
            return self._sessions[session_id]
        except KeyError:
            raise KeyError(f"unknown session {session_id}: open it first") from None

    def set_prompt(self, session_id: str, change: PromptChange) -> None:
        self.generator.set_prompt(
            self._session(session_id), _prompts(change), change.mode, change.transition_frames, change.interpolation
        )

    def set_params(self, session_id: str, strength: float | None = None, seed: int | None = None) -> None:
        self.generator.set_params(self._session(session_id), strength=strength, seed=seed)

    def reset(self, session_id: str) -> None:
        self.generator.reset(self._session(session_id))

    def styles(self) -> list[StyleInfo]:
        return [StyleInfo(s.name, s.prompt, s.description) for s in STYLES]

    def presets(self) -> list[PresetInfo]:
        return [PresetInfo(name, PRESET_DESCRIPTIONS.get(name, "")) for name in ModelConfig.preset_names()]

    # ---- frames -----------------------------------------------------------------------------
    def _to_tensor(self, session: _Session, frame: np.ndarray) -> torch.Tensor:
        """(H, W, 3) uint8 (or float in [0, 1]) -> (3, H', W') float32 in [-1, 1], padded to the
        generator's size; ValueError if unusable."""
        if not isinstance(frame, np.ndarray):
            raise ValueError(f"a frame must be a numpy array, got {type(frame).__name__}")
        expected = (session.height, session.width, 3)
        if frame.shape != expected:
            raise ValueError(
                f"frame shape {frame.shape} does not match the session's (H, W, 3) = {expected}: reopen the "
                f"session with the new size"
            )
        # Frames may be read-only views of the wire buffer: the float conversion is the one copy.
        if frame.dtype == np.uint8:
            x = torch.from_numpy(frame.astype(np.float32)).div_(127.5).sub_(1.0)
        elif np.issubdtype(frame.dtype, np.floating):
            if not np.isfinite(frame).all():
                raise ValueError("frame has NaN or infinite pixels")
            x = torch.from_numpy(frame.astype(np.float32)).clamp_(0, 1).mul_(2.0).sub_(1.0)
        else:
            raise ValueError(f"frames must be uint8 RGB (or float in [0, 1]), got {frame.dtype}")
        x = x.permute(2, 0, 1)
        pad_w, pad_h = session.stream.width - session.width, session.stream.height - session.height
        if pad_w or pad_h:
            x = F.pad(x[None], (0, pad_w, 0, pad_h), mode="replicate")[0]
        return x

    def _run(self, sessions: list[StreamSession], frames: torch.Tensor) -> torch.Tensor:
        """One generator step for a group, through its CUDA graph when graphs are on."""
        if not self.cuda_graphs:
            return self.generator.step(sessions, frames)
        key = (tuple(id(s) for s in sessions), frames.shape[-1], frames.shape[-2])
        runner = self._runners.pop(key, None)
        if runner is None:
            if len(self._runners) >= self.MAX_GRAPHS:
                self._runners.pop(next(iter(self._runners)))
            runner = CudaGraphRunner(self.generator, sessions, frames.shape[-1], frames.shape[-2])
        self._runners[key] = runner  # re-inserted: the dict's order is least recently used first
        out = runner.step(frames)
        if runner.capture_error is not None:
            log.warning("CUDA graph capture failed, running eagerly from now on: %s", runner.capture_error)
            self.cuda_graphs = False
            self._runners.clear()
        return out

    def step(self, batch: Sequence[tuple[str, np.ndarray]]) -> list[np.ndarray | Exception]:
        out: list[np.ndarray | Exception] = [RuntimeError("not processed")] * len(batch)
        groups: dict[tuple[int, int], list[tuple[int, _Session, torch.Tensor]]] = defaultdict(list)
        seen: set[str] = set()
        for i, (session_id, frame) in enumerate(batch):
            try:
                session = self._entry(session_id)
                if session_id in seen:
                    raise ValueError(f"session {session_id} has two frames in one batch: send one frame per step")
                seen.add(session_id)
                key = (session.stream.width, session.stream.height)
                groups[key].append((i, session, self._to_tensor(session, frame)))
            except Exception as e:  # one bad frame must not fail the batch
                out[i] = e
        for items in groups.values():
            try:
                frames = torch.stack([t for _, _, t in items])[:, None].to(self.generator.device)
                result = self._run([s.stream for _, s, _ in items], frames)
                pixels = result[:, 0].float().permute(0, 2, 3, 1).cpu().numpy()
            except Exception as e:  # a failing group fails only its own frames
                log.exception("generator step failed for %d session(s)", len(items))
                for i, _, _ in items:
                    out[i] = e
                continue
            for (i, session, _), img in zip(items, pixels):
                img = img[: session.height, : session.width]
                if not np.isfinite(img).all():
                    out[i] = FloatingPointError(
                        "the model produced NaN pixels: reset the session (or the model is broken)"
                    )
                    continue
                out[i] = np.clip((img + 1.0) * 127.5 + 0.5, 0, 255).astype(np.uint8)
        return out

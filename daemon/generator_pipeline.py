"""The daemon's diffusion pipeline: ``Pipeline`` on top of ``morphcam.model.StreamGenerator``.

Frames arrive as ``uint8`` RGB ``(H, W, 3)`` arrays (float arrays in [0, 1] are accepted too,
rounded to uint8) and leave as ``uint8``. A step groups the batch by frame size, runs each group through the
generator in one batch, and puts an exception in the slot of any frame that cannot be served
(unknown session, wrong size, non-finite pixels, a failing group) while the rest succeed.
Style names from ``styles()`` may be used as prompts; they map to their canonical prompt.
Any frame size is served: frames are padded (edge pixels repeated) up to the model's size
multiple (16 for the presets, so 1920x1080 runs at 1920x1088) and the output is cropped back.

On CUDA the sessions of one frame size keep their caches in the lanes of one ``LanePool`` and
each batch replays the captured graph of its batch size (``LaneGraphs``, captured lazily), so
sessions joining and leaving never force a recapture. Sessions beyond the pool's lanes get their
own cache and a graph per group of sessions (``CudaGraphRunner``). With ``cuda_graphs=False``, or
once a capture fails, steps run eagerly. uint8 frames go to the device as uint8 through pinned
buffers and come back as uint8: the pixel conversions run on the device, not in numpy.

A size's pool, graphs and buffers go with its last session, except at the sizes ``warm`` made
ready at start-up: those stay (with a spare cache for a session outside the pool), so that a
stream's first frame there replays ready work instead of allocating, compiling and capturing.
"""
from __future__ import annotations

import logging
import math
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch

from morphcam.model.checkpoint import load_model
from morphcam.model.prompt_snap import DEFAULT_THRESHOLD as DEFAULT_SNAP, PromptSnap, builtin_wordings
from morphcam.model.config import PRESET_DESCRIPTIONS, ModelConfig
from morphcam.model.fp8 import fp8_unavailable, to_fp8
from morphcam.model.cache_batch import LaneCaches, LanePool
from morphcam.model.cuda_graph import CudaGraphRunner, LaneGraphs
from morphcam.model.generator import StreamGenerator, StreamSession
from morphcam.model.kv_cache import KVRingCache
from morphcam.model.styles import STYLES, style_prompt

from .frame_transfer import FrameTransfer
from .pipeline import Pipeline, PresetInfo, PromptChange, SessionParams, StyleInfo, WeightedPrompt

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
    lane: int | None = None  # its lane in its size's pool; None: its own cache
    own_cache: KVRingCache | None = None  # the cache it took outside the pool (given back on close)


@dataclass
class _SizeGroup:
    """What the sessions of one (padded) frame size share: their lane pool, its graphs and the
    staging buffers. Dropped with its last session unless ``warm``."""

    pool: LanePool | None
    graphs: LaneGraphs | None
    transfer: FrameTransfer
    sessions: int = 0
    warm: bool = False  # made ready at start-up: kept with no sessions
    spares: list[KVRingCache] = field(default_factory=list)  # caches of closed sessions outside the pool


def _prompts(change: PromptChange) -> list[tuple[str, float]]:
    return [(style_prompt(p.text), p.weight) for p in change.prompts]


class GeneratorPipeline(Pipeline):
    """Serves the diffusion generator to the daemon. Build it with ``GeneratorPipeline.load``."""

    # Captured graphs per group of sessions outside the lane pools (each holds its own intermediates).
    MAX_GRAPHS = 8
    # A pool takes at most this share of the device memory free when it is made.
    POOL_MEMORY_SHARE = 0.5
    # Caches a warm size keeps for sessions outside its pool (all of them on a CPU, which serves
    # about one live stream in real time): allocating one costs 15-150 ms there (tiny 256x144-512x288).
    SPARE_CACHES = 1

    def __init__(self, generator: StreamGenerator, preset: str, cuda_graphs: bool = True,
                 lanes: int | None = None, graph_record: Callable | None = None) -> None:
        """``lanes``: sessions per frame size whose caches share one pool (and its per-batch-size
        graphs); default 16 with CUDA graphs, else 0 (each session its own cache).
        ``graph_record``: how ``LaneGraphs`` records a step (CUDA graph capture by default); tests
        pass a stand-in that lets the pools' graph bookkeeping run on a CPU."""
        self.generator = generator
        self.name = f"generator:{preset}"
        dev = generator.device
        self.device = f"{dev.type}:{dev.index or 0}" if dev.type == "cuda" else dev.type
        self._sessions: dict[str, _Session] = {}
        self._graph_record = graph_record
        self.cuda_graphs = cuda_graphs and (dev.type == "cuda" or graph_record is not None)
        self.lanes = (16 if self.cuda_graphs else 0) if lanes is None else lanes
        self._groups: dict[tuple[int, int], _SizeGroup] = {}
        # One runner per group of sessions outside the pools (by identity, in batch order) and size.
        self._runners: dict[tuple, CudaGraphRunner] = {}
        # What a first frame builds, counted as it is built (``build_counts``): size groups (pool,
        # graph table, staging buffers), caches outside a pool and captured graphs.
        self._builds = {"groups": 0, "caches": 0, "graphs": 0}

    @classmethod
    def load(
        cls,
        preset: str = "tiny",
        checkpoint: str | None = None,
        device: str = "auto",
        dtype: str = "auto",
        cuda_graphs: bool = True,
        lanes: int | None = None,
        prompt_snap: float = 0.0,
        steady_noise: str = "off",
        fp8_linears: bool = False,
    ) -> "GeneratorPipeline":
        """Load the model (``checkpoint``, else the preset's shipped weights, else random weights).

        ``cuda_graphs``: on a CUDA device, replay each batch's frames as one captured graph;
        ``lanes``: see ``GeneratorPipeline`` (the daemon passes its ``max_batch``);
        ``prompt_snap``: see ``config.ModelConfig.prompt_snap`` (-1 auto, 0 off, else the threshold);
        ``steady_noise``: see ``StreamGenerator`` ("off", "on", "auto");
        ``fp8_linears``: the block linears on FP8 tensor cores where the GPU and dtype allow
        (``morphcam.model.fp8``); elsewhere a warning says why and the model keeps its precision.
        """
        ModelConfig.from_name(preset)  # unknown presets fail here, naming the valid ones
        dev = _resolve_device(device)
        model = load_model(preset, checkpoint, device=dev, dtype=_resolve_dtype(dtype, dev))
        if model.config.frames_per_step != 1:
            raise ValueError(
                f"model {model.config.name!r} generates {model.config.frames_per_step} frames per step; the "
                f"daemon streams one frame at a time: use a checkpoint with frames_per_step = 1"
            )
        if fp8_linears:
            reason = fp8_unavailable(model.dit)
            if reason is None:
                to_fp8(model.dit)
                log.info("model %s: block linears on FP8 tensor cores", model.config.name)
            else:
                log.warning("model.fp8_linears is on but the model keeps its precision: %s", reason)
        # Lane pools are for graphs per batch size; a CPU steps each session on its own cache.
        if prompt_snap < 0:  # auto: the embedded default is trained on the built-in styles' wordings
            prompt_snap = DEFAULT_SNAP if checkpoint is None else 0.0
        snap = PromptSnap(builtin_wordings(), prompt_snap) if prompt_snap > 0 else None
        generator = StreamGenerator(model, prompt_snap=snap, steady_noise=steady_noise)
        pipeline = cls(generator, model.config.name, cuda_graphs=cuda_graphs,
                       lanes=lanes if dev.type == "cuda" else 0)
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

    def warm(self, sizes: Sequence[tuple[int, int]]) -> None:
        """Make each (width, height) of ``sizes`` ready for a stream's first frame, and keep it so.

        First every named style's prompt is embedded, so that opening a stream or switching to a
        style by name runs no text encoder. Then, per size, what its first frames would build:
        its size group (lane pool, staging buffers for a full batch), on a GPU a graph per batch
        size the pool can run (an eager step, which compiles the kernels' variants for the
        size, and a capture each: tens of ms apiece), a spare cache where sessions have their own,
        and what a prompt switch runs (a transition, a KV-recache). The throwaway sessions are
        closed again; a lane or spare cache is emptied when it is next taken, so nothing they
        computed reaches a later stream. A size that cannot be warmed is logged and builds lazily.
        """
        if not sizes:
            return  # warm-up is off
        try:
            for style in STYLES:
                self.generator.embed(style.prompt)
        except Exception as exc:  # fail open, as below: a style's first use embeds it instead
            log.warning("could not embed the styles' prompts at start-up: %s", exc)
        for width, height in sizes:
            try:
                self._warm_size(width, height)
            except Exception as exc:  # fail open: the daemon serves anyway, the size builds on first use
                log.warning("could not make %dx%d ready at start-up (its first frame will build it): %s",
                            width, height, exc)

    def _warm_size(self, width: int, height: int) -> None:
        from .sample import facecam_frame

        t0 = time.perf_counter()
        m = self.generator.config.frame_multiple
        key = (-(-width // m) * m, -(-height // m) * m)
        self.generator.config.latent_size(*key)
        group = self._group(*key)
        group.warm = True
        # One graph per batch size: all that the pool can run and its graph table keeps.
        batches = min(group.pool.lanes, group.graphs.max_graphs) if group.graphs is not None else 1
        group.transfer.reserve(batches)
        ids = [f"warm-{width}x{height}-{i}" for i in range(batches)]
        frame = facecam_frame(0.0, width, height)
        captured = self._builds["graphs"]
        try:
            for i, session_id in enumerate(ids):
                self.open_session(session_id, SessionParams(width, height, PromptChange.single("original"), seed=i))
            for b in range(1, batches + 1):
                self._warm_step([(session_id, frame) for session_id in ids[:b]])
            # A prompt switch's own work: a transition's interpolation, and KV-recache's forward
            # over the cached frames (its kernel variants differ from a stream step's).
            other = STYLES[1].prompt
            self.set_prompt(ids[0], PromptChange((WeightedPrompt(other),), mode="transition", transition_frames=2))
            self._warm_step([(ids[0], frame)])
            self.set_prompt(ids[0], PromptChange((WeightedPrompt(other),), mode="recache"))
            self._warm_step([(ids[0], frame)])
        except BaseException:
            group.warm = False  # a half-made size is not kept: it builds on first use, as before
            raise
        finally:
            for session_id in ids:
                self.close_session(session_id)
            if not group.warm and not group.sessions:
                self._groups.pop(key, None)
        log.info("made %dx%d ready in %.2f s (%d graphs captured)", width, height, time.perf_counter() - t0,
                 self._builds["graphs"] - captured)

    def _warm_step(self, batch: list[tuple[str, np.ndarray]]) -> None:
        for out in self.step(batch):
            if isinstance(out, Exception):
                raise out

    def build_counts(self) -> dict[str, int]:
        """Size groups, caches outside a pool and graphs built so far, and prompts embedded."""
        return {**self._builds, "prompts": self.generator.text.embedded}

    # ---- sessions ---------------------------------------------------------------------------
    def _group(self, width: int, height: int) -> _SizeGroup:
        key = (width, height)
        if key not in self._groups:
            gen = self.generator
            pool = graphs = None
            lanes = self._pool_lanes(width, height)
            if lanes:
                pool = LanePool(gen.config, gen.config.latent_size(width, height), lanes, gen.device, gen.dtype)
                if self.cuda_graphs:
                    graphs = LaneGraphs(gen, pool, width, height, record=self._graph_record)
            self._groups[key] = _SizeGroup(pool, graphs, FrameTransfer(gen.device, width, height))
            self._builds["groups"] += 1
        return self._groups[key]

    def _pool_lanes(self, width: int, height: int) -> int:
        """``self.lanes``, fewer where the device's free memory would not hold them."""
        if not self.lanes or self.generator.device.type != "cuda":
            return self.lanes
        gen = self.generator
        specs = KVRingCache.buffer_specs(gen.config, gen.config.latent_size(width, height), gen.dtype)
        lane_bytes = sum(math.prod(shape) * torch.empty((), dtype=dt).element_size() for shape, dt in specs.values())
        free, _ = torch.cuda.mem_get_info(gen.device)
        return min(self.lanes, int(self.POOL_MEMORY_SHARE * free // lane_bytes))

    def open_session(self, session_id: str, params: SessionParams) -> None:
        if params.width < 1 or params.height < 1:
            raise ValueError(f"frame size {params.width}x{params.height} is empty")
        m = self.generator.config.frame_multiple
        width, height = -(-params.width // m) * m, -(-params.height // m) * m
        self.generator.config.latent_size(width, height)  # sizes the model cannot take fail before a pool is made
        group = self._group(width, height)
        taken = group.pool.acquire() if group.pool is not None else None
        lane, cache = taken if taken is not None else (None, None)
        own = None
        if lane is None and group.spares:
            own = cache = group.spares.pop()
            cache.reset()  # as a lane is emptied: the last session's frames are masked out, never read
        try:
            session = self.generator.open_session(
                width, height, _prompts(params.prompt), strength=params.strength, seed=params.seed, cache=cache
            )
        except Exception:
            if lane is not None:
                group.pool.release(lane)
            if own is not None:
                group.spares.append(own)
            if not group.sessions and not group.warm:
                del self._groups[(width, height)]
            raise
        if lane is None:
            own = session.cache
            if cache is None:
                self._builds["caches"] += 1
        group.sessions += 1
        self._sessions[session_id] = _Session(session, params.width, params.height, lane, own)

    def close_session(self, session_id: str) -> None:
        entry = self._sessions.pop(session_id, None)
        if entry is None:
            return
        key = (entry.stream.width, entry.stream.height)
        group = self._groups[key]
        group.sessions -= 1
        if entry.lane is not None:
            group.pool.release(entry.lane)
        elif group.warm and len(group.spares) < self.SPARE_CACHES:
            group.spares.append(entry.own_cache)
        if not group.sessions and not group.warm:  # the pool, graphs and buffers go with the last session
            del self._groups[key]
        # Graphs of groups outside the pools point at the session's cache: free them.
        self._runners = {k: r for k, r in self._runners.items() if entry.stream not in r.sessions}

    def pooled(self, session_id: str) -> bool:
        """Whether the session's cache is a lane of its size's pool."""
        return self._entry(session_id).lane is not None

    def _session(self, session_id: str) -> StreamSession:
        return self._entry(session_id).stream

    def _entry(self, session_id: str) -> _Session:
        try:
            return self._sessions[session_id]
        except KeyError:
            raise KeyError(f"unknown session {session_id}: open it first") from None

    def prepare_prompt(self, change: PromptChange) -> None:
        self.generator.prepare_prompts(_prompts(change))

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
    def _check_frame(self, session: _Session, frame: np.ndarray) -> None:
        """ValueError unless ``frame`` is (H, W, 3) uint8 (or float in [0, 1]) at the session's size."""
        if not isinstance(frame, np.ndarray):
            raise ValueError(f"a frame must be a numpy array, got {type(frame).__name__}")
        expected = (session.height, session.width, 3)
        if frame.shape != expected:
            raise ValueError(
                f"frame shape {frame.shape} does not match the session's (H, W, 3) = {expected}: reopen the "
                f"session with the new size"
            )
        if np.issubdtype(frame.dtype, np.floating):
            if not np.isfinite(frame).all():
                raise ValueError("frame has NaN or infinite pixels")
        elif frame.dtype != np.uint8:
            raise ValueError(f"frames must be uint8 RGB (or float in [0, 1]), got {frame.dtype}")

    @staticmethod
    def _as_uint8(frame: np.ndarray) -> np.ndarray:
        """Float frames in [0, 1] to uint8 (rounded); uint8 frames as they are."""
        if frame.dtype == np.uint8:
            return frame
        return (np.clip(frame, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)

    def _run_group(self, group: _SizeGroup, items: list[_Session], frames: torch.Tensor) -> torch.Tensor:
        """One generator step for sessions of one size: lanes of the pool through their graphs (or
        eagerly), the others through their own caches."""
        gen = self.generator
        pooled = [i for i, s in enumerate(items) if s.lane is not None]
        if len(pooled) < len(items):
            if not pooled:
                return self._run([s.stream for s in items], frames)
            out = torch.empty_like(frames, dtype=gen.dtype)
            own = [i for i in range(len(items)) if items[i].lane is None]
            out[own] = self._run([items[i].stream for i in own], frames[own])
            out[pooled] = self._run_group(group, [items[i] for i in pooled], frames[pooled])
            return out
        sessions, lanes = [s.stream for s in items], [s.lane for s in items]
        if group.graphs is not None and self.cuda_graphs:
            captured = group.graphs.captures
            out = group.graphs.step(sessions, lanes, frames)
            self._builds["graphs"] += group.graphs.captures - captured
            if group.graphs.capture_error is not None:
                log.warning("CUDA graph capture failed, running eagerly from now on: %s", group.graphs.capture_error)
                self.cuda_graphs = False
                for g in self._groups.values():
                    g.graphs = None
                self._runners.clear()
            return out
        with torch.inference_mode():  # prepare's buffers are inference tensors
            inputs = gen.prepare(sessions, frames)
            inputs.lanes.copy_(torch.tensor(lanes))
            out = gen.forward(sessions, inputs, LaneCaches(group.pool, inputs.lanes))
        gen.finish(sessions)
        return out

    def _run(self, sessions: list[StreamSession], frames: torch.Tensor) -> torch.Tensor:
        """One generator step for sessions with their own caches, through a CUDA graph of the group
        when graphs are on."""
        if not self.cuda_graphs:
            return self.generator.step(sessions, frames)
        key = (tuple(id(s) for s in sessions), frames.shape[-1], frames.shape[-2])
        runner = self._runners.pop(key, None)
        if runner is None:
            if len(self._runners) >= self.MAX_GRAPHS:
                self._runners.pop(next(iter(self._runners)))
            runner = CudaGraphRunner(self.generator, sessions, frames.shape[-1], frames.shape[-2])
        self._runners[key] = runner  # re-inserted: the dict's order is least recently used first
        captured = runner.captured
        out = runner.step(frames)
        self._builds["graphs"] += runner.captured and not captured
        if runner.capture_error is not None:
            log.warning("CUDA graph capture failed, running eagerly from now on: %s", runner.capture_error)
            self.cuda_graphs = False
            self._runners.clear()
        return out

    def step(self, batch: Sequence[tuple[str, np.ndarray]]) -> list[np.ndarray | Exception]:
        out: list[np.ndarray | Exception] = [RuntimeError("not processed")] * len(batch)
        groups: dict[tuple[int, int], list[tuple[int, _Session, np.ndarray]]] = defaultdict(list)
        seen: set[str] = set()
        for i, (session_id, frame) in enumerate(batch):
            try:
                session = self._entry(session_id)
                if session_id in seen:
                    raise ValueError(f"session {session_id} has two frames in one batch: send one frame per step")
                seen.add(session_id)
                self._check_frame(session, frame)
                groups[(session.stream.width, session.stream.height)].append((i, session, frame))
            except Exception as e:  # one bad frame must not fail the batch
                out[i] = e
        for key, items in groups.items():
            try:
                group = self._groups[key]
                frames = group.transfer.upload([self._as_uint8(f) for _, _, f in items])
                result = self._run_group(group, [s for _, s, _ in items], frames)
                pixels, finite = group.transfer.download(result)
            except Exception as e:  # a failing group fails only its own frames
                log.exception("generator step failed for %d session(s)", len(items))
                for i, _, _ in items:
                    out[i] = e
                continue
            for (i, session, _), img, ok in zip(items, pixels, finite):
                if not ok:
                    out[i] = FloatingPointError(
                        "the model produced NaN pixels: reset the session (or the model is broken)"
                    )
                    continue
                out[i] = img[: session.height, : session.width].copy()  # the buffer is reused next step
        return out

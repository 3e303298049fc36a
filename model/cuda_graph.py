"""CudaGraphRunner: one CUDA graph per (batch of sessions, frame size) for ``StreamGenerator``.

A stream step of the small presets is bound by kernel launches and Python, not by the GPU, so
replaying the whole frame (encode, every Euler step, decode) as one captured graph removes most
of its cost. ``StreamGenerator.forward`` is written for this: static shapes, every per-step
value in a device buffer (the ring's slots come from its device counter), no host syncs.

The graph bakes in the addresses of the sessions' caches and prompt buffers, so a runner serves
exactly the sessions it was built for. Per step the host still runs ``prepare`` (checks, prompt
transitions, each session's noise from its own generator, strength) and ``finish`` (the host
counters) around the replay, so a graphed stream computes what the eager one computes.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch

from .generator import StepInputs, StreamGenerator, StreamSession


class CudaGraphRunner:
    """Replays ``generator.forward`` for a fixed batch of ``sessions`` at ``width`` x ``height``.

    The first ``step`` runs eagerly (it also warms up: Triton compiles, cuBLAS picks kernels) and
    then captures the graph; later steps replay it. If the capture fails, the error is kept in
    ``capture_error`` and every step runs eagerly. A replayed ``step`` returns the runner's
    static output buffer, overwritten by the next step: copy or consume it first.
    """

    def __init__(
        self,
        generator: StreamGenerator,
        sessions: Sequence[StreamSession],
        width: int,
        height: int,
        forward: Callable[[Sequence[StreamSession], StepInputs], torch.Tensor] | None = None,
    ) -> None:
        """``forward``: what is captured, ``generator.forward`` by default (benchmarks pass a
        torch.compile'd one)."""
        if generator.device.type != "cuda":
            raise ValueError(f"CUDA graphs need a CUDA device, the generator is on {generator.device}")
        self.generator = generator
        self.forward = forward or generator.forward
        self.sessions = tuple(sessions)
        self.inputs: StepInputs = generator.new_inputs(len(self.sessions), width, height)
        self.graph: torch.cuda.CUDAGraph | None = None
        self.output: torch.Tensor | None = None
        self.capture_error: Exception | None = None

    @property
    def captured(self) -> bool:
        return self.graph is not None

    def step(self, frames: torch.Tensor) -> torch.Tensor:
        """frames: (B, F, 3, H, W) in [-1, 1]. Returns (B, F, 3, H, W), the runner's output buffer."""
        gen = self.generator
        gen.prepare(self.sessions, frames, into=self.inputs)
        if self.graph is None:
            out = self.forward(self.sessions, self.inputs)
            gen.finish(self.sessions)
            if self.capture_error is None:
                try:
                    self.capture()
                except Exception as exc:  # e.g. an op that syncs: the stream goes on eagerly
                    self.capture_error = exc
            return out
        self.graph.replay()
        gen.finish(self.sessions)
        return self.output

    def capture(self) -> None:
        """Record ``forward`` on the static inputs. Recording runs nothing, so no state moves;
        raises (and leaves the runner uncaptured) if a kernel in the step cannot be captured."""
        gen = self.generator
        torch.cuda.synchronize(gen.device)
        graph = torch.cuda.CUDAGraph()
        # thread_local: other daemon threads (frame decoding, previews) may touch CUDA meanwhile.
        with torch.inference_mode(), torch.cuda.graph(graph, capture_error_mode="thread_local"):
            output = self.forward(self.sessions, self.inputs)
        self.graph, self.output = graph, output

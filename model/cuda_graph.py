"""CUDA graphs of whole frames for ``StreamGenerator``: ``CudaGraphRunner`` (one graph for a fixed
batch of sessions) and ``LaneGraphs`` (one graph per batch size over the lanes of a ``LanePool``).

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

from .cache_batch import LaneCaches, LanePool
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
        # no_grad, not inference_mode: a torch.compile'd forward (benchmarks) cannot run under the
        # latter; generator.forward enters inference mode itself.
        with torch.no_grad(), torch.cuda.graph(graph, capture_error_mode="thread_local"):
            output = self.forward(self.sessions, self.inputs)
        self.graph, self.output = graph, output


class LaneGraphs:
    """One captured graph per batch size for the sessions of one ``LanePool`` (one frame size).

    The graph of batch size B reads its sessions' lanes, prompts, noise and strength from its
    static ``StepInputs``, so any B sessions of the pool replay it. Graphs are captured lazily, on
    the first step of each batch size (that step runs eagerly, which also warms up), at most
    ``max_graphs`` at once (the least recently used goes first), and all of them allocate their
    intermediates from one shared memory pool: they never run at the same time, so memory is
    about one step's intermediates plus each graph's small static inputs and output.
    A replayed ``step`` returns the graph's output buffer, overwritten by that graph's next replay.
    """

    def __init__(self, generator: StreamGenerator, pool: LanePool, width: int, height: int,
                 max_graphs: int = 16, record: Callable[[Callable[[], torch.Tensor]], tuple] | None = None) -> None:
        """``record(fn) -> (graph, output)``: how a step is captured (``graph.replay()`` reruns it
        into ``output``); CUDA graph capture by default. Tests pass a stand-in to run on a CPU."""
        if record is None and generator.device.type != "cuda":
            raise ValueError(f"CUDA graphs need a CUDA device, the generator is on {generator.device}")
        self.generator, self.pool, self.width, self.height = generator, pool, width, height
        self.max_graphs = max_graphs
        # batch size -> (inputs, graph or None, output or None); insertion order is recency.
        self._entries: dict[int, tuple[StepInputs, object | None, torch.Tensor | None]] = {}
        self._record = record or self._record_cuda_graph
        self._mempool = None  # one memory pool for all the graphs, made at the first capture
        self.capture_error: Exception | None = None
        self.captures = 0  # graphs captured so far (tests and logs)

    def batch_sizes(self) -> list[int]:
        """Batch sizes that have a captured graph, least recently used first."""
        return [b for b, (_, graph, _) in self._entries.items() if graph is not None]

    def step(self, sessions: Sequence[StreamSession], lanes: Sequence[int], frames: torch.Tensor) -> torch.Tensor:
        """sessions: B sessions of the pool, in lanes ``lanes`` (distinct); frames: (B, F, 3, H, W) in
        [-1, 1]. Returns (B, F, 3, H, W)."""
        gen, b = self.generator, len(sessions)
        if len(set(lanes)) != b or len(lanes) != b:
            raise ValueError(f"a batch needs one distinct lane per session, got {list(lanes)} for {b} sessions")
        entry = self._entries.pop(b, None)
        if entry is None:
            entry = (gen.new_inputs(b, self.width, self.height), None, None)
        self._entries[b] = entry
        inputs, graph, output = entry
        gen.prepare(sessions, frames, into=inputs)
        host = torch.tensor(list(lanes), dtype=torch.long)
        if inputs.lanes.is_cuda:  # from pinned memory the copy is asynchronous (pageable waits for the stream)
            host = host.pin_memory()
        inputs.lanes.copy_(host, non_blocking=True)
        if graph is not None:
            graph.replay()
            gen.finish(sessions)
            return output
        out = gen.forward(sessions, inputs, LaneCaches(self.pool, inputs.lanes))
        gen.finish(sessions)
        if self.capture_error is None:
            try:
                self._capture(b, sessions, inputs)
            except Exception as exc:  # the stream goes on eagerly; the caller decides what to log
                self.capture_error = exc
        return out

    def _capture(self, b: int, sessions: Sequence[StreamSession], inputs: StepInputs) -> None:
        gen = self.generator
        while len(self.batch_sizes()) >= self.max_graphs:
            oldest = self.batch_sizes()[0]
            self._entries[oldest] = (self._entries[oldest][0], None, None)
        graph, output = self._record(lambda: gen.forward(sessions, inputs, LaneCaches(self.pool, inputs.lanes)))
        self._entries[b] = (inputs, graph, output)
        self.captures += 1

    def _record_cuda_graph(self, fn: Callable[[], torch.Tensor]) -> tuple[torch.cuda.CUDAGraph, torch.Tensor]:
        """Capture ``fn`` (recording runs nothing, so no cache moves) into the shared memory pool."""
        torch.cuda.synchronize(self.generator.device)
        if self._mempool is None:
            self._mempool = torch.cuda.graph_pool_handle()
        graph = torch.cuda.CUDAGraph()
        with torch.inference_mode(), torch.cuda.graph(graph, pool=self._mempool, capture_error_mode="thread_local"):
            output = fn()
        return graph, output

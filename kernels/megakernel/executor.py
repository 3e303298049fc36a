"""MegakernelExecutor: runs the denoiser's blocks of one step from the instruction list.

``denoise`` has ``CausalDiT.forward``'s signature, so ``StreamGenerator`` calls it in place of
the network for batch-1 stream steps. The prologue (patch embedding, modulation tables, prompt
tokens) and epilogue (unpatchify) stay in torch; everything between, every block and the final
norm and projection, is the instruction list, run by the Triton mega-kernel
(``backend="triton"``) or by the torch interpreter (``backend="interpreter"``).

``support(device, dtype)`` says whether the mega-kernel can run here and, if not, why; the
generator falls back to the CUDA-graph path and reports that reason. ``check`` is the host half
of the watchdog: it waits (bounded) for the step and raises ``MegakernelError`` if the kernel
reported a timed-out wait, after which ``failed`` holds the reason.
"""
from __future__ import annotations

import logging
import time

import torch

from .buffers import StepBuffers, Weights, epilogue, prologue
from .interpreter import Interpreter
from .program import Program, Shape, compile_program

log = logging.getLogger(__name__)

BACKENDS = ("triton", "interpreter")
# Opt-in shared memory per block the default tiles need at least (``report``: tiny 80 KiB on sm_90,
# small 128 KiB on sm_80 and 144 KiB on sm_90; sm_80 has 163 KiB, sm_90 227 KiB, sm_86/89 99 KiB).
# A launch that still asks for more than the GPU has fails once and the network takes over.
MIN_SHARED_BYTES = 96 * 1024


class MegakernelError(RuntimeError):
    """The mega-kernel did not finish a step (a watchdog timeout); the executor is now off."""


def gpu_tiles(config) -> dict[str, int]:
    """Tile sizes for the GPU (bf16): 64-row tiles, 64 output columns, 64-deep K steps."""
    return dict(block_m=64 if config.dim >= 512 else 32, block_n=64, block_k=64, block_kv=64)


def cpu_tiles() -> dict[str, int]:
    """Small tiles for the interpreter (tl.dot needs every dimension >= 16)."""
    return dict(block_m=16, block_n=32, block_k=32, block_kv=16)


def support(device: torch.device | str, dtype: torch.dtype) -> str | None:
    """None if the Triton mega-kernel can run on ``device``; otherwise the reason it cannot."""
    from .. import dispatch

    device = torch.device(device)
    if not dispatch._triton_importable():
        return "triton is not installed (pip install 'morphcam[gpu]')"
    if device.type != "cuda":
        if dispatch.interpreting() and dtype != torch.bfloat16:
            return None
        return f"the mega-kernel needs a CUDA GPU, the model is on {device}"
    if not torch.cuda.is_available():
        return "CUDA is not available"
    major, minor = torch.cuda.get_device_capability(device)
    if major not in (8, 9):
        return f"the mega-kernel is built for Ampere (sm_80) and Hopper (sm_90); this GPU is sm_{major}{minor}"
    props = torch.cuda.get_device_properties(device)
    shared = getattr(props, "shared_memory_per_block_optin", None) or getattr(props, "shared_memory_per_block", 0)
    if shared and shared < MIN_SHARED_BYTES:
        return f"the GPU has {shared // 1024} KiB shared memory per block; the mega-kernel's tiles need {MIN_SHARED_BYTES // 1024}"
    return None


# Widest model whose step runs faster with the norms fused into the matmuls (H100, bf16, batch 1,
# per step: tiny, dim 256, 786 us fused against 815 us apart; small, dim 512, 3,661 us against
# 2,465 us, its fused sm_90 build spilling twice as many registers; bench/RESULTS.md).
FUSE_NORMS_MAX_DIM = 256


class MegakernelExecutor:
    """Runs stream steps of ``dit`` (a ``CausalDiT``) at batch 1 through the instruction list.

    ``n_programs``: queues (default: the SM count on a GPU, 1 under the interpreter);
    ``timeout_s``: the host watchdog's limit per step; ``max_spin``: the kernel's per-wait limit;
    ``fuse_norms``: the program layout (``compile_program``; False keeps the separate norm stages);
    None (the default) fuses them for models up to ``FUSE_NORMS_MAX_DIM`` wide, where it measured
    faster, and keeps them apart above it, where the fused matmul tiles spill registers.
    """

    def __init__(self, dit, backend: str = "triton", n_programs: int | None = None, timeout_s: float = 2.0,
                 max_spin: int = 1 << 20, tiles: dict[str, int] | None = None, fuse_norms: bool | None = None) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"megakernel backend must be one of {BACKENDS}, got {backend!r}")
        self.dit, self.config, self.backend = dit, dit.config, backend
        p = next(dit.parameters())
        self.device, self.dtype = p.device, p.dtype
        if n_programs is None:
            on_gpu = self.device.type == "cuda"
            n_programs = torch.cuda.get_device_properties(self.device).multi_processor_count if on_gpu else 1
        if self.device.type == "cuda":  # every program must be resident, or waits can deadlock
            n_programs = min(n_programs, torch.cuda.get_device_properties(self.device).multi_processor_count)
        self.n_programs, self.timeout_s, self.max_spin = n_programs, timeout_s, max_spin
        self.fuse_norms = self.config.dim <= FUSE_NORMS_MAX_DIM if fuse_norms is None else fuse_norms
        self.tiles = tiles or (gpu_tiles(self.config) if self.device.type == "cuda" else cpu_tiles())
        self.weights = Weights.from_dit(dit)
        self.error = torch.zeros(4, device=self.device, dtype=torch.int32)  # see kernel.launch
        self._launches_at_failure = 0
        self._warned_safe_mode = False
        self.failed: str | None = None
        self._last_program: Program | None = None
        self._plans: dict[int, tuple[Program, StepBuffers, torch.Tensor]] = {}

    # ---- plans ----------------------------------------------------------------------------------
    def plan(self, tokens_per_frame: int) -> tuple[Program, StepBuffers, torch.Tensor]:
        """The compiled program, buffers and counters for frames of ``tokens_per_frame`` tokens."""
        if tokens_per_frame not in self._plans:
            shape = Shape.from_config(self.config, tokens_per_frame, **self.tiles)
            n = 1 if self.backend == "interpreter" else self.n_programs
            program = compile_program(shape, n, fuse_norms=self.fuse_norms).to(self.device)
            bufs = StepBuffers.allocate(shape, self.device, self.dtype)
            counters = torch.zeros(program.n_counters, device=self.device, dtype=torch.int32)
            self._plans[tokens_per_frame] = (program, bufs, counters)
        return self._plans[tokens_per_frame]

    def _rings(self, x: torch.Tensor, context):
        """The one cache this call writes (a ``KVRingCache``, or ``(pool, lanes)`` of a lane batch),
        or None where ``denoise`` hands the call to the network (batches, clips, a failure)."""
        if self.failed is not None or x.shape[0] != 1:
            return None
        caches = getattr(context, "caches", None)
        if isinstance(caches, list) and len(caches) == 1:  # StreamContext of one session
            return caches[0]
        if hasattr(caches, "pool") and hasattr(caches, "lanes"):  # LaneContext of one lane
            return caches.pool, caches.lanes
        return None

    def runs(self, x: torch.Tensor, context) -> bool:
        """Whether ``denoise`` runs this call itself (batch 1 on one stream cache, not failed)."""
        return self._rings(x, context) is not None

    # ---- the step -------------------------------------------------------------------------------
    def denoise(self, x, cond, sigma, step, pooled, tokens, context, chunk_offset: int = 0, *,
                prompt_kv=None) -> torch.Tensor:
        """``CausalDiT.forward`` for one stream step at batch 1. x, cond: (1, T, C, h, w); sigma,
        step: (1, T); pooled: (1, text_dim); tokens: (1, Lt, text_dim); context: a ``StreamContext``
        of one cache or a ``LaneContext`` of one lane (its ``begin_chunk`` already run). Returns the
        velocity (1, T, C, h, w). Anything else goes to the network unchanged. ``prompt_kv``: the
        network's ``prompt_kv`` of ``tokens`` (or None), passed on where the network runs the call;
        the instruction list projects the prompt itself."""
        rings = self._rings(x, context)
        if rings is None:
            return self.dit(x, cond, sigma, step, pooled, tokens, context, chunk_offset, prompt_kv=prompt_kv)
        n = rings[0].tokens_per_frame if isinstance(rings, tuple) else rings.tokens_per_frame
        program, bufs, counters = self.plan(n)
        if isinstance(rings, tuple):
            bufs.bind_pool(*rings)
        else:
            bufs.bind_cache(rings)
        prologue(self.dit, bufs, x, cond, sigma, step, pooled, tokens, chunk_offset)
        try:
            self.execute(program, bufs, counters)
        except Exception as exc:  # e.g. Triton's OutOfResources: more shared memory than this GPU has
            if self.backend == "interpreter":
                raise
            self.failed = f"the mega-kernel cannot run here ({type(exc).__name__}: {exc}); using the network"
            log.warning("%s", self.failed)
            return self.dit(x, cond, sigma, step, pooled, tokens, context, chunk_offset, prompt_kv=prompt_kv)
        return epilogue(self.dit, bufs, x.shape[1], *x.shape[-2:])

    __call__ = denoise

    def execute(self, program: Program, bufs: StepBuffers, counters: torch.Tensor, last: int | None = None) -> None:
        """Run the instruction list (instructions 0..last, default all) on ``bufs``."""
        self._last_program = program
        if self.backend == "interpreter":
            Interpreter(program, self.weights, self.config.norm_eps).run(bufs, stop_after=last)
            return
        from .kernel import launch

        launch(program, self.weights, bufs, counters, self.error, self.config.norm_eps, max_spin=self.max_spin,
               last=last)

    # ---- watchdog -------------------------------------------------------------------------------
    def check(self) -> None:
        """Wait for the device (at most ``timeout_s``) and raise ``MegakernelError`` if the step hung
        or a wait timed out; after that ``failed`` says why and ``denoise`` hands calls to the network.
        Once failed it does not raise again: a captured CUDA graph that still launches the kernel gets
        its safe mode (see ``kernel``), correct but on one SM, and a warning says to recapture."""
        if self.backend == "interpreter":
            return
        if self.device.type == "cuda":
            stream = torch.cuda.current_stream(self.device)
            deadline = time.monotonic() + self.timeout_s
            while not stream.query():
                if time.monotonic() > deadline:
                    self._fail(f"a step did not finish within {self.timeout_s:g} s")
                time.sleep(20e-6)
        code, index, pid, launches = self.error.tolist()
        if self.failed is not None:
            if launches > self._launches_at_failure and not self._warned_safe_mode:
                self._warned_safe_mode = True  # correct frames, on one SM, until the graph is recaptured
                log.warning("a captured CUDA graph still launches the failed mega-kernel; it runs in safe mode "
                            "(one program, no waits) until the graph is recaptured")
            self._launches_at_failure = launches
            return
        if code:
            program = self._last_program
            where = program.describe(index) if program is not None else f"#{index}"
            self._launches_at_failure = launches
            self._fail(f"program {pid} timed out waiting before instruction {where}")

    def _fail(self, reason: str) -> None:
        self.failed = f"mega-kernel watchdog: {reason}; falling back to the CUDA-graph path"
        log.error("%s", self.failed)
        raise MegakernelError(self.failed)

EXECUTORS = ("graph", "megakernel")


def attach(generator, executor: str = "graph", backend: str = "triton", **options) -> str | None:
    """Choose what runs ``generator``'s (a ``StreamGenerator``) DiT calls.

    "graph": the network (the daemon replays it in CUDA graphs). "megakernel": a
    ``MegakernelExecutor`` where ``support`` allows it, else the network. Returns None when the
    choice took effect, or the reason it fell back (also logged).
    """
    if executor not in EXECUTORS:
        raise ValueError(f"executor must be one of {EXECUTORS}, got {executor!r}")
    generator.megakernel = None
    if executor == "graph":
        return None
    reason = support(generator.device, generator.dtype) if backend == "triton" else None
    if reason is None and any(b.dtype == torch.float8_e4m3fn for b in generator.model.dit.buffers()):
        reason = "its instruction list runs the block linears' float weights; the model's are in FP8 (fp8_linears)"
    if reason is None:
        try:
            generator.megakernel = MegakernelExecutor(generator.model.dit, backend=backend, **options)
        except Exception as exc:  # e.g. out of memory for the stacked weights
            reason = f"the mega-kernel could not be set up: {exc}"
    if reason is not None:
        log.warning("executor = \"megakernel\" falls back to the CUDA-graph path: %s", reason)
    return reason

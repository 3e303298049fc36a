"""Chooses Triton kernels or their torch references for the network's hot operations.

``model/ops.py`` asks ``use_triton(tensor)`` before each fused call. The answer is "triton" for
CUDA tensors when Triton can be imported, "torch" otherwise (CPU inference never imports
Triton). Tests force either backend with ``force("triton")`` / ``force("torch")``; on a CPU the
forced Triton path runs under ``TRITON_INTERPRET=1``.

``use_gemm_epilogue(tensor)`` says whether a GEMM may apply its activation in cuBLASLt's
epilogue instead (the FFN's GELU): on the same calls as the kernels, CUDA tensors only.
Benchmarks turn it off with ``gemm_epilogues(False)`` to time the separate GELU kernel.

``fastest(op, key, candidates, default)`` picks between ways of computing one op where neither
wins at every shape (the ring attention kernel against keys-with-offsets plus SDPA): the first
call with a new ``key`` on a GPU times each candidate on that call's own inputs and keeps the
fastest for the process; while a CUDA graph is being captured, or off the GPU, it answers
``default`` without timing. ``prefer(op, name)`` fixes the choice inside a block (tests, benches).

Kernel modules are imported lazily through ``kernel(name)``, so importing this module (or the
model) never imports Triton.
"""
from __future__ import annotations

import contextlib
import contextvars
import functools
import importlib
import importlib.util
import os
import statistics
from typing import Callable, Hashable, Iterator, Mapping

import torch

BACKENDS = ("triton", "torch")

# The only mutable state: test or benchmark overrides, scoped by ``force`` and ``gemm_epilogues``.
_forced: contextvars.ContextVar[str | None] = contextvars.ContextVar("morphcam_kernel_backend", default=None)
_epilogues: contextvars.ContextVar[bool] = contextvars.ContextVar("morphcam_gemm_epilogues", default=True)
_preferred: contextvars.ContextVar[tuple[tuple[str, str], ...]] = contextvars.ContextVar("morphcam_preferred", default=())
# Choices measured by ``fastest``: (op, key) -> candidate name, and the timings behind each.
_fastest: dict[tuple[str, Hashable], str] = {}
_timings: dict[tuple[str, Hashable], dict[str, float]] = {}


def interpreting() -> bool:
    """True when Triton runs kernels on CPU tensors through its interpreter (read at launch)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


@functools.lru_cache(maxsize=None)
def _triton_importable() -> bool:
    return importlib.util.find_spec("triton") is not None


def is_available() -> bool:
    """Triton is installed and can run: a CUDA device is present, or the interpreter is on."""
    return _triton_importable() and (interpreting() or torch.cuda.is_available())


@contextlib.contextmanager
def force(backend: str | None) -> Iterator[None]:
    """Use ``backend`` ("triton", "torch", or None for the default choice) inside the block."""
    if backend is not None and backend not in BACKENDS:
        raise ValueError(f"kernel backend must be one of {BACKENDS} or None, got {backend!r}")
    if backend == "triton" and not is_available():
        raise RuntimeError(
            "the Triton backend needs the triton package and a CUDA GPU (or TRITON_INTERPRET=1 on a CPU): "
            "pip install 'morphcam[gpu]'"
        )
    token = _forced.set(backend)
    try:
        yield
    finally:
        _forced.reset(token)


def forced() -> str | None:
    """The backend forced by the innermost ``force`` block, or None."""
    return _forced.get()


def use_triton(x: torch.Tensor) -> bool:
    """Whether an op on ``x`` should run its Triton kernel.

    Never while autograd records (training): the kernels have no backward, so even a forced
    "triton" falls back to torch there rather than silently cutting the graph. Never under
    ``torch.compile`` either: it traces the torch path and generates its own fused kernels.
    """
    if torch.is_grad_enabled():
        return False
    if torch.compiler.is_compiling():  # torch.compile traces the torch path and fuses it itself
        return False
    backend = _forced.get()
    if backend is not None:
        return backend == "triton"
    return x.is_cuda and is_available()


@contextlib.contextmanager
def gemm_epilogues(enabled: bool) -> Iterator[None]:
    """Let GEMMs fuse their activation (``enabled``, the default) or not, inside the block."""
    token = _epilogues.set(bool(enabled))
    try:
        yield
    finally:
        _epilogues.reset(token)


def use_gemm_epilogue(x: torch.Tensor) -> bool:
    """Whether a GEMM on ``x`` should apply its activation in cuBLASLt's epilogue.

    Where the kernels run (``use_triton``), on CUDA tensors only: the CPU's ``_addmm_activation``
    computes the exact (erf) GELU, not the network's tanh approximation.
    """
    return x.is_cuda and _epilogues.get() and use_triton(x)


@functools.lru_cache(maxsize=None)
def kernel(name: str) -> Callable:
    """The public Triton wrapper ``morphcam.kernels.<name>.<name>`` (imports Triton on first use;
    memoised, since eager steps ask ~100 times a frame)."""
    module = importlib.import_module(f"morphcam.kernels.{name}")
    return getattr(module, name)


@contextlib.contextmanager
def prefer(op: str, name: str | None) -> Iterator[None]:
    """Inside the block, ``fastest(op, ...)`` answers ``name`` (None: measure as usual)."""
    others = tuple(p for p in _preferred.get() if p[0] != op)
    token = _preferred.set(others if name is None else (*others, (op, name)))
    try:
        yield
    finally:
        _preferred.reset(token)


def _time_ms(fn: Callable[[], object], warmup: int = 2, runs: int = 5) -> float:
    """Median milliseconds of ``fn`` on the current CUDA stream (CUDA events)."""
    import torch

    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def fastest(op: str, key: Hashable, candidates: Mapping[str, Callable[[], object]], default: str,
            on_gpu: bool = True) -> str:
    """The name of the fastest of ``candidates`` (each computes the same result from the current
    call's inputs) for ``key``, measured once per process on the GPU. ``default`` off the GPU
    (``on_gpu`` False), while a CUDA graph is captured (timing would sync), or under
    ``prefer``; a candidate that raises is never chosen."""
    for name_op, name in _preferred.get():
        if name_op == op:
            return name
    if (op, key) in _fastest:
        return _fastest[(op, key)]
    if not on_gpu:
        return default
    import torch

    if torch.cuda.is_current_stream_capturing():
        return default
    times: dict[str, float] = {}
    for name, fn in candidates.items():
        try:
            times[name] = _time_ms(fn)
        except Exception:  # noqa: BLE001 - a backend that cannot run this shape is not a choice
            continue
    _timings[(op, key)] = times
    _fastest[(op, key)] = min(times, key=times.get) if times else default
    return _fastest[(op, key)]


def chosen() -> dict[str, dict]:
    """Every choice ``fastest`` has measured: "op key" -> {"choice": name, "ms": {name: ms}}."""
    return {f"{op} {key}": {"choice": name, "ms": dict(_timings.get((op, key), {}))}
            for (op, key), name in _fastest.items()}

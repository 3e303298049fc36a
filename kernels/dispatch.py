"""Chooses Triton kernels or their torch references for the network's hot operations.

``model/ops.py`` asks ``use_triton(tensor)`` before each fused call. The answer is "triton" for
CUDA tensors when Triton can be imported, "torch" otherwise (CPU inference never imports
Triton). Tests force either backend with ``force("triton")`` / ``force("torch")``; on a CPU the
forced Triton path runs under ``TRITON_INTERPRET=1``.

``use_gemm_epilogue(tensor)`` says whether a GEMM may apply its activation in cuBLASLt's
epilogue instead (the FFN's GELU): on the same calls as the kernels, CUDA tensors only.
Benchmarks turn it off with ``gemm_epilogues(False)`` to time the separate GELU kernel.

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
from typing import Callable, Iterator

import torch

BACKENDS = ("triton", "torch")

# The only mutable state: test or benchmark overrides, scoped by ``force`` and ``gemm_epilogues``.
_forced: contextvars.ContextVar[str | None] = contextvars.ContextVar("morphcam_kernel_backend", default=None)
_epilogues: contextvars.ContextVar[bool] = contextvars.ContextVar("morphcam_gemm_epilogues", default=True)


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

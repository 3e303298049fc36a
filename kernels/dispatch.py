"""Chooses Triton kernels or their torch references for the network's hot operations.

``model/ops.py`` asks ``use_triton(tensor)`` before each fused call. The answer is "triton" for
CUDA tensors when Triton can be imported, "torch" otherwise (CPU inference never imports
Triton). Tests force either backend with ``force("triton")`` / ``force("torch")``; on a CPU the
forced Triton path runs under ``TRITON_INTERPRET=1``.

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

# The one piece of mutable state: a test or benchmark override, scoped by ``force``.
_forced: contextvars.ContextVar[str | None] = contextvars.ContextVar("morphcam_kernel_backend", default=None)


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


@functools.lru_cache(maxsize=None)
def kernel(name: str) -> Callable:
    """The public Triton wrapper ``morphcam.kernels.<name>.<name>`` (imports Triton on first use;
    memoised, since eager steps ask ~100 times a frame)."""
    module = importlib.import_module(f"morphcam.kernels.{name}")
    return getattr(module, name)

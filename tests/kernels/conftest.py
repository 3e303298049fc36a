"""Kernel tests run the Triton kernels compiled on a GPU, or under Triton's interpreter on a CPU.

Triton decides per ``@triton.jit`` function, when its module is imported, whether to interpret
it (it reads ``TRITON_INTERPRET`` at decoration time). So the variable is set here, before any
test module imports a kernel, and only where no GPU is visible.
"""
from __future__ import annotations

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"

pytest.importorskip("triton")

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.fixture(scope="module", autouse=True)
def _two_threads():
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(threads)


def _rel_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    assert torch.isfinite(out).all(), "non-finite output"
    out, ref = out.double().cpu(), ref.double().cpu()
    return float((out - ref).norm() / ref.norm().clamp_min(1e-30))


@pytest.fixture
def rel_error():
    """rel_error(out, ref) -> ||out - ref|| / ||ref|| in float64; NaN anywhere fails."""
    return _rel_error


@pytest.fixture
def device() -> str:
    return DEVICE

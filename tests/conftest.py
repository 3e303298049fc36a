"""Shared test setup: two threads, GPU tests skipped without a GPU."""
from __future__ import annotations

import os

import pytest

from helpers.daemons import make_config

os.environ.setdefault("OMP_NUM_THREADS", "2")


def pytest_configure(config):
    """Without a GPU, Triton kernels run under Triton's interpreter. Triton reads the variable when
    a ``@triton.jit`` function is defined, i.e. when its module is first imported, and any test
    folder (bench, daemon, kernels) may import a kernel module first: so set it before collection."""
    try:
        import torch
    except ImportError:
        return
    if not torch.cuda.is_available():
        os.environ["TRITON_INTERPRET"] = "1"


def pytest_collection_modifyitems(config, items):
    gpu_items = [item for item in items if "gpu" in item.keywords]
    if not gpu_items:
        return
    try:
        import torch

        has_gpu = torch.cuda.is_available()
    except ImportError:
        has_gpu = False
    if has_gpu:
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in gpu_items:
        item.add_marker(skip)


@pytest.fixture
def start_daemon(tmp_path):
    """start_daemon(pipeline=None, **server_overrides) -> a running DaemonThread, stopped after the test."""
    from morphcam.daemon.server import DaemonThread

    started = []

    def start(pipeline=None, environ=None, **server) -> DaemonThread:
        d = DaemonThread(make_config(tmp_path, **server), pipeline or _passthrough(), environ=environ or {})
        d.start()
        started.append(d)
        return d

    yield start
    for d in started:
        d.stop()


@pytest.fixture(params=["unix", "tcp"])
def transport(request):
    """Which of the daemon's addresses a test talks to."""
    return request.param


def _passthrough():
    from morphcam.daemon.pipeline import PassthroughPipeline

    return PassthroughPipeline()

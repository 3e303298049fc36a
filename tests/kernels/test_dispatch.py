"""The dispatch override, and the whole network on the Triton path against the torch path."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from helpers.models import randomized
from morphcam.kernels import dispatch
from morphcam.model import ops
from morphcam.model.config import ModelConfig
from morphcam.model.generator import StreamGenerator
from morphcam.model.text import TextEncoder


def test_force_is_scoped_and_nests(device):
    x = torch.zeros(2, device=device)
    with torch.no_grad():
        assert dispatch.use_triton(x) == (device == "cuda")  # the torch path is the default on a CPU
    with torch.no_grad(), dispatch.force("triton"):
        assert dispatch.forced() == "triton" and dispatch.use_triton(x)
        with dispatch.force("torch"):
            assert not dispatch.use_triton(x)
        assert dispatch.use_triton(x)
    assert dispatch.forced() is None
    with pytest.raises(ValueError, match="backend"):
        with dispatch.force("cuda"):
            pass


def test_autograd_always_takes_torch():
    x = torch.randn(4, requires_grad=True)
    with dispatch.force("triton"):
        assert not dispatch.use_triton(x)
        y = ops.gelu(x)
    assert y.grad_fn is not None


def test_ops_route_to_the_kernels(monkeypatch, device):
    calls = []
    real = dispatch.kernel

    def spy(name):
        calls.append(name)
        return real(name)

    monkeypatch.setattr(dispatch, "kernel", spy)
    x = torch.randn(1, 1, 4, 8, device=device)
    mod = torch.randn(1, 1, 1, 8, device=device)
    with torch.no_grad(), dispatch.force("triton"):
        fused = ops.layer_norm_modulate(x, mod, mod, 1e-6), ops.gated_residual(x, x, mod), ops.gelu(x)
    assert calls == ["layer_norm_modulate", "gated_residual", "gelu"]
    calls.clear()
    with torch.no_grad(), dispatch.force("torch"):
        plain = ops.layer_norm_modulate(x, mod, mod, 1e-6), ops.gated_residual(x, x, mod), ops.gelu(x)
    assert calls == []
    for a, b in zip(fused, plain):
        torch.testing.assert_close(a, b)


@pytest.fixture(scope="module")
def text_encoder():
    return TextEncoder(text_tokens=ModelConfig.from_name("tiny").text_tokens)


def _model(device):
    cfg = dataclasses.replace(
        ModelConfig.from_name("tiny"), name="test", ae_channels=(8, 8, 8), ae_decoder_channels=(8, 8, 8),
        latent_channels=4, dim=32, n_layers=2, n_heads=2, ffn_dim=64, sink_frames=1, window_frames=2,
        width=32, height=32,
    )
    return randomized(cfg).to(device)  # non-zero gates and output layer: every path affects the output


def test_stream_on_triton_equals_torch(text_encoder, device):
    """Six frames (the 1 + 2 + 1 slot ring wraps twice) from the same seed on both paths."""
    model = _model(device)
    gen = StreamGenerator(model, text_encoder)
    frames = torch.rand(6, 1, 1, 3, 32, 32, device=device) * 2 - 1
    outs = {}
    for backend in ("torch", "triton"):
        session = gen.open_session(32, 32, "pencil sketch", seed=3)
        with dispatch.force(backend):
            outs[backend] = torch.stack([gen.step([session], f) for f in frames])
        assert session.cache.frames_seen == 6 and int(session.cache.pos) == 6
    assert outs["torch"].abs().mean() > 1e-2
    torch.testing.assert_close(outs["triton"], outs["torch"], rtol=1e-4, atol=1e-4)


def test_cuda_graph_runner_needs_cuda(text_encoder):
    from morphcam.model.cuda_graph import CudaGraphRunner

    gen = StreamGenerator(_model("cpu"), text_encoder)
    with pytest.raises(ValueError, match="CUDA"):
        CudaGraphRunner(gen, [gen.open_session(32, 32, "pencil sketch", seed=0)], 32, 32)


def test_split_step_equals_step(text_encoder):
    """prepare + forward + finish (what a graph replays around) is step, frame for frame."""
    gen = StreamGenerator(_model("cpu"), text_encoder)
    a, b = (gen.open_session(32, 32, "pencil sketch", seed=9) for _ in range(2))
    inputs = gen.new_inputs(1, 32, 32)
    for _ in range(4):
        frame = torch.rand(1, 1, 3, 32, 32) * 2 - 1
        want = gen.step([a], frame)
        gen.prepare([b], frame, into=inputs)
        got = gen.forward([b], inputs)
        gen.finish([b])
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert b.cache.frames_seen == a.cache.frames_seen == 4 and b.frames_out == 4


def test_daemon_option_threads_to_the_pipeline(text_encoder):
    import numpy as np

    from morphcam.daemon.config import ModelConfig as DaemonModelConfig
    from morphcam.daemon.generator_pipeline import GeneratorPipeline
    from morphcam.daemon.pipeline import PromptChange, SessionParams

    assert DaemonModelConfig().cuda_graphs is True
    pipe = GeneratorPipeline(StreamGenerator(_model("cpu"), text_encoder), "test", cuda_graphs=True)
    assert not pipe.cuda_graphs  # graphs are a CUDA feature; a CPU pipeline steps eagerly
    pipe.open_session("a", SessionParams(32, 32, PromptChange.single("pencil sketch"), seed=0))
    out = pipe.step([("a", np.zeros((32, 32, 3), np.uint8))])[0]
    assert isinstance(out, np.ndarray) and out.shape == (32, 32, 3)

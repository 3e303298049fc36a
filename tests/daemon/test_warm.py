"""Warm sizes through a real daemon (unix socket, CPU): a size made ready at start-up builds nothing
for a stream's first frames nor for a switch to a named style, leaks no session, lane or cache, and
its frames equal a cold daemon's. Both shapes of the pipeline run: sessions with their own caches
(a CPU's), and lanes of a pool with a graph per batch size (a GPU's, recorded by a stand-in)."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from helpers.daemons import frames, make_config, wait_until
from helpers.models import randomized
from morphcam.daemon.client import DaemonClient, StreamSettings
from morphcam.daemon.generator_pipeline import GeneratorPipeline
from morphcam.daemon.pipeline import PromptChange, WeightedPrompt
from morphcam.daemon.server import DaemonThread
from morphcam.model.config import ModelConfig
from morphcam.model.generator import StreamGenerator
from morphcam.model.text import TextEncoder

W, H = 64, 48


class _Replay:
    """Stands in for a CUDA graph on a CPU: recording runs nothing, replay reruns the step."""

    def __init__(self, fn) -> None:
        self.fn, self.output = fn, torch.empty(0)

    def replay(self) -> None:
        result = self.fn()
        self.output.resize_(result.shape).copy_(result)


def _record(fn):
    graph = _Replay(fn)
    return graph, graph.output


def _pipeline(lanes: int) -> GeneratorPipeline:
    """The same small random model each call, with a text encoder of its own (its prompt cache
    starts empty, as a fresh daemon's does)."""
    cfg = dataclasses.replace(ModelConfig.from_name("tiny"), name="test", ae_channels=(8, 8, 8),
                              ae_decoder_channels=(8, 8, 8), latent_channels=4, dim=32, n_layers=2, n_heads=2,
                              ffn_dim=64, sink_frames=1, window_frames=2, width=32, height=32)
    generator = StreamGenerator(randomized(cfg), TextEncoder(cfg.text_tokens))
    return GeneratorPipeline(generator, "test", lanes=lanes, graph_record=_record if lanes else None)


def _stream(daemon: DaemonThread, pipeline: GeneratorPipeline) -> tuple[list[np.ndarray], dict[str, int]]:
    """Four frames of one stream at W x H, switching (KV-recache) to a named style after the second.
    Returns the output frames and what the pipeline built meanwhile."""
    before = pipeline.build_counts()
    outputs: list[np.ndarray] = []
    with DaemonClient(daemon.address, timeout_s=30.0) as client:
        def images():
            for k, image in enumerate(frames(4, W, H, seed=3)):
                if k == 2:  # once frame 1 is back, so the switch lands between frames 1 and 2 in both runs
                    assert wait_until(lambda: len(outputs) == 2, timeout=30.0)
                    client.set_prompt("cam", PromptChange((WeightedPrompt("thermal camera"),), mode="recache"))
                yield image

        settings = StreamSettings(W, H, "comic", name="cam", seed=7)
        outputs.extend(out.image for out in client.transform(settings, images()))
    assert wait_until(lambda: not pipeline._sessions, timeout=30.0), "the stream's session is closed"
    after = pipeline.build_counts()
    return outputs, {kind: after[kind] - before[kind] for kind in after}


@pytest.mark.parametrize("lanes", [0, 2], ids=["own-caches", "lane-pool-graphs"])
def test_a_warm_size_builds_nothing_and_changes_no_frame(tmp_path, lanes):
    runs = {}
    for name, sizes in (("cold", ()), ("warm", (f"{W}x{H}",))):
        pipeline = _pipeline(lanes)
        config = make_config(tmp_path / name, address="", metrics_address="").replace("model", warm_sizes=sizes)
        with DaemonThread(config, pipeline, environ={}) as daemon:
            outputs, built = _stream(daemon, pipeline)
            metrics = daemon.daemon.metrics.exposition().decode()
        runs[name] = outputs, built, pipeline, metrics

    cold, built_cold, _, _ = runs["cold"]
    warm, built_warm, pipeline, metrics = runs["warm"]
    assert len(warm) == len(cold) == 4
    for k, (a, b) in enumerate(zip(cold, warm)):
        assert np.array_equal(a, b), f"frame {k}: a warmed daemon's output differs from a cold one's"

    expected_cold = {"groups": 1, "caches": 0 if lanes else 1, "graphs": 1 if lanes else 0, "prompts": 2}
    assert built_cold == expected_cold, "the cold daemon built the size, the graph or cache, and both prompts"
    assert built_warm == {"groups": 0, "caches": 0, "graphs": 0, "prompts": 0}, built_warm
    assert 'morphcam_pipeline_builds_total{kind="graphs"}' in metrics

    group = pipeline._groups[(W, H)]  # kept with no session: the next stream finds it ready too
    assert group.warm and group.sessions == 0
    if lanes:
        assert group.pool.free == lanes and sorted(group.graphs.batch_sizes()) == [1, 2] and not group.spares
    else:
        assert group.pool is None and len(group.spares) == 1, "the stream's cache went back for the next one"


def test_a_size_that_fails_to_warm_is_not_kept(caplog, monkeypatch):
    """Fail open: the warning says what happened, and no session, lane or half-made size is left."""
    pipeline = _pipeline(2)

    def broken(*args, **kwargs):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(pipeline.generator, "forward", broken)
    pipeline.warm([(W, H)])
    assert "could not make 64x48 ready at start-up" in caplog.text and "out of memory" in caplog.text
    assert not pipeline._sessions and not pipeline._groups

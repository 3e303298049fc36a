"""GPU only: the generator behind a real daemon (unix socket), several live sessions at once:
every stream gets styled frames, the batches replay the graphs made at start-up (one per batch size),
nothing falls back."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from helpers.daemons import make_config
from morphcam.daemon.client import LiveStream, StreamSettings
from morphcam.daemon.server import DaemonThread

pytestmark = pytest.mark.gpu


def test_live_sessions_share_graphs_per_batch_size(tmp_path):
    from morphcam.daemon.generator_pipeline import GeneratorPipeline

    pipeline = GeneratorPipeline.load("tiny", device="cuda", lanes=8)
    config = make_config(tmp_path, address="").replace("model", batch_wait_ms=4.0)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (288, 512, 3), dtype=np.uint8)
    with DaemonThread(config, pipeline, environ={}) as daemon:
        graphs = pipeline._groups[(512, 288)].graphs  # 512x288 is a warm size by default: ready before any stream
        ready = graphs.captures
        streams = [LiveStream(daemon.address, StreamSettings(512, 288, "pencil sketch", name=f"cam{i}")).start()
                   for i in range(4)]
        received = [0] * 4
        stop = time.monotonic() + 6.0

        def feed(i: int) -> None:
            while time.monotonic() < stop:
                streams[i].submit(image)
                out = streams[i].get_output(0.5)
                if out is not None:
                    assert out.image.shape == (288, 512, 3) and not np.array_equal(out.image, image)
                    received[i] += 1
                time.sleep(1 / 30)

        threads = [threading.Thread(target=feed, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        for s in streams:
            s.stop()
    assert min(received) >= 60, f"every stream keeps a good share of its 30 fps: {received}"
    assert pipeline.cuda_graphs and graphs.capture_error is None, "no capture failed"
    assert ready == 8 and sorted(graphs.batch_sizes()) == list(range(1, 9)), "one graph per batch size at start-up"
    assert graphs.captures == ready, "the streams replayed the graphs made at start-up and captured none"

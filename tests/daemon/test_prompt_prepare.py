"""A new free-text prompt is embedded beside the daemon's frame loop, not on it: while one
stream's switch waits for the text encoder, other streams keep getting frames (real daemon on a
unix socket, CPU, a small random model; the text encoder is slowed down for one prompt)."""
from __future__ import annotations

import dataclasses
import threading
import time

from helpers.daemons import Streamer, make_config, wait_until
from helpers.models import randomized
from morphcam.daemon.client import DaemonClient
from morphcam.daemon.generator_pipeline import GeneratorPipeline
from morphcam.daemon.pipeline import PromptChange, WeightedPrompt
from morphcam.daemon.server import DaemonThread
from morphcam.model.config import ModelConfig
from morphcam.model.generator import StreamGenerator
from morphcam.model.text import TextEncoder

W, H = 64, 48
SLOW_TEXT = "a slow prompt: a castle made of clouds at dusk"
SLOW_S = 1.5


class SlowText(TextEncoder):
    """MiniLM, with one prompt taking ``SLOW_S`` longer, and a record of which threads embedded it."""

    def __init__(self, text_tokens: int) -> None:
        super().__init__(text_tokens)
        self.slow_threads: list[str] = []

    def _embed(self, text):
        if text == SLOW_TEXT:
            self.slow_threads.append(threading.current_thread().name)
            time.sleep(SLOW_S)
        return super()._embed(text)


def _pipeline() -> GeneratorPipeline:
    cfg = dataclasses.replace(ModelConfig.from_name("tiny"), name="test", ae_channels=(8, 8, 8),
                              ae_decoder_channels=(8, 8, 8), latent_channels=4, dim=32, n_layers=2, n_heads=2,
                              ffn_dim=64, sink_frames=1, window_frames=2, width=32, height=32)
    return GeneratorPipeline(StreamGenerator(randomized(cfg), SlowText(cfg.text_tokens)), "test")


def test_other_streams_keep_their_frames_while_a_new_prompt_is_embedded(tmp_path):
    pipeline = _pipeline()
    config = make_config(tmp_path, address="", metrics_address="").replace("model", warm_sizes=())
    with DaemonThread(config, pipeline, environ={}) as daemon:
        bystander = Streamer(daemon.address, width=W, height=H)
        switcher = Streamer(daemon.address, name="switcher", width=W, height=H)
        bystander.start()
        switcher.start()
        try:
            assert wait_until(lambda: bystander.outputs >= 3 and switcher.outputs >= 1, timeout=30.0), "both run"
            with DaemonClient(daemon.address, timeout_s=30.0) as client:
                before = bystander.outputs
                t0 = time.monotonic()
                client.set_prompt("switcher", PromptChange((WeightedPrompt(SLOW_TEXT),), mode="recache"))
                took = time.monotonic() - t0
                during = bystander.outputs - before
        finally:
            bystander.stop()
            switcher.stop()
    assert took >= SLOW_S, "the switch waited for its embedding"
    # Frames kept coming while the encoder ran (on the frame loop they would all have waited).
    assert during >= 3, f"the bystander got {during} frames in the {took:.1f} s the switch took"
    assert pipeline.generator.text.embedded and pipeline.generator.text.cached(SLOW_TEXT)
    assert len(pipeline.generator.text.slow_threads) == 1, "embedded once: the switch found it cached"
    assert "worker" not in pipeline.generator.text.slow_threads[0].lower()

"""Prometheus metrics of one daemon, in a registry of its own (no process-global state)."""
from __future__ import annotations

from typing import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily

# Seconds: 0.5 ms .. 1 s, dense where live frames live (5-50 ms).
_BUCKETS = (0.0005, 0.001, 0.002, 0.004, 0.006, 0.008, 0.010, 0.015, 0.020, 0.030, 0.040,
            0.050, 0.075, 0.100, 0.200, 0.500, 1.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.frames_in = Counter("morphcam_frames_in", "Input frames received", registry=r)
        self.frames_out = Counter("morphcam_frames_out", "Output frames sent", registry=r)
        self.dropped = Counter("morphcam_frames_dropped", "Input frames dropped as stale", registry=r)
        self.errors = Counter("morphcam_stream_errors", "Streams ended by an error", ["code"], registry=r)
        self.sessions = Gauge("morphcam_sessions", "Open sessions", registry=r)
        self.fps = Gauge("morphcam_output_fps", "Output frames per second over all sessions (last 5 s)", registry=r)
        self.stage = Histogram("morphcam_stage_seconds", "Time per frame in each stage", ["stage"],
                               buckets=_BUCKETS, registry=r)
        self.batch_size = Histogram("morphcam_batch_size", "Frames per model step",
                                    buckets=(1, 2, 4, 8, 16, 32), registry=r)

    def watch_builds(self, counts: Callable[[], dict[str, int]]) -> None:
        """Export ``counts()`` (the pipeline's ``build_counts``) as morphcam_pipeline_builds_total{kind}:
        anything but flat after start-up means a stream paid for building it on its first frames."""
        self.registry.register(_BuildCollector(counts))

    def set_fps_source(self, fn: Callable[[], float]) -> None:
        self.fps.set_function(fn)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class _BuildCollector:
    """Reads the pipeline's counters when scraped (they live on the worker thread; ints read whole)."""

    def __init__(self, counts: Callable[[], dict[str, int]]) -> None:
        self._counts = counts

    def collect(self):
        family = CounterMetricFamily("morphcam_pipeline_builds", "Lazily built pipeline state by kind: size groups "
                                     "(pool, buffers), caches, captured graphs, embedded prompts", labels=["kind"])
        for kind, value in sorted(dict(self._counts()).items()):
            family.add_metric([kind], value)
        yield family

"""Streams against a real daemon, on its unix socket and on its 127.0.0.1 port."""
from __future__ import annotations

import threading
import time

import grpc
import numpy as np
import pytest

from helpers.daemons import DelayPipeline, address_of, frames, wait_until
from morphcam.daemon.client import DaemonClient, LiveStream, StreamSettings
from morphcam.daemon.pipeline import PromptChange, WeightedPrompt
from morphcam.protos.v1 import morphcam_pb2 as pb


def test_frames_round_trip_in_order_with_timestamps(start_daemon, transport):
    daemon = start_daemon()
    images = frames(40)
    stamps = [1_700_000_000_000_000_000 + i * 33_333_333 for i in range(40)]
    with DaemonClient(address_of(daemon, transport)) as client:
        outs = list(client.transform(StreamSettings(64, 48, "original"), images, stamps))
    assert [o.seq for o in outs] == list(range(40))
    assert [o.capture_time_ns for o in outs] == stamps
    for o in outs:
        assert np.array_equal(o.image, images[o.seq])
        assert o.timings["total_us"] > 0 and o.timings["batch_size"] == 1
    assert wait_until(lambda: daemon.session_count() == 0)


@pytest.mark.parametrize("fmt,tolerance", [("rgb24", 0), ("nv12", 12), ("i420", 12), ("jpeg", 40)])
def test_pixel_formats(start_daemon, fmt, tolerance):
    daemon = start_daemon()
    y, x = np.mgrid[0:48, 0:64]
    smooth = np.stack([x * 4, y * 5, (x + y) * 2], axis=-1).astype(np.uint8)
    with DaemonClient(daemon.address) as client:
        outs = list(client.transform(StreamSettings(64, 48, input_format=fmt), [smooth] * 3))
    assert len(outs) == 3 and outs[0].format == fmt
    assert np.abs(outs[0].image.astype(int) - smooth).mean() <= tolerance


def test_several_sessions_at_once_are_batched(start_daemon, transport):
    pipeline = DelayPipeline(delay_s=0.01)
    daemon = start_daemon(pipeline)
    address = address_of(daemon, transport)
    results: dict[int, list] = {}

    def run(k: int) -> None:
        with DaemonClient(address) as client:
            results[k] = list(client.transform(StreamSettings(64, 48, f"style {k}"), frames(30, seed=k)))

    threads = [threading.Thread(target=run, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(results) == [0, 1, 2, 3]
    for k, outs in results.items():
        assert [o.seq for o in outs] == list(range(30))
        assert all(np.array_equal(o.image, frames(30, seed=k)[o.seq]) for o in outs)
    assert max(pipeline.batches) > 1, "frames of ready sessions should share a model step"
    assert wait_until(lambda: daemon.session_count() == 0)


def test_live_session_drops_stale_frames_and_keeps_order(start_daemon):
    daemon = start_daemon(DelayPipeline(delay_s=0.03))
    image = frames(1)[0]
    requests = [pb.StreamRequest(open=pb.SessionSettings(width=64, height=48, input_format=pb.RGB24))]
    requests += [pb.StreamRequest(frame=pb.InputFrame(seq=i, capture_time_ns=i, data=image.tobytes()))
                 for i in range(60)]
    with DaemonClient(daemon.address) as client:
        replies = list(client.open_stream(requests))
    seqs = [r.frame.seq for r in replies if r.WhichOneof("kind") == "frame"]
    assert seqs == sorted(seqs) and seqs[-1] == 59, "newest frame must win, in order"
    assert len(seqs) < 60
    last = [r.frame for r in replies if r.WhichOneof("kind") == "frame"][-1]
    assert last.dropped_total == 60 - len(seqs)


def test_prompt_changes_mid_stream(start_daemon, transport):
    pipeline = DelayPipeline()
    daemon = start_daemon(pipeline)
    address = address_of(daemon, transport)
    with LiveStream(address, StreamSettings(64, 48, "original", name="facecam")) as live, DaemonClient(address) as client:
        image = frames(1)[0]
        live.submit(image)
        assert live.get_output(5) is not None
        sid = live.session_id
        live.set_prompt("pencil sketch")  # in-stream
        assert wait_until(lambda: pipeline.prompts.get(sid) == PromptChange.single("pencil sketch"))
        blend = PromptChange((WeightedPrompt("oil painting", 3), WeightedPrompt("snowfall", 1)), mode="transition",
                             transition_frames=12, interpolation="lerp")
        client.set_prompt("facecam", blend)  # by name, from another client
        assert pipeline.prompts[sid] == blend
        client.set_prompt(sid, PromptChange(blend.prompts, mode="recache"))  # by id
        assert pipeline.prompts[sid].mode == "recache"
        status = client.status().sessions[0]
        assert [p.text for p in status.prompt] == ["oil painting", "snowfall"]
        live.submit(image)
        assert live.get_output(5) is not None, "frames keep flowing after prompt changes"
        client.update_session("facecam", enabled=False, strength=0.4)
        status = client.status().sessions[0]
        assert not status.enabled and abs(status.strength - 0.4) < 1e-6


def test_client_cancellation_frees_the_session(start_daemon, transport):
    daemon = start_daemon()
    with DaemonClient(address_of(daemon, transport)) as client:
        gate = threading.Event()

        def requests():
            yield pb.StreamRequest(open=pb.SessionSettings(width=64, height=48))
            gate.wait(10)

        call = client.open_stream(requests())
        assert next(call).WhichOneof("kind") == "opened"
        assert daemon.session_count() == 1
        call.cancel()
        assert wait_until(lambda: daemon.session_count() == 0, timeout=2)
        gate.set()


def test_status_health_reflection_and_metrics(start_daemon):
    import urllib.request

    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    daemon = start_daemon()
    with DaemonClient(daemon.address) as client:
        list(client.transform(StreamSettings(64, 48), frames(5)))
        status = client.status()
        assert status.pipeline == "passthrough" and status.uptime_s > 0
        assert [s.name for s in client.list_styles()] == ["original"]
    with grpc.insecure_channel(daemon.daemon.addresses[1]) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service="morphcam.v1.Morphcam"))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        answer = next(stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")])))
        names = {s.name for s in answer.list_services_response.service}
        assert "morphcam.v1.Morphcam" in names
    text = urllib.request.urlopen(f"http://127.0.0.1:{daemon.daemon.metrics_port}/metrics", timeout=5).read().decode()
    assert "morphcam_frames_out_total 5.0" in text
    assert 'morphcam_stage_seconds_bucket{le="0.001",stage="total"}' in text
    assert "morphcam_sessions 0.0" in text


def test_live_stream_latency_is_reported(start_daemon):
    daemon = start_daemon()
    with LiveStream(daemon.address, StreamSettings(64, 48, name="cam")) as live:
        image = frames(1)[0]
        for _ in range(20):
            live.submit(image)
            assert live.get_output(5) is not None
        with DaemonClient(daemon.address) as client:
            s = client.status().sessions[0]
        assert s.frames_out >= 20 and s.latency_p50_ms > 0 and s.latency_p99_ms >= s.latency_p50_ms
        assert s.fps_out > 0


class _HangOnce(DelayPipeline):
    """The first step hangs (a stuck GPU, say); later steps are normal."""

    def __init__(self) -> None:
        super().__init__()
        self.hung = threading.Event()

    def step(self, batch):
        if not self.hung.is_set():
            self.hung.set()
            time.sleep(2.5)
        return super().step(batch)


def test_live_stream_gives_up_on_a_silent_daemon_and_reconnects(start_daemon):
    pipeline = _HangOnce()
    daemon = start_daemon(pipeline)
    image = frames(1)[0]
    with LiveStream(daemon.address, StreamSettings(64, 48, name="cam"), reply_timeout_s=1.0,
                    backoff_s=(0.05, 0.2)) as live:
        live.submit(image)
        assert wait_until(lambda: live.reconnects >= 1, timeout=5), "no reconnect after the daemon fell silent"
        assert "no answer" in live.last_error
        out = None
        deadline = time.monotonic() + 10
        while out is None and time.monotonic() < deadline:
            live.submit(image)
            out = live.get_output(0.2)
        assert out is not None, "styled frames come back once the daemon answers again"


def test_failing_pipeline_ends_the_call_and_the_client_retries(start_daemon):
    class Failing(DelayPipeline):
        def step(self, batch):
            return [RuntimeError("out of memory")] * len(batch)

    daemon = start_daemon(Failing())
    with LiveStream(daemon.address, StreamSettings(64, 48), backoff_s=(0.05, 0.1)) as live:
        for _ in range(20):
            live.submit(frames(1)[0])
            time.sleep(0.02)
        assert wait_until(lambda: live.reconnects >= 2, timeout=5)
        assert "INTERNAL: frame" in live.last_error and "out of memory" in live.last_error
    assert wait_until(lambda: daemon.session_count() == 0)


@pytest.mark.parametrize("wait_ms,expected", [(150.0, [2]), (0.0, [1, 1])])
def test_a_step_waits_briefly_for_other_streams(tmp_path, wait_ms, expected):
    from helpers.daemons import make_config, open_fed_streams
    from morphcam.daemon.server import DaemonThread

    pipeline = DelayPipeline()
    config = make_config(tmp_path).replace("model", batch_wait_ms=wait_ms)
    image = frames(1)[0].tobytes()
    with DaemonThread(config, pipeline, environ={}) as daemon, DaemonClient(daemon.address) as client:
        feeds, calls = open_fed_streams(client, 2)
        for seq in range(2):
            if seq == 1:
                pipeline.batches.clear()
            for q in feeds:  # the second stream's frame comes 20 ms after the first's
                q.put(pb.StreamRequest(frame=pb.InputFrame(seq=seq, data=image)))
                time.sleep(0.02)
            for call in calls:
                assert next(call).frame.seq == seq
        assert pipeline.batches == expected
        for q in feeds:
            q.put(None)

"""Sources and sinks with real PyAV: a looping file, a UDP MPEG-TS round trip over loopback, a
video file out, a missing capture device.

The virtual-camera sink runs against a pyvirtualcam backend registered by this test
(``RecordingBackend``): this machine has no /dev/video* and no v4l2loopback, so the real
device backends cannot open; pyvirtualcam itself (format checks, frame shapes) is real.
"""
from __future__ import annotations

import time

import av
import numpy as np
import pytest
import pyvirtualcam

from morphcam.obs_bridge.settings import SinkSettings, SourceSettings
from morphcam.obs_bridge.sinks import make_sink
from morphcam.obs_bridge.sources import make_source

pytestmark = pytest.mark.timeout(60)


def read_frames(source, seconds: float) -> list:
    frames, seq, end = [], 0, time.monotonic() + seconds
    while time.monotonic() < end:
        frame = source.read(seq, timeout=0.2)
        if frame is not None:
            frames.append(frame)
            seq = frame.seq
    return frames


def test_file_source_loops_at_its_rate_scaled(test_video):
    # The clip has 30 frames at 30 fps: 1.5 s of reading needs a loop.
    with make_source(SourceSettings(kind="file", path=str(test_video), fps=30.0), 96, 64) as source:
        frames = read_frames(source, 1.5)
    assert 35 <= len(frames) <= 50, len(frames)
    assert all(f.image.shape == (64, 96, 3) and f.image.dtype == np.uint8 for f in frames)
    times = [f.capture_time_ns for f in frames]
    assert times == sorted(times)
    assert np.median(np.diff(times)) / 1e6 == pytest.approx(33.3, abs=6)


def test_udp_sink_to_udp_source_round_trip(udp_port):
    port = udp_port
    with make_source(SourceSettings(kind="udp", url=f"udp://127.0.0.1:{port}", open_timeout_s=2.0), 160, 96) as rx:
        sink = make_sink(SinkSettings(kind="udp", url=f"udp://127.0.0.1:{port}?pkt_size=1316"))
        sink.open(160, 96, 30.0)
        image = np.zeros((96, 160, 3), np.uint8)
        image[:, :80] = (220, 40, 40)
        got, end = None, time.monotonic() + 10
        try:
            while got is None and time.monotonic() < end:
                sink.write(image, time.monotonic_ns())
                got = rx.read(0, timeout=1 / 30)
        finally:
            sink.close()
    assert got is not None, rx.last_error
    assert np.abs(got.image[48, 20].astype(int) - (220, 40, 40)).max() < 30
    assert np.abs(got.image[48, 140].astype(int)).max() < 30


def test_file_sink_writes_a_decodable_video(tmp_path):
    out = tmp_path / "out.mp4"
    sink = make_sink(SinkSettings(kind="file", path=str(out)))
    sink.open(64, 48, 30.0)
    t = time.monotonic_ns()
    for i in range(12):  # capture times closer than 1/fps must still work
        sink.write(np.full((48, 64, 3), i * 20, np.uint8), t + i * 5_000_000)
    sink.close()
    with av.open(str(out)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) == 12 and abs(int(frames[-1].mean()) - 220) < 10


def test_missing_capture_device_retries_without_crashing(tmp_path):
    settings = SourceSettings(kind="device", device=str(tmp_path / "video99"), device_format="v4l2", open_timeout_s=1.0)
    source = make_source(settings, 64, 48).start()
    try:
        assert source.read(0, timeout=1.0) is None
        assert source.last_error  # says why; the thread keeps trying
        assert source._thread.is_alive()
    finally:
        source.stop()


class RecordingBackend:
    """A pyvirtualcam backend that keeps the frames it is sent (no device exists here)."""

    sent: list = []

    def __init__(self, *, width, height, fps, fourcc, device, **kw):
        self.width, self.height, self.fourcc, self._device = width, height, fourcc, device or "/dev/video-test"
        RecordingBackend.sent = []

    def close(self):
        pass

    def send(self, frame):
        RecordingBackend.sent.append(frame.copy())

    def device(self):
        return self._device

    def native_fourcc(self):
        return self.fourcc


@pytest.fixture
def test_backend():
    pyvirtualcam.register_backend("morphcam-test", RecordingBackend)
    yield "morphcam-test"
    pyvirtualcam.camera.BACKENDS.pop("morphcam-test", None)


@pytest.mark.parametrize("pixel_format, size", [("RGB", 64 * 48 * 3), ("BGR", 64 * 48 * 3), ("I420", 64 * 48 * 3 // 2),
                                                ("NV12", 64 * 48 * 3 // 2), ("YUYV", 64 * 48 * 2), ("GRAY", 64 * 48)])
def test_virtual_camera_sink_formats(test_backend, pixel_format, size):
    sink = make_sink(SinkSettings(kind="virtualcam", backend=test_backend, device="/dev/video10", pixel_format=pixel_format))
    sink.open(64, 48, 30.0)
    image = np.zeros((48, 64, 3), np.uint8)
    image[..., 0] = 200  # red
    sink.write(image, 0)
    sink.close()
    (frame,) = RecordingBackend.sent
    assert frame.size == size
    if pixel_format == "BGR":
        assert frame.reshape(48, 64, 3)[0, 0].tolist() == [0, 0, 200]


def test_virtual_camera_errors_say_what_to_do(test_backend):
    with pytest.raises(RuntimeError, match="bridge.sink.backend"):
        make_sink(SinkSettings(kind="virtualcam", backend="no-such-backend")).open(64, 48, 30.0)

    class NoDevice(RecordingBackend):
        def __init__(self, **kw):
            raise RuntimeError("device /dev/video10 does not exist")

    pyvirtualcam.register_backend("morphcam-test", NoDevice)
    with pytest.raises(RuntimeError, match="setup-v4l2loopback.sh"):
        make_sink(SinkSettings(kind="virtualcam", backend="morphcam-test")).open(64, 48, 30.0)


def test_live_bridge_into_a_virtual_camera(test_backend, daemon_thread, test_video):
    """A file through the daemon into the (test-backend) virtual camera, in NV12 as many apps want."""
    from morphcam.obs_bridge.live import LiveBridge
    from morphcam.obs_bridge.settings import BridgeSettings, HotkeySettings, ObsSettings

    settings = BridgeSettings(
        daemon=daemon_thread.address, width=128, height=72,
        source=SourceSettings(kind="file", path=str(test_video)),
        sink=SinkSettings(kind="virtualcam", backend=test_backend, device="/dev/video10", pixel_format="NV12"),
        hotkeys=HotkeySettings(enabled=False),
    )
    with LiveBridge(settings, ObsSettings()) as live:
        end = time.monotonic() + 10
        while live.relay.styled < 10 and time.monotonic() < end:
            time.sleep(0.05)
        assert live.relay.styled >= 10, live.status()
        assert live.relay.sink.describe() == "virtualcam /dev/video10"
    assert len(RecordingBackend.sent) >= 10
    assert all(frame.size == 128 * 72 * 3 // 2 for frame in RecordingBackend.sent)

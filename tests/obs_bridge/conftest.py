"""Fixtures for the bridge's tests: a real OBS 29 headless under Xvfb (one per test session),
real daemons (in-process and as a subprocess), and a short test video made with PyAV.

OBS is installed by install/dev-deps.sh (CI runs it); without the ``obs`` binary the OBS tests
are skipped with that reason. OBS gets its own HOME, config, X display and free loopback ports.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np
import pytest

from morphcam.obs_bridge.obs_script_install import install as install_obs_script

OBS_START_TIMEOUT_S = 60.0
CANVAS = (640, 360)
# Scenes of the test collection and the color of the full-canvas color source in each (RGB).
SCENES = {"Red": (200, 30, 60), "Green": (30, 180, 60), "Plain": (40, 40, 200)}


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _abgr(rgb: tuple[int, int, int]) -> int:
    r, g, b = rgb
    return (0xFF << 24) | (b << 16) | (g << 8) | r


def _collection(script_port: int) -> dict:
    sources = []
    for i, (name, rgb) in enumerate(SCENES.items()):
        color = f"{name} color"
        sources.append({
            "id": "color_source_v3", "versioned_id": "color_source_v3", "name": color,
            "settings": {"color": _abgr(rgb), "width": CANVAS[0], "height": CANVAS[1]},
        })
        item = {"name": color, "id": 1, "visible": True, "pos": {"x": 0.0, "y": 0.0}, "scale": {"x": 1.0, "y": 1.0}}
        sources.append({
            "id": "scene", "versioned_id": "scene", "name": name,
            "settings": {"items": [item], "id_counter": 1},
        })
    first = next(iter(SCENES))
    return {
        "name": "Test",
        "current_scene": first,
        "current_program_scene": first,
        "current_transition": "Cut",
        "transition_duration": 0,
        "scene_order": [{"name": n} for n in SCENES],
        "sources": sources,
    }


def _profile(udp_out_port: int) -> str:
    w, h = CANVAS
    return f"""[General]
Name=Test
[Video]
BaseCX={w}
BaseCY={h}
OutputCX={w}
OutputCY={h}
FPSType=0
FPSCommon=30
[Output]
Mode=Advanced
[AdvOut]
RecType=FFmpeg
FFOutputToFile=false
FFURL=udp://127.0.0.1:{udp_out_port}?pkt_size=1316
FFFormat=mpegts
FFFormatMimeType=video/MP2T
FFVEncoderId=27
FFVEncoder=libx264
FFVBitrate=3000
FFVGOPSize=30
FFVCustom=preset=ultrafast tune=zerolatency
FFAEncoderId=0
FFAEncoder=
FFIgnoreCompat=true
"""


def _global_ini(ws_port: int) -> str:
    return f"""[General]
FirstRun=true
EnableAutoUpdates=false
[Basic]
Profile=Test
ProfileDir=Test
SceneCollection=Test
SceneCollectionFile=Test
[BasicWindow]
SysTrayEnabled=false
[OBSWebSocket]
FirstLoad=false
ServerEnabled=true
ServerPort={ws_port}
AlertsEnabled=false
AuthRequired=true
ServerPassword={{password}}
"""


@dataclass
class HeadlessObs:
    """One OBS under its own Xvfb, configured for the tests; ``start``/``kill``/``stop``."""

    base: Path
    password: str = "morphcam-test"
    scenes: dict = field(default_factory=lambda: dict(SCENES))
    ws_port: int = field(default_factory=free_port)
    udp_out_port: int = field(default_factory=lambda: free_port(socket.SOCK_DGRAM))  # OBS -> bridge
    udp_in_port: int = field(default_factory=lambda: free_port(socket.SOCK_DGRAM))  # bridge -> OBS
    hotkey_port: int = field(default_factory=lambda: free_port(socket.SOCK_DGRAM))
    display: str = ""
    proc: subprocess.Popen | None = None
    xvfb: subprocess.Popen | None = None

    @property
    def config_dir(self) -> Path:
        return self.base / "home" / ".config" / "obs-studio"

    def env(self) -> dict[str, str]:
        home = self.base / "home"
        return {
            **os.environ, "HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config"),
            "XDG_RUNTIME_DIR": str(self.base / "xdg"), "DISPLAY": self.display,
            "LIBGL_ALWAYS_SOFTWARE": "1", "QT_QPA_PLATFORM": "xcb",
        }

    def configure(self) -> None:
        cfg = self.config_dir
        (cfg / "basic" / "profiles" / "Test").mkdir(parents=True, exist_ok=True)
        (cfg / "basic" / "scenes").mkdir(parents=True, exist_ok=True)
        (self.base / "xdg").mkdir(mode=0o700, exist_ok=True)
        (cfg / "global.ini").write_text(_global_ini(self.ws_port).replace("{password}", self.password))
        (cfg / "basic" / "profiles" / "Test" / "basic.ini").write_text(_profile(self.udp_out_port))
        collection = cfg / "basic" / "scenes" / "Test.json"
        collection.write_text(json.dumps(_collection(self.hotkey_port)))
        # The project's installer puts the hotkey script into the collection, as a user would run it.
        install_obs_script(cfg, self.hotkey_port, [collection])

    def start_display(self) -> None:
        read_fd, write_fd = os.pipe()
        self.xvfb = subprocess.Popen(
            ["Xvfb", "-displayfd", str(write_fd), "-screen", "0", "1280x720x24", "-nolisten", "tcp"],
            pass_fds=(write_fd,), stdout=subprocess.DEVNULL, stderr=(self.base / "xvfb.log").open("w"),
        )
        os.close(write_fd)
        with os.fdopen(read_fd) as pipe:
            number = pipe.readline().strip()
        if not number:
            raise RuntimeError(f"Xvfb did not start: {(self.base / 'xvfb.log').read_text()[-2000:]}")
        self.display = f":{number}"

    def start(self) -> None:
        log = (self.base / "obs.log").open("a")
        self.proc = subprocess.Popen(
            ["obs", "--multi", "--disable-missing-files-check", "--collection", "Test", "--profile", "Test",
             "--websocket_port", str(self.ws_port), "--websocket_ipv4_only"],
            env=self.env(), stdout=log, stderr=subprocess.STDOUT, cwd=self.base, start_new_session=True,
        )
        self.wait_ready()

    def wait_ready(self) -> None:
        deadline = time.monotonic() + OBS_START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"OBS exited with {self.proc.returncode}: {self.log_tail()}")
            try:
                socket.create_connection(("127.0.0.1", self.ws_port), 1).close()
                return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"obs-websocket did not come up in {OBS_START_TIMEOUT_S:.0f} s: {self.log_tail()}")

    def log_tail(self) -> str:
        return (self.base / "obs.log").read_text(errors="replace")[-3000:]

    def kill(self) -> None:
        """SIGKILL, as a crash would; the next ``start`` finds the same config."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()
        if self.xvfb is not None and self.xvfb.poll() is None:
            self.xvfb.terminate()
            self.xvfb.wait(10)

    def client(self):
        import obsws_python

        return obsws_python.ReqClient(host="127.0.0.1", port=self.ws_port, password=self.password, timeout=5)


@pytest.fixture(scope="session")
def obs(tmp_path_factory) -> HeadlessObs:
    """A real OBS 29 (obs-websocket 5.1) running headless for the whole test session."""
    if shutil.which("obs") is None:
        pytest.skip("OBS is not installed (no `obs` on PATH): run install/dev-deps.sh to test against real OBS")
    if shutil.which("Xvfb") is None:
        pytest.fail("OBS is installed but Xvfb is not: run install/dev-deps.sh (it installs xvfb and xauth)")
    instance = HeadlessObs(tmp_path_factory.mktemp("obs"))
    instance.configure()
    instance.start_display()
    try:
        instance.start()
        yield instance
    finally:
        instance.stop()


def write_test_video(path: Path, size: tuple[int, int] = (160, 96), frames: int = 30, fps: int = 30) -> Path:
    """A short H.264 clip whose frames differ (a moving bar), for sources and sinks."""
    w, h = size
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        for i in range(frames):
            image = np.full((h, w, 3), 60, np.uint8)
            x = (i * 7) % (w - 16)
            image[:, x : x + 16] = (230, 200, 40)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


@pytest.fixture
def udp_port() -> int:
    """A free UDP port on 127.0.0.1."""
    return free_port(socket.SOCK_DGRAM)


@pytest.fixture(scope="session")
def test_video(tmp_path_factory) -> Path:
    return write_test_video(tmp_path_factory.mktemp("video") / "clip.mp4")


@pytest.fixture
def daemon_thread(tmp_path):
    """A real daemon in this process, passthrough pipeline, on a unix socket."""
    from morphcam.daemon.config import Config, ModelConfig, ServerConfig
    from morphcam.daemon.server import DaemonThread

    config = Config({
        "server": ServerConfig(unix_socket=str(tmp_path / "d.sock"), address="", metrics_address=""),
        "model": ModelConfig(pipeline="passthrough"),
    })
    with DaemonThread(config) as daemon:
        yield daemon


# A daemon process serving a misbehaving pipeline ("slow" or "failing"), for fail-open tests.
# A subprocess, as in real use: the bridge must not share its interpreter with the daemon's errors.
_FAULTY_DAEMON = """
import signal, sys, time
from morphcam.daemon.config import Config, ModelConfig, ServerConfig
from morphcam.daemon.pipeline import PassthroughPipeline
from morphcam.daemon.server import DaemonThread

class Slow(PassthroughPipeline):  # 250 ms per frame
    def step(self, batch):
        time.sleep(0.25)
        return super().step(batch)

class Busy(PassthroughPipeline):  # 50 ms per frame: fast enough for the deadline, not for 30 fps
    def step(self, batch):
        time.sleep(0.05)
        return super().step(batch)

class Failing(PassthroughPipeline):  # every frame fails
    def step(self, batch):
        return [RuntimeError("the model broke") for _ in batch]

config = Config({"server": ServerConfig(unix_socket=sys.argv[1], address="", metrics_address=""),
                 "model": ModelConfig(pipeline="passthrough")})
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
daemon = DaemonThread(config, {"slow": Slow, "busy": Busy, "failing": Failing}[sys.argv[2]]()).start()
signal.sigwait({signal.SIGTERM})
daemon.stop()
"""


class DaemonProcess:
    """``morphcam serve`` as a subprocess that tests can kill and start again on the same socket;
    with ``faulty`` ("slow", "busy" or "failing") a daemon process whose pipeline misbehaves."""

    def __init__(self, socket_path: Path, log_path: Path, faulty: str = "") -> None:
        self.socket_path, self.log_path, self.faulty = socket_path, log_path, faulty
        self.proc: subprocess.Popen | None = None

    @property
    def address(self) -> str:
        return f"unix:{self.socket_path}"

    def start(self, timeout: float = 60.0) -> None:
        cmd = [sys.executable, "-m", "morphcam.daemon.cli", "serve", "--unix-socket", str(self.socket_path),
               "--address", "", "--pipeline", "passthrough", "--metrics-address", ""]
        if self.faulty:
            cmd = [sys.executable, "-c", _FAULTY_DAEMON, str(self.socket_path), self.faulty]
        self.proc = subprocess.Popen(cmd, stdout=self.log_path.open("a"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"morphcam serve exited: {self.log_path.read_text()[-2000:]}")
            if self.socket_path.exists():
                probe = socket.socket(socket.AF_UNIX)
                try:
                    probe.connect(str(self.socket_path))
                    return
                except OSError:
                    pass
                finally:
                    probe.close()
            time.sleep(0.05)
        raise RuntimeError("morphcam serve did not listen in time")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture
def daemon_process(tmp_path):
    daemon = DaemonProcess(tmp_path / "daemon.sock", tmp_path / "daemon.log")
    daemon.start()
    try:
        yield daemon
    finally:
        daemon.stop()


@pytest.fixture
def faulty_daemon(tmp_path, request):
    """A daemon process whose pipeline is ``request.param``: "slow", "busy" or "failing"."""
    daemon = DaemonProcess(tmp_path / "faulty.sock", tmp_path / "faulty.log", faulty=request.param)
    daemon.start()
    try:
        yield daemon
    finally:
        daemon.stop()

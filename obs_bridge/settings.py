"""Settings of the bridge ([bridge] in the TOML file) and of OBS control ([obs]).

Frozen dataclasses with a default for every field, so an empty section is a working setup:
a looping demo file in, a file out, no OBS. ````__post_init__`` raises ``ValueError`` with a message
that says which key to fix, so the config loader reports it with the file's name. Checks that
need the whole setup (a file source needs a path) happen when ``morphcam live`` starts.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from morphcam.daemon.pipeline import PROMPT_MODES

SOURCE_KINDS = ("device", "udp", "file")
SINK_KINDS = ("virtualcam", "udp", "file")
VIRTUALCAM_FORMATS = ("RGB", "BGR", "RGBA", "I420", "NV12", "YUYV", "UYVY", "GRAY")


@dataclass(frozen=True)
class SourceSettings:
    """Where frames come from ([bridge.source])."""

    kind: str = "file"
    """One of "device" (webcam or OBS Virtual Camera), "udp" (OBS's FFmpeg output), "file"."""
    device: str = ""
    """Capture device: "/dev/video0" (Linux), "video=OBS Virtual Camera" (Windows), "0" (macOS)."""
    device_format: str = ""
    """PyAV input format for devices: "v4l2", "dshow", "avfoundation"; "" picks by OS."""
    video_size: str = ""
    """Devices: capture size to ask for, e.g. "1280x720"; "" takes the device's default."""
    input_format: str = ""
    """Devices: what the camera sends, e.g. "mjpeg" (many webcams need it for 720p30); "" default."""
    url: str = "udp://127.0.0.1:5600"
    """Stream URL for kind "udp": where OBS's Custom Output (FFmpeg) sends MPEG-TS."""
    path: str = ""
    """Video file for kind "file"."""
    loop: bool = True
    """Files only: start again at the end (demos and tests)."""
    fps: float = 30.0
    """Nominal rate: files are paced at it; devices are asked for it."""
    open_timeout_s: float = 5.0
    """Give up opening (and retry) after this long, so a missing stream never hangs the bridge."""


@dataclass(frozen=True)
class SinkSettings:
    """Where frames go ([bridge.sink])."""

    kind: str = "file"
    """One of "virtualcam" (pyvirtualcam), "udp" (MPEG-TS into an OBS Media Source), "file"."""
    backend: str = ""
    """pyvirtualcam backend: "" tries all; "v4l2loopback", "obs", "unitycapture"."""
    device: str = ""
    """Virtual camera: "/dev/video10", "OBS Virtual Camera", "Unity Video Capture"; "" first free."""
    pixel_format: str = "RGB"
    """Pixel format handed to pyvirtualcam: one of VIRTUALCAM_FORMATS."""
    url: str = "udp://127.0.0.1:5601?pkt_size=1316"
    """Kind "udp": where the MPEG-TS stream goes (the OBS Media Source reads it)."""
    path: str = "morphcam-out.mp4"
    """Kind "file": output video; the container follows the extension."""
    bitrate_kbps: int = 4000
    """H.264 bitrate for "udp" and "file"."""


@dataclass(frozen=True)
class RelaySettings:
    """How frames travel through the daemon ([bridge.relay])."""

    deadline_ms: float = 80.0
    """A frame with no styled result after this long is shown as it came in (fail open)."""


@dataclass(frozen=True)
class HotkeySettings:
    """The localhost listener for presses forwarded by the OBS script ([bridge.hotkeys])."""

    enabled: bool = True
    """Listen for hotkey presses from the morphcam OBS script."""
    host: str = "127.0.0.1"
    """Listen address; keep it on loopback: presses carry no credentials."""
    port: int = 47011
    """UDP port; must match the port in the OBS script's settings (Tools > Scripts)."""


@dataclass(frozen=True)
class BridgeSettings:
    """``morphcam live``: source, daemon, sink, hotkeys ([bridge])."""

    daemon: str = "127.0.0.1:50051"
    """Daemon address: "unix:/path/to/morphcam.sock" or "HOST:PORT"."""
    start_daemon: bool = False
    """Also run `morphcam serve` with the same config file as a child, restarted if it exits
    (one command for a streamer); keep it off when the daemon runs as its own service."""
    token: str = ""
    """Bearer token for a daemon off loopback; "" reads $MORPHCAM_TOKEN."""
    session_name: str = "live"
    """Session name at the daemon, so other tools can address it."""
    width: int = 512
    """Frames are scaled to this size before they go to the daemon and to the sink."""
    height: int = 288
    """See width."""
    prompt: str = "original"
    """Prompt at start."""
    strength: float = 0.5
    """Strength at start (0..1); hotkeys move it by strength_step."""
    strength_step: float = 0.1
    """Change per strength-up/strength-down press."""
    styles: tuple[str, ...] = ()
    """Prompts for style slots 1-9 and next/previous; empty: the daemon's named styles."""
    switch_mode: str = "cut"
    """How hotkey, scene and event switches apply: "cut", "recache" or "transition"."""
    transition_frames: int = 15
    """Frames of a "transition" switch."""
    source: SourceSettings = field(default_factory=SourceSettings)
    sink: SinkSettings = field(default_factory=SinkSettings)
    relay: RelaySettings = field(default_factory=RelaySettings)
    hotkeys: HotkeySettings = field(default_factory=HotkeySettings)

    def __post_init__(self) -> None:
        _one_of("bridge.source.kind", self.source.kind, SOURCE_KINDS)
        _one_of("bridge.sink.kind", self.sink.kind, SINK_KINDS)
        _one_of("bridge.sink.pixel_format", self.sink.pixel_format, VIRTUALCAM_FORMATS)
        _one_of("bridge.switch_mode", self.switch_mode, PROMPT_MODES)
        if self.width < 16 or self.height < 16 or self.width % 2 or self.height % 2:
            raise ValueError(f"bridge.width/height must be even and >= 16, got {self.width}x{self.height}")
        if not 0.0 <= self.strength <= 1.0:
            raise ValueError(f"bridge.strength must be in 0..1, got {self.strength}")
        if self.relay.deadline_ms <= 0:
            raise ValueError("bridge.relay.deadline_ms must be > 0")
        if len(self.styles) > 9:
            raise ValueError(f"bridge.styles holds at most 9 prompts (slots 1-9), got {len(self.styles)}")

    def check_runnable(self) -> None:
        """Checks across sections that only matter when the bridge starts."""
        if self.source.kind == "file" and not self.source.path:
            raise ValueError("bridge.source.path is empty: name a video file, or set bridge.source.kind")
        if self.source.kind == "device" and not self.source.device:
            raise ValueError('bridge.source.device is empty: name a camera, e.g. "/dev/video0"')


@dataclass(frozen=True)
class MediaSourceSettings:
    """An OBS Media Source that shows the bridge's UDP output ([obs.media_source])."""

    create: bool = False
    """Create (or update) the Media Source over the WebSocket on every connect."""
    input_name: str = "morphcam"
    """Name of the source in OBS."""
    scene: str = ""
    """Scene to add it to; "" means the current program scene."""
    url: str = "udp://127.0.0.1:5601"
    """What the Media Source reads: the UDP sink's address."""


@dataclass(frozen=True)
class ObsSettings:
    """OBS control over obs-websocket 5 ([obs])."""

    enabled: bool = False
    """Connect to OBS for scene prompts, CustomEvent commands and the Media Source."""
    host: str = "127.0.0.1"
    """obs-websocket host (Tools > WebSocket Server Settings)."""
    port: int = 4455
    """obs-websocket port."""
    password: str = ""
    """obs-websocket password; "" reads $OBS_WEBSOCKET_PASSWORD. Keep authentication on."""
    timeout_s: float = 3.0
    """Per-request timeout; a timed-out connection is dropped and made again."""
    reconnect_interval_s: float = 1.0
    """Watchdog period: health check and reconnect attempts."""
    scene_prompts: dict[str, str] = field(default_factory=dict)
    """Scene name -> prompt; switching OBS to that scene switches the style."""
    event_key: str = "morphcam"
    """CustomEvent payloads carrying this key are commands for the bridge."""
    start_output: bool = False
    """On connect, start OBS's Recording output: set it to Custom Output (FFmpeg) sending MPEG-TS to
    [bridge.source] url, and this feeds the bridge with OBS's program without pressing Record."""
    media_source: MediaSourceSettings = field(default_factory=MediaSourceSettings)

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536:
            raise ValueError(f"obs.port must be 1..65535, got {self.port}")
        for scene, prompt in self.scene_prompts.items():
            if not str(prompt).strip():
                raise ValueError(f"obs.scene_prompts[{scene!r}] is empty: give it a prompt")


def _one_of(key: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{key} must be one of {', '.join(allowed)}; got {value!r}")



def load_sections(path: str | None, sections: dict[str, type]) -> dict[str, Any]:
    """The named sections of the product's TOML file (defaults when ``path`` is None), read and
    validated by the product's one loader (``morphcam.daemon.config``): unknown keys anywhere in
    the file are errors that name the key. ``sections`` maps names to the expected classes."""
    from morphcam.daemon import config as product_config

    loaded = product_config.load(path)
    out = {}
    for name, cls in sections.items():
        section = loaded.section(name)
        if not isinstance(section, cls):
            raise TypeError(f"[{name}] is registered as {type(section).__name__}, not {cls.__name__}")
        out[name] = section
    return out

"""One TOML file configures the whole product; each top-level section maps to a frozen dataclass.

Validation is strict: an unknown key or section is an error that names it (``server.adress``),
and a value of the wrong type says which type was expected. This module stays free of torch so
that the bridge can load the same file.
"""
from __future__ import annotations

import dataclasses
import importlib
import ipaddress
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    """A configuration file or value that cannot be used; the message says what to change."""


def parse_size(text: str, key: str) -> tuple[int, int]:
    """"512x288" -> (512, 288); raises ConfigError naming ``key`` for anything else (frames are at
    least 16x16, as the wire requires)."""
    try:
        width, height = (int(v) for v in text.strip().lower().split("x"))
    except ValueError:
        raise ConfigError(f'{key} must be "WIDTHxHEIGHT" (e.g. "512x288"), got {text!r}') from None
    if width < 16 or height < 16:
        raise ConfigError(f"{key}: {width}x{height} is too small; frames are at least 16x16")
    return width, height


@dataclass(frozen=True)
class ServerConfig:
    """[server]: where and how the daemon listens."""

    unix_socket: str = ""
    """Path of a unix socket to listen on ("" = none). Default when neither is set: see address."""
    address: str = "127.0.0.1:50051"
    """host:port for TCP ("" = TCP off). Anything but loopback requires `token`."""
    token: str = ""
    """Shared secret; TCP callers then send `authorization: Bearer <token>`. Unix-socket callers need none."""
    token_env: str = "MORPHCAM_TOKEN"
    """Environment variable read for the token when `token` is empty."""
    max_message_mb: float = 32.0
    """Largest request accepted, in MiB (a 4K RGB frame is 24 MiB)."""
    max_sessions: int = 16
    """Concurrent sessions; one more is refused with RESOURCE_EXHAUSTED."""
    grace_s: float = 5.0
    """On SIGTERM: seconds running streams get to finish before they are cancelled."""
    metrics_address: str = "127.0.0.1:9464"
    """host:port of the Prometheus /metrics endpoint ("" = off)."""


@dataclass(frozen=True)
class ModelConfig:
    """[model]: what the daemon serves."""

    pipeline: str = "generator"
    """"generator" (the diffusion model) or "passthrough" (frames unchanged)."""
    preset: str = "tiny"
    """Model preset: tiny, small, wan-1.3b-shape."""
    checkpoint: str = ""
    """A .safetensors path, a folder, or a Hugging Face repo id; "" = the embedded default."""
    device: str = "auto"
    """"auto" (CUDA when present), "cpu", "cuda", "cuda:1"."""
    dtype: str = "auto"
    """"auto" (bf16 on GPU, fp32 on CPU), "float32", "bfloat16", "float16"."""
    max_batch: int = 16
    """Most frames (one per session) in one model step."""
    cuda_graphs: bool = True
    """On a CUDA device, replay each batch's whole frame (encode, steps, decode) as one captured
    CUDA graph; false runs every step eagerly. A capture that fails falls back to eager with a warning."""
    executor: str = "graph"
    """What runs each denoising step on a GPU: "graph" (the fused kernels, replayed in CUDA graphs) or
    "megakernel" (a whole step as one persistent Triton launch, for single-session steps; it falls
    back to "graph", saying why in the log, where the GPU cannot run it or its watchdog trips)."""
    batch_wait_ms: float = 4.0
    """How long a step may wait for other streaming sessions' frames to join it (0 = never). Only
    frames due within the wait (by each stream's input rate) are waited for: a lone stream, or
    streams whose next frames come later, never wait."""
    warm_sizes: tuple[str, ...] = ("512x288",)
    """Frame sizes ("WIDTHxHEIGHT") made ready at start-up, so that a stream's first frame at one of
    them replays ready work (its cache pool, staging buffers, CUDA graphs and compiled kernels,
    kept while no stream uses them) instead of building it; [] = none. The default is
    `morphcam live`'s default size; a [bridge] section in the same file adds its width x height."""
    prompt_snap: float = -1.0
    """A prompt whose text embedding is at least this similar (cosine, 0..1) to a wording the model
    was trained on runs as that wording: small models follow the wordings they learned far better
    than new ones. -1 (auto): 0.6 for the embedded default model, which is trained on the built-in
    styles' wordings, and off for a checkpoint of your own; 0 = off; a value in (0, 1] snaps to
    the built-in styles' training wordings with any checkpoint."""
    steady_noise: str = "off"
    """"off": fresh noise every frame (the most faithful styles). "auto": each frame of a stream
    under a deterministic built-in style (after prompt_snap) is drawn from the same noise, so a
    still picture gives a nearly still output; generative styles (snow, rain, sparks, fireflies) and
    other prompts keep fresh noise, which their motion needs. Measured with the default model:
    flicker on a still input falls 3-50x, fidelity to the style falls 0.8-3.3 dB. "on": the same
    noise for every prompt."""
    fp8_linears: bool = False
    """Run the denoiser's block linears on FP8 tensor cores (e4m3 weights and activations, scales
    per channel and per row): a GPU with compute capability 8.9 or newer (Ada, Hopper) and a
    bfloat16 model. It pays for large models: `wan-1.3b-shape` chunks ran 9% faster at a 1.6%
    output difference (bench/RESULTS.md); the embedded `tiny` is too small to gain. Where it
    cannot run, the daemon says why in its log and serves the model in its own precision; the
    "megakernel" executor needs the plain linears and falls back to "graph" with it."""

    def __post_init__(self) -> None:
        for i, text in enumerate(self.warm_sizes):
            parse_size(text, f"model.warm_sizes[{i}]")

    def frame_sizes(self) -> tuple[tuple[int, int], ...]:
        """``warm_sizes`` as (width, height) pairs, in order, without repeats."""
        return tuple(dict.fromkeys(parse_size(t, "model.warm_sizes") for t in self.warm_sizes))


@dataclass(frozen=True)
class SessionConfig:
    """[session]: limits applied to every session."""

    max_width: int = 3840
    max_height: int = 2160
    max_prompt_chars: int = 2000
    """Longest prompt text accepted; longer prompts are refused, not cut."""
    output_queue: int = 2
    """Processed frames held for a client that reads slowly; the model waits beyond that."""


@dataclass(frozen=True)
class PanelConfig:
    """[panel]: the control page, served by the daemon (open it in a browser or as an OBS dock)."""

    address: str = "127.0.0.1:9470"
    """host:port of the page ("" = off). Off loopback it needs the server's token."""
    preview_width: int = 320
    """Width in pixels of the live previews (input and output)."""
    max_body_kb: int = 64
    """Largest request body accepted from the page."""


@dataclass(frozen=True)
class LogConfig:
    """[log]"""

    format: str = "plain"
    """"plain" or "json" (one object per line)."""
    level: str = "info"
    """debug, info, warning, error."""


def _import(spec: str) -> type:
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


# Top-level sections. Values are classes, or "module:Class" strings imported on first use so
# that loading the daemon's config never imports the bridge and vice versa.
SECTIONS: dict[str, type | str] = {
    "server": ServerConfig,
    "model": ModelConfig,
    "session": SessionConfig,
    "panel": PanelConfig,
    "log": LogConfig,
    "bridge": "morphcam.obs_bridge.settings:BridgeSettings",
    "obs": "morphcam.obs_bridge.settings:ObsSettings",
    "chat": "morphcam.obs_bridge.chat.settings:ChatSettings",
}


@dataclass(frozen=True)
class Config:
    """The whole file. Sections not given take their defaults."""

    sections: dict[str, Any] = field(default_factory=dict)

    def section(self, name: str) -> Any:
        if name not in self.sections:
            cls = SECTIONS[name]
            return (_import(cls) if isinstance(cls, str) else cls)()
        return self.sections[name]

    @property
    def server(self) -> ServerConfig:
        return self.section("server")

    @property
    def model(self) -> ModelConfig:
        return self.section("model")

    @property
    def session(self) -> SessionConfig:
        return self.section("session")

    @property
    def panel(self) -> PanelConfig:
        return self.section("panel")

    @property
    def log(self) -> LogConfig:
        return self.section("log")

    def warm_frame_sizes(self) -> tuple[tuple[int, int], ...]:
        """The sizes the daemon makes ready at start-up: ``[model] warm_sizes``, plus the
        ``[bridge]`` frame size when the same file configures a bridge (the size `morphcam live`
        sends), unless warm_sizes is empty (no warm-up at all) or the size exceeds the session
        limits."""
        sizes = self.model.frame_sizes()
        bridge = self.sections.get("bridge")
        if sizes and bridge is not None:
            size = (bridge.width, bridge.height)
            if size not in sizes and size[0] <= self.session.max_width and size[1] <= self.session.max_height:
                sizes += (size,)
        return sizes

    def replace(self, name: str, **changes: Any) -> "Config":
        """A copy with fields of one section changed (validated like the file)."""
        current = dataclasses.asdict(self.section(name))
        current.update(changes)
        cls = SECTIONS[name]
        cls = _import(cls) if isinstance(cls, str) else cls
        return Config({**self.sections, name: build(cls, current, name)})


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _coerce(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a table, got {type(value).__name__}")
        return build(tp, value, where)
    if origin in (typing.Union, types.UnionType):
        errors = []
        for arm in typing.get_args(tp):
            if arm is type(None):
                if value is None:
                    return None
                continue
            try:
                return _coerce(arm, value, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{where}: bad value {value!r}")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} must be a list, got {type(value).__name__}")
        args = typing.get_args(tp)
        item = args[0] if args else Any
        return tuple(_coerce(item, v, f"{where}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a table, got {type(value).__name__}")
        kt, vt = typing.get_args(tp) or (str, Any)
        return {_coerce(kt, k, where): _coerce(vt, v, f"{where}.{k}") for k, v in value.items()}
    if tp is Any:
        return value
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp in (int, float) and isinstance(value, bool):
        raise ConfigError(f"{where} must be {_type_name(tp)}, got a boolean")
    if isinstance(tp, type) and not isinstance(value, tp):
        raise ConfigError(f"{where} must be {_type_name(tp)}, got {type(value).__name__} {value!r}")
    return value


def build(cls: type, data: dict[str, Any], where: str) -> Any:
    """Make a ``cls`` (a dataclass) from a TOML table, rejecting unknown keys by name."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"unknown key {where}.{unknown[0]} (known keys of [{where}]: {', '.join(sorted(names))})")
    kwargs = {k: _coerce(hints[k], v, f"{where}.{k}") for k, v in data.items()}
    try:
        obj = cls(**kwargs)
    except ConfigError:
        raise  # it names its key already
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"[{where}]: {exc}") from exc
    return obj


def parse(data: dict[str, Any]) -> Config:
    """Validate a parsed TOML document."""
    unknown = sorted(set(data) - set(SECTIONS))
    if unknown:
        raise ConfigError(f"unknown section [{unknown[0]}] (known sections: {', '.join(sorted(SECTIONS))})")
    sections = {}
    for name, value in data.items():
        cls = SECTIONS[name]
        cls = _import(cls) if isinstance(cls, str) else cls
        sections[name] = _coerce(cls, value, name)
    config = Config(sections)
    validate(config)
    return config


def load(path: str | Path | None) -> Config:
    """Read and validate a TOML config file; ``None`` gives the defaults."""
    if path is None:
        return Config()
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file {p} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {p}: {exc}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p} is not valid TOML: {exc}") from None
    try:
        return parse(data)
    except ConfigError as exc:
        raise ConfigError(f"{p}: {exc}") from None


def is_loopback(address: str) -> bool:
    """True for 127.0.0.0/8, ::1 and localhost ``host:port`` addresses."""
    host = address.rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def resolve_token(server: ServerConfig, environ: dict[str, str]) -> str:
    """The token in force: ``server.token``, else the variable named by ``server.token_env``."""
    return server.token or (environ.get(server.token_env, "") if server.token_env else "")


def validate(config: Config) -> None:
    """Checks across fields, beyond the types."""
    s, m, log = config.server, config.model, config.log
    if s.address and ":" not in s.address:
        raise ConfigError(f"server.address must be host:port, got {s.address!r}")
    if s.max_message_mb <= 0 or s.max_sessions < 1 or s.grace_s < 0:
        raise ConfigError("server.max_message_mb and server.max_sessions must be positive, server.grace_s >= 0")
    if m.pipeline not in ("generator", "passthrough"):
        raise ConfigError(f"model.pipeline must be 'generator' or 'passthrough', got {m.pipeline!r}")
    if m.max_batch < 1:
        raise ConfigError("model.max_batch must be >= 1")
    if m.executor not in ("graph", "megakernel"):
        raise ConfigError(f"model.executor must be 'graph' or 'megakernel', got {m.executor!r}")
    if not 0 <= m.batch_wait_ms <= 100:
        raise ConfigError("model.batch_wait_ms must be within 0..100")
    if m.steady_noise not in ("auto", "on", "off"):
        raise ConfigError(f"model.steady_noise must be 'auto', 'on' or 'off', got {m.steady_noise!r}")
    if not (m.prompt_snap == -1 or 0 <= m.prompt_snap <= 1):
        raise ConfigError(f"model.prompt_snap must be -1 (auto), 0 (off) or a similarity in (0, 1], got {m.prompt_snap}")
    if log.format not in ("plain", "json"):
        raise ConfigError(f"log.format must be 'plain' or 'json', got {log.format!r}")
    if log.level.lower() not in ("debug", "info", "warning", "error"):
        raise ConfigError(f"log.level must be debug, info, warning or error, got {log.level!r}")
    p = config.panel
    if p.address and ":" not in p.address:
        raise ConfigError(f"panel.address must be host:port, got {p.address!r}")
    if not 32 <= p.preview_width <= 1920 or not 1 <= p.max_body_kb <= 10240:
        raise ConfigError("panel.preview_width must be within 32..1920 and panel.max_body_kb within 1..10240")
    for width, height in m.frame_sizes():
        if width > config.session.max_width or height > config.session.max_height:
            raise ConfigError(f"model.warm_sizes: {width}x{height} is larger than session.max_width x max_height "
                              f"({config.session.max_width}x{config.session.max_height}): no stream could use it")
    if config.session.output_queue < 1:
        raise ConfigError("session.output_queue must be >= 1")

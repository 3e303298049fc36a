"""Model configuration: one frozen dataclass, named presets, derived sizes as properties.

``ModelConfig.from_name("tiny")`` returns a preset; ``dataclasses.replace(cfg, ...)`` makes a
variant (tests use small variants for speed). Only free choices are fields; every size that
follows from them (head width, latent stride, tokens per frame, cache slots) is a property.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ModelConfig:
    """Sizes of the frame autoencoder, the denoiser and the streaming cache."""

    name: str = "tiny"
    # Frame autoencoder. Each entry is one stride-2 stage, so the spatial stride is 2**len.
    ae_channels: tuple[int, ...] = (32, 64, 96)
    ae_decoder_channels: tuple[int, ...] = (64, 32, 16)  # the decoder is kept narrower: it runs every frame
    latent_channels: int = 8
    # Linear skip paths around the autoencoder (cell averages in, a bilinear upsampling out):
    # the low frequencies from the first step. Off in checkpoints written before the option.
    ae_skip: bool = False
    # Denoiser (DiT).
    dim: int = 256
    n_layers: int = 10
    n_heads: int = 4
    # Width of each attention head; 0 means dim // n_heads. Pruning removes whole heads and keeps
    # the width of those it keeps, so a pruned model's attention is narrower than ``dim``.
    attn_head_dim: int = 0
    ffn_dim: int = 1024
    patch_size: int = 2
    text_dim: int = 384  # all-MiniLM-L6-v2 hidden size
    text_tokens: int = 32  # prompts are padded/truncated to this many word pieces (incl. [CLS]/[SEP])
    norm_eps: float = 1e-6
    rope_base: float = 100.0  # frames are at most ~100 patches across; a small base keeps all bands useful
    # Streaming: a few pinned sink frames plus a rolling window of past frames.
    sink_frames: int = 1
    window_frames: int = 4
    frames_per_step: int = 1
    frame_positions: int = 16  # size of the bounded frame-index table; sink+window+step must fit
    # Sampler: starting noise level of each Euler step (scaled by strength); 1 to 4 steps.
    sigmas: tuple[float, ...] = (1.0, 0.5)
    # After the last Euler step, run the denoiser once more on the finished chunk at noise level 0
    # and keep that pass's K/V in the cache (LongLive's and Self-Forcing's cache refresh): one more
    # forward per chunk, and the cache then holds clean frames instead of the last step's input.
    cache_refresh: bool = False
    # 1.0 starts each frame from pure noise, as the denoiser is trained (the input frame still
    # conditions every step through its latent); lower values start from the noised input latent
    # (SDEdit-like), which the training path does not cover. Measured on a first checkpoint:
    # pencil sketch 13.3 dB at 1.0 against 11.0 dB at 0.8 (bench/RESULTS.md).
    default_strength: float = 1.0
    # The frame size the preset is meant for (benchmarks, defaults); sessions may use others.
    width: int = 256
    height: int = 144

    def __post_init__(self) -> None:
        problems = []
        if self.n_heads < 1 or self.ffn_dim < 1 or self.attn_head_dim < 0:
            problems.append(f"n_heads ({self.n_heads}) and ffn_dim ({self.ffn_dim}) must be >= 1, attn_head_dim >= 0")
        elif not self.attn_head_dim and self.dim % self.n_heads:
            problems.append(f"dim {self.dim} is not a multiple of n_heads {self.n_heads}")
        elif self.head_dim % 4:
            problems.append(f"head_dim {self.head_dim} must be a multiple of 4 for 2D RoPE")
        if not 1 <= len(self.sigmas) <= 4:
            problems.append(f"sigmas must list 1 to 4 steps, got {len(self.sigmas)}")
        if any(not 0.0 < s <= 1.0 for s in self.sigmas) or list(self.sigmas) != sorted(self.sigmas, reverse=True):
            problems.append(f"sigmas must be decreasing and in (0, 1], got {self.sigmas}")
        if not 0.0 <= self.default_strength <= 1.0:
            problems.append(f"default_strength must be in [0, 1], got {self.default_strength}")
        if self.frames_per_step < 1:
            problems.append("frames_per_step must be >= 1")
        elif self.sink_frames % self.frames_per_step or self.window_frames % self.frames_per_step:
            problems.append(
                f"sink_frames ({self.sink_frames}) and window_frames ({self.window_frames}) must be "
                f"multiples of frames_per_step ({self.frames_per_step}) so chunks never straddle the ring"
            )
        if len(self.ae_decoder_channels) != len(self.ae_channels):
            problems.append("ae_decoder_channels needs one entry per encoder stage (ae_channels)")
        if self.window_frames < self.frames_per_step:
            problems.append("window_frames must be >= frames_per_step")
        if self.frame_positions < self.visible_frames:
            problems.append(
                f"frame_positions ({self.frame_positions}) must be >= sink + window + frames_per_step "
                f"({self.visible_frames})"
            )
        for f in ("width", "height"):
            if getattr(self, f) % self.frame_multiple:
                problems.append(f"{f} {getattr(self, f)} is not a multiple of {self.frame_multiple}")
        if problems:
            raise ValueError(f"invalid ModelConfig {self.name!r}: " + "; ".join(problems))

    # ---- derived sizes -------------------------------------------------------------------
    @property
    def head_dim(self) -> int:
        return self.attn_head_dim or self.dim // self.n_heads

    @property
    def attn_dim(self) -> int:
        """Inner width of self- and cross-attention: all heads side by side (``dim`` unless pruned)."""
        return self.n_heads * self.head_dim

    @property
    def latent_stride(self) -> int:
        """Pixels per latent cell along each axis (8 for three stride-2 stages)."""
        return 2 ** len(self.ae_channels)

    @property
    def frame_multiple(self) -> int:
        """Frame width and height must be multiples of this (latent stride times patch size)."""
        return self.latent_stride * self.patch_size

    @property
    def patch_dim(self) -> int:
        """Features of one input token: a patch of the noisy latent and of the conditioning latent."""
        return 2 * self.latent_channels * self.patch_size**2

    @property
    def visible_frames(self) -> int:
        """Frames one query chunk can see: sinks, the window and the chunk itself."""
        return self.sink_frames + self.window_frames + self.frames_per_step

    @property
    def ring_frames(self) -> int:
        """Rolling slots: the window plus the chunk being generated (written before eviction)."""
        return self.window_frames + self.frames_per_step

    @property
    def cache_frames(self) -> int:
        """All cache slots per session: pinned sinks plus the ring."""
        return self.sink_frames + self.ring_frames

    def latent_size(self, width: int, height: int) -> tuple[int, int]:
        """(h, w) of the latent of a ``width`` x ``height`` frame; raises for sizes it cannot take."""
        if width <= 0 or height <= 0 or width % self.frame_multiple or height % self.frame_multiple:
            raise ValueError(
                f"frame size {width}x{height} is not supported by {self.name!r}: width and height must "
                f"be positive multiples of {self.frame_multiple} (e.g. 256x144, 512x288)"
            )
        return height // self.latent_stride, width // self.latent_stride

    def tokens_per_frame(self, width: int | None = None, height: int | None = None) -> int:
        h, w = self.latent_size(width or self.width, height or self.height)
        return (h // self.patch_size) * (w // self.patch_size)

    # ---- presets and serialisation -------------------------------------------------------
    @classmethod
    def from_name(cls, name: str, **overrides: Any) -> "ModelConfig":
        """A named preset, optionally with some fields replaced."""
        presets = _presets()
        if name not in presets:
            raise ValueError(f"unknown model preset {name!r}; valid presets: {', '.join(presets)}")
        return dataclasses.replace(presets[name], **overrides)

    @staticmethod
    def preset_names() -> tuple[str, ...]:
        return tuple(_presets())

    def to_json(self) -> str:
        raw = dataclasses.asdict(self)
        if not raw["attn_head_dim"]:  # unpruned models stay readable by releases without the field
            del raw["attn_head_dim"]
        if not raw["ae_skip"]:  # likewise autoencoders without skip paths
            del raw["ae_skip"]
        return json.dumps(raw, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "ModelConfig":
        raw = json.loads(text)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ValueError(f"unknown ModelConfig fields {unknown}: the checkpoint was written by a newer morphcam")
        for key, value in raw.items():
            if isinstance(value, list):
                raw[key] = tuple(value)
        return cls(**raw)


PRESET_DESCRIPTIONS = {
    "tiny": "embedded default; >= 5 fps at 256x144 on a 2-core CPU",
    "small": "a GPU-friendly default for 512x288",
    "wan-1.3b-shape": "Wan2.1-1.3B shapes (30x1536, 1560 tokens/frame at 832x480) for speed comparisons",
}


def _presets() -> dict[str, ModelConfig]:
    # Built on each call: presets are values, not shared mutable state.
    return {
        "tiny": ModelConfig(name="tiny"),
        "small": ModelConfig(
            name="small",
            ae_channels=(64, 128, 192),
            ae_decoder_channels=(128, 64, 32),
            latent_channels=8,
            dim=512,
            n_layers=12,
            n_heads=8,
            ffn_dim=2048,
            sink_frames=1,
            window_frames=6,
            width=512,
            height=288,
        ),
        "wan-1.3b-shape": ModelConfig(
            name="wan-1.3b-shape",
            ae_channels=(128, 256, 512),
            ae_decoder_channels=(256, 128, 64),
            latent_channels=16,
            dim=1536,
            n_layers=30,
            n_heads=12,
            ffn_dim=8960,
            rope_base=10000.0,
            sink_frames=3,
            window_frames=9,
            frame_positions=24,
            sigmas=(1.0, 0.75, 0.5, 0.25),
            width=832,
            height=480,
        ),
    }

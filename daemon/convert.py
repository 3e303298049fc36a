"""Wire messages <-> the daemon's plain types. The only module that knows both sides.

Torch-free: the client uses it too. Every ``*_from_proto`` validates and raises ``ValueError``
with a message fit to send back to the caller.
"""
from __future__ import annotations

from morphcam.protos.v1 import morphcam_pb2 as pb

from .frames import check_size
from .pipeline import PromptChange, WeightedPrompt
from .session import SessionSettings

FORMAT_NAMES = {pb.PIXEL_FORMAT_UNSPECIFIED: "rgb24", pb.RGB24: "rgb24", pb.NV12: "nv12",
                pb.I420: "i420", pb.JPEG: "jpeg"}
FORMAT_VALUES = {"rgb24": pb.RGB24, "nv12": pb.NV12, "i420": pb.I420, "jpeg": pb.JPEG}
_MODES = {pb.PROMPT_MODE_UNSPECIFIED: "cut", pb.CUT: "cut", pb.RECACHE: "recache", pb.TRANSITION: "transition"}
_MODE_VALUES = {"cut": pb.CUT, "recache": pb.RECACHE, "transition": pb.TRANSITION}
_INTERP = {pb.INTERPOLATION_UNSPECIFIED: "slerp", pb.LERP: "lerp", pb.SLERP: "slerp"}
_INTERP_VALUES = {"lerp": pb.LERP, "slerp": pb.SLERP}
_POLICIES = {pb.DROP_POLICY_UNSPECIFIED: "latest", pb.LATEST: "latest", pb.BLOCK: "block"}
_POLICY_VALUES = {"latest": pb.LATEST, "block": pb.BLOCK}


def _name(table: dict, value: int, what: str) -> str:
    if value not in table:
        raise ValueError(f"unknown {what} {value}")
    return table[value]


def check_prompt(change: PromptChange, max_chars: int) -> PromptChange:
    """The daemon's rules for prompt text, wherever a prompt comes from (gRPC, the panel)."""
    for p in change.prompts:
        if len(p.text) > max_chars:
            raise ValueError(f"a prompt of {len(p.text)} characters is too long; the limit is {max_chars}")
        bad = sorted({c for c in p.text if c in "<>" or (ord(c) < 32 and c not in "\t") or ord(c) == 127})
        if bad:
            raise ValueError(f"prompts may not contain markup or control characters ({', '.join(map(repr, bad))})")
    return change


def prompt_from_proto(spec: pb.PromptSpec, max_chars: int) -> PromptChange:
    if not spec.prompts:
        raise ValueError("the prompt is empty: give at least one prompt text")
    if any(len(p.text) > max_chars for p in spec.prompts):  # before building anything from it
        longest = max(len(p.text) for p in spec.prompts)
        raise ValueError(f"a prompt of {longest} characters is too long; the limit is {max_chars}")
    prompts = [WeightedPrompt(p.text, p.weight if p.weight != 0 else 1.0) for p in spec.prompts]
    return check_prompt(PromptChange(
        prompts=tuple(prompts),
        mode=_name(_MODES, spec.mode, "prompt mode"),
        transition_frames=spec.transition_frames,
        interpolation=_name(_INTERP, spec.interpolation, "interpolation"),
    ), max_chars)


def prompt_to_proto(change: PromptChange, origin: str = "") -> pb.PromptSpec:
    return pb.PromptSpec(
        origin=origin,
        prompts=[pb.WeightedPrompt(text=p.text, weight=p.weight) for p in change.prompts],
        mode=_MODE_VALUES[change.mode],
        transition_frames=change.transition_frames,
        interpolation=_INTERP_VALUES[change.interpolation],
    )


def settings_from_proto(msg: pb.SessionSettings, *, max_width: int, max_height: int,
                        max_prompt_chars: int) -> SessionSettings:
    w, h = msg.width, msg.height
    if not (w and h):
        raise ValueError("open: width and height are required")
    if w > max_width or h > max_height:
        raise ValueError(f"open: {w}x{h} is larger than this daemon's limit of {max_width}x{max_height}")
    in_fmt = _name(FORMAT_NAMES, msg.input_format, "input pixel format")
    out_fmt = _name(FORMAT_NAMES, msg.output_format, "output pixel format") if msg.output_format else in_fmt
    check_size(in_fmt, w, h)
    check_size(out_fmt, w, h)
    if not (0.0 <= msg.strength <= 1.0):
        raise ValueError(f"open: strength must be within 0..1, got {msg.strength}")
    if not (0 <= msg.jpeg_quality <= 100):
        raise ValueError(f"open: jpeg_quality must be within 1..100, got {msg.jpeg_quality}")
    if msg.fps < 0 or msg.fps > 1000:
        raise ValueError(f"open: fps must be within 0..1000, got {msg.fps}")
    if len(msg.name) > 64:
        raise ValueError("open: a session name has at most 64 characters")
    prompt = prompt_from_proto(msg.prompt, max_prompt_chars) if msg.prompt.prompts else PromptChange.single("original")
    return SessionSettings(
        width=w, height=h, prompt=PromptChange(prompt.prompts), name=msg.name,
        input_format=in_fmt, output_format=out_fmt, fps=msg.fps or 30.0,
        strength=msg.strength or None, seed=msg.seed if msg.HasField("seed") else None,
        drop_policy=_name(_POLICIES, msg.drop_policy, "drop policy"),
        jpeg_quality=msg.jpeg_quality or 85,
    )


def settings_to_proto(s: SessionSettings) -> pb.SessionSettings:
    msg = pb.SessionSettings(
        name=s.name, width=s.width, height=s.height, input_format=FORMAT_VALUES[s.input_format],
        output_format=FORMAT_VALUES[s.output_format], fps=s.fps, prompt=prompt_to_proto(s.prompt),
        strength=s.strength or 0.0, drop_policy=_POLICY_VALUES[s.drop_policy], jpeg_quality=s.jpeg_quality,
    )
    if s.seed is not None:
        msg.seed = s.seed
    return msg

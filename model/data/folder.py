"""A user's own paired clips: a folder of examples, each an input video, the target video
(the same clip in the look to learn) and the prompt that names the look.

Two layouts, mixable in one folder::

    root/NAME/input.mp4   root/NAME/target.mp4   root/NAME/prompt.txt
    root/NAME.input.mp4   root/NAME.target.mp4   root/NAME.txt

Any container PyAV reads works (.mp4, .mkv, .mov, .webm, ...), and ``input``/``target`` may be
folders of numbered images. ``prompt.txt`` holds one prompt per line; each clip draws one, so
extra lines act as paraphrases. Frames are decoded once, at construction, scaled down to at
most twice the clip size: this suits the small sets people record themselves.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..host import to_device
from .clips import ClipBatch, ClipSpec

VIDEO_SUFFIXES = (".mp4", ".mkv", ".mov", ".avi", ".webm", ".ts", ".m4v", ".gif")
LAYOUT_HELP = (
    "each example needs an input video, a target video and a prompt: either a subfolder "
    "NAME/ with input.mp4, target.mp4 and prompt.txt, or files NAME.input.mp4, NAME.target.mp4 and NAME.txt"
)


class PairedClipError(ValueError):
    """A paired-clip folder that cannot be used; the message names the example and the fix."""


@dataclass(frozen=True)
class _Example:
    name: str
    inputs: Tensor  # (F, 3, H, W) uint8 on the CPU
    targets: Tensor  # same shape as inputs
    prompts: tuple[str, ...]
    fps: float


def _find_media(folder: Path, stem: str) -> Path | None:
    for p in sorted(folder.glob(f"{stem}*")):
        if (p.name == stem and p.is_dir()) or (p.suffix.lower() in VIDEO_SUFFIXES and p.stem == stem):
            return p
    return None


def _layout(root: Path) -> list[tuple[str, Path | None, Path | None, Path | None]]:
    """(name, input, target, prompt file) for every example found; missing parts are None."""
    found: dict[str, list[Path | None]] = {}
    for sub in sorted(p for p in root.iterdir() if p.is_dir()):
        if sub.name in ("input", "target"):
            continue
        parts = [_find_media(sub, "input"), _find_media(sub, "target"), sub / "prompt.txt"]
        if any(p is not None for p in parts[:2]) or parts[2].exists():
            found[sub.name] = [p if p is None or p.exists() else None for p in parts]
    for p in sorted(root.iterdir()):
        for role, idx in (("input", 0), ("target", 1)):
            if p.suffix.lower() in VIDEO_SUFFIXES and p.stem.endswith(f".{role}"):
                name = p.stem[: -len(role) - 1]
                found.setdefault(name, [None, None, None])[idx] = p
    for name, parts in found.items():
        txt = root / f"{name}.txt"
        if parts[2] is None and txt.exists():
            parts[2] = txt
    return [(name, *parts) for name, parts in sorted(found.items())]  # type: ignore[misc]


def _working_size(width: int, height: int, spec: ClipSpec) -> tuple[int, int]:
    """Decode size: scaled down (never up) to about twice the clip size; even sides."""
    scale = min(1.0, 2.0 * max(spec.width / width, spec.height / height))
    return max(2, round(width * scale / 2) * 2), max(2, round(height * scale / 2) * 2)


def _decode(path: Path, size: tuple[int, int], name: str) -> Tensor:
    from morphcam.daemon.video import MediaError, read_frames

    try:
        frames = list(read_frames(path, size))
    except (MediaError, IndexError, OSError) as exc:
        raise PairedClipError(
            f"example {name!r}: cannot read {path.name}: {exc}; re-encode it (e.g. to H.264 .mp4)"
        ) from None
    if not frames:
        raise PairedClipError(f"example {name!r}: {path.name} holds no frames")
    return torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).contiguous()


def load_example(name: str, inp: Path, tgt: Path, prompt_file: Path, spec: ClipSpec) -> _Example:
    """Read and check one example: readable, same size and frame count, long enough, a prompt."""
    from morphcam.daemon.video import MediaError, probe

    try:
        a, b = probe(inp), probe(tgt)
    except MediaError as exc:
        raise PairedClipError(f"example {name!r}: {exc}") from None
    if (a.width, a.height) != (b.width, b.height):
        raise PairedClipError(
            f"example {name!r}: input is {a.width}x{a.height} but target is {b.width}x{b.height}; "
            "both must have the same size"
        )
    size = _working_size(a.width, a.height, spec)
    x, y = _decode(inp, size, name), _decode(tgt, size, name)
    if x.shape[0] != y.shape[0]:
        raise PairedClipError(
            f"example {name!r}: input has {x.shape[0]} frames but target has {y.shape[0]}; "
            "they must be the same clip frame for frame"
        )
    if x.shape[0] < spec.frames:
        raise PairedClipError(f"example {name!r}: {x.shape[0]} frames, fewer than the {spec.frames} a clip needs")
    prompts = tuple(line.strip() for line in prompt_file.read_text(encoding="utf-8").splitlines() if line.strip())
    if not prompts:
        raise PairedClipError(f"example {name!r}: {prompt_file.name} is empty; write the prompt that names the look")
    return _Example(name, x, y, prompts, a.fps)


class PairedClipFolder:
    """Random crops of T frames from a folder of paired clips, resized to ``spec``.

    ``sample(B)`` returns a ``ClipBatch`` like ``SyntheticClips.sample``: inputs and targets
    (B, T, 3, H, W) in [-1, 1], the same spatial crop and frames for both; ``styles`` are the
    example names. Raises ``PairedClipError`` with the fix for a bad layout or unusable video.
    """

    def __init__(
        self, root: str | Path, spec: ClipSpec = ClipSpec(), device: torch.device | str = "cpu", seed: int = 0
    ) -> None:
        root = Path(root)
        if not root.is_dir():
            raise PairedClipError(f"{root} is not a folder; {LAYOUT_HELP}")
        entries = _layout(root)
        if not entries:
            raise PairedClipError(f"{root} holds no examples; {LAYOUT_HELP}")
        for name, inp, tgt, txt in entries:
            parts = (("input video", inp), ("target video", tgt), ("prompt file", txt))
            missing = [what for what, p in parts if p is None]
            if missing:
                raise PairedClipError(f"example {name!r} in {root} has no {' or '.join(missing)}; {LAYOUT_HELP}")
        self.spec = spec
        self.device = torch.device(device)
        self.examples = [
            load_example(name, inp, tgt, txt, spec) for name, inp, tgt, txt in entries  # type: ignore[arg-type]
        ]
        self._rng = torch.Generator().manual_seed(seed)

    def sample(self, batch_size: int) -> ClipBatch:
        rng, spec = self._rng, self.spec
        t, h, w = spec.frames, spec.height, spec.width
        ins, outs, prompts, styles, times = [], [], [], [], []
        for _ in range(batch_size):  # a loop over clips: examples differ in size and length
            ex = self.examples[int(torch.randint(len(self.examples), (1,), generator=rng))]
            n, _, eh, ew = ex.inputs.shape
            start = int(torch.randint(n - t + 1, (1,), generator=rng))
            cw = min(ew, eh * w / h) * float(0.7 + 0.3 * torch.rand(1, generator=rng))
            ch = cw * h / w
            y0 = int(float(torch.rand(1, generator=rng)) * (eh - ch))
            x0 = int(float(torch.rand(1, generator=rng)) * (ew - cw))
            rows, cols = slice(y0, y0 + max(1, round(ch))), slice(x0, x0 + max(1, round(cw)))
            window = (slice(start, start + t), slice(None), rows, cols)
            for src, dst in ((ex.inputs, ins), (ex.targets, outs)):
                clip = to_device(src[window], self.device).float() / 255
                dst.append(F.interpolate(clip, size=(h, w), mode="bilinear", antialias=True, align_corners=False))
            prompts.append(ex.prompts[int(torch.randint(len(ex.prompts), (1,), generator=rng))])
            styles.append(ex.name)
            times.append((start + torch.arange(t)) / ex.fps)
        seeds = torch.randint(0, 2**31 - 1, (batch_size,), generator=rng, dtype=torch.int64)
        return ClipBatch(
            inputs=torch.stack(ins).clamp(0, 1) * 2 - 1, targets=torch.stack(outs).clamp(0, 1) * 2 - 1,
            prompts=prompts, styles=styles, seeds=to_device(seeds, self.device),
            times=to_device(torch.stack(times), self.device),
        )

"""``morphcam evaluate``: measure a checkpoint against the procedural style teachers.

::

    morphcam evaluate --input facecam --style comic --frames 300
    morphcam evaluate --input clip.mp4 --prompt "make me a cartoon" --checkpoint runs/tiny-dn
    morphcam evaluate --input facecam --style "night vision" --frames 2400 --adherence-every 10

Prints one JSON object: fidelity (PSNR and SSIM of the model's output against the teacher's
for the same frames and times), prompt adherence (which teacher each output frame is nearest
to), flicker on a still frame next to the teacher's, drift (fidelity over the first against the
last frames of one long run, input looped) and the model's frame rate. It also writes a contact
sheet (input / teacher / model rows) and a side-by-side video (input | teacher | model).

The measuring functions (``evaluate``, ``adherence``, ``drift``, ``flicker``) take a
``StreamGenerator`` and tensors, so the trainer can call them for its eval steps.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

import numpy as np
import torch
from torch import Tensor

from . import metrics
from .teachers import TEACHERS, StyleTeacher, teacher_for_prompt
from .text import check_prompt
from morphcam.daemon.cli import frame_size

# on_chunk(first_index, inputs, teacher_out or None, model_out): each (F, 3, H, W) in [0, 1].
ChunkHook = Callable[[int, Tensor, "Tensor | None", Tensor], None]


@dataclass(frozen=True)
class EvalOptions:
    """How one run is measured."""

    seed: int = 0  # the session's noise seed and the teachers' seed
    strength: float | None = None  # None: the model's default strength
    adherence_every: int = 1  # score adherence on every k-th frame: all teachers per frame is the slow part
    adherence: bool = True  # False skips adherence (the still run for flicker needs none)
    candidates: Mapping[str, StyleTeacher] = field(default_factory=lambda: TEACHERS)  # styles adherence compares


@dataclass
class RunResult:
    """Per-frame measurements of one run. Lists are in frame order; ``psnr``/``ssim`` are empty
    without a teacher, ``nearest`` holds one style name per adherence-scored frame."""

    frames: int
    psnr: list[float]
    ssim: list[float]
    nearest: list[str]
    model_change: list[float]  # mean |out[t] - out[t-1]|, t >= 1
    teacher_change: list[float]
    model_seconds: float  # time spent in generator.step only

    @property
    def fps(self) -> float | None:
        return self.frames / self.model_seconds if self.model_seconds > 0 else None


def _unit(x: Tensor) -> Tensor:
    """uint8 or float frames -> float32 in [0, 1]."""
    return x.float() / 255.0 if x.dtype == torch.uint8 else x.float()


@torch.no_grad()
def evaluate(
    generator,
    prompt: str,
    frames: Tensor,
    times: Tensor,
    teacher: StyleTeacher | None = None,
    options: EvalOptions = EvalOptions(),
    on_chunk: ChunkHook | None = None,
) -> RunResult:
    """Run ``generator`` (anything with StreamGenerator's ``open_session``/``step``/``config``)
    in one fresh session over ``len(times)`` frames and measure it against ``teacher``.

    frames: (T, 3, H, W) float in [0, 1] or uint8, looped when ``times`` is longer than T, on
    the device the teachers and metrics should run on; times: (N,) seconds, one per output frame.
    """
    t_in, _, h, w = frames.shape
    n = times.shape[0]
    per_step = generator.config.frames_per_step
    session = generator.open_session(w, h, prompt, strength=options.strength, seed=options.seed)
    device = getattr(generator, "device", frames.device)
    dtype = getattr(generator, "dtype", torch.float32)
    result = RunResult(n, [], [], [], [], [], 0.0)
    prev_out = prev_teach = None
    for start in range(0, n, per_step):
        idx = torch.arange(start, start + per_step) % n  # the last chunk pads with wrapped frames
        keep = min(per_step, n - start)
        x = _unit(frames[(idx % t_in).to(frames.device)])  # (F, 3, H, W)
        t = times[idx].to(frames.device)
        t0 = time.perf_counter()
        y = generator.step([session], (x * 2 - 1).to(device, dtype)[None])[0]
        if y.device.type == "cuda":
            torch.cuda.synchronize(y.device)  # count the kernels, not their launch
        result.model_seconds += time.perf_counter() - t0
        x, t = x[:keep], t[:keep]
        y = ((y[:keep].float() + 1) / 2).clamp(0, 1).to(frames.device)
        ref = teacher(x[None], t[None], options.seed)[0] if teacher is not None else None
        if ref is not None:
            result.psnr += metrics.psnr(y, ref).tolist()
            result.ssim += metrics.ssim(y, ref).tolist()
            result.teacher_change += metrics.frame_change(ref, prev_teach).tolist()
            prev_teach = ref[-1]
        result.model_change += metrics.frame_change(y, prev_out).tolist()
        prev_out = y[-1]
        if options.adherence:
            scored = [i for i in range(keep) if (start + i) % options.adherence_every == 0]
            if scored:
                sel = torch.tensor(scored, device=y.device)
                reuse = {teacher.name: ref[sel]} if ref is not None else {}
                result.nearest += nearest_style(y[sel], x[sel], t[sel], options, reuse)
        if on_chunk is not None:
            on_chunk(start, x, ref, y)
    return result


def nearest_style(
    outputs: Tensor, inputs: Tensor, times: Tensor, options: EvalOptions, known: Mapping[str, Tensor] | None = None
) -> list[str]:
    """For each output frame, the candidate style whose teacher output for the same input frame
    and time is nearest in MSE. outputs, inputs: (N, 3, H, W) in [0, 1]; times: (N,).
    ``known`` holds teacher outputs already computed for these frames, by style name."""
    known = known or {}
    names = list(options.candidates)
    errors = torch.stack([
        metrics.mse(outputs, known[name] if name in known
                    else options.candidates[name](inputs[None], times[None], options.seed)[0])
        for name in names
    ])  # (styles, N)
    return [names[i] for i in errors.argmin(0).tolist()]


def fidelity(result: RunResult) -> dict | None:
    """Mean PSNR and SSIM of a run against its teacher; None when it had no teacher."""
    if not result.psnr:
        return None
    return {"psnr_db": metrics.mean_or_none(result.psnr), "ssim": metrics.mean_or_none(result.ssim),
            "ssim_mode": metrics.SSIM_MODE, "psnr_cap_db": metrics.PSNR_CAP_DB}


def adherence(nearest: list[str], style: str | None, every: int = 1) -> dict:
    """How often the nearest teacher is ``style`` (None for a free prompt: only the counts)."""
    counts = Counter(nearest)
    fraction = counts[style] / len(nearest) if style is not None and nearest else None
    return {"style": style, "fraction": fraction, "frames_scored": len(nearest), "every": every,
            "nearest": dict(counts.most_common())}


def flicker(still: RunResult) -> dict:
    """Mean absolute frame-to-frame change of the model and the teacher on a still input, and
    their ratio (None when the teacher is perfectly still, as most non-particle styles are)."""
    model = metrics.mean_or_none(still.model_change)
    teacher = metrics.mean_or_none(still.teacher_change)
    ratio = model / teacher if model is not None and teacher is not None and teacher > 1e-8 else None
    return {"frames": still.frames, "model": model, "teacher": teacher, "ratio": ratio}


def drift(psnr: list[float], window: int = 1000) -> dict | None:
    """Mean PSNR over the first and the last ``min(window, N // 2)`` frames of one run and the
    change (last - first, dB; negative means the run got worse). None below two frames."""
    w = min(window, len(psnr) // 2)
    if w < 1:
        return None
    first, last = sum(psnr[:w]) / w, sum(psnr[-w:]) / w
    return {"window": w, "psnr_first_db": first, "psnr_last_db": last, "delta_db": last - first}


# ---- the command ---------------------------------------------------------------------------------
FACECAM = "facecam"
SHEET_COLUMNS = 4


class UsageError(ValueError):
    """Arguments that cannot be evaluated; the message says what to pass instead."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", required=True,
                        help=f"a video file, a folder of images (name order), or {FACECAM!r} for the built-in scene")
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--style", help="a style name (its canonical prompt; its teacher is the reference)")
    which.add_argument("--prompt", help="free prompt text; fidelity is measured when it is a style's wording")
    parser.add_argument("--teacher", help="with a free --prompt: the style whose teacher is the reference")
    parser.add_argument("--fidelity", action="store_true", help="fail (exit 2) unless fidelity can be measured")
    parser.add_argument("--frames", type=int, default=60, help="frames of the main run, input looped (default 60)")
    parser.add_argument("--still-frames", type=int, default=60, help="frames of the still run for flicker (default 60)")
    parser.add_argument("--adherence-every", type=int, default=1, help="score adherence on every k-th frame")
    parser.add_argument("--fps", type=float, default=30.0, help="frame rate of an image folder or facecam (default 30)")
    parser.add_argument("--checkpoint", help="checkpoint file, folder or repo id (default: shipped weights, else random)")
    parser.add_argument("--preset", default="tiny", help="model preset when no checkpoint says otherwise (default tiny)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--size", type=frame_size, default=(256, 144), help="evaluate at WxH (default 256x144)")
    parser.add_argument("--seed", type=int, default=0, help="noise and teacher seed (default 0)")
    parser.add_argument("--strength", type=float, help="0..1 (default: the model's)")
    parser.add_argument("--out-dir", help="folder for the default sheet and video (default: the working folder)")
    parser.add_argument("--sheet", help="contact sheet PNG (default OUT_DIR/evaluate-STYLE.png)")
    parser.add_argument("--video", help="side-by-side video (default OUT_DIR/evaluate-STYLE.mp4)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


@dataclass(frozen=True)
class Target:
    """What is asked for: the prompt given to the model, the style adherence expects (None for a
    free prompt) and the teacher fidelity is measured against (None: skip fidelity)."""

    prompt: str
    style: str | None
    teacher: StyleTeacher | None


def resolve_target(args: argparse.Namespace) -> Target:
    """The prompt, expected style and teacher the flags name; UsageError if they do not fit."""
    names = ", ".join(TEACHERS)
    if args.style is not None:
        teacher = TEACHERS.get(" ".join(args.style.lower().split()))
        if teacher is None:
            raise UsageError(f"unknown style {args.style!r}; styles: {names}")
        if args.teacher is not None:
            raise UsageError("--teacher goes with a free --prompt; --style already names the teacher")
        return Target(teacher.prompt, teacher.name, teacher)
    check_prompt(args.prompt)  # ValueError for an empty or overlong prompt
    matched = teacher_for_prompt(args.prompt)
    if args.teacher is not None:
        teacher = TEACHERS.get(" ".join(args.teacher.lower().split()))
        if teacher is None:
            raise UsageError(f"unknown --teacher {args.teacher!r}; styles: {names}")
        return Target(args.prompt, teacher.name, teacher)
    if matched is None and args.fidelity:
        raise UsageError(f"prompt {args.prompt!r} is no style's wording, so no teacher can measure fidelity: "
                         f"pass --style NAME, or --teacher NAME to compare against a style, or drop --fidelity")
    return Target(args.prompt, matched.name if matched else None, matched)


def _check_numbers(args: argparse.Namespace) -> None:
    for flag, value in (("--frames", args.frames), ("--still-frames", args.still_frames),
                        ("--adherence-every", args.adherence_every)):
        if value < 1:
            raise UsageError(f"{flag} must be at least 1, got {value}")
    if args.fps <= 0:
        raise UsageError(f"--fps must be positive, got {args.fps}")
    if args.strength is not None and not 0.0 <= args.strength <= 1.0:
        raise UsageError(f"--strength must be in [0, 1], got {args.strength}")


def load_input(source: str, size: tuple[int, int], limit: int, fps: float) -> tuple[Tensor, float]:
    """Up to ``limit`` frames of ``source`` at ``size`` as uint8 (T, 3, H, W), and their rate.
    uint8 keeps a 2000-frame run in memory at a quarter of float32's size."""
    w, h = size
    if source == FACECAM:
        from morphcam.daemon.sample import facecam_frame

        # The scene moves with periods of 1.3 to 2 s: ten seconds of it loop without a visible seam.
        rgb = [facecam_frame(i / fps, w, h) for i in range(min(limit, int(10 * fps)))]
    else:
        # Only files need PyAV: the built-in scene runs where it is not installed.
        from morphcam.daemon.video import MediaError, probe, read_frames

        if not Path(source).exists():
            raise UsageError(f"input {source} does not exist: pass a video file, an image folder, or {FACECAM}")
        try:
            fps = probe(source, fps).fps
            rgb = []
            for frame in read_frames(source, size):
                rgb.append(frame)
                if len(rgb) == limit:
                    break
        except MediaError as exc:
            raise UsageError(str(exc)) from None
        if not rgb:
            raise UsageError(f"input {source} gave no frames")
    return torch.from_numpy(np.stack(rgb)).permute(0, 3, 1, 2).contiguous(), fps


def _uint8(x: Tensor) -> np.ndarray:
    """(3, H, W) in [0, 1] -> (H, W, 3) uint8."""
    return (x.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()


class Recorder:
    """Writes each chunk into the side-by-side video and keeps a few frames for the sheet."""

    def __init__(self, video: Path, size: tuple[int, int], fps: float, frames: int) -> None:
        from morphcam.daemon.video import VideoWriter

        self.w, self.h = size
        self.writer = VideoWriter(video, 3 * self.w, self.h, fps)
        self.picks = sorted(set(np.linspace(0, frames - 1, min(SHEET_COLUMNS, frames)).round().astype(int).tolist()))
        self.rows: dict[int, list[np.ndarray]] = {}

    def __call__(self, start: int, x: Tensor, ref: Tensor | None, y: Tensor) -> None:
        for i in range(x.shape[0]):
            cells = [_uint8(x[i]), _uint8(ref[i]) if ref is not None else None, _uint8(y[i])]
            blank = np.full_like(cells[0], 32)  # dark grey stands in for a missing teacher
            self.writer.write(np.concatenate([c if c is not None else blank for c in cells], axis=1))
            if start + i in self.picks:
                self.rows[start + i] = [c for c in cells if c is not None]

    def write_sheet(self, path: Path, gap: int = 2) -> None:
        """Rows input / teacher / model (no teacher row for a free prompt), one column per pick."""
        from .teachers.preview import write_png

        columns = [self.rows[i] for i in self.picks]
        n_rows = len(columns[0])
        sheet = np.zeros((n_rows * (self.h + gap), len(columns) * (self.w + gap), 3), np.uint8)
        for c, cells in enumerate(columns):
            for r, img in enumerate(cells):
                sheet[r * (self.h + gap): r * (self.h + gap) + self.h, c * (self.w + gap): c * (self.w + gap) + self.w] = img
        path.parent.mkdir(parents=True, exist_ok=True)
        write_png(str(path), sheet)


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA GPU is visible; use --device cpu")
    return torch.device(name)


def _outputs(args: argparse.Namespace, target: Target) -> tuple[Path, Path]:
    slug = "-".join((target.style or "prompt").split())
    folder = Path(args.out_dir or ".")
    return Path(args.sheet or folder / f"evaluate-{slug}.png"), Path(args.video or folder / f"evaluate-{slug}.mp4")


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.WARNING, format="morphcam evaluate: %(levelname)s: %(message)s")
    from .checkpoint import CheckpointError, default_checkpoint_path, load_model
    from .generator import StreamGenerator

    try:
        _check_numbers(args)
        target = resolve_target(args)
        device = _device(args.device)
        frames, fps = load_input(args.input, args.size, args.frames, args.fps)
        frames = frames.to(device)  # teachers and metrics run beside the model
        sheet, video = _outputs(args, target)
        torch.manual_seed(args.seed)  # random weights (no checkpoint) are then the same on every run
        try:
            model = load_model(args.preset, args.checkpoint, device)
        except (FileNotFoundError, CheckpointError) as exc:
            raise UsageError(str(exc)) from None
        model.config.latent_size(*args.size)  # ValueError naming the sizes the model takes
        generator = StreamGenerator(model)
    except (UsageError, ValueError) as exc:
        print(f"morphcam evaluate: {exc}", file=sys.stderr)
        return 2

    from tqdm import tqdm

    options = EvalOptions(seed=args.seed, strength=args.strength, adherence_every=args.adherence_every)
    times = torch.arange(args.frames, dtype=torch.float32) / fps
    recorder = Recorder(video, args.size, fps, args.frames)
    with tqdm(total=args.frames, unit="frame", disable=args.quiet, desc="evaluate", file=sys.stderr) as bar:
        def hook(start: int, x: Tensor, ref: Tensor | None, y: Tensor) -> None:
            recorder(start, x, ref, y)
            bar.update(x.shape[0])

        try:
            main = evaluate(generator, target.prompt, frames, times, target.teacher, options, hook)
        finally:
            recorder.writer.close()
    recorder.write_sheet(sheet)
    still_times = torch.arange(args.still_frames, dtype=torch.float32) / fps
    still = evaluate(generator, target.prompt, frames[:1], still_times, target.teacher,
                     EvalOptions(seed=args.seed, strength=args.strength, adherence=False))
    weights = ("checkpoint" if args.checkpoint else
               "shipped default" if default_checkpoint_path(args.preset).is_file() else "random")
    report = {
        "input": args.input, "prompt": target.prompt, "style": target.style,
        "teacher": target.teacher.name if target.teacher else None,
        "checkpoint": args.checkpoint, "weights": weights, "preset": model.config.name, "device": str(device),
        "size": list(args.size), "seed": args.seed,
        "strength": model.config.default_strength if args.strength is None else args.strength,
        "frames": main.frames, "fps": main.fps,
        "fidelity": fidelity(main), "adherence": adherence(main.nearest, target.style, args.adherence_every),
        "flicker": flicker(still), "drift": drift(main.psnr) if target.teacher else None,
        "sheet": str(sheet), "video": str(video),
    }
    print(json.dumps(report, indent=2))
    return 0

"""Per-style quality of a checkpoint against the style teachers, on held-out inputs and prompts.

For every style: the model streams the built-in face cam and held-out clips (the eval split of
the synthetic data: photos and scenes never trained on), once under the style's canonical
prompt and once under a held-out paraphrase, and is measured with ``morphcam evaluate``'s
metrics (PSNR and SSIM against the teacher, adherence = share of frames whose nearest teacher
is the requested style, flicker on a still input next to the teacher's). Prints a markdown
table and writes the JSON.

    python bench/quality.py --checkpoint model/weights/tiny.safetensors --out quality.json
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from morphcam.daemon.cli import frame_size
from morphcam.model.checkpoint import load_model
from morphcam.model.data import ClipSpec, SyntheticClips
from morphcam.model.evaluate import FACECAM, EvalOptions, evaluate, load_input
from morphcam.model.generator import StreamGenerator
from morphcam.model.prompt_snap import PromptSnap, builtin_wordings
from morphcam.model.teachers import TEACHERS


def inputs(size: tuple[int, int], frames: int, clips: int, fps: float, device) -> list[tuple[str, torch.Tensor]]:
    """[(name, (T, 3, H, W) float in [0, 1])]: the face cam and ``clips`` held-out clips."""
    cam, _ = load_input(FACECAM, size, frames, fps)
    out = [("facecam", cam.float().div(255).to(device))]
    if clips:
        spec = ClipSpec(frames=frames, width=size[0], height=size[1], fps=fps)
        batch = SyntheticClips(spec, split="eval", seed=1234, device=device).sample(clips)
        out += [(f"heldout{i}", (batch.inputs[i] + 1) / 2) for i in range(clips)]
    return out


def measure(generator, style: str, sources, frames: int, fps: float, every: int, still: int) -> dict:
    teacher = TEACHERS[style]
    times = torch.arange(frames, dtype=torch.float32) / fps
    row: dict = {"style": style, "generative": teacher.generative}
    prompts = {"canonical": teacher.prompt, "heldout": teacher.heldout_paraphrases[0]}
    psnr, ssim = [], []
    for kind, prompt in prompts.items():
        nearest = []
        for _, frames_in in sources:
            r = evaluate(generator, prompt, frames_in, times, teacher, EvalOptions(adherence_every=every))
            nearest += r.nearest
            if kind == "canonical":
                psnr += r.psnr
                ssim += r.ssim
        row[f"adherence_{kind}"] = nearest.count(style) / len(nearest)
        row[f"nearest_{kind}"] = max(set(nearest), key=nearest.count)
    row["psnr_db"], row["ssim"] = statistics.fmean(psnr), statistics.fmean(ssim)
    s = evaluate(generator, teacher.prompt, sources[0][1][:1], torch.arange(still, dtype=torch.float32) / fps,
                 teacher, EvalOptions(adherence=False))
    row["flicker_model"] = statistics.fmean(s.model_change)
    row["flicker_teacher"] = statistics.fmean(s.teacher_change)
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", help="checkpoint file or folder (default: the shipped weights)")
    p.add_argument("--preset", default="tiny")
    p.add_argument("--size", type=frame_size, default=(256, 144))
    p.add_argument("--frames", type=int, default=16, help="frames per input run")
    p.add_argument("--clips", type=int, default=1, help="held-out clips beside the face cam")
    p.add_argument("--still-frames", type=int, default=12)
    p.add_argument("--adherence-every", type=int, default=2)
    p.add_argument("--fps", type=float, default=30.0)
    p.add_argument("--styles", nargs="*", help="default: every style")
    p.add_argument("--device", default="cpu")
    p.add_argument("--prompt-snap", type=float, default=0.0, metavar="COSINE",
                   help="run prompts within this similarity of a built-in style's training wording as that "
                        "wording, as the daemon does for the default model (default 0: the model alone)")
    p.add_argument("--steady-noise", choices=("off", "on", "auto"), default="off",
                   help="the same noise every frame (see StreamGenerator; the daemon's default is auto)")
    p.add_argument("--out", help="write the rows as JSON here")
    a = p.parse_args()
    torch.manual_seed(0)
    device = torch.device(a.device)
    snap = PromptSnap(builtin_wordings(), a.prompt_snap) if a.prompt_snap > 0 else None
    generator = StreamGenerator(load_model(a.preset, a.checkpoint, device), prompt_snap=snap,
                                steady_noise=a.steady_noise)
    sources = inputs(a.size, a.frames, a.clips, a.fps, device)
    rows = []
    print("| style | PSNR dB | SSIM | adherence (canonical) | adherence (held-out paraphrase) | flicker model / teacher |")
    print("|---|---|---|---|---|---|")
    for style in a.styles or list(TEACHERS):
        t0 = time.perf_counter()
        r = measure(generator, style, sources, a.frames, a.fps, a.adherence_every, a.still_frames)
        r["seconds"] = time.perf_counter() - t0
        rows.append(r)
        tag = " (generative)" if r["generative"] else ""
        print(f"| {style}{tag} | {r['psnr_db']:.2f} | {r['ssim']:.3f} | {r['adherence_canonical']:.0%} "
              f"(nearest {r['nearest_canonical']}) | {r['adherence_heldout']:.0%} (nearest {r['nearest_heldout']}) | "
              f"{r['flicker_model']:.4f} / {r['flicker_teacher']:.4f} |", flush=True)
    det = [r for r in rows if not r["generative"]]
    summary = {
        "deterministic_mean_psnr_db": statistics.fmean(r["psnr_db"] for r in det) if det else None,
        "deterministic_mean_ssim": statistics.fmean(r["ssim"] for r in det) if det else None,
        "adherence_canonical": statistics.fmean(r["adherence_canonical"] for r in rows),
        "adherence_heldout": statistics.fmean(r["adherence_heldout"] for r in rows),
    }
    print(json.dumps(summary))
    if a.out:
        with open(a.out, "w") as f:
            json.dump({"args": {k: v for k, v in vars(a).items()}, "rows": rows, "summary": summary}, f, indent=1)


if __name__ == "__main__":
    main()

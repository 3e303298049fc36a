"""``morphcam train autoencoder|denoiser|shortcut|prune``: flags map one to one onto ``TrainConfig``.

The first two stages, each resumable (``--resume`` continues the run in ``--out``, or starts it)::

    morphcam train autoencoder --preset tiny --out runs/tiny-ae --resume
    morphcam train denoiser --preset tiny --init runs/tiny-ae --out runs/tiny-dn --resume
    morphcam serve --checkpoint runs/tiny-dn/model.safetensors

Then shortcut distillation and pruning, each from a denoiser run and resumable the same way (the
model's sizes come from ``--init``, not ``--preset``; prune runs in one process)::

    morphcam train shortcut --init runs/tiny-dn --sigmas 1.0 --out runs/tiny-sc --resume
    morphcam train prune --init runs/tiny-sc --heads 3 --ffn-dim 512 --out runs/tiny-pr --resume

With ``--pool N`` the clips come from a pool on the device, ``--pool-refresh`` new ones per step;
the stages after the autoencoder may add ``--pool-latents`` so the pool keeps each clip's
latents, encoded once, and the steps skip the frozen encoder.

On several GPUs of one host, run the same command under torchrun
(``torchrun --standalone --nproc_per_node 8 -m morphcam.model.train.cli denoiser ...``);
``--batch`` is per GPU and only rank 0 writes the log and the checkpoints.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import sys

from .config import IMPORTANCES, LOSS_WEIGHTINGS, NOISE_SAMPLINGS, PRECISIONS, STAGES, TEACHERS, TrainConfig
from morphcam.daemon.cli import frame_size


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = TrainConfig()
    parser.add_argument("stage", choices=STAGES, help="autoencoder first, then denoiser (with --init from the first); "
                        "then shortcut and prune (each with --init from a denoiser run)")
    parser.add_argument("--preset", default="tiny", help="model preset (default tiny)")
    parser.add_argument("--steps", type=int, default=d.steps, help=f"optimizer steps (default {d.steps})")
    parser.add_argument("--batch", type=int, default=d.batch_size, help=f"clips per GPU per step (default {d.batch_size})")
    parser.add_argument("--lr", type=float, default=d.lr, help=f"peak learning rate (default {d.lr})")
    parser.add_argument("--warmup", type=int, default=d.warmup_steps, help=f"warmup steps (default {d.warmup_steps})")
    parser.add_argument("--weight-decay", type=float, default=d.weight_decay)
    parser.add_argument("--grad-clip", type=float, default=d.grad_clip, help="max grad norm, 0 = off")
    parser.add_argument("--ema", type=float, default=d.ema_decay, help=f"EMA decay (default {d.ema_decay})")
    parser.add_argument("--frames", type=int, default=d.frames, help=f"frames per clip (default {d.frames})")
    parser.add_argument("--size", type=frame_size, default=(d.width, d.height), help="clip size WxH (default 256x144)")
    parser.add_argument("--data", default=d.data, help='"synthetic" or a folder of paired clips')
    parser.add_argument("--still-prob", type=float, default=d.still_prob,
                        help="synthetic data: share of training clips whose input is held still (default 0)")
    parser.add_argument("--style-weight", action="append", default=[], metavar="STYLE=W",
                        help='synthetic data: draw STYLE W times as often as the others, e.g. "oil painting=2" '
                             "(repeatable; 0 leaves a style out)")
    parser.add_argument("--out", help="output folder (default runs/STAGE)")
    parser.add_argument("--init", help="start from this checkpoint (the denoiser takes the autoencoder run's)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out where it stopped (or start it)")
    sc, pr = d.shortcut, d.prune
    group = parser.add_argument_group("shortcut", "distil the denoiser to the 1-2 sampler steps of --sigmas")
    group.add_argument("--sigmas", type=float, nargs="+", metavar="SIGMA",
                       help="sampler steps to distil for, written into the exported model (e.g. 1.0, or 1.0 0.5; "
                            "default: the --init model's)")
    group.add_argument("--consistency", type=float, default=sc.consistency,
                       help=f"share of clips with a self-consistency target (default {sc.consistency})")
    group.add_argument("--schedule-prob", type=float, default=sc.schedule_prob,
                       help=f"share of those frames at exactly the sampler's steps (default {sc.schedule_prob})")
    group.add_argument("--min-step", type=float, default=sc.min_step,
                       help=f"smallest step size, where plain flow matching anchors (default {sc.min_step})")
    group.add_argument("--teacher", choices=TEACHERS, default=sc.teacher,
                       help="consistency targets from the run's EMA or from the frozen --init weights")
    group = parser.add_argument_group("prune", "cut heads and FFN units to tile multiples, then fine-tune")
    group.add_argument("--heads", type=int, default=pr.heads, help="attention heads to keep per block (0 = all)")
    group.add_argument("--ffn-dim", type=int, default=pr.ffn_dim, help="FFN units to keep per block (0 = all)")
    group.add_argument("--tile", type=int, default=pr.tile,
                       help=f"heads x head width and the FFN width must be multiples of this (default {pr.tile})")
    group.add_argument("--importance", choices=IMPORTANCES, default=pr.importance,
                       help="rank units by their contribution on calibration batches, or by weight magnitude")
    group.add_argument("--calib-batches", type=int, default=pr.calib_batches,
                       help=f"calibration batches for --importance activation (default {pr.calib_batches})")
    parser.add_argument("--device", default=d.device, help="auto, cpu, cuda (default auto)")
    parser.add_argument("--precision", choices=PRECISIONS, default=d.precision, help="auto: bf16 on CUDA, fp32 on CPU")
    parser.add_argument("--seed", type=int, default=d.seed)
    parser.add_argument("--log-interval", type=int, default=d.log_interval)
    parser.add_argument("--eval-interval", type=int, default=d.eval_interval)
    parser.add_argument("--eval-batches", type=int, default=d.eval_batches)
    parser.add_argument("--ckpt-interval", type=int, default=d.ckpt_interval)
    parser.add_argument("--noise-sampling", choices=NOISE_SAMPLINGS, default=d.noise_sampling)
    parser.add_argument("--loss-weighting", choices=LOSS_WEIGHTINGS, default=d.loss_weighting)
    parser.add_argument("--history-prob", type=float, default=d.history.prob,
                        help=f"share of clips whose history is degraded (default {d.history.prob})")
    parser.add_argument("--sampler-prob", type=float, default=d.sampler_prob,
                        help=f"share of frames trained at the stream sampler's own levels (default {d.sampler_prob})")
    parser.add_argument("--pool", type=int, default=d.pool_size,
                        help="clips kept on the device and reused (0 = fresh clips every step; e.g. 2048 on a GPU)")
    parser.add_argument("--pool-refresh", type=int, default=d.pool_refresh,
                        help=f"pooled clips replaced by new ones per step (default {d.pool_refresh})")
    parser.add_argument("--pool-latents", action="store_true",
                        help="denoiser, shortcut and prune: the pool keeps each clip's latents, encoded once as it "
                             "comes in, not its frames, so steps skip the frozen encoder (needs --pool)")
    parser.add_argument("--compile", action="store_true",
                        help="denoiser and prune: torch.compile the clip forward and backward, which fuses the "
                             "step's many small kernels (the first step compiles for a minute or more)")
    parser.add_argument("--ae-skip", action="store_true",
                        help="autoencoder with linear skip paths (the preset's model otherwise); pass it to both "
                             "the autoencoder and the denoiser stage")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _model_config(args: argparse.Namespace):
    """The preset's config; for shortcut and prune the --init model's (shortcut: with --sigmas)."""
    from ..config import ModelConfig

    if args.stage not in ("shortcut", "prune"):
        return ModelConfig.from_name(args.preset, **({"ae_skip": True} if args.ae_skip else {}))
    if args.ae_skip:
        raise ValueError(f"--ae-skip shapes a new model; the {args.stage} stage takes its model from --init")
    if not args.init:
        raise ValueError(f"the {args.stage} stage starts from a trained denoiser: pass --init RUN_FOLDER_OR_CHECKPOINT")
    from .state import init_model_config

    config = init_model_config(args.init)
    if args.sigmas and args.stage == "shortcut":
        config = dataclasses.replace(config, sigmas=tuple(args.sigmas))  # ModelConfig names a bad schedule
    return config


def _style_weights(items: list[str]) -> dict[str, float]:
    """``["oil painting=2", ...]`` -> ``{"oil painting": 2.0}``; TrainConfig checks the names."""
    out: dict[str, float] = {}
    for item in items:
        name, sep, weight = item.rpartition("=")
        try:
            if not sep or not name.strip():
                raise ValueError
            out[name.strip()] = float(weight)
        except ValueError:
            raise ValueError(f'--style-weight {item!r}: write STYLE=WEIGHT, e.g. "oil painting=2"') from None
    return out


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The ``TrainConfig`` the flags describe; ValueError (naming the flag's field) if invalid."""
    from .config import PruneSettings, ShortcutDistill

    if args.sigmas and args.stage != "shortcut":
        raise ValueError("--sigmas is a shortcut-stage flag: the sampler steps a model is distilled for")
    d = TrainConfig()
    return TrainConfig(
        stage=args.stage,
        model=_model_config(args),
        steps=args.steps,
        batch_size=args.batch,
        lr=args.lr,
        warmup_steps=args.warmup,
        weight_decay=args.weight_decay,
        grad_clip=args.grad_clip,
        ema_decay=args.ema,
        frames=args.frames,
        width=args.size[0],
        height=args.size[1],
        data=args.data,
        still_prob=args.still_prob,
        style_weights=_style_weights(args.style_weight),
        shortcut=ShortcutDistill(consistency=args.consistency, schedule_prob=args.schedule_prob,
                                 min_step=args.min_step, teacher=args.teacher),
        prune=PruneSettings(heads=args.heads, ffn_dim=args.ffn_dim, tile=args.tile, importance=args.importance,
                            calib_batches=args.calib_batches),
        out_dir=args.out or f"runs/{args.stage}",
        init=args.init,
        resume=args.resume,
        device=args.device,
        precision=args.precision,
        seed=args.seed,
        log_interval=args.log_interval,
        eval_interval=args.eval_interval,
        eval_batches=args.eval_batches,
        ckpt_interval=args.ckpt_interval,
        noise_sampling=args.noise_sampling,
        loss_weighting=args.loss_weighting,
        history=dataclasses.replace(d.history, prob=args.history_prob),
        sampler_prob=args.sampler_prob,
        pool_size=args.pool,
        pool_refresh=args.pool_refresh,
        pool_latents=args.pool_latents,
        compile=args.compile,
        quiet=args.quiet,
    )


def run(args: argparse.Namespace) -> int:
    try:
        config = config_from_args(args)
    except (ValueError, FileNotFoundError) as exc:
        print(f"morphcam train: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if config.stage == "prune":
        return _run_prune(config)
    from .loop import Trainer

    try:
        trainer = Trainer(config)
    except (ValueError, FileNotFoundError) as exc:  # unusable --init, --resume mismatch, missing data folder
        print(f"morphcam train: {exc}", file=sys.stderr)
        return 2
    try:
        summary = trainer.train()
    finally:
        trainer.close()
    if trainer.env.is_main:
        print(f"trained {config.stage} to step {summary['step']} (loss {summary['loss']:.4f}): {config.out_dir}/model.safetensors")
    return 0


def _run_prune(config: TrainConfig) -> int:
    import json

    from .prune import run_prune

    try:
        report = run_prune(config)
    except (ValueError, FileNotFoundError) as exc:  # sizes that do not fit, --resume mismatch, missing data
        print(f"morphcam train: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(report))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="morphcam train", description="train the autoencoder and the denoiser, distil and prune")
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())

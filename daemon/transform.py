"""``morphcam transform IN -o OUT --prompt TEXT``: a file through the real daemon path.

Starts a daemon in this process on a private unix socket unless ``--address`` names a running
one; either way every frame goes through gRPC exactly as a live stream's would, in order and
none dropped. The output is written to a temporary name and renamed when complete.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from . import config as config_mod
from .cli import frame_size
from .client import DaemonClient, DaemonError, StreamSettings
from .logs import setup_logging
from .serve import add_config_argument
from .server import DaemonThread
from .video import MediaError, VideoWriter, probe, read_frames

log = logging.getLogger(__name__)


def _size(text: str) -> tuple[int, int]:
    w, h = frame_size(text)
    if w < 16 or h < 16 or w % 2 or h % 2:
        raise argparse.ArgumentTypeError(f"size {w}x{h}: width and height must be even and at least 16")
    return w, h


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", help="a video file or a folder of images (name order)")
    parser.add_argument("-o", "--output", required=True, help="output video file (.mp4, .mkv, .mov, .webm, ...)")
    parser.add_argument("--prompt", default="original", help="style prompt (default: original)")
    parser.add_argument("--size", type=_size, help="process at WxH (default: the input's size, rounded down to 16)")
    parser.add_argument("--fps", type=float, default=30.0, help="frame rate of an image folder (default 30)")
    parser.add_argument("--strength", type=float, help="0..1: how much of the input is replaced")
    parser.add_argument("--seed", type=int, help="noise seed (default: random)")
    parser.add_argument("--format", default="rgb24", choices=("rgb24", "nv12", "i420", "jpeg"),
                        help="pixel format on the wire (default rgb24)")
    parser.add_argument("--address", help="use the daemon at this address instead of starting one")
    parser.add_argument("--token", default=os.environ.get("MORPHCAM_TOKEN"), help="token for --address")
    add_config_argument(parser)
    parser.add_argument("--pipeline", choices=("generator", "passthrough"), help="model.pipeline (own daemon)")
    parser.add_argument("--preset", help="model.preset (own daemon)")
    parser.add_argument("--checkpoint", help="model.checkpoint (own daemon)")
    parser.add_argument("--device", help="model.device (own daemon)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _own_daemon_config(args: argparse.Namespace, socket_path: str) -> config_mod.Config:
    cfg = config_mod.load(args.config)
    cfg = cfg.replace("server", unix_socket=socket_path, address="", metrics_address="")
    # One file, one stream: its first frame's wait is nothing beside the file, so start at once.
    cfg = cfg.replace("model", warm_sizes=())
    model = {k: getattr(args, k) for k in ("pipeline", "preset", "checkpoint", "device") if getattr(args, k)}
    return cfg.replace("model", **model) if model else cfg


def transform(args: argparse.Namespace, address: str) -> dict[str, float]:
    info = probe(args.input, args.fps)
    size = args.size or (max(16, info.width // 16 * 16), max(16, info.height // 16 * 16))
    settings = StreamSettings(size[0], size[1], args.prompt, name="", input_format=args.format,
                              strength=args.strength, seed=args.seed, fps=info.fps)
    out = Path(args.output)
    partial = out.with_name(f".{out.stem}.partial{out.suffix}")
    latencies: list[float] = []
    t0 = time.perf_counter()
    with DaemonClient(address, args.token, timeout_s=60.0) as client:
        if not client.wait_ready(30.0):
            raise MediaError(f"no daemon answers at {address}: start one with `morphcam serve`")
        writer = VideoWriter(partial, size[0], size[1], info.fps)
        try:
            with tqdm(total=info.frames, unit="frame", disable=args.quiet, desc=out.name) as bar:
                for frame in client.transform(settings, read_frames(args.input, size)):
                    writer.write(frame.image)
                    latencies.append(frame.timings["total_us"] / 1000)
                    bar.update(1)
        except BaseException:
            writer.close()
            partial.unlink(missing_ok=True)
            raise
        writer.close()
    if not latencies:
        partial.unlink(missing_ok=True)
        raise MediaError(f"{args.input} gave no frames")
    partial.replace(out)
    seconds = time.perf_counter() - t0
    return {"frames": len(latencies), "seconds": seconds, "fps": len(latencies) / seconds,
            "p50_ms": float(np.percentile(latencies, 50)), "p99_ms": float(np.percentile(latencies, 99))}


def run(args: argparse.Namespace) -> int:
    setup_logging(config_mod.load(args.config).log if args.config else config_mod.LogConfig(level="warning"))
    try:
        if args.address:
            stats = transform(args, args.address)
            pipeline = "remote daemon"
        else:
            with tempfile.TemporaryDirectory(prefix="morphcam-") as tmp:
                socket_path = os.path.join(tmp, "daemon.sock")
                with DaemonThread(_own_daemon_config(args, socket_path)) as daemon:
                    pipeline = daemon.daemon.worker.pipeline.name
                    note = daemon.daemon.worker.pipeline.note
                    if note:
                        print(f"morphcam transform: note: {note}", file=sys.stderr)
                    stats = transform(args, daemon.address)
    except (MediaError, DaemonError) as exc:
        print(f"morphcam transform: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {args.output}: {stats['frames']} frames in {stats['seconds']:.1f} s "
          f"({stats['fps']:.1f} fps, daemon latency p50 {stats['p50_ms']:.1f} ms, p99 {stats['p99_ms']:.1f} ms, "
          f"pipeline {pipeline})")
    return 0

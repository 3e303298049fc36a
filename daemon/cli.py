"""The ``morphcam`` command. Each subcommand lives in its own module, imported only when run.

A subcommand module offers ``add_arguments(parser)`` and ``run(args) -> int``.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from . import version
from .config import ConfigError

# name -> (module, one-line help). Modules load lazily: `morphcam live` never imports torch.
COMMANDS: dict[str, tuple[str, str]] = {
    "serve": ("morphcam.daemon.serve", "run the daemon (gRPC on a unix socket and/or 127.0.0.1)"),
    "transform": ("morphcam.daemon.transform", "restyle a video file or image folder into a video file"),
    "live": ("morphcam.obs_bridge.live", "bridge a camera or OBS through the daemon to a virtual camera or OBS"),
    "train": ("morphcam.model.train.cli", "train the autoencoder and the denoiser, distil and prune"),
    "evaluate": ("morphcam.model.evaluate", "measure a checkpoint against the style teachers"),
    "doctor": ("morphcam.obs_bridge.doctor", "check GPU, virtual camera, OBS WebSocket and ports, and say what to fix"),
}


def frame_size(text: str) -> tuple[int, int]:
    """argparse type for WIDTHxHEIGHT options of every subcommand."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like 256x144, got {text!r}") from None
    if w <= 0 or h <= 0:
        raise argparse.ArgumentTypeError(f"size {w}x{h}: width and height must be positive")
    return w, h


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"usage: morphcam COMMAND [options]   (morphcam COMMAND --help for its options)", "", "commands:"]
    lines += [f"  {name:<{width}}  {text}" for name, (_, text) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else 2
    if argv[0] == "--version":
        print(f"morphcam {version()}")
        return 0
    name = argv[0]
    if name not in COMMANDS:
        print(f"morphcam: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module_name, text = COMMANDS[name]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            print(f"morphcam: `{name}` is not part of this installation ({exc})", file=sys.stderr)
            return 2
        raise
    parser = argparse.ArgumentParser(prog=f"morphcam {name}", description=text)
    module.add_arguments(parser)
    args = parser.parse_args(argv[1:])
    try:
        return int(module.run(args) or 0)
    except ConfigError as exc:
        print(f"morphcam {name}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

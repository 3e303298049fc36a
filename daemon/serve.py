"""``morphcam serve``: run the daemon until SIGTERM or Ctrl-C, then drain."""
from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from . import config as config_mod
from .logs import setup_logging
from .server import Daemon

log = logging.getLogger(__name__)


def add_config_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", help="TOML config file (see README); default: built-in defaults")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_argument(parser)
    parser.add_argument("--unix-socket", metavar="PATH", help="listen on this unix socket (server.unix_socket)")
    parser.add_argument("--address", metavar="HOST:PORT",
                        help="listen on this TCP address, '' for none (server.address; default 127.0.0.1:50051)")
    parser.add_argument("--pipeline", choices=("generator", "passthrough"), help="model.pipeline")
    parser.add_argument("--preset", help="model.preset (tiny, small, wan-1.3b-shape)")
    parser.add_argument("--checkpoint", help="model.checkpoint: .safetensors file, folder or Hugging Face repo id")
    parser.add_argument("--device", help="model.device: auto, cpu, cuda, cuda:N")
    parser.add_argument("--metrics-address", metavar="HOST:PORT", help="Prometheus endpoint, '' for none")
    parser.add_argument("--log-format", choices=("plain", "json"), help="log.format")


def apply_overrides(cfg: config_mod.Config, args: argparse.Namespace) -> config_mod.Config:
    """Command-line options win over the file; each maps to one config key."""
    table = {"server": {"unix_socket": "unix_socket", "address": "address", "metrics_address": "metrics_address"},
             "model": {"pipeline": "pipeline", "preset": "preset", "checkpoint": "checkpoint", "device": "device"},
             "log": {"log_format": "format"}}
    for section, keys in table.items():
        changes = {key: getattr(args, opt) for opt, key in keys.items() if getattr(args, opt, None) is not None}
        if changes:
            cfg = cfg.replace(section, **changes)
    config_mod.validate(cfg)
    return cfg


async def serve(cfg: config_mod.Config) -> None:
    daemon = Daemon(cfg)
    await daemon.start()
    loop = asyncio.get_running_loop()
    stopping: list[asyncio.Task] = []

    def on_signal(signum: int) -> None:
        if stopping:  # a second signal: stop now
            log.warning("second %s: stopping without grace", signal.Signals(signum).name)
            stopping.append(loop.create_task(daemon.stop(0)))
            return
        log.info("%s: draining", signal.Signals(signum).name)
        stopping.append(loop.create_task(daemon.stop()))

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    await daemon.wait()
    log.info("daemon stopped")


def run(args: argparse.Namespace) -> int:
    cfg = apply_overrides(config_mod.load(args.config), args)
    setup_logging(cfg.log)
    # The worker thread (model steps) and the event loop (gRPC) share the interpreter lock; a thread
    # that wants it waits up to the switch interval (5 ms by default) for a busy holder: a frame's
    # budget is 10 ms, so hand it over within 0.5 ms.
    sys.setswitchinterval(0.0005)
    asyncio.run(serve(cfg))
    return 0

"""Load benchmark: N concurrent live sessions x F fps of WxH frames through the daemon.

Starts `morphcam serve` in its own process (unless --address is given), opens N LiveStreams
from this process (or spread over --client-procs processes, so one client interpreter does not
set the pace of eight streams), each paced at --fps with a fresh capture timestamp per frame, and reports
per session: frames sent and received, output fps, client-side latency (capture timestamp to
output received: gRPC both ways plus the daemon) p50/p99, the daemon's own total p50/p99, and
frames dropped (by the client's newest-frame slot and by the daemon). The first --warmup
seconds (connection set-up) are left out of the latency figures; the first frame's delay is
reported on its own.

    python bench/load.py --sessions 8 --seconds 60 --pipeline passthrough
    python bench/load.py --sessions 8 --seconds 60 --pipeline generator --preset tiny --device cuda
    python bench/load.py --sessions 8 --client-procs 4 --seconds 60 --pipeline generator --device cuda
    python bench/load.py --sessions 1 --seconds 3 --pipeline generator --device cpu --size 256x144 --warm-sizes none
"""
from __future__ import annotations

import argparse
import concurrent.futures
import json
import multiprocessing
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from morphcam.daemon.client import DaemonClient, LiveStream, StreamSettings


class PacedSession(threading.Thread):
    def __init__(self, address: str, index: int, size: tuple[int, int], fps: float, seconds: float, fmt: str,
                 warmup_s: float = 1.0) -> None:
        super().__init__(daemon=True)
        self.warmup_ns = int(warmup_s * 1e9)
        w, h = size
        self.live = LiveStream(address, StreamSettings(w, h, "pencil sketch", name=f"load-{index}", input_format=fmt))
        rng = np.random.default_rng(index)
        self.images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(4)]
        self.period = 1.0 / fps
        self.seconds = seconds
        self.latency_ms: list[float] = []
        self.daemon_ms: list[float] = []
        self.model_ms: list[float] = []
        self.batch: list[int] = []
        self.sent = 0
        self.received = 0
        self.daemon_dropped = 0
        self.first_frame_ms: float | None = None

    def _collect(self, stop: threading.Event) -> None:
        while not stop.is_set():
            out = self.live.get_output(0.1)
            if out is None:
                continue
            now = time.time_ns()
            self.received += 1
            if self.first_frame_ms is None:
                self.first_frame_ms = (now - self.t_start_ns) / 1e6
            if out.capture_time_ns - self.t_start_ns >= self.warmup_ns:  # connection set-up is not steady state
                self.latency_ms.append((now - out.capture_time_ns) / 1e6)
                self.daemon_ms.append(out.timings["total_us"] / 1000)
                self.model_ms.append(out.timings["model_us"] / 1000)
                self.batch.append(out.timings["batch_size"])
            self.daemon_dropped = out.dropped_total

    def run(self) -> None:
        self.t_start_ns = time.time_ns()
        self.live.start()
        stop = threading.Event()
        collector = threading.Thread(target=self._collect, args=(stop,), daemon=True)
        collector.start()
        t0 = time.perf_counter()
        next_t = t0
        while time.perf_counter() - t0 < self.seconds:
            self.live.submit(self.images[self.sent % 4], time.time_ns())
            self.sent += 1
            next_t += self.period
            time.sleep(max(0.0, next_t - time.perf_counter()))
        time.sleep(0.5)  # let the last frames come back
        stop.set()
        collector.join(2)
        self.elapsed = time.perf_counter() - t0
        self.live.stop()

    def report(self) -> dict:
        lat = np.array(self.latency_ms or [np.nan])
        dm = np.array(self.daemon_ms or [np.nan])
        return {
            "session": self.live.settings.name, "sent": self.sent, "received": self.received,
            "fps_out": self.received / self.seconds, "latency_p50_ms": float(np.percentile(lat, 50)),
            "latency_p99_ms": float(np.percentile(lat, 99)), "daemon_p50_ms": float(np.percentile(dm, 50)),
            "daemon_p99_ms": float(np.percentile(dm, 99)),
            "model_p50_ms": float(np.percentile(self.model_ms or [np.nan], 50)),
            "batch_mean": float(np.mean(self.batch or [np.nan])), "dropped_client": self.live.frames_skipped,
            "dropped_daemon": self.daemon_dropped, "first_frame_ms": self.first_frame_ms,
            "reconnects": self.live.reconnects,
        }


def start_daemon(args: argparse.Namespace, tmp: str, panel: str = "") -> tuple[subprocess.Popen, str]:
    sock = os.path.join(tmp, "bench.sock")
    config = Path(tmp) / "bench.toml"
    config.write_text(
        f'[server]\nunix_socket = "{sock}"\naddress = "127.0.0.1:{args.port}"\nmetrics_address = ""\n'
        f'max_sessions = {max(16, args.sessions)}\n\n[model]\npipeline = "{args.pipeline}"\npreset = "{args.preset}"\n'
        f'device = "{args.device}"\nmax_batch = {max(16, args.sessions)}\n{_warm_sizes(args.warm_sizes)}\n'
        f'[panel]\naddress = "{panel}"\n\n'
        '[log]\nlevel = "warning"\n')
    proc = subprocess.Popen([sys.executable, "-m", "morphcam.daemon.cli", "serve", "--config", str(config)])
    address = f"127.0.0.1:{args.port}" if args.transport == "tcp" else f"unix:{sock}"
    with DaemonClient(address) as client:
        if not client.wait_ready(180):
            proc.kill()
            raise SystemExit("the daemon did not start")
    return proc, address


def _warm_sizes(option: str | None) -> str:
    """The [model] line for --warm-sizes: "none" turns the warm-up off; no option keeps the daemon's default."""
    if option is None:
        return ""
    sizes = [] if option == "none" else [s.strip() for s in option.split(",") if s.strip()]
    return f"warm_sizes = {json.dumps(sizes)}\n"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sessions", type=int, default=8)
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--fps", type=float, default=30.0)
    p.add_argument("--warmup", type=float, default=1.0, help="seconds left out of the latency figures")
    p.add_argument("--size", default="512x288")
    p.add_argument("--format", default="rgb24", choices=("rgb24", "nv12", "i420", "jpeg"))
    p.add_argument("--transport", default="tcp", choices=("tcp", "unix"))
    p.add_argument("--port", type=int, default=50151)
    p.add_argument("--address", help="a running daemon instead of starting one")
    p.add_argument("--pipeline", default="passthrough", choices=("generator", "passthrough"))
    p.add_argument("--preset", default="tiny")
    p.add_argument("--device", default="auto")
    p.add_argument("--client-procs", type=int, default=1,
                   help="client processes the sessions are spread over (1: all in this process)")
    p.add_argument("--warm-sizes", help='model.warm_sizes of the daemon started: "none" or SIZE[,SIZE...] '
                   "(default: the daemon's, 512x288)")
    p.add_argument("--json", help="also write the results here")
    return p


def _run_share(address: str, indices: list[int], size: tuple[int, int], fps: float, seconds: float, fmt: str,
               warmup: float) -> list[dict]:
    """Sessions ``indices`` as threads of one process; their report rows."""
    sessions = [PacedSession(address, i, size, fps, seconds, fmt, warmup) for i in indices]
    for s in sessions:
        s.start()
    for s in sessions:
        s.join(seconds + 30)
    return [s.report() for s in sessions]


def run_sessions(args: argparse.Namespace, address: str) -> list[dict]:
    """N paced sessions for args.seconds against ``address``; one report row per session, in
    session order. With ``args.client_procs`` > 1 the sessions are dealt round-robin to that many
    spawned processes (gRPC does not survive a fork), each running its share as threads."""
    size = tuple(int(v) for v in args.size.split("x"))
    procs = max(1, min(getattr(args, "client_procs", 1), args.sessions))
    shares = [list(range(args.sessions))[k::procs] for k in range(procs)]
    params = (size, args.fps, args.seconds, args.format, args.warmup)
    if procs == 1:
        return _run_share(address, shares[0], *params)
    with concurrent.futures.ProcessPoolExecutor(procs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(_run_share, address, share, *params) for share in shares]
        rows = [row for f in futures for row in f.result(timeout=args.seconds + 120)]
    return sorted(rows, key=lambda r: int(r["session"].rsplit("-", 1)[1]))


def main() -> int:
    args = parser().parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        proc, address = (None, args.address) if args.address else start_daemon(args, tmp)
        try:
            with DaemonClient(address) as client:
                status = client.status()
            rows = run_sessions(args, address)
        finally:
            if proc is not None:
                proc.terminate()
                proc.wait(30)
    print_table(args, status, rows)
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "pipeline": status.pipeline,
                                               "device": status.device, "sessions": rows}, indent=1))
    return 0


def print_table(args: argparse.Namespace, status, rows: list[dict]) -> None:
    print(f"# {args.sessions} sessions x {args.fps:g} fps x {args.size} {args.format} for {args.seconds:g} s over "
          f"{args.transport} from {args.client_procs} client process(es); pipeline {status.pipeline} on {status.device}; {platform.node() or 'host'}")
    print("| session | sent | received | fps out | latency p50 / p99 ms | daemon p50 / p99 ms | model step p50 ms "
          "| mean batch | dropped client / daemon |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['session']} | {r['sent']} | {r['received']} | {r['fps_out']:.1f} | {r['latency_p50_ms']:.1f} / "
              f"{r['latency_p99_ms']:.1f} | {r['daemon_p50_ms']:.1f} / {r['daemon_p99_ms']:.1f} | {r['model_p50_ms']:.1f} | "
              f"{r['batch_mean']:.1f} | "
              f"{r['dropped_client']} / {r['dropped_daemon']} |")
    fps = [r["fps_out"] for r in rows]
    print(f"all sessions: min fps {min(fps):.1f}, mean fps {np.mean(fps):.1f}, worst latency p99 "
          f"{max(r['latency_p99_ms'] for r in rows):.1f} ms, slowest first frame "
          f"{max(r['first_frame_ms'] or float('nan') for r in rows):.0f} ms")


if __name__ == "__main__":
    sys.exit(main())

"""Chat flood vs the frame relay: 1,000 chat messages in one second while frames flow at 30 fps.

The chat client reads a fake Twitch IRC server on loopback (Twitch itself must not be flooded)
and drives the same control target ``morphcam live`` gives it. Frames go through the bridge's
real fail-open relay (``morphcam.obs_bridge.relay.Relay``) from a synthetic 30 fps source to a
sink that records when each frame arrives. Two phases of equal length are compared: chat
connected but quiet, then the flood.

    python bench/chat_flood.py                  # relay -> `morphcam serve --pipeline passthrough` (subprocess)
    python bench/chat_flood.py --daemon echo    # relay -> an in-process stream that echoes frames
    python bench/chat_flood.py --loop           # a bare 30 fps frame loop instead of the relay

Prints one markdown table per run (frame intervals and latency per phase) and the chat figures.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from helpers.fake_twitch import FakeTwitchServer, RecordingTarget  # noqa: E402  (the tests' fake server)
from morphcam.obs_bridge.chat.service import ChatService
from morphcam.obs_bridge.chat.settings import ChatSettings, ConnectionSettings

CHANNEL = "streamer"


# ---- the flood ------------------------------------------------------------------------------------
def flood_lines(server: FakeTwitchServer, n: int, seed: int = 0) -> list[bytes]:
    """``n`` tagged chat lines from a few hundred users: listed styles, free prompts, blocked
    words, commands above the sender's role, junk and very long lines."""
    rng = random.Random(seed)
    badges = {"viewer": "", "sub": "subscriber/6", "vip": "vip/1", "mod": "moderator/1"}
    kinds = ["viewer"] * 80 + ["sub"] * 14 + ["vip"] * 4 + ["mod"] * 2
    texts = [
        lambda: "!style " + rng.choice(["anime", "oil paint", "snowfall", "Anime", "nosuch"]),
        lambda: "!style a cat made of " + rng.choice(["clouds", "gore", "neon light", "lava"]),
        lambda: "!morph " + rng.choice(["on", "off"]),
        lambda: "!strength " + rng.choice(["0.3", "0.7", "2", "x"]),
        lambda: "!styles",
        lambda: "hello chat " + "lol " * rng.randint(0, 30),
        lambda: "!style " + "z" * rng.randint(200, 3000),
    ]
    weights = [40, 10, 10, 10, 5, 20, 5]
    lines = []
    for _ in range(n):
        kind = rng.choice(kinds)
        user = f"{kind}{rng.randint(0, 300)}"
        text = rng.choices(texts, weights)[0]()
        lines.append(server.privmsg_line(user, text, CHANNEL, badges[kind]))
    return lines


def send_flood(server: FakeTwitchServer, lines: list[bytes], seconds: float, batches: int = 20) -> None:
    size = max(1, len(lines) // batches)
    start = time.monotonic()
    for i in range(0, len(lines), size):
        due = start + seconds * i / len(lines)
        time.sleep(max(0.0, due - time.monotonic()))
        server.send_lines(lines[i:i + size], CHANNEL)


# ---- frames ---------------------------------------------------------------------------------------
class SyntheticSource:
    """A camera at ``fps``: RGB frames stamped with their capture time, newest frame only."""

    def __init__(self, width: int, height: int, fps: float) -> None:
        from morphcam.obs_bridge.sources import LatestFrame

        self.frames = LatestFrame()
        self._period = 1.0 / fps
        self._image = np.random.default_rng(0).integers(0, 255, (height, width, 3), dtype=np.uint8)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="bench-source")

    def start(self) -> "SyntheticSource":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2)

    def read(self, after_seq: int = 0, timeout: float = 1.0):
        return self.frames.wait_newer(after_seq, timeout)

    def _run(self) -> None:
        from morphcam.obs_bridge.sources import Frame

        seq, due = 0, time.monotonic()
        while not self._stop.is_set():
            due += self._period
            self._stop.wait(max(0.0, due - time.monotonic()))
            seq += 1
            self.frames.put(Frame(seq, time.monotonic_ns(), self._image.copy()))


class RecordingSink:
    def __init__(self) -> None:
        self.writes: list[tuple[int, int]] = []  # (written ns, capture ns)
        self._lock = threading.Lock()

    def write(self, image: np.ndarray, capture_time_ns: int) -> None:
        with self._lock:
            self.writes.append((time.monotonic_ns(), capture_time_ns))

    def describe(self) -> str:
        return "recording sink"

    def between(self, t0: int, t1: int) -> list[tuple[int, int]]:
        with self._lock:
            return [w for w in self.writes if t0 <= w[0] < t1]


@dataclass
class _Output:
    seq: int
    image: np.ndarray
    capture_time_ns: int


class EchoStream:
    """Stands in for the daemon's LiveStream: returns each frame after ``delay_s``."""

    connected = True

    def __init__(self, delay_s: float) -> None:
        self._delay = delay_s
        self._cond = threading.Condition()
        self._queue: collections.deque = collections.deque()
        self._seq = 0

    def submit(self, frame: np.ndarray, capture_time_ns: int | None = None) -> int:
        with self._cond:
            self._seq += 1
            self._queue.append((time.monotonic() + self._delay, _Output(self._seq, frame, capture_time_ns or 0)))
            self._cond.notify_all()
            return self._seq

    def get_output(self, timeout: float | None = 0):
        deadline = time.monotonic() + (timeout or 0)
        with self._cond:
            while True:
                now = time.monotonic()
                if self._queue and self._queue[0][0] <= now:
                    return self._queue.popleft()[1]
                wait = min(deadline, self._queue[0][0] if self._queue else deadline) - now
                if wait <= 0:
                    return None
                self._cond.wait(wait)

    def set_prompt(self, change) -> None:
        pass

    def stop(self) -> None:
        pass


class FrameLoop:
    """A bare frame loop at ``fps`` doing a frame copy per tick; records when each tick ran."""

    def __init__(self, fps: float, width: int, height: int) -> None:
        self._period_ns = int(1e9 / fps)
        self._image = np.zeros((height, width, 3), np.uint8)
        self.sink = RecordingSink()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="bench-loop")

    def start(self) -> "FrameLoop":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2)

    def _run(self) -> None:
        due = time.monotonic_ns()
        while not self._stop.is_set():
            due += self._period_ns
            delay = due - time.monotonic_ns()
            if delay > 0:
                self._stop.wait(delay / 1e9)
            self._image.copy()
            self.sink.write(self._image, due)  # "capture" = when the tick was due: latency = lateness


# ---- the daemon -----------------------------------------------------------------------------------
class DaemonProcess:
    def __init__(self, folder: Path) -> None:
        self.socket = folder / "daemon.sock"
        self.log = folder / "daemon.log"
        cmd = [sys.executable, "-m", "morphcam.daemon.cli", "serve", "--unix-socket", str(self.socket),
               "--address", "", "--pipeline", "passthrough", "--metrics-address", ""]
        self.proc = subprocess.Popen(cmd, stdout=self.log.open("w"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"morphcam serve did not start: {self.log.read_text()[-2000:]}")
            try:
                with socket.socket(socket.AF_UNIX) as probe:
                    probe.connect(str(self.socket))
                return
            except OSError:
                time.sleep(0.05)

    @property
    def address(self) -> str:
        return f"unix:{self.socket}"

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


class CountingTarget:
    """Forwards to the real control target and counts what chat asked for."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.calls: collections.Counter[str] = collections.Counter()

    def styles(self):
        return self.inner.styles()

    def set_prompt(self, change, origin: str = "") -> None:
        self.calls["set_prompt"] += 1
        self.inner.set_prompt(change, origin=origin)

    def set_enabled(self, enabled: bool, origin: str = "") -> None:
        self.calls["set_enabled"] += 1
        self.inner.set_enabled(enabled, origin=origin)

    def set_strength(self, strength: float, origin: str = "") -> None:
        self.calls["set_strength"] += 1
        self.inner.set_strength(strength, origin=origin)


# ---- measuring ------------------------------------------------------------------------------------
def summarize(writes: list[tuple[int, int]], seconds: float, fps: float) -> dict:
    if len(writes) < 2:
        return {"frames": len(writes)}
    intervals = [(b[0] - a[0]) / 1e6 for a, b in zip(writes, writes[1:])]
    latency = [(w - c) / 1e6 for w, c in writes]
    q = lambda xs, p: float(np.percentile(xs, p))  # noqa: E731
    return {
        "frames": len(writes), "expected": round(seconds * fps),
        "interval_ms_p50": q(intervals, 50), "interval_ms_p99": q(intervals, 99), "interval_ms_max": max(intervals),
        "latency_ms_p50": q(latency, 50), "latency_ms_p99": q(latency, 99), "latency_ms_max": max(latency),
        "gaps_over_2_frames": sum(1 for i in intervals if i > 2000 / fps),
    }


def run(args: argparse.Namespace) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="chat-flood-"))
    daemon = stream = client = None
    parts: list = []
    try:
        if args.loop:
            loop = FrameLoop(args.fps, args.width, args.height).start()
            parts.append(loop)
            sink, target, relay = loop.sink, CountingTarget(RecordingTarget()), None
        else:
            from morphcam.obs_bridge.relay import Relay
            from morphcam.obs_bridge.settings import RelaySettings

            if args.daemon == "process":
                from morphcam.daemon.client import DaemonClient, StreamSettings
                from morphcam.daemon.livestream import LiveStream
                from morphcam.obs_bridge.control import StreamControl

                daemon = DaemonProcess(tmp)
                stream = LiveStream(daemon.address, StreamSettings(args.width, args.height, prompt="original",
                                                                   fps=args.fps)).start()
                client = DaemonClient(daemon.address, timeout_s=2.0)
                target = CountingTarget(StreamControl(stream, client))
            else:
                stream = EchoStream(args.echo_ms / 1000)
                target = CountingTarget(RecordingTarget())
            source = SyntheticSource(args.width, args.height, args.fps).start()
            parts.append(source)
            sink = RecordingSink()
            relay = Relay(source, stream, sink, RelaySettings()).start()
            parts.append(relay)

        with FakeTwitchServer() as server:
            settings = ChatSettings(enabled=True, channel=CHANNEL, host="127.0.0.1", port=server.port, tls=False,
                                    nick="benchbot", connection=ConnectionSettings(connect_timeout_s=5.0))
            chat = ChatService(settings, target, environ={"TWITCH_OAUTH_TOKEN": "bench"})
            chat.start()
            parts.append(chat)
            if not (chat.client.wait_joined(10) and server.wait_joined(CHANNEL, 10)):
                raise SystemExit("the chat client did not join the fake server")
            time.sleep(args.warmup)
            lines = flood_lines(server, args.messages)

            t0 = time.monotonic_ns()
            time.sleep(args.phase)
            t1 = time.monotonic_ns()
            cpu0 = time.process_time()
            flood_start = time.monotonic()
            sender = threading.Thread(target=send_flood, args=(server, lines, args.flood_seconds))
            sender.start()
            drained = None
            while time.monotonic() - flood_start < args.phase:
                if drained is None and chat.client.stats.messages >= args.messages:
                    drained = time.monotonic() - flood_start
                time.sleep(0.005)
            t2 = time.monotonic_ns()
            cpu = time.process_time() - cpu0
            sender.join()
            chat.controller.dispatcher.flush(5)
            status = chat.status()
            sent_replies = len(server.lines_from_clients("PRIVMSG"))
            chat.stop()
            parts.remove(chat)
    finally:
        for part in reversed(parts):
            part.stop()
        if stream is not None:
            stream.stop()
        if client is not None:
            client.close()
        if daemon is not None:
            daemon.stop()

    mode = "loop" if args.loop else f"relay+{args.daemon}"
    return {
        "mode": mode,
        "idle": summarize(sink.between(t0, t1), args.phase, args.fps),
        "flood": summarize(sink.between(t1, t2), args.phase, args.fps),
        "passthrough": None if relay is None else relay.passthrough,
        "styled": None if relay is None else relay.styled,
        "chat": {
            "messages_sent": args.messages, "flood_seconds": args.flood_seconds,
            "messages_handled": status["client"]["messages"], "drained_s": drained,
            "process_cpu_s_during_flood_phase": cpu,
            "accepted": status["accepted"], "refused": status["refused"],
            "target_calls": dict(target.calls), "replies_sent": sent_replies,
            "connects": status["client"]["connects"],
        },
    }


def table(result: dict) -> str:
    rows = ["| phase | frames (expected) | interval p50 / p99 / max ms | latency p50 / p99 / max ms | gaps > 2 frames |",
            "|---|---|---|---|---|"]
    for phase in ("idle", "flood"):
        s = result[phase]
        rows.append(f"| {phase} | {s['frames']} ({s.get('expected', '?')}) | "
                    f"{s['interval_ms_p50']:.1f} / {s['interval_ms_p99']:.1f} / {s['interval_ms_max']:.1f} | "
                    f"{s['latency_ms_p50']:.1f} / {s['latency_ms_p99']:.1f} / {s['latency_ms_max']:.1f} | "
                    f"{s['gaps_over_2_frames']} |")
    return "\n".join(rows)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--messages", type=int, default=1000)
    p.add_argument("--flood-seconds", type=float, default=1.0)
    p.add_argument("--fps", type=float, default=30.0)
    p.add_argument("--width", type=int, default=256)
    p.add_argument("--height", type=int, default=144)
    p.add_argument("--phase", type=float, default=4.0, help="seconds measured per phase (quiet, then flood)")
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--daemon", choices=("process", "echo"), default="process",
                   help="process: `morphcam serve --pipeline passthrough`; echo: in-process stand-in")
    p.add_argument("--echo-ms", type=float, default=10.0, help="delay of the echo stand-in")
    p.add_argument("--loop", action="store_true", help="time a bare 30 fps frame loop instead of the relay")
    p.add_argument("--json", action="store_true", help="print the raw figures as JSON too")
    args = p.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    result = run(args)
    print(f"## {result['mode']}: {args.messages} chat messages in {args.flood_seconds:g} s, "
          f"{args.fps:g} fps {args.width}x{args.height}\n")
    print(table(result))
    if result["passthrough"] is not None:
        print(f"\nrelay: {result['styled']} styled, {result['passthrough']} passed through (deadline or daemon down)")
    print("\nchat:", json.dumps(result["chat"]))
    if args.json:
        print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

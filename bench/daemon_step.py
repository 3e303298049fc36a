"""The daemon's model step at each batch size, in process: ``GeneratorPipeline.step`` as the worker
calls it (uint8 frames in, uint8 frames out), against the replay of the batch size's graph alone.

N sessions are open in one lane pool; for each batch size B the step of B of them (a different
subset each time, as sessions come and go in a live daemon) is timed after its graph is captured.
"pipeline" is what the daemon's model stage measures (frame upload, the graph, the download and
the host work around it); "graph" is the replay alone with frames already on the device. A batch
of B 30 fps streams fits while the pipeline step stays under 33.3 ms.

    python bench/daemon_step.py --preset tiny --size 512x288 --batches 1,2,4,8 --out step.json
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from benchlib import time_calls


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--size", default="512x288")
    ap.add_argument("--batches", default="1,2,4,8", help="batch sizes to time")
    ap.add_argument("--sessions", type=int, default=0, help="sessions open (default: the largest batch + 2)")
    ap.add_argument("--frames", type=int, default=100, help="timed steps per batch size")
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--out", help="write the numbers as JSON here")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("bench/daemon_step.py needs a CUDA GPU")
    from morphcam.daemon.generator_pipeline import GeneratorPipeline
    from morphcam.daemon.pipeline import PromptChange, SessionParams

    width, height = (int(v) for v in args.size.split("x"))
    batches = [int(b) for b in args.batches.split(",")]
    n = args.sessions or max(batches) + 2
    t0 = time.perf_counter()
    pipe = GeneratorPipeline.load(args.preset, device="cuda", lanes=n)
    print(f"device: {torch.cuda.get_device_name()}  torch {torch.__version__}  {args.preset} {width}x{height}, "
          f"{n} sessions, loaded in {time.perf_counter() - t0:.1f} s", flush=True)
    ids = [f"s{i}" for i in range(n)]
    for i, sid in enumerate(ids):
        pipe.open_session(sid, SessionParams(width, height, PromptChange.single("pencil sketch"), seed=i))
    assert all(pipe.pooled(s) for s in ids), "every session should sit in a lane of the pool"
    group = pipe._groups[(width, height)]
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(8)]
    rows = []
    for b in batches:
        def pick(i: int) -> list[str]:  # a rotating subset: the graph must not care which sessions
            return [ids[(i + k) % n] for k in range(b)]

        def pipeline_step(i: int) -> None:
            out = pipe.step([(sid, images[(i + k) % len(images)]) for k, sid in enumerate(pick(i))])
            bad = [o for o in out if isinstance(o, Exception)]
            if bad:
                raise bad[0]

        frames = (torch.rand(b, 1, 3, height, width, device="cuda") * 2 - 1).to(pipe.generator.dtype)
        lanes = {sid: pipe._entry(sid).lane for sid in ids}

        def graph_step(i: int) -> None:
            sids = pick(i)
            group.graphs.step([pipe._session(s) for s in sids], [lanes[s] for s in sids], frames)

        p = time_calls(pipeline_step, args.warmup, args.frames)
        g = time_calls(graph_step, args.warmup, args.frames)
        row = {"batch": b, "pipeline_p50_ms": p["p50_ms"], "pipeline_p99_ms": p["p99_ms"],
               "graph_p50_ms": g["p50_ms"], "graph_p99_ms": g["p99_ms"],
               "frames_per_s": 1000.0 * b / p["mean_ms"], "fits_30fps": p["p99_ms"] < 1000 / 30}
        rows.append(row)
        print(f"  batch {b}: pipeline p50 {p['p50_ms']:.2f} / p99 {p['p99_ms']:.2f} ms, graph alone p50 "
              f"{g['p50_ms']:.2f} ms, {row['frames_per_s']:.0f} frames/s", flush=True)
    captured = sorted(group.graphs.batch_sizes())
    print(f"graphs captured for batch sizes {captured} ({group.graphs.captures} captures); "
          f"capture error: {group.graphs.capture_error}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"device": torch.cuda.get_device_name(), "torch": torch.__version__, "preset": args.preset,
                       "size": args.size, "sessions": n, "rows": rows, "graph_batch_sizes": captured,
                       "capture_error": str(group.graphs.capture_error or "")}, f, indent=1)


if __name__ == "__main__":
    main()

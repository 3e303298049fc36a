"""bench/load.py against a real daemon (passthrough, loopback TCP): paced sessions come back in
session order with their frames, from one client process and spread over several."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import load  # noqa: E402

from morphcam.daemon.server import DaemonThread  # noqa: E402
from helpers.daemons import DelayPipeline, address_of, make_config  # noqa: E402


@pytest.mark.parametrize("procs", [1, 2])
def test_paced_sessions_report_in_order(tmp_path, procs):
    args = load.parser().parse_args(
        ["--sessions", "3", "--client-procs", str(procs), "--seconds", "1.5", "--fps", "20", "--size", "64x48",
         "--warmup", "0.3"]
    )
    with DaemonThread(make_config(tmp_path), DelayPipeline(), environ={}) as daemon:
        rows = load.run_sessions(args, address_of(daemon, "tcp"))
    assert [r["session"] for r in rows] == ["load-0", "load-1", "load-2"]
    for r in rows:
        assert r["sent"] >= 20, r
        assert r["received"] >= r["sent"] // 2, r  # passthrough on loopback: frames come back
        assert r["first_frame_ms"] is not None and r["latency_p50_ms"] > 0, r


def test_client_procs_is_capped_by_sessions(tmp_path):
    args = argparse.Namespace(sessions=1, client_procs=4, size="64x48", fps=20.0, seconds=0.8, format="rgb24",
                              warmup=0.2)
    with DaemonThread(make_config(tmp_path), DelayPipeline(), environ={}) as daemon:
        rows = load.run_sessions(args, address_of(daemon, "unix"))
    assert len(rows) == 1 and rows[0]["received"] > 0

"""torchrun with two CPU processes (gloo): DistributedDataParallel keeps the ranks in step."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch


@pytest.mark.slow
def test_two_gloo_ranks_end_with_identical_weights(tmp_path):
    out = tmp_path / "run"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "morphcam.model.train.cli", "denoiser", "--preset", "tiny", "--steps", "2", "--batch", "1",
        "--frames", "2", "--size", "32x32", "--device", "cpu", "--eval-batches", "0", "--log-interval", "1",
        "--out", str(out), "--quiet",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    done = records[-1]
    assert done["event"] == "done" and done["step"] == 2
    a, b = done["rank_checksums"]
    assert a == b  # the trainer raises before this if they differ; the log says so too
    # Only rank 0 logs (one line per step), and the state holds both ranks' data-source states.
    assert [r["step"] for r in records if r["event"] == "train"] == [1, 2]
    state = torch.load(out / "train_state.pt", weights_only=True)
    assert len(state["ranks"]) == 2
    assert not torch.equal(state["ranks"][0]["source"]["generators"]["_rng"],
                           state["ranks"][1]["source"]["generators"]["_rng"])  # ranks draw different clips

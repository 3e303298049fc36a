"""install/train-default.sh's control flow, with a stand-in for `morphcam` that records each call
and writes the log line the script reads (the real stages need a GPU): both stages from scratch,
the denoiser trained on from a given model, and the refusal of a half-given FROM."""
from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "install" / "train-default.sh"

FAKE = """#!{python}
import json, sys
from pathlib import Path
args = sys.argv[1:]
with open({calls!r}, "a") as f:
    f.write(json.dumps(args) + "\\n")
out = Path(args[args.index("--out") + 1])
out.mkdir(parents=True, exist_ok=True)
(out / "log.jsonl").write_text(json.dumps({{"event": "train", "step": 1, "s_per_step": 0.5}}) + "\\n")
(out / "model.safetensors").write_bytes(b"")
"""


@pytest.fixture
def fake(tmp_path):
    calls = tmp_path / "calls.jsonl"
    exe = tmp_path / "morphcam"
    exe.write_text(FAKE.format(python=sys.executable, calls=str(calls)))
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    return exe, calls


def run(fake, *args):
    exe, calls = fake
    proc = subprocess.run(["bash", str(SCRIPT), *args], env={**os.environ, "MORPHCAM": str(exe)},
                          capture_output=True, text=True, timeout=60)
    return proc, [json.loads(line) for line in calls.read_text().splitlines()] if calls.exists() else []


def value(call, flag):
    return call[call.index(flag) + 1]


def test_both_stages_sized_to_their_budgets(tmp_path, fake):
    proc, calls = run(fake, str(tmp_path / "run"), "100", "400")
    assert proc.returncode == 0, proc.stderr
    stages = [(c[1], value(c, "--steps")) for c in calls]
    # a timing run then the real run per stage; steps = (budget - held back) / 0.5 s, with 165 s held
    # back for the denoiser (its first step compiles)
    assert stages == [("autoencoder", "120"), ("autoencoder", "140"), ("denoiser", "120"), ("denoiser", "470")]
    assert ["--compile" in c for c in calls] == [False, False, True, True]  # the autoencoder stage has none
    assert value(calls[3], "--init") == str(tmp_path / "run" / "ae" / "model.safetensors")
    assert "done:" in (tmp_path / "run" / "commands.txt").read_text()


def test_the_denoiser_trains_on_from_a_given_model(tmp_path, fake):
    proc, calls = run(fake, str(tmp_path / "run"), "0", "200", "model/weights/tiny.safetensors")
    assert proc.returncode == 0, proc.stderr
    assert [c[1] for c in calls] == ["denoiser", "denoiser"]
    assert all(value(c, "--init") == "model/weights/tiny.safetensors" for c in calls)


def test_flags_after_from_reach_the_denoiser_stage(tmp_path, fake):
    extra = ["--still-prob", "0.1", "--style-weight", "oil painting=2"]
    proc, calls = run(fake, str(tmp_path / "run"), "0", "400", "model/weights/tiny.safetensors", *extra)
    assert proc.returncode == 0, proc.stderr
    assert all(c[c.index("--still-prob"):][:4] == extra for c in calls)  # the timing run and the real one
    assert value(calls[1], "--style-weight") == "oil painting=2"  # one argument, space and all
    # The recorded command replays as run.
    recorded = [line for line in (tmp_path / "run" / "commands.txt").read_text().splitlines() if "--steps 470" in line]
    assert len(recorded) == 1 and "oil\\ painting=2" in recorded[0]
    # A fresh run takes them too, with "" for FROM.
    proc, calls = run(fake, str(tmp_path / "fresh"), "100", "200", "", *extra)
    assert proc.returncode == 0, proc.stderr
    fresh = calls[2:]  # after the two calls above
    assert [c[1] for c in fresh] == ["autoencoder", "autoencoder", "denoiser", "denoiser"]
    assert all("--still-prob" not in c for c in fresh[:2]) and value(fresh[3], "--still-prob") == "0.1"


@pytest.mark.parametrize("args", [("0", "200"), ("100", "200", "some/model.safetensors")])
def test_from_and_a_zero_autoencoder_budget_go_together(tmp_path, fake, args):
    proc, calls = run(fake, str(tmp_path / "run"), *args)
    assert proc.returncode == 2 and "pass FROM together with AE_SECONDS 0" in proc.stderr
    assert calls == []

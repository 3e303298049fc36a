"""`morphcam transform`: real video files and image folders through the daemon path."""
from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from morphcam.daemon.cli import main
from morphcam.daemon.video import VideoWriter, probe, read_frames

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "sample_256x144.mp4"


def test_transform_a_video_file_passthrough(tmp_path, capsys):
    out = tmp_path / "o.mp4"
    assert main(["transform", str(SAMPLE), "-o", str(out), "--prompt", "pencil sketch", "--pipeline",
                 "passthrough", "--quiet"]) == 0
    assert "90 frames" in capsys.readouterr().out
    info = probe(out)
    assert (info.width, info.height) == (256, 144)
    got = list(read_frames(out))
    want = list(read_frames(SAMPLE))
    assert len(got) == 90
    assert np.abs(got[45].astype(int) - want[45]).mean() < 4  # passthrough: only the codec's loss


def test_transform_an_image_folder_with_resize(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i, frame in enumerate(read_frames(SAMPLE)):
        if i >= 5:
            break
        with av.open(str(folder / f"{i:03d}.png"), "w") as c:
            s = c.add_stream("png")
            s.width, s.height, s.pix_fmt = 256, 144, "rgb24"
            for p in s.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                c.mux(p)
    out = tmp_path / "o.mkv"
    assert main(["transform", str(folder), "-o", str(out), "--size", "128x64", "--fps", "10",
                 "--pipeline", "passthrough", "--format", "jpeg", "--quiet"]) == 0
    info = probe(out)
    assert (info.width, info.height, round(info.fps)) == (128, 64, 10)
    assert len(list(read_frames(out))) == 5


@pytest.mark.parametrize("args,message", [
    (["missing.mp4", "-o", "o.mp4"], "does not exist"),
    ([str(SAMPLE), "-o", "o.txt"], "needs a video suffix"),
])
def test_transform_bad_input(tmp_path, capsys, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    assert main(["transform", *args, "--pipeline", "passthrough", "--quiet"]) == 2
    assert message in capsys.readouterr().err
    assert not list(tmp_path.glob("*.mp4")), "no partial output is left behind"


def test_transform_not_a_video(tmp_path, capsys):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"this is not a video")
    assert main(["transform", str(bad), "-o", str(tmp_path / "o.mp4"), "--pipeline", "passthrough", "--quiet"]) == 2
    assert "cannot open" in capsys.readouterr().err


def test_transform_through_a_running_daemon(start_daemon, tmp_path):
    daemon = start_daemon(token="t0k")
    out = tmp_path / "o.mp4"
    assert main(["transform", str(SAMPLE), "-o", str(out), "--address", daemon.daemon.addresses[1],
                 "--token", "t0k", "--quiet"]) == 0
    assert len(list(read_frames(out))) == 90
    assert main(["transform", str(SAMPLE), "-o", str(tmp_path / "x.mp4"), "--address",
                 daemon.daemon.addresses[1], "--quiet", "--token", ""]) == 2


def test_cli_help_and_unknown_command(capsys):
    assert main(["--help"]) == 0
    assert "transform" in capsys.readouterr().out
    assert main(["frobnicate"]) == 2
    assert "unknown command 'frobnicate'" in capsys.readouterr().err


def test_video_writer_round_trip(tmp_path):
    frames = [np.full((32, 48, 3), v, np.uint8) for v in (10, 128, 240)]
    with VideoWriter(tmp_path / "v.mp4", 48, 32, 25) as w:
        for f in frames:
            w.write(f)
    back = list(read_frames(tmp_path / "v.mp4"))
    assert len(back) == 3 and abs(int(back[1].mean()) - 128) < 4

"""morphcam evaluate: the metrics against known values, adherence and drift on stand-ins whose
answer is known, one real CLI run with random weights, and the errors for bad arguments."""
from __future__ import annotations

import json
import math
from types import SimpleNamespace

import av
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from morphcam.daemon.cli import main as cli_main
from morphcam.model import metrics
from morphcam.model.evaluate import EvalOptions, adherence, drift, evaluate, fidelity, flicker
from morphcam.model.teachers import TEACHERS

FPS = 30.0


def _texture(n: int = 2, h: int = 48, w: int = 64, seed: int = 0) -> torch.Tensor:
    """(n, 3, h, w) in [0.2, 0.8]: smooth blobs plus fine detail, so blur changes it."""
    g = torch.Generator().manual_seed(seed)
    coarse = F.interpolate(torch.rand(n, 3, h // 8, w // 8, generator=g), size=(h, w), mode="bilinear")
    return 0.2 + 0.6 * (0.6 * coarse + 0.4 * torch.rand(n, 3, h, w, generator=g))


# ---- metrics ---------------------------------------------------------------------------------------
def test_identical_frames_psnr_capped_ssim_one():
    x = _texture()
    assert metrics.psnr(x, x).tolist() == [metrics.PSNR_CAP_DB] * 2
    assert torch.allclose(metrics.ssim(x, x), torch.ones(2), atol=1e-5)


def test_known_noise_gives_expected_psnr():
    x = _texture()
    sign = torch.randint(0, 2, x.shape, generator=torch.Generator().manual_seed(1)) * 2 - 1
    # +-0.05 everywhere: MSE is exactly 0.0025, so PSNR = 10 log10(1 / 0.0025) = 26.0206 dB.
    assert torch.allclose(metrics.psnr(x, x + 0.05 * sign), torch.full((2,), 26.0206), atol=1e-3)
    noisy = x + 0.1 * torch.randn(x.shape, generator=torch.Generator().manual_seed(2))
    assert torch.allclose(metrics.psnr(x, noisy), torch.full((2,), 20.0), atol=0.2)


def test_ssim_matches_scikit_image_and_falls_with_blur():
    from skimage.metrics import structural_similarity

    x = _texture(1)
    blurred = [F.avg_pool2d(x, k, stride=1, padding=k // 2, count_include_pad=False) for k in (3, 5, 9)]
    scores = [metrics.ssim(x, b).item() for b in blurred]
    assert scores[0] > scores[1] > scores[2] and scores[0] < 0.99
    # The same definition (Gaussian window, population covariance, valid positions) in skimage.
    ref = structural_similarity(
        x[0].permute(1, 2, 0).numpy(), blurred[1][0].permute(1, 2, 0).numpy(), channel_axis=2,
        gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0,
    )
    assert scores[1] == pytest.approx(ref, abs=1e-4)


def test_drift_on_a_synthetic_run():
    assert drift([30.0] * 10 + [25.0] * 10) == {"window": 10, "psnr_first_db": 30.0, "psnr_last_db": 25.0,
                                                "delta_db": -5.0}
    d = drift([float(i) for i in range(10)], window=3)  # first 0, 1, 2; last 7, 8, 9
    assert (d["window"], d["psnr_first_db"], d["psnr_last_db"], d["delta_db"]) == (3, 1.0, 8.0, 7.0)
    assert drift([20.0]) is None


# ---- evaluate() on a stand-in generator ------------------------------------------------------------
class TeacherAsModel:
    """StreamGenerator's interface, answering with a teacher's output for the same frames and
    times (frame i at i / FPS), so the metrics' right answers are known."""

    def __init__(self, style: str, frames_per_step: int = 2) -> None:
        self.teacher = TEACHERS[style]
        self.config = SimpleNamespace(frames_per_step=frames_per_step)
        self.device, self.dtype = torch.device("cpu"), torch.float32

    def open_session(self, width, height, prompts, strength=None, seed=None):
        return SimpleNamespace(seed=seed or 0, frames_out=0)

    def step(self, sessions, frames):
        s = sessions[0]
        f = frames.shape[1]
        times = (torch.arange(s.frames_out, s.frames_out + f, dtype=torch.float32) / FPS)[None]
        s.frames_out += f
        return self.teacher((frames + 1) / 2, times, s.seed) * 2 - 1


def _clip(n: int = 3) -> torch.Tensor:
    from morphcam.daemon.sample import facecam_frame

    return torch.from_numpy(np.stack([facecam_frame(i / FPS, 64, 48) for i in range(n)])).permute(0, 3, 1, 2)


@pytest.mark.parametrize("style", ["pixel art", "sepia old film"])
def test_adherence_and_fidelity_when_the_output_is_a_teacher(style):
    times = torch.arange(5, dtype=torch.float32) / FPS  # 5 frames in steps of 2: the last step is padded
    result = evaluate(TeacherAsModel(style), TEACHERS[style].prompt, _clip(), times, TEACHERS[style])
    assert result.frames == 5 and len(result.psnr) == 5 and len(result.model_change) == 4
    assert result.nearest == [style] * 5
    assert adherence(result.nearest, style)["fraction"] == 1.0
    fid = fidelity(result)
    assert fid["psnr_db"] > 50 and fid["ssim"] > 0.999


def test_adherence_names_the_teacher_the_output_came_from():
    # Asked for comic, the stand-in draws thermal camera: adherence says so, fidelity is low.
    times = torch.arange(4, dtype=torch.float32) / FPS
    result = evaluate(TeacherAsModel("thermal camera"), "comic", _clip(), times, TEACHERS["comic"],
                      EvalOptions(adherence_every=2))
    report = adherence(result.nearest, "comic", 2)
    assert report["fraction"] == 0.0 and report["nearest"] == {"thermal camera": 2} and report["frames_scored"] == 2
    assert fidelity(result)["psnr_db"] < 30


def test_free_prompt_measures_adherence_only():
    times = torch.arange(2, dtype=torch.float32) / FPS
    result = evaluate(TeacherAsModel("blueprint", 1), "a free prompt", _clip(), times, None)
    assert fidelity(result) is None and result.teacher_change == []
    assert adherence(result.nearest, None) == {"style": None, "fraction": None, "frames_scored": 2, "every": 1,
                                               "nearest": {"blueprint": 2}}


def test_flicker_on_a_still_matches_a_flickering_teacher():
    # Old film flickers by itself; a model that reproduces it flickers exactly as much.
    style = "sepia old film"
    times = torch.arange(6, dtype=torch.float32) / FPS
    still = evaluate(TeacherAsModel(style), "x", _clip(1), times, TEACHERS[style], EvalOptions(adherence=False))
    report = flicker(still)
    assert still.nearest == [] and report["frames"] == 6 and report["teacher"] > 0
    assert report["ratio"] == pytest.approx(1.0, abs=1e-3)


# ---- the command -----------------------------------------------------------------------------------
def test_cli_random_tiny_model_on_facecam(tmp_path, capsys):
    code = cli_main(["evaluate", "--input", "facecam", "--style", "comic", "--frames", "4", "--still-frames", "4",
                     "--size", "64x48", "--device", "cpu", "--out-dir", str(tmp_path), "--quiet"])
    out = capsys.readouterr().out
    assert code == 0
    report = json.loads(out)
    assert {"frames", "checkpoint", "preset", "device", "fps", "fidelity", "adherence", "flicker", "drift",
            "sheet", "video"} <= set(report)
    assert report["frames"] == 4 and report["preset"] == "tiny" and report["device"] == "cpu"
    assert math.isfinite(report["fidelity"]["psnr_db"]) and "ssim_mode" in report["fidelity"]
    assert report["adherence"]["frames_scored"] == 4 and report["drift"]["window"] == 2
    with av.open(report["sheet"]) as c:
        sheet = next(c.decode(video=0)).to_ndarray(format="rgb24")
    assert sheet.shape == (3 * 50, 4 * 66, 3)  # input / teacher / model rows, four columns, 2-pixel gaps
    with av.open(report["video"]) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert len(frames) == 4 and frames[0].shape == (48, 3 * 64, 3)


@pytest.mark.parametrize("argv, message", [
    (["--input", "facecam", "--style", "vaporwave"], "unknown style 'vaporwave'; styles: original"),
    (["--input", "no/such/clip.mp4", "--style", "comic"], "does not exist"),
    (["--input", "facecam", "--prompt", "a dreamy glow", "--fidelity"], "pass --style NAME"),
    (["--input", "facecam", "--prompt", "a dreamy glow", "--teacher", "nope"], "unknown --teacher 'nope'"),
    (["--input", "facecam", "--style", "comic", "--frames", "0"], "--frames must be at least 1"),
    (["--input", "facecam", "--style", "comic", "--strength", "1.5"], "--strength must be in [0, 1]"),
    (["--input", "facecam", "--style", "comic", "--size", "50x48"], "must be positive multiples of 16"),
    (["--input", "facecam", "--style", "comic", "--size", "wide"], "size must look like 256x144"),
    (["--input", "facecam"], "one of the arguments --style --prompt is required"),
])
def test_bad_arguments_exit_2_with_a_message(argv, message, capsys):
    try:
        code = cli_main(["evaluate", *argv, "--quiet"])
    except SystemExit as exc:  # argparse's own checks exit from inside parse_args
        code = exc.code
    captured = capsys.readouterr()
    assert code == 2 and message in captured.err and captured.out == ""

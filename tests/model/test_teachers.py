"""Style teachers: determinism, batching, ranges, distinct looks, coherent particles, lookup."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from morphcam.daemon.sample import facecam_frame
from morphcam.model.styles import STYLES
from morphcam.model.teachers import TEACHERS, StyleTeacher, teacher_for_prompt
from morphcam.model.teachers.ops import blur

H, W = 72, 128
GENERATIVE = [n for n, t in TEACHERS.items() if t.generative]


@pytest.fixture(scope="module")
def clip() -> tuple[torch.Tensor, torch.Tensor]:
    """Two face-cam clips of three frames (B=2, T=3) and their times."""
    times = torch.tensor([[0.0, 1 / 30, 2 / 30], [5.0, 5 + 1 / 30, 5 + 2 / 30]])
    frames = np.stack([[facecam_frame(float(t), W, H) for t in row] for row in times])
    x = torch.from_numpy(frames).permute(0, 1, 4, 2, 3).float() / 255
    return x, times


@pytest.fixture(scope="module")
def outputs(clip) -> dict[str, torch.Tensor]:
    x, times = clip
    return {name: teacher(x, times, 7) for name, teacher in TEACHERS.items()}


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


def test_table_is_the_style_table():
    assert list(TEACHERS) == [s.name for s in STYLES]
    for s in STYLES:
        t = TEACHERS[s.name]
        assert isinstance(t, StyleTeacher)
        assert (t.prompt, t.description, t.generative) == (s.prompt, s.description, s.generative)
    assert {"snowfall", "rain"} <= set(GENERATIVE)
    with pytest.raises(TypeError):
        TEACHERS["x"] = TEACHERS["original"]  # the table is read-only


def test_paraphrases_many_and_heldout_disjoint():
    seen: dict[str, str] = {}
    for t in TEACHERS.values():
        assert len(t.paraphrases) >= 10 and len(t.heldout_paraphrases) >= 3, t.name
        train = {_norm(p) for p in t.train_prompts}
        held = {_norm(p) for p in t.heldout_paraphrases}
        assert not train & held, t.name
        for wording in train | held | {_norm(t.name)}:  # no wording names two styles
            assert seen.setdefault(wording, t.name) == t.name, wording


def test_teacher_for_prompt():
    assert teacher_for_prompt("a graphite pencil sketch on white paper").name == "pencil sketch"
    assert teacher_for_prompt("  Heavy   RAIN ").name == "rain"
    assert teacher_for_prompt(TEACHERS["comic"].heldout_paraphrases[0].upper()).name == "comic"
    assert teacher_for_prompt("thermal camera").name == "thermal camera"
    assert teacher_for_prompt("a photo of a cat") is None


@pytest.mark.parametrize("name", list(TEACHERS))
def test_shape_range_and_determinism(name, clip, outputs):
    x, times = clip
    out = outputs[name]
    assert out.shape == x.shape and out.dtype == x.dtype
    assert torch.isfinite(out).all() and out.min() >= 0 and out.max() <= 1
    assert torch.equal(TEACHERS[name](x, times, 7), out)
    assert torch.equal(TEACHERS[name](x, times, torch.tensor([7, 7])), out)  # int seed == per-clip seeds


@pytest.mark.parametrize("name", list(TEACHERS))
def test_batched_equals_per_clip(name, clip):
    x, times = clip
    seeds = torch.tensor([3, 2**40 + 5])
    together = TEACHERS[name](x, times, seeds)
    for i in range(2):
        alone = TEACHERS[name](x[i : i + 1], times[i : i + 1], int(seeds[i]))
        torch.testing.assert_close(together[i : i + 1], alone, atol=1e-5, rtol=0)


def test_identity(clip, outputs):
    assert torch.equal(outputs["original"], clip[0])


def test_every_style_changes_the_image_and_differs_from_the_others(clip, outputs):
    x = clip[0]
    for name, out in outputs.items():
        if name != "original":
            assert (out - x).abs().mean() > 0.04, name
    for a, b in itertools.combinations(outputs, 2):
        diff = (outputs[a] - outputs[b]).abs().mean().item()
        assert diff > 0.03, f"{a} and {b} look alike (mean abs difference {diff:.3f})"


@pytest.mark.parametrize("name", ["sepia old film", "night vision"])
def test_film_noise_moves_with_time_but_repeats(name, clip):
    x, _ = clip
    still = x[:1, :1].expand(2, 2, 3, H, W)
    out = TEACHERS[name](still, torch.tensor([[1.0, 1.5], [1.0, 1.5]]), 1)
    assert (out[:, 0] - out[:, 1]).abs().mean() > 0.01  # grain/flicker change between times
    assert torch.equal(out[0], out[1])  # and are a function of time, not of the call


def _particles(name: str, times: torch.Tensor, seed: int, grey: float = 0.3) -> torch.Tensor:
    """Where the teacher's output departs from its (flat) restyle of a flat grey frame."""
    x = torch.full((1, times.shape[1], 3, H, W), grey)
    out = TEACHERS[name](x, times, seed)
    base = out.flatten(3).median(-1).values.view(1, -1, 3, 1, 1)  # the flat restyle: most pixels
    return (out - base).abs().amax(2)  # (1, T, H, W)


@pytest.mark.parametrize("name", GENERATIVE)
def test_particles_are_temporally_coherent_and_seeded(name):
    t0 = 3.0
    d = _particles(name, torch.tensor([[t0, t0 + 1 / 30, t0 + 1.0]]), seed=11)
    assert d.amax() > 0.3 and (d > 0.05).float().mean() > 0.002, "no visible particles"
    soft = blur(d.view(3, 1, H, W), 2.0)
    near = (soft[0] - soft[1]).abs().mean()
    far = (soft[0] - soft[2]).abs().mean()
    assert near > 0, "particles do not move"
    assert near < 0.7 * far, f"one frame apart differs as much as a second apart ({near:.4f} vs {far:.4f})"
    other = _particles(name, torch.tensor([[t0]]), seed=12)
    assert (blur(other.view(1, 1, H, W), 2.0)[0] - soft[0]).abs().mean() > 0.5 * far, "seed does not matter"


@pytest.mark.parametrize("name", GENERATIVE)
def test_particle_positions_ignore_frame_content(name):
    times = torch.tensor([[2.0, 2.5]])
    a = _particles(name, times, seed=5, grey=0.15).flatten()
    b = _particles(name, times, seed=5, grey=0.45).flatten()
    # Over a brighter frame particles stand out less, but in the same places: the two
    # departure maps are proportional, so strongly correlated.
    corr = torch.corrcoef(torch.stack([a, b]))[0, 1]
    assert corr > 0.95, f"particles move with the frame's content (correlation {corr:.2f})"


def test_runs_on_half_precision_inputs_and_checks_shapes(clip):
    x, times = clip
    out = TEACHERS["comic"](x.half(), times, 0)
    assert out.dtype == torch.float16
    with pytest.raises(ValueError, match="frames must be"):
        TEACHERS["comic"](x[0], times, 0)
    with pytest.raises(ValueError, match="times must be"):
        TEACHERS["comic"](x, times[:, :2], 0)
    with pytest.raises(ValueError, match="seed has 3 values"):
        TEACHERS["comic"](x, times, torch.tensor([1, 2, 3]))


@pytest.mark.gpu
@pytest.mark.parametrize("name", list(TEACHERS))
def test_gpu_matches_cpu(name, clip, outputs):
    """The hash noise and particle fields are integer arithmetic, so the GPU draws the same
    grain, scratches and particles; only float rounding differs."""
    x, times = clip
    out = TEACHERS[name](x.cuda(), times.cuda(), torch.tensor([7, 7]).cuda()).cpu()
    assert (out - outputs[name]).abs().mean() < 5e-3

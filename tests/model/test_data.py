"""Synthetic paired clips and paired-clip folders."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from morphcam.daemon.sample import facecam_frame
from morphcam.model.data import ClipSpec, PairedClipError, PairedClipFolder, SyntheticClips
from morphcam.model.data.images import load_photos, split_photos
from morphcam.model.teachers import TEACHERS
from helpers.photos import photo_folder

SPEC = ClipSpec(frames=3, width=64, height=36)


@pytest.fixture(scope="module")
def photo_dir(tmp_path_factory):
    """A folder of ten small pictures, so both splits have photos without the bundled ones."""
    return photo_folder(tmp_path_factory.mktemp("photos"))


def clips(photo_dir, **kw) -> SyntheticClips:
    kw = {"spec": SPEC, "image_dirs": [str(photo_dir)], "bundled_photos": False, **kw}
    return SyntheticClips(**kw)


def test_shapes_ranges_and_targets_come_from_the_teachers(photo_dir):
    batch = clips(photo_dir, seed=1).sample(6)
    assert batch.inputs.shape == batch.targets.shape == (6, 3, 3, 36, 64)
    for x in (batch.inputs, batch.targets):
        assert x.dtype == torch.float32 and x.min() >= -1 and x.max() <= 1 and torch.isfinite(x).all()
    assert len(batch.prompts) == len(batch.styles) == 6 and batch.seeds.shape == (6,)
    for i, name in enumerate(batch.styles):
        teacher = TEACHERS[name]
        assert batch.prompts[i] in teacher.train_prompts
        redo = teacher((batch.inputs[i : i + 1] + 1) / 2, batch.times[i : i + 1], batch.seeds[i : i + 1])
        torch.testing.assert_close(redo * 2 - 1, batch.targets[i : i + 1], atol=1e-5, rtol=0)
    # Frame times step at the clip rate from a random start.
    torch.testing.assert_close(batch.times[:, 1] - batch.times[:, 0], torch.full((6,), 1 / 30))


def test_reproducible_from_seed_and_fresh_each_call(photo_dir):
    a, b = clips(photo_dir, seed=3), clips(photo_dir, seed=3)
    a1, b1 = a.sample(4), b.sample(4)
    assert torch.equal(a1.inputs, b1.inputs) and torch.equal(a1.targets, b1.targets)
    assert a1.prompts == b1.prompts and torch.equal(a1.seeds, b1.seeds)
    a2 = a.sample(4)
    assert not torch.equal(a1.inputs, a2.inputs)
    assert not torch.equal(clips(photo_dir, seed=4).sample(4).inputs, a1.inputs)


def test_clips_move(photo_dir):
    batch = clips(photo_dir, seed=5, spec=ClipSpec(frames=4, width=64, height=36)).sample(8)
    motion = (batch.inputs[:, 1:] - batch.inputs[:, :-1]).abs().mean((1, 2, 3, 4))
    assert (motion > 1e-3).float().mean() >= 0.5  # most clips have camera or object motion


def test_eval_split_uses_heldout_prompts_and_photos(photo_dir):
    train = clips(photo_dir, seed=2, split="train")
    evals = clips(photo_dir, seed=2, split="eval")
    assert train.photos and evals.photos
    assert not {p.name for p in train.photos} & {p.name for p in evals.photos}
    eb = evals.sample(6)
    for prompt, name in zip(eb.prompts, eb.styles):
        assert prompt in TEACHERS[name].heldout_paraphrases
    assert not torch.equal(train.sample(6).inputs, eb.inputs)


def test_style_subset_and_unknown_style(photo_dir):
    batch = clips(photo_dir, styles=["snowfall", "comic"]).sample(6)
    assert set(batch.styles) <= {"snowfall", "comic"}
    with pytest.raises(ValueError, match="unknown styles"):
        clips(photo_dir, styles=["no such style"])


def test_still_clips_hold_the_input_while_generative_styles_move(photo_dir):
    spec = ClipSpec(frames=4, width=64, height=36)
    batch = clips(photo_dir, seed=5, spec=spec, still_prob=1.0, styles=["snowfall", "pencil sketch"]).sample(6)
    assert torch.equal(batch.inputs, batch.inputs[:, :1].expand_as(batch.inputs))
    for i, name in enumerate(batch.styles):
        change = (batch.targets[i, 1:] - batch.targets[i, :-1]).abs().max()
        assert (change > 0.05) if name == "snowfall" else (change == 0), name  # the snow falls; a sketch holds
    # A share of them: some clips held, some moving.
    mixed = clips(photo_dir, seed=5, spec=spec, still_prob=0.5).sample(16)
    held = [torch.equal(x, x[:1].expand_as(x)) for x in mixed.inputs]
    assert 0 < sum(held) < 16


def test_style_weights_draw_some_styles_more(photo_dir):
    only = clips(photo_dir, seed=1, styles=["comic", "rain", "sepia old film"], style_weights={"rain": 0, "sepia old film": 0})
    assert set(only.sample(8).styles) == {"comic"}
    heavy = clips(photo_dir, seed=1, style_weights={"oil painting": 30.0}).sample(40)
    assert heavy.styles.count("oil painting") > 20  # 30 / (30 + 15) of the draws, on average
    # Defaults draw what sources without these settings draw, clip for clip.
    a = clips(photo_dir, seed=3).sample(4)
    b = clips(photo_dir, seed=3, still_prob=0.0, style_weights={}).sample(4)
    assert torch.equal(a.inputs, b.inputs) and a.styles == b.styles


@pytest.mark.parametrize("kw,message", [
    (dict(still_prob=1.5), r"still_prob must be in \[0, 1\]"),
    (dict(styles=["comic"], style_weights={"rain": 2}), "does not draw"),
    (dict(style_weights={name: 0 for name in TEACHERS}), "at least one style above 0"),
    (dict(style_weights={"comic": -1}), ">= 0"),
])
def test_bad_mix_settings_are_named(photo_dir, kw, message):
    with pytest.raises(ValueError, match=message):
        clips(photo_dir, **kw)


def test_procedural_only_without_photos():
    batch = SyntheticClips(SPEC, bundled_photos=False, seed=0).sample(3)
    assert batch.inputs.shape == (3, 3, 3, 36, 64)


def test_bundled_photos_split_deterministically():
    photos = load_photos(max_side=64)
    if len(photos) < 2:
        pytest.skip("no bundled sample photos (scikit-image / scikit-learn) installed")
    train, held = split_photos(photos, "train"), split_photos(photos, "eval")
    assert train and held and len(train) + len(held) == len(photos)
    assert [p.name for p in held] == [p.name for p in split_photos(load_photos(max_side=32), "eval")]


def test_plasma_wallpapers_give_one_photo_each_at_their_largest_size(tmp_path, monkeypatch):
    """Each wallpaper's sizes, dark variant and screenshot are one picture: only the largest size
    is read, so no copy of a held-out picture lands in training."""
    from morphcam.model.data import images

    root = tmp_path / "wallpapers"
    for name, sizes in (("Dune", ("640x480", "1920x1080", "800x600")), ("Kite", ("400x300",))):
        (root / name / "contents" / "images_dark").mkdir(parents=True)
        (root / name / "contents" / "images").mkdir()
        for size in sizes:
            w, h = map(int, size.split("x"))
            photo_folder(root / name / "contents" / "images", n=1, width=w // 10, height=h // 10, prefix=size)
            (root / name / "contents" / "images" / f"{size}0.png").rename(root / name / "contents" / "images" / f"{size}.png")
        photo_folder(root / name / "contents" / "images_dark", n=1, prefix="640x480")
        photo_folder(root / name / "contents", n=1, prefix="screenshot")
    photo_folder(root, n=1, width=50, height=40, prefix="loose")
    (root / "empty" / "contents").mkdir(parents=True)
    monkeypatch.setattr(images, "DEBIAN_WALLPAPERS", root)
    got = {p.name: tuple(p.pixels.shape) for p in load_photos(max_side=1000) if p.name.startswith("wallpapers/")}
    assert got == {"wallpapers/Dune": (3, 108, 192), "wallpapers/Kite": (3, 30, 40), "wallpapers/loose0": (3, 40, 50)}


@pytest.mark.parametrize("max_side", [1000, 48])
def test_pictures_read_alike_with_pyav_or_pillow(tmp_path, monkeypatch, max_side):
    """Where PyAV is not installed, Pillow reads the pictures: same sizes, nearly the same pixels
    (PNG at full size exactly; shrunk or JPEG within a few levels), transparency on white."""
    from PIL import Image

    from morphcam.model.data import images

    photo_folder(tmp_path, n=2, width=96, height=64)
    Image.open(tmp_path / "pic0.png").save(tmp_path / "pic0.jpg", quality=95)
    rgba = np.zeros((20, 30, 4), np.uint8)
    rgba[:, :15] = (255, 0, 0, 255)  # opaque red left half, transparent right half
    Image.fromarray(rgba, "RGBA").save(tmp_path / "alpha.png")
    with_av = {p.name: p.pixels for p in load_photos([tmp_path], bundled=False, max_side=max_side)}
    monkeypatch.setitem(__import__("sys").modules, "av", None)  # import av now raises ImportError
    with_pillow = {p.name: p.pixels for p in load_photos([tmp_path], bundled=False, max_side=max_side)}
    assert with_av.keys() == with_pillow.keys() == {f"{tmp_path.name}/{n}" for n in ("pic0.png", "pic1.png", "pic0.jpg", "alpha.png")}
    for name, a in with_av.items():
        b = with_pillow[name]
        assert a.shape == b.shape and b.dtype == torch.uint8, name
        diff = (a.float() - b.float()).abs().mean().item()
        if name.endswith("pic0.png") and max_side == 1000:
            assert diff == 0, name
        assert diff < 12, (name, diff)
    alpha = with_pillow[f"{tmp_path.name}/alpha.png"]
    assert alpha[:, 2, 2].tolist() == [255, 0, 0] and alpha[:, 2, -2].tolist() == [255, 255, 255]
    assert images._read_picture(tmp_path / "missing.jpg", 100) is None  # unreadable: skipped, logged


# ---- paired-clip folders ---------------------------------------------------------------------
def _write_video(path, frames: int, width: int = 64, height: int = 48, shift: int = 0) -> None:
    from morphcam.daemon.video import VideoWriter  # PyAV: only the paired-folder tests need it

    with VideoWriter(path, width, height, 30.0) as w:
        for i in range(frames):
            w.write(np.roll(facecam_frame(i / 30, width, height), shift, axis=1))


def _example(folder, name, frames=6, target_frames=None, size=(64, 48), stem=False, prompt="a red look\nsomething red"):
    if stem:
        inp, tgt, txt = folder / f"{name}.input.mp4", folder / f"{name}.target.mp4", folder / f"{name}.txt"
    else:
        (folder / name).mkdir(parents=True)
        inp, tgt, txt = folder / name / "input.mp4", folder / name / "target.mp4", folder / name / "prompt.txt"
    _write_video(inp, frames, *size)
    _write_video(tgt, target_frames or frames, *size, shift=5)
    txt.write_text(prompt)


def test_paired_folder_reads_both_layouts(tmp_path):
    _example(tmp_path, "one")
    _example(tmp_path, "two", frames=8, size=(80, 48), stem=True)
    data = PairedClipFolder(tmp_path, SPEC, seed=0)
    assert sorted(e.name for e in data.examples) == ["one", "two"]
    batch = data.sample(5)
    assert batch.inputs.shape == batch.targets.shape == (5, 3, 3, 36, 64)
    assert batch.inputs.min() >= -1 and batch.inputs.max() <= 1
    assert set(batch.prompts) <= {"a red look", "something red"} and set(batch.styles) <= {"one", "two"}
    assert not torch.equal(batch.inputs, batch.targets)  # targets are the shifted clip
    again = PairedClipFolder(tmp_path, SPEC, seed=0).sample(5)
    assert torch.equal(again.inputs, batch.inputs)


def test_paired_folder_errors(tmp_path):
    with pytest.raises(PairedClipError, match="not a folder"):
        PairedClipFolder(tmp_path / "missing", SPEC)
    with pytest.raises(PairedClipError, match="holds no examples"):
        PairedClipFolder(tmp_path, SPEC)
    (tmp_path / "a").mkdir()
    _write_video(tmp_path / "a" / "input.mp4", 4)
    (tmp_path / "a" / "prompt.txt").write_text("x")
    with pytest.raises(PairedClipError, match="'a' .* no target video"):
        PairedClipFolder(tmp_path, SPEC)


@pytest.mark.parametrize(
    "kind, match",
    [("frames", "input has 6 frames but target has 4"), ("short", "fewer than the 3"),
     ("size", "input is 64x48 but target is 80x48"), ("garbage", "cannot"), ("prompt", "is empty")],
)
def test_paired_folder_bad_examples(tmp_path, kind, match):
    if kind == "frames":
        _example(tmp_path, "bad", frames=6, target_frames=4)
    elif kind == "short":
        _example(tmp_path, "bad", frames=2)
    elif kind == "prompt":
        _example(tmp_path, "bad", prompt="\n  \n")
    else:
        _example(tmp_path, "bad")
        target = tmp_path / "bad" / "target.mp4"
        if kind == "size":
            _write_video(target, 6, 80, 48)
        else:
            target.write_bytes(b"this is not a video")
    with pytest.raises(PairedClipError, match=match) as err:
        PairedClipFolder(tmp_path, SPEC)
    assert "'bad'" in str(err.value)


@pytest.mark.gpu
def test_synthetic_clips_on_gpu(photo_dir):
    batch = clips(photo_dir, seed=1, device="cuda").sample(4)
    assert batch.inputs.is_cuda and batch.targets.is_cuda and batch.seeds.is_cuda
    cpu = clips(photo_dir, seed=1).sample(4)
    assert batch.styles == cpu.styles and batch.prompts == cpu.prompts
    assert (batch.inputs.cpu() - cpu.inputs).abs().mean() < 1e-2

"""Still photos for the synthetic clips: bundled sample images and folders of pictures.

Sources, each optional and skipped when missing: scikit-learn's two sample photos,
scikit-image's bundled (offline) sample images, Debian's plasma-workspace-wallpapers and any
folders the caller names. Photos are split into training and evaluation sets by a hash of
their name, so the split is the same on every machine and stays put when photos are added.
Nothing here runs at import time.
"""
from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import torch
from torch import Tensor

log = logging.getLogger(__name__)

# scikit-image loaders whose files ship inside the wheel; the others need a download.
SKIMAGE_BUNDLED = (
    "astronaut", "brick", "camera", "chelsea", "coffee", "coins", "colorwheel", "grass", "gravel",
    "hubble_deep_field", "immunohistochemistry", "logo", "moon", "page", "rocket", "retina", "text",
    "clock", "cell",
)
# Where Debian's plasma-workspace-wallpapers package puts its pictures.
DEBIAN_WALLPAPERS = Path("/usr/share/wallpapers")
_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
EVAL_FRACTION_MOD = 5  # one photo in five (by name hash) is held out for evaluation


@dataclass(frozen=True)
class Photo:
    name: str
    pixels: Tensor  # (3, H, W) uint8 on the CPU


def to_rgb_tensor(array: np.ndarray) -> Tensor:
    """Any grey, RGB, RGBA or boolean image array (H, W[, C]) -> (3, H, W) uint8."""
    a = np.asarray(array)
    if a.dtype == bool:
        a = a.astype(np.uint8) * 255
    elif a.dtype != np.uint8:
        a = (np.clip(a.astype(np.float32) / max(float(a.max()), 1e-6), 0, 1) * 255).astype(np.uint8)
    if a.ndim == 2:
        a = np.repeat(a[:, :, None], 3, axis=2)
    if a.shape[2] == 4:  # composite transparency on white
        alpha = a[:, :, 3:4].astype(np.float32) / 255
        a = (a[:, :, :3] * alpha + 255 * (1 - alpha)).astype(np.uint8)
    return torch.from_numpy(np.array(a[:, :, :3], copy=True)).permute(2, 0, 1).contiguous()


def shrink(img: Tensor, max_side: int) -> Tensor:
    """Scale a (3, H, W) uint8 image down (never up) so its longer side is at most ``max_side``."""
    h, w = img.shape[1:]
    if max(h, w) <= max_side:
        return img
    scale = max_side / max(h, w)
    size = (max(1, round(h * scale)), max(1, round(w * scale)))
    small = torch.nn.functional.interpolate(img[None].float(), size=size, mode="area")
    return small[0].round().clamp(0, 255).to(torch.uint8)


def _sklearn_photos() -> Iterable[tuple[str, np.ndarray]]:
    try:
        from sklearn.datasets import load_sample_images

        bunch = load_sample_images()
    except Exception as exc:  # not installed, or no image reader for its JPEGs
        log.info("scikit-learn sample images unavailable: %s", exc)
        return
    for fname, image in zip(bunch.filenames, bunch.images):
        yield f"sklearn/{Path(fname).stem}", image


def _skimage_photos() -> Iterable[tuple[str, np.ndarray]]:
    try:
        import skimage.data
    except ImportError:
        return
    for name in SKIMAGE_BUNDLED:
        try:
            yield f"skimage/{name}", getattr(skimage.data, name)()
        except Exception as exc:  # some versions move a picture into the download-only set
            log.info("scikit-image sample %s unavailable: %s", name, exc)


def _read_picture(path: Path, max_side: int) -> Tensor | None:
    """Decode one picture, scaled down so its longer side is at most ``max_side``: with PyAV
    (scaled during decoding, so big wallpapers stay cheap), or with Pillow where PyAV is not
    installed (scikit-image depends on Pillow). None, logged, for a file neither can read."""
    try:
        import av
    except ImportError:
        return _read_picture_pillow(path, max_side)
    try:
        with av.open(str(path)) as container:
            frame = next(container.decode(video=0))
    except (av.FFmpegError, StopIteration, OSError) as exc:
        log.info("skipping unreadable picture %s: %s", path, exc)
        return None
    scale = min(1.0, max_side / max(frame.width, frame.height))
    # RGBA, so transparency is composited on white as for every other source (opaque: alpha 255).
    frame = frame.reformat(width=max(1, round(frame.width * scale)), height=max(1, round(frame.height * scale)),
                           format="rgba")
    return to_rgb_tensor(frame.to_ndarray())


def _read_picture_pillow(path: Path, max_side: int) -> Tensor | None:
    """``_read_picture`` with Pillow: JPEGs decode at a reduced scale first (``draft``), then the
    picture is shrunk by area averaging to the same size PyAV would give."""
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError as exc:
        raise ImportError("reading pictures needs PyAV or Pillow: pip install av") from exc
    try:
        with Image.open(path) as img:
            width, height = img.size
            scale = min(1.0, max_side / max(width, height))
            size = (max(1, round(width * scale)), max(1, round(height * scale)))
            img.draft("RGB", size)  # JPEG only: decode at 1/2, 1/4 or 1/8 scale when that still covers size
            rgba = img.convert("RGBA") if "A" in img.getbands() or img.mode == "P" else img.convert("RGB")
            pixels = to_rgb_tensor(np.asarray(rgba))
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        log.info("skipping unreadable picture %s: %s", path, exc)
        return None
    if tuple(pixels.shape[1:]) == (size[1], size[0]):
        return pixels
    small = torch.nn.functional.interpolate(pixels[None].float(), size=(size[1], size[0]), mode="area")
    return small[0].round().clamp(0, 255).to(torch.uint8)


def _folder_photos(folder: Path, max_side: int, label: str) -> Iterable[Photo]:
    for path in sorted(p for p in folder.rglob("*") if p.suffix.lower() in _SUFFIXES):
        img = _read_picture(path, max_side)
        if img is not None:
            yield Photo(f"{label}/{path.relative_to(folder)}", img)


def _pixels_in_name(path: Path) -> int:
    """Width x height from a name such as ``5120x2880.png`` (0 if it has none)."""
    m = re.fullmatch(r"(\d+)x(\d+)", path.stem)
    return int(m[1]) * int(m[2]) if m else 0


def _wallpaper_photos(root: Path, max_side: int) -> Iterable[Photo]:
    """One photo per wallpaper of a Plasma wallpaper folder, named ``wallpapers/NAME``.

    A Plasma wallpaper is a folder ``NAME/contents/images/WIDTHxHEIGHT.ext`` holding the same
    picture at several sizes, beside a dark variant and a screenshot of it: only its largest
    size is taken, since its copies would be near-duplicates, and put copies of one picture on
    both sides of the training/evaluation split. Pictures lying loose in ``root`` count too.
    """
    for entry in sorted(root.iterdir()):
        if entry.is_file() and entry.suffix.lower() in _SUFFIXES:
            best, name = entry, entry.stem
        elif entry.is_dir():
            sizes = [p for p in (entry / "contents" / "images").glob("*") if p.suffix.lower() in _SUFFIXES]
            if not sizes:
                continue
            best, name = max(sizes, key=lambda p: (_pixels_in_name(p), p.stat().st_size, p.name)), entry.name
        else:
            continue
        img = _read_picture(best, max_side)
        if img is not None:
            yield Photo(f"wallpapers/{name}", img)


def load_photos(image_dirs: Sequence[str | Path] = (), bundled: bool = True, max_side: int = 640) -> list[Photo]:
    """Every photo from the bundled sources (when ``bundled``) and ``image_dirs``, sorted by
    name, each shrunk so its longer side is at most ``max_side``."""
    photos: list[Photo] = []
    if bundled:
        for source in (_sklearn_photos, _skimage_photos):
            photos += [Photo(name, shrink(to_rgb_tensor(a), max_side)) for name, a in source()]
        if DEBIAN_WALLPAPERS.is_dir():
            photos += list(_wallpaper_photos(DEBIAN_WALLPAPERS, max_side))
    for folder in image_dirs:
        folder = Path(folder)
        if not folder.is_dir():
            raise FileNotFoundError(f"image folder {folder} does not exist: pass folders of .jpg/.png pictures")
        photos += list(_folder_photos(folder, max_side, folder.name))
    return sorted(photos, key=lambda p: p.name)


def _name_hash(name: str) -> int:
    return int(hashlib.sha1(name.encode()).hexdigest(), 16)


def is_heldout(name: str) -> bool:
    """Whether a photo belongs to the evaluation split (a stable hash of its name)."""
    return _name_hash(name) % EVAL_FRACTION_MOD == 0


def split_photos(photos: Sequence[Photo], split: str) -> list[Photo]:
    """The photos of one split. With two or more photos each split gets at least one: if the
    hash leaves a split empty, the photo with the lowest hash moves over."""
    if split not in ("train", "eval"):
        raise ValueError(f"split must be 'train' or 'eval', got {split!r}")
    held = [p for p in photos if is_heldout(p.name)]
    kept = [p for p in photos if not is_heldout(p.name)]
    by_hash: Callable[[Photo], int] = lambda p: _name_hash(p.name)
    if len(photos) >= 2 and not held:
        first = min(kept, key=by_hash)
        held, kept = [first], [p for p in kept if p is not first]
    elif len(photos) >= 2 and not kept:
        first = min(held, key=by_hash)
        kept, held = [first], [p for p in held if p is not first]
    return held if split == "eval" else kept

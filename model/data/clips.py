"""Synthetic paired clips: input clips made from photos and procedural scenes under synthetic
camera motion, and target clips made by the style teachers from those inputs."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ..host import device_tensor, to_device
from ..teachers import TEACHERS, StyleTeacher
from . import motion, scenes
from .images import Photo, load_photos, split_photos


@dataclass(frozen=True)
class ClipSpec:
    """The shape of the clips a data source produces."""

    frames: int = 8  # frames per clip (T)
    width: int = 256
    height: int = 144
    fps: float = 30.0  # frame times are index / fps (plus a random start)

    def __post_init__(self) -> None:
        if self.frames < 1 or self.width < 8 or self.height < 8 or self.fps <= 0:
            raise ValueError(f"invalid ClipSpec {self}: needs frames >= 1, width and height >= 8, fps > 0")


@dataclass
class ClipBatch:
    """A batch of paired clips. ``inputs`` and ``targets`` are (B, T, 3, H, W) in [-1, 1];
    ``prompts``, ``styles`` have one entry per clip; ``seeds`` (B,) int64 are the teachers'
    seeds; ``times`` (B, T) the frame times in seconds the targets were made at."""

    inputs: Tensor
    targets: Tensor
    prompts: list[str]
    styles: list[str]
    seeds: Tensor
    times: Tensor = field(default_factory=lambda: torch.zeros(0))

    def to(self, device: torch.device | str) -> "ClipBatch":
        return ClipBatch(to_device(self.inputs, device), to_device(self.targets, device), list(self.prompts),
                         list(self.styles), to_device(self.seeds, device), to_device(self.times, device))


# How often each kind of source is drawn: face-cam framing matters most.
SOURCE_WEIGHTS = {"facecam": 0.45, "photo": 0.35, "still": 0.2}
CANVAS_MARGIN = 1.3  # the camera's canvas is this much larger than the frame, room to pan and zoom
EVAL_STREAM = 0x5EED_E7A1  # eval draws from a different random stream than train for the same seed


class SyntheticClips:
    """Fresh paired clips on every ``sample`` call, reproducible from ``seed``.

    ``styles`` limits the teachers (default: all, in table order). ``split`` "train" uses
    the training photos and prompts (canonical + paraphrases); "eval" uses the held-out photos
    and the held-out paraphrases. Photos load once, here, from the bundled sources (when
    ``bundled_photos``) and ``image_dirs``; with no photos at all, clips come from procedural
    scenes only. All drawing happens on ``device``; random choices come from a CPU generator,
    so a seed gives the same clips on any device (up to float rounding).

    ``still_prob`` is the share of clips whose input is one frame held still (the camera and
    everything in front of it frozen; generative styles still move over it), the case where any
    flicker in the output is the model's own. ``style_weights`` draws some styles more often than
    others (a style's weight against 1 for every style it does not name; 0 leaves a style out).
    Both at their defaults draw exactly the clips of earlier versions for the same seed.
    """

    def __init__(
        self,
        spec: ClipSpec = ClipSpec(),
        styles: Sequence[str] | None = None,
        split: str = "train",
        seed: int = 0,
        device: torch.device | str = "cpu",
        image_dirs: Sequence[str] = (),
        bundled_photos: bool = True,
        still_prob: float = 0.0,
        style_weights: Mapping[str, float] | None = None,
    ) -> None:
        names = list(TEACHERS) if styles is None else list(styles)
        unknown = [n for n in names if n not in TEACHERS]
        if unknown or not names:
            raise ValueError(f"unknown styles {unknown or names}; known styles: {', '.join(TEACHERS)}")
        if not 0.0 <= still_prob <= 1.0:
            raise ValueError(f"still_prob must be in [0, 1], got {still_prob}")
        weights = dict(style_weights or {})
        stray = sorted(set(weights) - set(names))
        if stray:
            raise ValueError(f"style_weights names styles this source does not draw: {stray}; "
                             f"its styles: {', '.join(names)}")
        if any(not w >= 0 for w in weights.values()) or not any(weights.get(n, 1.0) > 0 for n in names):
            raise ValueError(f"style_weights must be >= 0 with at least one style above 0, got {weights}")
        self.still_prob = still_prob
        # None keeps the uniform draw (and the random stream) of unweighted sources.
        self._style_p = torch.tensor([float(weights.get(n, 1.0)) for n in names]) if weights else None
        self.spec = spec
        self.split = split
        self.teachers: list[StyleTeacher] = [TEACHERS[n] for n in names]
        self.device = torch.device(device)
        self.photos: list[Photo] = split_photos(load_photos(image_dirs, bundled=bundled_photos,
                                                            max_side=2 * max(spec.width, spec.height)), split)
        self._rng = torch.Generator().manual_seed((seed ^ EVAL_STREAM) if split == "eval" else seed)
        self._photos_on_device: dict[int, Tensor] = {}  # uint8 pixels, copied once per photo

    def _photo_on_device(self, i: int) -> Tensor:
        """Photo ``i``'s uint8 pixels (3, H, W) on the source's device, copied there on first use."""
        if i not in self._photos_on_device:
            self._photos_on_device[i] = to_device(self.photos[i].pixels, self.device)
        return self._photos_on_device[i]

    def prompts_of(self, teacher: StyleTeacher) -> tuple[str, ...]:
        """The wordings this split draws prompts from."""
        return teacher.heldout_paraphrases if self.split == "eval" else teacher.train_prompts

    def prompt_for(self, style: str, u: float) -> str:
        """One of this split's wordings for ``style``, picked by ``u`` in [0, 1)."""
        wordings = self.prompts_of(TEACHERS[style])
        return wordings[min(int(u * len(wordings)), len(wordings) - 1)]

    def sample(self, batch_size: int) -> ClipBatch:
        """``batch_size`` new clips: inputs, teacher targets, prompts, styles, seeds."""
        rng, spec, dev = self._rng, self.spec, self.device
        b, t = batch_size, spec.frames
        start = torch.rand(b, 1, generator=rng) * 100.0
        times = start + torch.arange(t).view(1, t) / spec.fps  # (B, T) seconds
        inputs = self._inputs(b, times)
        if self.still_prob > 0:
            held = to_device(torch.rand(b, generator=rng) < self.still_prob, dev)
            inputs = torch.where(held.view(b, 1, 1, 1, 1), inputs[:, :1].expand_as(inputs), inputs)
        if self._style_p is None:
            style_idx = torch.randint(len(self.teachers), (b,), generator=rng).tolist()
        else:
            style_idx = torch.multinomial(self._style_p, b, replacement=True, generator=rng).tolist()
        seeds = torch.randint(0, 2**31 - 1, (b,), generator=rng, dtype=torch.int64)
        prompt_pick = torch.rand(b, generator=rng).tolist()
        targets = torch.empty_like(inputs)
        times_dev, seeds_dev = to_device(times, dev), to_device(seeds, dev)
        for i in sorted(set(style_idx)):  # one teacher call per style present in the batch
            rows = device_tensor([j for j, s in enumerate(style_idx) if s == i], dev)
            targets[rows] = self.teachers[i](inputs[rows], times_dev[rows], seeds_dev[rows])
        prompts = []
        for j, i in enumerate(style_idx):
            wordings = self.prompts_of(self.teachers[i])
            prompts.append(wordings[min(int(prompt_pick[j] * len(wordings)), len(wordings) - 1)])
        return ClipBatch(
            inputs=inputs * 2 - 1, targets=targets * 2 - 1, prompts=prompts,
            styles=[self.teachers[i].name for i in style_idx], seeds=seeds_dev, times=times_dev,
        )

    # ---- input clips ---------------------------------------------------------------------
    def _inputs(self, b: int, times: Tensor) -> Tensor:
        """(B, T, 3, H, W) input clips in [0, 1]."""
        rng, spec, dev = self._rng, self.spec, self.device
        h, w, t = spec.height, spec.width, spec.frames
        hc, wc = round(h * CANVAS_MARGIN), round(w * CANVAS_MARGIN)
        kinds = [k for k in SOURCE_WEIGHTS if k != "photo" or self.photos]
        weights = torch.tensor([SOURCE_WEIGHTS[k] for k in kinds])
        kind = [kinds[i] for i in torch.multinomial(weights, b, replacement=True, generator=rng).tolist()]
        # The face cam is a fixed camera: a little shake and drift; other sources move freely.
        amount = torch.tensor([0.3 if k == "facecam" else 1.0 for k in kind]) * torch.rand(b, generator=rng)
        theta = to_device(motion.camera_paths(rng, times, w / h, amount), dev)
        out = torch.empty(b, t, 3, h, w, device=dev)
        for k in kinds:
            rows = [i for i, kk in enumerate(kind) if kk == k]
            if not rows:
                continue
            if k == "facecam":
                canvas = scenes.facecam(times[rows], rng, hc, wc, dev)
            elif k == "still":
                canvas = scenes.still_scenes(rng, len(rows), hc, wc, dev).unsqueeze(1)
            else:
                canvas = self._photo_canvases(len(rows), hc, wc).unsqueeze(1)
            at = device_tensor(rows, dev)
            out[at] = motion.film(canvas, theta[at], h, w)
        # Objects passing in front of the camera: 0 to 3 over photos and stills; over a face
        # cam now and then one, so the person stays the subject.
        many = (torch.rand(b, generator=rng) * 4).floor().long()
        few = (torch.rand(b, generator=rng) < 0.2).long()
        counts = torch.where(torch.tensor([k == "facecam" for k in kind]), few, many)
        out = motion.moving_objects(rng, out, times, counts)
        return motion.bars(rng, out).clamp(0, 1)

    def _photo_canvases(self, n: int, hc: int, wc: int) -> Tensor:
        """(N, 3, Hc, Wc) random crops of the split's photos at the frame's aspect, with flips
        and mild colour changes."""
        rng, dev = self._rng, self.device
        aspect = wc / hc
        out = []
        for _ in range(n):  # a loop over clips: photos differ in size
            photo = self._photo_on_device(int(torch.randint(len(self.photos), (1,), generator=rng)))
            ph, pw = photo.shape[1:]
            cw = min(pw, ph * aspect) * float(0.5 + 0.5 * torch.rand(1, generator=rng))
            ch = cw / aspect
            y0 = int(float(torch.rand(1, generator=rng)) * (ph - ch))
            x0 = int(float(torch.rand(1, generator=rng)) * (pw - cw))
            crop = photo[:, y0 : y0 + max(1, round(ch)), x0 : x0 + max(1, round(cw))].float() / 255
            crop = F.interpolate(crop[None], size=(hc, wc), mode="bilinear", antialias=True, align_corners=False)[0]
            if float(torch.rand(1, generator=rng)) < 0.5:
                crop = crop.flip(-1)
            gain = to_device(0.8 + 0.4 * torch.rand(3, 1, 1, generator=rng), dev)
            out.append((crop * gain).clamp(0, 1))
        return torch.stack(out)

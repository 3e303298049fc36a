"""A pool of training clips kept on the device, refreshed a few clips per step.

The style teachers and the synthetic camera are many small GPU kernels per clip; making every
clip of every batch fresh leaves the model waiting on data. ``ClipPool`` holds ``size`` clips
(inputs and targets as uint8, the precision a video target has anyway), draws each batch at
random from them, and replaces ``refresh`` random clips with new ones per batch, so each clip
is seen about ``batch / refresh`` times over its life in the pool and the data cost per step
falls by that factor. New clips are made in chunks (``chunk`` clips every ``chunk / refresh``
steps): making clips is bound by kernel launches, so 64 clips cost little more than 8.

Prompts are worded afresh on every draw when the source can (``SyntheticClips.prompt_for``),
so a pooled clip is not tied to one paraphrase.

Latents (``TrainConfig.pool_latents``, for the stages that keep the autoencoder frozen): with
an ``encoder``, each clip's inputs and targets are encoded once, as the clip enters the pool,
and the pool keeps the latents instead of the frames, so the steps (which draw each clip about
``batch / refresh`` times) skip the encoder. The clip is quantized to uint8 and back first, so
its latents are exactly those of the frames the pool would otherwise have served. The frames
are dropped: on those stages nothing but the encoder reads a training batch's pixels (history
augmentation and self-rollouts work on latents, the losses are latent velocity MSEs, and eval
batches come from their own source).

Resume: the pool's state is its random generator and the source's; the clips themselves are
not saved (gigabytes), so a resumed run refills the pool with new clips from the restored
source: the same distribution, not the same clips.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import Tensor

from ..data import ClipBatch
from ..host import device_tensor, to_device
from .sources import ClipSource, restore_source, source_state

FILL_CHUNK = 64  # clips made per source call while filling


def _quantize(x: Tensor) -> Tensor:
    """[-1, 1] floats -> uint8."""
    return ((x.float() + 1.0) * 127.5).round_().clamp_(0, 255).to(torch.uint8)


def _dequantize(q: Tensor) -> Tensor:
    """uint8 -> [-1, 1] float32."""
    return q.float() / 127.5 - 1.0


@dataclass
class LatentClipBatch:
    """Pooled clips as latents of the frozen autoencoder (a pool with an ``encoder``).

    ``inputs`` (the conditioning) and ``targets`` (the clean latents) are (B, T, C, h, w)
    float32, what ``DenoiserObjective.encode`` gives for the frames; ``prompts``, ``styles``,
    ``seeds`` (B,) and ``times`` (B, T) as in ``ClipBatch``."""

    inputs: Tensor
    targets: Tensor
    prompts: list[str]
    styles: list[str]
    seeds: Tensor
    times: Tensor


class ClipPool:
    """Batches drawn from ``size`` clips on ``device``; ``refresh`` of them replaced per batch.

    ``source`` is any clip source (``sample(n) -> ClipBatch``); the pool fills itself on the
    first ``sample`` call. ``refresh`` 0 keeps the first ``size`` clips for the whole run.
    ``encoder`` (frames (N, T, 3, H, W) in [-1, 1] -> latents (N, T, C, h, w), see
    ``store_latents``) makes the pool keep latents and serve ``LatentClipBatch`` batches.
    """

    def __init__(self, source: ClipSource, size: int, refresh: int, seed: int = 0,
                 device: torch.device | str = "cpu", chunk: int | None = None,
                 encoder: Callable[[Tensor], Tensor] | None = None) -> None:
        if size < 1 or not 0 <= refresh <= size:
            raise ValueError(f"a clip pool needs size >= 1 and 0 <= refresh <= size, got size {size}, refresh {refresh}")
        self.chunk = min(FILL_CHUNK, size) if chunk is None else chunk
        if not 1 <= self.chunk <= size:
            raise ValueError(f"a clip pool's chunk must be in [1, size], got {self.chunk}")
        self.source, self.size, self.refresh = source, size, refresh
        self._owed = 0  # clips due for replacement, made once a whole chunk is due
        self.device = torch.device(device)
        self.generator = torch.Generator().manual_seed(seed)
        self.encoder = encoder
        # (N, T, 3, H, W) uint8 frames; with an encoder (N, T, C, h, w) latents in its output dtype.
        self._inputs: Tensor | None = None
        self._targets: Tensor | None = None
        self._prompts: list[str] = []
        self._styles: list[str] = []
        self._seeds: Tensor | None = None  # (N,) int64
        self._times: Tensor | None = None  # (N, T) float

    @property
    def filled(self) -> bool:
        return self._inputs is not None

    def store_latents(self, encoder: Callable[[Tensor], Tensor]) -> None:
        """Keep latents from now on: ``encoder`` maps frames (N, T, 3, H, W) in [-1, 1] to
        latents (N, T, C, h, w), in the dtype to store them in (cast to float32 when served).
        Must come before the first ``sample``, so no pooled clip is left unencoded."""
        if self.filled:
            raise ValueError("a clip pool must be given its encoder before it fills: call store_latents first")
        self.encoder = encoder

    def memory(self) -> dict[str, int]:
        """Bytes the pooled clips take on the device: {"frames": ..., "latents": ...} (inputs and
        targets together; 0 for what the pool does not keep, and both 0 before it fills)."""
        held = 0 if self._inputs is None else self._inputs.nbytes + self._targets.nbytes
        return {"frames": 0 if self.encoder else held, "latents": held if self.encoder else 0}

    def _stored(self, frames: Tensor) -> Tensor:
        """What the pool keeps of (n, T, 3, H, W) frames in [-1, 1]: uint8, or the latents of
        the uint8-rounded frames (exactly the frames a frame pool would serve)."""
        q = _quantize(to_device(frames, self.device))
        if self.encoder is None:
            return q
        with torch.no_grad():
            return self.encoder(_dequantize(q))

    def _write(self, slots: list[int], batch: ClipBatch) -> None:
        idx = device_tensor(slots, self.device)
        inputs, targets = self._stored(batch.inputs), self._stored(batch.targets)
        if self._inputs is None:  # the first chunk fixes what a slot holds: shape and dtype
            self._inputs = torch.empty(self.size, *inputs.shape[1:], dtype=inputs.dtype, device=self.device)
            self._targets = torch.empty_like(self._inputs)
        self._inputs[idx] = inputs
        self._targets[idx] = targets
        self._seeds[idx] = to_device(batch.seeds, self.device)
        if batch.times.numel():
            self._times[idx] = to_device(batch.times, self.device, torch.float32)
        for j, slot in enumerate(slots):
            self._prompts[slot] = batch.prompts[j]
            self._styles[slot] = batch.styles[j] if getattr(batch, "styles", None) else ""

    def _fill(self) -> None:
        first = self.source.sample(min(FILL_CHUNK, self.size))
        t = first.inputs.shape[1]
        dev = self.device
        self._seeds = torch.zeros(self.size, dtype=torch.int64, device=dev)
        self._times = torch.zeros(self.size, t, device=dev)
        self._prompts = [""] * self.size
        self._styles = [""] * self.size
        done, batch = 0, first
        while True:
            n = min(len(batch.prompts), self.size - done)
            self._write(list(range(done, done + n)), _head(batch, n))
            done += n
            if done >= self.size:
                break
            batch = self.source.sample(min(FILL_CHUNK, self.size - done))

    def _prompt(self, slot: int) -> str:
        reword = getattr(self.source, "prompt_for", None)
        style = self._styles[slot]
        if reword is None or not style:
            return self._prompts[slot]
        return reword(style, float(torch.rand(1, generator=self.generator)))

    def sample(self, batch_size: int) -> ClipBatch | LatentClipBatch:
        """``batch_size`` clips drawn at random from the pool (without replacement when it can);
        then ``refresh`` more clips are due for replacement, and each time a whole ``chunk`` is
        due, that many random slots get new clips. Returns a ClipBatch in [-1, 1], or with an
        encoder a LatentClipBatch."""
        if not self.filled:
            self._fill()
        if batch_size <= self.size:
            rows = torch.randperm(self.size, generator=self.generator)[:batch_size]
        else:
            rows = torch.randint(self.size, (batch_size,), generator=self.generator)
        picked = rows.tolist()
        idx = to_device(rows, self.device)
        kind, serve = (LatentClipBatch, Tensor.float) if self.encoder else (ClipBatch, _dequantize)
        batch = kind(
            inputs=serve(self._inputs[idx]),
            targets=serve(self._targets[idx]),
            prompts=[self._prompt(r) for r in picked],
            styles=[self._styles[r] for r in picked],
            seeds=self._seeds[idx].clone(),
            times=self._times[idx].clone(),
        )
        self._owed += self.refresh
        while self._owed >= self.chunk:
            slots = torch.randperm(self.size, generator=self.generator)[: self.chunk].tolist()
            self._write(slots, self.source.sample(self.chunk))
            self._owed -= self.chunk
        return batch

    # ---- resume -----------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state(), "source": source_state(self.source), "owed": self._owed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])
        restore_source(self.source, state["source"])
        self._owed = int(state.get("owed", 0))
        self._inputs = self._targets = None  # refilled from the restored source on the next sample


def _head(batch: ClipBatch, n: int) -> ClipBatch:
    """The first ``n`` clips of a batch."""
    if n == len(batch.prompts):
        return batch
    return ClipBatch(batch.inputs[:n], batch.targets[:n], batch.prompts[:n],
                     list(getattr(batch, "styles", [""] * n))[:n], batch.seeds[:n],
                     batch.times[:n] if batch.times.numel() else batch.times)

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

Resume: the pool's state is its random generator and the source's; the clips themselves are
not saved (gigabytes), so a resumed run refills the pool with new clips from the restored
source: the same distribution, not the same clips.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..data import ClipBatch
from .sources import ClipSource, restore_source, source_state

FILL_CHUNK = 64  # clips made per source call while filling


def _quantize(x: Tensor) -> Tensor:
    """[-1, 1] floats -> uint8."""
    return ((x.float() + 1.0) * 127.5).round_().clamp_(0, 255).to(torch.uint8)


def _dequantize(q: Tensor) -> Tensor:
    """uint8 -> [-1, 1] float32."""
    return q.float() / 127.5 - 1.0


class ClipPool:
    """Batches drawn from ``size`` clips on ``device``; ``refresh`` of them replaced per batch.

    ``source`` is any clip source (``sample(n) -> ClipBatch``); the pool fills itself on the
    first ``sample`` call. ``refresh`` 0 keeps the first ``size`` clips for the whole run.
    """

    def __init__(self, source: ClipSource, size: int, refresh: int, seed: int = 0,
                 device: torch.device | str = "cpu", chunk: int | None = None) -> None:
        if size < 1 or not 0 <= refresh <= size:
            raise ValueError(f"a clip pool needs size >= 1 and 0 <= refresh <= size, got size {size}, refresh {refresh}")
        self.chunk = min(FILL_CHUNK, size) if chunk is None else chunk
        if not 1 <= self.chunk <= size:
            raise ValueError(f"a clip pool's chunk must be in [1, size], got {self.chunk}")
        self.source, self.size, self.refresh = source, size, refresh
        self._owed = 0  # clips due for replacement, made once a whole chunk is due
        self.device = torch.device(device)
        self.generator = torch.Generator().manual_seed(seed)
        self._inputs: Tensor | None = None  # (N, T, 3, H, W) uint8
        self._targets: Tensor | None = None
        self._prompts: list[str] = []
        self._styles: list[str] = []
        self._seeds: Tensor | None = None  # (N,) int64
        self._times: Tensor | None = None  # (N, T) float

    @property
    def filled(self) -> bool:
        return self._inputs is not None

    def _write(self, slots: list[int], batch: ClipBatch) -> None:
        idx = torch.tensor(slots, device=self.device)
        self._inputs[idx] = _quantize(batch.inputs.to(self.device))
        self._targets[idx] = _quantize(batch.targets.to(self.device))
        self._seeds[idx] = batch.seeds.to(self.device)
        if batch.times.numel():
            self._times[idx] = batch.times.to(self.device, torch.float32)
        for j, slot in enumerate(slots):
            self._prompts[slot] = batch.prompts[j]
            self._styles[slot] = batch.styles[j] if getattr(batch, "styles", None) else ""

    def _fill(self) -> None:
        first = self.source.sample(min(FILL_CHUNK, self.size))
        t, c, h, w = first.inputs.shape[1:]
        dev = self.device
        self._inputs = torch.empty(self.size, t, c, h, w, dtype=torch.uint8, device=dev)
        self._targets = torch.empty_like(self._inputs)
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

    def sample(self, batch_size: int) -> ClipBatch:
        """``batch_size`` clips drawn at random from the pool (without replacement when it can);
        then ``refresh`` more clips are due for replacement, and each time a whole ``chunk`` is
        due, that many random slots get new clips. Returns a ClipBatch in [-1, 1]."""
        if not self.filled:
            self._fill()
        if batch_size <= self.size:
            rows = torch.randperm(self.size, generator=self.generator)[:batch_size]
        else:
            rows = torch.randint(self.size, (batch_size,), generator=self.generator)
        picked = rows.tolist()
        idx = rows.to(self.device)
        batch = ClipBatch(
            inputs=_dequantize(self._inputs[idx]),
            targets=_dequantize(self._targets[idx]),
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
        self._inputs = None  # refilled from the restored source on the next sample


def _head(batch: ClipBatch, n: int) -> ClipBatch:
    """The first ``n`` clips of a batch."""
    if n == len(batch.prompts):
        return batch
    return ClipBatch(batch.inputs[:n], batch.targets[:n], batch.prompts[:n],
                     list(getattr(batch, "styles", [""] * n))[:n], batch.seeds[:n],
                     batch.times[:n] if batch.times.numel() else batch.times)

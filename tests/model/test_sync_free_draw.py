"""Drawing a training batch never makes the host wait for the GPU.

A host-to-device copy from pageable memory drains the GPU's queue before it returns, so a batch
draw with such copies (indices, per-clip random parameters, colour tables) leaves the GPU idle
while the host prepares the next step. On a GPU, PyTorch's sync debug mode names every
synchronising call; the pool's draws, its refreshes (new clips: camera, scenes, photos, moving
objects, every style teacher) and the forcing draw must make none. The host module's copies are
checked on the CPU too.
"""
from __future__ import annotations

import warnings

import pytest
import torch

from morphcam.model.data.clips import ClipSpec, SyntheticClips
from morphcam.model.host import device_tensor, to_device
from morphcam.model.train.forcing import draw_forcing
from morphcam.model.train.pool import ClipPool

from .test_train_support import train_config


def test_host_copies_keep_values_and_dtypes():
    t = torch.arange(6, dtype=torch.int32).view(2, 3)
    moved = to_device(t, "cpu", torch.float32)
    assert moved.dtype == torch.float32 and torch.equal(moved, t.float())
    assert to_device(t, "cpu") is t  # nothing to do on the same device
    v = device_tensor([[0.5, 0.25], [1.0, 2.0]], "cpu", torch.bfloat16)
    assert v.dtype == torch.bfloat16 and v.tolist() == [[0.5, 0.25], [1.0, 2.0]]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_drawing_batches_makes_no_synchronising_call(tmp_path):
    source = SyntheticClips(ClipSpec(frames=4, width=64, height=48), split="train", seed=3, device="cuda")
    pool = ClipPool(source, size=48, refresh=16, chunk=16, seed=1, device="cuda")
    pool.sample(16)  # the fill
    cfg = train_config(tmp_path, stage="denoiser", sampler_prob=0.5)
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            for step in range(6):  # 16 new clips per draw: every source kind and style turns up
                batch = pool.sample(16)
                draw_forcing(cfg, (16, 4, 4, 6, 8), torch.Generator().manual_seed(step),
                             torch.Generator("cuda").manual_seed(step), "cuda")
        finally:
            torch.cuda.set_sync_debug_mode("default")
    syncs = sorted({f"{w.filename}:{w.lineno}: {w.message}" for w in caught if "called a synchronizing" in str(w.message)})
    assert not syncs, "synchronising calls while drawing batches:\n" + "\n".join(syncs)
    assert batch.inputs.is_cuda and torch.isfinite(batch.targets).all()

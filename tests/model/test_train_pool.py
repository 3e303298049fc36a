"""The device-side clip pool: what it serves, how often it asks its source, rewording, resume."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from morphcam.model.data import ClipSpec, SyntheticClips
from morphcam.model.teachers import TEACHERS
from helpers.photos import photo_folder
from morphcam.model.train.loop import Trainer
from morphcam.model.train.pool import ClipPool
from morphcam.model.train.sources import make_train_source

from .test_train_support import tiny_model, train_config

SPEC = ClipSpec(frames=2, width=32, height=32)


@pytest.fixture(scope="module")
def photo_dir(tmp_path_factory):
    return photo_folder(tmp_path_factory.mktemp("pool_photos"), width=64, height=48, seed=1, time_step=0.2, prefix="p")


class Recording:
    """A real SyntheticClips source that keeps every batch it hands out."""

    def __init__(self, photo_dir, split="train", seed=0):
        self.inner = SyntheticClips(SPEC, split=split, seed=seed, image_dirs=[str(photo_dir)], bundled_photos=False)
        self.batches = []

    def sample(self, n):
        batch = self.inner.sample(n)
        self.batches.append(batch)
        return batch

    def prompt_for(self, style, u):
        return self.inner.prompt_for(style, u)

    @property
    def clips(self):
        return sum(len(b.prompts) for b in self.batches)


def _key(x: torch.Tensor) -> bytes:
    return ((x + 1) * 127.5).round().to(torch.uint8).numpy().tobytes()


def test_pool_serves_its_sources_clips_and_refreshes_a_few_per_step(photo_dir):
    src = Recording(photo_dir)
    pool = ClipPool(src, size=10, refresh=3, seed=1, chunk=3)
    known = {}
    batch = pool.sample(4)
    assert src.clips == 10 + 3  # filled once, then 3 new clips for the next steps
    for b in src.batches:
        for i in range(len(b.prompts)):
            known[_key(b.inputs[i])] = (_key(b.targets[i]), b.styles[i])
    for _ in range(5):
        for i in range(4):
            # Every clip served is one the source made, within uint8 rounding, with its own target.
            assert batch.inputs.shape[1:] == (2, 3, 32, 32) and batch.inputs.dtype == torch.float32
            tgt, style = known[_key(batch.inputs[i])]
            assert _key(batch.targets[i]) == tgt and batch.styles[i] == style
            # Worded afresh from the split's wordings of the clip's style.
            assert batch.prompts[i] in TEACHERS[style].train_prompts
        before = src.clips
        batch = pool.sample(4)
        assert src.clips == before + 3
        last = src.batches[-1]
        for i in range(3):
            known[_key(last.inputs[i])] = (_key(last.targets[i]), last.styles[i])
    # Values are the source's within half a uint8 step.
    first = src.batches[0]
    fresh = ClipPool(Recording(photo_dir), size=10, refresh=0, seed=1)
    fresh.sample(1)
    torch.testing.assert_close(fresh._inputs[0].float() / 127.5 - 1, first.inputs[0], atol=0.5 / 127.5 + 1e-6, rtol=0)


def test_new_clips_come_in_whole_chunks(photo_dir):
    src = Recording(photo_dir)
    pool = ClipPool(src, size=8, refresh=2, seed=3, chunk=5)
    made = []
    for _ in range(6):
        pool.sample(2)
        made.append(src.clips - 8)
    assert made == [0, 0, 5, 5, 10, 10]  # 2 due per step, made 5 at a time
    assert all(len(b.prompts) == 5 for b in src.batches[-2:])
    assert pool.state_dict()["owed"] == 2
    with pytest.raises(ValueError, match="chunk"):
        ClipPool(src, size=4, refresh=1, chunk=5)


def test_refresh_zero_keeps_a_fixed_set_and_draws_vary(photo_dir):
    src = Recording(photo_dir)
    pool = ClipPool(src, size=6, refresh=0, seed=2)
    seen = {_key(x) for _ in range(10) for x in pool.sample(3).inputs}
    assert src.clips == 6
    assert seen <= {_key(x) for x in src.batches[0].inputs} and len(seen) > 3


def test_bad_pool_settings_are_named(tmp_path, photo_dir):
    with pytest.raises(ValueError, match="refresh"):
        ClipPool(Recording(photo_dir), size=4, refresh=5)
    with pytest.raises(ValueError, match="pool_size"):
        train_config(tmp_path, batch_size=4, pool_size=2)
    with pytest.raises(ValueError, match="pool_refresh"):
        train_config(tmp_path, pool_size=8, pool_refresh=9)


def test_trainer_runs_from_a_pool_and_resumes_with_a_refilled_one(tmp_path, text_encoder):
    """A pooled run trains, checkpoints, and resumes (the pool refilled from the restored source)."""
    cfg = train_config(tmp_path, stage="denoiser", steps=4, frames=2, width=32, height=32, pool_size=4, pool_refresh=1,
                       model=tiny_model(width=32, height=32))
    source = make_train_source(cfg, 0, "cpu")
    assert isinstance(source, ClipPool) and isinstance(source.source, SyntheticClips)
    first = Trainer(cfg, text_encoder=text_encoder)
    first.train(stop_at=2)
    state = first.source.state_dict()
    resumed = Trainer(train_config(tmp_path, stage="denoiser", steps=4, frames=2, width=32, height=32, pool_size=4,
                                   pool_refresh=1, model=tiny_model(width=32, height=32), resume=True),
                      text_encoder=text_encoder)
    assert resumed.step == 2 and not resumed.source.filled
    assert torch.equal(resumed.source.generator.get_state(), state["generator"])
    summary = resumed.train()
    assert summary["step"] == 4 and np.isfinite(summary["loss"])

"""FrameTransfer: the daemon's pixel conversions, now on the model's device, are the numpy ones
it always used (x / 127.5 - 1 in; clip((y + 1) * 127.5 + 0.5) truncated to uint8 out), padding
repeats the edge pixels, and non-finite outputs are flagged per frame."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from morphcam.daemon.frame_transfer import FrameTransfer


def test_upload_is_the_float_conversion_with_edge_padding():
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in ((32, 48), (30, 45), (32, 40))]
    t = FrameTransfer(torch.device("cpu"), 48, 32)
    got = t.upload(images)
    assert got.shape == (3, 1, 3, 32, 48) and got.dtype == torch.float32
    for img, x in zip(images, got[:, 0]):
        want = torch.from_numpy(img.astype(np.float32) / np.float32(127.5) - np.float32(1.0)).permute(2, 0, 1)
        h, w = img.shape[:2]
        want = F.pad(want[None], (0, 48 - w, 0, 32 - h), mode="replicate")[0]
        assert torch.equal(x, want)
    assert t.upload(images[:1]).shape[0] == 1  # smaller batches reuse the buffers


def test_download_rounds_like_numpy_and_flags_non_finite_frames():
    y = torch.rand(3, 1, 3, 16, 24) * 2.4 - 1.2  # beyond [-1, 1]: clipped
    y[1, 0, 2, 3, 4] = float("nan")
    t = FrameTransfer(torch.device("cpu"), 24, 16)
    pixels, finite = t.download(y.to(torch.bfloat16))
    assert finite.tolist() == [True, False, True]
    ref = y.to(torch.bfloat16).float()[[0, 2], 0].permute(0, 2, 3, 1).numpy()  # the finite frames
    want = np.clip((ref + 1.0) * 127.5 + 0.5, 0, 255).astype(np.uint8)
    assert pixels.dtype == np.uint8 and pixels.shape == (3, 16, 24, 3)
    assert np.array_equal(pixels[[0, 2]], want)

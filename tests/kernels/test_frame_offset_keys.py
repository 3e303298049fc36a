"""The frame-offset keys kernel against its reference: fresh random inputs at several shapes,
slots in any frame order (a wrapped ring) and pinned sinks sharing frame index 0."""
from __future__ import annotations

import pytest
import torch

from morphcam.kernels.frame_offset_keys import frame_offset_keys, frame_offset_keys_ref
from morphcam.kernels import dispatch
from morphcam.model import ops


@pytest.mark.parametrize("heads,slots,n,dh,positions", [(2, 3, 5, 16, 4), (4, 6, 144, 64, 8), (1, 2, 7, 24, 3)])
def test_frame_offset_keys_matches_reference(heads, slots, n, dh, positions, device, rel_error):
    g = torch.Generator().manual_seed(heads * 100 + slots)
    k = torch.randn(heads, slots * n, dh, generator=g).to(device)
    emb = torch.randn(positions, heads, dh, generator=g).to(device)
    # A wrapped ring: slots out of frame order, two sinks at index 0.
    idx = torch.tensor([0, 0, *torch.randperm(positions, generator=g).tolist()][:slots], dtype=torch.long).to(device)
    out = frame_offset_keys(k, emb, idx)
    ref = frame_offset_keys_ref(k.double(), emb.double(), idx)
    assert out.shape == (heads, slots * n, dh)
    assert rel_error(out, ref) < 1e-6
    # Every key of a slot moved by exactly its frame's offset.
    s = 1 if slots > 1 else 0
    torch.testing.assert_close(out[:, s * n:(s + 1) * n] - k[:, s * n:(s + 1) * n],
                               emb[idx[s]][:, None, :].expand(heads, n, dh), rtol=1e-5, atol=1e-5)


def test_ops_routes_frame_offset_keys(device, monkeypatch):
    calls = []
    real = dispatch.kernel
    monkeypatch.setattr(dispatch, "kernel", lambda name: calls.append(name) or real(name))
    k, emb, idx = torch.randn(2, 3 * 4, 8), torch.randn(5, 2, 8), torch.tensor([0, 4, 2])
    want = frame_offset_keys_ref(k, emb, idx)
    k, emb, idx = k.to(device), emb.to(device), idx.to(device)
    with dispatch.force("torch"):
        torch.testing.assert_close(ops.frame_offset_keys(k, emb, idx), want.to(device))
    with torch.no_grad(), dispatch.force("triton"):
        torch.testing.assert_close(ops.frame_offset_keys(k, emb, idx), want.to(device), rtol=1e-5, atol=1e-5)
    assert calls == ["frame_offset_keys"]  # the torch leg called no kernel, the Triton leg this one

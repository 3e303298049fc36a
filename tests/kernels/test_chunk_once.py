"""Work done once per chunk instead of once per DiT forward, with LongLive's settings at tiny sizes
(4 Euler steps plus the cache-refresh pass, 512 text tokens): the refresh pass stops once the last
layer's K/V are in the caches, and the prompt's cross-attention keys and values are computed once
for all five forwards. Chunks and caches stay bit for bit what the per-forward computation gives,
on the torch and the Triton paths, for per-session caches, pool lanes and a context that writes
K/V in ``attend``; the skipped work is counted with hooks."""
from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from longlive_shape import ChosenAttention, Chunk, longlive_config  # noqa: E402

from helpers.models import randomized  # noqa: E402
from morphcam.kernels import dispatch  # noqa: E402
from morphcam.model.attention import BlockCausalContext  # noqa: E402
from morphcam.model.cache_batch import LaneCaches, LanePool  # noqa: E402
from morphcam.model.generator import StreamGenerator  # noqa: E402
from morphcam.model.kv_cache import KVRingCache  # noqa: E402
from morphcam.model.sampler import euler_step, noise_latent  # noqa: E402
from morphcam.model.text import TextEncoder  # noqa: E402

CHUNKS = 6  # sinks, three chunks filling the ring, then the ring wraps
# Compiled Triton kernels need CUDA tensors; without a GPU they run under the interpreter on the CPU.
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.fixture(scope="module")
def gen():
    cfg = longlive_config("tiny", name="test", ae_channels=(8, 8, 8), ae_decoder_channels=(8, 8, 8), latent_channels=4,
                          dim=32, n_layers=2, n_heads=2, ffn_dim=64, width=32, height=32, frame_positions=16)
    assert cfg.cache_refresh and len(cfg.sigmas) == 4 and cfg.text_tokens == 512
    assert cfg.cache_frames == cfg.sink_frames + 3 * cfg.frames_per_step  # the ring wraps in chunk 5
    return StreamGenerator(randomized(cfg).requires_grad_(False).to(DEVICE), TextEncoder(cfg.text_tokens))


@torch.inference_mode()
def per_forward_denoise(gen, z, inputs, caches):
    """``StreamGenerator.denoise`` computing everything per forward: each forward projects the
    prompt and its cross-attention K/V itself, and the refresh pass runs the whole network."""
    cfg, dit = gen.config, gen.model.dit
    b, f = z.shape[:2]
    sig = inputs.strength[:, None] * gen._sigma_table[None, :]
    caches.begin_chunk()
    context = caches.context()
    x = noise_latent(z, inputs.noise, sig[:, 0])
    for k in range(len(cfg.sigmas)):
        s_now, s_next = sig[:, k], sig[:, k + 1]
        sigma_bf, step_bf = s_now[:, None].expand(b, f), (s_now - s_next)[:, None].expand(b, f)
        v = dit(x, z, sigma_bf, step_bf, inputs.pooled, inputs.tokens, context)
        x = euler_step(x, v, s_now, s_next)
    zero = sig[:, -1:].expand(b, f)
    assert dit(x, z, zero, zero, inputs.pooled, inputs.tokens, context) is not None
    caches.store_inputs(x, z, zero, zero)
    caches.commit_device()
    return x


def _chunks(gen, attention, write_in_attend, seed=5):
    """A session stepped by ``denoise`` and one by ``per_forward_denoise``, from the same inputs."""
    once, each = Chunk(gen, attention, 32, 32, seed=seed), Chunk(gen, attention, 32, 32, seed=seed)
    each.denoise = lambda inputs, caches: per_forward_denoise(gen, each.z, inputs, caches)
    once.write_in_attend = each.write_in_attend = write_in_attend
    return once, each


def _assert_same_caches(a: KVRingCache, b: KVRingCache) -> None:
    for name in KVRingCache.buffer_specs(a.config, a.latent_hw, a.k.dtype):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert a.frames_seen == b.frames_seen


@pytest.mark.parametrize("backend", ["torch", "triton"])
@pytest.mark.parametrize("attention,write_in_attend", [("ring", False), ("math", True)])
def test_chunks_and_caches_as_computed_per_forward(gen, backend, attention, write_in_attend):
    """K/V written by QK-norm/RoPE (``ring_slots``) or inside ``attend`` (``ring_slots`` None)."""
    once, each = _chunks(gen, attention, write_in_attend)
    assert (once.caches().context().ring_slots(0) is None) == write_in_attend
    with dispatch.force(backend):
        for i in range(CHUNKS):
            out = once.run()
            assert torch.equal(out, each.run()), f"chunk {i}"
            _assert_same_caches(once.session.cache, each.session.cache)
    assert out.abs().mean() > 1e-2 and once.session.cache.frames_seen == CHUNKS * gen.config.frames_per_step


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_lanes_as_computed_per_forward(gen, backend):
    """Two sessions in lanes of one pool (the daemon's batches): K/V written through ``LaneSlots``."""
    cfg = gen.config
    latent = cfg.latent_size(32, 32)
    runs = []
    with dispatch.force(backend):
        for denoise in (gen.denoise, lambda z, inputs, caches: per_forward_denoise(gen, z, inputs, caches)):
            pool = LanePool(cfg, latent, 3, DEVICE, torch.float32)
            pool.acquire()  # lane 0 taken: the sessions sit in lanes 1 and 2
            lanes = [pool.acquire() for _ in range(2)]
            sessions = [gen.open_session(32, 32, p, seed=i, cache=c) for i, ((_, c), p) in
                        enumerate(zip(lanes, ("comic", "a watercolor painting")))]
            g = torch.Generator().manual_seed(1)
            z = torch.randn(2, cfg.frames_per_step, cfg.latent_channels, *latent, generator=g).to(DEVICE)
            frames = torch.zeros(2, cfg.frames_per_step, 3, 32, 32, device=DEVICE)
            outs = []
            for _ in range(CHUNKS):
                inputs = gen.prepare(sessions, frames)
                with torch.inference_mode():
                    inputs.lanes.copy_(torch.tensor([lane for lane, _ in lanes]))
                outs.append(denoise(z, inputs, LaneCaches(pool, inputs.lanes)))
                gen.finish(sessions)
            runs.append((torch.stack(outs), pool))
    (once, pool_once), (each, pool_each) = runs
    assert torch.equal(once, each)
    for name, buf in pool_once.buffers.items():
        assert torch.equal(buf, pool_each.buffers[name]), name


class _Counts:
    """Calls of the modules that show which work a chunk did, by forward hooks."""

    def __init__(self, dit) -> None:
        self.calls: Counter[str] = Counter()
        last = dit.blocks[-1]
        watched = {"patch_out": dit.patch_out, "text_proj": dit.text_proj, "first.ffn_out": dit.blocks[0].ffn_out,
                   **{f"last.{n}": getattr(last, n) for n in ("qkv", "attn_out", "cross_q", "cross_out", "ffn_out")},
                   **{f"cross_kv.{i}": blk.cross_kv for i, blk in enumerate(dit.blocks)}}
        self.handles = [m.register_forward_hook(lambda m, a, o, n=n: self.calls.update([n]))
                        for n, m in watched.items()]

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


@pytest.mark.parametrize("write_in_attend", [False, True])
def test_refresh_pass_and_prompt_kv_skip_the_work(gen, write_in_attend, monkeypatch):
    """One chunk: 5 forwards, the 5th (refresh) stops at the last layer's K/V; the prompt is
    projected once and each block's cross K/V computed once. The last layer's attention still
    runs in the refresh pass where ``attend`` writes the K/V, and only there."""
    attends: Counter[int] = Counter()
    plain = ChosenAttention._attend

    def counted(ctx, layer, q, k, v, frame_emb):
        attends[layer] += 1
        return plain(ctx, layer, q, k, v, frame_emb)

    monkeypatch.setattr(ChosenAttention, "_attend", counted)
    dit = gen.model.dit
    once, each = _chunks(gen, "ring", write_in_attend)
    n_layers = len(dit.blocks)
    for chunk, per_forward in ((once, False), (each, True)):
        counts = _Counts(dit)
        attends.clear()
        try:
            chunk.run()
        finally:
            counts.remove()
        c = counts.calls
        full = 5 if per_forward else 4  # forwards that run the last block and the output layer
        assert c["patch_out"] == full and c["first.ffn_out"] == 5 and c["last.qkv"] == 5
        assert all(c[f"last.{n}"] == full for n in ("attn_out", "cross_q", "cross_out", "ffn_out")), c
        assert c["text_proj"] == (5 if per_forward else 1)
        assert all(c[f"cross_kv.{i}"] == c["text_proj"] for i in range(n_layers)), c
        assert attends[0] == 5 and attends[n_layers - 1] == (5 if per_forward or write_in_attend else 4)


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_forward_arguments(gen, backend):
    """``prompt_kv`` gives the forward's own result exactly; ``kv_only`` records every layer's K/V
    (a ``BlockCausalContext`` with ``record``, as KV-recache runs) and returns None."""
    cfg, dit = gen.config, gen.model.dit
    g = torch.Generator().manual_seed(2)
    b, t, hw = 2, 2 * cfg.frames_per_step, cfg.latent_size(32, 32)
    x, cond = torch.randn(2, b, t, cfg.latent_channels, *hw, generator=g).to(DEVICE).unbind(0)
    sigma, step = torch.rand(2, b, t, generator=g).to(DEVICE).unbind(0)
    pooled = torch.randn(b, cfg.text_dim, generator=g).to(DEVICE)
    tokens = torch.randn(b, cfg.text_tokens, cfg.text_dim, generator=g).to(DEVICE)
    n = (hw[0] // cfg.patch_size) * (hw[1] // cfg.patch_size)
    recorded = [[], []]

    def context(i):
        return BlockCausalContext(cfg, t, n, DEVICE, record=lambda layer, k, v: recorded[i].append((layer, k, v)))

    with torch.no_grad(), dispatch.force(backend):
        want = dit(x, cond, sigma, step, pooled, tokens, context(0))
        kv = dit.prompt_kv(tokens)
        assert len(kv) == cfg.n_layers and kv[0][0].shape == (b, cfg.n_heads, cfg.text_tokens, cfg.head_dim)
        assert torch.equal(dit(x, cond, sigma, step, pooled, tokens, context(1), prompt_kv=kv), want)
        recorded[1].clear()
        assert dit(x, cond, sigma, step, pooled, tokens, context(1), prompt_kv=kv, kv_only=True) is None
    assert [r[0] for r in recorded[1]] == list(range(cfg.n_layers))
    for (_, k0, v0), (_, k1, v1) in zip(recorded[0], recorded[1]):
        assert torch.equal(k0, k1) and torch.equal(v0, v1)


def test_recache_keeps_the_same_kv(gen):
    """KV-recache (a ``kv_only`` pass) writes the K/V a whole forward writes."""
    sessions = [gen.open_session(32, 32, "comic", seed=3) for _ in range(2)]
    frames = torch.zeros(1, gen.config.frames_per_step, 3, 32, 32, device=DEVICE)
    for _ in range(2):
        outs = [gen.step([s], frames) for s in sessions]
        assert torch.equal(*outs)
    full = sessions[1]
    gen.set_prompt(sessions[0], "a watercolor painting", mode="recache")
    # The same re-run as a whole forward: the prompt cut, then recache with the output computed.
    from morphcam.model import dit as dit_module

    forward = dit_module.CausalDiT.forward

    def whole(self, *args, kv_only=False, **kw):
        out = forward(self, *args, **kw)
        return None if kv_only else out

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(dit_module.CausalDiT, "forward", whole)
        gen.set_prompt(full, "a watercolor painting", mode="recache")
    _assert_same_caches(sessions[0].cache, full.cache)
    assert torch.equal(*(gen.step([s], frames) for s in sessions))

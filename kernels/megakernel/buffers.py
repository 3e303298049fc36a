"""Every tensor one mega-kernel step reads or writes, described by one dataclass.

``Weights`` stacks the denoiser's per-layer parameters once (a copy per executor: the mega-kernel
indexes layers by offset). ``StepBuffers`` holds the step's activations, scratch, per-step
modulation tables and views of the session's KV ring; both executors (the torch interpreter
and the Triton kernel) read and write exactly these, so a diff compares them buffer by buffer.

Shapes (M = frames * N rows, D = dim, A = H * Dh the attention width, H heads, Dh = head_dim,
S = slots, L layers, Lt = text tokens, P = frame_positions, T = frames, Fd = ffn_dim, Po =
patch_out features)::

    x (M, D)   h (M, D)   qkv (M, 3A)   q (H, M, Dh)   attn (M, A)   cq (M, A)   ckv (Lt, 2A)
    ffn (M, Fd)   out (M, Po)   part_acc (S, H, M, Dh) fp32   part_ml (2, S, H, M) fp32
    norm_ac (L + 1, 3, 2, T, D): per norm and frame, y = LN(x) * a + c
    gates (L, 2, T, D)   text (Lt, D)   cos, sin (N, Dh / 2)
    ring_k, ring_v (lanes, L, H, S * N, Dh)   frame_idx (lanes, S) long   token_valid (lanes, S, N) uint8
    slot_idx (lanes, T) long   lane (1,) long: which lane of the ring buffers this step uses

``h`` holds the norms' output only in the ``fuse_norms=False`` layout; by default the matmuls that
read a norm compute it from ``x`` and ``h`` stays as allocated.

The ring fields view a session's ``KVRingCache`` (one lane) or a ``LanePool`` (the lane read on
the device, so one captured graph serves every lane).
"""
from __future__ import annotations

from dataclasses import dataclass, fields

import torch

from .program import Shape


@dataclass
class Weights:
    """The denoiser's block parameters stacked over layers (L first), plus patch_out.

    w_* are nn.Linear weights (out, in); b_* their biases (out,).
    """

    w_qkv: torch.Tensor  # (L, 3A, D)
    b_qkv: torch.Tensor  # (L, 3A)
    q_norm: torch.Tensor  # (L, Dh)
    k_norm: torch.Tensor  # (L, Dh)
    frame_emb: torch.Tensor  # (L, P, H, Dh)
    w_o: torch.Tensor  # (L, D, A)
    b_o: torch.Tensor  # (L, D)
    w_cq: torch.Tensor  # (L, A, D)
    b_cq: torch.Tensor  # (L, A)
    w_ckv: torch.Tensor  # (L, 2A, D)
    b_ckv: torch.Tensor  # (L, 2A)
    w_co: torch.Tensor  # (L, D, A)
    b_co: torch.Tensor  # (L, D)
    w_f1: torch.Tensor  # (L, Fd, D)
    b_f1: torch.Tensor  # (L, Fd)
    w_f2: torch.Tensor  # (L, D, Fd)
    b_f2: torch.Tensor  # (L, D)
    w_out: torch.Tensor  # (Po, D)
    b_out: torch.Tensor  # (Po,)

    @classmethod
    def from_dit(cls, dit) -> "Weights":
        """Stack a ``CausalDiT``'s parameters (copies, contiguous, in the model's dtype)."""
        blocks = list(dit.blocks)

        def stack(get):
            return torch.stack([get(b).detach() for b in blocks]).contiguous()

        return cls(
            w_qkv=stack(lambda b: b.qkv.weight), b_qkv=stack(lambda b: b.qkv.bias),
            q_norm=stack(lambda b: b.q_norm), k_norm=stack(lambda b: b.k_norm),
            frame_emb=stack(lambda b: b.frame_emb),
            w_o=stack(lambda b: b.attn_out.weight), b_o=stack(lambda b: b.attn_out.bias),
            w_cq=stack(lambda b: b.cross_q.weight), b_cq=stack(lambda b: b.cross_q.bias),
            w_ckv=stack(lambda b: b.cross_kv.weight), b_ckv=stack(lambda b: b.cross_kv.bias),
            w_co=stack(lambda b: b.cross_out.weight), b_co=stack(lambda b: b.cross_out.bias),
            w_f1=stack(lambda b: b.ffn_in.weight), b_f1=stack(lambda b: b.ffn_in.bias),
            w_f2=stack(lambda b: b.ffn_out.weight), b_f2=stack(lambda b: b.ffn_out.bias),
            w_out=dit.patch_out.weight.detach().contiguous(), b_out=dit.patch_out.bias.detach().contiguous(),
        )


@dataclass
class StepBuffers:
    """One step's activations, scratch, modulation tables and ring views (see the module doc)."""

    x: torch.Tensor
    h: torch.Tensor
    qkv: torch.Tensor
    q: torch.Tensor
    attn: torch.Tensor
    cq: torch.Tensor
    ckv: torch.Tensor
    ffn: torch.Tensor
    out: torch.Tensor
    part_acc: torch.Tensor
    part_ml: torch.Tensor
    norm_ac: torch.Tensor
    gates: torch.Tensor
    text: torch.Tensor
    cos: torch.Tensor
    sin: torch.Tensor
    ring_k: torch.Tensor
    ring_v: torch.Tensor
    frame_idx: torch.Tensor
    token_valid: torch.Tensor
    slot_idx: torch.Tensor
    lane: torch.Tensor

    # The buffers a step writes (the diff compares these; the rest are inputs).
    WRITTEN = ("x", "h", "qkv", "q", "attn", "cq", "ckv", "ffn", "out", "part_acc", "part_ml", "ring_k", "ring_v")

    @classmethod
    def allocate(cls, shape: Shape, device, dtype) -> "StepBuffers":
        """Fresh buffers (ring views left as empty placeholders until ``bind_cache``)."""
        s = shape
        m, d, h, dh, a = s.rows, s.dim, s.n_heads, s.head_dim, s.attn_width
        kw = dict(device=device, dtype=dtype)
        f32 = dict(device=device, dtype=torch.float32)
        ring = torch.zeros(1, s.n_layers, h, s.slots * s.tokens_per_frame, dh, **kw)
        return cls(
            x=torch.zeros(m, d, **kw), h=torch.zeros(m, d, **kw), qkv=torch.zeros(m, 3 * a, **kw),
            q=torch.zeros(h, m, dh, **kw), attn=torch.zeros(m, a, **kw), cq=torch.zeros(m, a, **kw),
            ckv=torch.zeros(s.text_tokens, 2 * a, **kw), ffn=torch.zeros(m, s.ffn_dim, **kw),
            out=torch.zeros(m, s.out_dim, **kw),
            part_acc=torch.zeros(s.slots, h, m, dh, **f32), part_ml=torch.zeros(2, s.slots, h, m, **f32),
            norm_ac=torch.zeros(s.n_layers + 1, 3, 2, s.frames, d, **kw), gates=torch.zeros(s.n_layers, 2, s.frames, d, **kw),
            text=torch.zeros(s.text_tokens, d, **kw),
            cos=torch.zeros(s.tokens_per_frame, dh // 2, **kw), sin=torch.zeros(s.tokens_per_frame, dh // 2, **kw),
            ring_k=ring, ring_v=ring.clone(),
            frame_idx=torch.zeros(1, s.slots, device=device, dtype=torch.long),
            token_valid=torch.zeros(1, s.slots, s.tokens_per_frame, device=device, dtype=torch.uint8),
            slot_idx=torch.zeros(1, s.frames, device=device, dtype=torch.long),
            lane=torch.zeros(1, device=device, dtype=torch.long),
        )

    def bind_cache(self, cache) -> None:
        """Point the ring fields at a ``KVRingCache``'s buffers (views: written in place), lane 0."""
        self.ring_k, self.ring_v = cache.k[None], cache.v[None]
        self.frame_idx, self.slot_idx = cache.frame_idx[None], cache.slot_idx[None]
        self.token_valid = cache.token_valid.view(torch.uint8)[None]
        # A fresh zero, never the pool's lane tensor a previous bind_pool left here.
        self.lane = torch.zeros(1, device=cache.k.device, dtype=torch.long)

    def bind_pool(self, pool, lanes: torch.Tensor) -> None:
        """Point the ring fields at a ``LanePool``'s buffers; ``lanes`` (1,) long names the lane on the
        device (kept by reference, so a captured graph follows whatever lane it holds at replay)."""
        self.ring_k, self.ring_v = pool.k, pool.v
        self.frame_idx, self.slot_idx = pool.frame_idx, pool.slot_idx
        self.token_valid = pool.token_valid.view(torch.uint8)
        self.lane = lanes

    def named(self) -> dict[str, torch.Tensor]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def clone(self) -> "StepBuffers":
        """A deep copy (the diff tool runs two executors from the same starting state)."""
        return StepBuffers(**{k: v.clone() for k, v in self.named().items()})


def prologue(dit, bufs: StepBuffers, x, cond, sigma, step, pooled, tokens, chunk_offset: int = 0) -> None:
    """The per-step work outside the instruction list, in torch: patch embedding, the adaLN
    modulation tables of every layer, the projected prompt tokens and the RoPE tables.

    x, cond: (1, T, C, h, w); sigma, step: (1, T); pooled: (1, text_dim); tokens: (1, Lt, text_dim).
    Mirrors ``CausalDiT.forward`` up to the blocks.
    """
    from morphcam.model.dit import timestep_features

    cfg = dit.config
    t, (h, w) = x.shape[1], x.shape[-2:]
    p = cfg.patch_size
    tok = dit.patch_in(dit._patchify(torch.cat((x, cond), dim=2)))
    places = (torch.arange(t, device=x.device) + chunk_offset) % cfg.frames_per_step
    tok = tok + dit.chunk_pos[places][None, :, None, :]
    bufs.x.copy_(tok.reshape(-1, cfg.dim))
    dt = tok.dtype
    c = dit.sigma_mlp(timestep_features(sigma).to(dt)) + dit.step_mlp(timestep_features(step).to(dt))
    c = c + dit.pooled_proj(pooled)[:, None, :]  # (1, T, D)
    mod = dit.adaln(c).unflatten(-1, (6, -1))[0]  # (T, 6, D)
    per_layer = mod[None] + torch.stack([b.modulation for b in dit.blocks])[:, None]  # (L, T, 6, D)
    shift1, scale1, gate1, shift2, scale2, gate2 = per_layer.unbind(2)
    nl = cfg.n_layers
    bufs.norm_ac[:nl, 0, 0] = 1 + scale1
    bufs.norm_ac[:nl, 0, 1] = shift1
    bufs.norm_ac[:nl, 1, 0] = torch.stack([b.cross_norm.weight for b in dit.blocks])[:, None]
    bufs.norm_ac[:nl, 1, 1] = torch.stack([b.cross_norm.bias for b in dit.blocks])[:, None]
    bufs.norm_ac[:nl, 2, 0] = 1 + scale2
    bufs.norm_ac[:nl, 2, 1] = shift2
    shift, scale = dit.final_adaln(c)[0].chunk(2, dim=-1)  # (T, D) each
    bufs.norm_ac[nl, 0, 0] = 1 + scale
    bufs.norm_ac[nl, 0, 1] = shift
    bufs.gates[:, 0] = gate1
    bufs.gates[:, 1] = gate2
    bufs.text.copy_(dit.text_proj(tokens)[0])
    cos, sin = dit.rope_tables(h // p, w // p, tok)
    bufs.cos.copy_(cos)
    bufs.sin.copy_(sin)


def epilogue(dit, bufs: StepBuffers, frames: int, h: int, w: int) -> torch.Tensor:
    """patch_out's rows back to latents: (M, Po) -> (1, T, C, h, w)."""
    return dit._unpatchify(bufs.out.view(1, frames, -1, bufs.out.shape[-1]), h, w)

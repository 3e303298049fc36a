"""The denoiser: one DiT class for every preset, for clip training and for streaming.

Tokens are 2x2 patches of the noisy output latent with the input frame's latent concatenated
channel-wise (video-to-video conditioning). Each frame gets its own adaLN modulation from its
noise level, its step size (for shortcut-distilled models) and the pooled prompt; a single
shared modulation MLP plus a learned per-block table keeps the parameter count small
(adaLN-single, as PixArt-alpha). Self-attention uses QK-norm, 2D RoPE over the patch grid and
a bounded frame index; which frames it sees is the ``AttentionContext``'s business, so the
same module runs a block-causal clip forward and a KV-cached stream step.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from . import ops
from .attention import AttentionContext
from .config import ModelConfig
from .fp8 import FP8Linear, QuantizedRows


def timestep_features(t: torch.Tensor, dim: int = 256) -> torch.Tensor:
    """Sinusoidal features of values in [0, 1] (noise level or step size). t: (...) -> (..., dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    ang = (t.float() * 1000.0)[..., None] * freqs
    return torch.cat((ang.cos(), ang.sin()), dim=-1)


class DiTBlock(nn.Module):
    def __init__(self, config: ModelConfig, layer: int) -> None:
        super().__init__()
        d, h, a = config.dim, config.n_heads, config.attn_dim  # a == d unless heads were pruned
        self.layer, self.n_heads, self.eps = layer, h, config.norm_eps
        self.modulation = nn.Parameter(torch.zeros(6, d))  # per-block offset to the shared adaLN
        self.qkv = nn.Linear(d, 3 * a)
        self.q_norm = nn.Parameter(torch.ones(config.head_dim))
        self.k_norm = nn.Parameter(torch.ones(config.head_dim))
        self.frame_emb = nn.Parameter(torch.zeros(config.frame_positions, h, config.head_dim))
        self.attn_out = nn.Linear(a, d)
        self.cross_norm = nn.LayerNorm(d, eps=config.norm_eps)
        self.cross_q = nn.Linear(d, a)
        self.cross_kv = nn.Linear(d, 2 * a)
        self.cross_out = nn.Linear(a, d)
        self.ffn_in = nn.Linear(d, config.ffn_dim)
        self.ffn_out = nn.Linear(config.ffn_dim, d)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        """(B, L, D) -> (B, H, L, Dh)."""
        return x.unflatten(-1, (self.n_heads, -1)).transpose(1, 2)

    def prompt_kv(self, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Cross-attention keys and values of the projected prompt tokens.
        text: (B, L, D) -> k, v: (B, H, L, Dh) each."""
        ck, cv = self.cross_kv(text).chunk(2, dim=-1)
        return self._heads(ck), self._heads(cv)

    def forward(
        self,
        x: torch.Tensor,
        mod: torch.Tensor,
        text: torch.Tensor | None,
        rope: tuple[torch.Tensor, torch.Tensor],
        context: AttentionContext,
        cross: tuple[torch.Tensor, torch.Tensor] | None = None,
        kv_only: bool = False,
        pending: tuple[torch.Tensor, torch.Tensor] | None = None,
        defer: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]] | None:
        """x: (B, T, N, D); mod: (B, T, 6, D); text: (B, L, D) projected prompt tokens;
        rope: cos/sin (N, Dh/2). ``cross``: this block's ``prompt_kv`` of the prompt, computed
        once for several forwards (then ``text`` is unused); None computes it from ``text``.
        ``kv_only``: only put this layer's K/V where the context keeps them (a pass whose output
        nobody reads) and return None. Returns (B, T, N, D).

        ``pending`` (y, gate): the previous block's FFN output and gate, not yet added to x; the
        add runs with this block's input norm (``ops.residual_norm``). ``defer``: leave this
        block's own FFN residual to the next block the same way, returning (x, (y, gate))."""
        b, t, n, d = x.shape
        shift1, scale1, gate1, shift2, scale2, gate2 = (mod + self.modulation).unsqueeze(3).unbind(2)

        if pending is None:
            h = ops.layer_norm_modulate(x, shift1, scale1, self.eps)
        else:  # the previous block's FFN residual, added with this norm (one kernel on the Triton path)
            x, h = self._residual_norm_into(self.qkv, (b, t, n), x, *pending, shift1, scale1)
        q, k, v = self.qkv(h).view(b, t * n, 3, -1).unbind(2)
        q, k, v = self._heads(q), self._heads(k), self._heads(v)
        # QK-norm and RoPE per frame; in a stream step the same pass writes K/V into the caches.
        slots = context.ring_slots(self.layer)
        q, k = ops.qk_norm_rope(q, k, v, self.q_norm, self.k_norm, *rope, self.eps, slots)
        if kv_only:
            if slots is None:  # the context takes the K/V in attend (records or writes them there)
                context.attend(self.layer, q, k, v, self.frame_emb)
            return None
        a = context.attend(self.layer, q, k, v, self.frame_emb)
        # Each residual add runs with the norm that reads its result (one kernel on the Triton path).
        y = self.attn_out(a.transpose(1, 2).reshape(b, t, n, -1))
        x, h = self._residual_norm_into(self.cross_q, (b, t * n), x, y, gate1, self.cross_norm.bias,
                                        self.cross_norm.weight, affine=True)

        ck, cv = self.prompt_kv(text) if cross is None else cross
        c = ops.attention(self._heads(self.cross_q(h)), ck, cv)
        y = self.cross_out(c.transpose(1, 2).reshape(b, t, n, -1))
        x, h = self._residual_norm_into(self.ffn_in, (b, t, n), x, y, None, shift2, scale2)  # a plain add: no gate
        if defer:
            return x, (self._ffn(h), gate2)
        return ops.gated_residual(x, self._ffn(h), gate2)

    def _residual_norm_into(
        self,
        linear: nn.Module,
        lead: tuple[int, ...],
        x: torch.Tensor,
        y: torch.Tensor,
        gate: torch.Tensor | None,
        shift: torch.Tensor,
        scale: torch.Tensor,
        affine: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | QuantizedRows]:
        """``ops.residual_norm`` of x, y: (B, T, N, D) whose h is read by ``linear``: h as (*lead, D)
        (lead: B, T, N regrouped), or, for an ``FP8Linear``, its ``QuantizedRows`` written by the norm
        itself (no h in the model's dtype written and read back by a separate quantization)."""
        if not isinstance(linear, FP8Linear):
            x, h = ops.residual_norm(x, y, gate, shift, scale, self.eps, affine)
            return x, h.view(*lead, h.shape[-1])
        x, (q, row_scale) = ops.residual_norm(x, y, gate, shift, scale, self.eps, affine, quantize=True)
        return x, QuantizedRows(q, row_scale, lead)

    def _ffn(self, h: torch.Tensor | QuantizedRows) -> torch.Tensor:
        if isinstance(self.ffn_in, FP8Linear):  # the GELU runs in the quantization of ffn_out's input
            return self.ffn_out(self.ffn_in.gelu_quantized(h))
        # GELU fused into the GEMM on CUDA
        return self.ffn_out(ops.linear_gelu(h, self.ffn_in.weight, self.ffn_in.bias))


class CausalDiT(nn.Module):
    """Predicts the flow-matching velocity (noise - clean) of each frame's latent."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        d = config.dim
        self.patch_in = nn.Linear(config.patch_dim, d)
        self.chunk_pos = nn.Parameter(torch.zeros(config.frame_positions, d))  # frame's place in its chunk
        self.sigma_mlp = nn.Sequential(nn.Linear(256, d), nn.SiLU(), nn.Linear(d, d))
        self.step_mlp = nn.Sequential(nn.Linear(256, d), nn.SiLU(), nn.Linear(d, d))
        self.pooled_proj = nn.Linear(config.text_dim, d)
        self.text_proj = nn.Sequential(nn.LayerNorm(config.text_dim), nn.Linear(config.text_dim, d))
        self.adaln = nn.Sequential(nn.SiLU(), nn.Linear(d, 6 * d))
        self.blocks = nn.ModuleList(DiTBlock(config, i) for i in range(config.n_layers))
        self.final_adaln = nn.Sequential(nn.SiLU(), nn.Linear(d, 2 * d))
        self.patch_out = nn.Linear(d, config.patch_size**2 * config.latent_channels)
        self._rope: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """DiT initialisation: Xavier linears, zero gates and output (each block starts as identity)."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        for blk in self.blocks:
            nn.init.normal_(blk.frame_emb, std=0.02)
        nn.init.normal_(self.chunk_pos, std=0.02)
        for lin in (self.adaln[-1], self.final_adaln[-1], self.patch_out):
            nn.init.zeros_(lin.weight)
            nn.init.zeros_(lin.bias)

    def rope_tables(self, grid_h: int, grid_w: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        key = (grid_h, grid_w, like.device, like.dtype)
        if key not in self._rope:  # a few frame sizes per process; built once each
            self._rope[key] = ops.rope_2d_tables(
                grid_h, grid_w, self.config.head_dim, self.config.rope_base, like.device, like.dtype
            )
        return self._rope[key]

    def _patchify(self, z: torch.Tensor) -> torch.Tensor:
        """(B, T, C, h, w) -> (B, T, N, C * p * p), row-major patches."""
        b, t, c, h, w = z.shape
        p = self.config.patch_size
        z = z.view(b, t, c, h // p, p, w // p, p).permute(0, 1, 3, 5, 2, 4, 6)
        return z.reshape(b, t, (h // p) * (w // p), c * p * p)

    def _unpatchify(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """(B, T, N, C * p * p) -> (B, T, C, h, w)."""
        b, t = x.shape[:2]
        p, c = self.config.patch_size, self.config.latent_channels
        x = x.view(b, t, h // p, w // p, c, p, p).permute(0, 1, 4, 2, 5, 3, 6)
        return x.reshape(b, t, c, h, w)

    def prompt_kv(self, tokens: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Every block's cross-attention keys and values of the prompt tokens (B, text_tokens,
        text_dim): one (k, v) pair per block, (B, H, text_tokens, Dh) each. They depend on the
        prompt alone, so a stream step computes them once for all the forwards of its chunk
        (``forward``'s ``prompt_kv``)."""
        text = self.text_proj(tokens)
        return [blk.prompt_kv(text) for blk in self.blocks]

    def forward(
        self,
        x: torch.Tensor,
        cond: torch.Tensor,
        sigma: torch.Tensor,
        step: torch.Tensor,
        pooled: torch.Tensor,
        tokens: torch.Tensor,
        context: AttentionContext,
        chunk_offset: int = 0,
        *,
        prompt_kv: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
        kv_only: bool = False,
    ) -> torch.Tensor | None:
        """Velocity for every frame.

        x: (B, T, C, h, w) noisy latents; cond: (B, T, C, h, w) input-frame latents;
        sigma, step: (B, T) noise level and step size per frame; pooled: (B, text_dim);
        tokens: (B, text_tokens, text_dim); context: which frames attention sees.
        ``chunk_offset``: place in its chunk of frame 0 (frames are consecutive stream frames).
        ``prompt_kv``: ``self.prompt_kv(tokens)``, computed once for several forwards with the
        same prompt (then ``tokens`` is unused); None computes it here.
        ``kv_only``: the pass only fills the context's caches with every layer's K/V (a
        cache-refresh pass): the last block stops once its K/V are there, and the result is None.
        Returns (B, T, C, h, w).
        """
        b, t, _, h, w = x.shape
        p = self.config.patch_size
        tok = self.patch_in(self._patchify(torch.cat((x, cond), dim=2)))
        places = (torch.arange(t, device=x.device) + chunk_offset) % self.config.frames_per_step
        tok = tok + self.chunk_pos[places][None, :, None, :]

        dt = tok.dtype
        c = self.sigma_mlp(timestep_features(sigma).to(dt)) + self.step_mlp(timestep_features(step).to(dt))
        c = c + self.pooled_proj(pooled)[:, None, :]  # (B, T, D)
        mod = self.adaln(c).unflatten(-1, (6, -1))  # (B, T, 6, D)
        text = self.text_proj(tokens) if prompt_kv is None else None
        rope = self.rope_tables(h // p, w // p, tok)
        last = len(self.blocks) - 1
        # Each block's FFN residual is added by the next norm that reads it (the next block's,
        # finally the output norm): one kernel on the Triton path, the same ops on the torch path.
        pending = None
        for i, blk in enumerate(self.blocks):
            if kv_only and i == last:
                blk(tok, mod, text, rope, context, kv_only=True, pending=pending)
                return None
            cross = None if prompt_kv is None else prompt_kv[i]
            tok, pending = blk(tok, mod, text, rope, context, cross=cross, pending=pending, defer=True)
        shift, scale = self.final_adaln(c).unsqueeze(2).chunk(2, dim=-1)
        _, out = ops.residual_norm(tok, *pending, shift, scale, self.config.norm_eps)
        return self._unpatchify(self.patch_out(out), h, w)

"""Shortcut distillation: teach the denoiser to take one or two large Euler steps.

A shortcut model (Frans et al. 2024, "One Step Diffusion via Shortcut Models") is conditioned
on the step size d as well as the noise level; it is trained so that one step of size d from
sigma lands where two steps of size d/2 land:

    v(x, sigma, d) = (v1 + v2) / 2,  v1 = v'(x, sigma, d/2),  x' = x - d/2 * v1,
                                      v2 = v'(x', sigma - d/2, d/2)

with v' a teacher without gradient (the run's EMA, or the frozen starting weights). Clips
without that target keep the plain flow-matching one at the smallest step, which anchors the
recursion. Everything else is the denoiser stage's: diffusion-forcing clips, history
augmentation and the block-causal context.

The stream keeps a frame's context fixed while it steps (the cache holds the past frames), so
the teacher's two half steps must see the very context the student's one step sees.
``PairedContext`` does that in one batched forward: the batch is [context rows; query rows],
and each query chunk attends to its own (moved) frames and to the context rows' other frames.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch

from .. import ops
from ..attention import BlockCausalContext, empty_token_major
from ..host import to_device
from ..network import RestyleModel
from .config import TrainConfig
from .forcing import ForcingDraw
from .objectives import DenoiserObjective


@dataclass
class ShortcutDraw:
    """The forcing draw of a shortcut step, with each frame's level and step size replaced.

    forcing: its ``sigma`` (B, T) and ``step`` (B, T) are the student's; consistency clips have
    ``sigma >= step``; the other clips train flow matching at ``step = min_step``.
    consistency: (B,) bool, the clips with a self-consistency target; rows: (R,) their indices;
    n_rows: R on the host (decides, without a device sync, whether the teacher runs).
    """

    forcing: ForcingDraw
    consistency: torch.Tensor
    rows: torch.Tensor
    n_rows: int


def sampler_steps(config: TrainConfig) -> list[tuple[float, float]]:
    """The (sigma, step size) pairs the stream's sampler passes at the default strength."""
    mc = config.model
    levels = [mc.default_strength * s for s in (*mc.sigmas, 0.0)]
    return [(a, a - b) for a, b in zip(levels[:-1], levels[1:]) if a > 0]


def draw_shortcut(
    config: TrainConfig, forcing: ForcingDraw, host_gen: torch.Generator, dev_gen: torch.Generator, device
) -> ShortcutDraw:
    """Choose the consistency clips (host side) and every frame's (sigma, d) (on the device).

    Step sizes are log-uniform in [2 * min_step, 1) with sigma spread over [d, 1] by the forcing
    draw's own level, except a ``schedule_prob`` share exactly at the sampler's steps."""
    sc = config.shortcut
    b, t = forcing.sigma.shape
    consistency = torch.rand(b, generator=host_gen) < sc.consistency
    lo = math.log2(2 * sc.min_step)
    d = torch.exp2(lo * (1 - torch.rand((b, t), generator=dev_gen, device=device)))
    sigma = d + (1 - d) * forcing.sigma
    pick = torch.rand((b, t), generator=dev_gen, device=device) < sc.schedule_prob
    steps = sampler_steps(config)
    which = torch.randint(max(1, len(steps)), (b, t), generator=dev_gen, device=device)
    for k, (level, size) in enumerate(steps):  # 1-4 entries; where() with host floats copies nothing
        here = pick & (which == k)
        sigma = torch.where(here, level, sigma)
        d = torch.where(here, size, d)
    is_c = to_device(consistency, device)
    step = torch.where(is_c[:, None], d, torch.full_like(d, sc.min_step))
    sigma = torch.where(is_c[:, None], sigma, forcing.sigma)
    return ShortcutDraw(
        forcing=dataclasses.replace(forcing, sigma=sigma, step=step),
        consistency=is_c,
        rows=to_device(consistency.nonzero().flatten(), device),
        n_rows=int(consistency.sum()),
    )


class PairedContext:
    """Attention for a batch of 2B rows: rows [0, B) are the context, a plain block-causal clip;
    in rows [B, 2B) each chunk attends to its own frames there and to every other frame in the
    context rows, under the same sink + window mask. So a query frame can move (take a half
    step) while the frames around it stay exactly as the student sees them."""

    def __init__(self, base: BlockCausalContext) -> None:
        self.base = base

    def ring_slots(self, layer):
        return None

    def attend(self, layer, q, k, v, frame_emb):
        """q, k, v: (2B, H, T * N, Dh); frame_emb: (P, H, Dh). Returns (2B, H, T * N, Dh)."""
        b, n = q.shape[0] // 2, self.base.n
        out = empty_token_major(q)  # the output projection reshapes it as a view
        out[:b] = self.base.attend(layer, q[:b], k[:b], v[:b], frame_emb)
        for rows, idx, mask in self.base.chunks:
            kc, vc = k[:b].clone(), v[:b].clone()
            kc[:, :, rows], vc[:, :, rows] = k[b:, :, rows], v[b:, :, rows]
            k_eff = (kc.unflatten(2, (-1, n)) + frame_emb[idx].transpose(0, 1)[None, :, :, None, :]).flatten(2, 3)
            out[b:, :, rows] = ops.attention(q[b:, :, rows], k_eff, vc, mask)
        return out


class ShortcutObjective(DenoiserObjective):
    """Flow matching at the smallest step plus self-consistency at larger ones, over whole clips.

    ``teacher`` (no gradient) makes the consistency targets; it is held outside the module's
    children so DistributedDataParallel and ``state_dict`` see the student only.
    """

    def __init__(self, model: RestyleModel, config: TrainConfig, teacher: RestyleModel) -> None:
        super().__init__(model, config)
        self._teacher = (teacher,)

    @property
    def teacher(self) -> RestyleModel:
        return self._teacher[0]

    @torch.no_grad()
    def two_half_steps(
        self, x: torch.Tensor, cond: torch.Tensor, sigma: torch.Tensor, step: torch.Tensor,
        pooled: torch.Tensor, tokens: torch.Tensor,
    ) -> torch.Tensor:
        """The teacher's velocity over two steps of size step/2, every frame's context held as
        the student sees it at (x, sigma, step). x, cond: (B, T, C, h, w); sigma, step: (B, T);
        pooled: (B, text_dim); tokens: (B, L, text_dim). Returns (B, T, C, h, w) float32."""
        b = x.shape[0]
        ctx = PairedContext(self.context(x.shape[1], x.shape[-2:], x.device))
        half = step / 2

        def run(xq: torch.Tensor, sq: torch.Tensor) -> torch.Tensor:
            pair = lambda a, q: torch.cat((a, q))  # noqa: E731 - [context rows; query rows]
            v = self.teacher.dit(pair(x, xq), pair(cond, cond), pair(sigma, sq), pair(step, half),
                                 pair(pooled, pooled), pair(tokens, tokens), ctx)
            return v[b:].float()

        v1 = run(x, sigma)
        v2 = run(x - half[..., None, None, None] * v1, sigma - half)
        return (v1 + v2) / 2

    def forward(
        self, inputs: torch.Tensor, targets: torch.Tensor, pooled: torch.Tensor, tokens: torch.Tensor,
        draw: ShortcutDraw, encoded: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """inputs, targets: (B, T, 3, H, W), or with ``encoded`` their latents (B, T, C, h, w);
        pooled: (B, text_dim); tokens: (B, L, text_dim).

        Returns (loss, (4,) detached [flow-matching MSE sum, its frames, consistency MSE sum, its
        frames]): sums and counts, so a log interval's means weigh every frame alike."""
        fd = draw.forcing
        cond, x0, x = self.noisy_clip(inputs, targets, pooled, tokens, fd, encoded)
        target = fd.noise - x0
        if draw.n_rows:  # only the consistency clips pay for the teacher's four forwards
            r = draw.rows
            own = self.two_half_steps(x[r], cond[r], fd.sigma[r], fd.step[r], pooled[r], tokens[r])
            target = target.index_copy(0, r, own)
        v = self.predict(x, cond, fd.sigma, fd.step, pooled, tokens).float()
        per_frame = (v - target).square().mean(dim=(2, 3, 4))  # (B, T)
        b, t = per_frame.shape
        c = draw.consistency[:, None].to(per_frame.dtype)
        flow, cons = (per_frame * (1 - c)).sum(), (per_frame * c).sum()
        # Counts are host ints written by fills: nothing copies from the host or waits.
        stats = (flow, torch.full_like(flow, (b - draw.n_rows) * t), cons, torch.full_like(cons, draw.n_rows * t))
        return self.weighted_loss(per_frame, fd), torch.stack(stats).detach()

    @torch.no_grad()
    def one_step_gap(
        self, x: torch.Tensor, cond: torch.Tensor, sigma: torch.Tensor, step: torch.Tensor,
        pooled: torch.Tensor, tokens: torch.Tensor,
    ) -> torch.Tensor:
        """Per-frame MSE (B, T) between the student's one step of size ``step`` and the teacher's
        two half steps, both from x: how far the model is from being its own shortcut."""
        v = self.predict(x, cond, sigma, step, pooled, tokens).float()
        w = self.two_half_steps(x, cond, sigma, step, pooled, tokens)
        return ((v - w) * step[..., None, None, None]).square().mean(dim=(2, 3, 4))

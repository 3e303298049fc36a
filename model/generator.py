"""StreamGenerator: the inference engine over many sessions, one chunk of frames per step.

Each ``StreamSession`` owns its ``KVRingCache``, ``PromptState``, strength and random generator.
``step`` runs a batch of same-sized sessions together: encode the input frames, noise the
input latents to each session's strength, run the Euler steps through the denoiser (writing
the chunk's K/V into each cache in place), commit the caches and decode. The engine knows
nothing about transport; frames are tensors in [-1, 1].
"""
from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Sequence

import torch

from .attention import BlockCausalContext
from .cache_batch import CacheBatch, SessionCaches
from .config import ModelConfig
from .kv_cache import KVRingCache, frame_slot
from .network import RestyleModel
from .prompt_snap import PromptSnap
from .prompts import MAX_BLEND, PromptState, blend
from .sampler import euler_step, noise_latent
from .text import TextEmbedding, TextEncoder

PROMPT_MODES = ("cut", "recache", "transition")


STEADY_NOISE = ("off", "on", "auto")


@dataclass
class StreamSession:
    """Per-stream state. Create with ``StreamGenerator.open_session``."""

    width: int
    height: int
    cache: KVRingCache
    prompt: PromptState
    strength: float
    seed: int
    generator: torch.Generator
    label: str = ""  # human-readable prompt, for logs
    frames_out: int = field(default=0)
    steady: bool = False  # the same noise every frame (the generator re-seeded before each draw)


@dataclass
class StepInputs:
    """The per-step inputs ``forward`` reads, as buffers a CUDA graph can keep.

    frames: (B, F, 3, H, W) in [-1, 1]; noise: (B, F, C, h, w), each session's draw;
    strength: (B,); pooled: (B, text_dim) and tokens: (B, text_tokens, text_dim), each session's
    prompt conditioning (copied in, so a graph does not depend on which sessions it runs);
    lanes: (B,) long, each session's lane of a ``LanePool`` (used only by ``LaneCaches``).
    """

    frames: torch.Tensor
    noise: torch.Tensor
    strength: torch.Tensor
    pooled: torch.Tensor
    tokens: torch.Tensor
    lanes: torch.Tensor


class StreamGenerator:
    """Runs a ``RestyleModel`` over live streams.

    ``text_encoder`` defaults to a ``TextEncoder`` on the CPU; tests pass a shared one.
    ``prompt_snap``: run prompts near a trained wording as that wording (``model.prompt_snap``).
    ``steady_noise``: "off" (fresh noise every frame), "on" (the same noise every frame: a still
    input gives a still output) or "auto" (on while the prompt is a deterministic built-in style,
    after snapping; off for generative styles, whose particles must keep moving, and other prompts).
    """

    def __init__(
        self,
        model: RestyleModel,
        text_encoder: TextEncoder | None = None,
        prompt_snap: PromptSnap | None = None,
        steady_noise: str = "off",
    ) -> None:
        if steady_noise not in STEADY_NOISE:
            raise ValueError(f"steady_noise must be one of {STEADY_NOISE}, got {steady_noise!r}")
        self.steady_noise = steady_noise
        self.model = model.eval()
        self.config: ModelConfig = model.config
        p = next(model.parameters())
        self.device, self.dtype = p.device, p.dtype
        # The encoder and its cache stay on the CPU in float32 (``embed`` moves each prompt's
        # conditioning to the device): a daemon embeds new prompts on another thread than the one
        # replaying CUDA graphs, and that thread must issue no GPU work while a graph is captured.
        self.text = text_encoder or TextEncoder(self.config.text_tokens)
        if self.text.text_tokens != self.config.text_tokens:
            raise ValueError(
                f"text encoder pads to {self.text.text_tokens} tokens but the model expects {self.config.text_tokens}"
            )
        # Each step's noise levels are strength times this table (sampler.sigma_schedule's math).
        self._sigma_table = torch.tensor((*self.config.sigmas, 0.0), device=self.device, dtype=self.dtype)
        # What runs each DiT call of a stream step: None = the network; a mega-kernel executor (set
        # by morphcam.kernels.megakernel.attach) runs it as one launch and falls back to the network
        # by itself where it cannot (batches, a watchdog failure). ``finish`` runs its ``check``.
        self.megakernel = None
        self.prompt_snap = prompt_snap

    def use_executor(self, executor: str) -> str | None:
        """"graph": DiT calls run the network (the caller replays steps in CUDA graphs); "megakernel":
        batch-1 stream steps run as one persistent launch (``morphcam.kernels.megakernel``) where
        the device allows. Returns None, or the reason it stays on the network (also logged)."""
        from ..kernels.megakernel.executor import attach

        return attach(self, executor)

    # ---- prompts --------------------------------------------------------------------------------
    def _wordings(self, prompts: str | Sequence[tuple[str, float]]) -> list[tuple[str, float]]:
        """``(text, weight)`` pairs of ``prompts``, each text as the model runs it (after prompt snapping)."""
        pairs = [(prompts, 1.0)] if isinstance(prompts, str) else list(prompts)
        if self.prompt_snap is None:
            return pairs
        return [(self.prompt_snap.resolve(t, self.text)[0], w) for t, w in pairs]

    def _steady(self, prompts: str | Sequence[tuple[str, float]]) -> bool:
        """Whether a session under ``prompts`` draws the same noise every frame (``steady_noise``)."""
        if self.steady_noise != "auto":
            return self.steady_noise == "on"
        from .teachers import teacher_for_prompt

        for wording, _ in self._wordings(prompts):
            teacher = teacher_for_prompt(wording)
            if teacher is None or teacher.generative:
                return False
        return True

    def prepare_prompts(self, prompts: str | Sequence[tuple[str, float]]) -> None:
        """Run the text encoder for ``prompts`` now (and their snapped wordings), so that a later
        ``embed``, ``set_prompt`` or ``open_session`` with them finds them cached. Safe to call
        from another thread than the one stepping streams; raises what ``embed`` would for a
        prompt that cannot be embedded."""
        for wording, _ in self._wordings(prompts):
            self.text(wording)

    def embed(self, prompts: str | Sequence[tuple[str, float]]) -> TextEmbedding:
        """Conditioning for one prompt or a weighted blend of up to four ``(text, weight)`` pairs."""
        if not isinstance(prompts, str) and not 1 <= len(prompts) <= MAX_BLEND:
            raise ValueError(f"a prompt blend has 1 to {MAX_BLEND} prompts, got {len(prompts)}")
        prompts = self._wordings(prompts)
        embs = [self.text(t) for t, _ in prompts]
        e = blend(embs, [w for _, w in prompts])
        return TextEmbedding(e.pooled.to(self.device, self.dtype), e.tokens.to(self.device, self.dtype))

    def set_prompt(
        self,
        session: StreamSession,
        prompts: str | Sequence[tuple[str, float]],
        mode: str = "cut",
        transition_frames: int = 0,
        interpolation: str = "slerp",
    ) -> None:
        """Switch prompt: ``cut`` (next frame), ``recache`` (cut, then re-run the cached frames
        under the new prompt) or ``transition`` (interpolate over ``transition_frames`` frames)."""
        if mode not in PROMPT_MODES:
            raise ValueError(f"prompt mode must be one of {PROMPT_MODES}, got {mode!r}")
        emb = self.embed(prompts)  # embeds (and validates) before touching the session
        if mode == "transition":
            session.prompt.start_transition(emb, transition_frames, interpolation)
        else:
            session.prompt.cut(emb)
            if mode == "recache":
                self.recache(session)
        session.label = prompts if isinstance(prompts, str) else " + ".join(f"{w:g}*{t}" for t, w in prompts)
        session.steady = self._steady(prompts)

    # ---- sessions -------------------------------------------------------------------------------
    def open_session(
        self,
        width: int,
        height: int,
        prompts: str | Sequence[tuple[str, float]],
        strength: float | None = None,
        seed: int | None = None,
        cache: KVRingCache | None = None,
    ) -> StreamSession:
        """Allocate a session's cache and state; raises ValueError for sizes or settings it cannot serve.

        ``cache``: an empty cache for this size to use instead of a new one (a ``LanePool`` lane)."""
        latent_hw = self.config.latent_size(width, height)
        strength = self._check_strength(self.config.default_strength if strength is None else strength)
        seed = secrets.randbits(63) if seed is None else int(seed) % 2**64  # any int; torch takes 64 bits
        emb = self.embed(prompts)
        gen = torch.Generator(device=self.device)
        gen.manual_seed(seed)
        return StreamSession(
            width=width,
            height=height,
            cache=cache if cache is not None else KVRingCache(self.config, latent_hw, self.device, self.dtype),
            prompt=PromptState(emb),
            strength=strength,
            seed=seed,
            generator=gen,
            label=prompts if isinstance(prompts, str) else "blend",
            steady=self._steady(prompts),
        )

    @staticmethod
    def _check_strength(strength: float) -> float:
        if not 0.0 <= float(strength) <= 1.0:
            raise ValueError(
                f"strength must be in [0, 1] (0 keeps the input, 1 starts from pure noise), got {strength}"
            )
        return float(strength)

    def set_params(self, session: StreamSession, strength: float | None = None, seed: int | None = None) -> None:
        if strength is not None:
            session.strength = self._check_strength(strength)
        if seed is not None:
            session.seed = int(seed) % 2**64
            session.generator.manual_seed(session.seed)

    def reset(self, session: StreamSession) -> None:
        """Forget the history: empty cache, generator back to the seed; the prompt stays."""
        session.cache.reset()
        session.generator.manual_seed(session.seed)
        session.frames_out = 0

    # ---- inference ------------------------------------------------------------------------------
    @torch.inference_mode()
    def step(self, sessions: Sequence[StreamSession], frames: torch.Tensor) -> torch.Tensor:
        """One chunk for each session.

        frames: (B, F, 3, H, W) in [-1, 1] on the model's device, F = ``frames_per_step``, every
        session of size W x H. Returns the restyled frames, same shape, in [-1, 1].
        """
        inputs = self.prepare(sessions, frames)
        out = self.forward(sessions, inputs)
        self.finish(sessions)
        return out

    def check(self, sessions: Sequence[StreamSession], frames: torch.Tensor) -> None:
        """Raise ValueError unless ``frames`` is (B, F, 3, H, W) for these sessions' size."""
        b, f = len(sessions), self.config.frames_per_step
        if frames.dim() != 5 or frames.shape[:3] != (b, f, 3):
            raise ValueError(f"expected frames of shape ({b}, {f}, 3, H, W), got {tuple(frames.shape)}")
        for s in sessions:
            if (s.width, s.height) != (frames.shape[-1], frames.shape[-2]):
                raise ValueError(
                    f"session is {s.width}x{s.height} but the frame is {frames.shape[-1]}x{frames.shape[-2]}"
                )

    def new_inputs(self, batch: int, width: int, height: int) -> StepInputs:
        """Buffers for ``batch`` sessions of size ``width`` x ``height`` (uninitialised)."""
        cfg = self.config
        h, w = cfg.latent_size(width, height)
        kw = dict(device=self.device, dtype=self.dtype)
        return StepInputs(
            frames=torch.empty(batch, cfg.frames_per_step, 3, height, width, **kw),
            noise=torch.empty(batch, cfg.frames_per_step, cfg.latent_channels, h, w, **kw),
            strength=torch.empty(batch, **kw),
            pooled=torch.empty(batch, cfg.text_dim, **kw),
            tokens=torch.empty(batch, cfg.text_tokens, cfg.text_dim, **kw),
            lanes=torch.zeros(batch, device=self.device, dtype=torch.long),
        )

    @torch.inference_mode()
    def prepare(
        self, sessions: Sequence[StreamSession], frames: torch.Tensor, into: StepInputs | None = None
    ) -> StepInputs:
        """A step's host half, before ``forward``: check the frames, move prompt transitions on,
        draw each session's noise from its own generator and fill ``into`` (new buffers if None).

        Only device writes of values known on the host (copies, ``fill_``), so nothing waits.
        """
        self.check(sessions, frames)
        if into is None:
            into = self.new_inputs(len(sessions), frames.shape[-1], frames.shape[-2])
        into.frames.copy_(frames)
        for i, s in enumerate(sessions):
            s.prompt.advance()
            if s.steady:  # the same draw as the stream's first frame, every frame
                s.generator.manual_seed(s.seed)
            torch.randn(into.noise.shape[1:], generator=s.generator, device=self.device, dtype=self.dtype,
                        out=into.noise[i])
            into.strength[i].fill_(s.strength)
        torch.stack([s.prompt.pooled for s in sessions], out=into.pooled)
        torch.stack([s.prompt.tokens for s in sessions], out=into.tokens)
        return into

    @torch.inference_mode()
    def forward(
        self, sessions: Sequence[StreamSession], inputs: StepInputs, caches: CacheBatch | None = None
    ) -> torch.Tensor:
        """A step's device half: encode, the Euler steps (K/V into the caches), commit the caches'
        device state, decode. No host syncs and static shapes, so ``CudaGraphRunner`` captures it.
        ``caches``: the batch's caches, the sessions' own by default (``LaneCaches`` reads them
        from a pool through ``inputs.lanes`` instead, so one graph serves any sessions).
        Returns (B, F, 3, H, W)."""
        b, f = len(sessions), self.config.frames_per_step
        ae = self.model.autoencoder
        z = ae.encode(inputs.frames.flatten(0, 1)).unflatten(0, (b, f))
        x = self.denoise(z, inputs, caches or SessionCaches([s.cache for s in sessions]))
        return ae.decode(x.flatten(0, 1)).unflatten(0, (b, f))

    @torch.inference_mode()
    def denoise(self, z: torch.Tensor, inputs: StepInputs, caches: CacheBatch) -> torch.Tensor:
        """The DiT part of a step: noise, every Euler step and (``cache_refresh``) the pass at noise
        level 0, with the chunk's K/V written into ``caches``. z: (B, F, C, h, w) input latents.
        Returns the clean output latents, (B, F, C, h, w).

        The prompt's cross-attention keys and values (``CausalDiT.prompt_kv``) are the same for
        every forward of the chunk, so the network's forwards share one computation of them (the
        mega-kernel projects the prompt inside its instruction list)."""
        cfg, dit, mk = self.config, self.model.dit, self.megakernel
        b, f = z.shape[:2]
        # sigma_schedule's math on a table built once (it builds its table from a host tuple).
        sig = inputs.strength[:, None] * self._sigma_table[None, :]  # (B, K + 1)
        caches.begin_chunk()
        context = caches.context()
        pooled, tokens = inputs.pooled, inputs.tokens
        x = noise_latent(z, inputs.noise, sig[:, 0])
        network_steps = mk is None or not mk.runs(x, context)
        prompt_kv = dit.prompt_kv(tokens) if network_steps or cfg.cache_refresh else None
        n_steps = len(cfg.sigmas)
        for k in range(n_steps):
            s_now, s_next = sig[:, k], sig[:, k + 1]
            sigma_bf = s_now[:, None].expand(b, f)
            step_bf = (s_now - s_next)[:, None].expand(b, f)
            v = (dit if mk is None else mk)(x, z, sigma_bf, step_bf, pooled, tokens, context, prompt_kv=prompt_kv)
            if k == n_steps - 1 and not cfg.cache_refresh:
                # The cache now holds this step's K/V: keep the inputs that produced them for recache.
                caches.store_inputs(x, z, sigma_bf, step_bf)
            x = euler_step(x, v, s_now, s_next)
        if cfg.cache_refresh:  # one more pass on the clean chunk; only its K/V are kept
            zero = sig[:, -1:].expand(b, f)
            dit(x, z, zero, zero, pooled, tokens, context, prompt_kv=prompt_kv, kv_only=True)
            caches.store_inputs(x, z, zero, zero)
        caches.commit_device()
        return x

    def finish(self, sessions: Sequence[StreamSession]) -> None:
        """A step's host half, after ``forward``: the caches' host counters."""
        for s in sessions:
            s.cache.commit_host()
            s.frames_out += self.config.frames_per_step
        if self.megakernel is not None:
            self.megakernel.check()  # the watchdog: raises (once) if the step hung, then falls back

    @torch.inference_mode()
    def recache(self, session: StreamSession) -> None:
        """Re-run the cached frames (sinks and window) under the session's current prompt and
        overwrite their K/V in place, as LongLive's KV-recache does. Frames already evicted are
        gone, so each cached frame sees the cached frames before it."""
        cache, cfg = session.cache, self.config
        frames = cache.visible_frames()
        if not frames:
            return
        slots = [frame_slot(j, cfg) for j in frames]
        idx = torch.tensor(slots, device=self.device)
        n = cache.tokens_per_frame

        def record(layer: int, k: torch.Tensor, v: torch.Tensor) -> None:
            for i, slot in enumerate(slots):
                cache.write_kv(layer, k[0, :, i * n : (i + 1) * n], v[0, :, i * n : (i + 1) * n], slice(slot, slot + 1))

        context = BlockCausalContext(cfg, len(frames), n, self.device, frame_ids=frames, record=record)
        self.model.dit(
            cache.x_in[idx][None],
            cache.cond[idx][None],
            cache.sigma[idx][None],
            cache.step[idx][None],
            session.prompt.pooled[None],
            session.prompt.tokens[None],
            context,
            kv_only=True,  # only the K/V (``record``) are kept
        )

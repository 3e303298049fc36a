"""Training settings: one frozen dataclass for both stages, validated on construction.

``TrainConfig`` holds every choice that shapes a run; the CLI flags map onto its fields one to
one. Settings that only steer the run (how often to log or save, where, whether to resume) are
``RUN_CONTROL_FIELDS``: a resumed run may change them, every other field must match the run it
continues.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from ..config import ModelConfig

STAGES = ("autoencoder", "denoiser", "shortcut", "prune")
PRECISIONS = ("auto", "fp32", "bf16")
NOISE_SAMPLINGS = ("logit_normal", "uniform")
LOSS_WEIGHTINGS = ("uniform", "x0", "cosmap")
# ``pool_latents`` and ``compile`` are here too: they change where the frozen encoder runs and
# how the step's kernels are made, not what a step computes (a resumed run refills its pool anyway).
RUN_CONTROL_FIELDS = frozenset(
    {"steps", "eval_interval", "eval_batches", "ckpt_interval", "log_interval", "out_dir", "resume", "device", "quiet",
     "pool_latents", "compile"}
)


@dataclass(frozen=True)
class HistoryAugment:
    """How context frames are corrupted so the denoiser learns to correct its own drift.

    Per clip, with probability ``prob``, the frames before a random split point become
    *history*: their clean latents are replaced by a degraded version (one kind per clip, drawn
    by ``kind_weights``) before the diffusion-forcing noise is added. Frames after the split are
    untouched and carry the loss; history frames keep ``loss_weight`` of theirs (their target is
    the clean latent they no longer show).
    """

    prob: float = 0.5
    # Relative odds of the degradations: extra Gaussian noise, a blurred latent, and the model's
    # own few-step predictions (a short self-rollout without gradients).
    kind_weights: tuple[float, float, float] = (1.0, 1.0, 1.0)
    noise_max: float = 0.5  # std of the extra latent noise is uniform in [0, noise_max]
    blur_factor: int = 2  # latent average-pooled by this factor and upsampled back
    rollout_steps: int = 2  # Euler steps of the self-rollout (1 or 2; the sampler's last steps)
    loss_weight: float = 0.0

    def problems(self) -> list[str]:
        out = []
        if not 0.0 <= self.prob <= 1.0:
            out.append(f"history prob must be in [0, 1], got {self.prob}")
        if len(self.kind_weights) != 3 or any(w < 0 for w in self.kind_weights) or not sum(self.kind_weights) > 0:
            out.append(f"history kind_weights must be three non-negative odds, not all 0, got {self.kind_weights}")
        if self.noise_max < 0:
            out.append(f"history noise_max must be >= 0, got {self.noise_max}")
        if self.blur_factor < 1:
            out.append(f"history blur_factor must be >= 1, got {self.blur_factor}")
        if self.rollout_steps not in (1, 2):
            out.append(f"history rollout_steps must be 1 or 2, got {self.rollout_steps}")
        if not 0.0 <= self.loss_weight <= 1.0:
            out.append(f"history loss_weight must be in [0, 1], got {self.loss_weight}")
        return out


TEACHERS = ("ema", "frozen")
IMPORTANCES = ("activation", "magnitude")


@dataclass(frozen=True)
class ShortcutDistill:
    """Shortcut distillation (Frans et al. 2024): one step of size d from sigma must land where
    two steps of size d/2 land. The sampler steps distilled for are the model's ``sigmas``.

    Per clip, with probability ``consistency``, every frame gets a self-consistency target (two
    half steps of the teacher, no gradient) at a step size d >= 2 * ``min_step``; the other clips
    keep the plain flow-matching target at step ``min_step``. ``schedule_prob`` of the
    consistency frames sit exactly on the sampler's (sigma, d) pairs at the default strength.
    """

    consistency: float = 0.5
    schedule_prob: float = 0.5
    min_step: float = 1 / 128
    teacher: str = "ema"  # "ema": the run's EMA (targets improve as it learns); "frozen": the --init weights

    def problems(self) -> list[str]:
        out = []
        for name in ("consistency", "schedule_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                out.append(f"shortcut {name} must be in [0, 1], got {getattr(self, name)}")
        if not 0.0 < self.min_step <= 0.25:
            out.append(f"shortcut min_step must be in (0, 0.25], got {self.min_step}")
        if self.teacher not in TEACHERS:
            out.append(f"shortcut teacher must be one of {TEACHERS}, got {self.teacher!r}")
        return out


@dataclass(frozen=True)
class PruneSettings:
    """Architecture-aware pruning: keep the ``heads`` most important attention heads (self and
    cross attention alike) and the ``ffn_dim`` most important FFN units of every block, so that
    heads x head width and the FFN width are multiples of ``tile``; 0 keeps a size unchanged.
    Importance is measured on ``calib_batches`` batches (``activation``) or from the weights
    (``magnitude``); a short fine-tune with the denoiser objective follows."""

    heads: int = 0
    ffn_dim: int = 0
    tile: int = 64
    importance: str = "activation"
    calib_batches: int = 4

    def problems(self) -> list[str]:
        out = []
        for name in ("heads", "ffn_dim"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 0:
                out.append(f"prune {name} must be a non-negative integer (0 = keep), got {getattr(self, name)!r}")
        if self.tile < 1:
            out.append(f"prune tile must be >= 1, got {self.tile}")
        if self.importance not in IMPORTANCES:
            out.append(f"prune importance must be one of {IMPORTANCES}, got {self.importance!r}")
        if self.calib_batches < 1:
            out.append(f"prune calib_batches must be >= 1, got {self.calib_batches}")
        return out


@dataclass(frozen=True)
class TrainConfig:
    """One training run of one stage. ``data`` is "synthetic" or a folder of paired clips."""

    stage: str = "autoencoder"
    model: ModelConfig = field(default_factory=lambda: ModelConfig.from_name("tiny"))
    steps: int = 20_000
    batch_size: int = 8  # clips per rank per step
    lr: float = 3e-4
    min_lr_ratio: float = 0.1  # the cosine decays to lr * min_lr_ratio
    warmup_steps: int = 500
    weight_decay: float = 0.01
    grad_clip: float = 1.0  # max global grad norm; 0 turns clipping off
    ema_decay: float = 0.999  # the exported checkpoint holds the EMA weights
    # Clips: frames per clip and their size (the size must suit the model's frame multiple).
    frames: int = 8
    width: int = 256
    height: int = 144
    fps: float = 30.0
    data: str = "synthetic"
    # Synthetic data only, training clips only (eval clips keep the plain mix, so eval losses stay
    # comparable across runs): the share of clips whose input is held still, and per-style draw
    # weights against 1 for every style not named (SyntheticClips).
    still_prob: float = 0.0
    style_weights: dict[str, float] = field(default_factory=dict)
    seed: int = 0
    precision: str = "auto"  # auto: bf16 autocast on CUDA, fp32 on CPU
    device: str = "auto"
    out_dir: str = "runs/train"
    init: str | None = None  # checkpoint to start from (the denoiser stage takes the autoencoder's)
    resume: bool = False
    log_interval: int = 20
    eval_interval: int = 500
    eval_batches: int = 4
    ckpt_interval: int = 1000
    quiet: bool = False
    # Autoencoder loss: L1 + l2_weight * L2 + grad_weight * image-gradient L1 + latent scale term.
    l2_weight: float = 1.0
    grad_weight: float = 0.5
    latent_rms_weight: float = 0.1  # keeps latent channels near unit RMS, the scale the denoiser's noise has
    # Denoiser: flow matching with diffusion forcing (one noise level per frame).
    noise_sampling: str = "logit_normal"
    logit_mean: float = 0.0
    logit_std: float = 1.0
    loss_weighting: str = "uniform"
    # Share of frames trained at the sampler's own levels (the preset's ``sigmas`` at its default
    # strength, with the step sizes the sampler passes): the 1-2 levels every streamed frame goes
    # through, which a logit-normal draw alone almost never visits at sigma near 1.
    sampler_prob: float = 0.5
    history: HistoryAugment = field(default_factory=HistoryAugment)
    shortcut: ShortcutDistill = field(default_factory=ShortcutDistill)  # the shortcut stage only
    prune: PruneSettings = field(default_factory=PruneSettings)  # the prune stage only
    # A pool of clips kept on the device (0 = fresh clips every step): each step draws its batch
    # from the pool and replaces ``pool_refresh`` clips with new ones, so the style teachers run
    # on a fraction of the clips the model sees. A resumed run refills its pool with new clips.
    pool_size: int = 0
    pool_refresh: int = 4
    # Stages with a frozen autoencoder: the pool keeps each clip's latents, encoded once as the
    # clip enters it, instead of its frames, so the steps skip the encoder (pool.py).
    pool_latents: bool = False
    # Denoiser and prune stages: the clip forward and its backward go through torch.compile
    # (inductor), which fuses the step's thousands of small elementwise kernels; the first step
    # compiles (a minute or more). Self-rollouts and evals stay eager.
    compile: bool = False

    def __post_init__(self) -> None:
        p = []
        if self.stage not in STAGES:
            p.append(f"stage must be one of {STAGES}, got {self.stage!r}")
        for name in ("steps", "batch_size", "frames", "log_interval", "eval_interval", "ckpt_interval"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                p.append(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        if self.eval_batches < 0:
            p.append(f"eval_batches must be >= 0, got {self.eval_batches}")
        if self.stage in ("shortcut", "prune") and not self.init:
            p.append(f"the {self.stage} stage starts from a trained denoiser: pass its run folder or checkpoint as init")
        for name in ("shortcut", "prune"):  # each stage's settings field is named after it
            if self.stage != name and getattr(self, name) != type(getattr(self, name))():
                p.append(f"{name} settings are used by the {name} stage only, not by {self.stage}: drop them")
        if self.stage == "prune" and not (self.prune.heads or self.prune.ffn_dim):
            p.append("the prune stage needs a smaller heads or ffn_dim (both are 0, which keeps every size)")
        if self.stage != "autoencoder" and self.frames < 2:
            p.append("the denoiser needs clips of at least 2 frames (history and a current frame)")
        if not self.lr > 0:
            p.append(f"lr must be > 0, got {self.lr}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            p.append(f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        if self.warmup_steps < 0:
            p.append(f"warmup_steps must be >= 0, got {self.warmup_steps}")
        if self.weight_decay < 0:
            p.append(f"weight_decay must be >= 0, got {self.weight_decay}")
        if self.grad_clip < 0:
            p.append(f"grad_clip must be >= 0 (0 = off), got {self.grad_clip}")
        if not 0.0 <= self.ema_decay < 1.0:
            p.append(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        m = self.model.frame_multiple
        if self.width < 1 or self.height < 1 or self.width % m or self.height % m:
            p.append(f"clip size {self.width}x{self.height} must be positive multiples of {m} for {self.model.name!r}")
        if not self.fps > 0:
            p.append(f"fps must be > 0, got {self.fps}")
        if not self.data:
            p.append('data must be "synthetic" or a folder of paired clips')
        p += self._mix_problems()
        if self.precision not in PRECISIONS:
            p.append(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.noise_sampling not in NOISE_SAMPLINGS:
            p.append(f"noise_sampling must be one of {NOISE_SAMPLINGS}, got {self.noise_sampling!r}")
        if not self.logit_std > 0:
            p.append(f"logit_std must be > 0, got {self.logit_std}")
        if self.loss_weighting not in LOSS_WEIGHTINGS:
            p.append(f"loss_weighting must be one of {LOSS_WEIGHTINGS}, got {self.loss_weighting!r}")
        if not 0.0 <= self.sampler_prob <= 1.0:
            p.append(f"sampler_prob must be in [0, 1], got {self.sampler_prob}")
        if self.pool_size < 0 or (0 < self.pool_size < self.batch_size):
            p.append(f"pool_size must be 0 (off) or at least the batch size {self.batch_size}, got {self.pool_size}")
        if self.pool_size and not 0 <= self.pool_refresh <= self.pool_size:
            p.append(f"pool_refresh must be in [0, pool_size], got {self.pool_refresh}")
        if self.compile and self.stage not in ("denoiser", "prune"):
            p.append(f"compile is for the denoiser and prune stages (their clip forward), not {self.stage}: drop it")
        if self.pool_latents and self.stage == "autoencoder":
            p.append("pool_latents is for the stages with a frozen autoencoder (denoiser, shortcut, prune): "
                     "the autoencoder stage trains on frames, drop it")
        elif self.pool_latents and not self.pool_size:
            p.append("pool_latents keeps latents in the clip pool: give the pool a size (pool_size, --pool)")
        for name in ("l2_weight", "grad_weight", "latent_rms_weight"):
            if getattr(self, name) < 0:
                p.append(f"{name} must be >= 0, got {getattr(self, name)}")
        p += self.history.problems() + self.shortcut.problems() + self.prune.problems()
        if p:
            raise ValueError("invalid training config: " + "; ".join(p))

    def _mix_problems(self) -> list[str]:
        from ..teachers import TEACHERS

        p = []
        if not 0.0 <= self.still_prob <= 1.0:
            p.append(f"still_prob must be in [0, 1], got {self.still_prob}")
        unknown = sorted(set(self.style_weights) - set(TEACHERS))
        if unknown:
            p.append(f"style_weights names unknown styles {unknown}; known styles: {', '.join(TEACHERS)}")
        if any(not (isinstance(w, (int, float)) and w >= 0) for w in self.style_weights.values()):
            p.append(f"style weights must be numbers >= 0, got {self.style_weights}")
        elif self.style_weights and not any(self.style_weights.get(n, 1.0) > 0 for n in TEACHERS):
            p.append("style_weights leaves no style to draw: give at least one a weight above 0")
        if (self.still_prob or self.style_weights) and self.data != "synthetic":
            p.append(f"still_prob and style_weights shape the synthetic clips; --data {self.data} is a folder "
                     "of your own clips: drop them")
        return p

    # ---- serialisation (stored in every training state) ------------------------------------------
    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "TrainConfig":
        raw: dict[str, Any] = json.loads(text)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ValueError(f"unknown TrainConfig fields {unknown}: the state was written by a newer morphcam")
        raw["model"] = ModelConfig.from_json(json.dumps(raw["model"]))
        hist = raw.get("history", {})
        raw["history"] = HistoryAugment(**{k: tuple(v) if isinstance(v, list) else v for k, v in hist.items()})
        raw["shortcut"] = ShortcutDistill(**raw.get("shortcut", {}))
        raw["prune"] = PruneSettings(**raw.get("prune", {}))
        return cls(**raw)

    def mismatches(self, other: "TrainConfig") -> list[str]:
        """Fields (outside ``RUN_CONTROL_FIELDS``) whose values differ from ``other``'s."""
        return [
            f.name
            for f in dataclasses.fields(self)
            if f.name not in RUN_CONTROL_FIELDS and getattr(self, f.name) != getattr(other, f.name)
        ]

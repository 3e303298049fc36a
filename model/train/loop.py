"""The training loop shared by both stages: AdamW, warmup + cosine, grad clipping, EMA, eval,
atomic resumable checkpoints, a JSON-lines log, and DistributedDataParallel under torchrun.

No step reads a value back from the device except at log and eval intervals, so a CUDA run is
not held up by host syncs; every random draw of a step is seeded by (seed, rank, step), which
together with the saved optimizer, scheduler, EMA and data-source states makes ``resume``
continue exactly where the run stopped.

With ``pool_latents`` the clip pool is handed ``encode_clips`` (the frozen autoencoder under the
step's autocast) and serves latents, which the step passes on as they are; the log's "pool"
line gives the bytes the pool holds on the device.
"""
from __future__ import annotations

import copy
import dataclasses
import gc
import hashlib
import json
import logging
import math
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import torch
from torch.nn.parallel import DistributedDataParallel

from ..network import RestyleModel
from ..text import TextEncoder
from .config import TrainConfig
from .distributed import all_gather_objects, destroy_process_group, dist_env, init_process_group, resolve_device
from .forcing import draw_forcing, step_seed
from .objectives import AutoencoderObjective, DenoiserObjective
from .pool import ClipPool, LatentClipBatch
from .shortcut import ShortcutObjective, draw_shortcut
from .sources import ClipSource, make_source, make_train_source, restore_source, source_state
from .state import BEST_FILENAME, LOG_FILENAME, STATE_FILENAME, export_model, init_weights, load_state, save_state

log = logging.getLogger(__name__)


class PromptEmbeddings:
    """Frozen text-encoder outputs on the training device, computed once per distinct prompt."""

    def __init__(self, encoder: TextEncoder, device: torch.device) -> None:
        self.encoder, self.device = encoder, device
        self._cache: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def __call__(self, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns pooled (B, text_dim) and tokens (B, text_tokens, text_dim)."""
        for p in prompts:
            if p not in self._cache:
                e = self.encoder(p)
                self._cache[p] = (e.pooled.to(self.device, torch.float32), e.tokens.to(self.device, torch.float32))
        return torch.stack([self._cache[p][0] for p in prompts]), torch.stack([self._cache[p][1] for p in prompts])


def lr_factor(step: int, warmup: int, total: int, min_ratio: float) -> float:
    """Linear warmup to 1, then a cosine down to ``min_ratio`` at ``total`` steps."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


class Trainer:
    """One run of one stage. ``source``/``eval_source``/``text_encoder`` default to the
    configured clip sources and a new ``TextEncoder``; tests pass their own."""

    def __init__(
        self,
        config: TrainConfig,
        source: ClipSource | None = None,
        eval_source: ClipSource | None = None,
        text_encoder: TextEncoder | None = None,
    ) -> None:
        self.config = cfg = config
        self.env = env = dist_env()
        self.device = dev = resolve_device(cfg.device, env)
        init_process_group(env, dev)
        self.amp = cfg.precision == "bf16" or (cfg.precision == "auto" and dev.type == "cuda")

        torch.manual_seed(cfg.seed)  # the same initial weights on every rank (DDP broadcasts rank 0's too)
        self.model = RestyleModel(cfg.model)
        if cfg.init:
            init_weights(self.model, cfg.init)
        elif cfg.stage != "autoencoder":
            log.warning("denoiser without --init: its latents come from an untrained autoencoder; "
                        "train the autoencoder first and pass its run folder as --init")
        self.model.to(dev)
        # Each stage trains one half of the bundle; the other is frozen (its gradients would be unused).
        trained, frozen = (
            (self.model.autoencoder, self.model.dit) if cfg.stage == "autoencoder" else (self.model.dit, self.model.autoencoder)
        )
        frozen.requires_grad_(False).eval()
        self.ema = copy.deepcopy(self.model).requires_grad_(False).eval()
        named_ema = dict(self.ema.named_parameters())
        self._params = [p for p in self.model.parameters() if p.requires_grad]
        self._ema_params = [named_ema[n] for n, p in self.model.named_parameters() if p.requires_grad]

        # The shortcut stage's teacher: the EMA (its targets improve as it learns) or the --init weights.
        self.teacher = None
        if cfg.stage == "shortcut":
            frozen_init = cfg.shortcut.teacher == "frozen"
            self.teacher = copy.deepcopy(self.model).requires_grad_(False).eval() if frozen_init else self.ema
        objective = self._objective(self.model)
        self.objective = (
            DistributedDataParallel(objective, device_ids=[dev.index] if dev.type == "cuda" else None)
            if env.enabled
            else objective
        )
        self.eval_objective = self._objective(self.ema)
        # No weight decay on gains, biases and 1-D tables: decaying them only shifts the network's scale.
        groups = [
            {"params": [p for p in self._params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
            {"params": [p for p in self._params if p.dim() < 2], "weight_decay": 0.0},
        ]
        self.optimizer = torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.99), fused=dev.type == "cuda")
        warmup, total, floor = cfg.warmup_steps, cfg.steps, cfg.min_lr_ratio
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: lr_factor(s, warmup, total, floor)
        )
        self.step = 0
        # The lowest held-out loss so far; its EMA export is kept beside the last (``BEST_FILENAME``).
        self.best_eval = math.inf
        self._data_seconds = 0.0  # host seconds spent drawing batches since the last log line

        self.source = source if source is not None else make_train_source(cfg, env.rank, dev)
        if cfg.pool_latents:
            if not isinstance(self.source, ClipPool):
                raise ValueError("pool_latents keeps latents in the clip pool, but this run's source is not a "
                                 "ClipPool: pass pool_size (--pool) and no source of your own")
            self.source.store_latents(self.encode_clips)
        self.eval_data: list[Any] = []
        if env.is_main and cfg.eval_batches:
            es = eval_source if eval_source is not None else make_source(cfg, "eval", 0, dev)
            self.eval_data = [es.sample(cfg.batch_size) for _ in range(cfg.eval_batches)]
        self.text = None
        if cfg.stage != "autoencoder":
            self.text = PromptEmbeddings(text_encoder or TextEncoder(cfg.model.text_tokens, cache_size=4096), dev)
        self._resume()

    @torch.no_grad()
    def encode_clips(self, frames: torch.Tensor) -> torch.Tensor:
        """Frames (N, T, 3, H, W) in [-1, 1] -> latents (N, T, C, h, w) of the frozen autoencoder,
        under the step's autocast and in the encoder's own output dtype (bfloat16 under CUDA
        autocast): what the step's ``DenoiserObjective.encode`` gives before its float32 cast."""
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            return self.model.autoencoder.encode(frames.flatten(0, 1)).unflatten(0, frames.shape[:2])

    def _objective(self, model: RestyleModel) -> torch.nn.Module:
        """The stage's objective over ``model`` (pruned models fine-tune with the denoiser's)."""
        if self.config.stage == "autoencoder":
            return AutoencoderObjective(model, self.config)
        if self.config.stage == "shortcut":
            return ShortcutObjective(model, self.config, self.teacher)
        return DenoiserObjective(model, self.config)

    # ---- state ------------------------------------------------------------------------------------
    def _resume(self) -> None:
        cfg, out = self.config, Path(self.config.out_dir)
        if not cfg.resume:
            if (out / STATE_FILENAME).exists():
                raise ValueError(f"{out} already holds a training run: pass --resume to continue it, or another --out")
            return
        state = load_state(out)
        if state is None:
            log.info("nothing to resume in %s: starting a new run", out)
            return
        saved = TrainConfig.from_json(state["config"])
        diff = cfg.mismatches(saved)
        if diff:
            raise ValueError(f"cannot resume {out}: settings {diff} differ from the saved run; keep them as they were")
        if len(state["ranks"]) != self.env.world_size:
            raise ValueError(f"{out} was trained on {len(state['ranks'])} processes: resume it with as many")
        self.model.load_state_dict(state["model"])
        self.ema.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step = int(state["step"])
        self.best_eval = float(state.get("best_eval", math.inf))  # states written before it had none
        mine = state["ranks"][self.env.rank]
        torch.set_rng_state(mine["torch"])
        if mine.get("cuda") is not None and self.device.type == "cuda":
            torch.cuda.set_rng_state(mine["cuda"])
        restore_source(self.source, mine["source"])

    def save(self) -> None:
        """Write the training state and export the EMA model (main rank; every rank must call it)."""
        ranks = all_gather_objects(
            {
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state() if self.device.type == "cuda" else None,
                "source": source_state(self.source),
            },
            self.env,
        )
        if not self.env.is_main:
            return
        state = {
            "config": self.config.to_json(),
            "step": self.step,
            "best_eval": self.best_eval,
            "model": self.model.state_dict(),
            "ema": self.ema.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "ranks": ranks,
        }
        save_state(state, self.config.out_dir)
        export_model(self.ema, self.config.out_dir)

    def _log(self, record: dict[str, Any]) -> None:
        if self.env.is_main:
            path = Path(self.config.out_dir) / LOG_FILENAME
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "a") as f:
                f.write(json.dumps(record) + "\n")

    # ---- steps ------------------------------------------------------------------------------------
    def _loss(self, objective, batch, step: int, rank: int,
              draws: TrainConfig | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The stage's loss on one ClipBatch, with the draws of (step, rank), and its detached
        diagnostics: (4,) [l1, l2, grad, latent_rms] for the autoencoder, (T,) the velocity MSE
        at each clip position for the denoiser (and prune), (4,) flow and consistency MSE sums and
        frame counts for shortcut. A LatentClipBatch goes to the objective as latents. ``draws``:
        the config the noise levels are drawn by, when not the run's own."""
        encoded = isinstance(batch, LatentClipBatch)
        inputs = batch.inputs.to(self.device, non_blocking=True)
        targets = batch.targets.to(self.device, non_blocking=True)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            if self.config.stage == "autoencoder":
                return objective(inputs, targets)
            seed = self.config.seed
            host_gen = torch.Generator().manual_seed(step_seed(seed, rank, step, 0))
            dev_gen = torch.Generator(self.device).manual_seed(step_seed(seed, rank, step, 1))
            mc = self.config.model
            if encoded:
                shape = tuple(inputs.shape)
            else:
                h, w = mc.latent_size(inputs.shape[-1], inputs.shape[-2])
                shape = (*inputs.shape[:2], mc.latent_channels, h, w)
            draw = draw_forcing(draws or self.config, shape, host_gen, dev_gen, self.device)
            pooled, tokens = self.text(batch.prompts)
            if isinstance(getattr(objective, "module", objective), ShortcutObjective):
                shortcut = draw_shortcut(self.config, draw, host_gen, dev_gen, self.device)
                return objective(inputs, targets, pooled, tokens, shortcut, encoded=encoded)
            loss, per_frame = objective(inputs, targets, pooled, tokens, draw, encoded=encoded)
            return loss, per_frame.mean(0)

    def train_step(self) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimizer step on the next batch; returns the loss and diagnostics (detached, on the device)."""
        t0 = time.perf_counter()
        batch = self.source.sample(self.config.batch_size)
        # Host time: on a GPU the work is queued, so this is what the host spends making the batch,
        # the figure that matters when the host (Python, launches), not the GPU, sets the pace.
        self._data_seconds += time.perf_counter() - t0
        loss, stats = self._loss(self.objective, batch, self.step, self.env.rank)
        loss.backward()
        if self.config.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self._params, self.config.grad_clip, foreach=True)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        decay = min(self.config.ema_decay, (1 + self.step) / (10 + self.step))  # early EMA tracks closely
        torch._foreach_lerp_(self._ema_params, self._params, 1.0 - decay)
        return loss.detach(), stats

    @torch.no_grad()
    def evaluate(self, model: RestyleModel | None = None) -> float:
        """Mean loss of the EMA model on the fixed eval batches (same draws every time); with
        ``model`` (same latent size, e.g. before pruning), that model's denoiser loss instead."""
        objective = self.eval_objective if model is None else DenoiserObjective(model, self.config)
        losses = [self._loss(objective, b, i, 2**20)[0] for i, b in enumerate(self.eval_data)]
        return float(torch.stack(losses).mean()) if losses else float("nan")

    @torch.no_grad()
    def evaluate_sampler_levels(self) -> float:
        """``evaluate`` with every frame at the sampler's own noise levels (the 1-2 levels each
        streamed frame goes through), the same batches and other draws: the eval loss averages
        every level, and can stay flat while the sampled frames still improve."""
        draws = dataclasses.replace(self.config, sampler_prob=1.0)
        losses = [self._loss(self.eval_objective, b, i, 2**20, draws)[0] for i, b in enumerate(self.eval_data)]
        return float(torch.stack(losses).mean()) if losses else float("nan")

    def _log_pool(self) -> None:
        """One "pool" log line: the device bytes of the pool's frames and latents (inputs and
        targets; a latent pool keeps no frames). Nothing without a pool."""
        if not isinstance(self.source, ClipPool):
            return
        held = self.source.memory()
        self._log({"event": "pool", "step": self.step, "clips": self.source.size,
                   "latents": self.source.encoder is not None, "frame_bytes": held["frames"],
                   "latent_bytes": held["latents"]})
        if self.env.is_main and not self.config.quiet:
            log.info("clip pool: %d clips, %.1f MiB of frames, %.1f MiB of latents", self.source.size,
                     held["frames"] / 2**20, held["latents"] / 2**20)

    def checksum(self) -> str:
        h = hashlib.sha256()
        for t in self.model.state_dict().values():
            h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
        return h.hexdigest()[:16]

    def train(self, stop_at: int | None = None) -> dict[str, Any]:
        """Train to ``config.steps`` (or stop after step ``stop_at``, as a killed run would at a
        checkpoint), save, and return a summary. Raises if DDP ranks ended with different weights."""
        from tqdm.auto import tqdm

        cfg, env = self.config, self.env
        last = cfg.steps if stop_at is None else min(stop_at, cfg.steps)
        bar = tqdm(
            total=cfg.steps, initial=self.step, desc=f"train {cfg.stage}", unit="step",
            disable=cfg.quiet or not env.is_main or not sys.stderr.isatty(),
        )
        self.model.train()
        (self.model.dit if cfg.stage == "autoencoder" else self.model.autoencoder).eval()
        loss_sum, stats_sum = torch.zeros((), device=self.device), 0.0
        n, t0, mean = 0, time.perf_counter(), float("nan")
        self._data_seconds = 0.0
        started, started_at = time.perf_counter(), self.step
        while self.step < last:
            loss, stats = self.train_step()
            if self.step == started_at + 1:  # the pool filled during this process's first step
                self._log_pool()
            loss_sum += loss
            stats_sum = stats_sum + stats
            n += 1
            bar.update(1)
            if self.step % cfg.log_interval == 0 or self.step == last:
                mean, dt = float(loss_sum) / n, (time.perf_counter() - t0) / n  # the only per-interval sync
                frames = cfg.batch_size * cfg.frames * env.world_size / dt
                lr = self.scheduler.get_last_lr()[0]
                record = {"event": "train", "step": self.step, "loss": mean, "lr": lr, "s_per_step": dt,
                          "data_s_per_step": self._data_seconds / n, "frames_per_s": frames}
                diag = [round(v / n, 5) for v in stats_sum.tolist()]
                if cfg.stage == "autoencoder":
                    record.update(zip(("l1", "l2", "grad", "latent_rms"), diag))
                elif cfg.stage == "shortcut":  # sums and frame counts: None where no clip had that target
                    fs, fn, cs, cn = stats_sum.tolist()
                    record["flow_mse"] = round(fs / fn, 5) if fn else None
                    record["consistency_mse"] = round(cs / cn, 5) if cn else None
                else:
                    record["frame_mse"] = diag  # by clip position: later frames have history to use
                self._log(record)
                bar.set_postfix(loss=f"{mean:.4f}", lr=f"{lr:.2e}")
                if bar.disable and env.is_main and not cfg.quiet:  # background runs: a line per interval
                    log.info("step %d/%d loss %.4f lr %.2e %.1f frames/s", self.step, cfg.steps, mean, lr, frames)
                if not math.isfinite(mean):
                    raise RuntimeError(
                        f"loss is {mean} at step {self.step}: lower --lr or --grad-clip and resume from the "
                        f"last checkpoint (step {self.step - self.step % cfg.ckpt_interval})"
                    )
                loss_sum.zero_()
                stats_sum = 0.0
                n, t0, self._data_seconds = 0, time.perf_counter(), 0.0
            if env.is_main and self.eval_data and self.step % cfg.eval_interval == 0:
                record = {"event": "eval", "step": self.step, "eval_loss": self.evaluate()}
                if cfg.stage in ("denoiser", "prune"):
                    record["eval_loss_sampler"] = self.evaluate_sampler_levels()
                if record["eval_loss"] < self.best_eval:  # held-out loss often bottoms out before the end
                    self.best_eval = record["eval_loss"]
                    record["best"] = True
                    export_model(self.ema, cfg.out_dir, name=BEST_FILENAME)
                self._log(record)
            if self.step % cfg.ckpt_interval == 0 and self.step < last:
                self.save()
        bar.close()
        self.save()
        sums = all_gather_objects(self.checksum(), env)
        summary = {"event": "done", "step": self.step, "loss": mean, "seconds": time.perf_counter() - started,
                   "rank_checksums": sums}
        self._log(summary)
        if len(set(sums)) > 1:
            raise RuntimeError(f"ranks ended with different weights {sums}: the DDP run is broken")
        return summary

    def close(self) -> None:
        """Leave the process group. DDP's reducer goes first: torn down after the group (at
        interpreter exit) it can touch the group's ended gloo threads, which aborts the process
        after a run that finished."""
        if self.env.enabled:
            self.objective = getattr(self.objective, "module", self.objective)
            gc.collect()
        destroy_process_group(self.env)

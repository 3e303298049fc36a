"""Architecture-aware pruning: fewer attention heads and FFN units, cut to the GPU's tile size.

Every block keeps its ``heads`` most important attention heads (self and cross attention are
ranked apart; both keep the same count, as one ``n_heads`` describes them) and its ``ffn_dim``
most important FFN units, so that heads x head width and the FFN width are multiples of the
tile (64 by default: a tensor-core tile edge). Importance is a unit's contribution to the
residual stream:

- ``activation``: on a few calibration batches of the denoiser objective, the mean norm of what
  a head adds (its attention output through its slice of the output projection), and for an
  FFN unit its mean |activation| times the norm of its output column;
- ``magnitude``: the same from the weights alone (value rows times output columns).

A unit that adds nothing scores 0 under both, so removing it leaves the output unchanged. The
cut model (``pruned.safetensors``) is fine-tuned briefly with the denoiser objective, and
``prune_report.json`` records params, eval loss and the per-frame step time on the run's device
before pruning, right after it, and after the fine-tune.
"""
from __future__ import annotations

import dataclasses
import json
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..checkpoint import save_checkpoint
from ..config import ModelConfig
from ..network import RestyleModel
from .config import PruneSettings, TrainConfig

PRUNED_FILENAME = "pruned.safetensors"
REPORT_FILENAME = "prune_report.json"


def _valid(sizes: range, ok) -> str:
    good = [n for n in sizes if ok(n)]
    return ", ".join(map(str, good[:8])) + (" ..." if len(good) > 8 else "") if good else "none"


def pruned_config(config: ModelConfig, settings: PruneSettings) -> ModelConfig:
    """The config after pruning ``config`` as ``settings`` ask; ValueError names what to pass instead."""
    heads = settings.heads or config.n_heads
    ffn = settings.ffn_dim or config.ffn_dim
    hd, tile = config.head_dim, settings.tile
    problems = []
    if heads > config.n_heads:
        problems.append(f"--heads {heads}: the model has only {config.n_heads} heads and pruning cannot add any")
    elif heads * hd % tile:
        choices = _valid(range(1, config.n_heads + 1), lambda h: h * hd % tile == 0)
        problems.append(f"--heads {heads} gives an attention width of {heads} x {hd} = {heads * hd}, not a multiple of "
                        f"--tile {tile}: pass one of --heads {choices}, or another --tile")
    if ffn > config.ffn_dim:
        problems.append(f"--ffn-dim {ffn}: the model's FFN is only {config.ffn_dim} wide and pruning cannot widen it")
    elif ffn % tile:
        problems.append(f"--ffn-dim {ffn} is not a multiple of --tile {tile}: pass e.g. "
                        f"{max(tile, ffn // tile * tile)}" + (f" or {ffn // tile * tile + tile}"
                                                                if ffn // tile * tile + tile <= config.ffn_dim else ""))
    if not problems and (heads, ffn) == (config.n_heads, config.ffn_dim):
        problems.append(f"--heads {heads} and --ffn-dim {ffn} keep every size of the model: pass fewer heads or a "
                        f"narrower FFN")
    if problems:
        raise ValueError("cannot prune: " + "; ".join(problems))
    name = config.name if config.name.endswith("-pruned") else f"{config.name}-pruned"
    head_dim = hd if heads != config.n_heads else config.attn_head_dim
    return dataclasses.replace(config, name=name, n_heads=heads, attn_head_dim=head_dim, ffn_dim=ffn)


@dataclass
class Importance:
    """Scores per block: attn, cross (n_layers, n_heads); ffn (n_layers, ffn_dim). Higher = keep."""

    attn: torch.Tensor
    cross: torch.Tensor
    ffn: torch.Tensor


def _head_cols(heads: torch.Tensor, head_dim: int) -> torch.Tensor:
    """Feature indices of ``heads`` in a (heads * head_dim) axis. (K,) -> (K * head_dim,)."""
    return (heads[:, None] * head_dim + torch.arange(head_dim, device=heads.device)).flatten()


def magnitude_importance(model: RestyleModel) -> Importance:
    """Weight-only scores: value rows' norm x output columns' norm per head; input row's norm
    (with its bias) x output column's norm per FFN unit."""
    cfg = model.config
    h, hd, a = cfg.n_heads, cfg.head_dim, cfg.attn_dim
    attn, cross, ffn = [], [], []
    with torch.no_grad():
        for blk in model.dit.blocks:
            v_rows = blk.qkv.weight[2 * a:].view(h, hd, -1).float().flatten(1).norm(dim=1)
            attn.append(v_rows * blk.attn_out.weight.float().view(-1, h, hd).transpose(0, 1).flatten(1).norm(dim=1))
            cv_rows = blk.cross_kv.weight[a:].view(h, hd, -1).float().flatten(1).norm(dim=1)
            cross.append(cv_rows * blk.cross_out.weight.float().view(-1, h, hd).transpose(0, 1).flatten(1).norm(dim=1))
            w_in = torch.cat((blk.ffn_in.weight, blk.ffn_in.bias[:, None]), dim=1).float().norm(dim=1)
            ffn.append(w_in * blk.ffn_out.weight.float().norm(dim=0))
    return Importance(torch.stack(attn), torch.stack(cross), torch.stack(ffn))


class _ContributionMeter:
    """Forward pre-hooks on every block's output projections that add up each head's and FFN
    unit's mean contribution norm over the tokens they see."""

    def __init__(self, model: RestyleModel) -> None:
        cfg = model.config
        L, h = cfg.n_layers, cfg.n_heads
        self.sums = Importance(torch.zeros(L, h), torch.zeros(L, h), torch.zeros(L, cfg.ffn_dim))
        self.tokens = torch.zeros(3)
        self.handles = []
        for i, blk in enumerate(model.dit.blocks):
            for lin, kind in ((blk.attn_out, 0), (blk.cross_out, 1), (blk.ffn_out, 2)):
                self.handles.append(lin.register_forward_pre_hook(self._hook(i, kind, lin, h)))

    def _hook(self, layer: int, kind: int, lin: torch.nn.Linear, heads: int):
        def hook(module, args):
            x = args[0].detach().float().flatten(0, -2)  # (tokens, in_features)
            w = lin.weight.detach().float()  # (dim, in_features)
            if kind == 2:
                self.sums.ffn[layer] += (x.abs().sum(0) * w.norm(dim=0)).cpu()
            else:
                per_head = torch.einsum("nhk,dhk->nhd", x.unflatten(1, (heads, -1)), w.unflatten(1, (heads, -1)))
                target = self.sums.attn if kind == 0 else self.sums.cross
                target[layer] += per_head.norm(dim=-1).sum(0).cpu()
            self.tokens[kind] += x.shape[0]

        return hook

    def result(self) -> Importance:
        for h in self.handles:
            h.remove()
        t = self.tokens.clamp_min(1)
        return Importance(self.sums.attn / t[0], self.sums.cross / t[1], self.sums.ffn / t[2])


@torch.no_grad()
def activation_importance(model: RestyleModel, config: TrainConfig, batches: list[Any], text, device) -> Importance:
    """Mean contribution norms over ``batches`` (ClipBatch-like) run through the denoiser
    objective with seeded forcing draws; ``text`` maps prompts to (pooled, tokens)."""
    from .forcing import draw_forcing, step_seed
    from .objectives import DenoiserObjective

    cfg = dataclasses.replace(config, model=model.config)
    objective = DenoiserObjective(model, cfg)
    meter = _ContributionMeter(model)
    try:
        for i, batch in enumerate(batches):
            inputs, targets = batch.inputs.to(device), batch.targets.to(device)
            h, w = model.config.latent_size(inputs.shape[-1], inputs.shape[-2])
            shape = (*inputs.shape[:2], model.config.latent_channels, h, w)
            host = torch.Generator().manual_seed(step_seed(config.seed, 2**21, i, 0))
            dev = torch.Generator(device).manual_seed(step_seed(config.seed, 2**21, i, 1))
            objective(inputs, targets, *text(batch.prompts), draw_forcing(cfg, shape, host, dev, device))
    finally:
        result = meter.result()
    return result


def prune_model(model: RestyleModel, target: ModelConfig, importance: Importance) -> RestyleModel:
    """A new ``RestyleModel(target)`` holding the most important heads and FFN units of each of
    ``model``'s blocks (in their original order) and every other weight unchanged."""
    cfg = model.config
    hd, a_old = cfg.head_dim, cfg.attn_dim
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}

    def keep(scores: torch.Tensor, n: int) -> torch.Tensor:
        return torch.topk(scores.float(), n, sorted=False).indices.sort().values

    for i in range(cfg.n_layers):
        p = f"dit.blocks.{i}."
        heads = keep(importance.attn[i], target.n_heads)
        cross = keep(importance.cross[i], target.n_heads)
        units = keep(importance.ffn[i], target.ffn_dim)
        cols, ccols = _head_cols(heads, hd), _head_cols(cross, hd)
        qkv_rows = torch.cat([part * a_old + cols for part in range(3)])
        kv_rows = torch.cat([part * a_old + ccols for part in range(2)])
        for name, index, dim in (
            ("qkv.weight", qkv_rows, 0), ("qkv.bias", qkv_rows, 0), ("frame_emb", heads, 1),
            ("attn_out.weight", cols, 1),
            ("cross_q.weight", ccols, 0), ("cross_q.bias", ccols, 0),
            ("cross_kv.weight", kv_rows, 0), ("cross_kv.bias", kv_rows, 0), ("cross_out.weight", ccols, 1),
            ("ffn_in.weight", units, 0), ("ffn_in.bias", units, 0), ("ffn_out.weight", units, 1),
        ):
            state[p + name] = state[p + name].index_select(dim, index.to(state[p + name].device))
    pruned = RestyleModel(target)
    pruned.load_state_dict(state)
    return pruned.to(next(model.parameters()).device).eval()


# ---- measuring and the stage itself ----------------------------------------------------------------
@torch.no_grad()
def step_ms(model: RestyleModel, text_encoder, width: int, height: int, device: torch.device,
            iters: int = 20, warmup: int = 3) -> float:
    """Median milliseconds of one ``StreamGenerator.step`` (one session, frames in to frames out)
    on ``device``: bfloat16 on CUDA, float32 elsewhere. ``model`` itself is left as it was."""
    import copy

    from ..generator import StreamGenerator

    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    gen = StreamGenerator(copy.deepcopy(model).to(device=device, dtype=dtype), text_encoder)
    session = gen.open_session(width, height, "a comic book drawing", seed=0)
    frames = torch.zeros(1, model.config.frames_per_step, 3, height, width, device=device, dtype=dtype)
    times = []
    for k in range(warmup + iters):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        gen.step([session], frames)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if k >= warmup:
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def measure(trainer, model: RestyleModel) -> dict[str, Any]:
    """Sizes, params and the eval loss on the trainer's fixed eval batches (None without any)."""
    return {
        "n_heads": model.config.n_heads,
        "ffn_dim": model.config.ffn_dim,
        "dit_params": sum(p.numel() for p in model.dit.parameters()),
        "params": sum(p.numel() for p in model.parameters()),
        "eval_loss": trainer.evaluate(model) if trainer.eval_data else None,
    }


def compare_speed(models: list[RestyleModel], trainer, iters: int, rounds: int = 3) -> list[float]:
    """Median step milliseconds of each model, timed in alternating rounds so that a busy or
    warming device penalises none of them more than the others."""
    cfg = trainer.config
    runs = [[step_ms(m, trainer.text.encoder, cfg.width, cfg.height, trainer.device, max(1, iters // rounds))
             for m in models] for _ in range(rounds)]
    return [statistics.median(r[i] for r in runs) for i in range(len(models))]


def run_prune(
    config: TrainConfig, source=None, eval_source=None, calib_source=None, text_encoder=None, timing_iters: int = 20,
) -> dict[str, Any]:
    """The prune stage: rank, cut and save (``pruned.safetensors``; skipped when resuming), then
    fine-tune the cut model with the denoiser objective and write ``prune_report.json``.

    ``config.init`` is the model to prune; ``config.model`` is replaced by the pruned config.
    Sources and the text encoder default to the configured ones (tests pass their own).
    Returns the report."""
    from ..text import TextEncoder
    from .distributed import dist_env, resolve_device
    from .loop import PromptEmbeddings, Trainer
    from .sources import make_source
    from .state import STATE_FILENAME, load_init_model

    if dist_env().enabled:
        raise ValueError("run the prune stage in one process (its fine-tune is short): not under torchrun")
    out = Path(config.out_dir)
    full = load_init_model(config.init)
    target = pruned_config(full.config, config.prune)
    config = dataclasses.replace(config, model=target)
    pruned_path = out / PRUNED_FILENAME
    device = resolve_device(config.device, dist_env())
    text_encoder = text_encoder or TextEncoder(target.text_tokens, cache_size=4096)
    resuming = config.resume and (out / STATE_FILENAME).is_file()
    if not resuming:
        if (out / STATE_FILENAME).exists():
            raise ValueError(f"{out} already holds a training run: pass --resume to continue it, or another --out")
        full.to(device).eval()
        if config.prune.importance == "activation":
            calib = calib_source or make_source(config, "train", 4096, device)  # a stream no training rank draws
            batches = [calib.sample(config.batch_size) for _ in range(config.prune.calib_batches)]
            scores = activation_importance(full, config, batches, PromptEmbeddings(text_encoder, device), device)
        else:
            scores = magnitude_importance(full)
        save_checkpoint(prune_model(full, target, scores), pruned_path)
    elif not pruned_path.is_file():
        raise FileNotFoundError(f"cannot resume {out}: {PRUNED_FILENAME} is missing; start the prune in a new --out")

    trainer = Trainer(dataclasses.replace(config, init=str(pruned_path)), source, eval_source, text_encoder)
    try:
        before = measure(trainer, full.to(trainer.device))
        cut = measure(trainer, load_init_model(pruned_path).to(trainer.device))  # before the fine-tune
        summary = trainer.train()
        after = measure(trainer, trainer.ema)
        if timing_iters:
            before["step_ms"], after["step_ms"] = compare_speed([full, trainer.ema], trainer, timing_iters)
    finally:
        trainer.close()
    report = {
        "event": "prune", "init": str(config.init), "model": full.config.name,
        "device": str(trainer.device), "tile": config.prune.tile, "importance": config.prune.importance,
        "fine_tune_steps": summary["step"], "before": before,
        "pruned": {"eval_loss": cut["eval_loss"]}, "after": after,
        "frame": f"{config.width}x{config.height}",
        "speedup": before["step_ms"] / after["step_ms"] if timing_iters else None,
        "checkpoint": str(out / "model.safetensors"),
    }
    (out / REPORT_FILENAME).write_text(json.dumps(report, indent=2) + "\n")
    return report

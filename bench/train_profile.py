"""Where a training step's time goes: a stage of the trainer under torch.profiler.

Builds the trainer exactly as ``morphcam train STAGE`` would from the same flags (no eval
batches, a throw-away run folder), runs ``--warmup-steps`` steps (the pool fills there), times
``--profile-steps`` steps plainly, then profiles as many more, and prints:

- seconds per step, and the host seconds per step spent drawing the batch (``data_s_per_step``,
  as the train log has it), both from the plain window;
- the GPU busy share: the summed kernel (and memcpy/memset) time over the profiled wall time;
  ``gpu_busy_est`` sets the same kernel time against the plain window's step time instead
  (the profiler slows the host, not the kernels);
- that time per step in categories, and the 15 kernels that take most of it;
- the host's time per step inside the scopes below (the batch draw, the eager DiT forwards such
  as self-rollouts, the frozen autoencoder), from the profiled window: where a host-bound step's
  time goes;
- on a GPU, the calls that made the host wait for the GPU in ``--sync-steps`` more steps, by
  source line (``torch.cuda.set_sync_debug_mode("warn")``; PyTorch calls it a prototype that
  does not catch every synchronising operation).

On a CPU there are no kernels: the categories and the top 15 are over the ops' self CPU time,
and the busy shares are null (a smoke test, not a measurement).

Categories, the first that fits wins (``classify``):

- ``autoencoder``: everything the frozen autoencoder runs (its convolutions, norms and
  activations), in the step or, with ``--pool-latents``, in the pool as clips come in;
- ``optimizer_ema``: AdamW, gradient clipping's foreach ops and the EMA update;
- ``clip_making``: the rest of the batch draw (style teachers, synthetic camera, pool refresh);
- ``attention``: scaled-dot-product attention, forward and backward;
- ``dit_gemm``: matrix multiplies (the DiT's projections and FFN, forward and backward);
- ``other``: host/device copies, memsets, random draws, indexing and sorting;
- ``elementwise_norm``: everything else (norms, modulation, activations, casts, the loss).

    python bench/train_profile.py denoiser --device cuda --preset tiny --ae-skip --size 256x144 \\
        --frames 8 --batch 96 --pool 2048 --pool-refresh 12 --init runs/ae --profile-steps 10 \\
        --out profile.json

Add ``--pool-latents`` to see the step without its encoder.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile, record_function

CATEGORIES = ("autoencoder", "dit_gemm", "attention", "elementwise_norm", "optimizer_ema", "clip_making", "other")
AE_SCOPE = "morphcam.autoencoder"
DIT_SCOPE = "morphcam.dit"  # owns the Triton kernels of no-grad forwards (rollouts, teacher), which no aten op launches
DRAW_SCOPE = "morphcam.batch_draw"
GEMM_OPS = ("mm", "addmm", "bmm", "baddbmm", "matmul", "linear", "_scaled_mm", "addmv", "mv", "convolution",
            "_convolution", "cudnn_convolution", "mkldnn_convolution", "conv1d", "conv2d")
OTHER_OP_PREFIXES = ("normal_", "uniform_", "rand", "bernoulli", "multinomial", "exponential_", "index", "gather",
                     "scatter", "nonzero", "masked_select", "masked_scatter", "sort", "topk", "embedding",
                     "_local_scalar_dense", "item", "_pin_memory", "pin_memory")
NOT_OPS = ("ProfilerStep", "autograd::engine::evaluate_function")  # containers: their children hold the time


def classify(chain: list[str], kernel: str | None = None) -> str:
    """The category of time spent in ``chain[0]``: the op that owns it (launched the kernel
    ``kernel``, on a GPU), followed by its enclosing ops and scopes, outermost last."""
    op = chain[0]
    if AE_SCOPE in chain:
        return "autoencoder"
    # foreach ops: AdamW's, clipping's and the EMA's (on a CPU they run as one op per tensor inside).
    if any(n.startswith(("Optimizer.", "aten::_foreach_", "aten::_fused_adam")) for n in chain):
        return "optimizer_ema"
    if DRAW_SCOPE in chain:
        return "clip_making"
    if kernel is not None and kernel.startswith(("Memcpy", "Memset")):
        return "other"
    k = (kernel or "").lower()
    if any("scaled_dot_product" in n or "attention" in n.lower() for n in chain) or any(
            w in k for w in ("attention", "attn", "fmha", "flash")):
        return "attention"
    bare = op.removeprefix("aten::")
    if (op.startswith("aten::") and bare in GEMM_OPS) or any(
            op.startswith(k) and op.endswith("Backward0") for k in ("Mm", "Addmm", "Bmm", "Baddbmm", "Convolution")):
        return "dit_gemm"
    if "gemm" in k or k.startswith(("nvjet", "cutlass", "sm90_xmma", "sm80_xmma")):
        return "dit_gemm"
    if op.startswith("aten::") and bare.startswith(OTHER_OP_PREFIXES):
        return "other"
    return "elementwise_norm"


def _chain(event) -> list[str]:
    names = []
    while event is not None:
        names.append(event.name)
        event = event.cpu_parent
    return names


def timed_items(events, on_gpu: bool) -> tuple[list[tuple[str, str, float]], float]:
    """(name, category, microseconds) per kernel (GPU) or per op's self CPU time (CPU), and the
    total device time (kernels, memcpys and memsets, attributed to an op or not; on a CPU the
    ops' total). Device time no op claims is counted as ``other``."""
    items = []
    for e in events:
        if e.device_type != DeviceType.CPU:
            continue
        if on_gpu:
            for k in e.kernels:
                items.append((k.name, classify(_chain(e), k.name), float(k.duration)))
        elif not e.is_user_annotation and not e.name.startswith(NOT_OPS) and e.self_cpu_time_total > 0:
            items.append((e.name, classify(_chain(e)), float(e.self_cpu_time_total)))
    claimed = sum(us for _, _, us in items)
    if not on_gpu:
        return items, claimed
    # record_function ranges (the scopes above) also appear on the device's timeline, spanning the
    # kernels they enclose: they are not device work of their own.
    total = sum(e.time_range.elapsed_us() for e in events
                if e.device_type == DeviceType.CUDA and not e.is_user_annotation)
    if total > claimed:
        items.append(("(device time no op claims)", "other", total - claimed))
    return items, max(total, claimed)


class Scopes:
    """Profiler ranges around the frozen autoencoder's modules, the DiT forwards and the
    trainer's batch draw, so their kernels can be told apart (``classify``). ``draw_seconds``
    adds up the host time spent in the batch draw."""

    def __init__(self, trainer) -> None:
        self.draw_seconds = 0.0
        self._open: list[Any] = []
        for module in trainer.model.autoencoder.children():  # encode/decode are methods over these
            self._wrap(module, AE_SCOPE)
        dits = {id(m.dit): m.dit for m in (trainer.model, trainer.ema, trainer.teacher) if m is not None}
        for dit in dits.values():
            self._wrap(dit, DIT_SCOPE)
        draw = trainer.source.sample

        def timed_draw(n: int):
            t0 = time.perf_counter()
            with record_function(DRAW_SCOPE):
                batch = draw(n)
            self.draw_seconds += time.perf_counter() - t0
            return batch

        trainer.source.sample = timed_draw  # on the instance: the pool stays a ClipPool to the trainer

    def _wrap(self, module: torch.nn.Module, name: str) -> None:
        def enter(module, args) -> None:
            scope = record_function(name)
            scope.__enter__()
            self._open.append(scope)

        module.register_forward_pre_hook(enter)
        module.register_forward_hook(lambda module, args, out: self._open.pop().__exit__(None, None, None))


def build_trainer(args: argparse.Namespace, run_dir: Path):
    """The stage's Trainer from ``morphcam train`` flags, writing nothing outside ``run_dir``.
    The prune stage profiles its fine-tune: the --init model is cut by weight magnitude first."""
    from morphcam.model.train.cli import config_from_args
    from morphcam.model.train.loop import Trainer

    args = argparse.Namespace(**{**vars(args), "out": str(run_dir / "run"), "resume": False})
    cfg = dataclasses.replace(config_from_args(args), eval_batches=0)
    if cfg.stage == "prune":
        from morphcam.model.checkpoint import save_checkpoint
        from morphcam.model.train.prune import magnitude_importance, prune_model, pruned_config
        from morphcam.model.train.state import load_init_model

        full = load_init_model(cfg.init)
        target = pruned_config(full.config, cfg.prune)
        path = save_checkpoint(prune_model(full, target, magnitude_importance(full)), run_dir / "pruned.safetensors")
        cfg = dataclasses.replace(cfg, model=target, init=str(path))
    return Trainer(cfg)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


SCOPE_NAMES = {DRAW_SCOPE: "batch_draw", DIT_SCOPE: "dit_eager_forwards", AE_SCOPE: "autoencoder"}


def host_scopes(events, steps: int) -> dict[str, float]:
    """Host seconds per step inside each scope (``SCOPE_NAMES``), outermost ranges only, so a
    scope nested in another of the same name is not counted twice."""
    out = dict.fromkeys(SCOPE_NAMES.values(), 0.0)
    for e in events:
        if e.device_type != DeviceType.CPU or e.name not in SCOPE_NAMES:
            continue
        parent = e.cpu_parent
        while parent is not None and parent.name != e.name:
            parent = parent.cpu_parent
        if parent is None:
            out[SCOPE_NAMES[e.name]] += e.time_range.elapsed_us() / 1e6 / steps
    return out


def sync_sites(trainer, steps: int) -> dict[str, float]:
    """Synchronising calls per step by source line, over ``steps`` steps under PyTorch's sync
    debug mode (CUDA only)."""
    import warnings

    counts: dict[str, int] = defaultdict(int)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            for _ in range(steps):
                trainer.train_step()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    for w in caught:
        if "called a synchronizing" in str(w.message):
            counts[f"{w.filename}:{w.lineno}"] += 1
    return {site: n / steps for site, n in sorted(counts.items(), key=lambda kv: -kv[1])}


def profile_trainer(trainer, warmup_steps: int, steps: int, sync_steps: int = 0) -> dict[str, Any]:
    """Warm up, time ``steps`` steps plainly, profile ``steps`` more, then (CUDA) look for
    synchronising calls in ``sync_steps`` more; returns the report (see the module docstring;
    times per step in seconds)."""
    dev, on_gpu = trainer.device, trainer.device.type == "cuda"
    scopes = Scopes(trainer)
    trainer.model.train()
    (trainer.model.dit if trainer.config.stage == "autoencoder" else trainer.model.autoencoder).eval()
    for _ in range(warmup_steps):
        trainer.train_step()
    _sync(dev)
    scopes.draw_seconds, t0 = 0.0, time.perf_counter()
    for _ in range(steps):
        trainer.train_step()
    _sync(dev)
    plain = (time.perf_counter() - t0) / steps
    data = scopes.draw_seconds / steps

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if on_gpu else [])
    with profile(activities=activities) as prof:
        t0 = time.perf_counter()
        for _ in range(steps):
            trainer.train_step()
        _sync(dev)
        wall = time.perf_counter() - t0
    items, total_us = timed_items(prof.events(), on_gpu)

    per_cat = dict.fromkeys(CATEGORIES, 0.0)
    by_name: dict[str, dict[str, Any]] = defaultdict(lambda: {"us": 0.0, "calls": 0, "by_cat": defaultdict(float)})
    for name, cat, us in items:
        per_cat[cat] += us
        entry = by_name[name]
        entry["us"] += us
        entry["calls"] += 1
        entry["by_cat"][cat] += us
    measured = sum(per_cat.values())
    top = sorted(by_name.items(), key=lambda kv: -kv[1]["us"])[:15]
    report: dict[str, Any] = {
        "s_per_step": plain,
        "data_s_per_step": data,
        "profiled_s_per_step": wall / steps,
        "time_kind": "kernel" if on_gpu else "op self CPU",
        "timed_s_per_step": total_us / 1e6 / steps,
        "gpu_busy": total_us / 1e6 / wall if on_gpu else None,
        "gpu_busy_est": min(1.0, total_us / 1e6 / steps / plain) if on_gpu else None,
        "categories": {c: {"s_per_step": us / 1e6 / steps, "share": us / measured if measured else 0.0}
                       for c, us in per_cat.items()},
        "host_s_per_step": host_scopes(prof.events(), steps),
        "sync_sites_per_step": sync_sites(trainer, sync_steps) if on_gpu and sync_steps > 0 else None,
        "top": [{"name": name, "category": max(e["by_cat"], key=e["by_cat"].get), "s_per_step": e["us"] / 1e6 / steps,
                 "share": e["us"] / measured if measured else 0.0, "calls_per_step": e["calls"] / steps}
                for name, e in top],
    }
    memory = getattr(trainer.source, "memory", None)
    if callable(memory):
        report["pool_bytes"] = memory()
    return report


def print_report(report: dict[str, Any]) -> None:
    busy = report["gpu_busy"]
    print(f"{report['stage']} on {report['device']}: {report['s_per_step']:.4f} s/step, "
          f"batch draw {report['data_s_per_step']:.4f} host s/step, "
          + (f"GPU busy {busy:.1%} (est. {report['gpu_busy_est']:.1%} unprofiled)" if busy is not None else "no GPU"))
    print(f"{report['time_kind']} time per step: {report['timed_s_per_step'] * 1e3:.2f} ms")
    for cat, v in report["categories"].items():
        print(f"  {cat:18s} {v['s_per_step'] * 1e3:9.2f} ms  {v['share']:6.1%}")
    print("top 15:")
    for t in report["top"]:
        print(f"  {t['s_per_step'] * 1e3:9.3f} ms {t['share']:6.1%} {t['calls_per_step']:7.1f}/step  "
              f"{t['category']:16s} {t['name'][:100]}")
    host = report.get("host_s_per_step") or {}
    print(f"host time per step (profiled, of {report['profiled_s_per_step'] * 1e3:.1f} ms): "
          + ", ".join(f"{k} {v * 1e3:.1f} ms" for k, v in host.items()))
    sites = report.get("sync_sites_per_step")
    if sites is not None:
        print(f"synchronising calls per step: {sum(sites.values()):.1f}" + ("" if sites else " (none found)"))
        for site, n in list(sites.items())[:15]:
            print(f"  {n:6.1f}  {site}")


def main(argv: list[str] | None = None) -> int:
    from morphcam.model.train.cli import add_arguments

    # "resolve": --out names the JSON report here; the run folder is a temporary one.
    parser = argparse.ArgumentParser(prog="python bench/train_profile.py", conflict_handler="resolve",
                                     description="profile training steps of a stage (same flags as morphcam train)")
    add_arguments(parser)
    parser.add_argument("--warmup-steps", type=int, default=3, help="steps before timing (the pool fills in the first)")
    parser.add_argument("--profile-steps", type=int, default=10, help="steps timed, then as many profiled")
    parser.add_argument("--sync-steps", type=int, default=2,
                        help="steps run last under CUDA's sync debug mode, to name the calls that wait for the GPU")
    parser.add_argument("--out", dest="report", help="write the report as JSON here")
    args = parser.parse_args(argv)
    if args.profile_steps < 1 or args.warmup_steps < 0:
        parser.error("--profile-steps must be >= 1 and --warmup-steps >= 0")
    with tempfile.TemporaryDirectory(prefix="train-profile-") as tmp:
        trainer = build_trainer(args, Path(tmp))
        try:
            report = profile_trainer(trainer, args.warmup_steps, args.profile_steps, args.sync_steps)
        finally:
            trainer.close()
    cfg = trainer.config
    report = {
        "stage": cfg.stage, "device": torch.cuda.get_device_name(trainer.device) if trainer.device.type == "cuda"
        else str(trainer.device), "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["python", "bench/train_profile.py", *(sys.argv[1:] if argv is None else argv)]),
        "torch": torch.__version__, "batch": cfg.batch_size, "frames": cfg.frames, "size": f"{cfg.width}x{cfg.height}",
        "pool": cfg.pool_size, "pool_refresh": cfg.pool_refresh, "pool_latents": cfg.pool_latents,
        "warmup_steps": args.warmup_steps, "profile_steps": args.profile_steps, **report,
    }
    print_report(report)
    if args.report:
        Path(args.report).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

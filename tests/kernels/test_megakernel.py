"""The mega-kernel on a CPU: the instruction list and scheduler, the torch interpreter against the
plain model, the Triton program (TRITON_INTERPRET=1, one program) against the interpreter, the
diff tool, the watchdog and the generator's executor switch. Small configs (2 layers, dim 64)."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from morphcam.kernels import dispatch
from morphcam.kernels.megakernel import Op, Shape, compile_program
from morphcam.kernels.megakernel.diff import diff, random_dit, random_step, small_config
from morphcam.kernels.megakernel.executor import FUSE_NORMS_MAX_DIM, MegakernelError, MegakernelExecutor, attach, support
from morphcam.kernels.megakernel.buffers import StepBuffers
from morphcam.kernels.megakernel.interpreter import Interpreter
from morphcam.kernels.megakernel.program import OP, SIGNAL, WAIT0, WAIT1, WAITS, last_instruction_of_layer, stage_of_layer
from morphcam.model.attention import StreamContext
from morphcam.model.kv_cache import KVRingCache

pytestmark = pytest.mark.skipif(not dispatch.is_available(), reason="needs triton (interpreter or GPU)")


def _stream(dit, executor, steps, device, seed=0):
    """Run ``steps`` stream steps through the plain model and through ``executor`` on twin caches;
    yields (velocity from the model, from the executor, model cache, executor cache) per step."""
    cfg = dit.config
    latent = cfg.latent_size(cfg.width, cfg.height)
    caches = [KVRingCache(cfg, latent, device, torch.float32) for _ in range(2)]
    gen = torch.Generator().manual_seed(seed)
    t = cfg.frames_per_step
    for _ in range(steps):
        x, cond = (torch.randn(1, t, cfg.latent_channels, *latent, generator=gen).to(device) for _ in range(2))
        sigma, step = (torch.rand(1, t, generator=gen).to(device) for _ in range(2))
        pooled = torch.randn(1, cfg.text_dim, generator=gen).to(device)
        tokens = torch.randn(1, cfg.text_tokens, cfg.text_dim, generator=gen).to(device)
        for c in caches:
            c.begin_chunk()
        with torch.inference_mode(), dispatch.force("torch"):
            ref = dit(x, cond, sigma, step, pooled, tokens, StreamContext([caches[0]]))
            out = executor.denoise(x, cond, sigma, step, pooled, tokens, StreamContext([caches[1]]))
        for c in caches:
            c.commit()
        yield ref, out, caches[0], caches[1]


def test_program_covers_every_tile_once_in_stage_order():
    cfg = dataclasses.replace(small_config(), n_layers=3)
    shape = Shape.from_config(cfg, tokens_per_frame=40, block_m=16, block_n=32, block_k=32, block_kv=16)
    prog = compile_program(shape, n_programs=7)
    table = prog.instructions
    queued = prog.queues[prog.queues >= 0]
    assert sorted(queued.tolist()) == list(range(len(table)))  # each instruction in exactly one queue
    for q, n in zip(prog.queues, prog.queue_len):  # queues walk the stages in order: no deadlock
        stages = prog.stage[q[:n].long()]
        assert (stages[1:] >= stages[:-1]).all()
    assert torch.bincount(prog.stage, minlength=len(prog.stage_names)).tolist() == prog.stage_tiles
    # The table itself is in stage order, whatever the number of programs: the interpreter and the
    # kernel's safe mode walk it row by row with no waits.
    assert (prog.stage[1:] >= prog.stage[:-1]).all()
    counter_stage = torch.tensor(prog.counter_stage)
    signals = torch.bincount(table[:, SIGNAL], minlength=prog.n_counters)
    assert (counter_stage[table[:, SIGNAL].long()] == prog.stage).all()  # a tile signals its own stage
    for w, t in WAITS:  # every wait: a counter of an earlier stage, until all its tiles are done
        waiting = table[table[:, w] >= 0]
        assert (counter_stage[waiting[:, w].long()] < prog.stage[table[:, w] >= 0]).all()
        assert (waiting[:, t] == signals[waiting[:, w].long()]).all()
    assert (table[prog.stage == 0][:, WAIT0] == -1).all()
    # 40 rows / 16 = 3 row tiles; 2 heads; slots = 1 sink + 2 window + 1 chunk.
    parts = table[(table[:, OP] == Op.ATTN_PART) & (table[:, 1] == 0)]
    assert len(parts) == 3 * 2 * cfg.cache_frames
    cross = table[(table[:, OP] == Op.CROSS_ATTN)]
    assert (cross[:, WAIT1] >= 0).all()  # cross-attention also waits for the prompt's K/V
    assert stage_of_layer(prog, 3) == len(prog.stage_names) - 1


def test_fused_norms_take_three_stages_per_layer_off(device):
    """The default layout: the matmuls that read a norm compute it, so a layer has 11 stages, not
    14, and the final norm goes too. It still makes the network's step; the old layout (LN stages
    writing h) stays available and the Triton program still matches the interpreter on it."""
    from morphcam.kernels.megakernel.program import FUSED_NORM

    cfg = small_config()
    shape = Shape.from_config(cfg, tokens_per_frame=40, block_m=16, block_n=32, block_k=32, block_kv=16)
    fused, split = compile_program(shape, 3), compile_program(shape, 3, fuse_norms=False)
    assert fused.fuse_norms and not split.fuse_norms
    assert [sum(n.startswith("L0.") for n in p.stage_names) for p in (split, fused)] == [14, 11]
    assert len(split.stage_names) - len(fused.stage_names) == 3 * cfg.n_layers + 1
    assert not (fused.instructions[:, OP] == Op.LN).any()
    assert (split.instructions[:, OP] == Op.LN).sum() == (3 * cfg.n_layers + 1) * 3  # 3 row tiles each
    # Each normed matmul waits for what its norm waited for: layer 1's QKV for layer 0's FFN-down.
    qkv1 = fused.instructions[(fused.instructions[:, OP] == Op.MM_QKV) & (fused.instructions[:, 1] == 1)]
    assert {fused.stage_names[fused.counter_stage[k]] for k in qkv1[:, WAIT0].tolist()} == {"L0.ffn_down"}
    assert set(FUSED_NORM) == {Op.MM_QKV, Op.MM_CQ, Op.MM_F1, Op.MM_OUT}
    dit = random_dit(cfg, device, torch.float32)
    ex = MegakernelExecutor(dit, backend="interpreter")
    assert ex.plan(24)[0].fuse_norms, "a narrow model fuses its norms by default"
    wide = random_dit(dataclasses.replace(cfg, dim=FUSE_NORMS_MAX_DIM + 64, n_heads=2), device, torch.float32)
    assert not MegakernelExecutor(wide, backend="interpreter").fuse_norms, "a wide one keeps them apart"
    assert MegakernelExecutor(wide, backend="interpreter", fuse_norms=True).fuse_norms
    for ref, out, c_ref, c_out in _stream(dit, ex, 3, device):
        torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(c_out.k, c_ref.k, rtol=1e-4, atol=1e-4)
    old = [MegakernelExecutor(dit, backend=b, fuse_norms=False) for b in ("interpreter", "triton")]
    rows = diff(*old, random_step(old[0]))
    assert all(r["finite"] and r["rel"] < 1e-5 for r in rows), rows
    for ref, out, _, _ in _stream(dit, old[0], 2, device, seed=2):
        torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)


def test_random_orders_the_waits_allow_give_the_same_step(device):
    """The dependency counters are complete: any interleaving of 5 programs' queues that the
    waits allow computes what the in-order run computes; without one wait it would not."""
    dit = random_dit(small_config(), device, torch.float32)
    ex = MegakernelExecutor(dit, backend="interpreter")
    start = random_step(ex)
    program = compile_program(ex.plan(start.cos.shape[0])[0].shape, n_programs=5)
    ref = start.clone()
    Interpreter(program, ex.weights, dit.config.norm_eps).run(ref)
    for seed in range(2):
        run = start.clone()
        order = Interpreter(program, ex.weights, dit.config.norm_eps).simulate(run, seed)
        assert order != sorted(order)
        for name in StepBuffers.WRITTEN:
            torch.testing.assert_close(run.named()[name], ref.named()[name], rtol=0, atol=0, msg=name)
    cut = program.instructions.clone()
    cut[cut[:, OP] == Op.MM_F1, WAIT0] = -1  # FFN-up no longer waits for the residual it normalises
    broken = dataclasses.replace(program, instructions=cut)
    for seed in range(3):
        run = start.clone()
        Interpreter(broken, ex.weights, dit.config.norm_eps).simulate(run, seed)
        if not torch.equal(run.out, ref.out):
            break
    else:
        raise AssertionError("a dropped wait went unnoticed")


def test_scheduler_balances_cost():
    from morphcam.model.config import ModelConfig

    cfg = ModelConfig.from_name("small")
    shape = Shape.from_config(cfg, cfg.tokens_per_frame(), block_m=64, block_n=64, block_k=64, block_kv=64)
    prog = compile_program(shape, n_programs=132)
    stage = prog.stage
    costs = torch.tensor(prog.costs)
    owner = torch.empty(len(costs), dtype=torch.long)
    for p, (q, n) in enumerate(zip(prog.queues, prog.queue_len)):
        owner[q[:n].long()] = p
    for s in range(len(prog.stage_names)):  # per stage: the busiest program within 2x of the ideal
        mine = stage == s
        load = torch.zeros(132).index_add_(0, owner[mine], costs[mine])
        ideal = max(costs[mine].sum() / 132, costs[mine].max())
        assert load.max() <= 2 * ideal + 1e-9, prog.stage_names[s]


@pytest.mark.parametrize("frames_per_step,pruned", [(1, False), (2, False), (1, True)])
def test_interpreter_equals_plain_model(device, frames_per_step, pruned):
    """Five steps: the ring (sinks + window + chunk) wraps, sinks stay pinned; also with
    attention narrower than dim (heads pruned: 2 heads of 16 in a dim-64 model)."""
    from morphcam.model.config import ModelConfig

    extra = {}
    if pruned:
        if "attn_head_dim" not in {f.name for f in dataclasses.fields(ModelConfig)}:
            pytest.skip("this model has no pruned attention width")
        extra = dict(attn_head_dim=16)
    cfg = small_config(frames_per_step=frames_per_step, sink_frames=frames_per_step,
                       window_frames=2 * frames_per_step, **extra)
    dit = random_dit(cfg, device, torch.float32)
    ex = MegakernelExecutor(dit, backend="interpreter")
    for ref, out, c_ref, c_out in _stream(dit, ex, 5, device):
        torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(c_out.k, c_ref.k, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(c_out.v, c_ref.v, rtol=1e-4, atol=1e-4)


def test_triton_program_equals_interpreter_and_model(device):
    """The persistent program (one program under the interpreter) against every buffer of the
    interpreter, then a stream of steps against the plain model."""
    dit = random_dit(small_config(), device, torch.float32)
    tri, ref = MegakernelExecutor(dit, backend="triton"), MegakernelExecutor(dit, backend="interpreter")
    rows = diff(ref, tri, random_step(ref))
    assert all(r["finite"] and r["rel"] < 1e-5 for r in rows), rows
    for ref_v, out, c_ref, c_out in _stream(dit, tri, 5, device, seed=1):
        torch.testing.assert_close(out, ref_v, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(c_out.k, c_ref.k, rtol=1e-5, atol=1e-5)


def test_diff_stops_after_an_instruction_or_a_layer(device):
    dit = random_dit(small_config(), device, torch.float32)
    a, b = MegakernelExecutor(dit, backend="interpreter"), MegakernelExecutor(dit, backend="triton")
    start = random_step(a)
    program = a.plan(start.cos.shape[0])[0]
    first = diff(a, a, start, stop_op=0)  # only instruction 0 (a QKV tile of layer 0) has run
    assert all(r["rel"] == 0 for r in first)
    # Stopping after layer 0: layer 1's buffers-to-be are untouched, so x differs from a full run.
    layer0 = diff(a, b, start, stop_layer=0)
    assert all(r["rel"] < 1e-5 for r in layer0), layer0
    last0 = last_instruction_of_layer(program, 0)
    assert Op(int(program.instructions[last0, OP])) == Op.MM_F2
    broken = MegakernelExecutor(dit, backend="interpreter")
    broken.weights.w_f1[1].mul_(1.5)  # a bug in layer 1 only: invisible when stopping after layer 0
    assert all(r["rel"] < 1e-6 for r in diff(a, broken, start, stop_layer=0))
    assert {r["name"] for r in diff(a, broken, start) if r["rel"] > 1e-4} >= {"x", "ffn", "out"}


def test_diff_command_line(capsys):
    from morphcam.kernels.megakernel.diff import main

    assert main(["--stop-layer", "0"]) == 0
    assert '"ok": true' in capsys.readouterr().out


def test_watchdog_turns_a_hang_into_an_error_and_a_fallback(device, caplog, rel_error):
    """Six programs under the interpreter run one after the other, so program 0 waits forever for
    program 1's tiles: the bounded spin must report it, and the next step must use the network.
    Safe mode then walks the six programs' table with program 0 alone."""
    if device != "cpu":
        pytest.skip("the deliberate deadlock needs the sequential interpreter")
    dit = random_dit(small_config(), device, torch.float32)
    ex = MegakernelExecutor(dit, backend="triton", n_programs=6, max_spin=50)
    _, out, _, cache = next(_stream(dit, ex, 1, device))
    with pytest.raises(MegakernelError, match="timed out waiting before instruction"):
        ex.check()
    assert ex.failed and "falling back" in ex.failed
    ex.check()  # raised once; from now on the network runs
    cfg = dit.config
    x = torch.randn(1, 1, cfg.latent_channels, *cfg.latent_size(cfg.width, cfg.height), device=device)
    args = (x, x, torch.ones(1, 1), torch.ones(1, 1), torch.zeros(1, cfg.text_dim), torch.zeros(1, cfg.text_tokens, cfg.text_dim))
    ctx = StreamContext([cache])
    assert not ex.runs(x, ctx)
    with torch.inference_mode():
        torch.testing.assert_close(ex.denoise(*args, ctx), dit(*args, ctx))
    # A graph captured with the kernel inside still launches it: the flag left set puts it in safe
    # mode (program 0 runs every tile in order, no waits), which computes the step correctly.
    start = random_step(ex)
    ref = start.clone()
    Interpreter(ex.plan(start.cos.shape[0])[0], ex.weights, cfg.norm_eps).run(ref)
    program, _, counters = ex.plan(start.cos.shape[0])
    run = start.clone()
    with torch.inference_mode():
        ex.execute(program, run, counters)
    for name in StepBuffers.WRITTEN:
        assert rel_error(run.named()[name], ref.named()[name]) < 1e-5, name
    ex.check()  # no second error: a warning that the graph should be recaptured
    assert "safe mode" in caplog.text


def test_safe_mode_after_a_launch_that_failed_midway(device, rel_error):
    """The GPU watchdog test on the CPU: one program gets through layer 0 (its residual updates land
    in x) and times out at the middle instruction, whose wait nothing satisfies. A stale graph's
    replay (prologue, then the launch, now in safe mode) still makes the network's step: safe mode
    ignores the corrupted wait, and the prologue rewrites what the failed launch left in x."""
    if device != "cpu":
        pytest.skip("the GPU version is test_megakernel_gpu.py::test_watchdog_turns_an_unsatisfiable_wait_into_an_error")
    from morphcam.kernels.megakernel.buffers import epilogue, prologue
    from morphcam.kernels.megakernel.program import TARGET0

    cfg = small_config()
    dit = random_dit(cfg, device, torch.float32)
    ex = MegakernelExecutor(dit, backend="triton", n_programs=1, max_spin=50)
    latent = cfg.latent_size(cfg.width, cfg.height)
    cache = KVRingCache(cfg, latent, device, torch.float32)
    cache.begin_chunk()
    gen = torch.Generator().manual_seed(0)
    t = cfg.frames_per_step
    args = (torch.randn(1, t, cfg.latent_channels, *latent, generator=gen),
            torch.randn(1, t, cfg.latent_channels, *latent, generator=gen),
            torch.rand(1, t, generator=gen), torch.rand(1, t, generator=gen),
            torch.randn(1, cfg.text_dim, generator=gen), torch.randn(1, cfg.text_tokens, cfg.text_dim, generator=gen))
    program, bufs, counters = ex.plan(cache.tokens_per_frame)
    middle = len(program.instructions) // 2
    assert program.stage[middle] > stage_of_layer(program, 0)  # layer 0 runs before the failure
    program.instructions[middle, TARGET0] = 1 << 30
    with torch.inference_mode(), dispatch.force("torch"):
        ex.denoise(*args, StreamContext([cache]))
        with pytest.raises(MegakernelError, match=f"instruction #{middle} "):
            ex.check()
        failed_x = bufs.x.clone()
        ref = dit(*args, StreamContext([cache]))
        prologue(dit, bufs, *args)
        assert rel_error(failed_x, bufs.x) > 0.1  # the failed launch had moved the residual stream on
        ex.execute(program, bufs, counters)
        ex.check()
        out = epilogue(dit, bufs, 1, *args[0].shape[-2:])
    assert rel_error(out, ref) < 1e-5


def test_support_reports_why_it_cannot_run(monkeypatch):
    assert "bfloat16" not in str(support("cpu", torch.float32))
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    if not torch.cuda.is_available():
        assert "CUDA" in support("cpu", torch.float32)


def test_generator_runs_the_megakernel_executor(device):
    """StreamGenerator with the mega-kernel (interpreter backend) makes the frames the network makes."""
    from morphcam.model.generator import StreamGenerator
    from morphcam.model.network import RestyleModel
    from morphcam.model.text import TextEncoder

    cfg = small_config()
    torch.manual_seed(0)
    model = RestyleModel(cfg).eval().to(device)
    model.dit.load_state_dict(random_dit(cfg, device, torch.float32).state_dict())
    text = TextEncoder(cfg.text_tokens, torch.device(device), torch.float32)
    gens = [StreamGenerator(model, text) for _ in range(2)]
    assert attach(gens[1], "megakernel", backend="interpreter") is None
    assert attach(gens[0], "graph") is None and gens[0].megakernel is None
    sessions = [g.open_session(64, 32, "pencil sketch", seed=3) for g in gens]
    for i in range(4):
        frame = torch.rand(1, 1, 3, 32, 64, device=device) * 2 - 1
        with dispatch.force("torch"):
            a, b = (g.step([s], frame) for g, s in zip(gens, sessions))
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="executor must be one of"):
        attach(gens[1], "fast")


def test_generator_falls_back_and_says_why(monkeypatch, caplog):
    from morphcam.model.generator import StreamGenerator
    from morphcam.model.network import RestyleModel
    from morphcam.model.text import TextEncoder

    if torch.cuda.is_available():
        pytest.skip("needs a machine without CUDA")
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    cfg = small_config()
    gen = StreamGenerator(RestyleModel(cfg).eval(), TextEncoder(cfg.text_tokens, torch.device("cpu"), torch.float32))
    reason = gen.use_executor("megakernel")
    assert "needs a CUDA GPU" in reason and gen.megakernel is None
    assert "falls back to the CUDA-graph path" in caplog.text


def test_config_chooses_the_executor():
    from morphcam.daemon import config

    assert config.parse({}).section("model").executor == "graph"
    assert config.parse({"model": {"executor": "megakernel"}}).section("model").executor == "megakernel"
    with pytest.raises(config.ConfigError, match="model.executor must be"):
        config.parse({"model": {"executor": "fast"}})


def test_a_lane_of_a_pool(device):
    """A batch-1 step on lane 2 of a LanePool (the lane read on the device): the mega-kernel writes
    that lane's ring and makes the network's velocity; the other lanes stay untouched."""
    from morphcam.model.cache_batch import LaneCaches, LanePool

    cfg = small_config()
    dit = random_dit(cfg, device, torch.float32)
    ex = MegakernelExecutor(dit, backend="triton")
    latent = cfg.latent_size(cfg.width, cfg.height)
    pools = [LanePool(cfg, latent, 3, device, torch.float32) for _ in range(2)]
    lanes = torch.tensor([2], device=device)
    gen = torch.Generator().manual_seed(0)
    for _ in range(4):
        x, cond = (torch.randn(1, 1, cfg.latent_channels, *latent, generator=gen) for _ in range(2))
        args = (x, cond, torch.rand(1, 1, generator=gen), torch.rand(1, 1, generator=gen),
                torch.randn(1, cfg.text_dim, generator=gen), torch.randn(1, cfg.text_tokens, cfg.text_dim, generator=gen))
        outs = []
        for pool, run in zip(pools, (dit, ex)):
            caches = LaneCaches(pool, lanes)
            caches.begin_chunk()
            with torch.inference_mode(), dispatch.force("torch"):
                outs.append(run(*args, caches.context()))
            caches.commit_device()
        torch.testing.assert_close(outs[1], outs[0], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(pools[1].k, pools[0].k, rtol=1e-5, atol=1e-5)
    assert pools[1].k[:2].abs().sum() == 0 and pools[1].k[2].abs().sum() > 0


def test_a_launch_that_fails_falls_back_to_the_network(device, monkeypatch, caplog):
    """E.g. Triton's OutOfResources on a GPU with less shared memory than the tiles need."""
    from morphcam.kernels.megakernel import kernel

    def out_of_resources(*args, **kwargs):
        raise RuntimeError("out of resource: shared memory, Required: 155648, Hardware limit: 101376")

    monkeypatch.setattr(kernel, "launch", out_of_resources)
    dit = random_dit(small_config(), device, torch.float32)
    ex = MegakernelExecutor(dit, backend="triton")
    ref, out, c_ref, c_out = next(_stream(dit, ex, 1, device))
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(c_out.k, c_ref.k)
    assert "shared memory" in ex.failed and "using the network" in caplog.text


def test_compiles_for_hopper_with_acquire_and_release():
    """The persistent program compiled for sm_90 with Triton's own ptxas (no GPU needed): it fits in
    an H100's shared memory, the spins end in acquire loads, and a CTA barrier precedes each release."""
    import json
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    run = subprocess.run([sys.executable, "-m", "morphcam.kernels.megakernel.report", "--preset", "tiny"],
                         capture_output=True, text=True, env=env, timeout=240)
    if run.returncode and "ptxas" in run.stderr:
        pytest.skip("this Triton has no bundled ptxas")
    assert run.returncode == 0, run.stderr[-2000:]
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert report["shared_bytes"] <= 227 * 1024
    assert report["acquire_loads"] >= 3 and report["release_adds"] >= 1 and report["barrier_before_release"]
    assert report["volatile_spin_loads"] > 0


def test_normed_matmul_tile_on_rows_wider_than_a_k_chunk(device):
    """The fused norm's statistics are merged over K-chunks: a width of 80 (two full chunks of 32
    and a partial one), rows far from zero mean, two frames with their own modulation, and a
    partial row tile, against LayerNorm in torch."""
    from helpers.megakernel_tiles import normed_matmul

    gen = torch.Generator().manual_seed(0)
    rows, k, cols, n_tok, t, eps = 20, 80, 32, 10, 2, 1e-6
    x = (100 + 3 * torch.randn(rows, k, generator=gen)).to(device)
    w, b = torch.randn(cols, k, generator=gen).to(device), torch.randn(cols, generator=gen).to(device)
    ac = torch.randn(2, t, k, generator=gen).to(device)
    out = torch.zeros(rows, cols, device=device)
    normed_matmul[(2,)](x, w, b, out, ac, rows, cols, k, n_tok, t, eps, BM=16, BN=32, BK=32)
    frame = torch.arange(rows, device=device) // n_tok
    h = torch.nn.functional.layer_norm(x, (k,), eps=eps) * ac[0, frame] + ac[1, frame]
    torch.testing.assert_close(out, h @ w.T + b, rtol=1e-4, atol=1e-4)

"""The mega-kernel's instruction list: one denoising step of the DiT at batch 1, split into tiles.

``compile_program(shape, n_programs)`` lists every tile of every op of every layer, grouped into
*stages* in dependency order, and assigns them to programs (one per SM on a GPU). Each
instruction is one row of an int32 table::

    [op, layer, a, b, c, wait0, target0, wait1, target1, signal]

``a, b, c`` are the tile's coordinates (see ``Op``). Each tile adds one to its ``signal`` counter
when done; before it runs it waits until counter ``wait0`` reaches ``target0`` and ``wait1``
reaches ``target1`` (-1: no wait). Counters live in global memory (an int32 tensor, zeroed
before each launch); most are per stage and row tile, so row tile r of the next op starts as
soon as row tile r of this one is done, without a barrier over the whole stage. Dependencies
only point to earlier stages and each program walks its queue in stage order, so with every
program resident at once the lowest unfinished stage can always progress: no deadlock.

Per layer (``N`` tokens per frame, ``M = frames * N`` query rows in row tiles r, ``S`` cache
slots; ``A = heads * head_dim`` is ``dim`` unless heads were pruned), with what each tile waits for::

    MM_QKV       r x cols   qkv = norm1(x) @ Wqkv^T + b             FFN_DOWN of the layer before, row r
    QK_ROPE      r x head   rms + rope of q, k; k, v -> the ring    MM_QKV row r
    ATTN_PART    r x head x slot  online-softmax partial            every QK_ROPE tile (the chunk's K/V)
    MM_CKV       text rows  ckv = text @ Wckv^T + b                 every QK_ROPE tile (so the layer
                                                                    before's cross-attention is done)
    ATTN_REDUCE  r x head   merge the S partials -> attn            ATTN_PART r, head
    MM_O         r x cols   x += gate1 * (attn @ Wo^T + b)          ATTN_REDUCE r
    MM_CQ        r x cols   cq = LayerNorm(x; w, b) @ Wcq^T + b     MM_O r
    CROSS_ATTN   r x head   softmax(cq k^T) v over the prompt       MM_CQ r and every MM_CKV tile
    MM_CO        r x cols   x += attn @ Wco^T + b                   CROSS_ATTN r
    MM_F1        r x cols   ffn = gelu(norm2(x) @ W1^T + b)         MM_CO r
    MM_F2        r x cols   x += gate2 * (ffn @ W2^T + b)           MM_F1 r

with norm1(x) = LN(x) * (1 + scale1) + shift1 and norm2 likewise (adaLN), then ``MM_OUT``
(patch_out of the final adaLN), per row tile. The matmuls that read a norm (``FUSED_NORM``)
compute it themselves from ``x``: each column tile recomputes its row tile's mean and variance
(one pass over K-chunks), then normalises each K-chunk as its K loop loads it. That costs a few
redundant row reductions and saves three dependent stages per layer (one ``LN`` stage each)
on the critical path. ``compile_program(..., fuse_norms=False)`` keeps the norms as ``Op.LN``
stages writing ``h`` (read by the matmuls) before each of those four matmuls.

Every buffer reused across layers is rewritten only after its readers are done (the waits above
imply it; ``interpreter.simulate`` runs random orders the waits allow to check it). With the
norms fused, ``x``'s row r is next written (by ``MM_O``, ``MM_CO`` or ``MM_F2``) only after
every column tile of the matmul that normalises it has signalled.
"""
from __future__ import annotations

import dataclasses
import heapq
from dataclasses import dataclass
from enum import IntEnum

import torch

FIELDS = 10  # columns of the instruction table
OP, LAYER, A, B, C, WAIT0, TARGET0, WAIT1, TARGET1, SIGNAL = range(FIELDS)
WAITS = ((WAIT0, TARGET0), (WAIT1, TARGET1))


class Op(IntEnum):
    """Opcodes. Tile coordinates: ``a`` = first row, ``b`` = first column / head, ``c`` = slot."""

    LN = 0  # a: first row; b: which norm (Norm)
    MM_QKV = 1  # a: first row; b: first output column
    QK_ROPE = 2  # a: first row; b: head
    ATTN_PART = 3  # a: first row; b: head; c: cache slot
    ATTN_REDUCE = 4  # a: first row; b: head
    MM_O = 5
    MM_CKV = 6  # a: first text row
    MM_CQ = 7
    CROSS_ATTN = 8  # a: first row; b: head
    MM_CO = 9
    MM_F1 = 10
    MM_F2 = 11
    MM_OUT = 12


class Norm(IntEnum):
    """Which row-wise norm an ``Op.LN`` tile computes (index into ``norm_ac``'s second axis)."""

    ATTN = 0  # adaLN before self-attention (also the final adaLN at layer = n_layers)
    CROSS = 1  # the cross-attention LayerNorm (affine)
    FFN = 2  # adaLN before the FFN


# The matmuls whose input is a norm of x, and which norm (the final MM_OUT: ATTN at layer = n_layers).
FUSED_NORM = {Op.MM_QKV: Norm.ATTN, Op.MM_CQ: Norm.CROSS, Op.MM_F1: Norm.FFN, Op.MM_OUT: Norm.ATTN}


@dataclass(frozen=True)
class Shape:
    """Sizes of one step: model sizes plus the stream's tokens and the tile sizes.

    ``block_m`` rows per tile (query rows for attention), ``block_n`` output columns per matmul
    tile, ``block_k`` the reduction step, ``block_kv`` keys per attention inner step.
    """

    n_layers: int
    dim: int
    n_heads: int
    ffn_dim: int
    out_dim: int  # patch_out features: patch_size**2 * latent_channels
    text_tokens: int
    frames: int  # frames per step (T)
    tokens_per_frame: int  # N
    slots: int  # cache slots S
    frame_positions: int
    attn_dim: int = 0  # all heads side by side; 0 = dim (heads pruned from a model make it smaller)
    block_m: int = 16
    block_n: int = 32
    block_k: int = 32
    block_kv: int = 32

    @property
    def rows(self) -> int:
        """Query rows M = T * N."""
        return self.frames * self.tokens_per_frame

    @property
    def attn_width(self) -> int:
        """Width A of the attention projections (q, k, v, cross q/k/v and the outputs' inputs)."""
        return self.attn_dim or self.dim

    @property
    def head_dim(self) -> int:
        return self.attn_width // self.n_heads

    @classmethod
    def from_config(cls, config, tokens_per_frame: int, **tiles: int) -> "Shape":
        """Shape of ``config`` (a ``ModelConfig``) streaming frames of ``tokens_per_frame`` tokens."""
        return cls(
            n_layers=config.n_layers, dim=config.dim, n_heads=config.n_heads, ffn_dim=config.ffn_dim,
            out_dim=config.patch_size**2 * config.latent_channels, text_tokens=config.text_tokens,
            frames=config.frames_per_step, tokens_per_frame=tokens_per_frame, slots=config.cache_frames,
            frame_positions=config.frame_positions, attn_dim=getattr(config, "attn_dim", config.dim), **tiles,
        )


@dataclass
class Program:
    """A compiled step: the instruction table, the per-program queues and the counters.

    instructions: (I, FIELDS) int32; queues: (P, Q) int32 instruction indices, -1 padded;
    queue_len: (P,) int32; stage: (I,) int32, each instruction's stage; stage_names[s] names
    stage s and stage_tiles[s] is its tile count; counter_stage[k]: the stage counter k belongs to;
    costs[i]: instruction i's estimated time (us); fuse_norms: the ``FUSED_NORM`` matmuls
    normalise ``x`` themselves (no ``Op.LN`` tiles, ``h`` unused).
    """

    shape: Shape
    instructions: torch.Tensor
    queues: torch.Tensor
    queue_len: torch.Tensor
    stage: torch.Tensor
    stage_names: list[str]
    stage_tiles: list[int]
    counter_stage: list[int]
    costs: list[float]
    fuse_norms: bool = True

    @property
    def n_programs(self) -> int:
        return self.queues.shape[0]

    @property
    def n_counters(self) -> int:
        return len(self.counter_stage)

    def to(self, device) -> "Program":
        return dataclasses.replace(self, instructions=self.instructions.to(device), queues=self.queues.to(device),
                                   queue_len=self.queue_len.to(device))

    def describe(self, index: int) -> str:
        """Human-readable form of instruction ``index`` (for diffs and watchdog errors)."""
        row = self.instructions[index].tolist()
        op = Op(row[OP])
        extra = f" norm={Norm(row[B]).name}" if op == Op.LN else f" b={row[B]} c={row[C]}"
        return f"#{index} {op.name} layer={row[LAYER]} a={row[A]}{extra} stage={self.stage_names[int(self.stage[index])]}"


# Nominal device rates for the cost estimate (H100-class; only the ratios matter for balancing).
_FLOPS_PER_US = 400e6
_BYTES_PER_US = 2.5e6
_TILE_OVERHEAD_US = 0.5  # wait + signal + loop bookkeeping per tile


def _cost(flops: float, nbytes: float) -> float:
    return _TILE_OVERHEAD_US + max(flops / _FLOPS_PER_US, nbytes / _BYTES_PER_US)


@dataclass
class _Tile:
    fields: tuple[int, ...]  # op, layer, a, b, c
    cost: float
    group: int  # which of its stage's counters it signals (the row tile, mostly)
    deps: tuple[tuple[str, int], ...]  # (stage name, group) counters it waits for, complete


def _stages(shape: Shape, fuse_norms: bool) -> list[tuple[str, list[_Tile]]]:
    """Every stage in order with its tiles, their counters and what they wait for."""
    s = shape
    bm, bn, m, d, dh, a = s.block_m, s.block_n, s.rows, s.dim, s.head_dim, s.attn_width
    n_rt = -(-m // bm)  # row tiles
    elt = 2  # bf16 bytes
    out: list[tuple[str, list[_Tile]]] = []

    def ln(layer, which, dep):
        return [_Tile((Op.LN, layer, r * bm, which, 0), _cost(8 * bm * d, 2 * bm * d * elt), r,
                      ((dep, r),) if dep else ()) for r in range(n_rt)]

    def mm(op, layer, cols, k, dep, norm=False):
        # norm: the tile also computes its rows' statistics, one more pass over its (bm, k) rows of x
        flops, nbytes = 2 * bm * bn * k + 8 * bm * k * norm, (bm + bn + bm * norm) * k * elt
        return [_Tile((op, layer, r * bm, c, 0), _cost(flops, nbytes), r, ((dep, r),) if dep else ())
                for r in range(n_rt) for c in range(0, cols, bn)]

    def normed_mm(name, op, layer, cols, dep):
        """The stages of a matmul that reads norm ``FUSED_NORM[op]`` of x: one fused stage, or an
        LN stage writing h and the matmul reading it."""
        if fuse_norms:
            return [(name, mm(op, layer, cols, d, dep, norm=True))]
        which = FUSED_NORM[op]
        ln_name = "final.ln" if op == Op.MM_OUT else f"{name.split('.')[0]}.ln_{which.name.lower()}"
        return [(ln_name, ln(layer, which, dep)), (name, mm(op, layer, cols, d, ln_name))]

    prev = None  # the stage whose row-r counter the next layer's first norm (or normed matmul) waits for
    for layer in range(s.n_layers):
        n = s.tokens_per_frame
        p = f"L{layer}."
        heads = range(s.n_heads)
        rope = [_Tile((Op.QK_ROPE, layer, r * bm, h, 0), _cost(20 * bm * dh, 6 * bm * dh * elt), 0,
                      ((p + "qkv", r),)) for r in range(n_rt) for h in heads]
        part = [_Tile((Op.ATTN_PART, layer, r * bm, h, slot), _cost(4 * bm * n * dh, 2 * n * dh * elt),
                      r * s.n_heads + h, ((p + "qk_rope", 0),))
                for r in range(n_rt) for h in heads for slot in range(s.slots)]
        ckv = [_Tile((Op.MM_CKV, layer, t, c, 0), _cost(2 * bm * bn * d, (bm + bn) * d * elt), 0,
                     ((p + "qk_rope", 0),)) for t in range(0, s.text_tokens, bm) for c in range(0, 2 * a, bn)]
        reduce = [_Tile((Op.ATTN_REDUCE, layer, r * bm, h, 0), _cost(3 * s.slots * bm * dh, s.slots * bm * dh * 4),
                        r, ((p + "attn_part", r * s.n_heads + h),)) for r in range(n_rt) for h in heads]
        cross = [_Tile((Op.CROSS_ATTN, layer, r * bm, h, 0), _cost(4 * bm * s.text_tokens * dh, 2 * s.text_tokens * dh * elt),
                       r, ((p + "cross_q", r), (p + "ckv", 0))) for r in range(n_rt) for h in heads]
        out += normed_mm(p + "qkv", Op.MM_QKV, layer, 3 * a, prev)
        out += [
            (p + "qk_rope", rope),
            (p + "attn_part", part),
            (p + "ckv", ckv),
            (p + "attn_reduce", reduce),
            (p + "out_proj", mm(Op.MM_O, layer, d, a, p + "attn_reduce")),
        ]
        out += normed_mm(p + "cross_q", Op.MM_CQ, layer, a, p + "out_proj")
        out += [
            (p + "cross_attn", cross),
            (p + "cross_out", mm(Op.MM_CO, layer, d, a, p + "cross_attn")),
        ]
        out += normed_mm(p + "ffn_up", Op.MM_F1, layer, s.ffn_dim, p + "cross_out")
        out += [(p + "ffn_down", mm(Op.MM_F2, layer, d, s.ffn_dim, p + "ffn_up"))]
        prev = p + "ffn_down"
    out += normed_mm("final.patch_out", Op.MM_OUT, s.n_layers, s.out_dim, prev)
    return out


def compile_program(shape: Shape, n_programs: int, fuse_norms: bool = True) -> Program:
    """The instruction list of one denoising step and its assignment to ``n_programs`` queues.

    fuse_norms: the matmuls that read a norm compute it (the default); False: separate ``Op.LN``
    stages write ``h`` first (three stages more per layer, one more for the final norm).

    Scheduling: within each stage, tiles go largest estimated cost first to the program with the
    least work in that stage (ties: least work overall), so every stage ends as evenly as it can.
    """
    if n_programs < 1:
        raise ValueError("n_programs must be >= 1")
    stages = _stages(shape, fuse_norms)
    counter: dict[tuple[str, int], int] = {}  # (stage, group) -> counter index
    counter_stage: list[int] = []
    tiles_of: dict[int, int] = {}  # counter -> tiles that signal it
    for si, (name, tiles) in enumerate(stages):
        for t in tiles:
            key = (name, t.group)
            if key not in counter:
                counter[key] = len(counter_stage)
                counter_stage.append(si)
            tiles_of[counter[key]] = tiles_of.get(counter[key], 0) + 1
    rows: list[list[int]] = []
    stage_of: list[int] = []
    costs: list[float] = []
    queues: list[list[int]] = [[] for _ in range(n_programs)]
    total = [0.0] * n_programs
    for si, (name, tiles) in enumerate(stages):
        heap = [(0.0, total[p], p) for p in range(n_programs)]
        heapq.heapify(heap)
        for t in sorted(tiles, key=lambda t: -t.cost):
            waits = [(counter[dep], tiles_of[counter[dep]]) for dep in t.deps]
            if any(counter_stage[k] >= si for k, _ in waits):
                raise AssertionError(f"{name} waits for a later stage")  # the deadlock-freedom invariant
            waits += [(-1, 0)] * (2 - len(waits))
            load, _, p = heapq.heappop(heap)
            queues[p].append(len(rows))
            rows.append([int(f) for f in t.fields] + [v for w in waits for v in w] + [counter[(name, t.group)]])
            stage_of.append(si)
            costs.append(t.cost)
            total[p] += t.cost
            heapq.heappush(heap, (load + t.cost, total[p], p))
    width = max(len(q) for q in queues)
    table = torch.full((n_programs, max(width, 1)), -1, dtype=torch.int32)
    for p, q in enumerate(queues):
        table[p, : len(q)] = torch.tensor(q, dtype=torch.int32)
    return Program(
        shape=shape,
        instructions=torch.tensor(rows, dtype=torch.int32),
        queues=table,
        queue_len=torch.tensor([len(q) for q in queues], dtype=torch.int32),
        stage=torch.tensor(stage_of, dtype=torch.int32),
        stage_names=[name for name, _ in stages],
        stage_tiles=[len(tiles) for _, tiles in stages],
        counter_stage=counter_stage,
        costs=costs,
        fuse_norms=fuse_norms,
    )


def stage_of_layer(program: Program, layer: int) -> int:
    """Index of the last stage of ``layer`` (``n_layers`` = the final norm and projection)."""
    prefix = f"L{layer}." if layer < program.shape.n_layers else "final."
    return max(i for i, name in enumerate(program.stage_names) if name.startswith(prefix))


def last_instruction_of_layer(program: Program, layer: int) -> int:
    """Index of the last instruction of ``layer`` (instructions are listed stage by stage)."""
    return int((program.stage <= stage_of_layer(program, layer)).nonzero().max())

"""The mega-kernel's instruction list: one denoising step of the DiT at batch 1, split into tiles.

``compile_program(config, shape, n_programs)`` lists every tile of every op of every layer in
dependency order, groups them into *stages* and assigns them to programs (one per SM on a GPU).
Each instruction is one row of an int32 table::

    [op, layer, a, b, c, wait_counter, wait_target, signal_counter]

``a, b, c`` are the tile's coordinates (see ``Op``). A stage is a set of tiles that may run in any
order; every tile of stage ``s`` waits until counter ``s - 1`` reaches the number of tiles of stage
``s - 1``, then runs, then adds one to counter ``s``. Counters live in global memory (an int32
tensor, zeroed before each launch). Because each program walks its queue in stage order and all
programs are resident at once, the lowest unfinished stage can always progress: no deadlock.

Per layer (``N`` tokens per frame, ``M = frames * N`` query rows, ``S`` cache slots; the attention
width ``A = heads * head_dim`` is ``dim`` unless heads were pruned)::

    LN_ATTN      rows tile          h = LN(x) * (1 + scale1) + shift1
    MM_QKV       rows x cols tile   qkv = h @ Wqkv^T + b
    QK_ROPE      rows tile x head   q = rope(rms(q)); k = rope(rms(k)), v -> the KV ring's chunk slots
    ATTN_PART    rows x head x slot online-softmax partial (m, l, acc) over one cache slot
    ATTN_REDUCE  rows tile x head   merge the S partials -> attn (M, D)
    MM_O         rows x cols        x += gate1 * (attn @ Wo^T + b)
    LN_CROSS     rows tile          h = LayerNorm(x; w, b)          } one stage: the text K/V
    MM_CKV       text rows x cols   ckv = text @ Wckv^T + b         } do not depend on x
    MM_CQ        rows x cols        cq = h @ Wcq^T + b
    CROSS_ATTN   rows tile x head   attn = softmax(cq k^T) v over the prompt's tokens
    MM_CO        rows x cols        x += attn @ Wco^T + b
    LN_FFN       rows tile          h = LN(x) * (1 + scale2) + shift2
    MM_F1        rows x cols        ffn = gelu(h @ W1^T + b)
    MM_F2        rows x cols        x += gate2 * (ffn @ W2^T + b)

then the final ``LN_FINAL`` (final adaLN) and ``MM_OUT`` (patch_out) with ``layer = n_layers``.
"""
from __future__ import annotations

import heapq
from dataclasses import dataclass
from enum import IntEnum

import torch

FIELDS = 8  # columns of the instruction table
OP, LAYER, A, B, C, WAIT, TARGET, SIGNAL = range(FIELDS)


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
    """A compiled step: the instruction table, the per-program queues and the stage names.

    instructions: (I, FIELDS) int32; queues: (P, Q) int32 instruction indices, -1 padded;
    queue_len: (P,) int32; stage_names[s] names stage s (counter s); stage_tiles[s] its tile count.
    """

    shape: Shape
    instructions: torch.Tensor
    queues: torch.Tensor
    queue_len: torch.Tensor
    stage_names: list[str]
    stage_tiles: list[int]
    costs: list[float]

    @property
    def n_programs(self) -> int:
        return self.queues.shape[0]

    def to(self, device) -> "Program":
        return Program(self.shape, self.instructions.to(device), self.queues.to(device), self.queue_len.to(device),
                       self.stage_names, self.stage_tiles, self.costs)

    def describe(self, index: int) -> str:
        """Human-readable form of instruction ``index`` (for diffs and watchdog errors)."""
        row = self.instructions[index].tolist()
        op = Op(row[OP])
        extra = f" norm={Norm(row[B]).name}" if op == Op.LN else f" b={row[B]} c={row[C]}"
        return f"#{index} {op.name} layer={row[LAYER]} a={row[A]}{extra} stage={self.stage_names[row[SIGNAL]]}"


# Nominal device rates for the cost estimate (H100-class; only the ratios matter for balancing).
_FLOPS_PER_US = 400e6
_BYTES_PER_US = 2.5e6
_TILE_OVERHEAD_US = 0.5  # wait + signal + loop bookkeeping per tile


def _cost(flops: float, nbytes: float) -> float:
    return _TILE_OVERHEAD_US + max(flops / _FLOPS_PER_US, nbytes / _BYTES_PER_US)


def _stages(shape: Shape) -> list[tuple[str, list[tuple[tuple[int, ...], float]]]]:
    """Every stage in order: (name, [(instruction without the sync fields, estimated cost)])."""
    s = shape
    bm, bn, m, d, dh, a = s.block_m, s.block_n, s.rows, s.dim, s.head_dim, s.attn_width
    row_tiles = range(0, m, bm)
    elt = 2  # bf16 bytes

    def ln(layer, which):
        return [((Op.LN, layer, r, which, 0), _cost(8 * bm * d, 2 * bm * d * elt)) for r in row_tiles]

    def mm(op, layer, rows, cols, k):
        return [((op, layer, r, c, 0), _cost(2 * bm * bn * k, (bm + bn) * k * elt))
                for r in range(0, rows, bm) for c in range(0, cols, bn)]

    def heads(op, layer, keys):
        return [((op, layer, r, h, 0), _cost(4 * bm * keys * dh, 2 * keys * dh * elt))
                for r in row_tiles for h in range(s.n_heads)]

    out = []
    for layer in range(s.n_layers):
        n = s.tokens_per_frame
        part = [((Op.ATTN_PART, layer, r, h, slot), _cost(4 * bm * n * dh, 2 * n * dh * elt))
                for r in row_tiles for h in range(s.n_heads) for slot in range(s.slots)]
        reduce = [((Op.ATTN_REDUCE, layer, r, h, 0), _cost(3 * s.slots * bm * dh, s.slots * bm * dh * 4))
                  for r in row_tiles for h in range(s.n_heads)]
        rope = [((Op.QK_ROPE, layer, r, h, 0), _cost(20 * bm * dh, 6 * bm * dh * elt))
                for r in row_tiles for h in range(s.n_heads)]
        out += [
            (f"L{layer}.ln_attn", ln(layer, Norm.ATTN)),
            (f"L{layer}.qkv", mm(Op.MM_QKV, layer, m, 3 * a, d)),
            (f"L{layer}.qk_rope", rope),
            (f"L{layer}.attn_part", part),
            (f"L{layer}.attn_reduce", reduce),
            (f"L{layer}.out_proj", mm(Op.MM_O, layer, m, d, a)),
            (f"L{layer}.ln_cross+ckv", ln(layer, Norm.CROSS) + mm(Op.MM_CKV, layer, s.text_tokens, 2 * a, d)),
            (f"L{layer}.cross_q", mm(Op.MM_CQ, layer, m, a, d)),
            (f"L{layer}.cross_attn", heads(Op.CROSS_ATTN, layer, s.text_tokens)),
            (f"L{layer}.cross_out", mm(Op.MM_CO, layer, m, d, a)),
            (f"L{layer}.ln_ffn", ln(layer, Norm.FFN)),
            (f"L{layer}.ffn_up", mm(Op.MM_F1, layer, m, s.ffn_dim, d)),
            (f"L{layer}.ffn_down", mm(Op.MM_F2, layer, m, d, s.ffn_dim)),
        ]
    last = s.n_layers
    out += [("final.ln", ln(last, Norm.ATTN)), ("final.patch_out", mm(Op.MM_OUT, last, m, s.out_dim, d))]
    return out


def compile_program(shape: Shape, n_programs: int) -> Program:
    """The instruction list of one denoising step and its assignment to ``n_programs`` queues.

    Scheduling: within each stage, tiles go largest estimated cost first to the program with the
    least work in that stage (ties: least work overall), so every stage ends as evenly as it can.
    """
    if n_programs < 1:
        raise ValueError("n_programs must be >= 1")
    stages = _stages(shape)
    rows: list[list[int]] = []
    costs: list[float] = []
    queues: list[list[int]] = [[] for _ in range(n_programs)]
    total = [0.0] * n_programs
    for s, (_, tiles) in enumerate(stages):
        wait, target = (s - 1, len(stages[s - 1][1])) if s else (-1, 0)
        heap = [(0.0, total[p], p) for p in range(n_programs)]
        heapq.heapify(heap)
        for fields, cost in sorted(tiles, key=lambda t: -t[1]):
            load, _, p = heapq.heappop(heap)
            queues[p].append(len(rows))
            rows.append([int(f) for f in fields] + [wait, target, s])
            costs.append(cost)
            total[p] += cost
            heapq.heappush(heap, (load + cost, total[p], p))
    width = max(len(q) for q in queues)
    table = torch.full((n_programs, max(width, 1)), -1, dtype=torch.int32)
    for p, q in enumerate(queues):
        table[p, : len(q)] = torch.tensor(q, dtype=torch.int32)
    return Program(
        shape=shape,
        instructions=torch.tensor(rows, dtype=torch.int32),
        queues=table,
        queue_len=torch.tensor([len(q) for q in queues], dtype=torch.int32),
        stage_names=[name for name, _ in stages],
        stage_tiles=[len(tiles) for _, tiles in stages],
        costs=costs,
    )


def stage_of_layer(program: Program, layer: int) -> int:
    """Index of the last stage of ``layer`` (``n_layers`` = the final norm and projection)."""
    prefix = f"L{layer}." if layer < program.shape.n_layers else "final."
    return max(i for i, name in enumerate(program.stage_names) if name.startswith(prefix))

"""One mega-kernel tile as its own Triton launch, for tests of a tile body alone (imports Triton)."""
from __future__ import annotations

import triton
import triton.language as tl

from morphcam.kernels.megakernel.tiles import mm_tile


@triton.jit
def normed_matmul(x, w, b, out, ac, rows, cols, K, n_tok, T, eps,
                  BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr):
    """out = (LayerNorm(x) * ac[0, frame] + ac[1, frame]) @ w^T + b, one row tile per program."""
    mm_tile(x, w, b, out, b, ac, rows, cols, K, tl.program_id(0) * BM, 0, n_tok, T, eps, 0, True, BM, BN, BK, True)

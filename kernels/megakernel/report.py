"""Compile the mega-kernel for a GPU architecture on any machine (no GPU needed) and report it.

    python -m morphcam.kernels.megakernel.report --preset tiny          # sm_90, bf16
    python -m morphcam.kernels.megakernel.report --preset small --arch 80

Prints one JSON object: shared memory per program, local-memory instructions (spills), the
matrix instructions (HGMMA = wgmma, HMMA = mma), and the synchronisation in the PTX (acquire
loads after the spins, release adds with a CTA barrier before them).
"""
from __future__ import annotations

import argparse
import json
import os
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m morphcam.kernels.megakernel.report", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="tiny", help="a model preset, or small-cpu (the tests' config)")
    parser.add_argument("--dtype", default="bf16", choices=("bf16", "fp16", "fp32"))
    parser.add_argument("--arch", type=int, default=90, help="compute capability, e.g. 90 (Hopper), 80 (Ampere)")
    args = parser.parse_args(argv)
    if "triton" not in sys.modules:  # interpreted kernels cannot be compiled
        os.environ.pop("TRITON_INTERPRET", None)
    from morphcam.model.config import ModelConfig

    from .diff import small_config
    from .executor import gpu_tiles
    from .kernel import compile_report
    from .program import Shape

    cfg = small_config() if args.preset == "small-cpu" else ModelConfig.from_name(args.preset)
    shape = Shape.from_config(cfg, cfg.tokens_per_frame(), **gpu_tiles(cfg))
    print(json.dumps({"preset": args.preset, "dtype": args.dtype, **compile_report(shape, args.dtype, args.arch)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The mega-kernel: a whole denoising step of the DiT in one persistent Triton launch.

- ``program``: the instruction list (tiles of every op of every layer, in stages) and the
  scheduler that balances tiles over programs by estimated cost.
- ``buffers``: the one dataclass of weights and one of step buffers both executors share.
- ``interpreter``: the reference executor in plain torch.
- ``kernel`` / ``tiles``: the persistent ``@triton.jit`` program (imports Triton).
- ``executor``: ``MegakernelExecutor``, what ``StreamGenerator`` calls, with the watchdog.
- ``diff``: runs two executors on the same inputs and compares every buffer.

Importing this package does not import Triton.
"""
from .program import Norm, Op, Program, Shape, compile_program

__all__ = ["Norm", "Op", "Program", "Shape", "compile_program"]

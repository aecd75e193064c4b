"""The kernels of ``decode_diagnostics.py floor`` (a module of their own: Triton compiles module-level
functions, and the diagnostics import torch-only code otherwise)."""

import triton
import triton.language as tl

from ssmagent.kernels.decode import _pdl_launch, _pdl_wait


@triton.jit
def _enter(PDL: tl.constexpr, EARLY: tl.constexpr):
    """The PDL wait, with the trigger after it or (EARLY, as the fused layer kernels) before it."""
    if EARLY:
        _pdl_launch(PDL)
    _pdl_wait(PDL)
    if not EARLY:
        _pdl_launch(PDL)


@triton.jit
def empty(PDL: tl.constexpr, EARLY: tl.constexpr):
    _enter(PDL, EARLY)


@triton.jit
def load_add(SRC, DST, DM: tl.constexpr, CH: tl.constexpr, PDL: tl.constexpr, EARLY: tl.constexpr, COPIES: tl.constexpr = 1):
    """Like a layer kernel's critical path: load what the previous kernel wrote, reduce, add
    atomically; with COPIES, the sum is held in that many copies (loaded and summed; each block
    adds into one), so that fewer blocks add into each address."""
    _enter(PDL, EARLY)
    offs = tl.arange(0, CH)
    acc = tl.zeros([CH], tl.float32)
    for c in tl.static_range(COPIES):
        for k in tl.static_range(0, DM, CH):
            acc += tl.load(SRC + c * DM + k + offs)
    s = tl.sum(acc, axis=0)
    dst = DST + (tl.program_id(0) % COPIES) * DM
    for k in tl.static_range(0, DM, CH):
        tl.atomic_add(dst + k + offs, acc * 1e-9 + s * 1e-12, sem="relaxed")

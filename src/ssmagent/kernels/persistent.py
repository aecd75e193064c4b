"""Batch-1 decode through one persistent CUDA kernel for all layers (``persistent.cu``).

Why CUDA here and Triton elsewhere: at batch 1 a layer's two fused Triton kernels spend their time
in each block's serial instruction chain (block-wide reductions and layout conversions through
shared memory, d_model padded to a power of two), not in moving bytes (docs/performance.md). A
persistent Triton kernel with grid barriers kept that chain and was no faster. The CUDA kernel
decides which warp does what: every block computes the RMSNorm itself, one warp reduces one GEMV
row with shuffles only, one group of d_state lanes carries a channel from dt to y, and the next
phase's weights are in registers before the grid barrier is passed.

It is built on first use with ``torch.utils.cpp_extension.load_inline`` (nvcc and ninja must be
there; the GPU machine has both) and used by ``TritonStep`` for fused batch-1 steps where
``CudaLayers.unsupported`` finds nothing against it; everything else keeps the Triton kernels,
which stay the tested fallback (CI has no GPU and runs those in Triton's interpreter).
"""

from __future__ import annotations

import functools
import math
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

LAYER_PARAMS = (0, 1, 3, 4, 5, 6, 7, 8, 9, 10)
"""Indices into ``decode._layers``' tuples of the parameters the kernel reads, in its order: norm,
in_proj, conv weight, conv bias, x_proj, dt_proj weight, dt_proj bias, A_log, D, out_proj."""
THREADS = 256
CHANNELS_PER_BLOCK = 16  # persistent.cu's CPB: each bf16 weight row's slice is one 32-byte sector
MAX_SPIN = 1 << 24  # polls of a grid barrier before the kernel gives up and reports (seconds)

_DECLARATION = (
    "void mamba_layers(torch::Tensor layer_ptrs, torch::Tensor emb, torch::Tensor tok, torch::Tensor x, "
    "torch::Tensor dbc, torch::Tensor conv, torch::Tensor ssm, torch::Tensor sync, int64_t n_state, "
    "int64_t dt_rank, double eps, int64_t max_spin);"
)


@functools.lru_cache(maxsize=None)
def extension(capability: tuple[int, int]) -> Any:
    """The compiled kernel for a compute capability (built once per process; torch caches the build)."""
    from torch.utils.cpp_extension import load_inline

    arch = f"{capability[0]}{capability[1]}"
    return load_inline(
        name=f"ssmagent_persistent_sm{arch}",
        cpp_sources=_DECLARATION,
        cuda_sources=(Path(__file__).with_name("persistent.cu")).read_text(),
        functions=["mamba_layers"],
        extra_cuda_cflags=["-O3", f"-gencode=arch=compute_{arch},code=sm_{arch}"],
        verbose=False,
    )


class CudaLayers:
    """The persistent kernel bound to one ``TritonStep``'s parameters and buffers."""

    def __init__(self, step: Any) -> None:
        self.step = step
        dev = step.device
        ptrs = [[0 if layer[j] is None else layer[j].data_ptr() for j in LAYER_PARAMS] for layer in step.layers]
        self.ptrs = torch.tensor(ptrs, dtype=torch.int64, device=dev)
        self.pp = 4 * math.ceil(step.P / 4)
        self.dbc = torch.zeros(len(step.layers), self.pp, device=dev, dtype=torch.float32)
        self.sync = torch.zeros(3, device=dev, dtype=torch.int32)
        self.ext = extension(torch.cuda.get_device_capability(dev))
        self._probe()

    def _probe(self) -> None:
        """One step on scratch states before any real one: a cooperative launch refuses a grid that
        cannot be resident at once (RuntimeError here), and a barrier that never completes sets the
        error flag; either way the caller falls back to the Triton kernels."""
        s = self.step
        L = len(s.layers)
        conv = torch.zeros(L, 1, s.K, s.DI, device=s.device, dtype=s.layers[0][3].dtype)
        ssm = torch.zeros(L, 1, s.N, s.DI, device=s.device, dtype=torch.float32)
        x = torch.zeros(1, s.DM, device=s.device, dtype=torch.float32)
        self.run(torch.zeros(1, device=s.device, dtype=torch.long), x, conv, ssm)
        torch.cuda.synchronize(s.device)
        self.check()

    @staticmethod
    def unsupported(step: Any) -> str | None:
        """Why the kernel cannot run ``step``'s model (None: it can)."""
        if step.device.type != "cuda":
            return "not a CUDA device"
        if torch.cuda.get_device_capability(step.device)[0] < 7:
            return "needs compute capability 7.0 or newer"
        first = step.layers[0]
        dtype = first[1].dtype
        if dtype not in (torch.bfloat16, torch.float32):
            return f"weights in {dtype}"
        if any(t is not None and (t.dtype != dtype or not t.is_contiguous()) for layer in step.layers for t in layer):
            return "every parameter must be contiguous and of one dtype"
        if step.embed_w.dtype != dtype or step.embed_w.stride(1) != 1:
            return "the embedding must be contiguous rows of the weights' dtype"
        if first[2] is not None or first[11] is not None:
            return "in_proj / out_proj biases"
        if step.DM % 256 or step.DM > 1024:
            return f"d_model {step.DM} (256, 512, 768 or 1024)"
        if step.DI % CHANNELS_PER_BLOCK:
            return f"d_inner {step.DI} is not a multiple of {CHANNELS_PER_BLOCK}"
        n_sm = torch.cuda.get_device_properties(step.device).multi_processor_count
        if step.DI // CHANNELS_PER_BLOCK > n_sm:
            return f"d_inner {step.DI} needs {step.DI // CHANNELS_PER_BLOCK} blocks, more than the {n_sm} SMs"
        N = step.N
        if N & (N - 1) or CHANNELS_PER_BLOCK * N > THREADS:
            return f"d_state {N} (a power of two, at most {THREADS // CHANNELS_PER_BLOCK})"
        if step.R > 8 * N or 2 * (4 * math.ceil(step.P / 4)) > THREADS or step.K > 4:
            return "dt_rank, x_proj width or d_conv too large"
        return None

    def run(self, tokens: Tensor, x: Tensor, conv: Tensor, ssm: Tensor) -> None:
        """Every layer of a batch-1 step: x (1, DM) float32 gets the residual after the last layer;
        conv (L, 1, K, DI) and ssm (L, 1, N, DI) views advance in place."""
        s = self.step
        if conv.stride(-1) != 1 or ssm.stride(-1) != 1:
            raise ValueError("the persistent kernel needs the states with d_inner innermost (allocate_state's layout)")
        self.ext.mamba_layers(
            self.ptrs, s.embed_w, tokens, x, self.dbc, conv, ssm, self.sync, s.N, s.R, s.eps, MAX_SPIN
        )

    def check(self) -> None:
        """Raise if a grid barrier timed out (the grid was not all resident)."""
        if int(self.sync[2].item()):
            raise RuntimeError("the persistent decode kernel's grid barrier timed out")


def cuda_layers_for(step: Any) -> CudaLayers | None:
    """A ``CudaLayers`` for ``step`` where supported and buildable; None (with a warning when the
    build fails) otherwise."""
    if CudaLayers.unsupported(step) is not None:
        return None
    try:
        return CudaLayers(step)
    except Exception as err:  # noqa: BLE001 - no nvcc/ninja, a compile error: the Triton kernels remain
        warnings.warn(f"persistent CUDA decode kernel unavailable ({type(err).__name__}: {str(err)[:200]}); using the Triton kernels",
                      RuntimeWarning, stacklevel=2)
        return None

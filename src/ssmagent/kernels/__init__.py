"""GPU decoding: fused Triton kernels for the decode step and a CUDA-graph runner.

Importing this package needs only torch; ``triton`` is imported by ``ssmagent.kernels.decode``
when present (and needed only to launch kernels). Names are loaded on first use:

* ``decode_step(model, token_ids, state, backend)`` — ``MambaLM.step`` through "triton" or "graph";
* ``TritonStep`` / ``KernelConfig`` — the kernels launched one by one, and their block sizes;
* ``GraphDecoder(model, max_batch)`` — the whole step captured in CUDA graphs per batch bucket;
* the PyTorch references the kernels are tested against (``conv_step_reference``, …).
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

_EXPORTS = {
    "BACKENDS": "decode",
    "HAS_TRITON": "decode",
    "KernelConfig": "decode",
    "TritonStep": "decode",
    "decode_step": "decode",
    "conv_step": "decode",
    "conv_step_reference": "decode",
    "ssm_step": "decode",
    "ssm_step_reference": "decode",
    "layer_step": "decode",
    "layer_step_reference": "decode",
    "GraphDecoder": "graph",
    "buckets_for": "graph",
}

__all__ = sorted([*_EXPORTS, "fastest_backend", "triton_installed"])


def triton_installed() -> bool:
    """Whether triton can be imported, found without importing it: importing it (and so
    ``ssmagent.kernels.decode``) fixes whether kernels compile or run in the interpreter
    (``TRITON_INTERPRET``), which callers that only choose a backend must not decide."""
    return importlib.util.find_spec("triton") is not None


def fastest_backend(device: str) -> str:
    """The fastest decode backend on ``device``: the CUDA graph on a GPU with triton, else torch."""
    return "graph" if device.startswith("cuda") and triton_installed() else "torch"


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'ssmagent.kernels' has no attribute {name!r}")
    return getattr(importlib.import_module(f"ssmagent.kernels.{module}"), name)

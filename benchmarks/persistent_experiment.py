"""The persistent-kernel experiment of docs/performance.md: its kernel exists only at commit 30e19e3.

    git worktree add /tmp/persistent 30e19e3
    cp benchmarks/persistent_experiment.py benchmarks/decode_diagnostics.py /tmp/persistent/
    cd /tmp/persistent && python persistent_experiment.py          # on a GPU

At that commit ``KernelConfig(phases=True)`` (the default there) runs every layer of a batch-1 step
in ``_mamba_phases_kernel``: one cooperative launch, a grid barrier between the two phases of each
layer, each phase's weights loaded before the previous phase's barrier. ``persistent=False`` runs the
same kernel one launch per phase; ``phases=False`` is the two-kernels-per-layer design we kept.
Prints the device time of each kernel of one eager step (torch profiler, PDL off), then the graph
replay µs/step of the whole step for each design (paper-130m, vocabulary 50,280, bf16, batch 1).
"""

from __future__ import annotations

import sys

import torch

sys.path.insert(0, "src")

from decode_diagnostics import kernel_device_times  # noqa: E402
from ssmagent.bench.decode import bench_one, make_model  # noqa: E402
from ssmagent.kernels.decode import KernelConfig  # noqa: E402


def kernel_times(model, **overrides) -> dict[str, float]:
    times, _ = kernel_device_times(model, KernelConfig(pdl=False, **overrides), steps=10)
    return {k[:24]: round(v, 1) for k, v in times.items() if k.startswith("_")}


def main() -> None:
    model = make_model("paper-130m", 50280, torch.bfloat16, torch.device("cuda"))
    for name, ov in [("16 channels x 8 warps", {}), ("16 x 4", dict(num_warps_phase=4)),
                     ("8 x 4", dict(block_d_phase=8, num_warps_phase=4)), ("16 x 8, every thread polls", dict(poll=1)),
                     ("32 x 8", dict(block_d_phase=32))]:
        print(f"kernel µs per step, {name}: {kernel_times(model, **ov)}", flush=True)
    for name, ov in [("persistent 16 x 8", {}), ("persistent 8 x 4", dict(block_d_phase=8, num_warps_phase=4)),
                     ("two kernels per layer (kept)", dict(phases=False)), ("one launch per phase", dict(persistent=False))]:
        sec, diff, agree, note = bench_one(model, "graph", 1, kernel_config=KernelConfig(**ov))
        print(f"graph replay, {name:<30} {sec * 1e6:8.1f} µs/step  max|Δ| {diff:.1e}  greedy same: {agree}", flush=True)


if __name__ == "__main__":
    main()

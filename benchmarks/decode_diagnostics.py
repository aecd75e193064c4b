"""Diagnostics of the batch-1 decode step on a GPU (docs/performance.md, "Why batch 1 stops …").

    python benchmarks/decode_diagnostics.py sweep   # graph replay µs/step of kernel-config variants
    python benchmarks/decode_diagnostics.py l2      # L2 prefetch variants, and the L2-resident bound
    python benchmarks/decode_diagnostics.py step    # three eager steps, for a profiler:
    ncu --clock-control none -k regex:_mamba_ --launch-skip 60 --launch-count 3 \\
        --section SpeedOfLight --section WarpStateStats --section LaunchStats --section Occupancy \\
        --section MemoryWorkloadAnalysis python benchmarks/decode_diagnostics.py step

Both on paper-130m with the 50,280 vocabulary in bf16 at batch 1, random weights. ``step`` runs
the kernels one by one without PDL, so a profiler sees each kernel on its own (with ncu's
``--launch-skip 60``: three layer kernels in the middle of the second step).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import torch  # noqa: E402

from ssmagent.bench.decode import make_model, sweep_kernel_configs  # noqa: E402

VARIANTS = {  # KernelConfig overrides at batch 1 (fused mode): channels per block and warps
    "default (in 8, out 16)": {},
    "out 8": {"block_d_out": 8},
    "in 4": {"block_d_in": 4},
    "in 4, out 8": {"block_d_in": 4, "block_d_out": 8},
    "out 8, 2 warps": {"block_d_out": 8, "num_warps_out": 2},
    "in 4 2 warps, out 8 2 warps": {"block_d_in": 4, "num_warps_in": 2, "block_d_out": 8, "num_warps_out": 2},
    "in 8 2 warps": {"num_warps_in": 2},
    "out 16 8 warps": {"num_warps_out": 8},
    "head block_v 8": {"block_v": 8},
    "head block_v 32": {"block_v": 32},
}


def sweep() -> None:
    for name, us, diff in sweep_kernel_configs(VARIANTS, batch=1):
        print(f"{name:<32} {us:8.1f} µs  max|Δ| vs torch {diff:.1e}", flush=True)


L2_VARIANTS = {  # KernelConfig overrides: bulk L2 prefetches of the weights of a layer further on
    "no L2 prefetch": {},
    "ahead 1": {"l2_ahead": 1},
    "ahead 2": {"l2_ahead": 2},
    "ahead 3": {"l2_ahead": 3},
    "ahead 4": {"l2_ahead": 4},
    "ahead 2, no wrap": {"l2_ahead": 2, "l2_wrap": False},
    "ahead 2, pieces >= 4 KiB": {"l2_ahead": 2, "l2_min_piece": 4096},
    "ahead 2, pieces >= 16 KiB": {"l2_ahead": 2, "l2_min_piece": 16384},
}


def l2() -> None:
    """Graph replay µs/step with L2 prefetching, then the bound it can reach: the same step with
    every layer aliasing layer 0's weights, so the layers' 7.5 MB stay in L2 (timing only)."""
    for name, us, diff in sweep_kernel_configs(L2_VARIANTS, batch=1):
        print(f"{name:<32} {us:8.1f} µs  max|Δ| vs torch {diff:.1e}", flush=True)
    from ssmagent.bench.decode import bench_one
    from ssmagent.kernels.decode import KernelConfig

    model = make_model("paper-130m", 50280, torch.bfloat16, torch.device("cuda"))
    layers = model.backbone.layers
    for i in range(1, len(layers)):
        layers[i] = layers[0]
    for name, kc in (("layers alias layer 0 (L2 bound)", KernelConfig()), ("  ... and ahead 2", KernelConfig(l2_ahead=2))):
        sec, diff, _, _ = bench_one(model, "graph", 1, kernel_config=kc)
        print(f"{name:<32} {sec * 1e6:8.1f} µs  max|Δ| vs torch {diff:.1e}", flush=True)


def eager_step(model, kernel_config):
    """(TritonStep, step): one batch-1 eager step of ``model`` through the Triton kernels per
    ``step()`` call, from a zero state, token 0."""
    from ssmagent.kernels.decode import TritonStep

    st = TritonStep(model, kernel_config)
    state = model.allocate_state(1)
    conv, ssm = state.conv_state.transpose(-1, -2), state.ssm_state.transpose(-1, -2)
    tok = torch.zeros(1, dtype=torch.long, device="cuda")
    return st, lambda: st.run(tok, conv, ssm)


def kernel_device_times(model, kernel_config, steps: int = 5) -> tuple[dict[str, float], object]:
    """Device µs per call of each kernel of an eager step (torch profiler, after 3 warm-up steps),
    and the TritonStep."""
    st, step = eager_step(model, kernel_config)
    for _ in range(3):
        step()
    torch.cuda.synchronize()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            step()
        torch.cuda.synchronize()
    return {e.key: e.device_time_total / max(e.count, 1) for e in prof.key_averages() if e.device_time_total > 0}, st


def step() -> None:
    from ssmagent.kernels.decode import KernelConfig

    _, run = eager_step(make_model("paper-130m", 50280, torch.bfloat16, torch.device("cuda")), KernelConfig(pdl=False))
    for _ in range(3):
        run()
    torch.cuda.synchronize()


if __name__ == "__main__":
    modes = {"sweep": sweep, "l2": l2, "step": step}
    if len(sys.argv) != 2 or sys.argv[1] not in modes:
        print(f"usage: python benchmarks/decode_diagnostics.py {{{','.join(modes)}}}", file=sys.stderr)
        raise SystemExit(2)
    modes[sys.argv[1]]()

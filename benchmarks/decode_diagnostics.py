"""Diagnostics of the batch-1 decode step on a GPU (docs/performance.md, "What limits batch 1").

    python benchmarks/decode_diagnostics.py sweep   # graph replay µs/step of kernel-config variants
    python benchmarks/decode_diagnostics.py modes   # fused vs split mode at batches 2-64 (fuse_max_batch)
    python benchmarks/decode_diagnostics.py l2      # the step with the layers' weights resident in L2
    python benchmarks/decode_diagnostics.py floor   # what a chain of 48 PDL kernels costs at the least
    python benchmarks/decode_diagnostics.py split   # where a split-mode step at batch 256 goes, kernel by kernel
    python benchmarks/decode_diagnostics.py step    # three eager steps, for a profiler:
    ncu --clock-control none -k regex:_mamba_ --launch-skip 60 --launch-count 3 \\
        --section SpeedOfLight --section WarpStateStats --section LaunchStats --section Occupancy \\
        --section MemoryWorkloadAnalysis python benchmarks/decode_diagnostics.py step

All but ``floor`` on paper-130m with the 50,280 vocabulary in bf16, random weights, at batch 1
(``split``: 256). ``step`` runs
the kernels one by one without PDL, so a profiler sees each kernel on its own (with ncu's
``--launch-skip 60``: three layer kernels in the middle of the second step).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # floor_kernels

import torch  # noqa: E402

from ssmagent.bench.decode import make_model, sweep_kernel_configs, time_graph  # noqa: E402

VARIANTS = {  # KernelConfig overrides at batch 1 (fused mode): block sizes, warps and switches
    "default (in 32 x 4 warps, out 32 x 4)": {},
    "in 32 x 8 warps": {"num_warps_in": 8},
    "in 16 x 4": {"block_d_in": 16},
    "out 32 x 8 warps": {"num_warps_out": 8},
    "out 16 x 4": {"block_d_out": 16},
    "x and z rows in one block (in 32 x 8)": {"split_z": False, "num_warps_in": 8},
    "weights converted after the wait": {"pin": False},
    "kernels let the next start after their wait": {"launch_early": False},
    "states loaded after the wait": {"early_state": False},
    "head block_v 32": {"block_v": 32},
}


def sweep() -> None:
    for name, us, diff in sweep_kernel_configs(VARIANTS, batch=1):
        print(f"{name:<32} {us:8.1f} µs  max|Δ| vs torch {diff:.1e}", flush=True)


def modes() -> None:
    """Graph replay µs/step of the fused mode (GEMVs in the layer kernels) against the split mode
    (cuBLAS GEMMs between them) at batches 2-64, and of the fused mode's rows per block at 8."""
    for batch in (2, 8, 16, 64):
        if batch > 4:
            variants = {"split": {"fuse_max_batch": 4}, "fused": {"fuse_max_batch": 256}}
        else:
            variants = {"fused": {}, "split": {"fuse_max_batch": 0}}
        if batch == 8:
            variants |= {"fused, 2 rows per block": {"fuse_max_batch": 8, "fused_rows": 2},
                         "fused, all 8 rows in each block": {"fuse_max_batch": 8, "fused_rows": None}}
        for name, us, diff in sweep_kernel_configs(variants, batch=batch):
            print(f"batch {batch:>3} {name:<32} {us:9.1f} µs  max|Δ| vs torch {diff:.1e}", flush=True)


def l2() -> None:
    """Graph replay µs/step of the default step, then of the same step with every layer aliasing
    layer 0's weights, so that the layers' 7.5 MB stay in L2: what the weights' trips from HBM cost
    beyond the serial chains (timing only; the second model's outputs are not the first's)."""
    from ssmagent.bench.decode import bench_one
    from ssmagent.kernels.decode import KernelConfig

    model = make_model("paper-130m", 50280, torch.bfloat16, torch.device("cuda"))
    sec, diff, _, _ = bench_one(model, "graph", 1, kernel_config=KernelConfig())
    print(f"{'default':<32} {sec * 1e6:8.1f} µs  max|Δ| vs torch {diff:.1e}", flush=True)
    layers = model.backbone.layers
    for i in range(1, len(layers)):
        layers[i] = layers[0]
    sec, diff, _, _ = bench_one(model, "graph", 1, kernel_config=KernelConfig())
    print(f"{'layers alias layer 0 (L2 bound)':<32} {sec * 1e6:8.1f} µs  max|Δ| vs torch {diff:.1e}", flush=True)


def floor() -> None:
    """Graph replay µs per kernel of a chain of 48 kernels (two per layer of paper-130m): empty ones
    (the PDL wait and trigger alone), and ones that, like a layer kernel, load d_model floats the
    previous kernel wrote, reduce them and add d_model floats into the next buffer with atomics;
    PDL off, on with the trigger after the wait, and on with it before (as the fused layer kernels);
    then the last, with the sum held in 1, 2, 4 or 8 copies that every block loads and one of which
    each block adds into (fewer blocks adding into each address)."""
    from floor_kernels import empty, load_add

    n = 48
    bufs = [torch.zeros(768, device="cuda") for _ in range(2)]
    modes = {"PDL off": (False, False), "PDL, trigger after the wait": (True, False), "PDL, trigger first": (True, True)}
    for grid in (1, 48, 96, 192):
        for mode, (pdl, early) in modes.items():
            def chain_empty(grid=grid, pdl=pdl, early=early):
                for _ in range(n):
                    empty[(grid,)](PDL=pdl, EARLY=early, launch_pdl=pdl, num_warps=4)

            def chain_load_add(grid=grid, pdl=pdl, early=early):
                for i in range(n):
                    load_add[(grid,)](bufs[i % 2], bufs[(i + 1) % 2], DM=768, CH=256, PDL=pdl, EARLY=early,
                                      launch_pdl=pdl, num_warps=4)

            e, la = (graph_replay_us(f) / n for f in (chain_empty, chain_load_add))
            print(f"grid {grid:>4}, {mode:<28}: empty {e:5.2f} µs/kernel, "
                  f"load + reduce + atomics {la:5.2f} µs/kernel", flush=True)
    copied = [torch.zeros(8 * 768, device="cuda") for _ in range(2)]
    for grid in (48, 96):
        for copies in (1, 2, 4, 8):
            def chain_copies(grid=grid, copies=copies):
                for i in range(n):
                    load_add[(grid,)](copied[i % 2], copied[(i + 1) % 2], DM=768, CH=256, PDL=True, EARLY=True,
                                      COPIES=copies, launch_pdl=True, num_warps=4)

            print(f"grid {grid:>4}, PDL, trigger first, the sum in {copies} copies: "
                  f"load + reduce + atomics {graph_replay_us(chain_copies) / n:5.2f} µs/kernel", flush=True)


def graph_replay_us(launch) -> float:
    """µs per replay of a CUDA graph of ``launch()``, timed as ``bench decode`` times its graphs."""
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        launch()  # compiles
        torch.cuda.synchronize()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, stream=stream):
            launch()
    return time_graph(graph.replay, torch.device("cuda")) * 1e6


def eager_step(model, kernel_config, batch: int = 1):
    """(TritonStep, step): one eager step of ``model`` through the Triton kernels per ``step()``
    call, from a zero state, token 0 in every row."""
    from ssmagent.kernels.decode import TritonStep

    st = TritonStep(model, kernel_config)
    state = model.allocate_state(batch)
    conv, ssm = state.conv_state.transpose(-1, -2), state.ssm_state.transpose(-1, -2)
    tok = torch.zeros(batch, dtype=torch.long, device="cuda")
    return st, lambda: st.run(tok, conv, ssm)


def profiled_kernels(step, steps: int) -> list[tuple[str, float, int]]:
    """(kernel, device µs in all, calls) over ``steps`` calls of ``step()``, after 3 that compile
    and warm the caches (torch profiler)."""
    for _ in range(3):
        step()
    torch.cuda.synchronize()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            step()
        torch.cuda.synchronize()
    return [(e.key, e.device_time_total, e.count) for e in prof.key_averages() if e.device_time_total > 0]


def kernel_device_times(model, kernel_config, steps: int = 5) -> tuple[dict[str, float], object]:
    """Device µs per call of each kernel of a batch-1 eager step, and the TritonStep."""
    st, step = eager_step(model, kernel_config)
    return {key: us / max(calls, 1) for key, us, calls in profiled_kernels(step, steps)}, st


def split() -> None:
    """Where a split-mode step at batch 256 goes: each kernel's device µs per step (torch profiler,
    eager, no PDL, so each kernel runs alone) against the bytes it must move at the copy bandwidth."""
    from ssmagent.bench.decode import copy_bandwidth
    from ssmagent.kernels.decode import KernelConfig

    batch, dev = 256, torch.device("cuda")
    model = make_model("paper-130m", 50280, torch.bfloat16, dev)
    steps = 5
    _, run = eager_step(model, KernelConfig(pdl=False), batch)
    rows = sorted(((us / steps, calls // steps, key) for key, us, calls in profiled_kernels(run, steps)), reverse=True)
    total = sum(r[0] for r in rows)
    bw = copy_bandwidth(dev)
    c = model.cfg
    L, DI, N, K = c.n_layer, c.d_inner, c.d_state, c.d_conv
    ssm_bytes = 2 * batch * N * DI * 4 * L  # the SSM state, float32, read and written by the out-kernels
    conv_bytes = 2 * batch * (K - 1) * DI * 2 * L  # the conv window, bf16, read and written by the in-kernels
    print(f"paper-130m, vocabulary 50,280, bf16, batch {batch}, split mode, eager (no PDL); copy bandwidth {bw / 1e9:,.0f} GB/s")
    print(f"{'µs/step':>9} {'share':>6} {'calls':>5}  kernel")
    for us, calls, key in rows:
        print(f"{us:9.1f} {us / total:6.1%} {calls:5d}  {key[:110]}")
    print(f"{total:9.1f} in all; the states alone move in {ssm_bytes / bw * 1e6:.1f} µs (SSM) + {conv_bytes / bw * 1e6:.1f} µs (conv) at the copy bandwidth")


def step() -> None:
    from ssmagent.kernels.decode import KernelConfig

    _, run = eager_step(make_model("paper-130m", 50280, torch.bfloat16, torch.device("cuda")), KernelConfig(pdl=False))
    for _ in range(3):
        run()
    torch.cuda.synchronize()


if __name__ == "__main__":
    modes = {"sweep": sweep, "modes": modes, "l2": l2, "floor": floor, "split": split, "step": step}
    if len(sys.argv) != 2 or sys.argv[1] not in modes:
        print(f"usage: python benchmarks/decode_diagnostics.py {{{','.join(modes)}}}", file=sys.stderr)
        raise SystemExit(2)
    modes[sys.argv[1]]()

"""GPU decode benchmark: our CUDA-graph, Triton and eager paths against transformers.

    python benchmarks/gpu_decode.py [--configs tiny,paper-130m] [--vocabs 116,50280]
                                    [--batches 1,8,64,256] [--impls graph,triton,torch,transformers]
                                    [--dtype bfloat16] [--json results.json] [--tune] [--diagnose]

The same as ``ssmagent bench decode`` (see ``ssmagent.bench.decode`` for what is measured and
how). ``--tune`` first times a few kernel configurations (block sizes at batch 1, fused vs split
at batch 8, the split-mode grid at batch 256) on paper-130m with the 50,280 vocabulary, prints
them, and runs the table with the fastest (``--diagnose``: registers/spills and per-kernel device
times first). Runs from a checkout without installing: ``python benchmarks/gpu_decode.py``. Needs torch (+ triton for the
graph/triton paths, transformers for its row); no gymnasium or docker.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # decode_diagnostics

from ssmagent.bench.decode import main, sweep_kernel_configs  # noqa: E402

BATCH1 = {  # KernelConfig overrides timed at batch 1 (fused mode); decode_diagnostics.py sweep has more
    "default": {},
    "in16-out16": {"block_d_in": 16, "block_d_out": 16},
}
BATCH8 = {  # fused (rows looped in each block, or one row per block) vs split (cuBLAS GEMMs)
    "fused": {},
    "fused-rows-looped": {"fused_rows": None},
    "split": {"fuse_max_batch": 4},
}
BATCH256 = {  # split mode grid: channels per block x batch rows per block
    "split-128x4": {},
    "split-128x1": {"split_rows": 1},
    "split-64x1": {"split_block_d": 64, "split_rows": 1},
    "split-256x1": {"split_block_d": 256, "split_rows": 1},
    "split-64x4": {"split_block_d": 64},
}


def diagnose() -> None:
    """Registers/spills of each compiled kernel and per-kernel device times of one eager step
    (paper-130m, vocab 50280, bf16, batch 1, fused, no PDL), from the profiler."""
    import torch

    from decode_diagnostics import kernel_device_times
    from ssmagent.bench.decode import make_model
    from ssmagent.kernels.decode import KernelConfig

    model = make_model("paper-130m", 50280, torch.bfloat16, torch.device("cuda"))
    times, st = kernel_device_times(model, KernelConfig(pdl=False))
    print("diagnose: device time per kernel (eager, batch 1, default config)", flush=True)
    for key, us in sorted(times.items(), key=lambda kv: -kv[1])[:8]:
        print(f"  {key[:40]:<40} avg {us:8.2f} µs", flush=True)
    for k, ck in st.launch.compiled.items():
        print(f"  {k:<28} regs {getattr(ck, 'n_regs', '?')}  spills {getattr(ck, 'n_spills', '?')}", flush=True)


def tune():
    from ssmagent.kernels.decode import KernelConfig

    def show(batch, results):
        print(f"tune: paper-130m, vocab 50280, bf16, batch {batch}: graph replay µs/step", flush=True)
        for name, us, diff in results:
            print(f"  {name:<24} {us:8.1f} µs   max|Δ| vs torch {diff:.1e}", flush=True)

    def best_of(variants, batch, base):
        trial = {k: {**base, **v} for k, v in variants.items()}
        res = sweep_kernel_configs(trial, batch=batch)
        show(batch, res)
        ok = [r for r in res if r[2] < 0.1] or res  # never pick a variant that is not correct
        return trial[min(ok, key=lambda r: r[1])[0]]

    chosen = best_of(BATCH1, 1, {})
    chosen = best_of(BATCH8, 8, chosen)
    chosen = best_of(BATCH256, 256, chosen)
    return KernelConfig(**chosen)


if __name__ == "__main__":
    argv = sys.argv[1:]
    config = None
    if "--diagnose" in argv:
        argv.remove("--diagnose")
        diagnose()
    if "--tune" in argv:
        argv.remove("--tune")
        config = tune()
    raise SystemExit(main(argv, kernel_config=config))

"""The CUDA persistent-kernel experiment of docs/performance.md (exists at this commit only).

    python benchmarks/cuda_persistent_experiment.py        # on a GPU with nvcc and ninja (the device machine)

``src/ssmagent/kernels/persistent.cu`` runs every layer of a batch-1 step in one cooperative CUDA
launch (see its header). This prints, for paper-130m with the 50,280 vocabulary in bf16:
the build time; graph-replay µs/step of the whole step with the CUDA kernel and with the Triton
kernels; and the device time of the layers kernel alone (torch profiler, eager, PDL off) for three
builds: as is, with ``-DPK_VARIANT=1`` (layer 0's weights reused for every layer: no weight
traffic from HBM, wrong results) and ``-DPK_VARIANT=2`` (no grid waits: wrong results).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import ssmagent.kernels.persistent as P  # noqa: E402
from ssmagent.bench.decode import bench_one, make_model  # noqa: E402
from ssmagent.kernels.decode import KernelConfig, TritonStep  # noqa: E402


def layers_kernel_us(model) -> float:
    st = TritonStep(model, KernelConfig(pdl=False, cuda_layers=True))
    state = model.allocate_state(1)
    conv, ssm = state.conv_state.transpose(-1, -2), state.ssm_state.transpose(-1, -2)
    tok = torch.zeros(1, dtype=torch.long, device="cuda")
    for _ in range(3):
        st.run(tok, conv, ssm)
    torch.cuda.synchronize()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        for _ in range(10):
            st.run(tok, conv, ssm)
        torch.cuda.synchronize()
    return next(e.device_time_total / e.count for e in prof.key_averages() if "mamba_layers" in e.key)


def main() -> None:
    from torch.utils.cpp_extension import load_inline

    dev = torch.device("cuda")
    t0 = time.time()
    P.extension(torch.cuda.get_device_capability(dev))
    print(f"build {time.time() - t0:.1f} s", flush=True)
    model = make_model("paper-130m", 50280, torch.bfloat16, dev)
    for name, ov in (("cuda", dict(cuda_layers=True)), ("triton", dict(cuda_layers=False))):
        sec, diff, agree, _ = bench_one(model, "graph", 1, kernel_config=KernelConfig(**ov))
        print(f"graph replay, {name:<7} {sec * 1e6:8.1f} µs/step  max|Δ| vs torch {diff:.1e}  greedy same: {agree}", flush=True)
    src = Path(P.__file__).with_name("persistent.cu").read_text()
    arch = "".join(map(str, torch.cuda.get_device_capability(dev)))
    for variant, label in ((0, "as is"), (1, "layer 0's weights for every layer"), (2, "no grid waits")):
        ext = load_inline(name=f"pk_variant{variant}", cpp_sources=P._DECLARATION, cuda_sources=src, functions=["mamba_layers"],
                          extra_cuda_cflags=["-O3", f"-gencode=arch=compute_{arch},code=sm_{arch}", f"-DPK_VARIANT={variant}"])
        P.extension = lambda capability, ext=ext: ext
        print(f"layers kernel, {label}: {layers_kernel_us(model):.1f} µs", flush=True)


if __name__ == "__main__":
    main()

"""What each thread of a fused decode kernel executes after its PDL wait, read from the compiled code.

    python benchmarks/kernel_sass.py                     # the default block sizes and switches
    python benchmarks/kernel_sass.py in:8:4 out:16:4     # kernel:channels per block:warps
    python benchmarks/kernel_sass.py in:32:8:PIN=0       # ... and compile-time switches overridden
    python benchmarks/kernel_sass.py head:16:4           # the head: vocabulary rows per block:warps

At batch 1 a layer kernel's time after the wait is a serial chain (docs/performance.md), so the
instructions there, and the block barriers and shuffles among them, are what to shorten; the
registers per thread bound how many blocks load their weights before the wait. This compiles
``_mamba_in_kernel`` / ``_mamba_out_kernel`` / ``_head_kernel`` for sm_90 with paper-130m's shapes (bf16
weights, float32 activations, batch 1, one row per block, PDL on) through Triton's own ptxas and
nvdisasm, so it needs no GPU. The counts are static: at batch 1 each instruction runs once.
Integer arguments are specialised as Triton's launcher does (1 as a constant, multiples of 16
as such), so the code is the one the GPU runs. With ``SPLIT_Z`` the in-kernel's x and z blocks
take different branches, and both are counted.
"""

from __future__ import annotations

import collections
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")  # the launcher's default, stated (silences a warning)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from ssmagent.kernels import decode  # noqa: E402

DM, DI, N, R, K, P, LAYERS = 768, 1536, 16, 48, 4, 80, 24  # paper-130m
VOCAB = 50280  # DESIGN.md §6's vocabulary
KC = decode.KernelConfig()  # the default switches (split_z, pin, launch_early)
META = decode.layer_meta(KC, *decode.d_model_chunks(KC, DM), fused=True, rows=1)  # as TritonStep launches them


class Ptr:
    """A pointer argument of the given Triton type (16-byte aligned, as PyTorch allocates)."""

    def __init__(self, ty: str) -> None:
        self.ty = ty


def in_kernel_args(block: int) -> dict:
    f32, bf16 = Ptr("*fp32"), Ptr("*bf16")
    return dict(
        X=f32, stride_xb=DM, NORM_W=bf16, W_IN=bf16, stride_win=DM, B_IN=f32, XZ=f32, stride_xzb=0,
        CONV=bf16, s_cb=K * DI * LAYERS, s_ck=DI, s_cd=1, CONV_W=bf16, s_cwd=K, s_cwk=1, CONV_B=bf16,
        XC=f32, stride_xcb=DI, Z=f32, stride_zb=DI, W_X=bf16, stride_wx=DI, DBC=f32, stride_dbcb=LAYERS * P,
        n_rows=1, rows_per_prog=1, eps=1e-5,
        DM=DM, DI=DI, K=K, K_PAD=K, P=P, P_PAD=128, BLOCK_D=block, FUSED=True, HAS_B_IN=False,
        HAS_CONV_B=True, PDL=True, SPLIT_Z=KC.split_z, **META,
    )


def out_kernel_args(block: int) -> dict:
    f32, bf16 = Ptr("*fp32"), Ptr("*bf16")
    return dict(
        XC=f32, stride_xcb=DI, Z=f32, stride_zb=DI, DBC=f32, stride_dbcb=LAYERS * P,
        W_DT=bf16, s_wdt_d=R, s_wdt_r=1, B_DT=bf16, A_LOG=f32, s_a_d=N, s_a_n=1, D_SKIP=f32,
        SSM=f32, s_sb=N * DI * LAYERS, s_sn=DI, s_sd=1, Y=f32, stride_yb=0, W_OUT=bf16, stride_wo=DI,
        B_OUT=f32, X=f32, stride_xb=DM, n_rows=1, rows_per_prog=1,
        DI=DI, N=N, N_PAD=N, R=R, R_PAD=64, DM=DM, BLOCK_D=block, FUSED=True, HAS_B_OUT=False, PDL=True,
        **META,
    )


def head_kernel_args(block_v: int) -> dict:
    f32, bf16 = Ptr("*fp32"), Ptr("*bf16")
    chunk, n_chunks = decode.d_model_chunks(KC, DM)
    return dict(
        X=f32, stride_xb=DM, NORM_W=bf16, W=bf16, stride_w=DM, LOGITS=f32, stride_lb=VOCAB, PMAX=f32,
        PIDX=Ptr("*i32"), n_vblocks=-(-VOCAB // block_v), n_rows=1, V=VOCAB, eps=1e-5, DM=DM, BLOCK_V=block_v,
        PDL=True, CH=chunk, NCH=n_chunks,
    )


KERNELS = {
    "in": (decode._mamba_in_kernel, in_kernel_args),
    "out": (decode._mamba_out_kernel, out_kernel_args),
    "head": (decode._head_kernel, head_kernel_args),
}


def compile_sm90(fn, args: dict, num_warps: int):
    """``fn`` compiled for sm_90 with ``args`` (values, or Ptr for pointers); defaults fill the rest."""
    signature, constants, attrs = {}, {}, {}
    for i, (name, param) in enumerate(zip(fn.arg_names, fn.params)):
        value = args.get(name, param.default)
        if param.is_constexpr:
            signature[name], constants[name] = "constexpr", value
        elif isinstance(value, Ptr):
            signature[name], attrs[(i,)] = value.ty, [["tt.divisibility", 16]]
        elif isinstance(value, float):
            signature[name] = "fp32"
        elif value == 1:  # Triton's launcher makes an integer 1 a constant
            signature[name], constants[name] = "constexpr", 1
        else:
            signature[name] = "i32"
            if value and value % 16 == 0:
                attrs[(i,)] = [["tt.divisibility", 16]]
    src = ASTSource(fn, signature, constexprs=constants, attrs=attrs)
    return triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": num_warps})


def compile_kernel(kernel: str, block: int, num_warps: int, extra: dict | None = None):
    """One fused kernel ("in", "out" or "head"; block: channels, or the head's vocabulary rows)."""
    fn, args = KERNELS[kernel]
    switches = {p.name for p in fn.params if p.is_constexpr}
    if set(extra or {}) - switches:
        raise KeyError(f"not a compile-time switch of the {kernel}-kernel: {sorted(set(extra) - switches)}")
    return compile_sm90(fn, args(block) | (extra or {}), num_warps)


def resources(compiled) -> dict[str, int]:
    """A compiled kernel's resources per thread (``cuobjdump -res-usage``, shipped with Triton):
    REG registers, STACK bytes (non-zero where registers spill), ..."""
    tool = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(compiled.asm["cubin"])
        f.flush()
        out = subprocess.run([str(tool), "-res-usage", f.name], capture_output=True, text=True, check=True).stdout
    return {k: int(v) for k, v in re.findall(r"(\w+):(\d+)", out.splitlines()[-1])}


def after_wait(kernel: str, block: int, num_warps: int, extra: dict | None = None, compiled=None) -> collections.Counter:
    """Opcode counts of the SASS after the PDL wait (``ACQBULK``) of one fused kernel."""
    sass = (compiled or compile_kernel(kernel, block, num_warps, extra)).asm["sass"]
    counts: collections.Counter = collections.Counter()
    seen_wait = False
    for line in sass.splitlines():
        m = re.match(r"\s*\S+\t(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_]*)", line)
        if not m:
            continue
        seen_wait = seen_wait or m.group(1) == "ACQBULK"
        if seen_wait:
            counts[m.group(1)] += 1
    if not seen_wait:
        raise RuntimeError(f"no PDL wait in the {kernel}-kernel's code")
    return counts


def summary(counts: collections.Counter) -> str:
    groups = {"block barriers": ("BAR",), "shuffles": ("SHFL",), "shared-memory ops": ("STS", "LDS", "STSM", "LDSM"),
              "global loads": ("LDG",), "atomics": ("RED", "REDG", "ATOM", "ATOMG")}
    parts = [f"{sum(counts.values())} instructions"]
    parts += [f"{sum(counts[o] for o in ops)} {name}" for name, ops in groups.items()]
    return ", ".join(parts)


def main(specs: list[str]) -> int:
    specs = specs or [
        f"in:{KC.block_d_in}:{KC.num_warps_in}", f"out:{KC.block_d_out}:{KC.num_warps_out}",
        f"head:{KC.block_v}:{KC.num_warps_fused}",
    ]
    for spec in specs:
        try:
            kernel, block, warps, *switches = spec.split(":")
            extra = {k: int(v) for k, v in (sw.split("=") for sw in switches)}
            compiled = compile_kernel(kernel, int(block), int(warps), extra)
        except (ValueError, KeyError):
            print(f"bad spec {spec!r}: use in|out|head:BLOCK:WARPS[:SWITCH=0|1...], e.g. out:32:8 or in:32:4:PIN=0", file=sys.stderr)
            return 2
        unit = "vocabulary rows" if kernel == "head" else "channels"
        res = resources(compiled)
        print(f"{kernel}-kernel, {block} {unit} x {warps} warps, {res['REG']} registers and {res['STACK']} bytes of stack per thread; "
              f"after the PDL wait: {summary(after_wait(kernel, int(block), int(warps), compiled=compiled))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

"""``ssmagent bench scan``: the selective scan of training and prefill, forward and forward+backward,
side by side in one run, against the bandwidth roofline.

Implementations, all through the same contract (x, dt: (b, l, d_inner); A: (d_inner, N); B, C:
(b, l, N); D: (d_inner,); returns y (b, l, d_inner) and the last state (b, d_inner, N)):

* ``torch``     — ``selective_scan(..., backend="torch")``: our chunked PyTorch scan, built for a
  CPU (the reference the others are checked against);
* ``triton``    — ``selective_scan(..., backend="triton")``: ``ssmagent.kernels.scan``, one kernel
  per direction;
* ``mamba-ssm`` — ``mamba_ssm.ops.selective_scan_interface.selective_scan_fn``, the CUDA kernel of
  the Mamba authors, when it is installed (a peer: "not installed" otherwise). Its inputs are
  handed over in its own layout ((b, d_inner, l), (b, N, l)), made before the timing.

Default shapes: a training batch of our tasks — the ``tiny`` config's d_inner 128 and d_state 16,
32 episodes padded to ~11,000 tokens (a Hanoi batch) — and one layer of ``paper-130m`` (d_inner
1,536, d_state 16) at batch 8 × 2,048 tokens. ``--shapes`` takes BATCHxLENGTHxD_INNERxD_STATE.

Columns: ``fwd ms`` is one forward call without autograd (prefill); ``f+b ms`` one forward and the
backward of y with respect to x, dt, A, B, C and D (training). Timing as in ``bench decode``: wall
clock with a device synchronise, median of 3 timings of n calls. Inputs are random but shaped like
a model's: dt = softplus of a per-channel bias drawn in Mamba's initial range [0.001, 0.1] plus
noise, A = -(1 … N) per channel (S4D-real, as ``MambaLM`` initialises it), D = 1.

Roofline: the bytes a scan must move at the inputs' dtype, over the device-to-device copy bandwidth
measured in the same run (bytes read + written, ``bench.decode.copy_bandwidth``). Forward: read
x, dt (b·l·d_inner each) and B, C (b·l·N each), write y (b·l·d_inner). Backward: read x, dt, B, C
and dy, write dx, ddt, dB and dC. Not counted: A, D and their gradients, the last state, and
whatever an implementation stores for its backward (our chunk-start states, mamba-ssm's
checkpoints) — those are its choices, not the scan's minimum.

Agreement, in the same run: ``max|Δ|`` is the largest absolute difference of y and of the last
state from the torch reference; ``rel Δgrad`` the largest over the six gradients of
max |g − g_ref| / max |g_ref| (gradients summed over 11,000 steps are large, so an absolute
difference would say little).

Imports only torch at module level (triton through ``ssmagent.kernels.scan`` when used, mamba_ssm
when present). On CPU the triton rows run only under ``TRITON_INTERPRET=1`` (slow: tiny shapes).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ssmagent.bench import fmt
from ssmagent.bench.decode import DTYPES, _versions, bench_device, copy_bandwidth, time_loop, write_results

IMPLS = ("torch", "triton", "mamba-ssm")
NAMES = ("x", "dt", "A", "B", "C", "D")
SEQUENCES = ("x", "dt", "B", "C")  # the inputs with a time axis (their layout differs per impl)


@dataclass(frozen=True)
class ScanShape:
    batch: int
    length: int
    d_inner: int
    d_state: int

    def __str__(self) -> str:
        return f"{self.batch}x{self.length}x{self.d_inner}x{self.d_state}"

    @classmethod
    def parse(cls, text: str) -> ScanShape:
        """``BATCHxLENGTHxD_INNERxD_STATE`` (e.g. ``32x11000x128x16``); ValueError otherwise."""
        parts = text.strip().lower().split("x")
        try:
            values = [int(p) for p in parts]
        except ValueError:
            values = []
        if len(values) != 4 or min(values) < 1:
            raise ValueError(f"{text!r} is not BATCHxLENGTHxD_INNERxD_STATE with positive integers (e.g. 32x11000x128x16)")
        return cls(*values)

    def fwd_bytes(self, itemsize: int) -> int:
        """Forward: x, dt, B, C read, y written: b·l·(3·d_inner + 2·N) elements."""
        return self.batch * self.length * (3 * self.d_inner + 2 * self.d_state) * itemsize

    def bwd_bytes(self, itemsize: int) -> int:
        """Backward: x, dt, B, C, dy read; dx, ddt, dB, dC written: b·l·(5·d_inner + 4·N) elements."""
        return self.batch * self.length * (5 * self.d_inner + 4 * self.d_state) * itemsize


def default_shapes() -> tuple[ScanShape, ...]:
    """A Hanoi training batch of the tiny config, and one paper-130m layer (see the docstring)."""
    from ssmagent.model.mamba import MambaConfig

    tiny, paper = MambaConfig.preset("tiny", 1), MambaConfig.preset("paper-130m", 1)
    return (ScanShape(32, 11_000, tiny.d_inner, tiny.d_state), ScanShape(8, 2048, paper.d_inner, paper.d_state))


SHAPE_LABELS = {
    "32x11000x128x16": "tiny config, a training batch (32 episodes padded to ~11,000 tokens)",
    "8x2048x1536x16": "one paper-130m layer, batch 8 × 2,048 tokens",
}


@dataclass
class ScanBenchRow:
    shape: str  # BATCHxLENGTHxD_INNERxD_STATE
    dtype: str  # of x, dt, B, C
    impl: str
    fwd_ms: float | None  # one forward, no autograd
    fwd_bwd_ms: float | None  # one forward + backward of y
    roofline_fwd_ms: float  # ScanShape.fwd_bytes / copy bandwidth
    roofline_fwd_bwd_ms: float  # (fwd_bytes + bwd_bytes) / copy bandwidth
    fwd_pct: float | None  # roofline / measured, percent
    fwd_bwd_pct: float | None
    max_abs_diff: float | None = None  # y and last state vs the torch reference
    max_rel_grad_diff: float | None = None  # max over gradients of max|Δg| / max|g_ref|
    note: str = ""


@dataclass
class ScanBenchMeta:
    device: str
    torch: str
    triton: str | None
    mamba_ssm: str | None
    copy_gbps: float
    triton_interpreted: bool


# --------------------------------------------------------------------------------------------
# Inputs and implementations
# --------------------------------------------------------------------------------------------


@dataclass
class ScanInputs:
    """The scan's inputs in the reference layout (see the module docstring)."""

    x: Tensor
    dt: Tensor
    A: Tensor
    B: Tensor
    C: Tensor
    D: Tensor
    dy: Tensor  # the gradient fed to the backward, float32

    def tensors(self) -> list[Tensor]:
        return [self.x, self.dt, self.A, self.B, self.C, self.D]


def make_inputs(shape: ScanShape, dtype: torch.dtype, device: torch.device | str, seed: int = 0) -> ScanInputs:
    """Random inputs shaped like a Mamba layer's (x, dt, B, C in ``dtype``; A, D float32)."""
    b, l, d, n = shape.batch, shape.length, shape.d_inner, shape.d_state
    g = torch.Generator(device="cpu").manual_seed(seed)
    dt0 = torch.exp(torch.rand(d, generator=g) * (math.log(0.1) - math.log(0.001)) + math.log(0.001))
    dt = F.softplus(torch.randn(b, l, d, generator=g) * 0.5 + torch.log(torch.expm1(dt0)))
    seq = [torch.randn(b, l, d, generator=g), dt, torch.randn(b, l, n, generator=g), torch.randn(b, l, n, generator=g)]
    x, dt, B, C = (t.to(device=device, dtype=dtype) for t in seq)
    A = -torch.arange(1, n + 1, dtype=torch.float32).repeat(d, 1).to(device)
    D = torch.ones(d, device=device)
    dy = torch.randn(b, l, d, generator=g).to(device)
    return ScanInputs(x, dt, A, B, C, D, dy)


@dataclass
class ScanImpl:
    """How to call one implementation: ``run(x, dt, A, B, C, D) -> (y, last state)`` in its layout;
    ``time_last`` when its sequences are (b, channels, l) rather than (b, l, channels)."""

    run: Callable[..., tuple[Tensor, Tensor]]
    time_last: bool

    def layout(self, name: str, t: Tensor) -> Tensor:
        """A reference-layout tensor in this implementation's layout (and back: the swap is its own inverse)."""
        return t.transpose(1, 2) if self.time_last and name in (*SEQUENCES, "y") else t

    def inputs(self, inp: ScanInputs, grad: bool) -> list[Tensor]:
        """Leaf tensors in this layout, made before any timing (contiguous, as each kernel wants)."""
        return [self.layout(n, t).contiguous().detach().requires_grad_(grad) for n, t in zip(NAMES, inp.tensors())]


def scan_impl(impl: str) -> ScanImpl:
    """The named implementation; ImportError when its package is missing."""
    if impl in ("torch", "triton"):
        from ssmagent.model.mamba import selective_scan

        def ours(x, dt, A, B, C, D):
            return selective_scan(x, dt, A, B, C, D, backend=impl)

        return ScanImpl(ours, time_last=False)
    if impl == "mamba-ssm":
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn

        def theirs(x, dt, A, B, C, D):
            return selective_scan_fn(x, dt, A, B, C, D, return_last_state=True)

        return ScanImpl(theirs, time_last=True)
    raise ValueError(f"unknown implementation {impl!r}; choose from {', '.join(IMPLS)}")


def run_once(impl: ScanImpl, inp: ScanInputs) -> tuple[Tensor, Tensor, list[Tensor]]:
    """y (reference layout, float32), the last state and the six gradients (reference layout) of
    one forward + backward."""
    leaves = impl.inputs(inp, grad=True)
    y, h = impl.run(*leaves)
    grads = torch.autograd.grad(y, leaves, impl.layout("y", inp.dy).to(y.dtype))
    back = [impl.layout(n, g).float() for n, g in zip(NAMES, grads)]
    return impl.layout("y", y).float().detach(), h.float().detach(), back


def time_impl(impl: ScanImpl, inp: ScanInputs, device: torch.device, min_time: float) -> tuple[float, float]:
    """(seconds per forward, seconds per forward + backward)."""
    plain = impl.inputs(inp, grad=False)

    def fwd():
        with torch.no_grad():
            impl.run(*plain)

    leaves = impl.inputs(inp, grad=True)
    with torch.no_grad():
        y_dtype = impl.run(*plain)[0].dtype
    dy = impl.layout("y", inp.dy).to(y_dtype).contiguous()

    def fwd_bwd():
        y, _ = impl.run(*leaves)
        torch.autograd.grad(y, leaves, dy)

    return time_loop(fwd, device, min_time), time_loop(fwd_bwd, device, min_time)


def _unavailable(impl: str, dev: torch.device) -> str:
    """Why ``impl`` cannot run here ("" when it can)."""
    from ssmagent.kernels import triton_installed

    if impl == "triton":
        if not triton_installed():
            return "triton not installed"
        if dev.type != "cuda" and os.environ.get("TRITON_INTERPRET", "0") in ("", "0"):
            return "needs CUDA (or TRITON_INTERPRET=1 on CPU)"
    if impl == "mamba-ssm" and dev.type != "cuda":
        return "needs CUDA"
    return ""


def _mamba_ssm_version() -> str | None:
    try:
        import mamba_ssm
    except ImportError:
        return None
    return getattr(mamba_ssm, "__version__", "unknown")


def bench_scan(
    *,
    shapes: Sequence[ScanShape] | None = None,
    impls: Sequence[str] = IMPLS,
    dtype: str = "float32",
    device: str = "cuda",
    min_time: float = 0.3,
    log: Callable[[str], None] | None = None,
) -> tuple[list[ScanBenchRow], ScanBenchMeta]:
    """Time every (shape, impl) and check it against the torch reference; returns the rows and the
    run's metadata. Implementations that cannot run here give a row with no times and the reason."""
    dev = bench_device(device)
    bad = [s for s in impls if s not in IMPLS]
    if bad:
        raise ValueError(f"unknown --impls {bad}; choose from {', '.join(IMPLS)}")
    shapes = default_shapes() if shapes is None else shapes
    tdtype = DTYPES[dtype]
    itemsize = torch.empty(0, dtype=tdtype).element_size()
    bw = copy_bandwidth(dev)
    tv, _ = _versions()
    meta = ScanBenchMeta(
        device=torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
        torch=torch.__version__,
        triton=tv,
        mamba_ssm=_mamba_ssm_version(),
        copy_gbps=bw / 1e9,
        triton_interpreted=os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"),
    )
    if log:
        log(f"device {meta.device}; copy bandwidth {bw / 1e9:,.0f} GB/s (read + write)")
    rows: list[ScanBenchRow] = []
    for shape in shapes:
        inp = make_inputs(shape, tdtype, dev)
        roof_f = shape.fwd_bytes(itemsize) / bw * 1e3
        roof_fb = (shape.fwd_bytes(itemsize) + shape.bwd_bytes(itemsize)) / bw * 1e3
        ref_y, ref_h, ref_g = run_once(scan_impl("torch"), inp)
        for impl in impls:
            row = ScanBenchRow(str(shape), dtype, impl, None, None, roof_f, roof_fb, None, None)
            row.note = _unavailable(impl, dev)
            if not row.note:
                try:
                    runner = scan_impl(impl)
                    if impl != "torch":
                        y, h, grads = run_once(runner, inp)
                        row.max_abs_diff = max((y - ref_y).abs().max().item(), (h - ref_h).abs().max().item())
                        row.max_rel_grad_diff = max(
                            ((g - r).abs().max() / r.abs().max().clamp_min(1e-30)).item() for g, r in zip(grads, ref_g)
                        )
                        del y, h, grads
                    fwd_s, fb_s = time_impl(runner, inp, dev, min_time)
                    row.fwd_ms, row.fwd_bwd_ms = fwd_s * 1e3, fb_s * 1e3
                    row.fwd_pct, row.fwd_bwd_pct = 100 * roof_f / row.fwd_ms, 100 * roof_fb / row.fwd_bwd_ms
                    row.note = "the reference" if impl == "torch" else ""
                except ImportError:
                    row.note = "not installed"
                except Exception as exc:  # one failing implementation must not sink the table
                    row.note = f"error: {type(exc).__name__}: {exc}"[:200]
            rows.append(row)
            if log:
                log(format_row(row))
        del inp, ref_y, ref_h, ref_g
        if dev.type == "cuda":
            torch.cuda.empty_cache()
    return rows, meta


# --------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------

_HEAD = (
    f"{'shape':<18} {'dtype':<8} {'impl':<10} {'fwd ms':>10} {'f+b ms':>10} {'roof fwd':>9} {'roof f+b':>9} "
    f"{'% fwd':>6} {'% f+b':>6} {'max|Δ|':>8} {'relΔgrad':>8}  note"
)


def format_row(r: ScanBenchRow) -> str:
    return (
        f"{r.shape:<18} {r.dtype:<8} {r.impl:<10} {fmt(r.fwd_ms, ',.3f'):>10} {fmt(r.fwd_bwd_ms, ',.3f'):>10} "
        f"{r.roofline_fwd_ms:9.3f} {r.roofline_fwd_bwd_ms:9.3f} {fmt(r.fwd_pct, '.1f'):>6} {fmt(r.fwd_bwd_pct, '.1f'):>6} "
        f"{fmt(r.max_abs_diff, '.1e'):>8} {fmt(r.max_rel_grad_diff, '.1e'):>8}  {r.note}"
    )


def speedup_summary(rows: Sequence[ScanBenchRow]) -> list[str]:
    """One line per shape: triton's speed-up over the other implementations, forward and forward+backward."""
    by: dict[tuple[str, str], dict[str, ScanBenchRow]] = {}
    for r in rows:
        by.setdefault((r.shape, r.dtype), {})[r.impl] = r
    out = []
    for (shape, _), d in by.items():
        t = d.get("triton")
        if t is None or t.fwd_ms is None:
            continue
        parts = [
            f"over {k} {o.fwd_ms / t.fwd_ms:,.1f}× forward, {o.fwd_bwd_ms / t.fwd_bwd_ms:,.1f}× forward+backward"
            for k, o in d.items()
            if k != "triton" and o.fwd_ms is not None
        ]
        if parts:
            out.append(f"triton speed-up, {shape}: " + "; ".join(parts))
    return out


def format_table(rows: Sequence[ScanBenchRow], meta: ScanBenchMeta) -> str:
    interp = " (TRITON_INTERPRET=1: the triton rows ran in the interpreter)" if meta.triton_interpreted else ""
    lines = [
        f"device: {meta.device}; torch {meta.torch}, triton {meta.triton}, mamba-ssm {meta.mamba_ssm}; "
        f"copy bandwidth {meta.copy_gbps:,.0f} GB/s (read + write){interp}",
        "shape = BATCHxLENGTHxD_INNERxD_STATE; roofline = bytes of x, dt, B, C, y (+ dy, dx, ddt, dB, dC) / copy bandwidth",
        _HEAD,
    ]
    lines += [format_row(r) for r in rows]
    labels = [f"{s}: {SHAPE_LABELS[s]}" for s in dict.fromkeys(r.shape for r in rows) if s in SHAPE_LABELS]
    speedups = speedup_summary(rows)
    if labels or speedups:
        lines.append("")
        lines += labels + speedups
    return "\n".join(lines)


def _shapes(text: str) -> list[ScanShape]:
    """argparse type for ``--shapes``: comma-separated BATCHxLENGTHxD_INNERxD_STATE."""
    try:
        shapes = [ScanShape.parse(s) for s in text.split(",") if s.strip()]
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    if not shapes:
        raise argparse.ArgumentTypeError("give at least one shape BATCHxLENGTHxD_INNERxD_STATE (e.g. 32x11000x128x16)")
    return shapes


def main(argv: Sequence[str] | None = None) -> int:
    """The command line (``ssmagent bench scan``, ``python -m ssmagent.bench.scan``)."""
    p = argparse.ArgumentParser(prog="ssmagent bench scan", description=__doc__.split("\n\n")[0])
    p.add_argument("--shapes", type=_shapes, default=None, help="BATCHxLENGTHxD_INNERxD_STATE,… (default: "
                   + ",".join(map(str, default_shapes())) + ")")
    p.add_argument("--impls", default=",".join(IMPLS), help=",".join(IMPLS))
    p.add_argument("--dtype", default="float32", choices=sorted(DTYPES), help="of x, dt, B, C (A, D are float32)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--min-time", type=float, default=0.3, help="seconds per timing")
    p.add_argument("--json", default=None, help="also write the rows and metadata here")
    args = p.parse_args(argv)
    rows, meta = bench_scan(
        shapes=args.shapes,
        impls=[s for s in args.impls.split(",") if s],
        dtype=args.dtype,
        device=args.device,
        min_time=args.min_time,
        log=lambda s: print(s, file=sys.stderr, flush=True),
    )
    print(format_table(rows, meta))
    if args.json:
        write_results(args.json, meta, rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

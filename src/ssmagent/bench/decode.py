"""``ssmagent bench decode``: decode speed of every implementation, against the bandwidth roofline.

For each model config (``tiny``, ``paper-130m``), vocabulary size (ours, ~116 tokens, and GPT-NeoX's
50,280, the one the paper's Mamba-130M has) and batch size, it times greedy decoding with:

* ``graph``        — our whole step replayed from a CUDA graph (``ssmagent.kernels.graph``);
* ``triton``       — the same Triton kernels launched one by one from Python (no graph);
* ``torch``        — ``MambaLM.step``, eager PyTorch;
* ``transformers`` — ``transformers.MambaForCausalLM.generate`` with its cache, same weights;
* ``kv-transformer`` — a Transformer with a KV cache of about the same parameter count, vocabulary
  and dtype (``transformers.LlamaForCausalLM``, ``ssmagent.bench.kv_transformer``), decoding
  greedily with its cache after a prompt of ``--kv-context`` tokens (default 4); the cache is
  cropped back to that context after every timed step, so every step decodes at the same context.

Columns: µs/token is the time of one decode step (every sequence of the batch gets one token per
step, so it is the per-sequence latency); tokens/s = batch / step time. The roofline is the
fewest bytes a step must move — every weight once (a tied lm_head once) plus the decode state
read and written — divided by the device-to-device copy bandwidth measured in the same run
(bytes read + bytes written per second); ``% roofline`` = roofline time / measured time. The
kv-transformer row has its own roofline: its weights once plus the KV cache read at its context
(and the new token's keys and values written), over the same bandwidth.

Timing: CUDA events around many graph replays (median of repeats); wall clock with a device
synchronise for the eager paths, whose launches run ahead of the GPU (no host sync per step, so
this is their best case). Weights are random (timing does not depend on them); each timed
implementation is also checked against ``MambaLM.step`` on a few steps (``max |Δ|`` of the
logits, and whether the greedy picks agree).

Imports only torch at module level (transformers and triton when used), so it runs on the GPU
machine without gymnasium or docker.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Sequence

import torch

from ssmagent.bench import fmt

CONFIGS = ("tiny", "paper-130m")
VOCABS = (116, 50280)
BATCHES = (1, 8, 64, 256)
IMPLS = ("graph", "triton", "torch", "transformers", "kv-transformer")
DTYPES = {"bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float32": torch.float32, "fp32": torch.float32}
KV_CONTEXT = 4
"""Tokens in the kv-transformer's cache when its decode steps are timed (a short prompt)."""


@dataclass
class DecodeBenchRow:
    config: str
    vocab: int
    batch: int
    dtype: str
    impl: str
    us_per_token: float | None  # one decode step (per-sequence latency), microseconds
    tokens_per_s: float | None  # batch / step time
    roofline_us: float  # bytes that must move / copy bandwidth
    roofline_pct: float | None  # roofline_us / us_per_token, in percent
    max_abs_diff: float | None = None  # vs MambaLM.step (torch) over a few steps
    greedy_agrees: bool | None = None
    note: str = ""


@dataclass
class BenchMeta:
    device: str
    torch: str
    triton: str | None
    transformers: str | None
    copy_gbps: float | None
    extra: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------
# Roofline
# --------------------------------------------------------------------------------------------


def weight_bytes(model: torch.nn.Module) -> int:
    """Bytes of all distinct parameters (a tied lm_head counts once)."""
    return sum(p.numel() * p.element_size() for p in model.parameters())


def state_bytes(cfg: Any, batch: int, conv_itemsize: int) -> int:
    """Bytes of the decode state: n_layer · B · d_inner · (d_conv · itemsize + d_state · 4)."""
    return cfg.n_layer * batch * cfg.d_inner * (cfg.d_conv * conv_itemsize + cfg.d_state * 4)


def roofline_bytes(model: torch.nn.Module, batch: int) -> int:
    """The fewest bytes one decode step must move: every weight once + the state read and written."""
    itemsize = model.backbone.embeddings.weight.element_size()
    return weight_bytes(model) + 2 * state_bytes(model.cfg, batch, itemsize)


def copy_bandwidth(device: torch.device | str, nbytes: int = 1 << 30, repeats: int = 10) -> float:
    """Device-to-device copy bandwidth in bytes/s, counting bytes read plus bytes written."""
    device = torch.device(device)
    src = torch.empty(nbytes // 4, dtype=torch.float32, device=device).uniform_()
    dst = torch.empty_like(src)
    if device.type != "cuda":
        times = []
        for _ in range(max(3, repeats // 3)):
            t0 = time.perf_counter()
            dst.copy_(src)
            times.append(time.perf_counter() - t0)
        return 2 * nbytes / statistics.median(times)
    for _ in range(3):
        dst.copy_(src)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(repeats):
        start.record()
        dst.copy_(src)
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    del src, dst
    return 2 * nbytes / statistics.median(times)


# --------------------------------------------------------------------------------------------
# Timers
# --------------------------------------------------------------------------------------------


def bench_device(name: str) -> torch.device:
    """The device to measure on; RuntimeError (a user error for the CLI) for CUDA where there is none."""
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"--device {name}: no CUDA device is available here; use --device cpu")
    return dev


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_loop(step: Callable[[], None], device: torch.device, min_time: float = 0.3, repeats: int = 3) -> float:
    """Seconds per call of ``step`` (wall clock, device synchronised): median of ``repeats``
    timings of n calls, n chosen so that one timing takes about ``min_time``."""
    for _ in range(2):
        step()
    _sync(device)
    t0 = time.perf_counter()
    step()
    _sync(device)
    est = max(time.perf_counter() - t0, 1e-6)
    n = int(min(2000, max(3, min_time / est)))
    times = []
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(n):
            step()
        _sync(device)
        times.append((time.perf_counter() - t0) / n)
    return statistics.median(times)


def time_graph(step: Callable[[], None], device: torch.device, min_time: float = 0.05, repeats: int = 5) -> float:
    """Seconds per replay: CUDA events around n back-to-back replays, median of ``repeats``."""
    for _ in range(3):
        step()
    torch.cuda.synchronize(device)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(10):
        step()
    end.record()
    end.synchronize()
    est = max(start.elapsed_time(end) / 1e3 / 10, 1e-7)
    n = int(min(5000, max(20, min_time / est)))
    times = []
    for _ in range(repeats):
        start.record()
        for _ in range(n):
            step()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3 / n)
    return statistics.median(times)


# --------------------------------------------------------------------------------------------
# The implementations
# --------------------------------------------------------------------------------------------


def make_model(config: str, vocab: int, dtype: torch.dtype, device: torch.device, seed: int = 0):
    from ssmagent.model import MambaConfig, MambaLM

    torch.manual_seed(seed)
    model = MambaLM(MambaConfig.preset(config, vocab))
    return model.to(device=device, dtype=dtype).eval()


def _check_against_torch(model, run_steps: Callable[[torch.Tensor, int], list[torch.Tensor]], batch: int, steps: int = 4):
    """(max |Δ logits|, greedy picks agree) of an implementation vs MambaLM.step on the same tokens."""
    dev = model.backbone.embeddings.weight.device
    g = torch.Generator(device="cpu").manual_seed(1)
    ids = torch.randint(0, model.cfg.vocab_size, (batch, steps), generator=g).to(dev)
    ref_state = model.allocate_state(batch)
    with torch.inference_mode():
        ref = [model.step(ids[:, t], ref_state).float() for t in range(steps)]
    got = run_steps(ids, steps)
    diff = max((a - b).abs().max().item() for a, b in zip(ref, got))
    agree = all(bool((a.argmax(-1) == b.argmax(-1)).all()) for a, b in zip(ref, got))
    return diff, agree


def bench_one(
    model, impl: str, batch: int, *, kernel_config=None, min_time: float = 0.3, peer=None, kv_context: int = KV_CONTEXT
) -> tuple[float, float | None, bool | None, str]:
    """(seconds per step, max |Δ| vs torch, greedy agrees, note) of one implementation.

    ``peer`` (a ``kv_transformer.KVPeer``, built from ``model`` when None) and ``kv_context`` are
    for the kv-transformer: a different model, so it has no |Δ| against ``MambaLM.step``."""
    dev = model.backbone.embeddings.weight.device
    V = model.cfg.vocab_size
    tok0 = torch.randint(0, V, (batch,), device=dev)
    if impl == "torch":
        state = model.allocate_state(batch)
        tok = [tok0]

        def step():
            with torch.inference_mode():
                tok[0] = model.step(tok[0], state).argmax(-1)

        return time_loop(step, dev, min_time), None, None, "MambaLM.step (the reference)"
    if impl == "triton":
        from ssmagent.kernels.decode import TritonStep

        st = TritonStep(model, kernel_config)
        state = model.allocate_state(batch)
        conv, ssm = state.conv_state.transpose(-1, -2), state.ssm_state.transpose(-1, -2)
        tok = [tok0.clone()]

        def step():
            tok[0] = st.run(tok[0], conv, ssm)[1]

        def run_steps(ids, steps):
            s = model.allocate_state(batch)
            c, h = s.conv_state.transpose(-1, -2), s.ssm_state.transpose(-1, -2)
            return [st.run(ids[:, t].contiguous(), c, h)[0].clone() for t in range(steps)]

        diff, agree = _check_against_torch(model, run_steps, batch)
        mode = "fused" if st.fused_for(batch) else "split"
        return time_loop(step, dev, min_time), diff, agree, f"{mode}, pdl={st.launch.pdl}"
    if impl == "graph":
        from ssmagent.kernels.graph import GraphDecoder

        dec = GraphDecoder(model, max_batch=batch, config=kernel_config)

        def run_steps(ids, steps):
            s = dec.allocate_state(batch)
            return [dec.step(ids[:, t], s).clone() for t in range(steps)]

        diff, agree = _check_against_torch(model, run_steps, batch)
        state = dec.allocate_state(batch)
        tok = [dec.greedy(tok0, state)]

        def step():
            tok[0] = dec.greedy(tok[0], state)

        mode = "fused" if dec.stepper.fused_for(batch) else "split"
        seconds = time_graph(step, dev) if dev.type == "cuda" else time_loop(step, dev, min_time)
        return seconds, diff, agree, f"{mode}, pdl={dec.stepper.launch.pdl}"
    if impl == "transformers":
        from transformers import MambaForCausalLM

        hf = MambaForCausalLM(model.cfg.to_hf_config())
        hf.load_state_dict(model.state_dict(), strict=False)
        hf = hf.to(device=dev, dtype=model.backbone.embeddings.weight.dtype).eval()
        prompt = tok0[:, None]

        def gen(n):
            with torch.inference_mode():
                hf.generate(prompt, max_new_tokens=n, min_new_tokens=n, do_sample=False, pad_token_id=0, eos_token_id=None)

        gen(3)
        _sync(dev)
        t0 = time.perf_counter()
        gen(3)
        _sync(dev)
        per = max((time.perf_counter() - t0) / 3, 1e-6)
        n = int(min(200, max(4, min_time / per)))
        short, long = [], []
        for _ in range(3):
            for n_new, out in ((2, short), (2 + n, long)):
                _sync(dev)
                t0 = time.perf_counter()
                gen(n_new)
                _sync(dev)
                out.append(time.perf_counter() - t0)
        seconds = (statistics.median(long) - statistics.median(short)) / n
        del hf
        return seconds, None, None, "generate, slow path (no mamba-ssm)"
    if impl == "kv-transformer":
        from ssmagent.bench.kv_transformer import peer_for

        peer = peer_for(model) if peer is None else peer
        cache = peer.new_cache()
        g = torch.Generator(device="cpu").manual_seed(2)
        prompt = torch.randint(0, V, (batch, kv_context), generator=g).to(dev)
        tok = [peer.greedy_step(prompt, cache)]

        def step():
            tok[0] = peer.greedy_step(tok[0][:, None], cache)
            with torch.inference_mode():
                cache.crop(-1)  # back to kv_context tokens: every timed step decodes at that context

        seconds = time_loop(step, dev, min_time)
        params = peer.shape.num_parameters()
        return seconds, None, None, (
            f"LlamaForCausalLM, {peer.shape.describe()}, {params / 1e6:,.2f}M params; context {kv_context}; DynamicCache, sdpa"
        )
    raise ValueError(f"unknown implementation {impl!r}; choose from {', '.join(IMPLS)}")


def _versions() -> tuple[str | None, str | None]:
    try:
        import triton

        tv = triton.__version__
    except ImportError:
        tv = None
    try:
        import transformers

        hv = transformers.__version__
    except ImportError:
        hv = None
    return tv, hv


def bench_decode(
    *,
    configs: Sequence[str] = CONFIGS,
    vocabs: Sequence[int] = VOCABS,
    batches: Sequence[int] = BATCHES,
    impls: Sequence[str] = IMPLS,
    dtype: str = "bfloat16",
    device: str = "cuda",
    min_time: float = 0.3,
    kernel_config: Any = None,
    kv_context: int = KV_CONTEXT,
    log: Callable[[str], None] | None = None,
) -> tuple[list[DecodeBenchRow], BenchMeta]:
    """Time every (config, vocab, batch, impl); returns the rows and the run's metadata.

    Implementations that cannot run here (no CUDA for graph/triton, transformers not installed)
    give a row with ``us_per_token=None`` and the reason in ``note``. The kv-transformer rows carry
    the peer's own roofline at ``kv_context`` tokens (``kv_transformer.LlamaShape.roofline_bytes``)."""
    from ssmagent.bench.kv_transformer import shape_for

    dev = bench_device(device)
    tdtype = DTYPES[dtype]
    dname = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    bw = copy_bandwidth(dev)
    tv, hv = _versions()
    meta = BenchMeta(device=dname, torch=torch.__version__, triton=tv, transformers=hv, copy_gbps=bw / 1e9)
    if log:
        log(f"device {dname}; copy bandwidth {bw / 1e9:,.0f} GB/s (read + write)")
    rows: list[DecodeBenchRow] = []
    for config in configs:
        for vocab in vocabs:
            model = make_model(config, vocab, tdtype, dev)
            peer = None  # the kv-transformer, built on its first row
            for batch in batches:
                for impl in impls:
                    if impl == "kv-transformer":
                        nbytes = shape_for(model).roofline_bytes(batch, kv_context, model.backbone.embeddings.weight.element_size())
                    else:
                        nbytes = roofline_bytes(model, batch)
                    roof_us = nbytes / bw * 1e6
                    note = ""
                    if impl in ("graph", "triton") and dev.type != "cuda":
                        note = "needs CUDA"
                    elif impl in ("transformers", "kv-transformer") and hv is None:
                        note = "transformers not installed"
                    if note:
                        rows.append(DecodeBenchRow(config, vocab, batch, dtype, impl, None, None, roof_us, None, note=note))
                        continue
                    try:
                        if impl == "kv-transformer" and peer is None:
                            from ssmagent.bench.kv_transformer import peer_for

                            peer = peer_for(model)
                        sec, diff, agree, note = bench_one(
                            model, impl, batch, kernel_config=kernel_config, min_time=min_time, peer=peer, kv_context=kv_context
                        )
                        us = sec * 1e6
                        row = DecodeBenchRow(
                            config, vocab, batch, dtype, impl, us, batch / sec, roof_us, 100 * roof_us / us,
                            max_abs_diff=diff, greedy_agrees=agree, note=note,
                        )
                    except Exception as exc:  # one failing implementation must not sink the table
                        row = DecodeBenchRow(config, vocab, batch, dtype, impl, None, None, roof_us, None,
                                             note=f"error: {type(exc).__name__}: {exc}"[:200])
                    rows.append(row)
                    if log:
                        log(format_row(row))
            del model, peer
            if dev.type == "cuda":
                torch.cuda.empty_cache()
    return rows, meta


# --------------------------------------------------------------------------------------------
# Kernel-config sweep (tuning aid)
# --------------------------------------------------------------------------------------------


def sweep_kernel_configs(
    variants: dict[str, dict[str, Any]],
    *,
    config: str = "paper-130m",
    vocab: int = 50280,
    batch: int = 1,
    dtype: str = "bfloat16",
    device: str = "cuda",
) -> list[tuple[str, float, float]]:
    """Graph-replay µs/step of named ``KernelConfig`` overrides: [(name, µs, max |Δ| vs torch)]."""
    from ssmagent.kernels.decode import KernelConfig

    dev = torch.device(device)
    model = make_model(config, vocab, DTYPES[dtype], dev)
    out = []
    for name, overrides in variants.items():
        kc = KernelConfig(**overrides)
        sec, diff, _, _ = bench_one(model, "graph", batch, kernel_config=kc)
        out.append((name, sec * 1e6, diff))
    return out


# --------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------

_HEAD = f"{'config':<10} {'vocab':>6} {'batch':>5} {'impl':<14} {'µs/token':>10} {'tokens/s':>11} {'roof µs':>8} {'% roof':>7} {'max|Δ|':>8} {'greedy':>6}  note"


def format_row(r: DecodeBenchRow) -> str:
    agree = "" if r.greedy_agrees is None else ("same" if r.greedy_agrees else "DIFF")
    return (
        f"{r.config:<10} {r.vocab:>6} {r.batch:>5} {r.impl:<14} {fmt(r.us_per_token, '10,.1f'):>10} "
        f"{fmt(r.tokens_per_s, '11,.0f'):>11} {r.roofline_us:8.1f} {fmt(r.roofline_pct, '6.1f'):>7} "
        f"{fmt(r.max_abs_diff, '8.1e'):>8} {agree:>6}  {r.note}"
    )


def format_table(rows: Sequence[DecodeBenchRow], meta: BenchMeta) -> str:
    lines = [
        f"device: {meta.device}; torch {meta.torch}, triton {meta.triton}, transformers {meta.transformers}; "
        f"copy bandwidth {meta.copy_gbps:,.0f} GB/s (read + write)" if meta.copy_gbps else f"device: {meta.device}",
        _HEAD,
    ]
    lines += [format_row(r) for r in rows]
    speedups = speedup_summary(rows)
    if speedups:
        lines.append("")
        lines += speedups
    return "\n".join(lines)


def speedup_summary(rows: Sequence[DecodeBenchRow]) -> list[str]:
    """One line per (config, vocab, batch): graph's speed-up over the other implementations."""
    by: dict[tuple, dict[str, DecodeBenchRow]] = {}
    for r in rows:
        by.setdefault((r.config, r.vocab, r.batch, r.dtype), {})[r.impl] = r
    out = []
    for (config, vocab, batch, _), d in by.items():
        g = d.get("graph")
        if g is None or g.us_per_token is None:
            continue
        parts = [f"{k} {o.us_per_token / g.us_per_token:,.1f}×" for k, o in d.items() if k != "graph" and o.us_per_token]
        if parts:
            out.append(f"graph speed-up, {config} vocab {vocab} batch {batch}: " + ", ".join(parts))
    return out


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def write_results(path: str, meta: Any, rows: Sequence[Any], **extra: Any) -> None:
    """A bench's ``--json`` file (its metadata, rows and ``extra``), written atomically."""
    from ssmagent.atomic import atomic_write_text

    atomic_write_text(path, json.dumps({"meta": asdict(meta), "rows": [asdict(r) for r in rows], **extra}, indent=1))


def positive_int(text: str) -> int:
    """argparse type: a positive integer (``1_000`` allowed); anything else is a usage error that
    says what to write."""
    try:
        value = int(text.replace("_", ""))
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer")
    return value


def positive_ints(example: str) -> Callable[[str], list[int]]:
    """argparse type: a comma-separated list of positive integers, such as ``example``."""

    def parse(text: str) -> list[int]:
        try:
            values = [positive_int(s) for s in text.split(",") if s.strip()]
        except argparse.ArgumentTypeError:
            values = []
        if not values:
            raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of positive integers (e.g. {example})")
        return values

    return parse


def main(argv: Sequence[str] | None = None, kernel_config: Any = None) -> int:
    """The command line (``ssmagent bench decode``); ``kernel_config`` (a KernelConfig) overrides
    the kernels' block sizes for the graph and triton rows."""
    p = argparse.ArgumentParser(prog="ssmagent bench decode", description=__doc__.split("\n\n")[0])
    p.add_argument("--configs", default=",".join(CONFIGS))
    p.add_argument("--vocabs", type=positive_ints("116,50280"), default=list(VOCABS))
    p.add_argument("--batches", type=positive_ints("1,8,64"), default=list(BATCHES))
    p.add_argument("--impls", default=",".join(IMPLS), help=",".join(IMPLS))
    p.add_argument("--dtype", default="bfloat16", choices=sorted(DTYPES))
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--min-time", type=float, default=0.3, help="seconds per eager timing")
    p.add_argument("--kv-context", type=positive_int, default=KV_CONTEXT, help="tokens in the kv-transformer's cache while timed")
    p.add_argument("--json", default=None, help="also write the rows and metadata here")
    args = p.parse_args(argv)
    impls = [s for s in args.impls.split(",") if s]
    bad = [s for s in impls if s not in IMPLS]
    if bad:
        print(f"error: unknown --impls {bad}; choose from {', '.join(IMPLS)}", file=sys.stderr)
        return 2
    rows, meta = bench_decode(
        configs=[s for s in args.configs.split(",") if s],
        vocabs=args.vocabs,
        batches=args.batches,
        impls=impls,
        dtype=args.dtype,
        device=args.device,
        min_time=args.min_time,
        kernel_config=kernel_config,
        kv_context=args.kv_context,
        log=lambda s: print(s, file=sys.stderr, flush=True),
    )
    if kernel_config is not None:
        meta.extra["kernel_config"] = asdict(kernel_config)
    print(format_table(rows, meta))
    if kernel_config is not None:
        print(f"kernel config: {asdict(kernel_config)}")
    if args.json:
        write_results(args.json, meta, rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""``ssmagent bench memory``: peak GPU memory while decoding after 1K … 1M tokens, Mamba vs a
Transformer with a KV cache.

Mamba's state has the same size at every length; a Transformer's KV cache grows with every token.
This measures what that means for a decode step's memory, at context lengths of 1,000 to 1,000,000
tokens, for one Mamba config and its ``kv-transformer`` peer (``ssmagent.bench.kv_transformer``:
a ``transformers.LlamaForCausalLM`` of about the same parameter count, vocabulary and dtype — the
same peer as in ``ssmagent bench decode``).

* **Mamba** reaches each length by a real prefill of random tokens, from the zero state, in chunks
  of ``--chunk`` tokens that carry the decode state from one to the next (``MambaLM.prefill`` with
  the Triton scan on CUDA, the PyTorch scan on CPU), so the prefill's activation memory is bounded
  by the chunk, not the length. ``prefill s`` is that prefill's wall time.
* **Transformer**: its ``DynamicCache`` at each length is filled with random keys and values of the
  right shape instead of a real prefill of up to a million tokens: memory does not depend on the
  values. A length whose cache does not fit (``torch.cuda.OutOfMemoryError``) is reported as not
  fitting, with the bytes it would need at least (weights + the KV cache), and the run goes on.

Then, for both: ``torch.cuda.reset_peak_memory_stats()``, ``--steps`` greedy decode steps (Mamba
with the fastest decode backend, ``ssmagent.kernels.fastest_backend``: the CUDA graph on a GPU;
the Transformer with its cache, as ``generate`` would) and ``peak decode MiB`` =
``torch.cuda.max_memory_allocated()``: everything PyTorch had allocated at the worst moment of
those steps — weights, the decode state or KV cache, the decoder's buffers and the steps'
temporaries (for ``DynamicCache``, which grows by concatenation, one layer's keys and values twice
over) — but not blocks the caching allocator keeps free, nor the CUDA context. Before the first
length each implementation runs a short prefill and one decode step, so that kernel compilation,
CUDA-graph capture and cuBLAS workspaces are the same at every length. ``state/KV MiB`` is the
Mamba decode state (``DecodeState.nbytes``) or the KV cache's bytes at that length.

The summary gives Mamba's peak spread across the lengths, (max − min) / min (the acceptance
criterion: flat within 1 %), and the first length at which the Transformer no longer fits.

Off CUDA there is no peak to read: the rows have ``None`` there, but the prefill, the decode and the
state bytes run the same code (the tests run it on CPU with tiny lengths).

Imports only torch at module level (transformers when the Transformer runs, triton through the
kernels), so it runs on the GPU machine without gymnasium or docker.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
from torch import Tensor

from ssmagent.bench import fmt
from ssmagent.bench.decode import DTYPES, _sync, _versions, bench_device, make_model, positive_int, positive_ints, write_results

LENGTHS = (1_000, 10_000, 100_000, 1_000_000)
IMPLS = ("mamba", "kv-transformer")
CHUNK = 16_384
STEPS = 8
FLAT_PCT = 1.0
"""The acceptance criterion: Mamba's peak decode memory varies by at most this much (percent)."""
MIB = 1 << 20


@dataclass
class MemoryBenchRow:
    length: int  # tokens before the decode steps
    impl: str  # "mamba" or "kv-transformer"
    peak_decode_mib: float | None  # max allocated during the decode steps; None off CUDA or when it did not fit
    state_mib: float | None  # Mamba's decode state / the Transformer's KV cache at this length
    prefill_s: float | None  # Mamba's chunked prefill from zero; None for the random-filled KV cache
    fits: bool = True
    need_mib: float | None = None  # when it did not fit: at least weights + KV cache
    note: str = ""


@dataclass
class MemoryBenchMeta:
    device: str
    torch: str
    transformers: str | None
    config: str
    vocab: int
    dtype: str
    batch: int
    chunk: int
    steps: int
    scan_backend: str
    decode_backend: str
    mamba_params: int
    mamba_weight_mib: float
    peer: str  # the kv-transformer's shape
    peer_params: int
    peer_weight_mib: float
    device_total_mib: float | None


# --------------------------------------------------------------------------------------------
# Measuring
# --------------------------------------------------------------------------------------------


def prefill_chunked(model: Any, input_ids: Tensor, state: Any, chunk: int) -> Tensor:
    """Feed ``input_ids`` (B, L) from ``state`` in chunks of ``chunk`` tokens, each continuing from the
    state the previous one left (``MambaLM.prefill``): the same final state and last logits as one
    pass over all L tokens, with activations of ``chunk`` tokens at a time. Returns the float32
    logits of the last position (B, V)."""
    if chunk < 1:
        raise ValueError(f"chunk must be a positive number of tokens, got {chunk}")
    last = None
    for start in range(0, input_ids.shape[1], chunk):
        logits = model.prefill(input_ids[:, start : start + chunk], state)
        last = logits[:, -1].float()
        del logits
    if last is None:
        raise ValueError("prefill_chunked needs at least one token")
    return last


def _peak_reset(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)


def _peak_mib(dev: torch.device) -> float | None:
    if dev.type != "cuda":
        return None
    torch.cuda.synchronize(dev)
    return torch.cuda.max_memory_allocated(dev) / MIB


def _release(dev: torch.device) -> None:
    gc.collect()
    if dev.type == "cuda":
        torch.cuda.empty_cache()


def _random_ids(vocab: int, batch: int, length: int, dev: torch.device, seed: int) -> Tensor:
    g = torch.Generator(device="cpu").manual_seed(seed)
    return torch.randint(0, vocab, (batch, length), generator=g).to(dev)


def mamba_rows(
    model: Any, lengths: Sequence[int], *, batch: int, chunk: int, steps: int, decode_backend: str,
    log: Callable[[str], None] | None = None,
) -> list[MemoryBenchRow]:
    """One row per length: chunked prefill from zero to the length, then ``steps`` greedy decode
    steps with ``decode_backend`` under the peak-memory counter."""
    dev = model.backbone.embeddings.weight.device
    V = model.cfg.vocab_size
    warm = model.allocate_state(batch)  # capture the decode graph (and cuBLAS workspaces) once
    tok = prefill_chunked(model, _random_ids(V, batch, 4, dev, 0), warm, chunk).argmax(-1)
    with torch.inference_mode():
        model.step(tok, warm, backend=decode_backend)
    del warm, tok
    warmed: set[int] = set()
    rows = []
    for length in lengths:
        # Triton specialises kernels on their sizes' divisibility: run each chunk size this length
        # will use once before the timed prefill, so that no compilation is timed
        for size in {min(chunk, length), length % chunk or chunk} - warmed:
            prefill_chunked(model, _random_ids(V, batch, size, dev, 0), model.allocate_state(batch), chunk)
            warmed.add(size)
        try:
            row = _mamba_one(model, length, batch=batch, chunk=chunk, steps=steps, decode_backend=decode_backend)
        except torch.OutOfMemoryError:  # its tensors went with the helper's frame
            row = MemoryBenchRow(length, "mamba", None, None, None, fits=False, note=f"prefill did not fit: lower --chunk ({chunk:,})")
        _release(dev)
        rows.append(row)
        if log:
            log(format_row(row))
    return rows


def _mamba_one(model: Any, length: int, *, batch: int, chunk: int, steps: int, decode_backend: str) -> MemoryBenchRow:
    dev = model.backbone.embeddings.weight.device
    ids = _random_ids(model.cfg.vocab_size, batch, length, dev, length)
    state = model.allocate_state(batch)
    _sync(dev)
    t0 = time.perf_counter()
    tok = prefill_chunked(model, ids, state, chunk).argmax(-1)
    _sync(dev)
    prefill_s = time.perf_counter() - t0
    del ids
    _release(dev)
    _peak_reset(dev)
    with torch.inference_mode():
        for _ in range(steps):
            tok = model.step(tok, state, backend=decode_backend).argmax(-1)
    note = f"prefill {-(-length // chunk)} chunk(s) of ≤ {chunk:,} tokens, scan {model.scan.backend}; decode {steps} steps, {decode_backend}"
    return MemoryBenchRow(length, "mamba", _peak_mib(dev), state.nbytes() / MIB, prefill_s, note=note)


def kv_rows(
    peer: Any, lengths: Sequence[int], *, batch: int, steps: int, log: Callable[[str], None] | None = None
) -> list[MemoryBenchRow]:
    """One row per length: the KV cache filled with random keys and values to the length, then
    ``steps`` greedy decode steps with it under the peak-memory counter; a length that does not
    fit gives a row saying so and what it needs at least."""
    dev = peer.device
    V = peer.shape.vocab_size
    peer.greedy_step(_random_ids(V, batch, 4, dev, 0), peer.new_cache())  # kernels and workspaces, once
    rows = []
    for length in lengths:
        try:
            row = _kv_one(peer, length, batch=batch, steps=steps)
        except torch.OutOfMemoryError:  # the cache went with the helper's frame
            need = (peer.weight_bytes() + peer.kv_bytes(batch, length + steps)) / MIB
            row = MemoryBenchRow(length, "kv-transformer", None, peer.kv_bytes(batch, length) / MIB, None, fits=False,
                                 need_mib=need, note=f"does not fit: needs ≥ {need:,.0f} MiB (weights + KV cache)")
        _release(dev)
        rows.append(row)
        if log:
            log(format_row(row))
    return rows


def _kv_one(peer: Any, length: int, *, batch: int, steps: int) -> MemoryBenchRow:
    dev = peer.device
    cache = peer.new_cache()
    peer.fill_random(cache, batch, length)
    tok = _random_ids(peer.shape.vocab_size, batch, 1, dev, length)
    _peak_reset(dev)
    for _ in range(steps):
        tok = peer.greedy_step(tok, cache)[:, None]
    note = f"KV cache filled with random values (memory does not depend on them); decode {steps} steps, DynamicCache"
    return MemoryBenchRow(length, "kv-transformer", _peak_mib(dev), peer.kv_bytes(batch, length) / MIB, None, note=note)


def bench_memory(
    *,
    config: str = "paper-130m",
    vocab: int = 50280,
    lengths: Sequence[int] = LENGTHS,
    impls: Sequence[str] = IMPLS,
    dtype: str = "bfloat16",
    device: str = "cuda",
    batch: int = 1,
    chunk: int = CHUNK,
    steps: int = STEPS,
    log: Callable[[str], None] | None = None,
) -> tuple[list[MemoryBenchRow], MemoryBenchMeta]:
    """Measure every (length, impl); returns the rows (by length, then impl) and the run's metadata.
    The two models are never on the device together: each peak counts only its own weights."""
    from ssmagent.bench.kv_transformer import peer_for, shape_for
    from ssmagent.kernels import fastest_backend, triton_installed
    from ssmagent.model.mamba import ScanOptions

    dev = bench_device(device)
    bad = [s for s in impls if s not in IMPLS]
    if bad:
        raise ValueError(f"unknown --impls {bad}; choose from {', '.join(IMPLS)}")
    _, hv = _versions()
    model = make_model(config, vocab, DTYPES[dtype], dev)
    model.scan = ScanOptions(backend="triton" if dev.type == "cuda" and triton_installed() else "torch")
    decode_backend = fastest_backend(dev.type)
    shape = shape_for(model)
    itemsize = model.backbone.embeddings.weight.element_size()
    meta = MemoryBenchMeta(
        device=torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
        torch=torch.__version__,
        transformers=hv,
        config=config,
        vocab=vocab,
        dtype=dtype,
        batch=batch,
        chunk=chunk,
        steps=steps,
        scan_backend=model.scan.backend,
        decode_backend=decode_backend,
        mamba_params=model.num_parameters(),
        mamba_weight_mib=model.num_parameters() * itemsize / MIB,
        peer=f"LlamaForCausalLM, {shape.describe()}",
        peer_params=shape.num_parameters(),
        peer_weight_mib=shape.num_parameters() * itemsize / MIB,
        device_total_mib=torch.cuda.get_device_properties(dev).total_memory / MIB if dev.type == "cuda" else None,
    )
    if log:
        log(f"device {meta.device}; {config} ({meta.mamba_params / 1e6:,.1f}M params) vs {meta.peer} ({meta.peer_params / 1e6:,.1f}M)")
    rows: list[MemoryBenchRow] = []
    if "mamba" in impls:
        rows += mamba_rows(model, lengths, batch=batch, chunk=chunk, steps=steps, decode_backend=decode_backend, log=log)
    if "kv-transformer" in impls:
        if hv is None:
            rows += [MemoryBenchRow(n, "kv-transformer", None, None, None, fits=False, note="transformers not installed") for n in lengths]
        else:
            peer = peer_for(model, max_positions=max(lengths) + steps + 1)
            del model  # only the peer's weights on the device while it is measured
            _release(dev)
            rows += kv_rows(peer, lengths, batch=batch, steps=steps, log=log)
    rows.sort(key=lambda r: (r.length, IMPLS.index(r.impl)))
    return rows, meta


# --------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------

_HEAD = f"{'length':>10} {'impl':<14} {'peak decode MiB':>15} {'state/KV MiB':>13} {'prefill s':>10}  note"


def format_row(r: MemoryBenchRow) -> str:
    return (
        f"{r.length:>10,} {r.impl:<14} {fmt(r.peak_decode_mib, ',.1f'):>15} {fmt(r.state_mib, ',.2f'):>13} "
        f"{fmt(r.prefill_s, ',.2f'):>10}  {r.note}"
    )


def summary(rows: Sequence[MemoryBenchRow], meta: MemoryBenchMeta) -> list[str]:
    """Mamba's peak spread across the lengths (flat within 1 %?) and where the Transformer stops fitting."""
    out = []
    mamba = [r for r in rows if r.impl == "mamba" and r.fits]
    peaks = [r.peak_decode_mib for r in mamba if r.peak_decode_mib is not None]
    if len(peaks) >= 2:
        lo, hi = min(peaks), max(peaks)
        spread = 100 * (hi - lo) / lo
        verdict = f"flat within {FLAT_PCT:g} %" if spread <= FLAT_PCT else f"NOT flat within {FLAT_PCT:g} %"
        out.append(
            f"mamba: peak decode memory {lo:,.1f}–{hi:,.1f} MiB from {mamba[0].length:,} to {mamba[-1].length:,} tokens: "
            f"spread {spread:.2f} % ({verdict}); decode state {mamba[0].state_mib:,.2f} MiB at every length"
        )
    elif mamba:
        out.append(f"mamba: no peak-memory reading on {meta.device} (needs CUDA); decode state {mamba[0].state_mib:,.2f} MiB at every length")
    kv = [r for r in rows if r.impl == "kv-transformer"]
    measured = [r for r in kv if r.state_mib is not None]
    if measured:
        fit = [r for r in measured if r.fits]
        over = [r for r in measured if not r.fits]
        if not over:
            out.append(f"kv-transformer: fits at every length up to {measured[-1].length:,} tokens (KV cache {measured[-1].state_mib:,.1f} MiB there)")
        else:
            room = f"; the device has {meta.device_total_mib:,.0f} MiB" if meta.device_total_mib else ""
            upto = f"fits up to {fit[-1].length:,} tokens" if fit else "fits at none of the lengths"
            out.append(f"kv-transformer: {upto}; does not fit from {over[0].length:,} tokens (needs ≥ {over[0].need_mib:,.0f} MiB{room})")
    return out


def format_table(rows: Sequence[MemoryBenchRow], meta: MemoryBenchMeta) -> str:
    lines = [
        f"device: {meta.device}; torch {meta.torch}, transformers {meta.transformers}; {meta.config}, vocabulary {meta.vocab:,}, "
        f"{meta.dtype}, batch {meta.batch}",
        f"mamba: {meta.mamba_params:,} params ({meta.mamba_weight_mib:,.1f} MiB), prefill scan {meta.scan_backend} in chunks of "
        f"{meta.chunk:,}, decode {meta.decode_backend}; kv-transformer: {meta.peer}, {meta.peer_params:,} params "
        f"({meta.peer_weight_mib:,.1f} MiB), KV cache random-filled",
        f"peak decode MiB = torch.cuda.max_memory_allocated() over {meta.steps} decode steps (weights included)",
        _HEAD,
    ]
    lines += [format_row(r) for r in rows]
    lines.append("")
    lines += summary(rows, meta)
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """The command line (``ssmagent bench memory``, ``python -m ssmagent.bench.memory``)."""
    p = argparse.ArgumentParser(prog="ssmagent bench memory", description=__doc__.split("\n\n")[0])
    p.add_argument("--lengths", type=positive_ints("1000,10000,100000,1000000"), default=list(LENGTHS), help="context lengths in tokens")
    p.add_argument("--config", default="paper-130m")
    p.add_argument("--vocab", type=positive_int, default=50280)
    p.add_argument("--impls", default=",".join(IMPLS), help=",".join(IMPLS))
    p.add_argument("--dtype", default="bfloat16", choices=sorted(DTYPES))
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch", type=positive_int, default=1)
    p.add_argument("--chunk", type=positive_int, default=CHUNK, help="tokens per prefill chunk (Mamba)")
    p.add_argument("--steps", type=positive_int, default=STEPS, help="decode steps under the peak counter")
    p.add_argument("--json", default=None, help="also write the rows, metadata and summary here")
    args = p.parse_args(argv)
    rows, meta = bench_memory(
        config=args.config,
        vocab=args.vocab,
        lengths=args.lengths,
        impls=[s for s in args.impls.split(",") if s],
        dtype=args.dtype,
        device=args.device,
        batch=args.batch,
        chunk=args.chunk,
        steps=args.steps,
        log=lambda s: print(s, file=sys.stderr, flush=True),
    )
    print(format_table(rows, meta))
    if args.json:
        write_results(args.json, meta, rows, summary=summary(rows, meta))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Markdown tables of the benchmark results in ``results/bench/*.json`` (what docs/performance.md shows).

    python benchmarks/tables.py results/bench/decode-h100.json [more.json ...]

Each file is the ``--json`` output of ``ssmagent bench decode``, ``bench memory`` or ``bench scan``
(told apart by their rows' fields); the tables print every row of the file, in the order measured,
so the numbers in the docs are the numbers of the run, formatted and nothing else.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from ssmagent.bench import fmt  # noqa: E402  (torch-free)


def decode_tables(data: dict) -> str:
    """One table per (config, vocabulary): the rows of ``bench decode``."""
    out, key = [], None
    for r in data["rows"]:
        if (r["config"], r["vocab"]) != key:
            key = (r["config"], r["vocab"])
            out += [
                "", f"#### {r['config']}, vocabulary {r['vocab']:,}", "",
                "| batch | implementation | µs/token | tokens/s | roofline µs | % of roofline | max \\|Δ logits\\| vs torch | greedy picks vs torch | note |",
                "|---:|---|---:|---:|---:|---:|---:|---|---|",
            ]
        agree = "" if r["greedy_agrees"] is None else ("same" if r["greedy_agrees"] else "differ")
        impl = f"**{r['impl']}**" if r["impl"] == "graph" else r["impl"]
        out.append(
            f"| {r['batch']} | {impl} | {fmt(r['us_per_token'], ',.1f')} | {fmt(r['tokens_per_s'], ',.0f')} | "
            f"{r['roofline_us']:,.1f} | {fmt(r['roofline_pct'], '.1f')} | {fmt(r['max_abs_diff'], '.1e')} | {agree} | {r['note']} |"
        )
    return "\n".join(out[1:])


def memory_table(data: dict) -> str:
    out = [
        "| context (tokens) | implementation | peak decode MiB | state / KV cache MiB | prefill s | note |",
        "|---:|---|---:|---:|---:|---|",
    ]
    for r in data["rows"]:
        peak = fmt(r["peak_decode_mib"], ",.1f") if r["fits"] else f"does not fit (≥ {r['need_mib']:,.0f} needed)"
        out.append(
            f"| {r['length']:,} | {r['impl']} | {peak} | {fmt(r['state_mib'], ',.2f')} | {fmt(r['prefill_s'], ',.2f')} | {r['note']} |"
        )
    out += [""] + [f"- {line}" for line in data.get("summary", [])]
    return "\n".join(out)


def scan_table(data: dict) -> str:
    out = [
        "| shape (b×l×d_inner×N) | implementation | forward ms | forward + backward ms | roofline fwd / f+b ms | % of roofline fwd / f+b | max \\|Δ\\| | rel Δ grad | note |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in data["rows"]:
        out.append(
            f"| {r['shape']} | {r['impl']} | {fmt(r['fwd_ms'], ',.2f')} | {fmt(r['fwd_bwd_ms'], ',.2f')} | "
            f"{r['roofline_fwd_ms']:.3f} / {r['roofline_fwd_bwd_ms']:.3f} | {fmt(r['fwd_pct'], '.1f')} / {fmt(r['fwd_bwd_pct'], '.1f')} | "
            f"{fmt(r['max_abs_diff'], '.1e')} | {fmt(r['max_rel_grad_diff'], '.1e')} | {r['note']} |"
        )
    return "\n".join(out)


def table(data: dict) -> str:
    """The table(s) of one results file, by the kind of bench that wrote it."""
    first = data["rows"][0]
    if "us_per_token" in first:
        return decode_tables(data)
    if "peak_decode_mib" in first:
        return memory_table(data)
    if "fwd_ms" in first:
        return scan_table(data)
    raise ValueError("not a bench decode / memory / scan results file")


def main(paths: list[str]) -> int:
    if not paths:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    for path in paths:
        data = json.loads(Path(path).read_text())
        meta = data["meta"]
        print(f"<!-- {path}: {meta['device']}, torch {meta['torch']} -->")
        print(table(data))
        print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

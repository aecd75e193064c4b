"""Results files, tables and plots: everything a doc shows is generated from ``results/``.

A results file is one JSON object per ``ssmagent eval`` run: the command, the data seed, and
one row per checkpoint with a ``SizeResult`` per size. Tables report every checkpoint (every
training seed) and, where there are several, their mean ± spread (min–max).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ssmagent.atomic import atomic_write_text


def write_json_atomic(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=1))


def read_results(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text())
        data["rows"], data["sizes"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as err:
        raise ValueError(f"{path} is not an ssmagent eval results file ({err})") from None
    return data


def merge_results(files: list[dict[str, Any]]) -> dict[str, Any]:
    """One table's worth of results from several eval runs of the same task and data seed (e.g.
    100 episodes at 1,000 digits, 10 at 10,000): rows joined by checkpoint, sizes in order."""
    first = files[0]
    for other in files[1:]:
        if (other["task"], other["seed"]) != (first["task"], first["seed"]):
            raise ValueError("results to merge must share the task and the data seed")
    rows: dict[str, dict[str, Any]] = {}
    for data in files:
        for row in data["rows"]:
            merged = rows.setdefault(row["checkpoint"], {**row, "results": []})
            merged["results"] = sorted(merged["results"] + row["results"], key=lambda r: r["size"])
    return {
        **first,
        "sizes": sorted({s for data in files for s in data["sizes"]}),
        "episodes": None,
        "commands": [data["command"] for data in files],
        "rows": list(rows.values()),
    }


def variants(results: dict[str, Any]) -> list[str]:
    """The problem kinds the results are broken down by (``Task.variant``), in order."""
    return sorted({v for row in results["rows"] for r in row["results"] for v in r.get("by_variant", {})})


def accuracy_table(results: dict[str, Any], variant: str = "") -> tuple[list[str], list[list[str]]]:
    """Header and rows: one row per checkpoint, then mean ± spread when there are several; with
    ``variant``, only that kind of problem's episodes."""
    sizes = results["sizes"]
    header = ["checkpoint", *[f"{s:,} {results.get('size_unit', '')}".strip() for s in sizes]]
    rows = []
    per_size: dict[int, list[float]] = {s: [] for s in sizes}
    for row in results["rows"]:
        by_size = {r["size"]: _counts(r, variant) for r in row["results"]}
        cells = [row["checkpoint"]]
        for size in sizes:
            r = by_size.get(size)
            if not r:
                cells.append("—")
                continue
            per_size[size].append(r["accuracy"])
            cells.append(f"{100 * r['accuracy']:.0f} % ({r['correct']}/{r['episodes']})")
        rows.append(cells)
    if len(results["rows"]) > 1:
        cells = ["mean ± spread (min–max)"]
        for size in sizes:
            acc = np.array(per_size[size]) * 100
            cells.append(f"{acc.mean():.1f} % ({acc.min():.0f}–{acc.max():.0f})" if acc.size else "—")
        rows.append(cells)
    return header, rows


def _counts(result: dict[str, Any], variant: str) -> dict[str, Any] | None:
    """A size's correct/episodes/accuracy, or only ``variant``'s (None where it has none)."""
    if not variant:
        return result
    counts = result.get("by_variant", {}).get(variant)
    if not counts or not counts["episodes"]:
        return None
    return {**counts, "accuracy": counts["correct"] / counts["episodes"]}


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def new_figure(figsize: tuple[float, float] = (6, 4)) -> tuple[Any, Any]:
    """A (figure, axes) pair drawn off-screen (no display on our machines)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=figsize)


def save_figure(fig: Any, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_accuracy(results: dict[str, Any], path: Path) -> None:
    """Exact-match accuracy vs size (log x), one line per checkpoint."""
    fig, ax = new_figure()
    for row in results["rows"]:
        xs = [r["size"] for r in row["results"]]
        ys = [100 * r["accuracy"] for r in row["results"]]
        ax.plot(xs, ys, marker="o", label=row["checkpoint"])
    ax.set_xscale("log")
    ax.set_ylim(-3, 103)
    ax.set_xlabel(f"{results.get('size_unit', 'size')} (log scale)")
    ax.set_ylabel("exact match (%)")
    ax.set_title(f"{results['task']}: trained on ≤ {results.get('trained_max_size', '?')}, seed {results['seed']}")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    save_figure(fig, path)


def plot_training(log: list[dict[str, Any]], path: Path, title: str) -> None:
    """Loss (log) and long-length eval accuracy against the training step."""
    fig, ax = new_figure((7, 4))
    ax.plot([e["step"] for e in log], [e["loss"] for e in log], lw=0.8, color="tab:blue", label="training loss")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("masked cross-entropy", color="tab:blue")
    evals = [e for e in log if "eval" in e]
    if evals:
        ax2 = ax.twinx()
        for size in evals[0]["eval"]:
            ax2.plot([e["step"] for e in evals], [100 * e["eval"][size] for e in evals], marker="o",
                     label=f"exact @ {int(size):,}")
        ax2.set_ylabel("exact match on long problems (%)")
        ax2.set_ylim(-3, 103)
        ax2.legend(loc="center right", fontsize=8)
    ax.set_title(title)
    save_figure(fig, path)

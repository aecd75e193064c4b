"""``ssmagent``: train, evaluate and run tool-using Mamba policies.

Every user error ends the same way: one line on stderr saying what was wrong and how to fix it,
and exit code 2 (no traceback).
"""

from __future__ import annotations

import json
import shlex
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import click
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="A Mamba policy that solves long tasks by using tools.",
)
report_app = typer.Typer(no_args_is_help=True, help="Tables and plots generated from results/ and training logs.")
app.add_typer(report_app, name="report")
console = Console()
CHECKPOINT_DIR = Path(__file__).parent / "checkpoints"
SANDBOX_HELP = "Sandbox of tasks that run code (codefix): auto, docker or bubblewrap."


class UserError(Exception):
    """A mistake in what the user asked for; printed as one line, exit 2."""


def _fail(message: str) -> None:
    raise UserError(message)


def _device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name not in ("cpu", "cuda"):
        _fail(f"--device must be cpu, cuda or auto, got {name!r}")
    if name == "cuda" and not torch.cuda.is_available():
        _fail("--device cuda: no CUDA device is available here; use --device cpu")
    return name


def _backend(name: str, device: str) -> str:
    """The decode backend to use: ``auto`` is the fastest available (graph on CUDA with triton)."""
    from ssmagent.kernels import BACKENDS, HAS_TRITON, fastest_backend

    if name == "auto":
        return fastest_backend(device)
    if name not in BACKENDS:
        _fail(f"--backend must be auto, {', '.join(BACKENDS)}; got {name!r}")
    if name != "torch" and (device != "cuda" or not HAS_TRITON):
        _fail(f"--backend {name} needs --device cuda and triton installed (pip install 'ssmagent[gpu]'); use --backend torch")
    return name


def _parse_sizes(text: str) -> list[int]:
    try:
        sizes = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        _fail(f"--sizes must be comma-separated positive integers like 10,100,1000, got {text!r}")
    if not sizes or any(s < 1 for s in sizes):
        _fail(f"--sizes must be comma-separated positive integers like 10,100,1000, got {text!r}")
    return sizes


def _parse_size_set(text: str) -> list[int]:
    """Sizes like ``4-16``, ``4,5,6`` or ``2-4,8``: sorted, each once."""
    usage = f"--sizes must be positive integers and ranges like 4-16 or 2-4,8, got {text!r}"
    sizes: set[int] = set()
    for part in text.split(","):
        low, dash, high = part.strip().partition("-")
        try:
            first, last = int(low), int(high if dash else low)
        except ValueError:
            _fail(usage)
        if not 1 <= first <= last:
            _fail(usage)
        sizes.update(range(first, last + 1))
    return sorted(sizes)


def _task(name: str):
    from ssmagent.tasks import TaskInputError, get_task

    try:
        return get_task(name)
    except TaskInputError as err:
        _fail(str(err))


def bundled_checkpoint(task: str) -> Path:
    return CHECKPOINT_DIR / f"{task}.safetensors"


def _load(path: str | None, task_name: str, device: str):
    from ssmagent.agent import Tokenizer
    from ssmagent.model import CheckpointError, load_checkpoint

    target = Path(path) if path else bundled_checkpoint(task_name)
    if not target.exists():
        hint = "pass --checkpoint PATH" if path is None else "check the path"
        _fail(f"checkpoint {target} not found; {hint} (train one with `ssmagent train {task_name}`)")
    try:
        ckpt = load_checkpoint(target, device=device)
    except CheckpointError as err:
        _fail(str(err))
    trained_on = ckpt.meta.get("task")
    if trained_on and trained_on != task_name:
        _fail(f"checkpoint {target} was trained on {trained_on!r}, not {task_name!r}")
    return ckpt, Tokenizer(ckpt.vocab), target


@app.command()
def solve(
    task: Annotated[str, typer.Argument(help="Task name, e.g. addition.")],
    args: Annotated[list[str] | None, typer.Argument(help="An explicit instance, e.g. `123 456` for addition.")] = None,
    size: Annotated[int, typer.Option(help="Size of a random instance (when no explicit one is given).")] = 1000,
    seed: Annotated[int, typer.Option(help="Seed of a random instance (default: the task's standard instance of --size if it has one, e.g. hanoi's all-on-A → C; else a fresh random one).")] = -1,
    checkpoint: Annotated[str | None, typer.Option(help="Checkpoint (default: the bundled one).")] = None,
    policy: Annotated[str, typer.Option(help="model or expert.")] = "model",
    device: Annotated[str, typer.Option(help="cpu, cuda or auto.")] = "cpu",
    backend: Annotated[str, typer.Option(help="Decode path: auto (fastest available), torch, triton or graph.")] = "auto",
    sandbox: Annotated[str, typer.Option(help=SANDBOX_HELP)] = "auto",
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of a summary.")] = False,
    save: Annotated[Path | None, typer.Option(help="Append the trajectory to this JSONL file.")] = None,
) -> None:
    """Solve one instance and check the answer exactly."""
    import numpy as np

    from ssmagent.agent import ExpertPolicy, ModelPolicy, read_jsonl, run_episodes, write_jsonl
    from ssmagent.tasks import TaskInputError

    the_task, _ = _sandboxed(_task(task), sandbox)
    if policy not in ("model", "expert"):
        _fail(f"--policy must be model or expert, got {policy!r}")
    if size < 1:
        _fail(f"--size must be a positive integer, got {size}")
    try:
        standard = None if args or seed >= 0 else the_task.standard_instance(size)
        if standard is None and seed < 0:
            seed = int(np.random.default_rng().integers(2**31))
        instance = the_task.parse(args) if args else standard or the_task.sample(size, np.random.default_rng(seed))
    except TaskInputError as err:
        _fail(str(err))
    if standard is not None:
        seed = -1
    dev = _device(device)
    backend = _backend(backend, dev)
    state_bytes = None
    if policy == "model":
        ckpt, tokenizer, path = _load(checkpoint, task, dev)
        ckpt.model.decode_backend = backend
        runner = ModelPolicy(ckpt.model, tokenizer, 1, max_action_tokens=the_task.max_action_tokens)
        state_bytes = runner.state.nbytes()
    else:
        runner = ExpertPolicy(the_task)
    start = time.perf_counter()
    random_seed = None if args or standard is not None else seed
    (trajectory,) = run_episodes(the_task, [instance], runner, batch_size=1, seeds=[random_seed])
    seconds = time.perf_counter() - start
    expected = the_task.answer(instance)
    if save:
        write_jsonl(save, [*(read_jsonl(save) if save.exists() else []), trajectory])
    out: dict[str, Any] = {
        "task": task,
        "size": the_task.size_of(instance),
        "seed": random_seed,
        "policy": policy,
        "answer": trajectory.answer,
        "expected": expected,
        "correct": bool(trajectory.correct),
        "truncated": trajectory.truncated,
        "generated_tokens": trajectory.generated_tokens,
        "observed_tokens": trajectory.observed_tokens,
        "seconds": round(seconds, 4),
        "tokens_per_second": round((trajectory.generated_tokens + trajectory.observed_tokens) / seconds, 1) if seconds else None,
        "state_bytes": state_bytes,
        "device": dev,
        "backend": backend if policy == "model" else None,
    }
    if as_json:
        print(json.dumps(out))
        return
    _print_solve_summary(out, the_task.question(instance))


def _short(text: str, keep: int = 24) -> str:
    return text if len(text) <= 2 * keep + 5 else f"{text[:keep]}…{text[-keep:]} ({len(text):,} chars)"


def _print_solve_summary(out: dict[str, Any], question: str) -> None:
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    verdict = "[green]exact ✓[/]" if out["correct"] else "[red]WRONG ✗[/]" + (" (truncated)" if out["truncated"] else "")
    table.add_row("problem", f"{out['task']}, size {out['size']:,}" + (f", seed {out['seed']}" if out["seed"] is not None else ""))
    table.add_row("question", _short(question))
    table.add_row("answer", _short(out["answer"]) or "(none)")
    table.add_row("check", f"{verdict} by the task's exact scorer")
    table.add_row("tokens", f"{out['generated_tokens']:,} generated + {out['observed_tokens']:,} observed")
    backend = f", {out['backend']} backend" if out["backend"] else ""
    table.add_row("speed", f"{out['tokens_per_second']:,.0f} tokens/s, {out['seconds']:.2f} s on {out['device']}{backend}")
    if out["state_bytes"] is not None:
        table.add_row("state", f"{out['state_bytes']:,} bytes (conv + SSM states, constant in episode length)")
    console.print(table)


@app.command()
def train(
    task: Annotated[str, typer.Argument(help="Task name, e.g. addition.")],
    max_size: Annotated[int | None, typer.Option(help="Largest instance size trained on (default 5; with --data, the data's).")] = None,
    data: Annotated[Path | None, typer.Option(help="Train on this trajectory file (written by `ssmagent data`) instead of live expert episodes.")] = None,
    config: Annotated[str, typer.Option(help="Model config: tiny or paper-130m.")] = "tiny",
    steps: Annotated[int, typer.Option(help="Optimizer steps.")] = 1500,
    batch_size: Annotated[int, typer.Option(help="Episodes per step.")] = 32,
    lr: Annotated[float, typer.Option(help="Peak learning rate (AdamW, warm-up then cosine).")] = 3e-3,
    warmup: Annotated[int, typer.Option(help="Warm-up steps.")] = 100,
    dt_min: Annotated[float, typer.Option(help="Smallest initial dt (short-memory init, DESIGN.md §7).")] = 0.05,
    dt_max: Annotated[float, typer.Option(help="Largest initial dt.")] = 0.5,
    seed: Annotated[int, typer.Option(help="Training seed (weights and data).")] = 0,
    eval_every: Annotated[int, typer.Option(help="Evaluate long problems every N steps; keep the best.")] = 250,
    eval_sizes: Annotated[str, typer.Option(help="Sizes evaluated during training.")] = "100,1000",
    eval_episodes: Annotated[int, typer.Option(help="Episodes per size during training.")] = 10,
    out: Annotated[Path | None, typer.Option(help="Run directory (default runs/TASK-seedS).")] = None,
    resume: Annotated[bool, typer.Option(help="Continue the interrupted run in --out.")] = False,
    device: Annotated[str, typer.Option(help="cpu, cuda or auto (CUDA when present).")] = "auto",
    scan: Annotated[str, typer.Option(help="Selective scan: torch, triton (GPU) or auto (triton on CUDA).")] = "auto",
) -> None:
    """Train on short instances by teacher forcing on expert trajectories (live, or from --data)."""
    from ssmagent.model import CheckpointError
    from ssmagent.train import TrainConfig
    from ssmagent.train import train as run_training

    the_task = _task(task)
    if data is not None and max_size is not None:
        _fail("--max-size is the data's largest size when training on --data; leave it out")
    dataset = _trajectory_set(data, the_task) if data is not None else None
    cfg = TrainConfig(
        task=task, max_size=dataset.max_size if dataset else 5 if max_size is None else max_size,
        data_sha256=dataset.sha256 if dataset else None, config=config, steps=steps, batch_size=batch_size, lr=lr, warmup=warmup,
        dt_min=dt_min, dt_max=dt_max, seed=seed, eval_every=eval_every, eval_sizes=tuple(_parse_sizes(eval_sizes)),
        eval_episodes=eval_episodes, device=_device(device), scan=scan,
    )
    try:
        cfg.validate()
        from ssmagent.model import MambaConfig

        MambaConfig.preset(config, vocab_size=8)
    except ValueError as err:
        _fail(str(err))
    run_dir = out or Path("runs") / f"{task}-seed{seed}"
    if not resume and (run_dir / "last.state.pt").exists():
        _fail(f"{run_dir} already holds a run; pass --resume to continue it or --out to start elsewhere")
    source = f"{len(dataset.trajectories):,} trajectories of {data}" if dataset else "live expert episodes"
    console.print(f"training {task} ≤{cfg.max_size} from {source} on {cfg.device} (scan {cfg.scan_backend()}), "
                  f"config {config}, seed {seed} → {run_dir}")
    progress = Progress(
        TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=console,
    )
    with progress:
        bar = progress.add_task("train", total=steps, status="")
        recent: list[float] = []

        def on_log(entry: dict[str, Any]) -> None:
            recent.append(entry["seconds"])
            del recent[:-20]
            status = f"loss {entry['loss']:.4f} · {len(recent) / max(sum(recent), 1e-9):.1f} steps/s"
            if "eval" in entry:
                accs = ", ".join(f"{int(k):,}: {100 * v:.0f}%" for k, v in entry["eval"].items())
                progress.console.print(f"step {entry['step']}: loss {entry['loss']:.4g}, exact {accs} (best step {entry['best_step']})")
            progress.update(bar, completed=entry["step"], status=status)

        try:
            result = run_training(cfg, run_dir, resume=resume, on_log=on_log, data=dataset)
        except (FileNotFoundError, ValueError, CheckpointError) as err:
            _fail(str(err))
    console.print(f"best checkpoint: {run_dir / 'best.safetensors'} (step {result.best_step}, "
                  f"exact {', '.join(f'{100 * s:.0f}%' for s in result.best_score)} longest first)")


def _trajectory_set(path: Path, task: Any):
    """The checked trajectory file ``train --data`` reads (a bad one is a one-line error)."""
    from ssmagent.agent import Tokenizer, task_commands
    from ssmagent.train import DataError, load_trajectory_set

    try:
        return load_trajectory_set(path, task, Tokenizer.for_commands(task_commands(task)))
    except DataError as err:
        _fail(str(err))


@app.command()
def data(
    task: Annotated[str, typer.Argument(help="Task name, e.g. codefix.")],
    out: Annotated[Path, typer.Option(help="The trajectory file to write (JSONL; its metadata goes to FILE.meta.json).")],
    sizes: Annotated[str, typer.Option(help="Sizes drawn uniformly: a range 4-16, a list 4,5,6, or both: 2-4,8.")] = "1-5",
    episodes: Annotated[int, typer.Option(help="Expert episodes (trajectories) to write.")] = 1000,
    seed: Annotated[int, typer.Option(help="Data seed: the file is a pure function of task, sizes, episodes and seed.")] = 0,
    sandbox: Annotated[str, typer.Option(help=SANDBOX_HELP)] = "auto",
) -> None:
    """Write a fixed set of expert trajectories to train on with `train --data` (generated once:
    for codefix every episode runs its program in the real sandbox several times)."""
    from ssmagent.sandbox import SandboxError
    from ssmagent.tasks import TaskInputError
    from ssmagent.train import DataError, generate, meta_path

    the_task = _task(task)
    size_list = _parse_size_set(sizes)
    if episodes < 1:
        _fail(f"--episodes must be a positive integer, got {episodes}")
    if out.is_dir():
        _fail(f"--out {out} is a directory; pass a file path like {out / f'{task}.jsonl'}")
    try:
        the_task.check_size(size_list[-1])
    except TaskInputError as err:
        _fail(f"--sizes: {err}")
    the_task, backend_used = _sandboxed(the_task, sandbox)
    on = f" on the {backend_used} sandbox" if backend_used else ""
    console.print(f"{episodes:,} {task} expert episodes, sizes {sizes}, seed {seed}{on} → {out}")
    start = time.perf_counter()
    with Progress(TextColumn("[bold]data"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("ETA"),
                  TimeRemainingColumn(), console=console) as progress:
        bar = progress.add_task("data", total=episodes)
        try:
            meta = generate(the_task, size_list, episodes, seed, out, backend_used,
                            on_episode=lambda trajectory: progress.advance(bar))
        except (DataError, SandboxError) as err:
            _fail(str(err))
    seconds = time.perf_counter() - start
    console.print(f"wrote {meta.count:,} trajectories ({meta.tokens:,} tokens, {meta.generated_tokens:,} trained on) "
                  f"in {seconds:.1f} s, {meta.count / seconds:.1f} episodes/s; metadata → {meta_path(out)}")


def _sandboxed(task: Any, backend: str) -> tuple[Any, str | None]:
    """The task with its programs run on the chosen sandbox backend, and that backend's name.
    A task runs code when it has a ``sandbox`` (codefix); it gets a copy with the backend
    found once, so the choice is made (and reported) before any episode runs."""
    import copy

    from ssmagent.sandbox import BACKENDS, SandboxUnavailable, get_sandbox

    if backend not in ("auto", *BACKENDS):
        _fail(f"--sandbox must be auto, {' or '.join(BACKENDS)}; got {backend!r}")
    if not hasattr(task, "sandbox"):
        if backend != "auto":
            _fail(f"--sandbox: {task.name} runs no code in a sandbox; leave --sandbox out")
        return task, None
    try:
        sandbox = get_sandbox(backend)
    except SandboxUnavailable as err:
        _fail(str(err))
    sandboxed = copy.copy(task)
    sandboxed.sandbox = sandbox
    return sandboxed, sandbox.name


@app.command("eval")
def evaluate(
    task: Annotated[str, typer.Argument(help="Task name, e.g. addition.")],
    sizes: Annotated[str, typer.Option(help="Comma-separated sizes, e.g. 10,100,1000.")] = "10,100,1000",
    episodes: Annotated[int, typer.Option(help="Episodes per size (hard instances first).")] = 100,
    checkpoints: Annotated[str, typer.Option(help="Comma-separated checkpoint paths, or 'bundled'.")] = "bundled",
    seed: Annotated[int, typer.Option(help="Data seed of the evaluation problems.")] = 0,
    batch_size: Annotated[int, typer.Option(help="Episodes decoded together.")] = 64,
    policy: Annotated[str, typer.Option(help="model or expert.")] = "model",
    device: Annotated[str, typer.Option(help="cpu, cuda or auto.")] = "cpu",
    backend: Annotated[str, typer.Option(help="Decode path: auto (fastest available), torch, triton or graph.")] = "auto",
    sandbox: Annotated[str, typer.Option(help=SANDBOX_HELP)] = "auto",
    name: Annotated[str, typer.Option(help="Results go to results/TASK/NAME.json (and .png with --plot).")] = "eval",
    results_dir: Annotated[Path, typer.Option(help="Root of the results tree.")] = Path("results"),
    plot: Annotated[bool, typer.Option(help="Also write a PNG plot of accuracy vs size.")] = False,
    failures: Annotated[int, typer.Option(help="Show the first N failed episodes: first wrong token, phase, context.")] = 0,
) -> None:
    """Length-generalisation sweep with the real tools: a table, a JSON file and a plot.

    Episodes keep only their counts unless --failures asks for diagnoses, so memory stays flat
    at any length; progress shows decode steps as they happen.
    """
    from ssmagent.agent import ExpertPolicy, ModelPolicy
    from ssmagent.eval import evaluate_size
    from ssmagent.eval.diagnose import first_divergence
    from ssmagent.eval.report import accuracy_table, plot_accuracy, write_json_atomic

    the_task, _ = _sandboxed(_task(task), sandbox)
    size_list = _parse_sizes(sizes)
    if episodes < 1 or batch_size < 1 or failures < 0:
        _fail("--episodes and --batch-size must be positive integers, --failures non-negative")
    if policy not in ("model", "expert"):
        _fail(f"--policy must be model or expert, got {policy!r}")
    if not name or "/" in name or name.startswith("."):
        _fail(f"--name must be a plain file name, got {name!r}")
    dev = _device(device)
    backend = _backend(backend, dev)
    names = [c.strip() for c in checkpoints.split(",") if c.strip()] if policy == "model" else ["expert"]
    loaded = [_load(None if c == "bundled" else c, task, dev) for c in names] if policy == "model" else [None]
    for item in loaded:
        if item is not None:
            item[0].model.decode_backend = backend
    if policy == "model":
        console.print(f"decoding on {dev} with the {backend} backend")
    rows, diagnoses = [], []
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TextColumn("{task.fields[status]}"), console=console) as progress:
        bar = progress.add_task("eval", total=len(names) * len(size_list) * episodes, status="")
        for label, item in zip(names, loaded):
            results = []
            for size in size_list:
                progress.update(bar, description=f"{Path(label).name} @ {size:,}")
                if item is None:
                    runner = ExpertPolicy(the_task)
                else:
                    ckpt, tokenizer, _ = item
                    runner = ModelPolicy(ckpt.model, tokenizer, min(batch_size, episodes),
                                         max_action_tokens=the_task.max_action_tokens,
                                         on_tick=_tick_status(progress, bar))
                result, instances, trajectories = evaluate_size(
                    the_task, runner, size, episodes, seed, batch_size,
                    on_episode=lambda i, t: progress.advance(bar), keep_segments=failures > 0 and item is not None,
                )
                results.append(result.to_json())
                if item is not None:
                    for i in result.failures[: max(0, failures - len(diagnoses))]:
                        found = first_divergence(the_task, instances[i], trajectories[i], item[1])
                        diagnoses.append((label, size, i, instances[i], found))
            meta = item[0].meta if item else {}
            rows.append({"checkpoint": label, "train": meta.get("train"), "step": meta.get("step"), "results": results})
    data = {
        "task": task, "size_unit": the_task.size_unit, "seed": seed, "episodes": episodes, "sizes": size_list,
        "policy": policy, "device": dev, "backend": backend if policy == "model" else None,
        "trained_max_size": _trained_max_size(rows),
        "command": "ssmagent " + " ".join(shlex.quote(a) for a in sys.argv[1:]), "rows": rows,
    }
    out = results_dir / task / f"{name}.json"
    write_json_atomic(out, data)
    header, body = accuracy_table(data)
    table = Table(*header, title=f"{task}: exact match, data seed {seed}")
    for row in body:
        table.add_row(*row)
    console.print(table)
    for row in rows:
        for r in row["results"]:
            per_item = the_task.size_unit.removesuffix("s")
            console.print(f"{row['checkpoint']} @ {r['size']:,}: {r['seconds']:.1f} s, "
                          f"{r['generated_tokens'] / r['episodes'] / r['size']:.1f} generated + "
                          f"{r['observed_tokens'] / r['episodes'] / r['size']:.1f} observed tokens per {per_item}, "
                          f"peak memory {r['peak_rss_mib']:,.0f} MiB")
    for label, size, index, instance, found in diagnoses:
        console.print(f"[bold red]failed[/] {label} @ {size:,}, episode {index} {_short(json.dumps(the_task.to_json(instance)), 30)}")
        if found:
            console.print(f"  first wrong token at stream position {found.position:,} ({found.phase}): "
                          f"expected {found.expected!r}, got {found.got!r}", markup=False)
            console.print(f"  after: …{found.context}", markup=False)
    console.print(f"results → {out}")
    if plot:
        plot_accuracy(data, out.with_suffix(".png"))
        console.print(f"plot → {out.with_suffix('.png')}")


def _tick_status(progress: Progress, bar: Any, every: int = 2000):
    """An on_tick callback that shows decode steps and their rate as they happen."""
    start = time.perf_counter()

    def on_tick(ticks: int) -> None:
        if ticks % every == 0:
            rate = ticks / max(time.perf_counter() - start, 1e-9)
            progress.update(bar, status=f"{ticks:,} decode steps · {rate:,.0f} steps/s")

    return on_tick


def _trained_max_size(rows: list[dict[str, Any]]) -> int | None:
    sizes = {(r.get("train") or {}).get("max_size") for r in rows} - {None}
    return sizes.pop() if len(sizes) == 1 else None


@report_app.command("eval")
def report_eval(
    results: Annotated[list[Path], typer.Argument(help="results/TASK/NAME.json files written by `ssmagent eval`.")],
    plot: Annotated[Path | None, typer.Option(help="Also write the accuracy plot here.")] = None,
) -> None:
    """Print the markdown table of eval results files, joined by checkpoint (what the docs show)."""
    from ssmagent.eval.report import accuracy_table, markdown_table, merge_results, plot_accuracy, read_results, variants

    try:
        data = merge_results([read_results(path) for path in results])
    except ValueError as err:
        _fail(str(err))
    print("\n".join(f"`{command}`" for command in data["commands"]) + "\n")
    print(markdown_table(*accuracy_table(data)))
    for variant in variants(data):
        print(f"\n{variant} only:\n\n" + markdown_table(*accuracy_table(data, variant)))
    if plot:
        plot_accuracy(data, plot)
        print(f"\nplot → {plot}")


@report_app.command("training")
def report_training(
    run: Annotated[Path, typer.Argument(help="A run directory (with log.jsonl) written by `ssmagent train`.")],
    plot: Annotated[Path, typer.Option(help="Where to write the training-curve PNG.")] = Path("docs/training-curve.png"),
) -> None:
    """Plot a run's training curve (loss and long-length accuracy) from its log."""
    from ssmagent.eval.report import plot_training

    log_path = run / "log.jsonl"
    if not log_path.exists():
        _fail(f"{log_path} not found; pass a run directory written by `ssmagent train`")
    log = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
    if not log:
        _fail(f"{log_path} is empty")
    plot_training(log, plot, title=f"{run.name}: loss and exact match on long problems")
    evals = [e for e in log if "eval" in e]
    print(f"{len(log)} steps, {sum(e['seconds'] for e in log):.0f} s of training steps; final loss {log[-1]['loss']:.4g}")
    for e in evals:
        print(f"step {e['step']}: " + ", ".join(f"{int(k):,}: {100 * v:.0f}%" for k, v in e["eval"].items()))
    print(f"plot → {plot}")


@report_app.command("memory")
def report_memory(
    checkpoint: Annotated[str, typer.Argument(help="A checkpoint path, or 'bundled'.")],
    task: Annotated[str, typer.Option(help="Task whose episode drives the model.")] = "addition",
    size: Annotated[int, typer.Option(help="Size of the episode dt is averaged over.")] = 100,
    window: Annotated[int, typer.Option(help="Locality window to compare with (tokens).")] = 20,
    plot: Annotated[Path | None, typer.Option(help="Write the per-channel memory plot here.")] = None,
) -> None:
    """Per-channel state memory (decay time from dt and A): how far back the model can count."""
    from ssmagent.eval.memory import channel_memory, plot_memory

    if size < 1 or window < 1:
        _fail("--size and --window must be positive integers")
    ckpt, tokenizer, path = _load(None if checkpoint == "bundled" else checkpoint, task, "cpu")
    the_task = _task(task)
    layers = channel_memory(ckpt.model, the_task, tokenizer, size)
    for layer in layers:
        s = layer.summary(window)
        print(f"layer {layer.layer}: median τ {s['median']:.1f} tokens, longest {s['max']:.1f}, "
              f"{s[f'channels_over_{window}']:,} of {s['channels']:,} channels remember > {window} tokens")
    if plot:
        unit = the_task.size_unit.removesuffix("s")
        plot_memory(layers, plot, f"{path.name}: state memory over a {size:,}-{unit} {task} episode", window)
        print(f"plot → {plot}")


bench_app = typer.Typer(no_args_is_help=True, help="Speed, measured side by side in one run (see docs/performance.md).")
app.add_typer(bench_app, name="bench")


_PASS_THROUGH = {"allow_extra_args": True, "ignore_unknown_options": True}


def _run_bench(name: str, args: list[str]) -> None:
    """Run ``ssmagent.bench.<name>.main(args)``: its table on stdout, its progress on stderr; its
    argparse usage errors (bad or unknown options) and bad values become one-line user errors."""
    import contextlib
    import importlib
    import io

    bench_main = importlib.import_module(f"ssmagent.bench.{name}").main
    captured = io.StringIO()
    try:
        with contextlib.redirect_stderr(captured):
            code = bench_main(args)
    except SystemExit:  # argparse's usage errors: keep only its last line, the reason
        reason = (captured.getvalue().strip().splitlines() or ["bad option"])[-1]
        _fail(f"{reason.split('error: ', 1)[-1]} (see `ssmagent bench {name} --help`)")
        return
    except (RuntimeError, ValueError) as err:
        _fail(str(err))
    sys.stderr.write(captured.getvalue())
    if code:
        raise typer.Exit(code)


@bench_app.command("decode", context_settings=_PASS_THROUGH)
def bench_decode(ctx: typer.Context) -> None:
    """Decode µs/token, tokens/s and % of the bandwidth roofline: graph, triton, torch, transformers, kv-transformer.

    Options (passed through): --configs tiny,paper-130m --vocabs 116,50280 --batches 1,8,64,256
    --impls graph,triton,torch,transformers,kv-transformer --dtype bfloat16 --device cuda --min-time 0.3
    --kv-context 4 --json PATH
    """
    _run_bench("decode", ctx.args)


@bench_app.command("memory", context_settings=_PASS_THROUGH)
def bench_memory(ctx: typer.Context) -> None:
    """Peak GPU memory while decoding after 1K … 1M tokens: Mamba (chunked prefill) vs a Transformer's KV cache.

    Options (passed through): --lengths 1000,10000,100000,1000000 --config paper-130m --vocab 50280
    --impls mamba,kv-transformer --dtype bfloat16 --device cuda --batch 1 --chunk 16384 --steps 8 --json PATH
    """
    _run_bench("memory", ctx.args)


@bench_app.command("scan", context_settings=_PASS_THROUGH)
def bench_scan(ctx: typer.Context) -> None:
    """Selective scan forward and forward+backward ms and % of the bandwidth roofline: torch, triton, mamba-ssm.

    Options (passed through): --shapes 32x11000x128x16,8x2048x1536x16 --impls torch,triton,mamba-ssm
    --dtype float32 --device cuda --min-time 0.3 --json PATH
    """
    _run_bench("scan", ctx.args)


sandbox_app = typer.Typer(no_args_is_help=True, help="The code sandbox (DESIGN.md §4): build its image, check its backends, run a file.")
app.add_typer(sandbox_app, name="sandbox")


@sandbox_app.command("build")
def sandbox_build(
    force: Annotated[bool, typer.Option(help="Rebuild even when the image already exists.")] = False,
    mirror: Annotated[str | None, typer.Option(help="Debian mirror (default: the one in this machine's apt sources).")] = None,
) -> None:
    """Build the Docker backend's image (debootstrap + docker import, about a minute; needs root)."""
    import functools

    from ssmagent.sandbox import SandboxError
    from ssmagent.sandbox.docker_backend import connect
    from ssmagent.sandbox.image import build_image

    try:
        result = build_image(connect(), force=force, mirror=mirror,
                             log=functools.partial(console.print, markup=False, soft_wrap=True))
    except SandboxError as err:
        _fail(str(err))
    if not result.built:
        console.print(f"{result.image} already exists (pass --force to rebuild)")
        return
    console.print(f"built {result.image} in {result.seconds:.0f} s from {result.mirror} ({result.size_bytes / 1e6:,.0f} MB)")


@sandbox_app.command("doctor")
def sandbox_doctor(
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of a table.")] = False,
) -> None:
    """Which backend `auto` uses, and why each backend is or is not usable here (exit 1 if none is)."""
    from ssmagent.sandbox import doctor

    report = doctor()
    if as_json:
        print(json.dumps(report.to_json()))
    else:
        table = Table("backend", "usable", "why")
        for status in report.backends:
            table.add_row(status.name, "[green]yes[/]" if status.available else "[red]no[/]", status.reason)
        console.print(table)
        console.print(f"auto → {report.chosen or 'none: every run would fail until one of the fixes above is applied'}")
    if report.chosen is None:
        raise typer.Exit(1)


@sandbox_app.command("run")
def sandbox_run(
    file: Annotated[Path, typer.Argument(help="A Python file; it runs as `python FILE` in a fresh workspace holding a copy of it.")],
    backend: Annotated[str, typer.Option(help="auto, docker or bubblewrap.")] = "auto",
    timeout: Annotated[float, typer.Option(help="Wall-clock limit in seconds.")] = 10.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as one JSON object.")] = False,
) -> None:
    """Run a Python file in the sandbox and show what a model would observe."""
    import math
    import shutil
    import tempfile

    from ssmagent.sandbox import BACKENDS, SandboxError, SandboxLimits, get_sandbox

    if not file.is_file():
        _fail(f"{file} is not a file; pass the path of a Python file")
    if backend not in ("auto", *BACKENDS):
        _fail(f"--backend must be auto, {' or '.join(BACKENDS)}; got {backend!r}")
    if not (math.isfinite(timeout) and timeout > 0):
        _fail(f"--timeout must be a positive number of seconds, got {timeout}")
    try:
        sandbox = get_sandbox(backend)
        with tempfile.TemporaryDirectory(prefix="ssmagent-run-") as workspace:
            shutil.copyfile(file, Path(workspace) / file.name)
            script = file.name if not file.name.startswith("-") else f"./{file.name}"  # never read as an option
            result = sandbox.run(Path(workspace), ["python", script], limits=SandboxLimits(timeout_s=timeout))
    except SandboxError as err:
        _fail(str(err))
    if as_json:
        print(json.dumps(result.to_json()))
        return
    print(result.observation(), end="")
    console.print(f"[dim]{result.backend} backend, {result.seconds:.2f} s[/]")


@app.command("list")
def list_things() -> None:
    """Tasks, their envs and bundled checkpoints."""
    from ssmagent.tasks import TASKS

    table = Table("task", "env", "size counts", "bundled checkpoint")
    for name, t in sorted(TASKS.items()):
        path = bundled_checkpoint(name)
        table.add_row(name, t.env_id, t.size_unit, f"{path.name} ({path.stat().st_size:,} B)" if path.exists() else "—")
    console.print(table)


def main() -> None:
    """Entry point: typer, with every user error reduced to one line and exit code 2."""
    try:
        app(standalone_mode=False)
    except UserError as err:
        _one_line_error(str(err))
    except (typer.Exit, click.exceptions.Exit) as err:
        sys.exit(err.exit_code)
    except (typer.Abort, click.exceptions.Abort):
        print("error: interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as err:
        if not hasattr(err, "format_message"):  # a bug, not a usage error: keep its traceback
            raise
        # click's usage errors (typer vendors click, so match by interface, not by class)
        command = getattr(getattr(err, "ctx", None), "command_path", "ssmagent")
        _one_line_error(f"{err.format_message()} (see `{command} --help`)")


def _one_line_error(message: str) -> None:
    print("error: " + " ".join(message.split()), file=sys.stderr)
    sys.exit(2)

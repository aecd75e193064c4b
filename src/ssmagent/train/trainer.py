"""Training by teacher forcing on expert trajectories, selecting checkpoints by long-length accuracy.

The recipe reads top to bottom: each step draws a fresh batch of short instances (sizes
1..max_size) from an RNG keyed by (seed, step), runs the expert through the real env and tools
to get trajectories, and minimises cross-entropy on thought, tool and answer tokens only.
Because the data of step i depends on nothing but (seed, i), a resumed run sees exactly the
batches an uninterrupted one would, and ends with the same weights. Where the expert is costly
(codefix runs its programs in a sandbox), the batches come instead from a fixed trajectory set
generated once (``train.data``), drawn by an RNG keyed the same way.

Every ``eval_every`` steps the model is evaluated on *long* problems with the real tools and
the best checkpoint by that accuracy is kept: training loss reaches zero long before a run
extrapolates, and says nothing about which runs will (DESIGN.md §7).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ssmagent.agent import ExpertPolicy, Tokenizer, Trajectory, run_episodes, task_commands
from ssmagent.atomic import atomic_write_text
from ssmagent.eval.sweep import evaluate_model
from ssmagent.kernels import fastest_backend, triton_installed
from ssmagent.model import MambaConfig, MambaLM, load_checkpoint, save_checkpoint
from ssmagent.model.mamba import SCAN_BACKENDS, ScanOptions
from ssmagent.model.checkpoint import load_training_state, save_training_state
from ssmagent.tasks import Task, get_task
from ssmagent.train.data import TrajectorySet, data_batch

EVAL_SEED = 7_000_003
"""Data seed of the evaluations run during training: distinct from the default seed (0) of
``ssmagent eval``, so the checkpoint is not selected on the problems it is reported on."""


@dataclass
class TrainConfig:
    task: str = "addition"
    max_size: int = 5
    """Largest instance size trained on (sizes are drawn uniformly from 1..max_size; with
    ``data_sha256``, the largest size in the data)."""
    config: str = "tiny"
    steps: int = 1500
    batch_size: int = 32
    lr: float = 3e-3
    warmup: int = 100
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    dt_min: float = 0.05
    """Short-memory dt initialisation (DESIGN.md §7): the slowest state channel forgets within
    ~20 tokens, so the model cannot learn to count over long stretches."""
    dt_max: float = 0.5
    seed: int = 0
    eval_every: int = 250
    eval_sizes: tuple[int, ...] = (100, 1000)
    eval_episodes: int = 10
    device: str = "cpu"
    scan: str = "auto"
    """Selective scan of the training pass: "torch", "triton" (GPU), or "auto" (triton on CUDA
    when installed): the torch scan's per-step kernel launches dominate long sequences on a GPU."""
    data_sha256: str | None = None
    """SHA-256 of the trajectory file trained on (``--data``); None: live expert batches. Part
    of the config so that a run resumes only on the same data, wherever the file now lives."""

    def validate(self) -> None:
        for name in ("max_size", "steps", "batch_size", "warmup", "eval_every", "eval_episodes"):
            if getattr(self, name) < (0 if name == "warmup" else 1):
                raise ValueError(f"--{name.replace('_', '-')} must be positive, got {getattr(self, name)}")
        if not 0 < self.dt_min < self.dt_max:
            raise ValueError(f"need 0 < dt-min < dt-max, got {self.dt_min} and {self.dt_max}")
        if self.lr <= 0:
            raise ValueError(f"--lr must be positive, got {self.lr}")
        if any(s < 1 for s in self.eval_sizes):
            raise ValueError("--eval-sizes must be positive integers")
        if self.scan not in ("auto", *SCAN_BACKENDS):
            raise ValueError(f"--scan must be auto, {', '.join(SCAN_BACKENDS)}; got {self.scan!r}")
        if self.scan == "triton" and not (self.device.startswith("cuda") and triton_installed()):
            raise ValueError("--scan triton needs --device cuda and triton installed; use --scan torch")

    def scan_backend(self) -> str:
        """The scan this run uses (``auto`` resolved)."""
        if self.scan != "auto":
            return self.scan
        return "triton" if self.device.startswith("cuda") and triton_installed() else "torch"


@dataclass
class TrainResult:
    run_dir: Path
    best_step: int
    best_score: tuple[float, ...]
    log: list[dict[str, Any]] = field(default_factory=list)


def learning_rate(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up, then cosine decay to ``min_lr_ratio`` of the peak."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def expert_batch(task: Task, max_size: int, batch_size: int, seed: int, step: int) -> list[Trajectory]:
    """The expert trajectories of one training step; a pure function of (seed, step)."""
    rng = np.random.default_rng([seed, step])
    instances = [task.sample_training(max_size, rng) for _ in range(batch_size)]
    return run_episodes(task, instances, ExpertPolicy(task), batch_size=batch_size)


def collate(trajectories: list[Trajectory], tokenizer: Tokenizer) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(inputs, targets, loss mask), right-padded: the model predicts token t+1 from ≤t."""
    streams = [t.stream(tokenizer) for t in trajectories]
    length = max(len(ids) for ids, _ in streams)
    ids = torch.full((len(streams), length), tokenizer.pad_id, dtype=torch.long)
    mask = torch.zeros((len(streams), length), dtype=torch.bool)
    for row, (s_ids, s_mask) in enumerate(streams):
        ids[row, : len(s_ids)] = torch.tensor(s_ids)
        mask[row, : len(s_mask)] = torch.tensor(s_mask)
    return ids[:, :-1], ids[:, 1:], mask[:, 1:]


def masked_loss(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean cross-entropy over the masked tokens, and their teacher-forced accuracy."""
    picked = logits[mask]
    wanted = targets[mask]
    return F.cross_entropy(picked, wanted), (picked.argmax(-1) == wanted).float().mean()


def _score(results: list) -> tuple[float, ...]:
    """Selection key: accuracy at the longest size first, then the shorter ones."""
    return tuple(r.accuracy for r in sorted(results, key=lambda r: -r.size))


def train(
    cfg: TrainConfig,
    run_dir: Path,
    resume: bool = False,
    on_log: Callable[[dict[str, Any]], None] | None = None,
    data: TrajectorySet | None = None,
) -> TrainResult:
    """Train (or resume) a run in ``run_dir``: ``last`` and ``best`` checkpoints, ``log.jsonl``.
    With ``data`` (whose hash ``cfg.data_sha256`` must be), batches come from that trajectory
    set instead of the live expert."""
    cfg.validate()
    if (data.sha256 if data else None) != cfg.data_sha256:
        raise ValueError("cfg.data_sha256 must be the SHA-256 of the trajectory set passed as data")
    task = get_task(cfg.task)
    tokenizer = Tokenizer.for_commands(task_commands(task))
    device = torch.device(cfg.device)
    run_dir.mkdir(parents=True, exist_ok=True)
    last, best, state_path = run_dir / "last.safetensors", run_dir / "best.safetensors", run_dir / "last.state.pt"

    torch.manual_seed(cfg.seed)
    model_cfg = MambaConfig.preset(cfg.config, vocab_size=len(tokenizer))
    model_cfg.dt_min, model_cfg.dt_max = cfg.dt_min, cfg.dt_max
    model = MambaLM(model_cfg).to(device)
    model.decode_backend = fastest_backend(device.type)  # evaluations decode thousands of steps
    model.scan = ScanOptions(backend=cfg.scan_backend())
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.95))
    start_step, best_score, best_step, log = 0, (-1.0,), -1, []

    if resume:
        if not state_path.exists() or not last.exists():
            raise FileNotFoundError(f"nothing to resume in {run_dir}: no last.safetensors/last.state.pt there")
        saved = load_training_state(state_path)
        if saved["config"].get("data_sha256") != cfg.data_sha256:
            raise ValueError(_other_data(run_dir, saved["config"].get("data_sha256"), data))
        if {**_jsonable(TrainConfig()), **saved["config"]} != _jsonable(cfg):  # keys added since: defaults
            raise ValueError(f"{run_dir} was trained with other options; resume with the same ones: {saved['config']}")
        model.load_state_dict(load_checkpoint(last, device=str(device)).model.state_dict())
        optimizer.load_state_dict(saved["optimizer"])
        torch.set_rng_state(saved["torch_rng"])
        start_step, best_step, log = saved["step"], saved["best_step"], saved["log"]
        best_score = tuple(saved["best_score"])

    meta = {"task": cfg.task, "train": _jsonable(cfg)}

    def save(step: int) -> None:
        save_checkpoint(last, model, tokenizer.vocab, {**meta, "step": step})
        save_training_state(
            state_path,
            {
                "config": _jsonable(cfg),
                "optimizer": optimizer.state_dict(),
                "torch_rng": torch.get_rng_state(),
                "step": step,
                "best_step": best_step,
                "best_score": list(best_score),
                "log": log,
            },
        )
        _write_log(run_dir / "log.jsonl", log)

    def batch(step: int) -> list[Trajectory]:
        if data is not None:
            return data_batch(data.trajectories, cfg.batch_size, cfg.seed, step)
        return expert_batch(task, cfg.max_size, cfg.batch_size, cfg.seed, step)

    tick = time.perf_counter()
    for step in range(start_step, cfg.steps):
        model.train()
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, cfg)
        inputs, targets, mask = (t.to(device) for t in collate(batch(step), tokenizer))
        loss, accuracy = masked_loss(model(inputs), targets, mask)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        done = step + 1
        entry: dict[str, Any] = {
            "step": done,
            "loss": round(loss.item(), 6),
            "token_accuracy": round(accuracy.item(), 6),
            "lr": learning_rate(step, cfg),
            "seconds": round(time.perf_counter() - tick, 4),
        }
        tick = time.perf_counter()
        if done % cfg.eval_every == 0 or done == cfg.steps:
            model.eval()
            results = evaluate_model(task, model, tokenizer, cfg.eval_sizes, cfg.eval_episodes, EVAL_SEED)
            entry["eval"] = {str(r.size): r.accuracy for r in results}
            score = _score(results)
            if score >= best_score:
                best_score, best_step = score, done
                save_checkpoint(best, model, tokenizer.vocab, {**meta, "step": done, "eval": entry["eval"]})
            entry["best_step"] = best_step
            tick = time.perf_counter()
        log.append(entry)
        if "eval" in entry:
            save(done)
        if on_log:
            on_log(entry)
    return TrainResult(run_dir, best_step, best_score, log)


def _other_data(run_dir: Path, trained_on: str | None, data: TrajectorySet | None) -> str:
    """Why a run cannot resume on this data (or without data, or with data it never had)."""
    was = f"the trajectory file with SHA-256 {trained_on[:12]}…" if trained_on else "live expert batches"
    now = f"{data.path} (SHA-256 {data.sha256[:12]}…)" if data else "live expert batches"
    return f"{run_dir} was trained on {was}, not {now}; resume with the same data (--data)"


def _jsonable(cfg: TrainConfig) -> dict[str, Any]:
    return json.loads(json.dumps(asdict(cfg)))


def _write_log(path: Path, log: list[dict[str, Any]]) -> None:
    atomic_write_text(path, "".join(json.dumps(e) + "\n" for e in log))

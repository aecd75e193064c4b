"""Length-generalisation sweeps: run a policy on instances of growing size, score exactly.

An evaluation set at size n always starts with the task's hard instances (for addition the
carry chains 99…9+1, 1+99…9, 99…9+99…9), then random instances from a seeded RNG, so every
checkpoint of a sweep sees the very same problems.
"""

from __future__ import annotations

import resource
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ssmagent.agent import ModelPolicy, Policy, Tokenizer, Trajectory, run_episodes
from ssmagent.tasks import Task


def eval_instances(task: Task, size: int, episodes: int, seed: int) -> list[Any]:
    """The evaluation set at ``size``: hard instances first, then seeded random ones."""
    rng = np.random.default_rng([seed, size])
    hard = task.hard_instances(size)[:episodes]
    return hard + [task.sample(size, rng) for _ in range(episodes - len(hard))]


@dataclass
class SizeResult:
    size: int
    episodes: int
    correct: int
    seconds: float
    generated_tokens: int
    observed_tokens: int
    failures: list[int] = field(default_factory=list)
    by_variant: dict[str, tuple[int, int]] = field(default_factory=dict)
    """(correct, episodes) per ``Task.variant`` when the task has several kinds of problem."""
    peak_rss_mib: float = 0.0
    """Peak resident memory of this process so far (it never decreases): that it stays flat as
    the size grows shows that nothing grows with episode length but the tools' own memory."""

    @property
    def accuracy(self) -> float:
        return self.correct / self.episodes if self.episodes else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "size": self.size,
            "episodes": self.episodes,
            "correct": self.correct,
            "accuracy": self.accuracy,
            "seconds": round(self.seconds, 3),
            "generated_tokens": self.generated_tokens,
            "observed_tokens": self.observed_tokens,
            "failures": self.failures,
            **({"by_variant": {k: {"correct": c, "episodes": n} for k, (c, n) in self.by_variant.items()}} if self.by_variant else {}),
            "peak_rss_mib": round(self.peak_rss_mib, 1),
        }


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def evaluate_size(
    task: Task,
    policy: Policy,
    size: int,
    episodes: int,
    seed: int,
    batch_size: int = 64,
    on_episode: Callable[[int, Trajectory], None] | None = None,
    keep_segments: bool = True,
) -> tuple[SizeResult, list[Any], list[Trajectory]]:
    """Run the evaluation set at ``size``; returns the result, the instances and trajectories."""
    instances = eval_instances(task, size, episodes, seed)
    start = time.perf_counter()
    trajectories = run_episodes(
        task, instances, policy, batch_size=batch_size, on_episode=on_episode, keep_segments=keep_segments
    )
    result = SizeResult(
        size=size,
        episodes=len(trajectories),
        correct=sum(bool(t.correct) for t in trajectories),
        seconds=time.perf_counter() - start,
        generated_tokens=sum(t.generated_tokens for t in trajectories),
        observed_tokens=sum(t.observed_tokens for t in trajectories),
        failures=[i for i, t in enumerate(trajectories) if not t.correct],
        by_variant=count_by_variant(task, instances, trajectories),
        peak_rss_mib=peak_rss_mib(),
    )
    return result, instances, trajectories


def count_by_variant(task: Task, instances: list[Any], trajectories: list[Trajectory]) -> dict[str, tuple[int, int]]:
    """(correct, episodes) per variant, in sorted order; empty for single-kind tasks."""
    counts: dict[str, list[int]] = {}
    for instance, trajectory in zip(instances, trajectories):
        variant = task.variant(instance)
        if variant:
            tally = counts.setdefault(variant, [0, 0])
            tally[0] += bool(trajectory.correct)
            tally[1] += 1
    return {k: (c, n) for k, (c, n) in sorted(counts.items())}


def evaluate_model(
    task: Task,
    model: torch.nn.Module,
    tokenizer: Tokenizer,
    sizes: Sequence[int],
    episodes: int,
    seed: int,
    batch_size: int = 64,
) -> list[SizeResult]:
    """Greedy model rollouts with the real tools at each size."""
    results = []
    for size in sizes:
        policy = ModelPolicy(model, tokenizer, min(batch_size, episodes), max_action_tokens=task.max_action_tokens)
        result, _, _ = evaluate_size(task, policy, size, episodes, seed, batch_size, keep_segments=False)
        results.append(result)
    return results

"""Length-generalisation sweeps: run a policy on instances of growing size, score exactly.

An evaluation set at size n always starts with the task's hard instances (for addition the
carry chains 99…9+1, 1+99…9, 99…9+99…9), then random instances from a seeded RNG, so every
checkpoint of a sweep sees the very same problems.
"""

from __future__ import annotations

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
        }


def evaluate_size(
    task: Task,
    policy: Policy,
    tokenizer: Tokenizer,
    size: int,
    episodes: int,
    seed: int,
    batch_size: int = 64,
    on_episode: Callable[[int, Trajectory], None] | None = None,
) -> tuple[SizeResult, list[Trajectory]]:
    instances = eval_instances(task, size, episodes, seed)
    start = time.perf_counter()
    trajectories = run_episodes(task, instances, policy, batch_size=batch_size, on_episode=on_episode)
    seconds = time.perf_counter() - start
    counts = [t.counts(tokenizer) for t in trajectories]
    result = SizeResult(
        size=size,
        episodes=len(trajectories),
        correct=sum(bool(t.correct) for t in trajectories),
        seconds=seconds,
        generated_tokens=sum(c["generated"] for c in counts),
        observed_tokens=sum(c["observed"] for c in counts),
        failures=[i for i, t in enumerate(trajectories) if not t.correct],
    )
    return result, trajectories


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
        result, _ = evaluate_size(task, policy, tokenizer, size, episodes, seed, batch_size)
        results.append(result)
    return results

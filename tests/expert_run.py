"""Driving the real env with a task's expert, for the task tests."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ssmagent.env import ToolEnv
from ssmagent.tasks import Expert, Task


@dataclass
class ExpertRun:
    """How an expert's episode ended: the last step's reward, flags and info, the steps taken."""

    reward: float
    terminated: bool
    truncated: bool
    info: dict[str, Any]
    steps: int
    expert: Expert


def run_expert(task: Task, instance: Any) -> ExpertRun:
    env = ToolEnv(task, task.size_of(instance))
    observation, _ = env.reset(options={"instance": instance})
    expert = task.expert()
    for steps in range(1, task.step_budget(task.size_of(instance)) + 1):
        observation, reward, terminated, truncated, info = env.step(expert.act(observation))
        if terminated or truncated:
            return ExpertRun(reward, terminated, truncated, info, steps, expert)
    raise AssertionError("the env neither terminated nor truncated within its step budget")

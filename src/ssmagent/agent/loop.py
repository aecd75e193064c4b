"""The agent loop: policy ⇄ env, for many episodes at once, writing trajectories as it goes.

Episodes run in a fixed number of slots; a slot whose episode ends takes the next waiting one
(continuous batching), so a batch of mixed lengths keeps every row busy until the tail.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ssmagent.agent.policies import Policy
from ssmagent.agent.trajectory import Trajectory
from ssmagent.env import ToolEnv
from ssmagent.tasks import Task


@dataclass
class _Running:
    index: int
    env: ToolEnv
    trajectory: Trajectory


def run_episodes(
    task: Task,
    instances: Sequence[Any],
    policy: Policy,
    *,
    batch_size: int = 64,
    seeds: Sequence[int | None] | None = None,
    on_episode: Callable[[int, Trajectory], None] | None = None,
    keep_segments: bool = True,
) -> list[Trajectory]:
    """Run one episode per instance; trajectories come back in the order of ``instances``.

    ``on_episode(index, trajectory)`` is called as each episode ends (to save as you go, or
    to show progress). ``keep_segments=False`` keeps only the answer, verdict and token counts,
    so that memory stays flat however long the episodes (the tools' own memory aside).
    """
    waiting = deque(range(len(instances)))
    running: dict[int, _Running] = {}
    results: list[Trajectory | None] = [None] * len(instances)
    pending: dict[int, str] = {}

    def start(slot: int) -> None:
        index = waiting.popleft()
        instance = instances[index]
        env = ToolEnv(task, task.size_of(instance))
        question, _ = env.reset(options={"instance": instance})
        seed = seeds[index] if seeds is not None else None
        trajectory = Trajectory(task.name, task.size_of(instance), seed, task.to_json(instance))
        trajectory.add("question", question, keep_segments)
        running[slot] = _Running(index, env, trajectory)
        policy.begin(slot)
        pending[slot] = question

    for slot in range(min(batch_size, len(instances))):
        start(slot)
    while running:
        actions = policy.act(pending)
        pending = {}
        for slot, action in actions.items():
            episode = running[slot]
            observation, _, terminated, truncated, info = episode.env.step(action)
            trajectory = episode.trajectory
            trajectory.add("thought", info["thought"], keep_segments)
            trajectory.add("answer", info["answer_part"], keep_segments)
            trajectory.add("tool", info["command"], keep_segments)
            if terminated or truncated:
                trajectory.answer, trajectory.correct = info["answer"], info["correct"]
                trajectory.truncated = truncated
                results[episode.index] = trajectory
                del running[slot]
                if on_episode:
                    on_episode(episode.index, trajectory)
                if waiting:
                    start(slot)
                else:
                    policy.end(slot)
            else:
                trajectory.add("obs", observation, keep_segments)
                pending[slot] = observation
    return [t for t in results if t is not None]

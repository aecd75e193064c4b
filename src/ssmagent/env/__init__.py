"""Gymnasium environments, one per task, registered on import as ``ssmagent/<Name>-v0``."""

from __future__ import annotations

import gymnasium as gym

from ssmagent.env.tool_env import CHARSET, ToolEnv
from ssmagent.tasks import TASKS


def register_all() -> None:
    for task in TASKS.values():
        if task.env_id not in gym.registry:
            gym.register(id=task.env_id, entry_point="ssmagent.env.tool_env:ToolEnv", kwargs={"task": task.name})


register_all()

__all__ = ["CHARSET", "ToolEnv", "register_all"]

"""Shared fixtures: the addition task and its tokenizer."""

from __future__ import annotations

import pytest

from ssmagent.agent.tokenizer import Tokenizer, task_commands
from ssmagent.tasks import Task, get_task


@pytest.fixture(scope="session")
def addition() -> Task:
    return get_task("addition")


@pytest.fixture(scope="session")
def tokenizer(addition: Task) -> Tokenizer:
    return Tokenizer.for_commands(task_commands(addition))

"""Shared fixtures: the addition task and its tokenizer."""

from __future__ import annotations

import pytest

# Imported inside the fixtures: the GPU machine runs the kernel tests without gymnasium.


@pytest.fixture(scope="session")
def addition():
    from ssmagent.tasks import get_task

    return get_task("addition")


@pytest.fixture(scope="session")
def tokenizer(addition):
    from ssmagent.agent.tokenizer import Tokenizer, task_commands

    return Tokenizer.for_commands(task_commands(addition))

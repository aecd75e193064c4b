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


@pytest.fixture
def one_thread():
    """Small model shapes gain nothing from a second thread, and on a busy 2-core machine
    OpenMP/MKL threads wait on each other (100x slowdowns were seen): run single-threaded."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

"""Shared fixtures: the addition task and its tokenizer; the sandbox backends."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

# Without a GPU the Triton kernels run in Triton's interpreter. The flag must be set before
# anything imports ssmagent.kernels.decode (which decorates the kernels), and test modules are
# all imported at collection, so it is set here, first.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

# Imported inside the fixtures: the GPU machine runs the kernel tests without gymnasium.


@pytest.fixture
def fresh_python():
    """``run(code, cwd=None, timeout=120)``: Python code in a new interpreter, for what needs a clean
    import state or Triton compiling rather than interpreting (``TRITON_INTERPRET`` is dropped),
    single-threaded. Returns its stdout; a non-zero exit fails the test with the end of its stderr."""

    def run(code: str, cwd=None, timeout: float = 120) -> str:
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        env.pop("TRITON_INTERPRET", None)
        out = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
        assert out.returncode == 0, out.stderr[-2000:]
        return out.stdout

    return run


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


def _sandbox_or_skip(backend: str):
    """The named sandbox backend, or a loud skip saying how to get it. Where CI sets
    SSMAGENT_REQUIRE_DOCKER=1 (or SSMAGENT_REQUIRE_BUBBLEWRAP=1) a missing backend fails instead:
    CI must prove containment on both (DESIGN.md §4, §5)."""
    from ssmagent.sandbox import SandboxUnavailable, get_sandbox

    try:
        return get_sandbox(backend)
    except SandboxUnavailable as err:
        flag = f"SSMAGENT_REQUIRE_{backend.upper()}"
        if os.environ.get(flag) == "1":
            pytest.fail(f"{flag}=1 but the {backend} sandbox is unavailable: {err}", pytrace=False)
        pytest.skip(f"{backend} sandbox tests SKIPPED: {err}")


@pytest.fixture(scope="session", params=["docker", "bubblewrap"])
def sandbox(request):
    """Each sandbox backend in turn: tests using it run once per backend this machine has."""
    return _sandbox_or_skip(request.param)


@pytest.fixture(scope="session")
def docker_sandbox():
    return _sandbox_or_skip("docker")


@pytest.fixture(scope="session")
def bubblewrap_sandbox():
    return _sandbox_or_skip("bubblewrap")

"""Hostile programs, on every sandbox backend this machine has (DESIGN.md §4): each is contained,
reported in a short clear observation, and the next run afterwards works."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from textwrap import dedent

import pytest

from ssmagent.sandbox import RunResult, SandboxLimits

REPO = Path(__file__).resolve().parents[1]


def run(sandbox, workspace: Path, source: str, limits: SandboxLimits, *args: str) -> RunResult:
    (workspace / "main.py").write_text(dedent(source))
    return sandbox.run(workspace, ["python", "main.py", *args], limits=limits)


def assert_next_run_works(sandbox, workspace: Path) -> None:
    done = run(sandbox, workspace, "print('still fine')", SandboxLimits(timeout_s=10))
    assert done.observation() == "exit code 0\nstdout:\nstill fine\n"


def processes_with(marker: str, prefix: bytes = b"") -> set[int]:
    """Host pids whose command line starts with ``prefix`` and holds ``marker`` (sandboxed
    processes are host processes)."""
    found = set()
    for entry in Path("/proc").iterdir():
        try:
            cmdline = (entry / "cmdline").read_bytes() if entry.name.isdigit() else b""
            if cmdline.startswith(prefix) and marker.encode() in cmdline:
                found.add(int(entry.name))
        except OSError:  # it ended while we looked
            continue
    return found


def wait_until(condition, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return condition()


def test_a_fork_bomb_hits_the_pids_limit_and_dies_at_the_timeout(sandbox, tmp_path):
    marker = f"forkbomb-{uuid.uuid4().hex}"
    source = """
        import os
        while True:
            try:
                os.fork()
            except OSError:
                pass
    """
    done = run(sandbox, tmp_path, source, SandboxLimits(timeout_s=2, pids=32), marker)
    assert done.timed_out and done.observation() == "timed out after 2 s\n"
    assert wait_until(lambda: not processes_with(marker), 5), "fork-bomb processes outlived the run"
    assert_next_run_works(sandbox, tmp_path)


def test_a_memory_bomb_is_stopped_and_reported_as_out_of_memory(sandbox, tmp_path):
    source = """
        chunks = []
        while True:
            chunks.append(bytearray(16 * 2**20))
    """
    done = run(sandbox, tmp_path, source, SandboxLimits(timeout_s=20, memory_mb=128))
    assert done.oom and not done.timed_out
    assert done.observation().startswith("killed: out of memory (limit 128 MB)\n")
    assert_next_run_works(sandbox, tmp_path)


def test_an_endless_loop_is_killed_at_the_timeout(sandbox, tmp_path):
    done = run(sandbox, tmp_path, "while True: pass", SandboxLimits(timeout_s=1))
    assert done.timed_out and done.observation() == "timed out after 1 s\n"
    assert done.seconds < 1 + 5
    assert_next_run_works(sandbox, tmp_path)


def test_100_mb_of_output_is_cut_to_the_cap_and_the_program_still_finishes(sandbox, tmp_path):
    source = """
        import sys
        for _ in range(1600):
            sys.stdout.write("x" * 65536)
        print("done", file=sys.stderr)
    """
    done = run(sandbox, tmp_path, source, SandboxLimits(timeout_s=30))
    assert done.exit_code == 0 and done.truncated and done.stdout == "x" * 65536 and done.stderr == "done\n"
    status, first_stream = done.observation().splitlines()[:2]
    assert (status, first_stream) == ("exit code 0; output truncated (first 65536 bytes of each stream kept)", "stdout:")
    assert_next_run_works(sandbox, tmp_path)


def test_no_network_a_listener_on_the_host_loopback_is_unreachable(sandbox, tmp_path):
    source = """
        import socket, sys
        try:
            socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=3)
            print("connected")
        except OSError:
            print("blocked")
    """
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(0.2)
        done = run(sandbox, tmp_path, source, SandboxLimits(timeout_s=10), str(listener.getsockname()[1]))
        with pytest.raises(TimeoutError):
            listener.accept()
    assert done.observation() == "exit code 0\nstdout:\nblocked\n"
    assert_next_run_works(sandbox, tmp_path)


def test_writes_outside_the_workspace_fail_or_stay_inside_the_sandbox(sandbox, tmp_path):
    source = """
        import os, sys
        for path in sys.argv[1:]:
            try:
                open(path, "w").write("x")
                print("wrote", path)
            except OSError:
                print("refused", path)
        os.symlink("/etc/passwd", "passwd-link")
        os.symlink("../../..", "up")
    """
    escape = tmp_path.parent / f"escape-{uuid.uuid4().hex}"
    targets = ["/escape", "/etc/escape", "/usr/escape", "/home/escape", str(REPO / "escape"), str(escape)]
    scratch = f"/tmp/escape-{uuid.uuid4().hex}"  # /tmp is the sandbox's own small tmpfs
    done = run(sandbox, tmp_path, source, SandboxLimits(timeout_s=10), *targets, scratch)
    assert done.stdout == "".join(f"refused {t}\n" for t in targets) + f"wrote {scratch}\n"
    assert not escape.exists() and not (REPO / "escape").exists() and not Path(scratch).exists()
    assert not (tmp_path / "passwd-link").exists() and not (tmp_path / "up").exists()  # links out stay behind
    assert_next_run_works(sandbox, tmp_path)


def test_host_files_cannot_be_read(sandbox, tmp_path):
    source = """
        import os, sys
        for path in sys.argv[1:]:
            try:
                print(os.listdir(path) if path.endswith("/") else open(path).read())
            except OSError:
                print("unreadable", path)
    """
    secret = Path("/etc/shadow").read_text().splitlines()[0] if os.access("/etc/shadow", os.R_OK) else None
    targets = ["/etc/shadow", str(REPO / "README.md"), str(Path(__file__).resolve()), f"{REPO}/"]
    done = run(sandbox, tmp_path, source, SandboxLimits(timeout_s=10), *targets)
    assert done.stdout == "".join(f"unreadable {t}\n" for t in targets)
    assert secret is None or secret not in done.stdout
    assert_next_run_works(sandbox, tmp_path)


RUNNER = """
import sys
from pathlib import Path
from ssmagent.sandbox import SandboxLimits, get_sandbox
get_sandbox(sys.argv[1]).run(Path(sys.argv[2]), ["python", "main.py", sys.argv[3]], limits=SandboxLimits(timeout_s=60))
"""


def test_killing_the_runner_mid_run_leaves_no_process_or_container(sandbox, tmp_path):
    marker = f"orphan-{uuid.uuid4().hex}"
    (tmp_path / "main.py").write_text("import time\ntime.sleep(60)\n")
    runner = subprocess.Popen([sys.executable, "-c", RUNNER, sandbox.name, str(tmp_path), marker])
    try:  # the program itself, not only the runner or the sandbox around it
        started = wait_until(lambda: processes_with(marker, prefix=b"python\0main.py\0"), 30)
    finally:
        os.kill(runner.pid, signal.SIGKILL)
        runner.wait()
    assert started, "the sandboxed program never started"
    assert_next_run_works(sandbox, tmp_path)  # for docker: this run reaps the dead runner's container
    assert wait_until(lambda: not processes_with(marker), 10), "the killed runner's program is still running"
    if sandbox.name == "docker":
        from ssmagent.sandbox.docker_backend import OWNER_LABEL

        containers = sandbox.client.containers.list(all=True, filters={"label": OWNER_LABEL})
        owners = [c.labels[OWNER_LABEL].split("/")[1] for c in containers]
        assert str(runner.pid) not in owners, "the killed runner's container is left"

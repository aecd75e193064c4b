"""The sandbox: its pure parts (observation, limits, classification, tar filtering, mirror and
owner parsing, the policy each backend asks for), then ordinary runs on every backend this
machine has (exit codes, streams, truncation, timeout, files, workspace limit)."""

from __future__ import annotations

import io
import os
import socket
import struct
import sys
import tarfile
from pathlib import Path
from textwrap import dedent

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ssmagent.sandbox import RunResult, SandboxError, SandboxLimits, get_sandbox
from ssmagent.sandbox.base import CappedBuffer, pack_workspace, timed_out, unpack_workspace
from ssmagent.sandbox.bubblewrap import (
    HOST_LINKS,
    SandboxPython,
    bwrap_args,
    choose_python,
    looks_out_of_memory,
    world_traversable,
)
from ssmagent.sandbox.docker_backend import demux_frames, owner_id, owner_is_dead, start_ticks
from ssmagent.sandbox.image import debian_mirror, mounts_below

LIMITS = SandboxLimits(timeout_s=5)


def result(**changes) -> RunResult:
    fields = dict(exit_code=0, stdout="", stderr="", timed_out=False, truncated=False, oom=False,
                  backend="docker", seconds=0.5)
    return RunResult(**{**fields, **changes})


def run(sandbox, workspace: Path, source: str, limits: SandboxLimits = LIMITS, *args: str) -> RunResult:
    (workspace / "main.py").write_text(dedent(source))
    return sandbox.run(workspace, ["python", "main.py", *args], limits=limits)


# --- the observation a model reads ---------------------------------------------------------

def test_observation_is_a_status_line_then_each_nonempty_stream():
    assert result(stdout="hi\n").observation() == "exit code 0\nstdout:\nhi\n"
    assert result(exit_code=1, stdout="a", stderr="boom\n").observation() == "exit code 1\nstdout:\na\nstderr:\nboom\n"
    assert result(exit_code=0).observation() == "exit code 0\n"


def test_observation_names_timeouts_oom_signals_and_truncation_in_fixed_words():
    limits = SandboxLimits(timeout_s=2.5, memory_mb=128, output_bytes=10)
    assert result(exit_code=137, timed_out=True, limits=limits).observation() == "timed out after 2.5 s\n"
    assert result(exit_code=137, oom=True, limits=limits).observation() == "killed: out of memory (limit 128 MB)\n"
    assert result(exit_code=139).status() == "exit code 139 (SIGSEGV)"
    assert result(truncated=True, limits=limits).status() == (
        "exit code 0; output truncated (first 10 bytes of each stream kept)")
    assert result(workspace_saved=False).status() == "exit code 0; workspace changes not saved"


def test_observation_holds_no_timing_so_identical_runs_read_identically():
    assert result(seconds=0.1, stdout="x").observation() == result(seconds=9.9, stdout="x").observation()
    assert "seconds" in result().to_json() and result().to_json()["limits"]["timeout_s"] == 10.0


def test_limits_refuse_non_positive_values():
    for bad in ({"timeout_s": 0}, {"timeout_s": float("inf")}, {"cpus": float("nan")}, {"memory_mb": -1}):
        with pytest.raises(ValueError, match="must be a positive"):
            SandboxLimits(**bad)
    for bad in ({"pids": 1.5}, {"output_bytes": True}, {"workspace_mb": "64"}):
        with pytest.raises(ValueError, match="must be a positive integer"):
            SandboxLimits(**bad)


def test_capped_buffer_keeps_the_head_and_counts_the_rest():
    buffer = CappedBuffer(5)
    for chunk in (b"abc", b"defg", b"hij"):
        buffer.write(chunk)
    assert buffer.bytes() == b"abcde" and buffer.total == 10 and buffer.truncated
    cut = CappedBuffer(2)
    cut.write("aé".encode())  # a cut inside a UTF-8 character decodes to a replacement mark
    assert cut.text() == "a\ufffd" and cut.truncated


def test_a_kill_137_counts_as_timeout_only_once_the_timeout_has_passed():
    assert timed_out(None, 0.1, 5)  # the host killed it
    assert timed_out(137, 5.01, 5)
    assert not timed_out(137, 0.3, 5)  # the OOM killer or the program's own kill
    assert not timed_out(0, 9.0, 5)


def test_bubblewrap_reports_an_uncaught_memory_error_as_oom():
    assert looks_out_of_memory(1, "Traceback (most recent call last):\n  ...\nMemoryError\n")
    assert not looks_out_of_memory(0, "MemoryError\n")
    assert not looks_out_of_memory(1, "MemoryError happened earlier\nValueError: x\n")


# --- the workspace's round trip --------------------------------------------------------------

def test_pack_and_unpack_round_trip_a_workspace(tmp_path):
    source, target = tmp_path / "a", tmp_path / "b"
    (source / "pkg").mkdir(parents=True)
    (source / "pkg" / "f.py").write_text("x = 1\n")
    (source / "run.sh").write_text("#!/bin/sh\n")
    (source / "run.sh").chmod(0o755)
    target.mkdir()
    assert unpack_workspace(pack_workspace(source), target)
    assert (target / "pkg" / "f.py").read_text() == "x = 1\n"
    assert os.access(target / "run.sh", os.X_OK)


def _tar(*members: tuple[tarfile.TarInfo, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for info, data in members:
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.uid = kind, link, 65534
    return info


def test_unpacking_skips_members_that_would_leave_the_workspace(tmp_path):
    workspace = tmp_path / "ws"
    workspace.mkdir()
    data = _tar(
        (_member("ok.txt"), b"fine"),
        (_member("../escaped.txt"), b"x"),
        (_member("/abs.txt"), b"x"),
        (_member("link", tarfile.SYMTYPE, "/etc/passwd"), b""),
        (_member("up", tarfile.SYMTYPE, "../../.."), b""),
        (_member("dev", tarfile.CHRTYPE), b""),
    )
    assert unpack_workspace(data, workspace)
    assert sorted(p.name for p in workspace.iterdir()) == ["abs.txt", "ok.txt"]  # "/abs.txt" is made relative
    assert not (tmp_path / "escaped.txt").exists()
    assert (workspace / "ok.txt").stat().st_uid == os.getuid()  # owned by the caller, not uid 65534


def test_an_unreadable_stream_reports_the_workspace_unsaved(tmp_path):
    assert not unpack_workspace(b"not a tar stream" * 100, tmp_path)


# --- docker backend: pure parts ------------------------------------------------------------

def test_demux_frames_splits_docker_streams_across_arbitrary_reads():
    stream = b"".join(struct.pack(">BxxxL", s, len(d)) + d for s, d in [(1, b"out"), (2, b"err!"), (1, b"")])
    chunks = [stream[i:i + 3] for i in range(0, len(stream), 3)] + [b""]
    assert list(demux_frames(lambda n: chunks.pop(0))) == [(1, b"out"), (2, b"err!"), (1, b"")]


def test_a_container_owner_is_dead_only_when_its_pid_on_this_host_is_gone_or_reused():
    me = owner_id()
    host = me.split("/")[0]
    assert not owner_is_dead(me, host, start_ticks)
    pid, ticks = me.split("/")[1:]
    assert owner_is_dead(f"{host}/{pid}/{int(ticks) + 1}", host, start_ticks)  # pid reused by a newer process
    assert owner_is_dead(f"{host}/999999999/1", host, lambda pid: None)
    assert not owner_is_dead(f"elsewhere/{pid}/1", host, start_ticks)  # another host sharing the engine


def test_container_policy_matches_design_section_4():
    pytest.importorskip("docker")
    from ssmagent.sandbox.docker_backend import container_config

    limits = SandboxLimits(timeout_s=3, memory_mb=100, workspace_mb=20, tmp_mb=5, pids=10, cpus=0.5)
    config = container_config("img", limits, "host/1/2")
    assert config["network_mode"] == "none" and config["read_only"] and config["cap_drop"] == ["ALL"]
    assert config["security_opt"] == ["no-new-privileges"] and config["user"] == "65534:65534"
    assert config["mem_limit"] == config["memswap_limit"] == "130m"  # program + workspace + /tmp + /dev/shm
    assert config["pids_limit"] == 13 and config["nano_cpus"] == 500_000_000
    assert "size=20m" in config["tmpfs"]["/workspace"] and "size=5m" in config["tmpfs"]["/tmp"]
    assert config["command"][0] == "sleep" and float(config["command"][1]) < 60  # ends itself if we die
    assert config["auto_remove"] and config["init"]


def test_containers_of_dead_runners_are_reaped(docker_sandbox):
    from ssmagent.sandbox.docker_backend import container_config
    from ssmagent.sandbox.image import IMAGE

    dead = f"{socket.gethostname()}/{2**22 + 1}/1"  # above the kernel's largest pid: never running
    container = docker_sandbox.client.containers.create(**container_config(IMAGE, LIMITS, dead))
    alive = docker_sandbox.client.containers.create(**container_config(IMAGE, LIMITS, owner_id()))
    try:
        reaped = docker_sandbox.reap()
        assert container.id in reaped and alive.id not in reaped
    finally:
        alive.remove(force=True)


# --- bubblewrap backend: pure parts --------------------------------------------------------

def test_bubblewrap_arguments_isolate_and_bound_everything():
    args = bwrap_args(SandboxLimits(workspace_mb=3), SandboxPython("/usr/bin/python3"))
    for flag in ("--unshare-all", "--die-with-parent", "--new-session", "--clearenv", "--disable-userns"):
        assert flag in args
    assert args[args.index("--uid") + 1] == "65534"
    assert args[args.index("/workspace") - 2:args.index("/workspace")] == [str(3 * 2**20), "--tmpfs"]
    assert ["--remount-ro", "/"] == args[args.index("--remount-ro", args.index("/dev/shm")) + 2:][:2]
    bound = [args[i + 1] for i, a in enumerate(args) if a in ("--bind", "--ro-bind", "--dev-bind")]
    assert "/usr" in bound and set(bound) <= {"/usr", *(f"/{name}" for name in HOST_LINKS)}  # no /etc, home, repo
    assert "--bind" not in args and "--dev-bind" not in args


def test_the_runners_python_is_used_only_where_uid_65534_can_reach_it():
    assert choose_python(False, reachable=lambda p: False).executable == sys.executable
    assert choose_python(True, reachable=lambda p: True).executable == sys.executable
    if sys.prefix.startswith("/usr"):
        pytest.skip("this Python lives in /usr: nothing outside it to reach")
    assert choose_python(True, reachable=lambda p: False, system_python=sys.executable) == SandboxPython(sys.executable)


def test_world_traversable_needs_search_permission_on_every_directory():
    modes = {"/": 0o755, "/root": 0o700, "/root/py": 0o755, "/opt": 0o755, "/opt/py": 0o755}
    assert world_traversable("/opt/py", lambda p: modes[p])
    assert not world_traversable("/root/py", lambda p: modes[p])


# --- image recipe --------------------------------------------------------------------------

def test_the_mirror_comes_from_apt_sources_in_either_format():
    deb822 = "Types: deb\nURIs: http://mirror.example/debian/\nSuites: bookworm bookworm-updates\nComponents: main\n"
    security = "Types: deb\nURIs: http://security.example/debian-security\nSuites: bookworm-security\n"
    assert debian_mirror([("debian.sources", security + "\n" + deb822)]) == "http://mirror.example/debian"
    one_line = ("# comment\ndeb-src http://src.example/debian bookworm main\n"
                "deb [arch=amd64 signed-by=/k.gpg] http://one.example/debian bookworm main\n")
    assert debian_mirror([("sources.list", one_line)]) == "http://one.example/debian"
    assert debian_mirror([("x.list", "deb http://ubuntu.example/ubuntu jammy main\n")]) is None


def test_leftover_mounts_under_the_build_tree_are_found_deepest_first():
    info = ("22 1 0:5 / /proc rw - proc proc rw\n"
            "30 1 0:6 / /var/tmp/b/rootfs/proc rw - proc proc rw\n"
            "31 1 0:6 / /var/tmp/b/rootfs/dev/pts rw - devpts devpts rw\n"
            "32 1 0:6 / /var/tmp/b/rootfsX rw - tmpfs tmpfs rw\n")
    assert mounts_below(Path("/var/tmp/b/rootfs"), info) == ["/var/tmp/b/rootfs/dev/pts", "/var/tmp/b/rootfs/proc"]


def test_an_unknown_backend_name_is_refused():
    with pytest.raises(ValueError, match="auto, docker or bubblewrap"):
        get_sandbox("chroot")


# --- ordinary runs, on every backend -------------------------------------------------------

def test_exit_code_stdout_and_stderr_come_back_separately(sandbox, tmp_path):
    done = run(sandbox, tmp_path, "import sys\nprint('out')\nprint('err', file=sys.stderr)\nsys.exit(3)\n")
    assert (done.exit_code, done.stdout, done.stderr) == (3, "out\n", "err\n")
    assert not (done.timed_out or done.truncated or done.oom) and done.backend == sandbox.name
    assert done.observation() == "exit code 3\nstdout:\nout\nstderr:\nerr\n"


def test_argv_reaches_the_program_and_it_runs_as_nobody_in_the_workspace(sandbox, tmp_path):
    done = run(sandbox, tmp_path, "import os, sys; print(sys.argv[1:], os.getuid(), os.getcwd())", LIMITS, "a b", "-c")
    assert done.stdout == "['a b', '-c'] 65534 /workspace\n"


ARGUMENT = st.text(st.characters(blacklist_characters="\0", blacklist_categories=["Cs"]), max_size=20)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(args=st.lists(ARGUMENT, max_size=4))
def test_any_argv_reaches_the_program_intact(sandbox, tmp_path, args):
    done = sandbox.run(tmp_path, ["python", "-c", "import sys; print(ascii(sys.argv[1:]))", *args], limits=LIMITS)
    assert (done.exit_code, done.stdout) == (0, ascii(args) + "\n")


@pytest.mark.parametrize("bad", [[], ["python", "a\0b"], ["python", "\udd00"], ["python", 3]])
def test_argv_that_no_program_could_receive_is_refused(bubblewrap_sandbox, tmp_path, bad):
    with pytest.raises(SandboxError, match="argv must be"):
        bubblewrap_sandbox.run(tmp_path, bad)


def test_a_missing_program_is_an_exit_code_not_an_exception(sandbox, tmp_path):
    done = sandbox.run(tmp_path, ["no-such-program"], limits=LIMITS)
    assert done.exit_code == 127 and "no-such-program" in done.stderr


def test_output_beyond_the_cap_is_cut_and_marked(sandbox, tmp_path):
    limits = SandboxLimits(timeout_s=5, output_bytes=1000)
    done = run(sandbox, tmp_path, "import sys\nprint('a' * 5000)\nprint('b' * 10, file=sys.stderr)\n", limits)
    assert done.truncated and done.stdout == "a" * 1000 and done.stderr == "b" * 10 + "\n"
    assert done.observation().startswith("exit code 0; output truncated (first 1000 bytes of each stream kept)\n")


def test_a_timeout_keeps_what_was_printed_before_it(sandbox, tmp_path):
    done = run(sandbox, tmp_path, "import time\nprint('started')\ntime.sleep(60)\n", SandboxLimits(timeout_s=1))
    assert done.timed_out and done.observation() == "timed out after 1 s\nstdout:\nstarted\n"
    assert done.seconds < 8


def test_files_written_in_the_workspace_appear_on_the_host_owned_by_the_caller(sandbox, tmp_path):
    (tmp_path / "input.txt").write_text("41")
    source = """
        import os
        os.makedirs("out")
        open("out/answer.txt", "w").write(str(int(open("input.txt").read()) + 1))
    """
    done = run(sandbox, tmp_path, source)
    assert done.exit_code == 0 and done.workspace_saved
    assert (tmp_path / "out" / "answer.txt").read_text() == "42"
    assert (tmp_path / "out" / "answer.txt").stat().st_uid == os.getuid()
    assert not (tmp_path / "__pycache__").exists()


def test_the_workspace_is_bounded(sandbox, tmp_path):
    limits = SandboxLimits(timeout_s=10, workspace_mb=4)
    source = """
        try:
            open("big", "wb").write(b"x" * 8 * 2**20)
        except OSError as e:
            print(e.strerror)
    """
    done = run(sandbox, tmp_path, source, limits)
    assert done.stdout == "No space left on device\n"
    assert (tmp_path / "big").stat().st_size <= 4 * 2**20


def test_a_workspace_larger_than_the_limit_is_refused_before_running(sandbox, tmp_path):
    (tmp_path / "big").write_bytes(b"x" * (2 * 2**20))
    with pytest.raises(SandboxError, match="more than the sandbox's 1 MB"):
        sandbox.run(tmp_path, ["python", "-c", "pass"], limits=SandboxLimits(workspace_mb=1))


def test_identical_runs_give_identical_observations(sandbox, tmp_path):
    source = "import sys\nprint('x' * 3000)\nsys.exit(2)\n"
    limits = SandboxLimits(timeout_s=5, output_bytes=100)
    assert run(sandbox, tmp_path, source, limits).observation() == run(sandbox, tmp_path, source, limits).observation()


def test_pytest_runs_inside_the_docker_image(docker_sandbox, tmp_path):
    (tmp_path / "test_unit.py").write_text("def test_ok():\n    assert 1 + 1 == 2\n")
    done = docker_sandbox.run(tmp_path, ["python", "-m", "pytest", "-q"], limits=SandboxLimits(timeout_s=30))
    assert done.exit_code == 0 and "1 passed" in done.stdout

"""bubblewrap backend, for machines without a Docker engine.

The sandbox is a fresh set of namespaces (``--unshare-all``: no network, own pids, own user
namespace with the program as uid 65534) whose root is an empty read-only tmpfs holding only the
host's ``/usr`` and the running Python, both read-only; ``/etc``, ``/home``, ``/root`` and the
repository are simply absent. ``--die-with-parent`` kills it with its runner.

As Docker does, it unpacks the workspace onto a size-bounded tmpfs and packs it back afterwards
(see ``base``). One bash script runs inside: it unpacks the tar stream from stdin, says
``ready`` on a private pipe, runs the program under limits and ``timeout``, and writes the packed
workspace to that pipe, which the program itself does not inherit.

When run as root the runner first drops to uid 65534: root ignores RLIMIT_NPROC (a fork bomb
measured 200 processes under ``ulimit -p 64``), an unprivileged user is stopped at the limit,
and since the sandbox has its own user namespace the count is of its own processes only
(two concurrent sandboxes do not share it). The sandbox's ``python`` is the runner's own (its
venv included, so ``python -m pytest`` works) when the sandbox's user can reach it; a Python
installed where uid 65534 cannot go (a pyenv under /root) is replaced by the system's
``/usr/bin/python3``, and ``doctor`` says which one is used.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ssmagent.sandbox.base import (
    KILL_GRACE_S,
    SANDBOX_ENV,
    SANDBOX_UID,
    WORKDIR,
    CappedBuffer,
    Execution,
    Sandbox,
    SandboxError,
    SandboxLimits,
    SandboxUnavailable,
)

READY = b"ready\n"
FALLBACK_BIN = "/run/sandbox-bin"  # `python` for hosts whose Python lacks that name (Debian's /usr/bin)
HOST_LINKS = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")
# $1: the fd the packed workspace goes to; $2: timeout (s); $3: RLIMIT_AS (KiB); $4: RLIMIT_NPROC;
# $5: RLIMIT_CPU (s); then the program's argv. The program gets neither that fd nor stdin.
SCRIPT = r"""
out=$1 limit=$2 vmem=$3 nproc=$4 cpu=$5
shift 5
tar -x -C /workspace -f - || exit 125
printf 'ready\n' >&"$out"
exec {err}>&2 2>/dev/null  # bash's own reports (a job's "Killed") stay out of the program's stderr
(
  exec 2>&"$err" {err}>&- {out}>&-
  ulimit -c 0 -v "$vmem" -u "$nproc" -t "$cpu" || exit 125
  exec timeout -s KILL "$limit" "$@"
) </dev/null
code=$?
tar -c -C /workspace -f - . >&"$out"
exit $code
"""
_MEMORY_ERROR = re.compile(r"^MemoryError\b")


def looks_out_of_memory(exit_code: int | None, stderr: str) -> bool:
    """Without a cgroup nothing is OOM-killed: allocation beyond RLIMIT_AS fails, and a Python
    program dies of an uncaught MemoryError, whose traceback ends the stderr."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    return exit_code not in (None, 0) and bool(lines) and bool(_MEMORY_ERROR.match(lines[-1]))


def host_root_args(root: Path = Path("/")) -> list[str]:
    """Bind the host's /usr read-only, and recreate /bin, /lib, … as the host has them (symlinks
    into /usr on a merged-/usr system, read-only binds otherwise)."""
    args = ["--ro-bind", str(root / "usr"), "/usr"]
    for name in HOST_LINKS:
        path = root / name
        if path.is_symlink():
            args += ["--symlink", os.readlink(path), f"/{name}"]
        elif path.is_dir():
            args += ["--ro-bind", str(path), f"/{name}"]
    return args


@dataclass(frozen=True)
class SandboxPython:
    """The interpreter a sandbox offers as ``python``: its executable, the directories outside
    /usr it needs bound, and the bin directory to put first on PATH."""

    executable: str
    dirs: tuple[str, ...] = ()
    bin_dir: str | None = None


def world_traversable(path: str, mode_of: Callable[[str], int] = lambda p: os.stat(p).st_mode) -> bool:
    """Whether a user who is neither owner nor group member can reach ``path`` (every directory
    on the way searchable by others): what uid 65534 needs to see the runner's Python."""
    parts = Path(path).parts
    return all(mode_of(str(Path(*parts[:i]))) & stat.S_IXOTH for i in range(1, len(parts) + 1))


def choose_python(drop_to_sandbox_uid: bool, reachable: Callable[[str], bool] = world_traversable,
                  system_python: str = "/usr/bin/python3") -> SandboxPython:
    """The runner's own Python where the user bwrap runs as can reach it, else the system's."""
    dirs = tuple(p for p in dict.fromkeys((sys.base_prefix, sys.prefix)) if not (p == "/usr" or p.startswith("/usr/")))
    if not drop_to_sandbox_uid or all(reachable(d) for d in dirs):
        return SandboxPython(sys.executable, dirs, f"{sys.prefix}/bin")
    if os.path.exists(system_python):
        return SandboxPython(system_python)
    raise SandboxUnavailable(f"uid {SANDBOX_UID} cannot reach this Python ({sys.base_prefix}) and there is no "
                             f"{system_python}: apt-get install -y python3-minimal")


def search_path(python: SandboxPython) -> str:
    bins = [python.bin_dir, "/usr/local/bin", "/usr/bin", "/bin", FALLBACK_BIN]
    return ":".join(dict.fromkeys(b for b in bins if b))


def bwrap_args(limits: SandboxLimits, python: SandboxPython) -> list[str]:
    """bubblewrap's arguments: namespaces, the read-only root, the tmpfs workspace and /tmp."""
    args = ["--unshare-all", "--unshare-user", "--disable-userns", "--die-with-parent", "--new-session",
            "--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_UID), "--hostname", "sandbox", "--cap-drop", "ALL"]
    args += host_root_args()
    for path in python.dirs:
        args += ["--ro-bind", path, path]
    for name in ("python", "python3"):
        args += ["--symlink", python.executable, f"{FALLBACK_BIN}/{name}"]
    args += ["--proc", "/proc", "--dev", "/dev",
             "--size", str(limits.workspace_mb * 2**20), "--tmpfs", WORKDIR,
             "--size", str(limits.tmp_mb * 2**20), "--tmpfs", "/tmp",
             "--size", str(limits.tmp_mb * 2**20), "--tmpfs", "/dev/shm",
             "--remount-ro", "/dev", "--remount-ro", "/", "--chdir", WORKDIR, "--clearenv"]
    for key, value in {**SANDBOX_ENV, "PATH": search_path(python)}.items():
        args += ["--setenv", key, value]
    return args


def script_args(out_fd: int, limits: SandboxLimits) -> list[str]:
    return ["bash", "-c", SCRIPT, "sandbox", str(out_fd), f"{limits.timeout_s:.3f}", str(limits.memory_mb * 1024),
            str(limits.pids + 3), str(int(limits.timeout_s) + 1)]  # + bwrap's init, bash and its subshell


class BubblewrapSandbox(Sandbox):
    """Namespaces and rlimits instead of a container. Limits it cannot enforce as Docker does:

    - ``memory_mb`` is RLIMIT_AS of each process: virtual address space, not resident memory,
      and per process, not for the program as a whole (its processes may together reach
      ``pids`` × ``memory_mb``). Nothing is OOM-killed: allocations fail, and ``oom`` reports a
      program that died of an uncaught ``MemoryError``.
    - ``cpus`` is not enforced (that needs a cgroup); RLIMIT_CPU caps each process's CPU time
      near the timeout.
    - ``pids`` is RLIMIT_NPROC: processes and threads of the sandbox's uid in its own user
      namespace (so, of this sandbox alone).
    - the tmpfs workspace, /tmp and /dev/shm are bounded, but not charged to ``memory_mb``.
    """

    name = "bubblewrap"

    def __init__(self):
        self._bwrap = shutil.which("bwrap")
        if self._bwrap is None:
            raise SandboxUnavailable("bubblewrap is not installed: apt-get install -y bubblewrap")
        self._drop = os.geteuid() == 0
        self.python = choose_python(self._drop)
        probe = self._launch(["true"], SandboxLimits(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE)
        _, err = probe.communicate(timeout=30)
        if probe.returncode != 0:
            reason = (err.decode(errors="replace").strip().splitlines() or ["no output"])[-1]
            raise SandboxUnavailable(f"bubblewrap cannot create a sandbox here ({reason}): unprivileged user "
                                     "namespaces must be enabled (sysctl kernel.unprivileged_userns_clone=1)")

    def describe(self) -> str:
        version = subprocess.run([self._bwrap, "--version"], capture_output=True, text=True).stdout.strip()
        who = f"uid {SANDBOX_UID}" + (" (dropped from root)" if self._drop else "")
        return (f"{version} creates sandboxes here, run as {who}; python: {self.python.executable}; approximated "
                "limits: memory is RLIMIT_AS per process, cpus is not enforced, out-of-memory shows as MemoryError")

    def _launch(self, command: list[str], limits: SandboxLimits, *, pass_fds: tuple[int, ...] = (),
                **streams) -> subprocess.Popen:
        """Start bwrap, as uid 65534 when we are root (see the module docstring)."""
        drop = dict(user=SANDBOX_UID, group=SANDBOX_UID, extra_groups=[]) if self._drop else {}
        return subprocess.Popen([self._bwrap, *bwrap_args(limits, self.python), "--", *command],
                                pass_fds=pass_fds, cwd="/", **drop, **streams)

    def _execute(self, seed: bytes, argv: list[str], limits: SandboxLimits) -> Execution:
        read_fd, write_fd = os.pipe()
        try:
            proc = self._launch(script_args(write_fd, limits) + argv, limits, pass_fds=(write_fd,),
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        finally:
            os.close(write_fd)
        stdout, stderr = CappedBuffer(limits.output_bytes), CappedBuffer(limits.output_bytes)
        packed = PackedWorkspace(read_fd, 2 * limits.workspace_mb * 2**20 + 2**20)
        threads = [threading.Thread(target=_feed, args=(proc.stdin, seed), daemon=True),
                   threading.Thread(target=_copy, args=(proc.stdout, stdout), daemon=True),
                   threading.Thread(target=_copy, args=(proc.stderr, stderr), daemon=True),
                   threading.Thread(target=packed.read, daemon=True)]
        for thread in threads:
            thread.start()
        try:
            code = proc.wait(limits.timeout_s + KILL_GRACE_S)
        except subprocess.TimeoutExpired:
            proc.kill()  # --die-with-parent takes the sandbox's processes with it
            code = None
            proc.wait()
        end = time.monotonic()
        for thread in threads:
            thread.join()
        if packed.ready_at is None:
            reason = (stderr.text().strip().splitlines() or ["no output"])[-1]
            raise SandboxError(f"bubblewrap failed before the program started (exit {code}): {reason}")
        if code is not None and code < 0:  # bwrap itself died of a signal: say it as a shell would
            code = 128 - code
        done = Execution(code, stdout, stderr, end - packed.ready_at)
        done.oom = looks_out_of_memory(code, stderr.text())
        if code is not None and not packed.buffer.truncated:
            done.workspace_tar = packed.buffer.bytes()
        return done


class PackedWorkspace:
    """Reads the private pipe: ``ready`` (the program starts now), then the packed workspace."""

    def __init__(self, fd: int, limit: int):
        self._fd = fd
        self.buffer = CappedBuffer(limit)
        self.ready_at: float | None = None

    def read(self) -> None:
        with os.fdopen(self._fd, "rb", buffering=0) as pipe:
            head = b""
            while len(head) < len(READY):
                chunk = pipe.read(len(READY) - len(head))
                if not chunk:
                    return
                head += chunk
            if head != READY:
                return
            self.ready_at = time.monotonic()
            while chunk := pipe.read(1 << 16):
                self.buffer.write(chunk)


def _feed(pipe, data: bytes) -> None:
    try:
        pipe.write(data)
        pipe.close()
    except OSError:  # the sandbox died before reading it all
        return


def _copy(pipe, buffer: CappedBuffer) -> None:
    while chunk := pipe.read1(1 << 16):
        buffer.write(chunk)
    pipe.close()

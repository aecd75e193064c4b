"""What every sandbox backend shares: limits, the result of a run, the observation a model reads,
and the workspace's round trip.

The round trip: the host workspace is packed into a tar stream, unpacked inside the sandbox onto
a size-bounded tmpfs at :data:`WORKDIR`, the program runs there, and the tmpfs is packed again
and unpacked over the host directory. A tmpfs is the one writable place whose size the kernel
bounds on every backend (a bind mount of the host directory would let a program fill the host
disk), and unpacking through tarfile's ``data`` filter gives the files back owned by the caller,
refusing absolute paths, ``..``, links that leave the workspace and device files. Files the
program deletes are not deleted on the host: the round trip adds and overwrites, never removes.

A backend implements only :meth:`Sandbox._execute` (run the wrapper with the packed workspace,
return the raw outcome); limits, classification (timeout, OOM, truncation) and the workspace's
way back live here once.
"""

from __future__ import annotations

import io
import math
import os
import signal
import stat
import tarfile
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

WORKDIR = "/workspace"
SANDBOX_UID = 65534  # nobody: owns nothing on either side
KILL_GRACE_S = 5.0  # the host kills the sandbox this long after the in-sandbox timeout should have fired
KILLED = 137  # 128 + SIGKILL: how `timeout -s KILL` (it kills itself too) and the OOM killer end a run
SANDBOX_ENV = {
    "HOME": "/tmp",
    "LANG": "C.UTF-8",
    "PYTHONUNBUFFERED": "1",  # what a program printed before it was killed still reaches us
    "PYTHONDONTWRITEBYTECODE": "1",  # no __pycache__ litter carried back into the host workspace
}


class SandboxError(Exception):
    """The sandbox machinery failed or was misused (not the program inside it)."""


class SandboxUnavailable(SandboxError):
    """No backend can run here. The message is one line that says how to fix it."""


@dataclass(frozen=True)
class SandboxLimits:
    """Per-run limits. Docker enforces each exactly; see ``BubblewrapSandbox`` for the ones
    bubblewrap can only approximate."""

    timeout_s: float = 10.0
    """Wall-clock seconds the program may run before it and all its processes are killed."""
    memory_mb: int = 256
    """Memory for the program's processes (the tmpfs workspace and /tmp come on top)."""
    cpus: float = 1.0
    """CPU cores the program may use at once."""
    pids: int = 64
    """Processes and threads the program may have at once (a fork bomb stops here)."""
    output_bytes: int = 64 * 1024
    """Bytes kept of stdout and of stderr each; the rest is read, counted and dropped."""
    workspace_mb: int = 64
    """Size of the writable workspace; writing more fails with ENOSPC."""
    tmp_mb: int = 16
    """Size of the writable /tmp (also HOME)."""

    def __post_init__(self) -> None:
        for spec in fields(self):
            value = getattr(self, spec.name)
            kinds = int if spec.type == "int" else (int, float)
            if not isinstance(value, kinds) or isinstance(value, bool) or not 0 < value < math.inf:
                kind = "a positive integer" if spec.type == "int" else "a positive number"
                raise ValueError(f"sandbox limit {spec.name} must be {kind}, got {value!r}")

    def to_json(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class RunResult:
    """The outcome of one run. ``exit_code`` is None when the host had to kill the sandbox."""

    exit_code: int | None
    stdout: str
    stderr: str
    timed_out: bool
    truncated: bool
    oom: bool
    backend: str
    seconds: float
    limits: SandboxLimits = field(default_factory=SandboxLimits)
    workspace_saved: bool = True
    """False when the workspace could not be carried back (e.g. a fork bomb left no process
    free to pack it): files the program wrote are then missing on the host."""

    def status(self) -> str:
        """One line: how the program ended, then what else the caller must know."""
        if self.timed_out:
            parts = [f"timed out after {self.limits.timeout_s:g} s"]
        elif self.oom:
            parts = [f"killed: out of memory (limit {self.limits.memory_mb} MB)"]
        elif self.exit_code is None:
            parts = ["killed by the sandbox"]
        else:
            parts = [f"exit code {self.exit_code}{_signal_note(self.exit_code)}"]
        if self.truncated:
            parts.append(f"output truncated (first {self.limits.output_bytes} bytes of each stream kept)")
        if not self.workspace_saved:
            parts.append("workspace changes not saved")
        return "; ".join(parts)

    def observation(self) -> str:
        """The fixed-form text a model reads: the status line, then each non-empty stream under
        its name. Holds nothing that varies between identical runs (no timings)."""
        sections = [self.status()]
        for name, text in (("stdout", self.stdout), ("stderr", self.stderr)):
            if text:
                sections.append(f"{name}:\n{text}" + ("" if text.endswith("\n") else "\n"))
        return "\n".join(s.rstrip("\n") for s in sections) + "\n"

    def to_json(self) -> dict:
        out = asdict(self)
        out["seconds"] = round(self.seconds, 4)
        return out


def _signal_note(exit_code: int) -> str:
    """`` (SIGKILL)`` for 137: the in-sandbox ``timeout`` reports a signal death as 128 + N."""
    try:
        return f" ({signal.Signals(exit_code - 128).name})" if exit_code > 128 else ""
    except ValueError:
        return ""


class CappedBuffer:
    """Keeps the first ``limit`` bytes written and only counts the rest, so a program printing
    100 MB costs 64 KB of memory and still runs to its end instead of blocking on a full pipe."""

    def __init__(self, limit: int):
        self.limit = limit
        self.total = 0
        self._parts: list[bytes] = []
        self._kept = 0

    def write(self, data: bytes) -> None:
        self.total += len(data)
        room = self.limit - self._kept
        if room > 0:
            self._parts.append(data[:room])
            self._kept += min(room, len(data))

    @property
    def truncated(self) -> bool:
        return self.total > self.limit

    def bytes(self) -> bytes:
        return b"".join(self._parts)

    def text(self) -> str:
        return self.bytes().decode("utf-8", errors="replace")


@dataclass
class Execution:
    """What a backend reports back from one run, before classification."""

    exit_code: int | None  # None: the host killed the sandbox at its deadline
    stdout: CappedBuffer
    stderr: CappedBuffer
    program_seconds: float  # host-measured, from just before the program starts to its end
    oom: bool = False
    workspace_tar: bytes | None = None  # None: the workspace could not be packed


def timed_out(exit_code: int | None, program_seconds: float, timeout_s: float) -> bool:
    """Whether the run hit its timeout: the host killed it, or the in-sandbox ``timeout`` did
    (its KILL reports 137 and it fires at ``timeout_s``, so a 137 any earlier was something else:
    the kernel's OOM killer, or the program's own kill)."""
    return exit_code is None or (exit_code == KILLED and program_seconds >= timeout_s)


def workspace_bytes(workspace: Path) -> int:
    """Bytes of regular files under ``workspace`` (links not followed)."""
    total = 0
    for directory, _, files in os.walk(workspace):
        for name in files:
            info = os.lstat(os.path.join(directory, name))
            total += info.st_size if stat.S_ISREG(info.st_mode) else 0
    return total


def pack_workspace(workspace: Path) -> bytes:
    """The workspace's contents as an uncompressed tar stream, member names relative to it."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for child in sorted(workspace.iterdir()):
            tar.add(child, arcname=child.name)
    return buffer.getvalue()


def unpack_workspace(data: bytes, workspace: Path) -> bool:
    """Unpack a tar stream made inside the sandbox over the host workspace. Members tarfile's
    ``data`` filter refuses are skipped; returns False when the stream itself is unreadable."""
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
            tar.extractall(workspace, filter=_workspace_member)
    except (tarfile.TarError, OSError):
        return False
    return True


def _workspace_member(member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo | None:
    if os.path.normpath(member.name) == ".":  # the workspace root itself: leave the host dir's mode alone
        return None
    try:
        return tarfile.data_filter(member, dest)
    except tarfile.FilterError:
        return None


def _is_argument(value: object) -> bool:
    """What execve can pass on: a str that encodes to UTF-8 (no lone surrogates) without NUL."""
    if not isinstance(value, str) or "\0" in value:
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class Sandbox(ABC):
    """Runs a command on a copy of a workspace under :class:`SandboxLimits`; every backend
    applies the policy of DESIGN.md §4 (no network, read-only root, bounded writable workspace
    and /tmp, uid 65534, no capabilities, no new privileges, memory/CPU/pids limits, a timeout we
    enforce, capped output)."""

    name: str

    def run(self, workspace: Path, argv: Sequence[str], *, limits: SandboxLimits | None = None) -> RunResult:
        """Run ``argv`` with cwd :data:`WORKDIR`, holding a copy of ``workspace``; what the
        program writes there is copied back to ``workspace`` afterwards."""
        limits = limits or SandboxLimits()
        workspace = Path(workspace)
        argv = list(argv)
        if not argv or not all(_is_argument(a) for a in argv):
            raise SandboxError(f"argv must be a non-empty list of UTF-8 strings without NUL bytes, got {argv!r}")
        if not workspace.is_dir():
            raise SandboxError(f"workspace {workspace} is not a directory")
        size = workspace_bytes(workspace)
        if size > limits.workspace_mb * 2**20:
            raise SandboxError(f"workspace {workspace} holds {size / 2**20:.1f} MB, more than the "
                               f"sandbox's {limits.workspace_mb} MB; raise SandboxLimits.workspace_mb")
        start = time.monotonic()
        done = self._execute(pack_workspace(workspace), argv, limits)
        saved = done.workspace_tar is not None and unpack_workspace(done.workspace_tar, workspace)
        return RunResult(
            exit_code=done.exit_code,
            stdout=done.stdout.text(),
            stderr=done.stderr.text(),
            timed_out=timed_out(done.exit_code, done.program_seconds, limits.timeout_s),
            truncated=done.stdout.truncated or done.stderr.truncated,
            oom=done.oom,
            backend=self.name,
            seconds=time.monotonic() - start,
            limits=limits,
            workspace_saved=saved,
        )

    @abstractmethod
    def describe(self) -> str:
        """One line for ``doctor``: why this backend can run here, and what it approximates."""

    @abstractmethod
    def _execute(self, seed: bytes, argv: list[str], limits: SandboxLimits) -> Execution:
        """Unpack ``seed`` onto the sandbox's tmpfs workspace, run ``argv`` there under
        ``limits``, pack the workspace again; never leave a process or container behind."""

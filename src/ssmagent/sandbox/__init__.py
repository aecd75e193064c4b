"""Run untrusted Python in a hardened sandbox (DESIGN.md §4).

    sandbox = get_sandbox()                        # docker where it can, else bubblewrap
    result = sandbox.run(workdir, ["python", "main.py"], limits=SandboxLimits(timeout_s=5))
    result.observation()                           # "exit code 0\\nstdout:\\n…", what a model reads

Backends: ``docker`` (a container per run from the locally built image, see ``image``) and
``bubblewrap`` (namespaces and rlimits, for machines without an engine). The choice is never
silent: :func:`doctor` says which backend ``auto`` picks and why each one is or is not usable,
and every :class:`RunResult` names its backend. ``docker`` is imported only when used, so this
package imports on machines without the SDK.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from ssmagent.sandbox.base import (
    WORKDIR,
    RunResult,
    Sandbox,
    SandboxError,
    SandboxLimits,
    SandboxUnavailable,
)

BACKENDS = ("docker", "bubblewrap")


@dataclass(frozen=True)
class BackendStatus:
    """Whether one backend can run here, and why (or how to make it)."""

    name: str
    available: bool
    reason: str


@dataclass(frozen=True)
class DoctorReport:
    backends: tuple[BackendStatus, ...]

    @property
    def chosen(self) -> str | None:
        """The backend ``get_sandbox("auto")`` uses: the first available one, in BACKENDS order."""
        return next((b.name for b in self.backends if b.available), None)

    def to_json(self) -> dict:
        return {"chosen": self.chosen, "backends": [asdict(b) for b in self.backends]}


def _open(name: str) -> Sandbox:
    if name == "docker":
        from ssmagent.sandbox.docker_backend import DockerSandbox

        return DockerSandbox()
    if name == "bubblewrap":
        from ssmagent.sandbox.bubblewrap import BubblewrapSandbox

        return BubblewrapSandbox()
    raise ValueError(f"sandbox backend must be auto, {' or '.join(BACKENDS)}; got {name!r}")


def get_sandbox(backend: str = "auto") -> Sandbox:
    """The named backend, or for ``auto`` the first of BACKENDS that works here; raises
    SandboxUnavailable with a one-line reason (and fix) per backend when none does."""
    if backend != "auto":
        return _open(backend)
    reasons = []
    for name in BACKENDS:
        try:
            return _open(name)
        except SandboxUnavailable as err:
            reasons.append(f"{name}: {err}")
    raise SandboxUnavailable("no sandbox backend is available; " + "; ".join(reasons))


def doctor() -> DoctorReport:
    """Each backend's status, as ``get_sandbox`` would find it."""
    statuses = []
    for name in BACKENDS:
        try:
            statuses.append(BackendStatus(name, True, _open(name).describe()))
        except SandboxUnavailable as err:
            statuses.append(BackendStatus(name, False, str(err)))
    return DoctorReport(tuple(statuses))


__all__ = [
    "BACKENDS", "WORKDIR", "BackendStatus", "DoctorReport", "RunResult", "Sandbox", "SandboxError",
    "SandboxLimits", "SandboxUnavailable", "doctor", "get_sandbox",
]

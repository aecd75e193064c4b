"""Run: execute a program of the workspace in the sandbox, and show how it ended.

One command, ``⟨run⟩``; its argument (the text written since the previous command) is the
command line. Only two forms are accepted — anything else is refused with an observation, so a
policy cannot reach a shell:

    python FILE.py                          run a script of the workspace
    python -m pytest [-q] [-x] [PATH ...]   run tests (PATH: a workspace file or dir, or
                                            ``file.py::test_name``)

Paths go through the workspace's confinement (no ``..``, no absolute paths, nothing that
leads out). The run happens in ``ssmagent.sandbox`` (DESIGN.md §4) on a copy of the workspace
that is carried back afterwards.

Observation: the sandbox's status line (``exit code 1``, ``timed out after 10 s``, …), then
for each non-empty stream ``stdout:``/``stderr:`` and its *last* ``TAIL_LINES`` lines — a
traceback's end names the failing line and the exception, however deep the call chain — with
``...`` where earlier lines were left out (not their count: it would grow with the depth and
differ between instances that call for the same next move). Made deterministic and short:
the sandbox's workspace path is removed (``File "f3.py"``, as on any backend); what differs
between Python versions is dropped — the ``^^^~~~`` marker lines and the ``Did you mean: …?``
hints that end an error line — and so is pytest's timing (``1 passed in 0.02s`` → ``1 passed``).
"""

from __future__ import annotations

import re

from ssmagent.sandbox import RunResult, Sandbox, SandboxError, SandboxLimits, SandboxUnavailable, get_sandbox
from ssmagent.sandbox.base import WORKDIR
from ssmagent.tools.workspace import ToolError, Workspace, WorkspaceTool, visible

RUN = "run"
TAIL_LINES = 6
LIMITS = SandboxLimits(output_bytes=1 << 20)
"""The sandbox keeps the *head* of each stream; a traceback through a 1,000-module import chain
is ~100 KB, and its end is what matters, so keep enough for it."""
PYTEST_FLAGS = frozenset({"-q", "-x"})
USAGE = "run takes 'python FILE.py' or 'python -m pytest [-q] [-x] [PATH...]'"
_MARKERS = re.compile(r"\s*[\^~]+\s*")
_HINT = re.compile(r"\. Did you mean: .*\?$")
_PYTEST_TIME = re.compile(r" in \d+(?:\.\d+)?s(?: \(\d+:\d\d:\d\d\))?(?= =*$|$)")


def command_line(arguments: str, workspace: Workspace) -> list[str]:
    """The argv a ``run`` call asks for; ToolError for anything outside the allow-list."""
    words = arguments.split()
    if len(words) == 2 and words[0] == "python":
        if not words[1].endswith(".py"):
            raise ToolError(USAGE)
        _existing(words[1], workspace)
        return words
    if words[:3] == ["python", "-m", "pytest"]:
        rest = words[3:]
        for word in rest:
            if word.startswith("-") and word not in PYTEST_FLAGS:
                raise ToolError(USAGE)
            if word not in PYTEST_FLAGS:
                _existing(word.split("::", 1)[0], workspace)
        return ["python", "-m", "pytest", "-p", "no:cacheprovider", *rest]
    raise ToolError(USAGE)


def _existing(name: str, workspace: Workspace) -> None:
    if not workspace.resolve(name).exists():
        raise ToolError(f"no such file: {visible(name, 60)}")


def observation(result: RunResult, pytest: bool = False) -> str:
    """The short, deterministic text of a run (see the module docstring)."""
    sections = [result.status()]
    for name, text in (("stdout", result.stdout), ("stderr", result.stderr)):
        lines = [_HINT.sub("", line) for line in text.replace(WORKDIR + "/", "").splitlines() if not _MARKERS.fullmatch(line)]
        if pytest:
            lines = [_PYTEST_TIME.sub("", line) for line in lines]
        if lines:
            shown = [visible(line) for line in lines[-TAIL_LINES:]]
            sections.append("\n".join([f"{name}:", *(["..."] if len(lines) > TAIL_LINES else []), *shown]))
    return "\n".join(sections)


class RunTool(WorkspaceTool):
    """The code runner of one episode: on a given sandbox, or on the backend named (``auto``:
    the sandbox package's choice), found on the first run."""

    def __init__(self, workspace: Workspace, sandbox: Sandbox | str = "auto", limits: SandboxLimits = LIMITS) -> None:
        super().__init__(workspace)
        self.backend = sandbox if isinstance(sandbox, str) else sandbox.name
        self.limits = limits
        self._sandbox: Sandbox | None = None if isinstance(sandbox, str) else sandbox

    @property
    def commands(self) -> tuple[str, ...]:
        return (RUN,)

    def execute(self, command: str, arguments: str) -> str:
        argv = command_line(arguments, self.workspace)
        try:
            result = self.sandbox().run(self.workspace.root, argv, limits=self.limits)
        except SandboxUnavailable:
            raise
        except SandboxError as err:  # e.g. the workspace outgrew the sandbox's limit
            raise ToolError(visible(str(err), 200)) from None
        return observation(result, pytest=argv[1] == "-m")

    def sandbox(self) -> Sandbox:
        """The backend, found once (SandboxUnavailable says how to get one)."""
        if self._sandbox is None:
            self._sandbox = get_sandbox(self.backend)
        return self._sandbox

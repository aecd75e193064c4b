"""File viewer: a window of numbered lines over one workspace file, moved by goto and scrolling.

Commands, one token each; arguments are the text written since the previous command:

``⟨view⟩``   ``FILE`` opens FILE at its first line; ``FILE:N`` opens it with line N at the top
             of the window (or as near the top as the file's end allows); ``N`` alone goes to
             line N of the open file; nothing shows the window again (after an edit).
``⟨up⟩``     scroll one window back; ``⟨down⟩`` one window forward (no arguments). The window
             stops at the file's ends instead of running past them.

Observation: a header ``FILE: lines A-B of T`` (``FILE: 0 lines`` when empty), then the
window's lines as ``N: text``. The viewer keeps only the open file's name and the window's
first line; it reads the file again on every call, so it always shows what edits made of it.
"""

from __future__ import annotations

from ssmagent.tools.workspace import ToolError, Workspace, WorkspaceTool, numbered, parse_location, visible

VIEW, UP, DOWN = "view", "up", "down"
WINDOW = 8
"""Lines per window: a generated file of a function or two fits in one (a few hundred characters)."""


class FileViewer(WorkspaceTool):
    """The file viewer of one episode."""

    def __init__(self, workspace: Workspace, window: int = WINDOW) -> None:
        super().__init__(workspace)
        self.window = window
        self.file = ""
        self.top = 1

    @property
    def commands(self) -> tuple[str, ...]:
        return (VIEW, UP, DOWN)

    def reset(self, question: str) -> None:
        super().reset(question)
        self.file, self.top = "", 1

    def execute(self, command: str, arguments: str) -> str:
        if command == VIEW:
            file, top = self._target(arguments)
        elif arguments:
            raise ToolError(f"{command} takes no arguments, got {visible(arguments, 40)}")
        else:
            file, top = self._open_file(), self.top + (self.window if command == DOWN else -self.window)
        lines = self.workspace.read_lines(file)
        top = max(1, min(top, len(lines) - self.window + 1))
        self.file, self.top = file, top
        return self.show(file, lines, top)

    def show(self, file: str, lines: list[str], top: int) -> str:
        if not lines:
            return f"{visible(file, 60)}: 0 lines"
        bottom = min(len(lines), top + self.window - 1)
        header = f"{visible(file, 60)}: lines {top}-{bottom} of {len(lines)}"
        return "\n".join([header, *(numbered(n, lines[n - 1]) for n in range(top, bottom + 1))])

    def _target(self, arguments: str) -> tuple[str, int]:
        """(file, first line) a ``view`` call asks for."""
        if not arguments:
            return self._open_file(), self.top
        if arguments.isascii() and arguments.isdigit():
            return self._open_file(), int(arguments) if len(arguments) <= 9 else 10**9
        if ":" not in arguments:
            return arguments, 1
        file, line, last = parse_location(arguments)
        if last is not None:
            raise ToolError("view takes FILE, FILE:LINE or LINE, not a range")
        return file, line

    def _open_file(self) -> str:
        if not self.file:
            raise ToolError("no file is open; view FILE first")
        return self.file

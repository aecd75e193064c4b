"""Workspace search: ``⟨grep⟩`` lists the lines of the workspace's files that contain a string.

The argument (the text written since the previous command) is the pattern: a literal,
case-sensitive string on one line — no regular expressions, so every character means itself
and a character-level policy never has to escape one::

    return f3(⟨grep⟩          every file's lines that contain "return f3("
    f3.py⏎def ⟨grep⟩          a file name, a newline, then the pattern: that file's lines only

The observation lists the matching lines as ``FILE:N: text`` (the line as it is, indentation
included, so it can be copied into an edit: location and text on one line), files in natural
order (``f2.py`` before ``f10.py``) and lines in order, at most ``MAX_HITS`` of them, then
``(+K more)`` when more lines matched; ``no match`` when none did.

Named ``grep`` to keep it apart from ``tools/search.py``, the memory search of the
logic-graph task.
"""

from __future__ import annotations

from ssmagent.tools.workspace import ToolError, Workspace, WorkspaceTool, visible

GREP = "grep"
MAX_HITS = 5
NO_MATCH = "no match"


class Grep(WorkspaceTool):
    """The workspace search of one episode."""

    def __init__(self, workspace: Workspace, max_hits: int = MAX_HITS) -> None:
        super().__init__(workspace)
        self.max_hits = max_hits

    @property
    def commands(self) -> tuple[str, ...]:
        return (GREP,)

    def execute(self, command: str, arguments: str) -> str:
        scope, newline, pattern = arguments.rpartition("\n")
        if not pattern:
            raise ToolError("grep needs a pattern: the text before grep")
        if "\n" in scope:
            raise ToolError("grep takes a pattern, or a file and a pattern on two lines")
        hits: list[str] = []
        total = 0
        for file in [scope] if newline else self.workspace.files():
            try:
                lines = self.workspace.read_lines(file)
            except ToolError:  # too large, or gone since it was listed: not code to search
                if newline:
                    raise
                continue
            for number, line in enumerate(lines, 1):
                if pattern in line:
                    total += 1
                    if len(hits) < self.max_hits:
                        hits.append(f"{visible(file, 60)}:{number}: {visible(line)}")
        if not hits:
            return NO_MATCH
        return "\n".join(hits + ([f"(+{total - len(hits)} more)"] if total > len(hits) else []))

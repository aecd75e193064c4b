"""Edit: replace a range of a workspace file's lines with new text, refusing edits that break Python.

One command, ``⟨edit⟩``; its argument (the text written since the previous command) is a
location line, then a newline and the new text, whose lines replace the location's::

    f3.py:4             replace line 4 of f3.py ...
    def f3(x, k):⟨edit⟩  ... with this line

    ``FILE:A-B`` + newline + TEXT   replace lines A to B with TEXT's lines (any number of them)
    ``FILE:A-(A-1)`` + newline + TEXT  an empty range: insert before line A (A may be one past
                                    the last line, which appends)
    ``FILE:A-B`` alone (no newline) delete lines A to B

The new text is copied as written: indentation is the policy's to write. A ``.py`` file whose
new content does not compile is left exactly as it was, and the observation says where the
syntax error is, so a broken edit never breaks the codebase for later runs.

Observation: the new lines as ``FILE:N: text`` — the form grep shows, so the policy reads back
what it wrote — at most ``MAX_SHOWN``, then ``(+K more)``; or ``FILE: lines A-B deleted``.
"""

from __future__ import annotations

import warnings

from ssmagent.tools.workspace import ToolError, WorkspaceTool, join_lines, parse_location, visible

EDIT = "edit"
MAX_SHOWN = 8


def syntax_error(name: str, text: str) -> str | None:
    """Why ``text`` does not compile as Python (``SyntaxError at LINE: message``), or None."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. SyntaxWarning for "\d": not our business
            compile(text, name, "exec", dont_inherit=True)
    except SyntaxError as err:
        return f"{type(err).__name__} at line {err.lineno}: {visible(err.msg or 'invalid syntax', 80)}"
    except (ValueError, RecursionError, MemoryError) as err:  # NUL bytes; absurd nesting
        return f"{type(err).__name__}: {visible(str(err), 80)}"
    return None


class Edit(WorkspaceTool):
    """The line editor of one episode."""

    @property
    def commands(self) -> tuple[str, ...]:
        return (EDIT,)

    def execute(self, command: str, arguments: str) -> str:
        location, newline, text = arguments.partition("\n")
        file, first, last = parse_location(location)
        last = first if last is None else last
        new = text.split("\n") if newline else []
        lines = self.workspace.read_lines(file)
        if not 1 <= first <= len(lines) + 1 or not first - 1 <= last <= len(lines):
            raise ToolError(f"{visible(file, 60)} has {len(lines)} lines; lines {first}-{last} are not a range of it")
        if not new and last < first:
            raise ToolError("an empty range and no text change nothing")
        edited = lines[: first - 1] + new + lines[last:]
        if file.endswith(".py"):
            error = syntax_error(file, join_lines(edited))
            if error:
                raise ToolError(f"{error}; {visible(file, 60)} unchanged")
        self.workspace.write_lines(file, edited)
        if not new:
            return f"{visible(file, 60)}: lines {first}-{last} deleted"
        shown = [f"{visible(file, 60)}:{first + i}: {visible(line)}" for i, line in enumerate(new[:MAX_SHOWN])]
        return "\n".join(shown + ([f"(+{len(new) - MAX_SHOWN} more)"] if len(new) > MAX_SHOWN else []))

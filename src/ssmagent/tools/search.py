"""Search memory: grep-like ``find`` over the question's lines and every line the policy writes.

Memory is a list of lines: first the question's lines (split at ``\\n``), then, in the order
written, every line the policy *ends with a newline*. What the policy writes after its last
newline is the **current line**; command symbols are not text and are skipped, so a line can be
written across several actions.

One command, one token:

``find``   The query is the current line (the text the policy wrote since its last newline,
           which in practice is the text of the action just before ``⟨find⟩``). ``find``
           returns the **most recent** memory line that starts with the query — policy lines
           are more recent than the question's, later lines more recent than earlier ones — or
           ``-`` (``NOT_FOUND``) when no line does or the query is empty. The query is then
           discarded: it is not memory (otherwise a query would find itself), and the current
           line starts empty again.

A found line starts with the non-empty query, so it can only read as ``-`` when the query is
``-``; a line never holds a newline, so observations never do. Lookups take constant time
(every prefix of every line is indexed), so long episodes cost linear time overall.
"""

from __future__ import annotations

from collections.abc import Sequence

from ssmagent.tools.base import Tool, is_command_symbol

FIND = "find"
NOT_FOUND = "-"


class SearchMemory(Tool):
    """The searchable memory of one episode."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.current: list[str] = []
        self._latest: dict[str, int] = {}

    @property
    def commands(self) -> tuple[str, ...]:
        return (FIND,)

    def reset(self, question: str) -> None:
        self.lines, self.current, self._latest = [], [], {}
        for line in question.split("\n"):
            self._add(line)

    def record(self, symbols: Sequence[str]) -> None:
        for symbol in symbols:
            if symbol == "\n":
                self._add("".join(self.current))
                self.current = []
            elif not is_command_symbol(symbol):
                self.current.append(symbol)

    def run(self, command: str) -> str:
        if command != FIND:
            raise ValueError(f"not a search command: {command!r}")
        query = "".join(self.current)
        self.current = []
        return self.find(query)

    def find(self, query: str) -> str:
        """The most recent line starting with ``query``; ``NOT_FOUND`` when none (or empty)."""
        index = self._latest.get(query) if query else None
        return NOT_FOUND if index is None else self.lines[index]

    def _add(self, line: str) -> None:
        index = len(self.lines)
        self.lines.append(line)
        for end in range(1, len(line) + 1):
            self._latest[line[:end]] = index

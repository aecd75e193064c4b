"""Pointer memory: a tape of the question plus everything the policy writes, read by pointers.

The paper's tool (DESIGN.md §2): the tape starts as the question's characters; every symbol the
policy generates (thoughts, answer text, command tokens — never observations) is appended to
it. A few named pointers start on the tape's first cell. Commands, one token each, per pointer
``p``:

``p<`` / ``p>``   move one cell left / right (silent; clamped one cell past either end)
``p?``            read: the symbol under the pointer, or ``^`` past either end
``p,``            read, then step left unless the symbol read is a delimiter or ``^``:
                  reads a field right to left, then keeps answering its delimiter
``p$``            jump to the last cell (the newest symbol)
``p»c`` / ``p«c`` seek to the nearest ``c`` to the right / left (past the end when none)

Seeks and jumps exist so that no phase needs a blind walk or a count of moves: a model that
counts learns shortcuts that are exact on short data and wrong on long (DESIGN.md §7). Which
seek targets and delimiters exist is a property of the task's format.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ssmagent.tools.base import Tool

BOUNDARY = "^"


@dataclass(frozen=True)
class PointerSpec:
    """The shape of a pointer tape for one task format."""

    pointers: tuple[str, ...] = ("a", "b")
    """Pointer names; each starts on the first cell."""
    seek_right: str = ""
    """Characters a pointer can seek to the right."""
    seek_left: str = ""
    """Characters a pointer can seek to the left."""
    delimiters: str = ""
    """Characters at which the step-read ``p,`` stops."""

    def commands(self) -> tuple[str, ...]:
        names: list[str] = []
        for p in self.pointers:
            names += [f"{p}<", f"{p}>", f"{p}?", f"{p},", f"{p}$"]
            names += [f"{p}»{c}" for c in self.seek_right]
            names += [f"{p}«{c}" for c in self.seek_left]
        return tuple(names)


class PointerTape(Tool):
    """The pointer memory of one episode."""

    def __init__(self, spec: PointerSpec) -> None:
        self.spec = spec
        self._commands = spec.commands()
        self._dispatch = {name: self._parse(name) for name in self._commands}
        self.tape: list[str] = []
        self.position: dict[str, int] = {}

    @property
    def commands(self) -> tuple[str, ...]:
        return self._commands

    def reset(self, question: str) -> None:
        self.tape = list(question)
        self.position = {p: 0 for p in self.spec.pointers}

    def record(self, symbols: Sequence[str]) -> None:
        self.tape.extend(symbols)

    def run(self, command: str) -> str:
        pointer, op, target = self._dispatch[command]
        here = self.position[pointer]
        if op == "<":
            self.position[pointer] = max(here - 1, -1)
        elif op == ">":
            self.position[pointer] = min(here + 1, len(self.tape))
        elif op == "?":
            return self.read(pointer)
        elif op == ",":
            symbol = self.read(pointer)
            if symbol != BOUNDARY and symbol not in self.spec.delimiters:
                self.position[pointer] = here - 1
            return symbol
        elif op == "$":
            self.position[pointer] = len(self.tape) - 1
        elif op == "»":
            self.position[pointer] = self._find(target, here + 1, len(self.tape), 1, len(self.tape))
        else:  # "«"
            self.position[pointer] = self._find(target, min(here, len(self.tape)) - 1, -1, -1, -1)
        return ""

    def read(self, pointer: str) -> str:
        here = self.position[pointer]
        return self.tape[here] if 0 <= here < len(self.tape) else BOUNDARY

    def _find(self, target: str, start: int, stop: int, step: int, missing: int) -> int:
        for i in range(start, stop, step):
            if self.tape[i] == target:
                return i
        return missing

    def _parse(self, name: str) -> tuple[str, str, str]:
        for p in sorted(self.spec.pointers, key=len, reverse=True):
            rest = name[len(p):]
            if name.startswith(p) and rest:
                return p, rest[0], rest[1:]
        raise ValueError(f"not a pointer command: {name!r}")

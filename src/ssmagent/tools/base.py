"""What every tool is: a named set of single-token commands that act on an episode's state.

A tool never sees a model or a tokenizer. It is handed the question when an episode starts,
the symbols the policy writes (so memory tools can keep them), and one command at a time; it
answers each command with an observation string.

Symbols: plain characters, or a command written as ``⟨name⟩``. The angle brackets are not
printable ASCII, so no thought, answer or observation text can be mistaken for a command; the
tokenizer maps each ``⟨name⟩`` to one token.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Sequence

OPEN, CLOSE = "⟨", "⟩"
_SYMBOL = re.compile(f"{OPEN}[^{OPEN}{CLOSE}]*{CLOSE}|.", re.DOTALL)


def command_symbol(name: str) -> str:
    """The symbol (and token text) of the command ``name``."""
    return f"{OPEN}{name}{CLOSE}"


def is_command_symbol(symbol: str) -> bool:
    return len(symbol) > 2 and symbol[0] == OPEN and symbol[-1] == CLOSE


def split_symbols(text: str) -> list[str]:
    """Split text into symbols: each ``⟨name⟩`` is one symbol, every other character one."""
    return _SYMBOL.findall(text)


class Tool(ABC):
    """A tool of an episode. Subclasses say which commands they answer."""

    @property
    @abstractmethod
    def commands(self) -> tuple[str, ...]:
        """Command names (without brackets) this tool answers; each is one token."""

    @abstractmethod
    def reset(self, question: str) -> None:
        """Start an episode whose question is ``question``."""

    def record(self, symbols: Sequence[str]) -> None:  # noqa: B027 - optional hook
        """Symbols the policy wrote, in order (thoughts, answer text and commands).

        Only memory tools keep them; the default ignores them.
        """

    @abstractmethod
    def run(self, command: str) -> str:
        """Execute one of ``commands`` and return the observation ('' when silent)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release what the episode holds outside memory (a workspace directory); the default
        holds nothing."""

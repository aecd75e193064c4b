"""Character-level tokenizer: one token per printable character, one per command or marker.

The vocabulary is a list of token texts saved with every checkpoint. It is only ever appended
to (``extend``), so a plugin's new commands never shift the ids a shipped model was trained on.
"""

from __future__ import annotations

import string
from collections.abc import Iterable, Sequence

from ssmagent.tasks import ANSWER, END, Task
from ssmagent.tools.base import command_symbol, is_command_symbol, split_symbols

PAD = command_symbol("pad")
BOS = command_symbol("bos")
BASE_VOCAB: tuple[str, ...] = (PAD, BOS, ANSWER, END, "\n", *string.printable[:95])


class TokenizerError(ValueError):
    """Text holds a symbol the vocabulary lacks."""


class Tokenizer:
    def __init__(self, vocab: Sequence[str]) -> None:
        if len(set(vocab)) != len(vocab):
            raise TokenizerError("vocabulary has duplicate tokens")
        self.vocab: list[str] = list(vocab)
        self._ids = {token: i for i, token in enumerate(self.vocab)}
        self.pad_id = self._ids[PAD]
        self.bos_id = self._ids[BOS]
        self.end_id = self._ids[END]

    @classmethod
    def for_commands(cls, commands: Iterable[str], base: Sequence[str] = BASE_VOCAB) -> Tokenizer:
        """The base vocabulary extended with these command names (in order, without duplicates)."""
        return cls(base).extend(command_symbol(c) for c in commands)

    def extend(self, tokens: Iterable[str]) -> Tokenizer:
        """A tokenizer whose vocabulary is this one plus the new tokens, appended."""
        new = [t for t in dict.fromkeys(tokens) if t not in self._ids]
        return Tokenizer(self.vocab + new)

    def __len__(self) -> int:
        return len(self.vocab)

    def encode(self, text: str, errors: str = "strict") -> list[int]:
        """Token ids of ``text``; with ``errors="replace"`` an unknown symbol becomes ``?``
        (observations may quote anything; what the policy is trained on never does)."""
        if errors == "replace":
            unknown = self._ids["?"]
            return [self._ids.get(s, unknown) for s in split_symbols(text)]
        try:
            return [self._ids[s] for s in split_symbols(text)]
        except KeyError as err:
            raise TokenizerError(f"symbol {err.args[0]!r} is not in the vocabulary") from None

    def decode(self, ids: Iterable[int]) -> str:
        return "".join(self.vocab[i] for i in ids)

    def is_command(self, token_id: int) -> bool:
        """Does this token end an action (a tool command or ``⟨end⟩``)?"""
        token = self.vocab[token_id]
        return is_command_symbol(token) and token not in (PAD, BOS, ANSWER)

    def command_ids(self) -> list[int]:
        return [i for i in range(len(self.vocab)) if self.is_command(i)]


def task_commands(task: Task) -> list[str]:
    """Every command name of a task's tools, in the tools' order."""
    return [name for tool in task.make_tools() for name in tool.commands]

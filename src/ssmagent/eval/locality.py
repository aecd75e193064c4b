"""The locality check (DESIGN.md §2): is the expert's next token a function of a short window?

A policy with a fixed-size state (Mamba) can only imitate an expert at any length if every token
the expert generates is determined by a bounded amount of what came just before it (plus a
finite control state, which the window carries in a good format). Counting ("walk 37 cells,
then read") is not local: it is exact on short data and wrong on long, which is exactly how
trained models failed at phase boundaries (DESIGN.md §7). The check makes that property
testable without a model:

1. ``locality_table`` reads token streams of *short* expert episodes and records, for every
   generated position, the last ``k`` tokens (generated and observed alike: the model sees
   both) and the token the expert generated next. A window seen with two different next tokens
   is a *conflict*: ``k`` tokens do not determine the expert's next move.
2. ``check_locality`` replays streams of *long* episodes and counts the generated positions
   whose window the table maps to exactly the token the expert wrote. A window the table has
   never seen counts as a failure: a lookup table cannot extrapolate beyond what short
   instances show, so 100 % means every situation the long episodes meet already occurs, with
   the same next token, in short ones.

If the table has no conflicts and predicts long streams 100 %, a finite-state policy reading a
``k``-token window could imitate the expert at that length; if it doesn't, no model can be
expected to either, and the format needs changing.

Streams are what ``Trajectory.stream(tokenizer)`` returns: token ids and, per id, whether it is
generated (the loss mask). This module knows no task, tokenizer or model.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

PAD = -1
"""Stands for the positions before a stream's first token (no token id is negative), so a
window near the start never equals a window in the middle of a stream."""

Window = tuple[int, ...]
Stream = tuple[Sequence[int], Sequence[bool]]


class LocalityConflict(ValueError):
    """The same window of ``k`` tokens was followed by two different generated tokens."""

    def __init__(self, window: Window, next_tokens: set[int]) -> None:
        self.window = window
        self.next_tokens = next_tokens
        super().__init__(f"window {list(window)} is followed by different tokens {sorted(next_tokens)}")


@dataclass
class LocalityTable:
    """(last ``k`` token ids) → next generated token id, with the windows that conflict.

    A conflicting window is kept out of ``table``: it predicts nothing.
    """

    k: int
    table: dict[Window, int] = field(default_factory=dict)
    conflicts: dict[Window, set[int]] = field(default_factory=dict)

    def predict(self, window: Window) -> int | None:
        """The next token after ``window``; None when unseen or conflicting."""
        return self.table.get(window)

    def __len__(self) -> int:
        return len(self.table) + len(self.conflicts)


def generated_windows(stream: Stream, k: int) -> Iterator[tuple[Window, int]]:
    """(window of the ``k`` tokens before it, token) for every generated position of a stream."""
    if k < 1:
        raise ValueError(f"k must be a positive window length, got {k}")
    ids, mask = stream
    if len(ids) != len(mask):
        raise ValueError(f"a stream's ids and mask differ in length ({len(ids)} vs {len(mask)})")
    padded = [PAD] * k + list(ids)
    for i, generated in enumerate(mask):
        if generated:
            yield tuple(padded[i : i + k]), ids[i]


def locality_table(streams: Iterable[Stream], k: int, *, strict: bool = False) -> LocalityTable:
    """The table of every generated position of ``streams`` (short episodes).

    With ``strict`` the first conflict raises ``LocalityConflict``; otherwise conflicts are
    returned in ``LocalityTable.conflicts`` (window → every next token seen after it).
    """
    result = LocalityTable(k)
    table, conflicts = result.table, result.conflicts
    for stream in streams:
        for window, token in generated_windows(stream, k):
            if window in conflicts:
                conflicts[window].add(token)
                continue
            known = table.setdefault(window, token)
            if known != token:
                del table[window]
                conflicts[window] = {known, token}
                if strict:
                    raise LocalityConflict(window, conflicts[window])
    return result


def check_locality(table: LocalityTable | Mapping[Window, int], streams: Iterable[Stream], k: int) -> float:
    """Fraction of the generated positions of ``streams`` (long episodes) that ``table``
    predicts exactly; unseen and conflicting windows count as failures. 1.0 when there are no
    generated positions at all (nothing was mispredicted)."""
    if isinstance(table, LocalityTable):
        if table.k != k:
            raise ValueError(f"the table was built with k={table.k}, not k={k}")
        table = table.table
    hits = total = 0
    for stream in streams:
        for window, token in generated_windows(stream, k):
            total += 1
            hits += table.get(window) == token
    return hits / total if total else 1.0

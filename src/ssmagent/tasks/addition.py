"""Long addition through a pointer tape.

The question ``A+B=`` lives only on the tape; the policy reads it with two pointers. Its
format, one column per 7 tokens (5 generated), least significant digit first::

    ⟨a»+⟩⟨a<⟩⟨b»=⟩⟨b<⟩            setup: a on A's last digit, b on B's last digit
    ⟨a,⟩ 7 ⟨b,⟩ 5  2 # 1          a column: step-read both operands, write sum digit, #, carry-out
    ⟨a,⟩ ^ ⟨b,⟩ +  1 # 0          both read out, carry 1: one more column
    ⟨a,⟩ ^ ⟨b,⟩ +  ⟨answer⟩⟨a$⟩   both read out, carry 0: the answer phase begins
    ⟨a«#⟩⟨a<⟩⟨a?⟩ 1  1            per answer digit: seek the previous #, step onto its sum digit,
    ...                           read it, write it (most significant first), 5 tokens
    ⟨a«#⟩⟨a<⟩⟨a?⟩ ^  ⟨end⟩        no # left: done

(Observations are shown in the stream above but are not on the tape.) Every generated token
is a function of the last 6 tokens: the carry is the column's last token, 5 tokens before the
next sum digit needs it, and each phase starts at a token that only that phase uses. The
carry came first in an earlier version of this format, 8 tokens before its use; models then
dropped carries after a few hundred columns (the first wrong token was always a sum digit
one too small). About 12 tokens per digit, 9 of them generated.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ssmagent.tasks.base import ANSWER, END, Expert, Task, TaskInputError
from ssmagent.tools.base import command_symbol as cmd
from ssmagent.tools.pointer import BOUNDARY, PointerSpec, PointerTape

POINTERS = PointerSpec(pointers=("a", "b"), seek_right="+=", seek_left="#", delimiters="+=")
COLUMN_END = "#"


@dataclass(frozen=True)
class Sum:
    """An addition instance: two non-negative decimal integers without leading zeros."""

    a: str
    b: str


def _digits(length: int, rng: np.random.Generator) -> str:
    """A random number of exactly ``length`` digits, leading digit non-zero."""
    first = str(rng.integers(1, 10))
    return first + "".join(map(str, rng.integers(0, 10, size=length - 1)))


def _carry_partner(a: str, length: int, rng: np.random.Generator) -> str:
    """A ``length``-digit number whose sum with ``a`` carries through every shared column.

    Its digits complement ``a``'s to 9 (so each column sums to 9 and passes a carry on), and
    the lowest column sums to 10 to start the chain.
    """
    low = [9 - int(d) for d in reversed(a)][:length]
    low[0] = min(low[0] + 1, 9)
    high = [int(rng.integers(0, 10)) for _ in range(length - len(low))]
    digits = "".join(map(str, reversed(low + high))).lstrip("0")
    return digits if len(digits) == length else _digits(length, rng)


class Addition(Task[Sum]):
    name = "addition"
    env_id = "ssmagent/Addition-v0"
    size_unit = "digits"
    max_action_tokens = 16

    def sample(self, size: int, rng: np.random.Generator) -> Sum:
        """Two operands, the longer of exactly ``size`` digits.

        Half the time both have ``size`` digits, else the other's length is uniform in
        1..size (drawn independently, so lengths are often unequal). A quarter of the
        instances are built to carry through long chains, and zero is weighted in.
        """
        self.check_size(size)
        other = size if rng.random() < 0.5 else int(rng.integers(1, size + 1))
        a = _digits(size, rng)
        kind = rng.random()
        if kind < 0.25:
            b = _carry_partner(a, other, rng)
        elif kind < 0.30:
            b = "0"
        elif kind < 0.40:
            a, b = "9" * size, _digits(other, rng)
        else:
            b = _digits(other, rng)
        return Sum(a, b) if rng.random() < 0.5 else Sum(b, a)

    def hard_instances(self, size: int) -> list[Sum]:
        nines = "9" * size
        return [Sum(nines, "1"), Sum("1", nines), Sum(nines, nines)]

    def parse(self, args: list[str]) -> Sum:
        if len(args) != 2:
            raise TaskInputError(f"addition takes two operands A B, got {len(args)} argument(s)")
        for x in args:
            if not x.isdigit() or not x.isascii():
                raise TaskInputError(f"operand {x[:40]!r} is not a non-negative decimal integer (digits 0-9 only)")
        return Sum(*(x.lstrip("0") or "0" for x in args))

    def size_of(self, instance: Sum) -> int:
        return max(len(instance.a), len(instance.b))

    def question(self, instance: Sum) -> str:
        return f"{instance.a}+{instance.b}="

    def answer(self, instance: Sum) -> str:
        return add_decimal(instance.a, instance.b)

    def make_tools(self) -> list[PointerTape]:
        return [PointerTape(POINTERS)]

    def expert(self) -> AdditionExpert:
        return AdditionExpert()

    def step_budget(self, size: int) -> int:
        return 6 * size + 32

    def to_json(self, instance: Sum) -> dict[str, Any]:
        return {"a": instance.a, "b": instance.b}

    def max_observation_length(self, size: int) -> int:
        return max(256, 2 * size + 2)

    def phase(self, stream: list[str]) -> str:
        if ANSWER in stream:
            return f"answer, digit {stream.count(cmd('a«#')) + 1} (most significant first)"
        if cmd("a,") not in stream:
            return "setup"
        return f"column {stream.count(COLUMN_END) + 1} (least significant first)"


def add_decimal(a: str, b: str) -> str:
    """Exact sum of two decimal strings of any length (linear time, unlike ``int()`` for huge ones)."""
    width = max(len(a), len(b))
    out: list[str] = []
    carry = 0
    for da, db in zip(reversed(a.zfill(width)), reversed(b.zfill(width))):
        carry, digit = divmod(int(da) + int(db) + carry, 10)
        out.append(str(digit))
    if carry:
        out.append("1")
    return "".join(reversed(out)).lstrip("0") or "0"


class AdditionExpert(Expert):
    """Column addition with a control state of one phase, one carry and one digit."""

    def __init__(self) -> None:
        self._plan = [cmd("a»+"), cmd("a<"), cmd("b»="), cmd("b<"), cmd("a,")]
        self._phase = "setup"
        self._carry = 0
        self._digit_a = ""

    def act(self, observation: str) -> str:
        if self._phase == "setup":
            action = self._plan.pop(0)
            if not self._plan:
                self._phase = "read_a"
            return action
        if self._phase == "read_a":
            self._digit_a, self._phase = observation, "read_b"
            return cmd("b,")
        if self._phase == "read_b":
            if not self._digit_a.isdigit() and not observation.isdigit() and self._carry == 0:
                self._phase = "seek"
                return ANSWER + cmd("a$")
            total = _value(self._digit_a) + _value(observation) + self._carry
            self._carry, digit = divmod(total, 10)
            self._phase = "read_a"
            return f"{digit}{COLUMN_END}{self._carry}" + cmd("a,")
        if self._phase == "seek":
            self._phase = "step"
            return cmd("a«#")
        if self._phase == "step":
            self._phase = "read_sum"
            return cmd("a<")
        if self._phase == "read_sum":
            self._phase = "write"
            return cmd("a?")
        # phase "write": the observation is a sum digit, or ^ when every digit is written
        self._phase = "step"
        return END if observation == BOUNDARY else observation + cmd("a«#")


def _value(symbol: str) -> int:
    return int(symbol) if symbol.isdigit() else 0

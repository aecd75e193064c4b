"""Long multiplication, n-digit × 1-digit and n-digit × 2-digit, through a pointer tape.

The question ``A*B=`` lives only on the tape (A has n digits, B one or two); the policy reads it
with four pointers: ``a`` steps left over A (a_i), ``b`` stays on B's last digit (b_0), ``c`` on
the cell before it (b_1, or ``*`` = 0 when B has one digit) and ``d`` steps left over A one cell
behind ``a`` (a_{i-1}; it starts on ``*``, which reads as 0) — or, when B has one digit, in step
with ``a`` (its product with ``*`` is 0 anyway, and so both pointers run out together and no
zero column is left on top). Column i of the product is U = C + a_i·b_0 + a_{i-1}·b_1, C ≤ 17
the carry in (U ≤ 179). One format serves both kinds. A column, least significant first, is
15 tokens, 11 of them generated::

    ⟨a»*⟩⟨a<⟩⟨b»=⟩⟨b<⟩⟨c»=⟩⟨c<⟩⟨c<⟩⟨c?⟩ y' ⟨d»*⟩ [⟨d<⟩ if y' is *]      setup (once)
    ⟨b?⟩ y ⟨a,⟩ x  e h  ⟨c?⟩ y' ⟨d,⟩ x'  D H # c C
        read b_0 (y) and a_i (x); write S = C + x·y as e (units), h (tens); read b_1 (y') and
        a_{i-1} (x'); write U = S + x'·y' as its digit D, h again (H), ``#``, then the carry
        U div 10 as two digits, units c first, tens C (0 or 1) last in the column.
    ⟨b?⟩ y ⟨a,⟩ ^  0 0  ⟨c?⟩ y' ⟨d,⟩ ^  ⟨answer⟩⟨a$⟩
        A read out by both pointers (x' = ^) and nothing left (S = 0): the answer begins
    ⟨a«#⟩⟨a<⟩⟨a<⟩⟨a,⟩ D  D                      per answer digit, most significant first:
    ⟨a«#⟩⟨a<⟩⟨a<⟩⟨a?⟩ D  D                      seek the previous #, step over H onto D, read
    ...                                         it, write it; no # left: done. The first is
    ⟨a«#⟩⟨a<⟩⟨a<⟩⟨a?⟩ ^  ⟨end⟩                  read with ⟨a,⟩ (the step is harmless)

Only a zero product has a zero top digit (operands have no leading zeros), so a first digit 0
is answered ``0⟨end⟩``; reading it with ``⟨a,⟩`` is what tells, within the window, that a 0 just
written was the first digit.

Worked example, 57 × 38 = 2166 (question ``57*38=``; observations in brackets)::

    column 0: ⟨b?⟩[8] ⟨a,⟩[7]  6 5  ⟨c?⟩[3] ⟨d,⟩[*]  6 5 # 5 0    S = 0 + 7·8 = 56, U = 56
    column 1: ⟨b?⟩[8] ⟨a,⟩[5]  5 4  ⟨c?⟩[3] ⟨d,⟩[7]  6 4 # 6 0    S = 5 + 40 = 45,  U = 45 + 21 = 66
    column 2: ⟨b?⟩[8] ⟨a,⟩[^]  6 0  ⟨c?⟩[3] ⟨d,⟩[5]  1 0 # 2 0    S = 6,            U = 6 + 15 = 21
    column 3: ⟨b?⟩[8] ⟨a,⟩[^]  2 0  ⟨c?⟩[3] ⟨d,⟩[^]  2 0 # 0 0    S = 2,            U = 2
    column 4: ⟨b?⟩[8] ⟨a,⟩[^]  0 0  ⟨c?⟩[3] ⟨d,⟩[^]  ⟨answer⟩⟨a$⟩   S = 0 and x' = ^
    answer:   ⟨a«#⟩⟨a<⟩⟨a<⟩⟨a,⟩[2] 2  …⟨a?⟩[1] 1  …[6] 6  …[6] 6  ⟨a«#⟩⟨a<⟩⟨a<⟩⟨a?⟩[^] ⟨end⟩

Locality (DESIGN.md §2): every generated token is a function of the last **6** tokens, and 5
are not enough. e = (c + x·y) mod 10 needs the carry's units c (6 back); h = C + (c + x·y) div 10
needs its tens C (6 back; e fixes c + x·y); D = (e + x'·y') mod 10 needs e (6 back); H copies h
(6 back); the new c = (H + k) mod 10 needs y' (6 back), where k = (e + x'·y') div 10 is fixed by
D, x' and y'; the new C = [c < H] needs only the last 3 tokens; the end of the columns needs
e = h = 0 (6 back) and x' = ^; reading the answer's first digit needs ``⟨a$⟩`` (4 back). No
phase walks blindly or counts: reads step with ``,``, the answer seeks ``#``.

Why H and this order (each measured with ``ssmagent train multiplication --max-size 10``, seed
0): without H (``… x' D # c C``, 14 tokens) the carry's units need h 7 tokens back, because the
``#`` that marks D for the answer phase always sits on some dependency — no order of those 14
tokens has a 6-token window. That format was exact on 1,000 of 1,000 10-digit problems but
failed 3 of 100 at 1,000 digits, each on that carry digit. Writing the carry's units before D
(``… x' c D # C c``, 15 tokens, window 6) was worse: 97.8 % even at 10 digits, its errors all
that digit, off by one at the threshold e + x'·y' ≥ 10·k — computed from the last input in one
step. Here the carry comes 3 tokens after the last read, once D is written, from H next to it.

Tokens per digit of A: 15 per column (11 generated, 4 observed) and 6 per answer digit (5
generated, 1 observed): about 21, 16 of them generated. n×1 pays for the reads of the second
product too, so that one format, one model and one locality window serve both kinds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ssmagent.tasks.base import ANSWER, END, Expert, Task, TaskInputError
from ssmagent.tools.base import command_symbol as cmd
from ssmagent.tools.pointer import BOUNDARY, PointerSpec, PointerTape

POINTERS = PointerSpec(pointers=("a", "b", "c", "d"), seek_right="*=", seek_left="#")
COLUMN_END = "#"
TIMES = "*"
SETUP = tuple(cmd(c) for c in ("a»*", "a<", "b»=", "b<", "c»=", "c<", "c<", "c?"))


@dataclass(frozen=True)
class Product:
    """A multiplication instance: A (any length) × B (one or two digits), no leading zeros."""

    a: str
    b: str


def _digits(length: int, rng: np.random.Generator, low: int = 0) -> str:
    """A random number of exactly ``length`` digits in ``low``..9, leading digit non-zero."""
    first = str(rng.integers(max(low, 1), 10))
    return first + "".join(map(str, rng.integers(low, 10, size=length - 1)))


def multiply_decimal(a: str, b: str) -> str:
    """Exact product of a decimal string of any length and a small one (linear time)."""
    factor, carry = int(b), 0
    low_first: list[str] = []
    for digit in reversed(a):
        carry, low = divmod(int(digit) * factor + carry, 10)
        low_first.append(str(low))
    return (str(carry) + "".join(reversed(low_first))).lstrip("0") or "0"


class Multiplication(Task[Product]):
    name = "multiplication"
    env_id = "ssmagent/Multiply-v0"
    size_unit = "digits"
    max_action_tokens = 12

    def sample(self, size: int, rng: np.random.Generator) -> Product:
        """A of exactly ``size`` digits; B of 1 or 2 digits, each half the time.

        Leading digits are non-zero. Weighted in: zero (B = 0, and A = 0 at size 1), A all
        nines and B all nines (the longest two-digit carries: 9…9 × 99 carries 17 in every
        column), and A of high digits (5–9) for large carries throughout.
        """
        self.check_size(size)
        width = 1 if rng.random() < 0.5 else 2
        kind = rng.random()
        a = _digits(size, rng)
        b = _digits(width, rng)
        if kind < 0.04:
            b = "0"
        elif kind < 0.08 and size == 1:
            a = "0"
        elif kind < 0.16:
            a = "9" * size
        elif kind < 0.24:
            b = "9" * width
        elif kind < 0.32:
            a, b = "9" * size, "9" * width
        elif kind < 0.50:
            a, b = _digits(size, rng, low=5), _digits(width, rng, low=5)
        return Product(a, b)

    def variant(self, instance: Product) -> str:
        return f"n×{len(instance.b)}"

    def hard_instances(self, size: int) -> list[Product]:
        nines, ones = "9" * size, "1" * size
        return [Product(nines, "99"), Product(nines, "9"), Product(ones, "1")]

    def parse(self, args: list[str]) -> Product:
        if len(args) != 2:
            raise TaskInputError(f"multiplication takes two operands A B, got {len(args)} argument(s)")
        for x in args:
            if not x.isdigit() or not x.isascii():
                raise TaskInputError(f"operand {x[:40]!r} is not a non-negative decimal integer (digits 0-9 only)")
        a, b = (x.lstrip("0") or "0" for x in args)
        if len(b) > 2:
            raise TaskInputError(f"B must have 1 or 2 digits (0-99), got {len(b)} digits; A may have any length")
        return Product(a, b)

    def size_of(self, instance: Product) -> int:
        return len(instance.a)

    def question(self, instance: Product) -> str:
        return f"{instance.a}{TIMES}{instance.b}="

    def answer(self, instance: Product) -> str:
        return multiply_decimal(instance.a, instance.b)

    def make_tools(self) -> list[PointerTape]:
        return [PointerTape(POINTERS)]

    def expert(self) -> MultiplicationExpert:
        return MultiplicationExpert()

    def step_budget(self, size: int) -> int:
        # 4 actions per column and per answer digit, for at most size + 3 of each, plus setup
        return 8 * size + 64

    def to_json(self, instance: Product) -> dict[str, Any]:
        return {"a": instance.a, "b": instance.b}

    def max_observation_length(self, size: int) -> int:
        return max(256, size + 8)

    def phase(self, stream: list[str]) -> str:
        if ANSWER in stream:  # per digit: seek, step, step, read (⟨a,⟩ or ⟨a?⟩), the digit read, its copy
            after = [cmd("a?") if x == cmd("a,") else x for x in stream[stream.index(ANSWER) :]]
            reads = after.count(cmd("a?"))
            deciding = reads and after[::-1].index(cmd("a?")) < 2  # reading it or deciding on it
            return f"answer, digit {reads if deciding else reads + 1} (most significant first)"
        columns = stream.count(cmd("b?"))
        if not columns:
            return "setup"
        tail = stream[len(stream) - stream[::-1].index(cmd("b?")) :]
        if cmd("a,") not in tail[:2]:
            part = "reading b_0"
        elif cmd("c?") not in tail:
            part = "reading a_i, writing S = carry + a_i·b_0"
        elif cmd("d,") not in tail:
            part = "reading b_1"
        else:
            part = "reading a_(i-1), writing the digit and carry"
        return f"column {columns} (least significant first), {part}"


def _value(symbol: str) -> int:
    return int(symbol) if symbol.isdigit() else 0


class MultiplicationExpert(Expert):
    """Column multiplication; control state: a phase, the carry, S, the multiplier digit just
    read, and whether an answer digit has been written."""

    def __init__(self) -> None:
        self._plan = list(SETUP)
        self._phase = "setup"
        self._carry = 0
        self._partial = 0
        self._y = ""
        self._written = False

    def act(self, observation: str) -> str:
        phase = self._phase
        if phase == "setup":
            action = self._plan.pop(0)
            if not self._plan:
                self._phase = "place_d"
            return action
        if phase == "place_d":  # the observation is b_1, or * when B has one digit
            self._phase = "step_d" if observation == TIMES else "column"
            return cmd("d»*")
        if phase == "step_d":
            self._phase = "column"
            return cmd("d<")
        if phase == "column":
            self._phase = "read_b0"
            return cmd("b?")
        if phase == "read_b0":
            self._y, self._phase = observation, "read_a"
            return cmd("a,")
        if phase == "read_a":
            self._phase = "read_b1"
            self._partial = self._carry + _value(observation) * _value(self._y)
            return f"{self._partial % 10}{self._partial // 10}" + cmd("c?")
        if phase == "read_b1":
            self._y, self._phase = observation, "read_a_prev"
            return cmd("d,")
        if phase == "read_a_prev":
            if observation == BOUNDARY and self._partial == 0:
                self._phase = "seek"
                return ANSWER + cmd("a$")
            total = self._partial + _value(observation) * _value(self._y)
            self._carry, self._phase = total // 10, "read_b0"
            digits = f"{total % 10}{self._partial // 10}{COLUMN_END}{self._carry % 10}{self._carry // 10}"
            return digits + cmd("b?")
        if phase == "seek":
            self._phase = "step"
            return cmd("a«#")
        if phase == "step":
            self._phase = "step_again"
            return cmd("a<")
        if phase == "step_again":
            self._phase = "read_digit"
            return cmd("a<")
        if phase == "read_digit":  # the first digit is read with ⟨a,⟩, so that the window shows it
            self._phase = "write"
            return cmd("a?" if self._written else "a,")
        # phase "write": a digit of the product, or ^ once every digit is written
        first, self._written = not self._written, True
        if observation == BOUNDARY:  # (never first: every product has a digit)
            return END
        if first and observation == "0":  # the top digit is 0 only when the product is 0
            return "0" + END
        self._phase = "step"
        return observation + cmd("a«#")

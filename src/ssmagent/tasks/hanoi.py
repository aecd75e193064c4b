"""Tower of Hanoi from any legal configuration, through a pointer tape.

An instance is a legal configuration of n disks on pegs A, B, C (every assignment of disks to
pegs is legal: each peg's disks stack largest at the bottom) and a target peg. The answer is an
optimal move list, one move per line ``disk from to`` (``1 A C``), each line ending in a
newline. The scorer replays the moves and accepts only legal sequences of the optimal length
that end with every disk on the target.

Optimal length. Let g_n = target; going from the largest disk down, g_{k-1} = g_k when disk k is
on g_k, else the third peg (disk k must move to g_k, so everything smaller first goes to the
third peg). The optimal length is the sum of 2^(k-1) over the disks k not on g_k.

The algorithm (iterative, no stack). In an optimal sequence the smallest disk moves every other
move (two moves of it in a row merge into one; two other moves in a row undo each other: with
disk 1 still, only one move avoids it). Between its moves comes the *forced* move: the smallest
disk d not on disk 1's peg Z moves from its peg X to the third peg Y. The next move of disk 1
goes from Z to X if d is odd, onto d (Y) if d is even (the classic "odd disks cycle one way,
even disks the other", which also holds at the boundaries between the sub-towers of a general
start). Only the very first move needs the goals: it is disk 1 to g_1 when disk 1 is not on g_1.
The sequence ends after a disk-1 move that leaves no disk off disk 1's peg.

Tape format. The question (on the tape only) is T, P1, ``|``, ``,P2,P3,…,Pn``, ``,.``, ``02#03#…nn#``
(``CA|,A,.02#`` for two disks on A, target C): the target, disk 1's peg, then one cell ``,P`` per
larger disk (smallest first) ended by the sentinel cell ``,.``, then the labels of disks 2..n, two
digits each, ended by ``#``. Pointers: ``p`` reads the current state line, ``q`` the labels (in
step with ``p``), ``r`` looks up the latest disk-1 move, ``a`` reads the moves back in the answer
phase.

1. Goal scan, largest disk first: ``⟨p?⟩`` reads T, which is written in lower case; ``⟨p».⟩``,
   then ``⟨p,⟩`` reads the question right to left. After each peg the goal of the next smaller
   disk is written (lower case until a disk is off its goal, upper case after); after ``.`` and
   ``,`` the current goal is written again, so the goal is always 2 tokens back. After ``|``
   comes disk 1's peg, and the first decision: solved already (``⟨answer⟩⟨end⟩``), disk 1 first
   (write the record ``!%`` g1 P1 ``1!``), or a forced move first (write ``!%`` P1: a null
   record that only ``r`` reads). Then the first line starts.
2. One line per pair of moves (forced, disk 1). ``|⟨q«.⟩`` resets q; ``⟨r»%⟩⟨r>⟩⟨r?⟩`` reads
   disk 1's peg Z from the latest record and writes it; then per cell of the previous line (the
   question, for the first line): ``⟨q»#⟩⟨p»,⟩⟨p>⟩⟨p?⟩`` P. P = Z: write ``,Z``; P = ``.``: no
   forced move is left, the work is done (``=!⟨answer⟩…``); else P is the forced disk's peg X:
   write ``,Y`` (Y the third peg) and Z, read its label (``⟨q<⟩⟨q,⟩`` units ``⟨q,⟩`` tens) and
   write the pair's record ``%WZ*YX`` + label digits reversed + ``!`` (W is disk 1's destination;
   read right to left, the record gives ``d X Y``, ``*``, then disk 1's source Z and W). The
   remaining cells are copied in lower case (``⟨p»,⟩⟨p>⟩⟨p?⟩`` x, write ``,x``) up to the
   sentinel (``,.``); the lower case tells a copied cell from a scanned one.
3. Answer: per record ``⟨a»!⟩⟨a»!⟩⟨a<⟩`` (the first seek lands on the end of the record just
   read, or on the leading ``!``), then ``⟨a,⟩`` reads right to left: digits are written, pegs
   as `` P``, ``*`` ends the forced move and starts disk 1's (``\\n1``), ``%`` ends a record
   (``\\n``); ``=`` (the end marker) ends the episode.

Worked example, n = 2, both disks on A, target C (question ``CA|,A,.02#``; observations in
brackets; ``\\n`` is the newline)::

    ⟨p?⟩[C] c⟨p».⟩⟨p,⟩[.] c⟨p,⟩[,] c⟨p,⟩[A] B⟨p,⟩[,] B⟨p,⟩[|] ⟨p,⟩[A]
                                 goals: g2 = C (lower case: nothing off yet), disk 2 on A, so g1 = B
    !%BA1!|⟨q«.⟩                 disk 1 is on A, not g1: the first move is 1 A B (record %BA1!)
    ⟨r»%⟩⟨r>⟩⟨r?⟩[B] B⟨q»#⟩⟨p»,⟩⟨p>⟩⟨p?⟩[A]     line 1: Z = B; disk 2 is on A, not Z: forced
    ,CB⟨q<⟩⟨q,⟩[2]⟨q,⟩[0]         new cell C (and Z); read disk 2's label, units then tens
    %CB*CA2!⟨p»,⟩⟨p>⟩⟨p?⟩[.]      records 2 A C, then 1 B C (2 is even: disk 1 goes onto it)
    ,.|⟨q«.⟩⟨r»%⟩⟨r>⟩⟨r?⟩[C] C⟨q»#⟩⟨p»,⟩⟨p>⟩⟨p?⟩[C] ,C⟨q»#⟩⟨p»,⟩⟨p>⟩⟨p?⟩[.]
                                 line 2: Z = C and every disk is on C: done
    =!⟨answer⟩⟨a»!⟩⟨a»!⟩⟨a<⟩⟨a,⟩[1] 1⟨a,⟩[A]  A⟨a,⟩[B]  B⟨a,⟩[%] \\n
    ⟨a»!⟩⟨a»!⟩⟨a<⟩⟨a,⟩[2] 2⟨a,⟩[A]  A⟨a,⟩[C]  C⟨a,⟩[*] \\n1⟨a,⟩[B]  B⟨a,⟩[C]  C⟨a,⟩[%] \\n
    ⟨a»!⟩⟨a»!⟩⟨a<⟩⟨a,⟩[=] ⟨end⟩    answer: "1 A B\\n2 A C\\n1 B C\\n"

Locality (tests/test_hanoi.py): every generated token is a function of the last 9 tokens, and 8
are not enough: the record copies the forced disk's units digit, read 9 tokens before it is
written. With digits grouped by parity (what the program uses of a label besides copying it), 8
tokens suffice and 7 do not: disk 1's destination needs the forced disk's new peg, 8 tokens back.
No phase counts or walks blindly: cells are found by seeking ``,``, labels by seeking ``#``, the
latest disk-1 move by seeking ``%``, the records by seeking ``!``. What a lookup table of short
episodes cannot supply is the *value* of a label it never saw: labels are decimal, so an episode
with n disks copies digits no episode with fewer disks shows (7, 8, 9, then a two-digit label from
10 disks on). A model must learn to copy a digit, not a table of digits; the tests check that
every position a table of episodes with at most 6 disks misses at 10 disks copies or follows such
a label. So half of the training towers carry random labels (``relabel``: increasing, with the
parity of the disk's rank), which puts every digit in every position into short episodes: a
window table of 400 training towers of at most 8 disks predicts the classic 10-disk tower exactly.

Cost, measured on the classic tower: per move 37 generated and 8 observed tokens at 6 disks, 46
and 10 at 10 disks, 51 and 11 at 12 disks (209k generated, 45k observed for its 4,095 moves):
each pair of moves copies the n-1 cells of the state line (6 tokens a cell) and reads the pair
back in the answer phase (about 34 tokens).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ssmagent.tasks.base import ANSWER, END, Expert, Task, TaskInputError
from ssmagent.tools.base import command_symbol as cmd
from ssmagent.tools.pointer import PointerSpec, PointerTape

PEGS = "ABC"
MAX_DISKS = 99
"""Labels are stored with two digits on the tape."""
POINTERS = PointerSpec(pointers=("p", "q", "r", "a"), seek_right=",.#%!", seek_left=".")


@dataclass(frozen=True)
class Tower:
    """An instance: ``pegs[k-1]`` is the peg of disk k (disk 1 the smallest), and the target.

    ``labels`` are the numbers the disks are called by in the question and the answer, smallest
    disk first; empty means the usual 1..n. Other labels only serve training (see
    ``relabel``): they must start at 1, increase, and have the parity of the disk's rank, the
    only property of a label the algorithm uses.
    """

    pegs: str
    target: str
    labels: tuple[int, ...] = ()

    def label(self, k: int) -> int:
        """The label of disk k (1-based rank)."""
        return self.labels[k - 1] if self.labels else k


def relabel(tower: Tower, rng: np.random.Generator) -> Tower:
    """The same tower with random labels: 1, then steps drawn from the odd numbers 1..9 (fewer
    for towers so tall that the last label would pass 99), so every label keeps its rank's parity.

    Why: the expert copies each label digit by digit, and with labels 1..8 the digits 0, 1 and 9
    never appear as a copied units digit nor 1 as a tens digit, so a model trained on ≤ 8 disks
    would meet its first copy of "10" at 10 disks. Random labels put every digit in every
    position into short episodes; the number of disks, and so the length of the episode, stays
    as small as ever.
    """
    n = len(tower.pegs)
    largest = min(9, (MAX_DISKS - 1) // max(n - 1, 1))  # 1 + (n - 1) * largest <= 99
    steps = 2 * rng.integers(0, (largest + 1) // 2, size=n - 1) + 1
    return Tower(tower.pegs, tower.target, (1, *(1 + int(v) for v in np.cumsum(steps))))


def third(x: str, y: str) -> str:
    """The peg that is neither x nor y (x != y)."""
    return next(p for p in PEGS if p != x and p != y)


def optimal_length(pegs: str, target: str) -> int:
    """Exact optimal number of moves from this configuration to every disk on ``target``."""
    goal, total = target, 0
    for k in range(len(pegs), 0, -1):
        if pegs[k - 1] != goal:
            total += 1 << (k - 1)
            goal = third(pegs[k - 1], goal)
    return total


def solve(pegs: str, target: str) -> list[tuple[int, str, str]]:
    """One optimal move list, by the iterative algorithm of the module docstring."""
    state = list(pegs)
    n = len(state)
    moves: list[tuple[int, str, str]] = []
    goal = target
    for k in range(n, 1, -1):
        goal = goal if state[k - 1] == goal else third(state[k - 1], goal)
    if optimal_length(pegs, target) == 0:
        return moves
    if state[0] != goal:
        moves.append((1, state[0], goal))
        state[0] = goal
    while True:
        z = state[0]
        d = next((k for k in range(2, n + 1) if state[k - 1] != z), None)
        if d is None:
            return moves
        x = state[d - 1]
        y = third(x, z)
        w = x if d % 2 else y
        moves += [(d, x, y), (1, z, w)]
        state[d - 1], state[0] = y, w


def format_moves(moves: list[tuple[int, str, str]], tower: Tower) -> str:
    """The answer text of ``moves`` (disks by rank), each disk called by its label."""
    return "".join(f"{tower.label(d)} {x} {y}\n" for d, x, y in moves)


def replay(tower: Tower, answer: str) -> str:
    """Why ``answer`` is not an optimal solution of ``tower`` ('' when it is)."""
    pegs, target = tower.pegs, tower.target
    n = len(pegs)
    rank = {tower.label(k): k for k in range(1, n + 1)}
    stacks: dict[str, list[int]] = {p: [] for p in PEGS}
    for k in range(n, 0, -1):
        stacks[pegs[k - 1]].append(k)
    lines = answer.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    for number, line in enumerate(lines, 1):
        parts = line.split(" ")
        if len(parts) != 3 or not parts[0].isascii() or not parts[0].isdigit() or parts[0] != str(int(parts[0])):
            return f"line {number} is not 'disk from to': {line[:40]!r}"
        disk, x, y = rank.get(int(parts[0]), 0), parts[1], parts[2]
        if x not in stacks or y not in stacks or x == y or not disk:
            return f"line {number} is not a move of one of the {n} disks between two pegs A, B, C: {line[:40]!r}"
        if not stacks[x] or stacks[x][-1] != disk:
            return f"line {number}: disk {tower.label(disk)} is not on top of peg {x}"
        if stacks[y] and stacks[y][-1] < disk:
            return f"line {number}: disk {tower.label(disk)} cannot go onto the smaller disk {tower.label(stacks[y][-1])}"
        stacks[y].append(stacks[x].pop())
    if len(stacks[target]) != n:
        return f"not every disk ends on {target}"
    if len(lines) != optimal_length(pegs, target):
        return f"{len(lines)} moves, the optimum is {optimal_length(pegs, target)}"
    return ""


class Hanoi(Task[Tower]):
    name = "hanoi"
    env_id = "ssmagent/Hanoi-v0"
    size_unit = "disks"
    max_action_tokens = 16

    def check_size(self, size: int) -> int:
        super().check_size(size)
        if size > MAX_DISKS:
            raise TaskInputError(f"hanoi supports at most {MAX_DISKS} disks, got {size}")
        return size

    def sample(self, size: int, rng: np.random.Generator) -> Tower:
        """Every disk on a uniformly random peg (all such configurations are legal), a random
        target; a tenth of the instances are the classic tower (all on one peg, target another)."""
        self.check_size(size)
        if rng.random() < 0.1:
            source, target = rng.choice(list(PEGS), size=2, replace=False)
            return Tower(str(source) * size, str(target))
        pegs = "".join(PEGS[i] for i in rng.integers(0, 3, size=size))
        return Tower(pegs, PEGS[int(rng.integers(0, 3))])

    def sample_training(self, max_size: int, rng: np.random.Generator) -> Tower:
        """Half of the training towers carry random labels (``relabel``), half the usual ones."""
        tower = super().sample_training(max_size, rng)
        return relabel(tower, rng) if rng.random() < 0.5 else tower

    def hard_instances(self, size: int) -> list[Tower]:
        """The classic A → C (the longest: 2^n - 1 moves), and everything on B to A."""
        self.check_size(size)
        return [Tower("A" * size, "C"), Tower("B" * size, "A")]

    def standard_instance(self, size: int) -> Tower:
        """The classic: every disk on A, target C."""
        return Tower("A" * self.check_size(size), "C")

    def parse(self, args: list[str]) -> Tower:
        if len(args) != 2:
            raise TaskInputError(
                "hanoi takes CONFIG TARGET: the peg (A, B or C) of each disk, smallest first, "
                f"and the target peg, e.g. 'AAB C'; got {len(args)} argument(s); or use --size N"
            )
        pegs, target = args[0].upper(), args[1].upper()
        if not pegs or any(c not in PEGS for c in pegs):
            raise TaskInputError(f"CONFIG must be letters A, B, C (one per disk, smallest first), got {args[0][:40]!r}")
        if len(target) != 1 or target not in PEGS:
            raise TaskInputError(f"TARGET must be one peg A, B or C, got {args[1][:40]!r}")
        self.check_size(len(pegs))
        return Tower(pegs, target)

    def size_of(self, instance: Tower) -> int:
        return len(instance.pegs)

    def question(self, instance: Tower) -> str:
        n = len(instance.pegs)
        cells = "".join("," + p for p in instance.pegs[1:])
        labels = "".join(f"{instance.label(k):02d}#" for k in range(2, n + 1))
        return f"{instance.target}{instance.pegs[0]}|{cells},.{labels}"

    def answer(self, instance: Tower) -> str:
        return format_moves(solve(instance.pegs, instance.target), instance)

    def score(self, instance: Tower, answer: str) -> bool:
        return replay(instance, answer) == ""

    def make_tools(self) -> list[PointerTape]:
        return [PointerTape(POINTERS)]

    def expert(self) -> HanoiExpert:
        return HanoiExpert()

    def step_budget(self, size: int) -> int:
        return ((1 << max(size - 1, 0)) + 2) * (7 * size + 30) + 4 * size + 50

    def to_json(self, instance: Tower) -> dict[str, Any]:
        labels = {"labels": list(instance.labels)} if instance.labels else {}
        return {"pegs": instance.pegs, "target": instance.target, **labels}

    def max_observation_length(self, size: int) -> int:
        return max(256, 5 * size + 8)

    def phase(self, stream: list[str]) -> str:
        if ANSWER in stream:
            done = stream[stream.index(ANSWER):].count("\n")
            return f"answer, move {done + 1}"
        lines = stream.count("|")
        if not lines:
            return "goal scan (largest disk first)"
        return f"line {lines} (pair of moves {lines})"


class HanoiExpert(Expert):
    """The tape program of the module docstring. Control state: a phase name, the current goal
    (a peg and whether any disk was off its goal), disk 1's peg Z, the forced move's pegs X, Y
    and two label digits: bounded, whatever the number of disks."""

    def __init__(self) -> None:
        self._phase = "start"
        self._goal = ""
        self._z = self._x = self._y = self._units = ""

    def act(self, observation: str) -> str:  # noqa: C901 - one branch per phase
        phase = self._phase
        if phase == "start":
            self._phase = "target"
            return cmd("p?")
        if phase == "target":
            self._goal = observation.lower()
            self._phase = "seek_end"
            return self._goal + cmd("p».")
        if phase == "seek_end":
            self._phase = "scan_goals"
            return cmd("p,")
        if phase == "scan_goals":
            if observation in ".,":
                return self._goal + cmd("p,")
            if observation == "|":
                self._phase = "first"
                return cmd("p,")
            goal = self._goal.upper()
            if observation != goal:
                self._goal = third(observation, goal)
            return self._goal + cmd("p,")
        if phase == "first":
            p1, goal = observation, self._goal.upper()
            if p1 == goal and self._goal.islower():
                self._phase = "done"
                return ANSWER + END
            self._phase = "lookup"
            record = f"%{goal}{p1}1!" if p1 != goal else f"%{p1}"
            return "!" + record + "|" + cmd("q«.")
        if phase == "lookup":
            self._phase = "lookup_step"
            return cmd("r»%")
        if phase == "lookup_step":
            self._phase = "lookup_peek"
            return cmd("r>")
        if phase == "lookup_peek":
            self._phase = "lookup_read"
            return cmd("r?")
        if phase == "lookup_read":
            self._phase = "scan_next"
            self._z = observation
            return observation + cmd("q»#")
        if phase in ("scan_seek", "copy_seek"):
            self._phase = phase.replace("seek", "step")
            return cmd("p>")
        if phase in ("scan_step", "copy_step"):
            self._phase = phase.replace("step", "read")
            return cmd("p?")
        if phase == "scan_read":
            peg = observation.upper()
            if peg == ".":
                self._phase = "answer_seek"
                return "=!" + ANSWER + cmd("a»!")
            if peg == self._z:
                self._phase = "scan_next"
                return "," + self._z + cmd("q»#")
            self._x, self._y = peg, third(peg, self._z)
            self._phase = "label_units"
            return "," + self._y + self._z + cmd("q<")
        if phase == "scan_next":
            self._phase = "scan_seek"
            return cmd("p»,")
        if phase == "label_units":
            self._phase = "label_read_units"
            return cmd("q,")
        if phase == "label_read_units":
            self._units = observation
            self._phase = "label_read_tens"
            return cmd("q,")
        if phase == "label_read_tens":
            units, tens = self._units, observation
            w = self._x if int(units) % 2 else self._y
            label = units + (tens if tens != "0" else "")
            self._phase = "copy_seek"
            return f"%{w}{self._z}*{self._y}{self._x}{label}!" + cmd("p»,")
        if phase == "copy_read":
            if observation == ".":
                self._phase = "lookup"
                return ",.|" + cmd("q«.")
            self._phase = "copy_seek"
            return "," + observation.lower() + cmd("p»,")
        # answer phase: a walks the records, each read right to left
        if phase == "answer_seek":
            self._phase = "answer_seek_again"
            return cmd("a»!")
        if phase == "answer_seek_again":
            self._phase = "answer_step"
            return cmd("a<")
        if phase == "answer_step":
            self._phase = "answer_read"
            return cmd("a,")
        if phase == "answer_read":
            if observation == "=":
                self._phase = "done"
                return END
            if observation.isdigit():
                return observation + cmd("a,")
            if observation in PEGS:
                return " " + observation + cmd("a,")
            if observation == "*":  # the forced move is written; disk 1's move follows
                return "\n1" + cmd("a,")
            self._phase = "answer_seek"  # "%": the record is read; seek past its own "!"
            return "\n" + cmd("a»!")
        raise RuntimeError(f"the episode is over (phase {phase})")

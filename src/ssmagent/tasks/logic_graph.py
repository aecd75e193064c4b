"""A logical graph: the value of one variable of a DAG of Boolean gates, found with a search tool.

The question (on the search tool only; the model's context starts empty) is one definition per
line, in random order, then the query line ``?name``. Names are 3 lowercase letters; a
definition is an input ``abc=1``, ``abc=!def`` (NOT), ``abc=def&ghi`` (AND), ``abc=def|ghi``
(OR) or ``abc=def^ghi`` (XOR). The answer is ``0`` or ``1``. Size = number of definitions.

The policy has one command, ``⟨find⟩`` (``ssmagent.tools.search``): it returns the most recent
line starting with the text the policy wrote since its last newline, or ``-``. The policy
writes two kinds of lines, which are searchable like the question's:

``abc:1``    a value: ``abc`` is resolved (so it is never evaluated twice)
``def<abc``  a stack frame: ``def`` is being evaluated because ``abc`` needs it

Depth-first resolution keeps its stack in memory as these parent links, found again by search,
so the expert's own state is bounded: a phase, the definition line it is looking at, which of
its operands it checks, and the operand values seen since (what a k-token window holds). Per
visit of node ``n``::

    n=⟨find⟩[n=a&b]                    look up n's definition
    a:⟨find⟩[a:1]  b:⟨find⟩[-]          look up the operands' values, in order, until one is missing:
    b<n⟨nl⟩b=⟨find⟩[b=…]                   push a frame for it and visit it
    n:1⟨nl⟩n<⟨find⟩[n<p]  p=⟨find⟩[…]      all known: write n's value, pop the frame, revisit the parent
    n:1⟨nl⟩n<⟨find⟩[-]  ⟨answer⟩1⟨end⟩    no frame: n is the queried node; its value is the answer

Worked example (``⟨nl⟩`` is a newline; observations in brackets)::

    question:  kqv=abc^def          policy:  ?⟨find⟩[?kqv]
               def=!abc                      kqv=⟨find⟩[kqv=abc^def]
               abc=1                         abc:⟨find⟩[-]        abc<kqv⟨nl⟩abc=⟨find⟩[abc=1]
               ?kqv                          abc:1⟨nl⟩abc<⟨find⟩[abc<kqv]
                                             kqv=⟨find⟩[kqv=abc^def]  abc:⟨find⟩[abc:1]
                                             def:⟨find⟩[-]        def<kqv⟨nl⟩def=⟨find⟩[def=!abc]
                                             abc:⟨find⟩[abc:1]    def:0⟨nl⟩def<⟨find⟩[def<kqv]
                                             kqv=⟨find⟩[kqv=abc^def]  abc:⟨find⟩[abc:1]
                                             def:⟨find⟩[def:0]    kqv:1⟨nl⟩kqv<⟨find⟩[-]
                                             ⟨answer⟩1⟨end⟩

Each node is visited once, plus once more per operand it had to push; each visit costs one
definition look-up and at most one look-up per operand. Every generated token is either fixed
by the structure of the last ~30 tokens (which look-up comes next, the values 0/1, ``-``) or a
copy of a name letter that sits in that window (the most distant: a gate's own name, copied
from its definition line when its value is written, after both operand look-ups). A plain
lookup table from windows to next tokens cannot extrapolate over names it never saw, so the
locality test treats name letters as copies (see tests/test_logic_graph.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ssmagent.tasks.base import ANSWER, END, Expert, Task, TaskInputError
from ssmagent.tools.base import command_symbol
from ssmagent.tools.search import FIND, NOT_FOUND, SearchMemory

FIND_CMD = command_symbol(FIND)
NAME_LENGTH = 3
LETTERS = "abcdefghijklmnopqrstuvwxyz"
MAX_NODES = len(LETTERS) ** NAME_LENGTH
GATES = "&|^"
NOT = "!"
QUERY = "?"
NEWLINE = "\n"
OPS = {"&": lambda a, b: a & b, "|": lambda a, b: a | b, "^": lambda a, b: a ^ b}


@dataclass(frozen=True)
class Graph:
    """A logic-graph instance: definition lines in question order, and the queried name."""

    lines: tuple[str, ...]
    query: str


def parse_definition(line: str) -> tuple[str, str, tuple[str, ...]]:
    """(name, kind, operands) of a definition line; kind is ``0``/``1`` (input), ``!``, or a gate."""
    name, rhs = line.split("=", 1)
    if rhs in ("0", "1"):
        return name, rhs, ()
    if rhs.startswith(NOT):
        return name, NOT, (rhs[1:],)
    for op in GATES:
        if op in rhs:
            a, b = rhs.split(op)
            return name, op, (a, b)
    raise ValueError(f"not a definition: {line!r}")


def apply(kind: str, values: list[int]) -> int:
    if kind == NOT:
        return 1 - values[0]
    return OPS[kind](values[0], values[1])


def evaluate(graph: Graph) -> int:
    """The value of the queried node (iterative: no recursion limit at any depth)."""
    defs = {name: (kind, ops) for name, kind, ops in map(parse_definition, graph.lines)}
    values: dict[str, int] = {}
    stack = [graph.query]
    while stack:
        name = stack[-1]
        kind, ops = defs[name]
        missing = [op for op in ops if op not in values]
        if missing:
            stack.extend(missing)
            continue
        stack.pop()
        values[name] = int(kind) if not ops else apply(kind, [values[op] for op in ops])
    return values[graph.query]


def depth(graph: Graph) -> int:
    """The queried node's dependency depth (inputs have depth 0)."""
    defs = {name: ops for name, _, ops in map(parse_definition, graph.lines)}
    found: dict[str, int] = {}
    stack = [graph.query]
    while stack:
        name = stack[-1]
        missing = [op for op in defs[name] if op not in found]
        if missing:
            stack.extend(missing)
            continue
        stack.pop()
        found[name] = 1 + max((found[op] for op in defs[name]), default=-1)
    return found[graph.query]


def _names(size: int, rng: np.random.Generator) -> list[str]:
    picks = rng.choice(MAX_NODES, size=size, replace=False)
    out = []
    for p in picks:
        letters = []
        for _ in range(NAME_LENGTH):
            p, r = divmod(int(p), len(LETTERS))
            letters.append(LETTERS[r])
        out.append("".join(letters))
    return out


def _build(nodes: list[tuple[str, tuple[int, ...]]], query: int, rng: np.random.Generator) -> Graph:
    """Name nodes (topological order, operands by index) at random and shuffle the lines."""
    names = _names(len(nodes), rng)
    lines = []
    for i, (kind, ops) in enumerate(nodes):
        if not ops:
            rhs = kind
        elif kind == NOT:
            rhs = NOT + names[ops[0]]
        else:
            rhs = names[ops[0]] + kind + names[ops[1]]
        lines.append(f"{names[i]}={rhs}")
    order = rng.permutation(len(lines))
    return Graph(tuple(lines[i] for i in order), names[query])


class LogicGraph(Task[Graph]):
    name = "logic_graph"
    env_id = "ssmagent/LogicGraph-v0"
    size_unit = "nodes"
    max_action_tokens = 16

    def check_size(self, size: int) -> int:
        super().check_size(size)
        if size > MAX_NODES:
            raise TaskInputError(f"size must be at most {MAX_NODES} nodes (names have {NAME_LENGTH} letters), got {size}")
        return size

    def sample(self, size: int, rng: np.random.Generator) -> Graph:
        """A DAG of exactly ``size`` nodes, the queried one as deep as the draw allows.

        Nodes are drawn in topological order: the first is an input; each later one is an
        input a fifth of the time, else NOT (a fifth of the gates) or AND/OR/XOR, whose first
        operand is the deepest node so far 75 % of the time (so the depth grows with the size,
        about 0.6 × size) and otherwise, like the second, any earlier node. Operand order is
        random, so the deep operand is looked up first or second. The query is the deepest
        node; the rest are distractors or shared sub-results (fan-out).
        """
        self.check_size(size)
        nodes: list[tuple[str, tuple[int, ...]]] = []
        depths: list[int] = []
        deepest = 0
        for i in range(size):
            if i == 0 or rng.random() < 0.2:
                nodes.append((str(int(rng.integers(0, 2))), ()))
                depths.append(0)
                continue
            first = deepest if rng.random() < 0.75 else int(rng.integers(0, i))
            if i == 1 or rng.random() < 0.2:
                ops: tuple[int, ...] = (first,)
                kind = NOT
            else:
                second = int(rng.integers(0, i - 1))
                second += second >= first
                ops = (first, second) if rng.random() < 0.5 else (second, first)
                kind = GATES[int(rng.integers(0, len(GATES)))]
            nodes.append((kind, ops))
            depths.append(1 + max(depths[j] for j in ops))
            if depths[i] >= depths[deepest]:
                deepest = i
        query = max(range(size), key=lambda j: (depths[j], j))
        return _build(nodes, query, rng)

    def hard_instances(self, size: int) -> list[Graph]:
        """Three chains of depth about ``size``: a NOT chain; a Fibonacci-like DAG whose deep
        operand comes second (the stack grows to the full depth, each frame pushed after the
        first operand resolved); and a chain whose deep operand comes first, the other an input."""
        self.check_size(size)
        rng = np.random.default_rng(size)
        not_chain = [("1", ())] + [(NOT, (i - 1,)) for i in range(1, size)]
        fib: list[tuple[str, tuple[int, ...]]] = [("1", ()), ("0", ())][:size]
        fib += [(GATES[i % 3], (i - 2, i - 1)) for i in range(2, size)]
        first_deep: list[tuple[str, tuple[int, ...]]] = [("1", ()), ("0", ())][:size]
        first_deep += [(GATES[(i + 1) % 3], (i - 1, 0)) for i in range(2, size)]
        return [_build(nodes, size - 1, rng) for nodes in (not_chain, fib, first_deep)]

    def parse(self, args: list[str]) -> Graph:
        raise TaskInputError("logic_graph takes no explicit instance; draw one with --size N (and --seed S)")

    def size_of(self, instance: Graph) -> int:
        return len(instance.lines)

    def question(self, instance: Graph) -> str:
        return "\n".join([*instance.lines, QUERY + instance.query])

    def answer(self, instance: Graph) -> str:
        return str(evaluate(instance))

    def make_tools(self) -> list[SearchMemory]:
        return [SearchMemory()]

    def expert(self) -> LogicGraphExpert:
        return LogicGraphExpert()

    def step_budget(self, size: int) -> int:
        # per node: ≤ 3 visits (one, plus one per pushed operand) × ≤ 3 look-ups, plus its pop
        return 10 * size + 16

    def to_json(self, instance: Graph) -> dict[str, Any]:
        return {"lines": list(instance.lines), "query": instance.query}

    def max_observation_length(self, size: int) -> int:
        # the question: size lines of at most 3+1+3+1+3 characters and a newline, then ?name
        return max(256, 12 * size + NAME_LENGTH + 1)

    def phase(self, stream: list[str]) -> str:
        if ANSWER in stream:
            return "answer"
        finds = stream.count(FIND_CMD)
        if not finds:
            return "find the query"
        return f"resolving: look-up {finds + 1}, {stream.count(NEWLINE)} lines written"


class LogicGraphExpert(Expert):
    """Depth-first resolution whose stack lives in memory (``child<parent`` lines).

    Control state: the phase, the definition line being checked, the index of the operand
    being looked up and the operand values found so far for it — all within the last few
    observations, so a window of recent tokens holds it.
    """

    def __init__(self) -> None:
        self._phase = "start"
        self._node = ""
        self._kind = ""
        self._ops: tuple[str, ...] = ()
        self._values: list[int] = []
        self._result = 0

    def act(self, observation: str) -> str:
        phase = self._phase
        if phase == "start":
            self._phase = "query"
            return QUERY + FIND_CMD
        if phase == "query":  # observation: ?name
            return self._visit(observation[len(QUERY):])
        if phase == "definition":  # observation: name=rhs
            self._node, self._kind, self._ops = parse_definition(observation)
            self._values = []
            if not self._ops:
                return self._resolve(int(self._kind))
            return self._look_up()
        if phase == "value":  # observation: op:v or NOT_FOUND
            op = self._ops[len(self._values)]
            if observation == NOT_FOUND:
                return f"{op}<{self._node}\n" + self._visit(op)
            self._values.append(int(observation[len(op) + 1:]))
            if len(self._values) < len(self._ops):
                return self._look_up()
            return self._resolve(apply(self._kind, self._values))
        # phase "pop": observation: child<parent, or NOT_FOUND at the queried node
        if observation == NOT_FOUND:
            self._phase = "done"
            return f"{ANSWER}{self._result}{END}"
        return self._visit(observation.split("<", 1)[1])

    def _visit(self, name: str) -> str:
        self._phase = "definition"
        return f"{name}={FIND_CMD}"

    def _look_up(self) -> str:
        self._phase = "value"
        return f"{self._ops[len(self._values)]}:{FIND_CMD}"

    def _resolve(self, value: int) -> str:
        self._phase, self._result = "pop", value
        return f"{self._node}:{value}\n{self._node}<{FIND_CMD}"

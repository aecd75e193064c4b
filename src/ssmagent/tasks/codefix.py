"""Code fixing: a generated Python codebase of n chained functions with one bug, fixed through tools.

The codebase (the reference paper's debugging task, Malach et al. 2025): ``main.py`` and one
file per function ``f0.py`` … ``f{n-1}.py``. ``main`` defines ``y`` and two more variables
(an int and a string), and calls ``f0``; each ``fi`` computes a new ``y`` from its ``x`` and
calls ``f(i+1)`` with it; the last returns it; ``main.py`` prints the result. A variable is
used by exactly one function (its *user*) and is passed down, as an argument, through every
function from ``f0`` to its user. Size = n, the number of functions.

One bug per instance, from three families; each shows up as an exception when ``main.py``
runs, and each fix needs more than the file the exception points at:

``unpassed``  (the paper's) a variable ``main`` defines is not passed down at all: its user
              raises NameError, and the fix threads it through every function between
              ``main`` and the user — a new parameter in each definition, a new argument at
              each call (2 edits per function, so the work grows with the size).
``renamed``   function ``fi`` was renamed in its file but not where it is imported: the caller
              raises ImportError; the fix reads ``fi.py`` and gives the function back the name
              its caller imports.
``swapped``   a call passes ``y`` and the string variable in swapped order: the callee raises
              TypeError (a string where it computes with ``x``); the fix reads the callee's
              definition and writes the call's arguments in the definition's order.

The question is the codebase itself, packed as text (``tools.workspace.pack``): it lives on the
tools, which write it into a fresh host directory when the episode starts. The answer is what
the fixed ``main.py`` prints. Success is decided by a hidden test that the policy never sees:
the answer must be the program's true output *and* ``python main.py``, run in the sandbox on
the episode's workspace as the policy left it, must print exactly that (``score_episode``).

Tools (commands are one token; a command's arguments are the text written before it; ``⏎`` is
a newline)::

    python main.py⟨run⟩                 run in the sandbox: exit code, the output's last lines
    def f37(⟨grep⟩                      the lines holding the text: ``f37.py:5: def f37(x, k):``
    f37.py⏎def ⟨grep⟩                   the same within one file
    f37.py:5⏎def f37(x, k, word):⟨edit⟩  replace line 5 (a syntax check guards every edit)
    f37.py:5⟨view⟩  12⟨view⟩  ⟨up⟩  ⟨down⟩  a window of numbered lines

The expert (``CodeFixExpert``) runs the program and acts on the exception, through the tools
only. Per family (observations in brackets)::

    unpassed: python main.py⟨run⟩ [… in f37 / NameError: name 'k' is not defined]
              def f37(⟨grep⟩ [f37.py:5: def f37(x, word):]
              f37.py:5⏎def f37(x, word, k):⟨edit⟩ [f37.py:5: def f37(x, word, k):]
              return f37(⟨grep⟩ [f36.py:7:     return f37(y, word)]
              f36.py:7⏎    return f37(y, word, k)⟨edit⟩ [f36.py:7:     return f37(y, word, k)]
              def f36(⟨grep⟩ … the same for f36, f35, … until the call edited is in main.py,
              then python main.py⟨run⟩ [exit code 0 / stdout: / 742]  ⟨answer⟩742⟨end⟩
    renamed:  ⟨run⟩ [ImportError: cannot import name 'f37' from 'f37' (f37.py)]
              f37.py⏎def ⟨grep⟩ [f37.py:4: def mix37(x, k):]
              f37.py:4⏎def f37(x, k):⟨edit⟩ → run → answer
    swapped:  ⟨run⟩ [File "f36.py" … return f37(word, y, k) / File "f37.py" … / TypeError: …]
              def f37(⟨grep⟩ [f37.py:5: def f37(x, word, k):]  return f37(⟨grep⟩
              [f36.py:7:     return f37(word, y, k)]  f36.py:7⏎    return f37(y, word, k)⟨edit⟩
              (the definition's parameters, x written as y) → run → answer

Every name, line number and parameter list it writes is copied from the last observation or
two: grep hits and edit echoes show a whole line with its location (``FILE:N: text``), and the
variable being threaded stands in the previous edit's echo. So each next token is fixed
by a short window of recent tokens — 52 words and symbols, at most ~125 characters, checked by
``tests/test_codefix.py`` — and the work per function threaded is the same at any size. The
expert does not use the viewer: a window of lines is ~200 characters, and a fix that copies
from it *and* from before it (the file name in the exception) needs a window twice as long;
one grep hit carries both.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from ssmagent.sandbox import Sandbox
from ssmagent.tasks.base import ANSWER, END, Expert, Task, TaskInputError
from ssmagent.tools.base import Tool, command_symbol
from ssmagent.tools.edit import EDIT, Edit
from ssmagent.tools.grep import GREP, Grep
from ssmagent.tools.run import RUN, RunTool
from ssmagent.tools.viewer import FileViewer
from ssmagent.tools.workspace import Workspace, pack

RUN_CMD, GREP_CMD, EDIT_CMD = map(command_symbol, (RUN, GREP, EDIT))
RUN_MAIN = "python main.py"
MAX_FUNCTIONS = 1000
"""main.py raises the recursion limit to 10,000 so that the import chain (a few interpreter
frames per module) and the call chain fit; past ~3,000 modules CPython's C stack overflows."""
MODULUS = 1000
INT_NAMES = ("k", "m", "base", "step", "scale", "shift", "bias", "offset", "limit", "seed")
STR_NAMES = ("word", "name", "tag", "key", "label", "code", "text", "unit")
NEW_NAMES = ("mix", "fold", "calc", "turn", "hop", "stage", "apply", "blend")
LETTERS = "abcdefghijklmnopqrstuvwxyz"
BUGS = ("unpassed", "renamed", "swapped")
TAILS: tuple[tuple[str, Callable[[int, int], int]], ...] = (
    ("", lambda y, c: y),
    ("y = y // 2 + {c}", lambda y, c: y // 2 + c),
    ("y = (y * {c}) % 1000", lambda y, c: (y * c) % MODULUS),
    ("y = abs(y - {c})", lambda y, c: abs(y - c)),
)
"""Optional second statement of a function body (its text, and what it computes; the first
is none), so that files differ in length and line numbers must be read, not assumed."""


@dataclass(frozen=True)
class Variable:
    """A variable ``main`` defines and passes down to its user ``f{user}``."""

    name: str
    value: int | str
    user: int

    def term(self) -> str:
        """How its user folds it into ``y``: the int itself, or the string's length."""
        return self.name if isinstance(self.value, int) else f"len({self.name})"

    def amount(self) -> int:
        return self.value if isinstance(self.value, int) else len(self.value)

    def literal(self) -> str:
        return str(self.value) if isinstance(self.value, int) else f'"{self.value}"'


@dataclass(frozen=True)
class Stage:
    """The body of one function: ``y = (x * scale + T) % 1000``, then an optional tail."""

    scale: int
    constant: int
    """T when no variable has this function as its user."""
    tail: int
    """Index into ``TAILS``."""
    c: int
    docstring: bool
    """Whether the file starts with a docstring line (shifts every line number by two)."""


@dataclass(frozen=True)
class Program:
    """The correct program: the start value of ``y``, the variables, one stage per function."""

    start: int
    variables: tuple[Variable, ...]
    stages: tuple[Stage, ...]


@dataclass(frozen=True)
class Bug:
    """``unpassed``: ``variables[where]`` is never passed; ``renamed``: ``f{where}`` is defined
    as ``new_name``; ``swapped``: the call of ``f{where}`` swaps ``y`` and the string variable;
    ``none``: no bug (the reference the tests check fixes against)."""

    kind: str
    where: int
    new_name: str = ""


@dataclass(frozen=True)
class Codebase:
    """An instance: a program and the bug its files carry."""

    program: Program
    bug: Bug


def run_program(program: Program) -> int:
    """What the correct ``main.py`` prints (as an int), computed without running it."""
    y = program.start
    for i, stage in enumerate(program.stages):
        users = [v for v in program.variables if v.user == i]
        term = sum(v.amount() for v in users) if users else stage.constant
        y = TAILS[stage.tail][1]((y * stage.scale + term) % MODULUS, stage.c)
    return y


def parameters(codebase: Codebase, i: int) -> list[str]:
    """Names of ``f{i}``'s parameters in the files as generated (the bug included)."""
    bug = codebase.bug
    passed = [
        v.name
        for j, v in enumerate(codebase.program.variables)
        if v.user >= i and not (bug.kind == "unpassed" and bug.where == j)
    ]
    return ["x", *passed]


def _call(codebase: Codebase, i: int) -> str:
    """The call of ``f{i}`` as its caller writes it."""
    args = ["y", *parameters(codebase, i)[1:]]
    bug = codebase.bug
    if bug.kind == "swapped" and bug.where == i:
        text = _string_variable(codebase.program).name
        k = args.index(text)
        args[0], args[k] = args[k], args[0]
    return f"f{i}({', '.join(args)})"


def _string_variable(program: Program) -> Variable:
    return next(v for v in program.variables if isinstance(v.value, str))


def render(codebase: Codebase) -> dict[str, str]:
    """The files of the codebase (with its bug), ``main.py`` first."""
    program = codebase.program
    n = len(program.stages)
    main = [
        "import sys",
        "",
        "sys.setrecursionlimit(10000)",
        "",
        "from f0 import f0",
        "",
        "",
        "def main():",
        f"    y = {program.start}",
        *(f"    {v.name} = {v.literal()}" for v in program.variables),
        f"    return {_call(codebase, 0)}",
        "",
        "",
        'if __name__ == "__main__":',
        "    print(main())",
    ]
    files = {"main.py": "\n".join(main) + "\n"}
    for i, stage in enumerate(program.stages):
        files[f"f{i}.py"] = _render_function(codebase, i, stage, last=i == n - 1)
    return files


def _render_function(codebase: Codebase, i: int, stage: Stage, last: bool) -> str:
    program, bug = codebase.program, codebase.bug
    name = bug.new_name if bug.kind == "renamed" and bug.where == i else f"f{i}"
    users = [v for v in program.variables if v.user == i]
    term = " + ".join(v.term() for v in users) if users else str(stage.constant)
    lines = [f'"""Stage {i} of the pipeline."""', ""] if stage.docstring else []
    if not last:
        lines += [f"from f{i + 1} import f{i + 1}", "", ""]
    lines += [f"def {name}({', '.join(parameters(codebase, i))}):", f"    y = (x * {stage.scale} + {term}) % {MODULUS}"]
    if stage.tail:
        lines.append("    " + TAILS[stage.tail][0].format(c=stage.c))
    lines.append("    return y" if last else f"    return {_call(codebase, i + 1)}")
    return "\n".join(lines) + "\n"


def fixed(codebase: Codebase) -> Codebase:
    """The same program without its bug (for tests: it must pass the hidden test)."""
    return Codebase(codebase.program, Bug("none", -1))


def _word(rng: np.random.Generator) -> str:
    return "".join(LETTERS[int(i)] for i in rng.integers(0, len(LETTERS), size=3))


def sample_codebase(size: int, rng: np.random.Generator, kind: str | None = None) -> Codebase:
    """A random program of ``size`` functions with one bug of ``kind`` (random when None).

    The unpassed variable's user is in the deeper half of the chain, so threading it takes
    work proportional to the size. The swapped call is anywhere above the string variable's
    user (given two functions or more), so the callee computes ``x * a + …`` with the string in
    ``x`` and every swap fails alike: ``can only concatenate str (not "int") to str``.
    """
    kind = kind or BUGS[int(rng.integers(0, len(BUGS)))]
    names = [INT_NAMES[int(rng.integers(0, len(INT_NAMES)))], STR_NAMES[int(rng.integers(0, len(STR_NAMES)))]]
    values: list[int | str] = [int(rng.integers(1, 10)), _word(rng)]
    users = [int(rng.integers(0, size)) for _ in names]
    order = [0, 1] if rng.random() < 0.5 else [1, 0]
    unpassed = int(rng.integers(0, 2))
    if kind == "unpassed":
        users[unpassed] = int(rng.integers(size // 2, size))
    if kind == "swapped" and size > 1:
        users[1] = int(rng.integers(1, size))
    variables = tuple(Variable(names[j], values[j], users[j]) for j in order)
    stages = tuple(
        Stage(
            scale=int(rng.integers(2, 10)),
            constant=int(rng.integers(1, 10)),
            tail=int(rng.integers(0, len(TAILS))),
            c=int(rng.integers(2, 10)),
            docstring=bool(rng.random() < 0.3),
        )
        for _ in range(size)
    )
    program = Program(int(rng.integers(1, 100)), variables, stages)
    if kind == "unpassed":
        bug = Bug(kind, order.index(unpassed))
    elif kind == "renamed":
        where = int(rng.integers(0, size))
        bug = Bug(kind, where, f"{NEW_NAMES[int(rng.integers(0, len(NEW_NAMES)))]}{where}")
    else:
        bug = Bug(kind, int(rng.integers(0, max(_string_variable(program).user, 1))))
    return Codebase(program, bug)


def expected_output(codebase: Codebase) -> str:
    """What the fixed ``main.py`` prints (without its newline): the answer."""
    return str(run_program(codebase.program))


def hidden_test(workspace: Workspace, expected: str, tool: RunTool) -> bool:
    """Run ``python main.py`` in the sandbox on the workspace as the policy left it; pass when
    it exits 0 and prints exactly the expected output. Nothing of it is ever in the workspace."""
    result = tool.sandbox().run(workspace.root, ["python", "main.py"], limits=tool.limits)
    return result.exit_code == 0 and not result.timed_out and result.stdout == expected + "\n"


class CodeFix(Task[Codebase]):
    name = "codefix"
    env_id = "ssmagent/CodeFix-v0"
    size_unit = "functions"
    max_action_tokens = 160

    def __init__(self, sandbox: Sandbox | str = "auto") -> None:
        """``sandbox``: where programs run — a sandbox, or a backend name (``auto``: the
        sandbox package's choice, Docker where an engine answers)."""
        self.sandbox = sandbox

    def check_size(self, size: int) -> int:
        super().check_size(size)
        if size > MAX_FUNCTIONS:
            raise TaskInputError(f"size must be at most {MAX_FUNCTIONS} functions, got {size}")
        return size

    def sample(self, size: int, rng: np.random.Generator) -> Codebase:
        """A random codebase of ``size`` functions; the bug family is drawn uniformly."""
        self.check_size(size)
        return sample_codebase(size, rng)

    def variant(self, instance: Codebase) -> str:
        return instance.bug.kind

    def hard_instances(self, size: int) -> list[Codebase]:
        """The longest fix of each kind, with every variable used by the last function (so
        passed through all of them: the longest lines): an unpassed int and an unpassed
        string, threaded through all ``size`` functions; the last function renamed; the
        deepest call above the string's user swapped."""
        self.check_size(size)
        rng = np.random.default_rng(size)
        hard = []
        for kind, variable_is_text in (("unpassed", False), ("unpassed", True), ("renamed", False), ("swapped", True)):
            program = sample_codebase(size, rng, kind).program
            program = Program(program.start, tuple(replace(v, user=size - 1) for v in program.variables), program.stages)
            chosen = next(j for j, v in enumerate(program.variables) if isinstance(v.value, str) == variable_is_text)
            if kind == "unpassed":
                bug = Bug(kind, chosen)
            elif kind == "renamed":
                bug = Bug(kind, size - 1, f"{NEW_NAMES[size % len(NEW_NAMES)]}{size - 1}")
            else:
                bug = Bug(kind, max(size - 2, 0))
            hard.append(Codebase(program, bug))
        return hard

    def parse(self, args: list[str]) -> Codebase:
        raise TaskInputError("codefix takes no explicit instance; draw one with --size N (and --seed S)")

    def size_of(self, instance: Codebase) -> int:
        return len(instance.program.stages)

    def question(self, instance: Codebase) -> str:
        return pack(render(instance))

    def answer(self, instance: Codebase) -> str:
        return expected_output(instance)

    def score_episode(self, instance: Codebase, answer: str, tools: Sequence[Tool]) -> bool:
        """The answer must be the program's output, and the hidden test must pass on the
        workspace the episode leaves (a right answer over a still-broken codebase fails)."""
        if answer != self.answer(instance):
            return False
        workspace = next(t for t in tools if isinstance(t, Workspace))
        runner = next(t for t in tools if isinstance(t, RunTool))
        return hidden_test(workspace, answer, runner)

    def make_tools(self) -> list[Tool]:
        workspace = Workspace()
        return [workspace, FileViewer(workspace), Grep(workspace), Edit(workspace), RunTool(workspace, self.sandbox)]

    def expert(self) -> CodeFixExpert:
        return CodeFixExpert()

    def step_budget(self, size: int) -> int:
        # the longest fix threads a variable through every function: 4 steps each, 2 runs, the answer
        return 5 * size + 20

    def to_json(self, instance: Codebase) -> dict[str, Any]:
        return asdict(instance)

    def max_observation_length(self, size: int) -> int:
        # the question: main.py's ~16 lines, then per function a header and at most 9 lines
        # of at most ~60 characters; tool observations stay under a few thousand
        return max(4096, 600 * (size + 1))

    def phase(self, stream: list[str]) -> str:
        if ANSWER in stream:
            return "answer"
        runs = stream.count(RUN_CMD)
        if not runs:
            return "first run"
        return f"fixing after run {runs}: {stream.count(EDIT_CMD)} edits, {stream.count(GREP_CMD)} searches"


_FRAME = re.compile(r'  File "([^"]+)", line (\d+), in (\S+)')
_HIT = re.compile(r"([^:\n]+):(\d+): (.*)")
_NAME_ERROR = re.compile(r"NameError: name '(\w+)' is not defined")
_IMPORT_ERROR = re.compile(r"ImportError: cannot import name '(\w+)' from")


def _hit(observation: str) -> tuple[str, str, str]:
    """(file, line, text) of the first ``FILE:N: text`` line of a grep observation."""
    match = _HIT.match(observation)
    if not match:
        raise RuntimeError(f"the expert expected a grep hit, got {observation[:80]!r}")
    return match.group(1), match.group(2), match.group(3)


class CodeFixExpert(Expert):
    """Run, read the exception, fix through grep and edit, run again, answer the output.

    Control state: the phase; the function whose definition or call is being fixed; the
    variable being threaded (``unpassed``) or the callee's parameter list (``swapped``) — a
    few short strings, each copied from the last observation or two.
    """

    def __init__(self) -> None:
        self._phase = "start"
        self._function = ""
        self._variable = ""
        self._parameters = ""

    def act(self, observation: str) -> str:
        moves = {
            "start": self._run,
            "edited": self._run,
            "ran": self._diagnose,
            "thread definition": self._thread_definition,
            "thread definition edited": lambda _: self._find_call("thread call"),
            "thread call": self._thread_call,
            "thread call edited": self._after_thread_call,
            "swap definition": self._swap_definition,
            "swap call": self._swap_call,
            "renamed definition": self._rename_back,
        }
        if self._phase not in moves:
            raise RuntimeError(f"the expert has no move in phase {self._phase!r}")
        return moves[self._phase](observation)

    def _run(self, observation: str = "") -> str:
        self._phase = "ran"
        return RUN_MAIN + RUN_CMD

    def _thread_definition(self, observation: str) -> str:
        """[f37.py:5: def f37(x, word):] → append the variable to the parameters."""
        file, line, text = _hit(observation)
        self._phase = "thread definition edited"
        return f"{file}:{line}\n{text.removesuffix('):')}, {self._variable}):{EDIT_CMD}"

    def _thread_call(self, observation: str) -> str:
        """[f36.py:6:     return f37(y, word)] → append the variable to the arguments."""
        file, line, text = _hit(observation)
        self._function = file.removesuffix(".py")
        self._phase = "thread call edited"
        return f"{file}:{line}\n{text.removesuffix(')')}, {self._variable}){EDIT_CMD}"

    def _after_thread_call(self, observation: str) -> str:
        """main defines the variable: done threading; any other caller needs it passed too."""
        return self._run() if self._function == "main" else self._find_definition("thread definition")

    def _swap_definition(self, observation: str) -> str:
        """[f37.py:5: def f37(x, word, k):] → keep the parameters, find the call."""
        text = _hit(observation)[2]
        self._parameters = text[text.index("(") + 1 : text.rindex(")")]
        return self._find_call("swap call")

    def _swap_call(self, observation: str) -> str:
        """[f36.py:6:     return f37(word, y, k)] → the definition's parameters, x as y."""
        file, line, text = _hit(observation)
        head = text[: text.index(f"{self._function}(") + len(self._function) + 1]
        arguments = ", ".join("y" if p == "x" else p for p in self._parameters.split(", "))
        self._phase = "edited"
        return f"{file}:{line}\n{head}{arguments}){EDIT_CMD}"

    def _rename_back(self, observation: str) -> str:
        """[f37.py:4: def mix37(x, k):] → the name the module must define: its file's."""
        file, line, text = _hit(observation)
        self._phase = "edited"
        return f"{file}:{line}\ndef {file.removesuffix('.py')}{text[text.index('('):]}{EDIT_CMD}"

    def _diagnose(self, observation: str) -> str:
        """Act on a run's observation: answer its output, or start the fix its exception asks for."""
        lines = observation.split("\n")
        if lines[0] == "exit code 0":
            self._phase = "done"
            return f"{ANSWER}{lines[-1]}{END}"
        frames = _FRAME.findall(observation)
        name_error, import_error = _NAME_ERROR.search(observation), _IMPORT_ERROR.search(observation)
        if name_error:
            self._variable, self._function = name_error.group(1), frames[-1][2]
            return self._find_definition("thread definition")
        if import_error:
            self._phase = "renamed definition"
            return f"{import_error.group(1)}.py\ndef {GREP_CMD}"
        if lines[-1].startswith("TypeError:"):
            self._function = frames[-1][2]
            return self._find_definition("swap definition")
        raise RuntimeError(f"the expert cannot read this run: {observation[-200:]!r}")

    def _find_definition(self, phase: str) -> str:
        self._phase = phase
        return f"def {self._function}({GREP_CMD}"

    def _find_call(self, phase: str) -> str:
        self._phase = phase
        return f"return {self._function}({GREP_CMD}"

"""The workspace of a code episode, and the one place where a path the policy wrote becomes a file.

A code task's question *is* its codebase, packed as text (``pack``/``unpack``: a header line
``=== NAME (N lines) ===`` before each file's lines, so any content round-trips). The policy
never reads the question whole; the ``Workspace`` (a tool without commands, listed first among
a code task's tools) writes it into a fresh host temp directory when an episode starts, and the
code tools — viewer, grep, edit, run — all act on that directory through it.

Every path the policy writes goes through ``Workspace.resolve``: absolute paths, ``..`` and
symlinks whose target lies outside the directory (a program run in the sandbox can create
those) are refused with a ``ToolError`` whose message becomes the observation. Reading goes
through ``read_lines``, which also refuses non-regular files (a FIFO would block the host) and
files too large to be code.

Observations are made of the tokenizer's characters only — printable ASCII and newline — so
``visible`` replaces anything else (a tab, a byte a program wrote) with ``?``.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import string
import tempfile
import weakref
from abc import abstractmethod
from collections.abc import Mapping, Sequence
from pathlib import Path

from ssmagent.tools.base import Tool, is_command_symbol

MAX_FILE_BYTES = 1 << 20
"""Larger files are not code the tools show or edit (and reading them would flood memory)."""
MAX_LINE_CHARS = 100
"""Longer lines are cut in observations (marked ``...``), so one line cannot flood a window."""
_HEADER = re.compile(r"=== (.+) \((\d+) lines?\) ===")
_VISIBLE = frozenset(string.printable[:95]) | {"\n"}
_SKIPPED_DIRS = ("__pycache__", ".")


class ToolError(Exception):
    """A call the tool refuses or cannot carry out; its message is the observation (after
    ``error: ``). Never raised out of ``Tool.run``."""


def pack(files: Mapping[str, str]) -> str:
    """Files (relative name → text) as one question text, in the given order."""
    blocks = []
    for name, text in files.items():
        lines = split_lines(text)
        blocks.append("\n".join([f"=== {name} ({len(lines)} line{'' if len(lines) == 1 else 's'}) ===", *lines]))
    return "\n".join(blocks)


def unpack(text: str) -> dict[str, str]:
    """The files of a packed question; ValueError when it is not one."""
    lines = text.split("\n") if text else []
    files: dict[str, str] = {}
    i = 0
    while i < len(lines):
        header = _HEADER.fullmatch(lines[i])
        if not header:
            raise ValueError(f"line {i + 1} of a packed workspace is not a file header: {lines[i][:60]!r}")
        count = int(header.group(2))
        body = lines[i + 1 : i + 1 + count]
        if len(body) < count:
            raise ValueError(f"file {header.group(1)!r} is cut short")
        files[header.group(1)] = join_lines(body)
        i += 1 + count
    return files


def split_lines(text: str) -> list[str]:
    """A file's lines; a final newline ends the last line, it does not start another."""
    return text.split("\n")[:-1] if text.endswith("\n") else text.split("\n") if text else []


def join_lines(lines: Sequence[str]) -> str:
    """Text of these lines, each ended by a newline (the form every file is written in)."""
    return "".join(line + "\n" for line in lines)


def visible(text: str, limit: int = MAX_LINE_CHARS) -> str:
    """``text`` in the tokenizer's characters (others become ``?``), cut to ``limit`` + ``...``."""
    shown = "".join(c if c in _VISIBLE else "?" for c in text[: limit + 1])
    return shown if len(shown) <= limit else shown[:limit] + "..."


def natural_key(name: str) -> tuple[str | int, ...]:
    """Sort key putting ``f2.py`` before ``f10.py``."""
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name))


class Workspace(Tool):
    """The episode's directory. No commands: it materialises the question's files at reset."""

    def __init__(self) -> None:
        self._root: Path | None = None
        self._cleanup: weakref.finalize | None = None

    @property
    def commands(self) -> tuple[str, ...]:
        return ()

    @property
    def root(self) -> Path:
        """The directory (symlinks resolved); only between ``reset`` and ``close``."""
        if self._root is None:
            raise RuntimeError("the workspace exists only between reset() and close()")
        return self._root

    def reset(self, question: str) -> None:
        files = unpack(question)
        self.close()
        self._root = Path(tempfile.mkdtemp(prefix="ssmagent-ws-")).resolve()
        self._cleanup = weakref.finalize(self, shutil.rmtree, self._root, ignore_errors=True)
        for name, text in files.items():
            path = self.resolve(name)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")

    def run(self, command: str) -> str:
        raise ValueError(f"the workspace answers no command, got {command!r}")

    def close(self) -> None:
        """Delete the directory (done too, silently, when the workspace is garbage-collected:
        an episode the agent loop drops needs no explicit close)."""
        if self._cleanup is not None:
            self._cleanup()
            self._cleanup = self._root = None

    def resolve(self, name: str) -> Path:
        """The path of ``name`` inside the workspace; ToolError when it leads outside."""
        shown = visible(name, 60)
        if not name:
            raise ToolError("no file name")
        if "\0" in name or "\n" in name:
            raise ToolError(f"bad file name: {shown}")
        if name.startswith("/") or ".." in Path(name).parts:
            raise ToolError(f"path outside the workspace: {shown}")
        root = self.root
        try:
            path = (root / name).resolve()
        except (OSError, RuntimeError):  # a symlink loop, a name too long
            raise ToolError(f"bad file name: {shown}") from None
        if path != root and root not in path.parents:
            raise ToolError(f"path outside the workspace: {shown}")
        return path

    def read_lines(self, name: str) -> list[str]:
        """The lines of the regular file ``name``; ToolError when missing, odd or too large."""
        path = self.resolve(name)
        shown = visible(name, 60)
        try:
            info = os.stat(path)
            if not stat.S_ISREG(info.st_mode):
                raise ToolError(f"not a file: {shown}")
            if info.st_size > MAX_FILE_BYTES:
                raise ToolError(f"file too large: {shown}")
            return split_lines(path.read_bytes().decode("utf-8", errors="replace"))
        except FileNotFoundError:
            raise ToolError(f"no such file: {shown}") from None
        except OSError as err:
            raise ToolError(f"cannot read {shown}: {err.strerror or 'error'}") from None

    def write_lines(self, name: str, lines: Sequence[str]) -> None:
        path = self.resolve(name)
        try:
            path.write_text(join_lines(lines), encoding="utf-8")
        except OSError as err:
            raise ToolError(f"cannot write {visible(name, 60)}: {err.strerror or 'error'}") from None

    def files(self) -> list[str]:
        """Relative names of the workspace's regular files, naturally sorted; symlinks,
        ``__pycache__`` and hidden directories left out."""
        root = self.root
        names = []
        for folder, dirs, files in os.walk(root, followlinks=False):
            dirs[:] = [d for d in dirs if not d.startswith(_SKIPPED_DIRS)]
            for file in files:
                path = Path(folder, file)
                try:
                    regular = stat.S_ISREG(os.lstat(path).st_mode)
                except OSError:  # gone since the walk listed it
                    continue
                if regular:
                    names.append(path.relative_to(root).as_posix())
        return sorted(names, key=natural_key)


class WorkspaceTool(Tool):
    """A tool acting on a shared ``Workspace``. A command's arguments are the text the policy
    wrote since its previous command (of any tool), so a call reads ``f3.py:12⟨view⟩``.

    ``run`` turns every ``ToolError`` into an ``error: …`` observation: a malformed or refused
    call never raises.
    """

    def __init__(self, workspace: Workspace) -> None:
        self.workspace = workspace
        self._written: list[str] = []
        self.arguments = ""

    def reset(self, question: str) -> None:
        self._written, self.arguments = [], ""

    def record(self, symbols: Sequence[str]) -> None:
        for symbol in symbols:
            if is_command_symbol(symbol):
                self.arguments, self._written = "".join(self._written), []
            else:
                self._written.append(symbol)

    def run(self, command: str) -> str:
        if command not in self.commands:
            raise ValueError(f"not a command of {type(self).__name__}: {command!r}")
        try:
            return self.execute(command, self.arguments)
        except ToolError as err:
            return f"error: {err}"

    @abstractmethod
    def execute(self, command: str, arguments: str) -> str:
        """Carry out one call; raise ToolError for anything the policy got wrong."""


_LOCATION = re.compile(r"([^:\n]+):(\d{1,9})(?:-(\d{1,9}))?")


def parse_location(text: str) -> tuple[str, int, int | None]:
    """``FILE:A`` or ``FILE:A-B`` as (file, A, B or None); ToolError when it is neither."""
    match = _LOCATION.fullmatch(text)
    if not match:
        raise ToolError(f"expected FILE:LINE or FILE:FIRST-LAST, got {visible(text, 60) or 'nothing'}")
    name, first, last = match.groups()
    return name, int(first), None if last is None else int(last)


def numbered(number: int, line: str) -> str:
    """How every tool shows a file line: ``N: text``."""
    return f"{number}: {visible(line)}"

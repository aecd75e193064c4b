"""The code tools (ssmagent.tools: workspace, viewer, grep, edit, run): windows and scrolling,
search caps, edits that a syntax check guards, path confinement, malformed calls, and runs in
the real sandbox. Any call, however malformed, gives an observation and never raises."""

from __future__ import annotations

import os
import string
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from ssmagent.sandbox import WORKDIR, SandboxLimits
from ssmagent.tools.base import Tool, split_symbols
from ssmagent.tools.edit import Edit
from ssmagent.tools.grep import MAX_HITS, NO_MATCH, Grep
from ssmagent.tools.run import USAGE, RunTool
from ssmagent.tools.viewer import WINDOW, FileViewer
from ssmagent.tools.workspace import ToolError, Workspace, natural_key, pack, split_lines, unpack, visible

OBSERVATION_CHARS = frozenset(string.printable[:95]) | {"\n"}
"""What the tokenizer reads without a replacement: printable ASCII and newline."""

TWENTY = "".join(f"line {i}\n" for i in range(1, 21))
FILES = {
    "main.py": "from f0 import f0\n\n\ndef main():\n    y = 3\n    return f0(y)\n",
    "f0.py": "def f0(x):\n    return x + 1\n",
    "long.txt": TWENTY,
    "empty.txt": "",
    "pkg/deep.py": "VALUE = 1\n",
}


class Episode:
    """The code tools of one episode on one workspace, driven the way the env drives them:
    every symbol of an action is recorded by every tool, then its command runs."""

    def __init__(self, files: dict[str, str], extra: tuple[type[Tool], ...] = ()) -> None:
        self.workspace = Workspace()
        self.tools: list[Tool] = [self.workspace, FileViewer(self.workspace), Grep(self.workspace), Edit(self.workspace)]
        self.tools += [cls(self.workspace) for cls in extra]
        question = pack(files)
        for tool in self.tools:
            tool.reset(question)
        self.by_command = {name: tool for tool in self.tools for name in tool.commands}

    def __call__(self, action: str) -> str:
        symbols = split_symbols(action)
        for tool in self.tools:
            tool.record(symbols)
        command = symbols[-1][1:-1]
        return self.by_command[command].run(command)

    def text(self, name: str) -> str:
        return (self.workspace.root / name).read_text()

    def close(self) -> None:
        for tool in self.tools:
            tool.close()


@pytest.fixture
def ep():
    episode = Episode(FILES)
    yield episode
    episode.close()


# --- the workspace -----------------------------------------------------------------------------


def test_a_packed_codebase_round_trips_and_reads_as_headed_blocks():
    text = pack(FILES)
    assert text.startswith("=== main.py (6 lines) ===\nfrom f0 import f0\n")
    assert "=== f0.py (2 lines) ===" in text and "=== empty.txt (0 lines) ===" in text
    assert "=== pkg/deep.py (1 line) ===" in text
    assert unpack(text) == FILES


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.from_regex(r"[a-z][a-z0-9_/]{0,8}\.py", fullmatch=True), st.text(max_size=60), max_size=4))
def test_any_files_round_trip_through_pack_even_ones_that_look_like_headers(files):
    files = {name: text if text.endswith("\n") or not text else text + "\n" for name, text in files.items()}
    files["trap.py"] = "=== x.py (1 line) ===\n"
    assert unpack(pack(files)) == files


@pytest.mark.parametrize("text", ["no header", "=== a.py (3 lines) ===\none", "=== a.py (x lines) ==="])
def test_unpack_refuses_text_that_is_not_a_packed_workspace(text):
    with pytest.raises(ValueError):
        unpack(text)


def test_reset_writes_the_question_files_into_a_fresh_directory_and_close_removes_it(ep):
    root = ep.workspace.root
    assert (root / "main.py").read_text() == FILES["main.py"]
    assert (root / "pkg" / "deep.py").read_text() == FILES["pkg/deep.py"]
    ep.workspace.reset(pack({"a.py": "A = 1\n"}))
    assert ep.workspace.root != root and not root.exists()
    assert ep.workspace.files() == ["a.py"]
    new_root = ep.workspace.root
    ep.workspace.close()
    assert not new_root.exists()
    with pytest.raises(RuntimeError):
        _ = ep.workspace.root


def test_files_are_listed_in_natural_order_without_caches_hidden_dirs_or_symlinks(ep):
    root = ep.workspace.root
    for name in ("f10.py", "f2.py", "__pycache__/f0.cpython-311.pyc", ".git/config"):
        (root / name).parent.mkdir(exist_ok=True)
        (root / name).write_text("x = 1\n")
    (root / "link.py").symlink_to(root / "f0.py")
    assert ep.workspace.files() == ["empty.txt", "f0.py", "f2.py", "f10.py", "long.txt", "main.py", "pkg/deep.py"]
    assert sorted(["f10", "f9", "f1"], key=natural_key) == ["f1", "f9", "f10"]


def test_visible_keeps_printable_ascii_and_newlines_and_cuts_long_text():
    assert visible("a\tb\u00e9c\n") == "a?b?c\n"
    assert visible("x" * 150) == "x" * 100 + "..."
    assert split_lines("a\nb\n") == ["a", "b"] and split_lines("a\nb") == ["a", "b"] and split_lines("") == []


# --- arguments ---------------------------------------------------------------------------------


def test_arguments_are_the_text_written_since_the_previous_command_of_any_tool(ep):
    ep("f0(⟨grep⟩")
    for piece in ("mai", "n.py⟨view⟩"):  # an action may reach the tools in pieces
        for tool in ep.tools:
            tool.record(split_symbols(piece))
    viewer = ep.by_command["view"]
    assert viewer.arguments == "main.py"
    assert viewer.run("view").startswith("main.py: lines 1-6 of 6")
    assert ep("⟨grep⟩") == "error: grep needs a pattern: the text before grep"  # main.py was the view's


# --- viewer ------------------------------------------------------------------------------------


def test_view_opens_a_file_at_its_first_line_with_a_header_and_numbered_lines(ep):
    assert ep("main.py⟨view⟩") == (
        "main.py: lines 1-6 of 6\n1: from f0 import f0\n2: \n3: \n4: def main():\n5:     y = 3\n6:     return f0(y)"
    )


def test_a_window_holds_at_most_window_lines(ep):
    lines = ep("long.txt⟨view⟩").split("\n")
    assert lines[0] == f"long.txt: lines 1-{WINDOW} of 20"
    assert lines[1:] == [f"{i}: line {i}" for i in range(1, WINDOW + 1)]


def test_view_at_a_line_puts_it_at_the_top_or_as_near_as_the_end_allows(ep):
    assert ep("long.txt:5⟨view⟩").split("\n")[:2] == ["long.txt: lines 5-12 of 20", "5: line 5"]
    assert ep("long.txt:18⟨view⟩").split("\n")[:2] == ["long.txt: lines 13-20 of 20", "13: line 13"]
    assert ep("long.txt:0⟨view⟩").startswith("long.txt: lines 1-8 of 20")
    assert ep("main.py:5⟨view⟩").startswith("main.py: lines 1-6 of 6")  # shorter than a window


def test_a_bare_line_number_goes_to_that_line_of_the_open_file(ep):
    ep("long.txt⟨view⟩")
    assert ep("10⟨view⟩").startswith("long.txt: lines 10-17 of 20\n10: line 10")
    assert ep("99999999999999⟨view⟩").startswith("long.txt: lines 13-20 of 20")


def test_up_and_down_scroll_one_window_and_stop_at_the_ends(ep):
    ep("long.txt⟨view⟩")
    assert ep("⟨down⟩").startswith("long.txt: lines 9-16 of 20")
    assert ep("⟨down⟩").startswith("long.txt: lines 13-20 of 20")
    assert ep("⟨down⟩").startswith("long.txt: lines 13-20 of 20")
    assert ep("⟨up⟩").startswith("long.txt: lines 5-12 of 20")
    assert ep("⟨up⟩").startswith("long.txt: lines 1-8 of 20")
    assert ep("⟨up⟩").startswith("long.txt: lines 1-8 of 20")


def test_view_without_arguments_shows_the_window_again_as_edits_left_it(ep):
    ep("f0.py⟨view⟩")
    ep("f0.py:2\n    return x + 2⟨edit⟩")
    assert ep("⟨view⟩") == "f0.py: lines 1-2 of 2\n1: def f0(x):\n2:     return x + 2"


def test_an_empty_file_has_a_header_and_no_lines(ep):
    assert ep("empty.txt⟨view⟩") == "empty.txt: 0 lines"


@pytest.mark.parametrize(
    "action, message",
    [
        ("⟨down⟩", "error: no file is open; view FILE first"),
        ("12⟨view⟩", "error: no file is open; view FILE first"),
        ("missing.py⟨view⟩", "error: no such file: missing.py"),
        ("pkg⟨view⟩", "error: not a file: pkg"),
        ("main.py:2-4⟨view⟩", "error: view takes FILE, FILE:LINE or LINE, not a range"),
        ("main.py:x⟨view⟩", "error: expected FILE:LINE or FILE:FIRST-LAST, got main.py:x"),
        ("main.py\n⟨view⟩", "error: bad file name: main.py\n"),
    ],
)
def test_malformed_viewer_calls_are_answered_with_an_error(ep, action, message):
    assert ep(action) == message


def test_scrolling_takes_no_arguments(ep):
    ep("long.txt⟨view⟩")
    assert ep("3⟨down⟩") == "error: down takes no arguments, got 3"
    assert ep("⟨down⟩").startswith("long.txt: lines 9-16")  # the refused call moved nothing


# --- grep --------------------------------------------------------------------------------------


def test_grep_lists_matching_lines_as_file_line_text_with_indentation(ep):
    assert ep("f0(⟨grep⟩") == "f0.py:1: def f0(x):\nmain.py:6:     return f0(y)"
    assert ep("VALUE⟨grep⟩") == "pkg/deep.py:1: VALUE = 1"


def test_grep_is_literal_and_case_sensitive(ep):
    assert ep("x + 1⟨grep⟩") == "f0.py:2:     return x + 1"
    assert ep("f0(.)⟨grep⟩") == NO_MATCH  # no regular expressions
    assert ep("DEF⟨grep⟩") == NO_MATCH


def test_grep_shows_at_most_max_hits_and_counts_the_rest(ep):
    observation = ep("line⟨grep⟩").split("\n")
    assert observation == [f"long.txt:{i}: line {i}" for i in range(1, MAX_HITS + 1)] + [f"(+{20 - MAX_HITS} more)"]


def test_grep_searches_files_in_natural_order_and_sees_edits(ep):
    for i in (10, 2):
        (ep.workspace.root / f"f{i}.py").write_text(f"def f{i}(x):\n    return x\n")
    assert ep("def f⟨grep⟩") == "f0.py:1: def f0(x):\nf2.py:1: def f2(x):\nf10.py:1: def f10(x):"
    ep("f2.py:1\ndef g2(x):⟨edit⟩")
    assert ep("def g⟨grep⟩") == "f2.py:1: def g2(x):"


def test_grep_does_not_follow_symlinks_or_read_huge_files(ep):
    root = ep.workspace.root
    outside = root.parent / f"{root.name}-outside.py"
    outside.write_text("SECRET = 1\n")
    try:
        (root / "link.py").symlink_to(outside)
        (root / "huge.py").write_text("SECRET = 2\n" + "x" * (2 << 20))
        assert ep("SECRET⟨grep⟩") == NO_MATCH
    finally:
        outside.unlink()


def test_a_file_and_a_pattern_on_two_lines_search_that_file_only(ep):
    assert ep("main.py\nf0⟨grep⟩") == "main.py:1: from f0 import f0\nmain.py:6:     return f0(y)"
    assert ep("pkg/deep.py\nf0⟨grep⟩") == NO_MATCH
    assert ep("long.txt\nline⟨grep⟩").endswith("(+15 more)")


@pytest.mark.parametrize(
    "action, message",
    [
        ("⟨grep⟩", "error: grep needs a pattern: the text before grep"),
        ("main.py\n⟨grep⟩", "error: grep needs a pattern: the text before grep"),
        ("a\nb\nc⟨grep⟩", "error: grep takes a pattern, or a file and a pattern on two lines"),
        ("missing.py\nx⟨grep⟩", "error: no such file: missing.py"),
        ("../x.py\nx⟨grep⟩", "error: path outside the workspace: ../x.py"),
        ("pkg\nx⟨grep⟩", "error: not a file: pkg"),
    ],
)
def test_malformed_grep_calls_are_answered_with_an_error(ep, action, message):
    assert ep(action) == message


# --- edit --------------------------------------------------------------------------------------


def test_edit_replaces_one_line_and_echoes_it_as_grep_shows_lines(ep):
    assert ep("f0.py:1\ndef f0(x, k):⟨edit⟩") == "f0.py:1: def f0(x, k):"
    assert ep.text("f0.py") == "def f0(x, k):\n    return x + 1\n"


def test_edit_replaces_a_range_with_any_number_of_lines(ep):
    assert ep("f0.py:1-2\ndef f0(x):\n    y = x * 2\n    return y⟨edit⟩") == (
        "f0.py:1: def f0(x):\nf0.py:2:     y = x * 2\nf0.py:3:     return y"
    )
    assert ep.text("f0.py") == "def f0(x):\n    y = x * 2\n    return y\n"


def test_an_empty_range_inserts_and_one_past_the_end_appends(ep):
    assert ep("f0.py:1-0\nimport os⟨edit⟩") == "f0.py:1: import os"
    assert ep("f0.py:4-3\nX = 1⟨edit⟩") == "f0.py:4: X = 1"
    assert ep.text("f0.py") == "import os\ndef f0(x):\n    return x + 1\nX = 1\n"


def test_a_location_without_text_deletes_the_lines(ep):
    assert ep("long.txt:2-19⟨edit⟩") == "long.txt: lines 2-19 deleted"
    assert ep.text("long.txt") == "line 1\nline 20\n"


def test_a_long_replacement_echoes_a_window_and_counts_the_rest(ep):
    text = "\n".join(f"new {i}" for i in range(12))
    lines = ep(f"long.txt:1-20\n{text}⟨edit⟩").split("\n")
    assert lines[0] == "long.txt:1: new 0" and lines[-1] == "(+4 more)" and len(lines) == 9


def test_an_edit_that_breaks_python_is_refused_and_the_file_kept(ep):
    before = ep.text("main.py")
    assert ep("main.py:6\n    return f0(y⟨edit⟩") == "error: SyntaxError at line 6: '(' was never closed; main.py unchanged"
    assert ep("main.py:5\ny = 3⟨edit⟩").startswith("error: IndentationError at line 5: expected an indented block")
    assert ep.text("main.py") == before


def test_only_python_files_are_syntax_checked(ep):
    assert ep("long.txt:1\ndef (:⟨edit⟩") == "long.txt:1: def (:"


@pytest.mark.parametrize(
    "action, message",
    [
        ("f0.py:3-3\nx⟨edit⟩", "error: f0.py has 2 lines; lines 3-3 are not a range of it"),
        ("f0.py:2-1⟨edit⟩", "error: an empty range and no text change nothing"),
        ("f0.py:2-0\nx⟨edit⟩", "error: f0.py has 2 lines; lines 2-0 are not a range of it"),
        ("f0.py:0\nx⟨edit⟩", "error: f0.py has 2 lines; lines 0-0 are not a range of it"),
        ("f0.py\nx = 1⟨edit⟩", "error: expected FILE:LINE or FILE:FIRST-LAST, got f0.py"),
        ("⟨edit⟩", "error: expected FILE:LINE or FILE:FIRST-LAST, got nothing"),
        ("new.py:1-0\nx = 1⟨edit⟩", "error: no such file: new.py"),
    ],
)
def test_malformed_edits_are_answered_with_an_error_and_change_nothing(ep, action, message):
    before = {name: ep.text(name) for name in FILES}
    assert ep(action) == message
    assert {name: ep.text(name) for name in FILES} == before


# --- confinement -------------------------------------------------------------------------------

OUTSIDE = ["../outside.py", "/etc/passwd", "pkg/../../outside.py", "./../outside.py"]


@pytest.mark.parametrize("path", OUTSIDE)
@pytest.mark.parametrize("call", ["{}⟨view⟩", "{}:1⟨view⟩", "{}:1\nx = 1⟨edit⟩"])
def test_paths_leading_out_of_the_workspace_are_refused(ep, path, call):
    assert ep(call.format(path)) == f"error: path outside the workspace: {path}"


@pytest.fixture
def outside_file(ep):
    root = ep.workspace.root
    outside = root.parent / f"{root.name}-secret"
    outside.mkdir()
    (outside / "secret.py").write_text("SECRET = 42\n")
    (root / "escape.py").symlink_to(outside / "secret.py")
    (root / "escape_dir").symlink_to(outside, target_is_directory=True)
    yield outside / "secret.py"
    (outside / "secret.py").unlink()
    outside.rmdir()


@pytest.mark.parametrize("path", ["escape.py", "escape_dir/secret.py"])
def test_symlinks_leading_out_are_refused_for_reading_and_writing(ep, outside_file, path):
    assert ep(f"{path}⟨view⟩") == f"error: path outside the workspace: {path}"
    assert ep(f"{path}:1\nSECRET = 0⟨edit⟩") == f"error: path outside the workspace: {path}"
    assert ep("SECRET⟨grep⟩") == NO_MATCH
    assert outside_file.read_text() == "SECRET = 42\n"


def test_a_symlink_that_stays_inside_is_followed(ep):
    (ep.workspace.root / "alias.py").symlink_to(ep.workspace.root / "f0.py")
    assert ep("alias.py⟨view⟩").startswith("alias.py: lines 1-2 of 2\n1: def f0(x):")


def test_a_fifo_is_refused_instead_of_blocking_the_host(ep):
    os.mkfifo(ep.workspace.root / "pipe.py")
    assert ep("pipe.py⟨view⟩") == "error: not a file: pipe.py"
    assert ep("anything⟨grep⟩") == NO_MATCH


def test_resolve_refuses_names_it_cannot_take(ep):
    for name in ("", "a\0b", "../x"):
        with pytest.raises(ToolError):
            ep.workspace.resolve(name)
    assert ep.workspace.resolve("pkg/deep.py") == ep.workspace.root / "pkg" / "deep.py"


# --- fuzzing: any call gives an observation ----------------------------------------------------

ARGUMENT = st.text(alphabet=st.sampled_from(list(string.printable) + ["é", "\0", "⟨"]), max_size=40)
CALL_PIECES = st.sampled_from(
    ["main.py", "f0.py", "long.txt", ":", "-", "1", "0", "20", "99", "\n", "..", "/", "pkg", "def f0(", "    return 1", "(x"]
)
STRUCTURED = st.lists(CALL_PIECES, max_size=6).map("".join)


@pytest.fixture(scope="module")
def fuzz_episode():
    episode = Episode(FILES)
    yield episode
    episode.close()


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(arguments=st.one_of(ARGUMENT, STRUCTURED), command=st.sampled_from(["view", "up", "down", "grep", "edit"]))
def test_any_arguments_to_any_command_give_a_printable_observation(fuzz_episode, arguments, command):
    tools = fuzz_episode.tools
    for tool in tools:
        tool.record(list(arguments) + [f"⟨{command}⟩"])
    observation = fuzz_episode.by_command[command].run(command)
    assert isinstance(observation, str) and set(observation) <= OBSERVATION_CHARS
    assert len(observation) < 2000
    for name in fuzz_episode.workspace.files():
        if name.endswith(".py"):
            compile((fuzz_episode.workspace.root / name).read_text(), name, "exec")  # edits never break Python


def test_a_command_the_tool_does_not_have_is_a_programming_error(ep):
    with pytest.raises(ValueError):
        ep.tools[2].run("view")


def test_a_sibling_directory_sharing_the_workspace_name_as_a_prefix_is_outside(ep):
    root = ep.workspace.root
    sibling = Path(f"{root}-evil")  # a string-prefix check would take it for the workspace
    sibling.mkdir()
    try:
        (sibling / "x.py").write_text("X = 1\n")
        (root / "s").symlink_to(sibling, target_is_directory=True)
        assert ep("s/x.py⟨view⟩") == "error: path outside the workspace: s/x.py"
    finally:
        (sibling / "x.py").unlink()
        sibling.rmdir()


# --- run (in the real sandbox, on every backend this machine has) ------------------------------

DEEP = {
    "main.py": "from a import a\n\n\ndef main():\n    return a(1)\n\n\nprint(main())\n",
    "a.py": "from b import b\n\n\ndef a(x):\n    return b(x) + 1\n",
    "b.py": "from c import c\n\n\ndef b(x):\n    return c(x) + 1\n",
    "c.py": "def c(x):\n    return x + undefined_name\n",
    "ok.py": "print('hello')\nprint(6 * 7)\n",
    "test_ok.py": "def test_one():\n    assert 1 + 1 == 2\n\n\ndef test_two():\n    assert 2 * 2 == 5\n",
    "writes.py": "open('made.txt', 'w').write('fresh\\n')\n",
    "loop.py": "while True:\n    pass\n",
}


@pytest.fixture
def code(sandbox):
    episode = Episode(DEEP)
    episode.tools.append(RunTool(episode.workspace, sandbox))
    episode.tools[-1].reset("")
    episode.by_command["run"] = episode.tools[-1]
    yield episode
    episode.close()


def test_a_run_shows_the_exit_code_and_the_output(code):
    assert code("python ok.py⟨run⟩") == "exit code 0\nstdout:\nhello\n42"


def test_a_traceback_shows_its_last_lines_with_workspace_paths_and_no_markers_or_hints(code):
    observation = code("python main.py⟨run⟩")
    assert observation == (
        "exit code 1\nstderr:\n...\n"
        '    return b(x) + 1\n  File "b.py", line 5, in b\n    return c(x) + 1\n'
        '  File "c.py", line 2, in c\n    return x + undefined_name\n'
        "NameError: name 'undefined_name' is not defined"
    )
    assert WORKDIR not in observation and "^" not in observation and "Did you mean" not in observation


def test_pytest_runs_without_timings_or_a_cache_left_behind(docker_sandbox):
    """Docker only: the bubblewrap backend runs the host's system Python, which may lack pytest."""
    code = Episode(DEEP)
    code.by_command["run"] = RunTool(code.workspace, docker_sandbox)
    code.tools.append(code.by_command["run"])
    observation = code("python -m pytest -q test_ok.py⟨run⟩")
    assert observation.startswith("exit code 1\nstdout:\n...\n")
    assert observation.endswith("FAILED test_ok.py::test_two - assert (2 * 2) == 5\n1 failed, 1 passed")
    assert code("python -m pytest -q -x test_ok.py::test_one⟨run⟩").endswith("1 passed")
    assert not (code.workspace.root / ".pytest_cache").exists()
    code.close()


def test_files_a_program_writes_come_back_to_the_workspace(code):
    assert code("python writes.py⟨run⟩") == "exit code 0"
    assert code("made.txt⟨view⟩") == "made.txt: lines 1-1 of 1\n1: fresh"


def test_a_program_that_never_ends_is_stopped_with_a_fixed_observation(sandbox):
    episode = Episode(DEEP)
    episode.by_command["run"] = RunTool(episode.workspace, sandbox, SandboxLimits(timeout_s=1.0))
    episode.tools.append(episode.by_command["run"])
    assert episode("python loop.py⟨run⟩") == "timed out after 1 s"
    episode.close()


def test_observations_are_the_same_on_every_backend(docker_sandbox, bubblewrap_sandbox):
    """Trajectories made on one backend are the ones a model meets on the other."""
    seen = []
    for backend in (docker_sandbox, bubblewrap_sandbox):
        episode = Episode(DEEP)
        episode.by_command["run"] = RunTool(episode.workspace, backend)
        episode.tools.append(episode.by_command["run"])
        seen.append([episode(f"{command}⟨run⟩") for command in ("python main.py", "python ok.py", "python writes.py")])
        episode.close()
    assert seen[0] == seen[1]


@pytest.mark.parametrize(
    "command",
    [
        "ls", "python", "python main.py extra", "python -c print(1)", "bash main.py", "python ok.txt",
        "python -m pip install x", "python -m pytest --collect-only", "python -m pytest -k x", "",
        "python3 ok.py", "pytest", "python -m pytest -q;ls", "python -m pytest -p evil",
    ],
)
def test_commands_outside_the_allow_list_are_refused(ep, command):
    ep.tools.append(RunTool(ep.workspace))
    ep.by_command["run"] = ep.tools[-1]
    assert ep(f"{command}⟨run⟩") == f"error: {USAGE}"


@pytest.mark.parametrize(
    "command, message",
    [
        ("python ../main.py", "path outside the workspace: ../main.py"),
        ("python /etc/hostname.py", "path outside the workspace: /etc/hostname.py"),
        ("python missing.py", "no such file: missing.py"),
        ("python -m pytest ../tests", "path outside the workspace: ../tests"),
        ("python -m pytest -q nothing.py::test_x", "no such file: nothing.py"),
    ],
)
def test_run_paths_are_confined_to_the_workspace(ep, command, message):
    ep.tools.append(RunTool(ep.workspace))
    ep.by_command["run"] = ep.tools[-1]
    assert ep(f"{command}⟨run⟩") == f"error: {message}"


RUN_PIECES = st.sampled_from(
    ["python", " ", "-m", "pytest", "-q", "-x", "ok.py", "main.py", "../", "/", "::", "test_ok.py", "x", ";", "\n"]
)


@settings(max_examples=150, deadline=None)
@given(arguments=st.one_of(ARGUMENT, st.lists(RUN_PIECES, max_size=6).map("".join)))
@example(arguments="python ok.py")
@example(arguments="python -m pytest -q -x test_ok.py")
def test_any_run_arguments_give_a_printable_observation(bubblewrap_sandbox, arguments):
    episode = Episode({"ok.py": DEEP["ok.py"], "test_ok.py": DEEP["test_ok.py"]})
    tool = RunTool(episode.workspace, bubblewrap_sandbox)
    tool.record(list(arguments) + ["⟨run⟩"])
    observation = tool.run("run")
    assert isinstance(observation, str) and set(observation) <= OBSERVATION_CHARS and len(observation) < 2000
    episode.close()

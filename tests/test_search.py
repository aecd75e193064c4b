"""The search tool (ssmagent.tools.search): what ``find`` matches, which line wins, where the
query comes from, and that the policy's own lines are searchable."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ssmagent.tools.base import command_symbol, split_symbols
from ssmagent.tools.search import FIND, NOT_FOUND, SearchMemory

FIND_CMD = command_symbol(FIND)


def memory(question: str = "abc=1\nabd=!abc\nxyz=abc&abd\n?xyz") -> SearchMemory:
    tool = SearchMemory()
    tool.reset(question)
    return tool


def act(tool: SearchMemory, action: str) -> str:
    """What the env does with an action ending in ⟨find⟩: record every symbol, then run it."""
    tool.record(split_symbols(action))
    return tool.run(FIND)


def test_find_is_the_only_command():
    assert memory().commands == ("find",)


def test_find_returns_the_whole_line_that_starts_with_the_query():
    tool = memory()
    assert act(tool, "abd=" + FIND_CMD) == "abd=!abc"
    assert act(tool, "?" + FIND_CMD) == "?xyz"
    assert act(tool, "xyz=abc&" + FIND_CMD) == "xyz=abc&abd"


def test_a_match_must_start_at_the_beginning_of_the_line():
    tool = memory()
    assert act(tool, "abc&" + FIND_CMD) == NOT_FOUND  # occurs inside xyz's line only
    assert act(tool, "bc=" + FIND_CMD) == NOT_FOUND


def test_find_answers_not_found_when_no_line_matches_and_for_an_empty_query():
    tool = memory()
    assert act(tool, "qqq=" + FIND_CMD) == NOT_FOUND
    assert act(tool, FIND_CMD) == NOT_FOUND
    assert NOT_FOUND == "-"


def test_a_query_longer_than_the_line_does_not_match():
    assert act(memory(), "abc=1x" + FIND_CMD) == NOT_FOUND


def test_the_most_recent_matching_line_wins():
    tool = memory("ab=1\nab=2\nac=3")
    assert act(tool, "ab" + FIND_CMD) == "ab=2"  # later question line beats earlier
    assert act(tool, "a" + FIND_CMD) == "ac=3"
    act(tool, "ab:7\n" + FIND_CMD)
    assert act(tool, "ab" + FIND_CMD) == "ab:7"  # the policy's lines are newer than the question's
    act(tool, "ab:8\nab:9\n" + FIND_CMD)
    assert act(tool, "ab:" + FIND_CMD) == "ab:9"
    assert act(tool, "ab=" + FIND_CMD) == "ab=2"


def test_lines_the_policy_writes_are_searchable_once_ended_with_a_newline():
    tool = memory()
    assert act(tool, "abc:" + FIND_CMD) == NOT_FOUND
    assert act(tool, "abc:1\nabc<xyz\nabc:" + FIND_CMD) == "abc:1"
    assert act(tool, "abc<" + FIND_CMD) == "abc<xyz"


def test_the_query_is_the_text_since_the_last_newline_and_is_not_kept():
    tool = memory()
    tool.record(split_symbols("abd:0\nxy"))
    assert act(tool, "z=" + FIND_CMD) == "xyz=abc&abd"  # a line may span actions
    assert "xyz=" not in tool.lines  # the query never became a line
    assert act(tool, "=" + FIND_CMD) == NOT_FOUND  # ...and the next query starts empty
    assert act(tool, "abd:" + FIND_CMD) == "abd:0"


def test_a_query_never_finds_itself():
    tool = memory("")
    assert act(tool, "hello" + FIND_CMD) == NOT_FOUND
    assert act(tool, "hello" + FIND_CMD) == NOT_FOUND


def test_command_symbols_are_not_text():
    tool = memory()
    tool.record(split_symbols("ab" + command_symbol("answer") + "d=" + command_symbol("end")))
    assert tool.run(FIND) == "abd=!abc"


def test_reset_forgets_the_previous_episode():
    tool = memory()
    act(tool, "new:1\n" + FIND_CMD)
    tool.record(["q"])
    tool.reset("other=1")
    assert act(tool, "new" + FIND_CMD) == NOT_FOUND
    assert act(tool, "o" + FIND_CMD) == "other=1"


def test_an_unknown_command_is_an_error():
    with pytest.raises(ValueError):
        memory().run("grep")


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.text(alphabet="ab:=", max_size=4), max_size=8),
    st.lists(st.text(alphabet="ab:=", max_size=4), max_size=8),
    st.text(alphabet="ab:=", max_size=3),
)
def test_find_equals_a_scan_for_the_last_line_with_the_query_as_prefix(question, written, query):
    tool = memory("\n".join(question) if question else "")
    tool.record(split_symbols("".join(line + "\n" for line in written)))
    lines = (question or [""]) + written
    matches = [line for line in lines if query and line.startswith(query)]
    assert act(tool, query + FIND_CMD) == (matches[-1] if matches else NOT_FOUND)

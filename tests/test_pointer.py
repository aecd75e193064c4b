"""The pointer tape (ssmagent.tools.pointer): every command, its ends, and what lands on the tape."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ssmagent.tools import BOUNDARY, PointerSpec, PointerTape, command_symbol, split_symbols

SPEC = PointerSpec(pointers=("a", "b"), seek_right="+=", seek_left="#", delimiters="+=")


def tape(question: str = "123+45=", spec: PointerSpec = SPEC) -> PointerTape:
    t = PointerTape(spec)
    t.reset(question)
    return t


def run_all(t: PointerTape, *commands: str) -> list[str]:
    return [t.run(c) for c in commands]


# --- the command set ---------------------------------------------------------------------------


def test_spec_lists_every_command_of_every_pointer():
    assert SPEC.commands() == (
        "a<", "a>", "a?", "a,", "a$", "a»+", "a»=", "a«#",
        "b<", "b>", "b?", "b,", "b$", "b»+", "b»=", "b«#",
    )  # fmt: skip
    assert tape().commands == SPEC.commands()


def test_a_spec_without_seek_targets_has_only_the_five_basic_commands_per_pointer():
    assert PointerSpec(pointers=("p",)).commands() == ("p<", "p>", "p?", "p,", "p$")


def test_reset_puts_the_question_on_the_tape_and_every_pointer_on_the_first_cell():
    t = tape("12+3=")
    assert t.tape == list("12+3=")
    assert t.position == {"a": 0, "b": 0}
    assert t.run("a?") == "1" and t.run("b?") == "1"


# --- moves and reads ---------------------------------------------------------------------------


def test_moves_are_silent_and_move_one_cell():
    t = tape("123")
    assert run_all(t, "a>", "a>") == ["", ""]
    assert t.run("a?") == "3"
    assert t.run("a<") == ""
    assert t.run("a?") == "2"


def test_read_does_not_move_the_pointer():
    t = tape("123")
    t.run("a>")
    assert run_all(t, "a?", "a?", "a?") == ["2", "2", "2"]
    assert t.position["a"] == 1


def test_pointers_move_independently():
    t = tape("123")
    t.run("a>")
    t.run("a>")
    assert t.run("b?") == "1"
    assert t.run("a?") == "3"
    assert t.position == {"a": 2, "b": 0}


def test_move_left_clamps_one_cell_before_the_start_and_reads_the_boundary_there():
    t = tape("12")
    run_all(t, "a<", "a<", "a<", "a<")
    assert t.position["a"] == -1
    assert t.run("a?") == BOUNDARY == "^"
    t.run("a>")
    assert t.run("a?") == "1"  # one step back in, however far it was pushed out


def test_move_right_clamps_one_cell_past_the_end_and_reads_the_boundary_there():
    t = tape("12")
    run_all(t, *["a>"] * 10)
    assert t.position["a"] == 2 == len(t.tape)
    assert t.run("a?") == BOUNDARY
    t.run("a<")
    assert t.run("a?") == "2"


# --- the step-read ``p,`` ----------------------------------------------------------------------


def test_step_read_reads_a_field_right_to_left_then_keeps_answering_its_delimiter():
    t = tape("12+345=")
    t.run("b»=")
    t.run("b<")  # on B's last digit
    assert run_all(t, *["b,"] * 6) == ["5", "4", "3", "+", "+", "+"]
    assert t.position["b"] == 2  # parked on the delimiter


def test_step_read_stops_at_every_delimiter_of_the_spec():
    t = tape("7=")
    t.run("a>")
    assert run_all(t, "a,", "a,") == ["=", "="]
    assert t.position["a"] == 1


def test_step_read_walks_off_the_start_and_then_answers_the_boundary_without_moving():
    t = tape("12+3=")
    t.run("a>")
    assert run_all(t, "a,", "a,", "a,", "a,") == ["2", "1", BOUNDARY, BOUNDARY]
    assert t.position["a"] == -1


def test_step_read_past_the_end_answers_the_boundary_and_stays():
    t = tape("1")
    run_all(t, "a>", "a>")
    assert run_all(t, "a,", "a,") == [BOUNDARY, BOUNDARY]
    assert t.position["a"] == 1


def test_step_read_with_no_delimiters_steps_over_plus():
    t = tape("1+2", PointerSpec(pointers=("a",)))
    t.run("a$")
    assert run_all(t, "a,", "a,", "a,", "a,") == ["2", "+", "1", BOUNDARY]


# --- jump and seeks ----------------------------------------------------------------------------


def test_jump_goes_to_the_newest_cell():
    t = tape("12+3=")
    t.run("a$")
    assert t.run("a?") == "="
    t.record(["x", "y"])
    t.run("a$")
    assert t.run("a?") == "y"


def test_seek_right_goes_to_the_nearest_match_right_of_the_pointer():
    t = tape("1+2+3=")
    t.run("a»+")
    assert t.position["a"] == 1
    t.run("a»+")
    assert t.position["a"] == 3  # the next one, not the one it stands on
    t.run("a»=")
    assert t.run("a?") == "="


def test_seek_right_without_a_match_goes_one_cell_past_the_end():
    t = tape("12+3=")
    t.run("a»=")
    t.run("a»=")
    assert t.position["a"] == len(t.tape)
    assert t.run("a?") == BOUNDARY


def test_seek_right_from_before_the_start_finds_a_match_on_the_first_cell():
    t = tape("+1")
    t.run("a<")
    t.run("a»+")
    assert t.position["a"] == 0


def test_seek_left_goes_to_the_nearest_match_left_of_the_pointer():
    t = tape("1#2#3#4")
    t.run("a$")
    t.run("a«#")
    assert t.position["a"] == 5
    t.run("a«#")
    assert t.position["a"] == 3  # the previous one, not the one it stands on


def test_seek_left_without_a_match_goes_one_cell_before_the_start():
    t = tape("1#2")
    t.run("a$")
    run_all(t, "a«#", "a«#")
    assert t.position["a"] == -1
    assert t.run("a?") == BOUNDARY
    t.run("a«#")
    assert t.position["a"] == -1


def test_seek_left_from_past_the_end_finds_the_last_cell():
    t = tape("1#")
    run_all(t, "a>", "a>", "a>")
    assert t.position["a"] == 2
    t.run("a«#")
    assert t.position["a"] == 1


def test_seeks_are_silent():
    t = tape("1+2=#")
    assert run_all(t, "a»+", "a»=", "a«#", "a$") == ["", "", "", ""]


# --- what lands on the tape --------------------------------------------------------------------


def test_recorded_symbols_are_appended_and_readable():
    t = tape("1+2=")
    t.record(["3", "#", "4"])
    assert t.tape == list("1+2=3#4")
    t.run("a$")
    assert t.run("a?") == "4"
    t.run("a«#")
    assert t.position["a"] == 5
    assert t.run("a?") == "#"


def test_observations_are_never_appended_to_the_tape():
    t = tape("12+3=")
    before = list(t.tape)
    for command in ("a?", "a,", "b»=", "b?", "b,", "a$", "a?"):
        t.run(command)
    assert t.tape == before


def test_a_command_symbol_is_one_cell_on_the_tape():
    t = tape("1+2=")
    t.record(split_symbols("9⟨a<⟩#⟨a«#⟩"))
    assert t.tape == [*"1+2=", "9", "⟨a<⟩", "#", "⟨a«#⟩"]
    t.run("a$")
    assert t.run("a?") == "⟨a«#⟩"
    t.run("a<")
    t.run("a<")
    assert t.run("a?") == "⟨a<⟩"
    assert command_symbol("a<") == "⟨a<⟩"


def test_a_pointer_past_the_end_lands_on_what_is_recorded_next():
    t = tape("1")
    t.run("a>")
    assert t.run("a?") == BOUNDARY
    t.record(["7"])
    assert t.run("a?") == "7"


def test_reset_clears_recorded_symbols_and_pointer_positions():
    t = tape("12+3=")
    t.record(["4", "#"])
    run_all(t, "a$", "b»+", "b>")
    t.reset("9+9=")
    assert t.tape == list("9+9=")
    assert t.position == {"a": 0, "b": 0}
    t.run("a$")
    assert t.run("a?") == "="


def test_reset_of_an_empty_question_reads_the_boundary_everywhere():
    t = tape("")
    assert t.run("a?") == BOUNDARY
    t.run("a$")
    assert t.position["a"] == -1
    assert t.run("a,") == BOUNDARY


def test_an_unknown_command_is_rejected():
    t = tape()
    with pytest.raises(KeyError):
        t.run("c?")
    with pytest.raises(ValueError, match="not a pointer command"):
        PointerTape(PointerSpec(pointers=("a",)))._parse("z<")


# --- property: no command sequence crashes or escapes the tape --------------------------------

_ACTIONS = st.one_of(
    st.sampled_from(SPEC.commands()),
    st.lists(st.sampled_from(["1", "#", "+", "=", "^", "⟨a<⟩", "x"]), min_size=1, max_size=3),
)


@settings(max_examples=300, deadline=None)
@given(question=st.text(alphabet="0123456789+=#", max_size=12), actions=st.lists(_ACTIONS, max_size=60))
def test_no_command_sequence_raises_and_pointers_stay_within_one_cell_of_the_tape(question, actions):
    t = tape(question)
    for action in actions:
        if isinstance(action, list):
            t.record(action)
        else:
            observation = t.run(action)
            assert observation == "" or observation == BOUNDARY or observation in t.tape
        for position in t.position.values():
            assert -1 <= position <= len(t.tape)
    assert t.tape[: len(question)] == list(question)


def test_pointer_names_that_share_a_prefix_address_their_own_pointer():
    t = tape("abc", PointerSpec(pointers=("p", "p2")))
    t.run("p2>")
    assert t.position == {"p": 0, "p2": 1}
    assert t.run("p2?") == "b"
    assert t.run("p?") == "a"

"""Tokenizer (ssmagent.agent.tokenizer) and trajectories (ssmagent.agent.trajectory)."""

from __future__ import annotations

import json
import os
import string
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ssmagent.agent.tokenizer import BASE_VOCAB, BOS, PAD, Tokenizer, TokenizerError, task_commands
from ssmagent.agent.trajectory import Segment, Trajectory, read_jsonl, write_jsonl
from ssmagent.tasks import ANSWER, END

# --- tokenizer ---------------------------------------------------------------------------------


def test_base_vocabulary_has_the_markers_newline_and_every_printable_character():
    assert BASE_VOCAB[:4] == (PAD, BOS, ANSWER, END)
    assert set(string.digits + string.ascii_letters + string.punctuation + " \n") <= set(BASE_VOCAB)
    assert len(set(BASE_VOCAB)) == len(BASE_VOCAB)


def test_for_commands_appends_one_token_per_command_after_the_base(tokenizer, addition):
    commands = task_commands(addition)
    assert tokenizer.vocab[: len(BASE_VOCAB)] == list(BASE_VOCAB)
    assert tokenizer.vocab[len(BASE_VOCAB) :] == [f"⟨{c}⟩" for c in commands]
    assert len(tokenizer) == len(BASE_VOCAB) + len(commands)


def test_round_trip_of_text_with_command_symbols(tokenizer):
    text = "⟨a»+⟩⟨a<⟩⟨b»=⟩⟨b<⟩⟨a,⟩7⟨b,⟩512#⟨answer⟩⟨a$⟩⟨a«#⟩⟨a<⟩⟨a?⟩1 x\n~⟨end⟩"
    ids = tokenizer.encode(text)
    assert tokenizer.decode(ids) == text
    assert ids[0] == tokenizer.vocab.index("⟨a»+⟩")
    assert len(ids) == 22  # every command is one token


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_decode_then_encode_gives_back_any_id_sequence(tokenizer, data):
    ids = data.draw(st.lists(st.integers(0, len(tokenizer) - 1), max_size=50))
    assert tokenizer.encode(tokenizer.decode(ids)) == ids


@pytest.mark.parametrize("text", ["é", "1\t2", "⟨nope⟩", "⟨", "»", "12⟩"])
def test_unknown_symbol_raises_in_strict_mode(tokenizer, text):
    with pytest.raises(TokenizerError):
        tokenizer.encode(text)


def test_unknown_symbol_becomes_a_question_mark_in_replace_mode(tokenizer):
    q = tokenizer.vocab.index("?")
    ids = tokenizer.encode("1é⟨nope⟩⟨a?⟩", errors="replace")
    assert ids == [tokenizer.vocab.index("1"), q, q, tokenizer.vocab.index("⟨a?⟩")]
    assert tokenizer.decode(ids) == "1??⟨a?⟩"


def test_extend_only_appends_and_keeps_every_old_id(tokenizer):
    new = tokenizer.extend(["⟨c?⟩", "⟨a?⟩", "7", "⟨c<⟩", "⟨c?⟩"])
    assert new.vocab == tokenizer.vocab + ["⟨c?⟩", "⟨c<⟩"]
    for i, token in enumerate(tokenizer.vocab):
        assert new.encode(token) == [i]
    assert "⟨c?⟩" not in tokenizer.vocab  # the original is untouched


def test_duplicate_vocabulary_is_rejected():
    with pytest.raises(TokenizerError):
        Tokenizer([*BASE_VOCAB, "a"])


def test_is_command_is_true_for_tool_commands_and_end_only(tokenizer):
    assert tokenizer.is_command(tokenizer.vocab.index("⟨a?⟩"))
    assert tokenizer.is_command(tokenizer.vocab.index("⟨b«#⟩"))
    assert tokenizer.is_command(tokenizer.end_id)
    for marker in (PAD, BOS, ANSWER, "a", "^", "#"):
        assert not tokenizer.is_command(tokenizer.vocab.index(marker))
    commands = tokenizer.command_ids()
    assert [tokenizer.vocab[i] for i in commands] == [END] + [t for t in tokenizer.vocab if t.startswith("⟨") and t not in BASE_VOCAB]


def test_special_ids_point_at_their_tokens(tokenizer):
    assert tokenizer.vocab[tokenizer.pad_id] == PAD
    assert tokenizer.vocab[tokenizer.bos_id] == BOS
    assert tokenizer.vocab[tokenizer.end_id] == END


# --- trajectory stream -------------------------------------------------------------------------


def small_trajectory() -> Trajectory:
    t = Trajectory("addition", 2, seed=3, instance={"a": "12", "b": "3"})
    t.add("question", "12+3=")
    t.add("thought", "ok")
    t.add("tool", "⟨a?⟩")
    t.add("obs", "1")
    t.add("tool", "⟨a$⟩")
    t.add("obs", "")  # silent: no segment
    t.add("answer", "⟨answer⟩15")
    t.add("tool", "⟨end⟩")
    t.answer, t.correct = "15", True
    return t


def test_add_skips_empty_text_and_rejects_unknown_kinds():
    t = small_trajectory()
    assert [s.kind for s in t.segments] == ["question", "thought", "tool", "obs", "tool", "answer", "tool"]
    with pytest.raises(ValueError):
        t.add("reward", "1")


def test_stream_starts_with_bos_and_leaves_out_the_question(tokenizer):
    ids, mask = small_trajectory().stream(tokenizer)
    assert ids[0] == tokenizer.bos_id
    assert tokenizer.decode(ids[1:]) == "ok⟨a?⟩1⟨a$⟩⟨answer⟩15⟨end⟩"
    assert "12+3=" not in tokenizer.decode(ids)


def test_loss_mask_is_true_exactly_on_thought_tool_and_answer_tokens(tokenizer):
    ids, mask = small_trajectory().stream(tokenizer)
    assert len(mask) == len(ids)
    #             bos    o     k     ⟨a?⟩  1(obs) ⟨a$⟩  ⟨answer⟩ 1    5     ⟨end⟩
    assert mask == [False, True, True, True, False, True, True, True, True, True]


def test_loss_mask_is_false_on_every_observation_token(tokenizer):
    t = Trajectory("addition", 1)
    t.add("question", "1+1=")
    t.add("tool", "⟨a?⟩")
    t.add("obs", "error: 12 ⟨a?⟩")
    ids, mask = t.stream(tokenizer)
    n_obs = len(tokenizer.encode("error: 12 ⟨a?⟩"))
    assert mask == [False, True] + [False] * n_obs


def test_counts_are_generated_and_observed_tokens_without_bos(tokenizer):
    t = small_trajectory()
    assert (t.generated_tokens, t.observed_tokens) == (8, 1)
    ids, mask = t.stream(tokenizer)
    assert t.generated_tokens == sum(mask) and t.observed_tokens == len(ids) - 1 - sum(mask)
    assert (Trajectory("addition", 1).generated_tokens, Trajectory("addition", 1).observed_tokens) == (0, 0)


def test_adding_without_keeping_counts_but_stores_no_segment():
    t = Trajectory("addition", 1)
    t.add("tool", "⟨a?⟩", keep=False)
    t.add("obs", "7", keep=False)
    assert t.segments == [] and (t.generated_tokens, t.observed_tokens) == (1, 1)


# --- JSONL ------------------------------------------------------------------------------------


def test_jsonl_round_trip_keeps_every_field(tmp_path):
    first = small_trajectory()
    second = Trajectory("addition", 5, None, {"a": "99999", "b": "1"}, [Segment("question", "99999+1=")], "", False, True)
    path = tmp_path / "sub" / "data.jsonl"
    write_jsonl(path, [first, second])
    assert list(read_jsonl(path)) == [first, second]
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 2
    assert json.loads(lines[0])["segments"][0] == {"kind": "question", "text": "12+3="}
    assert set(json.loads(lines[0])) == {
        "task", "size", "seed", "instance", "segments", "answer", "correct", "truncated", "generated_tokens", "observed_tokens"
    }


def test_jsonl_writes_command_symbols_as_utf8_text(tmp_path):
    path = tmp_path / "data.jsonl"
    write_jsonl(path, [small_trajectory()])
    assert "⟨a?⟩" in path.read_bytes().decode("utf-8")


def test_read_jsonl_skips_blank_lines(tmp_path):
    path = tmp_path / "data.jsonl"
    line = json.dumps(small_trajectory().to_json(), ensure_ascii=False)
    path.write_text(f"\n{line}\n\n{line}\n", encoding="utf-8")
    assert len(list(read_jsonl(path))) == 2


def test_atomic_write_leaves_only_the_file(tmp_path):
    path = tmp_path / "data.jsonl"
    write_jsonl(path, [small_trajectory()])
    write_jsonl(path, [small_trajectory()] * 3)  # overwrite
    assert os.listdir(tmp_path) == ["data.jsonl"]
    assert len(list(read_jsonl(path))) == 3


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp_file(tmp_path):
    path = tmp_path / "data.jsonl"
    write_jsonl(path, [small_trajectory()])
    before = path.read_bytes()

    def broken():
        yield small_trajectory()
        raise RuntimeError("producer died")

    with pytest.raises(RuntimeError, match="producer died"):
        write_jsonl(path, broken())
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["data.jsonl"]


@pytest.mark.parametrize(
    "bad_line",
    [
        "{not json",
        "[1, 2]",
        '{"task": "addition"}',
        '{"task": "addition", "size": 1, "segments": [{"kind": "reward", "text": "1"}]}',
        '{"task": "addition", "size": 1, "segments": [{"text": "1"}]}',
        '{"task": "addition", "size": 1, "bogus": 1}',
    ],
)
def test_malformed_jsonl_line_raises_value_error_naming_file_and_line(tmp_path, bad_line):
    path = tmp_path / "data.jsonl"
    good = json.dumps(small_trajectory().to_json(), ensure_ascii=False)
    path.write_text(f"{good}\n{bad_line}\n{good}\n", encoding="utf-8")
    with pytest.raises(ValueError, match=f"{path}:2:"):
        list(read_jsonl(path))


def test_jsonl_round_trip_does_not_depend_on_the_locale_encoding(tmp_path):
    """Trajectory files hold command symbols (non-ASCII); they must be UTF-8 on every machine,
    or a file written under one locale can't be written or read under another."""
    script = (
        "import sys\n"
        "from ssmagent.agent.trajectory import Trajectory, write_jsonl, read_jsonl\n"
        "t = Trajectory('addition', 1)\n"
        "t.add('tool', '\\u27e8a<\\u27e9')\n"
        "write_jsonl(sys.argv[1], [t])\n"
        "assert list(read_jsonl(sys.argv[1])) == [t]\n"
    )
    env = {**os.environ, "LC_ALL": "C", "LANG": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0"}
    path = tmp_path / "data.jsonl"
    result = subprocess.run([sys.executable, "-c", script, str(path)], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "⟨a<⟩" in Path(path).read_bytes().decode("utf-8")

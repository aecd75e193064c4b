"""The Gymnasium env (ssmagent.env): API conformance, seeding, scoring, malformed actions, budget."""

from __future__ import annotations

import warnings

import gymnasium as gym
import pytest
from gymnasium.utils.env_checker import check_env
from hypothesis import given, settings
from hypothesis import strategies as st

from ssmagent.env import CHARSET, ToolEnv
from ssmagent.tasks import TaskInputError
from ssmagent.tasks.addition import Sum


def make(size: int = 5, **kwargs) -> ToolEnv:
    return gym.make("ssmagent/Addition-v0", size=size, **kwargs).unwrapped


ENV_SIZES = [
    *[("ssmagent/Addition-v0", n) for n in (1, 5, 64, 300)],
    *[("ssmagent/Multiply-v0", n) for n in (1, 5, 64, 300)],
    *[("ssmagent/LogicGraph-v0", n) for n in (1, 4, 30)],
    *[("ssmagent/Hanoi-v0", n) for n in (1, 3, 12)],
    *[("ssmagent/CodeFix-v0", n) for n in (1, 16, 64)],
]


@pytest.mark.parametrize("env_id, size", ENV_SIZES)
def test_gymnasium_env_checker_passes_on_every_registered_env(env_id, size):
    env = gym.make(env_id, size=size).unwrapped
    assert isinstance(env, ToolEnv) and env.task.env_id == env_id
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the checker reports most problems as warnings
        check_env(env)
    env.close()  # a code task's workspace


def test_registered_id_makes_a_tool_env_with_text_spaces():
    env = make(7)
    assert isinstance(env, ToolEnv) and env.size == 7
    assert isinstance(env.action_space, gym.spaces.Text)
    assert isinstance(env.observation_space, gym.spaces.Text)
    assert env.observation_space.max_length >= len("9" * 7 + "+" + "9" * 7 + "=")


def test_reset_with_the_same_seed_gives_the_same_question():
    env = make(20)
    first, _ = env.reset(seed=123)
    env.step("⟨a>⟩")
    again, _ = env.reset(seed=123)
    other_env, _ = make(20).reset(seed=123)
    assert first == again == other_env
    different = {make(20).reset(seed=s)[0] for s in range(10)}
    assert len(different) == 10


def test_reset_draws_an_instance_of_the_env_size():
    env = make(12)
    for seed in range(20):
        question, info = env.reset(seed=seed)
        a, b = question.rstrip("=").split("+")
        assert max(len(a), len(b)) == 12
        assert info["instance"] == {"a": a, "b": b} and info["question"] == question


def test_reset_with_an_explicit_instance():
    env = make(5)
    question, info = env.reset(options={"instance": Sum("123", "4")})
    assert question == "123+4="
    assert info["instance"] == {"a": "123", "b": "4"}
    assert env.instance == Sum("123", "4")


def test_reset_refuses_an_instance_larger_than_the_env_size():
    env = make(10)
    with pytest.raises(TaskInputError, match="does not fit"):
        env.reset(options={"instance": Sum("1" * 300, "1")})


def test_reset_starts_a_fresh_episode():
    env = make(3)
    env.reset(options={"instance": Sum("1", "2")})
    env.step("⟨answer⟩9⟨a$⟩")
    env.reset(options={"instance": Sum("1", "2")})
    _, reward, terminated, _, info = env.step("⟨answer⟩3⟨end⟩")
    assert (reward, terminated, info["answer"]) == (1.0, True, "3")


def test_tool_commands_answer_with_the_tools_observation():
    env = make(3)
    env.reset(options={"instance": Sum("12", "3")})
    assert env.step("⟨a?⟩")[0] == "1"
    assert env.step("⟨a>⟩")[0] == ""
    assert env.step("⟨a?⟩")[0] == "2"
    assert env.step("⟨b»=⟩")[0] == ""
    assert env.step("⟨b<⟩")[0] == ""
    assert env.step("⟨b,⟩")[0] == "3"
    assert env.step("⟨b,⟩")[0] == "+"
    assert "a?" in env.commands and "b«#" in env.commands


def test_actions_are_recorded_on_the_tape_before_their_command_runs():
    env = make(3)
    env.reset(options={"instance": Sum("1", "2")})
    assert env.step("xy⟨a$⟩")[0] == ""
    assert env.step("⟨a?⟩")[0] == "⟨a$⟩"  # the jump landed on its own command cell
    env.step("⟨a<⟩")  # the tape is now 1+2=xy⟨a$⟩⟨a?⟩⟨a<⟩: commands are recorded too
    assert env.step("⟨a?⟩")[0] == "y"
    env.step("⟨a$⟩")
    assert env.step("⟨a?⟩")[0] == "⟨a$⟩"


def test_reward_is_one_only_for_an_exact_answer():
    env = make(3)
    outcomes = {}
    for answer in ("5", "6", "05", "5 ", ""):
        env.reset(options={"instance": Sum("2", "3")})
        observation, reward, terminated, truncated, info = env.step(f"⟨answer⟩{answer}⟨end⟩")
        assert terminated and not truncated and observation == ""
        assert info["expected"] == "5" and info["answer"] == answer
        outcomes[answer] = (reward, info["correct"])
    assert outcomes == {"5": (1.0, True), "6": (0.0, False), "05": (0.0, False), "5 ": (0.0, False), "": (0.0, False)}


def test_answer_text_may_be_spread_over_several_actions():
    env = make(3)
    env.reset(options={"instance": Sum("99", "9")})
    env.step("thinking⟨answer⟩1⟨a?⟩")
    env.step("0⟨a?⟩")
    _, reward, terminated, _, info = env.step("8⟨end⟩")
    assert (reward, terminated, info["answer"]) == (1.0, True, "108")


def test_end_without_an_answer_scores_zero():
    env = make(3)
    env.reset(options={"instance": Sum("0", "0")})
    _, reward, terminated, _, info = env.step("⟨end⟩")
    assert (reward, terminated, info["answer"], info["correct"]) == (0.0, True, "", False)


@pytest.mark.parametrize(
    "action",
    ["", "12", "⟨a<⟩⟨a>⟩", "⟨a?⟩x⟨a?⟩", "⟨zz⟩", "⟨c?⟩", "⟨answer⟩", "⟨a?⟩ "],
    ids=["empty", "no-command", "two-commands", "command-in-the-middle", "unknown", "other-pointer", "bare-answer-marker", "trailing-text"],
)
def test_malformed_action_gets_an_error_observation_and_the_episode_continues(action):
    env = make(3)
    env.reset(options={"instance": Sum("2", "3")})
    observation, reward, terminated, truncated, _ = env.step(action)
    assert observation.startswith("error: ")
    assert (reward, terminated, truncated) == (0.0, False, False)
    assert env.observation_space.contains(observation)
    assert env.step("⟨b?⟩")[0] == "2"  # the tools still answer
    _, reward, terminated, _, _ = env.step("⟨answer⟩5⟨end⟩")
    assert (reward, terminated) == (1.0, True)


def test_observations_stay_in_the_observation_space_when_a_long_symbol_is_read_back():
    env = make(3)
    env.reset(options={"instance": Sum("1", "2")})
    long_symbol = "⟨" + "x" * 300 + "⟩"  # a valid action (in the action space), an unknown command
    assert env.action_space.contains(long_symbol)
    assert env.step(long_symbol)[0].startswith("error: ")  # ...but it is on the tape now
    env.step("⟨a$⟩")
    env.step("⟨a<⟩")
    observation = env.step("⟨a?⟩")[0]
    assert env.observation_space.contains(observation), len(observation)


_PIECES = st.sampled_from(["⟨a?⟩", "⟨a,⟩", "⟨b<⟩", "⟨a»+⟩", "⟨b«#⟩", "⟨a$⟩", "⟨answer⟩", "⟨end⟩", "⟨zz⟩", "1", "#", "^", "+", " ", "⟨", "»"])


@settings(max_examples=150, deadline=None)
@given(actions=st.lists(st.lists(_PIECES, max_size=4).map("".join), max_size=40))
def test_any_action_sequence_gives_observations_never_exceptions(actions):
    env = make(2)
    env.reset(seed=0)
    for action in actions:
        observation, reward, terminated, truncated, _ = env.step(action)
        assert env.observation_space.contains(observation)
        assert reward in (0.0, 1.0)
        if terminated or truncated:
            break


def test_truncated_at_the_step_budget():
    env = make(3)
    env.reset(options={"instance": Sum("123", "4")})
    budget = env.task.step_budget(3)
    assert budget == 6 * 3 + 32
    for _ in range(budget - 1):
        _, _, terminated, truncated, _ = env.step("⟨a?⟩")
        assert not terminated and not truncated
    _, reward, terminated, truncated, info = env.step("⟨a?⟩")
    assert (reward, terminated, truncated) == (0.0, False, True)
    assert info["correct"] is False and info["expected"] == "127"


def test_malformed_actions_count_against_the_budget():
    env = make(1)
    env.reset(options={"instance": Sum("1", "1")})
    results = [env.step("oops") for _ in range(env.task.step_budget(1))]
    assert [r[3] for r in results] == [False] * (len(results) - 1) + [True]


def test_the_budget_follows_the_instance_size_not_the_env_size():
    env = make(100)
    env.reset(options={"instance": Sum("1", "1")})
    results = [env.step("⟨a?⟩") for _ in range(env.task.step_budget(1))]
    assert results[-1][3] and not any(r[3] for r in results[:-1])


def test_step_before_reset_raises():
    with pytest.raises(RuntimeError, match="reset"):
        make(3).step("⟨a?⟩")


def test_non_string_action_raises():
    env = make(3)
    env.reset(seed=0)
    with pytest.raises(TypeError):
        env.step(5)


@pytest.mark.parametrize("size", [0, -2, 2.5, "4", True, None])
def test_invalid_size_raises_task_input_error(size):
    with pytest.raises(TaskInputError):
        ToolEnv("addition", size)
    with pytest.raises(TaskInputError):
        gym.make("ssmagent/Addition-v0", size=size)


@pytest.mark.parametrize("mode", ["human", "rgb_array", "ANSI"])
def test_invalid_render_mode_raises_task_input_error(mode):
    with pytest.raises(TaskInputError):
        ToolEnv("addition", 3, render_mode=mode)


def test_unknown_task_raises_task_input_error_naming_the_known_ones():
    with pytest.raises(TaskInputError, match="addition"):
        ToolEnv("nosuchtask", 3)


def test_ansi_render_shows_the_last_observation():
    env = ToolEnv("addition", 3, render_mode="ansi")
    env.reset(options={"instance": Sum("7", "8")})
    assert env.render() == "7+8="
    env.step("⟨a?⟩")
    assert env.render() == "7"
    env.step("⟨a>⟩")
    assert env.render() == ""
    assert ToolEnv("addition", 3).render() is None


def test_charset_holds_printable_ascii_and_the_command_brackets():
    assert set("0123456789+=#^⟨⟩»«azAZ \n") <= CHARSET
    assert "é" not in CHARSET

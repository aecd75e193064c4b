"""The multiplication task (ssmagent.tasks.multiplication), its expert through the real env, and
the locality check of its format (ssmagent.eval.locality, DESIGN.md §2)."""

from __future__ import annotations

from collections import deque

import gymnasium as gym
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import ssmagent.env  # noqa: F401 - registers the envs
from expert_run import run_expert
from ssmagent.agent import ExpertPolicy, Tokenizer, run_episodes, task_commands
from ssmagent.eval.locality import LocalityConflict, check_locality, locality_table
from ssmagent.tasks import TaskInputError, get_task
from ssmagent.tasks.multiplication import Product, multiply_decimal
from ssmagent.tools.base import split_symbols


@pytest.fixture(scope="module")
def mult():
    return get_task("multiplication")


@pytest.fixture(scope="module")
def mtok(mult):
    return Tokenizer.for_commands(task_commands(mult))


def column_carries(a: str, b: str) -> list[int]:
    """The carry out of every column of the column-sum a_i·b_0 + a_(i-1)·b_1 + carry."""
    b0, b1 = int(b[-1]), int(b[-2]) if len(b) == 2 else 0
    digits = [int(d) for d in reversed(a)] + [0, 0]
    carry, carries = 0, []
    for i, x in enumerate(digits):
        carry = (carry + x * b0 + (digits[i - 1] if i else 0) * b1) // 10
        carries.append(carry)
    return carries


# --- exact arithmetic --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "a, b, product",
    [("0", "0", "0"), ("0", "99", "0"), ("123", "0", "0"), ("9", "9", "81"), ("57", "38", "2166"),
     ("999", "99", "98901"), ("1000", "10", "10000"), ("12", "5", "60")],
)
def test_multiply_decimal_edge_cases(a, b, product):
    assert multiply_decimal(a, b) == product


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 10**80), st.integers(0, 99))
def test_multiply_decimal_equals_python_integer_multiplication(a, b):
    assert multiply_decimal(str(a), str(b)) == str(a * b)


# --- instances ---------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [1, 2, 3, 7, 20])
def test_sample_gives_a_of_exactly_size_digits_and_b_of_one_or_two_without_leading_zeros(mult, size):
    rng = np.random.default_rng(size)
    for _ in range(400):
        p = mult.sample(size, rng)
        for x in (p.a, p.b):
            assert x.isascii() and x.isdigit()
            assert x == "0" or not x.startswith("0")
        assert len(p.a) == size == mult.size_of(p)
        assert len(p.b) in (1, 2)


@pytest.mark.parametrize("size", [1, 5, 30])
def test_sample_draws_both_kinds_about_equally_and_weights_in_zero_and_long_carries(mult, size):
    rng = np.random.default_rng(100 + size)
    samples = [mult.sample(size, rng) for _ in range(1000)]
    two_digit = sum(len(p.b) == 2 for p in samples)
    assert 400 <= two_digit <= 600
    assert any(p.b == "0" for p in samples)
    assert any(p.a == "9" * size and p.b == "99" for p in samples)  # carry 17 through every column
    if size == 1:
        assert any(p.a == "0" for p in samples)
    else:  # two-digit carries need two columns with two products
        assert sum(max(column_carries(p.a, p.b)) >= 10 for p in samples) >= 100


def test_sample_is_reproducible_from_the_rng_seed(mult):
    first = [mult.sample(12, np.random.default_rng(7)) for _ in range(5)]
    again = [mult.sample(12, np.random.default_rng(7)) for _ in range(5)]
    assert first == again


def test_sample_training_sizes_stay_within_the_maximum(mult):
    rng = np.random.default_rng(1)
    assert {mult.size_of(mult.sample_training(10, rng)) for _ in range(500)} == set(range(1, 11))


@pytest.mark.parametrize("size", [0, -1])
def test_sample_rejects_sizes_below_one(mult, size):
    with pytest.raises(TaskInputError):
        mult.sample(size, np.random.default_rng(0))


@pytest.mark.parametrize("size", [1, 4, 100])
def test_hard_instances_are_long_carry_chains_of_both_kinds(mult, size):
    nines = "9" * size
    hard = mult.hard_instances(size)
    assert hard == [Product(nines, "99"), Product(nines, "9"), Product("1" * size, "1")]
    assert all(mult.size_of(p) == size for p in hard)
    assert max(column_carries(nines, "99")) == (17 if size > 1 else 8)


def test_question_and_answer_format(mult):
    p = Product("57", "38")
    assert mult.question(p) == "57*38="
    assert mult.answer(p) == "2166"
    assert mult.score(p, "2166") and not mult.score(p, "02166")
    assert mult.answer(Product("123", "0")) == "0"
    assert mult.to_json(p) == {"a": "57", "b": "38"}


# --- parsing user input ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, instance",
    [
        (["123456", "78"], Product("123456", "78")),
        (["0012", "07"], Product("12", "7")),
        (["000", "00"], Product("0", "0")),
        (["9" * 3000, "99"], Product("9" * 3000, "99")),
    ],
)
def test_parse_accepts_digit_strings_and_strips_leading_zeros(mult, args, instance):
    assert mult.parse(args) == instance


@pytest.mark.parametrize(
    "args",
    [["12", "123"], ["12", "0100"], ["12a", "3"], ["-5", "3"], ["1.5", "3"], ["3", "+4"], ["3", ""],
     ["٣", "1"], ["1", "²"], ["1"], ["1", "2", "3"], []],
)
def test_parse_rejects_malformed_input_with_a_one_line_task_input_error(mult, args):
    with pytest.raises(TaskInputError) as err:
        mult.parse(args)
    assert "\n" not in str(err.value)


def test_parse_says_b_must_have_one_or_two_digits(mult):
    with pytest.raises(TaskInputError, match="1 or 2 digits"):
        mult.parse(["5", "123"])


# --- the expert through the real env -----------------------------------------------------------


def test_expert_solves_random_and_hard_instances_of_sizes_1_to_30_of_both_kinds_exactly(mult):
    rng = np.random.default_rng(2024)
    for size in range(1, 31):
        randoms = [mult.sample(size, rng) for _ in range(4)]
        a = randoms[0].a
        both = [Product(a, str(rng.integers(1, 10))), Product(a, str(rng.integers(10, 100)))]
        for instance in [*randoms, *both, *mult.hard_instances(size)]:
            run = run_expert(mult, instance)
            assert (run.reward, run.terminated, run.truncated) == (1.0, True, False), instance
            assert run.info["answer"] == str(int(instance.a) * int(instance.b))


@pytest.mark.parametrize(
    "instance",
    [Product("0", "0"), Product("0", "99"), Product("7", "0"), Product("12345", "0"), Product("5", "2"),
     Product("1", "1"), Product("9", "99"), Product("100000", "10"), Product("25", "40")],
)
def test_expert_solves_edge_instances(mult, instance):
    run = run_expert(mult, instance)
    assert run.reward == 1.0 and run.info["answer"] == str(int(instance.a) * int(instance.b))


def test_expert_stream_is_the_documented_worked_example(mult, mtok):
    (trajectory,) = run_episodes(mult, [Product("57", "38")], ExpertPolicy(mult))
    stream = "".join(mtok.vocab[i] for i in trajectory.stream(mtok)[0][1:])
    columns = [
        "⟨b?⟩8⟨a,⟩765⟨c?⟩3⟨d,⟩*65#50",
        "⟨b?⟩8⟨a,⟩554⟨c?⟩3⟨d,⟩764#60",
        "⟨b?⟩8⟨a,⟩^60⟨c?⟩3⟨d,⟩510#20",
        "⟨b?⟩8⟨a,⟩^20⟨c?⟩3⟨d,⟩^20#00",
        "⟨b?⟩8⟨a,⟩^00⟨c?⟩3⟨d,⟩^⟨answer⟩⟨a$⟩",
    ]
    answer = "⟨a«#⟩⟨a<⟩⟨a<⟩⟨a,⟩22" + "".join(f"⟨a«#⟩⟨a<⟩⟨a<⟩⟨a?⟩{d}{d}" for d in "166") + "⟨a«#⟩⟨a<⟩⟨a<⟩⟨a?⟩^⟨end⟩"
    assert stream == "⟨a»*⟩⟨a<⟩⟨b»=⟩⟨b<⟩⟨c»=⟩⟨c<⟩⟨c<⟩⟨c?⟩3⟨d»*⟩" + "".join(columns) + answer


def test_one_digit_multiplier_keeps_d_in_step_with_a_so_no_zero_column_is_left_on_top(mult, mtok):
    (trajectory,) = run_episodes(mult, [Product("12", "3")], ExpertPolicy(mult))
    stream = "".join(mtok.vocab[i] for i in trajectory.stream(mtok)[0][1:])
    assert stream == (
        "⟨a»*⟩⟨a<⟩⟨b»=⟩⟨b<⟩⟨c»=⟩⟨c<⟩⟨c<⟩⟨c?⟩*⟨d»*⟩⟨d<⟩"
        "⟨b?⟩3⟨a,⟩260⟨c?⟩*⟨d,⟩260#00"
        "⟨b?⟩3⟨a,⟩130⟨c?⟩*⟨d,⟩130#00"
        "⟨b?⟩3⟨a,⟩^00⟨c?⟩*⟨d,⟩^⟨answer⟩⟨a$⟩"
        "⟨a«#⟩⟨a<⟩⟨a<⟩⟨a,⟩33⟨a«#⟩⟨a<⟩⟨a<⟩⟨a?⟩66⟨a«#⟩⟨a<⟩⟨a<⟩⟨a?⟩^⟨end⟩"
    )



def test_expert_solves_2000_digits_of_both_kinds_exactly_at_16_generated_and_5_observed_tokens_per_digit(mult):
    size = 2000
    rng = np.random.default_rng(2000)
    a = mult.sample(size, rng).a
    instances = [*mult.hard_instances(size), Product(a, "7"), Product(a, "38"), Product(a, "90"), Product(a, "0")]
    trajectories = run_episodes(mult, instances, ExpertPolicy(mult), batch_size=8, keep_segments=False)
    for instance, trajectory in zip(instances, trajectories):
        assert trajectory.correct and not trajectory.truncated
        assert trajectory.answer == str(int(instance.a) * int(instance.b))
        if instance.b != "0":
            assert abs(trajectory.generated_tokens / size - 16) <= 0.5
            assert abs(trajectory.observed_tokens / size - 5) <= 0.5


def test_expert_needs_fewer_steps_than_the_budget_at_every_size(mult):
    for size in (1, 2, 10, 100):
        for instance in mult.hard_instances(size):
            run = run_expert(mult, instance)
            assert run.terminated and run.steps < mult.step_budget(size)


def test_actions_fit_the_action_limit(mult):
    (trajectory,) = run_episodes(mult, [Product("98765", "99")], ExpertPolicy(mult))
    longest = max(len(split_symbols(s.text)) for s in trajectory.segments if s.kind != "question")
    assert longest <= mult.max_action_tokens


def test_a_zero_product_is_answered_0_after_its_first_digit(mult, mtok):
    for instance in (Product("405", "0"), Product("0", "57"), Product("0", "0")):
        (trajectory,) = run_episodes(mult, [instance], ExpertPolicy(mult))
        stream = "".join(mtok.vocab[i] for i in trajectory.stream(mtok)[0][1:])
        assert stream.endswith("⟨answer⟩⟨a$⟩⟨a«#⟩⟨a<⟩⟨a<⟩⟨a,⟩00⟨end⟩")
        assert trajectory.correct and trajectory.answer == "0"


# --- the Gymnasium env -------------------------------------------------------------------------


def test_reset_draws_an_instance_of_the_env_size_and_the_question_fits_the_observation_space():
    env = gym.make("ssmagent/Multiply-v0", size=12).unwrapped
    for seed in range(20):
        question, info = env.reset(seed=seed)
        a, b = question.rstrip("=").split("*")
        assert len(a) == 12 and len(b) in (1, 2)
        assert info["instance"] == {"a": a, "b": b}
        assert env.observation_space.contains(question)


# --- phases ------------------------------------------------------------------------------------


def test_phases_name_setup_column_parts_and_answer_digits(mult, mtok):
    (trajectory,) = run_episodes(mult, [Product("57", "38")], ExpertPolicy(mult))
    symbols = [mtok.vocab[i] for i in trajectory.stream(mtok)[0][1:]]

    def phase_before(text: str, occurrence: int = 1) -> str:
        target = split_symbols(text)
        hits = [i for i in range(len(symbols)) if symbols[i : i + len(target)] == target]
        return mult.phase(symbols[: hits[occurrence - 1]])

    assert mult.phase([]) == "setup"
    assert phase_before("⟨d»*⟩⟨b?⟩") == "setup"
    assert phase_before("⟨a,⟩7") == "column 1 (least significant first), reading b_0"
    assert phase_before("65⟨c?⟩") == "column 1 (least significant first), reading a_i, writing S = carry + a_i·b_0"
    assert phase_before("⟨d,⟩*") == "column 1 (least significant first), reading b_1"
    assert phase_before("65#50") == "column 1 (least significant first), reading a_(i-1), writing the digit and carry"
    assert phase_before("10#20").startswith("column 3 ")
    assert phase_before("⟨answer⟩").startswith("column 5 ")
    assert phase_before("⟨a«#⟩", 1) == "answer, digit 1 (most significant first)"
    assert phase_before("1⟨a«#⟩") == "answer, digit 2 (most significant first)"
    assert phase_before("⟨end⟩") == "answer, digit 5 (most significant first)"


# --- the locality check of the multiplication format -------------------------------------------


def _streams(task, tokenizer, instances):
    return [t.stream(tokenizer) for t in run_episodes(task, instances, ExpertPolicy(task), keep_segments=True)]


def _column(carry: int, prev: str, x: str, b: str) -> int:
    """The carry out of a column whose a-digits are x (this column) and prev (the one before)."""
    b0, b1 = int(b[-1]), int(b[-2]) if len(b) == 2 else 0
    value = lambda s: int(s) if s.isdigit() else 0  # noqa: E731
    return (carry + value(x) * b0 + value(prev) * b1) // 10


def state_covering_instances(b: str, max_size: int = 10) -> list[Product]:
    """Instances × b of at most ``max_size`` digits that, together, take every column
    transition the multiplication automaton can take.

    Every window of the expert's stream (6 tokens) lies within one column and the tail of the
    one before it, so which window occurs depends only on one transition: the state (carry in,
    previous digit of A) and the next digit of A (or the end of A). Random short instances meet
    them all only after very many episodes (3,000 random ones predict ~93 % of a 300-digit
    stream); this set takes each from the shortest path to its state, ending right after it
    (so the transition into the last column, and the answer's top digits, are met too).
    """
    start = (0, "*")
    paths = {start: ""}  # state → digits of A read so far, least significant first
    queue = deque([start])
    while queue:
        state = queue.popleft()
        carry, prev = state
        for x in "0123456789":
            nxt = (_column(carry, prev, x, b), x)
            if nxt not in paths and len(paths[state]) < max_size - 2:
                paths[nxt] = paths[state] + x
                queue.append(nxt)
    instances = {Product("0", b)}
    for path in paths.values():
        for x in "0123456789":
            digits = path + x + ("1" if x == "0" else "")
            instances.add(Product(digits[::-1], b))
    return sorted(instances, key=lambda p: (len(p.a), p.a))


def test_state_covering_instances_are_short_and_reach_the_largest_carry():
    instances = state_covering_instances("99")
    assert max(len(p.a) for p in instances) <= 10
    assert max(max(column_carries(p.a, p.b)) for p in instances) == 17


def test_locality_table_with_a_five_token_window_has_conflicts(mult, mtok):
    rng = np.random.default_rng(5)
    short = _streams(mult, mtok, [mult.sample_training(10, rng) for _ in range(200)])
    table = locality_table(short, 5)
    assert table.conflicts
    with pytest.raises(LocalityConflict):
        locality_table(short, 5, strict=True)


@pytest.mark.slow
def test_a_6_token_window_from_short_expert_episodes_predicts_long_ones_exactly(mult, mtok):
    rng = np.random.default_rng(8)
    long_instances = [*mult.hard_instances(400), *(mult.sample(400, rng) for _ in range(3))]
    multipliers = sorted({p.b for p in long_instances})
    assert {len(b) for b in multipliers} == {1, 2}
    short_instances = [p for b in multipliers for p in state_covering_instances(b)]
    short_instances += [mult.sample_training(10, rng) for _ in range(300)]
    assert max(mult.size_of(p) for p in short_instances) <= 10
    short = _streams(mult, mtok, short_instances)

    table = locality_table(short, 6)
    assert table.conflicts == {}
    locality_table(short, 6, strict=True)  # no conflict to raise

    long = _streams(mult, mtok, long_instances)
    assert check_locality(table, long, 6) == 1.0

    # one token fewer is not enough: e, h, D, H and the carry's units each need a token 6 back
    assert locality_table(short, 5).conflicts

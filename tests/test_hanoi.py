"""The Tower of Hanoi task (ssmagent.tasks.hanoi): optimal lengths, the replaying scorer, the
generator, the tape expert through the real env, the Gymnasium checker, and the locality check of
its format (ssmagent.eval.locality, DESIGN.md §2)."""

from __future__ import annotations

import itertools
from collections import deque

import numpy as np
import pytest

from ssmagent.agent import ExpertPolicy, Tokenizer, run_episodes, task_commands
from ssmagent.env import ToolEnv
from ssmagent.eval.locality import check_locality, generated_windows, locality_table
from ssmagent.tasks import TASKS, TaskInputError, get_task
from expert_run import run_expert
from ssmagent.tasks.hanoi import MAX_DISKS, PEGS, Tower, format_moves, optimal_length, relabel, replay, solve
from ssmagent.tools.base import command_symbol as cmd


@pytest.fixture(scope="module")
def hanoi():
    return get_task("hanoi")


@pytest.fixture(scope="module")
def htok(hanoi) -> Tokenizer:
    return Tokenizer.for_commands(task_commands(hanoi))


def all_configurations(n: int):
    return ["".join(p) for p in itertools.product(PEGS, repeat=n)]


def bfs_distances(n: int, target: str) -> dict[str, int]:
    """Exact distances to 'every disk on target' over the whole state graph (reverse BFS; moves
    are reversible)."""

    def moves(state: str):
        for x in PEGS:
            top = next((k for k in range(n) if state[k] == x), None)
            if top is None:
                continue
            for y in PEGS:
                if y != x and all(state[j] != y for j in range(top)):
                    yield state[:top] + y + state[top + 1 :]

    start = target * n
    dist = {start: 0}
    queue = deque([start])
    while queue:
        s = queue.popleft()
        for t in moves(s):
            if t not in dist:
                dist[t] = dist[s] + 1
                queue.append(t)
    return dist


# --- optimal length ----------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5])
def test_optimal_length_equals_bfs_distance_for_every_configuration_and_target(n):
    for target in PEGS:
        dist = bfs_distances(n, target)
        assert len(dist) == 3**n  # every configuration is legal and reachable
        for pegs in all_configurations(n):
            assert optimal_length(pegs, target) == dist[pegs], (pegs, target)


@pytest.mark.parametrize("n", [1, 2, 5, 12, 30, 64])
def test_classic_tower_needs_two_to_the_n_minus_one_moves(n):
    assert optimal_length("A" * n, "C") == 2**n - 1
    assert optimal_length("B" * n, "A") == 2**n - 1
    assert optimal_length("C" * n, "C") == 0


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 6])
def test_reference_solution_is_legal_and_optimal_from_every_configuration(n):
    for target in PEGS:
        for pegs in all_configurations(n):
            moves = solve(pegs, target)
            assert len(moves) == optimal_length(pegs, target)
            assert replay(Tower(pegs, target), format_moves(moves, Tower(pegs, target))) == ""


# --- the scorer --------------------------------------------------------------------------------


def test_scorer_accepts_the_optimal_answer_with_or_without_the_final_newline(hanoi):
    tower = Tower("AA", "C")
    assert hanoi.answer(tower) == "1 A B\n2 A C\n1 B C\n"
    assert hanoi.score(tower, "1 A B\n2 A C\n1 B C\n")
    assert hanoi.score(tower, "1 A B\n2 A C\n1 B C")
    assert hanoi.score(Tower("CC", "C"), "")  # already solved: the empty move list


@pytest.mark.parametrize(
    "answer, why",
    [
        ("2 A C\n1 A B\n1 B C\n", "not on top"),  # disk 2 is under disk 1
        ("1 A C\n2 A C\n1 C B\n", "cannot go onto"),  # disk 2 onto disk 1
        ("1 B C\n2 A C\n1 B C\n", "not on top"),  # peg B is empty
        ("3 A C\n2 A C\n1 B C\n", "not a move"),  # no disk 3
    ],
)
def test_scorer_rejects_illegal_moves(hanoi, answer, why):
    assert not hanoi.score(Tower("AA", "C"), answer)
    assert why in replay(Tower("AA", "C"), answer)


def test_scorer_rejects_a_correct_but_longer_sequence_and_a_truncated_one(hanoi):
    tower = Tower("AA", "C")
    detour = "1 A C\n1 C B\n2 A C\n1 B C\n"  # legal, ends on C, one move too many
    assert replay(Tower("AA", "C"), detour) == "4 moves, the optimum is 3"
    assert not hanoi.score(tower, detour)
    assert not hanoi.score(tower, "1 A B\n2 A C\n")  # two moves: disk 1 never arrives
    assert not hanoi.score(tower, "")
    # a legal 7-move sequence for 2 disks that wanders and ends on C
    wander = "1 A B\n1 B C\n1 C A\n1 A B\n2 A C\n1 B A\n1 A C\n"
    assert "not every" not in replay(Tower("AA", "C"), wander) and not hanoi.score(tower, wander)


def test_scorer_rejects_a_sequence_that_ends_on_the_wrong_peg(hanoi):
    assert not hanoi.score(Tower("AA", "C"), "1 A C\n2 A B\n1 C B\n")
    assert replay(Tower("AA", "C"), "1 A C\n2 A B\n1 C B\n") == "not every disk ends on C"


@pytest.mark.parametrize(
    "line",
    ["1 A", "1 A C C", "1 AB C", "1 A BC", "1  C", "1 A ", "1  A C", " 1 A C", "1 a c", "01 A C", "+1 A C", "x A C", "1 A A", "1 A D", "0 A C", "١ A C"],
)
def test_scorer_rejects_malformed_lines(hanoi, line):
    assert not hanoi.score(Tower("A", "C"), line + "\n")
    assert replay(Tower("A", "C"), line + "\n").startswith("line 1")


def test_scorer_rejects_blank_lines_between_moves(hanoi):
    assert not hanoi.score(Tower("AA", "C"), "1 A B\n\n2 A C\n1 B C\n")
    assert not hanoi.score(Tower("A", "C"), "1 A C\n\n")


# --- the generator -----------------------------------------------------------------------------


@pytest.mark.parametrize("size", [1, 2, 5, 12])
def test_sample_gives_a_legal_configuration_of_exactly_size_disks_and_a_target(hanoi, size):
    rng = np.random.default_rng(size)
    samples = [hanoi.sample(size, rng) for _ in range(300)]
    for tower in samples:
        assert len(tower.pegs) == size == hanoi.size_of(tower)
        assert set(tower.pegs) <= set(PEGS) and tower.target in PEGS
    assert {t.target for t in samples} == set(PEGS)
    assert any(len(set(t.pegs)) == 1 and t.pegs[0] != t.target for t in samples)  # classic towers
    if size > 2:
        assert any(len(set(t.pegs)) == 3 for t in samples)  # disks spread over all three pegs


def test_sample_is_reproducible_from_the_rng_seed(hanoi):
    first = [hanoi.sample(9, np.random.default_rng(7)) for _ in range(3)]
    assert first == [hanoi.sample(9, np.random.default_rng(7)) for _ in range(3)]


def test_sample_training_sizes_stay_within_the_maximum(hanoi):
    rng = np.random.default_rng(1)
    assert {hanoi.size_of(hanoi.sample_training(6, rng)) for _ in range(300)} == set(range(1, 7))


@pytest.mark.parametrize("size", [1, 2, 8, 12, 50, MAX_DISKS])
def test_relabel_keeps_the_tower_and_gives_increasing_labels_from_1_with_the_parity_of_the_rank(size):
    rng = np.random.default_rng(size)
    for _ in range(50):
        tower = relabel(Tower("AB" * (size // 2) + "C" * (size % 2), "B"), rng)
        labels = tower.labels
        assert (tower.pegs, tower.target, len(labels), labels[0]) == ("AB" * (size // 2) + "C" * (size % 2), "B", size, 1)
        assert all(b > a and (b - a) % 2 == 1 for a, b in itertools.pairwise(labels)) and labels[-1] <= MAX_DISKS


def test_training_towers_of_at_most_8_disks_copy_every_digit_as_units_and_tens(hanoi):
    rng = np.random.default_rng(3)
    towers = [hanoi.sample_training(8, rng) for _ in range(400)]
    assert any(not t.labels for t in towers) and any(t.labels for t in towers)
    labels = {label for t in towers for label in t.labels[1:]}
    assert {label % 10 for label in labels} == set(range(10))
    assert {1, 2, 3} <= {label // 10 for label in labels}  # the tens of 10..39 (12 disks need 10..12)


def test_scorer_calls_disks_by_their_labels(hanoi):
    tower = Tower("AA", "C", (1, 4))
    assert hanoi.answer(tower) == "1 A B\n4 A C\n1 B C\n"
    assert hanoi.score(tower, "1 A B\n4 A C\n1 B C\n")
    assert "not a move" in replay(tower, "1 A B\n2 A C\n1 B C\n")  # the rank is not the name
    assert hanoi.question(tower) == "CA|,A,.04#" and hanoi.to_json(tower)["labels"] == [1, 4]


def test_expert_solves_relabelled_towers_through_the_env(hanoi):
    rng = np.random.default_rng(11)
    for size in range(1, 9):
        for _ in range(3):
            tower = relabel(hanoi.sample(size, rng), rng)
            run = run_expert(hanoi, tower)
            assert (run.reward, run.terminated, run.truncated) == (1.0, True, False), tower
            assert run.info["answer"] == hanoi.answer(tower)


@pytest.mark.parametrize("size", [1, 3, 12])
def test_hard_instances_include_the_classic_a_to_c_tower(hanoi, size):
    hard = hanoi.hard_instances(size)
    assert Tower("A" * size, "C") in hard
    assert all(optimal_length(t.pegs, t.target) == 2**size - 1 for t in hard)


@pytest.mark.parametrize("size", [0, -1, 100])
def test_sizes_outside_1_to_99_disks_are_rejected(hanoi, size):
    with pytest.raises(TaskInputError):
        hanoi.sample(size, np.random.default_rng(0))


def test_question_holds_the_target_the_pegs_and_two_digit_labels(hanoi):
    assert hanoi.question(Tower("AA", "C")) == "CA|,A,.02#"
    assert hanoi.question(Tower("B", "A")) == "AB|,."
    q = hanoi.question(Tower("ABC" * 4, "B"))
    assert q.startswith("BA|,B,C,A") and q.endswith("11#12#") and len(q) == 5 * 12
    assert hanoi.to_json(Tower("AB", "C")) == {"pegs": "AB", "target": "C"}


# --- parsing user input ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, tower", [(["AAA", "C"], Tower("AAA", "C")), (["abc", "b"], Tower("ABC", "B")), (["C", "C"], Tower("C", "C"))]
)
def test_parse_reads_the_pegs_smallest_disk_first_and_the_target(hanoi, args, tower):
    assert hanoi.parse(args) == tower


@pytest.mark.parametrize(
    "args", [[], ["AAA"], ["AAA", "C", "B"], ["AAD", "C"], ["", "C"], ["AA", "CC"], ["AA", "D"], ["A" * 100, "C"]]
)
def test_parse_rejects_malformed_input_with_a_one_line_task_input_error(hanoi, args):
    with pytest.raises(TaskInputError) as err:
        hanoi.parse(args)
    assert "\n" not in str(err.value)


def test_hanoi_is_registered(hanoi):
    assert TASKS["hanoi"] is hanoi and hanoi.env_id == "ssmagent/Hanoi-v0" and hanoi.size_unit == "disks"


# --- the expert through the real env -----------------------------------------------------------


def test_expert_solves_every_configuration_and_target_up_to_4_disks_exactly(hanoi):
    for n in range(1, 5):
        for target in PEGS:
            for pegs in all_configurations(n):
                run = run_expert(hanoi, Tower(pegs, target))
                reward, terminated, truncated, info = run.reward, run.terminated, run.truncated, run.info
                assert (reward, terminated, truncated) == (1.0, True, False), (pegs, target, info)


def test_expert_solves_random_instances_of_1_to_10_disks_exactly(hanoi):
    rng = np.random.default_rng(2024)
    for size in range(1, 11):
        for tower in [hanoi.sample(size, rng) for _ in range(4)] + hanoi.hard_instances(size):
            run = run_expert(hanoi, tower)
            reward, terminated, truncated, info, steps = run.reward, run.terminated, run.truncated, run.info, run.steps
            assert (reward, terminated, truncated) == (1.0, True, False), tower
            assert replay(tower, info["answer"]) == ""
            assert steps < hanoi.step_budget(size)


def test_expert_solves_the_classic_12_disk_tower_in_4095_moves(hanoi):
    run = run_expert(hanoi, Tower("A" * 12, "C"))
    reward, terminated, truncated, info, steps = run.reward, run.terminated, run.truncated, run.info, run.steps
    assert (reward, terminated, truncated) == (1.0, True, False)
    assert info["answer"].count("\n") == 4095 and steps < hanoi.step_budget(12)


def test_expert_writes_the_documented_two_disk_episode(hanoi):
    env = ToolEnv(hanoi, 2)
    observation, _ = env.reset(options={"instance": Tower("AA", "C")})
    expert, stream = hanoi.expert(), []
    while True:
        action = expert.act(observation)
        observation, reward, terminated, _, info = env.step(action)
        stream.append(action + (f"[{observation}]" if observation else ""))
        if terminated:
            break
    text = "".join(stream)
    assert text.startswith("⟨p?⟩[C]c⟨p».⟩⟨p,⟩[.]c⟨p,⟩[,]c⟨p,⟩[A]B⟨p,⟩[,]B⟨p,⟩[|]⟨p,⟩[A]!%BA1!|⟨q«.⟩")
    assert "⟨p?⟩[A],CB⟨q<⟩⟨q,⟩[2]⟨q,⟩[0]%CB*CA2!⟨p»,⟩" in text
    assert text.endswith("⟨a,⟩[*]\n1⟨a,⟩[B] B⟨a,⟩[C] C⟨a,⟩[%]\n⟨a»!⟩⟨a»!⟩⟨a<⟩⟨a,⟩[=]⟨end⟩")
    assert reward == 1.0 and info["answer"] == "1 A B\n2 A C\n1 B C\n"


def test_an_already_solved_instance_is_answered_with_no_moves(hanoi):
    run = run_expert(hanoi, Tower("BBB", "B"))
    reward, terminated, info, steps = run.reward, run.terminated, run.info, run.steps
    assert (reward, terminated, info["answer"], steps) == (1.0, True, "", 2 * 3 + 5)


def test_expert_actions_stay_within_max_action_tokens_and_observations_within_the_space(hanoi, htok):
    rng = np.random.default_rng(3)
    instances = [hanoi.sample(size, rng) for size in (1, 2, 7, 20)]
    for tower in instances[:3]:
        env = ToolEnv(hanoi, hanoi.size_of(tower))
        observation, _ = env.reset(options={"instance": tower})
        assert env.observation_space.contains(observation)
        expert, done = hanoi.expert(), False
        while not done:
            action = expert.act(observation)
            assert len(htok.encode(action)) <= hanoi.max_action_tokens
            observation, _, terminated, truncated, _ = env.step(action)
            assert env.observation_space.contains(observation)
            done = terminated or truncated
    assert len(hanoi.question(instances[3])) <= hanoi.max_observation_length(20)


def test_phase_names_the_goal_scan_the_line_and_the_answer_move(hanoi):
    assert hanoi.phase([cmd("p?"), "C"]) == "goal scan (largest disk first)"
    assert hanoi.phase(["!", "|", cmd("q«."), "|"]) == "line 2 (pair of moves 2)"
    assert hanoi.phase(["|", "⟨answer⟩", "1", "\n", "2"]) == "answer, move 2"


# --- the locality check of the format ----------------------------------------------------------


def _streams(task, tokenizer, instances):
    return [t.stream(tokenizer) for t in run_episodes(task, instances, ExpertPolicy(task))]


def _short_instances(task, rng):
    """Every configuration and target up to 4 disks, and random ones of 5 and 6."""
    every = [Tower(p, t) for n in range(1, 5) for p in all_configurations(n) for t in PEGS]
    return every + [task.sample(n, rng) for n in (5, 6) for _ in range(100)]


def _label_reads(tokenizer, stream):
    """(index where the read starts, disk label) for every label read of a stream: the forced
    disk's label read from the question (``⟨q<⟩⟨q,⟩`` units ``⟨q,⟩`` tens) and each move's label
    read back in the answer phase (``⟨a<⟩⟨a,⟩`` digit, then a second digit for labels >= 10)."""
    ids = stream[0]
    q_start, q_step, a_start = (tokenizer.encode(cmd(c))[0] for c in ("q<", "q,", "a<"))
    text = [tokenizer.vocab[i] for i in ids]
    out = []
    for i in range(len(ids) - 5):
        if ids[i] == q_start and ids[i + 1] == q_step and ids[i + 3] == q_step:
            out.append((i, int(text[i + 4] + text[i + 2])))
        elif ids[i] == a_start and text[i + 2].isdigit():
            out.append((i, int(text[i + 2] + (text[i + 5] if text[i + 5].isdigit() else ""))))
    return out


def _explained(position, reads, smallest):
    """Is ``position`` at most 24 tokens after a read of a label >= ``smallest`` (the read, the
    record that copies it and a 9-token window past its last digit)?"""
    return any(0 <= position - i <= 24 for i, label in reads if label >= smallest)


def _by_parity(tokenizer, stream):
    """The stream with every digit replaced by 0 (even) or 1 (odd)."""
    classes = {tokenizer.encode(d)[0]: tokenizer.encode(str(int(d) % 2))[0] for d in "0123456789"}
    ids, mask = stream
    return [classes.get(i, i) for i in ids], mask


@pytest.mark.slow
def test_a_9_token_window_from_episodes_of_at_most_6_disks_predicts_10_disks_up_to_unseen_labels(hanoi, htok):
    rng = np.random.default_rng(8)
    short = _streams(hanoi, htok, _short_instances(hanoi, rng))
    table = locality_table(short, 9)
    assert table.conflicts == {}
    # one token fewer is not enough: the forced disk's units digit is copied from 9 tokens back
    assert locality_table(short, 8).conflicts

    long_instances = [Tower("A" * 10, "C"), *[hanoi.sample(10, rng) for _ in range(2)]]
    long = _streams(hanoi, htok, long_instances)
    assert check_locality(table, long, 9) > 0.98
    # every miss copies a label no short episode holds (disks 7..10), or follows the label of disk 6,
    # after which no short episode has another cell; there is no miss anywhere else
    for stream in long:
        reads = _label_reads(htok, stream)
        positions = [i for i, g in enumerate(stream[1]) if g]
        for i, (window, token) in zip(positions, generated_windows(stream, 9)):
            if table.predict(window) != token:
                assert _explained(i, reads, 6), (i, htok.decode([t for t in window if t >= 0]))


@pytest.mark.slow
def test_a_9_token_window_from_training_towers_of_at_most_8_disks_predicts_10_and_12_disks(hanoi, htok):
    """With relabelled towers in training, no label of a tall tower is new: 400 training towers
    predict the classic 10-disk tower exactly; at 12 disks the few misses (under 1 in 10,000)
    are the steps right after a label copy whose exact window no training tower happened to hold."""
    rng = np.random.default_rng(0)
    short = _streams(hanoi, htok, [hanoi.sample_training(8, rng) for _ in range(400)])
    table = locality_table(short, 9)
    assert table.conflicts == {}
    assert check_locality(table, _streams(hanoi, htok, [Tower("A" * 10, "C")]), 9) == 1.0
    assert check_locality(table, _streams(hanoi, htok, [Tower("A" * 12, "C")]), 9) > 0.9999


@pytest.mark.slow
def test_by_parity_of_digits_an_8_token_window_predicts_9_disks_exactly_and_10_but_its_two_digit_label(hanoi, htok):
    rng = np.random.default_rng(9)
    short = [_by_parity(htok, s) for s in _streams(hanoi, htok, _short_instances(hanoi, rng))]
    table = locality_table(short, 8)
    assert table.conflicts == {}
    assert locality_table(short, 7).conflicts  # the move of disk 1 needs the forced disk's new peg, 8 back

    nine = [_by_parity(htok, s) for s in _streams(hanoi, htok, [Tower("A" * 9, "C"), hanoi.sample(9, rng)])]
    assert check_locality(table, nine, 8) == 1.0

    ten = _streams(hanoi, htok, [Tower("A" * 10, "C")])[0]
    reads = _label_reads(htok, ten)
    assert sum(label == 10 for _, label in reads) == 2  # disk 10 moves once: read, then read back
    positions = [i for i, g in enumerate(ten[1]) if g]
    misses = [i for i, (w, x) in zip(positions, generated_windows(_by_parity(htok, ten), 8)) if table.predict(w) != x]
    assert misses and all(_explained(i, reads, 10) for i in misses), misses

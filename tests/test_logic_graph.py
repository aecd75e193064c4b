"""The logic-graph task (ssmagent.tasks.logic_graph): instances, its expert through the real env
and the search tool, and the locality of its format (DESIGN.md §2)."""

from __future__ import annotations

import re
import string

import gymnasium as gym
import numpy as np
import pytest

import ssmagent.env  # noqa: F401 - registers the envs
from ssmagent.agent import ExpertPolicy, Tokenizer, run_episodes, task_commands
from ssmagent.env import ToolEnv
from ssmagent.eval.locality import PAD, locality_table
from ssmagent.tasks import TASKS, TaskInputError, get_task
from expert_run import run_expert
from ssmagent.tasks.logic_graph import MAX_NODES, Graph, LogicGraphExpert, depth, evaluate, parse_definition

LINE = re.compile(r"^[a-z]{3}=(?:[01]|![a-z]{3}|[a-z]{3}[&|^][a-z]{3})$")


@pytest.fixture(scope="module")
def graph():
    return get_task("logic_graph")


@pytest.fixture(scope="module")
def gtok(graph):
    return Tokenizer.for_commands(task_commands(graph))


def topological(instance: Graph) -> bool:
    """Every operand is defined, and the definitions form a DAG (Kahn's algorithm)."""
    defs = {name: ops for name, _, ops in map(parse_definition, instance.lines)}
    if any(op not in defs for ops in defs.values() for op in ops):
        return False
    pending = {name: len(set(ops)) for name, ops in defs.items()}
    users: dict[str, list[str]] = {}
    for name, ops in defs.items():
        for op in set(ops):
            users.setdefault(op, []).append(name)
    ready = [name for name, n in pending.items() if n == 0]
    done = 0
    while ready:
        name = ready.pop()
        done += 1
        for user in users.get(name, []):
            pending[user] -= 1
            if pending[user] == 0:
                ready.append(user)
    return done == len(defs)


# --- registration ------------------------------------------------------------------------------


def test_task_is_registered_under_its_name_env_id_and_unit(graph):
    assert TASKS["logic_graph"] is graph
    assert graph.env_id == "ssmagent/LogicGraph-v0" and graph.size_unit == "nodes"
    assert isinstance(gym.make(graph.env_id, size=5).unwrapped, ToolEnv)


# --- exact evaluation --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "lines, query, value",
    [
        (["aaa=1"], "aaa", 1),
        (["aaa=0", "bbb=!aaa"], "bbb", 1),
        (["aaa=1", "bbb=0", "ccc=aaa&bbb"], "ccc", 0),
        (["aaa=1", "bbb=0", "ccc=aaa|bbb"], "ccc", 1),
        (["aaa=1", "bbb=1", "ccc=aaa^bbb"], "ccc", 0),
        (["ccc=aaa^bbb", "bbb=!aaa", "aaa=1", "ddd=0"], "ccc", 1),
    ],
)
def test_evaluate_computes_each_gate_kind(lines, query, value):
    assert evaluate(Graph(tuple(lines), query)) == value


def test_evaluate_and_depth_handle_chains_far_deeper_than_the_recursion_limit(graph):
    chain = graph.hard_instances(5000)[0]  # NOT chain: 1 then 4,999 negations
    assert evaluate(chain) == 0 and depth(chain) == 4999


# --- instances ---------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [1, 2, 3, 10, 200])
def test_sample_is_a_dag_of_exactly_size_well_formed_definitions_and_a_query(graph, size):
    rng = np.random.default_rng(size)
    for _ in range(30 if size < 200 else 3):
        g = graph.sample(size, rng)
        assert graph.size_of(g) == len(g.lines) == size
        assert all(LINE.match(line) for line in g.lines)
        names = [parse_definition(line)[0] for line in g.lines]
        assert len(set(names)) == size and g.query in names
        assert topological(g)
        question = graph.question(g)
        assert question.split("\n") == [*g.lines, "?" + g.query]
        assert len(question) <= graph.max_observation_length(size)
        assert graph.answer(g) in ("0", "1")


def test_sample_uses_every_gate_kind_inputs_of_both_values_and_both_answers(graph):
    rng = np.random.default_rng(3)
    samples = [graph.sample(10, rng) for _ in range(100)]
    rhs = "".join(line.split("=")[1] for g in samples for line in g.lines)
    assert all(symbol in rhs for symbol in "01!&|^")
    assert {graph.answer(g) for g in samples} == {"0", "1"}


def test_sample_puts_definitions_in_random_not_topological_order(graph):
    rng = np.random.default_rng(4)
    g = graph.sample(50, rng)
    defined: set[str] = set()
    in_order = True
    for name, _, ops in map(parse_definition, g.lines):
        in_order &= all(op in defined for op in ops)
        defined.add(name)
    assert not in_order


@pytest.mark.parametrize("size", [10, 100, 1000])
def test_sample_queries_a_deep_node(graph, size):
    rng = np.random.default_rng(size)
    depths = [depth(graph.sample(size, rng)) for _ in range(5)]
    assert min(depths) >= 0.4 * size - 3, depths


@pytest.mark.parametrize("size", [1, 2, 3, 17, 300])
def test_hard_instances_are_chains_as_deep_as_the_size_allows(graph, size):
    hard = graph.hard_instances(size)
    assert len(hard) == 3
    assert all(graph.size_of(g) == size and topological(g) for g in hard)
    assert depth(hard[0]) == size - 1  # NOT chain
    assert all(depth(g) >= size - 2 for g in hard[1:])
    assert hard == graph.hard_instances(size)  # deterministic


def test_hard_instances_use_and_or_xor_and_not(graph):
    rhs = "".join(line for g in graph.hard_instances(20) for line in g.lines)
    assert all(symbol in rhs for symbol in "!&|^")


def test_sample_is_reproducible_from_the_rng_seed(graph):
    assert graph.sample(40, np.random.default_rng(9)) == graph.sample(40, np.random.default_rng(9))


def test_sample_training_sizes_stay_within_the_maximum(graph):
    rng = np.random.default_rng(1)
    assert {graph.size_of(graph.sample_training(5, rng)) for _ in range(200)} == {1, 2, 3, 4, 5}


@pytest.mark.parametrize("size", [0, -3, MAX_NODES + 1])
def test_sample_rejects_sizes_out_of_range_with_a_one_line_error(graph, size):
    with pytest.raises(TaskInputError) as err:
        graph.sample(size, np.random.default_rng(0))
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("args", [["aaa=1"], ["1", "2"], [], ["--size", "3"]])
def test_parse_refuses_explicit_instances_and_points_to_size(graph, args):
    with pytest.raises(TaskInputError) as err:
        graph.parse(args)
    assert "--size" in str(err.value) and "\n" not in str(err.value)


def test_to_json_holds_the_lines_and_the_query(graph):
    g = graph.sample(4, np.random.default_rng(0))
    assert graph.to_json(g) == {"lines": list(g.lines), "query": g.query}


# --- the expert through the real env -----------------------------------------------------------


def test_expert_solves_random_and_hard_instances_of_sizes_1_to_30_exactly(graph):
    rng = np.random.default_rng(2026)
    for size in range(1, 31):
        for instance in [graph.sample(size, rng), graph.sample(size, rng), *graph.hard_instances(size)]:
            run = run_expert(graph, instance)
            reward, terminated, truncated, info, steps = run.reward, run.terminated, run.truncated, run.info, run.steps
            assert (reward, terminated, truncated) == (1.0, True, False), instance
            assert info["answer"] == str(evaluate(instance))
            assert steps < graph.step_budget(size)


def test_expert_solves_1000_nodes_exactly_within_the_step_budget(graph):
    instances = [graph.sample(1000, np.random.default_rng(1000)), *graph.hard_instances(1000)]
    for instance in instances:
        run = run_expert(graph, instance)
        reward, terminated, truncated, info, steps = run.reward, run.terminated, run.truncated, run.info, run.steps
        assert (reward, terminated, truncated) == (1.0, True, False)
        assert info["answer"] == graph.answer(instance)
        assert steps < graph.step_budget(1000)


def test_expert_keeps_no_stack_its_state_is_a_few_short_fields(graph):
    """Depth-first resolution of a 1,000-deep chain: the stack lives in memory (``child<parent``
    lines), so the expert's own state stays as small as at the start."""
    expert_fields = set(vars(LogicGraphExpert()))
    expert = run_expert(graph, graph.hard_instances(1000)[1]).expert
    assert set(vars(expert)) == expert_fields
    for value in vars(expert).values():
        size = len(value) if isinstance(value, (str, tuple, list)) else 1
        assert size <= 11  # at most one definition line


def test_expert_writes_value_and_frame_lines_that_the_search_finds(graph):
    env = ToolEnv(graph, 3)
    instance = Graph(("ccc=aaa^bbb", "bbb=!aaa", "aaa=1"), "ccc")
    observation, _ = env.reset(options={"instance": instance})
    expert, actions = graph.expert(), []
    done = False
    while not done:
        action = expert.act(observation)
        actions.append((action, observation))
        observation, _, terminated, truncated, _ = env.step(action)
        done = terminated or truncated
    written = "".join(action for action, _ in actions)
    assert "aaa<ccc\n" in written and "aaa:1\n" in written and "bbb:0\n" in written and "ccc:1\n" in written
    assert ("aaa:⟨find⟩", "ccc=aaa^bbb") in actions  # first look-up of an operand: not yet known
    assert actions[-1][0] == "⟨answer⟩1⟨end⟩"
    assert env._tools["find"].lines[-1] == "ccc:1"


def test_tokens_per_node_on_deep_chains(graph):
    trajectories = run_episodes(graph, graph.hard_instances(300), ExpertPolicy(graph))
    for t in trajectories:
        generated, observed = t.generated_tokens / 300, t.observed_tokens / 300
        print(f"{generated:.1f} generated, {observed:.1f} observed tokens per node")
        assert t.correct and 30 <= generated <= 50 and 25 <= observed <= 45


# --- locality ----------------------------------------------------------------------------------

LETTER = -2
"""A name letter, in the abstract window: names are random, so a table keyed on their letters
could never extrapolate; what must be local is *where* a copied letter comes from."""


def copy_aware_table(streams, k, tokenizer):
    """(last ``k`` tokens, name letters abstracted) → the next generated token, or, for a name
    letter, the set of offsets 1..k at which that letter stands in the window (intersected over
    every occurrence). Returns (table, conflicting windows)."""
    letters = {tokenizer.encode(c)[0] for c in string.ascii_lowercase}
    table, conflicts = {}, set()
    for window, target in _targets(streams, k, letters):
        if window in conflicts:
            continue
        old = table.setdefault(window, target)
        if old is target:
            continue
        if old[0] != target[0] or (old[0] == "token" and old[1] != target[1]) or not (old[1] & target[1] if old[0] == "copy" else True):
            del table[window]
            conflicts.add(window)
        elif old[0] == "copy":
            table[window] = ("copy", old[1] & target[1])
    return table, conflicts


def _targets(streams, k, letters, with_raw=False):
    for ids, mask in streams:
        raw = [PAD] * k + list(ids)
        abstract = [LETTER if i in letters else i for i in raw]
        for i, generated in enumerate(mask):
            if not generated:
                continue
            window, token = tuple(abstract[i : i + k]), ids[i]
            if token in letters:
                target = ("copy", frozenset(j for j in range(1, k + 1) if raw[i + k - j] == token))
            else:
                target = ("token", token)
            yield (window, target, raw[i : i + k], token) if with_raw else (window, target)


def copy_aware_check(table, streams, k, tokenizer):
    """Fraction of generated tokens the table predicts exactly (a copy: from its nearest offset)."""
    letters = {tokenizer.encode(c)[0] for c in string.ascii_lowercase}
    hits = total = 0
    for window, _, raw, token in _targets(streams, k, letters, with_raw=True):
        total += 1
        entry = table.get(window)
        if entry is not None:
            hits += (entry[1] == token) if entry[0] == "token" else (raw[k - min(entry[1])] == token)
    return hits / total


def _streams(task, tokenizer, instances):
    return [t.stream(tokenizer) for t in run_episodes(task, instances, ExpertPolicy(task))]


def _short_streams(graph, gtok):
    rng = np.random.default_rng(11)
    short = [graph.sample_training(10, rng) for _ in range(400)]
    short += [g for size in range(1, 11) for g in graph.hard_instances(size)]
    assert max(graph.size_of(g) for g in short) == 10
    return _streams(graph, gtok, short)


def test_a_31_token_copy_aware_window_from_short_episodes_predicts_1000_node_ones_exactly(graph, gtok):
    short = _short_streams(graph, gtok)
    table, conflicts = copy_aware_table(short, 31, gtok)
    assert conflicts == set()
    rng = np.random.default_rng(12)
    long = _streams(graph, gtok, [graph.sample(1000, rng), *graph.hard_instances(1000)])
    assert copy_aware_check(table, long, 31, gtok) == 1.0
    # one token fewer is not enough: a gate's value line copies its name from its definition,
    # 31 tokens back (definition, two look-ups and their answers)
    assert copy_aware_table(short, 30, gtok)[1]


def test_plain_token_table_cannot_extrapolate_over_random_names(graph, gtok):
    """Why the check above abstracts names: keyed on raw letters, windows of long episodes name
    variables the short ones never used."""
    from ssmagent.eval.locality import check_locality

    short = _short_streams(graph, gtok)
    long = _streams(graph, gtok, [graph.hard_instances(100)[1]])
    assert check_locality(locality_table(short, 31), long, 31) < 0.9


def test_phase_names_the_look_up_and_the_answer(graph):
    assert graph.phase([]) == "find the query"
    assert graph.phase(["?", "⟨find⟩", "?", "a", "b", "c"]) == "resolving: look-up 2, 0 lines written"
    assert graph.phase(list("abc:1\nabc<") + ["⟨find⟩", "-"]) == "resolving: look-up 2, 1 lines written"
    assert graph.phase(["⟨answer⟩", "1"]) == "answer"

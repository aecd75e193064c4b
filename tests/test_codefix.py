"""The code-fixing task (ssmagent.tasks.codefix): the generated codebase, its three bug families
failing and fixed in the real sandbox, the hidden test, the expert through the real env and
tools, and the locality of its format (DESIGN.md §2)."""

from __future__ import annotations

import re
import string

import gymnasium as gym
import numpy as np
import pytest
from expert_run import run_expert

import ssmagent.env  # noqa: F401 - registers the envs
from ssmagent.agent import ExpertPolicy, ScriptedPolicy, Tokenizer, run_episodes, task_commands
from ssmagent.env import ToolEnv
from ssmagent.eval.locality import PAD, check_locality, locality_table
from ssmagent.tasks import TASKS, TaskInputError, get_task
from ssmagent.tasks.codefix import (
    BUGS,
    MAX_FUNCTIONS,
    Codebase,
    CodeFix,
    CodeFixExpert,
    expected_output,
    fixed,
    hidden_test,
    render,
    run_program,
    sample_codebase,
)
from ssmagent.tools.run import RunTool
from ssmagent.tools.workspace import Workspace, pack, unpack

ASCII = frozenset(string.printable[:95]) | {"\n"}


@pytest.fixture(scope="module")
def codefix():
    return get_task("codefix")


@pytest.fixture(scope="module")
def docker_task(docker_sandbox):
    """The task with its programs run by Docker, the backend ``auto`` picks where it can."""
    return CodeFix(docker_sandbox)


@pytest.fixture(scope="module")
def fast_task(bubblewrap_sandbox):
    """The task on bubblewrap (~0.1 s a run against Docker's ~0.45 s): for the tests that need
    a hundred episodes. Observations are the same on both (tests/test_code_tools.py)."""
    return CodeFix(bubblewrap_sandbox)


def workspace_of(codebase: Codebase) -> Workspace:
    workspace = Workspace()
    workspace.reset(pack(render(codebase)))
    return workspace


def execute(files: dict[str, str]) -> int:
    """What main() returns, by executing the files in one namespace (imports dropped): Python's
    own reading of the generated code, to check ``run_program`` against."""
    namespace: dict = {}
    for name in reversed(list(files)):
        code = "\n".join(line for line in files[name].split("\n") if not line.startswith(("from ", "import ", "sys.")))
        exec(compile(code.replace('if __name__ == "__main__":', "if False:"), name, "exec"), namespace)  # noqa: S102 - our generated code
    return namespace["main"]()


# --- registration ------------------------------------------------------------------------------


def test_task_is_registered_under_its_name_env_id_and_unit(codefix):
    assert TASKS["codefix"] is codefix
    assert codefix.env_id == "ssmagent/CodeFix-v0" and codefix.size_unit == "functions"
    assert isinstance(gym.make(codefix.env_id, size=5).unwrapped, ToolEnv)
    assert task_commands(codefix) == ["view", "up", "down", "grep", "edit", "run"]


# --- the generated codebase --------------------------------------------------------------------


@pytest.mark.parametrize("size", [1, 2, 16, 64])
def test_a_codebase_is_main_and_one_file_per_function_imported_in_a_chain(codefix, size):
    rng = np.random.default_rng(size)
    for _ in range(10):
        codebase = codefix.sample(size, rng)
        files = render(codebase)
        assert list(files) == ["main.py", *(f"f{i}.py" for i in range(size))]
        assert "from f0 import f0" in files["main.py"] and "print(main())" in files["main.py"]
        for i in range(size):
            text = files[f"f{i}.py"]
            assert len(re.findall(r"^def \w+\(x", text, re.MULTILINE)) == 1
            assert (f"from f{i + 1} import f{i + 1}" in text) == (i < size - 1)
        assert codefix.size_of(codebase) == size


def test_sample_is_reproducible_from_the_rng_seed(codefix):
    assert codefix.sample(40, np.random.default_rng(9)) == codefix.sample(40, np.random.default_rng(9))
    assert codefix.sample(40, np.random.default_rng(9)) != codefix.sample(40, np.random.default_rng(10))


def test_every_bug_family_is_drawn(codefix):
    rng = np.random.default_rng(3)
    assert {codefix.sample(8, rng).bug.kind for _ in range(60)} == set(BUGS)


@pytest.mark.parametrize("size", [1, 5, 64, 300])
def test_the_question_is_the_packed_codebase_in_printable_ascii_within_the_observation_space(codefix, size):
    rng = np.random.default_rng(size)
    for codebase in [codefix.sample(size, rng) for _ in range(5)] + codefix.hard_instances(size):
        question = codefix.question(codebase)
        assert unpack(question) == render(codebase)
        assert set(question) <= ASCII  # every character has a token
        assert len(question) <= codefix.max_observation_length(size)


def test_the_expected_output_is_what_python_computes_from_the_fixed_files():
    rng = np.random.default_rng(5)
    for _ in range(200):
        codebase = sample_codebase(int(rng.integers(1, 12)), rng)
        assert execute(render(fixed(codebase))) == run_program(codebase.program)
        assert expected_output(codebase) == str(run_program(codebase.program))


def test_each_family_carries_its_bug_in_the_files():
    rng = np.random.default_rng(6)
    unpassed = sample_codebase(10, rng, "unpassed")
    files, missing = render(unpassed), unpassed.program.variables[unpassed.bug.where]
    assert f"    {missing.name} = " in files["main.py"]  # main defines it ...
    assert not any(re.search(rf"def \w+\(.*\b{missing.name}\b", text) for text in files.values())  # ... passes it nowhere
    assert re.search(rf"\b{missing.name}\b", files[f"f{missing.user}.py"])  # ... and its user uses it
    assert missing.user >= 5  # in the deeper half: the fix threads it far

    renamed = sample_codebase(10, rng, "renamed")
    text = render(renamed)[f"f{renamed.bug.where}.py"]
    assert f"def {renamed.bug.new_name}(" in text and f"def f{renamed.bug.where}(" not in text

    swapped = sample_codebase(10, rng, "swapped")
    caller = "main.py" if swapped.bug.where == 0 else f"f{swapped.bug.where - 1}.py"
    call = re.search(rf"return f{swapped.bug.where}\((\w+)", render(swapped)[caller])
    assert call.group(1) != "y"


def test_hard_instances_put_each_bug_as_deep_as_the_size_allows(codefix):
    for size in (1, 2, 17):
        hard = codefix.hard_instances(size)
        assert [c.bug.kind for c in hard] == ["unpassed", "unpassed", "renamed", "swapped"]
        assert [isinstance(c.program.variables[c.bug.where].value, str) for c in hard[:2]] == [False, True]
        assert all(c.program.variables[c.bug.where].user == size - 1 for c in hard[:2])
        assert hard[2].bug.where == size - 1 and hard[3].bug.where == max(size - 2, 0)
        assert hard == codefix.hard_instances(size)


def test_sample_training_sizes_stay_within_the_maximum(codefix):
    rng = np.random.default_rng(1)
    assert {codefix.size_of(codefix.sample_training(4, rng)) for _ in range(100)} == {1, 2, 3, 4}


@pytest.mark.parametrize("size", [0, -1, MAX_FUNCTIONS + 1])
def test_sizes_out_of_range_are_refused_with_a_one_line_error(codefix, size):
    with pytest.raises(TaskInputError) as err:
        codefix.sample(size, np.random.default_rng(0))
    assert "\n" not in str(err.value)


def test_parse_refuses_explicit_instances_and_points_to_size(codefix):
    with pytest.raises(TaskInputError, match="--size"):
        codefix.parse(["main.py"])


def test_to_json_holds_the_program_and_the_bug(codefix):
    data = codefix.to_json(codefix.sample(3, np.random.default_rng(0)))
    assert set(data) == {"program", "bug"} and len(data["program"]["stages"]) == 3


# --- the sandbox: bugs fail, fixes pass, the hidden test decides ------------------------------


@pytest.mark.parametrize("kind, error", [("unpassed", "NameError"), ("renamed", "ImportError"), ("swapped", "TypeError")])
def test_each_bug_family_fails_in_the_sandbox_and_its_fix_passes_the_hidden_test(sandbox, kind, error):
    codebase = sample_codebase(8, np.random.default_rng(7), kind)
    runner = RunTool(Workspace(), sandbox)
    for version, passes in ((codebase, False), (fixed(codebase), True)):
        workspace = workspace_of(version)
        result = sandbox.run(workspace.root, ["python", "main.py"])
        assert (result.exit_code == 0) == passes
        assert (error in result.stderr) != passes
        assert hidden_test(workspace, expected_output(codebase), runner) == passes
        workspace.close()


def test_a_right_answer_over_a_still_broken_codebase_scores_nothing(docker_task):
    codebase = sample_codebase(4, np.random.default_rng(8), "renamed")
    env = ToolEnv(docker_task, 4)
    env.reset(options={"instance": codebase})
    _, reward, terminated, _, info = env.step(f"⟨answer⟩{expected_output(codebase)}⟨end⟩")
    assert (reward, terminated, info["correct"]) == (0.0, True, False)
    env.close()


def test_a_wrong_answer_over_a_fixed_codebase_scores_nothing(docker_task):
    codebase = sample_codebase(3, np.random.default_rng(9), "swapped")
    env = ToolEnv(docker_task, 3)
    observation, _ = env.reset(options={"instance": codebase})
    expert = docker_task.expert()
    action = expert.act(observation)
    while not action.startswith("⟨answer⟩"):
        observation, *_ = env.step(action)
        action = expert.act(observation)
    _, reward, _, _, info = env.step("⟨answer⟩1000⟨end⟩")  # outputs are < 1000
    assert (reward, info["correct"]) == (0.0, False)
    env.close()


def test_the_workspace_is_removed_when_the_env_closes_or_resets(codefix):
    env = ToolEnv(codefix, 2)
    env.reset(seed=0)
    first = env._all_tools[0].root
    env.reset(seed=1)
    second = env._all_tools[0].root
    assert not first.exists() and second.exists()
    env.close()
    assert not second.exists()


# --- the expert through the real env -----------------------------------------------------------


@pytest.fixture(scope="module")
def runs_at_64(docker_task):
    """The expert through the real env on Docker: each hard instance and two random ones."""
    rng = np.random.default_rng(64)
    instances = docker_task.hard_instances(64) + [docker_task.sample(64, rng) for _ in range(2)]
    return [(instance, run_expert(docker_task, instance)) for instance in instances]


def test_expert_solves_every_family_at_64_functions_within_the_step_budget(docker_task, runs_at_64):
    for instance, run in runs_at_64:
        assert (run.reward, run.terminated, run.truncated) == (1.0, True, False), instance.bug
        assert run.info["answer"] == expected_output(instance)
        assert run.steps < docker_task.step_budget(64)
    # the longest fix threads a variable through all 64 functions: 4 steps each, 2 runs, the answer
    assert runs_at_64[0][1].steps == 4 * 64 + 3


def test_expert_keeps_a_few_short_fields_however_long_the_chain(runs_at_64):
    expert = runs_at_64[1][1].expert  # a string threaded through 64 functions
    assert set(vars(expert)) == set(vars(CodeFixExpert()))
    assert all(len(value) <= 40 for value in vars(expert).values())


def test_the_episode_is_truncated_at_the_step_budget(codefix):
    budget = codefix.step_budget(3)
    policy = ScriptedPolicy([["x⟨grep⟩"] * budget])
    (trajectory,) = run_episodes(codefix, [sample_codebase(3, np.random.default_rng(0))], policy)
    assert trajectory.truncated and not trajectory.correct
    assert trajectory.segments.count(trajectory.segments[1]) == budget  # every action, then stop


def test_an_example_episode_reads_like_the_docstring(fast_task):
    codebase = fast_task.hard_instances(2)[0]  # an int not passed to f1
    (trajectory,) = run_episodes(fast_task, [codebase], ExpertPolicy(fast_task))
    name = codebase.program.variables[codebase.bug.where].name
    actions = [s.text for s in trajectory.segments if s.kind in ("thought", "tool", "answer")]
    assert "".join(actions[:2]) == "python main.py⟨run⟩"
    assert "".join(actions[2:4]) == "def f1(⟨grep⟩"
    assert any(f", {name}):" in a for a in actions) and trajectory.correct


def test_phase_names_the_run_and_the_fix(codefix):
    assert codefix.phase([]) == "first run"
    assert codefix.phase(list("python main.py") + ["⟨run⟩", "x", "⟨grep⟩", "⟨edit⟩"]) == "fixing after run 1: 1 edits, 1 searches"
    assert codefix.phase(["⟨run⟩", "⟨answer⟩", "1"]) == "answer"


# --- locality ----------------------------------------------------------------------------------

KEPT_WORDS = frozenset({"def", "return", "python", "main", "py", "y"})
"""Words the expert writes as themselves (the format's fixed vocabulary); every other word it
writes is a name, a number or a line number, copied from the window."""
WORD = frozenset(string.ascii_letters + string.digits + "_")
ABSTRACT_WORD = "<word>"


def word_units(stream, vocab: list[str]) -> list[tuple[str, bool]]:
    """A token stream as (unit, generated): one unit per word (a run of letters, digits and
    ``_``) or other token. Names are drawn at random and grow with the size (f7, f57), so a
    window keyed on their characters could never extrapolate; what must be local is *where*
    a written name comes from (a character-level model copies it character by character)."""
    units: list[tuple[str, bool]] = []
    for token, generated in zip(*stream, strict=True):
        text = vocab[token]
        if text in WORD and units and units[-1][0][-1:] in WORD and units[-1][1] == generated:
            units[-1] = (units[-1][0] + text, generated)
        else:
            units.append((text, generated))
    return units


def copy_aware_targets(units: list[tuple[str, bool]], k: int):
    """(window, target) per generated unit: the window is the last ``k`` units with every word
    but the fixed ones abstracted; the target is the unit itself, or ``("copy", j)`` for a
    word that repeats the one j units back (the nearest)."""
    keys = [text if text[0] not in WORD or text in KEPT_WORDS else ABSTRACT_WORD for text, _ in units]
    padded = [PAD] * k + keys
    for i, (text, generated) in enumerate(units):
        if not generated:
            continue
        target: tuple = ("unit", text)
        if keys[i] == ABSTRACT_WORD:
            back = next((j for j in range(1, min(i, k) + 1) if units[i - j][0] == text), None)
            target = ("copy", back) if back else target
        yield tuple(padded[i : i + k]), target


def copy_aware_table(unit_streams, k: int) -> tuple[dict, set]:
    """(window → target, conflicting windows) over short episodes."""
    table: dict = {}
    conflicts: set = set()
    for units in unit_streams:
        for window, target in copy_aware_targets(units, k):
            if table.setdefault(window, target) != target:
                conflicts.add(window)
    return table, conflicts


def copy_aware_check(table: dict, conflicts: set, unit_streams, k: int) -> float:
    """Fraction of the generated units of long episodes the table predicts exactly."""
    hits = total = 0
    for units in unit_streams:
        for window, target in copy_aware_targets(units, k):
            total += 1
            hits += window not in conflicts and table.get(window) == target
    return hits / total


@pytest.fixture(scope="module")
def episodes(fast_task):
    """Expert trajectories on bubblewrap: short ones (≤ 16 functions, as the paper trains) and
    long ones (64 functions: the hard ones, and random ones of every family), all solved."""
    rng = np.random.default_rng(11)
    short = [fast_task.sample_training(16, rng) for _ in range(40)]
    short += [c for size in range(1, 17) for c in fast_task.hard_instances(size)]
    rng = np.random.default_rng(65)
    long = fast_task.hard_instances(64) + [fast_task.sample(64, rng) for _ in range(6)]
    runs = {"short": run_episodes(fast_task, short, ExpertPolicy(fast_task))}
    runs["long"] = run_episodes(fast_task, long, ExpertPolicy(fast_task))
    assert all(t.correct for ts in runs.values() for t in ts)
    return runs


@pytest.fixture(scope="module")
def tokenizer(codefix):
    return Tokenizer.for_commands(task_commands(codefix))


def test_a_52_unit_window_from_short_episodes_predicts_64_function_ones_exactly(episodes, tokenizer):
    short, long = ([word_units(t.stream(tokenizer), tokenizer.vocab) for t in episodes[name]] for name in ("short", "long"))
    table, conflicts = copy_aware_table(short, 52)
    assert conflicts == set()
    assert copy_aware_check(table, conflicts, long, 52) == 1.0
    # one unit fewer is not enough: after a call's fix, the next move (thread on, or run)
    # depends on whether the definition was edited before it, 52 units back
    assert copy_aware_table(short, 51)[1]
    # 52 units are at most ~125 characters
    assert max(len("".join(text for text, _ in units[i : i + 52])) for units in long for i in range(len(units))) <= 130


def test_a_plain_token_table_cannot_extrapolate_over_names(episodes, tokenizer):
    """Why the check above abstracts names: keyed on raw characters, long episodes hold names
    (f57) and line numbers the short ones never had."""
    short, long = ([t.stream(tokenizer) for t in episodes[name]] for name in ("short", "long"))
    assert check_locality(locality_table(short, 140), long, 140) < 0.9


def test_tokens_per_episode_at_16_and_64_functions(episodes, fast_task):
    """Threading a variable costs ~95 generated and ~135 observed tokens per function; the
    other two fixes cost the same at any size (~80 generated, ~320 observed)."""
    rng = np.random.default_rng(16)
    at16 = run_episodes(fast_task, [fast_task.sample(16, rng) for _ in range(9)], ExpertPolicy(fast_task))
    for size, trajectories in ((16, at16), (64, episodes["long"][4:])):
        generated = np.mean([t.generated_tokens for t in trajectories])
        observed = np.mean([t.observed_tokens for t in trajectories])
        print(f"n={size}: {generated:.0f} generated + {observed:.0f} observed tokens per random episode (mean)")
    deepest = episodes["long"][0]  # an int threaded through all 64 functions
    assert 80 <= deepest.generated_tokens / 64 <= 120 and 100 <= deepest.observed_tokens / 64 <= 160
    renamed, swapped = episodes["long"][2:4]
    assert renamed.generated_tokens + swapped.generated_tokens < 250

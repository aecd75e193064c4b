"""The agent loop (ssmagent.agent.loop.run_episodes) with the expert and scripted policies."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ssmagent.agent import ExpertPolicy, Policy, ScriptedPolicy, Trajectory, run_episodes
from ssmagent.tasks.addition import Sum, add_decimal


def mixed_instances(task, n: int, seed: int = 0, max_size: int = 30) -> list[Sum]:
    rng = np.random.default_rng(seed)
    return [task.sample(int(rng.integers(1, max_size + 1)), rng) for _ in range(n)]


def dump(trajectories: list[Trajectory]) -> list[str]:
    return [json.dumps(t.to_json(), ensure_ascii=False, sort_keys=True) for t in trajectories]


def actions_of(trajectory: Trajectory) -> list[str]:
    """The actions that produced a trajectory: its thought, answer and tool text, cut after each command."""
    actions, current = [], ""
    for segment in trajectory.segments:
        if segment.kind in ("thought", "answer"):
            current += segment.text
        elif segment.kind == "tool":
            actions.append(current + segment.text)
            current = ""
    assert current == ""
    return actions


class Recording(Policy):
    """Wraps a policy; keeps, per episode (in the order episodes begin), what it saw and wrote."""

    def __init__(self, inner: Policy) -> None:
        self.inner = inner
        self.episodes: list[list[tuple[str, str]]] = []
        self._slot_episode: dict[int, int] = {}

    def begin(self, slot: int) -> None:
        self._slot_episode[slot] = len(self.episodes)
        self.episodes.append([])
        self.inner.begin(slot)

    def end(self, slot: int) -> None:
        self.inner.end(slot)

    def act(self, observations: dict[int, str]) -> dict[int, str]:
        actions = self.inner.act(observations)
        for slot, action in actions.items():
            self.episodes[self._slot_episode[slot]].append((observations[slot], action))
        return actions


def test_trajectories_come_back_in_input_order_and_the_expert_is_correct(addition):
    instances = mixed_instances(addition, 20, seed=1)
    trajectories = run_episodes(addition, instances, ExpertPolicy(addition), batch_size=5)
    assert len(trajectories) == len(instances)
    for instance, t in zip(instances, trajectories):
        assert t.instance == addition.to_json(instance)
        assert t.size == addition.size_of(instance) and t.task == "addition"
        assert t.segments[0].kind == "question" and t.segments[0].text == addition.question(instance)
        assert t.correct is True and t.truncated is False
        assert t.answer == add_decimal(instance.a, instance.b)
        assert t.segments[-1].kind == "tool" and t.segments[-1].text == "⟨end⟩"


def test_batched_episodes_give_byte_identical_trajectories(addition):
    instances = mixed_instances(addition, 20, seed=2)
    one = run_episodes(addition, instances, ExpertPolicy(addition), batch_size=1)
    seven = run_episodes(addition, instances, ExpertPolicy(addition), batch_size=7)
    many = run_episodes(addition, instances, ExpertPolicy(addition), batch_size=64)
    assert dump(one) == dump(seven) == dump(many)


def test_segments_are_exactly_the_actions_and_observations(addition, tokenizer):
    instances = mixed_instances(addition, 8, seed=3, max_size=12)
    policy = Recording(ExpertPolicy(addition))
    trajectories = run_episodes(addition, instances, policy, batch_size=3)
    for t, episode in zip(trajectories, policy.episodes):
        # the policy saw the question first, then every observation; the last action ended it
        assert episode[0][0] == t.segments[0].text
        observations = [obs for obs, _ in episode[1:]] + [""]
        actions = [action for _, action in episode]
        expected = "".join(a + o for a, o in zip(actions, observations))
        assert "".join(s.text for s in t.segments[1:]) == expected

        ids, mask = t.stream(tokenizer)
        assert ids == [tokenizer.bos_id] + tokenizer.encode(expected)
        expected_mask = [False]
        for a, o in zip(actions, observations):
            expected_mask += [True] * len(tokenizer.encode(a)) + [False] * len(tokenizer.encode(o))
        assert mask == expected_mask


def test_on_episode_is_called_once_per_episode_with_its_trajectory(addition):
    instances = mixed_instances(addition, 11, seed=4, max_size=8)
    seen: list[tuple[int, Trajectory]] = []
    trajectories = run_episodes(
        addition, instances, ExpertPolicy(addition), batch_size=4, on_episode=lambda i, t: seen.append((i, t))
    )
    assert sorted(i for i, _ in seen) == list(range(len(instances)))
    for index, t in seen:
        assert t is trajectories[index]


def test_seeds_are_recorded_per_episode(addition):
    instances = mixed_instances(addition, 3, seed=5, max_size=4)
    trajectories = run_episodes(addition, instances, ExpertPolicy(addition), seeds=[7, None, 9])
    assert [t.seed for t in trajectories] == [7, None, 9]


def test_a_scripted_policy_replaying_expert_actions_reproduces_the_trajectories(addition):
    instances = mixed_instances(addition, 9, seed=6, max_size=15) + addition.hard_instances(6)
    expert = run_episodes(addition, instances, ExpertPolicy(addition), batch_size=4)
    scripted = run_episodes(addition, instances, ScriptedPolicy([actions_of(t) for t in expert]), batch_size=3)
    assert dump(scripted) == dump(expert)


def test_a_scripted_wrong_answer_is_recorded_as_incorrect(addition):
    instances = [Sum("2", "3"), Sum("4", "4")]
    scripts = [["⟨answer⟩6⟨end⟩"], ["hmm⟨a?⟩", "⟨answer⟩8⟨end⟩"]]
    wrong, right = run_episodes(addition, instances, ScriptedPolicy(scripts))
    assert (wrong.correct, wrong.answer, wrong.truncated) == (False, "6", False)
    assert (right.correct, right.answer) == (True, "8")
    assert [(s.kind, s.text) for s in right.segments] == [
        ("question", "4+4="),
        ("thought", "hmm"),
        ("tool", "⟨a?⟩"),
        ("obs", "4"),
        ("answer", "⟨answer⟩8"),
        ("tool", "⟨end⟩"),
    ]


def test_an_episode_that_runs_out_of_steps_is_recorded_as_truncated(addition):
    instance = Sum("12", "3")
    budget = addition.step_budget(2)
    (t,) = run_episodes(addition, [instance], ScriptedPolicy([["⟨a?⟩"] * budget]))
    assert t.truncated is True and t.correct is False
    assert sum(s.kind == "tool" for s in t.segments) == budget


def test_no_instances_give_no_trajectories(addition):
    assert run_episodes(addition, [], ExpertPolicy(addition)) == []


@pytest.mark.parametrize("batch_size", [1, 2, 50])
def test_every_slot_is_ended_once_when_no_episode_is_left(addition, batch_size):
    class Counting(ExpertPolicy):
        def __init__(self, task):
            super().__init__(task)
            self.begun, self.ended = 0, []

        def begin(self, slot):
            self.begun += 1
            super().begin(slot)

        def end(self, slot):
            self.ended.append(slot)

    policy = Counting(addition)
    instances = mixed_instances(addition, 6, seed=7, max_size=5)
    run_episodes(addition, instances, policy, batch_size=batch_size)
    assert policy.begun == 6
    assert sorted(policy.ended) == list(range(min(batch_size, 6)))


def _bundled_policy(batch_size: int):
    from ssmagent.agent import ModelPolicy, Tokenizer
    from ssmagent.cli import bundled_checkpoint
    from ssmagent.model import load_checkpoint

    ckpt = load_checkpoint(bundled_checkpoint("addition"))
    return ModelPolicy(ckpt.model, Tokenizer(ckpt.vocab), batch_size, max_action_tokens=16)


def test_model_rollouts_batched_equal_unbatched_and_solve_mixed_lengths(addition):
    instances = mixed_instances(addition, 12, seed=11, max_size=60) + addition.hard_instances(25)
    one_by_one = run_episodes(addition, instances, _bundled_policy(1), batch_size=1)
    batched = run_episodes(addition, instances, _bundled_policy(4), batch_size=4)
    assert dump(batched) == dump(one_by_one)
    assert all(t.correct for t in batched)


def test_model_policy_counts_the_tokens_it_generates(addition, tokenizer):
    policy = _bundled_policy(2)
    trajectories = run_episodes(addition, [Sum("958", "67"), Sum("0", "0")], policy, batch_size=2)
    assert [t.answer for t in trajectories] == ["1025", "0"]
    assert policy.generated_tokens == sum(t.generated_tokens for t in trajectories)

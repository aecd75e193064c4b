"""Training: schedule, batches and masks, the loss falling, and resume giving the same weights."""

from __future__ import annotations

import json
import math

import pytest
import torch

from ssmagent.agent import Tokenizer, task_commands
from ssmagent.model import load_checkpoint
from ssmagent.tasks import get_task
from ssmagent.train import TrainConfig, collate, expert_batch, learning_rate, train


def small_config(**overrides) -> TrainConfig:
    base = dict(steps=30, batch_size=8, warmup=5, eval_every=10, eval_sizes=(3,), eval_episodes=2, seed=3)
    return TrainConfig(**{**base, **overrides})


def test_learning_rate_warms_up_linearly_then_decays_by_cosine_to_the_floor():
    cfg = TrainConfig(steps=100, warmup=10, lr=1.0, min_lr_ratio=0.1)
    assert learning_rate(0, cfg) == pytest.approx(0.1)
    assert learning_rate(9, cfg) == pytest.approx(1.0)
    assert learning_rate(10, cfg) == pytest.approx(1.0)
    assert learning_rate(55, cfg) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert learning_rate(100, cfg) == pytest.approx(0.1)


def test_expert_batches_depend_only_on_seed_and_step():
    task = get_task("addition")
    first = [t.to_json() for t in expert_batch(task, 5, 4, seed=1, step=7)]
    again = [t.to_json() for t in expert_batch(task, 5, 4, seed=1, step=7)]
    other = [t.to_json() for t in expert_batch(task, 5, 4, seed=1, step=8)]
    assert first == again and first != other
    assert all(t["correct"] and t["size"] <= 5 for t in first)


def test_collate_shifts_targets_and_masks_only_generated_tokens():
    task = get_task("addition")
    tokenizer = Tokenizer.for_commands(task_commands(task))
    trajectories = expert_batch(task, 5, 3, seed=0, step=0)
    inputs, targets, mask = collate(trajectories, tokenizer)
    for row, trajectory in enumerate(trajectories):
        ids, loss_mask = trajectory.stream(tokenizer)
        n = len(ids) - 1
        assert inputs[row, :n].tolist() == ids[:-1]
        assert targets[row, :n].tolist() == ids[1:]
        assert mask[row, :n].tolist() == loss_mask[1:]
        assert not mask[row, n:].any()
        observed = [tokenizer.decode([t]) for t, m in zip(ids[1:], loss_mask[1:]) if not m]
        assert observed and all(len(o) == 1 and not o.startswith("⟨") for o in observed)


def test_config_validation_names_the_bad_option():
    with pytest.raises(ValueError, match="--steps"):
        small_config(steps=0).validate()
    with pytest.raises(ValueError, match="dt-min"):
        small_config(dt_min=0.5, dt_max=0.1).validate()


def test_a_short_cpu_run_lowers_the_loss_and_keeps_the_best_checkpoint(tmp_path):
    result = train(small_config(steps=40, eval_every=20), tmp_path)
    losses = [e["loss"] for e in result.log]
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:5]) / 5
    assert (tmp_path / "best.safetensors").exists() and (tmp_path / "last.safetensors").exists()
    best = load_checkpoint(tmp_path / "best.safetensors")
    assert best.meta["step"] == result.best_step and best.meta["task"] == "addition"
    logged = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in logged] == list(range(1, 41))


class Interrupt(Exception):
    pass


def test_an_interrupted_run_resumed_ends_with_the_same_weights(tmp_path):
    cfg = small_config()
    straight = train(cfg, tmp_path / "straight")

    def stop_at_15(entry):
        if entry["step"] == 15:
            raise Interrupt

    with pytest.raises(Interrupt):
        train(cfg, tmp_path / "resumed", on_log=stop_at_15)
    resumed = train(cfg, tmp_path / "resumed", resume=True)

    a = load_checkpoint(tmp_path / "straight" / "last.safetensors").model.state_dict()
    b = load_checkpoint(tmp_path / "resumed" / "last.safetensors").model.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    strip = lambda log: [{k: v for k, v in e.items() if k != "seconds"} for e in log]  # noqa: E731
    assert strip(straight.log) == strip(resumed.log)
    assert straight.best_step == resumed.best_step


def test_resume_refuses_other_options_and_missing_runs(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        train(small_config(), tmp_path / "empty", resume=True)
    train(small_config(steps=10), tmp_path / "run")
    with pytest.raises(ValueError, match="other options"):
        train(small_config(steps=10, lr=1e-3), tmp_path / "run", resume=True)

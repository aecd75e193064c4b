"""Fixed trajectory sets: generation is deterministic, atomic and described by its metadata;
training from a file goes through the same batches and loss as live data, and resumes only on
the same file."""

from __future__ import annotations

import dataclasses
import hashlib
import json

import numpy as np
import pytest
import torch

import ssmagent.train.data as data_module
import ssmagent.train.trainer as trainer_module
from ssmagent.agent import Tokenizer, read_jsonl, task_commands
from ssmagent.model import load_checkpoint
from ssmagent.tasks.codefix import CodeFix
from ssmagent.train import (
    DataError,
    TrainConfig,
    data_batch,
    generate,
    load_trajectory_set,
    meta_path,
    train,
)


@pytest.fixture(scope="module")
def addition_data(tmp_path_factory, addition, tokenizer):
    """A small addition trajectory set on disk, and the same set loaded."""
    path = tmp_path_factory.mktemp("data") / "addition.jsonl"
    generate(addition, [1, 2, 3, 4, 5], 40, seed=0, out=path)
    return load_trajectory_set(path, addition, tokenizer)


def data_config(dataset, **overrides) -> TrainConfig:
    base = dict(steps=12, batch_size=6, warmup=2, eval_every=6, eval_sizes=(3,), eval_episodes=1, seed=3,
                max_size=dataset.max_size, data_sha256=dataset.sha256)
    return TrainConfig(**{**base, **overrides})


def weights(path):
    return load_checkpoint(path).model.state_dict()


def same_weights(a, b) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def strip_seconds(log):
    return [{k: v for k, v in e.items() if k != "seconds"} for e in log]


def test_generation_is_a_pure_function_of_the_seed_and_each_episode_replays_from_its_own(tmp_path, addition):
    first, again, other = tmp_path / "a.jsonl", tmp_path / "b.jsonl", tmp_path / "c.jsonl"
    generate(addition, [2, 4], 12, seed=5, out=first)
    generate(addition, [2, 4], 12, seed=5, out=again)
    generate(addition, [2, 4], 12, seed=6, out=other)
    assert first.read_bytes() == again.read_bytes() != other.read_bytes()
    for t in read_jsonl(first):
        assert t.correct and t.size in (2, 4)
        assert addition.to_json(addition.sample(t.size, np.random.default_rng(t.seed))) == t.instance


def test_the_metadata_sidecar_describes_the_file(tmp_path, addition):
    out = tmp_path / "set.jsonl"
    meta = generate(addition, [3, 1, 3], 9, seed=2, out=out)
    trajectories = list(read_jsonl(out))
    on_disk = json.loads(meta_path(out).read_text())
    assert meta_path(out) == tmp_path / "set.meta.json"
    assert on_disk == {
        "task": "addition", "sizes": [1, 3], "seed": 2, "episodes": 9, "count": 9,
        "tokens": sum(t.generated_tokens + t.observed_tokens for t in trajectories),
        "generated_tokens": sum(t.generated_tokens for t in trajectories),
        "backend": None, "sha256": hashlib.sha256(out.read_bytes()).hexdigest(),
    }
    assert len(trajectories) == 9 and on_disk["tokens"] > on_disk["generated_tokens"] > 0
    assert on_disk == dataclasses.asdict(meta)  # what generate returns is what it wrote


def test_a_failed_expert_episode_stops_generation_and_leaves_no_partial_file(tmp_path, addition, monkeypatch):
    class Flaky(type(addition)):
        """Addition whose fifth episode is scored wrong: after two chunks are written."""

        scored = 0

        def score_episode(self, instance, answer, tools):
            Flaky.scored += 1
            return Flaky.scored != 5

    monkeypatch.setattr(data_module, "CHUNK", 2)
    out = tmp_path / "set.jsonl"
    out.write_text("the older file\n")
    with pytest.raises(DataError, match="ended with reward 0.*--policy expert"):
        generate(Flaky(), [1, 2, 3], 8, seed=0, out=out)
    assert out.read_text() == "the older file\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["set.jsonl"]  # no temp file, no metadata


def test_the_file_holds_exactly_the_live_expert_streams(addition_data, addition, tokenizer):
    """Same instances through the live loop: the same token streams, so the same collated batch."""
    live = data_module.expert_episodes(addition, [(t.size, t.seed) for t in addition_data.trajectories])
    for stored, fresh in zip(addition_data.trajectories, live, strict=True):
        assert stored.stream(tokenizer) == fresh.stream(tokenizer)


def test_data_batches_depend_only_on_seed_and_step(addition_data):
    trajectories = addition_data.trajectories
    first = data_batch(trajectories, 8, seed=1, step=7)
    assert first == data_batch(trajectories, 8, seed=1, step=7)
    assert first != data_batch(trajectories, 8, seed=1, step=8)
    assert first != data_batch(trajectories, 8, seed=2, step=7)


def test_training_from_a_file_equals_training_on_the_same_batches_re_read(tmp_path, addition_data, monkeypatch, one_thread):
    """The data path changes only where the batch comes from: feeding the live path the same
    batches, read again from the file, gives bit-identical losses and weights."""
    from_file = train(data_config(addition_data), tmp_path / "data", data=addition_data)
    re_read = list(read_jsonl(addition_data.path))
    monkeypatch.setattr(trainer_module, "expert_batch",
                        lambda task, max_size, batch_size, seed, step: data_batch(re_read, batch_size, seed, step))
    live = train(data_config(addition_data, data_sha256=None), tmp_path / "live")
    assert [e["loss"] for e in from_file.log] == [e["loss"] for e in live.log]
    assert same_weights(weights(tmp_path / "data" / "last.safetensors"), weights(tmp_path / "live" / "last.safetensors"))


class Interrupt(Exception):
    pass


def test_an_interrupted_run_on_data_resumed_ends_with_the_same_weights(tmp_path, addition_data, one_thread):
    cfg = data_config(addition_data)
    straight = train(cfg, tmp_path / "straight", data=addition_data)

    def stop_at_8(entry):
        if entry["step"] == 8:
            raise Interrupt

    with pytest.raises(Interrupt):
        train(cfg, tmp_path / "resumed", on_log=stop_at_8, data=addition_data)
    resumed = train(cfg, tmp_path / "resumed", resume=True, data=addition_data)
    assert same_weights(weights(tmp_path / "straight" / "last.safetensors"), weights(tmp_path / "resumed" / "last.safetensors"))
    assert strip_seconds(straight.log) == strip_seconds(resumed.log)


def test_resume_on_other_data_or_without_data_is_refused(tmp_path, addition, tokenizer, addition_data, one_thread):
    train(data_config(addition_data, steps=6), tmp_path / "run", data=addition_data)
    generate(addition, [1, 2, 3, 4, 5], 40, seed=1, out=tmp_path / "other.jsonl")
    other = load_trajectory_set(tmp_path / "other.jsonl", addition, tokenizer)
    with pytest.raises(ValueError, match=r"trained on the trajectory file with SHA-256 .*other\.jsonl"):
        train(data_config(other, steps=6), tmp_path / "run", resume=True, data=other)
    with pytest.raises(ValueError, match="not live expert batches"):
        train(data_config(addition_data, steps=6, data_sha256=None), tmp_path / "run", resume=True)


def test_a_config_whose_hash_is_not_the_data_s_is_refused(tmp_path, addition_data):
    with pytest.raises(ValueError, match="data_sha256"):
        train(data_config(addition_data, data_sha256="0" * 64), tmp_path / "run", data=addition_data)


def test_files_that_cannot_be_trained_on_are_refused_with_file_and_line(tmp_path, addition, tokenizer, addition_data):
    good = addition_data.path.read_text().splitlines(keepends=True)
    record = json.loads(good[0])
    cases = {
        "missing.jsonl": (None, "no such file"),
        "empty.jsonl": ("\n", "holds no trajectories"),
        "garbage.jsonl": ("{not json\n", r"garbage\.jsonl:1: not a trajectory"),
        "other_task.jsonl": (good[0] + json.dumps({**record, "task": "hanoi"}) + "\n", r"other_task\.jsonl:2: a trajectory of 'hanoi'"),
        "failed.jsonl": (json.dumps({**record, "correct": False}) + "\n", r"failed\.jsonl:1: an episode that failed"),
        "unknown_token.jsonl": (
            json.dumps({**record, "segments": [*record["segments"], {"kind": "tool", "text": "⟨fly⟩"}]}) + "\n",
            r"unknown_token\.jsonl:1: symbol '⟨fly⟩' is not in the vocabulary",
        ),
    }
    for name, (text, needle) in cases.items():
        if text is not None:
            (tmp_path / name).write_text(text)
        with pytest.raises(DataError, match=needle):
            load_trajectory_set(tmp_path / name, addition, tokenizer)


def test_codefix_data_is_generated_through_the_real_sandbox(tmp_path, sandbox):
    task = CodeFix(sandbox)
    out = tmp_path / "codefix.jsonl"
    meta = generate(task, [2, 3], 3, seed=0, out=out, backend=sandbox.name)
    assert meta.backend == sandbox.name and meta.count == 3
    loaded = load_trajectory_set(out, task, Tokenizer.for_commands(task_commands(task)))
    assert all(t.correct and t.size in (2, 3) for t in loaded.trajectories)
    assert all(any("⟨run⟩" in s.text for s in t.segments) for t in loaded.trajectories)

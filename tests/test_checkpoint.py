"""Checkpoints: round trips, atomic writes, and clear errors for missing or damaged files."""

from __future__ import annotations

import json

import pytest
import torch

from ssmagent.model import (
    CheckpointError,
    MambaConfig,
    MambaLM,
    load_checkpoint,
    load_training_state,
    save_checkpoint,
    save_training_state,
)
from ssmagent.model import checkpoint as checkpoint_module

VOCAB = ["<pad>", "<bos>", *"0123456789+=", "⟨read⟩"]
META = {"task": "addition", "step": 250, "eval": {"100": 1.0}}


pytestmark = pytest.mark.usefixtures("one_thread")


def make_model(**overrides) -> MambaLM:
    torch.manual_seed(0)
    return MambaLM(MambaConfig.preset("tiny", len(VOCAB), dt_min=0.05, dt_max=0.5, **overrides))


def only_file(directory):
    return sorted(p.name for p in directory.iterdir())


@pytest.mark.parametrize("tied", [True, False])
def test_checkpoint_round_trips_weights_config_vocab_and_meta(tmp_path, tied):
    model = make_model(tie_embeddings=tied)
    path = save_checkpoint(tmp_path / "m.safetensors", model, VOCAB, META)
    ckpt = load_checkpoint(path)
    assert ckpt.config == model.cfg
    assert ckpt.vocab == VOCAB and ckpt.meta == META
    assert not ckpt.model.training
    saved, loaded = model.state_dict(), ckpt.model.state_dict()
    assert saved.keys() == loaded.keys()
    assert all(torch.equal(saved[k], loaded[k]) for k in saved)
    assert (ckpt.model.lm_head.weight is ckpt.model.backbone.embeddings.weight) == tied
    ids = torch.randint(0, len(VOCAB), (2, 9))
    with torch.no_grad():
        torch.testing.assert_close(ckpt.model(ids), model.eval()(ids), atol=0, rtol=0)


def test_tied_lm_head_is_stored_once_and_tiny_checkpoints_are_small(tmp_path):
    from safetensors import safe_open

    path = save_checkpoint(tmp_path / "m.safetensors", make_model(), VOCAB, META)
    with safe_open(str(path), framework="pt") as f:
        assert "lm_head.weight" not in f.keys() and "backbone.embeddings.weight" in f.keys()
        assert json.loads(f.metadata()["config"])["d_model"] == 64
    assert path.stat().st_size < 4 * 2**20


def test_saving_is_atomic_and_leaves_no_temporary_files(tmp_path):
    target = tmp_path / "runs" / "last.safetensors"  # the directory is created
    save_checkpoint(target, make_model(), VOCAB, {"step": 1})
    save_checkpoint(target, make_model(), VOCAB, {"step": 2})  # overwrite in place
    assert only_file(target.parent) == ["last.safetensors"]
    assert load_checkpoint(target).meta == {"step": 2}


def test_a_failed_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    target = tmp_path / "last.safetensors"
    save_checkpoint(target, make_model(), VOCAB, {"step": 1})

    def crash(*args, **kwargs):
        raise OSError("disk full")

    import safetensors.torch

    monkeypatch.setattr(safetensors.torch, "save_file", crash)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(target, make_model(), VOCAB, {"step": 2})
    assert only_file(tmp_path) == ["last.safetensors"]
    assert load_checkpoint(target).meta == {"step": 1}


def test_meta_that_is_not_json_is_refused_before_writing(tmp_path):
    with pytest.raises(ValueError, match="JSON"):
        save_checkpoint(tmp_path / "m.safetensors", make_model(), VOCAB, {"bad": object()})
    assert only_file(tmp_path) == []


def assert_one_line_error(path, *fragments):
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    for fragment in fragments:
        assert fragment in message
    return message


def test_missing_checkpoint_says_so(tmp_path):
    assert_one_line_error(tmp_path / "nope.safetensors", "no checkpoint file", "ssmagent train")


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_corrupt_checkpoint_raises_a_clear_error(tmp_path, damage):
    path = save_checkpoint(tmp_path / "m.safetensors", make_model(), VOCAB, META)
    data = path.read_bytes()
    path.write_bytes({"truncated": data[: len(data) // 2], "garbage": b"\x00not a checkpoint" * 50, "empty": b""}[damage])
    assert_one_line_error(path, "not a readable safetensors checkpoint", "use another checkpoint")


def test_foreign_safetensors_file_is_rejected(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(3)}, str(path))
    assert_one_line_error(path, "not written by ssmagent")


def test_checkpoint_whose_weights_do_not_fit_its_config_is_rejected(tmp_path):
    from safetensors import safe_open
    from safetensors.torch import save_file

    path = save_checkpoint(tmp_path / "m.safetensors", make_model(), VOCAB, META)
    with safe_open(str(path), framework="pt") as f:
        metadata, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    config = json.loads(metadata["config"])
    save_file(tensors, str(path), metadata={**metadata, "config": json.dumps({**config, "d_state": 8})})
    assert_one_line_error(path, "does not match its own config", "A_log")


def test_training_state_round_trips(tmp_path):
    model = make_model()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.zeros(1, 3, dtype=torch.long)).sum().backward()
    opt.step()
    state = {"optimizer": opt.state_dict(), "torch_rng": torch.get_rng_state(), "step": 7, "log": [{"a": 1}]}
    path = save_training_state(tmp_path / "last.state.pt", state)
    assert only_file(tmp_path) == ["last.state.pt"]
    loaded = load_training_state(path)
    assert loaded["step"] == 7 and loaded["log"] == [{"a": 1}]
    assert torch.equal(loaded["torch_rng"], state["torch_rng"])
    fresh = torch.optim.AdamW(make_model().parameters(), lr=1e-3)
    fresh.load_state_dict(loaded["optimizer"])
    exp_avg = loaded["optimizer"]["state"][0]["exp_avg"]
    assert torch.equal(exp_avg, opt.state_dict()["state"][0]["exp_avg"])


def test_missing_or_damaged_training_state_raises_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="nothing to resume"):
        load_training_state(tmp_path / "none.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="not a readable training state") as info:
        load_training_state(bad)
    assert "\n" not in str(info.value)


def test_checkpoint_error_is_a_value_error():
    assert issubclass(CheckpointError, ValueError)
    assert checkpoint_module.CheckpointError is CheckpointError

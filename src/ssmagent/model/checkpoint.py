"""Checkpoints: weights in safetensors, with the config, vocabulary and metadata inside the file.

One file is a whole model: ``save_checkpoint`` writes the weights with safetensors and puts three
JSON strings in its metadata header — ``config`` (``MambaConfig.to_dict()``), ``vocab`` (the
token strings, id order) and ``meta`` (free-form: task, training options, step, eval scores).
Weight names are transformers' ``MambaForCausalLM`` names, so the file is also an HF-style
``model.safetensors`` (a tied ``lm_head.weight`` is not stored: it *is* the embedding matrix).

Optimizer, scheduler and RNG states for ``--resume`` go to a separate file
(``save_training_state``), written with ``torch.save``: they are only ever read back by us.

Every write is atomic: a temporary file in the same directory, flushed to disk, then renamed over
the target. A crash mid-save leaves the previous checkpoint intact, never a truncated one.
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from ssmagent.atomic import atomic_write
from ssmagent.model.mamba import MambaConfig, MambaLM

FORMAT = "ssmagent-mamba-1"


class CheckpointError(ValueError):
    """A checkpoint or training-state file is missing, unreadable or not ours (one-line message)."""


@dataclass
class Checkpoint:
    model: MambaLM  # in eval mode
    config: MambaConfig
    vocab: list[str]
    meta: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def save_checkpoint(path: str | os.PathLike, model: MambaLM, vocab: list[str], meta: dict[str, Any]) -> Path:
    """Write ``model``'s weights, config, ``vocab`` and ``meta`` to one safetensors file, atomically."""
    from safetensors.torch import save_file

    cfg = model.cfg
    vocab = list(vocab)
    if not all(isinstance(tok, str) for tok in vocab):
        raise ValueError("save_checkpoint: vocab must be a list of strings (the token texts, in id order)")
    if len(vocab) > cfg.vocab_size:
        raise ValueError(f"save_checkpoint: vocab has {len(vocab)} tokens but the model only {cfg.vocab_size}")
    try:
        meta_json = json.dumps(meta, sort_keys=True)
    except (TypeError, ValueError) as err:
        raise ValueError(f"save_checkpoint: meta must be JSON-serialisable ({_one_line(err)})") from None
    tensors = {
        name: t.detach().to("cpu").contiguous()
        for name, t in model.state_dict().items()
        if not (cfg.tie_embeddings and name == "lm_head.weight")  # the embedding matrix itself
    }
    metadata = {
        "format": FORMAT,
        "config": json.dumps(cfg.to_dict(), sort_keys=True),
        "vocab": json.dumps(vocab),
        "meta": meta_json,
    }
    return atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))


def load_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu") -> Checkpoint:
    """Read a file written by ``save_checkpoint``: the model (eval mode, on ``device``) and the rest."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"no checkpoint file at {path}: check the path, or train one with `ssmagent train`"
        )
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            header = f.metadata() or {}
            tensors = {name: f.get_tensor(name) for name in f.keys()}
    except Exception as err:  # safetensors raises its own error types (and OSError)
        raise CheckpointError(
            f"{path} is not a readable safetensors checkpoint ({_one_line(err)}); "
            "it is truncated or another kind of file: re-save it or use another checkpoint"
        ) from None
    missing = [key for key in ("config", "vocab", "meta") if key not in header]
    if missing:
        raise CheckpointError(
            f"{path} lacks the {', '.join(missing)} metadata of an ssmagent checkpoint; "
            "it was not written by ssmagent's save_checkpoint: convert it or use another checkpoint"
        )
    try:
        config = MambaConfig.from_dict(json.loads(header["config"]))
        vocab = json.loads(header["vocab"])
        meta = json.loads(header["meta"])
        if not isinstance(vocab, list) or not all(isinstance(tok, str) for tok in vocab):
            raise ValueError("vocab is not a list of strings")
        if not isinstance(meta, dict):
            raise ValueError("meta is not a JSON object")
    except (ValueError, TypeError) as err:
        raise CheckpointError(
            f"{path} has unreadable metadata ({_one_line(err)}): the file is damaged or from an "
            "incompatible version; re-save it or use another checkpoint"
        ) from None

    model = MambaLM(config)
    expected = model.state_dict()
    if config.tie_embeddings:
        expected.pop("lm_head.weight")
    problems = sorted(set(expected) ^ set(tensors))
    problems += [
        f"{name} {tuple(tensors[name].shape)}≠{tuple(t.shape)}"
        for name, t in expected.items()
        if name in tensors and tensors[name].shape != t.shape
    ]
    if problems:
        raise CheckpointError(
            f"{path} does not match its own config (mismatched weights: {', '.join(problems[:5])}"
            f"{' …' if len(problems) > 5 else ''}): the file is damaged; re-save it or use another checkpoint"
        )
    model.load_state_dict(tensors, strict=False)  # a tied lm_head is the embedding, already loaded
    model.to(device).eval()
    return Checkpoint(model=model, config=config, vocab=vocab, meta=meta, path=path)


def save_training_state(path: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Atomically ``torch.save`` what ``--resume`` needs (optimizer, scheduler, RNG states, step…)."""

    def write(tmp: str) -> None:
        buffer = io.BytesIO()
        torch.save(state, buffer)
        with open(tmp, "wb") as f:
            f.write(buffer.getbuffer())

    return atomic_write(path, write)


def load_training_state(path: str | os.PathLike) -> dict[str, Any]:
    """Read a file written by ``save_training_state`` (on CPU). Trusted files only: it unpickles."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no training state at {path}: there is nothing to resume; start without --resume")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:
        raise CheckpointError(
            f"{path} is not a readable training state ({_one_line(err)}); it is damaged: "
            "start without --resume, or restore the file"
        ) from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} holds a {type(state).__name__}, not a training state dict; start without --resume")
    return state

"""Trajectories: the JSONL record of an episode, and the token stream a model trains on.

One episode per line: ``{"task", "size", "seed", "instance", "segments": [{"kind", "text"}],
"answer", "correct", "truncated", "generated_tokens", "observed_tokens"}``. Kinds: ``question`` (the env's first observation),
``thought``, ``tool`` (one command symbol, ``⟨end⟩`` included), ``obs`` and ``answer`` (text
after ``⟨answer⟩``; the first answer segment starts with the marker itself). The same schema
holds expert data, model rollouts and REPL saves.

The model's stream is ``⟨bos⟩`` followed by every segment's text except the question, which
lives on the tools (the policy reads it through them: a question in the context would put
out-of-distribution runs of digits into the state at long lengths, DESIGN.md §7). The loss is
on thought, tool and answer tokens only.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ssmagent.agent.tokenizer import Tokenizer
from ssmagent.atomic import atomic_write_text
from ssmagent.tools.base import split_symbols

KINDS = ("question", "thought", "tool", "obs", "answer")
TRAINED_KINDS = frozenset({"thought", "tool", "answer"})


@dataclass
class Segment:
    kind: str
    text: str

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"segment kind must be one of {KINDS}, got {self.kind!r}")


@dataclass
class Trajectory:
    task: str
    size: int
    seed: int | None = None
    instance: dict[str, Any] = field(default_factory=dict)
    segments: list[Segment] = field(default_factory=list)
    answer: str = ""
    correct: bool | None = None
    truncated: bool = False
    generated_tokens: int = 0
    """Tokens the policy wrote (thought, tool, answer): decode steps that pick a token."""
    observed_tokens: int = 0
    """Observation tokens fed to the policy: decode steps that only read."""

    def add(self, kind: str, text: str, keep: bool = True) -> None:
        """Append a segment and count its tokens; ``keep=False`` only counts (very long
        episodes, whose segments would otherwise grow memory without bound)."""
        if not text:
            return
        if kind in TRAINED_KINDS:
            self.generated_tokens += len(split_symbols(text))
        elif kind == "obs":
            self.observed_tokens += len(split_symbols(text))
        if keep:
            self.segments.append(Segment(kind, text))

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Trajectory:
        data = dict(data)
        data["segments"] = [Segment(**s) for s in data.get("segments", [])]
        return cls(**data)

    def stream(self, tokenizer: Tokenizer) -> tuple[list[int], list[bool]]:
        """The model's token ids and, per id, whether the loss counts it."""
        ids, mask = [tokenizer.bos_id], [False]
        for segment in self.segments:
            if segment.kind == "question":
                continue
            seg_ids = tokenizer.encode(segment.text)
            ids += seg_ids
            mask += [segment.kind in TRAINED_KINDS] * len(seg_ids)
        return ids, mask


def jsonl_line(trajectory: Trajectory) -> str:
    """One line of a trajectory file (for writers that stream episodes as they come)."""
    return json.dumps(trajectory.to_json(), ensure_ascii=False) + "\n"


def write_jsonl(path: str | Path, trajectories: Iterable[Trajectory]) -> None:
    """Write atomically: a reader never sees half a file."""
    atomic_write_text(path, "".join(map(jsonl_line, trajectories)))


def read_jsonl(path: str | Path) -> Iterator[Trajectory]:
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if line.strip():
                try:
                    yield Trajectory.from_json(json.loads(line))
                except (json.JSONDecodeError, TypeError, ValueError) as err:
                    raise ValueError(f"{path}:{number}: not a trajectory ({err})") from None

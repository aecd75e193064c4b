"""Why an episode failed: the first token where the policy left the expert's path.

The expert is exact and deterministic, so the first token at which a model's stream differs
from the expert's on the same instance is where the model went wrong; everything after it is
consequence. The task names the phase of that position (for addition: setup, column k, answer
digit k), which is where length-generalisation failures cluster (DESIGN.md §7).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ssmagent.agent import ExpertPolicy, Tokenizer, Trajectory, run_episodes
from ssmagent.tasks import Task


@dataclass
class Divergence:
    position: int
    """Index of the first wrong token in the model's stream (0 is ⟨bos⟩)."""
    expected: str
    got: str
    phase: str
    context: str
    """The tokens just before it, as text."""


def first_divergence(
    task: Task, instance: Any, trajectory: Trajectory, tokenizer: Tokenizer, context: int = 40
) -> Divergence | None:
    """Where ``trajectory`` first differs from the expert's on ``instance`` (None if nowhere)."""
    (expert,) = run_episodes(task, [instance], ExpertPolicy(task), batch_size=1)
    got, _ = trajectory.stream(tokenizer)
    want, _ = expert.stream(tokenizer)
    position = next((i for i, (g, w) in enumerate(zip(got, want)) if g != w), min(len(got), len(want)))
    if position == len(got) == len(want):
        return None
    symbols = [tokenizer.vocab[i] for i in want[1:position]]
    return Divergence(
        position=position,
        expected=tokenizer.vocab[want[position]] if position < len(want) else "(nothing: the expert had ended)",
        got=tokenizer.vocab[got[position]] if position < len(got) else "(nothing: the episode was cut off)",
        phase=task.phase(symbols),
        context="".join(symbols[-context:]),
    )

"""What a task is: instances of a size, the question, the exact answer, the tools, the expert.

A task knows no model, env or policy. Its expert is a program that solves an instance *only
through the tools*, one action at a time, with a bounded control state: its trajectories are
the training data, and the locality test (``ssmagent.eval.locality``) checks that a
finite-state policy reading a short window could imitate it at any length.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, Generic, TypeVar

import numpy as np

from ssmagent.tools.base import Tool, command_symbol, is_command_symbol

Instance = TypeVar("Instance")

ANSWER = command_symbol("answer")
"""Marks the start of the answer: what the policy writes after it is answer text. The answer may
still be interleaved with tool commands (a long answer is read back from memory piece by piece,
which a finite-state policy needs for any answer longer than its memory)."""
END = command_symbol("end")
"""Ends the episode and submits the answer text."""


class TaskInputError(ValueError):
    """An instance or size given by a user is not valid for the task (one-line message)."""


class Expert(ABC):
    """An exact algorithm acting through the tools: observation in, action out.

    An action is the text written since the last observation: thoughts, then exactly one
    command symbol (or answer text and ``⟨end⟩``). ``act`` is called first with the question
    (which it must not parse: the question lives on the tools) and then with each observation.
    """

    @abstractmethod
    def act(self, observation: str) -> str: ...


class Task(ABC, Generic[Instance]):
    """A family of problems with one size knob."""

    name: str
    """Short name used on the command line and in results (``addition``)."""
    env_id: str
    """Registered Gymnasium id (``ssmagent/Addition-v0``)."""
    size_unit: str
    """What ``size`` counts (``digits``), for tables and plots."""

    @abstractmethod
    def sample(self, size: int, rng: np.random.Generator) -> Instance:
        """A random instance of exactly this size."""

    def sample_training(self, max_size: int, rng: np.random.Generator) -> Instance:
        """A training instance: size uniform in 1..max_size."""
        return self.sample(int(rng.integers(1, max_size + 1)), rng)

    @abstractmethod
    def hard_instances(self, size: int) -> list[Instance]:
        """Instances of this size that every evaluation includes (e.g. carry chains)."""

    def standard_instance(self, size: int) -> Instance | None:
        """The instance ``solve --size N`` shows when no seed is given, if the task has a
        standard one (the classic Tower of Hanoi); None draws a random instance."""
        return None

    @abstractmethod
    def parse(self, args: list[str]) -> Instance:
        """An explicit instance from command-line words; TaskInputError when malformed."""

    @abstractmethod
    def size_of(self, instance: Instance) -> int: ...

    @abstractmethod
    def question(self, instance: Instance) -> str: ...

    @abstractmethod
    def answer(self, instance: Instance) -> str:
        """The exact answer, as a user reads it."""

    def score(self, instance: Instance, answer: str) -> bool:
        return answer == self.answer(instance)

    def variant(self, instance: Instance) -> str:
        """The kind of problem within a size that results are also broken down by (``n×2``
        for a two-digit multiplier); '' when the task has a single kind."""
        return ""

    def score_episode(self, instance: Instance, answer: str, tools: Sequence[Tool]) -> bool:
        """The verdict on a finished episode: ``score`` of its answer, unless the task's success
        also lies in what the episode's tools changed (a codebase the policy fixed, checked by
        a hidden test) — then it reads them."""
        return self.score(instance, answer)

    @abstractmethod
    def make_tools(self) -> list[Tool]:
        """Fresh tools for one episode (reset with the question by the env)."""

    @abstractmethod
    def expert(self) -> Expert:
        """A fresh expert for one episode."""

    @abstractmethod
    def step_budget(self, size: int) -> int:
        """Env steps after which an episode is truncated; grows with the size."""

    @abstractmethod
    def to_json(self, instance: Instance) -> dict[str, Any]: ...

    max_action_tokens: int = 256
    """Longest action a policy may write; a model that writes more without a command is cut off
    there (its action then earns an error observation) instead of decoding forever."""

    def phase(self, stream: list[str]) -> str:
        """Name the phase an episode is in after these stream symbols (generated and observed,
        in order), to say where a policy went wrong; tasks name their own phases."""
        return f"step {sum(map(is_command_symbol, stream)) + 1}"

    def max_observation_length(self, size: int) -> int:
        """Longest observation (the question included) at this size."""
        return 256

    def check_size(self, size: int) -> int:
        if size < 1:
            raise TaskInputError(f"size must be a positive number of {self.size_unit}, got {size}")
        return size

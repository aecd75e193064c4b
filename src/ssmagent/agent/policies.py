"""Policies: who writes the actions. Each acts for a batch of episode slots at once.

``act`` takes the new observations of some slots and returns the actions that are complete; a
policy may return actions for only some slots (a model whose other rows are still writing), but
at least one. ``begin`` starts an episode in a slot; its first observation is the question.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence

import torch

from ssmagent.agent.tokenizer import Tokenizer
from ssmagent.tasks import Expert, Task


class Policy(ABC):
    def begin(self, slot: int) -> None:  # noqa: B027 - optional hook
        """A new episode starts in ``slot``."""

    def end(self, slot: int) -> None:  # noqa: B027 - optional hook
        """``slot`` holds no episode any more."""

    @abstractmethod
    def act(self, observations: dict[int, str]) -> dict[int, str]: ...


class ExpertPolicy(Policy):
    """The task's expert program, one instance per slot."""

    def __init__(self, task: Task) -> None:
        self.task = task
        self._experts: dict[int, Expert] = {}

    def begin(self, slot: int) -> None:
        self._experts[slot] = self.task.expert()

    def act(self, observations: dict[int, str]) -> dict[int, str]:
        return {slot: self._experts[slot].act(obs) for slot, obs in observations.items()}


class ScriptedPolicy(Policy):
    """Replays fixed action lists (one per episode, in the order episodes begin): for tests."""

    def __init__(self, scripts: Sequence[Sequence[str]]) -> None:
        self._scripts = [list(s) for s in scripts]
        self._next = 0
        self._running: dict[int, list[str]] = {}

    def begin(self, slot: int) -> None:
        self._running[slot] = list(self._scripts[self._next])
        self._next += 1

    def act(self, observations: dict[int, str]) -> dict[int, str]:
        return {slot: self._running[slot].pop(0) for slot in observations}


class ModelPolicy(Policy):
    """Greedy decoding of a Mamba model, every slot a row of one decode batch.

    Each tick feeds one token per row — the head of that row's queue of observation tokens, or
    the token it generated last — through ``model.step``, so observations and generated text take
    the same path and the state stays constant-size. A row whose queue empties generates; when
    it generates a command (or ``max_action_tokens`` without one) its action is complete.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: Tokenizer,
        batch_size: int,
        *,
        max_action_tokens: int,
        on_tick: Callable[[int], None] | None = None,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.device = next(model.parameters()).device
        self.state = model.allocate_state(batch_size, device=self.device)
        self.max_action_tokens = max_action_tokens
        self.on_tick = on_tick
        self._queue: list[list[int]] = [[] for _ in range(batch_size)]
        self._action: list[list[int]] = [[] for _ in range(batch_size)]
        self._active = [False] * batch_size
        self._fresh = [False] * batch_size
        self._is_command = torch.zeros(len(tokenizer), dtype=torch.bool)
        self._is_command[tokenizer.command_ids()] = True
        self.generated_tokens = 0
        self.ticks = 0

    def begin(self, slot: int) -> None:
        self.state.reset_rows([slot])
        self._queue[slot] = [self.tokenizer.bos_id]
        self._action[slot] = []
        self._active[slot] = True
        self._fresh[slot] = True

    def end(self, slot: int) -> None:
        self._active[slot] = False
        self._queue[slot] = []

    def act(self, observations: dict[int, str]) -> dict[int, str]:
        for slot, obs in observations.items():
            if self._fresh[slot]:  # the question lives on the tools, not in the context
                self._fresh[slot] = False
            else:
                self._queue[slot] += self.tokenizer.encode(obs, errors="replace")
        completed: dict[int, str] = {}
        pad = self.tokenizer.pad_id
        with torch.inference_mode():
            while not completed:
                fed = [q.pop(0) if q else pad for q in self._queue]
                logits = self.model.step(torch.tensor(fed, device=self.device), self.state)
                picks = logits.argmax(-1).tolist()
                self.ticks += 1
                for slot, active in enumerate(self._active):
                    if not active or self._queue[slot]:
                        continue
                    token = picks[slot]
                    self._queue[slot].append(token)
                    self._action[slot].append(token)
                    self.generated_tokens += 1
                    if self._is_command[token] or len(self._action[slot]) >= self.max_action_tokens:
                        completed[slot] = self.tokenizer.decode(self._action[slot])
                        self._action[slot] = []
                if self.on_tick:
                    self.on_tick(self.ticks)
        return completed

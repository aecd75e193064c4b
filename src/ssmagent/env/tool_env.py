"""One Gymnasium env for every task: the env owns the instance and its tools.

One step is one action: the text the policy wrote since the last observation — thoughts, then
exactly one command symbol; or, once ``⟨answer⟩`` has been written, answer text, then a command
or ``⟨end⟩``. Every symbol of the action is recorded by the tools first (the pointer tape keeps
what the policy writes), then the command runs and its output is the observation. ``⟨end⟩``
ends the episode: reward 1 for an exact answer, else 0. A malformed action is answered with an
``error: …`` observation and costs a step; the episode is truncated at the task's step budget.
"""

from __future__ import annotations

import string
from typing import Any

import gymnasium as gym
from gymnasium import spaces

from ssmagent.tasks import ANSWER, END, Task, TaskInputError, get_task
from ssmagent.tools.base import Tool, is_command_symbol, split_symbols

CHARSET = frozenset(string.printable) | frozenset("⟨⟩»«")
"""Characters of actions and observations: printable ASCII, and the command brackets."""
MAX_ACTION_LENGTH = 4096


class ToolEnv(gym.Env[str, str]):
    """A task instance and its tools behind Gymnasium's ``reset``/``step``."""

    metadata = {"render_modes": ["ansi"], "render_fps": 4}

    def __init__(self, task: Task | str = "addition", size: int = 10, render_mode: str | None = None) -> None:
        self.task = get_task(task) if isinstance(task, str) else task
        if not isinstance(size, int) or isinstance(size, bool) or size < 1:
            raise TaskInputError(f"size must be a positive integer number of {self.task.size_unit}, got {size!r}")
        if render_mode not in (None, "ansi"):
            raise TaskInputError(f"render_mode must be None or 'ansi', got {render_mode!r}")
        self.size = size
        self.render_mode = render_mode
        self.action_space = spaces.Text(max_length=MAX_ACTION_LENGTH, min_length=1, charset=CHARSET)
        self.observation_space = spaces.Text(
            max_length=self.task.max_observation_length(size), min_length=0, charset=CHARSET
        )
        self.instance: Any = None
        self._tools: dict[str, Tool] = {}
        self._all_tools: list[Tool] = []
        self._in_answer = False
        self._answer: list[str] = []
        self._steps = 0
        self._last = ""

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[str, dict]:
        """Start an episode: ``options={"instance": …}`` gives it explicitly (at most the env's
        size), else one of the env's size is drawn from the env's seeded RNG."""
        super().reset(seed=seed)
        options = options or {}
        if "instance" in options:
            self.instance = options["instance"]
            if self.task.size_of(self.instance) > self.size:
                raise TaskInputError(
                    f"instance of size {self.task.size_of(self.instance)} does not fit this env "
                    f"(size {self.size}); make the env with size >= the instance's"
                )
        else:
            self.instance = self.task.sample(self.size, self.np_random)
        question = self.task.question(self.instance)
        self._close_tools()
        self._all_tools = self.task.make_tools()
        self._tools = {}
        for tool in self._all_tools:
            tool.reset(question)
            self._tools.update({name: tool for name in tool.commands})
        self._in_answer, self._answer, self._steps, self._last = False, [], 0, question
        return question, {"question": question, "instance": self.task.to_json(self.instance)}

    @property
    def commands(self) -> tuple[str, ...]:
        """Every command name the current episode's tools answer."""
        return tuple(self._tools)

    def step(self, action: str) -> tuple[str, float, bool, bool, dict]:
        if self.instance is None:
            raise RuntimeError("call reset() before step()")
        if not isinstance(action, str):
            raise TypeError(f"an action is a str, got {type(action).__name__}")
        symbols = split_symbols(action)
        self._steps += 1
        thought, answer_part, command, error = self._parse(symbols)
        info: dict[str, Any] = {"thought": thought, "answer_part": answer_part, "command": command}
        if not error:
            for tool in self._all_tools:
                tool.record(symbols)
            if answer_part:
                self._in_answer = True
                self._answer.append(answer_part.removeprefix(ANSWER))
        reward, terminated = 0.0, False
        if error:
            observation = f"error: {error}"
        elif command == END:
            terminated = True
            answer = "".join(self._answer)
            correct = self.task.score_episode(self.instance, answer, self._all_tools)
            reward = float(correct)
            observation = ""
            info.update(answer=answer, correct=correct, expected=self.task.answer(self.instance))
        else:
            observation = self._tools[command[1:-1]].run(command[1:-1])
        truncated = not terminated and self._steps >= self.task.step_budget(self.task.size_of(self.instance))
        if truncated:
            info.update(answer="".join(self._answer), correct=False, expected=self.task.answer(self.instance))
        self._last = observation
        return observation, reward, terminated, truncated, info

    def _parse(self, symbols: list[str]) -> tuple[str, str, str, str]:
        """Split an action into (thought, answer part, command, error); changes nothing.

        The answer part is the ``⟨answer⟩`` marker, if this action writes it, and the answer
        text of this action. A malformed action is rejected whole: it changes nothing but the
        step count, so an episode's tape and answer only ever hold well-formed actions.
        """
        command = symbols[-1] if symbols and is_command_symbol(symbols[-1]) else ""
        body = symbols[:-1] if command else symbols
        in_answer = self._in_answer
        thought: list[str] = []
        answer_part: list[str] = []
        error = "" if command else "an action must end with one command, e.g. ⟨a?⟩, or ⟨end⟩"
        for symbol in body:
            if symbol == ANSWER and not in_answer:
                in_answer = True
            elif is_command_symbol(symbol):
                error = error or "only the last symbol of an action may be a command"
            elif symbol not in CHARSET:
                error = error or "actions are written in printable ASCII"
            (answer_part if in_answer else thought).append(symbol)
        if not error and command != END and command[1:-1] not in self._tools:
            error = f"unknown command; this task's commands are {len(self._tools)} tool commands and ⟨end⟩"
        return "".join(thought), "".join(answer_part), command, error

    def close(self) -> None:
        self._close_tools()
        super().close()

    def _close_tools(self) -> None:
        """Let the last episode's tools release what they hold (a code task's workspace)."""
        for tool in self._all_tools:
            tool.close()

    def render(self) -> str | None:
        if self.render_mode == "ansi":
            return self._last
        return None

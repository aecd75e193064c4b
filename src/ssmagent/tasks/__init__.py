"""Problem generators and expert programs; ``TASKS`` maps a task's name to it.

Plugins add tasks through the ``ssmagent.tasks`` entry-point group (an object or a zero-argument
factory returning a ``Task``); built-in names cannot be replaced.
"""

from __future__ import annotations

from importlib.metadata import entry_points

from ssmagent.tasks.addition import Addition
from ssmagent.tasks.base import ANSWER, END, Expert, Task, TaskInputError
from ssmagent.tasks.codefix import CodeFix
from ssmagent.tasks.hanoi import Hanoi
from ssmagent.tasks.logic_graph import LogicGraph
from ssmagent.tasks.multiplication import Multiplication

TASKS: dict[str, Task] = {
    task.name: task for task in (Addition(), Multiplication(), LogicGraph(), Hanoi(), CodeFix())
}


def _load_plugins() -> None:
    for entry in entry_points(group="ssmagent.tasks"):
        task = entry.load()
        task = task() if isinstance(task, type) or not isinstance(task, Task) else task
        if not isinstance(task, Task):
            raise TypeError(f"plugin {entry.name!r} does not provide an ssmagent Task")
        TASKS.setdefault(task.name, task)


_load_plugins()


def get_task(name: str) -> Task:
    """The task called ``name``; TaskInputError naming the known tasks otherwise."""
    try:
        return TASKS[name]
    except KeyError:
        raise TaskInputError(f"unknown task {name!r}; known tasks: {', '.join(sorted(TASKS))}") from None


__all__ = ["ANSWER", "END", "TASKS", "Expert", "Task", "TaskInputError", "get_task"]

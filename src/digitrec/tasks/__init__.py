"""The registry of tasks: what a model reads and answers (see tasks/base.py for the interface).

A model's spec names its task (models.ModelSpec.task); `of` gives a model's task object. A third task
(say, letters) is one new module here with its `Task` subclass and its instance, one line in TASKS, and
its models registered in models.py with `task="letters"`.
"""

from digitrec.tasks.base import Task, unknown
from digitrec.tasks.digits import DIGITS
from digitrec.tasks.numbers import NUMBERS

TASKS: dict[str, Task] = {task.name: task for task in (DIGITS, NUMBERS)}


def named(name: str) -> Task:
    if name not in TASKS:
        raise unknown(name, TASKS)
    return TASKS[name]


def of(model: str) -> Task:
    """The task of registered model `model` (an unknown model is a `ConfigError`; this imports torch)."""
    from digitrec import models

    return named(models.spec(model).task)


__all__ = ["DIGITS", "NUMBERS", "TASKS", "Task", "named", "of"]

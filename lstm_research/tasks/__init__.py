"""Tasks by name: ``build(config.task, seed)``, and ``default_config(name)`` with each task's
config keys and defaults (the fields of its dataclass, see :mod:`.base`).

Adding a task: one dataclass (in :mod:`.synthetic`, :mod:`.real` or a new module) and one line
in :data:`TASKS`.
"""
from __future__ import annotations

import dataclasses

import ml_collections

from lstm_research.errors import UserError
from lstm_research.tasks import real, synthetic
from lstm_research.tasks.base import Task, config_fields

#: name -> task class; the order is the one error messages list
TASKS: dict[str, type[Task]] = {cls.name: cls for cls in (
    synthetic.Adding,
    synthetic.CopyMemory,
    synthetic.TemporalOrder,
    synthetic.EmbeddedReber,
    synthetic.ContinualReber,
    real.PennTreebank,
    real.JSBChorales,
)}


def task_class(name: str) -> type[Task]:
    if name not in TASKS:
        raise UserError(f"unknown task {name!r}; valid tasks: {', '.join(TASKS)}")
    return TASKS[name]


def metric_label(task_name: str | None, metric: str) -> str:
    """The axis label of ``metric`` of task ``task_name`` with its units (``Task.labels``);
    the metric's key where the task or label is unknown."""
    return getattr(TASKS.get(task_name), "labels", {}).get(metric, metric)


def default_config(name: str, **overrides) -> ml_collections.ConfigDict:
    """``config.task`` for task ``name``: its fields with their defaults, then ``overrides``."""
    return ml_collections.ConfigDict({"name": name, **config_fields(task_class(name)),
                                      **overrides})


def build(cfg, seed: int = 0) -> Task:
    """The task named ``cfg.name`` with the fields of ``cfg`` (its data loaded)."""
    cls = task_class(cfg.name)
    valid = config_fields(cls)
    f = {k: v for k, v in cfg.items() if k != "name"}
    unknown = set(f) - set(valid)
    if unknown:
        raise UserError(f"unknown field(s) {sorted(unknown)} for task {cfg.name!r}; "
                        f"valid: {sorted(valid)}")
    if "seed" in {field.name for field in dataclasses.fields(cls)}:
        f["seed"] = seed
    task = cls(**f)
    task.load()
    return task


__all__ = ["Task", "TASKS", "default_config", "build", "metric_label"]

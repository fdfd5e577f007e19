"""Task registry: a task knows how to load its splits (hub or local files), what its inputs are and how it is
scored. One module per task family (glue, ...); each task also has a yaml in conf/task/."""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from lora_repro.errors import UserError

_TASKS: dict[str, "TaskSpec"] = {}
_MODULES = ("glue", "nlg")
DATA_ENV = "LORA_REPRO_DATA"


@dataclass
class RowPolicy:
    """What a loader does with a malformed row (wrong column count, unknown label, a label that is not a number,
    empty text): stop with the file, line and problem (the default), or, with ``task.skip_malformed_rows=true``,
    skip it and count it (the count goes into results.json under ``data.skipped_rows``)."""
    skip: bool = False
    skipped: dict = None  # file -> rows skipped

    def __post_init__(self):
        self.skipped = {} if self.skipped is None else self.skipped

    def reject(self, path: Path, line: int, problem: str) -> None:
        if not self.skip:
            raise UserError(f"{path}, line {line}: {problem} (fix the file, or set task.skip_malformed_rows=true to "
                            "skip such rows; the count skipped is recorded)")
        self.skipped[str(path)] = self.skipped.get(str(path), 0) + 1


@dataclass(frozen=True)
class TaskSpec:
    name: str
    kind: str  # "classification" | "regression" | "generation"
    text_fields: tuple[str, ...]
    metrics: tuple[str, ...]  # the paper's metric first: it selects the best epoch
    train_split: str
    eval_splits: tuple[str, ...]
    load: Callable[..., object]  # (split, data_dir, source, rows_policy) -> datasets.Dataset
    score: Callable[..., dict]  # (predictions, labels) -> {metric: value}
    num_labels: int | None = None
    family: str = ""
    description: str = ""
    extra: dict = field(default_factory=dict)
    # "module:function" that gives the training loop this task's TrainingPlan (lora_repro.training); imported only
    # when a job trains, so reading the registry stays light
    plan: str = "lora_repro.tasks.classification:training_plan"

    @property
    def primary_metric(self) -> str:
        return self.metrics[0]

    @property
    def training_plan(self) -> Callable:
        module, _, name = self.plan.partition(":")
        return getattr(importlib.import_module(module), name)


def register_task(spec: TaskSpec) -> TaskSpec:
    if spec.name in _TASKS:
        raise ValueError(f"task {spec.name!r} registered twice")
    _TASKS[spec.name] = spec
    return spec


def _load_all() -> None:
    for module in _MODULES:
        importlib.import_module(f"{__name__}.{module}")


def task_names() -> list[str]:
    _load_all()
    return sorted(_TASKS)


def get_task(name: str) -> TaskSpec:
    _load_all()
    if name not in _TASKS:
        raise UserError(f"unknown task {name!r}; choices: {', '.join(sorted(_TASKS))}")
    return _TASKS[name]

"""What an evaluation measures: named sums on the device, reduced by name, turned into metrics.

An evaluation runs the model over a split's batches, noise off, and adds up per batch the
sums each metric needs (`Metric.sums`, tensors on the device). The sums of every split are
read to the host once per evaluation, in one vector (summed over ranks by name under
torchrun; one slice per member under `--batched`), and `Metric.value` turns them into the
number a row holds. The run folder's columns, the terminal's table and `noisecli eval`
iterate this schema, so adding a metric is one `Metric` in `METRICS` plus its tests.

Every split also sums `count`, the number of targets it scored (response tokens only for
instruction data), which most metrics divide by. The module imports no torch: the sums are
computed with the tensors' own methods and a loss function handed in by the engine.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

IGNORE = -100  # targets that score nothing (prompt and padding tokens), as torch's cross entropy ignores
TASKS = ("classification", "regression", "lm", "sft")
# a split's columns: the training split is measured clean (noise off), unlike the interval's train_loss
SPLIT_PREFIX = {"train": "clean_train_", "val": "val_"}
SPLITS = tuple(SPLIT_PREFIX)  # the order evaluations measure them in


@dataclass(frozen=True)
class Metric:
    name: str
    tasks: tuple[str, ...]  # the tasks it is measured for
    splits: dict[str, str]  # the splits whose rows show it -> its header in the terminal's table
    sums: Callable[..., dict[str, Any]]  # (out, y, loss_sum) -> {name: tensor}, added up over batches
    value: Callable[[dict[str, float]], float]  # the split's summed numbers (with `count`) -> the metric
    fmt: str  # how the terminal shows it


def _loss_sums(out, y, loss_sum) -> dict[str, Any]:
    return {"loss": loss_sum(out, y)}  # IGNORE targets add nothing


def _correct_sums(out, y, loss_sum) -> dict[str, Any]:
    return {"correct": (out.argmax(-1) == y).sum()}


METRICS: tuple[Metric, ...] = (
    Metric("loss", TASKS, {"train": "clean train", "val": "val loss"}, _loss_sums,
           lambda s: s["loss"] / s["count"], "{:.4f}"),
    Metric("acc", ("classification",), {"val": "val acc"}, _correct_sums, lambda s: s["correct"] / s["count"],
           "{:.3f}"),
)


def for_task(task: str) -> list[Metric]:
    return [m for m in METRICS if task in m.tasks]


def count(y, task: str):
    """The targets a batch scores: every target, or (instruction data) those not IGNORE."""
    return (y != IGNORE).sum() if task == "sft" else y.numel()


def metric_sums(out, y, task: str, loss_sum: Callable) -> dict[str, Any]:
    """The named sums of one batch for every metric of `task` (on the device; `count` apart,
    since it is the same for every member of a stack)."""
    sums: dict[str, Any] = {}
    for metric in for_task(task):
        sums.update(metric.sums(out, y, loss_sum))
    return sums


def column(metric: Metric, split: str) -> str:
    return f"{SPLIT_PREFIX[split]}{metric.name}"


def columns(task: str | None = None) -> list[str]:
    """The evaluation columns of a row, in the order rows hold them (all tasks' when task is None)."""
    return [column(m, s) for m in METRICS if task is None or task in m.tasks for s in m.splits]


def every_column() -> list[str]:
    """Every metric of every split, split by split (val first): what `noisecli eval` can print."""
    return [column(m, s) for s in ("val", "train") for m in METRICS]


def split_values(task: str, split: str, sums: dict[str, float], every_metric: bool = False) -> dict[str, float]:
    """A split's metrics from its summed numbers; those its rows show, or with `every_metric`
    all that the task measures (`noisecli eval`)."""
    return {column(m, split): m.value(sums) for m in for_task(task) if every_metric or split in m.splits}


def row_values(task: str, sums: dict[str, dict[str, float]]) -> dict[str, float]:
    """A row's evaluation columns, in `columns` order, from each split's summed numbers."""
    return {column(m, s): m.value(sums[s]) for m in for_task(task) for s in m.splits}


def display_columns() -> list[tuple[str, str, str]]:
    """(column, header, format) for the terminal's per-evaluation table."""
    return [(column(m, s), header, m.fmt) for m in METRICS for s, header in m.splits.items()]

"""What an evaluation measures: named sums on the device, reduced by name, turned into metrics.

An evaluation runs the model over a split's batches, noise off, and adds up per batch the
sums each metric needs (`Metric.sums`, tensors on the device). The sums of every split are
read to the host once per evaluation, in one vector (summed over ranks by name under
torchrun; one slice per member under `--batched`), and `Metric.value` turns them into the
number a row holds. The run folder's columns, the terminal's table and `noisecli eval`
iterate this schema, so adding a metric is one `Metric` in `METRICS` plus its tests.

Every split also sums `count`, the number of targets it scored (response tokens only for
instruction data), which most metrics divide by. A sum may be a vector (per class, per
confidence bin, per output dimension): `value` gets a float for a 0-dim sum and a list of
floats for a vector. The module imports no torch at the top: the sums are computed with the
tensors' own methods and a loss function handed in by the engine (a sum that needs `arange`
imports torch inside, since it runs only while evaluating). docs/sweeps-and-reports.md
("Metrics") gives each metric's formula and its reference implementation.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass
from typing import Any, Callable

from noisecli.errors import SpecError

IGNORE = -100  # targets that score nothing (prompt and padding tokens), as torch's cross entropy ignores
TASKS = ("classification", "regression", "lm", "sft")
# a split's columns: the training split is measured clean (noise off), unlike the interval's train_loss;
# test is measured only at the selected checkpoint and at the end (never a row of metrics.csv)
SPLIT_PREFIX = {"train": "clean_train_", "val": "val_", "test": "test_"}


@dataclass(frozen=True)
class Metric:
    name: str
    tasks: tuple[str, ...]  # the tasks it is measured for
    splits: dict[str, str]  # the splits whose rows show it -> its header in the terminal's table
    sums: Callable[..., dict[str, Any]]  # (out, y, loss_sum) -> {name: tensor of any shape}, added over batches
    value: Callable[[dict[str, Any]], float]  # the split's summed numbers (with `count`) -> the metric
    fmt: str  # how the terminal shows it
    higher_is_better: bool = False  # which way is better (early stopping, the report): a loss's is lower


def _loss_sums(out, y, loss_sum) -> dict[str, Any]:
    return {"loss": loss_sum(out, y)}  # IGNORE targets add nothing


def _correct_sums(out, y, loss_sum) -> dict[str, Any]:
    return {"correct": (out.argmax(-1) == y).sum()}  # an IGNORE target (-100) is never an argmax


def _classes(n: int, like):
    import torch  # only while evaluating (this module imports no torch)

    return torch.arange(n, device=like.device)


def _f1_sums(out, y, loss_sum) -> dict[str, Any]:
    """Per class: true positives, predictions and targets."""
    out, y = out.reshape(-1, out.shape[-1]), y.reshape(-1)
    classes = _classes(out.shape[-1], out)
    pred, true = out.argmax(-1)[:, None] == classes, y[:, None] == classes
    return {"f1_tp": (pred & true).sum(0), "f1_pred": pred.sum(0), "f1_true": true.sum(0)}


def _f1(s) -> float:
    """Macro F1 over the classes present among the targets or the predictions (scikit-learn's
    `f1_score(average="macro")` without `labels=`): each class's 2 tp / (predicted + true)."""
    scores = [2 * tp / (p + t) for tp, p, t in zip(s["f1_tp"], s["f1_pred"], s["f1_true"]) if p + t > 0]
    return sum(scores) / len(scores) if scores else 0.0


ECE_BINS = 15


def _ece_sums(out, y, loss_sum) -> dict[str, Any]:
    """Per confidence bin: the sum of (correct - confidence) over its examples. The bins are
    torchmetrics' (`bucketize(conf, linspace(0, 1, 16), right=True) - 1`): 15 of width 1/15,
    and confidence 1.0 in a 16th of its own."""
    import torch

    p = out.reshape(-1, out.shape[-1]).float().softmax(-1)
    conf, pred = p.max(-1)
    edges = torch.linspace(0, 1, ECE_BINS + 1, dtype=conf.dtype, device=conf.device)
    slot = (conf[:, None] >= edges).sum(-1) - 1
    gap = (pred == y.reshape(-1)).to(conf.dtype) - conf
    return {"ece_gap": ((slot[:, None] == _classes(ECE_BINS + 1, out)) * gap[:, None]).sum(0)}


def _brier_sums(out, y, loss_sum) -> dict[str, Any]:
    p = out.reshape(-1, out.shape[-1]).float().softmax(-1)
    onehot = y.reshape(-1)[:, None] == _classes(p.shape[-1], p)
    return {"brier": (p - onehot.to(p.dtype)).square().sum()}


def _ppl(s) -> float:
    mean = s["loss"] / s["count"]
    return math.inf if mean > 700 else math.exp(mean)  # the loss's own sum: ppl adds none


def _columns(out, y):
    """Regression outputs and targets as (examples, output dimensions), in float."""
    width = math.prod(y.shape[1:])  # explicit: a rank may hold no rows of a batch, where -1 is undefined
    return out.float().reshape(y.shape[0], width), y.float().reshape(y.shape[0], width)


def _mae_sums(out, y, loss_sum) -> dict[str, Any]:
    out, y = _columns(out, y)
    return {"abs_err": (out - y).abs().sum()}


def _r2_sums(out, y, loss_sum) -> dict[str, Any]:
    """Per output dimension: sum y, sum y^2 and the sum of squared residuals."""
    out, y = _columns(out, y)
    return {"r2_y": y.sum(0), "r2_y2": y.square().sum(0), "r2_res": (out - y).square().sum(0)}


def _r2(s) -> float:
    """scikit-learn's `r2_score` (multioutput "uniform_average", force_finite): the mean over
    output dimensions of 1 - residual / total sum of squares, 1 (perfect) or 0 for constant targets."""
    d = len(s["r2_res"])
    n = s["count"] / d
    scores = []
    for sy, sy2, res in zip(s["r2_y"], s["r2_y2"], s["r2_res"]):
        total = sy2 - sy * sy / n
        scores.append(1 - res / total if total > 0 else float(res == 0))
    return sum(scores) / d


METRICS: tuple[Metric, ...] = (
    Metric("loss", TASKS, {"train": "clean train", "val": "val loss"}, _loss_sums,
           lambda s: s["loss"] / s["count"], "{:.4f}"),
    Metric("acc", ("classification", "lm", "sft"), {"val": "val acc"}, _correct_sums,
           lambda s: s["correct"] / s["count"], "{:.3f}", higher_is_better=True),
    Metric("f1", ("classification",), {"val": "val f1"}, _f1_sums, _f1, "{:.3f}", higher_is_better=True),
    Metric("ece", ("classification",), {"val": "val ece"}, _ece_sums,
           lambda s: sum(abs(g) for g in s["ece_gap"]) / s["count"], "{:.3f}"),
    Metric("brier", ("classification",), {"val": "val brier"}, _brier_sums, lambda s: s["brier"] / s["count"],
           "{:.4f}"),
    Metric("ppl", ("lm", "sft"), {"val": "val ppl"}, lambda out, y, loss_sum: {}, _ppl, "{:.3f}"),
    Metric("mae", ("regression",), {"val": "val mae"}, _mae_sums, lambda s: s["abs_err"] / s["count"], "{:.4f}"),
    Metric("r2", ("regression",), {"val": "val r2"}, _r2_sums, _r2, "{:.3f}", higher_is_better=True),
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


def check_watched(column_name: str | None, task: str) -> None:
    """A val metric to watch (train.early_stopping.metric) must be one the task's rows hold."""
    held = [c for c in columns(task) if c.startswith(SPLIT_PREFIX["val"])]
    if column_name is not None and column_name not in held:
        raise SpecError(f"train.early_stopping.metric: {column_name} is not measured on {task} data "
                        f"(its val metrics: {', '.join(held)})")


def higher_is_better(column_name: str) -> bool:
    """Whether a larger value of a column (`val_acc`, `test_loss`, `clean_train_loss`) is better."""
    for prefix in SPLIT_PREFIX.values():
        if column_name.startswith(prefix):
            name = column_name[len(prefix):]
            for m in METRICS:
                if m.name == name:
                    return m.higher_is_better
    raise KeyError(f"{column_name!r} is not a metric column")


def named(task: str, names: list[str]) -> list[Metric]:
    """The task's metrics named by `names` (`acc`, or a column such as `test_acc`), for
    `noisecli eval --metrics`; a name the task does not measure is bad input."""
    held = {m.name: m for m in for_task(task)}
    out = []
    for name in names:
        plain = next((name[len(p):] for p in SPLIT_PREFIX.values() if name.startswith(p)), name)
        if plain not in held:
            close = difflib.get_close_matches(plain, list(held), n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise SpecError(f"--metrics: {name!r} is not measured on {task} data{hint} "
                            f"(its metrics: {', '.join(held)})")
        out.append(held[plain])
    return out


def every_column() -> list[str]:
    """Every metric of every split, split by split (val first): what `noisecli eval` can print."""
    return [column(m, s) for s in ("val", "test", "train") for m in METRICS]


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

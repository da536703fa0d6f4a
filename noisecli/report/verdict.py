"""Reports, the verdict: which metric decides, how the best configuration is chosen, and the rule
that never crowns a configuration significantly worse than its baseline.

By default the deciding metric is the task's primary metric on the test split at each run's
selected checkpoint (its best val loss, recorded in final.json): accuracy for classification,
loss otherwise. The best configuration is chosen on the same metric's validation value at that
checkpoint and compared on test, so the choice does not inflate the comparison. `--metric`
names any other (test_loss, val_acc, best_val_loss, ...); each knows its direction.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from noisecli import metrics
from noisecli.errors import SpecError
from noisecli.report.load import Config, Run
from noisecli.spec import suggest

BEST_VAL = "best_val_loss"  # the selected checkpoint's val loss
SHARPNESS = "sharpness"  # eval.sharpness at the selected checkpoint


@dataclass(frozen=True)
class Decider:
    metric: str  # what decides: test_acc, val_loss, best_val_loss, ...
    select: str  # what the best configuration is chosen by (on val)
    higher_is_better: bool
    note: str = ""  # why the default fell back, if it did

    def describe(self) -> str:
        where = ("on test at each run's selected checkpoint (its best val loss)"
                 if self.metric.startswith(("test_", "robust_"))
                 else "on the clean training split at each run's selected checkpoint" if self.metric == SHARPNESS
                 else "the best val loss of each run" if self.metric == BEST_VAL else "at each run's last evaluation")
        chosen = ("" if self.select == self.metric else
                  f", the best configuration chosen on {self.select.removeprefix('selected:')} at that checkpoint")
        better = "higher" if self.higher_is_better else "lower"
        return f"decided by {self.metric} {where}{chosen}; {better} is better{'. ' + self.note if self.note else ''}"


def run_value(run: Run, name: str) -> float | None:
    """A run's value of a report metric: test_* and their val counterparts at the selected
    checkpoint from final.json, best_val_loss from the rows, any other from the last row."""
    if name == BEST_VAL:
        return run.best_val
    if name.startswith("selected:"):
        return (run.selected or {}).get(name.split(":", 1)[1])
    if name.startswith((metrics.SPLIT_PREFIX["test"], "robust_")) or name == SHARPNESS:
        return (run.selected or {}).get(name)
    return run.final.get(name)


def choose(configs: list[Config], requested: str | None) -> Decider:
    runs = [r for c in configs for r in c.runs]
    if requested is None:
        with_test = runs and all(r.selected and any(k.startswith("test_") for k in r.selected) for r in runs)
        if not with_test:
            note = ("no test split in these runs (data.test_fraction 0, or runs from before noisecli had one)"
                    if runs else "")
            return Decider("val_loss", "val_loss", False, note)
        # the task's primary metric: accuracy for classification, loss otherwise (an LM's token
        # accuracy is recorded too, but its loss is what language modelling is judged by)
        requested = "test_acc" if all(r.task == "classification" for r in runs) else "test_loss"
    tests = [c for c in metrics.every_column() if c.startswith(metrics.SPLIT_PREFIX["test"])]
    known = [c for c in metrics.every_column() if not c.startswith(metrics.SPLIT_PREFIX["train"])] + \
        [BEST_VAL] + [f"robust_{c}" for c in tests] + [SHARPNESS]
    if requested not in known:
        raise SpecError(f"--metric: {requested!r} is not a metric{suggest(requested, known)} "
                        f"(metrics: {', '.join(known)})")
    lacking = [r for r in runs if run_value(r, requested) is None]
    if lacking:
        raise SpecError(f"--metric: {requested} is not recorded for {len(lacking)} of {len(runs)} runs "
                        f"(e.g. {lacking[0].path}); test metrics need a test split and a run that finished "
                        "with this noisecli")
    lower_only = requested in (BEST_VAL, SHARPNESS)
    higher = False if lower_only else metrics.higher_is_better(requested.removeprefix("robust_"))
    select = requested
    test = requested.removeprefix("robust_")
    if test.startswith(metrics.SPLIT_PREFIX["test"]):  # chosen on the same metric's val value
        select = "selected:" + metrics.SPLIT_PREFIX["val"] + test[len(metrics.SPLIT_PREFIX["test"]):]
    elif requested == SHARPNESS:
        select = "selected:val_loss"
    return Decider(requested, select, higher)


def _better(a: float, b: float, higher: bool) -> bool:
    return a > b if higher else a < b


def worse_than_baseline(c: Config, decider: Decider) -> list[str]:
    """What makes a configuration ineligible for best: significantly worse than its baseline on
    the metric it is chosen by (the deciding metric's val value at the selected checkpoint), or
    on the selected checkpoint's val loss. Validation only: a rule read off the test split would
    make the crowning a selection on test."""
    s, why = c.stats, []
    d = s.get("delta_select")
    if s.get("select_significant") and d is not None and (d < 0 if decider.higher_is_better else d > 0):
        why.append(decider.select.removeprefix("selected:"))
    if s.get("best_significant") and (s.get("delta_best_vs_none") or 0) > 0:
        why.append("best val loss")
    return why


def mark_best(configs: list[Config], decider: Decider) -> list[str]:
    """Crown the best configuration overall and per kind, chosen on `decider.select` among those
    not significantly worse than their baseline; the lines saying where that rule changed a pick."""
    candidates = [c for c in configs if c.runs and not math.isnan(c.stats["select_mean"])]
    eligible = [c for c in candidates if not worse_than_baseline(c, decider)]
    notes = []

    def pick(pool: list[Config]) -> Config | None:
        best = None  # a tie on the select metric goes to the lower best val loss, then to table order
        for c in pool:
            a, b = c.stats["select_mean"], None if best is None else best.stats["select_mean"]
            if best is None or _better(a, b, decider.higher_is_better) or \
                    (a == b and c.stats["best_val_loss_mean"] < best.stats["best_val_loss_mean"]):
                best = c
        return best

    for kind in dict.fromkeys(c.noise for c in candidates):
        chosen = pick([c for c in eligible if c.noise == kind])
        if chosen is not None:
            chosen.stats["best_in_kind"] = True
    chosen, leader = pick(eligible), pick(candidates)
    if chosen is not None:
        chosen.stats["best_overall"] = True
    if leader is not None and leader is not chosen:
        notes.append(f"{leader.label} leads on {decider.select.removeprefix('selected:')} but is significantly "
                     f"worse than its baseline on {' and '.join(worse_than_baseline(leader, decider))}: not crowned")
    return notes


def still_improving(configs: list[Config]) -> str | None:
    """A warning when most runs' best evaluation is their last: the comparison is of runs that
    had not finished learning, where any regularizer looks like it helps or hurts by accident."""
    runs = [r for c in configs for r in c.runs if len(r.rows) > 1]
    late = [r for r in runs if r.rows[-1]["val_loss"] <= min(row["val_loss"] for row in r.rows)]
    if runs and len(late) * 2 > len(runs):
        return (f"still improving: the best evaluation of {len(late)} of {len(runs)} runs is their last; train "
                "longer before asking whether noise helps")
    return None


def not_run_yet(dirs: list, runs: list[Run]) -> list[str]:
    """Points a sweep's plan (sweep.json) names that have no finished run yet (a half-finished sweep)."""
    counted = {Path(r.path).resolve() for r in runs if r.state in ("completed", "diverged", "not finite")}
    lines = []
    for d in map(Path, dirs):
        try:
            plan = json.loads((d / "sweep.json").read_text(encoding="utf-8"))
            names = [p["name"] for p in plan["points"]]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        missing = [n for n in names if (d / n).resolve() not in counted]
        if missing:
            lines.append(f"{len(missing)} of the {len(names)} planned points of {d} have not finished "
                         f"(e.g. {missing[0]}): this report covers the others; `noisecli sweep` runs the rest")
    return lines

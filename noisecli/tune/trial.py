"""One worker of a tune: ask a study for a trial, train its run folders as `train` trains a run
(`points.open_point`, under the run's lock, resumed where a folder holds a checkpoint), report
the objective to the trial at every evaluation so that the pruner can stop it there, and tell
the study how it ended.

A pruned trial's folder keeps its checkpoint and is marked `pruned` in status.json with the
step and the value it stopped at (`noisecli train` on its spec.yaml would train it on to the
end). A Ctrl-C saves the running trial as a sweep point saves, fails it in the study and
queues it again, so the next run of the command resumes that same folder.
"""

from __future__ import annotations

import math
import signal
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from noisecli.errors import BadInput, Interrupted, RunError
from noisecli.points import PointDisplay, open_point, os_error_line, point_threads
from noisecli.runs import RunFolder
from noisecli.signals import StopRequest
from noisecli.trainer import Trainer
from noisecli.tune.spec import BEST_VAL, TuneSpec
from noisecli.tune.study import (Heartbeat, fail_and_retry, import_optuna, open_studies, recover, runs_spent, waiting,
                                 worker_note)


class Pruned(Interrupted):
    """The pruner stopped this trial at an evaluation (its checkpoint is saved)."""

    def __init__(self, why: str, step: int, value: float):
        super().__init__(signal.SIGINT, why)
        self.why, self.step, self.value = why, step, value


class TrialTrainer(Trainer):
    """A Trainer whose every evaluation is judged by the trial's pruner (`judge`: why to stop, or
    None). Alone it raises `Pruned`; in a stack (`stacked`) it stops as early stopping stops a
    member, which then leaves the stack while the others go on (`pruned` says why)."""

    judge: Callable[["TrialTrainer", dict], Pruned | None] = staticmethod(lambda trainer, row: None)
    stacked = False
    pruned: Pruned | None = None

    def record(self, lr: float, factors: list[float], seconds: float, sums: dict[str, dict]) -> dict[str, Any]:
        row = super().record(lr, factors, seconds, sums)  # logged, checked, checkpointed
        pruned = self.judge(self, row)
        if pruned is not None and self.stacked:
            self.pruned, self.state.stopped_early = pruned, pruned.why
        elif pruned is not None:
            raise pruned
        return row


@dataclass
class Worker:
    """What a worker needs: the tune, its storage, where its run folders go, and how it trains."""

    tune: TuneSpec
    storage: Any
    tune_dir: Path
    worker: int = 0
    threads: int | None = None
    device: str | None = None
    deadline: float | None = None  # time.time() after which no trial starts (--timeout)
    quiet: bool = False
    max_batch: int | None = None  # --batched: up to this many trials asked at once and trained as one stack
    stop: StopRequest = field(default_factory=StopRequest)
    on_told: Callable[[dict], None] = lambda studies: None  # after each trial is told (trials.json rewritten)

    @property
    def trials_dir(self) -> Path:
        return self.tune_dir / "trials"


@dataclass
class Result:
    state: str  # completed | pruned | diverged | failed | interrupted | busy
    value: float | None = None
    message: str = ""
    step: int | None = None


def run_names(tune: TuneSpec, run: str) -> list[tuple[str, int]]:
    """A trial's run folders, one per seed: `input_trial-0003`, or `..._seed-1` with several seeds."""
    if len(tune.seeds) == 1:
        return [(run, tune.seeds[0])]
    return [(f"{run}_seed-{s}", s) for s in tune.seeds]


def objective_value(tune: TuneSpec, rows: list[dict]) -> float:
    """The trial's value from a run's rows: the best val loss, or the metric at the last evaluation
    (as `noisecli report --metric` reads them)."""
    return min(r["val_loss"] for r in rows) if tune.objective == BEST_VAL else rows[-1][tune.objective]


def suggest(tune: TuneSpec, kind: str, trial) -> dict[str, Any]:
    s = tune.kind_search(kind)
    params = {"factor": s.factor.suggest(trial, "factor")} if s.factor else {}
    params.update({key: r.suggest(trial, key) for key, r in tune.search.keys.items()})
    return params


def judge_for(w: Worker, trial, offset: int):
    """Report each evaluation's objective to the trial (step: the optimizer step, after the seeds
    trained before this one) and ask the pruner; never at the last step."""
    def judge(trainer: TrialTrainer, row: dict) -> Pruned | None:
        if row["step"] >= trainer.total_steps:
            return None
        value = trainer.state.best_val if w.tune.objective == BEST_VAL else row[w.tune.objective]
        if not math.isfinite(value):
            return None
        trial.report(value, offset + row["step"])
        if not trial.should_prune():
            return None
        why = (f"pruned by the {w.tune.pruner['kind']} pruner at step {row['step']} "
               f"({w.tune.objective} {value:.4g})")
        return Pruned(why, row["step"], value)
    return judge


def mark_pruned(folder: RunFolder, p: Pruned, objective: str) -> Result:
    """status.json says `pruned`, with the step and the value it stopped at (its checkpoint stays)."""
    folder.write_status(state="pruned", pruned=p.why, pruned_step=p.step, pruned_value=p.value, objective=objective,
                        error=None)
    return Result("pruned", p.value, p.why, p.step)


def pruned_before(folder: RunFolder) -> Result | None:
    """A folder already marked pruned (its trial was told so, or is told now after a retry)."""
    status = folder.read_status_quiet()
    if status.get("state") != "pruned":
        return None
    return Result("pruned", status.get("pruned_value"), status.get("pruned") or "", status.get("pruned_step"))


def train_seed(w: Worker, spec, trial, index: int) -> Result:
    """One of the trial's run folders, trained (or resumed, or found done) as a sweep point is."""
    before = pruned_before(RunFolder(w.trials_dir / spec.name))
    if before is not None:  # pruned before this trial was retried: as it was
        return before
    trainer = TrialTrainer(spec, w.trials_dir, display=PointDisplay(lambda *a: None), stop=w.stop)
    try:
        opened = open_point(trainer)
        if opened is not None and opened.state != "skipped":
            return Result(opened.state, message=opened.message)
        trainer.judge = judge_for(w, trial, index * trainer.total_steps)
        if opened is None:
            with point_threads([trainer], w.threads):
                trainer.train()
        return Result("completed", objective_value(w.tune, trainer.run.read_metrics()))
    except Pruned as p:
        return mark_pruned(trainer.run, p, w.tune.objective)
    except Interrupted as e:
        return Result("interrupted", message=str(e))
    except RunError as e:
        return Result(trainer.run.read_status_quiet().get("state", "failed"), message=str(e))
    except BadInput as e:
        return Result("failed", message="; ".join(e.problems))
    except OSError as e:
        return Result("failed", message=os_error_line(e))
    finally:
        trainer.close()


def run_trial(w: Worker, kind: str, trial) -> Result:
    """Every seed of the trial in turn; the mean of their values, or how the first that did not
    complete ended."""
    params = suggest(w.tune, kind, trial)
    values = []
    for index, (name, seed) in enumerate(run_names(w.tune, trial.user_attrs["run"])):
        spec = w.tune.run_spec(kind, params, name, seed)
        if w.device:
            spec.device = w.device
        result = train_seed(w, spec, trial, index)
        if result.state != "completed":
            return result
        values.append(result.value)
    return Result("completed", sum(values) / len(values))


def tell(w: Worker, study, trial, result: Result) -> None:
    optuna = import_optuna()
    state = optuna.trial.TrialState
    if result.state == "completed" and result.value is not None and math.isfinite(result.value):
        study.tell(trial, result.value)
    elif result.state == "pruned":
        trial.set_user_attr("pruned_at", {"step": result.step, "value": result.value})
        study.tell(trial, state=state.PRUNED)
    elif result.state == "interrupted":
        fail_and_retry(study, trial, "interrupted; queued again, resumes from its checkpoint")
    else:
        trial.set_user_attr("outcome", f"{result.state}: {result.message}"[:300])
        study.tell(trial, state=state.FAIL)


def next_study(studies: dict, budgets: dict[str, int]) -> str | None:
    """The study to ask next: one with a trial queued again first, else the one with the most
    budget left (None: every budget is spent)."""
    for kind, study in studies.items():
        if waiting(study):
            return kind
    left = {kind: budgets[kind] - len(runs_spent(study)) for kind, study in studies.items()}
    kind = max(left, key=lambda k: left[k])
    return kind if left[kind] > 0 else None


def ask(study, kind: str, budget: int):
    """A trial with its run folder named, or None when another worker spent the last of this
    study's budget first (the extra trial is failed at once, with no run folder, and not counted)."""
    optuna = import_optuna()
    trial = study.ask()
    trial.set_user_attr("worker", worker_note())
    if "run" in trial.user_attrs:  # queued again: its run folder is known
        return trial
    earlier = {t.user_attrs["run"] for t in study.get_trials(deepcopy=False)
               if "run" in t.user_attrs and t.number < trial.number}
    if len(earlier) >= budget:
        trial.set_user_attr("outcome", "over budget (another worker asked first)")
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        return None
    trial.set_user_attr("run", f"{kind}_trial-{trial.number:04d}")
    return trial


def line(w: Worker, kind: str, trial, result: Result, spent: int, total: int) -> str:
    params = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in trial.params.items())
    what = {"completed": f"completed, {w.tune.objective} {result.value:.4f}" if result.value is not None else "",
            "pruned": result.message}.get(result.state, f"{result.state}: {result.message}")
    return f"[{spent}/{total}] {trial.user_attrs['run']} ({kind}{', ' + params if params else ''}): {what}"


def ask_some(study, kind: str, budget: int, k: int) -> list:
    """Up to k trials of one study at once (ask/tell), fewer when the budget runs out."""
    asked = []
    for _ in range(k):
        trial = ask(study, kind, budget)
        if trial is None:
            break
        asked.append(trial)
    return asked


def run_asked(w: Worker, kind: str, study, asked: list) -> list[tuple[Any, Result]]:
    """The trials asked, each alone, or as one stack (`--batched`)."""
    if not w.max_batch:
        with Heartbeat(study, asked[0]):
            return [(asked[0], run_trial(w, kind, asked[0]))]
    from noisecli.tune.stack import run_stack  # (torch, as this module) the stacked path, only with --batched

    with ExitStack() as beats:
        for trial in asked:
            beats.enter_context(Heartbeat(study, trial))
        return run_stack(w, kind, asked)


def work(w: Worker) -> list[Result]:
    """Ask, train, tell until every study's budget is spent, the deadline passed, or a stop."""
    studies = open_studies(w.tune, w.storage, worker=w.worker)
    budgets, results = w.tune.budgets(), []
    while not w.stop.requested and (w.deadline is None or time.time() < w.deadline):
        for study in studies.values():
            recover(study)
        kind = next_study(studies, budgets)
        if kind is None:
            break
        asked = ask_some(studies[kind], kind, budgets[kind], w.max_batch or 1)
        if not asked:
            continue
        for trial, result in run_asked(w, kind, studies[kind], asked):
            tell(w, studies[kind], trial, result)
            results.append(result)
            if not w.quiet:
                spent = sum(len(runs_spent(s)) for s in studies.values())
                print(line(w, kind, trial, result, spent, sum(budgets.values())), flush=True)
        w.on_told(studies)
        if any(r.state == "interrupted" for r in results) or w.stop.requested:
            break
    return results

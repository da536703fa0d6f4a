"""`tune --batched`: K trials of one study asked at once (ask/tell) and trained as one stack
(`batched.train_group`, the stacked strategy `sweep --batched` uses), each member an ordinary run
folder. The pruner judges each trial at every evaluation; a pruned trial's members stop as
early stopping stops a member (they leave the stack, the others go on) and are marked `pruned`.

With several seeds per trial, the first seed's member is the one reported to the pruner (the
members evaluate at the same steps); the trial's other members stop with it.
"""

from __future__ import annotations

from typing import Any

from noisecli.batched import train_group
from noisecli.noise import why_not_stacked
from noisecli.runs import RunFolder
from noisecli.tune.trial import (Pruned, Result, TrialTrainer, Worker, judge_for, mark_pruned, objective_value,
                                 pruned_before, run_names, run_trial, suggest)


def _members(w: Worker, kind: str, trials: list) -> list[tuple[Any, Any, int]]:
    """(trial, spec, seed index) for every run folder of every trial, a trial's first seed first."""
    out = []
    for trial in trials:
        params = suggest(w.tune, kind, trial)
        for index, (name, seed) in enumerate(run_names(w.tune, trial.user_attrs["run"])):
            spec = w.tune.run_spec(kind, params, name, seed)
            if w.device:
                spec.device = w.device
            out.append((trial, spec, index))
    return out


def _maker(w: Worker, members: list, stopped: dict[int, Pruned]):
    """The Trainers of the stack: a trial's first seed asks the pruner; its other seeds follow."""
    of = {spec.name: (trial, index) for trial, spec, index in members}

    def make(spec, runs_dir, display, stop):
        trainer = TrialTrainer(spec, runs_dir, display=display, stop=stop)
        trainer.stacked = True
        trial, index = of[spec.name]
        ask = judge_for(w, trial, 0)

        def judge(t: TrialTrainer, row: dict) -> Pruned | None:
            if index == 0 and trial.number not in stopped:
                pruned = ask(t, row)
                if pruned is not None:
                    stopped[trial.number] = pruned
            return stopped.get(trial.number)

        trainer.judge = judge
        return trainer

    return make


def _result(w: Worker, trial, names: list[str], states: dict[str, Any], stopped: dict[int, Pruned]) -> Result:
    outcomes = [states[n] for n in names]
    for o in outcomes:
        if o.state not in ("completed", "skipped"):
            return Result(o.state, message=o.message)
    pruned = stopped.get(trial.number)
    if pruned is not None:  # stopped as early stopping stops a member: marked pruned now
        for n in names:
            mark_pruned(RunFolder(w.trials_dir / n), pruned, w.tune.objective)
        return Result("pruned", pruned.value, pruned.why, pruned.step)
    values = [objective_value(w.tune, RunFolder(w.trials_dir / n).read_metrics()) for n in names]
    return Result("completed", sum(values) / len(values))


def run_stack(w: Worker, kind: str, trials: list) -> list[tuple[Any, Result]]:
    """Train the asked trials as one stack; each trial's Result. Kinds a stack cannot hold train
    one trial after another, as without --batched."""
    members = _members(w, kind, trials)
    if why_not_stacked(members[0][1].noise):
        return [(trial, run_trial(w, kind, trial)) for trial in trials]
    done: dict[int, Result] = {}
    for trial, spec, _ in members:  # a retried trial that was pruned before: as it was
        before = pruned_before(RunFolder(w.trials_dir / spec.name))
        if before is not None:
            done[trial.number] = before
    members = [m for m in members if m[0].number not in done]
    stopped: dict[int, Pruned] = {}
    outcomes = train_group([spec for _, spec, _ in members], w.trials_dir, lambda *a: None, w.stop, w.threads,
                           make=_maker(w, members, stopped)) if members else []
    states = {o.name: o for o in outcomes}
    for trial in trials:
        if trial.number not in done:
            names = [spec.name for t, spec, _ in members if t is trial]
            done[trial.number] = _result(w, trial, names, states, stopped)
    return [(trial, done[trial.number]) for trial in trials]

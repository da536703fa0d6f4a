"""`sweep --batched`: points that differ only in noise factor and seed, trained as one stack.

Every point keeps its own `Trainer` (run folder, data order, noise generators, checkpoints,
rows), opened as `train` opens a run. `Stack` drives them through the shared loop
(engine/loop.py) and the shared step (engine/step.py) with the stacked strategy
(engine/stacked.py): the arithmetic of the K members is one vmapped forward, backward and
AdamW step, and each member's evaluation row and checkpoint go through its own Trainer.
"""

from __future__ import annotations

from contextlib import ExitStack, nullcontext
from pathlib import Path
from typing import Callable

import torch

from noisecli.engine.loop import train_until_done
from noisecli.engine.stacked import Stacked
from noisecli.engine.state import restore
from noisecli.engine.step import train_step
from noisecli.errors import RunError
from noisecli.noise import why_not_stacked
from noisecli.points import Outcome, PointDisplay, open_point, point_threads, train_point
from noisecli.signals import StopRequest
from noisecli.spec import Spec
from noisecli.trainer import MEASURED, Trainer


class Stack:
    """K members (opened Trainers at the same step, same shapes and schedule) trained as one:
    the loop's driver, as a Trainer is for one run."""

    def __init__(self, members: list[Trainer], stop: StopRequest):
        self.stop = stop
        self.strategy = Stacked(members)
        lead = members[0]
        self.total_steps, self.eval_every = lead.total_steps, lead.eval_every
        self.outcomes: list[Outcome] = []

    @property
    def members(self) -> list[Trainer]:
        return self.strategy.members

    @property
    def active(self) -> bool:
        return bool(self.members)

    @property
    def step(self) -> int:
        return self.members[0].state.step

    def train_step(self) -> tuple[float, list[list[float]]]:
        return train_step(self.strategy, self.step)

    def advance(self) -> None:
        for m in self.members:
            self.bars[id(m)].advance()

    def evaluate(self, lr: float, factors: list[list[float]], seconds: float) -> None:
        """Each member's row, checkpoint and status, through its own Trainer.record; a member
        that diverged is recorded as such and leaves the stack."""
        s = self.strategy
        s.template.eval()
        s.hooks.each("before_eval")
        sums = {split: s.measure(split) for split in MEASURED}
        s.hooks.each("after_eval")
        s.template.train()
        keep = []
        for k, m in enumerate(self.members):
            s.hand_over(k)
            try:
                # member k's slice of each sum; the count (0-dim) is every member's
                m.record(lr, factors[k], seconds, {split: {n: v[k] if v.dim() else v for n, v in split_sums.items()}
                                                   for split, split_sums in sums.items()})
            except RunError as e:
                self._leave(m, Outcome(m.spec.name, "diverged", str(e)))
                continue
            if m.active:
                keep.append(m)
            else:  # stopped early: done, the others go on
                self._complete(m)
        if len(keep) < len(self.members):
            for k in range(len(self.members)):
                s.sync_optimizer(k)  # every member's moments, for restacking
            if keep:
                s.stack(keep)  # the others go on without it
            else:
                s.members = []
        else:
            s.interval.reset()

    def _leave(self, m: Trainer, outcome: Outcome) -> None:
        m.hooks.each("detach")
        self.outcomes.append(outcome)

    def train(self) -> list[Outcome]:
        """Train every member to the end, or to a stop request (every member saves)."""
        for m in self.members:
            m.run.write_status(batched=f"trained in a stack of {len(self.members)} points (sweep --batched)")
        try:
            with self.stop.catching(), ExitStack() as bars:
                self.bars = {id(m): bars.enter_context(m.display.progress(m.total_steps, m.state.step, m.run.name))
                             for m in self.members}
                stopped_after = train_until_done(self, lambda: self.stop.requested)
                self._end(stopped_after)
        except KeyboardInterrupt:  # a second Ctrl-C: stop now, the last checkpoints stand
            for m in self._unsettled():
                m.run.write_status(state="interrupted", error="stopped without saving (second Ctrl-C)")
                self._leave(m, Outcome(m.spec.name, "interrupted", "stopped at once"))
        except Exception as e:  # noqa: BLE001 - any other failure is recorded in every member
            for m in self._unsettled():
                self._leave(m, Outcome(m.spec.name, "failed", str(m.failed(e))))
        finally:
            self.strategy.close()
        return self.outcomes

    def _unsettled(self) -> list[Trainer]:
        """Members still in the stack that have no outcome yet (a completed one is never overwritten)."""
        settled = {o.name for o in self.outcomes}
        return [m for m in self.members if m.spec.name not in settled]

    def _end(self, stopped_after: float | None) -> None:
        """Every member still in the stack: saved where it is (a stop), or completed."""
        for k, m in enumerate(self.members):
            if stopped_after is not None:
                m.state.elapsed += stopped_after
                self.strategy.hand_over(k)
                self._leave(m, Outcome(m.spec.name, "interrupted", str(m.save_interrupted())))
            else:
                self._complete(m)

    def _complete(self, m: Trainer) -> None:
        m.hooks.each("detach")
        m.finish()
        self.outcomes.append(Outcome(m.spec.name, "completed", m.state.stopped_early or "",
                                     m.state.rows[-1]["val_loss"], m.state.best_val))


def _rewind(m: Trainer, step: int) -> bool:
    """Bring member `m`, one save ahead of the rest of its stack, back to `step`, the state its
    previous save holds (prev.pt; at step 0, the fresh start); False where no save holds it.

    A stack's members save one after another at each evaluation, so a kill in between leaves
    some a save ahead. Trained on as two stacks they would not be bitwise what the whole stack
    gives (a member's arithmetic depends on the stack's size: (K, ...) matmuls), so the ones
    ahead go back one save (retraining at most one evaluation interval) and the stack resumes whole."""
    prev = m.run.ckpt_dir / "prev.pt"
    if step == 0:
        if prev.exists() or m.state.step > m.eval_every:  # more than the one save a kill can leave
            return False
        m.setup()  # what a fresh open gives
    else:
        try:
            state = torch.load(prev, map_location="cpu", weights_only=True)
        except Exception:  # noqa: BLE001 - none, or damaged: it trains on from where it is
            return False
        if not isinstance(state, dict) or state.get("step") != step:
            return False
        restore(m, state)
    rows = m.state.rows
    m.run.write_metrics(rows)
    m.run.write_status(step=m.state.step, epoch=m.epoch, best_val_loss=None if not rows else m.state.best_val,
                       val_loss=rows[-1]["val_loss"] if rows else None)
    return True


def _rejoin(opened: list[Trainer], last: Trainer | None) -> None:
    """Members of one stack found at different steps: those its lagging members can be rejoined
    with (`_rewind`) are brought back to the earliest step; the others train on as their own
    stack. Torch's global generator is left as opening them in turn leaves it (`last` opened last)."""
    if len({m.state.step for m in opened}) < 2:
        return
    target = min(m.state.step for m in opened)
    rng = torch.get_rng_state()
    for m in opened:
        if m.state.step > target and _rewind(m, target) and m is last:
            rng = torch.get_rng_state()
    torch.set_rng_state(rng)


def _finish_stopped(m: Trainer) -> Outcome:
    """A member whose checkpoint says it stopped early: it trains no further; it is finished."""
    try:
        m.train()  # its loop does not step (not active); train() records the verdict and completes it
    except RunError as e:
        return Outcome(m.spec.name, "failed", str(e))
    return Outcome(m.spec.name, "completed", m.state.stopped_early or "", m.state.rows[-1]["val_loss"],
                   m.state.best_val)


def train_group(specs: list[Spec], runs_dir: Path, report: Callable[[str, int, int], None],
                stop: StopRequest | None = None, threads: int | None = None, make=Trainer) -> list[Outcome]:
    """Open every member's run as `train` would (skip, resume, refuse), then train those at the
    same step as one stack (members resumed at different steps form separate stacks, except the
    ones a kill between the members' saves left one save ahead: they rejoin, see `_rewind`).
    Points whose noise cannot be stacked (the sweep's plan keeps them apart) train in turn."""
    stop = stop or StopRequest()
    if why_not_stacked(specs[0].noise):
        return [train_point(spec, runs_dir, report, stop, threads) for spec in specs]
    outcomes: list[Outcome] = []
    trainers: list[Trainer] = []
    opened: list[Trainer] = []
    ready: dict[int, list[Trainer]] = {}
    try:
        for spec in specs:
            trainer = make(spec, runs_dir, display=PointDisplay(report), stop=stop)  # make: a Trainer (tune's judges)
            trainers.append(trainer)
            outcome = open_point(trainer)
            if outcome is None:
                opened.append(trainer)
            else:
                outcomes.append(outcome)
        _rejoin(opened, trainers[-1] if trainers else None)
        for trainer in [t for t in opened if not t.active]:  # stopped early, killed before it was marked done
            outcomes.append(_finish_stopped(trainer))
        for trainer in [t for t in opened if t.active]:
            ready.setdefault(trainer.state.step, []).append(trainer)
        with point_threads(opened, threads) if opened else nullcontext():
            for same_step in ready.values():
                if stop.requested:
                    outcomes += [Outcome(t.spec.name, "interrupted", "not started") for t in same_step]
                    continue
                outcomes += Stack(same_step, stop).train()
    finally:
        for trainer in trainers:
            trainer.close()
    return outcomes

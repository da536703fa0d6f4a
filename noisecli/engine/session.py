"""The run folder as one run sees it: claiming it (fresh, resume, completed), its tracker, the
status it reports, and how a failure is recorded. Nothing here deletes what a user or an
earlier attempt wrote: a refused tracker takes back only what this claim added.

With several processes rank 0 claims and tells the others, which then read the same
checkpoint; only rank 0 writes (the others hold a `FollowerRunFolder`).
"""

from __future__ import annotations

import traceback
from pathlib import Path
from typing import Any

from noisecli.distributed import World
from noisecli.errors import BadInput, NoisecliError, RunError, SpecError
from noisecli.runs import FollowerRunFolder, RunFolder, first_line
from noisecli.trackers import Tracker, final_numbers, open_tracker


class RunSession:
    def __init__(self, path: Path, world: World):
        self.world = world
        self.folder = (RunFolder if world.main else FollowerRunFolder)(path)
        self.tracker: Tracker = Tracker()  # `none` until a run is opened
        self.locked = False

    def claim(self, spec: dict, restart: bool, display, total_steps: int) -> tuple[str, dict, dict | None]:
        """'fresh', 'resume' (with the checkpoint to load) or 'completed', agreed by every rank."""
        if not self.world.main:
            outcome, problems = self.world.broadcast(None)
            if outcome == "refused":
                raise BadInput(problems)  # rank 0 says it; the others leave quietly
            return outcome, {}, self.folder.load_checkpoint() if outcome == "resume" else None
        try:
            outcome, status, state = self._claim(spec, restart, display, total_steps)
        except BadInput as e:
            self.world.broadcast(("refused", e.problems))
            raise
        self.world.broadcast((outcome, None))
        return outcome, status, state

    def _claim(self, spec: dict, restart: bool, display, total_steps: int) -> tuple[str, dict, dict | None]:
        outcome, status, state = self.folder.claim(spec, restart, display, total_steps)
        self.locked = True
        if outcome == "completed":
            return outcome, status, state
        try:
            self.tracker = open_tracker(spec["output"]["tracker"], self.folder.path, spec)
        except SpecError:
            self.locked = False
            self.folder.undo_claim()  # what this call wrote goes; an earlier attempt's files stay
            raise
        return outcome, status, state

    def close(self) -> None:
        self.tracker.close()
        self.tracker = Tracker()
        if self.locked:
            self.folder.release_lock()
            self.locked = False

    def failed(self, e: Exception, step: int) -> NoisecliError:
        """Record an unexpected failure (traceback in error.log, status failed); the error to raise.
        Bad input found only inside the loop stays bad input (exit 2), recorded all the same."""
        name, log = self.folder.name, self.folder.path / "error.log"
        msg = first_line(e, 200)
        if self.world.distributed and any(w in str(e) for w in ("gloo", "NCCL", "Connection", "peer")):
            msg = f"another process of this run stopped ({msg[:160]}); see torchrun's report"
        try:
            self.folder.write_error_log(traceback.format_exc())
            self.folder.write_status(state="failed", error=msg, step=step)
            where = f"traceback in {log}"
        except OSError as write_error:  # a full disk: say so; the status may still read `running`
            where = f"and it could not be recorded in the run folder: {write_error}"
        if isinstance(e, BadInput):
            return type(e)([f"{p} (run {name!r} stopped at step {step}; {where})" for p in e.problems])
        return RunError(f"run {name!r} failed at step {step}: {msg} ({where})")

    def log_final(self, summary: dict[str, Any], step: int) -> None:
        """final.json's numbers (the test split's, robustness, sharpness) to the tracker, at the end."""
        self.tracker.log_final(final_numbers(summary), step)

    def log(self, first_step: int, step_losses: list[float], row: dict[str, Any]) -> None:
        """An evaluation's row (and the steps' losses since the last) to the tracker."""
        if step_losses:
            self.tracker.log_steps(first_step, step_losses)
        self.tracker.log_eval(row)

"""One point of a sweep trained as `noisecli train` trains a run (`train_point`), and what every
backend reports of it: its `Outcome`, its progress (`PointDisplay`), the torch threads it
trains with. The local backend (sweep_run), stacks (batched) and cluster jobs (cluster) all
go through here."""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from noisecli.display import say
from noisecli.errors import BadInput, Interrupted, RunError, RunLocked
from noisecli.signals import StopRequest
from noisecli.spec import Spec


@dataclass
class Outcome:
    name: str
    state: str  # completed | skipped | failed | diverged | interrupted | busy
    message: str = ""
    val_loss: float | None = None  # the final evaluation's
    best_val_loss: float | None = None  # the best evaluation's


class _PointBar:
    def __init__(self, name: str, total: int, done: int, report: Callable[[str, int, int], None]):
        self.name, self.total, self.done, self.report = name, total, done, report
        self.last = 0.0
        report(name, done, total)

    def advance(self) -> None:
        self.done += 1
        now = time.monotonic()
        if now - self.last > 0.25 or self.done == self.total:  # a few updates a second is plenty
            self.last = now
            self.report(self.name, self.done, self.total)

    def show(self, row: dict) -> None:
        pass


class PointDisplay:
    """What a trainer inside a sweep shows (a `display.Display`): nothing of its own, only
    progress reports to the sweep's screen, and warnings on stderr."""

    def __init__(self, report: Callable[[str, int, int], None]):
        self.report = report

    def note(self, text: str) -> None:
        pass

    def warn(self, text: str) -> None:
        say(text)

    @contextmanager
    def progress(self, total: int, done: int, name: str) -> Iterator[_PointBar]:
        yield _PointBar(name, total, done, self.report)

    def summary(self, rows, classification, path) -> None:
        pass


def os_error_line(e: OSError) -> str:
    """A full disk or a read-only folder as one line that names the file."""
    return f"cannot write {e.filename}: {e.strerror or e}" if e.filename else f"cannot write the run folder: {e}"


def open_point(trainer) -> Outcome | None:
    """Build and claim one point's run as `train` does: None when it is to be trained, else what
    became of it (skipped: already completed; busy: another process holds it; failed: bad input
    or a run folder that cannot be written)."""
    name = trainer.spec.name
    try:
        trainer.setup()
        if trainer.open_run() == "completed":
            status = trainer.run.read_status()
            return Outcome(name, "skipped", "already completed", status.get("val_loss"), status.get("best_val_loss"))
    except RunLocked as e:
        return Outcome(name, "busy", str(e))
    except BadInput as e:
        return Outcome(name, "failed", "; ".join(e.problems))
    except OSError as e:  # the run folder could not be written (a full disk): this point fails, in one line
        return Outcome(name, "failed", os_error_line(e))
    return None


def point_threads(trainers: list, planned: int | None):
    """engine.device.run_threads: the torch threads the points train with (a context manager)."""
    from noisecli.engine.device import run_threads  # torch, only when points train

    return run_threads(trainers, planned)


def train_point(spec: Spec, runs_dir: Path, report: Callable[[str, int, int], None],
                stop: StopRequest | None = None, threads: int | None = None) -> Outcome:
    from noisecli.trainer import Trainer  # torch: the sweep's parent process never trains

    trainer = Trainer(spec, runs_dir, display=PointDisplay(report), stop=stop)
    try:
        opened = open_point(trainer)
        if opened is not None:
            return opened
        with point_threads([trainer], threads):
            trainer.train()
        s = trainer.state
        return Outcome(spec.name, "completed", "", s.rows[-1]["val_loss"] if s.rows else None,
                       s.best_val if s.rows else None)
    except Interrupted as e:
        return Outcome(spec.name, "interrupted", str(e))
    except RunError as e:
        return Outcome(spec.name, trainer.run.read_status_quiet().get("state", "failed"), str(e))
    except BadInput as e:
        return Outcome(spec.name, "failed", "; ".join(e.problems))
    except OSError as e:
        return Outcome(spec.name, "failed", os_error_line(e))
    finally:
        trainer.close()

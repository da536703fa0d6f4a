"""What `train` shows: a progress bar on a terminal, one line per evaluation elsewhere,
and the per-evaluation table at the end. `--quiet` shows nothing but errors."""

from __future__ import annotations

import os
import sys
import signal
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any, Iterator, Protocol

from rich.console import Console
from rich.table import Table

from noisecli import metrics


def say(text: str) -> None:
    """One line on stderr. If stderr is a pipe whose reader went away (`2>&1 | head`), the line
    is dropped: the exit code still says what happened."""
    try:
        print(text, file=sys.stderr, flush=True)
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stderr.fileno())


def table_columns() -> list[tuple[str, str, str]]:
    """(row key, header, format) of the per-evaluation table; the evaluation's from the metric schema."""
    return [("epoch", "epoch", "{:d}"), ("step", "step", "{:d}"), ("train_loss", "train loss", "{:.4f}"),
            *metrics.display_columns(), ("lr", "lr", "{:.2e}"), ("noise_factor", "noise", "{:.3g}"),
            ("samples_per_s", "samples/s", "{:,.0f}"), ("seconds", "time (s)", "{:.1f}")]


def _fmt(row: dict, key: str, fmt: str) -> str:
    v = row.get(key)
    if v is None:
        return "-"
    try:
        return fmt.format(v)
    except (ValueError, TypeError):
        return str(v)


# columns a narrow terminal drops first, so that the numbers that matter are never cut to `0.…`;
# the evaluation's metrics beyond loss and accuracy go after the first three (`drop_order`)
DROP_ORDER = ("samples_per_s", "lr", "seconds", "noise_factor", "train_loss", "epoch")


def drop_order() -> list[str]:
    """DROP_ORDER with the schema's metrics beyond loss and accuracy (the last of them first)
    dropped after throughput, lr and time."""
    extra = [key for key, _, _ in metrics.display_columns() if not key.endswith(("_loss", "_acc"))]
    return [*DROP_ORDER[:3], *reversed(extra), *DROP_ORDER[3:]]


def metrics_table(rows: list[dict[str, Any]], title: str | None = None, width: int | None = None) -> Table:
    """The per-evaluation table; with `width`, the least needed columns are left out until it fits."""
    cols = [c for c in table_columns() if any(c[0] in r for r in rows)]
    cells = {key: [_fmt(r, key, fmt) for r in rows] for key, _, fmt in cols}

    def needed(columns) -> int:  # rich's box: one border and two padding characters a column, one more
        return sum(max([len(h)] + [len(v) for v in cells[k]]) + 3 for k, h, _ in columns) + 1

    for key in drop_order():
        if width is None or needed(cols) <= width:
            break
        cols = [c for c in cols if c[0] != key]
    table = Table(title=title, title_justify="left")
    for _, header, _ in cols:
        table.add_column(header, justify="right", no_wrap=True)
    for i in range(len(rows)):
        table.add_row(*(cells[key][i] for key, _, _ in cols))
    return table


class Bar(Protocol):
    def advance(self) -> None: ...  # one step done
    def show(self, row: dict) -> None: ...  # an evaluation's row


class Display(Protocol):
    """What a trainer shows, and the only way it shows anything."""

    def note(self, text: str) -> None: ...  # progress news (quiet hides it)
    def warn(self, text: str) -> None: ...  # damaged files and the like, always on stderr
    def progress(self, total: int, done: int, name: str) -> AbstractContextManager[Bar]: ...
    def summary(self, rows: list[dict], classification: bool, path: Path) -> None: ...


class _PipeConsole(Console):
    """Stdout whose reader may go away (`noisecli train ... | head`). Rich's answer is to exit on
    the spot, which would leave the run marked `running` with its last steps unsaved; this one
    goes quiet and asks for a stop as SIGPIPE would, and the trainer saves and stops as it does
    on a signal."""

    def __init__(self, *args, stop=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.stop = stop

    def on_broken_pipe(self) -> None:
        self.quiet = True
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # later writes go nowhere
        if self.stop is not None:
            self.stop.request(signal.SIGPIPE)


class _Bar:
    def __init__(self, progress, task, console: Console | None):
        self.progress, self.task, self.console = progress, task, console

    def advance(self) -> None:
        if self.progress is not None:
            self.progress.advance(self.task)

    def show(self, row: dict) -> None:
        text = (f"epoch {row['epoch']} step {row['step']}: train {row['train_loss']:.4f} "
                f"clean {row['clean_train_loss']:.4f} val {row['val_loss']:.4f}"
                + (f" acc {row['val_acc']:.3f}" if "val_acc" in row else ""))
        if self.progress is not None:
            self.progress.update(self.task, info=text)
        if self.console is not None:  # a log line, or above the bar on a narrow terminal
            self.console.print(text, highlight=False)


def _console(stop) -> _PipeConsole:
    console = _PipeConsole(highlight=False, stop=stop)
    if not console.is_terminal:  # logs and pipes: COLUMNS if set, else wide enough that no column is cut
        columns = os.environ.get("COLUMNS", "")
        console = _PipeConsole(highlight=False, width=int(columns) if columns.isdigit() else 130, stop=stop)
    return console


class TrainDisplay:
    """`train` on a terminal, in a log or behind a pipe; `stop` hears when the pipe closes."""

    def __init__(self, quiet: bool = False, stop=None):
        self.quiet = quiet
        self.console = _console(stop)

    def note(self, text: str) -> None:
        if not self.quiet:  # a long line stays one line in logs; on a terminal it wraps between words
            self.console.print(text, markup=False, soft_wrap=not self.console.is_terminal)

    def warn(self, text: str) -> None:
        """Damaged files and the like: always said, on stderr, even with --quiet."""
        say(text)

    @contextmanager
    def progress(self, total: int, done: int, name: str) -> Iterator[_Bar]:
        if self.quiet:
            yield _Bar(None, None, None)
            return
        if not self.console.is_terminal:
            yield _Bar(None, None, self.console)
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, \
            TimeRemainingColumn

        # the bar, the step count and the labelled times come first; the last evaluation's numbers
        # only where the terminal is wide enough for them too (else each is printed above the bar)
        wide = self.console.width >= 140
        columns = [TextColumn("[bold]{task.description}"), BarColumn(bar_width=None if wide else 20),
                   MofNCompleteColumn(), TextColumn("elapsed"), TimeElapsedColumn(), TextColumn("left"),
                   TimeRemainingColumn()] + ([TextColumn("{task.fields[info]}")] if wide else [])
        with Progress(*columns, console=self.console, transient=False) as progress:
            task = progress.add_task(name, total=total, completed=done, info="")
            yield _Bar(progress, task, None if wide else self.console)

    def summary(self, rows: list[dict], classification: bool, path: Path) -> None:
        if self.quiet:
            return
        self.console.print(metrics_table(rows, width=self.console.width))
        best = min(rows, key=lambda r: r["val_loss"]) if rows else None
        if best:
            last = rows[-1]
            self.console.print(f"best val loss {best['val_loss']:.4f} at epoch {best['epoch']} (step "
                               f"{best['step']}); final gap val - clean train = "
                               f"{last['val_loss'] - last['clean_train_loss']:+.4f}", markup=False)
        self.console.print(f"run folder: {path}", markup=False)


class SweepDisplay:
    """A sweep's progress: points done / running / failed / left with a time estimate, and a
    bar for each running point. On a pipe, one line per finished point; --quiet, nothing."""

    def __init__(self, name: str, total: int, quiet: bool = False, stop=None):
        self.name, self.total, self.quiet = name, total, quiet
        self.console = _console(stop)
        self.finished_count = self.done = self.failed = self.interrupted = 0
        self.running: dict[str, Any] = {}
        self._progress = None
        self._overall = None

    def __enter__(self) -> "SweepDisplay":
        if not self.quiet and self.console.is_terminal:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, \
                TimeRemainingColumn

            self._progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                      TimeElapsedColumn(), TimeRemainingColumn(), console=self.console)
            self._progress.__enter__()
            self._overall = self._progress.add_task(self._describe(), total=self.total)
        return self

    def __exit__(self, *exc) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)

    def _describe(self) -> str:
        """The counts `--status` gives: an interrupted point is neither done nor left to start."""
        left = self.total - self.finished_count - len(self.running)
        stopped = f", {self.interrupted} interrupted" if self.interrupted else ""
        return (f"[bold]{self.name}[/]: {self.done} done, {len(self.running)} running, "
                f"{self.failed} failed{stopped}, {left} left")

    def note(self, text: str) -> None:
        if not self.quiet:
            self.console.print(text, markup=False, highlight=False, soft_wrap=not self.console.is_terminal)

    def started(self, name: str) -> None:
        self.running[name] = self._progress.add_task(f"  {name}", total=None) if self._progress else None
        if self._progress:
            self._progress.update(self._overall, description=self._describe())

    def progress(self, name: str, done: int, total: int) -> None:
        if self._progress is not None and self.running.get(name) is not None:
            self._progress.update(self.running[name], completed=done, total=total)

    def finished(self, outcome) -> None:
        task = self.running.pop(outcome.name, None)
        self.finished_count += 1
        self.done += outcome.state in ("completed", "skipped")
        self.failed += outcome.state in ("failed", "diverged")
        self.interrupted += outcome.state == "interrupted"
        if self._progress is not None:
            if task is not None:
                self._progress.remove_task(task)
            self._progress.update(self._overall, completed=self.finished_count, description=self._describe())
        if not self.quiet:  # on a terminal the line goes above the live bars, in a log it is the record
            val = (f" (final val loss {outcome.val_loss:.4f}, best {outcome.best_val_loss:.4f})"
                   if outcome.val_loss is not None and outcome.best_val_loss is not None else "")
            msg = f": {outcome.message}" if outcome.message and outcome.state != "skipped" else ""
            self.console.print(f"[{self.finished_count}/{self.total}] {outcome.name}: {outcome.state}{val}{msg}",
                               markup=False, highlight=False)

    def summary(self, outcomes: list, sweep_dir: Path) -> None:
        if self.quiet:
            return
        counts: dict[str, int] = {}
        for o in outcomes:
            counts[o.state] = counts.get(o.state, 0) + 1
        text = ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))
        self.console.print(f"sweep {self.name}: {text or 'nothing to run'}", markup=False)
        for o in outcomes:
            if o.state in ("failed", "diverged", "busy", "stopped"):
                self.console.print(f"  {o.name}: {o.state}: {o.message}", markup=False)
        if any(o.state in ("completed", "skipped") for o in outcomes):  # there is something to compare
            self.console.print(f"compare them: noisecli report {sweep_dir}", markup=False)


def describe_run(run) -> str:
    """One line saying what is about to be trained, so a wrong setting shows before the run does."""
    d, spec = run.data, run.spec
    sizes = " / ".join(f"{n:,} {split}" for split, n in d.split_sizes().items())
    if d.is_stream:
        sizes = f"{sizes} tokens, vocab {d.n_outputs}, context {d.block_size}"
    elif d.is_tokens:
        sizes = (f"{sizes} examples padded to {d.block_size} tokens, vocab {d.n_outputs}, "
                 f"loss on {d.info.get('loss_on', 'response tokens')}")
    else:
        sizes = f"{sizes} examples, {d.task}"
    _, bound = spec.train.step_budget(run.steps_per_epoch)  # what stops the run: train.max_steps or the epochs
    return (f"{run.run.name}: {d.name} ({sizes}); {spec.model.kind} "
            f"({sum(p.numel() for p in run.params):,} parameters); noise {spec.noise_label}{_noise_ratio(run)}; "
            f"{run.device.type} {run.precision.name}"
            f"{f' x {run.world.size} processes' if run.world.distributed else ''}; {run.total_steps:,} steps "
            f"({bound})")


def _noise_ratio(run) -> str:
    """' (noise/embedding RMS 3.9)' for embedding noise (its `rms_ratio`, measured once at the start):
    alpha 5 on an untrained embedding can be several times the signal, visible before training."""
    ratios = [n.rms_ratio() for n in run.noises if hasattr(n, "rms_ratio") and n.spec.factor > 0]
    return f" (noise/embedding RMS {ratios[0]:.2g})" if ratios else ""

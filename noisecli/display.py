"""What `train` shows: a progress bar on a terminal, one line per evaluation elsewhere,
and the per-evaluation table at the end. `--quiet` shows nothing but errors."""

from __future__ import annotations

import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from rich.console import Console
from rich.table import Table

COLUMNS = [("epoch", "epoch", "{:d}"), ("step", "step", "{:d}"), ("train_loss", "train loss", "{:.4f}"),
           ("clean_train_loss", "clean train", "{:.4f}"), ("val_loss", "val loss", "{:.4f}"),
           ("val_acc", "val acc", "{:.3f}"), ("lr", "lr", "{:.2e}"), ("noise_factor", "noise", "{:.3g}"),
           ("samples_per_s", "samples/s", "{:,.0f}"), ("seconds", "time (s)", "{:.1f}")]


def _fmt(row: dict, key: str, fmt: str) -> str:
    v = row.get(key)
    if v is None:
        return "-"
    try:
        return fmt.format(v)
    except (ValueError, TypeError):
        return str(v)


def metrics_table(rows: list[dict[str, Any]], title: str | None = None) -> Table:
    cols = [c for c in COLUMNS if any(c[0] in r for r in rows)]
    table = Table(title=title, title_justify="left")
    for _, header, _ in cols:
        table.add_column(header, justify="right")
    for r in rows:
        table.add_row(*(_fmt(r, key, fmt) for key, _, fmt in cols))
    return table


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
        elif self.console is not None:
            self.console.print(text, highlight=False)


class TrainDisplay:
    def __init__(self, quiet: bool = False):
        self.quiet = quiet
        self.console = Console(highlight=False)
        if not self.console.is_terminal:  # logs and pipes: wide enough that no column is cut
            self.console = Console(highlight=False, width=130)
        self.err = Console(stderr=True, highlight=False)

    def note(self, text: str) -> None:
        if not self.quiet:
            self.console.print(text, markup=False)

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

        with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[info]}"),
                      console=self.console, transient=False) as progress:
            task = progress.add_task(name, total=total, completed=done, info="")
            yield _Bar(progress, task, None)

    def summary(self, rows: list[dict], classification: bool, path: Path) -> None:
        if self.quiet:
            return
        self.console.print(metrics_table(rows))
        best = min(rows, key=lambda r: r["val_loss"]) if rows else None
        if best:
            last = rows[-1]
            self.console.print(f"best val loss {best['val_loss']:.4f} at epoch {best['epoch']} (step "
                               f"{best['step']}); final gap val - clean train = "
                               f"{last['val_loss'] - last['clean_train_loss']:+.4f}", markup=False)
        self.console.print(f"run folder: {path}", markup=False)

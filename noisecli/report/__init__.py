"""Reports: from run folders to "which noise helped, by how much, with what spread", in
three layers: `load` (run folders -> runs -> configurations), `stats` (comparisons against
the baseline, intervals, Holm-adjusted p values) and `render` (table, md, csv, json, html).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from noisecli.errors import SpecError
from noisecli.report.load import Config, Run, find_runs, group
from noisecli.report.page import render_html
from noisecli.report.render import (plain_text, render_csv, render_json, render_markdown, render_single,
                                    rich_table)
from noisecli.report.stats import ALPHA, Comparison, analyze, delta_ci, holm, t975
from noisecli.report.verdict import not_run_yet, still_improving
from noisecli.report.winner import best_base

__all__ = ["ALPHA", "Comparison", "Config", "Run", "analyze", "build", "delta_ci", "find_runs", "group", "holm",
           "plain_text", "render", "t975", "best_base", "check_figures_folder", "write_figures"]


def build(dirs: list[Path], metric: str | None = None,
          baselines: list[str] | None = None) -> tuple[list[Config], list[Run]]:
    """The runs under `dirs`, grouped into configurations with their statistics."""
    runs = find_runs(dirs)
    configs = group(runs)
    analyze(configs, metric, baselines)
    return configs, runs


def render(dirs: list[Path], fmt: str, title: str, warn: Callable[[str], None] = lambda line: None,
           metric: str | None = None, baselines: list[str] | None = None):
    """The report in `fmt` (table | md | csv | json | html): a string, or a rich renderable for
    `table`. One run folder alone gets its per-evaluation table instead (html compares runs).

    A run folder that cannot be read is skipped with one `warn` line naming the file and why (and
    listed in the report); when every folder found is unreadable there is nothing to report: bad input."""
    if len(dirs) == 1 and (Path(dirs[0]) / "tune.json").is_file():  # a tune: its confirmation runs, then its search
        from noisecli.report import tune  # only for a tune folder

        return tune.render(Path(dirs[0]), fmt, title, render, warn=warn, metric=metric, baselines=baselines)
    runs = find_runs(dirs)
    if len(dirs) == 1 and (Path(dirs[0]) / "status.json").exists() and fmt != "html":
        return render_single(runs[0], fmt)
    unreadable = [r for r in runs if r.state == "unreadable"]
    for r in unreadable:
        warn(f"report: skipped {r.error}")  # the error names the file, in the run's folder
    if len(unreadable) == len(runs):
        raise SpecError(f"report: nothing to report: the {len(runs)} run folder{'s' if len(runs) > 1 else ''} "
                        f"under {', '.join(map(str, dirs))} {'are all' if len(runs) > 1 else 'is'} unreadable")
    configs = group(runs)
    verdict = analyze(configs, metric, baselines)
    verdict.notes += [line for line in (still_improving(configs), *not_run_yet(dirs, runs)) if line]
    if fmt == "table":
        return rich_table(configs, runs, verdict)
    if fmt == "md":
        return render_markdown(configs, runs, verdict)
    if fmt == "csv":
        return render_csv(configs)
    if fmt == "json":
        return render_json(configs, runs, verdict)
    return render_html(configs, runs, title, verdict)


def write_figures(dirs: list[Path], folder: Path, fmt: str, metric: str | None = None,
                  baselines: list[str] | None = None) -> list[Path]:
    """Every figure of the html page as its own file in `folder` (made if missing), for a paper."""
    from noisecli.report import figures  # matplotlib, only when figures are asked for

    check_figures_folder(folder)
    configs, _ = build(dirs, metric, baselines)
    folder.mkdir(exist_ok=True)
    return figures.write(configs, folder, fmt)


def check_figures_folder(folder: Path) -> None:
    """--figures DIR names a folder, or one to make in an existing folder (checked before any report is written)."""
    if folder.is_file():
        raise SpecError(f"--figures: {folder} is a file; name a folder for the figures")
    if not folder.parent.is_dir():
        raise SpecError(f"--figures: folder {folder.parent} does not exist")

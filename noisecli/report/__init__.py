"""Reports: from run folders to "which noise helped, by how much, with what spread", in
three layers: `load` (run folders -> runs -> configurations), `stats` (comparisons against
the baseline, intervals, Holm-adjusted p values) and `render` (table, md, csv, json, html).
"""

from __future__ import annotations

from pathlib import Path

from noisecli.report.load import Config, Run, find_runs, group
from noisecli.report.page import render_html
from noisecli.report.render import render_csv, render_json, render_markdown, render_single, rich_table
from noisecli.report.stats import ALPHA, Comparison, analyze, delta_ci, holm, t975

__all__ = ["ALPHA", "Comparison", "Config", "Run", "analyze", "build", "delta_ci", "find_runs", "group", "holm",
           "render", "t975"]


def build(dirs: list[Path]) -> tuple[list[Config], list[Run]]:
    """The runs under `dirs`, grouped into configurations with their statistics."""
    runs = find_runs(dirs)
    configs = group(runs)
    analyze(configs)
    return configs, runs


def render(dirs: list[Path], fmt: str, title: str):
    """The report in `fmt` (table | md | csv | json | html): a string, or a rich renderable for
    `table`. One run folder alone gets its per-evaluation table instead (html compares runs)."""
    if len(dirs) == 1 and (Path(dirs[0]) / "status.json").exists() and fmt != "html":
        return render_single(find_runs(dirs)[0], fmt)
    configs, runs = build(dirs)
    if fmt == "table":
        return rich_table(configs, runs)
    if fmt == "md":
        return render_markdown(configs, runs)
    if fmt == "csv":
        return render_csv(configs)
    if fmt == "json":
        return render_json(configs, runs)
    return render_html(configs, runs, title)

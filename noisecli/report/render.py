"""Reports, layer 3: configurations and their statistics rendered as a terminal table,
Markdown, CSV, JSON or an HTML page with plots; and one run's own table."""

from __future__ import annotations

import json
import math
import re
from html import escape
from typing import Any

from noisecli.errors import SpecError
from noisecli.report.load import Config, Run

CSV_COLUMNS = ["noise", "factor", "n", "n_diverged", "val_loss_mean", "val_loss_std", "best_val_loss_mean",
               "best_val_loss_std", "clean_train_loss_mean", "gap_mean", "val_acc_mean", "delta_vs_none",
               "delta_ci_low", "delta_ci_high", "paired", "p_value", "p_adjusted", "significant", "delta_best_vs_none",
               "delta_best_ci_low", "delta_best_ci_high", "best_p_value", "best_p_adjusted", "best_significant",
               "best_in_kind", "best_overall", "metric", "metric_mean", "metric_std", "delta_metric",
               "delta_metric_ci_low", "delta_metric_ci_high", "metric_p_value", "metric_p_adjusted",
               "metric_significant", "config"]

# the columns whose text comes from run folders (spec values), not from the statistics
FOLDER_TEXT_COLUMNS = ("noise", "factor", "regularizer", "config")


def _finite_or_none(v: Any) -> Any:
    """NaN and inf as None, in lists and mappings too: JSON has no NaN (Python writes a bare `NaN`
    that strict parsers reject) and CSV readers read an empty cell as missing."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _finite_or_none(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_finite_or_none(x) for x in v]
    return v


_MD_SPECIAL = re.compile(r"([\\`*_\[\]|])")


def md_escape(text: Any) -> str:
    """Text from run folders (names, spec values, error messages) made inert in Markdown: raw HTML
    escaped as the html page escapes it, and the characters that would start emphasis, code or a
    link, or split a table cell, backslash-escaped; line breaks become spaces (a table row is one line)."""
    text = " ".join(str(text).splitlines())
    return _MD_SPECIAL.sub(r"\\\1", escape(text, quote=False))


def _f(v: Any, fmt: str = ".4f") -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return format(v, fmt)


def _n_text(s: dict) -> str:
    """Runs averaged, and those of the same configuration that diverged or ended non-finite."""
    return f"{s['n']} (+{s['n_diverged']} diverged)" if s.get("n_diverged") else str(s["n"])


def _pm(mean: float, std: float, fmt: str = ".4f") -> str:
    return f"{_f(mean, fmt)} ± {_f(std, fmt)}" if not math.isnan(std) else _f(mean, fmt)


DELTAS = {"final": ("delta_vs_none", "delta_ci_low", "delta_ci_high", "significant"),
          "best": ("delta_best_vs_none", "delta_best_ci_low", "delta_best_ci_high", "best_significant"),
          "metric": ("delta_metric", "delta_metric_ci_low", "delta_metric_ci_high", "metric_significant")}


def _delta_text(s: dict, best: bool = False, which: str | None = None, fmt: str = "+.4f") -> str:
    key, low, high, mark = DELTAS[which or ("best" if best else "final")]
    if s[key] is None:
        return "baseline" if s.get("baseline") else "-"
    ci = "" if s[low] is None or math.isnan(s[low]) else f" [{format(s[low], fmt)}, {format(s[high], fmt)}]"
    return f"{format(s[key], fmt)}{ci}{' *' if s[mark] else ''}"


def _metric_format(configs: list[Config]) -> tuple[str, str]:
    """Four decimals, or four significant digits for a metric whose values are all small
    (sharpness of a memorized training set is ~1e-5): (mean's format, difference's format)."""
    means = [abs(c.stats["metric_mean"]) for c in configs if c.runs and not math.isnan(c.stats["metric_mean"])]
    small = means and max(means) < 1e-2
    return (".4g", "+.3g") if small else (".4f", "+.4f")


def _own_metric_columns(configs: list[Config]) -> str | None:
    """The deciding metric, when it is not one of the table's fixed columns (final val loss)."""
    metric = configs[0].stats.get("metric") if configs else None
    return None if metric in (None, "val_loss") else metric


def baseline_names(configs: list[Config]) -> list[str]:
    """The --baseline names the statistics were computed against, the deciding one first."""
    return list(configs[0].by_baseline) if configs and configs[0].by_baseline else ["none"]


def table_rows(configs: list[Config]) -> tuple[list[str], list[list[str]]]:
    has_acc = any(c.stats["val_acc_mean"] is not None for c in configs)
    has_extra = any(c.extra for c in configs)
    has_regs = any(c.regs for c in configs)
    metric = _own_metric_columns(configs)
    words = metric.replace("_", " ") if metric else ""
    mean_fmt, delta_fmt = _metric_format(configs)
    first, *others = baseline_names(configs)
    header = ["noise", "factor"] + (["regularizer"] if has_regs else []) + (["config"] if has_extra else []) + \
             ["n"] + ([words, f"Δ {words} vs {first} [95% CI]"] if metric else []) + \
             [f"Δ {words or 'val loss'} vs {name} [95% CI]" for name in others] + \
             ["val loss", "best val", "clean train", "gap"] + (["val acc"] if has_acc else []) + \
             [f"Δ vs {first} [95% CI]", f"Δ best val vs {first}", "best"]
    rows = []
    for c in configs:
        s = c.stats
        mark = "overall" if s["best_overall"] else ("kind" if s["best_in_kind"] else "")
        rows.append([c.noise, c.factor or "-"] + ([c.regs or "-"] if has_regs else []) +
                    ([c.extra] if has_extra else []) + [_n_text(s)] +
                    ([_pm(s["metric_mean"], s["metric_std"], mean_fmt), _delta_text(s, which="metric", fmt=delta_fmt)]
                     if metric else []) +
                    [_delta_text(c.by_baseline[name], which="metric" if metric else "final",
                                 fmt=delta_fmt if metric else "+.4f") for name in others] +
                    [_pm(s["val_loss_mean"], s["val_loss_std"]),
                     _pm(s["best_val_loss_mean"], s["best_val_loss_std"]), _f(s["clean_train_loss_mean"]),
                     _f(s["gap_mean"], "+.4f")] + ([_f(s["val_acc_mean"], ".3f")] if has_acc else []) +
                    [_delta_text(s), _delta_text(s, best=True), mark])
    return header, rows


def verdict_lines(verdict) -> list[str]:
    """The report's first line (what decided) and where the never-crown-the-worse rule acted."""
    return [f"Verdict: {verdict.first_line()}."] + [f"Note: {n}." for n in verdict.notes] if verdict else []


def excluded_lines(runs: list[Run]) -> list[str]:
    lines = [f"{r.path}: {r.state}{': ' + r.error if r.error else ''}" for r in runs if r.state != "completed"]
    dups = sum(r.state == "duplicate" for r in runs)
    if dups:
        lines.insert(0, f"{dups} duplicate run{'s' if dups > 1 else ''} set aside (each seed counts once per "
                        "configuration)")
    return lines


LEGEND = ("val loss: final validation loss, mean ± std over seeds (each seed counted once). "
          "gap: val - clean train loss. "
          "Δ vs none: difference in mean final val loss against the no-noise configuration of the same base "
          "('none', else a kind at factor 0, which trains exactly like none; with the same regularizers, so "
          "'input 0.3 + dropout 0.2' is compared with 'dropout 0.2'; --baseline names another), "
          "with a plain 95 % t-interval (paired by seed where the seeds match, Welch's otherwise). "
          "* where the p of that test, Holm-adjusted over all comparisons against the same baseline, is below "
          "0.05 (so an interval may exclude 0 without a star when many configurations are compared). "
          "Δ best val: the same for each run's best val loss, which says whether the noise reached a better "
          "optimum or only held on to one longer (what early stopping also buys). "
          "best: the best configuration on the deciding metric (chosen on its val value at the selected "
          "checkpoint when the metric is a test one), overall and for its noise kind, never one significantly "
          "worse than its baseline on the metric it is chosen by or on best val loss. "
          "n: the runs averaged; (+k diverged): runs of the same configuration that diverged or recorded a "
          "NaN or inf loss, not averaged and listed below.")


def _other_metrics_markdown(configs: list[Config]) -> str:
    """Every metric at the selected checkpoint beside the deciding one: mean, and Δ against the
    baseline with its interval (* where Holm-adjusted p < 0.05 within that metric's family)."""
    names = list(dict.fromkeys(n for c in configs for n in c.stats.get("metrics", {})))
    if not names:
        return ""
    has_regs, has_extra = any(c.regs for c in configs), any(c.extra for c in configs)
    lines = ["| noise | factor | " + ("regularizer | " if has_regs else "") + ("config | " if has_extra else "")
             + " | ".join(md_escape(n) for n in names) + " |", "|" + "---|" * (len(names) + 2 + has_regs + has_extra)]
    for c in configs:
        cells = []
        for n in names:
            m = c.stats["metrics"].get(n)
            if m is None:
                cells.append("-")
                continue
            small = abs(m["mean"]) < 1e-2 if m["mean"] == m["mean"] else False
            fmt, dfmt = (".3g", "+.3g") if small else (".4f", "+.4f")
            delta = ("baseline" if c.stats.get("baseline") else "-") if m["delta"] is None else (
                f"{format(m['delta'], dfmt)}" + ("" if m["low"] is None or m["low"] != m["low"] else
                                                f" [{format(m['low'], dfmt)}, {format(m['high'], dfmt)}]")
                + (" \\*" if m["significant"] else ""))
            cells.append(f"{format(m['mean'], fmt)} ({delta})")
        regs = (f"{md_escape(c.regs or '-')} | " if has_regs else "") + \
            (f"{md_escape(c.extra)} | " if has_extra else "")
        lines.append(f"| {md_escape(c.noise)} | {md_escape(c.factor or '-')} | {regs}" + " | ".join(cells) + " |")
    return ("\nEvery metric at the selected checkpoint: mean over seeds (Δ vs the baseline [95% CI], * where the "
            "Holm-adjusted p within that metric's comparisons is below 0.05):\n\n" + "\n".join(lines) + "\n")


def render_markdown(configs: list[Config], runs: list[Run], verdict=None) -> str:
    header, rows = table_rows(configs)
    from_folders = {i for i, h in enumerate(header) if h in FOLDER_TEXT_COLUMNS}
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for c, r in zip(configs, rows):
        cells = []
        for i, x in enumerate(r):
            if i in from_folders:
                cells.append(f"**{md_escape(x)}**" if c.stats["best_overall"] else md_escape(x))
                continue
            star = x.endswith(" *")  # escaped and outside the bold: `***` is not read as the star by CommonMark
            x = x.removesuffix(" *")
            cells.append((f"**{x}**" if c.stats["best_overall"] and x else x) + (" \\*" if star else ""))
        lines.append("| " + " | ".join(cells) + " |")
    out = "\n".join(lines) + "\n\n" + LEGEND + "\n" + _other_metrics_markdown(configs)
    first = verdict_lines(verdict)
    if first:
        out = "\n".join(md_escape(line) for line in first) + "\n\n" + out
    excluded = excluded_lines(runs)  # paths and error texts: escaped as the html page escapes them
    if excluded:
        out += "\nNot in the statistics:\n" + "".join(f"- {md_escape(line)}\n" for line in excluded)
    return out


def render_csv(configs: list[Config]) -> str:
    import csv
    import io

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    others = list(dict.fromkeys(name for c in configs for name in c.stats.get("metrics", {})))
    parts = ("mean", "std", "delta", "ci_low", "ci_high", "p_adjusted")
    extra = [f"{name}_{part}" for name in others for part in parts]
    columns = CSV_COLUMNS + LONG_COLUMNS + extra
    w.writerow(columns)
    for c, baseline, stats in long_rows(configs):
        s = {**stats, "noise": c.noise, "factor": c.factor, "config": c.extra, "regularizer": c.regs,
             "label": c.label, "baseline": baseline, "baseline_config": stats.get("vs")}
        for name, m in stats.get("metrics", {}).items():
            s.update({f"{name}_mean": m["mean"], f"{name}_std": m["std"], f"{name}_delta": m["delta"],
                      f"{name}_ci_low": m["low"], f"{name}_ci_high": m["high"], f"{name}_p_adjusted": m["p_adjusted"]})
        w.writerow(["" if _finite_or_none(s.get(k)) is None else s[k] for k in columns])
    return buf.getvalue()


# csv and json are long: one row per configuration and baseline
LONG_COLUMNS = ["regularizer", "label", "baseline", "baseline_config"]


def long_rows(configs: list[Config]):
    """(configuration, baseline name, its stats against that baseline), baseline by baseline."""
    return [(c, name, c.by_baseline.get(name, c.stats)) for name in baseline_names(configs) for c in configs]


def _factor_json(text: str):
    """'' (none) -> null, '0.1' -> 0.1, '0.1/0.05' (a list of kinds) -> [0.1, 0.05]."""
    if not text:
        return None
    values = [float(v) for v in text.split("/")]
    return values[0] if len(values) == 1 else values


def render_json(configs: list[Config], runs: list[Run], verdict=None) -> str:
    decided = None if verdict is None else {"metric": verdict.decider.metric,
                                            "chosen_on": verdict.decider.select.removeprefix("selected:"),
                                            "higher_is_better": verdict.decider.higher_is_better,
                                            "text": verdict.first_line(), "notes": verdict.notes}
    return json.dumps(_finite_or_none({
        "verdict": decided,
        "baselines": None if verdict is None else verdict.described,
        "configs": [{"noise": c.noise, "factor": _factor_json(c.factor), "config": c.extra, "regularizer": c.regs,
                     "label": c.label, "baseline": baseline, "baseline_config": stats.get("vs"),
                     **{k: v for k, v in stats.items() if k not in ("vs_key", "baseline")},
                     "is_baseline": stats.get("baseline"),
                     "runs": [{"path": str(r.path), "seed": r.seed, "val_loss": r.final["val_loss"],
                               "best_val_loss": r.best_val} for r in c.runs]}
                    for c, baseline, stats in long_rows(configs)],
        "excluded": [{"path": str(r.path), "state": r.state, "error": r.error} for r in runs
                     if r.state != "completed"],
        "duplicates": sum(r.state == "duplicate" for r in runs),
    }), indent=2, allow_nan=False) + "\n"


def rich_table(configs: list[Config], runs: list[Run], verdict=None):
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    header, rows = table_rows(configs)
    table = Table(title="noise comparison", title_justify="left", show_lines=True)
    for h in header:
        table.add_column(h, justify="left" if h in ("noise", "config", "best") else "right")
    deltas = [i for i, h in enumerate(header) if h.startswith("Δ")]
    for c, r in zip(configs, rows):
        style = "bold green" if c.stats["best_overall"] else ("bold" if c.stats["best_in_kind"] else None)
        r = [x.replace(" [", "\n[") if i in deltas else x for i, x in enumerate(r)]  # narrow: CI below
        table.add_row(*map(Text, r), style=style)  # Text: a plain str is read as rich markup ("[/x]" raises)
    parts = [*(Text(line, style="bold") for line in verdict_lines(verdict)), table, Text(LEGEND, style="dim")]
    excluded = excluded_lines(runs)
    if excluded:
        parts.append(Text("Not in the statistics:\n" + "\n".join("  " + e for e in excluded)))
    return Group(*parts)


def plain_text(renderable, width: int = 160) -> str:
    """A rich renderable as the plain text a file gets (no colours, no terminal codes). Rendered
    into its own buffer: printing inside `console.capture()` and then `export_text()` records
    nothing, which wrote an empty report file."""
    import io

    from rich.console import Console

    buf = io.StringIO()
    Console(file=buf, width=width, color_system=None, force_terminal=False).print(renderable)
    return buf.getvalue()


def render_single(run: Run, fmt: str):
    """One run: its per-evaluation table."""
    from noisecli.display import metrics_table  # lazy: rich, as everywhere in this module

    if run.state == "unreadable":
        raise SpecError(f"report: {run.path}: unreadable run ({run.error})")
    status = f"{run.path}: {run.state}{' (' + run.error + ')' if run.error else ''}"
    if fmt == "json":
        return json.dumps(_finite_or_none({"path": str(run.path), "state": run.state, "rows": run.rows}), indent=2,
                          allow_nan=False) + "\n"
    if fmt == "csv":
        import csv
        import io

        buf = io.StringIO()
        cols = list(dict.fromkeys(k for r in run.rows for k in r))
        w = csv.DictWriter(buf, cols, lineterminator="\n")
        w.writeheader()
        w.writerows(run.rows)
        return buf.getvalue()
    if fmt == "md":
        cols = list(dict.fromkeys(k for r in run.rows for k in r))
        lines = ["| " + " | ".join(map(md_escape, cols)) + " |", "|" + "---|" * len(cols)]
        lines += ["| " + " | ".join(_f(r.get(c), ".4g") if isinstance(r.get(c), float)
                                    else md_escape(r.get(c, "-")) for c in cols) + " |" for r in run.rows]
        return md_escape(status) + "\n\n" + "\n".join(lines) + "\n"
    from rich.text import Text

    return metrics_table(run.rows, title=Text(status))  # the path and the error as written, not as markup

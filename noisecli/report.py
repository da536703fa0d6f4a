"""Reports: from run folders to "which noise helped, by how much, with what spread".

Runs that differ only by seed form a configuration. Each configuration is compared with
the `none` configuration of the same base (the same spec but for the noise): the delta
of mean final val loss (and of mean best val loss) with a 95 % t-interval, paired by
seed where both have the same seeds, Welch's otherwise. Runs that are not completed are listed, never averaged.
"""

from __future__ import annotations

import json
import math
import os
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from noisecli.errors import SpecError
from noisecli.spec import flatten

# Student's t, two-sided 95 % (0.975 quantile), by degrees of freedom
T975 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
        2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
        2.045, 2.042]
CSV_COLUMNS = ["noise", "factor", "n", "val_loss_mean", "val_loss_std", "best_val_loss_mean", "best_val_loss_std",
               "clean_train_loss_mean", "gap_mean", "val_acc_mean", "delta_vs_none", "delta_ci_low",
               "delta_ci_high", "paired", "significant", "delta_best_vs_none", "delta_best_ci_low",
               "delta_best_ci_high", "best_significant", "best_in_kind", "best_overall", "config"]


def t975(df: float) -> float:
    """The 0.975 quantile of Student's t: exact from the table for whole df up to 30, else Hill's
    algorithm (ACM 396, 1970): within 1e-4 for df >= 2, about 1 % for fractional df below 2
    (Welch's df with two runs on one side)."""
    if df < 1 or math.isnan(df):
        return math.nan
    if df == int(df) and df <= 30:
        return T975[int(df) - 1]
    n, p = df, 0.05
    a = 1 / (n - 0.5)
    b = 48 / (a * a)
    c = ((20700 * a / b - 98) * a - 16) * a + 96.36
    d = ((94.5 / (b + c) - 3) / b + 1) * math.sqrt(a * math.pi / 2) * n
    y = (d * p) ** (2 / n)
    if y > 0.05 + a:
        x = 1.959963984540054  # the normal 0.975 quantile
        y = x * x
        if n < 5:
            c += 0.3 * (n - 4.5) * (x + 0.6)
        c = (((0.05 * d * x - 5) * x - 7) * x - 2) * x + b + c
        y = (((((0.4 * y + 6.3) * y + 36) * y + 94.5) / c - y - 3) / b + 1) * x
        y = a * y * y
        y = math.exp(y) - 1 if y > 0.002 else 0.5 * y * y + y
    else:
        y = ((1 / (((n + 6) / (n * y) - 0.089 * d - 0.822) * (n + 2) * 3) + 0.5 / (n + 4)) * y - 1) \
            * (n + 1) / (n + 2) + 1 / y
    return math.sqrt(n * y)


@dataclass
class Run:
    path: Path
    state: str
    spec: dict
    rows: list[dict]
    error: str | None = None

    @property
    def seed(self) -> int:
        return self.spec.get("seed", 0)

    @property
    def final(self) -> dict:
        return self.rows[-1]

    @property
    def best_val(self) -> float:
        return min(r["val_loss"] for r in self.rows)


def _read_run(path: Path) -> Run:
    """One run folder; a corrupt file makes the run 'unreadable' with the reason, not a crash."""
    try:
        status = json.loads((path / "status.json").read_text(encoding="utf-8"))
        spec = yaml.safe_load((path / "spec.yaml").read_text(encoding="utf-8"))
        rows = [json.loads(line) for line in (path / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
                if line.strip()]
        if not isinstance(status, dict) or not isinstance(spec, dict):
            raise ValueError("not a noisecli run")
    except (OSError, ValueError, yaml.YAMLError) as e:
        return Run(path, "unreadable", {}, [], f"{type(e).__name__}: {e}".splitlines()[0])
    state = status.get("state", "unknown")
    if state == "completed" and not rows:
        state, status["error"] = "unreadable", "completed but metrics.jsonl is empty"
    return Run(path, state, spec, rows, status.get("error"))


def find_runs(dirs: list[Path]) -> list[Run]:
    runs, missing = [], []
    for d in dirs:
        d = Path(d)
        if not d.is_dir():
            missing.append(f"report: {d}: no such folder")
            continue
        found = []
        for root, subdirs, files in os.walk(d):
            subdirs[:] = sorted(s for s in subdirs if not s.startswith("."))  # .archive holds old runs
            if "status.json" in files:
                found.append(_read_run(Path(root)))
                subdirs[:] = []
        if not found:
            missing.append(f"report: {d}: no run folders (with a status.json) in it")
        runs += found
    if missing:
        raise SpecError(missing)
    return runs


@dataclass
class Config:
    key: str
    base: str
    noise: str
    factor: str
    runs: list[Run]
    extra: str = ""
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.noise}{' ' + self.factor if self.factor else ''}{' ' + self.extra if self.extra else ''}"


def _noise_entries(spec: dict) -> list[dict]:
    noise = spec.get("noise", {"kind": "none"})
    return noise if isinstance(noise, list) else [noise]


def _keys(spec: dict) -> tuple[str, str]:
    flat = {k: v for k, v in flatten(spec).items() if k not in ("name", "seed", "device")}
    entries = _noise_entries(spec)
    if all(e.get("kind") == "none" for e in entries):  # the factor of `none` cannot matter
        flat = {k: v for k, v in flat.items() if not k.startswith("noise")} | {"noise.kind": "none"}
    base = {k: v for k, v in flat.items() if not k.startswith("noise")}
    return json.dumps(flat, sort_keys=True, default=str), json.dumps(base, sort_keys=True, default=str)


def group(runs: list[Run]) -> list[Config]:
    configs: dict[str, Config] = {}
    for run in runs:
        if run.state != "completed":
            continue
        key, base = _keys(run.spec)
        if key not in configs:
            entries = _noise_entries(run.spec)
            label = "+".join(e.get("kind", "?") for e in entries)
            factor = "" if label == "none" else "/".join(f"{e.get('factor', 0):g}" for e in entries)
            configs[key] = Config(key, base, label, factor, [])
        configs[key].runs.append(run)
    out = list(configs.values())
    _label_extras(out)
    for c in out:
        c.runs.sort(key=lambda r: r.seed)
    return sorted(out, key=lambda c: (c.extra, c.noise != "none", c.noise, _num(c.factor)))


def _is_zero(text: str) -> bool:
    try:
        return float(text) == 0
    except ValueError:
        return False


def _num(text: str) -> float:
    try:
        return float(text.split("/")[0])
    except ValueError:
        return 0.0


def _label_extras(configs: list[Config]) -> None:
    """Name what else differs between configurations (model width, lr, ...) beside the noise."""
    flats = [{k: v for k, v in json.loads(c.key).items() if not k.startswith("noise")} for c in configs]
    keys = sorted({k for f in flats for k in f})
    varying = [k for k in keys if len({json.dumps(f.get(k), default=str) for f in flats}) > 1]
    for c, f in zip(configs, flats):
        c.extra = " ".join(f"{k}={f.get(k)}" for k in varying)


def _mean_std(values: list[float]) -> tuple[float, float]:
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else math.nan


def delta_ci(cfg: dict[int, float], none: dict[int, float]) -> tuple[float, float, float, bool]:
    """(delta, ci_low, ci_high, paired): cfg minus none in mean val loss, with a 95 % t-interval."""
    common = sorted(set(cfg) & set(none))
    if len(common) >= 2 and len(common) == len(cfg) == len(none):
        diffs = [cfg[s] - none[s] for s in common]
        mean, sd = statistics.fmean(diffs), statistics.stdev(diffs)
        half = t975(len(diffs) - 1) * sd / math.sqrt(len(diffs))
        return mean, mean - half, mean + half, True
    a, b = list(cfg.values()), list(none.values())
    delta = statistics.fmean(a) - statistics.fmean(b)
    if len(a) < 2 or len(b) < 2:
        return delta, math.nan, math.nan, False
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    if va + vb == 0:
        return delta, delta, delta, False
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))  # Welch-Satterthwaite
    half = t975(df) * math.sqrt(va + vb)
    return delta, delta - half, delta + half, False


def analyze(configs: list[Config]) -> None:
    for c in configs:
        finals = [r.final for r in c.runs]
        vm, vs = _mean_std([r["val_loss"] for r in finals])
        bm, bs = _mean_std([r.best_val for r in c.runs])
        accs = [r["val_acc"] for r in finals if "val_acc" in r]
        c.stats = {
            "n": len(c.runs), "val_loss_mean": vm, "val_loss_std": vs, "best_val_loss_mean": bm,
            "best_val_loss_std": bs,
            "clean_train_loss_mean": _mean_std([r["clean_train_loss"] for r in finals])[0],
            "gap_mean": _mean_std([r["val_loss"] - r["clean_train_loss"] for r in finals])[0],
            "val_acc_mean": _mean_std(accs)[0] if accs else None,
            "delta_vs_none": None, "delta_ci_low": None, "delta_ci_high": None, "paired": None,
            "significant": None, "delta_best_vs_none": None, "delta_best_ci_low": None,
            "delta_best_ci_high": None, "best_significant": None,
            "best_in_kind": False, "best_overall": False, "baseline": False,
        }
    # the baseline of a base: its `none` configuration, else one whose factors are all 0 (a
    # kind at factor 0 trains bitwise like `none`, so a grid of factors 0, 0.1, ... has one)
    nones = {c.base: c for c in configs if c.noise == "none"}
    for c in configs:
        if c.base not in nones and c.factor and all(_is_zero(f) for f in c.factor.split("/")):
            nones[c.base] = c
    for c in nones.values():
        c.stats["baseline"] = True
    for c in configs:
        none = nones.get(c.base)
        if none is None or none is c:
            continue
        d, lo, hi, paired = delta_ci({r.seed: r.final["val_loss"] for r in c.runs},
                                     {r.seed: r.final["val_loss"] for r in none.runs})
        c.stats.update(delta_vs_none=d, delta_ci_low=lo, delta_ci_high=hi, paired=paired,
                       significant=None if math.isnan(lo) else (hi < 0 or lo > 0))
        # the same for each run's best val loss: does the noise reach a better optimum, or
        # only hold on to it longer (what early stopping would also buy)?
        d, lo, hi, _ = delta_ci({r.seed: r.best_val for r in c.runs}, {r.seed: r.best_val for r in none.runs})
        c.stats.update(delta_best_vs_none=d, delta_best_ci_low=lo, delta_best_ci_high=hi,
                       best_significant=None if math.isnan(lo) else (hi < 0 or lo > 0))
    best_kind: dict[str, Config] = {}
    for c in configs:
        if c.noise not in best_kind or c.stats["val_loss_mean"] < best_kind[c.noise].stats["val_loss_mean"]:
            best_kind[c.noise] = c
    for c in best_kind.values():
        c.stats["best_in_kind"] = True
    if configs:
        min(configs, key=lambda c: c.stats["val_loss_mean"]).stats["best_overall"] = True


# --------------------------------------------------------------------------- formats


def _f(v: Any, fmt: str = ".4f") -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return format(v, fmt)


def _pm(mean: float, std: float) -> str:
    return f"{_f(mean)} ± {_f(std)}" if not math.isnan(std) else _f(mean)


def _delta_text(s: dict, best: bool = False) -> str:
    key, low, high, mark = (("delta_best_vs_none", "delta_best_ci_low", "delta_best_ci_high", "best_significant")
                            if best else ("delta_vs_none", "delta_ci_low", "delta_ci_high", "significant"))
    if s[key] is None:
        return "baseline" if s.get("baseline") else "-"
    ci = "" if s[low] is None or math.isnan(s[low]) else f" [{s[low]:+.4f}, {s[high]:+.4f}]"
    return f"{s[key]:+.4f}{ci}{' *' if s[mark] else ''}"


def table_rows(configs: list[Config]) -> tuple[list[str], list[list[str]]]:
    has_acc = any(c.stats["val_acc_mean"] is not None for c in configs)
    has_extra = any(c.extra for c in configs)
    header = ["noise", "factor"] + (["config"] if has_extra else []) + \
             ["n", "val loss", "best val", "clean train", "gap"] + (["val acc"] if has_acc else []) + \
             ["Δ vs none [95% CI]", "Δ best val vs none", "best"]
    rows = []
    for c in configs:
        s = c.stats
        mark = "overall" if s["best_overall"] else ("kind" if s["best_in_kind"] else "")
        rows.append([c.noise, c.factor or "-"] + ([c.extra] if has_extra else []) +
                    [str(s["n"]), _pm(s["val_loss_mean"], s["val_loss_std"]),
                     _pm(s["best_val_loss_mean"], s["best_val_loss_std"]), _f(s["clean_train_loss_mean"]),
                     _f(s["gap_mean"], "+.4f")] + ([_f(s["val_acc_mean"], ".3f")] if has_acc else []) +
                    [_delta_text(s), _delta_text(s, best=True), mark])
    return header, rows


def excluded_lines(runs: list[Run]) -> list[str]:
    return [f"{r.path}: {r.state}{': ' + r.error if r.error else ''}" for r in runs if r.state != "completed"]


LEGEND = ("val loss: final validation loss, mean ± std over seeds. gap: val - clean train loss. "
          "Δ vs none: difference in mean final val loss against the no-noise configuration of the same base "
          "(`none`, else a kind at factor 0, which trains exactly like none), "
          "with a 95 % t-interval (paired by seed where the seeds match); * where the interval excludes 0. "
          "Δ best val: the same for each run's best val loss, which says whether the noise reached a better "
          "optimum or only held on to one longer (what early stopping also buys). "
          "best: lowest mean val loss overall, or for its noise kind.")


def render_markdown(configs: list[Config], runs: list[Run]) -> str:
    header, rows = table_rows(configs)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for c, r in zip(configs, rows):
        cells = [f"**{x}**" if c.stats["best_overall"] and x else x for x in r]
        lines.append("| " + " | ".join(cells) + " |")
    out = "\n".join(lines) + "\n\n" + LEGEND + "\n"
    excluded = excluded_lines(runs)
    if excluded:
        out += "\nNot in the statistics:\n" + "".join(f"- {line}\n" for line in excluded)
    return out


def render_csv(configs: list[Config]) -> str:
    import csv
    import io

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for c in configs:
        s = {**c.stats, "noise": c.noise, "factor": c.factor, "config": c.extra}
        w.writerow(["" if s[k] is None or (isinstance(s[k], float) and math.isnan(s[k])) else s[k]
                    for k in CSV_COLUMNS])
    return buf.getvalue()


def render_json(configs: list[Config], runs: list[Run]) -> str:
    def clean(v):
        return None if isinstance(v, float) and math.isnan(v) else v

    return json.dumps({
        "configs": [{"noise": c.noise, "factor": c.factor, "config": c.extra,
                     **{k: clean(v) for k, v in c.stats.items()},
                     "runs": [{"path": str(r.path), "seed": r.seed, "val_loss": r.final["val_loss"],
                               "best_val_loss": r.best_val} for r in c.runs]} for c in configs],
        "excluded": [{"path": str(r.path), "state": r.state, "error": r.error} for r in runs
                     if r.state != "completed"],
    }, indent=2) + "\n"


def rich_table(configs: list[Config], runs: list[Run]):
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
        table.add_row(*r, style=style)
    parts = [table, Text(LEGEND, style="dim")]
    excluded = excluded_lines(runs)
    if excluded:
        parts.append(Text("Not in the statistics:\n" + "\n".join("  " + e for e in excluded)))
    return Group(*parts)


# --------------------------------------------------------------------------- plots and html


def plots(configs: list[Config]) -> dict[str, str]:
    """Two PNGs as base64: val loss against factor per kind (error bars), and loss curves."""
    import base64
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = {}
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for c in configs:
        if c.noise == "none":
            m, s = c.stats["val_loss_mean"], c.stats["val_loss_std"]
            ax.axhline(m, color="black", linestyle="--", label=f"none{' ' + c.extra if c.extra else ''}")
            if not math.isnan(s):
                ax.axhspan(m - s, m + s, color="black", alpha=0.08)
    kinds: dict[str, list[Config]] = {}
    for c in configs:
        if c.noise != "none":
            kinds.setdefault(f"{c.noise}{' ' + c.extra if c.extra else ''}", []).append(c)
    for label, cs in kinds.items():
        cs = sorted(cs, key=lambda c: _num(c.factor))
        ax.errorbar([_num(c.factor) for c in cs], [c.stats["val_loss_mean"] for c in cs],
                    yerr=[0 if math.isnan(c.stats["val_loss_std"]) else c.stats["val_loss_std"] for c in cs],
                    marker="o", capsize=3, label=label)
    ax.set_xscale("symlog", linthresh=0.01)
    ax.set_xlabel("noise factor")
    ax.set_ylabel("final val loss (mean ± std over seeds)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    out["factor"] = _png(fig, plt, base64, io)

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for c in configs:
        steps = [r["step"] for r in c.runs[0].rows]
        curves = [[row["val_loss"] for row in r.rows] for r in c.runs if len(r.rows) == len(steps)]
        mean = [statistics.fmean(v) for v in zip(*curves)]
        line, = ax.plot(steps, mean, label=c.label, linewidth=2.2 if c.noise == "none" else 1.2)
        train = [[row["clean_train_loss"] for row in r.rows] for r in c.runs if len(r.rows) == len(steps)]
        ax.plot(steps, [statistics.fmean(v) for v in zip(*train)], color=line.get_color(), linestyle=":",
                linewidth=1)
    ax.set_xlabel("step")
    ax.set_ylabel("val loss (solid), clean train loss (dotted)")
    ax.set_yscale("log")
    ax.legend(fontsize=7, ncol=2)
    ax.grid(alpha=0.3)
    out["curves"] = _png(fig, plt, base64, io)
    return out


def _png(fig, plt, base64, io) -> str:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def render_html(configs: list[Config], runs: list[Run], title: str) -> str:
    from html import escape

    header, rows = table_rows(configs)
    images = plots(configs) if configs else {}
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join(
        f"<tr class='{'best' if c.stats['best_overall'] else ('kind' if c.stats['best_in_kind'] else '')}'>"
        + "".join(f"<td>{escape(x)}</td>" for x in r) + "</tr>" for c, r in zip(configs, rows))
    excluded = "".join(f"<li>{escape(e)}</li>" for e in excluded_lines(runs))
    imgs = "".join(f"<figure><img alt='{k}' src='data:image/png;base64,{v}'></figure>" for k, v in images.items())
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; font-variant-numeric: tabular-nums; }}
td, th {{ border: 1px solid #ccc; padding: 4px 8px; text-align: right; }}
td:first-child, th:first-child {{ text-align: left; }}
tr.best {{ background: #d9f2d9; font-weight: bold; }} tr.kind {{ font-weight: bold; }}
p.legend {{ color: #555; max-width: 60em; }} figure {{ display: inline-block; margin: 1em 1em 0 0; }}
</style></head><body>
<h1>{escape(title)}</h1>
<table><tr>{head}</tr>{body}</table>
<p class="legend">{escape(LEGEND)}</p>
{f'<h2>Not in the statistics</h2><ul>{excluded}</ul>' if excluded else ''}
{imgs}
</body></html>
"""


def render_single(run: Run, fmt: str):
    """One run: its per-evaluation table."""
    from noisecli.display import metrics_table

    if run.state == "unreadable":
        raise SpecError(f"report: {run.path}: unreadable run ({run.error})")
    status = f"{run.path}: {run.state}{' (' + run.error + ')' if run.error else ''}"
    if fmt == "json":
        return json.dumps({"path": str(run.path), "state": run.state, "rows": run.rows}, indent=2) + "\n"
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
        lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        lines += ["| " + " | ".join(_f(r.get(c), ".4g") if isinstance(r.get(c), float) else str(r.get(c, "-"))
                                    for c in cols) + " |" for r in run.rows]
        return status + "\n\n" + "\n".join(lines) + "\n"
    return metrics_table(run.rows, title=status)


def build(dirs: list[Path]) -> tuple[list[Config], list[Run]]:
    runs = find_runs(dirs)
    configs = group(runs)
    analyze(configs)
    return configs, runs

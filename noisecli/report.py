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

CSV_COLUMNS = ["noise", "factor", "n", "val_loss_mean", "val_loss_std", "best_val_loss_mean", "best_val_loss_std",
               "clean_train_loss_mean", "gap_mean", "val_acc_mean", "delta_vs_none", "delta_ci_low",
               "delta_ci_high", "paired", "p_value", "p_adjusted", "significant", "delta_best_vs_none",
               "delta_best_ci_low", "delta_best_ci_high", "best_p_value", "best_p_adjusted", "best_significant",
               "best_in_kind", "best_overall", "config"]
ALPHA = 0.05  # intervals are 95 %; a comparison is significant where its Holm-adjusted p is below this


def t975(df: float) -> float:
    """The 0.975 quantile of Student's t with `df` (possibly fractional) degrees of freedom."""
    if math.isnan(df) or df <= 0:
        return math.nan
    from scipy.stats import t

    return float(t.ppf(1 - ALPHA / 2, df))


def _two_sided_p(mean: float, se: float, df: float) -> float:
    """The two-sided p of a t statistic mean/se; with no spread at all, 0 for a nonzero mean, 1 for zero."""
    if se == 0:
        return 1.0 if mean == 0 else 0.0
    from scipy.stats import t

    return float(2 * t.sf(abs(mean / se), df))


@dataclass
class Run:
    path: Path
    state: str
    spec: dict
    rows: list[dict]
    error: str | None = None
    updated: str = ""  # status.json's time stamp: of two runs of one seed, the newer is counted

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
    return Run(path, state, spec, rows, status.get("error"), str(status.get("updated", "")))


def find_runs(dirs: list[Path]) -> list[Run]:
    runs, missing, seen, named = [], [], set(), set()
    for d in dirs:
        d = Path(d)
        if not d.is_dir():
            missing.append(f"report: {d}: no such folder")
            continue
        if d.resolve() in named:  # the same folder named twice counts once
            continue
        named.add(d.resolve())
        found = []
        for root, subdirs, files in os.walk(d):
            if Path(root).resolve() in seen:  # the same folder named twice (runs and runs/sweep)
                subdirs[:] = []
                continue
            subdirs[:] = sorted(s for s in subdirs if not s.startswith("."))  # .archive holds old runs
            if "status.json" in files:
                seen.add(Path(root).resolve())
                found.append(_read_run(Path(root)))
                subdirs[:] = []
        if not found and not any(Path(r.path).resolve().is_relative_to(d.resolve()) for r in runs):
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
    """Completed runs grouped into configurations. Within a configuration each seed counts once:
    a copied run folder, or the same settings and seed trained under two names, would otherwise
    count twice and shrink the spread; the newer run is kept and the other marked 'duplicate'."""
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
        by_seed: dict[int, Run] = {}
        for run in sorted(c.runs, key=lambda r: (r.updated, _mtime(r.path), str(r.path))):
            if run.seed in by_seed:
                older = by_seed[run.seed]
                older.state, older.error = "duplicate", f"seed {run.seed} of {c.label} again; {run.path} is newer and counted"
            by_seed[run.seed] = run
        c.runs = sorted(by_seed.values(), key=lambda r: r.seed)
    return sorted(out, key=lambda c: (c.extra, c.noise != "none", c.noise, _num(c.factor)))


def _mtime(path: Path) -> float:
    try:
        return (path / "status.json").stat().st_mtime
    except OSError:
        return 0.0


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


@dataclass
class Comparison:
    """A configuration against its baseline: the difference of means, its 95 % t-interval and
    the p of the same test (paired t where the seeds match, Welch's t otherwise)."""

    delta: float
    low: float
    high: float
    paired: bool
    p: float


def delta_ci(cfg: dict[int, float], none: dict[int, float]) -> Comparison:
    """cfg minus none in mean value, keyed by seed."""
    common = sorted(set(cfg) & set(none))
    if len(common) >= 2 and len(common) == len(cfg) == len(none):
        diffs = [cfg[s] - none[s] for s in common]
        mean, sd = statistics.fmean(diffs), statistics.stdev(diffs)
        se, df = sd / math.sqrt(len(diffs)), len(diffs) - 1
        half = t975(df) * se
        return Comparison(mean, mean - half, mean + half, True, _two_sided_p(mean, se, df))
    a, b = list(cfg.values()), list(none.values())
    delta = statistics.fmean(a) - statistics.fmean(b)
    if len(a) < 2 or len(b) < 2:
        return Comparison(delta, math.nan, math.nan, False, math.nan)
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    if va + vb == 0:
        return Comparison(delta, delta, delta, False, _two_sided_p(delta, 0.0, 1))
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))  # Welch-Satterthwaite
    se = math.sqrt(va + vb)
    half = t975(df) * se
    return Comparison(delta, delta - half, delta + half, False, _two_sided_p(delta, se, df))


def holm(pvalues: list[float]) -> list[float]:
    """Holm's step-down adjustment (controls the family-wise error rate); NaN stays NaN."""
    order = sorted((p, i) for i, p in enumerate(pvalues) if not math.isnan(p))
    m, running = len(order), 0.0
    adjusted = [math.nan] * len(pvalues)
    for rank, (p, i) in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[i] = running
    return adjusted


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
            "p_value": None, "p_adjusted": None, "significant": None, "delta_best_vs_none": None,
            "delta_best_ci_low": None, "delta_best_ci_high": None, "best_p_value": None,
            "best_p_adjusted": None, "best_significant": None,
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
        final = delta_ci({r.seed: r.final["val_loss"] for r in c.runs},
                         {r.seed: r.final["val_loss"] for r in none.runs})
        c.stats.update(delta_vs_none=final.delta, delta_ci_low=final.low, delta_ci_high=final.high,
                       paired=final.paired, p_value=final.p)
        # the same for each run's best val loss: does the noise reach a better optimum, or
        # only hold on to it longer (what early stopping would also buy)?
        best = delta_ci({r.seed: r.best_val for r in c.runs}, {r.seed: r.best_val for r in none.runs})
        c.stats.update(delta_best_vs_none=best.delta, delta_best_ci_low=best.low, delta_best_ci_high=best.high,
                       best_p_value=best.p)
    # Holm within each baseline's family of comparisons, separately for final and best val loss:
    # a grid of 28 configurations at 95 % would otherwise star about 1.4 of them by chance
    for base in nones:
        family = [c for c in configs if c.base == base and c.stats["p_value"] is not None]
        for p_key, adj_key, mark in (("p_value", "p_adjusted", "significant"),
                                     ("best_p_value", "best_p_adjusted", "best_significant")):
            for c, adj in zip(family, holm([c.stats[p_key] for c in family])):
                c.stats[adj_key] = adj
                c.stats[mark] = None if math.isnan(adj) else adj < ALPHA
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
    lines = [f"{r.path}: {r.state}{': ' + r.error if r.error else ''}" for r in runs if r.state != "completed"]
    dups = sum(r.state == "duplicate" for r in runs)
    if dups:
        lines.insert(0, f"{dups} duplicate run{'s' if dups > 1 else ''} set aside (each seed counts once per "
                        "configuration)")
    return lines


LEGEND = ("val loss: final validation loss, mean ± std over seeds (each seed counted once). "
          "gap: val - clean train loss. "
          "Δ vs none: difference in mean final val loss against the no-noise configuration of the same base "
          "('none', else a kind at factor 0, which trains exactly like none), "
          "with a plain 95 % t-interval (paired by seed where the seeds match, Welch's otherwise). "
          "* where the p of that test, Holm-adjusted over all comparisons against the same baseline, is below "
          "0.05 (so an interval may exclude 0 without a star when many configurations are compared). "
          "Δ best val: the same for each run's best val loss, which says whether the noise reached a better "
          "optimum or only held on to one longer (what early stopping also buys). "
          "best: lowest mean val loss overall, or for its noise kind.")


def render_markdown(configs: list[Config], runs: list[Run]) -> str:
    header, rows = table_rows(configs)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for c, r in zip(configs, rows):
        cells = []
        for x in r:
            star = x.endswith(" *")  # escaped and outside the bold: `***` is not read as the star by CommonMark
            x = x.removesuffix(" *")
            cells.append((f"**{x}**" if c.stats["best_overall"] and x else x) + (" \\*" if star else ""))
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
        "duplicates": sum(r.state == "duplicate" for r in runs),
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

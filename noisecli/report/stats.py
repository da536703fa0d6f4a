"""Reports, layer 2: statistics over configurations.

Each configuration is compared with the baseline of its base (its `none` configuration,
else one at factor 0): the difference of mean final val loss, and of mean best val loss,
with a plain 95 % t-interval, paired by seed where both have the same seeds, Welch's
otherwise, and the p of the same test. p values are Holm-adjusted over the comparisons
against one baseline; a comparison is significant where the adjusted p is below ALPHA. The
deciding metric (report/verdict.py) gets the same comparison, and decides which configuration
is best.

Only completed runs with finite losses are averaged (load sets the others aside); a
configuration whose every run diverged has n = 0, NaN means and no comparison, and is never
a baseline or the best.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field

from noisecli.report import verdict
from noisecli.report.baselines import NONE, describe, resolve
from noisecli.report.load import Config

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
    """cfg minus none in mean value, keyed by seed. Paired only where both have exactly the same
    seeds: pairing the shared seeds of partly overlapping sets would silently drop the others."""
    if not cfg or not none:
        return Comparison(math.nan, math.nan, math.nan, False, math.nan)
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


def analyze(configs: list[Config], metric: str | None = None, baselines: list[str] | None = None) -> Verdict:
    """Fill each configuration's `stats`: spread over seeds, comparisons against its baseline with
    Holm-adjusted p values (final and best val loss, and the deciding metric), and which
    configurations are best (overall and per kind) on the deciding metric; the verdict says how.
    With several `baselines` (report/baselines.py), each gets its own comparisons and Holm families
    in `by_baseline[name]`; `stats` is the first's."""
    decider = verdict.choose(configs, metric)
    names = list(dict.fromkeys(baselines or [NONE]))
    notes: list[str] = []
    described = []
    for i, name in enumerate(names):
        mapping = resolve(configs, name, decider.select, decider.higher_is_better)
        found = _against(configs, mapping, decider)
        notes = found if i == 0 else notes
        described.append(describe(name, mapping))
        for c in configs:
            c.by_baseline[name] = c.stats
    for c in configs:
        c.stats = c.by_baseline[names[0]]
    return Verdict(decider, notes, names, described)


def _against(configs: list[Config], mapping: dict[str, Config], decider: verdict.Decider) -> list[str]:
    """One baseline's pass: each configuration's stats against mapping[its key]; the crowning notes."""
    for c in configs:
        c.stats = _summary(c, decider)
    for b in mapping.values():
        b.stats["baseline"] = True
    for c in configs:
        none = mapping.get(c.key)
        if none is not None:
            c.stats["vs"], c.stats["vs_key"] = none.label, none.key
        if none is not None and none is not c and c.runs:
            c.stats.update(_comparisons(c, none, decider))
    # Holm within each baseline's family of comparisons, separately for each compared quantity:
    # a grid of 28 configurations at 95 % would otherwise star about 1.4 of them by chance
    for family in _families(configs, mapping, lambda c: c.stats["p_value"] is not None):
        for p_key, adj_key, mark in (("p_value", "p_adjusted", "significant"),
                                     ("best_p_value", "best_p_adjusted", "best_significant"),
                                     ("metric_p_value", "metric_p_adjusted", "metric_significant"),
                                     ("select_p_value", "select_p_adjusted", "select_significant")):
            for c, adj in zip(family, holm([c.stats[p_key] for c in family])):
                c.stats[adj_key] = adj
                c.stats[mark] = None if math.isnan(adj) else adj < ALPHA
    _other_metrics(configs, mapping)
    return verdict.mark_best(configs, decider)


def _families(configs: list[Config], mapping: dict[str, Config], member) -> list[list[Config]]:
    """The configurations compared with the same baseline configuration (and passing `member`)."""
    families: dict[str, list[Config]] = {}
    for c in configs:
        if c.key in mapping and member(c):
            families.setdefault(mapping[c.key].key, []).append(c)
    return list(families.values())


def _other_metrics(configs: list[Config], mapping: dict[str, Config]) -> None:
    """Every metric final.json holds at the selected checkpoint (test_*, robust_test_*, sharpness)
    beside the deciding one: mean, spread and the difference against the baseline with its
    interval and Holm-adjusted p (a family per metric and baseline), in `stats["metrics"]`."""
    names = sorted({k for c in configs for r in c.runs for k in (r.selected or {})
                    if k.startswith(("test_", "robust_")) or k == verdict.SHARPNESS})
    for c in configs:
        c.stats["metrics"] = {}
        for name in names:
            values = {r.seed: verdict.run_value(r, name) for r in c.runs}
            if not values or None in values.values():
                continue
            mean, std = _mean_std(list(values.values()))
            entry = {"mean": mean, "std": std, "delta": None, "low": None, "high": None, "p_value": None,
                     "p_adjusted": None, "significant": None}
            none = mapping.get(c.key)
            if none is not None and none is not c and all(verdict.run_value(r, name) is not None for r in none.runs):
                d = delta_ci(values, {r.seed: verdict.run_value(r, name) for r in none.runs})
                entry.update(delta=d.delta, low=d.low, high=d.high, p_value=d.p)
            c.stats["metrics"][name] = entry
    for name in names:
        has_p = lambda c: c.stats["metrics"].get(name, {}).get("p_value") is not None  # noqa: E731
        for family in _families(configs, mapping, has_p):
            for c, adj in zip(family, holm([c.stats["metrics"][name]["p_value"] for c in family])):
                c.stats["metrics"][name].update(p_adjusted=adj, significant=None if math.isnan(adj) else adj < ALPHA)


@dataclass
class Verdict:
    decider: verdict.Decider
    notes: list[str]  # where the never-crown-the-worse rule changed a pick
    baselines: list[str] = field(default_factory=lambda: [NONE])  # as --baseline named them, the first decides
    described: list[str] = field(default_factory=list)  # each as the verdict names it: best-classical (dropout 0.2)

    def first_line(self) -> str:
        against = "" if self.baselines == [NONE] else \
            f"; compared with {' and with '.join(self.described or self.baselines)}"
        return self.decider.describe() + against


def _summary(c: Config, decider: verdict.Decider) -> dict:
    finals = [r.final for r in c.runs]
    mm, ms = _mean_std([verdict.run_value(r, decider.metric) for r in c.runs])
    vm, vs = _mean_std([r["val_loss"] for r in finals])
    bm, bs = _mean_std([r.best_val for r in c.runs])
    accs = [r["val_acc"] for r in finals if "val_acc" in r]
    return {
        "n": len(c.runs), "n_diverged": len(c.diverged), "val_loss_mean": vm, "val_loss_std": vs,
        "best_val_loss_mean": bm, "best_val_loss_std": bs,
        "clean_train_loss_mean": _mean_std([r["clean_train_loss"] for r in finals])[0],
        "gap_mean": _mean_std([r["val_loss"] - r["clean_train_loss"] for r in finals])[0],
        "val_acc_mean": _mean_std(accs)[0] if accs else None,
        "delta_vs_none": None, "delta_ci_low": None, "delta_ci_high": None, "paired": None,
        "p_value": None, "p_adjusted": None, "significant": None, "delta_best_vs_none": None,
        "delta_best_ci_low": None, "delta_best_ci_high": None, "best_p_value": None,
        "best_p_adjusted": None, "best_significant": None,
        "best_in_kind": False, "best_overall": False, "baseline": False,
        "metric": decider.metric, "metric_mean": mm, "metric_std": ms,
        "select_mean": _mean_std([verdict.run_value(r, decider.select) for r in c.runs])[0],
        "delta_metric": None, "delta_metric_ci_low": None, "delta_metric_ci_high": None,
        "metric_p_value": None, "metric_p_adjusted": None, "metric_significant": None,
        "delta_select": None, "select_p_value": None, "select_p_adjusted": None, "select_significant": None,
    }


def _comparisons(c: Config, none: Config, decider: verdict.Decider) -> dict:
    final = delta_ci({r.seed: r.final["val_loss"] for r in c.runs}, {r.seed: r.final["val_loss"] for r in none.runs})
    # the same for each run's best val loss: does the noise reach a better optimum, or only
    # hold on to it longer (what early stopping would also buy)?
    best = delta_ci({r.seed: r.best_val for r in c.runs}, {r.seed: r.best_val for r in none.runs})
    value = lambda r: verdict.run_value(r, decider.metric)  # noqa: E731
    m = delta_ci({r.seed: value(r) for r in c.runs}, {r.seed: value(r) for r in none.runs})
    chosen_on = lambda r: verdict.run_value(r, decider.select)  # noqa: E731
    sel = delta_ci({r.seed: chosen_on(r) for r in c.runs}, {r.seed: chosen_on(r) for r in none.runs})
    return {"delta_vs_none": final.delta, "delta_ci_low": final.low, "delta_ci_high": final.high,
            "paired": final.paired, "p_value": final.p, "delta_best_vs_none": best.delta,
            "delta_best_ci_low": best.low, "delta_best_ci_high": best.high, "best_p_value": best.p,
            "delta_metric": m.delta, "delta_metric_ci_low": m.low, "delta_metric_ci_high": m.high,
            "metric_p_value": m.p, "delta_select": sel.delta, "select_p_value": sel.p}

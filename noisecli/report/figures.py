"""The report's figures, drawn once: the html page embeds them as PNGs, `report --figures DIR`
writes each as its own file (svg, pdf or png) for a paper.

One colour per configuration everywhere (table swatch, every figure), `none` always grey;
small multiples, one panel per noise kind, each with `none` as a reference band; mean and
spread over seeds; the swept factors as the x ticks; axes scaled to the data.

  factor      final and best val loss against the factor
  curves      val loss during training
  metrics     a panel per metric family at the selected checkpoint: accuracy (or fit, for
              regression), calibration, sharpness; one row per configuration
  robustness  the robustness curve per configuration: the test metric at each perturbation level
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path

from noisecli.report.load import Config, factor_value
from noisecli.runs import atomic_write

NONE_COLOUR = "#555555"
PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2", "#bcbd22",
           "#7f7f7f"]
FORMATS = ("svg", "pdf", "png")

# (family, column) in panel order: what the metrics figure shows where final.json holds it
FAMILY_METRICS = (("accuracy", "test_acc"), ("accuracy", "test_f1"), ("fit", "test_r2"), ("fit", "test_mae"),
                  ("calibration", "test_ece"), ("calibration", "test_brier"), ("flatness", "sharpness"))
HIGHER_IS_BETTER = {"test_acc", "test_f1", "test_r2"}

CAPTIONS = {
    "factor": "Final (filled, left) and best (hollow, right) validation loss against the noise factor, one panel "
              "per noise kind; mean ± std over seeds. Grey: the no-noise baseline, its final val loss (line and "
              "band, mean ± std) and its best (dashed). Colours match the table.",
    "curves": "Validation loss during training, mean over seeds with ± std bands, one panel per noise kind; "
              "grey: the no-noise baseline in every panel. The y axis spans the curves from a quarter of "
              "training on; earlier values run off the top.",
    "metrics": "Each metric family at the selected checkpoint (best val loss), on the test split: one row per "
               "configuration, mean ± std over seeds; grey line and band: the baseline; dotted lines: the "
               "other baselines (--baseline). The arrow in each title says which way is better.",
    "robustness": "Robustness curves: the test metric at the selected checkpoint with the test inputs perturbed "
                  "at each level (eval.robustness), mean over seeds, one panel per noise kind; grey: the "
                  "baseline. Level 0 is the clean test split; robust_test_* is the mean over the levels.",
}


def colours(configs: list[Config]) -> dict[str, str]:
    """A colour per configuration key: grey for a baseline, the palette in table order for the rest."""
    out, i = {}, 0
    for c in configs:
        if c.noise == "none" or c.stats.get("baseline"):
            out[c.key] = NONE_COLOUR
        else:
            out[c.key] = PALETTE[i % len(PALETTE)]
            i += 1
    return out


def _panels(configs: list[Config]) -> dict[str, list[Config]]:
    """The noisy configurations grouped by kind (and by what else differs), in table order; one
    with no runs (every seed diverged) has nothing to plot, and stays a table row."""
    panels: dict[str, list[Config]] = {}
    for c in configs:
        if c.noise != "none" and not c.stats.get("baseline") and c.runs:
            title = c.noise + (f" ({c.extra})" if c.extra and "noise." not in c.extra else "")
            panels.setdefault(_plain(title), []).append(c)
    return panels


def _plain(text: str) -> str:
    """Text from run folders as matplotlib should draw it: a `$` would start mathtext (and a
    malformed formula raises when the figure is drawn)."""
    return text.replace("$", r"\$")


def _baseline_for(c: Config, configs: list[Config]) -> Config | None:
    """The configuration the statistics compared `c` with (the deciding --baseline's)."""
    return next((b for b in configs if b.key == c.stats.get("vs_key")), None)


def _short_label(c: Config) -> str:
    """'none', or the factor (and a varying noise option) within a kind's panel."""
    if c.noise == "none" or c.stats.get("baseline"):
        return "none"
    option = " ".join(part.split(".")[-1] for part in c.extra.split() if part.startswith("noise."))
    return f"{c.factor}{' ' + option if option else ''}"


def _mean_curve(c: Config, key: str) -> tuple[list[int], list[float], list[float]]:
    steps = [r["step"] for r in c.runs[0].rows]
    curves = [[row[key] for row in r.rows] for r in c.runs if [x["step"] for x in r.rows] == steps]
    return steps, *_mean_std_lists(curves)


def _mean_std_lists(curves: list[list[float]]) -> tuple[list[float], list[float]]:
    mean = [statistics.fmean(v) for v in zip(*curves)]
    std = [statistics.stdev(v) if len(v) > 1 else 0.0 for v in zip(*curves)]
    return mean, std


def draw(configs: list[Config]) -> dict[str, object]:
    """name -> matplotlib figure, for every view the runs hold data for (none without noisy runs)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = _panels(configs)
    if not panels:
        return {}
    out = {"factor": _factor_figure(plt, panels, configs), "curves": _curves_figure(plt, panels, configs)}
    metrics = [(family, name) for family, name in FAMILY_METRICS
               if any(name in c.stats.get("metrics", {}) for c in configs)]
    if metrics:
        out["metrics"] = _metrics_figure(plt, metrics, configs)
    curve_key = _robustness_key(configs)
    if curve_key is not None:
        out["robustness"] = _robustness_figure(plt, panels, configs, curve_key)
    return out


def _grid(plt, n: int, sharey: bool = True):
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.3 * rows), sharey=sharey, squeeze=False)
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    return fig, axes


def _factor_figure(plt, panels: dict[str, list[Config]], configs: list[Config]):
    """Final (filled) and best (hollow) val loss against the swept factors, equally spaced; the two
    side by side, so that a final equal to the best stays visible."""
    colour = colours(configs)
    fig, axes = _grid(plt, len(panels))
    for ax, (title, cs) in zip(axes.flat, panels.items()):
        base = _baseline_for(cs[0], configs)
        if base is not None:
            _reference(ax, base.stats["val_loss_mean"], base.stats["val_loss_std"], "h")
            ax.axhline(base.stats["best_val_loss_mean"], color=NONE_COLOUR, linewidth=1, linestyle="--")
        factors = sorted({factor_value(c.factor) for c in cs})
        positions = {f: i for i, f in enumerate(factors)}  # the swept values are the ticks
        for c in cs:
            x = positions[factor_value(c.factor)] + (0.08 * ("noise.length=padded" in c.extra))
            for key, filled, dx in (("val_loss", True, -0.09), ("best_val_loss", False, 0.09)):
                m, s = c.stats[f"{key}_mean"], c.stats[f"{key}_std"]
                ax.errorbar(x + dx, m, yerr=0 if math.isnan(s) else s, fmt="o", color=colour[c.key], capsize=3,
                            markerfacecolor=colour[c.key] if filled else "white", markersize=6)
        ax.set_xticks(range(len(factors)), [f"{f:g}" for f in factors])
        ax.set_xlim(-0.5, len(factors) - 0.5)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("factor", fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].set_ylabel("val loss")
    return fig


def _reference(ax, mean: float, std: float, direction: str) -> None:
    """The baseline as a grey line with a ± std band, horizontal ('h') or vertical ('v')."""
    line, span = (ax.axhline, ax.axhspan) if direction == "h" else (ax.axvline, ax.axvspan)
    line(mean, color=NONE_COLOUR, linewidth=1.2)
    if std is not None and not math.isnan(std):
        span(mean - std, mean + std, color=NONE_COLOUR, alpha=0.15, linewidth=0)


def _curves_figure(plt, panels: dict[str, list[Config]], configs: list[Config]):
    """Mean val loss over seeds with its spread, per configuration, the baseline in every panel."""
    colour = colours(configs)
    fig, axes = _grid(plt, len(panels))
    values = []
    for ax, (title, cs) in zip(axes.flat, panels.items()):
        base = _baseline_for(cs[0], configs)
        for c in ([base] if base is not None else []) + cs:
            steps, mean, std = _mean_curve(c, "val_loss")
            ax.plot(steps, mean, color=colour[c.key], linewidth=1.4, label=_plain(_short_label(c)))
            ax.fill_between(steps, [m - s for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)],
                            color=colour[c.key], alpha=0.15, linewidth=0)
            values += mean[len(mean) // 4:]  # the first quarter's descent would squeeze what matters
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, frameon=False)
    lo, hi = min(values), max(values)
    pad = 0.08 * (hi - lo or abs(hi) or 1)
    axes[0][0].set_ylim(lo - pad, hi + pad)
    axes[0][0].set_ylabel("val loss (mean ± std over seeds)")
    return fig


def _metrics_figure(plt, metrics: list[tuple[str, str]], configs: list[Config]):
    """A dot per configuration (mean ± std over seeds) for each metric at the selected checkpoint."""
    from matplotlib.ticker import MaxNLocator

    colour = colours(configs)
    shown = [c for c in configs if c.runs]
    # one row, the configurations' labels once on the left, as tall as the configurations need
    fig, axes = plt.subplots(1, len(metrics), figsize=(2.9 * len(metrics) + 0.06 * max(len(c.label) for c in shown),
                                                        1.4 + 0.24 * len(shown)), sharey=True, squeeze=False)
    for ax, (family, name) in zip(axes.flat, metrics):
        rows = [(i, c, c.stats["metrics"][name]) for i, c in enumerate(shown) if name in c.stats.get("metrics", {})]
        base = next((m for _, c, m in rows if c.stats.get("baseline")), None)
        if base is not None:
            _reference(ax, base["mean"], base["std"], "v")
        for label, mean in _other_references(configs, name):
            ax.axvline(mean, color=NONE_COLOUR, linestyle=":", linewidth=1.2, label=_plain(label))
        if ax.get_legend_handles_labels()[1]:
            ax.legend(fontsize=7, frameon=False)
        for i, c, m in rows:
            ax.errorbar(m["mean"], i, xerr=0 if math.isnan(m["std"]) else m["std"], fmt="o", color=colour[c.key],
                        capsize=3, markersize=6)
        ax.set_yticks(range(len(shown)), [_plain(c.label) for c in shown], fontsize=7)
        ax.set_ylim(len(shown) - 0.5, -0.5)  # table order, top to bottom
        ax.xaxis.set_major_locator(MaxNLocator(4))
        ax.tick_params(axis="x", labelsize=7)
        arrow = "↑ better" if name in HIGHER_IS_BETTER else "↓ better"
        ax.set_title(f"{family}:\n{name} ({arrow})", fontsize=9)
        ax.grid(axis="x", alpha=0.3)
    return fig


def _other_references(configs: list[Config], metric: str) -> list[tuple[str, float]]:
    """('best-classical: dropout 0.2', its mean) for each baseline after the deciding one."""
    names = list(configs[0].by_baseline)[1:] if configs else []
    by_key = {c.key: c for c in configs}
    out = []
    for name in names:
        keys = dict.fromkeys(c.by_baseline[name].get("vs_key") for c in configs)
        for b in (by_key[k] for k in keys if k in by_key):
            m = b.stats.get("metrics", {}).get(metric)
            if m is not None:
                out.append((f"{name}: {b.label}", m["mean"]))
    return out


def _robustness_key(configs: list[Config]) -> str | None:
    """The curve every plotted run holds: test accuracy where measured, else test loss."""
    curves = [r.curve for c in configs for r in c.runs if c.noise != "none" or c.stats.get("baseline")]
    for key in ("test_acc", "test_loss"):
        if curves and all(cv is not None and key in cv for cv in curves):
            return key
    return None


def _robustness_figure(plt, panels: dict[str, list[Config]], configs: list[Config], key: str):
    colour = colours(configs)
    fig, axes = _grid(plt, len(panels))
    for ax, (title, cs) in zip(axes.flat, panels.items()):
        base = _baseline_for(cs[0], configs)
        for c in ([base] if base is not None else []) + cs:
            levels = c.runs[0].curve["levels"]
            same = [r.curve[key] for r in c.runs if r.curve["levels"] == levels]
            mean, std = _mean_std_lists(same)
            ax.errorbar(levels, mean, yerr=std, color=colour[c.key], linewidth=1.4, marker="o", markersize=4,
                        capsize=2, label=_plain(_short_label(c)))
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("perturbation level", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, frameon=False)
    axes[0][0].set_ylabel(f"{key} (mean ± std over seeds)")
    return fig


def png_base64(fig) -> str:
    """The figure as a base64 PNG for the html page (110 dpi), and closed."""
    import base64
    import io

    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def write(configs: list[Config], folder: Path, fmt: str = "svg") -> list[Path]:
    """Each figure as its own file, FOLDER/<name>.<fmt> (png at 300 dpi); the paths written."""
    import io

    import matplotlib
    import matplotlib.pyplot as plt

    written = []
    for name, fig in draw(configs).items():
        buf = io.BytesIO()
        fig.tight_layout()
        with matplotlib.rc_context({"svg.hashsalt": "noisecli"}):  # svg ids from a fixed salt, not a random one
            fig.savefig(buf, format=fmt, dpi=300, metadata=_metadata(fmt))
        plt.close(fig)
        path = folder / f"{name}.{fmt}"
        atomic_write(path, buf.getvalue())  # a killed report leaves no half-written figure
        written.append(path)
    return written


def _metadata(fmt: str) -> dict:
    """No creation date in svg and pdf, so the same runs give the same bytes."""
    return {"Date": None} if fmt in ("svg", "pdf") else {}

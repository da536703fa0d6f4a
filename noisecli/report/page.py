"""The HTML report: a page for a paper's appendix.

One colour per configuration everywhere (table swatch, both figures), `none` always grey;
small multiples, one panel per noise kind, each with `none` as a reference band; mean and
spread over seeds; the swept factors as the x ticks; axes scaled to the data; captions;
the legend as prose.
"""

from __future__ import annotations

import math
import statistics
from html import escape

from noisecli.report.load import Config, Run, factor_value
from noisecli.report.render import LEGEND, excluded_lines, table_rows, verdict_lines

NONE_COLOUR = "#555555"
PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2", "#bcbd22",
           "#7f7f7f"]


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
    return next((b for b in configs if b.base == c.base and b.stats.get("baseline")), None)


def _short_label(c: Config) -> str:
    """'none', or the factor (and a varying noise option) within a kind's panel."""
    if c.noise == "none" or c.stats.get("baseline"):
        return "none"
    option = " ".join(part.split(".")[-1] for part in c.extra.split() if part.startswith("noise."))
    return f"{c.factor}{' ' + option if option else ''}"


def _mean_curve(c: Config, key: str) -> tuple[list[int], list[float], list[float]]:
    steps = [r["step"] for r in c.runs[0].rows]
    curves = [[row[key] for row in r.rows] for r in c.runs if [x["step"] for x in r.rows] == steps]
    mean = [statistics.fmean(v) for v in zip(*curves)]
    std = [statistics.stdev(v) if len(v) > 1 else 0.0 for v in zip(*curves)]
    return steps, mean, std


def figures(configs: list[Config]) -> dict[str, str]:
    """Two PNGs (base64): final and best val loss against the factor, and val-loss curves, both
    one panel per noise kind with `none` as the grey reference."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = _panels(configs)
    if not panels:
        return {}
    return {"factor": _factor_figure(plt, panels, configs), "curves": _curves_figure(plt, panels, configs)}


def _grid(plt, n: int):
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.3 * rows), sharey=True, squeeze=False)
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    return fig, axes


def _factor_figure(plt, panels: dict[str, list[Config]], configs: list[Config]) -> str:
    """Final (filled) and best (hollow) val loss against the swept factors, equally spaced."""
    colour = colours(configs)
    fig, axes = _grid(plt, len(panels))
    for ax, (title, cs) in zip(axes.flat, panels.items()):
        base = _baseline_for(cs[0], configs)
        if base is not None:
            m, s = base.stats["val_loss_mean"], base.stats["val_loss_std"]
            ax.axhline(m, color=NONE_COLOUR, linewidth=1.2)
            if not math.isnan(s):
                ax.axhspan(m - s, m + s, color=NONE_COLOUR, alpha=0.15, linewidth=0)
            ax.axhline(base.stats["best_val_loss_mean"], color=NONE_COLOUR, linewidth=1, linestyle="--")
        factors = sorted({factor_value(c.factor) for c in cs})
        positions = {f: i for i, f in enumerate(factors)}  # the swept values are the ticks
        for c in cs:
            x = positions[factor_value(c.factor)] + (0.08 * ("noise.length=padded" in c.extra))
            for key, filled in (("val_loss", True), ("best_val_loss", False)):
                m, s = c.stats[f"{key}_mean"], c.stats[f"{key}_std"]
                ax.errorbar(x, m, yerr=0 if math.isnan(s) else s, fmt="o", color=colour[c.key], capsize=3,
                            markerfacecolor=colour[c.key] if filled else "white", markersize=6)
        ax.set_xticks(range(len(factors)), [f"{f:g}" for f in factors])
        ax.set_xlim(-0.5, len(factors) - 0.5)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("factor", fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].set_ylabel("val loss")
    return _png(fig, plt)


def _curves_figure(plt, panels: dict[str, list[Config]], configs: list[Config]) -> str:
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
    return _png(fig, plt)


def _png(fig, plt) -> str:
    import base64
    import io

    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _cell(text: str) -> str:
    """A table value; an interval goes on its own line in a smaller, quieter font."""
    value, _, rest = text.partition(" [")
    if not rest:
        return escape(text)
    interval, _, star = rest.partition("]")
    star_html = "<span class='star'>*</span>" if star.strip() == "*" else ""
    return f"{escape(value)}{star_html}<br><span class='ci'>[{escape(interval)}]</span>"


def render_html(configs: list[Config], runs: list[Run], title: str, verdict=None) -> str:
    header, rows = table_rows(configs)
    colour = colours(configs)
    images = figures(configs) if configs else {}
    head = "<th></th>" + "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join(
        f"<tr class='{'best' if c.stats['best_overall'] else ''}'>"
        f"<td><span class='swatch' style='background:{colour[c.key]}'></span></td>"
        + "".join(f"<td>{_cell(x)}</td>" for x in r) + "</tr>" for c, r in zip(configs, rows))
    excluded = "".join(f"<li>{escape(e)}</li>" for e in excluded_lines(runs))
    legend = "".join(f"<p>{escape(part.strip())}.</p>" for part in LEGEND.rstrip(".").split(". ") if part.strip())
    captions = {
        "factor": "Final (filled) and best (hollow) validation loss against the noise factor, one panel per "
                  "noise kind; mean ± std over seeds. Grey: the no-noise baseline, its final val loss (line and "
                  "band, mean ± std) and its best (dashed). Colours match the table.",
        "curves": "Validation loss during training, mean over seeds with ± std bands, one panel per noise kind; "
                  "grey: the no-noise baseline in every panel. The y axis spans the curves from a quarter of "
                  "training on; earlier values run off the top.",
    }
    figs = "".join(f"<figure><img alt='{k}' src='data:image/png;base64,{v}'><figcaption>{captions[k]}"
                   "</figcaption></figure>" for k, v in images.items())
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1280px; padding: 0 1.5em; color: #222; }}
h1 {{ font-size: 1.4em; font-weight: 600; }} p.verdict {{ font-weight: 600; }}
caption {{ caption-side: bottom; color: #444; font-size: 0.85em; text-align: left; padding-top: 0.4em; }}
table {{ border-collapse: collapse; font-variant-numeric: tabular-nums; font-size: 0.9em; margin: 1em 0; }}
td, th {{ border-bottom: 1px solid #ddd; padding: 5px 9px; text-align: right; vertical-align: top; white-space: nowrap; }}
th {{ border-bottom: 2px solid #999; font-weight: 600; }}
td:nth-child(2), th:nth-child(2) {{ text-align: left; }}
tr.best td {{ background: #eef7ee; font-weight: 600; }}
span.ci {{ color: #777; font-size: 0.85em; font-weight: normal; }}
span.star {{ color: #b00; font-weight: 700; margin-left: 2px; }}
span.swatch {{ display: inline-block; width: 0.9em; height: 0.9em; border-radius: 2px; }}
div.legend {{ color: #444; font-size: 0.9em; max-width: 60em; }} div.legend p {{ margin: 0.3em 0; }}
figure {{ margin: 1.5em 0; }} figure img {{ max-width: 100%; }}
figcaption {{ color: #444; font-size: 0.9em; max-width: 60em; margin-top: 0.4em; }}
</style></head><body>
<h1>{escape(title)}</h1>
{"".join(f"<p class='verdict'>{escape(line)}</p>" for line in verdict_lines(verdict))}
<table><caption>{escape(verdict.first_line() if verdict else "")}</caption><tr>{head}</tr>{body}</table>
<div class="legend">{legend}</div>
{f'<h2>Not in the statistics</h2><ul>{excluded}</ul>' if excluded else ''}
{figs}
</body></html>
"""

"""The HTML report: a page for a paper's appendix: the verdict, the table with each
configuration's colour, the legend as prose, and every figure of report/figures.py with its
caption.
"""

from __future__ import annotations

from html import escape

from noisecli.report.figures import CAPTIONS, colours, draw, png_base64
from noisecli.report.load import Config, Run
from noisecli.report.render import LEGEND, excluded_lines, table_rows, verdict_lines


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
    images = {name: png_base64(fig) for name, fig in draw(configs).items()} if configs else {}
    head = "<th></th>" + "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join(
        f"<tr class='{'best' if c.stats['best_overall'] else ''}'>"
        f"<td><span class='swatch' style='background:{colour[c.key]}'></span></td>"
        + "".join(f"<td>{_cell(x)}</td>" for x in r) + "</tr>" for c, r in zip(configs, rows))
    excluded = "".join(f"<li>{escape(e)}</li>" for e in excluded_lines(runs))
    legend = "".join(f"<p>{escape(part.strip())}.</p>" for part in LEGEND.rstrip(".").split(". ") if part.strip())
    figs = "".join(f"<figure><img alt='{k}' src='data:image/png;base64,{v}'><figcaption>{CAPTIONS[k]}"
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

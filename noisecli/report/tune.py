"""Reports on a tune folder (runs/<tune>/, holding tune.json and trials.json): the verdict from the
confirmation runs alone (confirm/, the best of each kind and none retrained on fresh seeds,
reported as any sweep is), then the search: the best trial per kind, every trial against its
factor (pruned ones marked where they stopped), the optimization history (best so far) and
Optuna's parameter importances. Read from the files the tune wrote; no storage is opened.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any, Callable

from noisecli.errors import SpecError

TRIALS_JSON = "trials.json"


def is_tune_folder(path: Path) -> bool:
    return (Path(path) / "tune.json").is_file()


def load(tune_dir: Path) -> dict:
    try:
        data = json.loads((Path(tune_dir) / TRIALS_JSON).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SpecError(f"report: {tune_dir} is a tune that has no trials.json yet; run `noisecli tune` on its "
                        "spec") from None
    except (OSError, ValueError) as e:
        raise SpecError(f"report: {Path(tune_dir) / TRIALS_JSON}: unreadable ({e})") from None
    if not isinstance(data, dict) or not isinstance(data.get("trials"), list):
        raise SpecError(f"report: {Path(tune_dir) / TRIALS_JSON}: not a noisecli tune summary")
    return data


def _params(params: dict) -> str:
    return ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in params.items()) or "-"


def _value(v: Any) -> str:
    return f"{v:.4f}" if isinstance(v, (int, float)) else "-"


def _counts(data: dict) -> str:
    counts: dict[str, int] = {}
    for t in data["trials"]:
        if t["state"] != "retried":
            counts[t["state"]] = counts.get(t["state"], 0) + 1
    return ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "none yet"


def header_lines(data: dict) -> list[str]:
    better = "higher" if data["direction"] == "maximize" else "lower"
    spent = len({t["run"] for t in data["trials"]})
    budget = sum(s.get("budget") or 0 for s in data["studies"].values()) or data["trials_budget"]
    lines = [f"tune {data['name']}: {spent} of {budget} trials ({_counts(data)}) in "
             f"{len(data['studies'])} studies, one per kind; objective {data['objective']} on val ({better} is "
             f"better); pruner {data['pruner']['kind']}, sampler {data['sampler']['kind']}; storage {data['storage']}",
             "best per kind in the search (on val, over the search seeds: optimistic, the winner's curse; the "
             "confirmation runs decide):"]
    for kind, s in data["studies"].items():
        b = s.get("best")
        lines.append(f"  {kind:<15} {_params(b['params']) if b else '-':<28} {data['objective']} "
                     f"{_value(b['value']) if b else '-':<8} ({b['run'] if b else 'no completed trial'})")
        if s.get("importance"):
            lines.append(f"  {'':<15} importance (Optuna, fANOVA): " +
                         ", ".join(f"{k} {v:.2f}" for k, v in s["importance"].items()))
    return lines


def summary_text(tune_dir: Path) -> str:
    """What `noisecli tune` prints at its end."""
    data = load(tune_dir)
    lines = header_lines(data)
    confirm = Path(tune_dir) / "confirm"
    if data.get("confirm_seeds") and confirm.is_dir():
        lines.append(f"confirmed on fresh seeds {_seeds(data['confirm_seeds'])}: `noisecli report {tune_dir}` gives "
                     f"the verdict (on test, at each run's selected checkpoint) from those runs alone ({confirm})")
    elif data.get("confirm_seeds"):
        lines.append("not confirmed yet: the search has trials left (or none completed); run the same command again")
    else:
        lines.append(f"confirm is off: `noisecli report {Path(tune_dir) / 'trials'}` compares the trials themselves "
                     "(optimistic: the best of a search is biased upward)")
    return "\n".join(lines) + "\n"


def _seeds(seeds: list[int]) -> str:
    return f"{seeds[0]}-{seeds[-1]}" if seeds == list(range(seeds[0], seeds[-1] + 1)) and len(seeds) > 1 \
        else ", ".join(map(str, seeds))


def trial_rows(data: dict) -> list[list[str]]:
    """Every trial, by kind then factor (the objective against the factor), with the best so far
    in trial order (the optimization history) and where a pruned one stopped."""
    better = max if data["direction"] == "maximize" else min
    best_so_far: dict[str, float] = {}
    history: dict[tuple[str, int], str] = {}
    for t in sorted(data["trials"], key=lambda t: (t["kind"], t["number"])):
        if t["state"] == "complete" and t["value"] is not None:
            old = best_so_far.get(t["kind"])
            best_so_far[t["kind"]] = t["value"] if old is None else better(old, t["value"])
        history[(t["kind"], t["number"])] = _value(best_so_far.get(t["kind"]))
    rows = []
    for t in sorted(data["trials"], key=lambda t: (t["kind"], t["params"].get("factor") or 0, t["number"])):
        state = t["state"]
        if state == "pruned" and t.get("pruned_at"):
            state = f"pruned at step {t['pruned_at'].get('step')}"
        elif state in ("fail", "retried") and t.get("outcome"):
            state = f"{state}: {str(t['outcome'])[:60]}"
        rows.append([str(t["run"]), t["kind"], _params(t["params"]), state, _value(t["value"]),
                     history[(t["kind"], t["number"])]])
    return rows


COLUMNS = ["trial", "kind", "parameters", "state", "objective", "best so far"]


def status_lines(data: dict) -> str:
    """`tune --status` and the plain table: one line per trial."""
    rows = trial_rows(data)
    widths = [max(len(r[i]) for r in rows + [COLUMNS]) for i in range(len(COLUMNS))]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    out = header_lines(data)[:1] + [fmt.format(*COLUMNS)] + [fmt.format(*r) for r in rows]
    return "\n".join(line.rstrip() for line in out) + "\n"


def search_markdown(data: dict) -> str:
    esc = lambda s: s.replace("|", "\\|").replace("_", "\\_")  # noqa: E731
    head = [f"- {esc(line.strip())}" if line.startswith("  ") else f"\n{esc(line)}\n" for line in header_lines(data)]
    lines = ["## The search", *head, "", "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(esc(c) for c in r) + " |" for r in trial_rows(data)]
    return "\n".join(lines) + "\n"


def search_html(data: dict) -> str:
    head = "".join(f"<p>{html.escape(line)}</p>" for line in header_lines(data))
    rows = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in trial_rows(data))
    cols = "".join(f"<th>{c}</th>" for c in COLUMNS)
    figure = search_figure(data)
    img = (f'<figure><img alt="the objective against the factor per kind, and the best so far by trial" '
           f'src="data:image/png;base64,{figure}"><figcaption>Top: every trial\'s objective against its factor, '
           f'one panel per kind (x: a pruned trial, at the value it was stopped with). Bottom: the best '
           f'objective so far, by trial number (the optimization history).</figcaption></figure>') if figure else ""
    return f"<section><h2>The search</h2>{head}{img}<table><tr>{cols}</tr>{rows}</table></section>"


def search_figure(data: dict) -> str | None:
    """The search as one figure (base64 PNG): per kind, the objective against the factor (pruned
    trials at the value they were stopped with) over the best so far by trial number."""
    by_kind: dict[str, list[dict]] = {}
    for t in data["trials"]:
        if isinstance(t["params"].get("factor"), (int, float)):
            by_kind.setdefault(t["kind"], []).append(t)
    if not by_kind:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    from noisecli.report.figures import png_base64  # the page's PNG settings

    better = max if data["direction"] == "maximize" else min
    fig, axes = plt.subplots(2, len(by_kind), figsize=(3.2 * len(by_kind), 5.2), squeeze=False)
    for i, (kind, trials) in enumerate(sorted(by_kind.items())):
        top, bottom = axes[0][i], axes[1][i]
        for state, marker in (("complete", "o"), ("pruned", "x")):
            points = [(t["params"]["factor"], t["value"] if t["value"] is not None else (t.get("pruned_at") or {})
                       .get("value")) for t in trials if t["state"] == state]
            points = [(f, v) for f, v in points if isinstance(v, (int, float))]
            if points:
                top.scatter(*zip(*points), marker=marker, label=state, alpha=0.8)
        if all(t["params"]["factor"] > 0 for t in trials):
            top.set_xscale("log")
        top.set_title(kind)
        top.set_xlabel("factor")
        done = sorted((t["number"], t["value"]) for t in trials if t["state"] == "complete" and t["value"] is not None)
        if done:
            best = [done[0][1]]
            for _, v in done[1:]:
                best.append(better(best[-1], v))
            bottom.step([n for n, _ in done], best, where="post")
        bottom.set_xlabel("trial")
        bottom.xaxis.set_major_locator(MaxNLocator(integer=True))
        for ax in (top, bottom):
            ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(data.get("objective", "objective"))
    axes[1][0].set_ylabel("best so far")
    axes[0][0].legend(fontsize=7, frameon=False)
    return png_base64(fig)


def _what(tune_dir: Path, data: dict) -> tuple[Path, str]:
    """The folder the verdict comes from, and the line that says which."""
    confirm = Path(tune_dir) / "confirm"
    if confirm.is_dir() and any((p / "status.json").exists() for p in confirm.iterdir()):
        return confirm, (f"The verdict comes from the confirmation runs alone ({confirm}): the best trial of each "
                         f"kind and none retrained on fresh seeds {_seeds(data.get('confirm_seeds') or [])}; the "
                         "search's own numbers are optimistic (the winner's curse).")
    return Path(tune_dir) / "trials", ("No confirmation runs yet: the comparison below is of the search's trials "
                                       "themselves, optimistically biased (the best of a search is biased upward).")


def render(tune_dir: Path, fmt: str, title: str, render_dirs: Callable, **kwargs):
    """`noisecli report TUNE_DIR`: the confirmed verdict (through the ordinary report), then the search."""
    data = load(tune_dir)
    source, said = _what(tune_dir, data)
    body = render_dirs([source], fmt, title, **kwargs)
    if fmt == "csv":
        return body
    if fmt == "json":
        return json.dumps({"verdict_from": str(source), "note": said, "confirmed": json.loads(body),
                           "search": data}, indent=2, default=str) + "\n"
    if fmt == "md":
        return f"{said}\n\n{body.rstrip()}\n\n{search_markdown(data)}"
    if fmt == "html":
        return body.replace("</body>", f"<p>{html.escape(said)}</p>{search_html(data)}</body>", 1)
    from rich.console import Group
    from rich.text import Text

    return Group(Text(said), body, Text(""), Text(status_lines(data)))

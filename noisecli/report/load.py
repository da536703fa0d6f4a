"""Reports, layer 1: run folders read into runs, and runs grouped into configurations.

Runs that differ only by seed form a configuration (the key is `spec.canonical` without the
seed); within a configuration each seed counts once. Runs that are not completed are kept,
with their state, to be listed, never averaged.

A folder that cannot be read (a damaged or foreign status.json, metrics.jsonl or spec.yaml) is
an 'unreadable' run naming the file and why, never a failed report. A completed run with a NaN
or inf loss is 'not finite': listed, not averaged, and counted with its configuration's
diverged runs (`Config.diverged`), so that a noise that blows up two seeds of three is not
judged on the one that survived.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from noisecli.errors import BadInput, SpecError
from noisecli.regularizers import label_part, regularizer_of
from noisecli.runs import RunFolder
from noisecli.spec import canonical, flatten, noise_entries, noise_parts, read_saved_spec


@dataclass
class Run:
    path: Path
    state: str
    spec: dict
    rows: list[dict]
    error: str | None = None
    updated: str = ""  # status.json's time stamp: of two runs of one seed, the newer is counted
    selected: dict | None = None  # final.json's selected checkpoint: its step, val and test metrics
    task: str | None = None  # final.json's: classification, regression, lm or sft
    curve: dict | None = None  # final.json's robustness curve at the selected checkpoint: {levels, test_acc: [...]}

    @property
    def seed(self) -> int:
        return self.spec.get("seed", 0)

    @property
    def final(self) -> dict:
        return self.rows[-1]

    @property
    def best_val(self) -> float:
        return min(r["val_loss"] for r in self.rows)


NOT_FINITE = "not finite"  # a completed run with a NaN or inf loss
SET_ASIDE = ("diverged", NOT_FINITE)  # runs of a configuration that count against it, not in its means


def _read_run(path: Path) -> Run:
    """One run folder, read through RunFolder; a damaged or foreign file makes the run
    'unreadable' with the file and the reason, not a failed report."""
    folder = RunFolder(path)
    try:
        status = folder.read_status()
    except BadInput as e:
        return _unreadable(path, e.problems[0])
    try:
        rows = folder.read_metrics()
    except BadInput as e:
        return _unreadable(path, e.problems[0])
    except (OSError, ValueError) as e:  # not UTF-8, or a folder where the file should be
        return _unreadable(path, f"{path / 'metrics.jsonl'}: unreadable ({type(e).__name__}: "
                                 f"{str(e).splitlines()[0][:120]})")
    spec = read_saved_spec(path / "spec.yaml")
    if spec is None:
        return _unreadable(path, f"{path / 'spec.yaml'}: missing or unreadable")
    bad = _spec_problem(spec)
    if bad:
        return _unreadable(path, f"{path / 'spec.yaml'}: not a noisecli spec ({bad})")
    state, error = status.get("state", "unknown"), status.get("error")
    error = None if error is None else str(error)
    if state == "completed" and not rows:
        return _unreadable(path, f"{path / 'metrics.jsonl'}: missing or empty, though status.json says "
                                 "completed; rerun `noisecli train` on this run to rewrite it")
    if state == "completed" and _is_int(status.get("step")) and rows[-1].get("step") != status["step"]:
        return _unreadable(path, f"{path / 'metrics.jsonl'}: ends at step {rows[-1].get('step')} but the run "
                                 f"completed at step {status['step']}: cut short; rerun `noisecli train` on this "
                                 "run to rebuild it from the checkpoint")
    bad = _rows_problem(rows, averaged=state == "completed")
    if bad:
        return _unreadable(path, f"{path / 'metrics.jsonl'}:{bad}")
    bad = _non_finite(rows) if state == "completed" else ""
    if bad:
        state, error = NOT_FINITE, f"{bad}; not averaged"
    return Run(path, state, spec, rows, error, str(status.get("updated", "")), *_final(path))


def _final(path: Path) -> tuple[dict | None, str | None, dict | None]:
    """final.json's selected checkpoint (numbers only), the task and the robustness curve, or None:
    a run from before final.json, or one still training; a damaged file counts as absent (the rows
    still hold val)."""
    try:
        final = json.loads((path / "final.json").read_text(encoding="utf-8"))
        selected, task = final.get("selected"), final.get("task")
    except (OSError, ValueError, AttributeError):
        return None, None, None
    if not isinstance(selected, dict):
        return None, None, None
    return ({k: v for k, v in selected.items() if _is_number(v)}, task if isinstance(task, str) else None,
            _curve(selected.get("robustness")))


def _curve(raw: Any) -> dict | None:
    """{levels: [...], metric: [...]} with every list of numbers as long as the levels, or None."""
    if not isinstance(raw, dict) or not isinstance(raw.get("levels"), list):
        return None
    n = len(raw["levels"])
    lists = {k: v for k, v in raw.items() if isinstance(v, list) and len(v) == n and all(map(_is_number, v))}
    return lists if "levels" in lists and n else None


def _unreadable(path: Path, why: str) -> Run:
    return Run(path, "unreadable", {}, [], why)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _spec_problem(spec: dict) -> str:
    """What in a saved spec the report cannot group by (a foreign or hand-broken spec.yaml), or ''.
    Only what grouping reads is checked: the seed and each noise entry's kind and factor."""
    seed = spec.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool):
        return f"seed {seed!r} is not an integer"
    noise = spec.get("noise", {"kind": "none"})
    entries = noise if isinstance(noise, list) and noise else [noise]
    for i, e in enumerate(entries):
        where = f"noise.{i}" if isinstance(noise, list) else "noise"
        if not isinstance(e, dict):
            return f"{where} {e!r} is not a mapping"
        if not isinstance(e.get("kind", "none"), str):
            return f"{where}.kind {e.get('kind')!r} is not a name"
        factor = e.get("factor", 0.0)
        if not _is_number(factor) and not _numeric_text(factor):  # "1e-4": YAML 1.1 reads it as a string
            return f"{where}.factor {factor!r} is not a number"
    return ""


def _numeric_text(v: Any) -> bool:
    try:
        return isinstance(v, str) and math.isfinite(float(v))
    except ValueError:
        return False


# what the statistics and the plots read from a completed run: val_loss of every row (best val, the
# curves), the last row's clean train loss (the gap) and val_acc where it was recorded
def _rows_problem(rows: list[dict], averaged: bool) -> str:
    """'LINE: why' for the first row the report cannot use (any run's rows are listed one by one;
    an `averaged` run's also feed the statistics), or ''."""
    for i, row in enumerate(rows, 1):
        if not isinstance(row, dict):
            return f"{i}: not a row (a {type(row).__name__})"
        if not averaged:
            continue
        if not isinstance(row.get("step"), int) or isinstance(row.get("step"), bool):
            return f"{i}: step is {row.get('step')!r}, not an integer"
        keys = ("val_loss", "clean_train_loss") if i == len(rows) else ("val_loss",)
        for key in keys:
            if key not in row:
                return f"{i}: no {key}"
            if not _is_number(row[key]):
                return f"{i}: {key} is {row[key]!r}, not a number"
        if i == len(rows) and "val_acc" in row and not _is_number(row["val_acc"]):
            return f"{i}: val_acc is {row['val_acc']!r}, not a number"
    return ""


def _non_finite(rows: list[dict]) -> str:
    """'KEY is nan at step N' for the first NaN or inf the statistics would read, or ''."""
    last = rows[-1]
    checks = [(r, "val_loss") for r in rows] + [(last, "clean_train_loss")] + \
             ([(last, "val_acc")] if "val_acc" in last else [])
    for row, key in checks:
        if not math.isfinite(row[key]):
            return f"{key} is {row[key]} at step {row.get('step', '?')}"
    return ""


def find_runs(dirs: list[Path]) -> list[Run]:
    runs, missing, seen, named = [], [], set(), set()
    for d in dirs:
        d = Path(d)
        if d.is_file():
            missing.append(f"report: {d} is a file; report reads run folders (runs/NAME), sweep folders or a "
                           "runs folder")
            continue
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
    extra: str = ""  # the other settings that vary between configurations (model width, lr, noise options)
    stats: dict[str, Any] = field(default_factory=dict)
    diverged: list[Run] = field(default_factory=list)  # its runs that diverged or ended non-finite, one per seed
    regs: str = ""  # the classical regularizers it uses, of those that vary: `dropout 0.2 + weight_decay 0.1`
    study: str = ""  # the settings without noise and regularizers: configurations one baseline serves
    by_baseline: dict[str, dict[str, Any]] = field(default_factory=dict)  # stats against each --baseline

    @property
    def noise_label(self) -> str:
        return f"{self.noise}{' ' + self.factor if self.factor else ''}"

    @property
    def label(self) -> str:
        """`input 0.3 + dropout 0.2`, `dropout 0.2`, `none`: the noise part and the regularizer part,
        then what else varies; as the report prints it and `--baseline` names it."""
        core = self.noise_label if not self.regs else (self.regs if self.noise == "none" else
                                                         f"{self.noise_label} + {self.regs}")
        return f"{core}{' ' + self.extra if self.extra else ''}"


def config_keys(spec: dict) -> tuple[str, str, str]:
    """(configuration, base, study): the spec's canonical settings without the seed, those
    without the noise (the configurations of one base differ only in their noise), and those
    without the classical regularizers too (the configurations one study compares)."""
    flat = flatten(canonical(spec, keep_seed=False))
    base = {k: v for k, v in flat.items() if not k.startswith("noise")}
    study = {k: v for k, v in base.items() if regularizer_of(k) is None}
    return tuple(json.dumps(d, sort_keys=True, default=str) for d in (flat, base, study))


def group(runs: list[Run]) -> list[Config]:
    """Completed runs grouped into configurations. Within a configuration each seed counts once:
    a copied run folder, or the same settings and seed trained under two names, would otherwise
    count twice and shrink the spread; the newer run is kept and the other marked 'duplicate'.
    Runs that diverged or ended non-finite join their configuration's `diverged`, not its runs
    (a configuration may then have no runs at all: every seed blew up)."""
    configs: dict[str, Config] = {}
    for run in runs:
        if run.state != "completed" and run.state not in SET_ASIDE:
            continue
        key, base, study = config_keys(run.spec)
        if key not in configs:
            configs[key] = Config(key, base, *noise_parts(noise_entries(run.spec)), [], study=study)
        configs[key].runs.append(run)
    out = list(configs.values())
    _label_extras(out)
    for c in out:
        by_seed: dict[int, Run] = {}
        for run in sorted(c.runs, key=lambda r: (r.updated, _mtime(r.path), str(r.path))):
            if run.seed in by_seed:
                older = by_seed[run.seed]
                older.state = "duplicate"
                older.error = f"seed {run.seed} of {c.label} again; {run.path} is newer and counted"
            by_seed[run.seed] = run
        kept = sorted(by_seed.values(), key=lambda r: r.seed)
        c.runs = [r for r in kept if r.state == "completed"]
        c.diverged = [r for r in kept if r.state != "completed"]
    # grouped by what else varies, then by the regularizer part (the fewest regularizers first, so
    # the plainest configuration leads), then by the noise part
    return sorted(out, key=lambda c: (c.extra, c.regs.count(" + ") + bool(c.regs), c.regs, c.noise != "none",
                                      c.noise, factor_value(c.factor)))


def _mtime(path: Path) -> float:
    try:
        return (path / "status.json").stat().st_mtime
    except OSError:
        return 0.0


def factor_is_zero(text: str) -> bool:
    try:
        return float(text) == 0
    except ValueError:
        return False


def factor_value(text: str) -> float:
    try:
        return float(text.split("/")[0])
    except ValueError:
        return 0.0


def _label_extras(configs: list[Config]) -> None:
    """Name what else differs between configurations beside the noise kind and factor: the
    classical regularizers (`regs`), other settings (model width, lr, ...), and noise options that
    vary among configurations of the same kind (NEFTune's `length: example` against `padded`)."""
    flats = [json.loads(c.key) for c in configs]
    base = [{k: v for k, v in f.items() if not k.startswith("noise")} for f in flats]
    keys = sorted({k for f in base for k in f})
    changing = [k for k in keys if len({json.dumps(f.get(k), default=str) for f in base}) > 1]
    varying = [k for k in changing if regularizer_of(k) is None]  # regularizers get their own part
    for c, f, b in zip(configs, flats, base):
        c.regs = label_part(b, [k for k in changing if regularizer_of(k) is not None])
        options = {k: v for k, v in f.items() if k.startswith("noise") and k.split(".")[-1] not in ("kind", "factor")}
        same_kind = [json.loads(o.key) for o in configs if o.noise == c.noise]
        differ = [k for k in sorted(options)
                  if len({json.dumps(o.get(k), default=str) for o in same_kind}) > 1]
        c.extra = " ".join([f"{k}={b.get(k)}" for k in varying] + [f"{k}={options[k]}" for k in differ])

"""A tune spec's `search`: per noise kind the factor's range, and other spec keys' ranges or choices.

    search:
      noise:                                   # or the kinds written directly under search
        input: {factor: [0.01, 2.0], log: true}
        weight: {low: 0.001, high: 0.1, log: true}
        activation: {factor: [0.1, 3.0], targets: ["*.0"]}   # other keys: the kind's fixed options
      train.lr: {range: [1.0e-4, 1.0e-2], log: true}
      model.dropout: {choices: [0.0, 0.1, 0.2]}

A range is `[low, high]` (`factor:` for a kind, `range:` for a key) or `low:`/`high:`, with
`log` (default false), `step` (a linear range on a lattice) and `points` (how many values
`sampler: grid` takes from it, default 5); `choices` is a list to choose from. Integers at
both ends of a key's range make an integer range. Torch-free, optuna-free: what Optuna is asked
(`suggest`) is in `Range.suggest`, called with a trial.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from noisecli import catalog
from noisecli.spec import suggest

RANGE_KEYS = ("low", "high", "log", "step", "points", "choices")
DEFAULT_POINTS = 5


@dataclass
class Range:
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    points: int = DEFAULT_POINTS
    choices: list | None = None
    integer: bool = False

    def to_dict(self) -> dict:
        if self.choices is not None:
            return {"choices": self.choices}
        return {"low": self.low, "high": self.high, "log": self.log, "step": self.step,
                **({"integer": True} if self.integer else {})}

    def ends(self) -> list:
        """The values validation builds specs at: both ends, or every choice."""
        return list(self.choices) if self.choices is not None else [self.low, self.high]

    def grid(self) -> list:
        """`sampler: grid`'s values: the choices, or `points` values spread over the range."""
        if self.choices is not None:
            return list(self.choices)
        if self.step is not None:
            n = int(math.floor((self.high - self.low) / self.step + 1e-9)) + 1
            values = [self.low + i * self.step for i in range(n)]
        elif self.log:
            a, b = math.log(self.low), math.log(self.high)
            values = [math.exp(a + (b - a) * i / (self.points - 1)) for i in range(self.points)]
        else:
            values = [self.low + (self.high - self.low) * i / (self.points - 1) for i in range(self.points)]
        values = [int(round(v)) if self.integer else float(f"{v:.6g}") for v in values]
        values[0], values[-1] = self.low, (values[-1] if self.step is not None else self.high)
        return list(dict.fromkeys(values))

    def suggest(self, trial, name: str):
        if self.choices is not None:
            return trial.suggest_categorical(name, self.choices)
        if self.integer:
            return trial.suggest_int(name, int(self.low), int(self.high), step=int(self.step or 1), log=self.log)
        return trial.suggest_float(name, self.low, self.high, log=self.log, step=self.step)


@dataclass
class KindSearch:
    kind: str
    factor: Range | None  # None for `none`
    options: dict[str, Any] = field(default_factory=dict)  # the kind's fixed options (targets, ...)


@dataclass
class Search:
    kinds: dict[str, KindSearch] = field(default_factory=dict)
    keys: dict[str, Range] = field(default_factory=dict)  # dotted spec keys other than noise

    def to_dict(self) -> dict:
        return {"noise": {k: {"factor": s.factor.to_dict() if s.factor else None, **s.options}
                          for k, s in self.kinds.items()},
                **{key: r.to_dict() for key, r in self.keys.items()}}


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def parse_search(raw: Any, problems: list[str]) -> Search:
    """`search` read into kinds and keys; every mistake appended to `problems`, one line each."""
    search = Search()
    if not isinstance(raw, dict) or not raw:
        problems.append("search: must map noise kinds to factor ranges (search: {noise: {input: {factor: "
                        "[0.01, 1.0], log: true}}}), and optionally spec keys to ranges or choices"
                        + ("" if raw is None else f", got {raw!r}"))
        return search
    for key, value in raw.items():
        key = str(key)
        if key == "noise":
            if not isinstance(value, dict) or not value:
                problems.append(f"search.noise: must map noise kinds to factor ranges, got {value!r}")
                continue
            for kind, entry in value.items():
                _add_kind(search, str(kind), entry, f"search.noise.{kind}", problems)
        elif key in catalog.NOISE:
            _add_kind(search, key, value, f"search.{key}", problems)
        elif "." in key and not key.startswith(("noise.", "name", "seed")):
            r = parse_range(value, f"search.{key}", "range", problems, allow_list=True)
            if r is not None:
                search.keys[key] = r
        else:
            hint = suggest(key, [*catalog.NOISE, "noise"]) or (
                " (a noise kind, `noise`, or a dotted spec key such as train.lr)")
            problems.append(f"search.{key}: not a noise kind nor a dotted spec key{hint}")
    if not search.kinds and not any(p.startswith("search") for p in problems):
        problems.append("search: names no noise kind; add one, e.g. search: {noise: {input: {factor: [0.01, 1.0], "
                        "log: true}}}")
    return search


def _add_kind(search: Search, kind: str, entry: Any, where: str, problems: list[str]) -> None:
    if kind not in catalog.NOISE:
        problems.append(f"{where}: unknown noise kind{suggest(kind, catalog.NOISE) or ''} "
                        f"(kinds: {', '.join(catalog.NOISE)})")
        return
    if kind in search.kinds:
        problems.append(f"{where}: {kind} is searched twice")
        return
    if kind == "none":
        if entry not in (None, {}):
            problems.append(f"{where}: none has no factor to search; write `none: {{}}`")
        search.kinds[kind] = KindSearch(kind, None)
        return
    if isinstance(entry, list):
        entry = {"factor": entry}
    if not isinstance(entry, dict):
        problems.append(f"{where}: must be a factor range such as {{factor: [0.01, 1.0], log: true}}, got {entry!r}")
        return
    range_part = {k: v for k, v in entry.items() if k in (*RANGE_KEYS, "factor")}
    options = {k: v for k, v in entry.items() if k not in range_part}
    bad = [k for k in options if k in ("kind", "schedule_factor")]
    for k in bad:
        problems.append(f"{where}.{k}: set by the search")
    r = parse_range(range_part, where, "factor", problems)
    if r is not None:
        if r.choices is None and r.low is not None and r.low < 0:
            problems.append(f"{where}.factor: a noise factor is >= 0, got low {r.low:g}")
        search.kinds[kind] = KindSearch(kind, r, {k: v for k, v in options.items() if k not in bad})


def parse_range(raw: Any, where: str, list_key: str, problems: list[str], allow_list: bool = False) -> Range | None:
    """A range or choices; None (with the problems said) when it cannot be read."""
    if allow_list and isinstance(raw, list):
        raw = {"choices": raw}
    if not isinstance(raw, dict):
        problems.append(f"{where}: must be {{{list_key}: [low, high], log: true|false}} or {{choices: [...]}}, "
                        f"got {raw!r}")
        return None
    raw = dict(raw)
    for key in raw:
        if key not in (*RANGE_KEYS, list_key):
            problems.append(f"{where}.{key}: unknown key{suggest(str(key), (*RANGE_KEYS, list_key)) or ''} "
                            f"(a range has {list_key} or low/high, log, step, points; or choices)")
            return None
    if "choices" in raw:
        return _choices(raw, where, list_key, problems)
    if list_key in raw:
        pair = raw.pop(list_key)
        if isinstance(pair, dict) and list_key == "factor":  # factor: {low:, high:} or {choices: [...]}
            return parse_range({**pair, **raw}, where, list_key, problems)
        if not isinstance(pair, list) or len(pair) != 2:
            problems.append(f"{where}.{list_key}: must be [low, high], got {pair!r}")
            return None
        if "low" in raw or "high" in raw:
            problems.append(f"{where}: give {list_key}: [low, high] or low/high, not both")
            return None
        raw["low"], raw["high"] = pair
    return _range(raw, f"{where}.{list_key}" if list_key == "factor" else where, problems)


def _choices(raw: dict, where: str, list_key: str, problems: list[str]) -> Range | None:
    choices = raw["choices"]
    others = [k for k in raw if k != "choices"]
    if others:
        problems.append(f"{where}: choices cannot be given with {', '.join(others)}")
        return None
    if not isinstance(choices, list) or not choices:
        problems.append(f"{where}.choices: must be a non-empty list, got {choices!r}")
        return None
    plain = [c for c in choices if c is None or isinstance(c, (bool, int, float, str))]
    if len(plain) != len(choices):
        problems.append(f"{where}.choices: each choice must be a number, a string, true/false or null "
                        "(Optuna stores them as such)")
        return None
    if len({repr(c) for c in choices}) != len(choices):
        problems.append(f"{where}.choices: listed twice: {choices}")
        return None
    return Range(choices=list(choices))


def _range(raw: dict, where: str, problems: list[str]) -> Range | None:
    low, high, log, step, points = (raw.get("low"), raw.get("high"), raw.get("log", False), raw.get("step"),
                                    raw.get("points", DEFAULT_POINTS))
    before = len(problems)
    if not _number(low) or not _number(high):
        problems.append(f"{where}: a range needs numbers low and high, got low {low!r}, high {high!r}")
    elif low >= high:
        problems.append(f"{where}: an empty range: low {low:g} must be below high {high:g}")
    elif log and low <= 0:
        problems.append(f"{where}: a log range must lie above 0, got low {low:g} (use log: false, or a low "
                        "such as 1e-4)")
    if not isinstance(log, bool):
        problems.append(f"{where}.log: must be true or false, got {log!r}")
    if step is not None and (not _number(step) or step <= 0):
        problems.append(f"{where}.step: must be a number > 0, got {step!r}")
    elif step is not None and log:
        problems.append(f"{where}.step: a log range has no step (Optuna samples it continuously)")
    if not isinstance(points, int) or isinstance(points, bool) or points < 2:
        problems.append(f"{where}.points: must be an integer >= 2 (values sampler: grid takes), got {points!r}")
    if len(problems) > before:
        return None
    integer = all(isinstance(v, int) for v in (low, high)) and (step is None or isinstance(step, int)) \
        and not where.endswith(".factor")  # a factor is a float, whatever its ends look like
    if not integer:
        low, high = float(low), float(high)
    return Range(low, high, log, step, points, integer=integer)

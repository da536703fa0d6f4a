"""A tune spec, a sweep spec's sibling: `base`, `search`, `objective`, `seeds`, `trials`, `pruner`,
`sampler`, `confirm`; read and validated as every spec is (every problem on one line, a
suggestion where a near name exists, raised once), and each trial's spec built from it.

Torch-free and optuna-free: the sampler's and pruner's own options are checked against
Optuna's classes in `tune.study`, when the study is opened.
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from noisecli import metrics
from noisecli.errors import SpecError
from noisecli.spec import NAME_RE, Spec, flatten, read_yaml, set_dotted, spec_from_dict, spec_to_dict, suggest
from noisecli.sweep import parse_seeds
from noisecli.tune.search import KindSearch, Search, parse_search

TUNE_KEYS = ("name", "base", "search", "objective", "seeds", "trials", "pruner", "sampler", "confirm")
PRUNERS = ("asha", "hyperband", "median", "none")
SAMPLERS = ("tpe", "gp", "random", "grid")
BEST_VAL = "best_val_loss"
DEFAULT_TRIALS = 20
CONFIRM_SEED0 = 1000  # confirmation seeds start here, far from any search seed
CHANGEABLE = ("trials",)  # what a rerun may change: the budget


def objectives() -> list[str]:
    """What `objective` may name: every val metric of the schema, and the best val loss."""
    return [c for c in metrics.every_column() if c.startswith(metrics.SPLIT_PREFIX["val"])] + [BEST_VAL]


def higher_is_better(objective: str) -> bool:
    return False if objective == BEST_VAL else metrics.higher_is_better(objective)


@dataclass
class TuneSpec:
    name: str
    path: Path
    base_raw: dict
    base_dir: Path
    search: Search
    objective: str = "val_loss"
    seeds: list[int] = field(default_factory=lambda: [0])
    trials: int = DEFAULT_TRIALS
    pruner: dict = field(default_factory=lambda: {"kind": "asha"})
    sampler: dict = field(default_factory=lambda: {"kind": "tpe"})
    confirm_seeds: list[int] = field(default_factory=lambda: list(range(CONFIRM_SEED0, CONFIRM_SEED0 + 5)))

    @property
    def higher(self) -> bool:
        return higher_is_better(self.objective)

    @property
    def direction(self) -> str:
        return "maximize" if self.higher else "minimize"

    def studies(self) -> list[str]:
        """One study per noise kind searched; `none` too when other keys are searched (a baseline
        tuned as the kinds are), so that confirm never compares a tuned kind with an untuned none."""
        kinds = list(self.search.kinds)
        return kinds + (["none"] if self.search.keys and "none" not in kinds else [])

    def budgets(self, trials: int | None = None) -> dict[str, int]:
        """The trials split evenly among the studies (the first ones get the remainder); with
        `sampler: grid` at most each study's grid."""
        total, studies = trials or self.trials, self.studies()
        out = {s: total // len(studies) + (i < total % len(studies)) for i, s in enumerate(studies)}
        if self.sampler["kind"] == "grid":
            out = {s: min(n, math.prod(len(v) for v in self.grid_space(s).values())) for s, n in out.items()}
        return out

    def grid_space(self, kind: str) -> dict[str, list]:
        """`sampler: grid`'s values for a study: the factor's and every searched key's."""
        factor = self.kind_search(kind).factor
        return {**({"factor": factor.grid()} if factor else {}), **{k: r.grid() for k, r in self.search.keys.items()}}

    def kind_search(self, kind: str) -> KindSearch:
        return self.search.kinds.get(kind) or KindSearch(kind, None)

    def raw_for(self, kind: str, params: dict[str, Any]) -> dict:
        """The base with this trial's noise entry and searched keys set (params: `factor` and dotted keys)."""
        raw = copy.deepcopy(self.base_raw)
        base_noise = raw.get("noise") if isinstance(raw.get("noise"), dict) else {}
        entry = {"kind": kind}
        if kind != "none":
            if base_noise.get("kind") == kind:  # the base's own options for this kind (targets, ...) stay
                entry.update({k: v for k, v in base_noise.items() if k not in ("kind", "factor")})
            entry.update(copy.deepcopy(self.kind_search(kind).options))
            if "factor" in params:
                entry["factor"] = params["factor"]
        raw["noise"] = entry
        for key, value in params.items():
            if key != "factor":
                set_dotted(raw, key.split("."), copy.deepcopy(value))
        return raw

    def run_spec(self, kind: str, params: dict[str, Any], name: str, seed: int) -> Spec:
        raw = self.raw_for(kind, params)
        raw["name"], raw["seed"] = name, seed
        return spec_from_dict(raw, base_dir=self.base_dir)

    def definition(self) -> dict:
        """What tune.json keeps, to refuse a changed tune spec on a rerun (`changed_keys`)."""
        base = self.raw_for("none", {})
        base["name"] = "base"
        return {"name": self.name, "base": spec_to_dict(spec_from_dict(base, base_dir=self.base_dir)),
                "search": self.search.to_dict(), "objective": self.objective, "seeds": self.seeds,
                "trials": self.trials, "pruner": self.pruner, "sampler": self.sampler,
                "confirm": {"seeds": self.confirm_seeds}}


def changed_keys(old: dict, new: dict) -> list[str]:
    """'key: old -> new' for every setting of a tune's definition that a rerun may not change."""
    a = flatten(json.loads(json.dumps(old, default=str)))
    b = flatten(json.loads(json.dumps(new, default=str)))
    keep = lambda k: k.split(".")[0] not in CHANGEABLE and k not in ("base.name", "base.device")  # noqa: E731
    return [f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(set(a) | set(b)) if keep(k) and a.get(k) != b.get(k)]


def load_tune(path: Path | str, trials: int | None = None) -> TuneSpec:
    """Read and validate a tune spec; SpecError with every problem, each on its line."""
    path = Path(path)
    raw = read_yaml(path)
    problems: list[str] = []
    for key in raw:
        if key not in TUNE_KEYS:
            problems.append(f"{key}: unknown tune key{suggest(str(key), TUNE_KEYS) or ''} "
                            f"(tune keys: {', '.join(TUNE_KEYS)})")
    name = raw.get("name", path.stem)
    if not isinstance(name, str) or not NAME_RE.match(name):
        problems.append(f"name: {name!r} must be 1-100 letters, digits, '.', '_' or '-', starting with a letter "
                        "or digit (it names a folder under the runs folder)")
    base_raw, base_dir, prefix = _base(raw.get("base"), path, problems)
    search = parse_search(raw.get("search"), problems)
    tune = TuneSpec(str(name), path, base_raw or {}, base_dir, search)
    _read_options(raw, tune, problems)
    if trials is not None:
        tune.trials = trials
    if base_raw is not None and not problems:
        problems += _build_problems(tune, prefix)
    if problems:
        raise SpecError(list(dict.fromkeys(problems)))
    return tune


def _base(base: Any, path: Path, problems: list[str]) -> tuple[dict | None, Path, str]:
    if isinstance(base, dict):
        return copy.deepcopy(base), path.parent, "base."
    if isinstance(base, str):
        base_path = path.parent / base
        if not base_path.is_file():
            problems.append(f"base: file not found: {base_path}")
            return None, path.parent, ""
        return read_yaml(base_path), base_path.parent, f"{base}: "
    problems.append("base: must be a spec file (relative to this file) or an inline spec mapping"
                    + ("" if base is None else f", got {base!r}"))
    return None, path.parent, ""


def _read_options(raw: dict, tune: TuneSpec, problems: list[str]) -> None:
    objective = raw.get("objective", "val_loss")
    if objective not in objectives():
        problems.append(f"objective: {objective!r} is not a val metric{suggest(str(objective), objectives()) or ''} "
                        f"(objectives: {', '.join(objectives())})")
    else:
        tune.objective = objective
    try:
        tune.seeds = parse_seeds(raw.get("seeds", 1), "seeds")
    except SpecError as e:
        problems += e.problems
    trials = raw.get("trials", DEFAULT_TRIALS)
    if not isinstance(trials, int) or isinstance(trials, bool) or trials < 1:
        problems.append(f"trials: must be an integer >= 1, got {trials!r}")
    else:
        tune.trials = trials
    tune.pruner = _named(raw.get("pruner", "asha"), "pruner", PRUNERS, problems) or tune.pruner
    tune.sampler = _named(raw.get("sampler", "tpe"), "sampler", SAMPLERS, problems) or tune.sampler
    tune.confirm_seeds = _confirm(raw.get("confirm", {"seeds": 5}), tune.seeds, problems)


def _named(value: Any, where: str, names: tuple[str, ...], problems: list[str]) -> dict | None:
    """`asha`, or `{kind: asha, reduction_factor: 3}`: the kind and Optuna's own options."""
    given = {"kind": value} if isinstance(value, str) else dict(value) if isinstance(value, dict) else None
    if given is None or not isinstance(given.get("kind"), str):
        problems.append(f"{where}: must be one of {', '.join(names)}, or {{kind: NAME, OPTION: VALUE}} with "
                        f"Optuna's options, got {value!r}")
        return None
    if given["kind"] not in names:
        problems.append(f"{where}: {given['kind']!r} is not one of {', '.join(names)}"
                        f"{suggest(given['kind'], names) or ''}")
        return None
    return given


def _confirm(value: Any, search_seeds: list[int], problems: list[str]) -> list[int]:
    if value is False or value is None or value == {"seeds": 0}:
        return []
    if not isinstance(value, dict) or set(value) - {"seeds"}:
        problems.append(f"confirm: must be {{seeds: N}} (or false), got {value!r}")
        return []
    seeds = value.get("seeds", 5)
    try:
        if isinstance(seeds, int) and not isinstance(seeds, bool) and seeds >= 1:
            seeds = list(range(CONFIRM_SEED0, CONFIRM_SEED0 + seeds))
        seeds = parse_seeds(seeds, "confirm.seeds")
    except SpecError as e:
        problems += e.problems
        return []
    shared = sorted(set(seeds) & set(search_seeds))
    if shared:
        problems.append(f"confirm.seeds: {shared} are search seeds too; confirmation needs fresh seeds (the "
                        f"default starts at {CONFIRM_SEED0})")
    return seeds


def _build_problems(tune: TuneSpec, prefix: str) -> list[str]:
    """The base and every range's ends built as specs: the base's own mistakes named under the
    base, a range end the spec refuses named under its search key."""
    base = tune.raw_for("none", {})
    base.update(name="base", seed=0)
    try:
        spec_from_dict(base, base_dir=tune.base_dir)
    except SpecError as e:
        return [prefix + p for p in e.problems]
    problems: list[str] = []
    first = {key: r.ends()[0] for key, r in tune.search.keys.items()}
    cases = [(f"search.{key}", "none", {key: end}) for key, r in tune.search.keys.items() for end in r.ends()]
    cases += [(f"search.noise.{k}.factor", k, {"factor": end, **first})
              for k, s in tune.search.kinds.items() if s.factor for end in s.factor.ends()]
    cases += [(f"search.noise.{k}", k, first) for k, s in tune.search.kinds.items() if not s.factor]
    for where, kind, params in cases:
        try:
            tune.run_spec(kind, params, "trial", tune.seeds[0])
        except SpecError as e:
            value = next(iter(params.values()), None) if params else None
            at = f" at {value!r}" if value is not None else ""
            problems += [f"{where}{at}: {p}" for p in e.problems]
    return problems

"""Sweeps: a grid of spec keys x seeds, expanded into points, each an ordinary run.

Every point gets a folder name made from its settings (not a counter), under
runs/<sweep name>/, so running the sweep again finds its points: completed ones are
skipped, interrupted ones resume through `train`'s own resume path, and a point whose
settings changed is refused. Claiming a point takes the run's lock, so workers, shards
and machines sharing a runs folder never train the same point twice.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

from noisecli.errors import SpecError
from noisecli.jobs import read_jobs
from noisecli.point_names import canonical_key, point_name
from noisecli.runs import RunFolder
from noisecli.spec import (DEVICE_RE, NAME_RE, SEED_MAX, Spec, apply_overrides, flatten, is_sweep_file, load_yaml,
                           read_saved_spec, read_yaml, set_dotted, spec_diff, spec_from_dict, spec_to_dict, suggest)
from noisecli.stacks import about, form_groups, lost_overrides, plural

# moved to stacks and point_names; imported here too, so that `from noisecli.sweep import X` keeps working
from noisecli.point_names import UNSAFE  # noqa: F401
from noisecli.stacks import UNBATCHED, batch_key  # noqa: F401

SWEEP_KEYS = ("name", "base", "grid", "seeds")
# Past this many points a sweep is a mistake (a grid of 33 million points would take minutes just
# to plan); split it into several sweeps, or sweep fewer values.
MAX_POINTS = 100_000


@dataclass
class Point:
    name: str  # the run folder's name
    settings: dict[str, Any]  # grid key -> value, and seed, as they shaped this point
    spec: Spec


@dataclass
class Plan:
    name: str
    grid: dict[str, list]
    seeds: list[int]
    points: list[Point] = field(default_factory=list)
    merged: int = 0  # grid points dropped as identical to another (the factor of `none`, kinds at factor 0)

    def to_dict(self) -> dict:
        return {"name": self.name, "grid": self.grid, "seeds": self.seeds,
                "points": [{"name": p.name, "settings": p.settings} for p in self.points]}


def parse_grid_option(text: str) -> tuple[str, list]:
    """'noise.factor=0,0.05,0.1' -> ('noise.factor', [0, 0.05, 0.1])."""
    key, sep, values = text.partition("=")
    if not sep or not key.strip() or not values.strip():
        raise SpecError(f"--grid {text!r}: must be KEY=V1,V2,..., e.g. --grid noise.factor=0,0.05,0.1")
    try:
        return key.strip(), [load_yaml(v) for v in values.split(",")]
    except yaml.YAMLError:
        raise SpecError(f"--grid {text!r}: cannot read the values") from None


def parse_seeds(value: Any, where: str) -> list[int]:
    if isinstance(value, str):
        try:
            value = [int(v) for v in value.split(",")] if "," in value else int(value)
        except ValueError:
            raise SpecError(f"{where}: must be a count or a list of integers, got {value!r}") from None
    if isinstance(value, bool):
        raise SpecError(f"{where}: must be a count or a list of integers, got {value!r}")
    if isinstance(value, int):
        if value < 1:
            raise SpecError(f"{where}: a count of seeds must be >= 1, got {value}")
        if value > MAX_POINTS:  # (before range() makes the list)
            raise SpecError(f"{where}: a count of seeds must be at most {MAX_POINTS:,}, got {value}")
        return list(range(value))
    if isinstance(value, list) and value and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        if len(set(value)) != len(value):
            raise SpecError(f"{where}: seeds are listed twice: {value}")
        bad = [v for v in value if not 0 <= v <= SEED_MAX]
        if bad:
            raise SpecError(f"{where}: a seed must be from 0 to {SEED_MAX}, got {bad[0]}")
        return list(value)
    raise SpecError(f"{where}: must be a count or a non-empty list of integers, got {value!r}")


@dataclass
class _SweepSource:
    """What a sweep file (or a plain spec swept by --grid) says, before the command line adds to it."""

    base_raw: dict | None
    base_dir: Path
    grid: dict[str, Any]
    name: Any
    seeds: Any
    inline: bool = True  # the base is written in the sweep file (else in base_file)
    base_file: str = ""


def load_plan(path: Path | str, grid_options: list[str] | None = None, seeds: str | None = None,
              overrides: list[str] | None = None, name: str | None = None,
              resolve_base: Callable | None = None) -> Plan:
    """Read a sweep spec (or a plain spec swept by --grid), validate every point, merge duplicates.
    What only building the components can check is `validate.checked_plan`'s. `resolve_base`
    turns a `base: {from_report: ...}` into the spec it names (report.best_base: reports are a
    layer above this one)."""
    path = Path(path)
    problems: list[str] = []
    source = _read_source(read_yaml(path), path, problems, resolve_base)
    grid = _merge_grid(source.grid, grid_options or [], problems)
    try:
        seed_list = parse_seeds(seeds if seeds is not None else source.seeds, "seeds" if seeds is None else "--seeds")
    except SpecError as e:
        problems += e.problems
        seed_list = [0]
    sweep_name = name or source.name
    if not isinstance(sweep_name, str) or not NAME_RE.match(sweep_name):
        problems.append(f"name: {sweep_name!r} must be 1-100 letters, digits, '.', '_' or '-', starting with a "
                        "letter or digit (it names a folder under the runs folder)")
    if not is_sweep_file(read_yaml(path)) and not grid and seeds is None:
        problems.append(f"{path}: a plain spec with nothing to sweep; give --grid KEY=V1,V2,... and/or --seeds N, "
                        f"or train it with: noisecli train {path}")
    plan = Plan(sweep_name, grid, seed_list)
    size = math.prod(len(v) for v in grid.values()) * len(seed_list)  # counted before anything is expanded
    if size > MAX_POINTS:
        problems.append(f"grid: {size:,} points ({' x '.join(str(len(v)) for v in grid.values())} values x "
                        f"{plural(len(seed_list), 'seed')}); a sweep has at most {MAX_POINTS:,}: sweep fewer values, "
                        "or split it into several sweeps")
    elif source.base_raw is not None:  # every problem at once, each said once, where it is
        try:
            base_raw = apply_overrides(source.base_raw, overrides or [])
            given = [text.partition("=")[0].strip() for text in overrides or []]  # (each read by apply_overrides)
            problems += lost_overrides(overrides or [], grid)
            in_base = _base_problems(base_raw, source, grid)
            prefix = "base." if source.inline else f"{source.base_file}: "
            problems += [p if about(given, p) else prefix + p for p in in_base]  # an override's: named as typed
            problems += [p for p in _expand(plan, base_raw, source.base_dir, skip=set(in_base), given=given)]
        except SpecError as e:
            problems += e.problems
    if problems:
        raise SpecError(list(dict.fromkeys(problems)))
    return plan


def _base_problems(base_raw: dict, source: "_SweepSource", grid: dict) -> list[str]:
    """The base's own mistakes (keys the grid does not set), as the base checked alone reports them."""
    try:
        spec_from_dict(copy.deepcopy(base_raw), base_dir=source.base_dir)
    except SpecError as e:
        roots = {k.split(".")[0] for k in grid}  # what the grid sets is the grid's to get right
        return [p for p in e.problems if p.split(":")[0].split(".")[0] not in roots]
    return []


def _read_source(raw: dict, path: Path, problems: list[str], resolve_base: Callable | None = None) -> _SweepSource:
    if not is_sweep_file(raw):  # a plain spec: the grid comes from --grid
        return _SweepSource(raw, path.parent, {}, f"{raw.get('name', path.stem)}-sweep", 1)
    for key in raw:
        if key not in SWEEP_KEYS:
            hint = suggest(key, SWEEP_KEYS) or " (valid: " + ", ".join(SWEEP_KEYS) + ")"
            problems.append(f"{key}: unknown sweep key{hint}")
    base, base_raw, base_dir = raw.get("base"), None, path.parent
    inline = not isinstance(base, str)
    if isinstance(base, str):
        base_path = path.parent / base
        base_raw = read_yaml(base_path) if base_path.exists() else None
        if base_raw is None:
            problems.append(f"base: file not found: {base_path}")
        base_dir = base_path.parent
    elif isinstance(base, dict) and "from_report" in base:  # stage 2: the winner of another sweep's report
        try:
            base_raw = resolve_base(base, path.parent) if resolve_base else None
        except SpecError as e:
            problems += [f"base.from_report: {p}" for p in e.problems]
    elif isinstance(base, dict):
        base_raw = base
    else:
        problems.append("base: must be a spec file (relative to this file) or an inline spec mapping"
                        + ("" if base is None else f", got {base!r}"))
    grid = raw.get("grid") or {}
    if not isinstance(grid, dict):
        problems.append(f"grid: must be a mapping of dotted keys to lists of values, got {grid!r}")
        grid = {}
    return _SweepSource(base_raw, base_dir, grid, raw.get("name", path.stem), raw.get("seeds", 1), inline,
                        str(base) if not inline else "")


def _merge_grid(grid: dict, grid_options: list[str], problems: list[str]) -> dict[str, list]:
    """The file's grid, each value a non-empty list, with --grid options added or replacing."""
    grid = dict(grid)
    for key, values in list(grid.items()):
        if not isinstance(key, str):  # `1: [...]` or `true: [...]`: YAML reads such keys as numbers, booleans
            problems.append(f"grid.{key}: a grid key must be a dotted spec key such as noise.factor, "
                            f"got {key!r} ({type(key).__name__})")
            grid.pop(key)
        elif not isinstance(values, list) or not values:
            problems.append(f"grid.{key}: must be a non-empty list of values, got {values!r}")
            grid.pop(key)
    for text in grid_options:
        try:
            key, values = parse_grid_option(text)
            grid[key] = values
        except SpecError as e:
            problems += e.problems
    if "seed" in grid:
        problems.append("grid.seed: list seeds under `seeds:` (or --seeds), not in the grid")
    return grid


def _no_noise(noise) -> bool:
    """A noise section whose every entry is a kind at an explicit factor 0: it draws nothing, so it
    is `none` (each kind's tests check factor 0 is bitwise none)."""
    entries = noise if isinstance(noise, list) else [noise]
    return bool(entries) and all(isinstance(e, dict) and e.get("kind") not in (None, "none") and
                                 isinstance(e.get("factor"), (int, float)) and not isinstance(e.get("factor"), bool)
                                 and e["factor"] == 0 for e in entries)


def _expand(plan: Plan, base_raw: dict, base_dir: Path, skip: set[str] = frozenset(),
            given: list[str] = ()) -> list[str]:
    """Each grid point x seed made a spec and named; the problems found (none: the plan is filled),
    leaving out those in `skip` (the base's own, already said); those about the overrides' keys
    (`given`) that every point has are named by the key, as typed."""
    problems: list[tuple[str, str]] = []  # (grid point, problem)
    seen: dict[str, str] = {}
    keys = list(plan.grid)
    short = _short_names(keys)
    for combo in itertools.product(*plan.grid.values()):
        for seed in plan.seeds:
            raw = copy.deepcopy(base_raw)
            settings = dict(zip(keys, combo))
            label = ", ".join(f"{k}={v}" for k, v in settings.items()) or "base"
            bad = [p for k, v in settings.items() if (p := set_dotted(raw, k.split("."), copy.deepcopy(v)))]
            if bad:
                problems += [(label, p) for p in bad]
                continue
            zero_key = None
            if _no_noise(raw.get("noise")):  # every kind at factor 0 trains as none: one baseline, trained once
                raw["noise"] = {"kind": "none"}
                noise_keys = [k for k in keys if k.split(".")[0] == "noise"]
                settings = {k: v for k, v in settings.items() if k not in noise_keys}
                if noise_keys:  # named by the grid's noise key, `kind-none` where the grid has noise.kind
                    zero_key = "noise.kind" if "noise.kind" in noise_keys else noise_keys[0]
            raw["seed"] = seed
            raw["name"] = "point"  # replaced below, once the settings that matter are known
            try:
                spec = spec_from_dict(raw, base_dir=base_dir)
            except SpecError as e:
                problems += [(label, p) for p in e.problems if p not in skip]
                continue
            key = canonical_key(spec)
            if key in seen:
                plan.merged += 1
                continue
            flat = flatten(json.loads(key))
            relevant = {k: v for k, v in settings.items() if any(f == k or f.startswith(k + ".") for f in flat)}
            relevant = {zero_key: "none", **relevant} if zero_key else relevant
            spec.name = point_name(relevant, short, seed)
            seen[key] = spec.name
            plan.points.append(Point(spec.name, {**relevant, "seed": seed}, spec))
    if problems:
        return _once(problems, given, math.prod(len(v) for v in plan.grid.values()))
    names = [p.name for p in plan.points]
    if len(set(names)) != len(names):  # two settings that print alike: fall back to a hash suffix
        for p in plan.points:
            digest = hashlib.sha1(canonical_key(p.spec).encode()).hexdigest()
            p.name = p.spec.name = f"{p.name[:90]}_{digest[:8]}"
    return []


def _once(problems: list[tuple[str, str]], given: list[str] = (), n_points: int = 0) -> list[str]:
    """A problem every grid point has (a misspelled grid key) is said once, as the grid's, or, when it
    is about a key an override set (`given`) and all `n_points` have it, as that key's, as typed; one
    only some points have is said for each of them."""
    labels: dict[str, list[str]] = {}
    for label, problem in problems:
        labels.setdefault(problem, [])
        if label not in labels[problem]:
            labels[problem].append(label)
    n_labels = len({label for label, _ in problems}) if problems else 0
    out = []
    for problem, where in labels.items():
        if len(where) == n_points and about(given, problem):
            out.append(problem)
        elif len(where) > 1 and len(where) == n_labels and n_labels > 1:
            out.append(f"grid.{problem}")
        else:
            out += [f"grid point {label}: {problem}" for label in where]
    return out


def _short_names(keys: list[str]) -> dict[str, str]:
    lasts = [k.split(".")[-1] for k in keys]
    return {k: (last if lasts.count(last) == 1 else k) for k, last in zip(keys, lasts)}


def changed_points(plan: Plan, sweep_dir: Path) -> str | None:
    """One line saying which existing point folders hold other settings (and which keys), or None."""
    diffs: dict[str, list[str]] = {}
    for p in plan.points:
        old = read_saved_spec(sweep_dir / p.name / "spec.yaml")
        if old is None:
            continue  # not run yet, or a damaged spec.yaml that `train` rebuilds from the checkpoint
        diff = spec_diff(old, spec_to_dict(p.spec))
        if diff:
            diffs.setdefault(", ".join(diff[:4]) + (", ..." if len(diff) > 4 else ""), []).append(p.name)
    if not diffs:
        return None
    n = sum(len(v) for v in diffs.values())
    what = "; ".join(f"{text} (e.g. {names[0]})" if len(diffs) > 1 else text for text, names in diffs.items())
    return (f"{n} of {len(plan.points)} point{'s' if len(plan.points) > 1 else ''} in {sweep_dir} were trained "
            f"with other settings: {what}. The sweep spec changed since it was run; give the sweep another name "
            "(name=... or --name) to keep both results apart")


def check_existing(plan: Plan, sweep_dir: Path) -> None:
    """Refuse before running anything if any existing point folder holds other settings."""
    problem = changed_points(plan, sweep_dir)
    if problem:
        raise SpecError(problem)


def shard_points(points: list[Point], shard: str | None) -> list[Point]:
    """--shard K/N (K from 1 to N): every N-th point, starting with the K-th."""
    if shard is None:
        return points
    m = re.fullmatch(r"(\d+)/(\d+)", shard.strip())
    if not m or not (1 <= int(m.group(1)) <= int(m.group(2))):
        raise SpecError(f"--shard: must be K/N with 1 <= K <= N (e.g. 2/4), got {shard!r}")
    k, n = int(m.group(1)), int(m.group(2))
    return points[k - 1::n]


def parse_devices(text: str | None) -> list[str]:
    """--devices cuda:0,cuda:1 -> ['cuda:0', 'cuda:1']."""
    devices = [d.strip() for d in text.split(",")] if text else []
    bad = [d for d in devices if not DEVICE_RE.match(d) or d == "auto"]
    if bad:
        raise SpecError(f"--devices: {', '.join(map(repr, bad))} is not cpu, cuda, cuda:N or mps")
    return devices


def plan_text(plan: Plan, points: list[Point], shard: str | None, sweep_dir: Path,
              max_batch: int | None = None, alone: Callable[[Spec], str | None] | None = None) -> str:
    """What --dry-run prints: the plan's size, one line per point with its settings, the stacks
    --batched would train, and what a real run would refuse."""
    merged = f", {plan.merged} merged as identical" if plan.merged else ""
    sharded = f"; shard {shard}: {plural(len(points), 'point')}" if shard else ""
    lines = [f"sweep {plan.name}: {plural(len(plan.points), 'point')} ({plural(len(plan.grid), 'grid key')} x "
             f"{plural(len(plan.seeds), 'seed')}{merged}){sharded} -> {sweep_dir}"]
    lines += [f"  {p.name}  ({', '.join(f'{k}={v}' for k, v in p.settings.items())})" for p in points]
    if max_batch:
        groups, notes = form_groups(points, max_batch, alone)
        stacks = [len(g) for g in groups if len(g) > 1]
        lines.append(f"--batched: {plural(len(stacks), 'stack')} ({', '.join(map(str, stacks)) or '-'} points), "
                     f"{plural(sum(len(g) == 1 for g in groups), 'point')} alone")
        lines += notes
    refusal = changed_points(plan, sweep_dir)
    if refusal:
        lines.append(f"the run would refuse: {refusal}")
    return "\n".join(lines) + "\n"


def status_text(plan: Plan, points: list[Point], sweep_dir: Path) -> str:
    """`sweep --status`: each point's state from its run folder (pending, running, interrupted,
    completed, failed, diverged; `stopped` when a run's process is gone without a word), its
    step, and the cluster job it was submitted as. Reads files only: it never waits."""
    jobs = read_jobs(sweep_dir)
    counts: dict[str, int] = {}
    lines = []
    for p in points:
        run = RunFolder(sweep_dir / p.name)
        status = run.read_status_quiet()
        state = status.get("state", "pending")
        if state == "running" and not run.held():
            state = "stopped"  # killed, or its machine went away: the next run resumes it
        counts[state] = counts.get(state, 0) + 1
        step = f"{status.get('step', 0)}/{status['total_steps']}" if status.get("total_steps") else "-"
        best = f"{status['best_val_loss']:.4f}" if isinstance(status.get("best_val_loss"), float) else "-"
        job = jobs.get(p.name, {}).get("job_id", "-")
        lines.append((p.name, state, step, best, job))
    widths = [max(len(str(r[i])) for r in lines + [("point", "state", "step", "best val", "job")])
              for i in range(5)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    out = [f"sweep {plan.name}: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) + f" ({sweep_dir})",
           fmt.format("point", "state", "step", "best val", "job")]
    out += [fmt.format(*r) for r in lines]
    return "\n".join(line.rstrip() for line in out) + "\n"

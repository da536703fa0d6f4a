"""Reports, layer 1: run folders read into runs, and runs grouped into configurations.

Runs that differ only by seed form a configuration (the key is `spec.canonical` without the
seed); within a configuration each seed counts once. Runs that are not completed are kept,
with their state, to be listed, never averaged.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from noisecli.errors import BadInput, SpecError
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
    """One run folder, read through RunFolder; a damaged file makes the run 'unreadable' with
    the reason, not a failed report."""
    folder = RunFolder(path)
    try:
        status = folder.read_status()
        rows = folder.read_metrics()
    except BadInput as e:
        return Run(path, "unreadable", {}, [], e.problems[0])
    spec = read_saved_spec(path / "spec.yaml")
    if spec is None:
        return Run(path, "unreadable", {}, [], f"{path / 'spec.yaml'}: missing or unreadable")
    state = status.get("state", "unknown")
    if state == "completed" and not rows:
        state, status["error"] = "unreadable", "completed but metrics.jsonl is empty"
    return Run(path, state, spec, rows, status.get("error"), str(status.get("updated", "")))


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
    extra: str = ""
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.noise}{' ' + self.factor if self.factor else ''}{' ' + self.extra if self.extra else ''}"


def config_keys(spec: dict) -> tuple[str, str]:
    """(configuration, base): the spec's canonical settings without the seed, and those
    without the noise (the configurations of one base differ only in their noise)."""
    flat = flatten(canonical(spec, keep_seed=False))
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
        key, base = config_keys(run.spec)
        if key not in configs:
            configs[key] = Config(key, base, *noise_parts(noise_entries(run.spec)), [])
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
    return sorted(out, key=lambda c: (c.extra, c.noise != "none", c.noise, factor_value(c.factor)))


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
    """Name what else differs between configurations beside the noise kind and factor: other
    settings (model width, lr, ...), and noise options that vary among configurations of the
    same kind (NEFTune's `length: example` against `padded`)."""
    flats = [json.loads(c.key) for c in configs]
    base = [{k: v for k, v in f.items() if not k.startswith("noise")} for f in flats]
    keys = sorted({k for f in base for k in f})
    varying = [k for k in keys if len({json.dumps(f.get(k), default=str) for f in base}) > 1]
    for c, f, b in zip(configs, flats, base):
        options = {k: v for k, v in f.items() if k.startswith("noise") and k.split(".")[-1] not in ("kind", "factor")}
        same_kind = [json.loads(o.key) for o in configs if o.noise == c.noise]
        differ = [k for k in sorted(options)
                  if len({json.dumps(o.get(k), default=str) for o in same_kind}) > 1]
        c.extra = " ".join([f"{k}={b.get(k)}" for k in varying] + [f"{k}={options[k]}" for k in differ])

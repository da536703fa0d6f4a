"""A two-stage study's hand-over: the best configuration of one sweep's report, as the base of the
next sweep (`base: {from_report: runs/stage1}`).

Stage 1 sweeps the classical regularizers without noise; stage 2 puts every noise configuration
on top of stage 1's winner. The winner is the report's bold row: the best on the deciding
metric's validation value at each run's selected checkpoint (never one significantly worse than
its baseline), so the choice is made on val and stage 2's comparisons on test stay honest.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from noisecli.errors import SpecError
from noisecli.spec import read_saved_spec

FROM_REPORT_KEYS = ("path", "metric")


def best_base(base: dict, spec_dir: Path) -> dict:
    """The sweep's base: the winner's resolved spec (without name, seed and device), with the
    base's other keys merged over it. `base.from_report` is a folder (relative to the sweep file)
    or {path, metric}."""
    from noisecli.report import build  # the report's own statistics, as `noisecli report` computes them

    ref = base["from_report"]
    ref = {"path": ref} if isinstance(ref, str) else ref
    if not isinstance(ref, dict) or not isinstance(ref.get("path"), str):
        raise SpecError("must be a runs folder, or {path: FOLDER, metric: NAME}")
    unknown = [k for k in ref if k not in FROM_REPORT_KEYS]
    if unknown:
        raise SpecError(f"unknown key {unknown[0]!r} (keys: {', '.join(FROM_REPORT_KEYS)})")
    folder = spec_dir / ref["path"]
    configs, _ = build([folder], ref.get("metric"))
    winner = next((c for c in configs if c.stats.get("best_overall")), None)
    if winner is None:
        raise SpecError(f"{folder}: no configuration is best there (no completed run with the deciding metric)")
    spec = read_saved_spec(winner.runs[0].path / "spec.yaml")
    if spec is None:
        raise SpecError(f"{winner.runs[0].path / 'spec.yaml'}: unreadable")
    for key in ("name", "seed", "device"):
        spec.pop(key, None)
    return _merged(spec, {k: v for k, v in base.items() if k != "from_report"})


def _merged(a: dict, b: dict) -> dict[str, Any]:
    """b's keys over a's, mappings merged key by key."""
    out = copy.deepcopy(a)
    for k, v in b.items():
        out[k] = _merged(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out

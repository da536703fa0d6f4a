"""Confirmation, so that the winner's curse does not inflate the answer: the best trial of each
kind (by the objective on val) and `none`, trained again on fresh seeds as the points of a
sweep under runs/<tune>/confirm/ (the sweep's own runner: workers, the cluster, skip and
resume). `noisecli report runs/<tune>` gives its verdict on these runs alone.

When a later run of the tune finds another best for a kind, that kind's old confirmation runs
are moved to confirm/.archive/ (never deleted) and the new best is confirmed.
"""

from __future__ import annotations

from pathlib import Path

from noisecli.runs import RunFolder
from noisecli.spec import read_saved_spec, spec_diff, spec_to_dict
from noisecli.sweep import Plan, Point
from noisecli.tune.spec import TuneSpec


def confirm_points(tune: TuneSpec, data: dict, device: str | None = None) -> tuple[list[Point], list[str]]:
    """The confirmation points, and a line for each kind that has no completed trial to confirm."""
    points, notes = [], []
    kinds = tune.studies() + ([] if "none" in tune.studies() else ["none"])
    for kind in kinds:
        best = (data["studies"].get(kind) or {}).get("best") if kind in tune.studies() else None
        if kind in tune.studies() and best is None:
            notes.append(f"confirm: {kind} has no completed trial (every one was pruned or failed); not confirmed")
            continue
        params = best["params"] if best else {}
        for seed in tune.confirm_seeds:
            name = f"{kind}_seed-{seed}"
            spec = tune.run_spec(kind, params, name, seed)
            if device:
                spec.device = device
            trial = {"trial": best["run"]} if best else {}
            points.append(Point(name, {"noise.kind": kind, **params, **trial, "seed": seed}, spec))
    return points, notes


def archive_superseded(points: list[Point], confirm_dir: Path) -> list[str]:
    """Move aside the confirmation runs of a best that has changed since they trained."""
    notes = []
    for p in points:
        folder = RunFolder(confirm_dir / p.name)
        old = read_saved_spec(folder.path / "spec.yaml")
        if old is None or not spec_diff(old, spec_to_dict(p.spec)) or folder.held():
            continue
        notes.append(f"confirm: {p.name} confirmed an earlier best; moved to {folder.archive()}")
    return notes


def run_confirm(tune: TuneSpec, tune_dir: Path, data: dict, jobs: int, quiet: bool, cluster=None,
                device: str | None = None) -> list:
    """Train the confirmation points (skipping those done); the sweep runner's outcomes."""
    from noisecli.sweep_run import run_sweep  # the sweep's runner: workers, cluster, display

    points, notes = confirm_points(tune, data, device)
    confirm_dir = tune_dir / "confirm"
    notes += archive_superseded(points, confirm_dir)
    if not quiet:
        for line in notes:
            print(line, flush=True)
        print(f"confirm: the best of each kind and none on {len(tune.confirm_seeds)} fresh seeds "
              f"({', '.join(map(str, tune.confirm_seeds))}), {len(points)} runs under {confirm_dir}", flush=True)
    if not points:
        return []
    plan = Plan(f"{tune.name}-confirm", {"best": sorted({p.settings["noise.kind"] for p in points})},
                tune.confirm_seeds, points)
    return run_sweep(plan, points, confirm_dir, jobs, [], False, quiet, cluster)

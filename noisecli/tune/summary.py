"""What a tune wrote down: tune.json (its definition and storage, to refuse a changed spec and to
find the study again) and trials.json (every trial of every study, the best per kind, Optuna's
parameter importances), which `noisecli report` and `tune --status` read without the storage."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from noisecli.errors import SpecError
from noisecli.runs import atomic_write
from noisecli.tune.spec import TuneSpec, changed_keys
from noisecli.tune.study import import_optuna, masked

TUNE_JSON, TRIALS_JSON = "tune.json", "trials.json"


def read_recorded(tune_dir: Path) -> dict | None:
    """tune.json of an earlier run of this tune, or None."""
    try:
        data = json.loads((tune_dir / TUNE_JSON).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise SpecError(f"{tune_dir / TUNE_JSON}: unreadable ({e}); it records the tune's definition and "
                        "storage: restore it, or give the tune another name") from None
    if not isinstance(data, dict) or not isinstance(data.get("definition"), dict):
        raise SpecError(f"{tune_dir / TUNE_JSON}: not a noisecli tune file")
    return data


def check_unchanged(tune: TuneSpec, recorded: dict | None, tune_dir: Path) -> None:
    if recorded is None:
        return
    changed = changed_keys(recorded["definition"], tune.definition())
    if changed:
        shown = ", ".join(changed[:4]) + (", ..." if len(changed) > 4 else "")
        raise SpecError(f"tune {tune.name!r} in {tune_dir} was run with another tune spec ({shown}); only `trials` "
                        "may change between runs: give the tune another name (name: ...) to keep both results apart")


def storage_label(option: str | None, recorded: dict | None, default: str) -> str:
    """The storage to use: --storage, else what tune.json recorded, else `default` (sqlite, or journal
    for a cluster); another storage than the recorded one is refused (the trials are in that one)."""
    old = (recorded or {}).get("storage")
    if option is None:
        if old is not None and "***" in old:
            raise SpecError(f"--storage: this tune's study is in {old} (tune.json); give its URL with the password")
        return old or default
    if old is not None and masked(option) != old:
        raise SpecError(f"--storage: this tune's study is in {old} (tune.json), not {masked(option)}; rerun with "
                        "that storage, or give the tune another name")
    return option


def write_recorded(tune: TuneSpec, tune_dir: Path, label: str) -> None:
    data = {"kind": "noisecli tune", "definition": tune.definition(), "storage": masked(label),
            "studies": {k: f"{tune.name}/{k}" for k in tune.studies()}}
    atomic_write(tune_dir / TUNE_JSON, json.dumps(data, indent=2, default=str) + "\n")


def _finite(v: Any) -> float | None:
    return v if isinstance(v, (int, float)) and math.isfinite(v) else None


def trial_row(kind: str, t) -> dict[str, Any]:
    state = t.state.name.lower()
    if state == "fail" and "stopped" in t.user_attrs:
        state = "retried"  # its worker died or was stopped: the same run folder was queued again
    return {"kind": kind, "number": t.number, "state": state, "value": _finite(t.value),
            "params": dict(t.params), "run": t.user_attrs.get("run"), "pruned_at": t.user_attrs.get("pruned_at"),
            "outcome": t.user_attrs.get("outcome") or t.user_attrs.get("stopped"),
            "retry_of": t.system_attrs.get("failed_trial"),
            "intermediate": {str(k): _finite(v) for k, v in sorted(t.intermediate_values.items())}}


def best_of(rows: list[dict], higher: bool) -> dict | None:
    done = [r for r in rows if r["state"] == "complete" and r["value"] is not None]
    if not done:
        return None
    return sorted(done, key=lambda r: ((-r["value"] if higher else r["value"]), r["number"]))[0]


def importance(study) -> dict[str, float] | None:
    """Optuna's parameter importances (fANOVA) where a study searches two or more parameters."""
    optuna = import_optuna()
    done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if len(done) < 3 or len({p for t in done for p in t.params}) < 2:
        return None
    try:
        return {k: round(float(v), 4) for k, v in optuna.importance.get_param_importances(study).items()}
    except Exception:  # noqa: BLE001 - too few distinct values to fit: no importances, not a failed tune
        return None


def snapshot(tune: TuneSpec, studies: dict, label: str, with_importance: bool = False) -> dict:
    rows = [trial_row(kind, t) for kind, study in studies.items() for t in study.get_trials(deepcopy=False)
            if t.user_attrs.get("run")]
    per_kind = {}
    for kind, study in studies.items():
        mine = [r for r in rows if r["kind"] == kind]
        per_kind[kind] = {"best": best_of(mine, tune.higher), "budget": tune.budgets()[kind],
                          "importance": importance(study) if with_importance else None}
    return {"name": tune.name, "objective": tune.objective, "direction": tune.direction, "storage": masked(label),
            "trials_budget": tune.trials, "pruner": tune.pruner, "sampler": tune.sampler, "seeds": tune.seeds,
            "confirm_seeds": tune.confirm_seeds, "studies": per_kind, "trials": rows}


def write_snapshot(tune_dir: Path, data: dict) -> None:
    atomic_write(tune_dir / TRIALS_JSON, json.dumps(data, indent=2, default=str) + "\n")

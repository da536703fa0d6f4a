"""Experiment trackers (`output.tracker`): TensorBoard, Weights & Biases, MLflow.

They receive what metrics.csv holds, at each evaluation, plus the train loss of every step;
the CSV/JSONL files stay the record. The per-step losses are kept on the device and sent at
the next evaluation, so a tracker adds no host sync to the step. Runs of a sweep are grouped
under the sweep's name (W&B group, MLflow experiment; TensorBoard by folder). Only the named
tracker's package is imported, and only when a run uses it.

    tensorboard  event files in <run>/tensorboard (tensorboard --logdir runs)
    wandb        honours WANDB_MODE (offline, disabled) and WANDB_PROJECT (default: noisecli);
                 files under <run>/wandb; a resumed run continues the same W&B run
    mlflow       MLFLOW_TRACKING_URI, else a local store in <runs folder>/mlruns; a resumed run
                 continues the same MLflow run
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from noisecli.errors import SpecError
from noisecli.spec import flatten

_SET_BY_US: dict[str, str] = {}  # environment variables this process set for W&B, and to what


class Tracker:
    """`none`: every call a no-op."""

    def log_steps(self, first_step: int, losses: list[float]) -> None: ...  # train loss of steps first_step+1...
    def log_eval(self, row: dict[str, Any]) -> None: ...
    def log_final(self, numbers: dict[str, float], step: int) -> None: ...  # final.json's, "selected/test_acc"...
    def close(self) -> None: ...


def final_numbers(final: dict[str, Any]) -> dict[str, float]:
    """final.json's numbers as tracker metrics: `selected/test_acc`, `final/robust_test_loss`, ...
    (the verdict's test metrics, robustness and sharpness, which no evaluation row holds)."""
    return {f"{part}/{k}": float(v) for part in ("selected", "final") for k, v in (final.get(part) or {}).items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "step"}


def _numbers(row: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in row.items() if isinstance(v, (int, float)) and k not in ("step",)}


class TensorBoard(Tracker):
    def __init__(self, run_path: Path, group: str | None, spec: dict):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(run_path / "tensorboard"))
        self.writer.add_text("spec", "```\n" + json.dumps(spec, indent=2) + "\n```")

    def log_steps(self, first_step: int, losses: list[float]) -> None:
        for i, loss in enumerate(losses, start=first_step + 1):
            self.writer.add_scalar("train_loss_step", loss, i)

    def log_eval(self, row: dict[str, Any]) -> None:
        for key, value in _numbers(row).items():
            self.writer.add_scalar(key, value, row["step"])
        self.writer.flush()

    def log_final(self, numbers: dict[str, float], step: int) -> None:
        for key, value in numbers.items():
            self.writer.add_scalar(key, value, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class WandB(Tracker):
    def __init__(self, run_path: Path, group: str | None, spec: dict):
        import os

        os.environ.setdefault("WANDB_SILENT", "true")  # its banner and summary would clutter our display
        # its caches, staging area and service logs would go under ~/.cache and ~/.local: keep
        # them in the run folder unless the user says otherwise
        for var, sub in (("WANDB_CACHE_DIR", "cache"), ("WANDB_DATA_DIR", "data")):
            if os.environ.get(var) in (None, _SET_BY_US.get(var)):  # each run its own, a user's setting kept
                _SET_BY_US[var] = os.environ[var] = str(run_path / "wandb" / sub)
        import wandb

        self.wandb = wandb
        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", "noisecli"), group=group, name=spec["name"],
                              id=_stable_id(run_path), resume="allow", dir=str(run_path), config=spec,
                              reinit="create_new")

    def log_steps(self, first_step: int, losses: list[float]) -> None:
        for i, loss in enumerate(losses, start=first_step + 1):
            self.run.log({"train_loss_step": loss}, step=i)

    def log_eval(self, row: dict[str, Any]) -> None:
        self.run.log(_numbers(row), step=row["step"])

    def log_final(self, numbers: dict[str, float], step: int) -> None:
        self.run.summary.update(numbers)  # W&B's place for a run's end results

    def close(self) -> None:
        self.run.finish()


class MLflow(Tracker):
    def __init__(self, run_path: Path, group: str | None, spec: dict):
        import os

        import mlflow

        from noisecli.runs import atomic_write  # at call time: tests replace it to fill the disk

        self.mlflow = mlflow
        uri = os.environ.get("MLFLOW_TRACKING_URI")
        if uri is None:  # a local store beside the runs; MLflow 3 asks to confirm its file store
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
            uri = (run_path.parent / "mlruns").resolve().as_uri()
        self.client = mlflow.MlflowClient(tracking_uri=uri)
        name = group or "noisecli"
        experiment = self.client.get_experiment_by_name(name)
        experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(name)
        ids = run_path / ".mlflow_run_id"  # a resumed run continues its MLflow run
        if ids.exists():
            self.run_id = ids.read_text().strip()
        else:
            self.run_id = self.client.create_run(experiment_id, run_name=spec["name"]).info.run_id
            atomic_write(ids, self.run_id)
            for key, value in list(flatten(spec).items())[:500]:
                self.client.log_param(self.run_id, key, str(value)[:500])

    def log_steps(self, first_step: int, losses: list[float]) -> None:
        from mlflow.entities import Metric

        self.client.log_batch(self.run_id, metrics=[Metric("train_loss_step", loss, 0, i)
                                                    for i, loss in enumerate(losses, start=first_step + 1)])

    def log_eval(self, row: dict[str, Any]) -> None:
        from mlflow.entities import Metric

        self.client.log_batch(self.run_id, metrics=[Metric(k, v, 0, row["step"]) for k, v in _numbers(row).items()])

    def log_final(self, numbers: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        self.client.log_batch(self.run_id, metrics=[Metric(k, v, 0, step) for k, v in numbers.items()])

    def close(self) -> None:
        self.client.set_terminated(self.run_id)


def _stable_id(run_path: Path) -> str:
    import hashlib

    return hashlib.sha1(str(run_path.resolve()).encode()).hexdigest()[:16]


# output.tracker -> its class (the names, and the package each needs, are catalog.TRACKER_PACKAGES')
TRACKERS = {"tensorboard": TensorBoard, "wandb": WandB, "mlflow": MLflow}


def open_tracker(kind: str, run_path: Path, spec: dict) -> Tracker:
    """The tracker `output.tracker` names, for the run in `run_path`; runs of a sweep (a folder
    with sweep.json) are grouped under the sweep's name."""
    if kind == "none":
        return Tracker()
    group = run_path.parent.name if (run_path.parent / "sweep.json").exists() else None
    try:
        return TRACKERS[kind](run_path, group, spec)
    except Exception as e:  # noqa: BLE001 - a tracker that cannot start (no login, a bad URI) is one line
        raise SpecError(f"output.tracker: {kind} could not start: {type(e).__name__}: "
                        f"{str(e).strip().splitlines()[0][:200] if str(e).strip() else ''}") from None

"""The declared training state: what a run carries from step to step and into its checkpoints.

`TrainState` is the progress (step, the rows written so far, the best val loss, the time
trained) and the `Interval`: the sums the steps since the last evaluation added up on the
device, by name, read to the host at the next evaluation. Strategies add to the interval;
evaluations read and reset it; checkpoints hold it, so a run resumed between evaluations
reports the interval it would have reported uninterrupted. Under `--batched` the stack holds
one interval of (K,) sums and hands member k its slice (`member`) before the member's
evaluation row and checkpoint.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

from noisecli.runs import CHECKPOINT_FORMAT
from noisecli.spec import spec_to_dict

# name -> what it adds up per step: the training loss (noised inputs), the pre-clip gradient
# norm (0 on a step the fp16 scaler skipped), the steps the scaler skipped (inf/nan gradients)
INTERVAL_SUMS = ("loss", "grad_norm", "skipped")
# what selection on val carries across a resume: the selected checkpoint's step and test metrics,
# and early stopping's patience counter
SELECTION = ("best_step", "best_test", "since_best", "best_watched", "stopped_early")


class Interval:
    """The sums of the steps since the last evaluation, on the device; `step_losses` keeps each
    step's loss for a tracker (None without one)."""

    def __init__(self, device: torch.device, tracked: bool = False, shape: tuple = ()):
        self.sums = {name: torch.zeros(shape, device=device) for name in INTERVAL_SUMS}
        self.steps = 0
        self.step_losses: list[torch.Tensor] | None = [] if tracked else None

    def add(self, loss: torch.Tensor, grad_norm: torch.Tensor, skipped: torch.Tensor | None = None) -> None:
        self.sums["loss"] += loss
        if self.step_losses is not None:  # for a tracker: sent at the next evaluation, no sync here
            self.step_losses.append(loss)
        if skipped is not None:
            self.sums["skipped"] += skipped
        self.sums["grad_norm"] += grad_norm
        self.steps += 1

    def reset(self) -> None:
        for s in self.sums.values():
            s.zero_()
        self.steps = 0
        if self.step_losses is not None:
            self.step_losses = []

    def state_dict(self) -> dict[str, Any]:
        return {"loss": self.sums["loss"], "grad_norm": self.sums["grad_norm"], "steps": self.steps,
                "skipped": self.sums["skipped"],
                # a tracker's per-step losses not sent yet (an interruption between evaluations)
                "step_losses": torch.stack(self.step_losses).cpu() if self.step_losses else None}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        device = self.sums["loss"].device
        for name in INTERVAL_SUMS:
            if name in state:  # `skipped` is newer than the others
                self.sums[name] = state[name].to(device)
        self.steps = state["steps"]
        pending = state.get("step_losses")
        if self.step_losses is not None and pending is not None:
            self.step_losses = list(pending.to(device).unbind())

    # ---- a stack of members' intervals (sweep --batched)
    @classmethod
    def stacked(cls, members: list["Interval"]) -> "Interval":
        lead = members[0]
        out = cls(lead.sums["loss"].device, lead.step_losses is not None, (len(members),))
        out.sums = {n: torch.stack([m.sums[n] for m in members]).float() for n in INTERVAL_SUMS}
        out.steps = lead.steps
        if lead.step_losses:
            out.step_losses = list(torch.stack([torch.stack(m.step_losses) for m in members], 1).unbind())
        return out

    def member(self, k: int, into: "Interval") -> None:
        """Member k's share of this stacked interval, written into that member's own interval."""
        into.sums = {n: s[k].clone() for n, s in self.sums.items()}
        into.steps = self.steps
        if into.step_losses is not None:
            into.step_losses = [losses[k] for losses in self.step_losses or []]


@dataclass
class TrainState:
    interval: Interval
    step: int = 0
    rows: list[dict[str, Any]] = field(default_factory=list)
    best_val: float = math.inf  # the best val loss so far: best.pt's
    elapsed: float = 0.0  # seconds of training, over every start
    best_step: int | None = None  # the evaluation best.pt holds (the selected checkpoint)
    best_test: dict[str, float] | None = None  # the test split's metrics at best_step
    since_best: int = 0  # evaluations without improvement on the early-stopping metric (patience)
    best_watched: float | None = None  # the early-stopping metric's best value so far
    stopped_early: str | None = None  # why training ended before its last step

    def epoch(self, steps_per_epoch: int) -> int:
        return math.ceil(self.step / steps_per_epoch)


def checkpoint(run) -> dict[str, Any]:
    """Everything exact resume needs, from a run (a Trainer): its model, optimizer, scaler, every
    generator (torch's, the data order's, each noise's), the state and the spec."""
    rng = {"torch": torch.get_rng_state(), "batches": run.batches.state_dict(),
           "noise": [n.state_dict() for n in run.noises]}
    if run.mixup is not None:
        rng["mixup"] = run.mixup.state_dict()
    if run.device.type == "cuda":
        rng["cuda"] = torch.cuda.get_rng_state(run.device)
    s = run.state
    return {
        "format": CHECKPOINT_FORMAT,
        "model": model_state(run.raw_model),
        "model_part": "trainable" if getattr(run.raw_model, "trainable_only", False) else "all",
        "optimizer": run.optimizer.state_dict(),
        "scaler": run.precision.scaler.state_dict(),
        "step": s.step,
        "epoch": s.epoch(run.steps_per_epoch),
        "rng": rng,
        "interval": s.interval.state_dict(),
        "rows": s.rows,
        "best_val_loss": s.best_val,
        "elapsed": s.elapsed,
        "selection": {name: getattr(s, name) for name in SELECTION},
        "spec": spec_to_dict(run.spec),
    }


def restore(run, saved: dict[str, Any]) -> None:
    """`checkpoint`'s inverse: the run continues exactly where the checkpoint was written."""
    load_model_state(run.raw_model, saved)
    run.optimizer.load_state_dict(saved["optimizer"])
    run.precision.scaler.load_state_dict(saved["scaler"])
    torch.set_rng_state(saved["rng"]["torch"])
    if "cuda" in saved["rng"] and run.device.type == "cuda":
        torch.cuda.set_rng_state(saved["rng"]["cuda"], run.device)
    run.batches.load_state_dict(saved["rng"]["batches"])
    for noise, s in zip(run.noises, saved["rng"]["noise"]):
        noise.load_state_dict(s)
    if run.mixup is not None and "mixup" in saved["rng"]:
        run.mixup.load_state_dict(saved["rng"]["mixup"])
    s = run.state
    s.interval.load_state_dict(saved["interval"])
    s.step, s.rows, s.best_val, s.elapsed = saved["step"], list(saved["rows"]), saved["best_val_loss"], \
        saved["elapsed"]
    for name, value in saved.get("selection", {}).items():
        setattr(s, name, value)
    if "selection" not in saved and s.rows:  # written before selection was recorded: the best row's step
        s.best_step = min(s.rows, key=lambda r: r["val_loss"])["step"]


def model_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's state dict; for a LoRA run (`trainable_only`: models/lora.py) the trainable
    tensors alone, since the frozen base is rebuilt from the spec exactly as it was built."""
    if getattr(model, "trainable_only", False):
        return {n: _own(p.detach()) for n, p in model.named_parameters() if p.requires_grad}
    return {k: _own(v) for k, v in model.state_dict().items()}


def load_model_state(model: torch.nn.Module, saved: dict[str, Any]) -> None:
    """`model_state`'s inverse, from a checkpoint; a RuntimeError when the tensors do not fit."""
    if saved.get("model_part", "all") == "all":
        model.load_state_dict(saved["model"])
        return
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    if sorted(trainable) != sorted(saved["model"]):  # the base's tensors are not there to say so
        raise RuntimeError(f"the checkpoint holds {len(saved['model'])} trainable tensors, the model "
                           f"trains {len(trainable)} (another model.lora?)")
    model.load_state_dict(saved["model"], strict=False)


def _own(t: torch.Tensor) -> torch.Tensor:
    """A tensor that is a view into a larger one (a batched sweep's member) is copied, since
    torch.save would write the whole storage it views; any other tensor is saved as it is."""
    if t.untyped_storage().nbytes() != t.numel() * t.element_size():
        return t.detach().clone()
    return t

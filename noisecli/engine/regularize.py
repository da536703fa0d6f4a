"""The classical regularizers that act inside the training step: label smoothing (in the loss)
and mixup (on the batch and its targets). Dropout lives in the models and weight decay in
AdamW's parameter groups; early stopping is a policy of engine/evaluation.py.

Both act on the training loss only: every evaluation (val, test, the clean train loss, the
probes) is the plain loss, so runs with and without them compare on the same scale.

Mixup (Zhang et al., 2018, and the reference implementation's `mixup_data`): each batch is
mixed with a shuffled copy of itself, x' = lam x + (1 - lam) x[perm], and the loss is
lam CE(out, y) + (1 - lam) CE(out, y[perm]), lam ~ Beta(alpha, alpha), one lam per batch. The
draws come from the run's own streams (seeded by the spec's seed, checkpointed): lam from a
host stream (a Python float), the permutation from a generator on the device, so the step
never waits on the device.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch
from torch.nn import functional as F

from noisecli.errors import SpecError

MIXUP_STREAM = 7_919  # the mixup stream's offset from the run's seed
TASK_WORDS = {"classification": "classification", "regression": "regression", "lm": "language modelling",
              "sft": "instruction data"}


def check_regularizers(t, data_kind: str, data) -> None:
    """What only the loaded data can tell: label smoothing needs class labels (classification, lm,
    sft), mixup continuous inputs with class labels."""
    task = TASK_WORDS.get(data.task, data.task)
    problems = []
    if t.label_smoothing and data.task == "regression":
        problems.append(f"train.label_smoothing: smooths class labels; {data_kind} data is {task}")
    if t.mixup and (data.task != "classification" or data.is_tokens):
        problems.append(f"train.mixup: mixes continuous inputs of classification data; {data_kind} data is {task}")
    if problems:
        raise SpecError(problems)


@dataclass
class Mixed:
    """Targets of a mixed batch: y for the lam share, y_b (y shuffled) for the rest."""

    y: torch.Tensor
    y_b: torch.Tensor
    lam: float

    def share(self, share) -> "Mixed":
        """This rank's rows (DDP), the mixing kept."""
        return Mixed(share(self.y), share(self.y_b), self.lam)


def classification_loss(out: torch.Tensor, y, reduction: str, label_smoothing: float) -> torch.Tensor:
    """Cross-entropy over the last dim (ignore_index rows, padding and prompts, count nowhere),
    smoothed by `label_smoothing`; for `Mixed` targets, lam of one plus (1 - lam) of the other."""
    flat = out.reshape(-1, out.shape[-1])
    if isinstance(y, Mixed):
        a = F.cross_entropy(flat, y.y.reshape(-1), reduction=reduction, label_smoothing=label_smoothing)
        b = F.cross_entropy(flat, y.y_b.reshape(-1), reduction=reduction, label_smoothing=label_smoothing)
        return y.lam * a + (1 - y.lam) * b
    return F.cross_entropy(flat, y.reshape(-1), reduction=reduction, label_smoothing=label_smoothing)


class Mixup:
    """train.mixup {alpha}: the batch mixer, with its own checkpointed stream."""

    def __init__(self, alpha: float, seed: int, device: torch.device):
        self.alpha = alpha
        self.rng = random.Random(seed + MIXUP_STREAM)  # lam: a host float, never read back from the device
        self.generator = torch.Generator(device=device).manual_seed(seed + MIXUP_STREAM)  # perm: on the device

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, Mixed]:
        lam = self.rng.betavariate(self.alpha, self.alpha)
        perm = torch.randperm(x.shape[0], generator=self.generator, device=x.device)
        return lam * x + (1 - lam) * x[perm], Mixed(y, y[perm], lam)

    def state_dict(self) -> dict:
        version, internal, gauss = self.rng.getstate()
        return {"version": version, "internal": list(internal), "gauss": gauss, "perm": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.rng.setstate((state["version"], tuple(state["internal"]), state["gauss"]))
        self.generator.set_state(state["perm"])

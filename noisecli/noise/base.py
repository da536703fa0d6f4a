"""The interface every noise kind implements, and the factor schedule.

A kind touches the training step only through these hooks, called by the trainer in
this order within one step (each a no-op unless a kind overrides it):

    x = transform_input(x, f, y)  # input, token: a noised copy of the batch (targets stay clean)
    before_forward(f)             # weight: perturb the parameters in place
    loss = model(x) ... backward  # forward hooks (embedding, activation) act here
    after_backward(f)             # weight: restore the clean parameters
    clip grad norm
    on_gradients(f)               # gradient: add noise to .grad
    optimizer.step()
    after_step(f)                 # anticorrelated: move the perturbation

`attach(model)` / `detach()` bracket training (forward hooks); hooks act only while the
model is in training mode, so evaluation is always clean. `before_eval()` / `after_eval()`
bracket each evaluation for the one kind that keeps a perturbation in the weights
between steps (anticorrelated). Every draw comes from
`self.generator`, seeded from the run's seed and saved in checkpoints.

With several processes (torchrun) a kind draws what one process would draw: input-level
kinds draw for the global batch (`ctx.global_batch` rows; each rank keeps its own), and
parameter and gradient kinds draw the same values on every rank. A kind for which that
would cost too much sets `per_rank`, and its ranks other than 0 draw their own streams.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from noisecli.data import Dataset
from noisecli.distributed import World
from noisecli.spec import NoiseSpec


@dataclass
class NoiseContext:
    model: nn.Module
    dataset: Dataset
    total_steps: int
    device: torch.device
    seed: int
    world: World = field(default_factory=World)
    global_batch: int = 0  # rows of the global batch this step (set by the trainer under torchrun)


def schedule_factor(spec: NoiseSpec, step: int, total_steps: int) -> float:
    """The factor at optimizer step `step` (0-based): warmup ramp, then the decay schedule."""
    f = spec.factor
    if spec.warmup_steps and step < spec.warmup_steps:
        f *= (step + 1) / (spec.warmup_steps + 1)
    progress = min(1.0, step / max(1, total_steps))
    if spec.schedule == "linear":
        f *= 1.0 - progress
    elif spec.schedule == "cosine":
        f *= 0.5 * (1.0 + math.cos(math.pi * progress))
    return f


class Noise:
    """The no-op kind (`none`) and the base of every other kind."""

    per_rank = False  # True: ranks other than 0 draw their own stream (see the module's note)

    def __init__(self, spec: NoiseSpec, ctx: NoiseContext, index: int = 0):
        self.spec = spec
        self.ctx = ctx
        self.generator = torch.Generator(device=ctx.device)
        # distinct, reproducible streams per entry, independent of the data order's stream
        self.generator.manual_seed(ctx.seed * 1_000_003 + 7919 * (index + 1))

    def factor(self, step: int) -> float:
        return schedule_factor(self.spec, step, self.ctx.total_steps)

    # ---- hooks (no-ops here)
    def attach(self, model: nn.Module) -> None: ...
    def detach(self) -> None: ...
    def transform_input(self, x: torch.Tensor, factor: float, y: torch.Tensor | None = None) -> torch.Tensor:
        return x  # y: the batch's targets, for kinds that must tell prompt from response (sft)
    def before_forward(self, factor: float) -> None: ...
    def after_backward(self, factor: float) -> None: ...
    def on_gradients(self, factor: float) -> None: ...
    def after_step(self, factor: float) -> None: ...
    def before_eval(self) -> None: ...
    def after_eval(self) -> None: ...

    # ---- checkpointing: the generator and any state a kind carries between steps
    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])


class NoNoise(Noise):
    """`none`: the baseline. Its factor is reported as 0 whatever the spec says."""

    def factor(self, step: int) -> float:
        return 0.0

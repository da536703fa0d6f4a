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

`attach(model)` / `detach()` bracket training. A kind that acts inside the forward subclasses
`ForwardNoise`: it names the modules it acts on and says how it draws and what it adds,
and the base registers the forward hooks, so that a stacked forward (`sweep --batched`) can
make each member's draws from the member's own generator and add them in one vmapped
forward with no code of the kind's own. A kind that registers hooks of its own in `attach`
cannot be stacked, and says so (`unstackable`): such points train one after another.
Hooks act only while the model is in training mode, so evaluation is always clean. `before_eval()` / `after_eval()`
bracket each evaluation for the one kind that keeps a perturbation in the weights
between steps (anticorrelated). Every draw comes from
`self.generator`, seeded from the run's seed and saved in checkpoints.

With several processes (torchrun) a kind draws what one process would draw: input-level
kinds draw for the global batch (`ctx.global_batch` rows; each rank keeps its own), and
parameter and gradient kinds draw the same values on every rank. A kind for which that
would cost too much sets `per_rank`, and its ranks other than 0 draw their own streams.
With train.grad_accum K a step is K forwards over slices of the batch: a forward kind draws
for the whole batch in each and keeps its slice, its generator set back to where the step
began before each (`begin_micro`), so the step draws what one forward would (K times the
draws' cost, none of their memory). Under gradient checkpointing the backward re-runs the
forward hooks; a re-run draws again from the state its first run drew from (`begin_backward`),
so the recomputed activations are the ones the forward used.
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
    global_batch: int = 0  # rows of the global batch this step (set by the strategy under torchrun or grad_accum)
    micro_batches: int = 1  # train.grad_accum: forwards per step, each over a slice of this rank's rows
    micro: tuple[int, int] | None = None  # the slice of this rank's rows the current forward holds
    recomputes: bool = False  # gradient checkpointing: the backward re-runs forward hooks

    @property
    def split(self) -> bool:
        """A forward holds only part of the step's batch (a rank's share, a micro-batch)."""
        return self.world.distributed or self.micro_batches > 1

    def rows_for(self, per_rank: bool, held: int) -> tuple[int, int]:
        """(the rows a forward kind draws for, the first of them this forward holds): the global
        batch, or for a per_rank kind this rank's rows; then this micro-batch's slice of them."""
        if not self.split:
            return held, 0
        first = self.micro[0] if self.micro else 0
        start, stop = self.world.rows(self.global_batch)
        if per_rank or not self.world.distributed:
            return stop - start, first
        return self.global_batch, start + first


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
    def begin_micro(self, index: int) -> None: ...  # grad_accum: forward `index` of the step begins
    def begin_backward(self) -> None: ...  # gradient checkpointing: the forward hooks may run again
    def end_backward(self) -> None: ...

    @classmethod
    def stacked(cls, noises: list["Noise"], stacked_of) -> object | None:
        """This entry of every member of a stack acting at once (engine/stacked.py), or None: each
        member's hooks are called in turn. `noises` holds each member's entry, None for a member
        without it (a `none` point: it adds nothing); `stacked_of(p)` is the stacked tensor a
        member's parameter is a slice of. A form has the hooks it needs, each taking the
        members' factors; parameter kinds use it to make one call on the stacked tensors."""
        return None

    # ---- checkpointing: the generator and any state a kind carries between steps
    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])


def unstackable(cls: type[Noise]) -> str | None:
    """Why a kind cannot train in a stack (None: it can). The base's step hooks act on the
    member's own parameters, gradients and batch, so they stack as they are; forward hooks
    stack through `ForwardNoise`; a kind with its own `attach` acts where a stack cannot see."""
    if issubclass(cls, ForwardNoise) or cls.attach is Noise.attach:
        return None
    return (f"noise kind {cls.__name__} registers its own hooks in attach() (not through ForwardNoise), "
            "which a stacked forward does not run")


class ForwardNoise(Noise):
    """A kind that adds noise to the outputs of some modules during the training forward.

    A subclass sets `self.names` (the modules, by name in the model) in its constructor and
    defines `draw` (from `self.generator`) and `added` (pure tensor arithmetic, so a stack can
    apply it under vmap, with `factor` a 0-dim tensor there). A module's output `h` (the
    first item if it returns a tuple) becomes h + added(inputs, h, draw, factor).
    """

    names: list[str]

    def __init_subclass__(cls, **kwargs):
        """A kind that forgets `draw` or `added` is refused when its class is defined, not at its
        first training step."""
        super().__init_subclass__(**kwargs)
        missing = [m for m in ("draw", "added") if getattr(cls, m) is getattr(ForwardNoise, m)]
        if missing:
            raise TypeError(f"{cls.__name__} acts inside the forward (ForwardNoise) but defines no "
                            f"{' and no '.join(missing)}")

    def __init__(self, spec: NoiseSpec, ctx: NoiseContext, index: int = 0):
        super().__init__(spec, ctx, index)
        self.handles: list = []
        self.current = 0.0
        self.step_start = None  # grad_accum: the generator's state when the step's first forward began
        self.drawn_from: dict = {}  # gradient checkpointing: module -> the states its forward draws began at
        self.replaying = False

    def draw(self, shape, device, dtype) -> torch.Tensor:
        """This step's unscaled draw of `shape`, from `self.generator` (every subclass defines it)."""

    def added(self, inputs: tuple, h: torch.Tensor, draw: torch.Tensor, factor) -> torch.Tensor:
        """What is added to the output `h` (every subclass defines it; tensor arithmetic only)."""

    def draw_for(self, h: torch.Tensor) -> torch.Tensor:
        """This step's draw for output `h`: for the rows the step draws for (NoiseContext.rows_for),
        the rows this forward holds kept."""
        drawn, first = self.ctx.rows_for(self.per_rank, h.shape[0])
        if drawn == h.shape[0]:
            return self.draw(h.shape, h.device, h.dtype)
        return self.draw((drawn, *h.shape[1:]), h.device, h.dtype)[first: first + h.shape[0]]

    def begin_micro(self, index: int) -> None:
        if index == 0:
            self.step_start = self.generator.get_state()
        else:  # the same draws as the first forward: each keeps its own rows of them
            self.generator.set_state(self.step_start)
        self.drawn_from = {}

    def begin_backward(self) -> None:
        self.replaying = True

    def end_backward(self) -> None:
        self.replaying, self.drawn_from = False, {}

    def _draw_once(self, module: nn.Module, h: torch.Tensor) -> torch.Tensor:
        """draw_for(h); under gradient checkpointing, a re-run of `module`'s forward in the backward
        draws from the state its forward drew from, and the stream is left where it was."""
        if not self.ctx.recomputes:
            return self.draw_for(h)
        if not self.replaying:
            self.drawn_from.setdefault(module, []).append(self.generator.get_state())
            return self.draw_for(h)
        now = self.generator.get_state()
        self.generator.set_state(self.drawn_from[module].pop(0))
        try:
            return self.draw_for(h)
        finally:
            self.generator.set_state(now)

    def attach(self, model: nn.Module) -> None:
        modules = dict(model.named_modules())
        self.handles = [modules[name].register_forward_hook(self._hook) for name in self.names]

    def detach(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []

    def before_forward(self, factor: float) -> None:
        self.current = factor

    def _hook(self, module: nn.Module, inputs, output):
        if not module.training or self.current == 0:
            return None  # evaluation, or factor 0: the output as it is (and nothing drawn)
        h = output[0] if isinstance(output, tuple) else output  # some transformers blocks return tuples
        h = h + self.added(inputs, h, self._draw_once(module, h), self.current)
        return (h, *output[1:]) if isinstance(output, tuple) else h


class NoNoise(Noise):
    """`none`: the baseline. Its factor is reported as 0 whatever the spec says."""

    def factor(self, step: int) -> float:
        return 0.0

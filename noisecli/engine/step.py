"""One training step, written once, and the strategies that carry it out.

    lr  <- the schedule at this step             factors <- each noise entry's, at this step
    x, y <- the next batch, through transform_input   (input, token noise), then mixup (train.mixup)
    before_forward                               (weight noise perturbs the parameters)
    loss <- forward (forward-acting kinds act here; label smoothing) ; backward
            (train.grad_accum K: K forwards and backwards over slices of the batch, gradients summed)
    after_backward                               (weight noise restores them)
    grad_norm <- clip                            (pre-clip norm)
    on_gradients                                 (gradient noise)
    optimizer step
    after_step                                   (anticorrelated noise moves its perturbation)
    the interval adds the loss and grad norm     (on the device: no host sync in the step)

A strategy owns what differs between the ways a step runs: `OneProcess` (the model as it
is), `DDP` (torchrun: every rank draws the global batch and its input noise, keeps its rows,
and scales its summed loss so that DDP's average of the ranks' gradients is the global
batch's mean-loss gradient) and `stacked.Stacked` (`sweep --batched`: K members in one
vmapped forward, clipped one by one, one AdamW over stacked tensors). The hooks are called
through `NoiseHooks`, over one noise list per member, in the order above.

Gradient accumulation (`forward_backward`) splits the batch after everything drawn for the
whole batch (input noise, mixup): each slice's loss is a sum over the whole batch's targets,
so the summed gradients are the whole batch's mean-loss gradient, and forward kinds draw for
the whole batch and keep the slice's rows (noise/base.py): K micro-batches take the step one
forward would (the equality a test holds, for every kind), save for dropout masks.
"""

from __future__ import annotations

import contextlib

import torch

from noisecli.distributed import rank_seed
from noisecli.engine.optim import loss_fn, lr_at, set_lr
from noisecli.engine.regularize import Mixed
from noisecli.metrics import count


class NoiseHooks:
    """Every member's noise entries (one member except in a stack), each hook called in turn."""

    def __init__(self, members: list[list]):
        self.members = members

    def factors(self, step: int) -> list[list[float]]:
        return [[noise.factor(step) for noise in noises] for noises in self.members]

    def call(self, hook: str, factors: list[list[float]]) -> None:
        for noises, fs in zip(self.members, factors):
            for noise, f in zip(noises, fs):
                getattr(noise, hook)(f)

    def each(self, method: str, *args) -> None:
        """A hook without a factor (before_eval, after_eval, detach, begin_micro) on every entry."""
        for noises in self.members:
            for noise in noises:
                getattr(noise, method)(*args)


def train_step(s, step: int) -> tuple[float, list[list[float]]]:
    """One optimizer step of strategy `s` at step `step`: the sequence in the module's note.
    Returns the lr and each member's factors (for the evaluation's row)."""
    lr = lr_at(s.train_spec, step, s.total_steps)
    set_lr(s.optimizer, lr)
    factors = s.hooks.factors(step)
    x, y = s.batch(factors)
    s.hooks.call("before_forward", factors)
    loss = forward_backward(s, x, y)  # against clean targets
    s.hooks.call("after_backward", factors)
    grad_norm = s.clip()
    s.hooks.call("on_gradients", factors)
    s.optimizer_step()
    s.hooks.call("after_step", factors)
    s.record(loss.detach(), grad_norm)
    return lr, factors


def forward_backward(s, x: torch.Tensor, y) -> torch.Tensor:
    """The step's loss and its gradients: one forward and backward, or train.grad_accum K of them,
    over consecutive slices of this process's rows (the loss returned is the whole batch's)."""
    k = s.train_spec.grad_accum
    if k == 1:
        loss = s.loss(x, y)
        s.backward(loss)
        return loss
    run, (size, extra) = s.run, divmod(x.shape[0], k)  # as even as the rows allow (an epoch's last batch)
    if not run.world.distributed:  # under torchrun DDP.batch has set it
        run.noise_ctx.global_batch = x.shape[0]
    scale = s.per_target(y)
    total = None
    for i in range(k):
        start = i * size + min(i, extra)
        rows = slice(start, start + size + (i < extra))
        run.noise_ctx.micro = (rows.start, rows.stop)
        s.hooks.each("begin_micro", i)
        with s.accumulating(last=i == k - 1):
            loss = s.loss_sum(x[rows], y.share(lambda t: t[rows]) if isinstance(y, Mixed) else y[rows]) * scale
            s.backward(loss)
        total = loss.detach() if total is None else total + loss.detach()
    run.noise_ctx.micro = None
    return total


class OneProcess:
    """The step on one model in one process. `run` is the Trainer that built the parts."""

    def __init__(self, run):
        self.run = run
        self.train_spec, self.total_steps, self.task = run.spec.train, run.total_steps, run.data.task
        self.optimizer, self.hooks = run.optimizer, run.hooks
        self.smoothing, self.mixup = run.spec.train.label_smoothing, run.mixup  # engine/regularize.py

    @property
    def scaler(self) -> torch.amp.GradScaler:
        return self.run.precision.scaler

    @property
    def autocast(self):
        return self.run.precision.autocast

    def batch(self, factors: list[list[float]]) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self.run.batches.next()
        for noise, f in zip(self.run.noises, factors[0]):
            x = noise.transform_input(x, f, y)
        if self.mixup is not None:  # each example noised as it comes, then the batch mixed
            x, y = self.mixup(x, y)
        return x, y

    def loss(self, x: torch.Tensor, y) -> torch.Tensor:
        with self.autocast:
            return loss_fn(self.run.model(x), y, self.task, label_smoothing=self.smoothing)

    def loss_sum(self, x: torch.Tensor, y) -> torch.Tensor:
        """A micro-batch's summed loss (forward_backward scales it by `per_target`)."""
        with self.autocast:
            return loss_fn(self.run.model(x), y, self.task, reduction="sum", label_smoothing=self.smoothing)

    def per_target(self, y) -> torch.Tensor | int:
        """What a summed loss is multiplied by to make the mean over the step's batch: 1 / its targets."""
        return 1 / count(y.y if isinstance(y, Mixed) else y, self.task)

    def accumulating(self, last: bool):
        return contextlib.nullcontext()

    def backward(self, loss: torch.Tensor) -> None:
        if self.run.noise_ctx.recomputes:  # gradient checkpointing re-runs the forward hooks here
            self.hooks.each("begin_backward")
            self.scaler.scale(loss).backward()
            self.hooks.each("end_backward")
        else:
            self.scaler.scale(loss).backward()

    def clip(self) -> torch.Tensor:
        self.scaler.unscale_(self.optimizer)
        return torch.nn.utils.clip_grad_norm_(self.run.params, self.run.clip, foreach=True)

    def optimizer_step(self) -> None:
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)

    def reseed(self) -> None:
        """Dropout masks and per-rank noise differ between ranks (identical masks on every rank
        hurt accuracy: transformers issue 31412); rank 0 keeps the stream of a single process."""
        run, rank = self.run, self.run.world.rank
        if not rank:
            return
        torch.manual_seed(rank_seed(run.spec.seed, rank, run.state.step))
        for i, noise in enumerate(run.noises):
            if noise.per_rank:
                noise.generator.manual_seed(rank_seed(run.spec.seed, rank, run.state.step, stream=i + 1))

    def record(self, loss: torch.Tensor, grad_norm: torch.Tensor) -> None:
        skipped = None
        if self.scaler.is_enabled():
            # an overflowed step is skipped by the scaler by design; its inf norm says nothing of
            # divergence, so it is counted (on the device) and left out of the interval's norm
            finite = torch.isfinite(grad_norm)
            skipped, grad_norm = ~finite, torch.where(finite, grad_norm, 0.0)
        self.run.state.interval.add(loss, grad_norm.detach(), skipped)
        self.run.state.step += 1


class DDP(OneProcess):
    """torchrun: the global batch and its input noise on every rank, each rank its rows."""

    def __init__(self, run):
        from torch.nn.parallel import DistributedDataParallel

        super().__init__(run)
        run.world.start(run.device)
        ddp = DistributedDataParallel(run.raw_model, device_ids=[run.device.index] if run.device.type == "cuda"
                                      else None)
        run.model = torch.compile(ddp) if run.spec.train.compile else ddp
        # evaluation runs the plain model: ranks see different numbers of eval batches, and
        # DDP's forward would try to broadcast buffers on each of them
        run.eval_model = run.raw_model
        self.reseed()

    def batch(self, factors: list[list[float]]) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = super().batch(factors)
        world = self.run.world
        self.targets = count(y.y if isinstance(y, Mixed) else y, self.task)  # of the global batch
        self.run.noise_ctx.global_batch = x.shape[0]
        return world.share(x), y.share(world.share) if isinstance(y, Mixed) else world.share(y)

    def loss(self, x: torch.Tensor, y) -> torch.Tensor:
        return self.loss_sum(x, y) * self.per_target(y)

    def per_target(self, y) -> torch.Tensor | int:
        """DDP averages over ranks: the mean over the global batch's targets."""
        return self.run.world.size / self.targets

    def accumulating(self, last: bool):
        """The gradients are all-reduced once a step, in the last micro-batch's backward."""
        return contextlib.nullcontext() if last else self.run.model.no_sync()

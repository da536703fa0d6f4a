"""`sweep --batched`: points that differ only in noise factor and seed, trained as one stacked model.

Every point keeps its own `Trainer`: its run folder, data order, noise objects with their
generators, checkpoints and rows, exactly as if it ran alone. Only the arithmetic is shared:
each member's parameters become views into stacked tensors (K, ...) (`p.data = P[k]`), the
forward and backward run once for all K members through `torch.func.vmap` over
`functional_call`, and one AdamW steps the stacked tensors (AdamW is elementwise, so that is
K independent AdamWs). Because the members' parameters are views, every noise kind's own
hooks act on them unchanged: input and token noise transform each member's batch, weight and
anticorrelated noise perturb each member's slice in place, gradient noise is added to each
member's slice of the stacked gradient, each from that member's generator, so member k draws
what its point alone draws. The kinds that act inside the forward (activation, embedding)
cannot draw from a member's generator under vmap, so each member's draws are made just before
the forward, in the order and shapes its hooks would draw them, and passed through vmap to
hooks on the shared template module. Gradient clipping is per member (one norm per member).

Dropout masks come from torch's global generator under vmap (`randomness="different"`), so a
model with dropout is not bit-for-bit its sequential twin; every noise draw is.
"""

from __future__ import annotations

import copy
import functools
import time
from contextlib import ExitStack, nullcontext
from pathlib import Path
from typing import Callable

import torch
from torch.func import functional_call, vmap

from noisecli.data import IGNORE
from noisecli.errors import BadInput, RunError, RunLocked
from noisecli.noise.activation import ActivationNoise
from noisecli.noise.base import Noise
from noisecli.noise.embedding import EmbeddingNoise, input_embedding
from noisecli.points import Outcome, PointDisplay, os_error_line, point_threads
from noisecli.signals import StopRequest
from noisecli.spec import Spec
from noisecli.trainer import Trainer, loss_fn, lr_at


class ForwardNoise:
    """Activation and embedding noise for a stacked forward: hooks on the shared template
    module add draws that were made beforehand from each member's own generator."""

    def __init__(self, template: torch.nn.Module, members: list[Trainer]):
        self.template = template
        modules = dict(template.named_modules())
        self.sites: list[tuple[int, torch.nn.Module]] = []  # (noise entry, module), hook order
        for i, noise in enumerate(members[0].noises):
            if isinstance(noise, ActivationNoise):
                self.sites += [(i, modules[name]) for name in noise.names]
            elif isinstance(noise, EmbeddingNoise):
                self.sites.append((i, input_embedding(template)))
        self.handles = [module.register_forward_hook(functools.partial(self._hook, j))
                        for j, (_, module) in enumerate(self.sites)]
        self.order: dict[tuple, list] = {}  # a member's input shape -> [(site, shape, dtype)] as the hooks fire
        self.recording: list | None = None
        self.feed: dict | None = None

    def _hook(self, site: int, module, inputs, output):
        if not module.training:
            return None
        h = output[0] if isinstance(output, tuple) else output
        if self.recording is not None:
            self.recording.append((site, h.shape, h.dtype))
            return None
        if not self.feed or site not in self.feed["draw"]:
            return None
        draw, alpha = self.feed["draw"][site], self.feed["alpha"].get(site)
        if alpha is None:  # activation: already scaled by the member's factor
            h = h + draw
        else:
            i = self.sites[site][0]
            h = h + self.noises_of_lead[i].scaled(inputs[0], draw, alpha)
        return (h, *output[1:]) if isinstance(output, tuple) else h

    def draws(self, members: list[Trainer], x: torch.Tensor) -> dict:
        """Each site's draws for every member (K, ...), made from the members' generators in the
        order their own hooks would draw them; a member at factor 0 draws nothing, as alone."""
        if not self.sites:
            return {}
        self.noises_of_lead = members[0].noises
        key = tuple(x.shape[1:])
        if key not in self.order:  # one probe forward per input shape finds the shapes and the order
            self.recording = []
            with torch.no_grad():
                self.template(x[0])
            self.order[key], self.recording = self.recording, None
        feed: dict = {"draw": {}, "alpha": {}}
        for site, shape, dtype in self.order[key]:
            i = self.sites[site][0]
            per_member, alphas = [], []
            for m in members:
                noise = m.noises[i]
                if noise.current == 0:
                    per_member.append(torch.zeros(shape, device=x.device, dtype=dtype))
                else:
                    d = noise.draw(shape, x.device, dtype)
                    per_member.append(d if isinstance(noise, EmbeddingNoise) else noise.current * d)
                alphas.append(noise.current)
            feed["draw"][site] = torch.stack(per_member)
            if isinstance(members[0].noises[i], EmbeddingNoise):
                feed["alpha"][site] = torch.tensor(alphas, device=x.device, dtype=dtype)
        return feed

    def close(self) -> None:
        for h in self.handles:
            h.remove()


def _uses(noise: Noise, hook: str) -> bool:
    return getattr(type(noise), hook) is not getattr(Noise, hook)


class BatchedTrainer:
    """K members (opened Trainers at the same step, same shapes and schedule) trained as one."""

    def __init__(self, members: list[Trainer], stop: StopRequest):
        self.stop = stop
        lead = members[0]
        self.task, self.device = lead.data.task, lead.device
        self.template = copy.deepcopy(lead.raw_model)  # the structure functional_call runs
        for module in self.template.modules():
            if hasattr(module, "explicit"):  # gpt attention: vmap has no rule for the fused kernel
                module.explicit = True
        self.template.train()
        self.forward_noise = ForwardNoise(self.template, members)
        self.names = [n for n, p in lead.raw_model.named_parameters() if p.requires_grad]
        self.buffer_names = [n for n, _ in lead.raw_model.named_buffers()]
        self.bind_grads = any(_uses(n, "on_gradients") for n in lead.noises)
        self.loss = vmap(self._member_loss, randomness="different")
        self.eval_sums = vmap(self._member_sums, in_dims=(0, 0, None, None), randomness="different")
        self.outcomes: list[Outcome] = []
        self._stack(members)

    # ------------------------------------------------------------------ the stack

    def _stack(self, members: list[Trainer]) -> None:
        """Stack the members' parameters, buffers and optimizer states; their parameters become
        views into the stack. Called again, without the diverged, when a member drops out."""
        self.members = members
        lead, t = members[0], members[0].spec.train
        self.params = [dict(m.raw_model.named_parameters()) for m in members]
        self.P = {n: torch.stack([p[n].detach() for p in self.params]).requires_grad_() for n in self.names}
        for k, p in enumerate(self.params):
            for n in self.names:
                p[n].data = self.P[n].detach()[k]
        self.B = {n: torch.stack([dict(m.raw_model.named_buffers())[n] for m in members])
                  for n in self.buffer_names}
        decay = [self.P[n] for n in self.names if self.params[0][n].dim() >= 2]  # the members' split
        no_decay = [self.P[n] for n in self.names if self.params[0][n].dim() < 2]
        # fused AdamW (CPU and CUDA): on stacked tensors a third of foreach's time on CPU; it is
        # elementwise like foreach, so still one AdamW per member
        fast = {"fused": True} if self.device.type in ("cuda", "cpu") else {"foreach": True}
        self.opt = torch.optim.AdamW([{"params": decay, "weight_decay": t.weight_decay},
                                      {"params": no_decay, "weight_decay": 0.0}],
                                     lr=t.lr, betas=tuple(t.betas), **fast)
        for n in self.names:  # a resumed member's moments come from its own checkpoint
            states = [m.optimizer.state.get(p[n]) for m, p in zip(members, self.params)]
            if all(states):
                self.opt.state[self.P[n]] = {"step": states[0]["step"].clone(),
                                             **{key: torch.stack([s[key] for s in states])
                                                for key in ("exp_avg", "exp_avg_sq")}}
        # the interval since the last evaluation (non-zero when the members resumed mid-interval)
        self.sum_loss = torch.stack([m.sum_loss for m in members]).float()
        self.sum_gn = torch.stack([m.sum_gn for m in members]).float()
        self.interval_steps = lead.interval_steps
        self.step_losses: list[torch.Tensor] = (
            list(torch.stack([torch.stack(m.step_losses) for m in members], 1).unbind())
            if lead.step_losses else [])

    def _hand_over(self, k: int) -> None:
        """Member k's Trainer gets its share of what the stack holds (the interval's sums, the
        optimizer's moments), so that its own record/checkpoint code sees what it would alone."""
        m = self.members[k]
        m.sum_loss, m.sum_gn = self.sum_loss[k].clone(), self.sum_gn[k].clone()
        m.interval_steps = self.interval_steps
        if m.step_losses is not None:
            m.step_losses = [losses[k] for losses in self.step_losses]
        self._sync_optimizer(k)

    def _sync_optimizer(self, k: int) -> None:
        """Member k's own optimizer gets its slice of the stacked moments (for its checkpoint)."""
        m = self.members[k]
        for n in self.names:
            state = self.opt.state.get(self.P[n])
            if state:
                m.optimizer.state[self.params[k][n]] = {
                    "step": state["step"].clone(), "exp_avg": state["exp_avg"][k].clone(),
                    "exp_avg_sq": state["exp_avg_sq"][k].clone()}
        for group in m.optimizer.param_groups:
            group["lr"] = self.opt.param_groups[0]["lr"]

    # ------------------------------------------------------------------ one step for every member

    def _member_loss(self, params, buffers, x, y, feed):
        self.forward_noise.feed = feed
        try:
            out = functional_call(self.template, (params, buffers), (x,))
        finally:
            self.forward_noise.feed = None
        return loss_fn(out, y, self.task)  # against clean targets

    def train_step(self) -> tuple[float, list[list[float]]]:
        members, lead = self.members, self.members[0]
        step = lead.step
        lr = lr_at(lead.spec.train, step, lead.total_steps)
        for group in self.opt.param_groups:
            group["lr"] = lr
        factors = [[noise.factor(step) for noise in m.noises] for m in members]
        xs, ys = [], []
        for m, fs in zip(members, factors):  # each member's own batch and input noise
            x, y = m.batches.next()
            for noise, f in zip(m.noises, fs):
                x = noise.transform_input(x, f, y)
            xs.append(x)
            ys.append(y)
        x, y = torch.stack(xs), torch.stack(ys)
        for m, fs in zip(members, factors):
            for noise, f in zip(m.noises, fs):
                noise.before_forward(f)
        feed = self.forward_noise.draws(members, x)
        with lead.autocast:
            losses = self.loss(self.P, self.B, x, y, feed)
        losses.sum().backward()  # member k's loss depends on member k's slice only
        for m, fs in zip(members, factors):
            for noise, f in zip(m.noises, fs):
                noise.after_backward(f)
        grad_norm = self._clip(lead.clip)
        if self.bind_grads:  # gradient noise adds to each member's .grad: make it its slice
            for n in self.names:
                grad = self.P[n].grad
                for k, p in enumerate(self.params):
                    p[n].grad = grad[k]
        for m, fs in zip(members, factors):
            for noise, f in zip(m.noises, fs):
                noise.on_gradients(f)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        for p in self.params if self.bind_grads else ():
            for n in self.names:
                p[n].grad = None
        for m, fs in zip(members, factors):
            for noise, f in zip(m.noises, fs):
                noise.after_step(f)
        self.sum_loss += losses.detach().float()
        self.sum_gn += grad_norm
        if lead.step_losses is not None:
            self.step_losses.append(losses.detach().float())
        self.interval_steps += 1
        for m in members:
            m.step += 1
        return lr, factors

    def _clip(self, max_norm: float) -> torch.Tensor:
        """clip_grad_norm_ for each member on its own: one norm per member over its gradients."""
        K = len(self.members)
        grads = [self.P[n].grad for n in self.names]
        norms = torch.stack([torch.linalg.vector_norm(g.reshape(K, -1), dim=1) for g in grads])  # (params, K)
        total = torch.linalg.vector_norm(norms, dim=0)  # (K,)
        coef = torch.clamp(max_norm / (total + 1e-6), max=1.0)
        for g in grads:
            g.mul_(coef.view(K, *([1] * (g.dim() - 1))).to(g.dtype))
        return total

    # ------------------------------------------------------------------ evaluation

    def _member_sums(self, params, buffers, x, y):
        out = functional_call(self.template, (params, buffers), (x,))
        total = loss_fn(out, y, self.task, reduction="sum")
        correct = (out.argmax(-1) == y).sum() if self.task == "classification" else torch.zeros((), device=x.device)
        return total, correct

    @torch.no_grad()
    def measure(self, split: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Trainer.measure for every member at once: (K,) loss sums and correct, and the count.
        The evaluation batches are the same for every member (same data, fixed windows)."""
        lead, K = self.members[0], len(self.members)
        total = torch.zeros(K, device=self.device)
        correct = torch.zeros(K, device=self.device)
        count = torch.zeros((), device=self.device)
        for x, y in lead.batches.eval_batches(split):
            with lead.autocast:
                t, c = self.eval_sums(self.P, self.B, x, y)
            total += t.float()
            correct += c
            count += (y != IGNORE).sum() if self.task == "sft" else y.numel()
        return total, correct, count

    def evaluate(self, lr: float, factors: list[list[float]], seconds: float) -> None:
        """Each member's row, checkpoint and status, through its own Trainer.record; a member
        that diverged is recorded as such and leaves the stack."""
        self.template.eval()
        for m in self.members:
            for noise in m.noises:
                noise.before_eval()
        val, train = self.measure("val"), self.measure("train")
        for m in self.members:
            for noise in m.noises:
                noise.after_eval()
        self.template.train()
        keep = []
        for k, m in enumerate(self.members):
            self._hand_over(k)
            try:
                m.record(lr, factors[k], seconds, (val[0][k], val[1][k], val[2]), (train[0][k], train[1][k], train[2]))
                keep.append(m)
            except RunError as e:
                self._leave(m, Outcome(m.spec.name, "diverged", str(e)))
        if len(keep) < len(self.members):
            for k in range(len(self.members)):
                self._sync_optimizer(k)
            if keep:
                self._stack(keep)  # the others go on without it
            else:
                self.members = []
        else:
            self.sum_loss.zero_()
            self.sum_gn.zero_()
            self.interval_steps = 0
            self.step_losses = []

    def _leave(self, m: Trainer, outcome: Outcome) -> None:
        for noise in m.noises:
            noise.detach()
        self.outcomes.append(outcome)

    # ------------------------------------------------------------------ the loop

    def train(self) -> list[Outcome]:
        """Train every member to the end, or to a stop request (every member saves)."""
        for m in self.members:
            m.run.write_status(batched=f"trained in a stack of {len(self.members)} points (sweep --batched)")
        try:
            with self.stop.catching(), ExitStack() as bars_stack:
                bars = {id(m): bars_stack.enter_context(m.display.progress(m.total_steps, m.step, m.run.name))
                        for m in self.members}
                self._loop(bars)
        except KeyboardInterrupt:  # a second Ctrl-C: stop now, the last checkpoints stand
            for m in self.members:
                m.run.write_status(state="interrupted", error="stopped without saving (second Ctrl-C)")
                self._leave(m, Outcome(m.spec.name, "interrupted", "stopped at once"))
        except Exception as e:  # noqa: BLE001 - any other failure is recorded in every member
            for m in self.members:
                self._leave(m, Outcome(m.spec.name, "failed", str(m.failed(e))))
        finally:
            self.forward_noise.close()
        return self.outcomes

    def _loop(self, bars: dict) -> None:
        tick = time.perf_counter()
        while self.members and self.members[0].step < self.members[0].total_steps and not self.stop.requested:
            lr, factors = self.train_step()
            for m in self.members:
                bars[id(m)].advance()
            lead = self.members[0]
            if lead.step % lead.eval_every == 0 or lead.step == lead.total_steps:
                self.evaluate(lr, factors, time.perf_counter() - tick)
                tick = time.perf_counter()
        for k, m in enumerate(self.members):
            if self.stop.requested:
                m.elapsed += time.perf_counter() - tick
                self._hand_over(k)
                self._leave(m, Outcome(m.spec.name, "interrupted", str(m.save_interrupted())))
            else:
                for noise in m.noises:
                    noise.detach()
                m.finish()
                self.outcomes.append(Outcome(m.spec.name, "completed", "", m.rows[-1]["val_loss"], m.best_val))


def _rewind(m: Trainer, step: int) -> bool:
    """Bring member `m`, one save ahead of the rest of its stack, back to `step`, the state its
    previous save holds (prev.pt; at step 0, the fresh start); False where no save holds it.

    A stack's members save one after another at each evaluation, so a kill in between leaves
    some a save ahead. Trained on as two stacks they would not be bitwise what the whole stack
    gives (a member's arithmetic depends on the stack's size: (K, ...) matmuls), so the ones
    ahead go back one save (retraining at most one evaluation interval) and the stack resumes whole."""
    prev = m.run.ckpt_dir / "prev.pt"
    if step == 0:
        if prev.exists() or m.step > m.eval_every:  # more than the one save a kill can leave
            return False
        tracked = m.step_losses is not None
        m.setup()  # what a fresh open gives
        m.step_losses = [] if tracked else None
    else:
        try:
            state = torch.load(prev, map_location="cpu", weights_only=True)
        except Exception:  # noqa: BLE001 - none, or damaged: it trains on from where it is
            return False
        if not isinstance(state, dict) or state.get("step") != step:
            return False
        m._load_state(state)
    m.run.write_metrics(m.rows)
    m.run.write_status(step=m.step, epoch=m.epoch, best_val_loss=None if not m.rows else m.best_val,
                       val_loss=m.rows[-1]["val_loss"] if m.rows else None)
    return True


def _rejoin(opened: list[Trainer], last: Trainer | None) -> None:
    """Members of one stack found at different steps: those its lagging members can be rejoined
    with (`_rewind`) are brought back to the earliest step; the others train on as their own
    stack. Torch's global generator is left as opening them in turn leaves it (`last` opened last)."""
    if len({m.step for m in opened}) < 2:
        return
    target = min(m.step for m in opened)
    rng = torch.get_rng_state()
    for m in opened:
        if m.step > target and _rewind(m, target) and m is last:
            rng = torch.get_rng_state()
    torch.set_rng_state(rng)


def train_group(specs: list[Spec], runs_dir: Path, report: Callable[[str, int, int], None],
                stop: StopRequest | None = None, threads: int | None = None) -> list[Outcome]:
    """Open every member's run as `train` would (skip, resume, refuse), then train those at the
    same step as one stack (members resumed at different steps form separate stacks, except the
    ones a kill between the members' saves left one save ahead: they rejoin, see `_rewind`)."""
    stop = stop or StopRequest()
    outcomes: list[Outcome] = []
    trainers: list[Trainer] = []
    opened: list[Trainer] = []
    ready: dict[int, list[Trainer]] = {}
    try:
        for spec in specs:
            trainer = Trainer(spec, runs_dir, display=PointDisplay(report), stop=stop)
            trainers.append(trainer)
            try:
                trainer.setup()
                if trainer.open_run() == "completed":
                    status = trainer.run.read_status()
                    outcomes.append(Outcome(spec.name, "skipped", "already completed", status.get("val_loss"),
                                            status.get("best_val_loss")))
                    continue
            except RunLocked as e:
                outcomes.append(Outcome(spec.name, "busy", str(e)))
                continue
            except BadInput as e:
                outcomes.append(Outcome(spec.name, "failed", "; ".join(e.problems)))
                continue
            except OSError as e:  # its run folder could not be written (a full disk)
                outcomes.append(Outcome(spec.name, "failed", os_error_line(e)))
                continue
            opened.append(trainer)
        _rejoin(opened, trainers[-1] if trainers else None)
        for trainer in opened:
            ready.setdefault(trainer.step, []).append(trainer)
        with point_threads(opened, threads) if opened else nullcontext():
            for same_step in ready.values():
                if stop.requested:
                    outcomes += [Outcome(t.spec.name, "interrupted", "not started") for t in same_step]
                    continue
                outcomes += BatchedTrainer(same_step, stop).train()
    finally:
        for trainer in trainers:
            trainer.close()
    return outcomes

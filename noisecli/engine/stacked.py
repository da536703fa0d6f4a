"""The stacked strategy (`sweep --batched`): K members' steps as one.

Every member keeps its own Trainer (run folder, data order, noise objects with their
generators, checkpoints, rows). Only the arithmetic is shared: each member's parameters
become views into stacked tensors (K, ...) (`p.data = P[k]`), the forward and backward run
once for all K through `torch.func.vmap` over `functional_call`, and one AdamW steps the
stacked tensors (AdamW is elementwise, so that is K independent AdamWs). Because the
members' parameters are views, every kind's step hooks act on them unchanged: input and
token noise transform each member's batch, weight and anticorrelated noise perturb each
member's slice in place, gradient noise adds to each member's slice of the stacked gradient,
each from the member's own generator. Forward-acting kinds (`ForwardNoise`) cannot draw from
a member's generator under vmap, so `ForwardFeed` makes each member's draws just before the
forward, in the order and shapes its hooks would make them, and hooks on the shared
template module add them inside the vmapped forward. Clipping is per member (one norm each).

Dropout masks come from torch's global generator under vmap (`randomness="different"`), so a
model with dropout is not bit-for-bit its sequential twin; every noise draw is.
"""

from __future__ import annotations

import copy
import functools

import torch
from torch.func import functional_call, vmap

from noisecli.engine.evaluation import add_sums, summed_loss
from noisecli.engine.optim import adamw, loss_fn
from noisecli.engine.state import Interval
from noisecli.engine.step import NoiseHooks
from noisecli.metrics import count, metric_sums
from noisecli.noise.base import ForwardNoise, Noise


class ForwardFeed:
    """Forward-acting noise for a stacked forward: hooks on the shared template's modules add
    draws made beforehand from each member's own generator."""

    def __init__(self, template: torch.nn.Module, lead_noises: list):
        modules = dict(template.named_modules())
        self.lead = lead_noises
        self.sites = [(i, modules[name]) for i, noise in enumerate(lead_noises) if isinstance(noise, ForwardNoise)
                      for name in noise.names]  # (noise entry, module), in the order the hooks fire
        self.handles = [module.register_forward_hook(functools.partial(self._hook, j))
                        for j, (_, module) in enumerate(self.sites)]
        self.template = template
        self.order: dict[tuple, list] = {}  # a member's input shape -> [(site, shape, dtype)] as hooks fire
        self.recording: list | None = None
        self.feed: dict | None = None

    def _hook(self, site: int, module, inputs, output):
        if not module.training:
            return None
        h = output[0] if isinstance(output, tuple) else output
        if self.recording is not None:
            self.recording.append((site, h.shape, h.dtype))
            return None
        if not self.feed or site not in self.feed:
            return None
        draw, factor = self.feed[site]
        h = h + self.lead[self.sites[site][0]].added(inputs, h, draw, factor)
        return (h, *output[1:]) if isinstance(output, tuple) else h

    def draws(self, members: list[list], x: torch.Tensor) -> dict:
        """site -> (every member's draw (K, ...), every member's factor (K,)), made from the
        members' generators in the order their own hooks would draw; a member at factor 0
        draws nothing, as alone."""
        if not self.sites:
            return {}
        key = tuple(x.shape[1:])
        if key not in self.order:  # one probe forward per input shape finds the shapes and the order
            self.recording = []
            with torch.no_grad():
                self.template(x[0])
            self.order[key], self.recording = self.recording, None
        feed = {}
        for site, shape, dtype in self.order[key]:
            entry = self.sites[site][0]  # a member without it (a `none` point) draws nothing and adds 0
            noises = [m[entry] if entry < len(m) and isinstance(m[entry], ForwardNoise) else None for m in members]
            factors = [0.0 if n is None else n.current for n in noises]
            feed[site] = (torch.stack([torch.zeros(shape, device=x.device, dtype=dtype) if f == 0
                                       else n.draw(shape, x.device, dtype) for n, f in zip(noises, factors)]),
                          torch.tensor(factors, device=x.device, dtype=dtype))
        return feed

    def close(self) -> None:
        for h in self.handles:
            h.remove()


def _hf_checkpointing(module) -> bool:
    """Whether a transformers model checkpoints its layers (transformers 5 renamed the property;
    the old name warns, so it is read only where the new one is missing)."""
    for name in ("is_activation_checkpointing", "is_gradient_checkpointing"):
        if hasattr(type(module), name):
            return bool(getattr(module, name))
    return False


def _uses(noise: Noise, hook: str) -> bool:
    return getattr(type(noise), hook) is not getattr(Noise, hook)


class StackHooks(NoiseHooks):
    """The step hooks of a stack's members: an entry whose kind has a stacked form
    (`Noise.stacked`: weight, gradient) is one call on the stacked tensors with every member's
    factor; the others are called member by member. Entry by entry, so each member's entries
    act in their order, as alone."""

    def __init__(self, members: list[list], forms: dict[int, object]):
        super().__init__(members)
        self.forms = forms
        self.entries = max(len(m) for m in members)

    def call(self, hook: str, factors: list[list[float]]) -> None:
        for i in range(self.entries):
            if i in self.forms:
                act = getattr(self.forms[i], hook, None)
                if act is not None:
                    act([fs[i] if i < len(fs) else 0.0 for fs in factors])
                continue
            for noises, fs in zip(self.members, factors):
                if i < len(noises):
                    getattr(noises[i], hook)(fs[i])


class Stacked:
    """K members (opened Trainers at the same step, same shapes and schedule) stepped as one."""

    def __init__(self, members: list):
        lead = members[0]
        # the noise entries the stack is built for: a `none` member (stacks.form_groups lets one
        # join) has none of them, so they are read from a member that has noise
        noises = next((m.noises for m in members if any(n.spec.kind != "none" for n in m.noises)), lead.noises)
        self.task, self.device, self.autocast = lead.data.task, lead.device, lead.precision.autocast
        self.train_spec, self.total_steps = lead.spec.train, lead.total_steps
        self.smoothing = lead.spec.train.label_smoothing  # the same for every member (it is not swept in a stack)
        self.template = copy.deepcopy(lead.raw_model)  # the structure functional_call runs
        for module in self.template.modules():
            if hasattr(module, "explicit"):  # gpt attention: vmap has no rule for the fused kernel
                module.explicit = True
            if hasattr(module, "checkpointed"):  # gpt blocks: torch's checkpoint cannot run under vmap (same result)
                module.checkpointed = False
            if _hf_checkpointing(module):  # transformers' models: the same, for theirs
                (getattr(module, "activation_checkpointing_disable", None) or module.gradient_checkpointing_disable)()
                if hasattr(module, "_require_grads_hook"):  # its hook that sets requires_grad on the embedding's
                    module.disable_input_require_grads()    # output, which vmap refuses (disable leaves it)
            if getattr(getattr(module, "config", None), "_attn_implementation", "eager") != "eager":
                # transformers' sdpa: vmap has no batching rule for its CPU kernel and falls back
                # to a slow loop with a warning; eager attention is the same arithmetic, batched
                module.config._attn_implementation = "eager"
        self.template.train()
        self.feed = ForwardFeed(self.template, noises)
        self.names = [n for n, p in lead.raw_model.named_parameters() if p.requires_grad]
        self.buffer_names = [n for n, _ in lead.raw_model.named_buffers()]
        self.noises = noises
        self.losses = vmap(self._member_loss, randomness="different")
        self.eval_sums = vmap(self._member_sums, in_dims=(0, 0, None, None), randomness="different")
        self.stack(members)

    def stack(self, members: list) -> None:
        """Stack the members' parameters, buffers, optimizer states and intervals; their parameters
        become views into the stack. Called again, without the diverged, when a member drops out."""
        self.members = members
        self.params = [dict(m.raw_model.named_parameters()) for m in members]
        self.P = {n: torch.stack([p[n].detach() for p in self.params]).requires_grad_() for n in self.names}
        for k, p in enumerate(self.params):
            for n in self.names:
                p[n].data = self.P[n].detach()[k]
        forms = self._forms()
        self.hooks = StackHooks([m.noises for m in members], forms)
        # a member's own gradient hook (a kind without a stacked form) adds to its .grad: bind it
        self.bind_grads = any(_uses(n, "on_gradients") for m in members for i, n in enumerate(m.noises)
                              if i not in forms)
        self.B = {n: torch.stack([dict(m.raw_model.named_buffers())[n] for m in members])
                  for n in self.buffer_names}
        self.optimizer = adamw([self.P[n] for n in self.names], [self.params[0][n] for n in self.names],
                               self.train_spec, self.device)
        for n in self.names:  # a resumed member's moments come from its own checkpoint
            states = [m.optimizer.state.get(p[n]) for m, p in zip(members, self.params)]
            if all(states):
                self.optimizer.state[self.P[n]] = {"step": states[0]["step"].clone(),
                                                   **{key: torch.stack([s[key] for s in states])
                                                      for key in ("exp_avg", "exp_avg_sq")}}
        # the interval since the last evaluation (non-zero when the members resumed mid-interval)
        self.interval = Interval.stacked([m.state.interval for m in members])

    def _forms(self) -> dict[int, object]:
        """Entry -> its kind's stacked form, for the entries whose kind has one."""
        names = {id(p[n]): n for p in self.params for n in self.names}

        def stacked_of(param: torch.Tensor) -> torch.Tensor:
            return self.P[names[id(param)]]

        forms = {}
        for i, noise in enumerate(self.noises):
            entries = [m.noises[i] if i < len(m.noises) else None for m in self.members]
            if any(e is not None and type(e) is not type(noise) and e.spec.kind != "none" for e in entries):
                continue  # another kind at this entry: member by member
            if "stacked" not in vars(type(noise)) or not any(type(e) is type(noise) for e in entries):
                continue  # a subclass that changed the hooks but not the form; or only none members left
            try:  # None: a member without this entry (a `none` point), which adds nothing
                form = type(noise).stacked([e if type(e) is type(noise) else None for e in entries], stacked_of)
            except KeyError:  # a targeted tensor the stack does not hold (not trained)
                form = None
            if form is not None:
                forms[i] = form
        return forms

    def hand_over(self, k: int) -> None:
        """Member k's Trainer gets its share of what the stack holds (the interval's sums, the
        optimizer's moments), so that its own row and checkpoint are what it would write alone."""
        self.interval.member(k, self.members[k].state.interval)
        self.sync_optimizer(k)

    def sync_optimizer(self, k: int) -> None:
        """Member k's own optimizer gets its slice of the stacked moments (for its checkpoint)."""
        m = self.members[k]
        for n in self.names:
            state = self.optimizer.state.get(self.P[n])
            if state:
                m.optimizer.state[self.params[k][n]] = {
                    "step": state["step"].clone(), "exp_avg": state["exp_avg"][k].clone(),
                    "exp_avg_sq": state["exp_avg_sq"][k].clone()}
        for group in m.optimizer.param_groups:
            group["lr"] = self.optimizer.param_groups[0]["lr"]

    # ------------------------------------------------------------------ the step's parts

    def batch(self, factors: list[list[float]]) -> tuple[torch.Tensor, torch.Tensor]:
        xs, ys = [], []
        for m, fs in zip(self.members, factors):  # each member's own batch and input noise
            x, y = m.batches.next()
            for noise, f in zip(m.noises, fs):
                x = noise.transform_input(x, f, y)
            xs.append(x)
            ys.append(y)
        return torch.stack(xs), torch.stack(ys)

    def _member_loss(self, params, buffers, x, y, feed):
        self.feed.feed = feed
        try:
            out = functional_call(self.template, (params, buffers), (x,))
        finally:
            self.feed.feed = None
        return loss_fn(out, y, self.task, label_smoothing=self.smoothing)

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        feed = self.feed.draws([m.noises for m in self.members], x)  # after before_forward set the factors
        with self.autocast:
            return self.losses(self.P, self.B, x, y, feed)

    def backward(self, losses: torch.Tensor) -> None:
        losses.sum().backward()  # member k's loss depends on member k's slice only

    def clip(self) -> torch.Tensor:
        """clip_grad_norm_ for each member on its own: one norm per member over its gradients;
        then each member's .grad is its slice of the stacked gradient, for gradient noise."""
        K, clip = len(self.members), self.members[0].clip
        grads = [self.P[n].grad for n in self.names]
        norms = torch.stack([torch.linalg.vector_norm(g.reshape(K, -1), dim=1) for g in grads])  # (params, K)
        total = torch.linalg.vector_norm(norms, dim=0)  # (K,)
        coef = torch.clamp(clip / (total + 1e-6), max=1.0)
        for g in grads:
            g.mul_(coef.view(K, *([1] * (g.dim() - 1))).to(g.dtype))
        if self.bind_grads:
            for n in self.names:
                for k, p in enumerate(self.params):
                    p[n].grad = self.P[n].grad[k]
        return total

    def optimizer_step(self) -> None:
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        for p in self.params if self.bind_grads else ():
            for n in self.names:
                p[n].grad = None

    def record(self, losses: torch.Tensor, grad_norm: torch.Tensor) -> None:
        self.interval.add(losses.float(), grad_norm)
        for m in self.members:
            m.state.step += 1

    # ------------------------------------------------------------------ evaluation

    def _member_sums(self, params, buffers, x, y):
        out = functional_call(self.template, (params, buffers), (x,))
        return metric_sums(out, y, self.task, summed_loss(self.task))

    @torch.no_grad()
    def measure(self, split: str) -> dict[str, torch.Tensor]:
        """`evaluation.measure` for every member at once: (K,) sums, and the count (the same
        for every member: the evaluation batches are the same data in fixed windows)."""
        lead, K = self.members[0], len(self.members)
        sums: dict[str, torch.Tensor] = {}
        for x, y in lead.batches.eval_batches(split):
            with self.autocast:
                member_sums = self.eval_sums(self.P, self.B, x, y)
            add_sums(sums, {k: v.float() for k, v in member_sums.items()}, self.device, (K,))
            add_sums(sums, {"count": count(y, self.task)}, self.device)
        return sums

    def close(self) -> None:
        self.feed.close()

"""`anticorrelated`: Anti-PGD (Orvieto et al. 2022, arXiv 2202.02831).

w_{n+1} = w_n - update(grad L(w_n)) + (xi_{n+1} - xi_n), xi_n ~ factor * N(0, I): the
perturbation is the difference of two successive draws, so successive perturbations are
anticorrelated. The parameters hold the Anti-PGD iterate w = z + xi_n during training;
the clean point z is kept beside it (`self.z`), and it is z that evaluation sees, that
every checkpoint holds as the model, and that is left in the model at the end. Because
w is always computed as z + xi_n from the kept z (never z recovered as w - xi_n, which
rounds), a checkpoint (z, xi_n) gives back the exact iterate on resume.

(Orvieto's identity: z follows gradient steps taken at z + xi_n with fresh draws xi_n, so
with weight_decay 0 this trains exactly like additive `weight` noise; with weight decay
the decay acts on w = z + xi_n, which shrinks the perturbation too.)
"""

from __future__ import annotations

import torch

from noisecli.noise.base import Noise, NoiseContext
from noisecli.noise.params import FlatNoise, select_parameters
from noisecli.spec import NoiseSpec


class AnticorrelatedNoise(Noise):

    def __init__(self, spec: NoiseSpec, ctx: NoiseContext, index: int = 0):
        super().__init__(spec, ctx, index)
        self.params = select_parameters(ctx.model, spec.targets, spec.where)
        self.buffer = FlatNoise(self.params)
        self.xi: list[torch.Tensor] | None = None  # the perturbation now in the parameters
        self.z = [torch.empty_like(p) for p in self.params]  # the clean point, valid while xi is set
        self.started = False

    @torch.no_grad()
    def _perturb(self, xi: list[torch.Tensor]) -> None:
        """Clean parameters (z) -> the iterate z + xi, keeping z."""
        torch._foreach_copy_(self.z, self.params)
        if self.xi is None:
            self.xi = [torch.empty_like(p) for p in self.params]
        torch._foreach_copy_(self.xi, xi)
        torch._foreach_add_(self.params, self.xi)

    @torch.no_grad()
    def before_forward(self, factor: float) -> None:
        if not self.started:  # the first step: w_0 = z_0 + xi_0
            self.started = True
            if factor > 0:
                self._perturb(self.buffer.normal(self.generator, factor))

    @torch.no_grad()
    def after_step(self, factor: float) -> None:
        new = self.buffer.normal(self.generator, factor) if factor > 0 else None
        if self.xi is not None:
            torch._foreach_sub_(self.params, self.xi)  # z_{n+1} = w_{n+1}' - xi_n
        if new is not None:
            self._perturb(new)
        else:
            self.xi = None

    @torch.no_grad()
    def before_eval(self) -> None:
        if self.xi is not None:
            torch._foreach_copy_(self.params, self.z)

    @torch.no_grad()
    def after_eval(self) -> None:
        if self.xi is not None:  # z + xi is how w was made, so this is w again, bit for bit
            torch._foreach_add_(self.params, self.xi)

    @torch.no_grad()
    def detach(self) -> None:
        if self.xi is not None:
            torch._foreach_copy_(self.params, self.z)
            self.xi = None
        self.started = False

    # Checkpoints are written between before_eval and after_eval, so the model they hold is
    # z; xi comes back from here and is added again on load.
    def state_dict(self) -> dict:
        return {**super().state_dict(), "started": self.started, "model_is_clean": True,
                "xi": None if self.xi is None else [t.cpu() for t in self.xi]}

    @torch.no_grad()
    def load_state_dict(self, state: dict) -> None:
        """Called after the model's own state is loaded."""
        super().load_state_dict(state)
        self.started = state["started"]
        self.xi = None
        if state["xi"] is None:
            return
        xi = [t.to(p.device) for t, p in zip(state["xi"], self.params)]
        if state.get("model_is_clean"):
            self._perturb(xi)
        else:  # a checkpoint from before noisecli 0.2 holds the iterate w; z is recovered as w - xi
            self.xi = xi
            torch._foreach_copy_(self.z, self.params)
            torch._foreach_sub_(self.z, self.xi)

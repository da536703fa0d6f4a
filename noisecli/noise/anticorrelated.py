"""`anticorrelated`: Anti-PGD (Orvieto et al. 2022, arXiv 2202.02831).

w_{n+1} = w_n - update(grad L(w_n)) + (xi_{n+1} - xi_n), xi_n ~ factor * N(0, I): the
perturbation is the difference of two successive draws, so successive perturbations are
anticorrelated. The parameters hold the Anti-PGD iterate w = z + xi_n during training;
evaluation sees the clean point z = w - xi_n, and at the end of training xi is removed,
so the saved final model is z. (Orvieto's identity: z follows gradient steps taken at
z + xi_n with fresh draws xi_n.)
"""

from __future__ import annotations

import torch

from noisecli.noise.base import Noise, NoiseContext
from noisecli.noise.params import FlatNoise, select_parameters
from noisecli.spec import NoiseSpec


class AnticorrelatedNoise(Noise):
    changes_weights = True
    def __init__(self, spec: NoiseSpec, ctx: NoiseContext, index: int = 0):
        super().__init__(spec, ctx, index)
        self.params = select_parameters(ctx.model, spec.targets, f"noise.{index}" if index else "noise")
        self.buffer = FlatNoise(self.params)
        self.xi: list[torch.Tensor] | None = None  # the perturbation now in the parameters
        self.saved = [torch.empty_like(p) for p in self.params]
        self.started = False

    @torch.no_grad()
    def before_forward(self, factor: float) -> None:
        if not self.started:  # the first step: w_0 = z_0 + xi_0
            self.started = True
            if factor > 0:
                self.xi = [t.clone() for t in self.buffer.normal(self.generator, factor)]
                torch._foreach_add_(self.params, self.xi)

    @torch.no_grad()
    def after_step(self, factor: float) -> None:
        new = self.buffer.normal(self.generator, factor) if factor > 0 else None
        if self.xi is not None:
            torch._foreach_sub_(self.params, self.xi)
        if new is not None:
            torch._foreach_add_(self.params, new)
            if self.xi is None:
                self.xi = [torch.empty_like(p) for p in self.params]
            torch._foreach_copy_(self.xi, new)
        else:
            self.xi = None

    @torch.no_grad()
    def before_eval(self) -> None:
        if self.xi is not None:
            torch._foreach_copy_(self.saved, self.params)  # restored exactly after evaluation
            torch._foreach_sub_(self.params, self.xi)

    @torch.no_grad()
    def after_eval(self) -> None:
        if self.xi is not None:
            torch._foreach_copy_(self.params, self.saved)

    @torch.no_grad()
    def detach(self) -> None:
        if self.xi is not None:
            torch._foreach_sub_(self.params, self.xi)
            self.xi = None
        self.started = False

    def state_dict(self) -> dict:
        return {**super().state_dict(), "started": self.started,
                "xi": None if self.xi is None else [t.cpu() for t in self.xi]}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.started = state["started"]
        self.xi = None if state["xi"] is None else [t.to(p.device) for t, p in zip(state["xi"], self.params)]

"""`weight`: Gaussian noise on the weights for the forward and backward pass only.

before_forward: w_clean is copied aside, w <- w + factor * eps (additive) or
w <- w * (1 + factor * eps) (multiplicative); after_backward: w <- w_clean, exactly (a
copy, not a subtraction, so no rounding is left behind). The gradient is taken at the
noisy point, and the optimizer updates the clean weights (An 1996; Graves 2011).
"""

from __future__ import annotations

import torch

from noisecli.noise.base import Noise, NoiseContext
from noisecli.noise.params import FlatNoise, select_parameters
from noisecli.spec import NoiseSpec


class WeightNoise(Noise):
    def __init__(self, spec: NoiseSpec, ctx: NoiseContext, index: int = 0):
        super().__init__(spec, ctx, index)
        self.params = select_parameters(ctx.model, spec.targets, spec.where)
        self.buffer = FlatNoise(self.params)
        self.clean = [torch.empty_like(p) for p in self.params]
        self.perturbed = False

    @torch.no_grad()
    def before_forward(self, factor: float) -> None:
        if factor == 0:
            return
        torch._foreach_copy_(self.clean, self.params)
        eps = self.buffer.normal(self.generator, factor)
        if self.spec.mode == "multiplicative":
            torch._foreach_mul_(eps, self.params)  # w * factor * eps
        torch._foreach_add_(self.params, eps)
        self.perturbed = True

    @torch.no_grad()
    def after_backward(self, factor: float) -> None:
        if self.perturbed:
            torch._foreach_copy_(self.params, self.clean)
            self.perturbed = False

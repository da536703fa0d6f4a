"""`weight`: Gaussian noise on the weights for the forward and backward pass only.

before_forward: w_clean is copied aside, w <- w + factor * eps (additive) or
w <- w * (1 + factor * eps) (multiplicative); after_backward: w <- w_clean, exactly (a
copy, not a subtraction, so no rounding is left behind). The gradient is taken at the
noisy point, and the optimizer updates the clean weights (An 1996; Graves 2011).
"""

from __future__ import annotations

import torch

from noisecli.noise.base import Noise, NoiseContext
from noisecli.noise.params import FlatNoise, StackedDraws, present, select_parameters
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
        perturb(self.params, self.clean, self.buffer.normal(self.generator, factor), self.spec.mode)
        self.perturbed = True

    @torch.no_grad()
    def after_backward(self, factor: float) -> None:
        if self.perturbed:
            torch._foreach_copy_(self.params, self.clean)
            self.perturbed = False

    @classmethod
    def stacked(cls, noises: list, stacked_of) -> StackedWeightNoise | None:
        params = [stacked_of(p) for p in present(noises).params]
        return StackedWeightNoise(noises, params) if params else None


def perturb(params: list[torch.Tensor], clean: list[torch.Tensor], eps: list[torch.Tensor], mode: str) -> None:
    """clean <- params; params <- params + eps (additive) or params * (1 + eps) (multiplicative)."""
    torch._foreach_copy_(clean, params)
    if mode == "multiplicative":
        torch._foreach_mul_(eps, params)  # w * factor * eps
    torch._foreach_add_(params, eps)


class StackedWeightNoise:
    """`weight` for a stack's members at once: the same arithmetic on the stacked tensors, every
    member's draw from its own generator (params.StackedDraws); a member at factor 0 adds zeros
    and gets its weights back by the same exact copy."""

    def __init__(self, noises: list[WeightNoise | None], params: list[torch.Tensor]):
        self.noises, self.params, self.mode = noises, params, present(noises).spec.mode
        self.draws = StackedDraws(params)
        self.clean = [torch.empty_like(p) for p in params]
        self.perturbed = False

    @torch.no_grad()
    def before_forward(self, factors: list[float]) -> None:
        if not any(factors):
            return
        perturb(self.params, self.clean, self.draws.normal(self.noises, factors), self.mode)
        self.perturbed = True

    @torch.no_grad()
    def after_backward(self, factors: list[float]) -> None:
        if self.perturbed:
            torch._foreach_copy_(self.params, self.clean)
            self.perturbed = False

"""`gradient`: annealed Gaussian gradient noise (Neelakantan et al. 2015).

After clipping and before the optimizer step: g <- g + N(0, sigma_t^2) with
sigma_t^2 = factor / (1 + t)^gamma, t the 0-based step (gamma 0.55 by default).
"""

from __future__ import annotations

import math

import torch

from noisecli.noise.base import Noise, NoiseContext
from noisecli.noise.params import FlatNoise, StackedDraws, present
from noisecli.spec import NoiseSpec


class GradientNoise(Noise):
    def __init__(self, spec: NoiseSpec, ctx: NoiseContext, index: int = 0):
        super().__init__(spec, ctx, index)
        self.params = [p for p in ctx.model.parameters() if p.requires_grad]
        self.buffer = FlatNoise(self.params)
        self.step = 0

    def factor(self, step: int) -> float:
        self.step = step
        return super().factor(step)

    def std(self, factor: float, step: int) -> float:
        return math.sqrt(factor / (1 + step) ** self.spec.gamma)

    @torch.no_grad()
    def on_gradients(self, factor: float) -> None:
        if factor == 0:
            return
        noise = self.buffer.normal(self.generator, self.std(factor, self.step))
        add_to_gradients(self.params, noise)

    @classmethod
    def stacked(cls, noises: list, stacked_of) -> StackedGradientNoise | None:
        params = [stacked_of(p) for p in present(noises).params]
        return StackedGradientNoise(noises, params) if params else None


def add_to_gradients(params: list[torch.Tensor], noise: list[torch.Tensor]) -> None:
    """grad <- grad + noise, in one call, for the parameters that have a gradient this step."""
    pairs = [(p.grad, n) for p, n in zip(params, noise) if p.grad is not None]
    if pairs:
        grads, noise = zip(*pairs)
        torch._foreach_add_(list(grads), list(noise))


class StackedGradientNoise:
    """`gradient` for a stack's members at once: each member's draw (its own generator, its own
    sigma_t) added to its slice of the stacked gradients in one call."""

    def __init__(self, noises: list[GradientNoise | None], params: list[torch.Tensor]):
        self.noises, self.params = noises, params
        self.draws = StackedDraws(params)

    @torch.no_grad()
    def on_gradients(self, factors: list[float]) -> None:
        if not any(factors):
            return
        stds = [0.0 if n is None or f == 0 else n.std(f, n.step) for n, f in zip(self.noises, factors)]
        add_to_gradients(self.params, self.draws.normal(self.noises, stds))

"""`input`: additive noise on continuous inputs, x + factor * eps (Bishop 1995).

eps ~ N(0, 1), or U(-sqrt(3), sqrt(3)) with `distribution: uniform` so that `factor` is
the standard deviation either way. Integer token ids are refused by validation: noise
cast back to an integer id is not small noise (see the README).
"""

from __future__ import annotations

import math

import torch

from noisecli.noise.base import Noise


class InputNoise(Noise):
    def transform_input(self, x: torch.Tensor, factor: float, y: torch.Tensor | None = None) -> torch.Tensor:
        if factor == 0:
            return x
        if self.spec.distribution == "uniform":
            eps = torch.rand(x.shape, generator=self.generator, device=x.device, dtype=x.dtype)
            eps = (eps * 2 - 1) * math.sqrt(3.0)
        else:
            eps = torch.randn(x.shape, generator=self.generator, device=x.device, dtype=x.dtype)
        return x + factor * eps

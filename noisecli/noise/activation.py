"""`activation`: Gaussian noise on the outputs of chosen modules, through forward hooks.

out <- out + factor * N(0, 1) while the model is in training mode. `targets` are
module-name globs; the default is every hidden nonlinearity (mlp, cnn) or every
transformer block (gpt, hf). The hooks (`ForwardNoise`'s) are registered in `attach` and
removed in `detach`: the model's code is never edited.

Under torchrun each rank draws for its own rows from its own stream (`per_rank`): drawing a
global batch's activations on every rank would cost N times the memory and time of the
layer itself, so a run on N processes is not the same draw as on one (documented).
"""

from __future__ import annotations

import fnmatch

import torch
from torch import nn

from noisecli.errors import SpecError
from noisecli.noise.base import ForwardNoise, NoiseContext
from noisecli.spec import NoiseSpec

NONLINEARITIES = (nn.ReLU, nn.GELU, nn.Tanh, nn.SiLU, nn.Sigmoid, nn.LeakyReLU)


def default_activation_targets(model: nn.Module) -> list[str]:
    """A transformer's blocks (the longest ModuleList of one class: gpt's `h`, GPT-2's
    `transformer.h`, Llama's `model.layers`), else every hidden nonlinearity."""
    stacks = [(n, list(m)) for n, m in model.named_modules()
              if isinstance(m, nn.ModuleList) and len(m) and len({type(b) for b in m}) == 1]
    if stacks:
        name, blocks = max(stacks, key=lambda s: len(s[1]))
        return [f"{name}.{i}" for i in range(len(blocks))]
    return [n for n, m in model.named_modules() if isinstance(m, NONLINEARITIES)]


class ActivationNoise(ForwardNoise):
    per_rank = True

    def __init__(self, spec: NoiseSpec, ctx: NoiseContext, index: int = 0):
        super().__init__(spec, ctx, index)
        where = spec.where
        modules = dict(ctx.model.named_modules())
        if spec.targets is None:
            self.names = default_activation_targets(ctx.model)
            if not self.names:
                raise SpecError(f"{where}.targets: this model has no hidden nonlinearity to perturb; "
                                "name modules with targets (module-name globs)")
        else:
            self.names = [n for n in modules if n and any(fnmatch.fnmatchcase(n, g) for g in spec.targets)]
            if not self.names:
                shown = ", ".join([n for n in modules if n][:10])
                raise SpecError(f"{where}.targets: {spec.targets} match no module (modules: {shown}, ...)")

    def draw(self, shape, device, dtype) -> torch.Tensor:
        return torch.randn(shape, generator=self.generator, device=device, dtype=dtype)

    def added(self, inputs, h, draw, factor) -> torch.Tensor:
        return factor * draw

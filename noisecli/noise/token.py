"""`token`: each input token replaced, with probability p = factor, by a random token.

The replacement is drawn uniformly over the vocabulary or from the training split's
unigram distribution (`replace_with`); padding is never replaced nor drawn. The targets
are separate tensors and stay clean: the model learns to predict the true next token
from a corrupted context. On instruction data (sft), `include_prompt: false` leaves the
prompt as it is and corrupts only the response's input tokens.
"""

from __future__ import annotations

import torch

from noisecli.data import IGNORE
from noisecli.noise.base import Noise, NoiseContext
from noisecli.spec import NoiseSpec


class TokenNoise(Noise):
    def __init__(self, spec: NoiseSpec, ctx: NoiseContext, index: int = 0):
        super().__init__(spec, ctx, index)
        ds = ctx.dataset
        self.vocab, self.pad_id = ds.n_outputs, ds.pad_id
        self.padded_examples = ds.task == "sft"
        counts = torch.bincount(ds.x_train.flatten(), minlength=self.vocab).double()
        if self.pad_id is not None:
            counts[self.pad_id] = 0
        if spec.replace_with == "unigram":
            self.probs = (counts / counts.sum()).float().to(ctx.device)
        else:
            self.probs = torch.ones(self.vocab, device=ctx.device)
            if self.pad_id is not None:
                self.probs[self.pad_id] = 0
            self.probs /= self.probs.sum()

    def transform_input(self, x: torch.Tensor, factor: float, y: torch.Tensor | None = None) -> torch.Tensor:
        if factor == 0:
            return x
        replace = torch.rand(x.shape, generator=self.generator, device=x.device) < factor
        if self.pad_id is not None:
            replace &= x != self.pad_id
        if not self.spec.include_prompt and self.padded_examples:
            replace &= ~prompt_mask(y)
        draws = torch.multinomial(self.probs, x.numel(), replacement=True, generator=self.generator)
        return torch.where(replace, draws.view_as(x), x)


def prompt_mask(y: torch.Tensor) -> torch.Tensor:
    """(B, T) True on prompt positions of padded sft examples: target t is IGNORE until the
    first response token, and x[t] is the prompt's up to and including that position."""
    first = (y != IGNORE).int().argmax(1, keepdim=True)  # (B, 1): the last prompt position
    return torch.arange(y.shape[1], device=y.device)[None] <= first

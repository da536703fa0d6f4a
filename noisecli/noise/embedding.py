"""`embedding`: NEFTune (Jain et al. 2023, arXiv 2310.05914), with each example's own length.

emb <- emb + alpha / sqrt(L_i * d) * U(-1, 1) on the input embeddings, L_i the number of
non-padding tokens of example i, d the embedding width; padded positions stay clean.
(The NEFTune repository's training code scales per example; its README snippet, which
transformers' Trainer hook copied, uses the padded length, which mis-scales under padding and
packing: transformers issue 34659. `length: padded` is that formula, L = T for every example
and noise on padding too, so the two can be compared in one sweep; it gives transformers'
numbers when every batch is padded to the same T (data.max_length), while transformers under
dynamic padding uses each batch's own collated length.) With `distribution: gaussian` the draw is
N(0, 1) instead of U(-1, 1).
"""

from __future__ import annotations

import torch
from torch import nn

from noisecli.errors import SpecError
from noisecli.noise.base import ForwardNoise, NoiseContext
from noisecli.spec import NoiseSpec


def input_embedding(model: nn.Module) -> nn.Module:
    get = getattr(model, "get_input_embeddings", None)
    if get is None:
        raise SpecError(f"noise.kind: 'embedding' needs a model with input embeddings: {type(model).__name__} "
                        "has no get_input_embeddings()")
    return get()


class EmbeddingNoise(ForwardNoise):
    def __init__(self, spec: NoiseSpec, ctx: NoiseContext, index: int = 0):
        super().__init__(spec, ctx, index)
        module = input_embedding(ctx.model)
        self.names = [next(n for n, m in ctx.model.named_modules() if m is module)]
        self.pad_id = ctx.dataset.pad_id

    def draw_for(self, emb: torch.Tensor) -> torch.Tensor:
        """Under torchrun: drawn for the global batch, this rank's rows kept (what one process draws)."""
        world = self.ctx.world
        if not world.distributed:
            return super().draw_for(emb)
        draw = self.draw((self.ctx.global_batch, *emb.shape[1:]), emb.device, emb.dtype)
        return draw[slice(*world.rows(self.ctx.global_batch))]

    def draw(self, shape, device, dtype) -> torch.Tensor:
        """The unscaled draw: U(-1, 1) (NEFTune's own choice, the default) or N(0, 1)."""
        if self.spec.distribution in (None, "uniform"):
            return torch.rand(shape, generator=self.generator, device=device, dtype=dtype) * 2 - 1
        return torch.randn(shape, generator=self.generator, device=device, dtype=dtype)

    def added(self, inputs, emb, draw, alpha) -> torch.Tensor:
        """alpha / sqrt(L_i d) times the draw, zero on padding, for embeddings `emb` (B, T, d) of
        the token ids inputs[0] (B, T)."""
        ids, d = inputs[0], draw.shape[-1]
        if self.pad_id is None or self.spec.length == "padded":  # transformers' hook: L = T, padding too
            keep = torch.ones(ids.shape, dtype=draw.dtype, device=draw.device)
        else:
            keep = (ids != self.pad_id).to(draw.dtype)
        lengths = keep.sum(1, keepdim=True).clamp_min(1)  # (B, 1): each example's length L_i
        scale = alpha / torch.sqrt(lengths * d)  # (B, 1)
        return draw * (scale * keep).unsqueeze(-1)  # (B, T, d); zero on padding

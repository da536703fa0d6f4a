"""`embedding`: NEFTune (Jain et al. 2023, arXiv 2310.05914), with each example's own length.

emb <- emb + alpha / sqrt(L_i * d) * U(-1, 1) on the input embeddings, L_i the number of
real (non-padding) tokens of example i, d the embedding width; padded positions stay clean.
(The NEFTune repository's training code scales per example; its README snippet, which
transformers' Trainer hook copied, uses the padded length, which mis-scales under padding and
packing: transformers issue 34659.) `length` chooses L:

- `example`: L_i, padding clean (the authors' training code).
- `batch`: the batch's longest example L_b, noise on its first L_b positions (padding of the
  shorter examples included): exactly transformers' hook, alpha / sqrt(L_b * d) everywhere,
  under dynamic padding, where the collator pads each batch to its longest example. noisecli
  pads to one fixed length instead, and finds L_b on the device from the batch's ids (no host
  sync: a max over the rows, used in tensor arithmetic).
- `padded`: the one fixed padded length T, noise on all padding: transformers' hook when every
  batch is padded to the same T (data.max_length).

`on` (instruction data) says where the noise goes: `all` (the authors' code), `prompt` (the
paper's Algorithm 1 reads so; NEFTune issue 15) or `response` (the scored tokens); L stays the
whole example's. The forward hook sees only the token ids, so the positions come from the
batch's targets in `transform_input` and ride on this step's draw (zero where the noise stays
off): each member of a stack, and the global batch under torchrun, carries its own.

`scale: relative` is TRL PR 904 ("[NEFTune] Replace absolute noise with proportional noise",
closed unmerged; commit 350d078 of its branch): `output * (1 + U(-alpha, alpha))`, i.e.
emb + alpha * emb * U(-1, 1), noise on each element proportional to that element, so its RMS
is alpha / sqrt(3) of the embedding's at every position whatever the embedding's norm, with no
L or d in it. With `distribution: gaussian` the draw is N(0, 1) instead of U(-1, 1).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from noisecli.data import IGNORE
from noisecli.errors import SpecError
from noisecli.noise.base import ForwardNoise, NoiseContext
from noisecli.spec import NoiseSpec

RATIO_EXAMPLES = 256  # the header's noise-to-embedding ratio is measured on this many training examples


def input_embedding(model: nn.Module) -> nn.Module:
    get = getattr(model, "get_input_embeddings", None)
    if get is None:
        raise SpecError(f"noise.kind: 'embedding' needs a model with input embeddings: {type(model).__name__} "
                        "has no get_input_embeddings()")
    return get()


def scored_inputs(y: torch.Tensor) -> torch.Tensor:
    """(B, T) True where the input token is a scored one (a response's): the target one position
    earlier is that token."""
    return torch.cat([torch.zeros_like(y[:, :1], dtype=torch.bool), y[:, :-1] != IGNORE], 1)


class EmbeddingNoise(ForwardNoise):
    def __init__(self, spec: NoiseSpec, ctx: NoiseContext, index: int = 0):
        super().__init__(spec, ctx, index)
        self.module = input_embedding(ctx.model)
        self.names = [next(n for n, m in ctx.model.named_modules() if m is self.module)]
        self.pad_id, self.pad_ends = ctx.dataset.pad_id, ctx.dataset.pad_ends
        self.sites: torch.Tensor | None = None  # (B, T) this batch's positions `on` allows (on: all: None)
        self.batch_length: torch.Tensor | None = None  # length batch, a forward of part of it: the batch's L_b

    def transform_input(self, x: torch.Tensor, factor: float, y: torch.Tensor | None = None) -> torch.Tensor:
        """The batch is left as it is; what the hook cannot see in the ids is read here, on the
        device: the positions `on` allows, and when a forward holds part of the batch (torchrun,
        grad_accum) the whole batch's longest example."""
        if self.spec.on != "all":
            response = scored_inputs(y)
            self.sites = response if self.spec.on == "response" else ~response
        if self.spec.length == "batch" and self.ctx.split:  # a forward sees only part of the batch
            self.batch_length = self.real_lengths(x).amax()
        return x

    def draw(self, shape, device, dtype) -> torch.Tensor:
        """The unscaled draw: U(-1, 1) (NEFTune's own choice, the default) or N(0, 1); zero where
        `on` keeps the noise off (the whole draw is made either way, so the stream does not depend on it)."""
        if self.spec.distribution in (None, "uniform"):
            draw = torch.rand(shape, generator=self.generator, device=device, dtype=dtype) * 2 - 1
        else:
            draw = torch.randn(shape, generator=self.generator, device=device, dtype=dtype)
        return draw if self.sites is None else draw * self.sites.unsqueeze(-1).to(dtype)

    def real_lengths(self, ids: torch.Tensor) -> torch.Tensor:
        """(B, 1): each example's real length, one past its last non-padding id (plus the EOS that is
        also the padding id, where the data says so: Dataset.pad_ends)."""
        positions = torch.arange(1, ids.shape[1] + 1, device=ids.device)
        last = ((ids != self.pad_id) * positions).amax(1, keepdim=True)
        return (last + 1).clamp(max=ids.shape[1]) if self.pad_ends else last

    def keep(self, ids: torch.Tensor, batch_length: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T) 1 where `length` puts noise, else 0 (padding of `example`, past L_b of `batch`)."""
        if self.pad_id is None or self.spec.length == "padded":  # transformers' hook at one length: everywhere
            return torch.ones(ids.shape, device=ids.device)
        if self.spec.length == "batch":
            if batch_length is None:
                batch_length = self.batch_length if self.ctx.split else self.real_lengths(ids).amax()
            return (torch.arange(ids.shape[1], device=ids.device) < batch_length).expand(ids.shape).float()
        return (torch.arange(ids.shape[1], device=ids.device) < self.real_lengths(ids)).float()

    def added(self, inputs, emb, draw, alpha) -> torch.Tensor:
        """For embeddings `emb` (B, T, d) of the token ids inputs[0] (B, T): alpha / sqrt(L d) times
        the draw where `length` puts noise (L the number of such positions of the row), zero
        elsewhere; or, `scale: relative`, alpha times emb times the draw."""
        keep = self.keep(inputs[0]).to(draw.dtype)  # (B, T)
        if self.spec.scale == "relative":
            return emb * draw * (alpha * keep).unsqueeze(-1)
        lengths = keep.sum(1, keepdim=True).clamp_min(1)  # (B, 1): L_i, L_b or T
        scale = alpha / torch.sqrt(lengths * draw.shape[-1])  # (B, 1)
        return draw * (scale * keep).unsqueeze(-1)  # (B, T, d)

    @torch.no_grad()
    def rms_ratio(self) -> float:
        """The noise's RMS over the embeddings' RMS, on the tokens the noise acts on, at factor
        alpha, for the first training examples (text: windows): from the formula, nothing drawn;
        measured once, for the run's header. For `length: batch` L is the longest of them, so a
        batch's noise is at least this."""
        ds, alpha = self.ctx.dataset, self.spec.factor
        if ds.is_stream:
            n = min(RATIO_EXAMPLES, ds.x_train.numel() // ds.block_size)
            x, y = ds.x_train[: n * ds.block_size].view(n, ds.block_size), None
        else:
            x, y = ds.x_train[:RATIO_EXAMPLES], ds.y_train[:RATIO_EXAMPLES]
        longest = self.real_lengths(x).amax() if self.pad_id is not None else None
        unit = 1 / 3 if self.spec.distribution in (None, "uniform") else 1.0  # the draw's variance
        was_training = self.module.training
        self.module.eval()  # no hook adds noise in evaluation mode
        signal = noise = 0.0
        try:
            for i in range(0, len(x), 32):
                xs = x[i: i + 32]
                emb = self.module(xs).float()  # (b, T, d)
                keep = self.keep(xs, longest)  # (b, T)
                where = keep
                if self.spec.on != "all":
                    response = scored_inputs(y[i: i + 32])
                    where = keep * (response if self.spec.on == "response" else ~response)
                power = emb.pow(2).mean(-1)  # (b, T): the embedding's mean square per element
                lengths = keep.sum(1, keepdim=True).clamp_min(1)  # L stays the whole example's
                per = power if self.spec.scale == "relative" else 1 / (lengths * emb.shape[-1])
                signal += float((where * power).sum())
                noise += float((where * per * unit * alpha ** 2).sum())
        finally:
            self.module.train(was_training)
        return math.sqrt(noise / signal) if signal > 0 else math.inf

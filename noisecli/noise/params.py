"""Shared by the kinds that perturb parameters or gradients (weight, gradient, anticorrelated).

Noise for every targeted tensor is drawn in one kernel into one flat buffer; the buffer's
views are then scaled and added with foreach ops, so a step costs a few kernel launches
whatever the number of parameters, and no Python loop over parameters runs per step.
"""

from __future__ import annotations

import fnmatch
import os

import torch
from torch import nn

from noisecli.errors import SpecError

def default_weight_names(model: nn.Module) -> list[str]:
    """Weights of linear, conv and embedding layers that are trained; not biases, not norm gains.

    Told apart by shape rather than class, so layers torch does not know (transformers'
    GPT-2 `Conv1D`) count too: those weights are matrices or kernels, a norm's gain is a vector.
    Frozen weights (a LoRA run's base: models/lora.py) are left out, so the noise is on the
    adapters the optimizer updates; a glob in `targets` may still name them.
    """
    names = []
    for mod_name, module in model.named_modules():
        weight = module._parameters.get("weight")
        if weight is not None and weight.dim() >= 2 and weight.requires_grad:
            names.append(f"{mod_name}.weight" if mod_name else "weight")
    return names


def select_parameters(model: nn.Module, globs: list[str] | None, where: str) -> list[torch.Tensor]:
    """Parameters whose names match any glob (default: `default_weight_names`), each once."""
    named = dict(model.named_parameters())  # tied weights appear once
    if globs is None:
        names = [n for n in default_weight_names(model) if n in named]
    else:
        names = [n for n in named if any(fnmatch.fnmatchcase(n, g) for g in globs)]
        if not names:
            shown = ", ".join(list(named)[:8]) + (", ..." if len(named) > 8 else "")
            raise SpecError(f"{where}.targets: {globs} match no parameter of this model (parameters: {shown})")
    return [named[n] for n in names]


class FlatNoise:
    """One buffer holding a draw for each tensor of `like`, exposed as views shaped like them."""

    def __init__(self, like: list[torch.Tensor]):
        total = sum(t.numel() for t in like)
        device = like[0].device if like else torch.device("cpu")
        self.flat = torch.empty(total, device=device, dtype=torch.float32)
        self.views = [v.view_as(t) for v, t in zip(self.flat.split([t.numel() for t in like]), like)]

    def normal(self, generator: torch.Generator, std: float) -> list[torch.Tensor]:
        """views <- std * N(0, 1), in one draw and one scale."""
        self.flat.normal_(0.0, std, generator=generator)
        return self.views


class StackedDraws:
    """K members' FlatNoise draws in one (K, total) buffer, for a kind's stacked form (`sweep
    --batched`). Row k is drawn from member k's generator at its std: a contiguous row as long as
    the member's own buffer, filled by the same call, so the values are those it draws alone; a
    member at std 0 draws nothing, as alone, and its row is zeros. The views are (K, *shape),
    one per stacked tensor."""

    def __init__(self, stacked: list[torch.Tensor]):
        sizes = [t[0].numel() for t in stacked]
        self.flat = torch.empty(stacked[0].shape[0], sum(sizes), device=stacked[0].device, dtype=torch.float32)
        self.views = [v.view(t.shape) for v, t in zip(self.flat.split(sizes, dim=1), stacked)]

    def normal(self, members: list, stds: list[float]) -> list[torch.Tensor]:
        """Row k <- stds[k] * N(0, 1) from members[k].generator (zeros where the member is None or
        its std is 0). torch draws a normal tensor on one core, and one member's draw per step is
        a fifth of a small MLP's step: the members' independent draws are spread over torch's
        threads (normal_ releases the GIL), which a point trained alone cannot do."""
        jobs = [(row, member, std) for row, member, std in zip(self.flat, members, stds)]
        threads = min(torch.get_num_threads(), len(jobs))
        if threads > 1 and self.flat.device.type == "cpu" and self.flat.shape[1] >= PARALLEL_DRAW:
            list(_draw_pool(threads).map(_draw, [jobs[i::threads] for i in range(threads)]))
        else:
            _draw(jobs)
        return self.views


PARALLEL_DRAW = 16_384  # numbers per member below which a thread hand-off costs more than it saves


def _draw(jobs: list) -> None:
    for row, member, std in jobs:
        if member is None or std == 0:
            row.zero_()
        else:
            row.normal_(0.0, std, generator=member.generator)


_POOL: tuple | None = None  # (pid, threads, executor)


def _draw_pool(threads: int):
    """One executor per process and thread count (a forked sweep worker makes its own: the
    parent's threads do not exist in the child)."""
    global _POOL
    from concurrent.futures import ThreadPoolExecutor  # lazy: only stacks of parameter noise draw here

    if _POOL is None or _POOL[:2] != (os.getpid(), threads):
        _POOL = (os.getpid(), threads, ThreadPoolExecutor(threads, thread_name_prefix="noisecli-draw"))
    return _POOL[2]


def present(noises: list) -> object:
    """The first member's entry of a stacked form's `noises` that is not None."""
    return next(n for n in noises if n is not None)

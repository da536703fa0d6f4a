"""`model.init`: the model built, then another run's trained weights loaded into it (the
`model` state dict of that run's last.pt or best.pt); the optimizer, the step and every
generator start fresh. The spec loader (`spec/init_source.py`) has already found the folder
and the checkpoint and recorded its hash; what only the weights can tell is checked here:
a checkpoint that cannot be read, and weights that do not fit this model (by name, a few)."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from noisecli.errors import DamagedFile, SpecError
from noisecli.runs import read_checkpoint
from noisecli.spec import ModelSpec
from noisecli.spec.raw import split_init

SHOWN = 3  # names shown per kind of mismatch


def load_init(model: nn.Module, spec: ModelSpec) -> None:
    run, which = split_init(spec.init)  # resolved: '/abs/run:last'
    path = Path(run) / "checkpoints" / f"{which or 'last'}.pt"
    try:
        weights = read_checkpoint(path)["model"]
    except DamagedFile as e:
        raise SpecError(f"model.init: {e.problems[0]}") from None
    if not isinstance(weights, dict):
        raise SpecError(f"model.init: {path} holds no model state dict")
    misfit = _misfit(model.state_dict(), weights)
    if misfit:
        lora = " (LoRA adapters only: merge them into a model folder first)" if any(
            "lora_" in k for k in weights) else ""
        raise SpecError(f"model.init: the weights in {path} do not fit this model{lora}: {misfit}")
    model.load_state_dict(weights)


def _misfit(own: dict, weights: dict) -> str:
    """What keeps `weights` from loading into a model whose state dict is `own`: '' when nothing."""
    missing = [k for k in own if k not in weights]
    unexpected = [k for k in weights if k not in own]
    shapes = [f"{k} {tuple(getattr(weights[k], 'shape', ()))} for {tuple(own[k].shape)}" for k in own
              if k in weights and tuple(getattr(weights[k], "shape", ())) != tuple(own[k].shape)]
    parts = [f"{what} {_few(names)}" for what, names in (("shapes differ:", shapes), ("missing:", missing),
                                                        ("not in this model:", unexpected)) if names]
    return "; ".join(parts)


def _few(names: list[str]) -> str:
    more = f" and {len(names) - SHOWN} more" if len(names) > SHOWN else ""
    return ", ".join(names[:SHOWN]) + more

"""Models: one module per family; `build_model` picks by `model.kind`, then applies what any
kind may ask for on top: another run's weights (`model.init`, models/init.py) and LoRA
adapters over the base (`model.lora`, models/lora.py), in that order."""

from __future__ import annotations

import importlib

from torch import nn

from noisecli import catalog
from noisecli.data import Dataset
from noisecli.spec import ModelSpec


def build_model(spec: ModelSpec, ds: Dataset) -> nn.Module:
    module, func = catalog.MODELS[spec.kind].target.split(":")
    model = getattr(importlib.import_module(module), func)(spec, ds)
    if spec.init is not None:  # the source run's weights into the same architecture
        from noisecli.models.init import load_init  # reads a run folder: only when asked

        load_init(model, spec)
    if spec.lora is not None:  # the base frozen, adapters trained
        from noisecli.models.lora import add_lora  # imports peft: only when asked

        model = add_lora(model, spec)
    return model

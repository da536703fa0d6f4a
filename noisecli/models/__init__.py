"""Models: one module per family; `build_model` picks by `model.kind`."""

from __future__ import annotations

import importlib

from torch import nn

from noisecli import catalog
from noisecli.data import Dataset
from noisecli.spec import ModelSpec


def build_model(spec: ModelSpec, ds: Dataset) -> nn.Module:
    module, func = catalog.MODELS[spec.kind].target.split(":")
    return getattr(importlib.import_module(module), func)(spec, ds)

"""Linear and MLP models on flat feature vectors."""

from __future__ import annotations

from torch import nn

from noisecli.data import Dataset
from noisecli.spec import ModelSpec

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh}


def build_linear(spec: ModelSpec, ds: Dataset) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(ds.n_features, ds.n_outputs))


def build_mlp(spec: ModelSpec, ds: Dataset) -> nn.Module:
    layers: list[nn.Module] = [nn.Flatten()]
    width = ds.n_features
    for h in spec.hidden:
        layers += [nn.Linear(width, h), ACTIVATIONS[spec.activation]()]
        if spec.dropout > 0:
            layers.append(nn.Dropout(spec.dropout))
        width = h
    layers.append(nn.Linear(width, ds.n_outputs))
    return nn.Sequential(*layers)

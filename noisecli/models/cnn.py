"""A small CNN for small images (8x8 digits and the like), fed flat rows."""

from __future__ import annotations

import torch
from torch import nn

from noisecli.data import Dataset
from noisecli.spec import ModelSpec


class SmallCNN(nn.Module):
    def __init__(self, image_shape: tuple[int, int, int], channels: list[int], n_out: int, dropout: float):
        super().__init__()
        self.image_shape = image_shape
        c, h, w = image_shape
        blocks: list[nn.Module] = []
        for out in channels:
            blocks += [nn.Conv2d(c, out, 3, padding=1), nn.ReLU()]
            if min(h, w) >= 4:  # pool while the map is big enough to halve
                blocks.append(nn.MaxPool2d(2))
                h, w = h // 2, w // 2
            c = out
        self.features = nn.Sequential(*blocks)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(c * h * w, n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.view(x.shape[0], *self.image_shape)  # (B, C, H, W) from flat rows
        x = self.features(x).flatten(1)
        return self.head(self.dropout(x))


def build_cnn(spec: ModelSpec, ds: Dataset) -> nn.Module:
    return SmallCNN(ds.image_shape, spec.channels, ds.n_outputs, spec.dropout)
